// Runs lamina's SIMT CUDA kernels on the CPU, for tests on machines without
// a GPU: each CUDA thread of a block is a CPU thread (from a pool kept
// between launches), __syncthreads() is a
// std::barrier, __shared__ variables are statics (one block runs at a time),
// and a kernel launch runs every block in turn on those threads.  Only what
// the kernels use is emulated (of the warp shuffles, __shfl_xor_sync over a
// full warp); tensor-core instructions
// are stood in for by tc_primitives.cuh and wgmma_primitives.cuh here.
// Included before the kernel source, which emulate.py rewrites so that
// `k<<<grid, block, smem, stream>>>(args);` becomes an emu::launch call.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <functional>
#include <memory>
#include <mutex>
#include <semaphore>
#include <thread>
#include <vector>

#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __noinline__
#undef __launch_bounds__
#undef __align__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#undef __grid_constant__
#define __grid_constant__

namespace emu {
inline thread_local uint3 thread_idx, block_idx;
inline thread_local dim3 grid_dim, block_dim;
inline std::barrier<>* block_barrier = nullptr;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;  // one per 32 threads
// extern __shared__: each launch allocates exactly the dynamic shared memory
// it asked for, so the address sanitizer (emulate.py's LAMINA_EMU_SANITIZE)
// sees an access past it.  dyn_smem is the block's shared window (shared
// address 0, 1024-byte aligned, as the swizzles assume); the kernel's array
// starts kDynSmemOffset bytes into it: aligned to 16 bytes only, so kernels
// that need more alignment must realign (the wgmma GEMM does).
inline unsigned char* dyn_smem = nullptr;
inline unsigned char* dyn_smem_start = nullptr;
constexpr size_t kDynSmemOffset = 16;

// Named barriers (bar.sync id, count), made by the first thread to arrive.
inline std::mutex named_mutex;
inline std::unique_ptr<std::barrier<>> named_barriers[16];
inline void named_barrier_sync(int id, int count) {
  std::barrier<>* b;
  {
    std::lock_guard<std::mutex> lock(named_mutex);
    if (!named_barriers[id]) named_barriers[id] = std::make_unique<std::barrier<>>(count);
    b = named_barriers[id].get();
  }
  b->arrive_and_wait();
}

// The device the emulated kernels see (tests may change it before a launch).
inline int sm_count = 132, cc_major = 8, cc_minor = 0;
inline cudaError_t get_device(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t device_attribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMultiProcessorCount ? sm_count
       : a == cudaDevAttrComputeCapabilityMajor ? cc_major
       : a == cudaDevAttrComputeCapabilityMinor ? cc_minor
                                                 : 0;
  return cudaSuccess;
}

inline int linear_tid() { return thread_idx.x + block_dim.x * (thread_idx.y + block_dim.y * thread_idx.z); }
inline int lane() { return linear_tid() % 32; }
inline int warp() { return linear_tid() / 32; }
inline void warp_sync() { warp_barriers[warp()]->arrive_and_wait(); }

// __shfl_xor_sync over a full warp: each lane posts its value, the warp
// meets, each lane reads its partner's, the warp meets again (so the slots
// can be reused by the next shuffle).
inline std::vector<std::array<uint64_t, 32>> warp_exchange;  // one per 32 threads
template <typename T>
inline T shfl_xor_sync(unsigned, T v, int lane_mask) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffles move at most 8 bytes");
  auto& slots = warp_exchange[warp()];
  std::memcpy(&slots[lane()], &v, sizeof(T));
  warp_sync();
  T out;
  std::memcpy(&out, &slots[lane() ^ lane_mask], sizeof(T));
  warp_sync();
  return out;
}
inline std::vector<std::unique_ptr<std::barrier<>>> warpgroup_barriers;  // one per 128 threads
inline void warpgroup_sync() { warpgroup_barriers[linear_tid() / 128]->arrive_and_wait(); }

template <typename T>
inline T ldg(const T* p) {
  return *p;
}

inline int launches = 0;  // launches since the tests last read it (emu_launches)
inline std::string launched;  // the kernels of those launches, one a line (emu_launched)

