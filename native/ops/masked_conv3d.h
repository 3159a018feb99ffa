// combcn::masked_conv3d: masked (partial) dilated 3D convolution with a fused inference epilogue.
//
// Schema (registration.cpp):
//   masked_conv3d(Tensor x, Tensor mask, Tensor weight, Tensor? bias, Tensor? bn_scale, Tensor? bn_shift,
//                 int[3] stride, int[3] padding, int[3] dilation, str activation, float eps)
//     -> (Tensor out, Tensor new_mask)
//
// Shapes: x [N, C_in, T, H, W] (any strides), mask [N, 1, T, H, W] (x.dtype, 1 = valid, 0 = hole),
// weight [C_out, C_in, kT, kH, kW], bias/bn_scale/bn_shift [C_out]; all of x.dtype on x's device.
// out [N, C_out, T', H', W'] in channels_last_3d; new_mask [N, 1, T', H', W'] contiguous.
//
// Per output voxel p, channel k (t = taps, |W| = kT*kH*kW, padding counts as hole):
//   acc_k(p) = sum_t sum_c weight[k,c,t] * (x * mask)[c, p*stride - padding + t*dilation]
//   s(p)     = sum_t mask[p*stride - padding + t*dilation]         (accumulated in float, double for double)
//   u(p)     = s(p) > eps ;  r(p) = u(p) * |W| / s(p)
//   y_k(p)   = bn_scale_k * (r(p) * acc_k(p) + u(p) * bias_k) + bn_shift_k
//   out_k(p) = act(y_k(p))     => a hole output is act(bn_shift_k), not 0, when bn is given
//   new_mask(p) = u(p)
// acc is rounded to x.dtype (the conv's output dtype) before the epilogue, which runs in float.
// Python (combcn/ops/_ext.py) registers the fake kernel and the autograd formula.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <array>
#include <optional>
#include <tuple>

namespace combcn::ops {

enum class Activation : int { None = 0, Relu = 1 };

Activation parse_activation(c10::string_view name);

// Output extent of one dimension.
inline int64_t conv_output_size(int64_t n, int64_t k, int64_t s, int64_t p, int64_t d) {
  return (n + 2 * p - d * (k - 1) - 1) / s + 1;
}

// Per-channel epilogue coefficients, float (double for double) tensor [3, C_out] on x's device:
// row 0 scale_k, row 1 add_k = scale_k * bias_k + shift_k, row 2 hole_k = act(shift_k).
at::Tensor epilogue_coefficients(
    const at::Tensor& x, int64_t c_out, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& bn_scale, const std::optional<at::Tensor>& bn_shift, Activation act);

void check_inputs(
    const at::Tensor& x, const at::Tensor& mask, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation);

std::tuple<at::Tensor, at::Tensor> masked_conv3d_cpu(
    const at::Tensor& x, const at::Tensor& mask, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& bn_scale, const std::optional<at::Tensor>& bn_shift, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, c10::string_view activation, double eps);

std::tuple<at::Tensor, at::Tensor> masked_conv3d_cuda(
    const at::Tensor& x, const at::Tensor& mask, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& bn_scale, const std::optional<at::Tensor>& bn_shift, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, c10::string_view activation, double eps);

}  // namespace combcn::ops
