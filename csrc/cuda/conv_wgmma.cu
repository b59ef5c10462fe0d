// The channels-last fp16/bf16 convolutions on Hopper's wgmma (sm_90a only;
// conv.cu calls them on devices of compute capability 9.0).
//
// The mma.sync kernels (conv.cu, conv_*_cl_kernel) are capped by mma.sync
// itself: the dense mma.sync GEMM reached 244-275 TFLOP/s on an H100, the
// wgmma GEMM 0.6+ of cuBLAS.  These kernels are that GEMM's multiply on the
// channels-last operands of conv.cu:
//   forward          A = w_cl[o][(kh, kw, c)]   B = x_cl[pixel's tap][c]     y  (N, O, OH, OW)
//   backward-data    A = w_cl[c][(tap, o)]      B = dy_cl[tap's output][o]   dx (N, C, H, W), per phase
//   backward-weight  A = dy_cl[q][o]            B = x_cl[q's tap][c]         dW (O, C/G, KH, KW)
// Forward and backward-data have both operands k-contiguous: they go to
// shared memory as [128 rows][64 k] boxes with the 128-byte swizzle (16-byte
// chunk j of row r at chunk j ^ (r % 8)), the layout TMA writes for the GEMM
// and wgmma reads with a K-major descriptor.  Backward-weight reduces over
// pixels q, along which neither operand is contiguous: both go as two
// [64 k][64 rows] boxes per tile, rows contiguous, with the same swizzle on
// the k-rows, read with MN-major descriptors (the GEMM's transposed
// operands).  TMA cannot gather (each pixel's tap is its own address, zeros
// in the padding), so every thread copies 16-byte chunks by cp.async
// instead, through a ring of STAGES stages, DEPTH slices ahead (ring below):
// slice kt's 4 wgmma (k16 each) per warpgroup are left in flight while the
// next slice's are issued; the stage refilled at step kt held slice kt - 2,
// whose wgmmas every thread has waited for before the barrier.  Two
// warpgroups, each 64 rows x 128 columns (64 fp32 accumulators a thread);
// 4 stages of 32 KiB: one block per SM.  Split-K as the mma.sync kernels',
// in whole slices of 64.
//
// Narrow layers.  wgmma's M is 64 rows a warpgroup, so a layer with 16
// channels (ResNet-20's first stage) would fill 1/8 of those 128-row tiles
// with output channels.  Where the channels per group that make the rows
// (O/G forward and backward-weight, C/G backward-data) are at most 64, the
// operands swap sides instead: the 128 rows are the pixels (forward,
// backward-data) or the (tap, c) columns of dW (backward-weight), and the
// channels are wgmma's N, a tile of NC = 16, 32 or 64 (wgmma_narrow_tile in
// launchers.h).  The channel tile is then 2-8 KiB a stage, the ring 72-96
// KiB: two blocks per SM.  Backward-weight's narrow B is dy itself, read
// from its NCHW planes in 8-pixel chunks (K-major: pixels are its k), so
// only x is copied channels-last; its A, the x side, stays MN-major.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "launchers.h"
#include "simt_gemm.cuh"
#include "tc_primitives.cuh"  // before conv_walks.cuh (the emulator substitutes it)
#include "conv_walks.cuh"
#include "wgmma_primitives.cuh"

