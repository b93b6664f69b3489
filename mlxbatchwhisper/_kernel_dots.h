// Vectors of floats and the kernels of a decoding step on the CPU: attention of a few queries against
// a head's keys and values, and the products of token rows as dot products (weights read in place).
// Plain C++ on float buffers (no MLX), as _kernel_loops.h; compiled per CPU level by _kernel_tiles.h.
#pragma once

#include <utility>

#include "_kernel_loops.h"

namespace {

// vectors of 4, 8 and 16 floats, loaded and stored unaligned
typedef float f4 __attribute__((vector_size(16)));
typedef float f8 __attribute__((vector_size(32)));
typedef float f16 __attribute__((vector_size(64)));

template <class V>
INLINE V load(const float* p) {  // unaligned
  V x;
  std::memcpy(&x, p, sizeof x);
  return x;
}

template <class V>
INLINE void store(float* p, V x) {
  std::memcpy(p, &x, sizeof x);
}

// ---------------------------------------------------------------- a decoding step's attention
// softmax(q kᵀ·scale) v for a few queries against one head's keys and values (rows of dim floats, dim a
// multiple of 4L). Scores a block of L keys at a time: each key's products summed into one vector,
// then the block's L vectors folded into one vector of L sums (transpose_sum); outputs in registers,
// blocks of 4 queries × 4 vectors. A query's arithmetic is the same whatever the other queries.
constexpr int64_t kAhead = 512;  // floats read ahead of the keys and values (prefetched)

template <int L, int S>
constexpr int fold_lane(int i, bool upper) {  // lane i of a fold at S lanes a key (see transpose_sum)
  const int half = S / 2, key = i / half, per = L / S;
  return (key < per ? key * S : L + (key - per) * S) + i % half + (upper ? half : 0);
}

template <class V, int L, int S, std::size_t... I>
INLINE V fold(V a, V b, std::index_sequence<I...>) {
  return __builtin_shufflevector(a, b, fold_lane<L, S>(I, false)...) +
         __builtin_shufflevector(a, b, fold_lane<L, S>(I, true)...);
}

// Lane i of the result: the sum of x[i]'s lanes. Each level pairs vectors that hold L/S keys of S
// lanes into vectors of 2L/S keys of S/2 lanes, the keys in order.
template <class V, int L, int S = L>
INLINE V transpose_sum(V* x) {
  if constexpr (S == 1) {
    return x[0];
  } else {
    for (int i = 0; i < S / 2; i++) x[i] = fold<V, L, S>(x[2 * i], x[2 * i + 1], std::make_index_sequence<L>{});
    return transpose_sum<V, L, S / 2>(x);
  }
}

template <class V, int L, int Q>
INLINE void attend_values(const float* p, int64_t length, const float* v, int64_t dim, float* out) {
  for (int64_t c = 0; c < dim; c += 4 * L) {
    V a[Q][4];
    for (int j = 0; j < Q; j++)
      for (int i = 0; i < 4; i++) a[j][i] = V{};
    for (int64_t t = 0; t < length; t++) {
      V x[4];
      for (int i = 0; i < 4; i++) {
        __builtin_prefetch(v + t * dim + c + i * L + kAhead);
        x[i] = load<V>(v + t * dim + c + i * L);
      }
      for (int j = 0; j < Q; j++) {
        const float w = p[j * length + t];
        for (int i = 0; i < 4; i++) a[j][i] += x[i] * w;
      }
    }
    for (int j = 0; j < Q; j++)
      for (int i = 0; i < 4; i++) store<V>(out + j * dim + c + i * L, a[j][i]);
  }
}

// One head: q, out (nq, dim); k, v (length, dim); scores (nq × length) scratch.
template <class V, int L>
INLINE void attend_head(const float* q, const float* k, const float* v, float* out, int64_t nq, int64_t length,
                        int64_t dim, float scale, float* scores) {
  for (int64_t t0 = 0; t0 < length; t0 += L) {
    const int64_t n = std::min<int64_t>(L, length - t0);
    for (int64_t j = 0; j < nq; j++) {
      const float* qj = q + j * dim;
      V part[L];
      for (int i = 0; i < L; i++) {
        V s = V{};
        if (i < n)
          for (int64_t c = 0; c < dim; c += L) {
            __builtin_prefetch(k + (t0 + i) * dim + c + kAhead);
            s += load<V>(qj + c) * load<V>(k + (t0 + i) * dim + c);
          }
        part[i] = s;
      }
      const V sums = transpose_sum<V, L>(part) * scale;
      float lanes[L];
      store<V>(lanes, sums);
      std::memcpy(scores + j * length + t0, lanes, n * sizeof(float));
    }
  }
  softmax_rows(scores, scores, nq, length);
  int64_t j = 0;
  for (; j + 4 <= nq; j += 4) attend_values<V, L, 4>(scores + j * length, length, v, dim, out + j * dim);
  for (; j < nq; j++) attend_values<V, L, 1>(scores + j * length, length, v, dim, out + j * dim);
}

template <class V, int L>
INLINE void attend_heads(const float* q, const float* k, const float* v, float* out, int64_t units, int64_t nq,
                         int64_t length, int64_t dim, float scale, float* scores) {
  for (int64_t h = 0; h < units; h++)
    attend_head<V, L>(q + h * nq * dim, k + h * length * dim, v + h * length * dim, out + h * nq * dim, nq, length,
                      dim, scale, scores);
}

// ---------------------------------------------------------------- a linear layer's product of token rows
// y = x wᵀ (+ b) as dot products along k, for the decoder's token rows (a step's few rows read every
// weight once, in place; no packing): a tile of up to RM rows × RN weights' rows keeps RM·RN = L
// vectors of partial sums (lane l: the products of k ≡ l mod L, in order), folded into one vector of
// the tile's outputs (transpose_sum), then the bias. Every output's arithmetic is the same wherever
// it sits in a tile and whatever the other rows, so a row's result does not depend on its batch.
// K is a multiple of L.
constexpr int64_t kDotRowBlock = 64;  // x's rows every weight tile meets before the next (kept in cache)
constexpr int64_t kDotChunk = 64;     // w's rows one thread takes at a time: a multiple of RN

template <class V, int L, int RN, int R>
INLINE void dot_tile(const float* x, const float* w, int64_t K, const float* bias, float* y, int64_t ldy,
                     int64_t cols) {
  V acc[L];
  for (int i = 0; i < L; i++) acc[i] = V{};
  const float* wc[RN];
  for (int c = 0; c < RN; c++) wc[c] = w + std::min<int64_t>(c, cols - 1) * K;  // past the last: repeated, unused
  for (int64_t k = 0; k < K; k += L) {
    V a[R], b[RN];
    for (int r = 0; r < R; r++) a[r] = load<V>(x + r * K + k);
    for (int c = 0; c < RN; c++) {
      __builtin_prefetch(wc[c] + RN * K + k);  // the next tile's weights
      b[c] = load<V>(wc[c] + k);
    }
    for (int r = 0; r < R; r++)
      for (int c = 0; c < RN; c++) acc[r * RN + c] += a[r] * b[c];
  }
  float sums[L];
  store<V>(sums, transpose_sum<V, L>(acc));
  for (int r = 0; r < R; r++)
    for (int64_t c = 0; c < cols; c++) y[r * ldy + c] = bias ? sums[r * RN + c] + bias[c] : sums[r * RN + c];
}

template <class V, int L, int RN, int R>
INLINE void dot_tail(int64_t rows, const float* x, const float* w, int64_t K, const float* bias, float* y,
                     int64_t ldy, int64_t cols) {  // the last rows < R of a block
  if constexpr (R > 0) {
    if (rows == R) return dot_tile<V, L, RN, R>(x, w, K, bias, y, ldy, cols);
    dot_tail<V, L, RN, R - 1>(rows, x, w, K, bias, y, ldy, cols);
  }
}

// Columns [first, last) of y (M × N) from x (M × K) and w (N × K); bias may be null.
template <class V, int L, int RM, int RN>
INLINE void dot_rows(const float* x, int64_t M, int64_t K, const float* w, const float* bias, float* y, int64_t N,
                     int64_t first, int64_t last) {
  static_assert(RM * RN == L);
  for (int64_t m0 = 0; m0 < M; m0 += kDotRowBlock) {
    const int64_t m1 = std::min(M, m0 + kDotRowBlock);
    for (int64_t n = first; n < last; n += RN) {
      const int64_t cols = std::min<int64_t>(RN, last - n);
      const float* b = bias ? bias + n : nullptr;
      int64_t m = m0;
      for (; m + RM <= m1; m += RM) dot_tile<V, L, RN, RM>(x + m * K, w + n * K, K, b, y + m * N + n, N, cols);
      dot_tail<V, L, RN, RM - 1>(m1 - m, x + m * K, w + n * K, K, b, y + m * N + n, N, cols);
    }
  }
}

}  // namespace
