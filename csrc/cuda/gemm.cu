// fp32 GEMM on CUDA cores with transposes and a fused bias/activation
// epilogue:  C[M, N] = act(op(A)[M, K] · op(B)[K, N] + bias[N])
//   op(A)[m, k] = trans_a ? A[k * lda + m] : A[m * lda + k]
//   op(B)[k, n] = trans_b ? B[n * ldb + k] : B[k * ldb + n]
// so Dense's forward (x Wᵀ), dx (dy W) and dW (dyᵀ x) all run without copies.
//
// v2: the SIMT core of simt_gemm.cuh (128 x 128 x 8 tiles, 8 x 8 per thread,
// float4 shared loads, register-staged double buffering).  Each operand is
// read along its contiguous dimension whichever way it is transposed, with
// 16-byte loads when the leading dimension and address allow and masked
// scalar loads at the edges, so any M, N, K work.  v1 (64 x 64 x 16, 4 x 4
// per thread, scalar loads, one buffer) is in git history; predicted and
// measured figures of both are in csrc/NOTES.md.
//
// Split-K (sgemm_split_k) for problems of a few tiles, such as Dense's
// training shapes (M = 128: one row of tiles): the k range is cut into
// `splits` ranges whose fp32 partial tiles go to a workspace, then a second
// kernel adds them in order and applies the epilogue.
//
// Also here: the fused bias + activation backward that goes with the
// epilogue (dz = dy act'(z), db = Σ_rows dz).
#include <cuda_runtime.h>

#include <type_traits>

#include "common.cuh"
#include "launchers.h"
#include "simt_gemm.cuh"

namespace lamina {
namespace cuda {

namespace {

using simt::DenseLoader;
using simt::from_float;
using simt::kColMajor;
using simt::kRowMajor;
using simt::to_float;

template <typename T, typename OutT>
struct GemmEpilogue {
  OutT* C;
  OutT* aux;
  const T* bias;
  int64_t ldc;
  int act;
  // Not inlined: 64 inlined GELUs per kernel cost compile time, not run time.
  __device__ __noinline__ void operator()(int m, int n, float v) const {
    if (bias != nullptr) v += to_float(bias[n]);
    const int64_t at = (int64_t)m * ldc + n;
    if (aux != nullptr) aux[at] = from_float<OutT>(v);
    C[at] = from_float<OutT>(act_value(v, act));
  }
};

// Split-K: block z of the grid reduces k in [z * chunk, (z + 1) * chunk) and
// writes its fp32 partial sums to slab z of the workspace (M x N each).
struct PartialEpilogue {
  float* slab;
  int64_t n;
  __device__ void operator()(int m, int col, float v) const { slab[(int64_t)m * n + col] = v; }
};

template <class Epi, typename T, simt::Pattern PA, simt::Pattern PB>
__global__ void __launch_bounds__(simt::kThreads)
    sgemm_kernel(Epi epi, const T* __restrict__ A, const T* __restrict__ B, int M, int N, int K, int64_t lda,
                 int64_t ldb, bool vec_a, bool vec_b, int chunk) {
  const int m0 = blockIdx.y * simt::BM, n0 = blockIdx.x * simt::BN;
  const int kbegin = blockIdx.z * chunk, kend = min(K, kbegin + chunk);
  // A's rows are m; B's "rows" (its tile's long side) are n.  Loaders bound k by K;
  // the range [kbegin, kend) is the mainloop's.
  DenseLoader<T, PA> la{A, lda, M, kend, m0, vec_a, {}};
  DenseLoader<T, PB> lb{B, ldb, N, kend, n0, vec_b, {}};
  float acc[8][8] = {};
  simt::mainloop(la, lb, kbegin, kend, acc);  // an empty range leaves zeros, still written
  if constexpr (std::is_same<Epi, PartialEpilogue>::value) {
    const PartialEpilogue slab{epi.slab + (int64_t)blockIdx.z * M * N, epi.n};
    simt::epilogue(slab, acc, m0, n0, M, N);
  } else {
    simt::epilogue(epi, acc, m0, n0, M, N);
  }
}

// C = epilogue(Σ_z partial[z]), the slabs added in order (deterministic).
template <typename T, typename OutT>
__global__ void split_k_reduce_kernel(GemmEpilogue<T, OutT> epi, const float* __restrict__ partial, int M, int N,
                                      int splits) {
  const int64_t total = (int64_t)M * N;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    float v = 0.f;
    for (int z = 0; z < splits; ++z) v += partial[z * total + i];
    epi((int)(i / N), (int)(i % N), v);
  }
}

template <typename T>
bool aligned4(const T* p, int64_t ld) {
  return ld % 4 == 0 && reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T)) == 0;
}

// dz = dy act'(z), db[n] = Σ_m dz[m, n]: a block owns 32 columns and walks
// all rows, 32 x 8 threads (coalesced along n); the 8 partial column sums
// meet in shared memory, so the sum has a fixed order (deterministic).
constexpr int kBiasRows = 8;

template <typename T>
__global__ void __launch_bounds__(32 * kBiasRows)
    bias_act_backward_kernel(T* __restrict__ dz, T* __restrict__ dbias, const T* __restrict__ dy,
                             const T* __restrict__ z, int64_t M, int64_t N, int act) {
  using A = typename Acc<T>::type;
  __shared__ A part[kBiasRows][33];
  const int64_t n = int64_t(blockIdx.x) * 32 + threadIdx.x;
  A s = 0;
  if (n < N) {
    for (int64_t m = threadIdx.y; m < M; m += kBiasRows) {
      const int64_t at = m * N + n;
      const A g = load(dy, at) * act_grad(load(z, at), act);
      store(dz, at, g);
      s += g;
    }
  }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && n < N && dbias != nullptr) {
    A total = 0;
#pragma unroll
    for (int r = 0; r < kBiasRows; ++r) total += part[r][threadIdx.x];
    store(dbias, n, total);
  }
}

