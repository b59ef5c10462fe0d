// CPU stand-ins for csrc/cuda/wgmma_primitives.cuh under the kernel emulator
// (emu.h), so that the wgmma GEMM (gemm_wgmma.cu) runs on the CPU:
//   * mbarriers keep their state (expected arrivals, pending arrivals,
//     transaction bytes, completed phases) in a table beside shared memory;
//     try_wait.parity returns once the phase of that parity has completed;
//   * a TMA copy writes its box with the 128-byte swizzle (16-byte chunk c of
//     a 128-byte row r at chunk c ^ (r % 8), computed on the shared address)
//     and zeros outside the tensor, then completes its bytes on the mbarrier.
//     In "lazy" mode it lands only when some thread waits on that mbarrier,
//     the latest moment the hardware allows, so that a read of a stage
//     before waiting on it sees stale data; in "eager" mode it lands at once,
//     so that a refill of a stage still being read shows up;
//   * wgmma is deferred to the wgmma.wait_group that retires it (a kernel
//     that reuses a stage or reads the accumulators too early gets stale
//     values), then each thread computes its own accumulator fragment by
//     decoding the descriptors with the canonical layouts of the PTX ISA:
//       K-major  (row r, k):  r % 8 * 128 + r / 8 * SBO + k * 2
//       MN-major (r, k):      r % 64 * 2 + r / 64 * LBO + k % 8 * 128 + k / 8 * SBO
//     plus the start address, then the same 128-byte swizzle.
// A wait that takes longer than 10 s marks the launch failed (a deadlock in
// the kernel's pipeline) and lets every later wait through.
#pragma once
#include <cuda.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <type_traits>
#include <vector>

namespace lamina {
namespace cuda {

namespace emu_wg {
struct TensorMap {  // what make_tensor_map_2d stores in the CUtensorMap
  const unsigned char* base;
  uint64_t inner, outer, ld;
  uint32_t box_inner, box_outer;
};
static_assert(sizeof(TensorMap) <= sizeof(CUtensorMap), "TensorMap must fit in a CUtensorMap");

struct Copy {
  uint32_t dst;
  TensorMap map;
  int c0, c1;
};
struct Barrier {
  int count = 0, pending = 0;
  int64_t tx = 0;
  uint32_t phases = 0;  // completed phases
  std::vector<Copy> in_flight;
};
inline std::mutex mutex;
inline std::condition_variable changed;
inline std::map<uint32_t, Barrier> barriers;  // by shared address
inline bool lazy_tma = true;
inline bool failed = false;

inline uint32_t swizzle128(uint32_t addr) { return addr ^ (((addr >> 7) & 7) << 4); }

inline void complete_locked(Barrier& b) {
  if (b.pending == 0 && b.tx == 0) {
    ++b.phases;
    b.pending = b.count;
    changed.notify_all();
  }
}

inline void land_locked(Barrier& b, const Copy& c) {
  const TensorMap& m = c.map;
  for (uint32_t j = 0; j < m.box_outer; ++j)
    for (uint32_t i = 0; i < m.box_inner; ++i) {
      const int64_t x = int64_t(c.c0) + i, y = int64_t(c.c1) + j;
      uint16_t v = 0;
      if (x >= 0 && y >= 0 && uint64_t(x) < m.inner && uint64_t(y) < m.outer)
        std::memcpy(&v, m.base + 2 * (y * int64_t(m.ld) + x), 2);
      std::memcpy(emu::dyn_smem + swizzle128(c.dst + 2 * (j * m.box_inner + i)), &v, 2);
    }
  b.tx -= int64_t(m.box_inner) * m.box_outer * 2;
  complete_locked(b);
}
}  // namespace emu_wg

inline uint32_t shared_addr(const void* p) {
  return static_cast<uint32_t>(static_cast<const unsigned char*>(p) - emu::dyn_smem);
}

inline uint64_t wgmma_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFF) >> 4) | uint64_t((lbo & 0x3FFFF) >> 4) << 16 |
         uint64_t((sbo & 0x3FFFF) >> 4) << 32 | uint64_t(1) << 62;
}

inline void mbar_init(uint64_t* bar, int count) {
  std::lock_guard<std::mutex> lock(emu_wg::mutex);
  auto& b = emu_wg::barriers[shared_addr(bar)];
  b = emu_wg::Barrier{};
  b.count = b.pending = count;
}
inline void mbar_fence_init() {}
inline void fence_proxy_async() {}  // the emulator's shared memory has one proxy
inline void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  std::lock_guard<std::mutex> lock(emu_wg::mutex);
  auto& b = emu_wg::barriers.at(shared_addr(bar));
  b.tx += bytes;
  --b.pending;
  emu_wg::complete_locked(b);
}
inline void mbar_arrive(uint64_t* bar) {
  std::lock_guard<std::mutex> lock(emu_wg::mutex);
  auto& b = emu_wg::barriers.at(shared_addr(bar));
  --b.pending;
  emu_wg::complete_locked(b);
}
inline void mbar_wait(uint64_t* bar, uint32_t parity) {
  std::unique_lock<std::mutex> lock(emu_wg::mutex);
  auto& b = emu_wg::barriers.at(shared_addr(bar));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (true) {
    for (const auto& c : b.in_flight) emu_wg::land_locked(b, c);  // copies issued so far, or while waiting
    b.in_flight.clear();
    if (emu_wg::failed || (b.phases & 1) != (parity & 1)) break;
    if (emu_wg::changed.wait_until(lock, deadline) == std::cv_status::timeout) {
      std::fprintf(stderr, "emulator: mbarrier at %u never completed phase parity %u\n", shared_addr(bar), parity);
      emu_wg::failed = true;
      emu_wg::changed.notify_all();
    }
  }
}

