// The loops behind the kernels of _kernels.cpp, and the thread pool they are split over: plain C++ on
// float buffers (no MLX), vectorized by the compiler (glibc's libmvec supplies SIMD expf/erff/tanhf).
#pragma once

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#define X86_LEVELS 1
#define VECTORIZED __attribute__((noinline, target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define X86_LEVELS 0
#define VECTORIZED
#endif
#define INLINE __attribute__((always_inline)) inline

namespace {

// ---------------------------------------------------------------- thread pool
// Workers are started once and wait for jobs; the calling thread takes a share of every job.
class Pool {
 public:
  int threads() const { return threads_; }

  void set_threads(int n) {
    std::lock_guard<std::mutex> job(job_mutex_);
    threads_ = std::max(1, n);
  }

  // Calls fn(begin, end) over [0, units) split into at most threads() contiguous shares.
  void run(int64_t units, const std::function<void(int64_t, int64_t)>& fn) {
    std::lock_guard<std::mutex> job(job_mutex_);
    int shares = static_cast<int>(std::min<int64_t>(threads_, std::max<int64_t>(units, 1)));
    if (shares == 1) {
      fn(0, units);
      return;
    }
    start_workers(shares - 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      units_ = units;
      shares_ = shares;
      next_.store(1);
      pending_ = shares - 1;
      generation_++;
    }
    wake_.notify_all();
    work(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    fn_ = nullptr;
  }

 private:
  void work(int share) {
    int64_t per = (units_ + shares_ - 1) / shares_, begin = share * per, end = std::min(units_, begin + per);
    if (begin < end) (*fn_)(begin, end);
  }

  void start_workers(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      workers_.emplace_back([this] {
        uint64_t seen = 0;
        for (;;) {
          int share;
          {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [&] { return generation_ != seen; });
            seen = generation_;
            share = next_.fetch_add(1);
            if (share >= shares_) continue;
          }
          work(share);
          std::lock_guard<std::mutex> lock(mutex_);
          if (--pending_ == 0) done_.notify_one();
        }
      });
    }
  }

  std::vector<std::thread> workers_;  // never joined
  std::mutex mutex_, job_mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t units_ = 0;
  int shares_ = 0, pending_ = 0;
  std::atomic<int> next_{0};
  uint64_t generation_ = 0;
  int threads_ = 1;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: its workers wait until the process ends
  return *p;
}

// ---------------------------------------------------------------- loops
// Compiled with -ffast-math (for libmvec): -inf is never compared directly, only through
// -FLT_MAX or its bit pattern.
VECTORIZED void softmax_rows(const float* x, float* y, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; r++) {
    const float* p = x + r * n;
    float* q = y + r * n;
    float m = -FLT_MAX;
    for (int64_t i = 0; i < n; i++) m = p[i] > m ? p[i] : m;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) {
      q[i] = expf(p[i] - m);
      s += q[i];
    }
    float inv = 1.f / s;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) q[i] *= inv;
  }
}

VECTORIZED void logsumexp_rows(const float* x, float* out, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; r++) {
    const float* p = x + r * n;
    float m = -FLT_MAX;
    for (int64_t i = 0; i < n; i++) m = p[i] > m ? p[i] : m;
    float s = 0.f;
    if (m > -FLT_MAX) {  // some element is finite
#pragma omp simd reduction(+ : s)
      for (int64_t i = 0; i < n; i++) s += expf(p[i] - m);
    }
    out[r] = m > -FLT_MAX ? m + logf(s) : -INFINITY;
  }
}

bool is_minus_inf(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return bits == 0xff800000u;
}

