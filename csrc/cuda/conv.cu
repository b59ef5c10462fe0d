// 2-d convolution (NCHW) as implicit GEMM on the SIMT core of simt_gemm.cuh:
// the im2col matrix is gathered slice by slice straight into shared memory
// and never exists in device memory.  Math and index conventions are those
// of lamina/ops/conv.py (and of the NumPy mirror of these loaders,
// lamina/ops/reference.py: implicit_conv_*), per group g, with
// Cg = C/G, Og = O/G, KK = KH*KW, P = OH*OW:
//
//   forward          Y_g[o, (n,p)]      = Σ_{k=(c,kh,kw)} W_g[o, k] col_g[k, (n,p)]   + b[o]
//   backward-data    dX_g[c, (n,ih,iw)] = Σ_{k=(o,kh,kw)} W_g[o, c, kh, kw] dY[n, o, oh, ow]
//                    where ih + pt - kh*dh = oh*sh, iw + pl - kw*dw = ow*sw (else the term is 0)
//   backward-weight  dW_g[o, k]         = Σ_{q=(n,p)} dY_g[o, q] col_g[k, q]          (split over q)
//
// col_g[k, (n, p)] = x[n, g*Cg + c, oh*sh - pt + kh*dh, ow*sw - pl + kw*dw], 0 in the padding.
// Each output element is written once by one thread (no atomics), and the
// split-K partial sums of backward-weight are added in a fixed order.
//
// Backward-data runs as sh*sw dense problems, one per stride phase of the
// input pixels, so no FMA is spent on a window that misses the output grid.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "common.cuh"
#include "launchers.h"
#include "simt_gemm.cuh"
#include "tc_primitives.cuh"  // before conv_walks.cuh and tc_tile.cuh (the emulator substitutes it)
#include "conv_walks.cuh"
#include "tc_tile.cuh"

namespace lamina {
namespace cuda {

namespace {

using simt::BK;
using simt::from_float;
using simt::kColMajor;
using simt::kRowMajor;
using simt::LDS;
using simt::to_float;

// An element as a loader keeps it: converted to float (the SIMT core), or
// as stored (the tensor cores' 16-bit tiles).
template <typename Out, typename T>
__device__ __forceinline__ Out element(T v) {
  if constexpr (std::is_same<Out, T>::value)
    return v;
  else
    return to_float(v);
}

// n consecutive elements from an aligned address: 4 converted to float, or
// 4 or 8 as stored.
template <int n, typename Out, typename T>
__device__ __forceinline__ void load_run(const T* p, Out* v) {
  if constexpr (std::is_same<Out, float>::value) {
    static_assert(n == 4, "float runs are float4 loads");
    simt::load4(p, *reinterpret_cast<float(*)[4]>(v));
  } else if constexpr (n == 8) {
    const uint4 q = __ldg(reinterpret_cast<const uint4*>(p));
    memcpy(v, &q, sizeof(q));
  } else {
    static_assert(n == 4, "runs of 4 or 8");
    const uint2 q = __ldg(reinterpret_cast<const uint2*>(p));
    memcpy(v, &q, sizeof(q));
  }
}

// The forward's B, col_g[k, pixel], for one thread's four consecutive output
// pixels, the first decoded once and the other three stepped to in each
// gather (4 registers of state where offsets for all four took 16, which
// kept the 128-row SIMT kernel above the 128 registers of two blocks per
// SM).  vec (a 1x1 convolution with stride 1 and no padding, H*W % 4 == 0,
// x aligned): col_g is x itself, each k a channel plane, and the four
// pixels are contiguous in one image: one vector load.
template <typename T>
struct ImageColumnSource {
  const T* x;  // x + group's first channel
  ConvShape s;
  int kend;
  bool vec;
  int64_t base;  // offset of the first pixel's image n, group channel 0
  int oh0, ow0;  // the first pixel's output row and column
  int count;  // how many of the four pixels exist (0..4)

  __device__ ImageColumnSource(const T* x_, const ConvShape& s_, int kend_, int q, bool vec_)
      : x(x_), s(s_), kend(kend_), vec(vec_) {
    const int npix = s.n * s.oh * s.ow;
    count = max(0, min(4, npix - q));
    const int p = s.oh * s.ow, n = q / p, r = q - n * p;
    base = (int64_t)n * s.c * s.h * s.w;
    oh0 = r / s.ow;
    ow0 = r - oh0 * s.ow;
  }
  // v[i] = col_g[k, pixel i], 0 outside the image and past kend.
  template <typename Out>
  __device__ void gather(int k, Out* v) const {
    if (vec && k < kend && count == 4) {  // 1x1: output pixel (oh, ow) reads input (oh, ow)
      load_run<4>(x + base + (int64_t)k * s.h * s.w + oh0 * s.w + ow0, v);
      return;
    }
    const int kk = s.kh * s.kw;
    const int c = k / kk, r = k % kk;
    const int dh = (r / s.kw) * s.dh - s.pt, dw = (r % s.kw) * s.dw - s.pl;
    // channel c's plane in the first pixel's image, moved by C*H*W into the next: 32-bit indexing inside it
    const T* plane = x + base + (int64_t)c * s.h * s.w;
    int oh = oh0, ow = ow0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int ih = oh * s.sh + dh, iw = ow * s.sw + dw;
      const bool in = k < kend && i < count && ih >= 0 && ih < s.h && iw >= 0 && iw < s.w;
      v[i] = in ? element<Out>(plane[ih * s.w + iw]) : from_float<Out>(0.f);
      if (++ow == s.ow) {
        ow = 0;
        if (++oh == s.oh) {
          oh = 0;
          plane += (int64_t)s.c * s.h * s.w;
        }
      }
    }
  }
};

// B of the SIMT forward (K = Cg*KK rows of k, N*P columns of pixels).
// Pattern kColMajor: a warp reads 128 consecutive output pixels of one k, so
// for stride 1 consecutive threads read consecutive input columns.
template <typename T>
struct ImageColumnsLoader {
  ImageColumnSource<T> src;
  float v[4];
  __device__ ImageColumnsLoader(const T* x, const ConvShape& s, int kend, int pix0, bool vec)
      : src(x, s, kend, pix0 + (threadIdx.x & 31) * 4, vec) {}
  __device__ void fetch(int k0) { src.gather(k0 + (threadIdx.x >> 5), v); }
  __device__ void stash(float (*sm)[LDS]) const { simt::stash4<kColMajor>(sm, v); }
};


// fp32 on the SIMT core from channels-last copies (x_cl, dy_cl: NHWC; see
// the tensor-core section below): 4 consecutive channels of one tap are one
// float4, where the NCHW gathers above load element by element.
//
// B of the forward, kRowMajor over 128 output pixels: the thread's pixel
// n0 + tid/2 (decoded once) and k = (tap, c) .. + 3 from (tid % 2) * 4,
// walked slice by slice (C/G % 4 == 0: a run of 4 stays in one tap).
template <typename T>
struct PixelTapsLoader {
  const T* img;  // the pixel's image in x_cl, at the group's first channel
  int ih0, iw0;  // its window's top-left input position (never inside for a pixel past the end)
  ConvShape s;
  int kend;
  TapWalk walk;
  float v[4];
  __device__ PixelTapsLoader(const T* xl, const ConvShape& s_, int group_c0, int n0, int kbegin, int kend_)
      : img(xl), ih0(-(1 << 29)), iw0(0), s(s_), kend(kend_) {
    const int q = n0 + (threadIdx.x >> 1), p = s.oh * s.ow;
    if (q < s.n * p) {
      const int n = q / p, r = q - n * p, oh = r / s.ow;
      img = xl + (int64_t)n * s.h * s.w * s.c + group_c0;
      ih0 = oh * s.sh - s.pt;
      iw0 = (r - oh * s.ow) * s.sw - s.pl;
    }
    walk.start(kbegin + (threadIdx.x & 1) * 4, s.c / s.groups, s.kw);
  }
  __device__ void fetch(int) {  // called for consecutive slices: the walk is already there
    const int ih = ih0 + walk.a * s.dh, iw = iw0 + walk.b * s.dw;
    if (walk.k < kend && (unsigned)ih < (unsigned)s.h && (unsigned)iw < (unsigned)s.w)
      simt::load4(img + (ih * s.w + iw) * s.c + walk.c, v);
    else
      v[0] = v[1] = v[2] = v[3] = 0.f;
    walk.advance(BK, s.c / s.groups, s.kw);
  }
  __device__ void stash(float (*sm)[LDS]) const { simt::stash<kRowMajor, 4, LDS>(sm, v); }
};

// B of backward-weight, kColMajor: pixel q0 + tid/32 of the slice (walked),
// columns (tap, c) .. + 3 from (tid % 32) * 4 (decoded once): a warp reads
// 512 contiguous bytes of one pixel's channels where C/G >= 128.
template <typename T>
struct ImageTapsLoader {
  const T* col;  // x_cl at the group's first channel + c
  ConvShape s;
  int qend, dh, dw;  // the column's tap offsets less the padding
  bool valid;
  int qcur;
  PixelWalk at;
  float v[4];
  __device__ ImageTapsLoader(const T* xl, const ConvShape& s_, int group_c0, int n0, int ktotal, int qbegin,
                             int qend_)
      : s(s_), qend(qend_) {
    const int k = n0 + (threadIdx.x & 31) * 4, cg = s.c / s.groups;
    valid = k < ktotal;
    const int tap = valid ? k / cg : 0, c = valid ? k - tap * cg : 0;
    col = xl + group_c0 + c;
    dh = (tap / s.kw) * s.dh - s.pt;
    dw = (tap % s.kw) * s.dw - s.pl;
    qcur = qbegin + (threadIdx.x >> 5);
    at.start(qcur, s.oh, s.ow);
  }
  __device__ void fetch(int q0) {
    const int q = q0 + (threadIdx.x >> 5);
    if (q != qcur) {
      at.advance(q - qcur, s.oh, s.ow);
      qcur = q;
    }
    const int ih = at.oh * s.sh + dh, iw = at.ow * s.sw + dw;
    if (valid && q < qend && (unsigned)ih < (unsigned)s.h && (unsigned)iw < (unsigned)s.w)
      simt::load4(col + (((int64_t)at.n * s.h + ih) * s.w + iw) * s.c, v);
    else
      v[0] = v[1] = v[2] = v[3] = 0.f;
  }
  __device__ void stash(float (*sm)[LDS]) const { simt::stash4<kColMajor>(sm, v); }
};

// Every kernel below takes TM: its A tile has 16 TM rows (simt_gemm.cuh).
// Forward may split its reduction over k = (c, kh, kw) into ranges of
// `chunk` (a multiple of BK) when the grid is short of a wave: blockIdx.z =
// group + groups * split, and each split writes fp32 partial sums (OutT =
// float) to its slab of the workspace, added with the bias by
// sum_splits_kernel.  One split writes y directly.
// MB: blocks per SM the launch bounds ask for (forward_blocks_per_sm).
// CL: x and w are the channels-last copies (PixelTapsLoader; w as (O, KH,
// KW, C/G), the same dense rows in another k order).
template <typename T, typename OutT, int TM, int MB, bool CL>
__global__ void __launch_bounds__(simt::kThreads, MB)
    conv_forward_kernel(OutT* __restrict__ y, const T* __restrict__ x, const T* __restrict__ w,
                        const T* __restrict__ bias, ConvShape s, bool vec_w, bool vec_x, bool vec_y, int chunk) {
  const int g = blockIdx.z % s.groups, split = blockIdx.z / s.groups;
  const int cg = s.c / s.groups, og = s.o / s.groups, K = cg * s.kh * s.kw;
  const int kbegin = split * chunk, kend = min(K, kbegin + chunk);
  const int m0 = blockIdx.y * 16 * TM, n0 = blockIdx.x * simt::BN;
  const int p = s.oh * s.ow, npix = s.n * p;
  simt::DenseLoader<T, kRowMajor, TM / 2> la{w + (int64_t)g * og * K, K, og, K, m0, vec_w, {}};
  float acc[TM][8] = {};
  if constexpr (CL) {
    PixelTapsLoader<T> lb(x, s, g * cg, n0, kbegin, kend);
    simt::mainloop(la, lb, kbegin, kend, acc);
  } else {
    ImageColumnsLoader<T> lb(x + (int64_t)g * cg * s.h * s.w, s, K, n0, vec_x);
    simt::mainloop(la, lb, kbegin, kend, acc);  // an empty range leaves zeros: still written below
  }
  const ConvForwardEpilogue<OutT, T> epi{y + (int64_t)split * npix * s.o + (int64_t)g * og * p,
                                         bias == nullptr ? nullptr : bias + g * og, s.o, p, vec_y};
  simt::epilogue_columns(epi, acc, m0, n0, og, npix);
}

// An A operand gathered element by element, kRowMajor: A[r, k] =
// p[index(r, k)] for r < rows and k < kend, else 0.  The index functors below
// give backward-data's and backward-weight's A.
template <typename T, int E, class Index>
struct GatherRowsLoader {
  const T* p;
  Index index;
  int rows, kend, r0;
  float v[E];
  __device__ void fetch(int k0) {
    const int r = r0 + simt::pattern_row<kRowMajor, E>(0), kb = k0 + simt::pattern_k<kRowMajor, E>(0);
#pragma unroll
    for (int i = 0; i < E; ++i) {
      const int k = kb + i;
      v[i] = (r < rows && k < kend) ? to_float(p[index(r, k)]) : 0.f;
    }
  }
  template <int S>
  __device__ void stash(float (*sm)[S]) const {
    simt::stash<kRowMajor, E, S>(sm, v);
  }
};

// A of backward-data in one phase: A[c, k = (o, i, j)] = W[g*Og + o, c, kh, kw]
// at the phase's taps kh = h.k0 + i*h.kstep, kw = w.k0 + j*w.kstep (p = w +
// group's first output channel).
struct PhaseWeightIndex {
  int cg, kh, kw;
  PhaseAxis h, w;
  __device__ int64_t operator()(int c, int k) const {
    const int taps = h.kcount * w.kcount, o = k / taps, r = k % taps;
    const int th = h.k0 + (r / w.kcount) * h.kstep, tw = w.k0 + (r % w.kcount) * w.kstep;
    return (((int64_t)o * cg + c) * kh + th) * kw + tw;
  }
};

// B of backward-data in one phase: B[k = (o, i, j), (n, jh, jw)] = dY[n, g*Og + o, oh, ow]
// with oh = h.base + jh - (h.t0 + i*h.tstep) (likewise ow), 0 off the edge,
// for one thread's four consecutive pixels: the first decoded once, the
// others stepped to in each gather (as ImageColumnSource).
template <typename T>
struct OutputGradSource {
  const T* dy;  // dy + group's first channel
  int oh_n, ow_n, kend, taps, kcount_w, t0h, tsteph, t0w, tstepw;
  int hcount, wcount, hbase, wbase;  // the phase's pixel grid and its output position at (0, 0)
  int64_t image;  // dy's elements per image
  int64_t base;  // offset of the first pixel's image n in dy
  int jh0, jw0, count;  // the first pixel's phase row and column; how many of the four exist

