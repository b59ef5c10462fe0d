// ReLU on the CPU: one pass each way, where NumPy's np.where(y > 0, dy, 0)
// makes three.  dx = dy where y > 0, else 0 (NaN in dy stays where y > 0).
#include "kernels.h"

namespace {
constexpr int64_t kParallelMin = 1 << 15;  // below this, threads cost more than they save
}

namespace lamina {
namespace cpu {

template <typename T>
void relu_forward(T* y, const T* x, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    y[i] = v < T(0) ? T(0) : v;  // NaN passes through, as np.maximum
  }
}

template <typename T>
void relu_backward(T* dx, const T* dy, const T* y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T d = dy[i];  // loaded unconditionally, so the select vectorises (no branch to mispredict)
    dx[i] = y[i] > T(0) ? d : T(0);
  }
}

template void relu_forward<float>(float*, const float*, int64_t);
template void relu_forward<double>(double*, const double*, int64_t);
template void relu_backward<float>(float*, const float*, const float*, int64_t);
template void relu_backward<double>(double*, const double*, const double*, int64_t);

}  // namespace cpu
}  // namespace lamina