namespace lamina {
namespace cuda {

namespace {

constexpr int BM = 128, BN = 128, BK = 64, THREADS = 256;
constexpr int STAGES = 4, DEPTH = STAGES - 2;  // slices in flight ahead of the one multiplied
constexpr int BOX_BYTES = 64 * 128;            // a 64 x 64 box of 16-bit elements (8 swizzle atoms)
constexpr int TILE_BYTES = 2 * BOX_BYTES;      // one operand's 128 rows x 64 k
// A stage with B's NC rows (or columns) of 64 k after A's 128: 32 KiB for the 128 x 128 tiles.
template <int NC>
constexpr int stage_bytes() {
  return TILE_BYTES + NC * 128;
}
template <int NC>
constexpr int smem_bytes() {
  return STAGES * stage_bytes<NC>() + 1024;  // + 1024 to align the ring for the swizzle
}

// The ring at the first 1024-byte boundary of dynamic shared memory.
__device__ __forceinline__ unsigned char* ring_base() {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  return smem_raw + ((1024 - (shared_addr(smem_raw) & 1023)) & 1023);
}

// acc += the block's tile over `slices` slices of 64 k, load(stage) copying
// the next slice's A (at stage) and B (at stage + TILE_BYTES) by cp.async;
// NC: B's rows (its columns, N of wgmma), 128 or, narrow, 16, 32 or 64.
// A_KM / B_KM: the operand is K-major (rows of 64 k, 128 bytes, swizzled;
// rows 64 wg.. of A start at wg * BOX_BYTES) or MN-major (two boxes of 64
// rows, each 64 k-rows of 128 bytes, swizzled; box wg of A holds rows
// 64 wg..).  A K-major descriptor advances 16 k by 32 bytes along its rows,
// an MN-major one by 16 k-rows; the leading byte offset steps an MN-major
// operand from its first box of 64 rows to the second (B's 128 columns) and
// is 16 for a K-major one, as the GEMM's (gemm_wgmma.cu).
template <typename T, bool A_KM, bool B_KM, int NC, class Load>
__device__ __forceinline__ void ring(unsigned char* base, int slices, Load& load, float (&acc)[NC / 2]) {
  constexpr int STAGE_BYTES = stage_bytes<NC>();
  static_assert(STAGE_BYTES % 1024 == 0, "every stage starts on a swizzle atom");
  static_assert(B_KM || NC == 128, "an MN-major B is two full boxes of 64 columns");
  constexpr uint32_t A_STEP = A_KM ? 32 : 16 * 128, B_STEP = B_KM ? 32 : 16 * 128;
  constexpr uint32_t A_LBO = A_KM ? 16 : BOX_BYTES, B_LBO = B_KM ? 16 : BOX_BYTES;
#pragma unroll
  for (int st = 0; st < DEPTH; ++st) {
    if (st < slices) load(base + st * STAGE_BYTES);
    cp_async_commit();
  }
  // Stage 0's descriptors; a later stage or k step adds its byte offset / 16 to the start address field
  // (bits 0-13: shared addresses under 256 KiB never carry out of it).
  const int wg = threadIdx.x / 128;
  const uint64_t da = wgmma_desc(shared_addr(base) + wg * BOX_BYTES, A_LBO, 1024);
  const uint64_t db = wgmma_desc(shared_addr(base) + TILE_BYTES, B_LBO, 1024);
#pragma unroll
  for (int i = 0; i < NC / 2; ++i) acc[i] = 0.f;
  for (int kt = 0; kt < slices; ++kt) {
    cp_async_wait<DEPTH - 1>();  // slice kt has landed (this thread's copies) ...
    fence_proxy_async();         // ... where wgmma (the async proxy) will see them ...
    __syncthreads();             // ... and everyone's; every warpgroup is done with slice kt - 2
    if (kt + DEPTH < slices) load(base + ((kt + DEPTH) % STAGES) * STAGE_BYTES);
    cp_async_commit();
    const uint64_t at = (uint64_t)((kt % STAGES) * (STAGE_BYTES >> 4));  // the stage, in the address field's units
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk)
      Wgmma<T, NC>::template run<A_KM ? 0 : 1, B_KM ? 0 : 1>(acc, da + at + kk * (A_STEP >> 4),
                                                             db + at + kk * (B_STEP >> 4));
    wgmma_commit();
    wgmma_wait<1>();  // slice kt - 1's wgmmas are done; slice kt's stay in flight
    fence_registers(acc);
  }
  wgmma_wait<0>();
  fence_registers(acc);
  cp_async_wait<0>();
}

// Through an epilogue of the columns/store kind (conv_walks.cuh), from the
// registers (backward-weight's dW, whose columns are not contiguous): thread
// (warp w of warpgroup wg, lane l) holds rows wg*64 + 16w + l/4 (+ 8) at
// columns 8i + 2(l % 4) (+ 1): acc[4i], acc[4i + 1] and, 8 rows on,
// acc[4i + 2], acc[4i + 3].  Each column pair is decoded once.
template <class Epi>
__device__ __forceinline__ void epilogue_pairs(const Epi& epi, const float (&acc)[64], int m0, int n0, int M, int N) {
  const int wg = threadIdx.x / 128, w = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < BN / 8; ++i) {
    const int n = n0 + 8 * i + 2 * (lane % 4);
    if (n >= N) continue;
    const auto cols = epi.columns(n, min(N, n + 2));
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int m = m0 + wg * 64 + 16 * w + lane / 4 + 8 * h;
      const float v[4] = {acc[4 * i + 2 * h], acc[4 * i + 2 * h + 1], 0.f, 0.f};
      if (m < M) epi.store(m, cols, v);
    }
  }
}

