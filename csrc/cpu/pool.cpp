// Max and average pooling over (N*C) planes of (H, W), forward and backward.
// Geometry as in conv.cpp, with n = N*C planes, c = 1 and no dilation.
// Windows start at oh*SH - PT; the padding is virtual (never read):
// max-pooling treats it as -inf, average pooling as 0.
//
//   max:  y[o] = max over the window,  idx[o] = ih*W + iw of the maximum
//         (the first one on ties; a NaN wins, as in PyTorch)
//         dx[idx[o]] += dy[o]
//   avg:  y[o] = sum over the window / d,  d = KH*KW with count_include_pad,
//         else the number of window elements inside the image
//         dx[every (ih, iw) of the window] += dy[o] / d
// Each plane belongs to one thread, so the backward scatters without atomics.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels.h"

namespace lamina {
namespace cpu {

namespace {

struct Span {
  int64_t lo, hi;
};

// Input rows (or columns) [lo, hi) of window o, clipped to the image.
inline Span span(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t extent) {
  const int64_t start = o * stride - pad;
  return {std::max<int64_t>(start, 0), std::min(start + k, extent)};
}

}  // namespace

template <typename T>
void maxpool_forward(T* y, int64_t* idx, const T* x, const ConvGeometry& g) {
  const int64_t HW = g.h * g.w, P = g.oh * g.ow;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < g.n; ++p) {
    const T* plane = x + p * HW;
    T* out = y + p * P;
    int64_t* arg = idx + p * P;
    for (int64_t oh = 0; oh < g.oh; ++oh) {
      const Span hs = span(oh, g.sh, g.pt, g.kh, g.h);
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        const Span ws = span(ow, g.sw, g.pl, g.kw, g.w);
        T best = -std::numeric_limits<T>::infinity();
        int64_t best_at = hs.lo * g.w + ws.lo;
        for (int64_t ih = hs.lo; ih < hs.hi; ++ih) {
          for (int64_t iw = ws.lo; iw < ws.hi; ++iw) {
            const T v = plane[ih * g.w + iw];
            if (v > best || std::isnan(v)) {
              best = v;
              best_at = ih * g.w + iw;
              if (std::isnan(v)) goto done;
            }
          }
        }
      done:
        out[oh * g.ow + ow] = best;
        arg[oh * g.ow + ow] = best_at;
      }
    }
  }
}

template <typename T>
void maxpool_backward(T* dx, const T* dy, const int64_t* idx, const ConvGeometry& g) {
  const int64_t HW = g.h * g.w, P = g.oh * g.ow;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < g.n; ++p) {
    T* plane = dx + p * HW;
    const T* d = dy + p * P;
    const int64_t* arg = idx + p * P;
    std::memset(plane, 0, sizeof(T) * HW);
    for (int64_t o = 0; o < P; ++o) plane[arg[o]] += d[o];
  }
}

template <typename T>
void avgpool_forward(T* y, const T* x, const ConvGeometry& g, bool count_include_pad) {
  const int64_t HW = g.h * g.w, P = g.oh * g.ow;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < g.n; ++p) {
    const T* plane = x + p * HW;
    T* out = y + p * P;
    for (int64_t oh = 0; oh < g.oh; ++oh) {
      const Span hs = span(oh, g.sh, g.pt, g.kh, g.h);
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        const Span ws = span(ow, g.sw, g.pl, g.kw, g.w);
        T s = 0;
        for (int64_t ih = hs.lo; ih < hs.hi; ++ih)
          for (int64_t iw = ws.lo; iw < ws.hi; ++iw) s += plane[ih * g.w + iw];
        const int64_t d = count_include_pad ? g.kh * g.kw : (hs.hi - hs.lo) * (ws.hi - ws.lo);
        out[oh * g.ow + ow] = s / T(d);
      }
    }
  }
}

template <typename T>
void avgpool_backward(T* dx, const T* dy, const ConvGeometry& g, bool count_include_pad) {
  const int64_t HW = g.h * g.w, P = g.oh * g.ow;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < g.n; ++p) {
    T* plane = dx + p * HW;
    const T* d = dy + p * P;
    std::memset(plane, 0, sizeof(T) * HW);
    for (int64_t oh = 0; oh < g.oh; ++oh) {
      const Span hs = span(oh, g.sh, g.pt, g.kh, g.h);
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        const Span ws = span(ow, g.sw, g.pl, g.kw, g.w);
        const int64_t div = count_include_pad ? g.kh * g.kw : (hs.hi - hs.lo) * (ws.hi - ws.lo);
        const T v = d[oh * g.ow + ow] / T(div);
        for (int64_t ih = hs.lo; ih < hs.hi; ++ih)
          for (int64_t iw = ws.lo; iw < ws.hi; ++iw) plane[ih * g.w + iw] += v;
      }
    }
  }
}

#define LAMINA_POOL_INSTANTIATE(T)                                                       \
  template void maxpool_forward<T>(T*, int64_t*, const T*, const ConvGeometry&);         \
  template void maxpool_backward<T>(T*, const T*, const int64_t*, const ConvGeometry&);  \
  template void avgpool_forward<T>(T*, const T*, const ConvGeometry&, bool);             \
  template void avgpool_backward<T>(T*, const T*, const ConvGeometry&, bool);
LAMINA_POOL_INSTANTIATE(float)
LAMINA_POOL_INSTANTIATE(double)
#undef LAMINA_POOL_INSTANTIATE

}  // namespace cpu
}  // namespace lamina
