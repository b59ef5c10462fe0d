// The float32 loops of vector_loops.h compiled for AVX2 + FMA (the pragma
// below).  vector_kernels.cpp calls these only when avx2_enabled() (built
// without the pragma) says the CPU has both; as in conv_direct.cpp,
// everything else here has internal linkage and no standard-library
// template is instantiated.
#pragma GCC target("avx2,fma")

#include "kernels.h"
#include "vector_loops.h"

namespace lamina {
namespace cpu {

void gelu_forward_avx2(float* y, const float* x, int64_t n, bool tanh_approx) {
  gelu_forward_loop(y, x, n, tanh_approx);
}

void gelu_backward_avx2(float* dx, const float* dy, const float* x, int64_t n, bool tanh_approx) {
  gelu_backward_loop(dx, dy, x, n, tanh_approx);
}

void softmax_forward_avx2(float* y, const float* x, int64_t rows, int64_t d, float scale) {
  softmax_forward_loop(y, x, rows, d, scale);
}

void softmax_backward_avx2(float* dx, const float* dy, const float* y, int64_t rows, int64_t d, float scale) {
  softmax_backward_loop(dx, dy, y, rows, d, scale);
}

void layernorm_forward_avx2(float* y, float* xhat, float* rstd, const float* x, const float* w, const float* b,
                            int64_t rows, int64_t d, double eps) {
  layernorm_forward_loop(y, xhat, rstd, x, w, b, rows, d, eps);
}

void layernorm_backward_avx2(float* dx, float* dw, float* db, const float* dy, const float* xhat, const float* rstd,
                             const float* w, int64_t rows, int64_t d, double* partial, int threads) {
  layernorm_backward_loop(dx, dw, db, dy, xhat, rstd, w, rows, d, partial, threads);
}

void lstm_cell_forward_avx2(float* gates, float* c, float* h, const float* gx, const float* gh, const float* c_prev,
                            int64_t n, int64_t hh) {
  lstm_cell_forward_loop(gates, c, h, gx, gh, c_prev, n, hh);
}

void lstm_cell_backward_avx2(float* da, float* dc_prev, const float* dh, const float* dc, const float* gates,
                             const float* c, const float* c_prev, int64_t n, int64_t hh) {
  lstm_cell_backward_loop(da, dc_prev, dh, dc, gates, c, c_prev, n, hh);
}

void gru_cell_forward_avx2(float* gates, float* ghn, float* h, const float* gx, const float* gh, const float* h_prev,
                           int64_t n, int64_t hh) {
  gru_cell_forward_loop(gates, ghn, h, gx, gh, h_prev, n, hh);
}

void gru_cell_backward_avx2(float* dgx, float* dgh, float* dh_direct, const float* dh, const float* gates,
                            const float* ghn, const float* h_prev, int64_t n, int64_t hh) {
  gru_cell_backward_loop(dgx, dgh, dh_direct, dh, gates, ghn, h_prev, n, hh);
}

void ctc_alpha_row_avx2(float* cur, const float* prev, const float* emit, const float* skip, int64_t wn) {
  ctc_alpha_row_loop(cur, prev, emit, skip, wn);
}

void ctc_beta_row_avx2(float* cur, const float* next, const float* emit, const float* skip, int64_t wn) {
  ctc_beta_row_loop(cur, next, emit, skip, wn);
}

void ctc_posterior_row_avx2(float* w, const float* alpha, const float* beta, const float* emit, float nll, int64_t wn) {
  ctc_posterior_row_loop(w, alpha, beta, emit, nll, wn);
}

}  // namespace cpu
}  // namespace lamina
