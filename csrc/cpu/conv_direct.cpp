// Direct stride-1 convolution on the CPU (AVX2 + FMA): no im2col matrix.
//
// Why.  A 3x3 convolution through im2col writes a column matrix 9x the size
// of its input, and at few channels (ResNet's 16-channel stage: M = 16,
// K = 144, N = 131072) the GEMM on it is bound by reading that matrix, not by
// arithmetic.  Here the input of one image is copied, zero-padded, into a
// small per-thread plane (it stays in L2) and the kernel reads its windows in
// place.
//
// The flattened-plane trick.  Pad the input plane of one image to
// (Hp, Wp) = (OH + DH*(KH-1), OW + DW*(KW-1)) and flatten it row-major.  At
// stride 1, output pixel (oh, ow) and tap (kh, kw) read the padded input at
//   (oh + kh*DH) * Wp + (ow + kw*DW) = q + off(kh, kw),
//   q = oh*Wp + ow,   off(kh, kw) = kh*DH*Wp + kw*DW.
// So over q = 0 .. OH*Wp - 1 every tap is one contiguous, unit-stride read,
// and the convolution of a plane is a sum of shifted vectors.  The columns
// q mod Wp >= OW are computed and thrown away: (Wp - OW)/Wp of the work,
// 6% at 32x32 with a 3x3 kernel.
//
// Forward (per image n and group):
//   y[o, q] = b[o] + sum_{c, t} wt[c, t, o] * xpad[c, q + off(t)]
// with the weight transposed to wt[c][t][o] (o contiguous) so that a block
// of 4 output channels reads 4 neighbouring values.
//
// Backward-data is the same correlation: with dy padded by DH*(KH-1) - PT on
// top and DW*(KW-1) - PL on the left (both >= 0 is the condition for this
// path, see conv_direct_geometry_ok),
//   dx[c, ih, iw] = sum_{o, kh', kw'} dypad[o, ih + kh'*DH, iw + kw'*DW] * w[o, c, KH-1-kh', KW-1-kw'],
// i.e. the forward kernel on dy with the weight flipped and transposed.
//
// Backward-weight, per image, with dy written in the padded width Wp (zeros
// in the thrown-away columns, so the garbage x reads there add nothing):
//   dW[o, c, t] += sum_q dyw[o, q] * xpad[c, q + off(t)],   db[o] += sum_q dyw[o, q].
//
// Register blocking (16 ymm registers).  Forward: 4 output channels x 3
// vectors of pixels = 12 accumulators, 3 input vectors, 1 broadcast weight;
// per (c, tap) 7 loads for 12 FMAs, so the FMA ports, not the loads, bound
// it.  Backward-weight: 4 output channels x 3 taps = 12 accumulators, per
// vector of q 4 dy loads and 3 x loads for 12 FMAs.
//
// This file is compiled for AVX2 + FMA (the pragma below); lamina/ops calls
// it only when conv_direct_supported() (built without the pragma) says the
// CPU has both.  Everything here that is not one of the exported
// functions has internal linkage, and no standard-library template is
// instantiated, so no AVX2 code can leak into the rest of the module.
#pragma GCC target("avx2,fma")

#include <immintrin.h>

#include <cstdlib>
#include <cstring>