  __device__ OutputGradSource(const T* dy_, const ConvShape& s, const DataPhase& ph, int kend_, int q)
      : dy(dy_), oh_n(s.oh), ow_n(s.ow), kend(kend_), taps(ph.h.kcount * ph.w.kcount), kcount_w(ph.w.kcount),
        t0h(ph.h.t0), tsteph(ph.h.tstep), t0w(ph.w.t0), tstepw(ph.w.tstep), hcount(ph.h.count),
        wcount(ph.w.count), hbase(ph.h.base), wbase(ph.w.base), image((int64_t)s.o * s.oh * s.ow) {
    const int hw = ph.h.count * ph.w.count, npix = s.n * hw;
    count = max(0, min(4, npix - q));
    const int n = q / hw, p = q - n * hw;
    base = n * image;
    jh0 = p / ph.w.count;
    jw0 = p - jh0 * ph.w.count;
  }
  template <typename Out>
  __device__ void gather(int k, Out* v) const {
    const int o = k / taps, r = k % taps;  // taps > 0 whenever a gather runs (K = Og * taps)
    const int th = t0h + (r / kcount_w) * tsteph - hbase, tw = t0w + (r % kcount_w) * tstepw - wbase;
    int64_t b = base + (int64_t)o * oh_n * ow_n;
    int jh = jh0, jw = jw0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int oh = jh - th, ow = jw - tw;
      const bool in = k < kend && i < count && oh >= 0 && oh < oh_n && ow >= 0 && ow < ow_n;
      v[i] = in ? element<Out>(dy[b + (int64_t)oh * ow_n + ow]) : from_float<Out>(0.f);
      if (++jw == wcount) {
        jw = 0;
        if (++jh == hcount) {
          jh = 0;
          b += image;
        }
      }
    }
  }
};

template <typename T>
struct OutputGradLoader {
  OutputGradSource<T> src;
  float v[4];
  __device__ OutputGradLoader(const T* dy, const ConvShape& s, const DataPhase& ph, int kend, int pix0)
      : src(dy, s, ph, kend, pix0 + (threadIdx.x & 31) * 4) {}
  __device__ void fetch(int k0) { src.gather(k0 + (threadIdx.x >> 5), v); }
  __device__ void stash(float (*sm)[LDS]) const { simt::stash4<kColMajor>(sm, v); }
};

// One launch per stride phase, its taps and pixels in the kernel's
// parameters: they stay in the constant bank (decoded from blockIdx.z in the
// kernel they took 25-40 more registers).  MB blocks per SM, as the
// forward's (conv_blocks_per_sm; ptxas, sm_90, fp32: 64, 115, and 128 with
// 28 bytes spilled or 161 without).  A phase with no taps (possible when
// the dilation shares a factor with the stride) still writes its zeros.
template <typename T, int TM, int MB>
__global__ void __launch_bounds__(simt::kThreads, MB)
    conv_backward_data_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ w, ConvShape s,
                              DataPhase ph, bool vec_dx) {
  const int g = blockIdx.z;
  const int cg = s.c / s.groups, og = s.o / s.groups, K = og * ph.h.kcount * ph.w.kcount;
  const int m0 = blockIdx.y * 16 * TM, n0 = blockIdx.x * simt::BN;
  GatherRowsLoader<T, TM / 2, PhaseWeightIndex> la{
      w + (int64_t)g * og * cg * s.kh * s.kw, {cg, s.kh, s.kw, ph.h, ph.w}, cg, K, m0, {}};
  OutputGradLoader<T> lb(dy + (int64_t)g * og * s.oh * s.ow, s, ph, K, n0);
  float acc[TM][8] = {};
  simt::mainloop(la, lb, 0, K, acc);
  const ConvDataEpilogue<T> epi{dx + (int64_t)g * cg * s.h * s.w, s, ph, vec_dx};
  simt::epilogue_columns(epi, acc, m0, n0, cg, s.n * ph.h.count * ph.w.count);
}

// A of backward-weight: A[o, q = (n, p)] = dY[n, g*Og + o, p] (dy + group's
// first channel), k-contiguous, E consecutive pixels per thread in slices
// of SLICE: row tid / (SLICE / E), pixels from (tid % (SLICE / E)) * E.
// The thread's pixels move by SLICE from slice to slice, so (n, p) is
// decoded once and stepped; where P % V == 0 and dy is aligned (vec) each
// run of V pixels shares an image and loads as one vector (the split ranges
// start at multiples of SLICE).  Out: float (the SIMT core, V = 4) or T as
// stored (the tensor cores, V = 8).
template <typename T, typename Out, int E, int SLICE>
struct OutputGradRows {
  static constexpr int V = std::is_same<Out, float>::value ? 4 : 8;
  const T* dy;
  int o_total, p, rows, kend, r0;
  bool vec;
  int qcur, n, r;  // pixel qcur = (n, r): this thread's first in the slice last fetched
  Out v[E];

  __device__ static int offset() { return (threadIdx.x % (SLICE / E)) * E; }
  __device__ OutputGradRows(const T* dy_, int o_total_, int p_, int rows_, int kend_, int r0_, bool vec_, int qbegin)
      : dy(dy_), o_total(o_total_), p(p_), rows(rows_), kend(kend_), r0(r0_), vec(vec_) {
    qcur = qbegin + offset();
    n = qcur / p;
    r = qcur - n * p;
  }
  __device__ void fetch(int q0) {
    const int qb = q0 + offset();
    if (qb != qcur) {
      r += qb - qcur;
      while (r >= p) {
        r -= p;
        ++n;
      }
      qcur = qb;
    }
    const int o = r0 + threadIdx.x / (SLICE / E);
    const T* row = dy + (int64_t)o * p;
    if constexpr (E % V == 0) {
      if (vec && o < rows && qb + E - 1 < kend) {
        int nn = n, rr = r;
#pragma unroll
        for (int c = 0; c < E / V; ++c) {
          load_run<V>(row + (int64_t)nn * o_total * p + rr, v + c * V);
          rr += V;  // p >= V: at most one image boundary
          if (rr >= p) {
            rr -= p;
            ++nn;
          }
        }
        return;
      }
    }
    int nn = n, rr = r;
#pragma unroll
    for (int i = 0; i < E; ++i) {
      v[i] = o < rows && qb + i < kend ? element<Out>(row[(int64_t)nn * o_total * p + rr]) : from_float<Out>(0.f);
      if (++rr == p) {
        rr = 0;
        ++nn;
      }
    }
  }
};

template <typename T, int E>
struct OutputGradRowsLoader : OutputGradRows<T, float, E, BK> {
  using OutputGradRows<T, float, E, BK>::OutputGradRows;
  template <int S>
  __device__ void stash(float (*sm)[S]) const {
    simt::stash<kRowMajor, E, S>(sm, this->v);
  }
};

// B of backward-weight: B[q = (n, p), k = (c, kh, kw)] = col_g[k, q], kept
// [k][q]: each thread a fixed k = k0 + tid / 2 (decoded once) and E
// consecutive pixels from (tid % 2) * E, walked (PixelWalk), not divided
// out; contiguous for stride 1.  Each element is read from its image's
// channel plane, a pointer moved by C*H*W when the walk enters the next
// image, so the gather does 32-bit index arithmetic only (the 64-bit
// (n*C + c)*H*W per element cost ~15 instructions of ~25).
template <typename T, typename Out, int E>
struct ImageRows {
  const T* plane0;  // channel c's plane in image 0 (x + group's first channel + c*H*W)
  ConvShape s;
  int kend;  // end of this split's q range
  int dh, dw;  // the tap's offsets less the padding
  bool valid;
  int qcur;  // this thread's first pixel in the slice last fetched, at `at`
  PixelWalk at;
  Out v[E];

