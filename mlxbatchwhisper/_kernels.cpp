// Float32 CPU kernels as MLX primitives: softmax over the last axis, exact GELU, layer norm, row-wise
// log-sum-exp and top-k, an LSTM's recurrence (Silero VAD's), a median filter along rows (word
// alignment's), attention of a few queries per head against precomputed keys and values (a
// decoding step's cross-attention; the beams of a segment share their keys and values),
// self-attention of long sequences (the encoder's) one head at a time, and the products of linear
// layers: over many rows with the weights packed into panels, over token rows as dot products.
//
// MLX's Linux CPU build computes exp and erf one element at a time; the loops (_kernel_loops.h) are
// vectorized by the compiler, the products are register tiles (_kernel_tiles.h, _kernel_dots.h), and both are split
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

#include "mlx/array.h"
#include "mlx/ops.h"
#include "mlx/version.h"

#include "_primitives.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// ---------------------------------------------------------------- ops
mx::Stream cpu_stream() { return mx::default_stream(mx::Device::cpu); }

// x row-contiguous: itself when already evaluated so (weights, caches: no node in the graph)
mx::array row_major(const mx::array& x) {
  if (x.is_available() && x.flags().row_contiguous) return x;
  return mx::contiguous(x, false, cpu_stream());
}

mx::array checked(const mx::array& x, const char* what) {
  if (x.dtype() != mx::float32) throw std::invalid_argument(std::string(what) + ": float32 expected");
  if (x.ndim() < 1 || x.shape().back() == 0) throw std::invalid_argument(std::string(what) + ": empty last axis");
  return row_major(x);
}

mx::array softmax(const mx::array& x) {
  auto xc = checked(x, "softmax");
  return mx::array(xc.shape(), mx::float32, std::make_shared<Softmax>(cpu_stream()), {xc});
}

mx::array gelu(const mx::array& x) {
  auto xc = checked(x, "gelu");
  return mx::array(xc.shape(), mx::float32, std::make_shared<Gelu>(cpu_stream()), {xc});
}

mx::array layer_norm(const mx::array& x, const mx::array& w, const mx::array& b, float eps) {
  auto xc = checked(x, "layer_norm"), wc = checked(w, "layer_norm"), bc = checked(b, "layer_norm");
  const mx::Shape row{xc.shape().back()};
  if (wc.shape() != row || bc.shape() != row)
    throw std::invalid_argument("layer_norm: weight and bias of x's last axis expected");
  return mx::array(xc.shape(), mx::float32, std::make_shared<LayerNorm>(cpu_stream(), eps), {xc, wc, bc});
}

mx::array logit_rules(const mx::array& x, const mx::array& bounds, const mx::array& suppress,
                      const mx::array& suppress_first, int64_t tb) {
  auto xc = checked(x, "logit_rules");
  const int64_t n = xc.shape().back();
  if (xc.ndim() != 2 || bounds.dtype() != mx::int32 || bounds.shape() != mx::Shape{xc.shape(0), 4} ||
      suppress.dtype() != mx::bool_ || suppress_first.dtype() != mx::bool_ || suppress.shape() != mx::Shape{int(n)} ||
      suppress_first.shape() != suppress.shape() || tb < 0 || tb > n)
    throw std::invalid_argument(
        "logit_rules: logits (B, V), int32 bounds (B, 4), bool masks (V,) and 0 <= tb <= V expected");
  return mx::array(xc.shape(), mx::float32, std::make_shared<LogitRules>(cpu_stream(), tb),
                   {xc, row_major(bounds), row_major(suppress), row_major(suppress_first)});
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
      q.size() == 0 || k.size() == 0 || q.shape(3) % 16 != 0)
    throw std::invalid_argument(
        "head_attention: q (B, H, T, D), k and v (B, H, S, D), none empty, D a multiple of 16, expected");
  // the threads' scratch (each: a head's keys packed, a block's scores, its values) in one buffer
  const int64_t padded = (k.shape(2) + 15) / 16 * 16, D = q.shape(3);
  if (int64_t{pool().threads()} * (padded * (D + kQueryBlock) + k.shape(2) * D) > INT32_MAX)
    throw std::invalid_argument("head_attention: keys too long for one scratch buffer");
  return mx::array(q.shape(), mx::float32, std::make_shared<HeadAttention>(cpu_stream(), scale), {q, k, v});
}

std::vector<mx::array> linear_inputs(const mx::array& x, const mx::array& w, const std::optional<mx::array>& b,
                                     const char* what) {
  auto xc = checked(x, what), wc = checked(w, what);
  if (wc.ndim() != 2 || xc.ndim() < 1 || xc.shape(-1) != wc.shape(1) || wc.size() == 0)
    throw std::invalid_argument(std::string(what) + ": x (..., K) and w (N, K), w not empty, expected");
  if (wc.size() > INT32_MAX || xc.size() > INT32_MAX) throw std::invalid_argument(std::string(what) + ": more than 2^31 values");
  std::vector<mx::array> inputs{xc, wc};
  if (b) {
    auto bc = checked(*b, what);
    if (bc.ndim() != 1 || bc.shape(0) != wc.shape(0)) throw std::invalid_argument(std::string(what) + ": bias (N,) expected");
    inputs.push_back(bc);
  }
  return inputs;
}