inline void tma_load_2d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1) {
  emu_wg::Copy c;
  c.dst = shared_addr(dst);
  std::memcpy(&c.map, map, sizeof(c.map));
  c.c0 = c0;
  c.c1 = c1;
  if (c.dst % 1024 != 0) {
    std::fprintf(stderr, "emulator: a 128-byte-swizzled TMA box must start on a 1024-byte boundary (%u)\n", c.dst);
    emu_wg::failed = true;
  }
  std::lock_guard<std::mutex> lock(emu_wg::mutex);
  auto& b = emu_wg::barriers.at(shared_addr(bar));
  if (emu_wg::lazy_tma) {
    b.in_flight.push_back(c);
    emu_wg::changed.notify_all();  // a thread may already be waiting on bar
  } else
    emu_wg::land_locked(b, c);
}

inline cudaError_t make_tensor_map_2d(CUtensorMap* map, const void* base, bool, uint64_t inner, uint64_t outer,
                                      uint64_t ld, uint32_t box_inner, uint32_t box_outer) {
  // The driver's checks that matter here.
  if (reinterpret_cast<uintptr_t>(base) % 16 || (ld * 2) % 16 || inner == 0 || outer == 0 || box_inner * 2 > 128 ||
      box_outer > 256 || ld < inner)
    return cudaErrorInvalidValue;
  emu_wg::TensorMap m{static_cast<const unsigned char*>(base), inner, outer, ld, box_inner, box_outer};
  std::memset(map, 0, sizeof(*map));
  std::memcpy(map, &m, sizeof(m));
  return cudaSuccess;
}

template <int N>
inline void regs_release() {}
template <int N>
inline void regs_claim() {}
inline void consumers_sync(int count) { emu::named_barrier_sync(1, count); }

namespace emu_wg {
struct Mma {
  float* d;
  uint64_t desc_a, desc_b;
  int n, ta, tb;
  bool bf16;
};
inline thread_local std::vector<Mma> open_group;
inline thread_local std::deque<std::vector<Mma>> groups;
inline const emu::ThreadStateReset reset{[] {
  open_group.clear();
  groups.clear();
}};

inline float element(uint32_t addr, bool bf16) {
  uint16_t bits;
  std::memcpy(&bits, emu::dyn_smem + swizzle128(addr), 2);
  if (bf16) {
    __nv_bfloat16 h;
    std::memcpy(&h, &bits, 2);
    return simt::to_float(h);
  }
  __half h;
  std::memcpy(&h, &bits, 2);
  return simt::to_float(h);
}

// Byte address of element (r, k) of a 16-bit operand (r an M or N index).
inline uint32_t operand_addr(uint64_t desc, bool mn_major, int r, int k) {
  const uint32_t start = uint32_t(desc & 0x3FFF) << 4, lbo = uint32_t((desc >> 16) & 0x3FFF) << 4,
                 sbo = uint32_t((desc >> 32) & 0x3FFF) << 4;
  if (mn_major) return start + r % 64 * 2 + r / 64 * lbo + k % 8 * 128 + k / 8 * sbo;
  return start + r % 8 * 128 + r / 8 * sbo + k * 2;
}

inline void execute(const Mma& op) {
  if ((op.desc_a >> 62) != 1 || (op.desc_b >> 62) != 1) {
    std::fprintf(stderr, "emulator: wgmma descriptor without the 128-byte swizzle\n");
    failed = true;
  }
  const int t = emu::linear_tid() % 128, w = t / 32, l = t % 32;
  for (int half = 0; half < 2; ++half) {
    const int row = 16 * w + l / 4 + 8 * half;
    for (int i = 0; i < op.n / 8; ++i)
      for (int j = 0; j < 2; ++j) {
        const int col = 8 * i + 2 * (l % 4) + j;
        float s = 0.f;
        for (int k = 0; k < 16; ++k)
          s += element(operand_addr(op.desc_a, op.ta, row, k), op.bf16) *
               element(operand_addr(op.desc_b, op.tb, col, k), op.bf16);
        op.d[4 * i + 2 * half + j] += s;
      }
  }
}
}  // namespace emu_wg

inline void wgmma_fence() {}
inline void wgmma_commit() {
  emu_wg::groups.push_back(std::move(emu_wg::open_group));
  emu_wg::open_group.clear();
}
// Retires every committed group but the newest N.  A wgmma is one operation
// of the whole warpgroup (.sync.aligned): once it is complete for one thread
// it has read all of its operands, so the warpgroup meets here before any
// thread goes on.
template <int N>
inline void wgmma_wait() {
  while (emu_wg::groups.size() > static_cast<size_t>(N)) {
    for (const auto& op : emu_wg::groups.front()) emu_wg::execute(op);
    emu_wg::groups.pop_front();
  }
  emu::warpgroup_sync();
}
template <int R>
inline void fence_registers(float (&)[R]) {}

template <typename T, int N>
struct Wgmma {
  template <int TA, int TB>
  static void run(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b) {
    emu_wg::open_group.push_back({d, desc_a, desc_b, N, TA, TB, std::is_same<T, __nv_bfloat16>::value});
  }
};

}  // namespace cuda
}  // namespace lamina
