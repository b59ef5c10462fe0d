// The loops of lamina's elementwise and row-wise CPU kernels (GELU, softmax,
// layer normalisation, the LSTM and GRU cells, the rows of CTC's recursions), written once and compiled twice: by vector_kernels.cpp
// for the baseline instruction set (float and double; SSE2 gives 4 float
// lanes) and by vector_kernels_avx2.cpp for AVX2 + FMA (float: 8 lanes and
// fused multiply-adds).  The float math is vmath.h's; an includer that
// instantiates the loops for double declares erf_, exp_ and tanh_ for double
// first.  Everything here has internal linkage, so the two builds never
// merge at link time, and nothing here instantiates a standard-library
// template (the AVX2 build must not leak into shared code).
//
// Parallel over elements or rows with OpenMP; each row of the row-wise
// kernels is one thread's, read while it sits in L1/L2, and its reductions
// run in vector lanes of T.
#pragma once
#include <cstdint>

#include "vmath.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lamina {
namespace cpu {
namespace {

#pragma omp declare simd
inline float erf_(float v) { return erf_f32(v); }
#pragma omp declare simd
inline float exp_(float v) { return exp_f32(v); }
#pragma omp declare simd
inline float tanh_(float v) { return tanh_f32(v); }

constexpr double kSqrt2OverPi = 0.79788456080286535588;  // sqrt(2/pi)
constexpr double kInvSqrt2 = 0.70710678118654752440;     // 1/sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;   // 1/sqrt(2 pi)
constexpr double kCubic = 0.044715;
constexpr int64_t kParallelMin = 1 << 15;  // elements; below this, threads cost more than they save

// ---- GELU -------------------------------------------------------------------

template <typename T>
void gelu_forward_loop(T* y, const T* x, int64_t n, bool tanh_approx) {
  if (tanh_approx) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const T v = x[i];
      const T u = T(kSqrt2OverPi) * (v + T(kCubic) * v * v * v);
      y[i] = T(0.5) * v * (T(1) + tanh_(u));
    }
  } else {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const T v = x[i];
      y[i] = T(0.5) * v * (T(1) + erf_(v * T(kInvSqrt2)));
    }
  }
}

template <typename T>
void gelu_backward_loop(T* dx, const T* dy, const T* x, int64_t n, bool tanh_approx) {
  if (tanh_approx) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const T v = x[i];
      const T t = tanh_(T(kSqrt2OverPi) * (v + T(kCubic) * v * v * v));
      const T du = T(kSqrt2OverPi) * (T(1) + T(3 * kCubic) * v * v);
      dx[i] = dy[i] * (T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * du);
    }
  } else {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const T v = x[i];
      const T cdf = T(0.5) * (T(1) + erf_(v * T(kInvSqrt2)));
      const T pdf = T(kInvSqrt2Pi) * exp_(T(-0.5) * v * v);
      dx[i] = dy[i] * (cdf + v * pdf);
    }
  }
}

// ---- softmax over the last axis -------------------------------------------------
// y = softmax(scale * x) per row of d values, scale > 0:
//   m = max_j x_j,  e_j = exp(scale (x_j - m)),  y_j = e_j / sum e.
// A NaN anywhere in a row, or a row of -inf only, gives a row of NaN (as in
// PyTorch): the max skips NaN, and NaN - m or -inf - (-inf) reaches exp.

template <typename T>
void softmax_forward_loop(T* y, const T* x, int64_t rows, int64_t d, T scale) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t i = 0; i < rows; ++i) {
    const T* xr = x + i * d;
    T* yr = y + i * d;
    T m = xr[0];
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < d; ++j) m = xr[j] > m ? xr[j] : m;
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < d; ++j) {
      const T e = exp_(scale * (xr[j] - m));
      yr[j] = e;
      s += e;
    }
    const T inv = T(1) / s;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) yr[j] *= inv;
  }
}

// dx = scale * y ⊙ (dy - sum_j dy_j y_j) per row (the Jacobian-vector product
// of softmax(scale * x)).
template <typename T>
void softmax_backward_loop(T* dx, const T* dy, const T* y, int64_t rows, int64_t d, T scale) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t i = 0; i < rows; ++i) {
    const T* dyr = dy + i * d;
    const T* yr = y + i * d;
    T* dxr = dx + i * d;
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < d; ++j) s += dyr[j] * yr[j];
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) dxr[j] = scale * yr[j] * (dyr[j] - s);
  }
}

