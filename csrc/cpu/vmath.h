// Vectorisable float32 exp, log and erf for the CPU kernels.
//
// libm's expf/erff are scalar calls the compiler cannot vectorise (without
// -ffast-math), and they are what made the first versions of the GELU and
// softmax kernels compute-bound (csrc/NOTES.md).  These are branch-free,
// inline, and written so that `#pragma omp simd` loops vectorise them with
// plain SSE2.  Accuracy: exp within 2 ulp on [-87, 88], 0, inf and NaN outside; log within 2 ulp for
// positive normal x (0 gives -inf, inf inf, negative and NaN NaN; subnormals read as 0); erf within 1.5e-7
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
static inline float log_f32(float x0) {
  // Cephes logf: x = m 2^e with m in [1/√2, √2), log m = f − f²/2 + f³ P(f), f = m − 1, by a degree-8
  // polynomial; then + e ln2 in two parts.  The special values are selected at the end, branch-free.
  int32_t bits;
  std::memcpy(&bits, &x0, sizeof bits);
  int e = ((bits >> 23) & 0xff) - 126;  // x = m 2^e, m in [0.5, 1)
  const int32_t mbits = (bits & 0x007fffff) | 0x3f000000;
  float m;
  std::memcpy(&m, &mbits, sizeof m);
  const bool small = m < 0.707106781186547524f;
  e -= small ? 1 : 0;
  const float f = small ? m + m - 1.0f : m - 1.0f;
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const float fe = static_cast<float>(e);
  float y = p * f * z;
  y += fe * -2.12194440e-4f;
  y -= 0.5f * z;
  const float r = f + y + fe * 0.693359375f;
  const bool normal = x0 >= 1.17549435e-38f;  // false for 0, subnormals, negatives and NaN
  return normal ? (x0 < __builtin_inff() ? r : x0) : (x0 >= 0.0f ? -__builtin_inff() : __builtin_nanf(""));
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
