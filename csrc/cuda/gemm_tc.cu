// fp16/bf16 GEMM on tensor cores with fp32 accumulation, the same contract
// as gemm.cu (transposes, bias, activation, aux):
//   C[M, N] = act(op(A)[M, K] · op(B)[K, N] + bias[N]),  C in T or fp32.
//
// v1: mma.sync m16n8k16 (sm_80 and later, Hopper included).  A block of
// 8 warps computes a 128 x 128 tile, each warp 64 x 32 (4 x 4 mma tiles,
// 64 fp32 accumulators per thread).  K advances 32 at a time through a
// 3-stage shared-memory ring filled by cp.async (16-byte copies, zero-filled
// past the edges), so two slices are in flight while one is multiplied.
// Operands keep their own layout in shared memory and ldmatrix turns them
// into mma fragments: plain for a k-contiguous tile (A (M, K), B stored
// (N, K) as Dense's weight), .trans for a k-strided one (A (K, M), B (K, N)).
// Rows are padded by 16 bytes so the 8 addresses of each ldmatrix phase fall
// in distinct bank groups.  When a leading dimension is not a multiple of 8
// elements (or a base address is not 16-byte aligned) the same kernel loads
// with masked scalar reads instead of cp.async.
//
// On compute capability 9.0 the wgmma kernel of gemm_wgmma.cu (v2) takes over
// when the operands allow TMA; set_tensor_core_gemm chooses by hand.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "common.cuh"
#include "launchers.h"
#include "simt_gemm.cuh"
#include "tc_epilogue.cuh"
#include "tc_primitives.cuh"
#include "tc_tile.cuh"

namespace lamina {
namespace cuda {

namespace {

using simt::from_float;
using simt::to_float;

using tc_tile::BK;
using tc_tile::BM;
using tc_tile::BN;
using tc_tile::KSTRIDE;
using tc_tile::RSTRIDE;
using tc_tile::SMEM_BYTES;
using tc_tile::THREADS;
using tc_tile::TILE;

// The epilogue for one element: bias, activation, store (and the
// pre-activation to aux).  Not inlined: 64 inlined copies of the GELU code
// per kernel cost minutes of compile time and nothing at run time worth
// having (the epilogue is a sliver of a GEMM's time).
template <typename T>
__device__ __noinline__ void store_out(void* C, void* aux, const T* bias, int m, int n, int64_t ldc, int act,
                                       bool out_f32, float v) {
  tc_store<T>(C, aux, bias, m, n, ldc, act, out_f32, v);
}

// One operand's BK-slice of a 128-row tile into shared memory.  The operand
// has `rows` rows (m for A, n for B) and K columns; element (r, k) is at
// g[r * ld + k] when KMAJOR (k-contiguous), g[k * ld + r] otherwise.  Shared
// layout: [r][k] (stride KSTRIDE) when KMAJOR, [k][r] (stride RSTRIDE)
// otherwise.  512 chunks of 8 elements, 2 per thread.
template <typename T, bool KMAJOR>
__device__ __forceinline__ void load_tile(T* s, const T* __restrict__ g, int64_t ld, int rows, int K, int r0, int k0,
                                          bool async) {
#pragma unroll
  for (int it = 0; it < 2; ++it) {
    const int c = threadIdx.x + it * THREADS;
    int r, k, sidx, count;  // count: valid elements of the chunk along its contiguous dimension
    int64_t gidx;
    if (KMAJOR) {
      r = r0 + c / (BK / 8);
      k = k0 + (c % (BK / 8)) * 8;
      sidx = (c / (BK / 8)) * KSTRIDE + (c % (BK / 8)) * 8;
      gidx = (int64_t)r * ld + k;
      count = r < rows ? min(max(K - k, 0), 8) : 0;
    } else {
      k = k0 + c / (BM / 8);
      r = r0 + (c % (BM / 8)) * 8;
      sidx = (c / (BM / 8)) * RSTRIDE + (c % (BM / 8)) * 8;
      gidx = (int64_t)k * ld + r;
      count = k < K ? min(max(rows - r, 0), 8) : 0;
    }
    if (async) {
      cp_async16(smem_addr(s + sidx), count > 0 ? g + gidx : g, count * (int)sizeof(T));
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) s[sidx + i] = i < count ? g[gidx + i] : from_float<T>(0.f);
    }
  }
}

// C and aux hold T, or float when out_f32.  async: both operands allow
// 16-byte cp.async (leading dimension a multiple of 8, aligned base).
template <typename T, bool A_KMAJOR, bool B_KMAJOR>
__global__ void __launch_bounds__(THREADS)
    gemm_tc_kernel(void* __restrict__ C, void* __restrict__ aux, const T* __restrict__ A, const T* __restrict__ B,
                   const T* __restrict__ bias, int M, int N, int K, int64_t lda, int64_t ldb, int64_t ldc, int act,
                   bool out_f32, bool async) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;

