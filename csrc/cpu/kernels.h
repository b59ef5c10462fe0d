// lamina CPU kernels: plain C++ over raw pointers, parallel with OpenMP.
// Shapes, dtypes and contiguity are validated in Python (lamina/ops), where
// an error can name the layer; these functions only assume them.
#pragma once
#include <cstdint>

namespace lamina {
namespace cpu {

// Geometry of a 2-d convolution or pooling window sweep.  Input (n, c, h, w),
// kernel (kh, kw), stride (sh, sw), padding top/left (pt, pl; bottom/right are
// implied by the output size), dilation (dh, dw), output (oh, ow).
struct ConvGeometry {
  int64_t n, c, h, w;
  int64_t kh, kw, sh, sw, pt, pl, dh, dw;
  int64_t oh, ow;
};

// The CPU's instruction set (cpu_features.cpp, built for the baseline).
// Kernels with an AVX2 + FMA build use it when avx2_enabled(): the CPU has
// both and set_avx2(false) has not turned them off (tests do, to check the
// baseline build too).  set_avx2 returns the previous setting.
bool cpu_has_avx2_fma();
bool avx2_enabled();
bool set_avx2(bool enabled);

// GELU.  exact:  y = x * Phi(x),  Phi(x) = 0.5 * (1 + erf(x / sqrt 2))
//        tanh:   y = 0.5 x (1 + tanh u),  u = sqrt(2/pi) (x + 0.044715 x^3)
template <typename T>
void gelu_forward(T* y, const T* x, int64_t n, bool tanh_approx);

// dx = dy * dGELU/dx(x)
//   exact: dGELU/dx = Phi(x) + x phi(x),  phi(x) = exp(-x^2/2) / sqrt(2 pi)
//   tanh:  dGELU/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
template <typename T>
void gelu_backward(T* dx, const T* dy, const T* x, int64_t n, bool tanh_approx);

// Softmax over the last axis of a (rows, d) array: y = softmax(scale * x),
// scale > 0 (attention folds its 1/sqrt(d_head) in here); and its backward,
// dx = scale * y ⊙ (dy - sum_j dy_j y_j) per row.
template <typename T>
void softmax_forward(T* y, const T* x, int64_t rows, int64_t d, double scale);
template <typename T>
void softmax_backward(T* dx, const T* dy, const T* y, int64_t rows, int64_t d, double scale);

// Layer normalisation over the last axis of a (rows, d) array:
//   rstd = 1/sqrt(var + eps), xhat = (x - mean) rstd, y = xhat ⊙ w + b
// (w and b may be null; xhat and rstd (rows,) are written for backward), and
//   dx = rstd (g - mean g - xhat mean(g ⊙ xhat)),  g = dy ⊙ w,
//   dw = sum_rows dy ⊙ xhat,  db = sum_rows dy   (overwritten; dw and db may be null).
template <typename T>
void layernorm_forward(T* y, T* xhat, T* rstd, const T* x, const T* w, const T* b, int64_t rows, int64_t d,
                       double eps);
template <typename T>
void layernorm_backward(T* dx, T* dw, T* db, const T* dy, const T* xhat, const T* rstd, const T* w, int64_t rows,
                        int64_t d);

// One time step of an LSTM or GRU cell (lamina/layers/recurrent.py): n rows
// of H units, gate blocks side by side in each row.
template <typename T>
void lstm_cell_forward(T* gates, T* c, T* h, const T* gx, const T* gh, const T* c_prev, int64_t n, int64_t hh);
template <typename T>
void lstm_cell_backward(T* da, T* dc_prev, const T* dh, const T* dc, const T* gates, const T* c, const T* c_prev,
                        int64_t n, int64_t hh);
template <typename T>
void gru_cell_forward(T* gates, T* ghn, T* h, const T* gx, const T* gh, const T* h_prev, int64_t n, int64_t hh);
template <typename T>
void gru_cell_backward(T* dgx, T* dgh, T* dh_direct, const T* dh, const T* gates, const T* ghn, const T* h_prev,
                       int64_t n, int64_t hh);

// The float32 builds for AVX2 + FMA (vector_kernels_avx2.cpp) that the
// functions above call when avx2_enabled().
void gelu_forward_avx2(float* y, const float* x, int64_t n, bool tanh_approx);
void gelu_backward_avx2(float* dx, const float* dy, const float* x, int64_t n, bool tanh_approx);
void softmax_forward_avx2(float* y, const float* x, int64_t rows, int64_t d, float scale);
void softmax_backward_avx2(float* dx, const float* dy, const float* y, int64_t rows, int64_t d, float scale);
void layernorm_forward_avx2(float* y, float* xhat, float* rstd, const float* x, const float* w, const float* b,
                            int64_t rows, int64_t d, double eps);
void layernorm_backward_avx2(float* dx, float* dw, float* db, const float* dy, const float* xhat, const float* rstd,
                             const float* w, int64_t rows, int64_t d, double* partial, int threads);
void lstm_cell_forward_avx2(float* gates, float* c, float* h, const float* gx, const float* gh, const float* c_prev,
                            int64_t n, int64_t hh);
void lstm_cell_backward_avx2(float* da, float* dc_prev, const float* dh, const float* dc, const float* gates,
                             const float* c, const float* c_prev, int64_t n, int64_t hh);
void gru_cell_forward_avx2(float* gates, float* ghn, float* h, const float* gx, const float* gh, const float* h_prev,
                           int64_t n, int64_t hh);
void gru_cell_backward_avx2(float* dgx, float* dgh, float* dh_direct, const float* dh, const float* gates,
                            const float* ghn, const float* h_prev, int64_t n, int64_t hh);
void ctc_alpha_row_avx2(float* cur, const float* prev, const float* emit, const float* skip, int64_t wn);
void ctc_beta_row_avx2(float* cur, const float* next, const float* emit, const float* skip, int64_t wn);
void ctc_posterior_row_avx2(float* w, const float* alpha, const float* beta, const float* emit, float nll, int64_t wn);

// The float32 rows of the CTC recursions (vector_loops.h), from the AVX2 +
// FMA build when avx2_enabled(), else the baseline one: ctc.cpp's float path.
struct CtcRowsF32 {
  void (*alpha)(float* cur, const float* prev, const float* emit, const float* skip, int64_t wn);
  void (*beta)(float* cur, const float* next, const float* emit, const float* skip, int64_t wn);
  void (*posterior)(float* w, const float* alpha, const float* beta, const float* emit, float nll, int64_t wn);
};
CtcRowsF32 ctc_rows_f32();

// Softmax cross-entropy over rows of logits (N, C) with integer labels (N,),
// forward and backward fused.  With q = (1 - eps) onehot(label) + eps / C and
// m = max_c x_c:
//   loss[i]   = log sum_c exp(x_c - m) + sum_c q_c (m - x_c)      (every term >= 0 or small)
//   dlogits[i, c] = grad_scale * (softmax(x)_c - q_c)             (skipped when dlogits is null)
template <typename T>
void softmax_xent(T* loss, T* dlogits, const T* logits, const int64_t* labels, int64_t n, int64_t c,
                  double smoothing, double grad_scale);

// CTC loss (lamina.losses.CTCLoss; the CPU twin of csrc/cuda/ctc.cu): nll (N,)
// and, when grad is not null, grad = scale[n] · ∂nll_n/∂log_probs in
// log_probs' layout (log_probs[t, n, c] at t·st + n·sn + c); targets (N, s_max)
// padded; alpha and beta workspaces of N·t_max·(2 s_max + 1) each.
template <typename T>
void ctc_loss(T* nll, T* grad, T* alpha, T* beta, const T* lp, const int64_t* targets, const int64_t* input_lengths,
              const int64_t* target_lengths, const T* scale, int64_t t_max, int64_t n, int64_t c, int64_t s_max,
              int64_t st, int64_t sn, int blank, bool zero_infinity);

// ReLU: y = x < 0 ? 0 : x;  dx = y > 0 ? dy : 0.
template <typename T>
void relu_forward(T* y, const T* x, int64_t n);
template <typename T>
void relu_backward(T* dx, const T* dy, const T* y, int64_t n);

// x (N, C, H, W) -> col (C*KH*KW, N*OH*OW); see conv.cpp for the layout.
template <typename T>
void im2col(T* col, const T* x, const ConvGeometry& g);

// The adjoint of im2col: dx (N, C, H, W) = scatter-add of dcol (overwrites dx).
template <typename T>
void col2im(T* dx, const T* dcol, const ConvGeometry& g);

// Direct stride-1 convolution without a column matrix (conv_direct.cpp,
// compiled for AVX2 + FMA).  Call only when conv_direct_supported() and
// conv_direct_geometry_ok(g).  x (N, C, H, W), w (O, C/G, KH, KW), y and dy
// (N, O, OH, OW); bias and db may be null.  dw and db are overwritten.
// variant: which register block the forward and backward-data use (vectors
// of pixels or of output channels; kAuto picks the one that wastes less).
bool conv_direct_supported();  // the CPU has AVX2 and FMA (conv.cpp)
bool conv_direct_geometry_ok(const ConvGeometry& g);
enum ConvDirectVariant { kAuto = 0, kPixels = 1, kChannels = 2 };
template <typename T>
void conv_direct_forward(T* y, const T* x, const T* w, const T* bias, const ConvGeometry& g, int64_t o,
                         int64_t groups, int variant);
template <typename T>
void conv_direct_backward_data(T* dx, const T* dy, const T* w, const ConvGeometry& g, int64_t o, int64_t groups,
                               int variant);
template <typename T>
void conv_direct_backward_weight(T* dw, T* db, const T* dy, const T* x, const ConvGeometry& g, int64_t o,
                                 int64_t groups, int variant);

// (C, N, P) -> (N, C, P) plus bias[c] (bias may be null), and the reverse
// (N, C, P) -> (C, N, P) with per-channel sums (sums may be null).
template <typename T>
void channels_to_batch_major(T* out, const T* in, const T* bias, int64_t n, int64_t c, int64_t p);
template <typename T>
void batch_to_channels_major(T* out, T* sums, const T* in, int64_t n, int64_t c, int64_t p);

// Pooling over g.n planes of (h, w) (g.c is ignored); idx holds ih*w + iw of each maximum.
template <typename T>
void maxpool_forward(T* y, int64_t* idx, const T* x, const ConvGeometry& g);
template <typename T>
void maxpool_backward(T* dx, const T* dy, const int64_t* idx, const ConvGeometry& g);
template <typename T>
void avgpool_forward(T* y, const T* x, const ConvGeometry& g, bool count_include_pad);
template <typename T>
void avgpool_backward(T* dx, const T* dy, const ConvGeometry& g, bool count_include_pad);

// Batch normalisation over x viewed as (N, C, L); see batchnorm.cpp.  gamma,
// beta may be null (no affine); xhat may be null in batchnorm_apply (nothing
// cached).
template <typename T>
void batchnorm_stats(T* mean, T* var, const T* x, int64_t n, int64_t c, int64_t l);
template <typename T>
void batchnorm_apply(T* y, T* xhat, const T* x, const T* mean, const T* inv_std, const T* gamma, const T* beta,
                     int64_t n, int64_t c, int64_t l);
template <typename T>
void batchnorm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* xhat, const T* gamma, const T* inv_std,
                        int64_t n, int64_t c, int64_t l, bool batch_stats);

}  // namespace cpu
}  // namespace lamina
