// Included before csrc/bindings/cuda_module.cpp when tests/emu/device.py
// builds lamina._C_cuda over the emulated kernels: the CUDA runtime calls the
// bindings make, answered for one emulated device.  LAMINA_EMU_CC (default
// 90) is the compute capability the launchers see, so the emulated module
// takes the same paths (the wgmma GEMM on 9.0) as the GPU it stands in for.
#pragma once
#include <cstdlib>
#include <cstring>

#include "emu.h"

namespace emu_rt {
inline cudaError_t device_count(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t version(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
inline const char* error_name(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    default: return "cudaErrorUnknown";
  }
}
inline const char* error_string(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorNotSupported: return "operation not supported";
    default: return "unknown error";
  }
}
struct Setup {
  Setup() {
    const char* cc = std::getenv("LAMINA_EMU_CC");
    const int v = cc && *cc ? std::atoi(cc) : 90;
    emu::cc_major = v / 10;
    emu::cc_minor = v % 10;
  }
};
inline Setup setup;
}  // namespace emu_rt

#define cudaGetDeviceCount emu_rt::device_count
#define cudaRuntimeGetVersion emu_rt::version
#define cudaDriverGetVersion emu_rt::version
#define cudaGetErrorName emu_rt::error_name
#define cudaGetErrorString emu_rt::error_string