template <class Epi, typename T>
void launch_sgemm(dim3 grid, cudaStream_t stream, const Epi& epi, const T* A, const T* B, int m, int n, int k,
                  int64_t lda, int64_t ldb, bool trans_a, bool trans_b, int chunk) {
  const bool va = aligned4(A, lda), vb = aligned4(B, ldb);
  // A (M, K) is k-contiguous unless transposed; B (K, N) is n-contiguous unless transposed.
  if (!trans_a && !trans_b)
    sgemm_kernel<Epi, T, kRowMajor, kColMajor><<<grid, simt::kThreads, 0, stream>>>(epi, A, B, m, n, k, lda, ldb, va, vb, chunk);
  if (!trans_a && trans_b)
    sgemm_kernel<Epi, T, kRowMajor, kRowMajor><<<grid, simt::kThreads, 0, stream>>>(epi, A, B, m, n, k, lda, ldb, va, vb, chunk);
  if (trans_a && !trans_b)
    sgemm_kernel<Epi, T, kColMajor, kColMajor><<<grid, simt::kThreads, 0, stream>>>(epi, A, B, m, n, k, lda, ldb, va, vb, chunk);
  if (trans_a && trans_b)
    sgemm_kernel<Epi, T, kColMajor, kRowMajor><<<grid, simt::kThreads, 0, stream>>>(epi, A, B, m, n, k, lda, ldb, va, vb, chunk);
}

template <typename T, typename OutT>
cudaError_t sgemm(OutT* C, OutT* aux, float* workspace, int splits, const T* A, const T* B, const T* bias, int64_t M,
                  int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool trans_a, bool trans_b, int act,
                  cudaStream_t stream) {
  if (M == 0 || N == 0) return cudaSuccess;
  if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || splits < 1 || splits > 65535) return cudaErrorInvalidValue;
  if (splits > 1 && (workspace == nullptr || M * N * splits > INT64_MAX / 4)) return cudaErrorInvalidValue;
  const int64_t grid_y = (M + simt::BM - 1) / simt::BM;
  if (grid_y > 65535) return cudaErrorInvalidValue;
  // Each split covers a whole number of BK-slices of k.
  const int64_t slices = (K + simt::BK - 1) / simt::BK;
  const int chunk = (int)(((slices + splits - 1) / splits) * simt::BK);
  const dim3 grid((unsigned)((N + simt::BN - 1) / simt::BN), (unsigned)grid_y, (unsigned)splits);
  const GemmEpilogue<T, OutT> epi{C, aux, bias, ldc, act};
  const int m = (int)M, n = (int)N, k = (int)K;
  if (splits == 1) {
    launch_sgemm(grid, stream, epi, A, B, m, n, k, lda, ldb, trans_a, trans_b, k);
    return cudaGetLastError();
  }
  launch_sgemm(grid, stream, PartialEpilogue{workspace, N}, A, B, m, n, k, lda, ldb, trans_a, trans_b, chunk);
  if (cudaError_t e = cudaGetLastError()) return e;
  split_k_reduce_kernel<T, OutT><<<grid_stride_blocks(M * N, 256), 256, 0, stream>>>(epi, workspace, m, n, splits);
  return cudaGetLastError();
}

}  // namespace

template <>
cudaError_t gemm<float, float>(float* C, float* aux, const float* A, const float* B, const float* bias, int64_t M,
                               int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool trans_a, bool trans_b,
                               int act, cudaStream_t stream) {
  return sgemm(C, aux, nullptr, 1, A, B, bias, M, N, K, lda, ldb, ldc, trans_a, trans_b, act, stream);
}

cudaError_t sgemm_split_k(float* C, float* aux, float* workspace, int splits, const float* A, const float* B,
                          const float* bias, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc,
                          bool trans_a, bool trans_b, int act, cudaStream_t stream) {
  return sgemm(C, aux, workspace, splits, A, B, bias, M, N, K, lda, ldb, ldc, trans_a, trans_b, act, stream);
}

template <typename T>
cudaError_t bias_act_backward(T* dz, T* dbias, const T* dy, const T* z, int64_t M, int64_t N, int act,
                              cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  const int64_t blocks = (N + 31) / 32;
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  bias_act_backward_kernel<T><<<(unsigned)blocks, dim3(32, kBiasRows), 0, stream>>>(dz, dbias, dy, z, M, N, act);
  return cudaGetLastError();
}

template cudaError_t bias_act_backward<float>(float*, float*, const float*, const float*, int64_t, int64_t, int,
                                              cudaStream_t);
template cudaError_t bias_act_backward<double>(double*, double*, const double*, const double*, int64_t, int64_t, int,
                                               cudaStream_t);
template cudaError_t bias_act_backward<__half>(__half*, __half*, const __half*, const __half*, int64_t, int64_t, int,
                                               cudaStream_t);
template cudaError_t bias_act_backward<__nv_bfloat16>(__nv_bfloat16*, __nv_bfloat16*, const __nv_bfloat16*,
                                                      const __nv_bfloat16*, int64_t, int64_t, int, cudaStream_t);

}  // namespace cuda
}  // namespace lamina