  __device__ ImageRows(const T* x_, const ConvShape& s_, int kend_, int k0, int ktotal, int qbegin)
      : s(s_), kend(kend_) {
    const int k = k0 + (threadIdx.x >> 1), kk = s.kh * s.kw;
    valid = k < ktotal;
    const int c = valid ? k / kk : 0;
    plane0 = x_ + (int64_t)c * s.h * s.w;
    dh = ((k % kk) / s.kw) * s.dh - s.pt;
    dw = ((k % kk) % s.kw) * s.dw - s.pl;
    qcur = qbegin + (threadIdx.x & 1) * E;
    at.start(qcur, s.oh, s.ow);
  }
  __device__ void fetch(int q0) {
    const int qb = q0 + (threadIdx.x & 1) * E;
    if (qb != qcur) {
      at.advance(qb - qcur, s.oh, s.ow);
      qcur = qb;
    }
    PixelWalk w = at;
    const int64_t image = (int64_t)s.c * s.h * s.w;
    const T* plane = plane0 + w.n * image;
#pragma unroll
    for (int i = 0; i < E; ++i) {
      Out val = from_float<Out>(0.f);
      if (valid && qb + i < kend) {
        const int ih = w.oh * s.sh + dh, iw = w.ow * s.sw + dw;
        if (ih >= 0 && ih < s.h && iw >= 0 && iw < s.w) val = element<Out>(plane[ih * s.w + iw]);
      }
      v[i] = val;
      w.step(s.oh, s.ow);
      if (w.ow == 0 && w.oh == 0) plane += image;  // the walk entered the next image
    }
  }
};

template <typename T>
struct ImageRowsLoader : ImageRows<T, float, 4> {
  using ImageRows<T, float, 4>::ImageRows;
  __device__ void stash(float (*sm)[LDS]) const { simt::stash4<kRowMajor>(sm, this->v); }
};

// Writes dW_g (O x Cg*KK, as the weight is laid out) or one split's fp32
// partial sums at the same index.
template <typename OutT>
struct ConvWeightEpilogue {
  OutT* out;  // + group's first output channel (and the split's slab)
  int ktotal;
  __device__ void operator()(int o, int k, float v) const { out[(int64_t)o * ktotal + k] = from_float<OutT>(v); }
};

// The same from a channels-last reduction, whose columns run over (tap,
// c): column n is weight index c*KK + tap.  Decoded per element: decoding
// per four columns (epilogue_columns) kept more registers live and made
// the 128-row kernel spill in its main loop.
template <typename OutT>
struct ConvWeightEpilogueCL {
  OutT* out;
  int ktotal, cg, kk;
  __device__ void operator()(int o, int n, float v) const {
    const int tap = n / cg;
    out[(int64_t)o * ktotal + (n - tap * cg) * kk + tap] = from_float<OutT>(v);
  }
};

// Launch bounds for 2, 3 and 4 blocks per SM (ptxas, sm_90, fp32: 128, 79
// and 63 registers, no spills).  The 128-row kernel took 141 registers and
// so ran one block per SM before its loaders stopped dividing.
// CL: dy and x are the NHWC copies: A is dy_cl as a dense [q][O] matrix
// (kColMajor), B ImageTapsLoader.
template <typename T, typename OutT, int TM, bool CL>
__global__ void __launch_bounds__(simt::kThreads, TM == 8 ? 2 : TM == 4 ? 3 : 4)
    conv_backward_weight_kernel(OutT* __restrict__ out, const T* __restrict__ dy, const T* __restrict__ x, ConvShape s,
                                bool vec_dy, int chunk) {
  const int g = blockIdx.z % s.groups, split = blockIdx.z / s.groups;
  const int cg = s.c / s.groups, og = s.o / s.groups, K = cg * s.kh * s.kw;
  const int q_total = s.n * s.oh * s.ow;
  const int qbegin = split * chunk;
  const int qend = min(q_total, qbegin + chunk);
  const int m0 = blockIdx.y * 16 * TM, n0 = blockIdx.x * simt::BN;
  float acc[TM][8] = {};
  if constexpr (CL) {
    simt::DenseLoader<T, kColMajor, TM / 2> la{dy + g * og, s.o, og, qend, m0, vec_dy, {}};
    ImageTapsLoader<T> lb(x, s, g * cg, n0, K, qbegin, qend);
    simt::mainloop(la, lb, qbegin, qend, acc);
    const ConvWeightEpilogueCL<OutT> epi{out + (int64_t)split * s.o * K + (int64_t)g * og * K, K, cg, s.kh * s.kw};
    simt::epilogue(epi, acc, m0, n0, og, K);
  } else {
    OutputGradRowsLoader<T, TM / 2> la(dy + (int64_t)g * og * s.oh * s.ow, s.o, s.oh * s.ow, og, qend, m0, vec_dy,
                                       qbegin);
    ImageRowsLoader<T> lb(x + (int64_t)g * cg * s.h * s.w, s, qend, n0, K, qbegin);
    simt::mainloop(la, lb, qbegin, qend, acc);  // an empty range leaves zeros: still written below
    const ConvWeightEpilogue<OutT> epi{out + (int64_t)split * s.o * K + (int64_t)g * og * K, K};
    simt::epilogue(epi, acc, m0, n0, og, K);
  }
}

// out[i] = Σ_s partial[s][i] (+ bias[(i / p) % o] when bias is given), in
// split order: deterministic.
template <typename T>
__global__ void sum_splits_kernel(T* __restrict__ out, const float* __restrict__ partial, int64_t n, int splits,
                                  const T* __restrict__ bias, int p, int o) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float acc = bias != nullptr ? to_float(bias[(i / p) % o]) : 0.f;
    for (int sp = 0; sp < splits; ++sp) acc += partial[sp * n + i];
    out[i] = from_float<T>(acc);
  }
}

// ---------------------------------------------------------------------------
// fp16 and bf16 on tensor cores: the same three problems, each block a
// 128 x 128 tile of mma.sync m16n8k16 with fp32 accumulation (8 warps of
// 64 x 32, tc_tile.cuh, as gemm_tc.cu), k in slices of 32.  The
// operands are gathered, so they cannot come by cp.async: each thread
// fetches its 16 elements of the next slice into registers before the
// math and stores them to the other shared buffer after it, as the SIMT
// core does.  A thread's 16 elements of a 128 x 32 slice, in one of two
// patterns, chosen so a warp reads along its operand's contiguous side:
//   KM, kept [row][k]: row = tid / 2, k = (tid % 2) * 16 + i (i < 16)
//   RM, kept [k][row]: row = lane * 4 + i (i < 4), k = warp + 8 j (j < 4), element 4 j + i
namespace tc {

using tc_tile::BK;
using tc_tile::BM;
using tc_tile::BN;
using tc_tile::KSTRIDE;
using tc_tile::RSTRIDE;
using tc_tile::TILE;
constexpr int THREADS = 256;
constexpr int SMEM_BYTES = 2 * 2 * TILE * 2;  // two buffers of A and B, 16-bit: 40 KiB

template <typename T>
__device__ __forceinline__ T zero() {
  return from_float<T>(0.f);
}

template <typename T>
__device__ __forceinline__ void stash_km(T* s, const T (&v)[16]) {
  T* d = s + (threadIdx.x >> 1) * KSTRIDE + (threadIdx.x & 1) * 16;
  uint4 q[2];
  memcpy(q, v, sizeof(q));
  reinterpret_cast<uint4*>(d)[0] = q[0];
  reinterpret_cast<uint4*>(d)[1] = q[1];
}

template <typename T>
__device__ __forceinline__ void stash_rm(T* s, const T (&v)[16]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    uint2 q;
    memcpy(&q, v + 4 * j, sizeof(q));
    *reinterpret_cast<uint2*>(s + (warp + 8 * j) * RSTRIDE + lane * 4) = q;
  }
}

// acc += A[m0.., kbegin:kend] B[kbegin:kend, n0..] over the block's tile;
// A_KM / B_KM: the operand's pattern is KM (else RM).
template <typename T, bool A_KM, bool B_KM, class LA, class LB>
__device__ __forceinline__ void mainloop(T* smem, LA& la, LB& lb, int kbegin, int kend, float (&acc)[4][4][4]) {
  if (kbegin >= kend) return;
  la.fetch(kbegin);
  lb.fetch(kbegin);
  la.stash(smem);
  lb.stash(smem + TILE);
  __syncthreads();
  int cur = 0;
  for (int k0 = kbegin; k0 < kend; k0 += BK) {
    const bool more = k0 + BK < kend;
    if (more) {  // next slice into registers; its latency hides behind the mma below
      la.fetch(k0 + BK);
      lb.fetch(k0 + BK);
    }
    const T* As = smem + cur * 2 * TILE;
    tc_tile::mma_slice<T, A_KM, B_KM>(As, As + TILE, acc);
    if (more) {  // the other buffer was last read before the previous barrier
      T* next = smem + (cur ^ 1) * 2 * TILE;
      la.stash(next);
      lb.stash(next + TILE);
    }
    __syncthreads();
    cur ^= 1;
  }
}

using tc_tile::for_each_pair;

// Through an epilogue of the columns/store kind (ConvForwardEpilogue,
// ConvDataEpilogue): pairs of columns, each of the thread's four column
// pairs decoded once for its 16 accumulators (fragment layout as
// tc_tile::for_each_pair): a decode costs a division or two.
template <class Epi>
__device__ __forceinline__ void epilogue_pairs(const Epi& epi, const float (&acc)[4][4][4], int m0, int n0, int M,
                                               int N) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
#pragma unroll
  for (int ni = 0; ni < 4; ++ni) {
    const int n = n0 + wn + ni * 8 + 2 * (lane % 4);
    if (n >= N) continue;
    const typename Epi::Columns cols = epi.columns(n, min(N, n + 2));  // at most two columns: the scalar path
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int m = m0 + wm + mi * 16 + lane / 4 + 8 * h;
        const float v[4] = {acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1], 0.f, 0.f};
        if (m < M) epi.store(m, cols, v);
      }
  }
}

// A dense KM operand: element (r, k) at p[r * ld + k] (the forward's weight).
// vec: ld % 8 == 0 and p 16-byte aligned.
template <typename T>
struct DenseKM {
  const T* p;
  int64_t ld;
  int rows, kend, r0;
  bool vec;
  T v[16];
  __device__ void fetch(int k0) {
    const int r = r0 + (threadIdx.x >> 1), k = k0 + (threadIdx.x & 1) * 16;
    const T* q = p + (int64_t)r * ld + k;
    if (vec && r < rows && k + 15 < kend) {
      load_run<8>(q, v);
      load_run<8>(q + 8, v + 8);
      return;
    }
#pragma unroll
    for (int i = 0; i < 16; ++i) v[i] = r < rows && k + i < kend ? q[i] : zero<T>();
  }
  __device__ void stash(T* s) const { stash_km(s, v); }
};

// B of the forward, RM: col_g[k, pixel], four k per thread (ImageColumnSource).
template <typename T>
struct ImageColumns {
  ImageColumnSource<T> src;
  T v[16];
  __device__ ImageColumns(const T* x, const ConvShape& s, int kend, int pix0, bool vec)
      : src(x, s, kend, pix0 + (threadIdx.x & 31) * 4, vec) {}
  __device__ void fetch(int k0) {
#pragma unroll
    for (int j = 0; j < 4; ++j) src.gather(k0 + (threadIdx.x >> 5) + 8 * j, v + 4 * j);
  }
  __device__ void stash(T* sm) const { stash_rm(sm, v); }
};

