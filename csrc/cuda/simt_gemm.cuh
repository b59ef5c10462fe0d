// The SIMT GEMM core shared by the fp32 GEMM (gemm.cu) and the implicit-GEMM
// convolutions (conv.cu):  acc[M, N] = sum_k A[m, k] B[k, n]  over one
// block's RM x 128 tile, in fp32 on CUDA cores, RM = 128, 64 or 32 rows of A
// (the convolutions pick the smallest that holds their output or input
// channels: a 16-channel layer would leave 7/8 of a 128-row tile idle).
//
// A block of 256 threads stages BK = 8 slices of A and B in shared memory
// (As[k][m], Bs[k][n], double buffered), and each thread accumulates a
// TM x 8 sub-tile in registers, TM = RM / 16: columns {tx*4 + j, 64 + tx*4 + j}
// (j < 4) and rows {ty*4 + i, 64 + ty*4 + i} (i < 4) for RM = 128, else
// rows ty*TM + i (i < TM), read from shared memory as float4 (float2 for
// RM = 32), so that one k-step of RM = 128 costs 4 shared loads for 64 FMAs.
// While the block works on slice k, each thread holds slice k+1's elements
// of A and B in registers (fetched before the math, stored to the other
// buffer after it), so global latency hides behind the FMAs with one
// barrier per slice.
//
// Operands come from loaders, which is what makes one core serve a dense
// GEMM and a convolution whose A or B is an im2col matrix that is never
// materialised.  A loader owns one operand tile of R rows (m for A, n for
// B) by BK, E = R / 32 elements per thread (B: R = 128, E = 4), and implements
//     fetch(k0)   read the thread's E elements of slice [k0, k0 + BK) into
//                 registers, 0 outside the operand;
//     stash(s)    write them to shared memory s[k][row].
// Each thread covers E elements in one of two patterns, chosen by the
// loader so that a warp reads its operand's contiguous dimension:
//     kRowMajor   row = tid / (8/E), k = (tid % (8/E)) * E + i   (contiguous along k)
//     kColMajor   k = tid / 32, row = (tid % 32) * E + i         (contiguous along rows)
// The epilogue calls epi(m, n, value) for every in-range element of the tile.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