#include "kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lamina {
namespace cpu {

namespace {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int thread_count() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// One 256-bit register of T.
template <typename T>
struct Vec;

template <>
struct Vec<float> {
  using R = __m256;
  static constexpr int L = 8;
  static R zero() { return _mm256_setzero_ps(); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static R set1(float v) { return _mm256_set1_ps(v); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static double sum(R v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

template <>
struct Vec<double> {
  using R = __m256d;
  static constexpr int L = 4;
  static R zero() { return _mm256_setzero_pd(); }
  static R load(const double* p) { return _mm256_loadu_pd(p); }
  static R set1(double v) { return _mm256_set1_pd(v); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static void store(double* p, R v) { _mm256_storeu_pd(p, v); }
  static double sum(R v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
};

constexpr int kOB = 4;  // output channels per register block (pixel-vectorised forward)
constexpr int kPV = 3;  // pixel vectors per register block (pixel-vectorised forward)
constexpr int kOV = 2;  // output-channel vectors per register block (channel-vectorised forward)
constexpr int kPB = 6;  // pixels per register block (channel-vectorised forward)
constexpr int kTB = 3;  // taps per register block (pixel-vectorised backward-weight)
constexpr int kKB = 6;  // (input channel, tap) pairs per register block (channel-vectorised backward-weight)

// A 64-byte aligned buffer of T; freed on scope exit.
template <typename T>
struct Buffer {
  T* p = nullptr;
  explicit Buffer(int64_t count) {
    const size_t bytes = (static_cast<size_t>(count) * sizeof(T) + 63) / 64 * 64;
    p = static_cast<T*>(std::aligned_alloc(64, bytes ? bytes : 64));
  }
  ~Buffer() { std::free(p); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

// The shape of one correlation: `cin` input planes (hin, win) zero-padded by
// (pt, pl) into planes (hp, wp) of `plane` elements each; `cout` output
// planes (hout, wout); `taps` offsets off[t] into a padded plane.
struct Corr {
  int64_t cin, hin, win, pt, pl, hp, wp, plane;
  int64_t cout, hout, wout;
  int64_t taps;
  int64_t q;        // hout * wp: flattened outputs computed per plane
  int64_t qpad;     // q rounded up to whole register blocks
  int64_t padded;   // elements of one image's padded input (cin planes + slack for the last block's reads)
  int64_t wstride;  // cout rounded up to whole vectors of kOV registers: the stride of wt[c][t][.]
  bool ovec;        // vectorise over output channels instead of pixels (see choose_ovec)
};

// Which register block wastes less (measured, interleaved: a tie at 32x32
// and 16x16, channels 20% faster at 8x8 with 64 channels and 25% faster on
// LeNet's 14x14 5x5 layer; csrc/NOTES.md).  Pixel-vectorised: the thrown-away
// columns and the rounding of q up to whole blocks, hout*wout / qpad useful
// (0.93 at 32x32 with a 3x3 kernel, 0.67 at 8x8).  Channel-vectorised: the
// rounding of cout up to whole vectors, cout / wstride useful, and 8 loads
// per 12 FMAs instead of 7.
inline bool choose_ovec(const Corr& c, int variant) {
  if (variant != kAuto) return variant == kChannels;
  const double px = double(c.hout * c.wout) / double(c.qpad), ov = double(c.cout) / double(c.wstride);
  return ov > px + 0.1;
}

template <typename T>
Corr make_corr(int64_t cin, int64_t hin, int64_t win, int64_t pt, int64_t pl, int64_t cout, int64_t hout,
               int64_t wout, int64_t kh, int64_t kw, int64_t dh, int64_t dw, int variant = kAuto) {
  Corr c{};
  c.cin = cin, c.hin = hin, c.win = win, c.pt = pt, c.pl = pl;
  c.hp = hout + dh * (kh - 1);
  c.wp = wout + dw * (kw - 1);
  c.plane = c.hp * c.wp;
  c.cout = cout, c.hout = hout, c.wout = wout;
  c.taps = kh * kw;
  c.q = hout * c.wp;
  const int64_t block = kPV * Vec<T>::L;
  c.qpad = cdiv(c.q, block) * block;
  // The last block reads up to qpad - 1 + off_max < qpad + plane - q + wp.
  c.padded = cin * c.plane + (c.qpad - c.q) + c.wp + block;
  const int64_t ow = kOV * Vec<T>::L;
  c.wstride = cdiv(cout, ow) * ow;
  c.ovec = choose_ovec(c, variant);
  return c;
}

// Copy the cin input planes of one image into dst, zero-padded (the whole
// buffer is zeroed first: padding, thrown-away columns and slack).
template <typename T>
void pad_planes(T* dst, const T* src, const Corr& c) {
  std::memset(dst, 0, sizeof(T) * c.padded);
  for (int64_t ch = 0; ch < c.cin; ++ch) {
    const T* s = src + ch * c.hin * c.win;
    T* d = dst + ch * c.plane + c.pt * c.wp + c.pl;
    for (int64_t r = 0; r < c.hin; ++r) std::memcpy(d + r * c.wp, s + r * c.win, sizeof(T) * c.win);
  }
}

// acc[o][j] over one block of OB output channels and PV pixel vectors:
//   out[o][q0 + j*L + l] = sum_{c, t} wt[c, t, o] * in[c, q0 + j*L + l + off[t]]
template <typename T, int OB>
void corr_block(T* out, int64_t ostride, const T* in, const Corr& c, const int64_t* off, const T* wt) {
  using V = Vec<T>;
  typename V::R acc[OB][kPV];
  for (int o = 0; o < OB; ++o)
    for (int j = 0; j < kPV; ++j) acc[o][j] = V::zero();
  for (int64_t ci = 0; ci < c.cin; ++ci) {
    const T* plane = in + ci * c.plane;
    const T* wc = wt + ci * c.taps * c.wstride;
    for (int64_t t = 0; t < c.taps; ++t) {
      const T* p = plane + off[t];
      typename V::R xv[kPV];
      for (int j = 0; j < kPV; ++j) xv[j] = V::load(p + j * V::L);
      const T* wv = wc + t * c.wstride;
      for (int o = 0; o < OB; ++o) {
        const typename V::R b = V::set1(wv[o]);
        for (int j = 0; j < kPV; ++j) acc[o][j] = V::fma(b, xv[j], acc[o][j]);
      }
    }
  }
  for (int o = 0; o < OB; ++o)
    for (int j = 0; j < kPV; ++j) V::store(out + o * ostride + j * V::L, acc[o][j]);
}

// Output channels [o0, o1) of one image: out (cout, hout, wout) from the
// padded input `in`, through the scratch rows `rows` (OB x qpad).
template <typename T>
void corr_channels(T* out, const T* bias, const T* in, const Corr& c, const int64_t* off, const T* wt, int64_t o0,
                   int64_t o1, T* rows) {
  const int64_t block = kPV * Vec<T>::L;
  for (int64_t ob = o0; ob < o1; ob += kOB) {
    const int n_o = static_cast<int>(imin(kOB, o1 - ob));
    for (int64_t q0 = 0; q0 < c.q; q0 += block) {
      T* r = rows + q0;
      const T* src = in + q0;
      switch (n_o) {
        case 4: corr_block<T, 4>(r, c.qpad, src, c, off, wt + ob); break;
        case 3: corr_block<T, 3>(r, c.qpad, src, c, off, wt + ob); break;
        case 2: corr_block<T, 2>(r, c.qpad, src, c, off, wt + ob); break;
        default: corr_block<T, 1>(r, c.qpad, src, c, off, wt + ob); break;
      }
    }
    for (int o = 0; o < n_o; ++o) {
      const T b = bias ? bias[ob + o] : T(0);
      T* y = out + (ob + o) * c.hout * c.wout;
      const T* r = rows + o * c.qpad;
      for (int64_t h = 0; h < c.hout; ++h)
        for (int64_t w = 0; w < c.wout; ++w) y[h * c.wout + w] = r[h * c.wp + w] + b;
    }
  }
}

// Channel-vectorised block: kPB output pixels (flattened offsets qidx in the
// padded plane) x kOV vectors of output channels from wt (at the block's
// first channel):
//   tile[i][o] = sum_{c, t} wt[c, t, o] * in[c, qidx[i] + off[t]]
template <typename T>
void corr_block_ovec(T* tile, const T* in, const Corr& c, const int64_t* off, const T* wt, const int64_t* qidx) {
  using V = Vec<T>;
  typename V::R acc[kPB][kOV];
  for (int i = 0; i < kPB; ++i)
    for (int v = 0; v < kOV; ++v) acc[i][v] = V::zero();
  for (int64_t ci = 0; ci < c.cin; ++ci) {
    const T* plane = in + ci * c.plane;
    const T* wc = wt + ci * c.taps * c.wstride;
    const T* px[kPB];
    for (int i = 0; i < kPB; ++i) px[i] = plane + qidx[i];
    for (int64_t t = 0; t < c.taps; ++t) {
      typename V::R wv[kOV];
      for (int v = 0; v < kOV; ++v) wv[v] = V::load(wc + t * c.wstride + v * V::L);
      const int64_t o = off[t];
      for (int i = 0; i < kPB; ++i) {
        const typename V::R xb = V::set1(px[i][o]);
        for (int v = 0; v < kOV; ++v) acc[i][v] = V::fma(xb, wv[v], acc[i][v]);
      }
    }
  }
  for (int i = 0; i < kPB; ++i)
    for (int v = 0; v < kOV; ++v) V::store(tile + (i * kOV + v) * V::L, acc[i][v]);
}

// Output channels [o0, o1) of one image (o0 a multiple of kOV vectors),
// channel-vectorised: only the hout x wout real outputs are computed.
template <typename T>
void corr_channels_ovec(T* out, const T* bias, const T* in, const Corr& c, const int64_t* off, const T* wt,
                        int64_t o0, int64_t o1) {
  constexpr int ow = kOV * Vec<T>::L;
  const int64_t P = c.hout * c.wout;
  T tile[kPB * ow];
  for (int64_t ob = o0; ob < o1; ob += ow) {
    const int64_t n_o = imin(ow, o1 - ob);
    for (int64_t p0 = 0; p0 < P; p0 += kPB) {
      int64_t qidx[kPB];
      for (int i = 0; i < kPB; ++i) {
        const int64_t p = imin(p0 + i, P - 1);  // the tail repeats the last pixel; its results are dropped
        qidx[i] = (p / c.wout) * c.wp + p % c.wout;
      }
      corr_block_ovec(tile, in, c, off, wt + ob, qidx);
      const int64_t n_p = imin(kPB, P - p0);
      for (int64_t o = 0; o < n_o; ++o) {
        const T b = bias ? bias[ob + o] : T(0);
        T* y = out + (ob + o) * P + p0;
        for (int64_t i = 0; i < n_p; ++i) y[i] = tile[i * ow + o] + b;
      }
    }
  }
}

// For each image and group: out[n, group] = correlate(in[n, group], wt[group]) + bias.
// wt: groups blocks of (cin, taps, wstride) (cin, cout per group; zeros past cout).
template <typename T>
void correlate(T* out, const T* in, const T* wt, const T* bias, int64_t n, int64_t groups, const Corr& c,
               const int64_t* off) {
  // Tasks: (image, group, chunk of output channels).  Chunks only when there
  // are too few images and groups to keep every thread busy.
  const int64_t ob = c.ovec ? kOV * Vec<T>::L : kOB;
  const int64_t blocks = cdiv(c.cout, ob);
  const int64_t chunks = imin(blocks, imax(1, cdiv(2 * thread_count(), n * groups)));
  const int64_t per_chunk = cdiv(blocks, chunks) * ob;
  const int64_t tasks = n * groups * chunks;
#pragma omp parallel
  {
    Buffer<T> padded(c.padded);
    Buffer<T> rows(c.ovec ? 1 : kOB * c.qpad);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t img = task / (groups * chunks), grp = (task / chunks) % groups, chunk = task % chunks;
      const int64_t o0 = chunk * per_chunk, o1 = imin(c.cout, o0 + per_chunk);
      if (o0 >= o1) continue;
      pad_planes(padded.p, in + (img * groups + grp) * c.cin * c.hin * c.win, c);
      T* y = out + (img * groups + grp) * c.cout * c.hout * c.wout;
      const T* b = bias ? bias + grp * c.cout : nullptr;
      const T* w = wt + grp * c.cin * c.taps * c.wstride;
      if (c.ovec)
        corr_channels_ovec(y, b, padded.p, c, off, w, o0, o1);
      else
        corr_channels(y, b, padded.p, c, off, w, o0, o1, rows.p);
    }
  }
}

// acc[o][t] = sum over `images` images and nvec vectors of dyw[o] * x[off[t] + ...],
// then added to dw[o][t] (stride dw_ostride per o).  The accumulators stay
// in registers across the images: on small planes (8x8: 10 vectors per
// image) one horizontal sum per image would cost as much as the FMAs.
template <typename T, int OB, int TB>
void wgrad_block(double* dw, int64_t dw_ostride, const T* dyw, int64_t dy_ostride, const T* x, const int64_t* off,
                 int64_t nvec, int64_t images, int64_t dy_istride, int64_t x_istride) {
  using V = Vec<T>;
  typename V::R acc[OB][TB];
  for (int o = 0; o < OB; ++o)
    for (int t = 0; t < TB; ++t) acc[o][t] = V::zero();
  for (int64_t img = 0; img < images; ++img) {
    const T* xt[TB];
    for (int t = 0; t < TB; ++t) xt[t] = x + img * x_istride + off[t];
    const T* d0 = dyw + img * dy_istride;
    for (int64_t v = 0; v < nvec; ++v) {
      const int64_t i = v * V::L;
      typename V::R xv[TB];
      for (int t = 0; t < TB; ++t) xv[t] = V::load(xt[t] + i);
      for (int o = 0; o < OB; ++o) {
        const typename V::R d = V::load(d0 + o * dy_ostride + i);
        for (int t = 0; t < TB; ++t) acc[o][t] = V::fma(d, xv[t], acc[o][t]);
      }
    }
  }
  for (int o = 0; o < OB; ++o)
    for (int t = 0; t < TB; ++t) dw[o * dw_ostride + t] += V::sum(acc[o][t]);
}

template <typename T, int OB>
void wgrad_taps(double* dw, int64_t dw_ostride, const T* dyw, int64_t dy_ostride, const T* x, const int64_t* off,
                int64_t taps, int64_t nvec, int64_t images, int64_t dy_istride, int64_t x_istride) {
  for (int64_t t0 = 0; t0 < taps; t0 += kTB) {
    double* d = dw + t0;
    const int64_t* o = off + t0;
    switch (imin(kTB, taps - t0)) {
      case 3: wgrad_block<T, OB, 3>(d, dw_ostride, dyw, dy_ostride, x, o, nvec, images, dy_istride, x_istride); break;
      case 2: wgrad_block<T, OB, 2>(d, dw_ostride, dyw, dy_ostride, x, o, nvec, images, dy_istride, x_istride); break;
      default: wgrad_block<T, OB, 1>(d, dw_ostride, dyw, dy_ostride, x, o, nvec, images, dy_istride, x_istride);
    }
  }
}

// Channel-vectorised backward-weight: kOV vectors of output channels x NK
// (input channel, tap) pairs k, summed over `images` images and the P real
// output pixels (flattened offsets qidx[p] in the padded plane), with dy
// transposed to dyt[img][p][o] (o contiguous, stride ostride):
//   acc[k][o] = sum_{img, p} dyt[img][p][o] * x[img][qidx[p] + xoff[k]]
// where xoff[k] = c_k * plane + off[t_k].  Every lane is its own output
// channel, so no horizontal sums, and no thrown-away columns; per pixel
// kOV loads and NK broadcasts for NK * kOV FMAs.  Added to dw[o][k] (stride
// dw_ostride per o) for the first n_o channels.
template <typename T, int NK>
void wgrad_block_ovec(double* dw, int64_t dw_ostride, int64_t n_o, const T* dyt, int64_t dyt_istride,
                      int64_t ostride, const T* x, int64_t x_istride, const int64_t* xoff, const int64_t* qidx,
                      int64_t P, int64_t images) {
  using V = Vec<T>;
  typename V::R acc[NK][kOV];
  for (int k = 0; k < NK; ++k)
    for (int v = 0; v < kOV; ++v) acc[k][v] = V::zero();
  for (int64_t img = 0; img < images; ++img) {
    const T* xk[NK];
    for (int k = 0; k < NK; ++k) xk[k] = x + img * x_istride + xoff[k];
    const T* d = dyt + img * dyt_istride;
    for (int64_t p = 0; p < P; ++p) {
      typename V::R dv[kOV];
      for (int v = 0; v < kOV; ++v) dv[v] = V::load(d + p * ostride + v * V::L);
      const int64_t q = qidx[p];
      for (int k = 0; k < NK; ++k) {
        const typename V::R xb = V::set1(xk[k][q]);
        for (int v = 0; v < kOV; ++v) acc[k][v] = V::fma(xb, dv[v], acc[k][v]);
      }
    }
  }
  constexpr int ow = kOV * V::L;
  T tile[NK * ow];
  for (int k = 0; k < NK; ++k)
    for (int v = 0; v < kOV; ++v) V::store(tile + k * ow + v * V::L, acc[k][v]);
  for (int64_t o = 0; o < n_o; ++o)
    for (int k = 0; k < NK; ++k) dw[o * dw_ostride + k] += double(tile[k * ow + o]);
}

// Offsets of the taps in a padded plane of width wp.
void tap_offsets(int64_t* off, int64_t kh, int64_t kw, int64_t dh, int64_t dw, int64_t wp) {
  for (int64_t i = 0; i < kh; ++i)
    for (int64_t j = 0; j < kw; ++j) off[i * kw + j] = i * dh * wp + j * dw;
}

// The group's shape of a forward correlation (input x, output y).
template <typename T>
Corr forward_corr(const ConvGeometry& g, int64_t o, int64_t groups, int variant = kAuto) {
  return make_corr<T>(g.c / groups, g.h, g.w, g.pt, g.pl, o / groups, g.oh, g.ow, g.kh, g.kw, g.dh, g.dw, variant);
}

}  // namespace

bool conv_direct_geometry_ok(const ConvGeometry& g) {
  if (g.sh != 1 || g.sw != 1) return false;
  // Bottom/right padding implied by the output size (stride 1).
  const int64_t pb = g.oh + g.dh * (g.kh - 1) - g.h - g.pt;
  const int64_t pr = g.ow + g.dw * (g.kw - 1) - g.w - g.pl;
  const int64_t span_h = g.dh * (g.kh - 1), span_w = g.dw * (g.kw - 1);
  // Backward-data pads dy by span - pad on each side: none may be negative.
  return g.pt <= span_h && pb >= 0 && pb <= span_h && g.pl <= span_w && pr >= 0 && pr <= span_w;
}

template <typename T>
void conv_direct_forward(T* y, const T* x, const T* w, const T* bias, const ConvGeometry& g, int64_t o,
                         int64_t groups, int variant) {
  const Corr c = forward_corr<T>(g, o, groups, variant);
  Buffer<int64_t> off(c.taps);
  tap_offsets(off.p, g.kh, g.kw, g.dh, g.dw, c.wp);
  // wt[group][c][t][o] = w[group*O/G + o][c][t]
  Buffer<T> wt(groups * c.cin * c.taps * c.wstride);
  std::memset(wt.p, 0, sizeof(T) * groups * c.cin * c.taps * c.wstride);
  for (int64_t gr = 0; gr < groups; ++gr)
    for (int64_t oc = 0; oc < c.cout; ++oc)
      for (int64_t ci = 0; ci < c.cin; ++ci)
        for (int64_t t = 0; t < c.taps; ++t)
          wt.p[((gr * c.cin + ci) * c.taps + t) * c.wstride + oc] = w[((gr * c.cout + oc) * c.cin + ci) * c.taps + t];
  correlate(y, x, wt.p, bias, g.n, groups, c, off.p);
}

template <typename T>
void conv_direct_backward_data(T* dx, const T* dy, const T* w, const ConvGeometry& g, int64_t o, int64_t groups,
                               int variant) {
  const int64_t og = o / groups, cg = g.c / groups;
  // dy (og planes of oh x ow) padded by span - pad: the padded plane is (h + span_h, w + span_w).
  const int64_t pt = g.dh * (g.kh - 1) - g.pt, pl = g.dw * (g.kw - 1) - g.pl;
  const Corr c = make_corr<T>(og, g.oh, g.ow, pt, pl, cg, g.h, g.w, g.kh, g.kw, g.dh, g.dw, variant);
  Buffer<int64_t> off(c.taps);
  tap_offsets(off.p, g.kh, g.kw, g.dh, g.dw, c.wp);
  // wt[group][o][t'][c] = w[group*og + o][c][taps - 1 - t'] (the kernel flipped in both axes)
  Buffer<T> wt(groups * og * c.taps * c.wstride);
  std::memset(wt.p, 0, sizeof(T) * groups * og * c.taps * c.wstride);
  for (int64_t gr = 0; gr < groups; ++gr)
    for (int64_t oc = 0; oc < og; ++oc)
      for (int64_t ci = 0; ci < cg; ++ci)
        for (int64_t t = 0; t < c.taps; ++t)
          wt.p[((gr * og + oc) * c.taps + t) * c.wstride + ci] = w[((gr * og + oc) * cg + ci) * c.taps + (c.taps - 1 - t)];
  correlate(dx, dy, wt.p, static_cast<const T*>(nullptr), g.n, groups, c, off.p);
}

template <typename T>
void conv_direct_backward_weight(T* dw, T* db, const T* dy, const T* x, const ConvGeometry& g, int64_t o,
                                 int64_t groups, int variant) {
  const Corr c = forward_corr<T>(g, o, groups, variant);
  const int64_t L = Vec<T>::L;
  const int64_t nvec = cdiv(c.q, L), qv = nvec * L;  // q rounded up to whole vectors (zeros in dyw)
  Buffer<int64_t> off(c.taps);
  tap_offsets(off.p, g.kh, g.kw, g.dh, g.dw, c.wp);
  const int64_t wsize = o * c.cin * c.taps;  // dw (O, C/G, KH, KW)
  const int threads = thread_count();
  Buffer<double> partial(threads * (wsize + o));  // per thread: dW, then db
  std::memset(partial.p, 0, sizeof(double) * threads * (wsize + o));
  // Channel-vectorised: dy transposed to (pixel, channel), the real pixels' offsets.
  const int64_t P = c.hout * c.wout, K = c.cin * c.taps;
  Buffer<int64_t> qidx(c.ovec ? P : 1), xoff(c.ovec ? K : 1);
  if (c.ovec) {
    for (int64_t p = 0; p < P; ++p) qidx.p[p] = (p / c.wout) * c.wp + p % c.wout;
    for (int64_t k = 0; k < K; ++k) xoff.p[k] = (k / c.taps) * c.plane + off.p[k % c.taps];
  }
  // Tasks: (chunk of `batch` images, group).  A chunk's padded inputs and
  // dy stay in the thread's L2 (about 256 KiB) while every (o, c, tap)
  // block sweeps it, so that small planes still give long sums.
  const int64_t dy_image = c.ovec ? P * c.wstride : c.cout * qv;  // one image's dy as the blocks read it
  const int64_t per_image = c.padded + dy_image;
  int64_t batch = imax(1, imin(cdiv(1024, qv), (256 << 10) / (per_image * int64_t(sizeof(T)))));
  batch = imax(1, imin(batch, cdiv(g.n, 2 * threads)));
  const int64_t chunks = cdiv(g.n, batch), tasks = chunks * groups;
#pragma omp parallel
  {
#ifdef _OPENMP
    double* mine = partial.p + omp_get_thread_num() * (wsize + o);
#else
    double* mine = partial.p;
#endif
    Buffer<T> padded(batch * c.padded);
    Buffer<T> dyw(batch * dy_image);
    std::memset(dyw.p, 0, sizeof(T) * batch * dy_image);  // thrown-away columns, the tail, lanes past cout stay 0
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t chunk = task / groups, grp = task % groups;
      const int64_t first = chunk * batch, images = imin(batch, g.n - first);
      double* dbg = mine + wsize + grp * c.cout;
      for (int64_t b = 0; b < images; ++b) {
        const int64_t img = first + b;
        pad_planes(padded.p + b * c.padded, x + (img * groups + grp) * c.cin * g.h * g.w, c);
        const T* dys = dy + (img * groups + grp) * c.cout * c.hout * c.wout;
        T* dst = dyw.p + b * dy_image;
        for (int64_t oc = 0; oc < c.cout; ++oc) {
          double s = 0;
          if (c.ovec) {
            const T* src = dys + oc * P;
            for (int64_t p = 0; p < P; ++p) {
              dst[p * c.wstride + oc] = src[p];
              s += src[p];
            }
          } else {
            for (int64_t h = 0; h < c.hout; ++h) {
              const T* src = dys + (oc * c.hout + h) * c.wout;
              std::memcpy(dst + oc * qv + h * c.wp, src, sizeof(T) * c.wout);
              for (int64_t w = 0; w < c.wout; ++w) s += src[w];
            }
          }
          dbg[oc] += s;
        }
      }
      double* dwg = mine + grp * c.cout * c.cin * c.taps;
      if (c.ovec) {
        constexpr int64_t ow = kOV * Vec<T>::L;
        for (int64_t ob = 0; ob < c.cout; ob += ow) {
          const int64_t n_o = imin(ow, c.cout - ob);
          for (int64_t k0 = 0; k0 < K; k0 += kKB) {
            double* d = dwg + ob * K + k0;
            const T* dyo = dyw.p + ob;
            const int64_t* xo = xoff.p + k0;
            switch (imin(kKB, K - k0)) {
#define LAMINA_WGRAD_OVEC(NK)                                                                                   \
  case NK:                                                                                                     \
    wgrad_block_ovec<T, NK>(d, K, n_o, dyo, dy_image, c.wstride, padded.p, c.padded, xo, qidx.p, P, images); \
    break;
              LAMINA_WGRAD_OVEC(6)
              LAMINA_WGRAD_OVEC(5)
              LAMINA_WGRAD_OVEC(4)
              LAMINA_WGRAD_OVEC(3)
              LAMINA_WGRAD_OVEC(2)
              default:
                wgrad_block_ovec<T, 1>(d, K, n_o, dyo, dy_image, c.wstride, padded.p, c.padded, xo, qidx.p, P, images);
#undef LAMINA_WGRAD_OVEC
            }
          }
        }
        continue;
      }
      const int64_t dys = c.cout * qv, ds = c.cin * c.taps;
      for (int64_t ob = 0; ob < c.cout; ob += kOB) {
        const int n_o = static_cast<int>(imin(kOB, c.cout - ob));
        const T* dyo = dyw.p + ob * qv;
        for (int64_t ci = 0; ci < c.cin; ++ci) {
          double* d = dwg + (ob * c.cin + ci) * c.taps;
          const T* xc = padded.p + ci * c.plane;
          switch (n_o) {
            case 4: wgrad_taps<T, 4>(d, ds, dyo, qv, xc, off.p, c.taps, nvec, images, dys, c.padded); break;
            case 3: wgrad_taps<T, 3>(d, ds, dyo, qv, xc, off.p, c.taps, nvec, images, dys, c.padded); break;
            case 2: wgrad_taps<T, 2>(d, ds, dyo, qv, xc, off.p, c.taps, nvec, images, dys, c.padded); break;
            default: wgrad_taps<T, 1>(d, ds, dyo, qv, xc, off.p, c.taps, nvec, images, dys, c.padded);
          }
        }
      }
    }
  }
  for (int64_t i = 0; i < wsize; ++i) {
    double s = 0;
    for (int t = 0; t < threads; ++t) s += partial.p[t * (wsize + o) + i];
    dw[i] = static_cast<T>(s);
  }
  if (db) {
    for (int64_t i = 0; i < o; ++i) {
      double s = 0;
      for (int t = 0; t < threads; ++t) s += partial.p[t * (wsize + o) + wsize + i];
      db[i] = static_cast<T>(s);
    }
  }
}

#define LAMINA_CONV_DIRECT(T)                                                                                   \
  template void conv_direct_forward<T>(T*, const T*, const T*, const T*, const ConvGeometry&, int64_t, int64_t,   \
                                       int);                                                                     \
  template void conv_direct_backward_data<T>(T*, const T*, const T*, const ConvGeometry&, int64_t, int64_t, int); \
  template void conv_direct_backward_weight<T>(T*, T*, const T*, const T*, const ConvGeometry&, int64_t, int64_t, \
                                               int);
LAMINA_CONV_DIRECT(float)
LAMINA_CONV_DIRECT(double)
#undef LAMINA_CONV_DIRECT

}  // namespace cpu
}  // namespace lamina
