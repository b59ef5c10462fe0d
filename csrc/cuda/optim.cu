// Fused optimizer updates, and the loss scaler's unscale-and-check, over
// many parameters at once ("multi-tensor"):
// one launch updates up to kMultiTensorMax parameters, where a kernel per
// parameter would cost a launch each (and CuPy's elementwise formulas five
// to ten).  The math is exactly that of lamina/optim/sgd.py, adam.py and
// adaptive.py, and of the weight averages of swa_utils.py (PyTorch's
// rules), in the parameter's own dtype; host-side scalars (bias
// corrections, 1 - beta) are formed in double by the caller, then rounded
// once.
//
// Each parameter is cut into chunks of kChunk elements; block b finds its
// parameter by a binary search of the chunk offsets held in the kernel's
// parameter list (passed by value as a __grid_constant__, so the dynamic
// index reads constant memory instead of copying the list to each thread).
#include <algorithm>

#include "common.cuh"
#include "launchers.h"

namespace lamina {
namespace cuda {

namespace {

constexpr int kOptThreads = 256;
constexpr int64_t kChunk = 4 * kOptThreads;  // elements per block

// Up to kMax parameters: kPtrs pointers each (p, grad, state...), the
// element count, three per-tensor scalars and the first chunk of each.
// Kernel parameters may take 4 KB: 48 parameters with up to 5 pointers
// (about 3.7 KB), 40 with 6 (AMSGrad's capturable Adam, about 3.4 KB).
template <int kPtrs>
struct TensorList {
  static constexpr int kMax = kPtrs <= 5 ? kMultiTensorMax : 40;
  void* ptr[kPtrs][kMax];
  int64_t n[kMax];
  double s0[kMax];
  double s1[kMax];
  double s2[kMax];
  int chunk_start[kMax + 1];  // chunk_start[count] = the grid size
  int count;