// A of backward-data in one phase, KM: A[c, k = (o, i, j)] = W[g*Og + o, c,
// h.k0 + i*h.kstep, w.k0 + j*w.kstep]; the thread's 16 consecutive k are
// decoded once (the first) and stepped.
template <typename T>
struct PhaseWeightKM {
  const T* w;  // w + group's first output channel
  int cg, kh, kw, rows, kend, r0;
  PhaseAxis h, wa;
  T v[16];
  __device__ void fetch(int k0) {
    const int c = r0 + (threadIdx.x >> 1), k = k0 + (threadIdx.x & 1) * 16;
    const int taps = h.kcount * wa.kcount;
    int o = k / taps;
    const int r = k - o * taps;
    int ri = r / wa.kcount, rj = r - ri * wa.kcount;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const bool in = c < rows && k + i < kend;
      // 32-bit: the weight has fewer than 2^31 elements (conv2d_backward_data checks)
      v[i] = in ? w[((o * cg + c) * kh + h.k0 + ri * h.kstep) * kw + wa.k0 + rj * wa.kstep] : zero<T>();
      if (++rj == wa.kcount) {
        rj = 0;
        if (++ri == h.kcount) {
          ri = 0;
          ++o;
        }
      }
    }
  }
  __device__ void stash(T* s) const { stash_km(s, v); }
};

// B of backward-data in one phase, RM: four k per thread (OutputGradSource).
template <typename T>
struct OutputGrad {
  OutputGradSource<T> src;
  T v[16];
  __device__ OutputGrad(const T* dy, const ConvShape& s, const DataPhase& ph, int kend, int pix0)
      : src(dy, s, ph, kend, pix0 + (threadIdx.x & 31) * 4) {}
  __device__ void fetch(int k0) {
#pragma unroll
    for (int j = 0; j < 4; ++j) src.gather(k0 + (threadIdx.x >> 5) + 8 * j, v + 4 * j);
  }
  __device__ void stash(T* sm) const { stash_rm(sm, v); }
};

// A of backward-weight, KM: 16 consecutive pixels per thread (OutputGradRows).
template <typename T>
struct OutputGradRowsKM : OutputGradRows<T, T, 16, BK> {
  using OutputGradRows<T, T, 16, BK>::OutputGradRows;
  __device__ void stash(T* s) const { stash_km(s, this->v); }
};

// B of backward-weight, KM ([k][q] in shared memory, B's k being the
// weight's (c, kh, kw) and its reduction index q the pixel): ImageRows, 16
// consecutive pixels per thread.
template <typename T>
struct ImageRowsKM : ImageRows<T, T, 16> {
  using ImageRows<T, T, 16>::ImageRows;
  __device__ void stash(T* sm) const { stash_km(sm, this->v); }
};

}  // namespace tc

template <typename T, typename OutT>
__global__ void __launch_bounds__(tc::THREADS, 2)
    conv_forward_tc_kernel(OutT* __restrict__ y, const T* __restrict__ x, const T* __restrict__ w,
                           const T* __restrict__ bias, ConvShape s, bool vec_w, bool vec_x, bool vec_y, int chunk) {
  extern __shared__ __align__(16) unsigned char conv_tc_smem[];
  T* smem = reinterpret_cast<T*>(conv_tc_smem);
  const int g = blockIdx.z % s.groups, split = blockIdx.z / s.groups;
  const int cg = s.c / s.groups, og = s.o / s.groups, K = cg * s.kh * s.kw;
  const int kbegin = split * chunk, kend = min(K, kbegin + chunk);
  const int m0 = blockIdx.y * tc::BM, n0 = blockIdx.x * tc::BN;
  const int p = s.oh * s.ow, npix = s.n * p;
  tc::DenseKM<T> la{w + (int64_t)g * og * K, K, og, K, m0, vec_w, {}};
  tc::ImageColumns<T> lb(x + (int64_t)g * cg * s.h * s.w, s, K, n0, vec_x);
  float acc[4][4][4] = {};
  tc::mainloop<T, true, false>(smem, la, lb, kbegin, kend, acc);
  const ConvForwardEpilogue<OutT, T> epi{y + (int64_t)split * npix * s.o + (int64_t)g * og * p,
                                         bias == nullptr ? nullptr : bias + g * og, s.o, p, vec_y};
  tc::epilogue_pairs(epi, acc, m0, n0, og, npix);
}

template <typename T>
__global__ void __launch_bounds__(tc::THREADS, 2)
    conv_backward_data_tc_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ w, ConvShape s,
                                 DataPhase ph, bool vec_dx) {
  extern __shared__ __align__(16) unsigned char conv_tc_smem[];
  T* smem = reinterpret_cast<T*>(conv_tc_smem);
  const int g = blockIdx.z;
  const int cg = s.c / s.groups, og = s.o / s.groups, K = og * ph.h.kcount * ph.w.kcount;
  const int m0 = blockIdx.y * tc::BM, n0 = blockIdx.x * tc::BN;
  tc::PhaseWeightKM<T> la{w + (int64_t)g * og * cg * s.kh * s.kw, cg, s.kh, s.kw, cg, K, m0, ph.h, ph.w, {}};
  tc::OutputGrad<T> lb(dy + (int64_t)g * og * s.oh * s.ow, s, ph, K, n0);
  float acc[4][4][4] = {};
  tc::mainloop<T, true, false>(smem, la, lb, 0, K, acc);
  const ConvDataEpilogue<T> epi{dx + (int64_t)g * cg * s.h * s.w, s, ph, vec_dx};
  tc::epilogue_pairs(epi, acc, m0, n0, cg, s.n * ph.h.count * ph.w.count);
}

template <typename T, typename OutT>
__global__ void __launch_bounds__(tc::THREADS, 2)
    conv_backward_weight_tc_kernel(OutT* __restrict__ out, const T* __restrict__ dy, const T* __restrict__ x,
                                   ConvShape s, bool vec_dy, int chunk) {
  extern __shared__ __align__(16) unsigned char conv_tc_smem[];
  T* smem = reinterpret_cast<T*>(conv_tc_smem);
  const int g = blockIdx.z % s.groups, split = blockIdx.z / s.groups;
  const int cg = s.c / s.groups, og = s.o / s.groups, K = cg * s.kh * s.kw;
  const int q_total = s.n * s.oh * s.ow;
  const int qbegin = split * chunk, qend = min(q_total, qbegin + chunk);
  const int m0 = blockIdx.y * tc::BM, n0 = blockIdx.x * tc::BN;
  tc::OutputGradRowsKM<T> la(dy + (int64_t)g * og * s.oh * s.ow, s.o, s.oh * s.ow, og, qend, m0, vec_dy, qbegin);
  tc::ImageRowsKM<T> lb(x + (int64_t)g * cg * s.h * s.w, s, qend, n0, K, qbegin);
  float acc[4][4][4] = {};
  tc::mainloop<T, true, true>(smem, la, lb, qbegin, qend, acc);  // an empty range leaves zeros: still written
  const ConvWeightEpilogue<OutT> epi{out + (int64_t)split * s.o * K + (int64_t)g * og * K, K};
  tc::for_each_pair(acc, m0, n0, [&](int m, int n, float v0, float v1) {
    if (m >= og) return;
    if (n < K) epi(m, n, v0);
    if (n + 1 < K) epi(m, n + 1, v1);
  });
}

// ---------------------------------------------------------------------------
// Channels-last tensor-core convolutions (fp16/bf16; the default wherever
// the channel counts allow).  The gathered kernels above spend 900-1250
// instructions per 32 HMMA on index arithmetic and 2-byte loads, because in
// NCHW consecutive k of the reduction lie apart in memory.  Here each pass
// first copies its two operands channels-last (transpose_kernel, a few µs
// of memory traffic), so that 8 consecutive channels at one pixel and tap
// are 16 contiguous bytes.  Every operand tile then arrives by cp.async in
// 16-byte chunks, zero-filled where a tap falls into the padding, through
// the 3-stage ring of the dense GEMM (gemm_tc.cu), and a thread's index work
// is a few integer operations per chunk.  The reduction runs over (tap,
// channel), channels innermost, and the outputs keep lamina's layouts:
//   forward          A = w_cl[o][(kh, kw, c)]    B = x_cl[pixel's tap][c]        y  (N, O, OH, OW)
//   backward-data    A = w_cl[c][(tap, o)]       B = dy_cl[tap's output][o]      dx (N, C, H, W), per phase
//   backward-weight  A = dy_cl[q][o]             B = x_cl[q's tap][c]            dW (O, C/G, KH, KW)
// x_cl and dy_cl are NHWC; w_cl is the weight with its input channels
// innermost (forward: (O, KH, KW, C/G)) or its output channels innermost
// (backward-data: (G, C/G, KH, KW, O/G)).  A 16-byte chunk must lie inside
// one tap of one group: C/G % 8 == 0 (forward, backward-weight), O/G % 8 ==
// 0 (backward-data, backward-weight); other layers take the gathered kernels.
namespace cl {

using tc_tile::BK;
using tc_tile::BM;
using tc_tile::BN;
using tc_tile::KSTRIDE;
using tc_tile::RSTRIDE;
using tc_tile::SMEM_BYTES;  // 60 KiB, over the 48 KiB default: asked for per kernel
using tc_tile::THREADS;
using tc_tile::TILE;

// out[b][j][i] = in[b][i][j] for i < R, j < S: NCHW -> NHWC (b = image, i =
// channel, j = pixel) and the weight reorders, elements moved as bits (E:
// uint16_t or uint32_t), through a 32 x 33 shared tile (the odd stride keeps
// the transposed reads free of bank conflicts).
template <typename E>
__global__ void transpose_kernel(E* __restrict__ out, const E* __restrict__ in, int R, int S, int64_t batches) {
  __shared__ E tile[32][33];
  const int i0 = blockIdx.y * 32, j0 = blockIdx.x * 32;
  for (int64_t b = blockIdx.z; b < batches; b += gridDim.z) {
    const E* src = in + b * R * S;
    E* dst = out + b * R * S;
    for (int i = threadIdx.y; i < 32; i += 8)
      if (i0 + i < R && j0 + (int)threadIdx.x < S) tile[i][threadIdx.x] = src[(int64_t)(i0 + i) * S + j0 + threadIdx.x];
    __syncthreads();
    for (int j = threadIdx.y; j < 32; j += 8)
      if (j0 + j < S && i0 + (int)threadIdx.x < R) dst[(int64_t)(j0 + j) * R + i0 + threadIdx.x] = tile[threadIdx.x][j];
    __syncthreads();  // the tile is refilled for the next batch
  }
}


// The same for 16-bit elements in pairs (R and S even, both tensors 4-byte
// aligned): a block moves a 64 x 64 tile by 32-bit loads and stores, where
// the kernel above moves 2 bytes a lane and, with R = 16 (a 16-channel
// layer's x), leaves half its lanes idle on both sides.  Loads: a warp takes
// a channel row's 32 words (64 pixels).  Stores: consecutive lanes take a
// pixel's channel pairs, counted in a power of two of lanes (4-32), then
// the next pixel's, so for R <= 64 a warp writes one contiguous run of the
// NHWC output.  The staged rows are 33 words: the pair reads of one pixel
// fall at most two to a bank.
__global__ void transpose16_pairs_kernel(uint32_t* __restrict__ out, const uint32_t* __restrict__ in, int R, int S,
                                         int64_t batches) {
  constexpr int T = 64, PITCH = T / 2 + 1;
  __shared__ uint32_t tile[T][PITCH];
  const int i0 = blockIdx.y * T, j0 = blockIdx.x * T;
  const int rows = min(T, R - i0), words_in = min(T, S - j0) / 2, words_out = rows / 2;
  int shift = 2;  // a pixel's words take 1 << shift lanes
  while ((1 << shift) < words_out) ++shift;
  const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  for (int64_t b = blockIdx.z; b < batches; b += gridDim.z) {
    const uint32_t* src = in + (b * R * S + (int64_t)i0 * S + j0) / 2;
    uint32_t* dst = out + (b * R * S + (int64_t)j0 * R + i0) / 2;
    if (lane < words_in)
      for (int i = threadIdx.x >> 5; i < rows; i += warps) tile[i][lane] = src[(int64_t)i * (S / 2) + lane];
    __syncthreads();
    for (int e = threadIdx.x; e < (2 * words_in) << shift; e += blockDim.x) {
      const int j = e >> shift, c = e & ((1 << shift) - 1), half = (j & 1) * 16;
      if (c < words_out)
        dst[(int64_t)j * (R / 2) + c] =
            (tile[2 * c][j >> 1] >> half & 0xFFFFu) | (tile[2 * c + 1][j >> 1] >> half & 0xFFFFu) << 16;
    }
    __syncthreads();  // the tile is refilled for the next batch
  }
}

}  // namespace cl

