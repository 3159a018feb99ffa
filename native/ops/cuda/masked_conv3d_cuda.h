// Host-side interface of the CUDA kernels of combcn::masked_conv3d: plain C++ (no torch, no CUDA
// headers), shared by masked_conv3d_cuda.cpp (ATen glue) and masked_conv3d_cuda.cu (launchers).
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

// Fused window count + epilogue over a cuDNN conv output `conv` (NDHWC, C_out innermost), written to
// `out` (may alias `conv`) and `new_mask` [N, To, Ho, Wo]. `mask` is contiguous [N, T, H, W];
// `coeffs` [3, C_out] (scale, add, hole) in float (double for Float64). Returns nullptr or an error.
const char* launch_count_epilogue(
    Dtype dtype, const void* conv, void* out, void* new_mask, const void* mask, const void* coeffs,
    const ConvGeometry& g, bool relu, double eps, void* stream);

// Direct, fully fused kernel for few input channels (the C_in = 4 first layer): reads x (any
// strides, in elements) and mask, multiplies, counts, convolves and runs the epilogue in one pass.
const char* launch_direct_small_cin(
    Dtype dtype, const void* x, const int64_t* x_strides, const void* mask, const void* weight,
    const void* coeffs, void* out, void* new_mask, const ConvGeometry& g, bool relu, double eps, void* stream);

// Dynamic shared memory the direct kernel needs (weights for one tile of output channels).
std::size_t direct_small_cin_smem_bytes(Dtype dtype, const ConvGeometry& g);

// Largest C_in the direct kernel is used for.
constexpr int64_t kDirectMaxCin = 4;

// Launch shapes (shared with the CPU emulation test).
constexpr int kEpilogueVoxels = 64;   // output voxels per block of the count + epilogue kernel
constexpr int kEpilogueThreads = 256;
constexpr int kDirectCoTile = 16;     // output channels per thread of the direct kernel
constexpr int kDirectThreads = 128;

}  // namespace combcn::cuda
