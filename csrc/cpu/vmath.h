// Vectorisable float32 exp and erf for the CPU kernels.
//
// libm's expf/erff are scalar calls the compiler cannot vectorise (without
// -ffast-math), and they are what made the first versions of the GELU and
// softmax kernels compute-bound (csrc/NOTES.md).  These are branch-free,
// inline, and written so that `#pragma omp simd` loops vectorise them with
// plain SSE2.  Accuracy: exp within 2 ulp on [-87, 88], 0, inf and NaN outside; erf within 1.5e-7
// absolute (Abramowitz & Stegun 7.1.26), below float32's resolution near +-1.
//
// Every function is static: the header is compiled once for the baseline
// instruction set and once for AVX2 + FMA (activations_avx2.cpp), and with
// external linkage the linker could keep the AVX2 copy for both.
#pragma once
#include <cstdint>
#include <cstring>

namespace lamina {
namespace cpu {

#pragma omp declare simd
static inline float exp_f32(float x0) {
  // Cephes expf: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial, 2^n by exponent bits.
  // The clamp keeps the exponent bits in range; the factor at the end restores
  // e^x = 0 below it (so exp(-inf) = 0 in a masked softmax) and inf above it.
  float x = x0 < -87.33654f ? -87.33654f : (x0 > 88.72283f ? 88.72283f : x0);
  const float fx = x * 1.44269504088896341f + 0.5f;
  int n = static_cast<int>(fx);
  n -= (fx < static_cast<float>(n)) ? 1 : 0;  // floor without SSE4.1
  const float fn = static_cast<float>(n);
  float r = x - fn * 0.693359375f;
  r = r + fn * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  // (a select on the result itself stops GCC 12 from vectorising: a product
  // does not; NaN needs nothing, the polynomial is NaN already)
  return p * scale * (x0 < -87.33654f ? 0.0f : (x0 > 88.72283f ? __builtin_inff() : 1.0f));
}

#pragma omp declare simd
static inline float erf_f32(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float t = 1.0f / (1.0f + 0.3275911f * ax);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const float y = 1.0f - p * t * exp_f32(-ax * ax);
  return x < 0.0f ? -y : y;
}

#pragma omp declare simd
static inline float tanh_f32(float x) {
  // tanh x = 1 - 2 / (e^(2x) + 1): exact limits at +-inf, absolute error ~1e-7 near 0.
  return 1.0f - 2.0f / (exp_f32(2.0f * x) + 1.0f);
}

}  // namespace cpu
}  // namespace lamina
