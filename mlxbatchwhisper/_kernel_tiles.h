// Register tiles for the CPU's float32 products of many rows: a head's self-attention and a linear
// layer's product; with _kernel_dots.h's, each compiled for AVX-512, AVX2 and 4-wide vectors, one level
// chosen at run time. Plain C++ on float buffers (no MLX), as _kernel_loops.h.
#pragma once

#include "_kernel_dots.h"

namespace {

// ---------------------------------------------------------------- a head's self-attention
// softmax(q kᵀ·scale) v for one head, its queries a block at a time: the block's scores stay in
// cache and both products are register tiles of vectors of L floats (a block's queries against two
// vectors of keys; a few queries against C vectors of a value row). Each result is summed in one
// order whatever the blocking, threads or batch: a score over d, an output over the keys (then
// divided by its row's sum of exponentials).
struct HeadView {  // one head's (rows × dim) matrix: element (t, d) at data[t * row + d * col]
  const float* data;
  int64_t row, col;
};

constexpr int64_t kQueryBlock = 12;  // the largest block of queries a level's tiles take

// scores[r][s] = scale · q_r · k_s for R queries and keys packed (groups of L, dim, L)
template <class V, int L, int R>
INLINE void score_tile(HeadView q, const float* keys, int64_t groups, int64_t dim, float scale, float* scores,
                       int64_t stride) {
  int64_t g = 0;
  for (; g + 2 <= groups; g += 2) {
    V a[R], b[R];
    for (int r = 0; r < R; r++) a[r] = b[r] = V{};
    const float *k0 = keys + g * dim * L, *k1 = k0 + dim * L;
    for (int64_t d = 0; d < dim; d++) {
      V x = load<V>(k0 + d * L), y = load<V>(k1 + d * L);
      for (int r = 0; r < R; r++) {
        float w = q.data[r * q.row + d * q.col];
        a[r] += x * w;
        b[r] += y * w;
      }
    }
    for (int r = 0; r < R; r++) {
      store<V>(scores + r * stride + g * L, a[r] * scale);
      store<V>(scores + r * stride + g * L + L, b[r] * scale);
    }
  }
  for (; g < groups; g++) {
    V a[R];
    for (int r = 0; r < R; r++) a[r] = V{};
    const float* k0 = keys + g * dim * L;
    for (int64_t d = 0; d < dim; d++) {
      V x = load<V>(k0 + d * L);
      for (int r = 0; r < R; r++) a[r] += x * q.data[r * q.row + d * q.col];
    }
    for (int r = 0; r < R; r++) store<V>(scores + r * stride + g * L, a[r] * scale);
  }
}

// out[r][c0 : c0 + C·L] = Σ_s p[r][s] v[s][c0 : c0 + C·L] for R rows of weights p (unit-stride value rows)
template <class V, int L, int R, int C>
INLINE void value_tile(const float* p, int64_t stride, const float* v, int64_t vrow, int64_t length, float* out,
                       int64_t orow) {
  V a[R][C];
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) a[r][c] = V{};
  for (int64_t s = 0; s < length; s++) {
    V x[C];
    for (int c = 0; c < C; c++) x[c] = load<V>(v + s * vrow + c * L);
    for (int r = 0; r < R; r++) {
      float w = p[r * stride + s];
      for (int c = 0; c < C; c++) a[r][c] += x[c] * w;
    }
  }
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) store<V>(out + r * orow + c * L, a[r][c]);
}

template <class V, int L, int R, int C>
INLINE void value_rows(const float* p, int64_t stride, const float* v, int64_t vrow, int64_t length, int64_t dim,
                       float* out, int64_t orow) {
  int64_t c = 0;
  for (; c + C * L <= dim; c += C * L) value_tile<V, L, R, C>(p, stride, v + c, vrow, length, out + c, orow);
  for (; c < dim; c += L) value_tile<V, L, R, 1>(p, stride, v + c, vrow, length, out + c, orow);
}