// Forward: both tiles [row][k]; a thread copies rows tid/4 and tid/4 + 64
// of each (A: output channels, B: output pixels) at chunk (tid % 4) * 8 of
// the slice, so one walk over (kh, kw, c) serves both.  Splits as the
// gathered kernel's, in whole slices.
template <typename T, typename OutT>
__global__ void __launch_bounds__(cl::THREADS, 2)
    conv_forward_cl_kernel(OutT* __restrict__ y, const T* __restrict__ xl, const T* __restrict__ wl,
                           const T* __restrict__ bias, ConvShape s, bool vec_y, int chunk) {
  extern __shared__ __align__(16) unsigned char conv_cl_smem[];
  T* smem = reinterpret_cast<T*>(conv_cl_smem);
  const int g = blockIdx.z % s.groups, split = blockIdx.z / s.groups;
  const int cg = s.c / s.groups, og = s.o / s.groups, K = cg * s.kh * s.kw;
  const int kbegin = split * chunk, kend = min(K, kbegin + chunk);
  const int m0 = blockIdx.y * cl::BM, n0 = blockIdx.x * cl::BN;
  const int p = s.oh * s.ow, npix = s.n * p;
  const int row = threadIdx.x >> 2, kc = (threadIdx.x & 3) * 8;
  const ForwardRows<T, 2> rows(xl, wl, s, g, m0, n0, row, 64);
  TapWalk t;  // the thread's chunk of the slice being loaded: k, and its tap (a, b) and channel c
  t.start(kbegin + kc, cg, s.kw);
  const TapStep slice = tap_step(cl::BK, cg, s.kw);
  auto load = [&](T* st, int) {
    const bool kin = t.k < kend;
    const int dh = t.a * s.dh, dw = t.b * s.dw;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const bool a_ok = kin && rows.wok[i];
      cp_async16(smem_addr(st + (row + 64 * i) * cl::KSTRIDE + kc), a_ok ? rows.wrow[i] + t.k : wl, a_ok ? 16 : 0);
      const int ih = rows.ih0[i] + dh, iw = rows.iw0[i] + dw;
      const bool b_ok = kin && (unsigned)ih < (unsigned)s.h && (unsigned)iw < (unsigned)s.w;
      cp_async16(smem_addr(st + cl::TILE + (row + 64 * i) * cl::KSTRIDE + kc),
                 b_ok ? rows.img[i] + (ih * s.w + iw) * s.c + t.c : xl, b_ok ? 16 : 0);
    }
    t.step_by(slice, cg, s.kw);
  };
  float acc[4][4][4] = {};
  tc_tile::ring<T, true, true>(smem, max(0, (kend - kbegin + cl::BK - 1) / cl::BK), load, acc);
  const ConvForwardEpilogue<OutT, T> epi{y + (int64_t)split * npix * s.o + (int64_t)g * og * p,
                                         bias == nullptr ? nullptr : bias + g * og, s.o, p, vec_y};
  tc::epilogue_pairs(epi, acc, m0, n0, og, npix);
}

// Backward-data in one phase: A = w_cl rows c, k = (tap (a, b) of the
// phase, o); B = dy_cl at the output position each (pixel, tap) lands on
// (off the grid: zeros).  Both tiles [row][k], rows tid/4 and tid/4 + 64.
template <typename T>
__global__ void __launch_bounds__(cl::THREADS, 2)
    conv_backward_data_cl_kernel(T* __restrict__ dx, const T* __restrict__ dyl, const T* __restrict__ wl,
                                 ConvShape s, DataPhase ph, bool vec_dx) {
  extern __shared__ __align__(16) unsigned char conv_cl_smem[];
  T* smem = reinterpret_cast<T*>(conv_cl_smem);
  const int g = blockIdx.z;
  const int cg = s.c / s.groups, og = s.o / s.groups, K = og * ph.h.kcount * ph.w.kcount;
  const int m0 = blockIdx.y * cl::BM, n0 = blockIdx.x * cl::BN;
  const int hw = ph.h.count * ph.w.count, npix = s.n * hw;
  const int row = threadIdx.x >> 2, kc = (threadIdx.x & 3) * 8;
  const DataRows<T, 2> rows(dyl, wl, s, ph, g, m0, n0, row, 64);
  TapWalk t;  // as the forward's, over (tap of the phase, o)
  const int nb = ph.w.kcount > 0 ? ph.w.kcount : 1;
  t.start(kc, og, nb);
  const TapStep slice = tap_step(cl::BK, og, nb);
  auto load = [&](T* st, int) {
    const bool kin = t.k < K;
    const int tap = (ph.h.k0 + t.a * ph.h.kstep) * s.kw + ph.w.k0 + t.b * ph.w.kstep;
    const int dh = t.a * ph.h.tstep, dw = t.b * ph.w.tstep;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const bool a_ok = kin && rows.wok[i];
      cp_async16(smem_addr(st + (row + 64 * i) * cl::KSTRIDE + kc), a_ok ? rows.wrow[i] + tap * og + t.c : wl,
                 a_ok ? 16 : 0);
      const int oh = rows.jh[i] - dh, ow = rows.jw[i] - dw;
      const bool b_ok = kin && (unsigned)oh < (unsigned)s.oh && (unsigned)ow < (unsigned)s.ow;
      cp_async16(smem_addr(st + cl::TILE + (row + 64 * i) * cl::KSTRIDE + kc),
                 b_ok ? rows.img[i] + (oh * s.ow + ow) * s.o + t.c : dyl, b_ok ? 16 : 0);
    }
    t.step_by(slice, og, nb);
  };
  float acc[4][4][4] = {};
  tc_tile::ring<T, true, true>(smem, (K + cl::BK - 1) / cl::BK, load, acc);
  const ConvDataEpilogue<T> epi{dx + (int64_t)g * cg * s.h * s.w, s, ph, vec_dx};
  tc::epilogue_pairs(epi, acc, m0, n0, cg, npix);  // a phase with no taps writes its zeros
}

// Backward-weight: the reduction runs over pixels q; both tiles [q][row]
// (A: output channels, B: columns (kh, kw, c)).  A thread copies pixels
// tid/16 and tid/16 + 16 of the slice at rows / columns (tid % 16) * 8 of
// the tiles: its column's tap is decoded once, its pixels walked.  dW is
// written in the weight's own layout (O, C/G, KH, KW), or one split's fp32
// partial sums at the same index.
template <typename T, typename OutT>
__global__ void __launch_bounds__(cl::THREADS, 2)
    conv_backward_weight_cl_kernel(OutT* __restrict__ out, const T* __restrict__ dyl, const T* __restrict__ xl,
                                   ConvShape s, int chunk) {
  extern __shared__ __align__(16) unsigned char conv_cl_smem[];
  T* smem = reinterpret_cast<T*>(conv_cl_smem);
  const int g = blockIdx.z % s.groups, split = blockIdx.z / s.groups;
  const int cg = s.c / s.groups, og = s.o / s.groups, kk = s.kh * s.kw, K = cg * kk;
  const int q_total = s.n * s.oh * s.ow;
  const int qbegin = split * chunk, qend = min(q_total, qbegin + chunk);
  const int m0 = blockIdx.y * cl::BM, n0 = blockIdx.x * cl::BN;
  const int qrow = threadIdx.x >> 4, rc = (threadIdx.x & 15) * 8;
  const WeightChunk<T> wc(dyl, xl, s, g, m0, n0, rc);
  PixelWalk at;
  at.start(qbegin + qrow, s.oh, s.ow);
  int q0 = qbegin + qrow;  // the thread's first pixel of the slice being loaded, as a number and walked (at)
  auto load = [&](T* st, int) {
    PixelWalk w = at;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      if (i == 1) w.advance(16, s.oh, s.ow);
      const int q = q0 + 16 * i;
      wc.copy(smem_addr(st + (qrow + 16 * i) * cl::RSTRIDE + rc),
              smem_addr(st + cl::TILE + (qrow + 16 * i) * cl::RSTRIDE + rc), s, q, q < qend, w);
    }
    at.advance(cl::BK, s.oh, s.ow);
    q0 += cl::BK;
  };
  float acc[4][4][4] = {};
  tc_tile::ring<T, false, false>(smem, max(0, (qend - qbegin + cl::BK - 1) / cl::BK), load, acc);
  const ConvWeightPairs<OutT> epi{out + (int64_t)split * s.o * K + (int64_t)g * og * K, K, cg, kk};
  tc::epilogue_pairs(epi, acc, m0, n0, og, K);
}

bool valid(const ConvShape& s) {
  return s.n > 0 && s.c > 0 && s.o > 0 && s.groups > 0 && s.c % s.groups == 0 && s.o % s.groups == 0 && s.kh > 0 &&
         s.kw > 0 && s.sh > 0 && s.sw > 0 && s.dh > 0 && s.dw > 0 && s.oh > 0 && s.ow > 0 && s.pt >= 0 && s.pl >= 0;
}

// Multiprocessors of the current device.
int sm_count() {
  int dev = 0, sms = 0;  // asked each time, as gemm_wgmma.cu does: the runtime answers from its own cache
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return 132;
  return sms > 0 ? sms : 132;
}

// The A-tile height for m rows: the smallest of 32, 64, 128 that holds them
// (a 16-channel layer in a 128-row tile would leave 7/8 of it idle); TM = height / 16.
int tile_tm(int64_t m) { return m <= 32 ? 2 : m <= 64 ? 4 : 8; }

// tile_tm(m), halved (down to 32 rows) while the halved grid over m x n (z
// groups) still fits in one wave of a block per multiprocessor: ResNet-20's
// 64-channel 8x8 layer at batch 128 is 64 tiles of 64 rows on 132 SMs, 128
// of 32 rows (0.084 -> 0.076 ms on an H100).  Not past one wave: ResNet-50's
// 256-channel 14x14 layer at batch 32 (98 tiles of 128 rows) took 0.353 ms,
// and 0.420 ms as 196 tiles of 64, which read each B tile twice as often.
bool g_tile_fill = true;

int tile_tm_filling(int64_t m, int64_t n, int64_t z) {
  int tm = tile_tm(m);
  if (!g_tile_fill) return tm;
  const int64_t cols = (n + simt::BN - 1) / simt::BN;
  while (tm > 2 && (m + 8 * tm - 1) / (8 * tm) * cols * z <= sm_count()) tm /= 2;
  return tm;
}