  // Pointer k of parameter t.
  template <typename T>
  __device__ __forceinline__ T* at(int k, int t) const {
    return static_cast<T*>(ptr[k][t]);
  }
};
static_assert(sizeof(TensorList<5>) + 128 <= 4096, "kernel parameters are limited to 4 KB");
static_assert(sizeof(TensorList<6>) + 128 <= 4096, "kernel parameters are limited to 4 KB");

// Block b's share of the list: elements [begin, end) of parameter t.
struct Span {
  int t;
  int64_t begin, end;
};

// The parameter whose chunks hold this block (the last t with
// chunk_start[t] <= blockIdx.x, by binary search) and the block's chunk of it.
template <int kPtrs>
__device__ __forceinline__ Span block_span(const TensorList<kPtrs>& list) {
  const int b = blockIdx.x;
  int lo = 0, hi = list.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (list.chunk_start[mid] <= b) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const int64_t begin = int64_t(b - list.chunk_start[lo]) * kChunk;
  return {lo, begin, min(begin + kChunk, list.n[lo])};
}

//   g ← g + λ p;  b ← g (first step) or μ b + (1 − τ) g;  g ← g + μ b (Nesterov) or b;  p ← p − η g
// ptr: p, grad, buf (null without momentum); s0: 1 on a parameter's first step (its buffer is fresh).
template <typename T>
__global__ void __launch_bounds__(kOptThreads)
    sgd_multi_kernel(const __grid_constant__ TensorList<3> list, T lr, T momentum, T one_minus_dampening,
                     T weight_decay, bool nesterov) {
  const Span s = block_span(list);
  T* __restrict__ p = list.at<T>(0, s.t);
  const T* __restrict__ grad = list.at<const T>(1, s.t);
  T* __restrict__ buf = list.at<T>(2, s.t);
  const bool first_step = list.s0[s.t] != 0;
  for (int64_t i = s.begin + threadIdx.x; i < s.end; i += kOptThreads) {
    T g = grad[i];
    if (weight_decay != T(0)) g += weight_decay * p[i];
    if (momentum != T(0)) {
      const T v = first_step ? g : momentum * buf[i] + one_minus_dampening * g;
      buf[i] = v;
      g = nesterov ? g + momentum * v : v;
    }
    p[i] -= lr * g;
  }
}

// Weight decay and the moments, as Adam's variants share them (optim/adam.py,
// adaptive.py):  AdamW: w ← w · decay (decay = 1 − η λ);  Adam: g ← g + λ w;
//   m ← m + (1 − β1)(g − m);  v ← β2 v + (1 − β2) g².  Returns the decayed g.
template <typename T>
__device__ __forceinline__ T adam_moments(T& w, T g, T& m, T& v, T one_minus_beta1, T beta2, T one_minus_beta2,
                                          T weight_decay, T decay, bool decoupled) {
  if (decoupled) {
    w *= decay;
  } else if (weight_decay != T(0)) {
    g += weight_decay * w;
  }
  m += one_minus_beta1 * (g - m);
  v = beta2 * v + one_minus_beta2 * (g * g);
  return g;
}

//   AdamW: p ← p · decay (decay = 1 − η λ);  Adam: g ← g + λ p
//   m ← m + (1 − β1)(g − m);  v ← β2 v + (1 − β2) g²;  AMSGrad: v̂ ← max(v̂, v), else v̂ = v
//   p ← p − step_size · m / (√v̂ / bc2_sqrt + ε)
// ptr: p, grad, m, v, then v̂ (max_exp_avg_sq) when kAmsgrad, then the step
// count t (a device scalar of type T) when capturable; s0: step_size = η /
// (1 − β1^t), s1: bc2_sqrt = √(1 − β2^t), per parameter (its own t), formed
// on the host in double, unless capturable: then both are formed here, in
// double, from the device's t, so that a CUDA graph replaying the launch
// uses each replay's step.
template <typename T, bool kAmsgrad>
__global__ void __launch_bounds__(kOptThreads)
    adam_multi_kernel(const __grid_constant__ TensorList<kAmsgrad ? 6 : 5> list, T one_minus_beta1, T beta2,
                      T one_minus_beta2, T eps, T weight_decay, T decay, bool decoupled, bool capturable, double lr,
                      double beta1_d, double beta2_d) {
  constexpr int kStep = kAmsgrad ? 5 : 4;
  const Span s = block_span(list);
  T* __restrict__ p = list.template at<T>(0, s.t);
  const T* __restrict__ grad = list.template at<const T>(1, s.t);
  T* __restrict__ m = list.template at<T>(2, s.t);
  T* __restrict__ v = list.template at<T>(3, s.t);
  T* __restrict__ v_max = kAmsgrad ? list.template at<T>(4, s.t) : nullptr;
  T step_size, bc2_sqrt;
  if (capturable) {
    const double step = static_cast<double>(*list.template at<const T>(kStep, s.t));
    step_size = T(lr / (1.0 - pow(beta1_d, step)));
    bc2_sqrt = T(sqrt(1.0 - pow(beta2_d, step)));
  } else {
    step_size = T(list.s0[s.t]);
    bc2_sqrt = T(list.s1[s.t]);
  }
  for (int64_t i = s.begin + threadIdx.x; i < s.end; i += kOptThreads) {
    T w = p[i], mi = m[i], vi = v[i];
    adam_moments(w, grad[i], mi, vi, one_minus_beta1, beta2, one_minus_beta2, weight_decay, decay, decoupled);
    m[i] = mi;
    v[i] = vi;
    if constexpr (kAmsgrad) {
      const T old = v_max[i];
      vi = (old > vi || old != old) ? old : vi;  // NaN propagates, as torch.maximum and np.maximum
      v_max[i] = vi;
    }
    p[i] = w - step_size * (mi / (sqrt(vi) / bc2_sqrt + eps));
  }
}

// NAdam and RAdam: Adam's moments, then an update whose factors depend on
// each parameter's own step t, formed on the host in double (NAdam's
// momentum product, RAdam's rectification) and passed per tensor.
//   NAdam (radam false):  d = √(v / s2) + ε;  p ← p − s0 · g / d − s1 · m / d
//     s0 = η (1 − μ_t) / (1 − Π_t),  s1 = η μ_{t+1} / (1 − Π_t μ_{t+1}),  s2 = 1 − β2^t
//   RAdam (radam true):  m̂ = m / s0;  s2 ≠ 0 (ρ_t > 5): p ← p − s1 · m̂ / (√v + ε),  else p ← p − s1 · m̂
//     s0 = 1 − β1^t,  s1 = η r_t √(1 − β2^t) (rectified) or η
// ptr: p, grad, m, v.
template <typename T>
__global__ void __launch_bounds__(kOptThreads)
    adam_variant_multi_kernel(const __grid_constant__ TensorList<4> list, T one_minus_beta1, T beta2,
                              T one_minus_beta2, T eps, T weight_decay, T decay, bool decoupled, bool radam) {
  const Span s = block_span(list);
  T* __restrict__ p = list.at<T>(0, s.t);
  const T* __restrict__ grad = list.at<const T>(1, s.t);
  T* __restrict__ m = list.at<T>(2, s.t);
  T* __restrict__ v = list.at<T>(3, s.t);
  const T s0 = T(list.s0[s.t]), s1 = T(list.s1[s.t]), s2 = T(list.s2[s.t]);
  const bool rectified = list.s2[s.t] != 0;
  for (int64_t i = s.begin + threadIdx.x; i < s.end; i += kOptThreads) {
    T w = p[i], mi = m[i], vi = v[i];
    const T g = adam_moments(w, grad[i], mi, vi, one_minus_beta1, beta2, one_minus_beta2, weight_decay, decay, decoupled);
    m[i] = mi;
    v[i] = vi;
    if (!radam) {
      const T d = sqrt(vi / s2) + eps;
      w -= s0 * (g / d);
      w -= s1 * (mi / d);
    } else {
      const T m_hat = mi / s0;
      w -= rectified ? s1 * (m_hat / (sqrt(vi) + eps)) : s1 * m_hat;
    }
    p[i] = w;
  }
}

//   g ← g + λ p;  s ← α s + (1 − α) g²;
//   centered: a ← a + (1 − α)(g − a), d = √(s − a²) + ε;   else d = √s + ε
//   μ > 0: b ← μ b + g / d, p ← p − η b;                  else p ← p − η g / d
// ptr: p, grad, square_avg, grad_avg (null unless centered), momentum buffer
// (null unless μ > 0).  No factor depends on the step: graph-capture safe.
template <typename T>
__global__ void __launch_bounds__(kOptThreads)
    rmsprop_multi_kernel(const __grid_constant__ TensorList<5> list, T lr, T alpha, T one_minus_alpha, T eps,
                         T weight_decay, T momentum, bool centered) {
  const Span s = block_span(list);
  T* __restrict__ p = list.at<T>(0, s.t);
  const T* __restrict__ grad = list.at<const T>(1, s.t);
  T* __restrict__ square_avg = list.at<T>(2, s.t);
  T* __restrict__ grad_avg = list.at<T>(3, s.t);
  T* __restrict__ buf = list.at<T>(4, s.t);
  for (int64_t i = s.begin + threadIdx.x; i < s.end; i += kOptThreads) {
    T g = grad[i];
    if (weight_decay != T(0)) g += weight_decay * p[i];
    const T sq = alpha * square_avg[i] + one_minus_alpha * (g * g);
    square_avg[i] = sq;
    T d;
    if (centered) {
      T a = grad_avg[i];
      a += one_minus_alpha * (g - a);
      grad_avg[i] = a;
      d = sqrt(sq - a * a) + eps;
    } else {
      d = sqrt(sq) + eps;
    }
    if (momentum != T(0)) {
      const T v = momentum * buf[i] + g / d;
      buf[i] = v;
      p[i] -= lr * v;
    } else {
      p[i] -= lr * (g / d);
    }
  }
}

//   g ← g + λ p;  s ← s + g²;  p ← p − clr · g / (√s + ε)
// ptr: p, grad, sum; s0: clr = η / (1 + (t − 1) δ) at the parameter's own step t (lr_decay δ).
template <typename T>
__global__ void __launch_bounds__(kOptThreads)
    adagrad_multi_kernel(const __grid_constant__ TensorList<3> list, T eps, T weight_decay) {
  const Span s = block_span(list);
  T* __restrict__ p = list.at<T>(0, s.t);
  const T* __restrict__ grad = list.at<const T>(1, s.t);
  T* __restrict__ sum = list.at<T>(2, s.t);
  const T clr = T(list.s0[s.t]);
  for (int64_t i = s.begin + threadIdx.x; i < s.end; i += kOptThreads) {
    T g = grad[i];
    if (weight_decay != T(0)) g += weight_decay * p[i];
    const T sq = sum[i] + g * g;
    sum[i] = sq;
    p[i] -= clr * (g / (sqrt(sq) + eps));
  }
}

//   a ← a + w (x − a): a running average of weights (EMA, SWA) in place.
// ptr: a, x.
template <typename T>
__global__ void __launch_bounds__(kOptThreads) lerp_multi_kernel(const __grid_constant__ TensorList<2> list, T w) {
  const Span s = block_span(list);
  T* __restrict__ a = list.at<T>(0, s.t);
  const T* __restrict__ x = list.at<const T>(1, s.t);
  for (int64_t i = s.begin + threadIdx.x; i < s.end; i += kOptThreads) {
    const T ai = a[i];
    a[i] = ai + w * (x[i] - ai);
  }
}

// t ← t + 1 for each parameter's device step count (its last pointer);
// launched before the capturable update, which reads it (one block: at most
// 48 counters).
template <typename T, int kPtrs>
__global__ void step_count_kernel(const __grid_constant__ TensorList<kPtrs> list) {
  for (int t = threadIdx.x; t < list.count; t += blockDim.x) *list.template at<T>(kPtrs - 1, t) += T(1);
}

//   g ← g · inv_scale, and *found_inf ← 1 if any result is inf or NaN (the
// unscale of lamina.amp.LossScaler; every writer writes 1, so the race is benign).
template <typename T>
__global__ void __launch_bounds__(kOptThreads)
    unscale_multi_kernel(const __grid_constant__ TensorList<1> list, T inv_scale, int* __restrict__ found_inf) {
  const Span s = block_span(list);
  T* __restrict__ grad = list.at<T>(0, s.t);
  bool bad = false;
  for (int64_t i = s.begin + threadIdx.x; i < s.end; i += kOptThreads) {
    const T g = grad[i] * inv_scale;
    grad[i] = g;
    bad |= !isfinite(g);
  }
  if (bad) *found_inf = 1;
}

// Calls launch(list) for consecutive runs of the tensors: at most
// TensorList<kPtrs>::kMax each and fewer than 2^31 chunks; empty tensors are left out.
template <int kPtrs, typename Launch>
cudaError_t for_each_list(const std::vector<MultiTensor>& tensors, Launch launch) {
  TensorList<kPtrs> list;
  list.count = 0;
  int64_t chunks = 0;
  auto flush = [&]() -> cudaError_t {
    if (list.count == 0) return cudaSuccess;
    list.chunk_start[list.count] = static_cast<int>(chunks);
    const cudaError_t err = launch(list, static_cast<unsigned>(chunks));
    list.count = 0;
    chunks = 0;
    return err;
  };
  for (const MultiTensor& x : tensors) {
    if (x.n <= 0) continue;
    const int64_t c = (x.n + kChunk - 1) / kChunk;
    if (c > INT32_MAX - 1) return cudaErrorInvalidValue;
    if (list.count == TensorList<kPtrs>::kMax || chunks + c > INT32_MAX - 1) {
      if (const cudaError_t err = flush(); err != cudaSuccess) return err;
    }
    const int i = list.count++;
    for (int k = 0; k < kPtrs; ++k) list.ptr[k][i] = x.ptr[k];
    list.n[i] = x.n;
    list.s0[i] = x.s0;
    list.s1[i] = x.s1;
    list.s2[i] = x.s2;
    list.chunk_start[i] = static_cast<int>(chunks);
    chunks += c;
  }
  return flush();
}

}  // namespace

template <typename T>
cudaError_t sgd_update(const std::vector<MultiTensor>& tensors, double lr, double momentum, double dampening,
                       double weight_decay, bool nesterov, cudaStream_t stream) {
  return for_each_list<3>(tensors, [&](const TensorList<3>& list, unsigned blocks) {
    // 1 − τ is formed in double, as the Python code forms it, then rounded once.
    sgd_multi_kernel<T><<<blocks, kOptThreads, 0, stream>>>(list, T(lr), T(momentum), T(1.0 - dampening), T(weight_decay), nesterov);
    return cudaGetLastError();
  });
}

template <typename T, bool kAmsgrad>
cudaError_t adam_launch(const std::vector<MultiTensor>& tensors, double lr, double beta1, double beta2, double eps,
                        double weight_decay, bool decoupled, bool capturable, cudaStream_t stream) {
  constexpr int kPtrs = kAmsgrad ? 6 : 5;
  return for_each_list<kPtrs>(tensors, [&](const TensorList<kPtrs>& list, unsigned blocks) {
    if (capturable) {
      step_count_kernel<T, kPtrs><<<1, 64, 0, stream>>>(list);
      if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
    }
    adam_multi_kernel<T, kAmsgrad><<<blocks, kOptThreads, 0, stream>>>(
        list, T(1.0 - beta1), T(beta2), T(1.0 - beta2), T(eps), T(weight_decay), T(1.0 - lr * weight_decay), decoupled,
        capturable, lr, beta1, beta2);
    return cudaGetLastError();
  });
}

template <typename T>
cudaError_t adam_update(const std::vector<MultiTensor>& tensors, double lr, double beta1, double beta2, double eps,
                        double weight_decay, bool decoupled, bool amsgrad, bool capturable, cudaStream_t stream) {
  return amsgrad ? adam_launch<T, true>(tensors, lr, beta1, beta2, eps, weight_decay, decoupled, capturable, stream)
                 : adam_launch<T, false>(tensors, lr, beta1, beta2, eps, weight_decay, decoupled, capturable, stream);
}

template <typename T>
cudaError_t adam_variant_update(const std::vector<MultiTensor>& tensors, bool radam, double lr, double beta1,
                                double beta2, double eps, double weight_decay, bool decoupled, cudaStream_t stream) {
  return for_each_list<4>(tensors, [&](const TensorList<4>& list, unsigned blocks) {
    adam_variant_multi_kernel<T><<<blocks, kOptThreads, 0, stream>>>(list, T(1.0 - beta1), T(beta2), T(1.0 - beta2), T(eps),
                                                                      T(weight_decay), T(1.0 - lr * weight_decay),
                                                                      decoupled, radam);
    return cudaGetLastError();
  });
}

template <typename T>
cudaError_t rmsprop_update(const std::vector<MultiTensor>& tensors, double lr, double alpha, double eps,
                           double weight_decay, double momentum, bool centered, cudaStream_t stream) {
  return for_each_list<5>(tensors, [&](const TensorList<5>& list, unsigned blocks) {
    rmsprop_multi_kernel<T><<<blocks, kOptThreads, 0, stream>>>(list, T(lr), T(alpha), T(1.0 - alpha), T(eps),
                                                                 T(weight_decay), T(momentum), centered);
    return cudaGetLastError();
  });
}

template <typename T>
cudaError_t adagrad_update(const std::vector<MultiTensor>& tensors, double eps, double weight_decay,
                           cudaStream_t stream) {
  return for_each_list<3>(tensors, [&](const TensorList<3>& list, unsigned blocks) {
    adagrad_multi_kernel<T><<<blocks, kOptThreads, 0, stream>>>(list, T(eps), T(weight_decay));
    return cudaGetLastError();
  });
}

template <typename T>
cudaError_t lerp_update(const std::vector<MultiTensor>& tensors, double weight, cudaStream_t stream) {
  return for_each_list<2>(tensors, [&](const TensorList<2>& list, unsigned blocks) {
    lerp_multi_kernel<T><<<blocks, kOptThreads, 0, stream>>>(list, T(weight));
    return cudaGetLastError();
  });
}

template <typename T>
cudaError_t unscale_grads(const std::vector<MultiTensor>& tensors, double inv_scale, int* found_inf,
                          cudaStream_t stream) {
  return for_each_list<1>(tensors, [&](const TensorList<1>& list, unsigned blocks) {
    unscale_multi_kernel<T><<<blocks, kOptThreads, 0, stream>>>(list, T(inv_scale), found_inf);
    return cudaGetLastError();
  });
}

#define LAMINA_INSTANTIATE(T)                                                                                     \
  template cudaError_t sgd_update<T>(const std::vector<MultiTensor>&, double, double, double, double, bool,      \
                                     cudaStream_t);                                                              \
  template cudaError_t adam_update<T>(const std::vector<MultiTensor>&, double, double, double, double, double, bool, \
                                      bool, bool, cudaStream_t);                                                        \
  template cudaError_t adam_variant_update<T>(const std::vector<MultiTensor>&, bool, double, double, double, double, \
                                              double, bool, cudaStream_t);                                        \
  template cudaError_t rmsprop_update<T>(const std::vector<MultiTensor>&, double, double, double, double, double,   \
                                         bool, cudaStream_t);                                                         \
  template cudaError_t adagrad_update<T>(const std::vector<MultiTensor>&, double, double, cudaStream_t);            \
  template cudaError_t lerp_update<T>(const std::vector<MultiTensor>&, double, cudaStream_t);                       \
  template cudaError_t unscale_grads<T>(const std::vector<MultiTensor>&, double, int*, cudaStream_t);
LAMINA_INSTANTIATE(float)
LAMINA_INSTANTIATE(double)
#undef LAMINA_INSTANTIATE

}  // namespace cuda
}  // namespace lamina