// Queries [begin, end) of one head into out (row stride orow). Scratch: keys (⌈length/L⌉·L × dim),
// scores (kQueryBlock × ⌈length/L⌉·L) and, unless v's rows are unit-stride, values (length × dim).
// dim is a multiple of 16.
template <class V, int L, int RQ, int RP, int C>
INLINE void head_attention_rows(HeadView q, HeadView k, HeadView v, float* out, int64_t orow, int64_t begin,
                                int64_t end, int64_t length, int64_t dim, float scale, float* scratch) {
  static_assert(RQ <= kQueryBlock && RQ % RP == 0);
  const int64_t groups = (length + L - 1) / L, padded = groups * L;
  float *keys = scratch, *scores = keys + padded * dim, *values = scores + kQueryBlock * padded;
  for (int64_t s = 0; s < padded; s++)
    for (int64_t d = 0; d < dim; d++)
      keys[((s / L) * dim + d) * L + s % L] = s < length ? k.data[s * k.row + d * k.col] : 0.f;
  if (v.col != 1) {
    for (int64_t s = 0; s < length; s++)
      for (int64_t d = 0; d < dim; d++) values[s * dim + d] = v.data[s * v.row + d * v.col];
    v = {values, dim, 1};
  }
  for (int64_t i = begin; i < end; i += RQ) {
    const int64_t rows = std::min<int64_t>(RQ, end - i);
    HeadView qi{q.data + i * q.row, q.row, q.col};
    if (rows == RQ) {
      score_tile<V, L, RQ>(qi, keys, groups, dim, scale, scores, padded);
    } else {
      for (int64_t r = 0; r < rows; r++)
        score_tile<V, L, 1>({qi.data + r * q.row, q.row, q.col}, keys, groups, dim, scale, scores + r * padded,
                            padded);
    }
    float inv[kQueryBlock];
    for (int64_t r = 0; r < rows; r++) {
      float* p = scores + r * padded;
      float m = -FLT_MAX, sum = 0.f;
      for (int64_t s = 0; s < length; s++) m = p[s] > m ? p[s] : m;
#pragma omp simd reduction(+ : sum)
      for (int64_t s = 0; s < length; s++) {
        p[s] = expf(p[s] - m);
        sum += p[s];
      }
      inv[r] = 1.f / sum;
    }
    float* oi = out + i * orow;
    int64_t r = 0;
    for (; r + RP <= rows; r += RP)
      value_rows<V, L, RP, C>(scores + r * padded, padded, v.data, v.row, length, dim, oi + r * orow, orow);
    for (; r < rows; r++)
      value_rows<V, L, 1, C>(scores + r * padded, padded, v.data, v.row, length, dim, oi + r * orow, orow);
    for (r = 0; r < rows; r++)
      for (int64_t d = 0; d < dim; d++) oi[r * orow + d] *= inv[r];
  }
}

// ---------------------------------------------------------------- a linear layer's product
// y = x wᵀ + b for x (M × K, rows lda apart) and w (N × K) packed into panels of 2L columns (for each
// k, the panel's 2L weights side by side), in register tiles of R rows × 2 vectors of L columns, k in
// blocks of kDepth: each output is its blocks' sums added in order (each summed over k in order),
// then the bias, whatever the number of rows, the threads or the batch.
constexpr int64_t kDepth = 256;
constexpr int64_t kRowBlock = 96;  // rows one thread takes at a time: a multiple of every level's R

template <int L>
INLINE void pack_panels(const float* w, int64_t K, int64_t first, int64_t last, float* packed) {
  for (int64_t p = first; p < last; p++)
    for (int64_t j = 0; j < 2 * L; j++)
      for (int64_t k = 0; k < K; k++) packed[(p * K + k) * 2 * L + j] = w[(p * 2 * L + j) * K + k];
}

template <class V, int L, int R>
INLINE void product_tile(const float* a, int64_t lda, const float* panel, int64_t depth, const float* bias, float* c,
                         int64_t ldc, bool add) {
  V x[R], y[R];
  for (int r = 0; r < R; r++) x[r] = y[r] = V{};
  for (int64_t k = 0; k < depth; k++) {
    V u = load<V>(panel + k * 2 * L), w = load<V>(panel + k * 2 * L + L);
    for (int r = 0; r < R; r++) {
      float s = a[r * lda + k];
      x[r] += u * s;
      y[r] += w * s;
    }
  }
  for (int r = 0; r < R; r++) {
    float* row = c + r * ldc;
    if (add) {
      x[r] = load<V>(row) + x[r];
      y[r] = load<V>(row + L) + y[r];
    }
    if (bias) {
      x[r] += load<V>(bias);
      y[r] += load<V>(bias + L);
    }
    store<V>(row, x[r]);
    store<V>(row + L, y[r]);
  }
}

