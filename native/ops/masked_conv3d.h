// combcn::masked_conv3d: masked (partial) dilated 3D convolution with a fused inference epilogue.
//
// Schema (registration.cpp):
//   masked_conv3d(Tensor x, Tensor mask, Tensor weight, Tensor? bias, Tensor? bn_scale, Tensor? bn_shift,
//                 int[3] stride, int[3] padding, int[3] dilation, str activation, float eps,
//                 bool allow_tf32=False) -> (Tensor out, Tensor new_mask)
//
// Shapes: x [N, C_in, T, H, W] (any strides), mask [N, 1, T, H, W] (x.dtype, 1 = valid, 0 = hole),
// weight [C_out, C_in, kT, kH, kW], bias/bn_scale/bn_shift [C_out] (bn_scale and bn_shift together);
// all of x.dtype (float32, float64, bfloat16, float16) on x's device. Every kernel checks all of this
// (check_arguments) and names the argument that is wrong.
// out [N, C_out, T', H', W'] in channels_last_3d; new_mask [N, 1, T', H', W'] contiguous;
// T' = (T + 2 pT - dT (kT - 1) - 1) // sT + 1 (floor; an input smaller than the dilated kernel is refused).
//
// Per output voxel p, channel k (t = taps, |W| = kT*kH*kW, padding counts as hole):
//   acc_k(p) = sum_t sum_c weight[k,c,t] * (x * mask)[c, p*stride - padding + t*dilation]
//   s(p)     = sum_t mask[p*stride - padding + t*dilation]         (accumulated in float, double for double)
//   u(p)     = s(p) > eps ;  r(p) = u(p) * |W| / s(p)
//   y_k(p)   = bn_scale_k * (r(p) * acc_k(p) + u(p) * bias_k) + bn_shift_k
//   out_k(p) = act(y_k(p))     => a hole output is act(bn_shift_k), not 0, when bn is given
//   new_mask(p) = u(p)
// Precision (docs/OPS.md): acc is computed in x.dtype's accumulation type -- float32 convolutions in full
// float32, TF32 only when allow_tf32 (CUDA cuDNN path) -- and rounded to x.dtype before the epilogue,
// which runs in float (double for double) with the rules of masked_conv3d_common.h. x * mask is IEEE:
// a NaN or Inf anywhere in a valid output's window (hole taps included) gives NaN there; a hole output
// (u = 0) ignores x; ReLU is torch.relu (NaN and -0 pass).
// Autocast is excluded inside the op: it computes in x.dtype whatever the caller's autocast state.
// Python (combcn/ops/_ext.py) registers the fake kernel and the autograd formula.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <array>
#include <optional>
#include <tuple>

#include "masked_conv3d_common.h"

namespace combcn::ops {

enum class Activation : int { None = 0, Relu = 1 };

Activation parse_activation(c10::string_view name);

// The checked, normalised arguments of one call.
struct Arguments {
  std::array<int64_t, 3> kernel, out_size;
  Activation act;
};

// Validates every argument of the schema (shape, dtype, device, ranges; `backend` is "CPU" or "CUDA", the
// kernel x must be on) and computes the output size; a c10::Error naming the argument otherwise.
Arguments check_arguments(
    const char* backend, const at::Tensor& x, const at::Tensor& mask, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& bn_scale,
    const std::optional<at::Tensor>& bn_shift, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, c10::string_view activation, double eps);

std::tuple<at::Tensor, at::Tensor> masked_conv3d_cpu(
    const at::Tensor& x, const at::Tensor& mask, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& bn_scale, const std::optional<at::Tensor>& bn_shift, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, c10::string_view activation, double eps, bool allow_tf32);

std::tuple<at::Tensor, at::Tensor> masked_conv3d_cuda(
    const at::Tensor& x, const at::Tensor& mask, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& bn_scale, const std::optional<at::Tensor>& bn_shift, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, c10::string_view activation, double eps, bool allow_tf32);

}  // namespace combcn::ops
