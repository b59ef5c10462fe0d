// Helpers shared by lamina's CUDA kernels.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace lamina {
namespace cuda {

// Blocks for a grid-stride loop over n elements with `threads` per block:
// enough to cover n, at least 1, at most 65535 * 8 (each thread loops on).
inline unsigned grid_stride_blocks(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 65535 * 8 ? (b > 0 ? b : 1) : 65535 * 8);
}

// Compute type: fp32 for fp32/fp16/bf16 storage, fp64 for fp64.
template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

template <typename T>
__device__ __forceinline__ typename Acc<T>::type load(const T* p, int64_t i) {
  return static_cast<typename Acc<T>::type>(p[i]);
}
template <typename T>
__device__ __forceinline__ void store(T* p, int64_t i, typename Acc<T>::type v) {
  p[i] = static_cast<T>(v);
}

// GELU, exact (erf) or tanh approximation, and its derivative; math as in
// csrc/cpu/kernels.h.  A is the compute type (float or double).
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kGeluCubic = 0.044715;

template <typename A>
__device__ __forceinline__ A gelu_value(A v, bool tanh_approx) {
  if (tanh_approx) return A(0.5) * v * (A(1) + tanh(A(kSqrt2OverPi) * (v + A(kGeluCubic) * v * v * v)));
  return A(0.5) * v * (A(1) + erf(v * A(kInvSqrt2)));
}

template <typename A>
__device__ __forceinline__ A gelu_grad(A v, bool tanh_approx) {
  if (tanh_approx) {
    const A t = tanh(A(kSqrt2OverPi) * (v + A(kGeluCubic) * v * v * v));
    const A du = A(kSqrt2OverPi) * (A(1) + A(3) * A(kGeluCubic) * v * v);
    return A(0.5) * (A(1) + t) + A(0.5) * v * (A(1) - t * t) * du;
  }
  const A cdf = A(0.5) * (A(1) + erf(v * A(kInvSqrt2)));
  const A pdf = A(kInvSqrt2Pi) * exp(A(-0.5) * v * v);
  return cdf + v * pdf;
}

// Epilogue activations (the codes of launchers.h): value at pre-activation
// z, and derivative with respect to z.
template <typename A>
__device__ __forceinline__ A act_value(A z, int act) {
  switch (act) {
    case 1: return z > A(0) ? z : A(0);
    case 2: return gelu_value(z, false);
    case 3: return gelu_value(z, true);
    default: return z;
  }
}
template <typename A>
__device__ __forceinline__ A act_grad(A z, int act) {
  switch (act) {
    case 1: return z > A(0) ? A(1) : A(0);
    case 2: return gelu_grad(z, false);
    case 3: return gelu_grad(z, true);
    default: return A(1);
  }
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename A>
__device__ __forceinline__ A warp_max(A v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const A o = __shfl_xor_sync(0xffffffffu, v, offset);
    v = o > v ? o : v;
  }
  return v;
}

}  // namespace cuda
}  // namespace lamina