// The same through shared memory, for the NCHW outputs (forward's y,
// backward-data's dx), whose pixels are contiguous along the tile's
// columns: the fp32 tile is staged in the ring (free once every warpgroup
// is past its last wgmma) as [channel][pixel], then thread t stores pixel
// t % 128 of channels t / 128 + 2i, its pixel decoded once, so a warp's
// store covers 32 consecutive pixels of one channel instead of 8 channels
// x 4 pairs.  NC < 128 (narrow): the accumulators' rows are the pixels and
// their NC columns the channels, transposed on the way in.
template <int NC, class Epi>
__device__ __forceinline__ void epilogue_staged(const Epi& epi, const float (&acc)[NC / 2], unsigned char* base,
                                                int m0, int n0, int M, int N) {
  constexpr bool NARROW = NC < 128;
  constexpr int CH = NARROW ? NC : BM, STRIDE = BN + 4;  // staged channels; floats a staged row of 128 pixels
  static_assert(CH * STRIDE * 4 <= STAGES * stage_bytes<NC>(), "the staged tile must fit in the ring");
  float* out = reinterpret_cast<float*>(base);
  __syncthreads();  // both warpgroups' last wgmmas have read the ring
  {
    const int w = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
    const int r = (threadIdx.x / 128) * 64 + 16 * w + lane / 4, c = 2 * (lane % 4);
#pragma unroll
    for (int i = 0; i < NC / 8; ++i) {
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int row = r + 8 * h, col = 8 * i + c + e;  // the accumulator's
          out[NARROW ? col * STRIDE + row : row * STRIDE + col] = acc[4 * i + 2 * h + e];
        }
    }
  }
  __syncthreads();
  const int col = threadIdx.x % BN, n = n0 + col;
  if (n >= N) return;
  const auto cols = epi.columns(n, n + 1);
#pragma unroll 4
  for (int r = threadIdx.x / BN; r < CH && m0 + r < M; r += THREADS / BN) {
    const float v[4] = {out[r * STRIDE + col], 0.f, 0.f, 0.f};
    epi.store(m0 + r, cols, v);
  }
}

// A copy of the gathered operand (x, or backward-data's dy): through L1 as
// well in the narrow kernels (L1), where its reuse is near: the tile's 128
// pixels read overlapping windows, and with at most 64 channels a tap is at
// most one slice, so the next taps' chunks come within a slice or two.
template <bool L1>
__device__ __forceinline__ void copy_gathered(uint32_t dst, const void* src, int src_bytes) {
  if constexpr (L1)
    cp_async16_ca(dst, src, src_bytes);
  else
    cp_async16(dst, src, src_bytes);
}

// The K-major operands' copies: thread tid copies chunk j = tid % 8 (8 k)
// of rows tid / 8 + 32 i (i < 4) of both tiles, so its four rows share one
// k chunk and one TapWalk.  Rows 32 apart keep row % 8: + 4096 bytes per i.
__device__ __forceinline__ int kmajor_offset(int row, int j) { return row * 128 + ((j ^ (row & 7)) << 4); }

