// The loops behind the kernels of _kernels.cpp, and the thread pool they are split over: plain C++ on
// float buffers (no MLX), vectorized by the compiler (glibc's libmvec supplies SIMD expf/erff/tanhf).
#pragma once

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
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
// Workers are started once and wait for jobs; the calling thread takes a share of every job. A worker
// that finished one waits for the next a while yielding its core (a decoding step's kernels follow each
// other within microseconds, and a sleeping thread takes tens of them to wake), then sleeps.
class Pool {
 public:
  static constexpr int kMaxThreads = 1024;

  int threads() const { return threads_.load(); }

  void set_threads(int n) {
    std::lock_guard<std::mutex> job(job_mutex_);
    threads_ = std::clamp(n, 1, kMaxThreads);
  }

  // Calls fn(begin, end) over [0, units) split into at most threads() (and at most `limit`: the threads
  // a caller's scratch was sized for) contiguous shares. An exception from the calling thread's share
  // is rethrown once every worker has finished its own.
  void run(int64_t units, const std::function<void(int64_t, int64_t)>& fn, int limit = kMaxThreads) {
    std::lock_guard<std::mutex> job(job_mutex_);
    int shares = static_cast<int>(std::min<int64_t>(std::min(threads_.load(), limit), std::max<int64_t>(units, 1)));
    if (shares <= 1) {
      fn(0, units);
      return;
    }
    start_workers(shares - 1);
    fn_ = &fn;
    units_ = units;
    pending_.store(shares - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);  // a worker about to sleep sees the job or is woken
      generation_++;
      state_.store(generation_ << 32 | uint64_t(shares) << 16 | 1, std::memory_order_release);
    }
    wake_.notify_all();
    std::exception_ptr error;
    try {
      work(0, shares);
    } catch (...) {
      error = std::current_exception();
    }
    while (pending_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    fn_ = nullptr;
    if (error) std::rethrow_exception(error);
  }

 private:
  static constexpr auto kSpin = std::chrono::microseconds(50);

  void work(int share, int shares) {
    int64_t per = (units_ + shares - 1) / shares, begin = share * per, end = std::min(units_, begin + per);
    if (begin < end) (*fn_)(begin, end);
  }

  // Takes a share of the job after generation `seen`, if one is left: [generation | shares | next share].
  bool take(uint64_t& seen) {
    uint64_t state = state_.load(std::memory_order_acquire);
    while (state >> 32 != seen) {
      const int shares = static_cast<int>(state >> 16 & 0xffff), share = static_cast<int>(state & 0xffff);
      if (share >= shares) {
        seen = state >> 32;
        return false;
      }
      if (state_.compare_exchange_weak(state, state + 1, std::memory_order_acq_rel)) {
        work(share, shares);
        pending_.fetch_sub(1, std::memory_order_release);
        seen = state >> 32;
        return true;
      }
    }
    return false;
  }

  void start_workers(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      workers_.emplace_back([this, seen = generation_ & 0xffffffff]() mutable {  // the jobs so far
        for (;;) {
          const auto until = std::chrono::steady_clock::now() + kSpin;
          bool worked = false;
          while (!(worked = take(seen)) && std::chrono::steady_clock::now() < until) std::this_thread::yield();
          if (worked) continue;
          std::unique_lock<std::mutex> lock(mutex_);
          wake_.wait(lock, [&] { return state_.load(std::memory_order_acquire) >> 32 != seen; });
        }
      });
    }
  }

  std::vector<std::thread> workers_;  // never joined
  std::mutex mutex_, job_mutex_;
  std::condition_variable wake_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t units_ = 0;
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> state_{0};
  uint64_t generation_ = 0;
  std::atomic<int> threads_{1};
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

// (x - mean) / sqrt(var + eps) · w + b over each row of n (the variance about the mean, in two passes)
VECTORIZED void layer_norm_rows(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t n,
                                float eps) {
  for (int64_t r = 0; r < rows; r++) {
    const float* p = x + r * n;
    float* q = y + r * n;
    float sum = 0.f, squares = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; i++) sum += p[i];
    const float mean = sum / n;
#pragma omp simd reduction(+ : squares)
    for (int64_t i = 0; i < n; i++) squares += (p[i] - mean) * (p[i] - mean);
    const float inv = 1.f / std::sqrt(squares / n + eps);
#pragma omp simd
    for (int64_t i = 0; i < n; i++) q[i] = (p[i] - mean) * inv * w[i] + b[i];
  }
}

// openai-whisper's logit filters (LogitRules) on rows of n logits: a row's banned columns, its suppression
// mask (`first` rows: suppress_first), a prefix [0, prefix), a suffix [suffix, n) and timestamps
// [tb, floor), set to -inf; then, where the timestamps' log-sum-exp exceeds the best text logit, the text
// columns [0, tb) too. bounds (rows × 4): prefix, suffix, floor, first.
VECTORIZED void logit_rules_rows(const float* x, const int32_t* bounds, const bool* suppress,
                                 const bool* suppress_first, float* y, int64_t rows, int64_t n, int64_t tb) {
  const float banned = -INFINITY;
  for (int64_t r = 0; r < rows; r++) {
    const int32_t *b = bounds + 4 * r, prefix = b[0], suffix = b[1], floor = b[2];
    const bool* s = b[3] ? suppress_first : suppress;
    const float* p = x + r * n;
    float* q = y + r * n;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
      const bool ban = s[i] || i < prefix || i >= suffix || (i >= tb && i < floor);
      q[i] = ban ? banned : p[i];
    }
    float text = -FLT_MAX, top = -FLT_MAX, sum = 0.f;
    for (int64_t i = 0; i < tb; i++) text = q[i] > text ? q[i] : text;
    for (int64_t i = tb; i < n; i++) top = q[i] > top ? q[i] : top;
    if (top <= -FLT_MAX) continue;  // no timestamp allowed: no rule to apply
#pragma omp simd reduction(+ : sum)
    for (int64_t i = tb; i < n; i++) sum += expf(q[i] - top);
    if (text <= -FLT_MAX || top + logf(sum) > text)
      for (int64_t i = 0; i < tb; i++) q[i] = banned;
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
