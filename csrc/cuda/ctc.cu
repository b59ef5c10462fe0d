// CTC loss: the forward-backward recursions of lamina.losses.CTCLoss, one
// block per sample, where the CuPy path launches a few kernels for every
// step t (thousands for a long input).  Log space throughout:
//   α_t(s) = log y_t(l'_s) + lse(α_(t-1)(s), α_(t-1)(s-1), [skip] α_(t-1)(s-2))
//   β_t(s) = log y_t(l'_s) + lse(β_(t+1)(s), β_(t+1)(s+1), [skip'] β_(t+1)(s+2))
//   nll = −lse(α_(T-1)(S'-1), α_(T-1)(S'-2))
//   grad[t, c] = −scale · Σ_(s: l'_s = c) exp(α_t(s) + β_t(s) − log y_t(c) + nll)
// with l' the target with blanks around and between its labels (S' = 2S + 1),
// [skip] when l'_s is a label that differs from l'_(s-2).  Threads stride
// over s; __syncthreads between steps.  α and β live in a workspace
// (N, T, S'max).  The gradient sums each class's positions in a fixed order
// (no atomics), so it is deterministic: the blank's in one thread, each
// label's in the thread of its first occurrence.  Rows t >= T_n get 0; an
// infeasible sample (nll = inf) NaN before T_n, or 0 with zero_infinity, as
// PyTorch.  log_probs and grad are read and written through (t, n) strides,
// so (T, N, C) and (N, T, C) layouts both work without a copy.
#include <cmath>

#include "common.cuh"
#include "launchers.h"