// The k largest values of each row and their indices, largest first; rows with fewer than k
// finite values are completed with -inf at index 0.
VECTORIZED void topk_rows(const float* x, int32_t* idx, float* val, int64_t rows, int64_t n, int64_t k) {
  for (int64_t r = 0; r < rows; r++) {
    const float* p = x + r * n;
    float* bv = val + r * k;
    int32_t* bi = idx + r * k;
    int64_t filled = 0;
    for (int64_t b = 0; b < n; b += 16) {  // blocks whose maximum cannot enter are skipped
      int64_t end = std::min(b + 16, n);
      float m = -FLT_MAX;
      for (int64_t i = b; i < end; i++) m = p[i] > m ? p[i] : m;
      if (filled == k && m <= bv[k - 1]) continue;
      for (int64_t i = b; i < end; i++) {
        float v = p[i];
        if (is_minus_inf(v) || (filled == k && v <= bv[k - 1])) continue;
        int64_t j = filled < k ? filled++ : k - 1;
        for (; j > 0 && bv[j - 1] < v; j--) {
          bv[j] = bv[j - 1];
          bi[j] = bi[j - 1];
        }
        bv[j] = v;
        bi[j] = static_cast<int32_t>(i);
      }
    }
    for (int64_t j = filled; j < k; j++) {
      bv[j] = -INFINITY;
      bi[j] = 0;
    }
  }
}

VECTORIZED void gelu_span(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.f + erff(x[i] * 0.70710678118654752f));
}

// q, out (units, nq, dim); k, v (units, length, dim). A unit's keys and values are read once
// for all its queries; scratch holds nq × length scores.
VECTORIZED void attend(const float* q, const float* k, const float* v, float* out, int64_t units, int64_t nq,
                       int64_t length, int64_t dim, float scale, float* scores) {
  for (int64_t h = 0; h < units; h++) {
    const float *qh = q + h * nq * dim, *kh = k + h * length * dim, *vh = v + h * length * dim;
    float* oh = out + h * nq * dim;
    for (int64_t t = 0; t < length; t++) {
      const float* kt = kh + t * dim;
      for (int64_t j = 0; j < nq; j++) {
        const float* qj = qh + j * dim;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t d = 0; d < dim; d++) s += qj[d] * kt[d];
        scores[j * length + t] = s * scale;
      }
    }
    softmax_rows(scores, scores, nq, length);
    for (int64_t i = 0; i < nq * dim; i++) oh[i] = 0.f;
    for (int64_t t = 0; t < length; t++) {
      const float* vt = vh + t * dim;
      for (int64_t j = 0; j < nq; j++) {
        float w = scores[j * length + t], *oj = oh + j * dim;
#pragma omp simd
        for (int64_t d = 0; d < dim; d++) oj[d] += w * vt[d];
      }
    }
  }
}

// ---------------------------------------------------------------- a head's self-attention
// softmax(q kᵀ·scale) v for one head, its queries a block at a time: the block's scores stay in
// cache and both products are register tiles of vectors of L floats (a block's queries against two
// vectors of keys; a few queries against C vectors of a value row). Each result is summed in one
// order whatever the blocking, threads or batch: a score over d, an output over the keys (then
// divided by its row's sum of exponentials).
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

struct Level {
  void (*head_attention)(HEAD_ATTENTION_ARGS);
  void (*pack)(PACK_ARGS);       // w's panels [first, last)
  void (*product)(PRODUCT_ARGS);  // y's rows [first, last) from the packed panels
  int64_t panel;                  // columns a panel holds
};

