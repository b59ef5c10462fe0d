// One time step of an LSTM or a GRU cell (lamina/layers/recurrent.py), in
// float or double (the cells' arithmetic type: 16-bit layers run it in
// float).  n rows of H units, the gate blocks of a row side by side (LSTM
// i f g o, GRU r z n), all arrays contiguous.  One thread per (row, unit)
// in a grid-stride loop: a step is one launch instead of CuPy's ten to
// fifteen elementwise kernels and their temporaries.  Math as
// csrc/cpu/vector_loops.h and lamina/ops/reference.py.
#include "common.cuh"
#include "launchers.h"

namespace lamina {
namespace cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ T sigmoid_(T a) {
  return T(0.5) + T(0.5) * tanh(T(0.5) * a);  // no exponential to overflow
}

// gates = [σ(a_i) σ(a_f) tanh(a_g) σ(a_o)], a = gx + gh;  c = f c_prev + i g;  h = o tanh(c).
// c may be c_prev (each element is read before it is written).
template <typename T>
__global__ void lstm_cell_forward_kernel(T* __restrict__ gates, T* c, T* __restrict__ h, const T* __restrict__ gx,
                                         const T* __restrict__ gh, const T* c_prev, int64_t n, int64_t hh) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n * hh; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / hh, j = k - r * hh, base = r * 4 * hh + j;
    const T i = sigmoid_(gx[base] + gh[base]);
    const T f = sigmoid_(gx[base + hh] + gh[base + hh]);
    const T g = tanh(gx[base + 2 * hh] + gh[base + 2 * hh]);
    const T o = sigmoid_(gx[base + 3 * hh] + gh[base + 3 * hh]);
    gates[base] = i, gates[base + hh] = f, gates[base + 2 * hh] = g, gates[base + 3 * hh] = o;
    const T cn = f * c_prev[k] + i * g;
    c[k] = cn;
    h[k] = o * tanh(cn);
  }
}

// dc += dh o (1 - tanh² c);  da = [dc g i(1-i), dc c_prev f(1-f), dc i (1-g²), dh tanh(c) o(1-o)];  dc_prev = dc f.
template <typename T>
__global__ void lstm_cell_backward_kernel(T* __restrict__ da, T* dc_prev, const T* __restrict__ dh, const T* dc,
                                          const T* __restrict__ gates, const T* __restrict__ c,
                                          const T* __restrict__ c_prev, int64_t n, int64_t hh) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n * hh; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / hh, j = k - r * hh, base = r * 4 * hh + j;
    const T i = gates[base], f = gates[base + hh], g = gates[base + 2 * hh], o = gates[base + 3 * hh];
    const T tc = tanh(c[k]), g_h = dh[k];
    const T dct = dc[k] + g_h * o * (T(1) - tc * tc);
    da[base] = dct * g * i * (T(1) - i);
    da[base + hh] = dct * c_prev[k] * f * (T(1) - f);
    da[base + 2 * hh] = dct * i * (T(1) - g * g);
    da[base + 3 * hh] = g_h * tc * o * (T(1) - o);
    dc_prev[k] = dct * f;
  }
}

// gates = [r z n]: r = σ(gx_r + gh_r), z = σ(gx_z + gh_z), n = tanh(gx_n + r gh_n);  ghn = gh_n;  h = n + z (h_prev - n)
template <typename T>
__global__ void gru_cell_forward_kernel(T* __restrict__ gates, T* __restrict__ ghn, T* __restrict__ h,
                                        const T* __restrict__ gx, const T* __restrict__ gh,
                                        const T* __restrict__ h_prev, int64_t n, int64_t hh) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n * hh; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / hh, j = k - r * hh, base = r * 3 * hh + j;
    const T rr = sigmoid_(gx[base] + gh[base]);
    const T z = sigmoid_(gx[base + hh] + gh[base + hh]);
    const T hn = gh[base + 2 * hh];
    const T nn = tanh(gx[base + 2 * hh] + rr * hn);
    gates[base] = rr, gates[base + hh] = z, gates[base + 2 * hh] = nn;
    ghn[k] = hn;
    h[k] = nn + z * (h_prev[k] - nn);
  }
}