// Rows [first, last) of y (M × N, N a multiple of 2L); bias may be null.
template <class V, int L, int R>
INLINE void product_rows(const float* x, int64_t lda, const float* packed, const float* bias, float* y, int64_t first,
                         int64_t last, int64_t K, int64_t N) {
  for (int64_t k0 = 0; k0 < K; k0 += kDepth) {
    const int64_t depth = std::min(kDepth, K - k0);
    const float* b = k0 + depth == K ? bias : nullptr;
    for (int64_t p = 0; p < N / (2 * L); p++) {
      const float* panel = packed + (p * K + k0) * 2 * L;
      const float* bp = b ? b + p * 2 * L : nullptr;
      int64_t i = first;
      for (; i + R <= last; i += R)
        product_tile<V, L, R>(x + i * lda + k0, lda, panel, depth, bp, y + i * N + p * 2 * L, N, k0 > 0);
      for (; i < last; i++)
        product_tile<V, L, 1>(x + i * lda + k0, lda, panel, depth, bp, y + i * N + p * 2 * L, N, k0 > 0);
    }
  }
}

// The widest vectors the CPU has: AVX-512 (16 floats, 32 registers), AVX2 (8, 16), else 4 (SSE or NEON);
// each level's tiles compiled for it, one level chosen at run time.
#define HEAD_ATTENTION_ARGS                                                                                   \
  HeadView q, HeadView k, HeadView v, float *out, int64_t orow, int64_t begin, int64_t end, int64_t length, \
      int64_t dim, float scale, float *scratch
#define HEAD_ATTENTION_PASS q, k, v, out, orow, begin, end, length, dim, scale, scratch
#define PACK_ARGS const float *w, int64_t K, int64_t first, int64_t last, float *packed
#define PRODUCT_ARGS                                                                                     \
  const float *x, int64_t lda, const float *packed, const float *bias, float *y, int64_t first, int64_t last, \
      int64_t K, int64_t N
#define PRODUCT_PASS x, lda, packed, bias, y, first, last, K, N
#define ATTEND_ARGS                                                                                   \
  const float *q, const float *k, const float *v, float *out, int64_t units, int64_t nq, int64_t length, \
      int64_t dim, float scale, float *scores
#define DOT_ARGS                                                                                            \
  const float *x, int64_t M, int64_t K, const float *w, const float *bias, float *y, int64_t N, int64_t first, \
      int64_t last

struct Level {
  void (*head_attention)(HEAD_ATTENTION_ARGS);
  void (*pack)(PACK_ARGS);       // w's panels [first, last)
  void (*product)(PRODUCT_ARGS);  // y's rows [first, last) from the packed panels
  void (*attend)(ATTEND_ARGS);          // units of a few queries, dim a multiple of 4 × group
  void (*dot)(DOT_ARGS);                // y's columns [first, last) as dot products along k
  int64_t panel;                        // columns a panel holds
  int64_t lanes;                        // floats a vector holds
};

#define LEVEL(name, attr, V, L, RQ, RP, RM)                                                               \
  attr void name##_head_attention(HEAD_ATTENTION_ARGS) {                                                  \
    head_attention_rows<V, L, RQ, RP, 4>(HEAD_ATTENTION_PASS);                                            \
  }                                                                                                       \
  attr void name##_pack(PACK_ARGS) { pack_panels<L>(w, K, first, last, packed); }                         \
  attr void name##_product(PRODUCT_ARGS) { product_rows<V, L, RM>(PRODUCT_PASS); }                        \
  attr void name##_attend(ATTEND_ARGS) {                                                                   \
    attend_heads<V, L>(q, k, v, out, units, nq, length, dim, scale, scores);                              \
  }                                                                                                       \
  attr void name##_dot(DOT_ARGS) { dot_rows<V, L, L / 4, 4>(x, M, K, w, bias, y, N, first, last); }       \
  const Level name{name##_head_attention, name##_pack, name##_product, name##_attend, name##_dot, 2 * L, L};

#if X86_LEVELS
LEVEL(avx512, __attribute__((target("arch=x86-64-v4"))), f16, 16, 12, 6, 12)
LEVEL(avx2, __attribute__((target("arch=x86-64-v3"))), f8, 8, 6, 3, 6)
#endif
LEVEL(vec4, , f4, 4, 6, 3, 6)

const Level& level() {
#if X86_LEVELS
  if (__builtin_cpu_supports("x86-64-v4")) return avx512;
  if (__builtin_cpu_supports("x86-64-v3")) return avx2;
#endif
  return vec4;
}

}  // namespace
