// What the CPU can run, asked at run time.  This file is built for the
// baseline instruction set: the AVX2 files (conv_direct.cpp,
// activations_avx2.cpp) must not run before it says yes.
#include <atomic>

#include "kernels.h"

namespace lamina {
namespace cpu {

bool cpu_has_avx2_fma() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

namespace {
std::atomic<bool> g_avx2_wanted{true};
}  // namespace

bool avx2_enabled() { return g_avx2_wanted.load(std::memory_order_relaxed) && cpu_has_avx2_fma(); }

bool set_avx2(bool enabled) { return g_avx2_wanted.exchange(enabled); }

}  // namespace cpu
}  // namespace lamina
