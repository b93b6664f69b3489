// The kernels' MLX primitives: each one's output buffer allocated by MLX (or donated), its loop
// (_kernel_loops.h, _kernel_tiles.h, _kernel_dots.h) dispatched on MLX's CPU stream. Included by _kernels.cpp.
#pragma once

#include <algorithm>
#include <atomic>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/common/unary.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/primitives.h"

#include "_kernel_loops.h"  // NOLINT: after the MLX headers, as they use none of them
#include "_kernel_tiles.h"  // NOLINT

namespace mx = mlx::core;

namespace {

void no_gpu(const char* name) { throw std::runtime_error(std::string(name) + ": CPU only"); }

// MLX's CPU command encoder for stream s, with a primitive's inputs and outputs registered with it.
mx::cpu::CommandEncoder& encoder(mx::Stream s, const std::vector<mx::array>& inputs,
                                 std::initializer_list<mx::array*> outputs) {
  auto& enc = mx::cpu::get_command_encoder(s);
  for (const auto& a : inputs) enc.set_input_array(a);
  for (auto* a : outputs) enc.set_output_array(*a);
  return enc;
}

class Softmax : public mx::UnaryPrimitive {
 public:
  explicit Softmax(mx::Stream s) : mx::UnaryPrimitive(s) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    mx::set_unary_output_data(x, out);  // x's buffer when MLX says nothing else needs it
    auto& enc = encoder(stream(), inputs, {&out});
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
    auto& enc = encoder(stream(), inputs, {&out});
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

class LayerNorm : public mx::UnaryPrimitive {
 public:
  LayerNorm(mx::Stream s, float eps) : mx::UnaryPrimitive(s), eps_(eps) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &x = inputs[0], &w = inputs[1], &b = inputs[2];
    mx::set_unary_output_data(x, out);  // each row is read whole before it is written
    auto& enc = encoder(stream(), inputs, {&out});
    int64_t n = x.shape().back();
    enc.dispatch([x = mx::array::unsafe_weak_copy(x), w = mx::array::unsafe_weak_copy(w),
                  b = mx::array::unsafe_weak_copy(b), out = mx::array::unsafe_weak_copy(out), n,
                  eps = eps_]() mutable {
      const float *src = x.data<float>(), *pw = w.data<float>(), *pb = b.data<float>();
      float* dst = out.data<float>();
      pool().run(static_cast<int64_t>(x.size()) / n,
                 [&](int64_t lo, int64_t hi) { layer_norm_rows(src + lo * n, pw, pb, dst + lo * n, hi - lo, n, eps); });
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "MlxbatchwhisperLayerNorm"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return static_cast<const LayerNorm&>(other).eps_ == eps_;
  }

 private:
  float eps_;
};

class LogitRules : public mx::UnaryPrimitive {
 public:
  LogitRules(mx::Stream s, int64_t tb) : mx::UnaryPrimitive(s), tb_(tb) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &x = inputs[0], &bounds = inputs[1], &suppress = inputs[2], &first = inputs[3];
    mx::set_unary_output_data(x, out);  // each element is read before it is written
    auto& enc = encoder(stream(), inputs, {&out});
    int64_t n = x.shape().back();
    enc.dispatch([x = mx::array::unsafe_weak_copy(x), b = mx::array::unsafe_weak_copy(bounds),
                  s = mx::array::unsafe_weak_copy(suppress), f = mx::array::unsafe_weak_copy(first),
                  out = mx::array::unsafe_weak_copy(out), n, tb = tb_]() mutable {
      const float* src = x.data<float>();
      const int32_t* pb = b.data<int32_t>();
      float* dst = out.data<float>();
      pool().run(static_cast<int64_t>(x.size()) / n, [&](int64_t lo, int64_t hi) {
        logit_rules_rows(src + lo * n, pb + 4 * lo, s.data<bool>(), f.data<bool>(), dst + lo * n, hi - lo, n, tb);
      });
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "MlxbatchwhisperLogitRules"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return static_cast<const LogitRules&>(other).tb_ == tb_;
  }

 private:
  int64_t tb_;
};

class LogSumExp : public mx::UnaryPrimitive {
 public:
  explicit LogSumExp(mx::Stream s) : mx::UnaryPrimitive(s) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& enc = encoder(stream(), inputs, {&out});
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
    auto& enc = encoder(stream(), inputs, {&idx, &val});
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
// before anything runs) and registered, with the primitive's inputs and its output, with MLX's CPU encoder.
mx::array scratch(mx::Stream s, int64_t n, const std::vector<mx::array>& inputs, mx::array& out) {
  if (n > INT32_MAX) throw std::invalid_argument("scratch of more than 2^31 floats");
  mx::array buffer({static_cast<int>(n)}, mx::float32, nullptr, {});
  buffer.set_data(mx::allocator::malloc(buffer.nbytes()));
  encoder(s, inputs, {&out}).add_temporary(buffer);
  return buffer;
}

// An attention primitive of one scale (1/√D): equivalent to another of its kind and scale.
class ScaledAttention : public mx::UnaryPrimitive {
 public:
  ScaledAttention(mx::Stream s, float scale) : mx::UnaryPrimitive(s), scale_(scale) {}
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  bool is_equivalent(const mx::Primitive& other) const override {
    return typeid(other) == typeid(*this) && static_cast<const ScaledAttention&>(other).scale_ == scale_;
  }

