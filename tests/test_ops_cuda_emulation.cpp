// Runs the CUDA kernels of native/ops/cuda/masked_conv3d_kernels.cuh on the CPU, for tests on a
// machine without a GPU: g++ compiles the very same kernel source, each CUDA thread becomes a
// std::thread, __syncthreads a std::barrier, __shared__ a static (blocks run one after another).
// Built and driven by tests/test_ops_cuda.py through ctypes (float32, float16, bfloat16).
#include <cuda_runtime.h>  // host-side types (dim3) and the __half/__nv_bfloat16 host conversions

#include <barrier>
#include <cstdint>
#include <thread>
#include <vector>

thread_local dim3 threadIdx;
thread_local dim3 blockIdx;
dim3 blockDim;
dim3 gridDim;
static std::barrier<>* g_block_barrier = nullptr;
inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }
alignas(16) unsigned char smem_raw[1 << 17];

#undef __shared__
#define __shared__ static
#define COMBCN_CUDA_EMULATION 1
#include "cuda/masked_conv3d_kernels.cuh"

namespace {

using combcn::cuda::ConvGeometry;

template <typename Kernel>
void launch(dim3 grid, dim3 block, Kernel kernel) {
  blockDim = block;
  gridDim = grid;
  for (unsigned by = 0; by < grid.y; ++by) {
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      std::barrier<> barrier(static_cast<std::ptrdiff_t>(block.x));
      g_block_barrier = &barrier;
      std::vector<std::thread> threads;
      threads.reserve(block.x);
      for (unsigned tx = 0; tx < block.x; ++tx) {
        threads.emplace_back([&, tx, bx, by] {
          threadIdx = dim3(tx, 0, 0);
          blockIdx = dim3(bx, by, 0);
          kernel();
        });
      }
      for (auto& t : threads) t.join();
    }
  }
}

// geom: N, C_in, T, H, W, C_out, To, Ho, Wo, kT, kH, kW, sT, sH, sW, pT, pH, pW, dT, dH, dW
ConvGeometry geometry(const int64_t* a) {
  ConvGeometry g{};
  g.N = a[0]; g.C_in = a[1]; g.T = a[2]; g.H = a[3]; g.W = a[4];
  g.C_out = a[5]; g.To = a[6]; g.Ho = a[7]; g.Wo = a[8];
  g.kT = static_cast<int>(a[9]); g.kH = static_cast<int>(a[10]); g.kW = static_cast<int>(a[11]);
  g.sT = static_cast<int>(a[12]); g.sH = static_cast<int>(a[13]); g.sW = static_cast<int>(a[14]);
  g.pT = static_cast<int>(a[15]); g.pH = static_cast<int>(a[16]); g.pW = static_cast<int>(a[17]);
  g.dT = static_cast<int>(a[18]); g.dH = static_cast<int>(a[19]); g.dW = static_cast<int>(a[20]);
  return g;
}

template <typename T>
void count_epilogue(const void* conv, void* out, void* new_mask, const void* mask, const float* coeffs,
                    const int64_t* geom, int relu, double eps) {
  using namespace combcn::cuda;
  const ConvGeometry g = geometry(geom);
  const int64_t total = g.N * g.To * g.Ho * g.Wo;
  const dim3 grid(static_cast<unsigned>((total + kEpilogueVoxels - 1) / kEpilogueVoxels));
  const float window = static_cast<float>(g.kT * g.kH * g.kW);
  launch(grid, dim3(kEpilogueThreads), [&] {
    count_epilogue_kernel<T, kEpilogueVoxels>(static_cast<const T*>(conv), static_cast<T*>(out),
                                              static_cast<T*>(new_mask), static_cast<const T*>(mask), coeffs, g,
                                              relu != 0, window, static_cast<float>(eps));
  });
}

template <typename T>
void direct(const void* x, const int64_t* xs, const void* mask, const void* weight, const float* coeffs, void* out,
            void* new_mask, const int64_t* geom, int relu, double eps) {
  using namespace combcn::cuda;
  const ConvGeometry g = geometry(geom);
  const int64_t total = g.N * g.To * g.Ho * g.Wo;
  const dim3 grid(static_cast<unsigned>((total + kDirectThreads - 1) / kDirectThreads),
                  static_cast<unsigned>((g.C_out + kDirectCoTile - 1) / kDirectCoTile));
  const float window = static_cast<float>(g.kT * g.kH * g.kW);
  launch(grid, dim3(kDirectThreads), [&] {
    direct_small_cin_kernel<T, kDirectCoTile>(static_cast<const T*>(x), xs[0], xs[1], xs[2], xs[3], xs[4],
                                              static_cast<const T*>(mask), static_cast<const T*>(weight), coeffs,
                                              static_cast<T*>(out), static_cast<T*>(new_mask), g, relu != 0, window,
                                              static_cast<float>(eps));
  });
}

}  // namespace

// dtype: 0 float32, 1 float16, 2 bfloat16 (combcn::cuda::Dtype). coeffs are float32 [3, C_out].
extern "C" int emulate_count_epilogue(int dtype, const void* conv, void* out, void* new_mask, const void* mask,
                                      const float* coeffs, const int64_t* geom, int relu, double eps) {
  switch (dtype) {
    case 0: count_epilogue<float>(conv, out, new_mask, mask, coeffs, geom, relu, eps); return 0;
    case 1: count_epilogue<__half>(conv, out, new_mask, mask, coeffs, geom, relu, eps); return 0;
    case 2: count_epilogue<__nv_bfloat16>(conv, out, new_mask, mask, coeffs, geom, relu, eps); return 0;
    default: return 1;
  }
}

extern "C" int emulate_direct_small_cin(int dtype, const void* x, const int64_t* xs, const void* mask,
                                        const void* weight, const float* coeffs, void* out, void* new_mask,
                                        const int64_t* geom, int relu, double eps) {
  switch (dtype) {
    case 0: direct<float>(x, xs, mask, weight, coeffs, out, new_mask, geom, relu, eps); return 0;
    case 1: direct<__half>(x, xs, mask, weight, coeffs, out, new_mask, geom, relu, eps); return 0;
    case 2: direct<__nv_bfloat16>(x, xs, mask, weight, coeffs, out, new_mask, geom, relu, eps); return 0;
    default: return 1;
  }
}