// The forward: blockIdx.x picks 128 output pixels, blockIdx.y NC output
// channels.  NC = 128: A = the weight rows, B = the pixels; narrow (NC <
// 128): A = the pixels, B = the weight rows, of which thread rows `row +
// 32 i` < NC copy.
template <typename T, typename OutT, int NC>
__global__ void __launch_bounds__(THREADS, NC < 128 ? 2 : 1)
    conv_forward_wgmma_kernel(OutT* __restrict__ y, const T* __restrict__ xl, const T* __restrict__ wl,
                              const T* __restrict__ bias, ConvShape s, int chunk) {
  constexpr bool NARROW = NC < 128;
  constexpr uint32_t W_AT = NARROW ? TILE_BYTES : 0, X_AT = NARROW ? 0 : TILE_BYTES;  // the tiles in a stage
  unsigned char* base = ring_base();
  const int g = blockIdx.z % s.groups, split = blockIdx.z / s.groups;
  const int cg = s.c / s.groups, og = s.o / s.groups, K = cg * s.kh * s.kw;
  const int kbegin = split * chunk, kend = min(K, kbegin + chunk);
  const int m0 = blockIdx.y * NC, n0 = blockIdx.x * BN;
  const int p = s.oh * s.ow, npix = s.n * p;
  const int j = threadIdx.x & 7, row = threadIdx.x >> 3, off = kmajor_offset(row, j);
  const ForwardRows<T, 4> rows(xl, wl, s, g, m0, n0, row, 32);
  const T* corner[4];  // x_cl at each pixel's window corner (ih0, iw0), channel 0 of the group
#pragma unroll
  for (int i = 0; i < 4; ++i)
    corner[i] = rows.ih0[i] == kNowhere ? xl : rows.img[i] + (int64_t)(rows.ih0[i] * s.w + rows.iw0[i]) * s.c;
  TapWalk t;  // the thread's chunk of the slice being loaded
  t.start(kbegin + 8 * j, cg, s.kw);
  const TapStep slice = tap_step(BK, cg, s.kw);
  auto load = [&](unsigned char* stage) {
    const uint32_t st = shared_addr(stage) + off;
    const bool kin = t.k < kend;
    const int dh = t.a * s.dh, dw = t.b * s.dw;
    const int tap = (dh * s.w + dw) * s.c + t.c;  // the chunk's offset from a window's corner
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (!NARROW || row + 32 * i < NC) {
        const bool w_ok = kin && rows.wok[i];
        cp_async16(st + W_AT + 4096 * i, w_ok ? rows.wrow[i] + t.k : wl, w_ok ? 16 : 0);
      }
      const int ih = rows.ih0[i] + dh, iw = rows.iw0[i] + dw;
      const bool x_ok = kin && (unsigned)ih < (unsigned)s.h && (unsigned)iw < (unsigned)s.w;
      copy_gathered<NARROW>(st + X_AT + 4096 * i, x_ok ? corner[i] + tap : xl, x_ok ? 16 : 0);
    }
    t.step_by(slice, cg, s.kw);
  };
  float acc[NC / 2];
  ring<T, true, true, NC>(base, max(0, (kend - kbegin + BK - 1) / BK), load, acc);
  const ConvForwardEpilogue<OutT, T> epi{y + (int64_t)split * npix * s.o + (int64_t)g * og * p,
                                         bias == nullptr ? nullptr : bias + g * og, s.o, p, false};
  epilogue_staged<NC>(epi, acc, base, m0, n0, og, npix);
}

// Backward-data in one phase: A = w_cl rows c, k = (tap (a, b) of the
// phase, o); B = dy_cl at the output position each (pixel, tap) lands on
// (off the grid: zeros).  Copies as the forward's, and as there, narrow
// (NC < 128) swaps the two: A = the pixels, B = NC rows of w_cl.
template <typename T, int NC>
__global__ void __launch_bounds__(THREADS, NC < 128 ? 2 : 1)
    conv_backward_data_wgmma_kernel(T* __restrict__ dx, const T* __restrict__ dyl, const T* __restrict__ wl,
                                    ConvShape s, DataPhase ph) {
  constexpr bool NARROW = NC < 128;
  constexpr uint32_t W_AT = NARROW ? TILE_BYTES : 0, D_AT = NARROW ? 0 : TILE_BYTES;  // the tiles in a stage
  unsigned char* base = ring_base();
  const int g = blockIdx.z;
  const int cg = s.c / s.groups, og = s.o / s.groups, K = og * ph.h.kcount * ph.w.kcount;
  const int m0 = blockIdx.y * NC, n0 = blockIdx.x * BN;
  const int npix = s.n * ph.h.count * ph.w.count;
  const int j = threadIdx.x & 7, row = threadIdx.x >> 3, off = kmajor_offset(row, j);
  const DataRows<T, 4> rows(dyl, wl, s, ph, g, m0, n0, row, 32);
  const T* reach[4];  // dy_cl where each pixel lands through the phase's tap (0, 0), channel 0 of the group
#pragma unroll
  for (int i = 0; i < 4; ++i)
    reach[i] = rows.jh[i] == kNowhere ? dyl : rows.img[i] + (int64_t)(rows.jh[i] * s.ow + rows.jw[i]) * s.o;
  TapWalk t;  // over (tap of the phase, o)
  const int nb = ph.w.kcount > 0 ? ph.w.kcount : 1;
  t.start(8 * j, og, nb);
  const TapStep slice = tap_step(BK, og, nb);
  auto load = [&](unsigned char* stage) {
    const uint32_t st = shared_addr(stage) + off;
    const bool kin = t.k < K;
    const int tap = (ph.h.k0 + t.a * ph.h.kstep) * s.kw + ph.w.k0 + t.b * ph.w.kstep;
    const int dh = t.a * ph.h.tstep, dw = t.b * ph.w.tstep;
    const int a_off = tap * og + t.c, b_off = t.c - (dh * s.ow + dw) * s.o;  // the chunk's offsets
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (!NARROW || row + 32 * i < NC) {
        const bool w_ok = kin && rows.wok[i];
        cp_async16(st + W_AT + 4096 * i, w_ok ? rows.wrow[i] + a_off : wl, w_ok ? 16 : 0);
      }
      const int oh = rows.jh[i] - dh, ow = rows.jw[i] - dw;
      const bool d_ok = kin && (unsigned)oh < (unsigned)s.oh && (unsigned)ow < (unsigned)s.ow;
      copy_gathered<NARROW>(st + D_AT + 4096 * i, d_ok ? reach[i] + b_off : dyl, d_ok ? 16 : 0);
    }
    t.step_by(slice, og, nb);
  };
  float acc[NC / 2];
  ring<T, true, true, NC>(base, (K + BK - 1) / BK, load, acc);
  const ConvDataEpilogue<T> epi{dx + (int64_t)g * cg * s.h * s.w, s, ph, false};
  epilogue_staged<NC>(epi, acc, base, m0, n0, cg, npix);  // a phase with no taps writes its zeros
}

