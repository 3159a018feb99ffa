// Rules of combcn::masked_conv3d that every backend shares: output size, the epilogue coefficients and
// the activation. Torch-free and host/device, so the CPU kernel, the CUDA kernels and the CPU emulation
// of the CUDA kernels (tests/test_ops_cuda_emulation.cpp) compile the very same lines.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define COMBCN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define COMBCN_HOST_DEVICE inline
#endif

namespace combcn::ops {

// Output extent of one dimension, floor semantics (as Python's //): (n + 2p - d(k-1) - 1) // s + 1.
// 0 when the padded input is smaller than the dilated kernel: callers refuse that input (an error, not
// an empty output), the same rule as combcn/ops/reference.py `conv_output_size`.
COMBCN_HOST_DEVICE int64_t conv_output_size(int64_t n, int64_t k, int64_t s, int64_t p, int64_t d) {
  const int64_t span = n + 2 * p - d * (k - 1);  // positions the dilated kernel can take, at stride 1
  if (span < 1 || s < 1) return 0;
  return (span - 1) / s + 1;  // span - 1 >= 0: no rounding toward zero of a negative number
}

// a * b + c rounded twice, never fused into one FMA: nvcc contracts by default, the CPU build does not
// (-ffp-contract=off), and the coefficients and epilogue must round alike in every backend.
COMBCN_HOST_DEVICE float mul_add(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(a, b), c);
#else
  return a * b + c;
#endif
}
COMBCN_HOST_DEVICE double mul_add(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(__dmul_rn(a, b), c);
#else
  return a * b + c;
#endif
}

// ReLU as torch.relu: y < 0 gives +0; NaN and -0 pass through unchanged (a NaN is never hidden).
template <typename Acc>
COMBCN_HOST_DEVICE Acc relu(Acc y) {
  return y < Acc(0) ? Acc(0) : y;
}

// Per-channel coefficients of the epilogue, in the accumulation type (float; double for double):
//   scale = bn_scale (1 without bn), add = scale * bias + shift (shift alone without bias),
//   hole = act(shift), the output of a window without valid input. shift = bn_shift (0 without bn).
// The table is [3, C_out]: row 0 scale, row 1 add, row 2 hole.
template <typename Acc>
struct Coefficient {
  Acc scale, add, hole;
};

template <typename Acc>
COMBCN_HOST_DEVICE Coefficient<Acc> epilogue_coefficient(bool has_bias, Acc bias, bool has_bn, Acc bn_scale,
                                                         Acc bn_shift, bool relu_act) {
  const Acc scale = has_bn ? bn_scale : Acc(1);
  const Acc shift = has_bn ? bn_shift : Acc(0);
  Coefficient<Acc> c;
  c.scale = scale;
  c.add = has_bias ? mul_add(scale, bias, shift) : shift;
  c.hole = relu_act ? relu(shift) : shift;
  return c;
}

// One valid output: act(ratio * scale * conv + add), conv already rounded to the input dtype. The CPU
// loops and the AVX-512 rows (cpu/simd.cpp) compute the same expression in the same order.
template <typename Acc>
COMBCN_HOST_DEVICE Acc epilogue_value(Acc ratio, Acc scale, Acc conv, Acc add, bool relu_act) {
  const Acc y = mul_add(ratio * scale, conv, add);
  return relu_act ? relu(y) : y;
}

}  // namespace combcn::ops
