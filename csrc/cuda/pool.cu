// 2-D max pooling, forward and backward, one launch each (CuPy's reference
// formulas take about fifteen forward and five backward).  Semantics of
// PyTorch's max_pool2d, as csrc/cpu/pool.cpp: padding counts as -inf, the
// first maximum of a window wins, a NaN beats everything (the last NaN of a
// window wins), and idx holds ih * W + iw of the winner.
//
// Forward: one thread per output element.  Backward gathers instead of
// scattering: one thread per input element sums dy over the windows that
// can contain it and chose it (idx == its own position), so the result is
// deterministic without atomics, whatever the overlap of the windows.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "common.cuh"
#include "launchers.h"

namespace lamina {
namespace cuda {

namespace {

constexpr int kPoolThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kPoolThreads)
    maxpool_forward_kernel(T* __restrict__ y, int64_t* __restrict__ idx, const T* __restrict__ x, PoolShape g) {
  using A = typename Acc<T>::type;
  const int64_t total = g.planes * g.oh * g.ow;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total; o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t plane = o / (int64_t(g.oh) * g.ow);
    const int oh = int(o / g.ow % g.oh), ow = int(o % g.ow);
    int hstart = oh * g.sh - g.pt, wstart = ow * g.sw - g.pl;
    while (hstart < 0) hstart += g.dh;
    while (wstart < 0) wstart += g.dw;
    const int hend = min(oh * g.sh - g.pt + (g.kh - 1) * g.dh + 1, g.h);
    const int wend = min(ow * g.sw - g.pl + (g.kw - 1) * g.dw + 1, g.w);
    const T* xp = x + plane * g.h * g.w;
    int64_t best = int64_t(hstart) * g.w + wstart;
    A best_v = -INFINITY;
    for (int ih = hstart; ih < hend; ih += g.dh)
      for (int iw = wstart; iw < wend; iw += g.dw) {
        const A v = load(xp, int64_t(ih) * g.w + iw);
        if (v > best_v || v != v) {
          best_v = v;
          best = int64_t(ih) * g.w + iw;
        }
      }
    store(y, o, best_v);
    idx[o] = best;
  }
}

// The output rows (or columns) whose windows can cover input row i:
// o * s - p + k d = i for some 0 <= k < K, so o in [ceil((i + p - (K-1) d) / s), floor((i + p) / s)].
__device__ __forceinline__ void covering(int i, int s, int p, int k, int d, int out, int& lo, int& hi) {
  const int top = i + p, low = top - (k - 1) * d;
  lo = low <= 0 ? 0 : (low + s - 1) / s;
  hi = min(top / s, out - 1);  // top >= 0 always (i >= 0, p >= 0)
}

template <typename T>
__global__ void __launch_bounds__(kPoolThreads)
    maxpool_backward_kernel(T* __restrict__ dx, const T* __restrict__ dy, const int64_t* __restrict__ idx, PoolShape g) {
  using A = typename Acc<T>::type;
  const int64_t total = g.planes * g.h * g.w;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t plane = i / (int64_t(g.h) * g.w);
    const int ih = int(i / g.w % g.h), iw = int(i % g.w);
    const int64_t me = int64_t(ih) * g.w + iw;
    int oh_lo, oh_hi, ow_lo, ow_hi;
    covering(ih, g.sh, g.pt, g.kh, g.dh, g.oh, oh_lo, oh_hi);
    covering(iw, g.sw, g.pl, g.kw, g.dw, g.ow, ow_lo, ow_hi);
    const int64_t base = plane * g.oh * g.ow;
    A sum = 0;
    for (int oh = oh_lo; oh <= oh_hi; ++oh)
      for (int ow = ow_lo; ow <= ow_hi; ++ow) {
        const int64_t o = base + int64_t(oh) * g.ow + ow;
        if (idx[o] == me) sum += load(dy, o);
      }
    store(dx, i, sum);
  }
}

}  // namespace

template <typename T>
cudaError_t maxpool2d_forward(T* y, int64_t* idx, const T* x, const PoolShape& g, cudaStream_t stream) {
  const int64_t total = g.planes * g.oh * g.ow;
  if (total == 0) return cudaSuccess;
  maxpool_forward_kernel<T><<<grid_stride_blocks(total, kPoolThreads), kPoolThreads, 0, stream>>>(y, idx, x, g);
  return cudaGetLastError();
}

template <typename T>
cudaError_t maxpool2d_backward(T* dx, const T* dy, const int64_t* idx, const PoolShape& g, cudaStream_t stream) {
  const int64_t total = g.planes * g.h * g.w;
  if (total == 0) return cudaSuccess;
  maxpool_backward_kernel<T><<<grid_stride_blocks(total, kPoolThreads), kPoolThreads, 0, stream>>>(dx, dy, idx, g);
  return cudaGetLastError();
}

#define LAMINA_INSTANTIATE(T)                                                                              \
  template cudaError_t maxpool2d_forward<T>(T*, int64_t*, const T*, const PoolShape&, cudaStream_t);      \
  template cudaError_t maxpool2d_backward<T>(T*, const T*, const int64_t*, const PoolShape&, cudaStream_t);
LAMINA_INSTANTIATE(float)
LAMINA_INSTANTIATE(double)
LAMINA_INSTANTIATE(__half)
LAMINA_INSTANTIATE(__nv_bfloat16)
#undef LAMINA_INSTANTIATE

}  // namespace cuda
}  // namespace lamina
