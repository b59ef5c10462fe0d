// Fused softmax cross-entropy: one pass for the row maximum, one for the sum
// of exponentials, one to write the gradient.  NumPy needs a temporary of the
// full (N, C) size for each of those steps; here each row stays in cache.
#include <algorithm>
#include <cmath>

#include "kernels.h"

namespace lamina {
namespace cpu {

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
    for (int64_t j = 1; j < c; ++j) m = std::max(m, x[j]);
    // Sums in double: a float sum of C exponentials loses digits for large C.
    double s = 0.0, qdist = 0.0;
    for (int64_t j = 0; j < c; ++j) {
      const double d = double(m) - double(x[j]);  // >= 0
      s += std::exp(-d);
      qdist += (j == label ? on : off) * d;
    }
    loss[i] = T(std::log(s) + qdist);
    if (dlogits != nullptr) {
      T* g = dlogits + i * c;
      const double inv_s = 1.0 / s;
      for (int64_t j = 0; j < c; ++j) {
        const double p = std::exp(double(x[j]) - double(m)) * inv_s;
        g[j] = T(grad_scale * (p - (j == label ? on : off)));
      }
    }
  }
}

template void softmax_xent<float>(float*, float*, const float*, const int64_t*, int64_t, int64_t, double, double);
template void softmax_xent<double>(double*, double*, const double*, const int64_t*, int64_t, int64_t, double, double);

}  // namespace cpu
}  // namespace lamina
