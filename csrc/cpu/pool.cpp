// Max and average pooling over (N*C) planes of (H, W), forward and backward.
// Geometry as in conv.cpp, with n = N*C planes and c = 1; max pooling reads
// dilated windows, average pooling has no dilation (nor does PyTorch's).
// Windows start at oh*SH - PT; the padding is virtual (never read):
// max-pooling treats it as -inf, average pooling as 0.
//
//   max:  y[o] = max over the window,  idx[o] = ih*W + iw of the maximum
//         (the first one on ties; a NaN wins, the last NaN if several:
//         "take v when v > max or v is NaN", exactly PyTorch's rule)
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

// The taps of a dilated window o inside the image: the first at or after 0,
// then every `dil` up to (not including) hi.
inline Span taps(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t dil, int64_t extent) {
  const int64_t start = o * stride - pad;
  const int64_t lo = start < 0 ? start + (-start + dil - 1) / dil * dil : start;
  return {lo, std::min(start + (k - 1) * dil + 1, extent)};
}

}  // namespace

// The common 2x2, stride-2, unpadded window: every window lies inside the
// image, so there is no clipping, and the four-way max is branch-free selects
// that GCC vectorises (the offset is int32 so that SSE2 can blend it).
template <typename T>
void maxpool_2x2(T* y, int64_t* idx, const T* x, const ConvGeometry& g) {
  const int32_t w = int32_t(g.w);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t p = 0; p < g.n; ++p) {
    for (int64_t oh = 0; oh < g.oh; ++oh) {
      const int64_t top = 2 * oh * g.w;
      const T* r0 = x + p * g.h * g.w + top;
      const T* r1 = r0 + g.w;
      T* out = y + (p * g.oh + oh) * g.ow;
      int64_t* arg = idx + (p * g.oh + oh) * g.ow;
#pragma omp simd
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        const T a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
        T m = a;
        int32_t off = 0;
        bool take = (b > m) | (b != b);
        m = take ? b : m;
        off = take ? 1 : off;
        take = (c > m) | (c != c);
        m = take ? c : m;
        off = take ? w : off;
        take = (d > m) | (d != d);
        m = take ? d : m;
        off = take ? w + 1 : off;
        out[ow] = m;
        arg[ow] = top + 2 * ow + off;
      }
    }
  }
}

template <typename T>
void maxpool_forward(T* y, int64_t* idx, const T* x, const ConvGeometry& g) {
  if (g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.pt == 0 && g.pl == 0 && g.dh == 1 && g.dw == 1 &&
      2 * g.oh <= g.h && 2 * g.ow <= g.w)
    return maxpool_2x2(y, idx, x, g);
  const int64_t HW = g.h * g.w, P = g.oh * g.ow;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < g.n; ++p) {
    const T* plane = x + p * HW;
    T* out = y + p * P;
    int64_t* arg = idx + p * P;
    for (int64_t oh = 0; oh < g.oh; ++oh) {
      const Span hs = taps(oh, g.sh, g.pt, g.kh, g.dh, g.h);
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        const Span ws = taps(ow, g.sw, g.pl, g.kw, g.dw, g.w);
        T best = -std::numeric_limits<T>::infinity();
        int64_t best_at = hs.lo * g.w + ws.lo;
        for (int64_t ih = hs.lo; ih < hs.hi; ih += g.dh) {
          for (int64_t iw = ws.lo; iw < ws.hi; iw += g.dw) {
            const T v = plane[ih * g.w + iw];
            if (v > best || std::isnan(v)) {
              best = v;
              best_at = ih * g.w + iw;
            }
          }
        }
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
