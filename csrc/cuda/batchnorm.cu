// Batch normalisation over x viewed as (N, C, L), training and evaluation,
// forward and backward: two launches each way where CuPy's formulas take
// about fifteen (means, centring, squares, scales, the running statistics).
// Math as csrc/cpu/batchnorm.cpp and lamina/ops/reference.py:
//   mean_c = Σ x / m,  var_c = Σ (x − mean)² / m  (biased; m = N·L),
//   inv_std = 1 / √(var + ε),  xhat = (x − mean) inv_std,  y = γ xhat + β;
//   running ← (1 − f) running + f · (mean, var · m / (m − 1));
//   backward: dβ = Σ dy, dγ = Σ dy xhat,
//   dx = γ inv_std (dy − dβ/m − xhat dγ/m)   (batch statistics), or
//   dx = γ inv_std dy                         (running statistics).
//
// Parallel plan.  Channel c's m elements are cut into S slices; block
// (s, c) of the first launch reduces slice s to partials in a float64
// workspace: (count, mean, M2) for the statistics, each slice's M2 taken
// about its own mean (two passes over a slice that stays in L1/L2), so
// the variance has no catastrophic cancellation; (Σ dy, Σ dy xhat) for
// the backward.  Block (s, c) of the second launch first combines the S
// partials of channel c (Chan's formula; the same order in every block, so
// every block sees the same numbers and the result is deterministic), then
// writes its slice of y and xhat (or dx); block (0, c) also writes the
// per-channel outputs (mean, var, inv_std and the running statistics, or
// dγ and dβ).  S is chosen so that C·S fills the GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "common.cuh"
#include "launchers.h"

