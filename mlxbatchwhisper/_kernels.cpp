// Float32 CPU kernels as MLX primitives: softmax over the last axis, exact GELU, row-wise
// log-sum-exp and top-k, an LSTM's recurrence (Silero VAD's), a median filter along rows (word
// alignment's), attention of a few queries per head against precomputed keys and values (a
// decoding step's cross-attention; the beams of a segment share their keys and values),
// self-attention of long sequences (the encoder's) one head at a time, and the products of linear
// layers over many rows.
//
// MLX's Linux CPU build computes exp and erf one element at a time; the loops (_kernel_loops.h) are
// vectorized by the compiler, the products are register tiles (_kernel_tiles.h), and both are split
// over a persistent thread pool. Each kernel is an MLX
// primitive: its result is a lazy array in MLX's graph, its output buffer is allocated by MLX (or
// donated by an input MLX no longer needs), and it runs on MLX's CPU stream when the graph is
// evaluated.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/common/unary.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "mlx/version.h"

namespace mx = mlx::core;
namespace nb = nanobind;
using namespace nb::literals;

#include "_kernel_loops.h"  // NOLINT: after the MLX headers, as they use none of them
#include "_kernel_tiles.h"  // NOLINT

namespace {

// ---------------------------------------------------------------- primitives
void no_gpu(const char* name) { throw std::runtime_error(std::string(name) + ": CPU only"); }

class Softmax : public mx::UnaryPrimitive {
 public:
  explicit Softmax(mx::Stream s) : mx::UnaryPrimitive(s) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    mx::set_unary_output_data(x, out);  // x's buffer when MLX says nothing else needs it
    auto& enc = mx::cpu::get_command_encoder(stream());
    enc.set_input_array(x);
    enc.set_output_array(out);
    int64_t n = x.shape().back();
    enc.dispatch([x = mx::array::unsafe_weak_copy(x), out = mx::array::unsafe_weak_copy(out), n]() mutable {
      const float* src = x.data<float>();
      float* dst = out.data<float>();
      pool().run(static_cast<int64_t>(x.size()) / n,
                 [&](int64_t b, int64_t e) { softmax_rows(src + b * n, dst + b * n, e - b, n); });
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "MlxbatchwhisperSoftmax"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

class Gelu : public mx::UnaryPrimitive {
 public:
  explicit Gelu(mx::Stream s) : mx::UnaryPrimitive(s) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    mx::set_unary_output_data(x, out);
    auto& enc = mx::cpu::get_command_encoder(stream());
    enc.set_input_array(x);
    enc.set_output_array(out);
    enc.dispatch([x = mx::array::unsafe_weak_copy(x), out = mx::array::unsafe_weak_copy(out)]() mutable {
      const float* src = x.data<float>();
      float* dst = out.data<float>();
      constexpr int64_t block = 4096;
      int64_t size = static_cast<int64_t>(x.size()), blocks = (size + block - 1) / block;
      pool().run(blocks, [&](int64_t b, int64_t e) {
        int64_t lo = b * block, hi = std::min(size, e * block);
        gelu_span(src + lo, dst + lo, hi - lo);
      });
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "MlxbatchwhisperGelu"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

class LogSumExp : public mx::UnaryPrimitive {
 public:
  explicit LogSumExp(mx::Stream s) : mx::UnaryPrimitive(s) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& enc = mx::cpu::get_command_encoder(stream());
    enc.set_input_array(x);
    enc.set_output_array(out);
    int64_t n = x.shape().back();
    enc.dispatch([x = mx::array::unsafe_weak_copy(x), out = mx::array::unsafe_weak_copy(out), n]() mutable {
      const float* src = x.data<float>();
      float* dst = out.data<float>();
      pool().run(static_cast<int64_t>(out.size()),
                 [&](int64_t b, int64_t e) { logsumexp_rows(src + b * n, dst + b, e - b, n); });
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "MlxbatchwhisperLogSumExp"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

class TopK : public mx::Primitive {
 public:
  TopK(mx::Stream s, int k) : mx::Primitive(s), k_(k) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const auto& x = inputs[0];
    auto &idx = outputs[0], &val = outputs[1];
    idx.set_data(mx::allocator::malloc(idx.nbytes()));
    val.set_data(mx::allocator::malloc(val.nbytes()));
    auto& enc = mx::cpu::get_command_encoder(stream());
    enc.set_input_array(x);
    enc.set_output_array(idx);
    enc.set_output_array(val);
    int64_t n = x.shape().back(), k = k_;
    enc.dispatch([x = mx::array::unsafe_weak_copy(x), idx = mx::array::unsafe_weak_copy(idx),
                  val = mx::array::unsafe_weak_copy(val), n, k]() mutable {
      const float* src = x.data<float>();
      int32_t* pi = idx.data<int32_t>();
      float* pv = val.data<float>();
      pool().run(static_cast<int64_t>(x.size()) / n,
                 [&](int64_t b, int64_t e) { topk_rows(src + b * n, pi + b * k, pv + b * k, e - b, n, k); });
    });
  }
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override { no_gpu(name()); }
  const char* name() const override { return "MlxbatchwhisperTopK"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return static_cast<const TopK&>(other).k_ == k_;
  }

 private:
  int k_;
};

// A float32 buffer of n floats for a primitive's own use, allocated now (so a failed allocation raises
// before anything runs) and registered, with the q, k, v inputs and the output, with MLX's CPU encoder.
mx::array attention_scratch(mx::Stream s, int64_t n, const mx::array& q, const mx::array& k, const mx::array& v,
                            mx::array& out) {
  if (n > INT32_MAX) throw std::invalid_argument("attention: scratch of more than 2^31 floats");
  mx::array scratch({static_cast<int>(n)}, mx::float32, nullptr, {});
  scratch.set_data(mx::allocator::malloc(scratch.nbytes()));
  auto& enc = mx::cpu::get_command_encoder(s);
  enc.set_input_array(q);
  enc.set_input_array(k);
  enc.set_input_array(v);
  enc.set_output_array(out);
  enc.add_temporary(scratch);
  return scratch;
}

class Attend : public mx::UnaryPrimitive {
 public:
  Attend(mx::Stream s, float scale) : mx::UnaryPrimitive(s), scale_(scale) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &q = inputs[0], &k = inputs[1], &v = inputs[2];
    out.set_data(mx::allocator::malloc(out.nbytes()));
    int64_t units = q.shape(0), nq = q.shape(1), dim = q.shape(2), length = k.shape(1);
    int threads = pool().threads();
    auto scratch = attention_scratch(stream(), threads * nq * length, q, k, v, out);  // each share's scores
    mx::cpu::get_command_encoder(stream()).dispatch([q = mx::array::unsafe_weak_copy(q), k = mx::array::unsafe_weak_copy(k),
                  v = mx::array::unsafe_weak_copy(v), out = mx::array::unsafe_weak_copy(out),
                  scratch = mx::array::unsafe_weak_copy(scratch), units, nq, dim, length, threads,
                  scale = scale_]() mutable {
      const float *pq = q.data<float>(), *pk = k.data<float>(), *pv = v.data<float>();
      float *po = out.data<float>(), *ps = scratch.data<float>();
      std::atomic<int> slot{0};
      pool().run(units, [&](int64_t b, int64_t e) {
        float* scores = ps + static_cast<int64_t>(slot.fetch_add(1) % threads) * nq * length;
        attend(pq + b * nq * dim, pk + b * length * dim, pv + b * length * dim, po + b * nq * dim, e - b, nq,
               length, dim, scale, scores);
      });
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "MlxbatchwhisperAttend"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return static_cast<const Attend&>(other).scale_ == scale_;
  }

 private:
  float scale_;
};

// softmax(q kᵀ·scale) v for q (B, H, T, D) and k, v (B, H, S, D), a head at a time through
// head_attention_rows (register tiles in the widest vectors the CPU has; only a block of queries'
// scores alive per thread), the output laid out (B, T, H, D), what the output projection reads: no
// transposed copy on either side. The work is split over (head, stretch of queries) units.
class HeadAttention : public mx::UnaryPrimitive {
 public:
  HeadAttention(mx::Stream s, float scale) : mx::UnaryPrimitive(s), scale_(scale) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &q = inputs[0], &k = inputs[1], &v = inputs[2];
    const int64_t B = q.shape(0), H = q.shape(1), T = q.shape(2), D = q.shape(3), S = k.shape(2);
    out.set_data(mx::allocator::malloc(out.nbytes()), out.size(), {T * H * D, D, H * D, 1},
                 {true, H == 1 || T == 1, false});
    const int threads = pool().threads();
    const int64_t padded = (S + 15) / 16 * 16, slot_size = padded * (D + kQueryBlock) + (v.strides(3) == 1 ? 0 : S * D);
    // enough stretches of queries for every thread to have work, each of at least a block
    const int64_t stretches = std::clamp<int64_t>((2 * threads + B * H - 1) / (B * H), 1, (T + kQueryBlock - 1) / kQueryBlock);
    auto scratch = attention_scratch(stream(), threads * slot_size, q, k, v, out);
    mx::cpu::get_command_encoder(stream()).dispatch([q = mx::array::unsafe_weak_copy(q), k = mx::array::unsafe_weak_copy(k),
                  v = mx::array::unsafe_weak_copy(v), out = mx::array::unsafe_weak_copy(out),
                  scratch = mx::array::unsafe_weak_copy(scratch), B, H, T, D, S, threads, slot_size, stretches,
                  scale = scale_]() mutable {
      static const auto loop = level().head_attention;
      auto view = [](const mx::array& x, int64_t b, int64_t h) {
        const auto& st = x.strides();
        return HeadView{x.data<float>() + b * st[0] + h * st[1], st[2], st[3]};
      };
      std::atomic<int> slot{0};
      pool().run(B * H * stretches, [&](int64_t first, int64_t last) {
        float* mine = scratch.data<float>() + static_cast<int64_t>(slot.fetch_add(1) % threads) * slot_size;
        for (int64_t u = first; u < last; u++) {
          const int64_t b = u / (H * stretches), h = u / stretches % H, part = u % stretches;
          const int64_t begin = T * part / stretches, end = T * (part + 1) / stretches;
          loop(view(q, b, h), view(k, b, h), view(v, b, h), out.data<float>() + b * T * H * D + h * D, H * D, begin,
               end, S, D, scale, mine);
        }
      });
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "MlxbatchwhisperHeadAttention"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return static_cast<const HeadAttention&>(other).scale_ == scale_;
  }

 private:
  float scale_;
};

// y = x wᵀ (+ b) for x (..., K) and w (N × K), both row-contiguous, N a multiple of 32: w packed into
// panels (product_rows), then blocks of kRowBlock rows split over the threads.
class Linear : public mx::UnaryPrimitive {
 public:
  explicit Linear(mx::Stream s) : mx::UnaryPrimitive(s) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &x = inputs[0], &w = inputs[1];
    const int64_t N = w.shape(0), K = w.shape(1), M = x.size() / K;
    out.set_data(mx::allocator::malloc(out.nbytes()));
    mx::array packed({static_cast<int>(N * K)}, mx::float32, nullptr, {});
    packed.set_data(mx::allocator::malloc(packed.nbytes()));
    auto& enc = mx::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) enc.set_input_array(a);
    enc.set_output_array(out);
    enc.add_temporary(packed);
    const bool has_bias = inputs.size() == 3;
    enc.dispatch([x = mx::array::unsafe_weak_copy(x), w = mx::array::unsafe_weak_copy(w),
                  b = has_bias ? mx::array::unsafe_weak_copy(inputs[2]) : mx::array(0.f),
                  out = mx::array::unsafe_weak_copy(out), packed = mx::array::unsafe_weak_copy(packed), M, N, K,
                  has_bias]() mutable {
      static const Level& lv = level();
      float* pk = packed.data<float>();
      const float* pw = w.data<float>();
      pool().run(N / lv.panel, [&](int64_t first, int64_t last) { lv.pack(pw, K, first, last, pk); });
      const float *px = x.data<float>(), *pb = has_bias ? b.data<float>() : nullptr;
      float* py = out.data<float>();
      pool().run((M + kRowBlock - 1) / kRowBlock, [&](int64_t first, int64_t last) {
        lv.product(px, K, pk, pb, py, first * kRowBlock, std::min(M, last * kRowBlock), K, N);
      });
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "MlxbatchwhisperLinear"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

class Lstm : public mx::Primitive {
 public:
  explicit Lstm(mx::Stream s) : mx::Primitive(s) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const auto &gates = inputs[0], &wh = inputs[1], &h0 = inputs[2], &c0 = inputs[3];
    auto &hidden = outputs[0], &cell = outputs[1];
    hidden.set_data(mx::allocator::malloc(hidden.nbytes()));
    cell.set_data(mx::allocator::malloc(cell.nbytes()));
    auto& enc = mx::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) enc.set_input_array(a);
    enc.set_output_array(hidden);
    enc.set_output_array(cell);
    int64_t rows = gates.shape(0), steps = gates.shape(1), n = wh.shape(1);
    enc.dispatch([gates = mx::array::unsafe_weak_copy(gates), wh = mx::array::unsafe_weak_copy(wh),
                  h0 = mx::array::unsafe_weak_copy(h0), c0 = mx::array::unsafe_weak_copy(c0),
                  hidden = mx::array::unsafe_weak_copy(hidden), cell = mx::array::unsafe_weak_copy(cell), rows,
                  steps, n]() mutable {
      const float *pg = gates.data<float>(), *pw = wh.data<float>();
      const float *ph = h0.data<float>(), *pc = c0.data<float>();
      float *out = hidden.data<float>(), *last = cell.data<float>();
      pool().run(rows, [&](int64_t b, int64_t e) { lstm_rows(pg, pw, ph, pc, out, last, b, e, steps, n); });
    });
  }
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override { no_gpu(name()); }
  const char* name() const override { return "MlxbatchwhisperLstm"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

class MedianFilter : public mx::UnaryPrimitive {
 public:
  MedianFilter(mx::Stream s, int width) : mx::UnaryPrimitive(s), width_(width) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &x = inputs[0], &lengths = inputs[1];
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& enc = mx::cpu::get_command_encoder(stream());
    enc.set_input_array(x);
    enc.set_input_array(lengths);
    enc.set_output_array(out);
    int64_t n = x.shape().back(), rows = static_cast<int64_t>(x.size()) / n, group = rows / x.shape(0);
    enc.dispatch([x = mx::array::unsafe_weak_copy(x), lengths = mx::array::unsafe_weak_copy(lengths),
                  out = mx::array::unsafe_weak_copy(out), n, rows, group, width = width_]() mutable {
      const float* src = x.data<float>();
      const int32_t* len = lengths.data<int32_t>();
      float* dst = out.data<float>();
      pool().run(rows, [&](int64_t b, int64_t e) { median_rows(src, dst, len, group, b, e, n, width); });
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "MlxbatchwhisperMedianFilter"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return static_cast<const MedianFilter&>(other).width_ == width_;
  }

 private:
  int width_;
};

// ---------------------------------------------------------------- ops
mx::Stream cpu_stream() { return mx::default_stream(mx::Device::cpu); }

mx::array checked(const mx::array& x, const char* what) {
  if (x.dtype() != mx::float32) throw std::invalid_argument(std::string(what) + ": float32 expected");
  if (x.ndim() < 1 || x.shape().back() == 0) throw std::invalid_argument(std::string(what) + ": empty last axis");
  return mx::contiguous(x, false, cpu_stream());
}

mx::array softmax(const mx::array& x) {
  auto xc = checked(x, "softmax");
  return mx::array(xc.shape(), mx::float32, std::make_shared<Softmax>(cpu_stream()), {xc});
}

mx::array gelu(const mx::array& x) {
  auto xc = checked(x, "gelu");
  return mx::array(xc.shape(), mx::float32, std::make_shared<Gelu>(cpu_stream()), {xc});
}

mx::array logsumexp(const mx::array& x) {
  auto xc = checked(x, "logsumexp");
  mx::Shape shape(xc.shape().begin(), xc.shape().end() - 1);
  return mx::array(shape, mx::float32, std::make_shared<LogSumExp>(cpu_stream()), {xc});
}

std::vector<mx::array> topk(const mx::array& x, int k) {
  auto xc = checked(x, "topk");
  if (k < 1 || k > xc.shape().back()) throw std::invalid_argument("topk: 0 < k <= the last axis expected");
  mx::Shape shape = xc.shape();
  shape.back() = k;
  return mx::array::make_arrays({shape, shape}, {mx::int32, mx::float32}, std::make_shared<TopK>(cpu_stream(), k),
                                {xc});
}

mx::array attention(const mx::array& q, const mx::array& k, const mx::array& v, float scale) {
  auto qc = checked(q, "attend"), kc = checked(k, "attend"), vc = checked(v, "attend");
  if (qc.ndim() != 3 || kc.ndim() != 3 || kc.shape() != vc.shape() || qc.shape(0) != kc.shape(0) ||
      qc.shape(2) != kc.shape(2))
    throw std::invalid_argument("attend: q (units, nq, dim) and k, v (units, length, dim) expected");
  return mx::array(qc.shape(), mx::float32, std::make_shared<Attend>(cpu_stream(), scale), {qc, kc, vc});
}

mx::array head_attention(const mx::array& q, const mx::array& k, const mx::array& v, float scale) {
  for (const auto* x : {&q, &k, &v})
    if (x->dtype() != mx::float32 || x->ndim() != 4)
      throw std::invalid_argument("head_attention: float32 (B, H, T, D) expected");
  if (k.shape() != v.shape() || q.shape(0) != k.shape(0) || q.shape(1) != k.shape(1) || q.shape(3) != k.shape(3) ||
      q.shape(2) == 0 || k.shape(2) == 0 || q.shape(3) == 0 || q.shape(3) % 16 != 0)
    throw std::invalid_argument(
        "head_attention: q (B, H, T, D), k and v (B, H, S, D), none empty, D a multiple of 16, expected");
  return mx::array(q.shape(), mx::float32, std::make_shared<HeadAttention>(cpu_stream(), scale), {q, k, v});
}

mx::array linear(const mx::array& x, const mx::array& w, const std::optional<mx::array>& b) {
  auto xc = checked(x, "linear"), wc = checked(w, "linear");
  if (wc.ndim() != 2 || xc.ndim() < 1 || xc.shape(-1) != wc.shape(1) || wc.shape(0) % 32 != 0 || wc.shape(1) == 0)
    throw std::invalid_argument("linear: x (..., K) and w (N, K), N a multiple of 32, expected");
  std::vector<mx::array> inputs{xc, wc};
  if (b) {
    auto bc = checked(*b, "linear");
    if (bc.ndim() != 1 || bc.shape(0) != wc.shape(0)) throw std::invalid_argument("linear: bias (N,) expected");
    inputs.push_back(bc);
  }
  auto shape = xc.shape();
  shape.back() = wc.shape(0);
  return mx::array(shape, mx::float32, std::make_shared<Linear>(cpu_stream()), inputs);
}

std::vector<mx::array> lstm(const mx::array& gates, const mx::array& wh, const mx::array& h0, const mx::array& c0) {
  auto g = checked(gates, "lstm"), w = checked(wh, "lstm"), h = checked(h0, "lstm"), c = checked(c0, "lstm");
  if (g.ndim() != 3 || w.ndim() != 2 || w.shape(0) != 4 * w.shape(1) || g.shape(2) != w.shape(0) ||
      h.shape() != mx::Shape{g.shape(0), w.shape(1)} || c.shape() != h.shape())
    throw std::invalid_argument("lstm: gates (B, T, 4H), wh (4H, H), h0 and c0 (B, H) expected");
  mx::Shape out{g.shape(0), g.shape(1), w.shape(1)};
  return mx::array::make_arrays({out, h.shape()}, {mx::float32, mx::float32}, std::make_shared<Lstm>(cpu_stream()),
                                {g, w, h, c});
}

mx::array median_filter(const mx::array& x, const mx::array& lengths, int width) {
  auto xc = checked(x, "median_filter");
  if (width < 1 || width % 2 == 0 || width > MAX_MEDIAN_WIDTH)
    throw std::invalid_argument("median_filter: an odd width of at most " + std::to_string(MAX_MEDIAN_WIDTH));
  if (xc.ndim() < 2 || lengths.ndim() != 1 || lengths.shape(0) != xc.shape(0))
    throw std::invalid_argument("median_filter: x (B, ..., F) and lengths (B,) expected");
  auto lc = mx::contiguous(mx::astype(lengths, mx::int32, cpu_stream()), false, cpu_stream());
  return mx::array(xc.shape(), mx::float32, std::make_shared<MedianFilter>(cpu_stream(), width), {xc, lc});
}

}  // namespace

NB_MODULE(_kernels, m) {
  nb::module_::import_("mlx.core");
  m.attr("MLX_VERSION") = MLX_BUILT_VERSION;
  m.attr("MAX_MEDIAN_WIDTH") = MAX_MEDIAN_WIDTH;
  m.def("mlx_version", [] { return std::string(mx::version()); }, "The MLX version loaded in this process.");
  m.def("softmax", &softmax, "x"_a, "Softmax over the last axis of a float32 array (lazy, on the CPU).");
  m.def("gelu", &gelu, "x"_a, "Exact (erf) GELU of a float32 array (lazy, on the CPU).");
  m.def("logsumexp", &logsumexp, "x"_a, "log Σ exp over the last axis of a float32 array (lazy, on the CPU).");
  m.def("topk", &topk, "x"_a, "k"_a,
        "[indices, values] of the k largest of each last-axis row, largest first (lazy, on the CPU).");
  m.def("attend", &attention, "q"_a, "k"_a, "v"_a, "scale"_a,
        "softmax(q kᵀ·scale) v for q (units, nq, dim) against k, v (units, length, dim) (lazy, on the CPU).");
  m.def("head_attention", &head_attention, "q"_a, "k"_a, "v"_a, "scale"_a,
        "softmax(q kᵀ·scale) v for q (B, H, T, D) and k, v (B, H, S, D), a head at a time; the result is laid "
        "out (B, T, H, D) in memory (lazy, on the CPU).");
  m.def("linear", &linear, "x"_a, "w"_a, "b"_a = nb::none(),
        "x wᵀ (+ b) for float32 x (..., K), w (N, K) with N a multiple of 32, b (N,) (lazy, on the CPU).");
  m.def("lstm", &lstm, "gates"_a, "wh"_a, "h0"_a, "c0"_a,
        "[hidden (B, T, H), last cell (B, H)] of an LSTM over gates x·Wxᵀ + b (B, T, 4H) (lazy, on the CPU).");
  m.def("median_filter", &median_filter, "x"_a, "lengths"_a, "width"_a,
        "Median of width neighbours along the last axis of (B, ..., F), each row reflected at lengths[b] "
        "(rows no longer than width / 2 unfiltered, positions past the length 0) (lazy, on the CPU).");
  m.def("set_threads", [](int n) { pool().set_threads(n); }, "n"_a, "Threads the kernels split their work over.");
  m.def("threads", [] { return pool().threads(); }, "Threads the kernels split their work over.");
}