// Backward-weight: the reduction runs over pixels q, both operands
// MN-major.  A k-row of a tile is one pixel's 128 rows (A: output channels)
// or columns (B: (tap, c)), 16 chunks of 8, chunk cc in box cc / 8 at chunk
// cc % 8 of its k-row, swizzled.  Thread tid copies chunks 4h..4h+3 (h =
// tid % 4) of k-row (pixel) tid / 4 of the slice, in both tiles: so it
// walks one pixel, stepped by 64 per slice without a loop (PixelStep),
// and each of its four B chunks keeps its tap's offset in x_cl, decoded
// once.  (Four pixels 16 apart with one chunk each cost 331 instructions a
// slice, every pixel walked and every address built anew.)
template <typename T, typename OutT>
__global__ void __launch_bounds__(THREADS, 1)
    conv_backward_weight_wgmma_kernel(OutT* __restrict__ out, const T* __restrict__ dyl, const T* __restrict__ xl,
                                      ConvShape s, int chunk) {
  unsigned char* base = ring_base();
  const int g = blockIdx.z % s.groups, split = blockIdx.z / s.groups;
  const int cg = s.c / s.groups, og = s.o / s.groups, kk = s.kh * s.kw, K = cg * kk;
  const int qbegin = split * chunk, qend = min(s.n * s.oh * s.ow, qbegin + chunk);
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int r = threadIdx.x >> 2, h = threadIdx.x & 3;
  uint32_t dst[4];  // the chunks' offsets in a stage (A; B is TILE_BYTES on)
  int xoff[4], dh[4], dw[4];  // B: the chunk's offset in x_cl from its pixel's window corner; the tap's offsets
  unsigned a_ok = 0, b_ok = 0;  // bit j: chunk j inside the tile's rows / columns
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    dst[j] = (h >> 1) * BOX_BYTES + r * 128 + ((((h & 1) * 4 + j) ^ (r & 7)) << 4);
    const int row = 32 * h + 8 * j;  // the chunk's first row / column of the tile
    if (m0 + row < og) a_ok |= 1u << j;
    int tap = 0, c = 0;
    if (n0 + row < K) {
      b_ok |= 1u << j;
      tap = (n0 + row) / cg;
      c = n0 + row - tap * cg;
    }
    dh[j] = (tap / s.kw) * s.dh - s.pt;
    dw[j] = (tap % s.kw) * s.dw - s.pl;
    xoff[j] = (dh[j] * s.w + dw[j]) * s.c + c;
  }
  const T* dcol = dyl + g * og + m0 + 32 * h;  // + q * O + 8 j (read only where a_ok)
  const T* xg = xl + g * cg;
  PixelWalk w;
  w.start(qbegin + r, s.oh, s.ow);
  const PixelStep step = pixel_step(BK, s.oh, s.ow);
  int q = qbegin + r;  // the thread's pixel in the slice being loaded, as a number and walked (w)
  auto load = [&](unsigned char* stage) {
    const uint32_t st = shared_addr(stage);
    const bool in = q < qend;
    const int ih0 = w.oh * s.sh, iw0 = w.ow * s.sw;
    const T* arow = dcol + (int64_t)q * s.o;
    const int64_t corner = (((int64_t)w.n * s.h + ih0) * s.w + iw0) * s.c;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const bool ao = in && (a_ok >> j & 1);
      cp_async16(st + dst[j], ao ? arow + 8 * j : dyl, ao ? 16 : 0);
      const int ih = ih0 + dh[j], iw = iw0 + dw[j];
      const bool bo = in && (b_ok >> j & 1) && (unsigned)ih < (unsigned)s.h && (unsigned)iw < (unsigned)s.w;
      cp_async16(st + TILE_BYTES + dst[j], bo ? xg + corner + xoff[j] : xl, bo ? 16 : 0);
    }
    w.step_by(step, s.oh, s.ow);
    q += BK;
  };
  float acc[64];
  ring<T, false, false, 128>(base, max(0, (qend - qbegin + BK - 1) / BK), load, acc);
  const ConvWeightPairs<OutT> epi{out + (int64_t)split * s.o * K + (int64_t)g * og * K, K, cg, kk};
  epilogue_pairs(epi, acc, m0, n0, og, K);
}