namespace lamina {
namespace cuda {

namespace {

constexpr int kCtcThreads = 256;

template <typename T>
__device__ __forceinline__ T log_add(T a, T b) {
  if (a == T(-INFINITY)) return b;
  if (b == T(-INFINITY)) return a;
  const T m = a > b ? a : b;
  return m + log1p(exp(-fabs(a - b)));
}

struct CtcShape {
  int64_t t_max, n, c, s_max;  // S'max = 2 s_max + 1
  int64_t st, sn;              // strides of log_probs and grad over t and n (c is contiguous)
  int blank;
};

__device__ __forceinline__ int64_t extended_label(const int64_t* targets, const CtcShape& d, int64_t n, int64_t s) {
  return (s & 1) ? targets[n * d.s_max + s / 2] : d.blank;
}

// The move s - 2 -> s: l'_s a label other than l'_(s-2).
__device__ __forceinline__ bool can_skip(const int64_t* targets, const CtcShape& d, int64_t n, int64_t s) {
  return s >= 2 && (s & 1) && extended_label(targets, d, n, s) != extended_label(targets, d, n, s - 2);
}

template <typename T>
__global__ void __launch_bounds__(kCtcThreads)
    ctc_alpha_kernel(T* __restrict__ alpha, T* __restrict__ nll, const T* __restrict__ lp,
                     const int64_t* __restrict__ targets, const int64_t* __restrict__ t_len,
                     const int64_t* __restrict__ s_len, CtcShape d) {
  const int64_t n = blockIdx.x;
  const int64_t width = 2 * d.s_max + 1;
  const int64_t tn = t_len[n], wn = 2 * s_len[n] + 1;
  T* a = alpha + n * d.t_max * width;
  const T* y = lp + n * d.sn;
  const T neg = T(-INFINITY);
  for (int64_t s = threadIdx.x; s < width; s += blockDim.x)
    a[s] = (s < wn && s <= 1) ? y[extended_label(targets, d, n, s)] : neg;
  __syncthreads();
  for (int64_t t = 1; t < tn; ++t) {
    const T* prev = a + (t - 1) * width;
    T* cur = a + t * width;
    const T* yt = y + t * d.st;
    for (int64_t s = threadIdx.x; s < width; s += blockDim.x) {
      if (s >= wn) {
        cur[s] = neg;
        continue;
      }
      T v = prev[s];
      if (s >= 1) v = log_add(v, prev[s - 1]);
      if (can_skip(targets, d, n, s)) v = log_add(v, prev[s - 2]);
      cur[s] = v + yt[extended_label(targets, d, n, s)];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const T* last = a + (tn - 1) * width;
    nll[n] = -log_add(last[wn - 1], wn >= 3 ? last[wn - 2] : neg);
  }
}

template <typename T>
__global__ void __launch_bounds__(kCtcThreads)
    ctc_beta_kernel(T* __restrict__ beta, const T* __restrict__ lp, const int64_t* __restrict__ targets,
                    const int64_t* __restrict__ t_len, const int64_t* __restrict__ s_len, CtcShape d) {
  const int64_t n = blockIdx.x;
  const int64_t width = 2 * d.s_max + 1;
  const int64_t tn = t_len[n], wn = 2 * s_len[n] + 1;
  T* b = beta + n * d.t_max * width;
  const T* y = lp + n * d.sn;
  const T neg = T(-INFINITY);
  for (int64_t s = threadIdx.x; s < width; s += blockDim.x) {
    b[(tn - 1) * width + s] = (s < wn && s >= wn - 2) ? y[(tn - 1) * d.st + extended_label(targets, d, n, s)] : neg;
  }
  __syncthreads();
  for (int64_t t = tn - 2; t >= 0; --t) {
    const T* next = b + (t + 1) * width;
    T* cur = b + t * width;
    const T* yt = y + t * d.st;
    for (int64_t s = threadIdx.x; s < width; s += blockDim.x) {
      if (s >= wn) {
        cur[s] = neg;
        continue;
      }
      T v = next[s];
      if (s + 1 < wn) v = log_add(v, next[s + 1]);
      if (s + 2 < wn && can_skip(targets, d, n, s + 2)) v = log_add(v, next[s + 2]);
      cur[s] = v + yt[extended_label(targets, d, n, s)];
    }
    __syncthreads();
  }
}

// One block per (n, t): the row grad[t, n, :].
template <typename T>
__global__ void __launch_bounds__(kCtcThreads)
    ctc_grad_kernel(T* __restrict__ grad, const T* __restrict__ alpha, const T* __restrict__ beta,
                    const T* __restrict__ nll, const T* __restrict__ scale, const T* __restrict__ lp,
                    const int64_t* __restrict__ targets, const int64_t* __restrict__ t_len,
                    const int64_t* __restrict__ s_len, CtcShape d, bool zero_infinity) {
  const int64_t n = blockIdx.x / d.t_max, t = blockIdx.x % d.t_max;
  const int64_t width = 2 * d.s_max + 1;
  const int64_t tn = t_len[n], sn = s_len[n], wn = 2 * sn + 1;
  T* g = grad + t * d.st + n * d.sn;
  const T* yt = lp + t * d.st + n * d.sn;
  const T loss = nll[n];
  const bool infeasible = !isfinite(loss);
  const T fill = (t >= tn || (infeasible && zero_infinity)) ? T(0) : (infeasible ? T(NAN) : T(0));
  for (int64_t c = threadIdx.x; c < d.c; c += blockDim.x) g[c] = fill;
  if (t >= tn || infeasible) return;
  __syncthreads();
  const T* a = alpha + (n * d.t_max + t) * width;
  const T* b = beta + (n * d.t_max + t) * width;
  const T k = -scale[n];
  auto occupancy = [&](int64_t s, int64_t label) {
    const T ly = yt[label];
    return ly == T(-INFINITY) ? T(0) : exp(a[s] + b[s] - ly + loss);
  };
  // the blank: every even position, in one thread; each label: the thread of
  // its first occurrence in the target sums all of its occurrences, in order.
  for (int64_t j = threadIdx.x; j <= sn; j += blockDim.x) {
    if (j == sn) {
      T sum = 0;
      for (int64_t s = 0; s < wn; s += 2) sum += occupancy(s, d.blank);
      g[d.blank] = k * sum;
      continue;
    }
    const int64_t label = targets[n * d.s_max + j];
    bool first = true;
    for (int64_t i = 0; i < j && first; ++i) first = targets[n * d.s_max + i] != label;
    if (!first) continue;
    T sum = 0;
    for (int64_t i = j; i < sn; ++i)
      if (targets[n * d.s_max + i] == label) sum += occupancy(2 * i + 1, label);
    g[label] = k * sum;
  }
}

}  // namespace

template <typename T>
cudaError_t ctc_loss(T* nll, T* grad, T* alpha, T* beta, const T* log_probs, const int64_t* targets,
                     const int64_t* input_lengths, const int64_t* target_lengths, const T* scale, int64_t t_max,
                     int64_t n, int64_t c, int64_t s_max, int64_t stride_t, int64_t stride_n, int blank,
                     bool zero_infinity, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (n * t_max > INT32_MAX) return cudaErrorInvalidValue;
  const CtcShape d{t_max, n, c, s_max, stride_t, stride_n, blank};
  ctc_alpha_kernel<T><<<static_cast<unsigned>(n), kCtcThreads, 0, stream>>>(alpha, nll, log_probs, targets,
                                                                             input_lengths, target_lengths, d);
  if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess || grad == nullptr) return err;
  ctc_beta_kernel<T><<<static_cast<unsigned>(n), kCtcThreads, 0, stream>>>(beta, log_probs, targets, input_lengths,
                                                                            target_lengths, d);
  if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  ctc_grad_kernel<T><<<static_cast<unsigned>(n * t_max), kCtcThreads, 0, stream>>>(
      grad, alpha, beta, nll, scale, log_probs, targets, input_lengths, target_lengths, d, zero_infinity);
  return cudaGetLastError();
}

#define LAMINA_INSTANTIATE(T)                                                                                    \
  template cudaError_t ctc_loss<T>(T*, T*, T*, T*, const T*, const int64_t*, const int64_t*, const int64_t*,   \
                                   const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, bool, \
                                   cudaStream_t);
LAMINA_INSTANTIATE(float)
LAMINA_INSTANTIATE(double)
#undef LAMINA_INSTANTIATE

}  // namespace cuda
}  // namespace lamina
