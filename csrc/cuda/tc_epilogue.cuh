// The per-element epilogue of the tensor-core GEMMs (gemm_tc.cu, gemm_wgmma.cu):
// bias, activation and the store of C (and of the pre-activation to aux),
// into T or, with out_f32, into fp32.
#pragma once
#include <cstdint>

#include "common.cuh"
#include "simt_gemm.cuh"

namespace lamina {
namespace cuda {

template <typename T>
__device__ __forceinline__ void tc_store(void* C, void* aux, const T* bias, int m, int n, int64_t ldc, int act,
                                         bool out_f32, float v) {
  if (bias != nullptr) v += simt::to_float(bias[n]);
  const int64_t at = (int64_t)m * ldc + n;
  const float y = act_value(v, act);
  if (out_f32) {
    if (aux != nullptr) static_cast<float*>(aux)[at] = v;
    static_cast<float*>(C)[at] = y;
  } else {
    if (aux != nullptr) static_cast<T*>(aux)[at] = simt::from_float<T>(v);
    static_cast<T*>(C)[at] = simt::from_float<T>(y);
  }
}

}  // namespace cuda
}  // namespace lamina
