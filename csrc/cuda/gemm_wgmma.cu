// fp16/bf16 GEMM on Hopper tensor cores (sm_90a): wgmma fed by TMA, with
// the contract of gemm_tc.cu (transposes, bias, activation, aux, output in
// T or fp32).  Compiled for sm_90a only; gemm_tc.cu calls it on devices of
// compute capability 9.0 when the operands allow TMA (16-byte aligned,
// leading dimensions a multiple of 8 elements).
//
// v2 (csrc/NOTES.md): one 128 x BN tile per block (BN = 256, or 128 when
// that leaves too few blocks for the SMs), BK = 64, warp-specialised:
//   * warpgroup 2, the producer, gives most of its registers away and one of
//     its threads streams the k-slices of A and B into a ring of STAGES
//     shared-memory stages with TMA (boxes of 64 x rows, 128-byte swizzle,
//     zeros past the edges); a `full` mbarrier per stage counts the bytes in;
//   * warpgroups 0 and 1, the consumers, each own 64 rows of the tile: per
//     stage they wait on `full`, issue 4 wgmma m64nBNk16 reading both
//     operands straight from shared memory, then wait for the previous
//     stage's wgmmas only (one group stays in flight) and arrive on that
//     stage's `empty` mbarrier, on which the producer waits before refilling.
// Operands keep their global layout: a k-contiguous operand is loaded as
// [row][64 k] boxes (K-major descriptor), a row-contiguous one as [k][64 rows]
// boxes (MN-major descriptor, wgmma's transpose bit), so every transpose
// runs without a copy.  The epilogue stages the fp32 tile through shared
// memory (the ring is free by then) so that bias, activation and the stores
// are one coalesced loop with a single copy of the activation code.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "launchers.h"
#include "simt_gemm.cuh"
#include "tc_epilogue.cuh"
#include "wgmma_primitives.cuh"

namespace lamina {
namespace cuda {

namespace {

constexpr int BM = 128, BK = 64;
constexpr int CONSUMERS = 2, THREADS = 128 * (CONSUMERS + 1);
constexpr int ATOM = 64 * 128;  // bytes of a 64-row x 128-byte swizzled box

template <int BN>
struct Tile {
  static constexpr int STAGES = BN == 256 ? 4 : 6;
  static constexpr int A_BYTES = BM * BK * 2;
  static constexpr int B_BYTES = BN * BK * 2;
  static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
  static constexpr int OUT_STRIDE = BN + 4;  // floats per row of the staged output tile
  static constexpr int RING_BYTES = STAGES * STAGE_BYTES;
  static_assert(BM * OUT_STRIDE * 4 <= RING_BYTES, "the output tile must fit in the ring");
  // + 1024 to align the ring, + the mbarriers
  static constexpr int SMEM_BYTES = RING_BYTES + 1024 + 2 * STAGES * 8;
};

template <typename T, int BN, bool A_KMAJOR, bool B_KMAJOR>
__global__ void __launch_bounds__(THREADS, 1)
    gemm_wgmma_kernel(const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_b,
                      void* __restrict__ C, void* __restrict__ aux, const T* __restrict__ bias, int M, int N, int K,
                      int64_t ldc, int act, bool out_f32) {
  using Cfg = Tile<BN>;
  constexpr int STAGES = Cfg::STAGES;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  // The 128-byte swizzle repeats every 1024 bytes: the ring starts on such a boundary.
  unsigned char* ring = smem_raw + ((1024 - (shared_addr(smem_raw) & 1023)) & 1023);
  uint64_t* full = reinterpret_cast<uint64_t*>(ring + Cfg::RING_BYTES);
  uint64_t* empty = full + STAGES;

  const int wg = threadIdx.x / 128, lane = threadIdx.x % 32;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int ktiles = (K + BK - 1) / BK;

  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(&full[s], 1);                  // the producer's arrive; TMA adds the bytes
      mbar_init(&empty[s], CONSUMERS * 4);     // one arrive per consumer warp
    }
    mbar_fence_init();
  }
  __syncthreads();