 protected:
  float scale_;
};

class Attend : public ScaledAttention {
 public:
  using ScaledAttention::ScaledAttention;
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &q = inputs[0], &k = inputs[1], &v = inputs[2];
    out.set_data(mx::allocator::malloc(out.nbytes()));
    int64_t units = q.shape(0), nq = q.shape(1), dim = q.shape(2), length = k.shape(1);
    int threads = pool().threads();
    auto buffer = scratch(stream(), threads * nq * length, inputs, out);  // each share's scores
    mx::cpu::get_command_encoder(stream()).dispatch([q = mx::array::unsafe_weak_copy(q), k = mx::array::unsafe_weak_copy(k),
                  v = mx::array::unsafe_weak_copy(v), out = mx::array::unsafe_weak_copy(out),
                  scratch = mx::array::unsafe_weak_copy(buffer), units, nq, dim, length, threads,
                  scale = scale_]() mutable {
      const float *pq = q.data<float>(), *pk = k.data<float>(), *pv = v.data<float>();
      float *po = out.data<float>(), *ps = scratch.data<float>();
      std::atomic<int> slot{0};
      static const Level& lv = level();
      const auto loop = dim % (4 * lv.lanes) == 0 ? lv.attend : attend;
      pool().run(
          units,
          [&](int64_t b, int64_t e) {
            float* scores = ps + static_cast<int64_t>(slot.fetch_add(1)) * nq * length;
            loop(pq + b * nq * dim, pk + b * length * dim, pv + b * length * dim, po + b * nq * dim, e - b, nq,
                 length, dim, scale, scores);
          },
          threads);  // at most one share a slot
    });
  }
  const char* name() const override { return "MlxbatchwhisperAttend"; }
};

// softmax(q kᵀ·scale) v for q (B, H, T, D) and k, v (B, H, S, D), a head at a time through
// head_attention_rows (register tiles in the widest vectors the CPU has; only a block of queries'
// scores alive per thread), the output laid out (B, T, H, D), what the output projection reads: no
// transposed copy on either side. The work is split over (head, stretch of queries) units.
class HeadAttention : public ScaledAttention {
 public:
  using ScaledAttention::ScaledAttention;
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &q = inputs[0], &k = inputs[1], &v = inputs[2];
    const int64_t B = q.shape(0), H = q.shape(1), T = q.shape(2), D = q.shape(3), S = k.shape(2);
    out.set_data(mx::allocator::malloc(out.nbytes()), out.size(), {T * H * D, D, H * D, 1},
                 {true, H == 1 || T == 1, false});
    const int threads = pool().threads();
    const int64_t padded = (S + 15) / 16 * 16, slot_size = padded * (D + kQueryBlock) + (v.strides(3) == 1 ? 0 : S * D);
    // enough stretches of queries for every thread to have work, each of at least a block
    const int64_t stretches = std::clamp<int64_t>((2 * threads + B * H - 1) / (B * H), 1, (T + kQueryBlock - 1) / kQueryBlock);
    auto buffer = scratch(stream(), threads * slot_size, inputs, out);
    mx::cpu::get_command_encoder(stream()).dispatch([q = mx::array::unsafe_weak_copy(q), k = mx::array::unsafe_weak_copy(k),
                  v = mx::array::unsafe_weak_copy(v), out = mx::array::unsafe_weak_copy(out),
                  scratch = mx::array::unsafe_weak_copy(buffer), B, H, T, D, S, threads, slot_size, stretches,
                  scale = scale_]() mutable {
      static const auto loop = level().head_attention;
      auto view = [](const mx::array& x, int64_t b, int64_t h) {
        const auto& st = x.strides();
        return HeadView{x.data<float>() + b * st[0] + h * st[1], st[2], st[3]};
      };
      std::atomic<int> slot{0};
      pool().run(
          B * H * stretches,
          [&](int64_t first, int64_t last) {
            float* mine = scratch.data<float>() + static_cast<int64_t>(slot.fetch_add(1)) * slot_size;
            for (int64_t u = first; u < last; u++) {
              const int64_t b = u / (H * stretches), h = u / stretches % H, part = u % stretches;
              const int64_t begin = T * part / stretches, end = T * (part + 1) / stretches;
              loop(view(q, b, h), view(k, b, h), view(v, b, h), out.data<float>() + b * T * H * D + h * D, H * D,
                   begin, end, S, D, scale, mine);
            }
          },
          threads);  // at most one share a slot
    });
  }
  const char* name() const override { return "MlxbatchwhisperHeadAttention"; }
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
    auto packed = scratch(stream(), N * K, inputs, out);
    const bool has_bias = inputs.size() == 3;
    mx::cpu::get_command_encoder(stream()).dispatch([x = mx::array::unsafe_weak_copy(x), w = mx::array::unsafe_weak_copy(w),
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

// y = x wᵀ (+ b) for x (..., K) and w (N × K), both row-contiguous, K a multiple of the vector width,
// as dot products (dot_rows): w read in place, its rows split over the threads.
class DotLinear : public mx::UnaryPrimitive {
 public:
  explicit DotLinear(mx::Stream s) : mx::UnaryPrimitive(s) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &x = inputs[0], &w = inputs[1];
    const int64_t N = w.shape(0), K = w.shape(1), M = x.size() / K;
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& enc = encoder(stream(), inputs, {&out});
    const bool has_bias = inputs.size() == 3;
    enc.dispatch([x = mx::array::unsafe_weak_copy(x), w = mx::array::unsafe_weak_copy(w),
                  b = has_bias ? mx::array::unsafe_weak_copy(inputs[2]) : mx::array(0.f),
                  out = mx::array::unsafe_weak_copy(out), M, N, K, has_bias]() mutable {
      static const Level& lv = level();
      const float *px = x.data<float>(), *pw = w.data<float>(), *pb = has_bias ? b.data<float>() : nullptr;
      float* py = out.data<float>();
      pool().run((N + kDotChunk - 1) / kDotChunk, [&](int64_t first, int64_t last) {
        lv.dot(px, M, K, pw, pb, py, N, first * kDotChunk, std::min(N, last * kDotChunk));
      });
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { no_gpu(name()); }
  const char* name() const override { return "MlxbatchwhisperDotLinear"; }
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
    auto& enc = encoder(stream(), inputs, {&hidden, &cell});
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
    auto& enc = encoder(stream(), inputs, {&out});
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

}  // namespace
