// CPU stand-ins for csrc/cuda/tc_primitives.cuh under the kernel emulator
// (emu.h): ldmatrix and mma.sync as warp-cooperative exchanges through
// per-warp scratch (each lane publishes its operands, the warp meets at a
// barrier, each lane computes what the instruction would deliver to it),
// and cp.async as a deferred copy: each thread queues its copies in commit
// groups and they land only when cp.async.wait_group requires them, the
// latest moment the hardware allows, so a read before the matching wait
// sees stale data here.  Fragment
// layouts as the PTX ISA gives them for m16n8k16 and ldmatrix.m8n8.x4, with
// g = lane / 4 and t = lane % 4:
//   ldmatrix: register j of lane l holds row g, columns 2t and 2t+1 of
//             matrix j (whose row i is at the address lane 8j + i gave);
//             .trans: rows 2t and 2t+1 of column g.  Low half = first element.
//   A (16x16): a0 = A[g][2t..], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B (16x8):  b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   D (16x8):  d0, d1 = D[g][2t, 2t+1], d2, d3 = D[g+8][2t, 2t+1]
#pragma once
#include <cstdint>
#include <cstring>
#include <deque>
#include <vector>

namespace lamina {
namespace cuda {

namespace emu_tc {
struct WarpScratch {
  uint32_t addr[32];
  uint32_t a[32][4];
  uint32_t b[32][2];
};
inline WarpScratch scratch[32];

inline uint16_t b16_at(uint32_t addr, int col) {
  uint16_t v;
  std::memcpy(&v, emu::dyn_smem + addr + 2 * col, 2);
  return v;
}

template <typename T>
inline float widen(uint16_t bits) {
  T h;
  std::memcpy(&h, &bits, 2);
  return simt::to_float(h);
}
}  // namespace emu_tc

inline uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(static_cast<const unsigned char*>(p) - emu::dyn_smem);
}

template <bool TRANS>
inline void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  const int lane = emu::lane(), g = lane / 4, t = lane % 4;
  auto& sc = emu_tc::scratch[emu::warp()];
  sc.addr[lane] = addr;
  emu::warp_sync();
  for (int j = 0; j < 4; ++j) {
    uint16_t lo, hi;
    if (TRANS) {
      lo = emu_tc::b16_at(sc.addr[8 * j + 2 * t], g);
      hi = emu_tc::b16_at(sc.addr[8 * j + 2 * t + 1], g);
    } else {
      lo = emu_tc::b16_at(sc.addr[8 * j + g], 2 * t);
      hi = emu_tc::b16_at(sc.addr[8 * j + g], 2 * t + 1);
    }
    r[j] = uint32_t(lo) | (uint32_t(hi) << 16);
  }
  emu::warp_sync();
}

template <typename T>
struct MmaOp {
  // Each lane reads only what its four results need: rows g and g + 8 of A
  // (from lanes 4g .. 4g + 3) and columns 2t and 2t + 1 of B (from lanes
  // 8t .. 8t + 7).
  static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    const int lane = emu::lane();
    auto& sc = emu_tc::scratch[emu::warp()];
    for (int i = 0; i < 4; ++i) sc.a[lane][i] = a[i];
    for (int i = 0; i < 2; ++i) sc.b[lane][i] = b[i];
    emu::warp_sync();
    const int g = lane / 4, t = lane % 4;
    float A[2][16], B[16][2];
    for (int tt = 0; tt < 4; ++tt) {  // lane 4g + tt: a0 = A[g][2tt..], a1 = A[g+8][2tt..], a2 = A[g][2tt+8..], a3 = A[g+8][2tt+8..]
      const uint32_t* r = sc.a[4 * g + tt];
      for (int i = 0; i < 4; ++i) {
        const int row = i & 1, col = 2 * tt + (i >> 1) * 8;
        A[row][col] = emu_tc::widen<T>(r[i] & 0xFFFF);
        A[row][col + 1] = emu_tc::widen<T>(r[i] >> 16);
      }
    }
    for (int c = 0; c < 2; ++c)  // column 2t + c of B lives with lanes 4 (2t + c) + tt: b0 = B[2tt..][.], b1 = B[2tt+8..][.]
      for (int tt = 0; tt < 4; ++tt) {
        const uint32_t* r = sc.b[4 * (2 * t + c) + tt];
        for (int i = 0; i < 2; ++i) {
          const int k = 2 * tt + i * 8;
          B[k][c] = emu_tc::widen<T>(r[i] & 0xFFFF);
          B[k + 1][c] = emu_tc::widen<T>(r[i] >> 16);
        }
      }
    emu::warp_sync();
    for (int i = 0; i < 4; ++i) {
      const int row = i >= 2 ? 1 : 0, col = i & 1;
      float s = 0.f;
      for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
      d[i] += s;
    }
  }
};

namespace emu_tc {
struct Copy {
  uint32_t dst;
  const void* src;
  int bytes;
};
inline thread_local std::vector<Copy> open_group;
inline thread_local std::deque<std::vector<Copy>> groups;
inline const emu::ThreadStateReset reset{[] {
  open_group.clear();
  groups.clear();
}};
}  // namespace emu_tc

inline void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  emu_tc::open_group.push_back({dst, src, src_bytes});
}
inline void cp_async16_ca(uint32_t dst, const void* src, int src_bytes) { cp_async16(dst, src, src_bytes); }
inline void cp_async_commit() {
  emu_tc::groups.push_back(std::move(emu_tc::open_group));
  emu_tc::open_group.clear();
}
// Lands every committed group but the newest N.
template <int N>
inline void cp_async_wait() {
  while (emu_tc::groups.size() > static_cast<size_t>(N)) {
    for (const auto& c : emu_tc::groups.front()) {
      std::memcpy(emu::dyn_smem + c.dst, c.src, c.bytes);
      std::memset(emu::dyn_smem + c.dst + c.bytes, 0, 16 - c.bytes);
    }
    emu_tc::groups.pop_front();
  }
}

}  // namespace cuda
}  // namespace lamina