#define LEVEL(name, attr, V, L, RQ, RP, RM)                                                                 \
  attr void name##_head_attention(HEAD_ATTENTION_ARGS) {                                                  \
    head_attention_rows<V, L, RQ, RP, 4>(HEAD_ATTENTION_PASS);                                            \
  }                                                                                                       \
  attr void name##_pack(PACK_ARGS) { pack_panels<L>(w, K, first, last, packed); }                         \
  attr void name##_product(PRODUCT_ARGS) { product_rows<V, L, RM>(PRODUCT_PASS); }                        \
  const Level name{name##_head_attention, name##_pack, name##_product, 2 * L};

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

// An LSTM's recurrence over T steps for rows [begin, end) of B: gates (B, T, 4H) hold x·Wxᵀ + b in
// MLX's order (input, forget, cell, output); wh (4H, H); h0, c0 (B, H); hidden (B, T, H), cell (B, H).
VECTORIZED void lstm_rows(const float* gates, const float* wh, const float* h0, const float* c0, float* hidden,
                          float* cell, int64_t begin, int64_t end, int64_t steps, int64_t n) {
  std::vector<float> z(4 * n), h(n);
  for (int64_t b = begin; b < end; b++) {
    float* c = cell + b * n;
    std::memcpy(h.data(), h0 + b * n, n * sizeof(float));
    std::memcpy(c, c0 + b * n, n * sizeof(float));
    for (int64_t t = 0; t < steps; t++) {
      const float* x = gates + (b * steps + t) * 4 * n;
      for (int64_t j = 0; j < 4 * n; j++) {
        const float* w = wh + j * n;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < n; k++) s += w[k] * h[k];
        z[j] = x[j] + s;
      }
      float* out = hidden + (b * steps + t) * n;
#pragma omp simd
      for (int64_t k = 0; k < n; k++) {
        float i = 1.f / (1.f + expf(-z[k])), f = 1.f / (1.f + expf(-z[n + k]));
        float g = tanhf(z[2 * n + k]), o = 1.f / (1.f + expf(-z[3 * n + k]));
        c[k] = f * c[k] + i * g;
        out[k] = h[k] = o * tanhf(c[k]);
      }
    }
  }
}

// Median of `width` (odd, at most MAX_MEDIAN_WIDTH) neighbours along each of `rows` rows of n floats,
// reflected at the row's own length (lengths[r / group]: rows come in groups sharing one length);
// a row no longer than width / 2 is copied, positions past its length are 0. Interior positions go
// `block` at a time through an odd-even transposition network of element-wise min/max (exact, so
// the same medians as sorting); the few near either end are gathered and sorted one by one.
constexpr int MAX_MEDIAN_WIDTH = 31;

VECTORIZED void median_rows(const float* x, float* y, const int32_t* lengths, int64_t group, int64_t begin,
                            int64_t end, int64_t n, int width) {
  constexpr int64_t block = 16;
  const int64_t half = width / 2;
  float v[MAX_MEDIAN_WIDTH][block], w[MAX_MEDIAN_WIDTH];
  for (int64_t r = begin; r < end; r++) {
    const float* p = x + r * n;
    float* q = y + r * n;
    const int64_t length = std::min<int64_t>(std::max<int32_t>(lengths[r / group], 0), n);
    std::fill(q + length, q + n, 0.f);
    if (length <= half) {
      std::copy(p, p + length, q);
      continue;
    }
    auto at_edge = [&](int64_t j) {
      for (int64_t k = -half; k <= half; k++) {
        int64_t i = std::abs(j + k);
        w[k + half] = p[i > length - 1 ? 2 * (length - 1) - i : i];
      }
      std::sort(w, w + width);
      q[j] = w[half];
    };
    const int64_t lo = half, hi = length - half;  // positions whose neighbours all lie inside the row
    for (int64_t j = 0; j < std::min(lo, length); j++) at_edge(j);
    int64_t j = lo;
    for (; j + block <= hi; j += block) {
      for (int k = 0; k < width; k++) std::memcpy(v[k], p + j - half + k, block * sizeof(float));
      for (int round = 0; round < width; round++) {
        for (int a = round % 2; a + 1 < width; a += 2) {
#pragma omp simd
          for (int64_t i = 0; i < block; i++) {
            float s = v[a][i], t = v[a + 1][i];
            v[a][i] = std::min(s, t);
            v[a + 1][i] = std::max(s, t);
          }
        }
      }
      std::memcpy(q + j, v[half], block * sizeof(float));
    }
    for (j = std::max(j, lo); j < length; j++) at_edge(j);
  }
}

}  // namespace
