// The SIMT GEMM core shared by the fp32 GEMM (gemm.cu) and the implicit-GEMM
// convolutions (conv.cu):  acc[M, N] = sum_k A[m, k] B[k, n]  over one
// block's 128 x 128 tile, in fp32 on CUDA cores.
//
// A block of 256 threads stages BK = 8 slices of A and B in shared memory
// (As[k][m], Bs[k][n], double buffered), and each thread accumulates an 8 x 8
// sub-tile in registers: rows {ty*4 + i, 64 + ty*4 + i} and columns
// {tx*4 + j, 64 + tx*4 + j} (i, j < 4), read from shared memory as float4 so
// that one k-step costs 4 shared loads for 64 FMAs.  While the block works on
// slice k, each thread holds slice k+1's four A and four B elements in
// registers (fetched before the math, stored to the other buffer after it),
// so global latency hides behind the FMAs with one barrier per slice.
//
// Operands come from loaders, which is what makes one core serve a dense
// GEMM and a convolution whose A or B is an im2col matrix that is never
// materialised.  A loader owns one operand tile of 128 rows (m for A, n for
// B) by BK, and implements
//     fetch(k0)   read the thread's 4 elements of slice [k0, k0 + BK) into
//                 registers, 0 outside the operand;
//     stash(s)    write them to shared memory s[k][row].
// Each thread covers 4 elements in one of two patterns, chosen by the
// loader so that a warp reads its operand's contiguous dimension:
//     kRowMajor   row = tid / 2, k = (tid % 2) * 4 + i   (contiguous along k)
//     kColMajor   k = tid / 32, row = (tid % 32) * 4 + i (contiguous along rows)
// The epilogue calls epi(m, n, value) for every in-range element of the tile.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

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
  const H* h = reinterpret_cast<const H*>(&q);
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = to_float(h[i]);
}

enum Pattern { kRowMajor, kColMajor };

// Writes a loader's four registers to shared memory in its pattern.
template <Pattern P>
__device__ __forceinline__ void stash4(float (*s)[LDS], const float (&v)[4]) {
  const int tid = threadIdx.x;
  if (P == kRowMajor) {
    const int r = tid >> 1, k = (tid & 1) * 4;
#pragma unroll
    for (int i = 0; i < 4; ++i) s[k + i][r] = v[i];
  } else {
    *reinterpret_cast<float4*>(&s[tid >> 5][(tid & 31) * 4]) = make_float4(v[0], v[1], v[2], v[3]);
  }
}

// A dense operand: element (r, k) of a rows x kend matrix stored at p with
// leading dimension ld, k-contiguous (p[r * ld + k], kRowMajor) or
// row-contiguous (p[k * ld + r], kColMajor).  vec: ld and p allow aligned
// 4-element loads (checked on the host).
template <typename T, Pattern P>
struct DenseLoader {
  const T* p;
  int64_t ld;
  int rows, kend, r0;
  bool vec;
  float v[4];

  __device__ void fetch(int k0) {
    const int tid = threadIdx.x;
    if (P == kRowMajor) {
      const int r = r0 + (tid >> 1), k = k0 + (tid & 1) * 4;
      const T* q = p + (int64_t)r * ld + k;
      if (r < rows && vec && k + 3 < kend) {
        load4(q, v);
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) v[i] = (r < rows && k + i < kend) ? to_float(q[i]) : 0.f;
      }
    } else {
      const int k = k0 + (tid >> 5), r = r0 + (tid & 31) * 4;
      const T* q = p + (int64_t)k * ld + r;
      if (k < kend && vec && r + 3 < rows) {
        load4(q, v);
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) v[i] = (k < kend && r + i < rows) ? to_float(q[i]) : 0.f;
      }
    }
  }
  __device__ void stash(float (*s)[LDS]) const { stash4<P>(s, v); }
};

// acc += A[m0:m0+128, kbegin:kend] B[kbegin:kend, n0:n0+128] for this
// thread's 8 x 8 elements.  Loaders bound-check against their own extents.
template <class LA, class LB>
__device__ __forceinline__ void mainloop(LA& la, LB& lb, int kbegin, int kend, float (&acc)[8][8]) {
  __shared__ __align__(16) float As[2][BK][LDS];
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
      float a[8], b[8];
      const float4 a0 = *reinterpret_cast<const float4*>(&As[cur][kk][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&As[cur][kk][64 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[cur][kk][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[cur][kk][64 + tx * 4]);
      a[0] = a0.x, a[1] = a0.y, a[2] = a0.z, a[3] = a0.w, a[4] = a1.x, a[5] = a1.y, a[6] = a1.z, a[7] = a1.w;
      b[0] = b0.x, b[1] = b0.y, b[2] = b0.z, b[3] = b0.w, b[4] = b1.x, b[5] = b1.y, b[6] = b1.z, b[7] = b1.w;
#pragma unroll
      for (int i = 0; i < 8; ++i)
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
__device__ __forceinline__ int acc_row(int i) { return (i < 4 ? 0 : 64) + (threadIdx.x / 16) * 4 + (i & 3); }
__device__ __forceinline__ int acc_col(int j) { return (j < 4 ? 0 : 64) + (threadIdx.x % 16) * 4 + (j & 3); }

template <class Epi>
__device__ __forceinline__ void epilogue(const Epi& epi, const float (&acc)[8][8], int m0, int n0, int M, int N) {
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int m = m0 + acc_row(i);
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int n = n0 + acc_col(j);
      if (n < N) epi(m, n, acc[i][j]);
    }
  }
}

}  // namespace simt
}  // namespace cuda
}  // namespace lamina
