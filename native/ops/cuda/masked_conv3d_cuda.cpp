// CUDA backend of combcn::masked_conv3d: ATen glue (host C++, built only when torch has CUDA).
// C_in <= 4 (the first layer): one direct, fully fused kernel. Otherwise: x * mask into a
// channels_last_3d buffer, cuDNN convolution, then one fused count + epilogue kernel in place.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../masked_conv3d.h"
#include "masked_conv3d_cuda.h"

namespace combcn::ops {
namespace {

cuda::Dtype to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::Dtype::Float32;
    case at::kHalf: return cuda::Dtype::Float16;
    case at::kBFloat16: return cuda::Dtype::BFloat16;
    case at::kDouble: return cuda::Dtype::Float64;
    default: TORCH_CHECK(false, "masked_conv3d (CUDA): unsupported dtype ", t);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> masked_conv3d_cuda(
    const at::Tensor& x, const at::Tensor& mask, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& bn_scale, const std::optional<at::Tensor>& bn_shift, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, c10::string_view activation, double eps) {
  check_inputs(x, mask, weight, stride, padding, dilation);
  TORCH_CHECK(x.is_cuda() && mask.is_cuda() && weight.is_cuda(), "masked_conv3d (CUDA): tensors must be on CUDA");
  const Activation act = parse_activation(activation);
  const c10::cuda::CUDAGuard guard(x.device());
  cuda::ConvGeometry g{};
  g.N = x.size(0); g.C_in = x.size(1); g.T = x.size(2); g.H = x.size(3); g.W = x.size(4);
  g.C_out = weight.size(0);
  g.kT = static_cast<int>(weight.size(2)); g.kH = static_cast<int>(weight.size(3));
  g.kW = static_cast<int>(weight.size(4));
  g.sT = static_cast<int>(stride[0]); g.sH = static_cast<int>(stride[1]); g.sW = static_cast<int>(stride[2]);
  g.pT = static_cast<int>(padding[0]); g.pH = static_cast<int>(padding[1]); g.pW = static_cast<int>(padding[2]);
  g.dT = static_cast<int>(dilation[0]); g.dH = static_cast<int>(dilation[1]);
  g.dW = static_cast<int>(dilation[2]);
  g.To = conv_output_size(g.T, g.kT, g.sT, g.pT, g.dT);
  g.Ho = conv_output_size(g.H, g.kH, g.sH, g.pH, g.dH);
  g.Wo = conv_output_size(g.W, g.kW, g.sW, g.pW, g.dW);
  TORCH_CHECK(g.To >= 1 && g.Ho >= 1 && g.Wo >= 1, "masked_conv3d: input too small for the kernel");
  const auto cl = at::MemoryFormat::ChannelsLast3d;
  at::Tensor new_mask = at::empty({g.N, 1, g.To, g.Ho, g.Wo}, x.options());
  if (g.N == 0 || g.C_out == 0) {
    return {at::empty({g.N, g.C_out, g.To, g.Ho, g.Wo}, x.options().memory_format(cl)), new_mask.zero_()};
  }
  const cuda::Dtype dtype = to_dtype(x.scalar_type());
  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  const at::Tensor mask_c = mask.contiguous();
  const at::Tensor coeffs = epilogue_coefficients(x, g.C_out, bias, bn_scale, bn_shift, act);
  const bool relu = act == Activation::Relu;
  const char* err = nullptr;
  at::Tensor out;
  if (g.C_in <= cuda::kDirectMaxCin && cuda::direct_small_cin_smem_bytes(dtype, g) <= 48 * 1024) {
    out = at::empty({g.N, g.C_out, g.To, g.Ho, g.Wo}, x.options().memory_format(cl));
    const at::Tensor w = weight.contiguous();
    const int64_t strides[5] = {x.stride(0), x.stride(1), x.stride(2), x.stride(3), x.stride(4)};
    err = cuda::launch_direct_small_cin(dtype, x.data_ptr(), strides, mask_c.data_ptr(), w.data_ptr(),
                                        coeffs.data_ptr(), out.data_ptr(), new_mask.data_ptr(), g, relu, eps,
                                        stream);
  } else {
    at::Tensor xm = at::empty(x.sizes(), x.options().memory_format(cl));
    at::mul_out(xm, x, mask);
    out = at::convolution(xm, weight.contiguous(cl), std::nullopt, stride, padding, dilation, false, {0, 0, 0}, 1);
    if (!out.is_contiguous(cl)) out = out.contiguous(cl);
    err = cuda::launch_count_epilogue(dtype, out.data_ptr(), out.data_ptr(), new_mask.data_ptr(), mask_c.data_ptr(),
                                      coeffs.data_ptr(), g, relu, eps, stream);
  }
  TORCH_CHECK(err == nullptr, "masked_conv3d (CUDA): kernel launch failed: ", err);
  return {out, new_mask};
}

TORCH_LIBRARY_IMPL(combcn, CUDA, m) { m.impl("masked_conv3d", &masked_conv3d_cuda); }

}  // namespace combcn::ops
