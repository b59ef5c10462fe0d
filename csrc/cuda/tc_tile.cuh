// One k-slice of a 128 x 128 block tile on mma.sync m16n8k16, shared by the
// tensor-core GEMM (gemm_tc.cu) and the tensor-core convolutions (conv.cu).
// 8 warps, each a 64 x 32 corner: 4 x 4 mma tiles, 64 fp32 accumulators per
// thread.  Operands sit in shared memory padded by 16 bytes a row, either
// k-contiguous ([row][k], stride KSTRIDE: ldmatrix) or row-contiguous
// ([k][row], stride RSTRIDE: ldmatrix.trans).  ring() is the k-loop that
// feeds them: three stages of both tiles, filled by cp.async.
//
// Include tc_primitives.cuh before this header: the tests' kernel emulator
// substitutes its own copy of it, which an include from here would bypass.
#pragma once
#include <cstdint>

namespace lamina {
namespace cuda {
namespace tc_tile {

constexpr int BM = 128, BN = 128, BK = 32, PAD = 8;  // PAD: 8 halves, 16 bytes
constexpr int KSTRIDE = BK + PAD;                      // row stride of a [row][k] tile
constexpr int RSTRIDE = BM + PAD;                      // row stride of a [k][row] tile; BM == BN
constexpr int TILE = BM * KSTRIDE;                     // elements per operand per stage (>= BK * RSTRIDE)
static_assert(BK * RSTRIDE <= TILE, "stage too small for a [k][row] tile");
constexpr int STAGES = 3, THREADS = 256;
constexpr int SMEM_BYTES = STAGES * 2 * TILE * 2;  // 16-bit elements: 60 KiB, over the 48 KiB default (ask per kernel)

// acc += As[tile rows, slice] · Bs[slice, tile columns]; A_KM / B_KM: the
// operand is kept [row][k] (else [k][row]).
template <typename T, bool A_KM, bool B_KM>
__device__ __forceinline__ void mma_slice(const T* As, const T* Bs, float (&acc)[4][4][4]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;  // the warp's 64 x 32 corner of the tile
#pragma unroll
  for (int ks = 0; ks < BK; ks += 16) {
    uint32_t a[4][4], b[4][2];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
      const int row = wm + mi * 16;
      if (A_KM) {  // [m][k]: lanes 0-15 rows at k, lanes 16-31 rows at k + 8
        ldmatrix_x4<false>(a[mi], smem_addr(As + (row + lane % 16) * KSTRIDE + ks + (lane / 16) * 8));
      } else {  // [k][m]: matrices (k0-7, m0-7), (k0-7, m8-15), (k8-15, m0-7), (k8-15, m8-15), transposed
        ldmatrix_x4<true>(a[mi], smem_addr(As + (ks + (lane / 16) * 8 + lane % 8) * RSTRIDE + row + ((lane / 8) % 2) * 8));
      }
    }
#pragma unroll
    for (int nj = 0; nj < 2; ++nj) {
      const int col = wn + nj * 16;
      uint32_t r[4];
      if (B_KM) {  // [n][k]: matrices (n0-7, k0-7), (n0-7, k8-15), (n8-15, k0-7), (n8-15, k8-15)
        ldmatrix_x4<false>(r, smem_addr(Bs + (col + (lane / 16) * 8 + lane % 8) * KSTRIDE + ks + ((lane / 8) % 2) * 8));
      } else {  // [k][n]: matrices (k0-7, n0-7), (k8-15, n0-7), (k0-7, n8-15), (k8-15, n8-15), transposed
        ldmatrix_x4<true>(r, smem_addr(Bs + (ks + ((lane / 8) % 2) * 8 + lane % 8) * RSTRIDE + col + (lane / 16) * 8));
      }
      b[2 * nj][0] = r[0];
      b[2 * nj][1] = r[1];
      b[2 * nj + 1][0] = r[2];
      b[2 * nj + 1][1] = r[3];
    }
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) MmaOp<T>::run(acc[mi][ni], a[mi], b[ni]);
  }
}

// acc += the block's tile over `slices` k-slices, through a ring of STAGES
// stages (stage s: A at smem + s * 2 * TILE, B right after).  load(stage,
// slice) issues this thread's cp.async copies of one slice into a stage;
// it is called for slices 0, 1, 2, ... in order, so a loader may keep its
// own position and step it.  Two slices are in flight while one is
// multiplied.  Shared by the dense GEMM (gemm_tc.cu) and the channels-last
// convolutions (conv.cu).
template <typename T, bool A_KM, bool B_KM, class Load>
__device__ __forceinline__ void ring(T* smem, int slices, Load&& load, float (&acc)[4][4][4]) {
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (st < slices) load(smem + st * 2 * TILE, st);
    cp_async_commit();
  }
  for (int kt = 0; kt < slices; ++kt) {
    cp_async_wait<STAGES - 2>();  // slice kt has landed (this thread's copies) ...
    __syncthreads();              // ... and everyone's; slice kt-1's stage is free
    const int pf = kt + STAGES - 1;
    if (pf < slices) load(smem + (pf % STAGES) * 2 * TILE, pf);
    cp_async_commit();
    const T* As = smem + (kt % STAGES) * 2 * TILE;
    mma_slice<T, A_KM, B_KM>(As, As + TILE, acc);
  }
  cp_async_wait<0>();
}

// f(m, n, v0, v1) for the accumulators of columns n and n + 1 of row m of
// the tile at (m0, n0) (fragment layout: row lane / 4 (+8), columns
// 2 (lane % 4) + {0, 1}).
template <class F>
__device__ __forceinline__ void for_each_pair(const float (&acc)[4][4][4], int m0, int n0, F f) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
#pragma unroll
  for (int mi = 0; mi < 4; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        f(m0 + wm + mi * 16 + lane / 4 + 8 * h, n0 + wn + ni * 8 + 2 * (lane % 4), acc[mi][ni][2 * h],
          acc[mi][ni][2 * h + 1]);
}

}  // namespace tc_tile
}  // namespace cuda
}  // namespace lamina