mx::Shape linear_shape(const mx::array& x, const mx::array& w) {
  auto shape = x.shape();
  shape.back() = w.shape(0);
  return shape;
}

mx::array linear(const mx::array& x, const mx::array& w, const std::optional<mx::array>& b) {
  auto inputs = linear_inputs(x, w, b, "linear");
  if (w.shape(0) % 32 != 0) throw std::invalid_argument("linear: N a multiple of 32 expected");
  return mx::array(linear_shape(x, w), mx::float32, std::make_shared<Linear>(cpu_stream()), inputs);
}

mx::array dot_linear(const mx::array& x, const mx::array& w, const std::optional<mx::array>& b) {
  auto inputs = linear_inputs(x, w, b, "dot_linear");
  if (w.shape(1) % level().lanes != 0)
    throw std::invalid_argument("dot_linear: K a multiple of " + std::to_string(level().lanes) + " expected");
  return mx::array(linear_shape(x, w), mx::float32, std::make_shared<DotLinear>(cpu_stream()), inputs);
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
  m.attr("API") = 2;  // raised when ops are added or change: kernels.py refuses an older build
  m.attr("MAX_MEDIAN_WIDTH") = MAX_MEDIAN_WIDTH;
  m.def("mlx_version", [] { return std::string(mx::version()); }, "The MLX version loaded in this process.");
  m.def("softmax", &softmax, "x"_a, "Softmax over the last axis of a float32 array (lazy, on the CPU).");
  m.def("gelu", &gelu, "x"_a, "Exact (erf) GELU of a float32 array (lazy, on the CPU).");
  m.def("layer_norm", &layer_norm, "x"_a, "w"_a, "b"_a, "eps"_a,
        "Layer normalization over the last axis of a float32 array, then · w + b (lazy, on the CPU).");
  m.def("logit_rules", &logit_rules, "x"_a, "bounds"_a, "suppress"_a, "suppress_first"_a, "tb"_a,
        "openai-whisper's logit filters on float32 logits (B, V): per row, bounds (prefix, suffix, timestamp floor, "
        "first) and the suppression masks (bool, V); then the text columns banned where the timestamps' "
        "log-sum-exp beats the best text logit (lazy, on the CPU).");
  m.def("logsumexp", &logsumexp, "x"_a, "log Σ exp over the last axis of a float32 array (lazy, on the CPU).");
  m.def("topk", &topk, "x"_a, "k"_a,
        "[indices, values] of the k largest of each last-axis row, largest first (lazy, on the CPU).");
  m.def("attend", &attention, "q"_a, "k"_a, "v"_a, "scale"_a,
        "softmax(q kᵀ·scale) v for q (units, nq, dim) against k, v (units, length, dim) (lazy, on the CPU).");
  m.def("head_attention", &head_attention, "q"_a, "k"_a, "v"_a, "scale"_a,
        "softmax(q kᵀ·scale) v for q (B, H, T, D) and k, v (B, H, S, D), a head at a time; the result is laid "
        "out (B, T, H, D) in memory (lazy, on the CPU).");
  m.def("linear", &linear, "x"_a, "w"_a, "b"_a = nb::none(),
        "x wᵀ (+ b) for float32 x (..., K), w (N, K) with N a multiple of 32, b (N,), w packed into panels "
        "(lazy, on the CPU).");
  m.def("dot_linear", &dot_linear, "x"_a, "w"_a, "b"_a = nb::none(),
        "x wᵀ (+ b) for float32 x (..., K), w (N, K) with K a multiple of `lanes()`, b (N,), as dot products "
        "along k, w read in place: a row's result the same whatever the other rows (lazy, on the CPU).");
  m.def("lanes", [] { return level().lanes; }, "Floats a vector of the CPU level in use holds.");
  m.def("lstm", &lstm, "gates"_a, "wh"_a, "h0"_a, "c0"_a,
        "[hidden (B, T, H), last cell (B, H)] of an LSTM over gates x·Wxᵀ + b (B, T, 4H) (lazy, on the CPU).");
  m.def("median_filter", &median_filter, "x"_a, "lengths"_a, "width"_a,
        "Median of width neighbours along the last axis of (B, ..., F), each row reflected at lengths[b] "
        "(rows no longer than width / 2 unfiltered, positions past the length 0) (lazy, on the CPU).");
  m.def("set_threads", [](int n) { pool().set_threads(n); }, "n"_a, "Threads the kernels split their work over.");
  m.def("threads", [] { return pool().threads(); }, "Threads the kernels split their work over.");
}