  float acc[4][4][4] = {};
  tc_tile::ring<T, A_KMAJOR, B_KMAJOR>(smem, (K + BK - 1) / BK, [&](T* st, int kt) {
    load_tile<T, A_KMAJOR>(st, A, lda, M, K, m0, kt * BK, async);
    load_tile<T, B_KMAJOR>(st + TILE, B, ldb, N, K, n0, kt * BK, async);
  }, acc);

  tc_tile::for_each_pair(acc, m0, n0, [&](int m, int n, float v0, float v1) {
    if (m >= M) return;
    if (n < N) store_out<T>(C, aux, bias, m, n, ldc, act, out_f32, v0);
    if (n + 1 < N) store_out<T>(C, aux, bias, m, n + 1, ldc, act, out_f32, v1);
  });
}

template <typename T, bool AK, bool BKM>
cudaError_t launch(dim3 grid, cudaStream_t stream, void* C, void* aux, const T* A, const T* B, const T* bias, int M,
                   int N, int K, int64_t lda, int64_t ldb, int64_t ldc, int act, bool out_f32, bool async) {
  auto kernel = gemm_tc_kernel<T, AK, BKM>;
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_BYTES)) return e;
  kernel<<<grid, THREADS, SMEM_BYTES, stream>>>(C, aux, A, B, bias, M, N, K, lda, ldb, ldc, act, out_f32, async);
  return cudaGetLastError();
}

std::atomic<int> variant{0};  // set_tensor_core_gemm

template <typename T>
cudaError_t gemm_tc(void* C, void* aux, bool out_f32, const T* A, const T* B, const T* bias, int64_t M, int64_t N,
                    int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool trans_a, bool trans_b, int act,
                    cudaStream_t stream) {
  if (M == 0 || N == 0) return cudaSuccess;
  if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) return cudaErrorInvalidValue;
  const int64_t grid_y = (M + BM - 1) / BM;
  if (grid_y > 65535) return cudaErrorInvalidValue;
  const dim3 grid((unsigned)((N + BN - 1) / BN), (unsigned)grid_y);
  const int v = variant.load();
  if (v == 2 || (v == 0 && K > 0 && wgmma_operands_ok(A, lda) && wgmma_operands_ok(B, ldb) && device_runs_wgmma())) {
    if (v == 2 && !device_runs_wgmma()) return cudaErrorNotSupported;
    return gemm_wgmma<T>(C, aux, out_f32, A, B, bias, M, N, K, lda, ldb, ldc, trans_a, trans_b, act, stream);
  }
  const bool async = wgmma_operands_ok(A, lda) && wgmma_operands_ok(B, ldb);  // the same 16-byte condition
  const int m = (int)M, n = (int)N, k = (int)K;
  // A is k-contiguous unless transposed; B is k-contiguous only when transposed.
  if (!trans_a && trans_b) return launch<T, true, true>(grid, stream, C, aux, A, B, bias, m, n, k, lda, ldb, ldc, act, out_f32, async);
  if (!trans_a && !trans_b) return launch<T, true, false>(grid, stream, C, aux, A, B, bias, m, n, k, lda, ldb, ldc, act, out_f32, async);
  if (trans_a && trans_b) return launch<T, false, true>(grid, stream, C, aux, A, B, bias, m, n, k, lda, ldb, ldc, act, out_f32, async);
  return launch<T, false, false>(grid, stream, C, aux, A, B, bias, m, n, k, lda, ldb, ldc, act, out_f32, async);
}

}  // namespace

// Compute capability 9.0 (sm_90a code runs on nothing else), per device.
bool device_runs_wgmma() {
  static std::atomic<int> known[64];  // 0 not asked yet, 1 yes, 2 no
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (dev < 0 || dev >= 64) return false;
  int k = known[dev].load();
  if (k == 0) {
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    k = major == 9 && minor == 0 ? 1 : 2;
    known[dev].store(k);
  }
  return k == 1;
}

void set_tensor_core_gemm(int v) { variant.store(v); }
int tensor_core_gemm() { return variant.load(); }

#define LAMINA_GEMM_TC(T, OutT)                                                                                       \
  template <>                                                                                                         \
  cudaError_t gemm<T, OutT>(OutT * C, OutT * aux, const T* A, const T* B, const T* bias, int64_t M, int64_t N,        \
                            int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool trans_a, bool trans_b, int act,    \
                            cudaStream_t stream) {                                                                    \
    return gemm_tc<T>(C, aux, sizeof(OutT) == 4, A, B, bias, M, N, K, lda, ldb, ldc, trans_a, trans_b, act, stream); \
  }

LAMINA_GEMM_TC(__half, __half)
LAMINA_GEMM_TC(__half, float)
LAMINA_GEMM_TC(__nv_bfloat16, __nv_bfloat16)
LAMINA_GEMM_TC(__nv_bfloat16, float)
#undef LAMINA_GEMM_TC

}  // namespace cuda
}  // namespace lamina