// ---- layer normalisation over the last d values of each row ---------------------
// mu = mean x, var = mean (x - mu)^2 (two passes over the row in cache),
// rstd = 1/sqrt(var + eps), xhat = (x - mu) rstd, y = xhat ⊙ w + b (w, b may be null).

template <typename T>
void layernorm_forward_loop(T* y, T* xhat, T* rstd, const T* x, const T* w, const T* b, int64_t rows, int64_t d,
                            double eps) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t i = 0; i < rows; ++i) {
    const T* xr = x + i * d;
    T* yr = y + i * d;
    T* hr = xhat + i * d;
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < d; ++j) s += xr[j];
    const T mu = s / T(d);
    T v = 0;
#pragma omp simd reduction(+ : v)
    for (int64_t j = 0; j < d; ++j) v += (xr[j] - mu) * (xr[j] - mu);
    const T r = T(1.0 / __builtin_sqrt(double(v) / double(d) + eps));
    rstd[i] = r;
    if (w != nullptr && b != nullptr) {
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) {
        const T h = (xr[j] - mu) * r;
        hr[j] = h;
        yr[j] = h * w[j] + b[j];
      }
    } else if (w != nullptr) {
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) {
        const T h = (xr[j] - mu) * r;
        hr[j] = h;
        yr[j] = h * w[j];
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) {
        const T h = (xr[j] - mu) * r;
        hr[j] = h;
        yr[j] = h;
      }
    }
  }
}

// g = dy ⊙ w (dy when w is null), means over the row:
//   dx = rstd (g - mean g - xhat mean(g ⊙ xhat))
// and, when dw is not null, the column sums over rows dw = sum dy ⊙ xhat,
// db = sum dy (db may be null), each thread's into its float64 partial
// (partial: threads x 2d doubles from the caller), added in thread order.
template <typename T>
void layernorm_backward_loop(T* dx, T* dw, T* db, const T* dy, const T* xhat, const T* rstd, const T* w, int64_t rows,
                             int64_t d, double* partial, int threads) {
  if (dw != nullptr) {  // all of it: a team may get fewer threads than asked for
    for (int64_t j = 0; j < int64_t(threads) * 2 * d; ++j) partial[j] = 0.0;
  }
#pragma omp parallel num_threads(threads) if (rows * d >= kParallelMin && threads > 1)
  {
#ifdef _OPENMP
    const int t = omp_get_thread_num();
#else
    const int t = 0;
#endif
    double* pw = partial + int64_t(t) * 2 * d;
    double* pb = pw + d;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < rows; ++i) {
      const T* dyr = dy + i * d;
      const T* hr = xhat + i * d;
      T* dxr = dx + i * d;
      T a = 0, c = 0;
      if (w != nullptr) {
#pragma omp simd reduction(+ : a, c)
        for (int64_t j = 0; j < d; ++j) {
          const T g = dyr[j] * w[j];
          a += g;
          c += g * hr[j];
        }
      } else {
#pragma omp simd reduction(+ : a, c)
        for (int64_t j = 0; j < d; ++j) {
          a += dyr[j];
          c += dyr[j] * hr[j];
        }
      }
      const T ma = a / T(d), mc = c / T(d), r = rstd[i];
      if (w != nullptr) {
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) dxr[j] = r * (dyr[j] * w[j] - ma - hr[j] * mc);
      } else {
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) dxr[j] = r * (dyr[j] - ma - hr[j] * mc);
      }
      if (dw != nullptr) {
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) {
          pw[j] += double(dyr[j] * hr[j]);
          pb[j] += double(dyr[j]);
        }
      }
    }
  }
  if (dw != nullptr) {
    for (int64_t j = 0; j < d; ++j) {
      double sw = 0.0, sb = 0.0;
      for (int t = 0; t < threads; ++t) {
        sw += partial[int64_t(t) * 2 * d + j];
        sb += partial[int64_t(t) * 2 * d + d + j];
      }
      dw[j] = T(sw);
      if (db != nullptr) db[j] = T(sb);
    }
  }
}

// ---- recurrent cells: one time step of LSTM and GRU --------------------------
// n rows (the batch) of H units; the gate blocks of a row sit side by side
// (LSTM: i f g o, 4H values; GRU: r z n, 3H), as lamina/layers/recurrent.py
// and lamina/ops/reference.py lay them out.  σ(a) = ½ + ½ tanh(a/2): one
// transcendental, and nothing to overflow.  Parallel over rows, vector
// lanes over units.