// Backward-weight, narrow (O/G <= 64, OH*OW % 8 == 0): A = the x side,
// copied as the kernel above copies its B (128 columns (tap, c) of dW,
// MN-major); B = dy straight from its NCHW planes, K-major, pixels being
// its k: row o of a slice's tile is dy[n, o, 64 pixels], 8 chunks of 8
// (OH*OW % 8 == 0 keeps a chunk inside one image and 16-byte aligned).
// Thread tid copies chunk tid % 8 of the rows tid / 8 + 32 i < NC, its
// pixel (image, pixel of the image) stepped by 64 a slice.
template <typename T, typename OutT, int NC>
__global__ void __launch_bounds__(THREADS, 2)
    conv_backward_weight_narrow_kernel(OutT* __restrict__ out, const T* __restrict__ dy, const T* __restrict__ xl,
                                       ConvShape s, int chunk) {
  constexpr int RD = (NC + 31) / 32;  // dy rows a thread copies
  unsigned char* base = ring_base();
  const int g = blockIdx.z % s.groups, split = blockIdx.z / s.groups;
  const int cg = s.c / s.groups, og = s.o / s.groups, kk = s.kh * s.kw, K = cg * kk, p = s.oh * s.ow;
  const int qbegin = split * chunk, qend = min(s.n * p, qbegin + chunk);
  const int m0 = blockIdx.y * NC, n0 = blockIdx.x * BN;
  // A: four chunks of pixel r of the slice, columns n0 + 32h + 8j
  const int r = threadIdx.x >> 2, h = threadIdx.x & 3;
  uint32_t dst[4];
  int xoff[4], dh[4], dw[4];
  unsigned x_ok = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    dst[j] = (h >> 1) * BOX_BYTES + r * 128 + ((((h & 1) * 4 + j) ^ (r & 7)) << 4);
    const int col = n0 + 32 * h + 8 * j;
    int tap = 0, c = 0;
    if (col < K) {
      x_ok |= 1u << j;
      tap = col / cg;
      c = col - tap * cg;
    }
    dh[j] = (tap / s.kw) * s.dh - s.pt;
    dw[j] = (tap % s.kw) * s.dw - s.pl;
    xoff[j] = (dh[j] * s.w + dw[j]) * s.c + c;
  }
  const T* xg = xl + g * cg;
  PixelWalk w;
  w.start(qbegin + r, s.oh, s.ow);
  const PixelStep step = pixel_step(BK, s.oh, s.ow);
  int q = qbegin + r;
  // B: chunk j8 of rows orow + 32 i (orow < 32: the mask tells the compiler so)
  const int j8 = threadIdx.x & 7, orow = (threadIdx.x >> 3) & 31;
  const uint32_t doff = TILE_BYTES + kmajor_offset(orow, j8);
  const bool copies = NC >= 32 || orow < NC;  // NC = 16: threads 0-127
  bool o_ok[RD];
