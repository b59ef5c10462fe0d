// Elementwise activations that NumPy has no single ufunc for (GELU needs erf).
#include <cmath>

#include "kernels.h"
#include "vmath.h"

namespace lamina {
namespace cpu {

namespace {
constexpr double kSqrt2OverPi = 0.79788456080286535588;  // sqrt(2/pi)
constexpr double kInvSqrt2 = 0.70710678118654752440;     // 1/sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;   // 1/sqrt(2 pi)
constexpr double kCubic = 0.044715;
constexpr int64_t kParallelMin = 1 << 15;  // below this, threads cost more than they save
}  // namespace

// Scalar math by type: libm for double, the vectorisable versions for float.
inline double erf_(double v) { return std::erf(v); }
inline double exp_(double v) { return std::exp(v); }
inline double tanh_(double v) { return std::tanh(v); }
#pragma omp declare simd
inline float erf_(float v) { return erf_f32(v); }
#pragma omp declare simd
inline float exp_(float v) { return exp_f32(v); }
#pragma omp declare simd
inline float tanh_(float v) { return tanh_f32(v); }

template <typename T>
void gelu_forward(T* y, const T* x, int64_t n, bool tanh_approx) {
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
void gelu_backward(T* dx, const T* dy, const T* x, int64_t n, bool tanh_approx) {
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

template void gelu_forward<float>(float*, const float*, int64_t, bool);
template void gelu_forward<double>(double*, const double*, int64_t, bool);
template void gelu_backward<float>(float*, const float*, const float*, int64_t, bool);
template void gelu_backward<double>(double*, const double*, const double*, int64_t, bool);

}  // namespace cpu
}  // namespace lamina
