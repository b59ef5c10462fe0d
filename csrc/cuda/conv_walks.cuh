// Index walks, backward-data's stride phases and the forward and
// backward-data epilogues of the implicit-GEMM convolutions, shared by
// conv.cu (SIMT core and mma.sync) and conv_wgmma.cu (wgmma, sm_90a).
// Conventions as in conv.cu.
//
// Include tc_primitives.cuh before this header (WeightChunk copies by
// cp.async): the tests' kernel emulator substitutes its own copy of it,
// which an include from here would bypass.
#pragma once
#include <cstdint>

#include "launchers.h"
#include "simt_gemm.cuh"

namespace lamina {
namespace cuda {
namespace {

// A pixel count d as images, rows and columns: d = dn*OH*OW + dr*OW + dc,
// dr < OH, dc < OW.
struct PixelStep {
  int dn, dr, dc;
};
__host__ __device__ inline PixelStep pixel_step(int d, int OH, int OW) {
  const int p = OH * OW, dn = d / p, r = d - dn * p;
  return {dn, r / OW, r % OW};
}

// Pixel q = (n, oh, ow) of an N x OH x OW grid, moved forward without
// dividing.  The loaders and epilogues that walk consecutive pixels decode
// once and then step: two divisions per element (q / (OH*OW), then by OW)
// cost more instructions than the FMAs they fed in backward-weight.
struct PixelWalk {
  int n, oh, ow;
  __device__ void start(int q, int OH, int OW) {
    const int p = OH * OW;
    n = q / p;
    const int r = q - n * p;
    oh = r / OW;
    ow = r - oh * OW;
  }
  __device__ void step(int OH, int OW) {
    if (++ow == OW) {
      ow = 0;
      if (++oh == OH) {
        oh = 0;
        ++n;
      }
    }
  }
  // Forward by a fixed count decomposed once (pixel_step): at most one carry per digit, no loop.
  __device__ void step_by(const PixelStep& d, int OH, int OW) {
    ow += d.dc;
    oh += d.dr;
    n += d.dn;
    if (ow >= OW) {
      ow -= OW;
      ++oh;
    }
    if (oh >= OH) {
      oh -= OH;
      ++n;
    }
  }
  __device__ void advance(int d, int OH, int OW) {  // d >= 0; a BK-slice is 8 pixels
    ow += d;
    while (ow >= OW) {
      ow -= OW;
      if (++oh == OH) {
        oh = 0;
        ++n;
      }
    }
  }
};

// A count d of a channels-last reduction as rows, columns and channels of
// taps: d = (da * nb + db) * inner + dc, db < nb, dc < inner.
struct TapStep {
  int d, da, db, dc;
};
__host__ __device__ inline TapStep tap_step(int d, int inner, int nb) {
  const int taps = d / inner;
  return {d, taps / nb, taps % nb, d - taps * inner};
}

// A thread's position k = (tap, c) in a channels-last reduction whose
// `inner` channels (a multiple of 4) are innermost and whose taps run over
// rows a and columns b < nb; moved forward slice by slice without dividing.
struct TapWalk {
  int k, c, a, b;
  __device__ void start(int k_, int inner, int nb) {
    k = k_;
    const int tap = k / inner;
    c = k - tap * inner;
    a = tap / nb;
    b = tap - a * nb;
  }
  __device__ void advance(int d, int inner, int nb) {  // d: a slice (32 on tensor cores, 8 on the SIMT core)
    k += d;
    c += d;
    while (c >= inner) {  // once when inner >= d, else up to d / inner times (8 channels, d = 64: 8)
      c -= inner;
      if (++b == nb) {
        b = 0;
        ++a;
      }
    }
  }
  // Forward by a fixed count decomposed once (tap_step): at most one carry per digit, no loop, where
  // advance loops d / inner times (a 16-channel layer: 4 times a 64-k slice).
  __device__ void step_by(const TapStep& d, int inner, int nb) {
    k += d.d;
    c += d.dc;
    a += d.da;
    b += d.db;
    if (c >= inner) {
      c -= inner;
      ++b;
    }
    if (b >= nb) {
      b -= nb;
      ++a;
    }
  }
};


// A row or column that no tap brings inside the image.
constexpr int kNowhere = -(1 << 29);

// The channels-last forward's rows (conv.cu's mma.sync kernel, conv_wgmma.cu's
// wgmma one): a thread's R rows of each tile, from `row` on, `step` apart.
// A: the weight rows (O, KH, KW, C/G) of output channels m0 + row + step i;
// B: output pixels n0 + row + step i, by their image in x_cl and their
// window's top-left input position (kNowhere past the last pixel).
template <typename T, int R>
struct ForwardRows {
  const T* wrow[R];
  bool wok[R];
  const T* img[R];  // the pixel's image in x_cl, at the group's first channel
  int ih0[R], iw0[R];
  __device__ ForwardRows(const T* xl, const T* wl, const ConvShape& s, int g, int m0, int n0, int row, int step) {
    const int cg = s.c / s.groups, og = s.o / s.groups, K = cg * s.kh * s.kw, p = s.oh * s.ow;
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const int r = m0 + row + step * i, q = n0 + row + step * i;
      wok[i] = r < og;
      wrow[i] = wl + (int64_t)(g * og + (wok[i] ? r : 0)) * K;
      img[i] = xl;
      ih0[i] = kNowhere;
      iw0[i] = 0;
      if (q < s.n * p) {
        const int n = q / p, rem = q - n * p, oh = rem / s.ow, ow = rem - oh * s.ow;
        img[i] = xl + (int64_t)n * s.h * s.w * s.c + g * cg;
        ih0[i] = oh * s.sh - s.pt;
        iw0[i] = ow * s.sw - s.pl;
      }
    }
  }
};

// Backward-data, decomposed by stride.  An input row ih takes terms only
// from the taps kh with ih + pt - kh*dh ≡ 0 (mod sh), so grouping the input
// rows by their phase r = (ih + pt) mod sh makes each group a dense
// problem: rows ih = first, first + sh, ... and taps kh = k0, k0 + kstep, ...
// (the kh with kh*dh ≡ r, kstep = sh / gcd(sh, dh)), and every (row, tap)
// pair lands on the output row oh = (ih + pt - kh*dh) / sh exactly, or off
// the edge.  Masking instead of decomposing would spend 1 - 1/(sh*sw) of the
// FMAs on zeros (3/4 for stride 2).  Stride 1 is one phase: the plain
// gathered GEMM.  Mirrored in lamina/ops/reference.py (implicit_data_phase).
struct PhaseAxis {
  int first, count;  // input positions first + j*stride, j < count
  int k0, kstep, kcount;  // taps k0 + i*kstep, i < kcount (0 when no tap has this phase)
  int base;  // output position of j = 0 and tap i = 0 is base + j - (t0 + i*tstep)
  int t0, tstep;
};

inline PhaseAxis phase_axis(int r, int size, int pad, int kernel, int stride, int dil) {
  PhaseAxis a{};
  a.first = ((r - pad) % stride + stride) % stride;
  a.count = a.first < size ? (size - a.first + stride - 1) / stride : 0;
  int g = stride, d = dil;  // gcd(stride, dil)
  while (d != 0) {
    const int t = g % d;
    g = d;
    d = t;
  }
  a.kstep = stride / g;
  a.k0 = 0;
  while (a.k0 < kernel && a.k0 < a.kstep && (a.k0 * dil) % stride != r) ++a.k0;
  a.kcount = a.k0 < kernel && a.k0 < a.kstep ? (kernel - a.k0 + a.kstep - 1) / a.kstep : 0;
  a.base = (a.first + pad - r) / stride;
  a.t0 = (a.k0 * dil - r) / stride;  // exact when kcount > 0
  a.tstep = a.kstep * dil / stride;
  return a;
}

struct DataPhase {
  PhaseAxis h, w;
};

inline DataPhase data_phase(const ConvShape& s, int phase) {
  return {phase_axis(phase / s.sw, s.h, s.pt, s.kh, s.sh, s.dh), phase_axis(phase % s.sw, s.w, s.pl, s.kw, s.sw, s.dw)};
}

// Backward-data's rows in one phase (conv.cu's mma.sync kernel, conv_wgmma.cu's
// wgmma one): a thread's R rows of each tile, from `row` on, `step` apart.
// A: the rows of w_cl (G, C/G, KH, KW, O/G) of input channels m0 + row + step i;
// B: the phase's input pixels n0 + row + step i, by their image in dy_cl and
// the output position they reach through the phase's tap (0, 0) (kNowhere
// past the last pixel).
template <typename T, int R>
struct DataRows {
  const T* wrow[R];
  bool wok[R];
  const T* img[R];  // the pixel's image in dy_cl, at the group's first channel
  int jh[R], jw[R];
  __device__ DataRows(const T* dyl, const T* wl, const ConvShape& s, const DataPhase& ph, int g, int m0, int n0,
                      int row, int step) {
    const int cg = s.c / s.groups, og = s.o / s.groups, hw = ph.h.count * ph.w.count;
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const int r = m0 + row + step * i, q = n0 + row + step * i;
      wok[i] = r < cg;
      wrow[i] = wl + ((int64_t)g * cg + (wok[i] ? r : 0)) * s.kh * s.kw * og;
      img[i] = dyl;
      jh[i] = kNowhere;
      jw[i] = 0;
      if (q < s.n * hw) {
        const int n = q / hw, rem = q - n * hw, a = rem / ph.w.count, b = rem - a * ph.w.count;
        img[i] = dyl + (int64_t)n * s.oh * s.ow * s.o + g * og;
        jh[i] = ph.h.base + a - ph.h.t0;
        jw[i] = ph.w.base + b - ph.w.t0;
      }
    }
  }
};

// Backward-weight's chunk of a thread, channels-last (conv.cu's mma.sync
// kernel, conv_wgmma.cu's wgmma one): 8 output channels m0 + rc of dy_cl,
// read as a dense [q][O] matrix (A), and 8 columns n0 + rc = (tap, c..c+7)
// of x_cl (B), copied at each pixel q the thread walks (w).  A chunk lies
// inside one tap since C/G % 8 == 0.
template <typename T>
struct WeightChunk {
  const T* dcol;  // dy_cl at the chunk's first output channel; + q * O
  const T* xcol;  // x_cl at the chunk's first input channel; + ((n * H + ih) * W + iw) * C
  bool o_ok, c_ok;
  int dh, dw;  // the tap's offset from the window's top-left corner
  __device__ WeightChunk(const T* dyl, const T* xl, const ConvShape& s, int g, int m0, int n0, int rc) {
    const int cg = s.c / s.groups, og = s.o / s.groups;
    o_ok = m0 + rc < og;
    c_ok = n0 + rc < cg * s.kh * s.kw;
    dcol = dyl + g * og + (o_ok ? m0 + rc : 0);
    int tap = 0, c = 0;
    if (c_ok) {
      tap = (n0 + rc) / cg;
      c = n0 + rc - tap * cg;
    }
    dh = (tap / s.kw) * s.dh - s.pt;
    dw = (tap % s.kw) * s.dw - s.pl;
    xcol = xl + g * cg + c;
  }
  // Both chunks at pixel q (walked to w) into shared memory at a and b;
  // zeros where q is out of range (in: false) or the tap in the padding.
  __device__ void copy(uint32_t a, uint32_t b, const ConvShape& s, int q, bool in, const PixelWalk& w) const {
    const bool a_ok = in && o_ok;
    cp_async16(a, a_ok ? dcol + (int64_t)q * s.o : dcol, a_ok ? 16 : 0);
    const int ih = w.oh * s.sh + dh, iw = w.ow * s.sw + dw;
    const bool b_ok = in && c_ok && (unsigned)ih < (unsigned)s.h && (unsigned)iw < (unsigned)s.w;
    cp_async16(b, b_ok ? xcol + (((int64_t)w.n * s.h + ih) * s.w + iw) * s.c : xcol, b_ok ? 16 : 0);
  }
};

// y[n, o, p] of the group (or, OutT = float, one split's fp32 partial sums at
// the same index, bias left to the sum).  Columns are output pixels q =
// (n, p): decoded once per four (simt::epilogue_columns), stored as one
// vector where P % 4 == 0 and y is aligned (vec: the four then share an
// image and are contiguous, since the tiles start at multiples of 4).
template <typename OutT, typename T>
struct ConvForwardEpilogue {
  OutT* y;  // y (or the split's slab) + group's first channel
  const T* bias;  // bias + group's first channel, or null
  int o_total, p;
  bool vec;
  struct Columns {
    int n, r, count;  // first column's image and pixel; columns < N
  };
  __device__ Columns columns(int q, int N) const {
    const int n = q / p;
    return {n, q - n * p, min(4, N - q)};
  }
  __device__ void store(int o, const Columns& c, const float* v) const {
    const float b = bias != nullptr ? simt::to_float(bias[o]) : 0.f;
    const float u[4] = {v[0] + b, v[1] + b, v[2] + b, v[3] + b};
    if (vec && c.count == 4) {
      simt::store4(y + ((int64_t)c.n * o_total + o) * p + c.r, u);
      return;
    }
    int n = c.n, r = c.r;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j < c.count) y[((int64_t)n * o_total + o) * p + r] = simt::from_float<OutT>(u[j]);
      if (++r == p) {
        r = 0;
        ++n;
      }
    }
  }
};