#pragma unroll
  for (int i = 0; i < RD; ++i) o_ok[i] = m0 + orow + 32 * i < og;
  // the chunk's first pixel: image nd, pixel rd of it, and dy there in row orow (walked as a pointer: + BK
  // pixels is + step_n images and step_r pixels, an image being O planes of p)
  int qd = qbegin + 8 * j8, nd = qd / p, rd = qd - nd * p;
  const int step_n = BK / p, step_r = BK - step_n * p;
  const int64_t image = (int64_t)s.o * p;
  const T* dsrc = dy + ((int64_t)g * og + (o_ok[0] ? m0 + orow : 0)) * p + nd * image + rd;
  const int64_t dstep = step_n * image + step_r, dcarry = image - p;
  auto load = [&](unsigned char* stage) {
    const uint32_t st = shared_addr(stage);
    const bool in = q < qend;
    const int ih0 = w.oh * s.sh, iw0 = w.ow * s.sw;
    const int64_t corner = (((int64_t)w.n * s.h + ih0) * s.w + iw0) * s.c;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int ih = ih0 + dh[j], iw = iw0 + dw[j];
      const bool xo = in && (x_ok >> j & 1) && (unsigned)ih < (unsigned)s.h && (unsigned)iw < (unsigned)s.w;
      copy_gathered<true>(st + dst[j], xo ? xg + corner + xoff[j] : xl, xo ? 16 : 0);
    }
    if (copies) {
      const bool din = qd < qend;
#pragma unroll
      for (int i = 0; i < RD; ++i) {
        const bool ok = din && o_ok[i];
        cp_async16(st + doff + 4096 * i, ok ? dsrc + (int64_t)32 * i * p : dy, ok ? 16 : 0);
      }
    }
    w.step_by(step, s.oh, s.ow);
    q += BK;
    qd += BK;
    rd += step_r;
    dsrc += dstep;
    if (rd >= p) {
      rd -= p;
      dsrc += dcarry;
    }
  };
  float acc[NC / 2];
  ring<T, false, true, NC>(base, max(0, (qend - qbegin + BK - 1) / BK), load, acc);
  // acc rows: dW's columns (tap, c) n0 + ...; acc columns: output channels m0 + ...
  OutT* dwg = out + (int64_t)split * s.o * K + (int64_t)g * og * K;
  const int wq = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int col = n0 + (threadIdx.x / 128) * 64 + 16 * wq + lane / 4 + 8 * hh;
    if (col >= K) continue;
    const int tap = col / cg, idx = (col - tap * cg) * kk + tap;
#pragma unroll
    for (int i = 0; i < NC / 8; ++i)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int o = m0 + 8 * i + 2 * (lane % 4) + e;
        if (o < og) dwg[(int64_t)o * K + idx] = simt::from_float<OutT>(acc[4 * i + 2 * hh + e]);
      }
  }
}

template <class Kernel, class... Args>
cudaError_t launch(Kernel kernel, int smem, dim3 grid, cudaStream_t stream, Args... args) {
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem)) return e;
  kernel<<<grid, THREADS, smem, stream>>>(args...);
  return cudaGetLastError();
}

}  // namespace

// Dispatch on the channel tile: fn(std::integral_constant<int, NC>{}).
template <class Fn>
cudaError_t with_tile(int nc, Fn fn) {
  switch (nc) {
    case 16: return fn(std::integral_constant<int, 16>{});
    case 32: return fn(std::integral_constant<int, 32>{});
    case 64: return fn(std::integral_constant<int, 64>{});
    case 128: return fn(std::integral_constant<int, 128>{});
    default: return cudaErrorInvalidValue;
  }
}

template <typename T>
cudaError_t conv_forward_wgmma(void* y, bool out_f32, const T* xl, const T* wl, const T* bias, const ConvShape& s,
                               int splits, int nc, cudaStream_t stream) {
  const int64_t og = s.o / s.groups, pix = (int64_t)s.n * s.oh * s.ow;
  const int64_t K = (int64_t)(s.c / s.groups) * s.kh * s.kw;
  if (og == 0 || pix == 0) return cudaSuccess;
  if ((s.c / s.groups) % 8 != 0 || splits < 1 || (splits > 1 && !out_f32) || (nc < 128 && og > nc) ||
      (og + nc - 1) / nc > 65535 || (int64_t)s.groups * splits > 65535 || pix > INT32_MAX || K * s.o > INT32_MAX)
    return cudaErrorInvalidValue;
  const int slices = (int)((K + BK - 1) / BK), per = (slices + splits - 1) / splits;
  return with_tile(nc, [&](auto tile) {
    constexpr int NC = decltype(tile)::value;
    const dim3 grid((unsigned)((pix + BN - 1) / BN), (unsigned)((og + NC - 1) / NC), (unsigned)(s.groups * splits));
    if (out_f32)
      return launch(conv_forward_wgmma_kernel<T, float, NC>, smem_bytes<NC>(), grid, stream, static_cast<float*>(y),
                    xl, wl, static_cast<const T*>(nullptr), s, per * BK);
    return launch(conv_forward_wgmma_kernel<T, T, NC>, smem_bytes<NC>(), grid, stream, static_cast<T*>(y), xl, wl,
                  bias, s, per * BK);
  });
}

