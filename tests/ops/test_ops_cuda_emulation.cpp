// Runs the CUDA kernels of native/ops/cuda/masked_conv3d_kernels.cuh on the CPU, for tests on a
// machine without a GPU: g++ compiles the very same kernel source, each CUDA thread becomes a
// std::thread, __syncthreads a std::barrier, __shared__ a static (blocks run one after another).
// Built and driven by tests/ops/test_ops_cuda.py through ctypes (float32, float16, bfloat16, float64): the
// kernels one by one, the coefficient table, the dispatch decision, the output size rule, and the glue's
// sequence of them (emulate_masked_conv3d).
#include <cuda_runtime.h>  // host-side types (dim3) and the __half/__nv_bfloat16 host conversions

#include <barrier>
#include <cstdint>
#include <cstring>
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
using Acc = typename combcn::cuda::AccType<T>::type;

template <typename T>
void coefficients(const void* bias, const void* scale, const void* shift, void* coeffs, int64_t c_out, int relu) {
  using namespace combcn::cuda;
  const dim3 grid(static_cast<unsigned>((c_out + kCoefficientThreads - 1) / kCoefficientThreads));
  launch(grid, dim3(kCoefficientThreads), [&] {
    coefficients_kernel<T>(static_cast<const T*>(bias), static_cast<const T*>(scale), static_cast<const T*>(shift),
                           static_cast<Acc<T>*>(coeffs), c_out, relu != 0);
  });
}

template <typename T>
void count_epilogue(const void* conv, void* out, void* new_mask, const void* mask, const void* coeffs,
                    const int64_t* geom, int relu, double eps) {
  using namespace combcn::cuda;
  const ConvGeometry g = geometry(geom);
  const int64_t total = g.N * g.To * g.Ho * g.Wo;
  const dim3 grid(static_cast<unsigned>((total + kEpilogueVoxels - 1) / kEpilogueVoxels));
  const Acc<T> window = static_cast<Acc<T>>(g.kT * g.kH * g.kW);
  launch(grid, dim3(kEpilogueThreads), [&] {
    count_epilogue_kernel<T, kEpilogueVoxels>(static_cast<const T*>(conv), static_cast<T*>(out),
                                              static_cast<T*>(new_mask), static_cast<const T*>(mask),
                                              static_cast<const Acc<T>*>(coeffs), g, relu != 0, window,
                                              static_cast<Acc<T>>(eps));
  });
}

template <typename T>
void direct(const void* x, const int64_t* xs, const void* mask, const void* weight, const void* coeffs, void* out,
            void* new_mask, const int64_t* geom, int relu, double eps) {
  using namespace combcn::cuda;
  const ConvGeometry g = geometry(geom);
  const int64_t total = g.N * g.To * g.Ho * g.Wo;
  const dim3 grid(static_cast<unsigned>((total + kDirectThreads - 1) / kDirectThreads),
                  static_cast<unsigned>((g.C_out + kDirectCoTile - 1) / kDirectCoTile));
  const Acc<T> window = static_cast<Acc<T>>(g.kT * g.kH * g.kW);
  launch(grid, dim3(kDirectThreads), [&] {
    direct_small_cin_kernel<T, kDirectCoTile>(static_cast<const T*>(x), xs[0], xs[1], xs[2], xs[3], xs[4],
                                              static_cast<const T*>(mask), static_cast<const T*>(weight),
                                              static_cast<const Acc<T>*>(coeffs), static_cast<T*>(out),
                                              static_cast<T*>(new_mask), g, relu != 0, window,
                                              static_cast<Acc<T>>(eps));
  });
}

// Calls f.template operator()<T>() for the combcn::cuda::Dtype code; false for an unknown code.
template <typename F>
bool with_dtype(int dtype, F&& f) {
  switch (dtype) {
    case 0: f.template operator()<float>(); return true;
    case 1: f.template operator()<__half>(); return true;
    case 2: f.template operator()<__nv_bfloat16>(); return true;
    case 3: f.template operator()<double>(); return true;
    default: return false;
  }
}

}  // namespace

// dtype: combcn::cuda::Dtype (0 float32, 1 float16, 2 bfloat16, 3 float64); coeffs are [3, C_out] in float
// (double for float64). Each returns 0, or 1 for an unknown dtype.
extern "C" int emulate_coefficients(int dtype, const void* bias, const void* scale, const void* shift, void* coeffs,
                                    int64_t c_out, int relu) {
  return with_dtype(dtype, [&]<typename T>() { coefficients<T>(bias, scale, shift, coeffs, c_out, relu); }) ? 0 : 1;
}

extern "C" int emulate_count_epilogue(int dtype, const void* conv, void* out, void* new_mask, const void* mask,
                                      const void* coeffs, const int64_t* geom, int relu, double eps) {
  return with_dtype(dtype, [&]<typename T>() {
    count_epilogue<T>(conv, out, new_mask, mask, coeffs, geom, relu, eps);
  }) ? 0 : 1;
}

extern "C" int emulate_direct_small_cin(int dtype, const void* x, const int64_t* xs, const void* mask,
                                        const void* weight, const void* coeffs, void* out, void* new_mask,
                                        const int64_t* geom, int relu, double eps) {
  return with_dtype(dtype, [&]<typename T>() {
    direct<T>(x, xs, mask, weight, coeffs, out, new_mask, geom, relu, eps);
  }) ? 0 : 1;
}

// The dispatch decision of the CUDA glue (1: direct kernel, 0: cuDNN + count/epilogue kernel).
extern "C" int emulate_use_direct_kernel(int dtype, const int64_t* geom) {
  return combcn::cuda::use_direct_kernel(static_cast<combcn::cuda::Dtype>(dtype), geometry(geom)) ? 1 : 0;
}

// The output size rule every backend shares (masked_conv3d_common.h).
extern "C" int64_t emulate_conv_output_size(int64_t n, int64_t k, int64_t s, int64_t p, int64_t d) {
  return combcn::ops::conv_output_size(n, k, s, p, d);
}

// The whole CUDA glue after validation, as masked_conv3d_cuda.cpp runs it: coefficient kernel, dispatch,
// then the direct kernel, or the count + epilogue kernel in place over `conv` (the caller's stand-in for
// cuDNN: NDHWC, already rounded to dtype). `out` is NDHWC. Returns 1 (direct), 0 (cuDNN path), -1 (bad dtype).
extern "C" int emulate_masked_conv3d(int dtype, const void* x, const int64_t* xs, const void* mask, const void* weight,
                                     const void* bias, const void* scale, const void* shift, void* conv, void* out,
                                     void* new_mask, void* coeffs, const int64_t* geom, int relu, double eps) {
  const ConvGeometry g = geometry(geom);
  int path = -1;
  with_dtype(dtype, [&]<typename T>() {
    coefficients<T>(bias, scale, shift, coeffs, g.C_out, relu);
    if (combcn::cuda::use_direct_kernel(static_cast<combcn::cuda::Dtype>(dtype), g)) {
      direct<T>(x, xs, mask, weight, coeffs, out, new_mask, geom, relu, eps);
      path = 1;
    } else {
      count_epilogue<T>(conv, conv, new_mask, mask, coeffs, geom, relu, eps);
      std::memcpy(out, conv, sizeof(T) * static_cast<std::size_t>(g.N * g.To * g.Ho * g.Wo * g.C_out));
      path = 0;
    }
  });
  return path;
}