  if (wg == CONSUMERS) {  // producer
    regs_release<24>();
    if (threadIdx.x % 128 == 0) {
      for (int kt = 0; kt < ktiles; ++kt) {
        const int s = kt % STAGES;
        mbar_wait(&empty[s], ((kt / STAGES) & 1) ^ 1);  // the consumers are done with the stage's last use
        mbar_arrive_expect_tx(&full[s], Cfg::STAGE_BYTES);
        unsigned char* as = ring + s * Cfg::STAGE_BYTES;
        unsigned char* bs = as + Cfg::A_BYTES;
        const int k0 = kt * BK;
        if (A_KMAJOR) {
          tma_load_2d(as, &tma_a, &full[s], k0, m0);
        } else {
#pragma unroll
          for (int j = 0; j < BM / 64; ++j) tma_load_2d(as + j * ATOM, &tma_a, &full[s], m0 + 64 * j, k0);
        }
        if (B_KMAJOR) {
          tma_load_2d(bs, &tma_b, &full[s], k0, n0);
        } else {
#pragma unroll
          for (int j = 0; j < BN / 64; ++j) tma_load_2d(bs + j * ATOM, &tma_b, &full[s], n0 + 64 * j, k0);
        }
      }
    }
    return;
  }

  regs_claim<232>();
  float acc[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;

  // Descriptors: a K-major box advances 16 k by 32 bytes inside its swizzled
  // rows; an MN-major one by 16 of its 128-byte k-rows.  Rows 64 wg.. of A
  // are the wg-th 64-row box in both layouts.
  constexpr uint32_t A_STEP = A_KMAJOR ? 32 : 16 * 128, B_STEP = B_KMAJOR ? 32 : 16 * 128;
  // The leading byte offset steps an MN-major operand from one 64-row box to
  // the next; a swizzled K-major one never leaves its 128-byte rows, and takes
  // 16 there (the value CUTLASS writes).
  constexpr uint32_t A_LBO = A_KMAJOR ? 16 : ATOM, B_LBO = B_KMAJOR ? 16 : ATOM;
  for (int kt = 0; kt < ktiles; ++kt) {
    const int s = kt % STAGES;
    mbar_wait(&full[s], (kt / STAGES) & 1);
    const uint32_t a0 = shared_addr(ring + s * Cfg::STAGE_BYTES) + wg * ATOM;
    const uint32_t b0 = shared_addr(ring + s * Cfg::STAGE_BYTES + Cfg::A_BYTES);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      Wgmma<T, BN>::template run<A_KMAJOR ? 0 : 1, B_KMAJOR ? 0 : 1>(
          acc, wgmma_desc(a0 + kk * A_STEP, A_LBO, 1024), wgmma_desc(b0 + kk * B_STEP, B_LBO, 1024));
    }
    wgmma_commit();
    // This stage's wgmmas stay in flight while the next stage's are issued:
    // wait only for the previous stage's, then hand that stage back.
    wgmma_wait<1>();
    fence_registers(acc);
    if (kt > 0 && lane == 0) mbar_arrive(&empty[(kt - 1) % STAGES]);
  }
  wgmma_wait<0>();  // the last stage is never refilled: no release needed
  fence_registers(acc);

  // Epilogue.  Once both consumers are past their last wgmma the ring is
  // free: stage the tile there as fp32, then bias, activation and stores in
  // row order.
  consumers_sync(CONSUMERS * 128);
  float* out = reinterpret_cast<float*>(ring);
  {
    const int w = (threadIdx.x / 32) % 4, r = wg * 64 + 16 * w + lane / 4, c = 2 * (lane % 4);
#pragma unroll
    for (int i = 0; i < BN / 8; ++i) {
      out[r * Cfg::OUT_STRIDE + 8 * i + c] = acc[4 * i];
      out[r * Cfg::OUT_STRIDE + 8 * i + c + 1] = acc[4 * i + 1];
      out[(r + 8) * Cfg::OUT_STRIDE + 8 * i + c] = acc[4 * i + 2];
      out[(r + 8) * Cfg::OUT_STRIDE + 8 * i + c + 1] = acc[4 * i + 3];
    }
  }
  consumers_sync(CONSUMERS * 128);
#pragma unroll 1
  for (int idx = threadIdx.x; idx < BM * BN; idx += CONSUMERS * 128) {
    const int r = idx / BN, c = idx % BN, m = m0 + r, n = n0 + c;
    if (m >= M || n >= N) continue;
    tc_store<T>(C, aux, bias, m, n, ldc, act, out_f32, out[r * Cfg::OUT_STRIDE + c]);
  }
}

template <typename T, int BN, bool AK, bool BKM>
cudaError_t launch(const CUtensorMap& ta, const CUtensorMap& tb, dim3 grid, cudaStream_t stream, void* C, void* aux,
                   const T* bias, int M, int N, int K, int64_t ldc, int act, bool out_f32) {
  auto kernel = gemm_wgmma_kernel<T, BN, AK, BKM>;
  constexpr int smem = Tile<BN>::SMEM_BYTES;
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem)) return e;
  kernel<<<grid, THREADS, smem, stream>>>(ta, tb, C, aux, bias, M, N, K, ldc, act, out_f32);
  return cudaGetLastError();
}

