// The channels-last fp16/bf16 forward convolution on Hopper's wgmma
// (sm_90a only; conv.cu calls it on devices of compute capability 9.0).
//
// The mma.sync kernel (conv.cu, conv_forward_cl_kernel) is capped by
// mma.sync itself: the dense mma.sync GEMM reached 244-275 TFLOP/s on an
// H100, the wgmma GEMM 0.6+ of cuBLAS.  This kernel is that GEMM's
// multiply on the channels-last operands:
//   A = w_cl[o][(kh, kw, c)]   B = x_cl[pixel's tap][c]   y (N, O, OH, OW)
// both k-contiguous, so both go to shared memory as [row][64 k] boxes with
// the 128-byte swizzle (16-byte chunk j of row r at chunk j ^ (r % 8)),
// the layout TMA writes for the GEMM and wgmma reads with a K-major
// descriptor.  TMA cannot gather B (each pixel's tap is its own address,
// zeros in the padding), so every thread copies chunks by cp.async instead,
// through a ring of STAGES stages, DEPTH slices ahead:
//   * a thread copies chunk tid % 8 of rows tid / 8 + 32 i (i < 4) of both
//     tiles: its four rows share one k chunk, so one TapWalk serves them;
//   * slice kt's 4 wgmma (k16 each) per warpgroup are left in flight while
//     the next slice's are issued; the stage refilled at step kt held slice
//     kt - 2, whose wgmmas every thread has waited for before the barrier.
// Two warpgroups, each 64 output channels x 128 pixels (64 fp32 accumulators
// a thread); 4 stages of 32 KiB: one block per SM.  Split-K as the mma.sync
// kernel's, in whole slices of 64.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "conv_walks.cuh"
#include "launchers.h"
#include "tc_primitives.cuh"
#include "wgmma_primitives.cuh"

namespace lamina {
namespace cuda {

namespace {

constexpr int BM = 128, BN = 128, BK = 64, THREADS = 256;
constexpr int STAGES = 4, DEPTH = STAGES - 2;  // slices in flight ahead of the one multiplied
constexpr int TILE_BYTES = 128 * BK * 2;       // one operand's [128 rows][64 k] box
constexpr int STAGE_BYTES = 2 * TILE_BYTES;
constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + 1024;  // + 1024 to align the ring for the swizzle

template <typename T, typename OutT>
__global__ void __launch_bounds__(THREADS, 1)
    conv_forward_wgmma_kernel(OutT* __restrict__ y, const T* __restrict__ xl, const T* __restrict__ wl,
                              const T* __restrict__ bias, ConvShape s, int chunk) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* ring = smem_raw + ((1024 - (shared_addr(smem_raw) & 1023)) & 1023);
  const int g = blockIdx.z % s.groups, split = blockIdx.z / s.groups;
  const int cg = s.c / s.groups, og = s.o / s.groups, K = cg * s.kh * s.kw;
  const int kbegin = split * chunk, kend = min(K, kbegin + chunk);
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int p = s.oh * s.ow, npix = s.n * p;
  const int j = threadIdx.x & 7, row = threadIdx.x >> 3;
  // the swizzled offset of (row, chunk j); rows 32 apart keep row % 8, so + 4096 per i
  const int off = row * 128 + ((j ^ (row & 7)) << 4);
  const ForwardRows<T, 4> rows(xl, wl, s, g, m0, n0, row, 32);
  TapWalk t;  // the thread's chunk of the slice being loaded
  t.start(kbegin + 8 * j, cg, s.kw);
  auto load = [&](unsigned char* stage) {
    const bool kin = t.k < kend;
    const int dh = t.a * s.dh, dw = t.b * s.dw;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const bool a_ok = kin && rows.wok[i];
      cp_async16(shared_addr(stage + off + 4096 * i), a_ok ? rows.wrow[i] + t.k : wl, a_ok ? 16 : 0);
      const int ih = rows.ih0[i] + dh, iw = rows.iw0[i] + dw;
      const bool b_ok = kin && (unsigned)ih < (unsigned)s.h && (unsigned)iw < (unsigned)s.w;
      cp_async16(shared_addr(stage + TILE_BYTES + off + 4096 * i),
                 b_ok ? rows.img[i] + (ih * s.w + iw) * s.c + t.c : xl, b_ok ? 16 : 0);
    }
    t.advance(BK, cg, s.kw);
  };

