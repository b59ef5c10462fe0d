// The loops of lamina's elementwise and row-wise CPU kernels (GELU, softmax,
// layer normalisation), written once and compiled twice: by vector_kernels.cpp
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

}  // namespace
}  // namespace cpu
}  // namespace lamina