template <typename T, int BN>
cudaError_t run(void* C, void* aux, bool out_f32, const T* A, const T* B, const T* bias, int M, int N, int K,
                int64_t lda, int64_t ldb, int64_t ldc, bool trans_a, bool trans_b, int act, cudaStream_t stream) {
  constexpr bool bf16 = sizeof(T) == 2 && !std::is_same<T, __half>::value;
  // A is k-contiguous unless transposed; B only when transposed.
  const bool ak = !trans_a, bk = trans_b;
  CUtensorMap ta, tb;
  cudaError_t e = ak ? make_tensor_map_2d(&ta, A, bf16, K, M, lda, BK, BM) : make_tensor_map_2d(&ta, A, bf16, M, K, lda, 64, BK);
  if (e == cudaSuccess)
    e = bk ? make_tensor_map_2d(&tb, B, bf16, K, N, ldb, BK, BN) : make_tensor_map_2d(&tb, B, bf16, N, K, ldb, 64, BK);
  if (e != cudaSuccess) return e;
  const dim3 grid((unsigned)((N + BN - 1) / BN), (unsigned)((M + BM - 1) / BM));
  if (ak && bk) return launch<T, BN, true, true>(ta, tb, grid, stream, C, aux, bias, M, N, K, ldc, act, out_f32);
  if (ak) return launch<T, BN, true, false>(ta, tb, grid, stream, C, aux, bias, M, N, K, ldc, act, out_f32);
  if (bk) return launch<T, BN, false, true>(ta, tb, grid, stream, C, aux, bias, M, N, K, ldc, act, out_f32);
  return launch<T, BN, false, false>(ta, tb, grid, stream, C, aux, bias, M, N, K, ldc, act, out_f32);
}

}  // namespace

template <typename T>
cudaError_t gemm_wgmma(void* C, void* aux, bool out_f32, const T* A, const T* B, const T* bias, int64_t M, int64_t N,
                       int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool trans_a, bool trans_b, int act,
                       cudaStream_t stream) {
  if (M == 0 || N == 0) return cudaSuccess;
  if (!wgmma_operands_ok(A, lda) || !wgmma_operands_ok(B, ldb) || K == 0) return cudaErrorNotSupported;
  if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || (M + BM - 1) / BM > 65535) return cudaErrorInvalidValue;
  // 256-wide tiles when they still give every SM a block, else 128-wide.
  int sms = 132;
  int dev = 0;
  if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  const int64_t tiles256 = ((M + BM - 1) / BM) * ((N + 255) / 256);
  const int m = (int)M, n = (int)N, k = (int)K;
  if (tiles256 >= sms) return run<T, 256>(C, aux, out_f32, A, B, bias, m, n, k, lda, ldb, ldc, trans_a, trans_b, act, stream);
  return run<T, 128>(C, aux, out_f32, A, B, bias, m, n, k, lda, ldb, ldc, trans_a, trans_b, act, stream);
}

template cudaError_t gemm_wgmma<__half>(void*, void*, bool, const __half*, const __half*, const __half*, int64_t,
                                        int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, int, cudaStream_t);
template cudaError_t gemm_wgmma<__nv_bfloat16>(void*, void*, bool, const __nv_bfloat16*, const __nv_bfloat16*,
                                               const __nv_bfloat16*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                               int64_t, bool, bool, int, cudaStream_t);

}  // namespace cuda
}  // namespace lamina
