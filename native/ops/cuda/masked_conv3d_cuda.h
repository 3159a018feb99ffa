// Host-side interface of the CUDA kernels of combcn::masked_conv3d: plain C++ (no torch, no CUDA
// headers), shared by masked_conv3d_cuda.cpp (ATen glue), masked_conv3d_cuda.cu (launchers) and the CPU
// emulation test (tests/test_ops_cuda_emulation.cpp), which also checks the dispatch decision below.
#pragma once

#include <cstddef>
#include <cstdint>

namespace combcn::cuda {

enum class Dtype : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3 };

struct ConvGeometry {
  int64_t N, C_in, T, H, W;  // input extents
  int64_t C_out, To, Ho, Wo;  // output extents
  int kT, kH, kW;
  int sT, sH, sW;
  int pT, pH, pW;
  int dT, dH, dW;
};

// Launch shapes (shared with the CPU emulation test).
constexpr int kEpilogueVoxels = 64;   // output voxels per block of the count + epilogue kernel
constexpr int kEpilogueThreads = 256;
constexpr int kDirectCoTile = 16;     // output channels per thread of the direct kernel
constexpr int kDirectThreads = 128;
constexpr int kCoefficientThreads = 128;

// Largest C_in the direct kernel is used for, and the shared memory it may ask for without opting in
// to more (the 48 KiB every architecture since sm_30 grants by default).
constexpr int64_t kDirectMaxCin = 4;
constexpr std::size_t kDirectMaxSmem = 48 * 1024;

// Dynamic shared memory the direct kernel needs: the weights of one tile of output channels, in the
// accumulation type (float; double for Float64).
inline std::size_t direct_small_cin_smem_bytes(Dtype dtype, const ConvGeometry& g) {
  const std::size_t acc = dtype == Dtype::Float64 ? sizeof(double) : sizeof(float);
  return acc * static_cast<std::size_t>(g.kT) * static_cast<std::size_t>(g.kH) * static_cast<std::size_t>(g.kW) *
         static_cast<std::size_t>(g.C_in) * kDirectCoTile;
}

// The dispatch decision: the direct kernel for few input channels whose weight tile fits in shared
// memory and whose channel tiles fit in gridDim.y; otherwise cuDNN plus the count + epilogue kernel.
inline bool use_direct_kernel(Dtype dtype, const ConvGeometry& g) {
  return g.C_in >= 1 && g.C_in <= kDirectMaxCin && direct_small_cin_smem_bytes(dtype, g) <= kDirectMaxSmem &&
         (g.C_out + kDirectCoTile - 1) / kDirectCoTile <= 65535;
}

// The epilogue coefficient table `coeffs` [3, C_out] (scale, add, hole; masked_conv3d_common.h) in float
// (double for Float64) from bias, bn_scale, bn_shift [C_out] of `dtype` (bias and bn may be null; bn_scale
// and bn_shift are both given or both null). Returns nullptr or an error.
const char* launch_coefficients(Dtype dtype, const void* bias, const void* bn_scale, const void* bn_shift,
                                void* coeffs, int64_t c_out, bool relu, void* stream);

// Fused window count + epilogue over a cuDNN conv output `conv` (NDHWC, C_out innermost, of `dtype`),
// written to `out` (may alias `conv`) and `new_mask` [N, To, Ho, Wo]. `mask` is contiguous [N, T, H, W];
// `coeffs` the table above. Returns nullptr or an error.
const char* launch_count_epilogue(
    Dtype dtype, const void* conv, void* out, void* new_mask, const void* mask, const void* coeffs,
    const ConvGeometry& g, bool relu, double eps, void* stream);

// Direct, fully fused kernel for few input channels (the C_in = 4 first layer): reads x (any
// strides, in elements) and mask, multiplies, counts, convolves, rounds the convolution to `dtype`
// and runs the epilogue in one pass.
const char* launch_direct_small_cin(
    Dtype dtype, const void* x, const int64_t* x_strides, const void* mask, const void* weight,
    const void* coeffs, void* out, void* new_mask, const ConvGeometry& g, bool relu, double eps, void* stream);

}  // namespace combcn::cuda
