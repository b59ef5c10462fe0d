// Fused optimizer updates: one kernel per parameter instead of the five to
// ten elementwise launches CuPy makes for the same formulas.  The math is
// exactly that of lamina/optim/sgd.py and adam.py (PyTorch's rules), in the
// parameter's own dtype; host-side scalars (bias corrections) are computed
// in double by the caller.
#include "common.cuh"
#include "launchers.h"

namespace lamina {
namespace cuda {

namespace {

constexpr int kOptThreads = 256;

//   g ← g + λ p;  b ← g (first step) or μ b + (1 − τ) g;  g ← g + μ b (Nesterov) or b;  p ← p − η g
template <typename T>
__global__ void sgd_kernel(T* __restrict__ p, const T* __restrict__ grad, T* __restrict__ buf, int64_t n, T lr, T momentum,
                           T one_minus_dampening, T weight_decay, bool nesterov, bool first_step) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    T g = grad[i];
    if (weight_decay != T(0)) g += weight_decay * p[i];
    if (momentum != T(0)) {
      const T b = first_step ? g : momentum * buf[i] + one_minus_dampening * g;
      buf[i] = b;
      g = nesterov ? g + momentum * b : b;
    }
    p[i] -= lr * g;
  }
}

//   AdamW: p ← p · decay (decay = 1 − η λ);  Adam: g ← g + λ p
//   m ← m + (1 − β1)(g − m);  v ← β2 v + (1 − β2) g²;  p ← p − step_size · m / (√v / bc2_sqrt + ε)
// 1 − β1, 1 − β2 and decay arrive precomputed (in double, as the Python code forms them).
template <typename T>
__global__ void adam_kernel(T* __restrict__ p, const T* __restrict__ grad, T* __restrict__ m, T* __restrict__ v, int64_t n,
                            T one_minus_beta1, T beta2, T one_minus_beta2, T eps, T weight_decay, T decay, bool decoupled,
                            T step_size, T bc2_sqrt) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    T g = grad[i];
    T w = p[i];
    if (decoupled) {
      w *= decay;
    } else if (weight_decay != T(0)) {
      g += weight_decay * w;
    }
    T mi = m[i];
    mi += one_minus_beta1 * (g - mi);
    const T vi = beta2 * v[i] + one_minus_beta2 * (g * g);
    m[i] = mi;
    v[i] = vi;
    p[i] = w - step_size * (mi / (sqrt(vi) / bc2_sqrt + eps));
  }
}

}  // namespace

template <typename T>
cudaError_t sgd_update(T* p, const T* grad, T* buf, int64_t n, double lr, double momentum, double dampening,
                       double weight_decay, bool nesterov, bool first_step, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  // 1 - τ, 1 - β and 1 - ηλ are formed in double, as the Python code forms them, then rounded once.
  sgd_kernel<T><<<grid_stride_blocks(n, kOptThreads), kOptThreads, 0, stream>>>(p, grad, buf, n, T(lr), T(momentum), T(1.0 - dampening),
                                                            T(weight_decay), nesterov, first_step);
  return cudaGetLastError();
}

template <typename T>
cudaError_t adam_update(T* p, const T* grad, T* m, T* v, int64_t n, double lr, double beta1, double beta2, double eps,
                        double weight_decay, bool decoupled, double step_size, double bc2_sqrt, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  adam_kernel<T><<<grid_stride_blocks(n, kOptThreads), kOptThreads, 0, stream>>>(p, grad, m, v, n, T(1.0 - beta1), T(beta2), T(1.0 - beta2),
                                                             T(eps), T(weight_decay), T(1.0 - lr * weight_decay),
                                                             decoupled, T(step_size), T(bc2_sqrt));
  return cudaGetLastError();
}

#define LAMINA_INSTANTIATE(T)                                                                                      \
  template cudaError_t sgd_update<T>(T*, const T*, T*, int64_t, double, double, double, double, bool, bool,       \
                                     cudaStream_t);                                                               \
  template cudaError_t adam_update<T>(T*, const T*, T*, T*, int64_t, double, double, double, double, double, bool, \
                                      double, double, cudaStream_t);
LAMINA_INSTANTIATE(float)
LAMINA_INSTANTIATE(double)
#undef LAMINA_INSTANTIATE

}  // namespace cuda
}  // namespace lamina