template <typename T>
inline T sigmoid_(T a) {
  return T(0.5) + T(0.5) * tanh_(T(0.5) * a);
}

// gates = [σ(a_i) σ(a_f) tanh(a_g) σ(a_o)], a = gx + gh;  c = f c_prev + i g;  h = o tanh(c)
template <typename T>
void lstm_cell_forward_loop(T* gates, T* c, T* h, const T* gx, const T* gh, const T* c_prev, int64_t n, int64_t hh) {
#pragma omp parallel for schedule(static) if (n * hh >= kParallelMin / 4)
  for (int64_t r = 0; r < n; ++r) {
    const T* x = gx + r * 4 * hh;
    const T* g_h = gh + r * 4 * hh;
    T* a = gates + r * 4 * hh;
#pragma omp simd
    for (int64_t j = 0; j < hh; ++j) {
      const T i = sigmoid_(x[j] + g_h[j]);
      const T f = sigmoid_(x[hh + j] + g_h[hh + j]);
      const T g = tanh_(x[2 * hh + j] + g_h[2 * hh + j]);
      const T o = sigmoid_(x[3 * hh + j] + g_h[3 * hh + j]);
      a[j] = i, a[hh + j] = f, a[2 * hh + j] = g, a[3 * hh + j] = o;
      const T cn = f * c_prev[r * hh + j] + i * g;
      c[r * hh + j] = cn;
      h[r * hh + j] = o * tanh_(cn);
    }
  }
}

// From dh (of h_t) and dc (of c_t, from step t+1):  dc += dh o (1 - tanh² c);
// da = [dc g i(1-i), dc c_prev f(1-f), dc i (1-g²), dh tanh(c) o(1-o)];  dc_prev = dc f.
// dc_prev may be dc (each element is read before it is written).
template <typename T>
void lstm_cell_backward_loop(T* da, T* dc_prev, const T* dh, const T* dc, const T* gates, const T* c, const T* c_prev,
                             int64_t n, int64_t hh) {
#pragma omp parallel for schedule(static) if (n * hh >= kParallelMin / 4)
  for (int64_t r = 0; r < n; ++r) {
    const T* a = gates + r * 4 * hh;
    T* d = da + r * 4 * hh;
#pragma omp simd
    for (int64_t j = 0; j < hh; ++j) {
      const int64_t k = r * hh + j;
      const T i = a[j], f = a[hh + j], g = a[2 * hh + j], o = a[3 * hh + j];
      const T tc = tanh_(c[k]);
      const T dct = dc[k] + dh[k] * o * (T(1) - tc * tc);
      d[j] = dct * g * i * (T(1) - i);
      d[hh + j] = dct * c_prev[k] * f * (T(1) - f);
      d[2 * hh + j] = dct * i * (T(1) - g * g);
      d[3 * hh + j] = dh[k] * tc * o * (T(1) - o);
      dc_prev[k] = dct * f;
    }
  }
}

// gates = [r z n]: r = σ(gx_r + gh_r), z = σ(gx_z + gh_z), n = tanh(gx_n + r gh_n);
// ghn = gh_n;  h = n + z (h_prev - n)
template <typename T>
void gru_cell_forward_loop(T* gates, T* ghn, T* h, const T* gx, const T* gh, const T* h_prev, int64_t n, int64_t hh) {
#pragma omp parallel for schedule(static) if (n * hh >= kParallelMin / 4)
  for (int64_t r = 0; r < n; ++r) {
    const T* x = gx + r * 3 * hh;
    const T* g_h = gh + r * 3 * hh;
    T* a = gates + r * 3 * hh;
#pragma omp simd
    for (int64_t j = 0; j < hh; ++j) {
      const int64_t k = r * hh + j;
      const T rr = sigmoid_(x[j] + g_h[j]);
      const T z = sigmoid_(x[hh + j] + g_h[hh + j]);
      const T hn = g_h[2 * hh + j];
      const T nn = tanh_(x[2 * hh + j] + rr * hn);
      a[j] = rr, a[hh + j] = z, a[2 * hh + j] = nn;
      ghn[k] = hn;
      h[k] = nn + z * (h_prev[k] - nn);
    }
  }
}