// Tiles of 16 TM x 128 over an M x N problem per group (and split).
cudaError_t grid_for(int64_t m, int64_t n, int64_t z, int tm, dim3* grid) {
  const int64_t gx = (n + simt::BN - 1) / simt::BN, gy = (m + 16 * tm - 1) / (16 * tm);
  if (gx > INT32_MAX || gy > 65535 || z > 65535) return cudaErrorInvalidValue;
  *grid = dim3((unsigned)gx, (unsigned)gy, (unsigned)z);
  return cudaSuccess;
}

bool fits_int(int64_t v) { return v <= INT32_MAX; }

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Blocks per multiprocessor of the forward and backward-data kernels, as
// their launch bounds ask (the slots forward's split-K fills): 4 for
// 32-row tiles, 2 for 64 (ptxas, sm_90, fp32 forward: 64 and 119
// registers), and for 128 rows 2 by default (128 registers, 24 bytes
// spilled in the forward's main loop) or 1 with set_conv_two_blocks(false)
// (167 registers, none spilled).
bool g_two_blocks = true;

int forward_blocks_per_sm(int tm) { return tm == 2 ? 4 : tm == 4 ? 2 : g_two_blocks ? 2 : 1; }

// A plan's fields, checked, and resolved against the rule: its TM (rows / 16)
// and whether a 128-row forward or backward-data kernel is the 2-block build.
bool valid_plan(const ConvPlan& p) {
  return (p.rows == 0 || p.rows == 32 || p.rows == 64 || p.rows == 128) && p.blocks >= 0 && p.blocks <= 2;
}
int plan_tm(const ConvPlan& p, int rule_tm) { return p.rows > 0 ? p.rows / 16 : rule_tm; }
bool plan_two_blocks(const ConvPlan& p) { return p.blocks > 0 ? p.blocks == 2 : g_two_blocks; }

template <typename T, typename OutT, bool CL>
cudaError_t launch_forward(int tm, bool two_blocks, dim3 grid, cudaStream_t stream, OutT* y, const T* x, const T* w,
                           const T* bias, const ConvShape& s, bool vec_w, bool vec_x, bool vec_y, int chunk) {
  if (tm == 2)
    conv_forward_kernel<T, OutT, 2, 4, CL>
        <<<grid, simt::kThreads, 0, stream>>>(y, x, w, bias, s, vec_w, vec_x, vec_y, chunk);
  else if (tm == 4)
    conv_forward_kernel<T, OutT, 4, 2, CL>
        <<<grid, simt::kThreads, 0, stream>>>(y, x, w, bias, s, vec_w, vec_x, vec_y, chunk);
  else if (two_blocks)
    conv_forward_kernel<T, OutT, 8, 2, CL>
        <<<grid, simt::kThreads, 0, stream>>>(y, x, w, bias, s, vec_w, vec_x, vec_y, chunk);
  else
    conv_forward_kernel<T, OutT, 8, 1, CL>
        <<<grid, simt::kThreads, 0, stream>>>(y, x, w, bias, s, vec_w, vec_x, vec_y, chunk);
  return cudaGetLastError();
}

template <typename T, typename OutT, bool CL>
cudaError_t launch_backward_weight(int tm, dim3 grid, cudaStream_t stream, OutT* out, const T* dy, const T* x,
                                   const ConvShape& s, bool vec_dy, int chunk) {
  if (tm == 2)
    conv_backward_weight_kernel<T, OutT, 2, CL><<<grid, simt::kThreads, 0, stream>>>(out, dy, x, s, vec_dy, chunk);
  else if (tm == 4)
    conv_backward_weight_kernel<T, OutT, 4, CL><<<grid, simt::kThreads, 0, stream>>>(out, dy, x, s, vec_dy, chunk);
  else
    conv_backward_weight_kernel<T, OutT, 8, CL><<<grid, simt::kThreads, 0, stream>>>(out, dy, x, s, vec_dy, chunk);
  return cudaGetLastError();
}

// fp16/bf16 convolutions on tensor cores (the default) or on the SIMT core.
bool g_tensor_cores = true;

template <typename T>
constexpr bool is_16_bit() {
  return !std::is_same<T, float>::value;
}

// Split ranges of a reduction of `total` into `splits`, whole slices of `slice` each.
int split_chunk(int64_t total, int splits, int slice) {
  const int64_t slices = (total + slice - 1) / slice;
  return (int)((slices + splits - 1) / splits * slice);
}

// The channels-last kernels (the default where a layer's channel counts
// allow them) or the gathered ones.  Process-wide.
bool g_channels_last = true;
bool g_wgmma = true;  // set_conv_wgmma
bool g_wgmma_narrow = true;  // set_conv_wgmma_narrow

enum Pass { kForwardPass = 0, kDataPass = 1, kWeightPass = 2 };

// A 1x1 convolution with stride 1 and no padding: its B is x itself, read
// by the NCHW forward as pixel-contiguous vectors (ImageColumnSource, vec).
bool pointwise(const ConvShape& s) {
  return s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.pt == 0 && s.pl == 0 && s.oh == s.h && s.ow == s.w;
}

// Whether a pass takes the channels-last kernels.  Every 16-byte chunk
// (8 halves, 4 floats) must lie inside one tap of one group, and offsets
// inside an image of x_cl and dy_cl and inside w_cl fit 32 bits.
//   16-bit, on tensor cores: all three passes (their gathers cost 4-6x the
//     GEMM's instructions);
//   fp32, on the SIMT core: backward-weight, and the forward where its
//     reduction is long enough (C/G*KH*KW >= 256) to pay for the copy of x
//     and it is not a pointwise layer (whose NCHW gather is already a dense
//     read); backward-data keeps its phase gathers.
template <typename T>
bool channels_last(int pass, const ConvShape& s) {
  if (!g_channels_last || (is_16_bit<T>() && !g_tensor_cores)) return false;
  const int cg = s.c / s.groups, og = s.o / s.groups, chunk = 16 / sizeof(T);
  if (!fits_int((int64_t)s.h * s.w * s.c) || !fits_int((int64_t)s.oh * s.ow * s.o) ||
      !fits_int((int64_t)s.o * cg * s.kh * s.kw))
    return false;
  if (!is_16_bit<T>()) {
    if (pass == kDataPass) return false;
    if (pass == kForwardPass && ((int64_t)cg * s.kh * s.kw < 256 || pointwise(s))) return false;
  }
  return pass == kForwardPass ? cg % chunk == 0 : pass == kDataPass ? og % chunk == 0 : cg % chunk == 0 && og % chunk == 0;
}

// The channels-last 16-bit passes on wgmma (conv_wgmma.cu): the device runs sm_90a code.
template <typename T>
bool on_wgmma(int pass, const ConvShape& s) {
  return is_16_bit<T>() && g_wgmma && channels_last<T>(pass, s) && device_runs_wgmma();
}

// The channel tile of a pass on wgmma (launchers.h, conv2d_wgmma_tile): 0 off wgmma.
template <typename T>
int wgmma_tile(int pass, const ConvShape& s) {
  if (!on_wgmma<T>(pass, s)) return 0;
  const int narrow = g_wgmma_narrow ? wgmma_narrow_tile(pass, s) : 0;
  return narrow > 0 ? narrow : 128;
}

int64_t round_up_256(int64_t bytes) { return (bytes + 255) / 256 * 256; }

// The workspace of a pass, carved from its start: fp32 split partial sums
// (forward and backward-weight with splits > 1), then the channels-last
// copies of the two operands (passes on those kernels).
struct WorkspaceLayout {
  int64_t partials = 0, first = 0, second = 0;  // bytes of each part
  int64_t total() const { return partials + first + second; }
};

// The channel tile backward-weight's wgmma kernels run with for this dy: the
// narrow kernels read dy's NCHW planes 16 bytes at a time, so a dy off a
// 16-byte boundary takes the 128 x 128 kernel (and the NHWC copy of dy).
template <typename T>
int weight_wgmma_tile(const ConvShape& s, bool dy_aligned) {
  const int nc = wgmma_tile<T>(kWeightPass, s);
  return nc > 0 && nc < 128 && !dy_aligned ? 128 : nc;
}

// dy_aligned (backward-weight): dy starts on a 16-byte boundary, so a pass on
// the narrow wgmma kernel reads it as it lies and needs no copy of it.
template <typename T>
WorkspaceLayout workspace_layout(int pass, const ConvShape& s, int splits, bool dy_aligned) {
  WorkspaceLayout l;
  const int64_t pix = (int64_t)s.n * s.oh * s.ow, wsize = (int64_t)s.o * (s.c / s.groups) * s.kh * s.kw;
  const int64_t xsize = (int64_t)s.n * s.c * s.h * s.w, dysize = pix * s.o;
  if (splits > 1 && pass != kDataPass) l.partials = round_up_256(splits * (pass == kForwardPass ? dysize : wsize) * 4);
  if (channels_last<T>(pass, s)) {
    const int64_t e = sizeof(T);
    const int nc = pass == kWeightPass ? weight_wgmma_tile<T>(s, dy_aligned) : 0;
    const bool copies_dy = nc == 0 || nc == 128;
    l.first = pass == kWeightPass && !copies_dy ? 0 : round_up_256(e * (pass == kForwardPass ? xsize : dysize));
    l.second = round_up_256(e * (pass == kWeightPass ? xsize : wsize));
  }
  return l;
}

// out[b][j][i] = in[b][i][j] (i < R, j < S), elements of 2 or 4 bytes;
// 16-bit ones in pairs where R and S are even and both tensors 4-byte aligned.
template <typename T>
cudaError_t transpose(T* out, const T* in, int64_t batches, int64_t R, int64_t S, cudaStream_t stream) {
  if (batches == 0 || R == 0 || S == 0) return cudaSuccess;
  using Bits = typename std::conditional<sizeof(T) == 2, uint16_t, uint32_t>::type;
  static_assert(sizeof(T) == sizeof(Bits), "2- or 4-byte elements");
  const int64_t gx = (S + 31) / 32, gy = (R + 31) / 32;
  if (gx > INT32_MAX || gy > 65535 || !fits_int(R) || !fits_int(S)) return cudaErrorInvalidValue;
  const dim3 grid((unsigned)gx, (unsigned)gy, (unsigned)std::min<int64_t>(batches, 65535));
  if (sizeof(T) == 2 && R % 2 == 0 && S % 2 == 0 && aligned(out, 4) && aligned(in, 4)) {
    const dim3 pairs((unsigned)((S + 63) / 64), (unsigned)((R + 63) / 64), grid.z);
    cl::transpose16_pairs_kernel<<<pairs, 256, 0, stream>>>(reinterpret_cast<uint32_t*>(out),
                                                            reinterpret_cast<const uint32_t*>(in), (int)R, (int)S,
                                                            batches);
    return cudaGetLastError();
  }
  cl::transpose_kernel<Bits><<<grid, dim3(32, 8), 0, stream>>>(reinterpret_cast<Bits*>(out),
                                                              reinterpret_cast<const Bits*>(in), (int)R, (int)S,
                                                              batches);
  return cudaGetLastError();
}

template <class Kernel>
cudaError_t allow_cl_smem(Kernel kernel) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, cl::SMEM_BYTES);
}

}  // namespace

