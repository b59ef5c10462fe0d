// fp32 GEMM on CUDA cores with transposes and a fused bias/activation
// epilogue:  C[M, N] = act(op(A)[M, K] · op(B)[K, N] + bias[N])
//   op(A)[m, k] = trans_a ? A[k * lda + m] : A[m * lda + k]
//   op(B)[k, n] = trans_b ? B[n * ldb + k] : B[k * ldb + n]
// so Dense's forward (x Wᵀ), dx (dy W) and dW (dyᵀ x) all run without copies.
//
// v1: shared-memory tiles of BM x BK (A) and BK x BN (B), each thread
// accumulating a TM x TN block in registers (outer products from shared
// memory, BM = BN = 64, BK = 16, TM = TN = 4, 256 threads).  Global loads are
// ordered along the contiguous dimension of each operand so that they
// coalesce whether or not it is transposed; out-of-range elements load as 0,
// so any M, N, K work (edges included) and the epilogue masks its stores.
// Predicted and measured figures: csrc/NOTES.md.  This is the correct,
// portable baseline that later versions (vectorised loads, double
// buffering, tensor cores) are checked against.
#include <cuda_runtime.h>

#include "launchers.h"

namespace lamina {
namespace cuda {

namespace {

constexpr int BM = 64, BN = 64, BK = 16, TM = 4, TN = 4;
constexpr int kGemmThreads = (BM / TM) * (BN / TN);  // 256

template <bool TA, bool TB>
__global__ void __launch_bounds__(kGemmThreads)
    sgemm_kernel(float* __restrict__ C, const float* __restrict__ A, const float* __restrict__ B,
                 const float* __restrict__ bias, int M, int N, int K, int lda, int ldb, int ldc, int act) {
  __shared__ float As[BK][BM + 1];  // As[k][m]; +1 breaks bank conflicts on the transposed stores
  __shared__ float Bs[BK][BN + 1];  // Bs[k][n]
  const int tid = threadIdx.x;
  const int tx = tid % (BN / TN), ty = tid / (BN / TN);
  const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
  float acc[TM][TN] = {};

  for (int k0 = 0; k0 < K; k0 += BK) {
    for (int i = tid; i < BM * BK; i += kGemmThreads) {
      int m, k;
      if (TA) {  // A stored (K, M): consecutive threads walk m
        k = i / BM;
        m = i % BM;
      } else {  // A stored (M, K): consecutive threads walk k
        m = i / BK;
        k = i % BK;
      }
      const int gm = row0 + m, gk = k0 + k;
      float v = 0.f;
      if (gm < M && gk < K) v = TA ? A[(size_t)gk * lda + gm] : A[(size_t)gm * lda + gk];
      As[k][m] = v;
    }
    for (int i = tid; i < BN * BK; i += kGemmThreads) {
      int n, k;
      if (TB) {  // B stored (N, K): consecutive threads walk k
        n = i / BK;
        k = i % BK;
      } else {  // B stored (K, N): consecutive threads walk n
        k = i / BN;
        n = i % BN;
      }
      const int gn = col0 + n, gk = k0 + k;
      float v = 0.f;
      if (gn < N && gk < K) v = TB ? B[(size_t)gn * ldb + gk] : B[(size_t)gk * ldb + gn];
      Bs[k][n] = v;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = As[kk][ty * TM + i];
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = Bs[kk][tx * TN + j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int gm = row0 + ty * TM + i;
    if (gm >= M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int gn = col0 + tx * TN + j;
      if (gn >= N) continue;
      float v = acc[i][j];
      if (bias != nullptr) v += bias[gn];
      if (act == kActRelu) v = fmaxf(v, 0.f);
      C[(size_t)gm * ldc + gn] = v;
    }
  }
}

}  // namespace

cudaError_t sgemm(float* C, const float* A, const float* B, const float* bias, int64_t M, int64_t N, int64_t K,
                  int64_t lda, int64_t ldb, int64_t ldc, bool trans_a, bool trans_b, int act, cudaStream_t stream) {
  if (M == 0 || N == 0) return cudaSuccess;
  if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) return cudaErrorInvalidValue;
  const dim3 grid((unsigned)((N + BN - 1) / BN), (unsigned)((M + BM - 1) / BM));
  const int m = (int)M, n = (int)N, k = (int)K, a = (int)lda, b = (int)ldb, c = (int)ldc;
  if (!trans_a && !trans_b) sgemm_kernel<false, false><<<grid, kGemmThreads, 0, stream>>>(C, A, B, bias, m, n, k, a, b, c, act);
  if (!trans_a && trans_b) sgemm_kernel<false, true><<<grid, kGemmThreads, 0, stream>>>(C, A, B, bias, m, n, k, a, b, c, act);
  if (trans_a && !trans_b) sgemm_kernel<true, false><<<grid, kGemmThreads, 0, stream>>>(C, A, B, bias, m, n, k, a, b, c, act);
  if (trans_a && trans_b) sgemm_kernel<true, true><<<grid, kGemmThreads, 0, stream>>>(C, A, B, bias, m, n, k, a, b, c, act);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace lamina
