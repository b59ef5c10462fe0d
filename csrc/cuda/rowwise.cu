// Row-wise kernels of the transformer block: softmax (attention, its 1/√d
// folded in as `scale`) and layer normalisation, forward and backward.  One
// warp per row, lanes striding over the row, warp-shuffle sums: one launch
// each where CuPy's formulas take four to ten.  Math as csrc/cpu/vector_loops.h
// and lamina/ops/reference.py:
//   softmax:   y = e^(scale (x − max)) / Σ e^(...);  dx = scale y (dy − Σ dy y)
//   layernorm: xhat = (x − mean) rstd, rstd = 1/√(var + ε), y = xhat w + b;
//              dx = rstd (g − mean(g) − xhat mean(g xhat)), g = dy w;
//              dw = Σ_rows dy xhat, db = Σ_rows dy (two more launches: row
//              chunks into a workspace, then the chunks summed in order, so
//              the result is deterministic).
// A row of -inf only, or with a NaN, gives NaN in softmax, as in PyTorch;
// masked (-inf) scores give exactly 0.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>

#include "common.cuh"
#include "launchers.h"

namespace lamina {
namespace cuda {

namespace {

constexpr int kRowwiseThreads = 128;  // 4 warps: 4 rows a block
constexpr int kRowsPerBlock = kRowwiseThreads / 32;
constexpr int kColumnThreads = 256;
constexpr int kMaxRowChunks = 64;

__device__ __forceinline__ int64_t warp_row() {
  return int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
}

template <typename T>
__global__ void __launch_bounds__(kRowwiseThreads)
    softmax_forward_kernel(T* __restrict__ y, const T* __restrict__ x, int64_t rows, int64_t d, double scale) {
  using A = typename Acc<T>::type;
  const int lane = threadIdx.x & 31;
  const int64_t row = warp_row();
  if (row >= rows) return;  // whole warps leave together
  const T* xr = x + row * d;
  T* yr = y + row * d;
  A m = -INFINITY;
  for (int64_t j = lane; j < d; j += 32) {
    const A v = load(xr, j);
    m = v > m ? v : m;
  }
  m = warp_max(m);
  const A sc = A(scale);
  A s = 0;
  for (int64_t j = lane; j < d; j += 32) s += exp(sc * (load(xr, j) - m));
  s = warp_sum(s);
  const A inv = A(1) / s;
  for (int64_t j = lane; j < d; j += 32) store(yr, j, exp(sc * (load(xr, j) - m)) * inv);
}

template <typename T>
__global__ void __launch_bounds__(kRowwiseThreads)
    softmax_backward_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ y, int64_t rows,
                            int64_t d, double scale) {
  using A = typename Acc<T>::type;
  const int lane = threadIdx.x & 31;
  const int64_t row = warp_row();
  if (row >= rows) return;
  const int64_t base = row * d;
  A dot = 0;
  for (int64_t j = lane; j < d; j += 32) dot += load(dy, base + j) * load(y, base + j);
  dot = warp_sum(dot);
  const A sc = A(scale);
  for (int64_t j = lane; j < d; j += 32) {
    const A yj = load(y, base + j);
    store(dx, base + j, sc * yj * (load(dy, base + j) - dot));
  }
}

template <typename T>
__global__ void __launch_bounds__(kRowwiseThreads)
    layernorm_forward_kernel(T* __restrict__ y, T* __restrict__ xhat, T* __restrict__ rstd, const T* __restrict__ x,
                             const T* __restrict__ w, const T* __restrict__ b, int64_t rows, int64_t d, double eps) {
  using A = typename Acc<T>::type;
  const int lane = threadIdx.x & 31;
  const int64_t row = warp_row();
  if (row >= rows) return;
  const int64_t base = row * d;
  A sum = 0;
  for (int64_t j = lane; j < d; j += 32) sum += load(x, base + j);
  const A mean = warp_sum(sum) / A(d);
  A sq = 0;  // the variance of the centred row: two passes, no cancellation
  for (int64_t j = lane; j < d; j += 32) {
    const A c = load(x, base + j) - mean;
    sq += c * c;
  }
  const A r = A(1) / sqrt(warp_sum(sq) / A(d) + A(eps));
  if (lane == 0) store(rstd, row, r);
  for (int64_t j = lane; j < d; j += 32) {
    const A h = (load(x, base + j) - mean) * r;
    store(xhat, base + j, h);
    store(y, base + j, (w != nullptr ? h * load(w, j) : h) + (b != nullptr ? load(b, j) : A(0)));
  }
}

template <typename T>
__global__ void __launch_bounds__(kRowwiseThreads)
    layernorm_backward_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ xhat,
                              const T* __restrict__ rstd, const T* __restrict__ w, int64_t rows, int64_t d) {
  using A = typename Acc<T>::type;
  const int lane = threadIdx.x & 31;
  const int64_t row = warp_row();
  if (row >= rows) return;
  const int64_t base = row * d;
  A sg = 0, sgx = 0;
  for (int64_t j = lane; j < d; j += 32) {
    const A g = w != nullptr ? load(dy, base + j) * load(w, j) : load(dy, base + j);
    sg += g;
    sgx += g * load(xhat, base + j);
  }
  const A mg = warp_sum(sg) / A(d), mgx = warp_sum(sgx) / A(d), r = load(rstd, row);
  for (int64_t j = lane; j < d; j += 32) {
    const A g = w != nullptr ? load(dy, base + j) * load(w, j) : load(dy, base + j);
    store(dx, base + j, r * (g - mg - load(xhat, base + j) * mgx));
  }
}

// Column sums over a chunk of rows: partial[chunk][0][j] = Σ dy xhat,
// partial[chunk][1][j] = Σ dy (float64), for the columns of this block.
template <typename T>
__global__ void __launch_bounds__(kColumnThreads)
    layernorm_param_partial_kernel(double* __restrict__ partial, const T* __restrict__ dy, const T* __restrict__ xhat,
                                   int64_t rows, int64_t d) {
  using A = typename Acc<T>::type;
  const int64_t j = int64_t(blockIdx.x) * kColumnThreads + threadIdx.x;
  if (j >= d) return;
  const int chunk = blockIdx.y, chunks = gridDim.y;
  const int64_t per = (rows + chunks - 1) / chunks, begin = min(rows, per * chunk), end = min(rows, begin + per);
  A sw = 0, sb = 0;
  for (int64_t r = begin; r < end; ++r) {
    const A g = load(dy, r * d + j);
    sw += g * load(xhat, r * d + j);
    sb += g;
  }
  partial[(int64_t(chunk) * 2) * d + j] = double(sw);
  partial[(int64_t(chunk) * 2 + 1) * d + j] = double(sb);
}

template <typename T>
__global__ void __launch_bounds__(kColumnThreads)
    layernorm_param_sum_kernel(T* __restrict__ dw, T* __restrict__ db, const double* __restrict__ partial, int chunks,
                               int64_t d) {
  const int64_t j = int64_t(blockIdx.x) * kColumnThreads + threadIdx.x;
  if (j >= d) return;
  double sw = 0, sb = 0;
  for (int k = 0; k < chunks; ++k) {
    sw += partial[(int64_t(k) * 2) * d + j];
    sb += partial[(int64_t(k) * 2 + 1) * d + j];
  }
  store(dw, j, typename Acc<T>::type(sw));
  store(db, j, typename Acc<T>::type(sb));
}

unsigned row_blocks(int64_t rows) { return unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

}  // namespace

int layernorm_row_chunks(int64_t rows, int64_t d) {
  const int64_t col_blocks = (d + kColumnThreads - 1) / kColumnThreads;
  int64_t chunks = (264 + col_blocks - 1) / col_blocks;  // about two blocks per SM
  chunks = std::min<int64_t>(chunks, (rows + 31) / 32);  // at least ~32 rows a chunk
  return int(std::max<int64_t>(1, std::min<int64_t>(chunks, kMaxRowChunks)));
}

template <typename T>
cudaError_t softmax_forward(T* y, const T* x, int64_t rows, int64_t d, double scale, cudaStream_t stream) {
  if (rows == 0 || d == 0) return cudaSuccess;
  if ((rows + kRowsPerBlock - 1) / kRowsPerBlock > INT32_MAX) return cudaErrorInvalidValue;
  softmax_forward_kernel<T><<<row_blocks(rows), kRowwiseThreads, 0, stream>>>(y, x, rows, d, scale);
  return cudaGetLastError();
}

template <typename T>
cudaError_t softmax_backward(T* dx, const T* dy, const T* y, int64_t rows, int64_t d, double scale,
                             cudaStream_t stream) {
  if (rows == 0 || d == 0) return cudaSuccess;
  if ((rows + kRowsPerBlock - 1) / kRowsPerBlock > INT32_MAX) return cudaErrorInvalidValue;
  softmax_backward_kernel<T><<<row_blocks(rows), kRowwiseThreads, 0, stream>>>(dx, dy, y, rows, d, scale);
  return cudaGetLastError();
}

template <typename T>
cudaError_t layernorm_forward(T* y, T* xhat, T* rstd, const T* x, const T* w, const T* b, int64_t rows, int64_t d,
                              double eps, cudaStream_t stream) {
  if (rows == 0 || d == 0) return cudaSuccess;
  if ((rows + kRowsPerBlock - 1) / kRowsPerBlock > INT32_MAX) return cudaErrorInvalidValue;
  layernorm_forward_kernel<T><<<row_blocks(rows), kRowwiseThreads, 0, stream>>>(y, xhat, rstd, x, w, b, rows, d, eps);
  return cudaGetLastError();
}

template <typename T>
cudaError_t layernorm_backward(T* dx, T* dw, T* db, double* workspace, const T* dy, const T* xhat, const T* rstd,
                               const T* w, int64_t rows, int64_t d, cudaStream_t stream) {
  if (rows == 0 || d == 0) return cudaSuccess;
  if ((rows + kRowsPerBlock - 1) / kRowsPerBlock > INT32_MAX || (d + kColumnThreads - 1) / kColumnThreads > INT32_MAX)
    return cudaErrorInvalidValue;
  layernorm_backward_kernel<T><<<row_blocks(rows), kRowwiseThreads, 0, stream>>>(dx, dy, xhat, rstd, w, rows, d);
  if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess || dw == nullptr) return err;
  const int chunks = layernorm_row_chunks(rows, d);
  const unsigned col_blocks = unsigned((d + kColumnThreads - 1) / kColumnThreads);
  layernorm_param_partial_kernel<T><<<dim3(col_blocks, chunks), kColumnThreads, 0, stream>>>(workspace, dy, xhat, rows, d);
  if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  layernorm_param_sum_kernel<T><<<col_blocks, kColumnThreads, 0, stream>>>(dw, db, workspace, chunks, d);
  return cudaGetLastError();
}

#define LAMINA_INSTANTIATE_SOFTMAX(T)                                                                      \
  template cudaError_t softmax_forward<T>(T*, const T*, int64_t, int64_t, double, cudaStream_t);          \
  template cudaError_t softmax_backward<T>(T*, const T*, const T*, int64_t, int64_t, double, cudaStream_t);
LAMINA_INSTANTIATE_SOFTMAX(float)
LAMINA_INSTANTIATE_SOFTMAX(double)
LAMINA_INSTANTIATE_SOFTMAX(__half)
LAMINA_INSTANTIATE_SOFTMAX(__nv_bfloat16)
#undef LAMINA_INSTANTIATE_SOFTMAX

#define LAMINA_INSTANTIATE_LAYERNORM(T)                                                                             \
  template cudaError_t layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, double,    \
                                            cudaStream_t);                                                          \
  template cudaError_t layernorm_backward<T>(T*, T*, T*, double*, const T*, const T*, const T*, const T*, int64_t, \
                                             int64_t, cudaStream_t);
LAMINA_INSTANTIATE_LAYERNORM(float)
LAMINA_INSTANTIATE_LAYERNORM(double)
#undef LAMINA_INSTANTIATE_LAYERNORM

}  // namespace cuda
}  // namespace lamina
