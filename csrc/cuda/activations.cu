// Elementwise activation kernels: grid-stride loops, 64-bit indices.
// Memory-bound: one read (two for backward) and one write per element, so
// the target is DRAM bandwidth, not arithmetic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common.cuh"
#include "launchers.h"

namespace lamina {
namespace cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void relu_forward_kernel(T* __restrict__ y, const T* __restrict__ x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const auto v = load(x, i);
    store(y, i, v > 0 ? v : decltype(v)(0));
  }
}

template <typename T>
__global__ void relu_backward_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ y,
                                     int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const auto g = load(dy, i);
    store(dx, i, load(y, i) > 0 ? g : decltype(g)(0));
  }
}

template <typename T>
__global__ void gelu_forward_kernel(T* __restrict__ y, const T* __restrict__ x, int64_t n, bool tanh_approx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store(y, i, gelu_value(load(x, i), tanh_approx));
}

template <typename T>
__global__ void gelu_backward_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ x, int64_t n,
                                     bool tanh_approx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store(dx, i, load(dy, i) * gelu_grad(load(x, i), tanh_approx));
}

// Inverted dropout in one launch: the uniform u_i of lamina's counter-based
// GPU generator (lamina/ops/reference.py's _UNIFORM_SRC: splitmix64 of
// key + (offset + i)·φ, the top 24 bits for 32-bit and 16-bit types (the
// float then rounded to T, as the generator's draw is cast), 53 for
// double), the scaled mask m_i = [u_i >= p] / (1 - p) and y_i = x_i m_i,
// every value rounded to T as CuPy's formulas round them.  CuPy takes five
// launches and three temporaries for the same numbers.
template <typename T>
__global__ void dropout_forward_kernel(T* __restrict__ y, T* __restrict__ mask, const T* __restrict__ x, int64_t n,
                                       T p, T scale, unsigned long long key, int64_t offset) {
  using A = typename Acc<T>::type;
  const A p_a = A(p);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    unsigned long long z = key + static_cast<unsigned long long>(offset + i) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z = z ^ (z >> 31);
    const T u = sizeof(T) >= 8 ? T(double(z >> 11) * (1.0 / 9007199254740992.0))
                               : T(float(z >> 40) * (1.0f / 16777216.0f));
    const T m = A(u) >= p_a ? scale : T(0.0f);
    mask[i] = m;
    store(y, i, load(x, i) * A(m));
  }
}

}  // namespace

template <typename T>
cudaError_t dropout_forward(T* y, T* mask, const T* x, int64_t n, double p, unsigned long long key, int64_t offset,
                            cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  // p and 1/(1 - p) rounded to T once, as the Python code rounds them
  dropout_forward_kernel<T><<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(y, mask, x, n, T(p), T(1.0 / (1.0 - p)), key, offset);
  return cudaGetLastError();
}
#define LAMINA_INSTANTIATE(T)                                                                                        \
  template cudaError_t dropout_forward<T>(T*, T*, const T*, int64_t, double, unsigned long long, int64_t, cudaStream_t);
LAMINA_INSTANTIATE(float)
LAMINA_INSTANTIATE(double)
LAMINA_INSTANTIATE(__half)
LAMINA_INSTANTIATE(__nv_bfloat16)
#undef LAMINA_INSTANTIATE

template <typename T>
cudaError_t relu_forward(T* y, const T* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  relu_forward_kernel<T><<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(y, x, n);
  return cudaGetLastError();
}

template <typename T>
cudaError_t relu_backward(T* dx, const T* dy, const T* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  relu_backward_kernel<T><<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(dx, dy, y, n);
  return cudaGetLastError();
}

template <typename T>
cudaError_t gelu_forward(T* y, const T* x, int64_t n, bool tanh_approx, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  gelu_forward_kernel<T><<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(y, x, n, tanh_approx);
  return cudaGetLastError();
}

template <typename T>
cudaError_t gelu_backward(T* dx, const T* dy, const T* x, int64_t n, bool tanh_approx, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  gelu_backward_kernel<T><<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(dx, dy, x, n, tanh_approx);
  return cudaGetLastError();
}

#define LAMINA_INSTANTIATE(T)                                                                  \
  template cudaError_t relu_forward<T>(T*, const T*, int64_t, cudaStream_t);                  \
  template cudaError_t relu_backward<T>(T*, const T*, const T*, int64_t, cudaStream_t);       \
  template cudaError_t gelu_forward<T>(T*, const T*, int64_t, bool, cudaStream_t);            \
  template cudaError_t gelu_backward<T>(T*, const T*, const T*, int64_t, bool, cudaStream_t);

LAMINA_INSTANTIATE(float)
LAMINA_INSTANTIATE(double)
LAMINA_INSTANTIATE(__half)
LAMINA_INSTANTIATE(__nv_bfloat16)
#undef LAMINA_INSTANTIATE

}  // namespace cuda
}  // namespace lamina
