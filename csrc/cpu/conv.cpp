// im2col and col2im for 2-d convolution (1-d convolution is the H = 1 case).
//
// Layout.  x is (N, C, H, W) contiguous.  col is (C*KH*KW, N*OH*OW): row
// r = (c*KH + i)*KW + j holds, for every image n and output pixel (oh, ow),
//   col[r, n*OH*OW + oh*OW + ow] = x[n, c, oh*SH - PT + i*DH, ow*SW - PL + j*DW]
// and 0 where that index falls in the padding.  With groups, the rows of
// group g are the contiguous block c in [g*C/G, (g+1)*C/G), so the forward is
// one GEMM per group: Y_g (O/G, N*OH*OW) = W_g (O/G, C/G*KH*KW) @ col_g.
//
// col2im is the adjoint: dx[n, c, ih, iw] = sum of dcol over every (i, j, oh, ow)
// that reads that pixel.  Each (n, c) plane is owned by one thread, so the
// scatter-add needs no atomics.
//
// Per (row, n, oh) the valid output columns form one interval [lo, hi),
// computed once, so the inner loops carry no bounds tests:
//   0 <= ow*SW - PL + j*DW < W   <=>   ceil((PL - j*DW)/SW) <= ow < ceil((W + PL - j*DW)/SW)
#include <algorithm>
#include <cstring>

#include "kernels.h"

namespace lamina {
namespace cpu {

namespace {

// ceil(a / b) for b > 0, clamped below at 0 (a may be negative).
inline int64_t ceil_div_pos(int64_t a, int64_t b) { return a <= 0 ? 0 : (a + b - 1) / b; }

struct Window {
  int64_t lo, hi;  // valid output columns [lo, hi)
};

inline Window valid_range(int64_t extent, int64_t pad, int64_t offset, int64_t stride, int64_t out) {
  // offset = j * dilation; valid when 0 <= o*stride - pad + offset < extent
  const int64_t lo = std::min(out, ceil_div_pos(pad - offset, stride));
  const int64_t hi = std::min(out, ceil_div_pos(extent + pad - offset, stride));
  return {lo, std::max(lo, hi)};
}

}  // namespace

template <typename T>
void im2col(T* col, const T* x, const ConvGeometry& g) {
  const int64_t P = g.oh * g.ow, NP = g.n * P, rows = g.c * g.kh * g.kw;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t n = 0; n < g.n; ++n) {
      const int64_t c = r / (g.kh * g.kw), i = (r / g.kw) % g.kh, j = r % g.kw;
      const T* plane = x + (n * g.c + c) * g.h * g.w;
      T* out = col + r * NP + n * P;
      const Window wr = valid_range(g.w, g.pl, j * g.dw, g.sw, g.ow);
      const int64_t iw0 = wr.lo * g.sw - g.pl + j * g.dw;  // input column of ow = lo
      for (int64_t oh = 0; oh < g.oh; ++oh, out += g.ow) {
        const int64_t ih = oh * g.sh - g.pt + i * g.dh;
        if (ih < 0 || ih >= g.h) {
          std::memset(out, 0, sizeof(T) * g.ow);
          continue;
        }
        const T* src = plane + ih * g.w + iw0;
        std::memset(out, 0, sizeof(T) * wr.lo);
        if (g.sw == 1) {
          std::memcpy(out + wr.lo, src, sizeof(T) * (wr.hi - wr.lo));
        } else {
          for (int64_t ow = wr.lo; ow < wr.hi; ++ow) out[ow] = src[(ow - wr.lo) * g.sw];
        }
        std::memset(out + wr.hi, 0, sizeof(T) * (g.ow - wr.hi));
      }
    }
  }
}

template <typename T>
void col2im(T* dx, const T* dcol, const ConvGeometry& g) {
  const int64_t P = g.oh * g.ow, NP = g.n * P, HW = g.h * g.w;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < g.n; ++n) {
    for (int64_t c = 0; c < g.c; ++c) {
      T* plane = dx + (n * g.c + c) * HW;
      std::memset(plane, 0, sizeof(T) * HW);
      for (int64_t i = 0; i < g.kh; ++i) {
        for (int64_t j = 0; j < g.kw; ++j) {
          const int64_t r = (c * g.kh + i) * g.kw + j;
          const T* in = dcol + r * NP + n * P;
          const Window wr = valid_range(g.w, g.pl, j * g.dw, g.sw, g.ow);
          const int64_t iw0 = wr.lo * g.sw - g.pl + j * g.dw;
          for (int64_t oh = 0; oh < g.oh; ++oh, in += g.ow) {
            const int64_t ih = oh * g.sh - g.pt + i * g.dh;
            if (ih < 0 || ih >= g.h) continue;
            T* dst = plane + ih * g.w + iw0;
            if (g.sw == 1) {
#pragma omp simd
              for (int64_t ow = wr.lo; ow < wr.hi; ++ow) dst[ow - wr.lo] += in[ow];
            } else {
              for (int64_t ow = wr.lo; ow < wr.hi; ++ow) dst[(ow - wr.lo) * g.sw] += in[ow];
            }
          }
        }
      }
    }
  }
}

// The GEMM's output is channel-major, (C, N, P); layers want (N, C, P).
// out[n, c, :] = in[c, n, :] + bias[c], one contiguous P-run at a time.
template <typename T>
void channels_to_batch_major(T* out, const T* in, const T* bias, int64_t n, int64_t c, int64_t p) {
#pragma omp parallel for collapse(2) schedule(static) if (n * c * p >= (1 << 15))
  for (int64_t ni = 0; ni < n; ++ni) {
    for (int64_t ci = 0; ci < c; ++ci) {
      const T* src = in + (ci * n + ni) * p;
      T* dst = out + (ni * c + ci) * p;
      const T b = bias != nullptr ? bias[ci] : T(0);
#pragma omp simd
      for (int64_t k = 0; k < p; ++k) dst[k] = src[k] + b;
    }
  }
}

// The reverse, for the output gradient: out[c, n, :] = in[n, c, :], and
// sums[c] = sum over n and p of in[n, c, :] (the bias gradient) when sums is
// not null.  One thread owns each channel, so the sums need no atomics.
template <typename T>
void batch_to_channels_major(T* out, T* sums, const T* in, int64_t n, int64_t c, int64_t p) {
#pragma omp parallel for schedule(static) if (n * c * p >= (1 << 15))
  for (int64_t ci = 0; ci < c; ++ci) {
    double total = 0;
    for (int64_t ni = 0; ni < n; ++ni) {
      const T* src = in + (ni * c + ci) * p;
      T* dst = out + (ci * n + ni) * p;
      T s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t k = 0; k < p; ++k) {
        dst[k] = src[k];
        s += src[k];
      }
      total += double(s);
    }
    if (sums != nullptr) sums[ci] = T(total);
  }
}

template void channels_to_batch_major<float>(float*, const float*, const float*, int64_t, int64_t, int64_t);
template void channels_to_batch_major<double>(double*, const double*, const double*, int64_t, int64_t, int64_t);
template void batch_to_channels_major<float>(float*, float*, const float*, int64_t, int64_t, int64_t);
template void batch_to_channels_major<double>(double*, double*, const double*, int64_t, int64_t, int64_t);
template void im2col<float>(float*, const float*, const ConvGeometry&);
template void im2col<double>(double*, const double*, const ConvGeometry&);
template void col2im<float>(float*, const float*, const ConvGeometry&);
template void col2im<double>(double*, const double*, const ConvGeometry&);

bool conv_direct_supported() { return cpu_has_avx2_fma(); }

}  // namespace cpu
}  // namespace lamina