void set_conv_tensor_cores(bool enabled) { g_tensor_cores = enabled; }
bool conv_tensor_cores() { return g_tensor_cores; }
void set_conv_tile_fill(bool enabled) { g_tile_fill = enabled; }
bool conv_tile_fill() { return g_tile_fill; }
void set_conv_two_blocks(bool enabled) { g_two_blocks = enabled; }
bool conv_two_blocks() { return g_two_blocks; }
void set_conv_channels_last(bool enabled) { g_channels_last = enabled; }
bool conv_channels_last() { return g_channels_last; }
void set_conv_wgmma(bool enabled) { g_wgmma = enabled; }
bool conv_wgmma() { return g_wgmma; }
void set_conv_wgmma_narrow(bool enabled) { g_wgmma_narrow = enabled; }
bool conv_wgmma_narrow() { return g_wgmma_narrow; }

template <typename T>
bool conv2d_on_wgmma(int pass, const ConvShape& s) {
  return valid(s) && on_wgmma<T>(pass, s);
}

template <typename T>
int conv2d_wgmma_tile(int pass, const ConvShape& s) {
  return valid(s) ? wgmma_tile<T>(pass, s) : 0;
}

template <typename T>
int64_t conv2d_workspace_size(int pass, const ConvShape& s, int splits, bool dy_aligned) {
  if (!valid(s) || splits < 1 || pass < 0 || pass > 2) return 0;
  return workspace_layout<T>(pass, s, splits, dy_aligned).total();
}

template <typename T>
cudaError_t conv2d_forward(T* y, void* workspace_, const T* x, const T* w, const T* bias, const ConvShape& s,
                           int splits, cudaStream_t stream, ConvPlan plan) {
  if (!valid(s) || splits < 1 || !valid_plan(plan)) return cudaErrorInvalidValue;
  const int64_t pix = (int64_t)s.n * s.oh * s.ow, K = (int64_t)(s.c / s.groups) * s.kh * s.kw;
  if (!fits_int(pix) || !fits_int(K)) return cudaErrorInvalidValue;
  const WorkspaceLayout layout = workspace_layout<T>(kForwardPass, s, splits, false);
  if (layout.total() > 0 && workspace_ == nullptr) return cudaErrorInvalidValue;
  unsigned char* bytes = static_cast<unsigned char*>(workspace_);
  float* workspace = static_cast<float*>(workspace_);  // split partial sums first
  const int p = s.oh * s.ow;
  // a 1x1 convolution reading x as it lies (also group offsets stay aligned: g * Cg * H*W, H*W % 4 == 0)
  const bool vec_x = s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.pt == 0 && s.pl == 0 && s.oh == s.h &&
                     s.ow == s.w && p % 4 == 0 && aligned(x, 4 * sizeof(T));
  if constexpr (is_16_bit<T>()) {
    if (channels_last<T>(kForwardPass, s)) {  // x to NHWC, w to (O, KH, KW, C/G), then 128 x 128 tiles by cp.async
      T* xl = reinterpret_cast<T*>(bytes + layout.partials);
      T* wl = reinterpret_cast<T*>(bytes + layout.partials + layout.first);
      if (cudaError_t e = transpose(xl, x, s.n, s.c, (int64_t)s.h * s.w, stream)) return e;
      if (cudaError_t e = transpose(wl, w, s.o, s.c / s.groups, (int64_t)s.kh * s.kw, stream)) return e;
      if (const int nc = wgmma_tile<T>(kForwardPass, s)) {  // conv_wgmma.cu: k in slices of 64
        if (splits == 1) return conv_forward_wgmma<T>(y, false, xl, wl, bias, s, 1, nc, stream);
        if (cudaError_t e = conv_forward_wgmma<T>(workspace, true, xl, wl, nullptr, s, splits, nc, stream)) return e;
      } else {
        const int chunk = split_chunk(K, splits, cl::BK);
        dim3 grid;
        if (cudaError_t e = grid_for(s.o / s.groups, pix, (int64_t)s.groups * splits, 8, &grid)) return e;
        if (splits == 1) {
          if (cudaError_t e = allow_cl_smem(conv_forward_cl_kernel<T, T>)) return e;
          conv_forward_cl_kernel<T, T><<<grid, cl::THREADS, cl::SMEM_BYTES, stream>>>(
              y, xl, wl, bias, s, p % 4 == 0 && aligned(y, 4 * sizeof(T)), chunk);
          return cudaGetLastError();
        }
        if (cudaError_t e = allow_cl_smem(conv_forward_cl_kernel<T, float>)) return e;
        conv_forward_cl_kernel<T, float><<<grid, cl::THREADS, cl::SMEM_BYTES, stream>>>(workspace, xl, wl, nullptr, s,
                                                                                         p % 4 == 0, chunk);
        if (cudaError_t e = cudaGetLastError()) return e;
      }
      const int64_t n = pix * s.o;
      sum_splits_kernel<T><<<grid_stride_blocks(n, 256), 256, 0, stream>>>(y, workspace, n, splits, bias, p, s.o);
      return cudaGetLastError();
    }
    if (g_tensor_cores) {  // 128 x 128 tiles, k in slices of 32
      const int chunk = split_chunk(K, splits, tc::BK);
      dim3 grid;
      if (cudaError_t e = grid_for(s.o / s.groups, pix, (int64_t)s.groups * splits, 8, &grid)) return e;
      const bool vec_w = K % 8 == 0 && aligned(w, 16);
      if (splits == 1) {
        conv_forward_tc_kernel<T, T><<<grid, tc::THREADS, tc::SMEM_BYTES, stream>>>(
            y, x, w, bias, s, vec_w, vec_x, p % 4 == 0 && aligned(y, 4 * sizeof(T)), chunk);
        return cudaGetLastError();
      }
      conv_forward_tc_kernel<T, float><<<grid, tc::THREADS, tc::SMEM_BYTES, stream>>>(
          workspace, x, w, nullptr, s, vec_w, vec_x, p % 4 == 0 && aligned(workspace, 16), chunk);
      if (cudaError_t e = cudaGetLastError()) return e;
      const int64_t n = pix * s.o;
      sum_splits_kernel<T><<<grid_stride_blocks(n, 256), 256, 0, stream>>>(y, workspace, n, splits, bias, p, s.o);
      return cudaGetLastError();
    }
  }
  // Each split covers a whole number of BK-slices of k.
  const int chunk = split_chunk(K, splits, BK);
  const int tm = plan_tm(plan, tile_tm_filling(s.o / s.groups, pix, s.groups));
  const bool two = plan_two_blocks(plan);
  dim3 grid;
  if (cudaError_t e = grid_for(s.o / s.groups, pix, (int64_t)s.groups * splits, tm, &grid)) return e;
  const bool vec_y = p % 4 == 0 && aligned(y, 4 * sizeof(T)), vec_ws = p % 4 == 0 && aligned(workspace, 16);
  if constexpr (!is_16_bit<T>()) {
    if (channels_last<T>(kForwardPass, s)) {  // x to NHWC, w to (O, KH, KW, C/G)
      T* xl = reinterpret_cast<T*>(bytes + layout.partials);
      T* wl = reinterpret_cast<T*>(bytes + layout.partials + layout.first);
      if (cudaError_t e = transpose(xl, x, s.n, s.c, (int64_t)s.h * s.w, stream)) return e;
      if (cudaError_t e = transpose(wl, w, s.o, s.c / s.groups, (int64_t)s.kh * s.kw, stream)) return e;
      if (splits == 1) return launch_forward<T, T, true>(tm, two, grid, stream, y, xl, wl, bias, s, true, false, vec_y, chunk);
      if (cudaError_t e = launch_forward<T, float, true>(tm, two, grid, stream, workspace, xl, wl, nullptr, s, true,
                                                         false, vec_ws, chunk))
        return e;
      const int64_t n = pix * s.o;
      sum_splits_kernel<T><<<grid_stride_blocks(n, 256), 256, 0, stream>>>(y, workspace, n, splits, bias, p, s.o);
      return cudaGetLastError();
    }
  }
  const bool vec_w = K % 4 == 0 && aligned(w, 4 * sizeof(T));
  if (splits == 1) return launch_forward<T, T, false>(tm, two, grid, stream, y, x, w, bias, s, vec_w, vec_x, vec_y, chunk);
  if (cudaError_t e = launch_forward<T, float, false>(tm, two, grid, stream, workspace, x, w, nullptr, s, vec_w, vec_x,
                                                      vec_ws, chunk))
    return e;
  const int64_t n = pix * s.o;
  sum_splits_kernel<T><<<grid_stride_blocks(n, 256), 256, 0, stream>>>(y, workspace, n, splits, bias, p, s.o);
  return cudaGetLastError();
}

// Forward's split count.  One split whenever the tiles fill the slots
// (forward_blocks_per_sm per multiprocessor) or the reduction is short
// (under 1024: too little work per split to pay for the partial sums).
// Otherwise the fewest splits, at least 2 and with ranges of at least 256,
// whose blocks fill 85% of the waves they take; failing that, the count
// that fills them best.  ResNet-50's 256-channel 14x14 layer at batch 32:
// 98 tiles of 128 rows over 132 slots, K = 2304: 4 splits, 392 blocks in
// three full waves.  On tensor cores (16-bit): 128 x 128 tiles, two
// blocks per SM with mma.sync, one with wgmma; wgmma's narrow kernels
// (channel tiles of 16-64 by 128 pixels) two.
int conv2d_forward_splits(const ConvShape& s, bool sixteen_bit) {
  if (!valid(s)) return 1;
  const int64_t pix = (int64_t)s.n * s.oh * s.ow, K = (int64_t)(s.c / s.groups) * s.kh * s.kw;
  const int og = s.o / s.groups;
  const bool tensor = sixteen_bit && g_tensor_cores;
  const int tm = tensor ? 8 : tile_tm_filling(og, pix, s.groups);
  const int nc = tensor ? wgmma_tile<__half>(kForwardPass, s) : 0;  // 0: not on wgmma
  const int rows = nc > 0 ? nc : 16 * tm;
  const int64_t tiles = (og + rows - 1) / rows * ((pix + simt::BN - 1) / simt::BN) * s.groups;
  // blocks per SM: 2 of the mma.sync kernels, 1 of the wgmma one (4 stages of 32 KiB), 2 of the narrow ones
  const int64_t slots = (int64_t)(nc == 128 ? 1 : tensor ? 2 : forward_blocks_per_sm(tm)) * sm_count();
  if (tiles >= slots || K < 1024) return 1;
  const int64_t most = std::min<int64_t>({8, K / 256, 65535 / s.groups});
  int best = 1;
  double best_fill = 0.0;
  for (int sp = 2; sp <= most; ++sp) {
    const int64_t blocks = tiles * sp, waves = (blocks + slots - 1) / slots;
    const double fill = double(blocks) / double(waves * slots);
    if (fill >= 0.85) return sp;
    if (fill > best_fill + 1e-9) best = sp, best_fill = fill;
  }
  return best;
}