// dx[n, c, ih, iw] at the phase's pixels q = (n, jh, jw): decoded once per
// four columns; one vector store where the phase is the whole image (stride
// 1), H*W % 4 == 0 and dx is aligned (vec).
template <typename T>
struct ConvDataEpilogue {
  T* dx;  // dx + group's first channel
  ConvShape s;
  DataPhase ph;
  bool vec;
  struct Columns {
    int64_t off[4];  // (n * C * H + ih) * W + iw of each column
    int count;
  };
  __device__ Columns columns(int q, int N) const {
    Columns c;
    c.count = min(4, N - q);
    const int hw = ph.h.count * ph.w.count;
    int n = q / hw;
    const int r = q - n * hw;
    int jh = r / ph.w.count, jw = r - jh * ph.w.count;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      c.off[j] = ((int64_t)n * s.c * s.h + ph.h.first + jh * s.sh) * s.w + ph.w.first + jw * s.sw;
      if (++jw == ph.w.count) {
        jw = 0;
        if (++jh == ph.h.count) {
          jh = 0;
          ++n;
        }
      }
    }
    return c;
  }
  __device__ void store(int ch, const Columns& c, const float* v) const {
    T* plane = dx + (int64_t)ch * s.h * s.w;
    if (vec && c.count == 4) {
      simt::store4(plane + c.off[0], v);
      return;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (j < c.count) plane[c.off[j]] = simt::from_float<T>(v[j]);
  }
};

// dW (O, C/G, KH, KW) of the group, or one split's fp32 partial sums at
// the same index, from channels-last columns (tap, c): an epilogue of the
// columns/store kind for column pairs (c, c + 1) of one tap (C/G is even),
// at weight indices c*KK + tap and KK on.
template <typename OutT>
struct ConvWeightPairs {
  OutT* dw;  // dW (or the split's slab) at the group's first output channel
  int K, cg, kk;
  struct Columns {
    int idx;
  };
  __device__ Columns columns(int n, int) const {
    const int t = n / cg;
    return {(n - t * cg) * kk + t};
  }
  __device__ void store(int m, const Columns& c, const float* v) const {
    dw[(int64_t)m * K + c.idx] = simt::from_float<OutT>(v[0]);
    dw[(int64_t)m * K + c.idx + kk] = simt::from_float<OutT>(v[1]);
  }
};

}  // namespace
}  // namespace cuda
}  // namespace lamina
