// Vectorised row kernels of the CPU masked_conv3d (the memory-bound passes around the oneDNN convolution).
//
// The extension is compiled for the baseline x86-64 ISA so that one build runs on any machine of a render
// farm; these kernels carry their own target attribute (AVX-512 F/BW/VL/DQ) and are chosen at run time when
// the CPU has it. They compute exactly what the scalar loops of masked_conv3d_cpu.cpp compute, bit for bit:
// same operation order, no FMA contraction (-ffp-contract=off), bf16 rounded to nearest even like c10.
// Data are channels-last rows: voxel v's C channels at [v * C, v * C + C).
#pragma once

#include <c10/core/ScalarType.h>

#include "box_count.h"

#include <cstdint>
#include <string>

namespace combcn::ops::simd {

// What the row kernels use in this process: "avx512" or "scalar".
std::string active();
// 1: use the vector kernels where the CPU has them; 0: scalar loops only (tests compare the two);
// -1: leave as is. The start value is 1 unless COMBCN_CPU_SIMD=0. Returns active() afterwards.
std::string configure(int64_t enable);

// box_count<float> (box_count.h) compiled for AVX-512; false when not handled here.
bool box_count(const float* m, const BoxGeometry& geometry, int64_t to, float* plane, float* rows, float* count);

// out[v, c] = x[v, c] * m[v] for nvox voxels of C channels. Types: (bf16, bf16), (float, float),
// (bf16, float). False when not handled here (scalar or an unsupported type): the caller loops.
bool mask_multiply(const void* x, c10::ScalarType x_type, void* out, c10::ScalarType out_type, const float* m,
                   int64_t nvox, int64_t C);

// Epilogue of one frame, in place when conv == out (same type). Per voxel v with count s = count[v]:
//   s > threshold: out[v, c] = act((window / s) * scale[c] * conv[v, c] + add[c]), new_mask[v] = 1;
//   otherwise:     out[v, c] = hole[c], new_mask[v] = 0.
// Types (conv, out): (bf16, bf16), (float, float), (float, bf16); new_mask has the out type.
bool epilogue(const void* conv, c10::ScalarType conv_type, void* out, c10::ScalarType out_type, void* new_mask,
              const float* count, int64_t nvox, int64_t C, float window, float threshold, const float* scale,
              const float* add, const float* hole, bool relu);

}  // namespace combcn::ops::simd
