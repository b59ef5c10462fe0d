// Launchers of lamina's CUDA kernels.  Each takes outputs, inputs, sizes and
// then the stream to launch on (CuPy's current stream, passed from Python),
// and returns the launch's cudaError_t.  Shapes and dtypes are validated in
// Python; pointers are device pointers from CuPy arrays.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

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

template <typename T>
cudaError_t gelu_backward(T* dx, const T* dy, const T* x, int64_t n, bool tanh_approx, cudaStream_t stream);

// Fused softmax cross-entropy over rows of logits (N, C) with int64 labels:
// per-row loss, and grad_scale * (softmax - q) into dlogits unless it is null.
template <typename T>
cudaError_t softmax_xent(T* loss, T* dlogits, const T* logits, const int64_t* labels, int64_t n, int64_t c,
                         double smoothing, double grad_scale, cudaStream_t stream);

// Fused optimizer updates (float and double), in place; the math of
// lamina/optim/sgd.py and adam.py.  buf is unused when momentum is 0.
template <typename T>
cudaError_t sgd_update(T* p, const T* grad, T* buf, int64_t n, double lr, double momentum, double dampening,
                       double weight_decay, bool nesterov, bool first_step, cudaStream_t stream);
template <typename T>
cudaError_t adam_update(T* p, const T* grad, T* m, T* v, int64_t n, double lr, double beta1, double beta2, double eps,
                        double weight_decay, bool decoupled, double step_size, double bc2_sqrt, cudaStream_t stream);

// Epilogue activations of the GEMM.
constexpr int kActNone = 0;
constexpr int kActRelu = 1;

// fp32 GEMM: C[M, N] = act(op(A) · op(B) + bias), bias (N,) or null; leading
// dimensions in elements; op transposes when trans_* is set (see gemm.cu).
cudaError_t sgemm(float* C, const float* A, const float* B, const float* bias, int64_t M, int64_t N, int64_t K,
                  int64_t lda, int64_t ldb, int64_t ldc, bool trans_a, bool trans_b, int act, cudaStream_t stream);

}  // namespace cuda
}  // namespace lamina
