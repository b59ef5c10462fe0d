// Batch normalisation over x viewed as (N, C, L): per channel c, the m = N*L
// values x[n, c, l].  Derivation in docs/normalization.md.
//
//   stats:    mean[c] = (1/m) sum x,  var[c] = (1/m) sum (x - mean)^2     (two passes, double sums)
//   apply:    xhat = (x - mean[c]) * inv_std[c],  y = gamma[c] * xhat + beta[c]
//   backward: dgamma[c] = sum dy * xhat,  dbeta[c] = sum dy
//             dx = gamma inv_std (dy - dbeta/m - xhat dgamma/m)      (batch statistics)
//             dx = gamma inv_std dy                                   (running statistics)
// One thread owns each channel, so the sums need no atomics.  NumPy needs a
// full temporary per arithmetic step for each of these.
#include "kernels.h"

namespace lamina {
namespace cpu {

template <typename T>
void batchnorm_stats(T* mean, T* var, const T* x, int64_t n, int64_t c, int64_t l) {
  const double m = double(n * l);
#pragma omp parallel for schedule(static) if (n * c * l >= (1 << 15))
  for (int64_t ci = 0; ci < c; ++ci) {
    double s = 0;
    for (int64_t ni = 0; ni < n; ++ni) {
      const T* row = x + (ni * c + ci) * l;
      T part = 0;
#pragma omp simd reduction(+ : part)
      for (int64_t k = 0; k < l; ++k) part += row[k];
      s += double(part);
    }
    const double mu = s / m;
    double q = 0;
    for (int64_t ni = 0; ni < n; ++ni) {
      const T* row = x + (ni * c + ci) * l;
      const T mu_t = T(mu);
      T part = 0;
#pragma omp simd reduction(+ : part)
      for (int64_t k = 0; k < l; ++k) part += (row[k] - mu_t) * (row[k] - mu_t);
      q += double(part);
    }
    mean[ci] = T(mu);
    var[ci] = T(q / m);
  }
}

template <typename T>
void batchnorm_apply(T* y, T* xhat, const T* x, const T* mean, const T* inv_std, const T* gamma, const T* beta,
                     int64_t n, int64_t c, int64_t l) {
#pragma omp parallel for collapse(2) schedule(static) if (n * c * l >= (1 << 15))
  for (int64_t ni = 0; ni < n; ++ni) {
    for (int64_t ci = 0; ci < c; ++ci) {
      const int64_t off = (ni * c + ci) * l;
      const T mu = mean[ci], s = inv_std[ci];
      const T g = gamma != nullptr ? gamma[ci] : T(1), b = beta != nullptr ? beta[ci] : T(0);
      if (xhat != nullptr) {
#pragma omp simd
        for (int64_t k = 0; k < l; ++k) {
          const T h = (x[off + k] - mu) * s;
          xhat[off + k] = h;
          y[off + k] = g * h + b;
        }
      } else {
#pragma omp simd
        for (int64_t k = 0; k < l; ++k) y[off + k] = g * ((x[off + k] - mu) * s) + b;
      }
    }
  }
}

template <typename T>
void batchnorm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* xhat, const T* gamma, const T* inv_std,
                        int64_t n, int64_t c, int64_t l, bool batch_stats) {
  const double m = double(n * l);
#pragma omp parallel for schedule(static) if (n * c * l >= (1 << 15))
  for (int64_t ci = 0; ci < c; ++ci) {
    double sdy = 0, sdyx = 0;
    for (int64_t ni = 0; ni < n; ++ni) {
      const int64_t off = (ni * c + ci) * l;
      T a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
      for (int64_t k = 0; k < l; ++k) {
        a += dy[off + k];
        b += dy[off + k] * xhat[off + k];
      }
      sdy += double(a);
      sdyx += double(b);
    }
    dbeta[ci] = T(sdy);
    dgamma[ci] = T(sdyx);
    const T scale = (gamma != nullptr ? gamma[ci] : T(1)) * inv_std[ci];
    const T mean_dy = batch_stats ? T(sdy / m) : T(0), mean_dyx = batch_stats ? T(sdyx / m) : T(0);
    for (int64_t ni = 0; ni < n; ++ni) {
      const int64_t off = (ni * c + ci) * l;
#pragma omp simd
      for (int64_t k = 0; k < l; ++k) dx[off + k] = scale * (dy[off + k] - mean_dy - xhat[off + k] * mean_dyx);
    }
  }
}

#define LAMINA_BN_INSTANTIATE(T)                                                                                  \
  template void batchnorm_stats<T>(T*, T*, const T*, int64_t, int64_t, int64_t);                                  \
  template void batchnorm_apply<T>(T*, T*, const T*, const T*, const T*, const T*, const T*, int64_t, int64_t,     \
                                   int64_t);                                                                      \
  template void batchnorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, \
                                      bool);
LAMINA_BN_INSTANTIATE(float)
LAMINA_BN_INSTANTIATE(double)
#undef LAMINA_BN_INSTANTIATE

}  // namespace cpu
}  // namespace lamina