// Per-thread state of the instruction stand-ins (pending asynchronous copies
// and wgmma groups): each launch clears it on its threads, which start as
// fresh as a CUDA thread does.
inline std::vector<void (*)()> thread_state_resets;
struct ThreadStateReset {
  explicit ThreadStateReset(void (*reset)()) { thread_state_resets.push_back(reset); }
};

// The CPU threads that play a block's CUDA threads, kept between launches
// (starting a thread costs as much as a small kernel's work).  run(n, job)
// calls job(t) on threads 0..n-1 at once and returns when all are done.
class ThreadPool {
 public:
  void run(unsigned n, const std::function<void(unsigned)>& job) {
    while (workers_.size() < n) {
      const unsigned t = static_cast<unsigned>(workers_.size());
      workers_.push_back(std::make_unique<Worker>());
      Worker* w = workers_.back().get();
      w->thread = std::thread([this, w, t] {
        for (;;) {
          w->go.acquire();
          for (auto reset : thread_state_resets) reset();
          (*job_)(t);
          if (remaining_.fetch_sub(1) == 1) remaining_.notify_one();
        }
      });
      w->thread.detach();  // the pool lives as long as the process
    }
    job_ = &job;
    remaining_.store(n);
    for (unsigned t = 0; t < n; ++t) workers_[t]->go.release();
    for (unsigned left; (left = remaining_.load()) != 0;) remaining_.wait(left);
  }

 private:
  struct Worker {
    std::thread thread;
    std::binary_semaphore go{0};
  };
  std::vector<std::unique_ptr<Worker>> workers_;
  const std::function<void(unsigned)>* job_ = nullptr;
  std::atomic<unsigned> remaining_{0};
};
inline ThreadPool& pool() {
  static ThreadPool* p = new ThreadPool;  // never destroyed: its threads wait until the process ends
  return *p;
}

// Runs f() as every thread of every block; blocks one after another.
inline void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t, const std::function<void()>& f) {
  ++launches;
  struct AlignedFree {
    void operator()(unsigned char* p) const { ::operator delete[](p, std::align_val_t(1024)); }
  };
  std::unique_ptr<unsigned char[], AlignedFree> window;
  if (smem > 0)
    window.reset(static_cast<unsigned char*>(::operator new[](kDynSmemOffset + smem, std::align_val_t(1024))));
  dyn_smem = window.get();
  dyn_smem_start = smem > 0 ? dyn_smem + kDynSmemOffset : nullptr;
  const unsigned nthreads = block.x * block.y * block.z;
  std::barrier<> bar(nthreads);
  block_barrier = &bar;
  warp_barriers.clear();
  for (unsigned w = 0; w < nthreads / 32; ++w) warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
  warp_exchange.assign(nthreads / 32, {});
  warpgroup_barriers.clear();
  for (unsigned w = 0; w < nthreads / 128; ++w) warpgroup_barriers.push_back(std::make_unique<std::barrier<>>(128));
  pool().run(nthreads, [&](unsigned t) {
    thread_idx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    grid_dim = grid;
    block_dim = block;
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          block_idx = uint3{x, y, z};
          f();
          bar.arrive_and_wait();  // the next block reuses the statics
        }
  });
  block_barrier = nullptr;
  for (auto& b : named_barriers) b.reset();
  dyn_smem = dyn_smem_start = nullptr;
}
}  // namespace emu

#define threadIdx emu::thread_idx
#define blockIdx emu::block_idx
#define gridDim emu::grid_dim
#define blockDim emu::block_dim
#define __syncthreads() emu::block_barrier->arrive_and_wait()
#define __ldg(p) emu::ldg(p)
#define __shfl_xor_sync(mask, v, lane_mask) emu::shfl_xor_sync(mask, v, lane_mask)
#define cudaGetLastError() cudaSuccess
#define cudaFuncSetAttribute(...) cudaSuccess
#define cudaGetDevice emu::get_device
#define cudaDeviceGetAttribute emu::device_attribute
using std::max;
using std::min;
using std::isfinite;