template <typename T>
cudaError_t conv2d_backward_data(T* dx, void* workspace, const T* dy, const T* w, const ConvShape& s,
                                 cudaStream_t stream, ConvPlan plan) {
  if (!valid(s) || !valid_plan(plan)) return cudaErrorInvalidValue;
  const int64_t K = (int64_t)(s.o / s.groups) * s.kh * s.kw;
  if (!fits_int((int64_t)s.n * s.h * s.w) || !fits_int(K) || !fits_int(K * s.c)) return cudaErrorInvalidValue;
  const bool cl_path = channels_last<T>(kDataPass, s);
  const int wgmma = wgmma_tile<T>(kDataPass, s);  // the channel tile there, 0 off wgmma
  T* dyl = nullptr;
  T* wl = nullptr;
  if constexpr (is_16_bit<T>()) {
    if (cl_path) {  // dy to NHWC, w to (G, C/G, KH, KW, O/G)
      const WorkspaceLayout layout = workspace_layout<T>(kDataPass, s, 1, false);
      if (workspace == nullptr) return cudaErrorInvalidValue;
      dyl = reinterpret_cast<T*>(static_cast<unsigned char*>(workspace) + layout.partials);
      wl = reinterpret_cast<T*>(static_cast<unsigned char*>(workspace) + layout.partials + layout.first);
      if (cudaError_t e = transpose(dyl, dy, s.n, s.o, (int64_t)s.oh * s.ow, stream)) return e;
      if (cudaError_t e =
              transpose(wl, w, s.groups, s.o / s.groups, (int64_t)(s.c / s.groups) * s.kh * s.kw, stream))
        return e;
    }
  }
  for (int phase = 0; phase < s.sh * s.sw; ++phase) {
    const DataPhase ph = data_phase(s, phase);
    const int64_t pix = (int64_t)s.n * ph.h.count * ph.w.count;
    if (pix == 0) continue;  // no input pixel has this phase
    // stride 1: the one phase is the whole image, so four columns are contiguous when H*W % 4 == 0
    const bool vec = s.sh == 1 && s.sw == 1 && (int64_t)s.h * s.w % 4 == 0 && aligned(dx, 4 * sizeof(T));
    if constexpr (is_16_bit<T>()) {
      if (cl_path && wgmma) {  // conv_wgmma.cu
        if (cudaError_t e = conv_backward_data_wgmma<T>(dx, dyl, wl, s, phase, wgmma, stream)) return e;
        continue;
      }
      if (cl_path) {
        dim3 grid;
        if (cudaError_t e = grid_for(s.c / s.groups, pix, s.groups, 8, &grid)) return e;
        if (cudaError_t e = allow_cl_smem(conv_backward_data_cl_kernel<T>)) return e;
        conv_backward_data_cl_kernel<T><<<grid, cl::THREADS, cl::SMEM_BYTES, stream>>>(dx, dyl, wl, s, ph, vec);
        if (cudaError_t e = cudaGetLastError()) return e;
        continue;
      }
      if (g_tensor_cores) {
        dim3 grid;
        if (cudaError_t e = grid_for(s.c / s.groups, pix, s.groups, 8, &grid)) return e;
        conv_backward_data_tc_kernel<T><<<grid, tc::THREADS, tc::SMEM_BYTES, stream>>>(dx, dy, w, s, ph, vec);
        if (cudaError_t e = cudaGetLastError()) return e;
        continue;
      }
    }
    const int tm = plan_tm(plan, tile_tm_filling(s.c / s.groups, pix, s.groups));
    dim3 grid;
    if (cudaError_t e = grid_for(s.c / s.groups, pix, s.groups, tm, &grid)) return e;
    if (tm == 2)
      conv_backward_data_kernel<T, 2, 4><<<grid, simt::kThreads, 0, stream>>>(dx, dy, w, s, ph, vec);
    else if (tm == 4)
      conv_backward_data_kernel<T, 4, 2><<<grid, simt::kThreads, 0, stream>>>(dx, dy, w, s, ph, vec);
    else if (plan_two_blocks(plan))
      conv_backward_data_kernel<T, 8, 2><<<grid, simt::kThreads, 0, stream>>>(dx, dy, w, s, ph, vec);
    else
      conv_backward_data_kernel<T, 8, 1><<<grid, simt::kThreads, 0, stream>>>(dx, dy, w, s, ph, vec);
    if (cudaError_t e = cudaGetLastError()) return e;
  }
  return cudaSuccess;
}

template <typename T>
cudaError_t conv2d_backward_weight(T* dw, void* workspace_, const T* dy, const T* x, const ConvShape& s, int splits,
                                   cudaStream_t stream, ConvPlan plan) {
  if (!valid(s) || splits < 1 || !valid_plan(plan)) return cudaErrorInvalidValue;
  const int64_t q_total = (int64_t)s.n * s.oh * s.ow, K = (int64_t)(s.c / s.groups) * s.kh * s.kw;
  if (!fits_int(q_total) || !fits_int(K) || !fits_int((int64_t)s.n * s.c * s.h * s.w)) return cudaErrorInvalidValue;
  const WorkspaceLayout layout = workspace_layout<T>(kWeightPass, s, splits, aligned(dy, 16));
  if (layout.total() > 0 && workspace_ == nullptr) return cudaErrorInvalidValue;
  unsigned char* bytes = static_cast<unsigned char*>(workspace_);
  float* workspace = static_cast<float*>(workspace_);  // split partial sums first
  if constexpr (is_16_bit<T>()) {
    if (channels_last<T>(kWeightPass, s)) {  // dy and x to NHWC, then 128 x 128 tiles by cp.async, split over pixels
      T* dyl = reinterpret_cast<T*>(bytes + layout.partials);  // (no room for it on the narrow kernel: layout.first 0)
      T* xl = reinterpret_cast<T*>(bytes + layout.partials + layout.first);
      const int nc = weight_wgmma_tile<T>(s, aligned(dy, 16));
      if (nc == 0 || nc == 128)  // (the narrow kernel reads dy as it lies)
        if (cudaError_t e = transpose(dyl, dy, s.n, s.o, (int64_t)s.oh * s.ow, stream)) return e;
      if (cudaError_t e = transpose(xl, x, s.n, s.c, (int64_t)s.h * s.w, stream)) return e;
      if (nc > 0) {  // conv_wgmma.cu: pixels in slices of 64
        const T* d = nc < 128 ? dy : dyl;
        if (splits == 1) return conv_backward_weight_wgmma<T>(dw, false, d, xl, s, 1, nc, stream);
        if (cudaError_t e = conv_backward_weight_wgmma<T>(workspace, true, d, xl, s, splits, nc, stream)) return e;
        const int64_t n = (int64_t)s.o * K;
        sum_splits_kernel<T><<<grid_stride_blocks(n, 256), 256, 0, stream>>>(dw, workspace, n, splits, nullptr, 1, 1);
        return cudaGetLastError();
      }
      const int chunk = split_chunk(q_total, splits, cl::BK);
      dim3 grid;
      if (cudaError_t e = grid_for(s.o / s.groups, K, (int64_t)s.groups * splits, 8, &grid)) return e;
      if (splits == 1) {
        if (cudaError_t e = allow_cl_smem(conv_backward_weight_cl_kernel<T, T>)) return e;
        conv_backward_weight_cl_kernel<T, T><<<grid, cl::THREADS, cl::SMEM_BYTES, stream>>>(dw, dyl, xl, s, chunk);
        return cudaGetLastError();
      }
      if (cudaError_t e = allow_cl_smem(conv_backward_weight_cl_kernel<T, float>)) return e;
      conv_backward_weight_cl_kernel<T, float><<<grid, cl::THREADS, cl::SMEM_BYTES, stream>>>(workspace, dyl, xl, s,
                                                                                               chunk);
      if (cudaError_t e = cudaGetLastError()) return e;
      const int64_t n = (int64_t)s.o * K;
      sum_splits_kernel<T><<<grid_stride_blocks(n, 256), 256, 0, stream>>>(dw, workspace, n, splits, nullptr, 1, 1);
      return cudaGetLastError();
    }
    if (g_tensor_cores) {  // splits of whole 32-pixel slices
      const int chunk = split_chunk(q_total, splits, tc::BK);
      dim3 grid;
      if (cudaError_t e = grid_for(s.o / s.groups, K, (int64_t)s.groups * splits, 8, &grid)) return e;
      const bool vec_dy = s.oh * s.ow % 8 == 0 && aligned(dy, 16);
      if (splits == 1) {
        conv_backward_weight_tc_kernel<T, T><<<grid, tc::THREADS, tc::SMEM_BYTES, stream>>>(dw, dy, x, s, vec_dy,
                                                                                             chunk);
        return cudaGetLastError();
      }
      conv_backward_weight_tc_kernel<T, float><<<grid, tc::THREADS, tc::SMEM_BYTES, stream>>>(workspace, dy, x, s,
                                                                                              vec_dy, chunk);
      if (cudaError_t e = cudaGetLastError()) return e;
      const int64_t n = (int64_t)s.o * K;
      sum_splits_kernel<T><<<grid_stride_blocks(n, 256), 256, 0, stream>>>(dw, workspace, n, splits, nullptr, 1, 1);
      return cudaGetLastError();
    }
  }
  // Each split covers a whole number of BK-slices of q.
  const int chunk = split_chunk(q_total, splits, BK);
  const int tm = plan_tm(plan, tile_tm(s.o / s.groups));
  dim3 grid;
  if (cudaError_t e = grid_for(s.o / s.groups, K, (int64_t)s.groups * splits, tm, &grid)) return e;
  cudaError_t e = cudaSuccess;
  bool launched = false;
  if constexpr (!is_16_bit<T>()) {
    if (channels_last<T>(kWeightPass, s)) {  // dy and x to NHWC; dy_cl read as a dense [q][O] matrix
      T* dyl = reinterpret_cast<T*>(bytes + layout.partials);
      T* xl = reinterpret_cast<T*>(bytes + layout.partials + layout.first);
      if ((e = transpose(dyl, dy, s.n, s.o, (int64_t)s.oh * s.ow, stream))) return e;
      if ((e = transpose(xl, x, s.n, s.c, (int64_t)s.h * s.w, stream))) return e;
      e = splits == 1 ? launch_backward_weight<T, T, true>(tm, grid, stream, dw, dyl, xl, s, true, chunk)
                      : launch_backward_weight<T, float, true>(tm, grid, stream, workspace, dyl, xl, s, true, chunk);
      launched = true;
    }
  }
  if (!launched) {
    const bool vec_dy = s.oh * s.ow % 4 == 0 && aligned(dy, 4 * sizeof(T));
    e = splits == 1 ? launch_backward_weight<T, T, false>(tm, grid, stream, dw, dy, x, s, vec_dy, chunk)
                    : launch_backward_weight<T, float, false>(tm, grid, stream, workspace, dy, x, s, vec_dy, chunk);
  }
  if (e != cudaSuccess || splits == 1) return e;
  const int64_t n = (int64_t)s.o * K;
  sum_splits_kernel<T><<<grid_stride_blocks(n, 256), 256, 0, stream>>>(dw, workspace, n, splits, nullptr, 1, 1);
  return cudaGetLastError();
}

#define LAMINA_INSTANTIATE(T)                                                                                    \
  template cudaError_t conv2d_forward<T>(T*, void*, const T*, const T*, const T*, const ConvShape&, int, cudaStream_t, \
                                         ConvPlan);                                                                    \
  template cudaError_t conv2d_backward_data<T>(T*, void*, const T*, const T*, const ConvShape&, cudaStream_t,          \
                                               ConvPlan);                                                              \
  template cudaError_t conv2d_backward_weight<T>(T*, void*, const T*, const T*, const ConvShape&, int, cudaStream_t,   \
                                                 ConvPlan);                                                            \
  template int64_t conv2d_workspace_size<T>(int, const ConvShape&, int, bool);                                         \
  template bool conv2d_on_wgmma<T>(int, const ConvShape&);                                                           \
  template int conv2d_wgmma_tile<T>(int, const ConvShape&);

LAMINA_INSTANTIATE(float)
LAMINA_INSTANTIATE(__half)
LAMINA_INSTANTIATE(__nv_bfloat16)
#undef LAMINA_INSTANTIATE

}  // namespace cuda
}  // namespace lamina