template <typename T>
cudaError_t conv_backward_data_wgmma(T* dx, const T* dyl, const T* wl, const ConvShape& s, int phase, int nc,
                                     cudaStream_t stream) {
  const DataPhase ph = data_phase(s, phase);
  const int64_t cg = s.c / s.groups, pix = (int64_t)s.n * ph.h.count * ph.w.count;
  if (cg == 0 || pix == 0) return cudaSuccess;
  if ((s.o / s.groups) % 8 != 0 || (nc < 128 && cg > nc) || (cg + nc - 1) / nc > 65535 || s.groups > 65535 ||
      pix > INT32_MAX || (int64_t)(s.o / s.groups) * s.kh * s.kw * s.c > INT32_MAX)
    return cudaErrorInvalidValue;
  return with_tile(nc, [&](auto tile) {
    constexpr int NC = decltype(tile)::value;
    const dim3 grid((unsigned)((pix + BN - 1) / BN), (unsigned)((cg + NC - 1) / NC), (unsigned)s.groups);
    return launch(conv_backward_data_wgmma_kernel<T, NC>, smem_bytes<NC>(), grid, stream, dx, dyl, wl, s, ph);
  });
}

template <typename T>
cudaError_t conv_backward_weight_wgmma(void* dw, bool out_f32, const T* dy, const T* xl, const ConvShape& s,
                                       int splits, int nc, cudaStream_t stream) {
  const int64_t og = s.o / s.groups, K = (int64_t)(s.c / s.groups) * s.kh * s.kw, pix = (int64_t)s.n * s.oh * s.ow;
  if (og == 0 || K == 0) return cudaSuccess;
  const bool narrow = nc < 128;
  if ((s.c / s.groups) % 8 != 0 || (!narrow && og % 8 != 0) || splits < 1 || (splits > 1 && !out_f32) ||
      (narrow && (og > nc || (s.oh * s.ow) % 8 != 0 || reinterpret_cast<uintptr_t>(dy) % 16 != 0)) ||
      (og + nc - 1) / nc > 65535 || (int64_t)s.groups * splits > 65535 || pix > INT32_MAX || K * s.o > INT32_MAX)
    return cudaErrorInvalidValue;
  const int slices = (int)((pix + BK - 1) / BK), per = (slices + splits - 1) / splits;
  return with_tile(nc, [&](auto tile) {
    constexpr int NC = decltype(tile)::value;
    const dim3 grid((unsigned)((K + BN - 1) / BN), (unsigned)((og + NC - 1) / NC), (unsigned)(s.groups * splits));
    if constexpr (NC < 128) {
      if (out_f32)
        return launch(conv_backward_weight_narrow_kernel<T, float, NC>, smem_bytes<NC>(), grid, stream,
                      static_cast<float*>(dw), dy, xl, s, per * BK);
      return launch(conv_backward_weight_narrow_kernel<T, T, NC>, smem_bytes<NC>(), grid, stream, static_cast<T*>(dw),
                    dy, xl, s, per * BK);
    } else {
      if (out_f32)
        return launch(conv_backward_weight_wgmma_kernel<T, float>, smem_bytes<NC>(), grid, stream,
                      static_cast<float*>(dw), dy, xl, s, per * BK);
      return launch(conv_backward_weight_wgmma_kernel<T, T>, smem_bytes<NC>(), grid, stream, static_cast<T*>(dw), dy,
                    xl, s, per * BK);
    }
  });
}

#define LAMINA_INSTANTIATE(T)                                                                                      \
  template cudaError_t conv_forward_wgmma<T>(void*, bool, const T*, const T*, const T*, const ConvShape&, int,    \
                                             int, cudaStream_t);                                                   \
  template cudaError_t conv_backward_data_wgmma<T>(T*, const T*, const T*, const ConvShape&, int, int,             \
                                                   cudaStream_t);                                                  \
  template cudaError_t conv_backward_weight_wgmma<T>(void*, bool, const T*, const T*, const ConvShape&, int, int,  \
                                                     cudaStream_t);
LAMINA_INSTANTIATE(__half)
LAMINA_INSTANTIATE(__nv_bfloat16)
#undef LAMINA_INSTANTIATE

}  // namespace cuda
}  // namespace lamina