  const int slices = max(0, (kend - kbegin + BK - 1) / BK);
#pragma unroll
  for (int st = 0; st < DEPTH; ++st) {
    if (st < slices) load(ring + st * STAGE_BYTES);
    cp_async_commit();
  }
  const int wg = threadIdx.x / 128;
  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.f;
  for (int kt = 0; kt < slices; ++kt) {
    cp_async_wait<DEPTH - 1>();  // slice kt has landed (this thread's copies) ...
    fence_proxy_async();         // ... where wgmma (the async proxy) will see them ...
    __syncthreads();             // ... and everyone's; every warpgroup is done with slice kt - 2
    if (kt + DEPTH < slices) load(ring + ((kt + DEPTH) % STAGES) * STAGE_BYTES);
    cp_async_commit();
    const uint32_t a0 = shared_addr(ring + (kt % STAGES) * STAGE_BYTES) + wg * (TILE_BYTES / 2);
    const uint32_t b0 = shared_addr(ring + (kt % STAGES) * STAGE_BYTES + TILE_BYTES);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk)  // K-major: 16 k are 32 bytes along the swizzled rows
      Wgmma<T, 128>::template run<0, 0>(acc, wgmma_desc(a0 + kk * 32, 16, 1024), wgmma_desc(b0 + kk * 32, 16, 1024));
    wgmma_commit();
    wgmma_wait<1>();  // slice kt - 1's wgmmas are done; slice kt's stay in flight
    fence_registers(acc);
  }
  wgmma_wait<0>();
  fence_registers(acc);
  cp_async_wait<0>();

  // Thread (warp w of warpgroup wg, lane l) holds output channels wg*64 + 16w + l/4 (+ 8) at pixels
  // 8i + 2(l % 4) (+ 1): acc[4i], acc[4i + 1] and, 8 channels on, acc[4i + 2], acc[4i + 3].
  const ConvForwardEpilogue<OutT, T> epi{y + (int64_t)split * npix * s.o + (int64_t)g * og * p,
                                         bias == nullptr ? nullptr : bias + g * og, s.o, p, false};
  const int w = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < BN / 8; ++i) {
    const int n = n0 + 8 * i + 2 * (lane % 4);
    if (n >= npix) continue;
    const auto cols = epi.columns(n, min(npix, n + 2));
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int m = m0 + wg * 64 + 16 * w + lane / 4 + 8 * h;
      const float v[4] = {acc[4 * i + 2 * h], acc[4 * i + 2 * h + 1], 0.f, 0.f};
      if (m < og) epi.store(m, cols, v);
    }
  }
}

template <typename T, typename OutT>
cudaError_t launch(dim3 grid, cudaStream_t stream, OutT* y, const T* xl, const T* wl, const T* bias,
                   const ConvShape& s, int chunk) {
  auto kernel = conv_forward_wgmma_kernel<T, OutT>;
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_BYTES)) return e;
  kernel<<<grid, THREADS, SMEM_BYTES, stream>>>(y, xl, wl, bias, s, chunk);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t conv_forward_wgmma(void* y, bool out_f32, const T* xl, const T* wl, const T* bias, const ConvShape& s,
                               int splits, cudaStream_t stream) {
  const int64_t og = s.o / s.groups, pix = (int64_t)s.n * s.oh * s.ow;
  const int64_t K = (int64_t)(s.c / s.groups) * s.kh * s.kw;
  if (og == 0 || pix == 0) return cudaSuccess;
  if ((s.c / s.groups) % 8 != 0 || splits < 1 || (splits > 1 && !out_f32) || (og + BM - 1) / BM > 65535 ||
      (int64_t)s.groups * splits > 65535 || pix > INT32_MAX || K * s.o > INT32_MAX)
    return cudaErrorInvalidValue;
  const int slices = (int)((K + BK - 1) / BK), per = (slices + splits - 1) / splits;
  const dim3 grid((unsigned)((pix + BN - 1) / BN), (unsigned)((og + BM - 1) / BM), (unsigned)(s.groups * splits));
  if (out_f32) return launch<T, float>(grid, stream, static_cast<float*>(y), xl, wl, nullptr, s, per * BK);
  return launch<T, T>(grid, stream, static_cast<T*>(y), xl, wl, bias, s, per * BK);
}

template cudaError_t conv_forward_wgmma<__half>(void*, bool, const __half*, const __half*, const __half*,
                                                const ConvShape&, int, cudaStream_t);
template cudaError_t conv_forward_wgmma<__nv_bfloat16>(void*, bool, const __nv_bfloat16*, const __nv_bfloat16*,
                                                       const __nv_bfloat16*, const ConvShape&, int, cudaStream_t);

}  // namespace cuda
}  // namespace lamina