namespace lamina {
namespace cuda {
namespace simt {

constexpr int BM = 128, BN = 128, BK = 8;
constexpr int kThreads = 256;
constexpr int LDS = BM + 4;  // shared row stride: float4 aligned, and the kRowMajor stash is conflict-free

template <typename T>
__device__ __forceinline__ float to_float(T v) {
  return static_cast<float>(v);
}
template <>
__device__ __forceinline__ float to_float(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T from_float(float v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __half from_float(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float(float v) {
  return __float2bfloat16_rn(v);
}

// Four consecutive elements from a 4-element-aligned address.
__device__ __forceinline__ void load4(const float* p, float (&v)[4]) {
  const float4 q = __ldg(reinterpret_cast<const float4*>(p));
  v[0] = q.x;
  v[1] = q.y;
  v[2] = q.z;
  v[3] = q.w;
}
template <typename H>
__device__ __forceinline__ void load4(const H* p, float (&v)[4]) {  // __half, __nv_bfloat16: 8 bytes
  const uint2 q = __ldg(reinterpret_cast<const uint2*>(p));
  // the four halves out of the loaded word by memcpy (register moves): reading
  // q through an H pointer breaks strict aliasing, and an optimising compiler
  // may then read h[i] before q is written (the emulated build did)
  H h[4];
  memcpy(h, &q, sizeof(q));
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = to_float(h[i]);
}

// Four consecutive elements to a 4-element-aligned address.
__device__ __forceinline__ void store4(float* p, const float* v) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
template <typename H>
__device__ __forceinline__ void store4(H* p, const float* v) {  // __half, __nv_bfloat16: 8 bytes
  H h[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = from_float<H>(v[i]);
  uint2 q;
  memcpy(&q, h, sizeof(q));
  *reinterpret_cast<uint2*>(p) = q;
}

enum Pattern { kRowMajor, kColMajor };

// Shared row stride of a tile with R rows: float4 aligned, and the
// kRowMajor stash of the 128-row tiles is conflict-free.
template <int R>
constexpr int smem_stride() {
  return R + 4;
}

// Row and k of element i of this thread's E in pattern P (a tile of 32 E rows).
template <Pattern P, int E>
__device__ __forceinline__ int pattern_row(int i) {
  return P == kRowMajor ? threadIdx.x / (BK / E) : (threadIdx.x & 31) * E + i;
}
template <Pattern P, int E>
__device__ __forceinline__ int pattern_k(int i) {
  return P == kRowMajor ? (threadIdx.x % (BK / E)) * E + i : threadIdx.x >> 5;
}

// Writes a loader's E registers to shared memory in its pattern.
template <Pattern P, int E, int S>
__device__ __forceinline__ void stash(float (*s)[S], const float (&v)[E]) {
  if (P == kColMajor && E == 4) {
    *reinterpret_cast<float4*>(&s[threadIdx.x >> 5][(threadIdx.x & 31) * 4]) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
#pragma unroll
    for (int i = 0; i < E; ++i) s[pattern_k<P, E>(i)][pattern_row<P, E>(i)] = v[i];
  }
}

// The 4-element stash of the 128-row operand tiles (B, and A of RM = 128).
template <Pattern P>
__device__ __forceinline__ void stash4(float (*s)[LDS], const float (&v)[4]) {
  stash<P, 4, LDS>(s, v);
}

// A dense operand: element (r, k) of a rows x kend matrix stored at p with
// leading dimension ld, k-contiguous (p[r * ld + k], kRowMajor) or
// row-contiguous (p[k * ld + r], kColMajor).  vec: ld and p allow aligned
// 4-element loads (checked on the host; used when E = 4).
template <typename T, Pattern P, int E = 4>
struct DenseLoader {
  const T* p;
  int64_t ld;
  int rows, kend, r0;
  bool vec;
  float v[E];

  __device__ void fetch(int k0) {
    const int r = r0 + pattern_row<P, E>(0), k = k0 + pattern_k<P, E>(0);
    const T* q = P == kRowMajor ? p + (int64_t)r * ld + k : p + (int64_t)k * ld + r;
    if constexpr (E == 4) {
      if (vec && (P == kRowMajor ? r < rows && k + 3 < kend : k < kend && r + 3 < rows)) {
        load4(q, v);
        return;
      }
    }
#pragma unroll
    for (int i = 0; i < E; ++i) {
      const bool in = P == kRowMajor ? r < rows && k + i < kend : k < kend && r + i < rows;
      v[i] = in ? to_float(q[i]) : 0.f;
    }
  }
  template <int S>
  __device__ void stash(float (*s)[S]) const {
    simt::stash<P, E, S>(s, v);
  }
};

// acc += A[m0:m0+RM, kbegin:kend] B[kbegin:kend, n0:n0+128] for this
// thread's TM x 8 elements (RM = 16 TM).  Loaders bound-check against their
// own extents.
template <class LA, class LB, int TM>
__device__ __forceinline__ void mainloop(LA& la, LB& lb, int kbegin, int kend, float (&acc)[TM][8]) {
  constexpr int RM = 16 * TM, LDA = smem_stride<RM>();
  static_assert(TM == 8 || TM == 4 || TM == 2, "A tiles of 128, 64 or 32 rows");
  __shared__ __align__(16) float As[2][BK][LDA];
  __shared__ __align__(16) float Bs[2][BK][LDS];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  if (kbegin >= kend) return;
  la.fetch(kbegin);
  lb.fetch(kbegin);
  la.stash(As[0]);
  lb.stash(Bs[0]);
  __syncthreads();
  int cur = 0;
  for (int k0 = kbegin; k0 < kend; k0 += BK) {
    const bool more = k0 + BK < kend;
    if (more) {  // next slice into registers; its latency hides behind the FMAs below
      la.fetch(k0 + BK);
      lb.fetch(k0 + BK);
    }
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float a[TM], b[8];
      if constexpr (TM == 8) {
        const float4 a0 = *reinterpret_cast<const float4*>(&As[cur][kk][ty * 4]);
        const float4 a1 = *reinterpret_cast<const float4*>(&As[cur][kk][64 + ty * 4]);
        a[0] = a0.x, a[1] = a0.y, a[2] = a0.z, a[3] = a0.w, a[4] = a1.x, a[5] = a1.y, a[6] = a1.z, a[7] = a1.w;
      } else if constexpr (TM == 4) {
        const float4 a0 = *reinterpret_cast<const float4*>(&As[cur][kk][ty * 4]);
        a[0] = a0.x, a[1] = a0.y, a[2] = a0.z, a[3] = a0.w;
      } else {
        const float2 a0 = *reinterpret_cast<const float2*>(&As[cur][kk][ty * 2]);
        a[0] = a0.x, a[1] = a0.y;
      }
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[cur][kk][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[cur][kk][64 + tx * 4]);
      b[0] = b0.x, b[1] = b0.y, b[2] = b0.z, b[3] = b0.w, b[4] = b1.x, b[5] = b1.y, b[6] = b1.z, b[7] = b1.w;
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    if (more) {  // the other buffer was last read before the previous barrier
      la.stash(As[cur ^ 1]);
      lb.stash(Bs[cur ^ 1]);
    }
    __syncthreads();
    cur ^= 1;
  }
}

// Row and column of accumulator (i, j) inside the tile.
template <int TM>
__device__ __forceinline__ int acc_row(int i) {
  return TM == 8 ? (i < 4 ? 0 : 64) + (threadIdx.x / 16) * 4 + (i & 3) : (threadIdx.x / 16) * TM + i;
}
__device__ __forceinline__ int acc_col(int j) { return (j < 4 ? 0 : 64) + (threadIdx.x % 16) * 4 + (j & 3); }

template <class Epi, int TM>
__device__ __forceinline__ void epilogue(const Epi& epi, const float (&acc)[TM][8], int m0, int n0, int M, int N) {
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int m = m0 + acc_row<TM>(i);
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int n = n0 + acc_col(j);
      if (n < N) epi(m, n, acc[i][j]);
    }
  }
}

// The epilogue by groups of four columns, for epilogues whose column index
// needs decoding (a convolution's pixel q -> image, row, column): each
// thread's columns are two runs of four consecutive ones (acc_col), so
//     Epi::Columns c = epi.columns(n, N)   decodes columns n .. n+3 (those < N) once,
//     epi.store(m, c, v)                   writes row m's four values v[0..3] there,
// which is 2 decodes per thread instead of one per element, and lets the
// store be one vector store where the four land contiguous and aligned.
template <class Epi, int TM>
__device__ __forceinline__ void epilogue_columns(const Epi& epi, const float (&acc)[TM][8], int m0, int n0, int M,
                                                 int N) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int n = n0 + acc_col(4 * h);
    if (n >= N) continue;
    const typename Epi::Columns cols = epi.columns(n, N);
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int m = m0 + acc_row<TM>(i);
      if (m < M) epi.store(m, cols, &acc[i][4 * h]);
    }
  }
}

}  // namespace simt
}  // namespace cuda
}  // namespace lamina