// da_n = dh (1-z)(1-n²);  dgx = [da_n gh_n r(1-r), dh (h_prev - n) z(1-z), da_n];  dgh = dgx with da_n r;  dh_direct = dh z
template <typename T>
__global__ void gru_cell_backward_kernel(T* __restrict__ dgx, T* __restrict__ dgh, T* __restrict__ dh_direct,
                                         const T* __restrict__ dh, const T* __restrict__ gates,
                                         const T* __restrict__ ghn, const T* __restrict__ h_prev, int64_t n,
                                         int64_t hh) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n * hh; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / hh, j = k - r * hh, base = r * 3 * hh + j;
    const T rr = gates[base], z = gates[base + hh], nn = gates[base + 2 * hh], g = dh[k];
    const T dan = g * (T(1) - z) * (T(1) - nn * nn);
    const T dar = dan * ghn[k] * rr * (T(1) - rr);
    const T daz = g * (h_prev[k] - nn) * z * (T(1) - z);
    dgx[base] = dar, dgx[base + hh] = daz, dgx[base + 2 * hh] = dan;
    dgh[base] = dar, dgh[base + hh] = daz, dgh[base + 2 * hh] = dan * rr;
    dh_direct[k] = g * z;
  }
}

}  // namespace

template <typename T>
cudaError_t lstm_cell_forward(T* gates, T* c, T* h, const T* gx, const T* gh, const T* c_prev, int64_t n, int64_t hh,
                              cudaStream_t stream) {
  if (n * hh == 0) return cudaSuccess;
  lstm_cell_forward_kernel<T><<<grid_stride_blocks(n * hh, kThreads), kThreads, 0, stream>>>(gates, c, h, gx, gh, c_prev,
                                                                                             n, hh);
  return cudaGetLastError();
}

template <typename T>
cudaError_t lstm_cell_backward(T* da, T* dc_prev, const T* dh, const T* dc, const T* gates, const T* c,
                               const T* c_prev, int64_t n, int64_t hh, cudaStream_t stream) {
  if (n * hh == 0) return cudaSuccess;
  lstm_cell_backward_kernel<T><<<grid_stride_blocks(n * hh, kThreads), kThreads, 0, stream>>>(da, dc_prev, dh, dc,
                                                                                              gates, c, c_prev, n, hh);
  return cudaGetLastError();
}

template <typename T>
cudaError_t gru_cell_forward(T* gates, T* ghn, T* h, const T* gx, const T* gh, const T* h_prev, int64_t n, int64_t hh,
                             cudaStream_t stream) {
  if (n * hh == 0) return cudaSuccess;
  gru_cell_forward_kernel<T><<<grid_stride_blocks(n * hh, kThreads), kThreads, 0, stream>>>(gates, ghn, h, gx, gh,
                                                                                            h_prev, n, hh);
  return cudaGetLastError();
}

template <typename T>
cudaError_t gru_cell_backward(T* dgx, T* dgh, T* dh_direct, const T* dh, const T* gates, const T* ghn,
                              const T* h_prev, int64_t n, int64_t hh, cudaStream_t stream) {
  if (n * hh == 0) return cudaSuccess;
  gru_cell_backward_kernel<T><<<grid_stride_blocks(n * hh, kThreads), kThreads, 0, stream>>>(dgx, dgh, dh_direct, dh,
                                                                                             gates, ghn, h_prev, n, hh);
  return cudaGetLastError();
}

#define LAMINA_INSTANTIATE_CELLS(T)                                                                                 \
  template cudaError_t lstm_cell_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t,            \
                                            cudaStream_t);                                                          \
  template cudaError_t lstm_cell_backward<T>(T*, T*, const T*, const T*, const T*, const T*, const T*, int64_t,    \
                                             int64_t, cudaStream_t);                                                \
  template cudaError_t gru_cell_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t,             \
                                           cudaStream_t);                                                           \
  template cudaError_t gru_cell_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, int64_t, int64_t,  \
                                            cudaStream_t);
LAMINA_INSTANTIATE_CELLS(float)
LAMINA_INSTANTIATE_CELLS(double)
#undef LAMINA_INSTANTIATE_CELLS

}  // namespace cuda
}  // namespace lamina
