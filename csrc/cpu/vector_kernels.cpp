// Elementwise and row-wise kernels NumPy has no single ufunc for: GELU (erf),
// softmax and layer normalisation (one pass over each row in cache instead of
// a full-size temporary per NumPy step).  The loops are vector_loops.h;
// float32 runs on their AVX2 + FMA build (vector_kernels_avx2.cpp) where
// avx2_enabled(), else on this file's baseline build, as does float64.
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lamina {
namespace cpu {

namespace {
// double runs on libm (float on vmath.h's versions, in vector_loops.h)
inline double erf_(double v) { return std::erf(v); }
inline double exp_(double v) { return std::exp(v); }
inline double tanh_(double v) { return std::tanh(v); }

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
}  // namespace
}  // namespace cpu
}  // namespace lamina

#include "vector_loops.h"

namespace lamina {
namespace cpu {

template <typename T>
void gelu_forward(T* y, const T* x, int64_t n, bool tanh_approx) {
  if constexpr (std::is_same_v<T, float>) {
    if (avx2_enabled()) return gelu_forward_avx2(y, x, n, tanh_approx);
  }
  gelu_forward_loop(y, x, n, tanh_approx);
}

template <typename T>
void gelu_backward(T* dx, const T* dy, const T* x, int64_t n, bool tanh_approx) {
  if constexpr (std::is_same_v<T, float>) {
    if (avx2_enabled()) return gelu_backward_avx2(dx, dy, x, n, tanh_approx);
  }
  gelu_backward_loop(dx, dy, x, n, tanh_approx);
}

template <typename T>
void softmax_forward(T* y, const T* x, int64_t rows, int64_t d, double scale) {
  if constexpr (std::is_same_v<T, float>) {
    if (avx2_enabled()) return softmax_forward_avx2(y, x, rows, d, float(scale));
  }
  softmax_forward_loop(y, x, rows, d, T(scale));
}

template <typename T>
void softmax_backward(T* dx, const T* dy, const T* y, int64_t rows, int64_t d, double scale) {
  if constexpr (std::is_same_v<T, float>) {
    if (avx2_enabled()) return softmax_backward_avx2(dx, dy, y, rows, d, float(scale));
  }
  softmax_backward_loop(dx, dy, y, rows, d, T(scale));
}

template <typename T>
void layernorm_forward(T* y, T* xhat, T* rstd, const T* x, const T* w, const T* b, int64_t rows, int64_t d,
                       double eps) {
  if constexpr (std::is_same_v<T, float>) {
    if (avx2_enabled()) return layernorm_forward_avx2(y, xhat, rstd, x, w, b, rows, d, eps);
  }
  layernorm_forward_loop(y, xhat, rstd, x, w, b, rows, d, eps);
}

template <typename T>
void layernorm_backward(T* dx, T* dw, T* db, const T* dy, const T* xhat, const T* rstd, const T* w, int64_t rows,
                        int64_t d) {
  const int threads = max_threads();
  std::vector<double> partial(dw != nullptr ? size_t(threads) * 2 * size_t(d) : 0);
  if constexpr (std::is_same_v<T, float>) {
    if (avx2_enabled()) {
      return layernorm_backward_avx2(dx, dw, db, dy, xhat, rstd, w, rows, d, partial.data(), threads);
    }
  }
  layernorm_backward_loop(dx, dw, db, dy, xhat, rstd, w, rows, d, partial.data(), threads);
}

template <typename T>
void lstm_cell_forward(T* gates, T* c, T* h, const T* gx, const T* gh, const T* c_prev, int64_t n, int64_t hh) {
  if constexpr (std::is_same_v<T, float>) {
    if (avx2_enabled()) return lstm_cell_forward_avx2(gates, c, h, gx, gh, c_prev, n, hh);
  }
  lstm_cell_forward_loop(gates, c, h, gx, gh, c_prev, n, hh);
}

template <typename T>
void lstm_cell_backward(T* da, T* dc_prev, const T* dh, const T* dc, const T* gates, const T* c, const T* c_prev,
                        int64_t n, int64_t hh) {
  if constexpr (std::is_same_v<T, float>) {
    if (avx2_enabled()) return lstm_cell_backward_avx2(da, dc_prev, dh, dc, gates, c, c_prev, n, hh);
  }
  lstm_cell_backward_loop(da, dc_prev, dh, dc, gates, c, c_prev, n, hh);
}

template <typename T>
void gru_cell_forward(T* gates, T* ghn, T* h, const T* gx, const T* gh, const T* h_prev, int64_t n, int64_t hh) {
  if constexpr (std::is_same_v<T, float>) {
    if (avx2_enabled()) return gru_cell_forward_avx2(gates, ghn, h, gx, gh, h_prev, n, hh);
  }
  gru_cell_forward_loop(gates, ghn, h, gx, gh, h_prev, n, hh);
}

template <typename T>
void gru_cell_backward(T* dgx, T* dgh, T* dh_direct, const T* dh, const T* gates, const T* ghn, const T* h_prev,
                       int64_t n, int64_t hh) {
  if constexpr (std::is_same_v<T, float>) {
    if (avx2_enabled()) return gru_cell_backward_avx2(dgx, dgh, dh_direct, dh, gates, ghn, h_prev, n, hh);
  }
  gru_cell_backward_loop(dgx, dgh, dh_direct, dh, gates, ghn, h_prev, n, hh);
}

#define LAMINA_VECTOR_INSTANTIATE(T)                                                                            \
  template void gelu_forward<T>(T*, const T*, int64_t, bool);                                                   \
  template void gelu_backward<T>(T*, const T*, const T*, int64_t, bool);                                        \
  template void softmax_forward<T>(T*, const T*, int64_t, int64_t, double);                                     \
  template void softmax_backward<T>(T*, const T*, const T*, int64_t, int64_t, double);                          \
  template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, double);       \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, int64_t, int64_t);    \
  template void lstm_cell_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t);               \
  template void lstm_cell_backward<T>(T*, T*, const T*, const T*, const T*, const T*, const T*, int64_t, int64_t); \
  template void gru_cell_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t);                \
  template void gru_cell_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, int64_t, int64_t);
LAMINA_VECTOR_INSTANTIATE(float)
LAMINA_VECTOR_INSTANTIATE(double)
#undef LAMINA_VECTOR_INSTANTIATE

CtcRowsF32 ctc_rows_f32() {
  if (avx2_enabled()) return {ctc_alpha_row_avx2, ctc_beta_row_avx2, ctc_posterior_row_avx2};
  return {ctc_alpha_row_loop, ctc_beta_row_loop, ctc_posterior_row_loop};
}

}  // namespace cpu
}  // namespace lamina
