// Launchers of lamina's CUDA kernels.  Each takes outputs, inputs, sizes and
// then the stream to launch on (CuPy's current stream, passed from Python),
// and returns the launch's cudaError_t.  Shapes and dtypes are validated in
// Python; pointers are device pointers from CuPy arrays.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace lamina {
namespace cuda {

// y = max(x, 0)
template <typename T>
cudaError_t relu_forward(T* y, const T* x, int64_t n, cudaStream_t stream);

// dx = dy where y > 0, else 0  (y is the forward output)
template <typename T>
cudaError_t relu_backward(T* dx, const T* dy, const T* y, int64_t n, cudaStream_t stream);

// GELU, exact (erf) or tanh approximation; math as in csrc/cpu/kernels.h.
// fp16/bf16 inputs are computed in fp32.
template <typename T>
cudaError_t gelu_forward(T* y, const T* x, int64_t n, bool tanh_approx, cudaStream_t stream);

// Inverted dropout: mask = [u >= p] / (1 - p) with u from lamina's
// counter-based generator at (key, offset), y = x * mask, in T.
template <typename T>
cudaError_t dropout_forward(T* y, T* mask, const T* x, int64_t n, double p, unsigned long long key, int64_t offset,
                            cudaStream_t stream);

template <typename T>
cudaError_t gelu_backward(T* dx, const T* dy, const T* x, int64_t n, bool tanh_approx, cudaStream_t stream);

// Fused softmax cross-entropy over rows of logits (N, C) with int64 labels:
// per-row loss, and grad_scale * (softmax - q) into dlogits unless it is null.
template <typename T>
cudaError_t softmax_xent(T* loss, T* dlogits, const T* logits, const int64_t* labels, int64_t n, int64_t c,
                         double smoothing, double grad_scale, cudaStream_t stream);

// CTC loss (lamina.losses.CTCLoss), T float or double: nll (N,) and, when
// grad is not null, grad = scale[n] · ∂nll_n/∂log_probs in log_probs' layout.
// log_probs[t, n, c] at t·stride_t + n·stride_n + c; targets (N, s_max)
// padded int64; alpha and beta workspaces of N·t_max·(2 s_max + 1) each
// (beta unused without grad).  Three launches (one without grad).
template <typename T>
cudaError_t ctc_loss(T* nll, T* grad, T* alpha, T* beta, const T* log_probs, const int64_t* targets,
                     const int64_t* input_lengths, const int64_t* target_lengths, const T* scale, int64_t t_max,
                     int64_t n, int64_t c, int64_t s_max, int64_t stride_t, int64_t stride_n, int blank,
                     bool zero_infinity, cudaStream_t stream);

// Fused optimizer updates (float and double), in place, over many
// parameters at once: one launch per kMultiTensorMax parameters (40 for
// AMSGrad's capturable Adam, whose six pointers fill the kernel's parameter
// space sooner).  The math of lamina/optim/sgd.py and adam.py.  Per parameter:
//   SGD:  ptr = {p, grad, momentum buffer (null when momentum is 0)},
//         s0 = 1 on its first step (the buffer is fresh), else 0.
//   Adam: ptr = {p, grad, exp_avg, exp_avg_sq, then max_exp_avg_sq when
//         amsgrad, then the step count t when capturable},
//         s0 = lr / (1 - beta1^t), s1 = sqrt(1 - beta2^t) at its own step t;
//         capturable: t is a device scalar of type T, incremented by the
//         launch, and s0, s1 are formed on the device (CUDA-graph safe).
constexpr int kMultiTensorMax = 48;
struct MultiTensor {
  void* ptr[6];
  int64_t n;
  double s0, s1, s2;
};
template <typename T>
cudaError_t sgd_update(const std::vector<MultiTensor>& tensors, double lr, double momentum, double dampening,
                       double weight_decay, bool nesterov, cudaStream_t stream);
template <typename T>
cudaError_t adam_update(const std::vector<MultiTensor>& tensors, double lr, double beta1, double beta2, double eps,
                        double weight_decay, bool decoupled, bool amsgrad, bool capturable, cudaStream_t stream);
//   NAdam, RAdam: ptr = {p, grad, exp_avg, exp_avg_sq}; s0, s1, s2 the
//         factors of parameter i's own step t (csrc/cuda/optim.cu), with
//         Adam's weight decay (decoupled: AdamW's).
template <typename T>
cudaError_t adam_variant_update(const std::vector<MultiTensor>& tensors, bool radam, double lr, double beta1,
                                double beta2, double eps, double weight_decay, bool decoupled, cudaStream_t stream);
//   RMSprop: ptr = {p, grad, square_avg, grad_avg (null unless centered),
//         momentum buffer (null unless momentum > 0)}.
//   Adagrad: ptr = {p, grad, sum}, s0 = lr / (1 + (t - 1) lr_decay) at its own step t.
template <typename T>
cudaError_t rmsprop_update(const std::vector<MultiTensor>& tensors, double lr, double alpha, double eps,
                           double weight_decay, double momentum, bool centered, cudaStream_t stream);
template <typename T>
cudaError_t adagrad_update(const std::vector<MultiTensor>& tensors, double eps, double weight_decay,
                           cudaStream_t stream);
// A weight average's update (EMA, SWA): a ← a + weight (x − a) in place, ptr = {a, x}.
template <typename T>
cudaError_t lerp_update(const std::vector<MultiTensor>& tensors, double weight, cudaStream_t stream);
// The loss scaler's unscale: every gradient (ptr[0]) times inv_scale in
// place; *found_inf (a device int the caller zeroes) becomes 1 if any
// result is inf or NaN.
template <typename T>
cudaError_t unscale_grads(const std::vector<MultiTensor>& tensors, double inv_scale, int* found_inf,
                          cudaStream_t stream);

// Batch normalisation over x (N, C, L), T float or double (16-bit inputs are
// widened by the caller).  Forward: y and xhat (xhat may be null), inv_std
// (C,), mean and var (C,, biased; may be null); batch_stats: from x, and
// when f_running >= 0 the running statistics become (1 - f) running + f
// (mean, unbiased var); else from running_mean and running_var.  Backward:
// dx, dgamma, dbeta (C,); gamma may be null (1).  workspace: at least
// 3 * C * batchnorm_slices(N, C, L) doubles (forward with batch_stats; else
// none) and 2 * C * slices (backward).  Two launches each.
int batchnorm_slices(int64_t n, int64_t c, int64_t l);
template <typename T>
cudaError_t batchnorm_forward(T* y, T* xhat, T* mean, T* var, T* inv_std, T* running_mean, T* running_var,
                              double* workspace, const T* x, const T* gamma, const T* beta, int64_t n, int64_t c,
                              int64_t l, double eps, bool batch_stats, double f_running, cudaStream_t stream);
template <typename T>
cudaError_t batchnorm_backward(T* dx, T* dgamma, T* dbeta, double* workspace, const T* dy, const T* xhat,
                               const T* gamma, const T* inv_std, int64_t n, int64_t c, int64_t l, bool batch_stats,
                               cudaStream_t stream);

// 2-D max pooling over planes = N*C planes of (h, w): y and idx (int64,
// ih * w + iw of each window's winner, PyTorch's rules) of shape
// (planes, oh, ow); backward: dx (planes, h, w) from dy and idx.
struct PoolShape {
  int64_t planes;
  int h, w, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw;
};
template <typename T>
cudaError_t maxpool2d_forward(T* y, int64_t* idx, const T* x, const PoolShape& g, cudaStream_t stream);
template <typename T>
cudaError_t maxpool2d_backward(T* dx, const T* dy, const int64_t* idx, const PoolShape& g, cudaStream_t stream);

// Row-wise over x (rows, d), contiguous: softmax(scale x) and its backward
// from y (float, double, half, bfloat16, computed in float or double);
// layer normalisation (float, double): y, xhat (rows, d) and rstd (rows,),
// w and b (d,) may be null; backward dx, and dw, db (d,) unless dw is null,
// with a workspace of 2 * d * layernorm_row_chunks(rows, d) doubles.
int layernorm_row_chunks(int64_t rows, int64_t d);
template <typename T>
cudaError_t softmax_forward(T* y, const T* x, int64_t rows, int64_t d, double scale, cudaStream_t stream);
template <typename T>
cudaError_t softmax_backward(T* dx, const T* dy, const T* y, int64_t rows, int64_t d, double scale,
                             cudaStream_t stream);
template <typename T>
cudaError_t layernorm_forward(T* y, T* xhat, T* rstd, const T* x, const T* w, const T* b, int64_t rows, int64_t d,
                              double eps, cudaStream_t stream);
template <typename T>
cudaError_t layernorm_backward(T* dx, T* dw, T* db, double* workspace, const T* dy, const T* xhat, const T* rstd,
                               const T* w, int64_t rows, int64_t d, cudaStream_t stream);

// One time step of an LSTM or GRU cell (rnn.cu; float, double): n rows of
// hh units, gate blocks side by side per row (LSTM i f g o: 4 hh values;
// GRU r z n: 3 hh), everything contiguous.  LSTM forward writes the
// activated gates, c and h (c may be c_prev); backward da (n, 4 hh) and
// dc_prev (may be dc).  GRU forward writes gates, ghn (= gh's n block) and
// h; backward dgx, dgh (n, 3 hh) and dh_direct (n, hh).
template <typename T>
cudaError_t lstm_cell_forward(T* gates, T* c, T* h, const T* gx, const T* gh, const T* c_prev, int64_t n, int64_t hh,
                              cudaStream_t stream);
template <typename T>
cudaError_t lstm_cell_backward(T* da, T* dc_prev, const T* dh, const T* dc, const T* gates, const T* c,
                               const T* c_prev, int64_t n, int64_t hh, cudaStream_t stream);
template <typename T>
cudaError_t gru_cell_forward(T* gates, T* ghn, T* h, const T* gx, const T* gh, const T* h_prev, int64_t n, int64_t hh,
                             cudaStream_t stream);
template <typename T>
cudaError_t gru_cell_backward(T* dgx, T* dgh, T* dh_direct, const T* dh, const T* gates, const T* ghn,
                              const T* h_prev, int64_t n, int64_t hh, cudaStream_t stream);

// Epilogue activations of the GEMMs (act_value/act_grad in common.cuh).
constexpr int kActNone = 0;
constexpr int kActRelu = 1;
constexpr int kActGelu = 2;      // exact (erf)
constexpr int kActGeluTanh = 3;  // tanh approximation

// GEMM: C[M, N] = act(op(A) · op(B) + bias), with
//   op(A)[m, k] = trans_a ? A[k * lda + m] : A[m * lda + k]
//   op(B)[k, n] = trans_b ? B[n * ldb + k] : B[k * ldb + n]
// and bias (N,) or null.  aux, unless null, receives the pre-activation
// (what the activation's backward needs).  Leading dimensions in elements.
// T = float runs on CUDA cores (gemm.cu); __half and __nv_bfloat16 run on
// tensor cores with fp32 accumulation (gemm_tc.cu).  OutT is T, or float.
template <typename T, typename OutT>
cudaError_t gemm(OutT* C, OutT* aux, const T* A, const T* B, const T* bias, int64_t M, int64_t N, int64_t K,
                 int64_t lda, int64_t ldb, int64_t ldc, bool trans_a, bool trans_b, int act, cudaStream_t stream);
#define LAMINA_GEMM_DECLARE(T, OutT)                                                                            \
  template <>                                                                                                   \
  cudaError_t gemm<T, OutT>(OutT * C, OutT * aux, const T* A, const T* B, const T* bias, int64_t M, int64_t N,  \
                            int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool trans_a, bool trans_b, int act, \
                            cudaStream_t stream);
LAMINA_GEMM_DECLARE(float, float)
LAMINA_GEMM_DECLARE(__half, __half)
LAMINA_GEMM_DECLARE(__half, float)
LAMINA_GEMM_DECLARE(__nv_bfloat16, __nv_bfloat16)
LAMINA_GEMM_DECLARE(__nv_bfloat16, float)
#undef LAMINA_GEMM_DECLARE

// fp32 GEMM with the K reduction split into `splits` ranges (gemm.cu), for
// problems of few tiles: fp32 partial sums go to workspace (splits * M * N
// floats; unused when splits is 1), then are added in a fixed order
// (deterministic) and the epilogue is applied.  Same contract as gemm.
cudaError_t sgemm_split_k(float* C, float* aux, float* workspace, int splits, const float* A, const float* B,
                          const float* bias, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc,
                          bool trans_a, bool trans_b, int act, cudaStream_t stream);

// The tensor-core GEMM has two kernels: mma.sync fed by cp.async
// (gemm_tc.cu, sm_80 and later) and wgmma fed by TMA (gemm_wgmma.cu, sm_90a:
// compute capability 9.0 only).  gemm<__half|__nv_bfloat16, ...> picks the
// wgmma one on such a device when wgmma_operands_ok holds for both operands.
// set_tensor_core_gemm chooses instead: 0 that automatic choice (the
// default), 1 always mma.sync, 2 always wgmma (cudaErrorNotSupported where
// it cannot run).  Process-wide, for benchmarks and tests.
void set_tensor_core_gemm(int variant);
int tensor_core_gemm();
// Whether the current device runs sm_90a code (compute capability 9.0).
bool device_runs_wgmma();
template <typename T>
cudaError_t gemm_wgmma(void* C, void* aux, bool out_f32, const T* A, const T* B, const T* bias, int64_t M, int64_t N,
                       int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool trans_a, bool trans_b, int act,
                       cudaStream_t stream);
// TMA needs a 16-byte aligned base and a row pitch that is a multiple of 16
// bytes: 8 elements of 16 bits.
template <typename T>
inline bool wgmma_operands_ok(const T* p, int64_t ld) {
  return ld % 8 == 0 && reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// dz = dy * act'(z) and dbias = sum over rows of dz, for row-major (M, N)
// arrays; z is the pre-activation (for ReLU the output works as well, since
// relu'(z) = [y > 0]).  dbias may be null.  One pass over dy and z.
template <typename T>
cudaError_t bias_act_backward(T* dz, T* dbias, const T* dy, const T* z, int64_t M, int64_t N, int act,
                              cudaStream_t stream);

// Geometry of a 2-d convolution, NCHW: input (n, c, h, w), weight
// (o, c / groups, kh, kw), output (n, o, oh, ow); padding top/left (the
// bottom/right padding is implied by oh, ow).
struct ConvShape {
  int n, c, h, w, o, groups, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow;
};

// Convolution as implicit GEMM (conv.cu): the im2col matrix is gathered
// tile by tile into shared memory and never written to device memory.
//   forward          y = W_g · col_g (+ bias)           (O/G) x (N*OH*OW) x (C/G*KH*KW)
//   backward-data    dx = W_gᵀ · dy, gathered            (C/G) x (N*H*W)  x (O/G*KH*KW)
//                    as sh*sw launches, one per stride phase of the input pixels (no masked FMAs)
//   backward-weight  dW_g = dy_g · col_gᵀ, split-K       (O/G) x (C/G*KH*KW) x (N*OH*OW)
// Backward-weight splits the reduction over N*OH*OW into `splits` ranges
// whose fp32 partial sums go to workspace (splits * O * C/G*KH*KW floats;
// unused when splits is 1) and are added in a fixed order: deterministic.
// The convolution kernels' tile height follows the channels (32, 64 or 128
// rows) and, by default, is halved while the grid would leave
// multiprocessors without a block.  set_conv_tile_fill(false) keeps the
// height the channels give.  Process-wide, for benchmarks and tests.
void set_conv_tile_fill(bool enabled);
bool conv_tile_fill();
// Whether the forward and backward-data 128-row kernels run the build for
// two blocks per SM (the default; 128 registers, a few spilled) or for one
// (no spills).  For benchmarks.
void set_conv_two_blocks(bool enabled);
bool conv_two_blocks();
// One call's choice of kernel build, for the autotuner
// (lamina/ops/tuning.py) and the benchmarks; 0 in a field: lamina's rule.
//   rows:   the SIMT core's A-tile height, 32, 64 or 128 (the tensor-core
//           kernels' tiles are always 128 rows: ignored there);
//   blocks: blocks per SM the 128-row SIMT forward or backward-data kernel
//           is built for, 1 or 2 (the rule: conv_two_blocks(); ignored by
//           backward-weight, whose 128-row kernel has one build, for 2).
// Any plan computes the same result; only the split count changes the
// order of the fp32 additions.
struct ConvPlan {
  int rows = 0;
  int blocks = 0;
};
// Forward may split its reduction over C/G*KH*KW into `splits` ranges the
// same way (partial sums: splits * N*O*OH*OW floats), for grids short of a
// wave; conv2d_forward_splits gives the count lamina chooses.
//
// Workspace: each pass takes one device buffer of at least
// conv2d_workspace_size<T>(pass, s, splits, dy_aligned) bytes (pass 0 forward, 1
// backward-data, 2 backward-weight), 256-byte aligned; null when that is
// 0.  It holds the fp32 split partial sums (at its start, as above) and,
// for 16-bit passes on the channels-last kernels, the operands' NHWC
// copies.  dy_aligned: backward-weight's dy starts on a 16-byte boundary,
// which spares a pass on wgmma's narrow kernel the copy of dy (false: the
// size for any dy).
template <typename T>
int64_t conv2d_workspace_size(int pass, const ConvShape& s, int splits, bool dy_aligned = false);
template <typename T>
cudaError_t conv2d_forward(T* y, void* workspace, const T* x, const T* w, const T* bias, const ConvShape& s,
                           int splits, cudaStream_t stream, ConvPlan plan = {});
int conv2d_forward_splits(const ConvShape& s, bool sixteen_bit = false);
// fp16/bf16 convolutions on tensor cores (mma.sync, the default) or on the
// SIMT core as fp32 (for comparison).  Process-wide.
void set_conv_tensor_cores(bool enabled);
bool conv_tensor_cores();
// On tensor cores, whether 16-bit passes whose channel counts allow it
// (multiples of 8 per group) copy their operands channels-last and load
// them by cp.async (the default), or gather from NCHW.  Process-wide.
void set_conv_channels_last(bool enabled);
bool conv_channels_last();
// On devices that run sm_90a, whether the channels-last 16-bit passes run
// on wgmma (conv_wgmma.cu, the default) or on mma.sync.  Process-wide.
void set_conv_wgmma(bool enabled);
bool conv_wgmma();
// On wgmma, whether passes with at most 64 channels per group on the
// tile's row side take the narrow kernels (the default; wgmma_narrow_tile)
// or the 128 x 128 ones.  Process-wide.
void set_conv_wgmma_narrow(bool enabled);
bool conv_wgmma_narrow();
// The narrow wgmma kernels' channel tile for pass (0 forward, 1
// backward-data, 2 backward-weight) of shape s: 16, 32 or 64 where the
// channels per group on the 128 x 128 tile's row side (O/G forward and
// backward-weight, C/G backward-data) are at most 64, there being wgmma's
// N instead of its M (whose 64-row minimum a 16-channel layer fills 1/4
// of); 0 otherwise.  Backward-weight reads dy's NCHW planes in 8-pixel
// chunks, so it also needs OH*OW % 8 == 0.
inline int wgmma_narrow_tile(int pass, const ConvShape& s) {
  const int ch = pass == 1 ? s.c / s.groups : s.o / s.groups;
  if (ch > 64 || (pass == 2 && (s.oh * s.ow) % 8 != 0)) return 0;
  return ch <= 16 ? 16 : ch <= 32 ? 32 : 64;
}
// Whether pass (0 forward, 1 backward-data, 2 backward-weight) of a T
// convolution of shape s runs on the wgmma kernels of conv_wgmma.cu on the
// current device (the split rules count one block per SM for those).
template <typename T>
bool conv2d_on_wgmma(int pass, const ConvShape& s);
// Its channel tile there: 0 (not on wgmma), 128 (the 128 x 128 kernels, one
// block per SM) or the narrow kernels' 16, 32 or 64 (two blocks per SM).
template <typename T>
int conv2d_wgmma_tile(int pass, const ConvShape& s);
// The passes on wgmma (sm_90a only), from conv.cu's channels-last copies,
// with a channel tile nc of 128 or, narrow, 16, 32 or 64 (at least the
// channels per group).  Forward from xl (NHWC) and wl (O, KH, KW, C/G),
// C/G % 8 == 0: y in T with the bias, or (out_f32) one fp32 slab of partial
// sums per split at y, bias left to the caller.
template <typename T>
cudaError_t conv_forward_wgmma(void* y, bool out_f32, const T* xl, const T* wl, const T* bias, const ConvShape& s,
                               int splits, int nc, cudaStream_t stream);
// Backward-data's stride phase `phase` (as conv2d_backward_data's) from
// dyl (NHWC) and wl (G, C/G, KH, KW, O/G), O/G % 8 == 0.
template <typename T>
cudaError_t conv_backward_data_wgmma(T* dx, const T* dyl, const T* wl, const ConvShape& s, int phase, int nc,
                                     cudaStream_t stream);
// Backward-weight from dy and xl (NHWC), C/G a multiple of 8: dW in T, or
// (out_f32) one fp32 slab of partial sums per split at dw.  dy is NHWC
// (O/G % 8 == 0) for nc = 128; for the narrow kernels it is dy as it lies,
// NCHW, 16-byte aligned, OH*OW % 8 == 0.
template <typename T>
cudaError_t conv_backward_weight_wgmma(void* dw, bool out_f32, const T* dy, const T* xl, const ConvShape& s,
                                       int splits, int nc, cudaStream_t stream);
template <typename T>
cudaError_t conv2d_backward_data(T* dx, void* workspace, const T* dy, const T* w, const ConvShape& s,
                                 cudaStream_t stream, ConvPlan plan = {});
template <typename T>
cudaError_t conv2d_backward_weight(T* dw, void* workspace, const T* dy, const T* x, const ConvShape& s, int splits,
                                   cudaStream_t stream, ConvPlan plan = {});

}  // namespace cuda
}  // namespace lamina