// From dh (of h_t):  da_n = dh (1-z)(1-n²);  dgx = [da_n gh_n r(1-r), dh (h_prev-n) z(1-z), da_n];
// dgh = dgx with its n block times r;  dh_direct = dh z (the path to h_{t-1} that skips W_hh).
template <typename T>
void gru_cell_backward_loop(T* dgx, T* dgh, T* dh_direct, const T* dh, const T* gates, const T* ghn, const T* h_prev,
                            int64_t n, int64_t hh) {
#pragma omp parallel for schedule(static) if (n * hh >= kParallelMin / 4)
  for (int64_t r = 0; r < n; ++r) {
    const T* a = gates + r * 3 * hh;
    T* dx = dgx + r * 3 * hh;
    T* dhh = dgh + r * 3 * hh;
#pragma omp simd
    for (int64_t j = 0; j < hh; ++j) {
      const int64_t k = r * hh + j;
      const T rr = a[j], z = a[hh + j], nn = a[2 * hh + j], g = dh[k];
      const T dan = g * (T(1) - z) * (T(1) - nn * nn);
      const T dar = dan * ghn[k] * rr * (T(1) - rr);
      const T daz = g * (h_prev[k] - nn) * z * (T(1) - z);
      dx[j] = dar, dx[hh + j] = daz, dx[2 * hh + j] = dan;
      dhh[j] = dar, dhh[hh + j] = daz, dhh[2 * hh + j] = dan * rr;
      dh_direct[k] = g * z;
    }
  }
}

// ---- CTC: one row of the forward-backward recursions (ctc.cpp) -----------------
// Over the extended label positions s < wn of one sample at one step, with
// emit[s] = log y_t(l'_s) and skip[s] = 0 where the s-2 transition is allowed,
// -inf where not:
//   α_t(s) = emit[s] + lse(α_(t-1)(s), α_(t-1)(s-1), α_(t-1)(s-2) + skip[s])
//   β_t(s) = emit[s] + lse(β_(t+1)(s), β_(t+1)(s+1), β_(t+1)(s+2) + skip[s+2])
// lse of three as m + log(Σ exp(v − m)), m their max (0 when all are -inf, so
// the sum is 0 and the result -inf): three exp and one log a position, in
// vector lanes, where the scalar log-add-exp makes two exp and two log1p.

#pragma omp declare simd
inline float lse3_(float a, float b, float c) {
  const float neg = -__builtin_inff();
  float m = a > b ? a : b;
  m = m > c ? m : c;
  m = m == neg ? 0.0f : m;
  return m + log_f32(exp_f32(a - m) + exp_f32(b - m) + exp_f32(c - m));
}

inline void ctc_alpha_row_loop(float* cur, const float* prev, const float* emit, const float* skip, int64_t wn) {
  const float neg = -__builtin_inff();
  cur[0] = emit[0] + prev[0];
  if (wn > 1) cur[1] = emit[1] + lse3_(prev[1], prev[0], neg);
#pragma omp simd
  for (int64_t s = 2; s < wn; ++s) cur[s] = emit[s] + lse3_(prev[s], prev[s - 1], prev[s - 2] + skip[s]);
}

inline void ctc_beta_row_loop(float* cur, const float* next, const float* emit, const float* skip, int64_t wn) {
  const float neg = -__builtin_inff();
#pragma omp simd
  for (int64_t s = 0; s < wn - 2; ++s) cur[s] = emit[s] + lse3_(next[s], next[s + 1], next[s + 2] + skip[s + 2]);
  if (wn > 1) cur[wn - 2] = emit[wn - 2] + lse3_(next[wn - 2], next[wn - 1], neg);
  cur[wn - 1] = emit[wn - 1] + next[wn - 1];
}

// w[s] = exp(α_t(s) + β_t(s) − emit[s] + nll): the posterior of position s
// at step t (0 where the label has probability 0).
inline void ctc_posterior_row_loop(float* w, const float* alpha, const float* beta, const float* emit, float nll,
                                   int64_t wn) {
  const float neg = -__builtin_inff();
#pragma omp simd
  for (int64_t s = 0; s < wn; ++s) {
    const float v = exp_f32(alpha[s] + beta[s] - (emit[s] == neg ? 0.0f : emit[s]) + nll);
    w[s] = emit[s] == neg ? 0.0f : v;
  }
}

}  // namespace
}  // namespace cpu
}  // namespace lamina
