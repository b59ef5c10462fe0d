// Fused softmax cross-entropy, one row at a time while it sits in cache:
//   pass 1: m = max_c x_c and sum_c x_c
//   pass 2: e_c = exp(x_c - m), written straight into the gradient row, and s = sum_c e_c
//   pass 3: g_c = scale (e_c / s - q_c)
// The loss needs no second exp: with q = (1-eps) onehot + eps/C and d_c = m - x_c >= 0,
//   loss = log s + sum_c q_c d_c = log s + (eps/C)(C m - sum_c x_c) + (1 - eps) d_label.
// NumPy needs a full (N, C) temporary for each of those steps.
#include <algorithm>
#include <cmath>

#include "kernels.h"
#include "vmath.h"

namespace lamina {
namespace cpu {

namespace {

inline double exp_(double v) { return std::exp(v); }
#pragma omp declare simd
inline float exp_(float v) { return exp_f32(v); }

// Sum of exp(x_c - m) over a row; writes the exponentials to e when e is not null.
template <typename T>
double row_exp_sum(const T* x, T m, T* e, int64_t c) {
  // float rows accumulate in float lanes (vectorised), double rows in double.
  T s = 0;
  if (e != nullptr) {
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < c; ++j) {
      const T v = exp_(x[j] - m);
      e[j] = v;
      s += v;
    }
  } else {
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < c; ++j) s += exp_(x[j] - m);
  }
  return double(s);
}

}  // namespace

template <typename T>
void softmax_xent(T* loss, T* dlogits, const T* logits, const int64_t* labels, int64_t n, int64_t c,
                  double smoothing, double grad_scale) {
  const double off = smoothing / double(c);  // q_c for c != label
  const double on = 1.0 - smoothing + off;   // q_label
#pragma omp parallel for schedule(static) if (n * c >= (1 << 14))
  for (int64_t i = 0; i < n; ++i) {
    const T* x = logits + i * c;
    const int64_t label = labels[i];
    T m = x[0];
    double sum_x = 0.0;
    for (int64_t j = 0; j < c; ++j) {
      m = std::max(m, x[j]);
      sum_x += double(x[j]);
    }
    T* g = dlogits != nullptr ? dlogits + i * c : nullptr;
    const double s = row_exp_sum(x, m, g, c);
    const double md = double(m);
    // sum_c q_c d_c, every term >= 0; sum_x is exact enough: C m - sum_x is a sum of d_c >= 0.
    const double qdist = off * std::max(0.0, double(c) * md - sum_x) + (on - off) * (md - double(x[label]));
    loss[i] = T(std::log(s) + qdist);
    if (g != nullptr) {
      const T a = T(grad_scale / s);
      const T b_off = T(grad_scale * off);
      const T b_on = T(grad_scale * on);
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) g[j] = g[j] * a - b_off;
      g[label] += b_off - b_on;
    }
  }
}

template void softmax_xent<float>(float*, float*, const float*, const int64_t*, int64_t, int64_t, double, double);
template void softmax_xent<double>(double*, double*, const double*, const int64_t*, int64_t, int64_t, double, double);

}  // namespace cpu
}  // namespace lamina