namespace lamina {
namespace cuda {

namespace {

constexpr int kBnThreads = 256;
constexpr int kBnWarps = kBnThreads / 32;
constexpr int kBnMaxSlices = 64;

// Sum over the block; every thread gets the same total (summed in the same
// order).  smem: kBnWarps values; the caller's __syncthreads protect reuse.
template <typename A>
__device__ __forceinline__ A block_sum(A v, A* smem) {
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) smem[threadIdx.x >> 5] = v;
  __syncthreads();
  A total = 0;
  for (int w = 0; w < kBnWarps; ++w) total += smem[w];
  __syncthreads();
  return total;
}

// Element i of channel c's flattened (n, l) range.
__device__ __forceinline__ int64_t bn_index(uint32_t i, int c, int channels, uint32_t l_size) {
  const uint32_t n = i / l_size;
  return (int64_t(n) * channels + c) * l_size + (i - n * l_size);
}

struct Slice {
  uint32_t begin, end;
};
__device__ __forceinline__ Slice bn_slice(uint32_t m, int slices, int s) {
  const uint32_t per = (m + slices - 1) / slices;
  const uint32_t begin = min(m, per * uint32_t(s));
  return {begin, min(m, begin + per)};
}

// Launch 1 of the forward: (count, mean, M2) of slice s of channel c.
template <typename T>
__global__ void __launch_bounds__(kBnThreads)
    bn_stats_partial_kernel(double* __restrict__ partial, const T* __restrict__ x, int channels, uint32_t l_size,
                            uint32_t m) {
  using A = typename Acc<T>::type;
  __shared__ A smem[kBnWarps];
  const int s = blockIdx.x, c = blockIdx.y, slices = gridDim.x;
  const Slice r = bn_slice(m, slices, s);
  A sum = 0;
  for (uint32_t i = r.begin + threadIdx.x; i < r.end; i += kBnThreads) sum += load(x, bn_index(i, c, channels, l_size));
  const uint32_t count = r.end - r.begin;
  const A mean = count > 0 ? block_sum(sum, smem) / A(count) : A(0);
  A m2 = 0;
  for (uint32_t i = r.begin + threadIdx.x; i < r.end; i += kBnThreads) {
    const A d = load(x, bn_index(i, c, channels, l_size)) - mean;
    m2 += d * d;
  }
  m2 = count > 0 ? block_sum(m2, smem) : A(0);
  if (threadIdx.x == 0) {
    double* out = partial + (int64_t(c) * slices + s) * 3;
    out[0] = double(count);
    out[1] = double(mean);
    out[2] = double(m2);
  }
}

// Launch 2 of the forward.  Batch statistics: combine channel c's partials;
// running statistics (eval): read them.  Then y and xhat over slice s.
// Block (0, c) writes mean, var (biased) and inv_std, and updates the
// running statistics when f_running >= 0.
template <typename T>
__global__ void __launch_bounds__(kBnThreads)
    bn_apply_kernel(T* __restrict__ y, T* __restrict__ xhat, T* __restrict__ mean_out, T* __restrict__ var_out,
                    T* __restrict__ inv_std_out, T* __restrict__ running_mean, T* __restrict__ running_var,
                    const double* __restrict__ partial, const T* __restrict__ x, const T* __restrict__ gamma,
                    const T* __restrict__ beta, int channels, uint32_t l_size, uint32_t m, double eps,
                    double f_running) {
  using A = typename Acc<T>::type;
  __shared__ A stats[2];  // mean, inv_std
  const int s = blockIdx.x, c = blockIdx.y, slices = gridDim.x;
  if (threadIdx.x == 0) {
    A mean, var;
    if (partial != nullptr) {  // Chan et al.: merge (n, mean, M2) slice by slice
      double n = 0, mu = 0, m2 = 0;
      for (int k = 0; k < slices; ++k) {
        const double* p = partial + (int64_t(c) * slices + k) * 3;
        if (p[0] == 0) continue;
        const double nk = p[0], delta = p[1] - mu, total = n + nk;
        mu += delta * nk / total;
        m2 += p[2] + delta * delta * n * nk / total;
        n = total;
      }
      mean = A(mu);
      var = A(m2 / n);
    } else {
      mean = load(running_mean, c);
      var = load(running_var, c);
    }
    const A inv_std = A(1) / sqrt(var + A(eps));
    stats[0] = mean;
    stats[1] = inv_std;
    if (s == 0) {
      if (mean_out != nullptr) store(mean_out, c, mean);
      if (var_out != nullptr) store(var_out, c, var);
      store(inv_std_out, c, inv_std);
      if (f_running >= 0) {
        const A f = A(f_running), unbiased = var * (A(m) / A(m - 1));
        store(running_mean, c, (A(1) - f) * load(running_mean, c) + f * mean);
        store(running_var, c, (A(1) - f) * load(running_var, c) + f * unbiased);
      }
    }
  }
  __syncthreads();
  const A mean = stats[0], inv_std = stats[1];
  const A g = gamma != nullptr ? load(gamma, c) : A(1), b = beta != nullptr ? load(beta, c) : A(0);
  const Slice r = bn_slice(m, slices, s);
  for (uint32_t i = r.begin + threadIdx.x; i < r.end; i += kBnThreads) {
    const int64_t at = bn_index(i, c, channels, l_size);
    const A h = (load(x, at) - mean) * inv_std;
    if (xhat != nullptr) store(xhat, at, h);
    store(y, at, g * h + b);
  }
}

// Launch 1 of the backward: (Σ dy, Σ dy xhat) of slice s of channel c.
template <typename T>
__global__ void __launch_bounds__(kBnThreads)
    bn_backward_partial_kernel(double* __restrict__ partial, const T* __restrict__ dy, const T* __restrict__ xhat,
                               int channels, uint32_t l_size, uint32_t m) {
  using A = typename Acc<T>::type;
  __shared__ A smem[kBnWarps];
  const int s = blockIdx.x, c = blockIdx.y, slices = gridDim.x;
  const Slice r = bn_slice(m, slices, s);
  A sum_dy = 0, sum_dy_xhat = 0;
  for (uint32_t i = r.begin + threadIdx.x; i < r.end; i += kBnThreads) {
    const int64_t at = bn_index(i, c, channels, l_size);
    const A g = load(dy, at);
    sum_dy += g;
    sum_dy_xhat += g * load(xhat, at);
  }
  sum_dy = block_sum(sum_dy, smem);
  sum_dy_xhat = block_sum(sum_dy_xhat, smem);
  if (threadIdx.x == 0) {
    double* out = partial + (int64_t(c) * slices + s) * 2;
    out[0] = double(sum_dy);
    out[1] = double(sum_dy_xhat);
  }
}

// Launch 2 of the backward: dβ and dγ from the partials (block (0, c)
// writes them), then dx over slice s.
template <typename T>
__global__ void __launch_bounds__(kBnThreads)
    bn_backward_apply_kernel(T* __restrict__ dx, T* __restrict__ dgamma, T* __restrict__ dbeta,
                             const double* __restrict__ partial, const T* __restrict__ dy,
                             const T* __restrict__ xhat, const T* __restrict__ gamma, const T* __restrict__ inv_std,
                             int channels, uint32_t l_size, uint32_t m, bool batch_stats) {
  using A = typename Acc<T>::type;
  __shared__ A sums[2];
  const int s = blockIdx.x, c = blockIdx.y, slices = gridDim.x;
  if (threadIdx.x == 0) {
    double db = 0, dg = 0;
    for (int k = 0; k < slices; ++k) {
      db += partial[(int64_t(c) * slices + k) * 2];
      dg += partial[(int64_t(c) * slices + k) * 2 + 1];
    }
    sums[0] = A(db);
    sums[1] = A(dg);
    if (s == 0) {
      store(dbeta, c, A(db));
      store(dgamma, c, A(dg));
    }
  }
  __syncthreads();
  const A scale = (gamma != nullptr ? load(gamma, c) : A(1)) * load(inv_std, c);
  const A mean_db = sums[0] / A(m), mean_dg = sums[1] / A(m);
  const Slice r = bn_slice(m, slices, s);
  for (uint32_t i = r.begin + threadIdx.x; i < r.end; i += kBnThreads) {
    const int64_t at = bn_index(i, c, channels, l_size);
    const A g = load(dy, at);
    store(dx, at, batch_stats ? scale * (g - mean_db - load(xhat, at) * mean_dg) : scale * g);
  }
}

}  // namespace

int batchnorm_slices(int64_t n, int64_t c, int64_t l) {
  const int64_t m = n * l;
  int64_t s = (264 + c - 1) / c;               // about two blocks per SM of an H100
  s = std::min<int64_t>(s, (m + 1023) / 1024);  // and at least ~1024 elements a slice
  return int(std::max<int64_t>(1, std::min<int64_t>(s, kBnMaxSlices)));
}

template <typename T>
cudaError_t batchnorm_forward(T* y, T* xhat, T* mean, T* var, T* inv_std, T* running_mean, T* running_var,
                              double* workspace, const T* x, const T* gamma, const T* beta, int64_t n, int64_t c,
                              int64_t l, double eps, bool batch_stats, double f_running, cudaStream_t stream) {
  const int64_t m = n * l;
  if (m == 0 || c == 0) return cudaSuccess;
  if (m > UINT32_MAX || c > 65535 || (!batch_stats && (running_mean == nullptr || running_var == nullptr)))
    return cudaErrorInvalidValue;
  const int slices = batchnorm_slices(n, c, l);
  const dim3 grid(slices, unsigned(c));
  if (batch_stats) {
    bn_stats_partial_kernel<T><<<grid, kBnThreads, 0, stream>>>(workspace, x, int(c), uint32_t(l), uint32_t(m));
    if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  }
  bn_apply_kernel<T><<<grid, kBnThreads, 0, stream>>>(y, xhat, mean, var, inv_std, running_mean, running_var, batch_stats ? workspace : nullptr, x, gamma, beta, int(c), uint32_t(l), uint32_t(m), eps, batch_stats ? f_running : -1.0);
  return cudaGetLastError();
}

template <typename T>
cudaError_t batchnorm_backward(T* dx, T* dgamma, T* dbeta, double* workspace, const T* dy, const T* xhat,
                               const T* gamma, const T* inv_std, int64_t n, int64_t c, int64_t l, bool batch_stats,
                               cudaStream_t stream) {
  const int64_t m = n * l;
  if (m == 0 || c == 0) return cudaSuccess;
  if (m > UINT32_MAX || c > 65535) return cudaErrorInvalidValue;
  const int slices = batchnorm_slices(n, c, l);
  const dim3 grid(slices, unsigned(c));
  bn_backward_partial_kernel<T><<<grid, kBnThreads, 0, stream>>>(workspace, dy, xhat, int(c), uint32_t(l), uint32_t(m));
  if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  bn_backward_apply_kernel<T><<<grid, kBnThreads, 0, stream>>>(dx, dgamma, dbeta, workspace, dy, xhat, gamma, inv_std, int(c), uint32_t(l), uint32_t(m), batch_stats);
  return cudaGetLastError();
}

#define LAMINA_INSTANTIATE(T)                                                                                     \
  template cudaError_t batchnorm_forward<T>(T*, T*, T*, T*, T*, T*, T*, double*, const T*, const T*, const T*,   \
                                            int64_t, int64_t, int64_t, double, bool, double, cudaStream_t);        \
  template cudaError_t batchnorm_backward<T>(T*, T*, T*, double*, const T*, const T*, const T*, const T*, int64_t, \
                                             int64_t, int64_t, bool, cudaStream_t);
LAMINA_INSTANTIATE(float)
LAMINA_INSTANTIATE(double)
#undef LAMINA_INSTANTIATE

}  // namespace cuda
}  // namespace lamina
