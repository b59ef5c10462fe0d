// Index walks and the forward epilogue of the implicit-GEMM convolutions,
// shared by conv.cu (SIMT core and mma.sync) and conv_wgmma.cu (wgmma,
// sm_90a).  Conventions as in conv.cu.
#pragma once
#include <cstdint>

#include "launchers.h"
#include "simt_gemm.cuh"

namespace lamina {
namespace cuda {
namespace {

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

}  // namespace
}  // namespace cuda
}  // namespace lamina
