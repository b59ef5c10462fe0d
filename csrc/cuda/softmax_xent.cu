// Fused softmax cross-entropy, forward and backward in one kernel: one warp
// per row of logits (N, C), lanes striding over C.  Math as the C++ kernel
// (csrc/cpu/softmax_xent.cpp): with m = max_c x_c, s = sum_c e^(x_c - m) and
// q = (1 - eps) onehot(label) + eps / C,
//   loss = log s + (eps/C)(C m - sum_c x_c) + (1 - eps)(m - x_label)
//   dlogits_c = grad_scale (e^(x_c - m) / s - q_c)
// CuPy would launch a kernel per step (max, subtract, exp, sum, log, ...).
// Reads the row twice (max, then sums) and a third time for the gradient;
// rows are short enough to stay in L1/L2 between the passes.  A label out of
// [0, C) gives a NaN loss and a NaN gradient row (Python checks labels on the
// host unless the caller asked not to wait for the GPU: Loss.compute).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "common.cuh"
#include "launchers.h"

namespace lamina {
namespace cuda {

namespace {

constexpr int kRowThreads = 128;  // 4 warps, 4 rows per block

template <typename T>
__global__ void __launch_bounds__(kRowThreads)
    softmax_xent_kernel(T* __restrict__ loss, T* __restrict__ dlogits, const T* __restrict__ logits,
                        const int64_t* __restrict__ labels, int64_t n, int64_t c, double smoothing, double grad_scale) {
  using A = typename Acc<T>::type;
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * (kRowThreads / 32) + (threadIdx.x >> 5);
  if (row >= n) return;  // whole warps leave together: row is uniform across a warp
  const T* x = logits + row * c;
  const int64_t label = labels[row];
  if (label < 0 || label >= c) {  // never read out of bounds: a NaN loss and gradient row say so
    if (lane == 0) store(loss, row, A(NAN));
    if (dlogits != nullptr)
      for (int64_t j = lane; j < c; j += 32) store(dlogits + row * c, j, A(NAN));
    return;  // the whole warp: label is uniform across it
  }
  A m = -INFINITY;
  for (int64_t j = lane; j < c; j += 32) {
    const A v = load(x, j);
    m = v > m ? v : m;
  }
  m = warp_max(m);
  A s = 0, sx = 0;
  for (int64_t j = lane; j < c; j += 32) {
    const A v = load(x, j);
    s += exp(v - m);
    sx += v;
  }
  s = warp_sum(s);
  sx = warp_sum(sx);
  const A q_off = A(smoothing) / A(c), q_on = A(1) - A(smoothing) + q_off;
  if (lane == 0) {
    const A xl = load(x, label);
    store(loss, row, log(s) + q_off * (A(c) * m - sx) + (q_on - q_off) * (m - xl));
  }
  if (dlogits != nullptr) {
    const A scale = A(grad_scale), inv_s = A(1) / s;
    T* g = dlogits + row * c;
    for (int64_t j = lane; j < c; j += 32) {
      const A p = exp(load(x, j) - m) * inv_s;
      store(g, j, scale * (p - q_off - (j == label ? q_on - q_off : A(0))));
    }
  }
}

}  // namespace

template <typename T>
cudaError_t softmax_xent(T* loss, T* dlogits, const T* logits, const int64_t* labels, int64_t n, int64_t c,
                         double smoothing, double grad_scale, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int64_t rows_per_block = kRowThreads / 32;
  const int64_t blocks = (n + rows_per_block - 1) / rows_per_block;
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  softmax_xent_kernel<T><<<(unsigned)blocks, kRowThreads, 0, stream>>>(loss, dlogits, logits, labels, n, c, smoothing,
                                                                        grad_scale);
  return cudaGetLastError();
}

#define LAMINA_INSTANTIATE(T)                                                                                 \
  template cudaError_t softmax_xent<T>(T*, T*, const T*, const int64_t*, int64_t, int64_t, double, double, \
                                       cudaStream_t);
LAMINA_INSTANTIATE(float)
LAMINA_INSTANTIATE(double)
LAMINA_INSTANTIATE(__half)
LAMINA_INSTANTIATE(__nv_bfloat16)
#undef LAMINA_INSTANTIATE

}  // namespace cuda
}  // namespace lamina
