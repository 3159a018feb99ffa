// CUDA backend of combcn::masked_conv3d: ATen glue (host C++, built only when torch has CUDA).
// The direct kernel (use_direct_kernel: C_in <= 4, the first layer) fuses everything in one pass.
// Otherwise: x * mask into a channels_last_3d buffer, cuDNN convolution (full float32 unless allow_tf32),
// then one fused count + epilogue kernel in place. Autocast is excluded throughout.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

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
    default: TORCH_CHECK_VALUE(false, "masked_conv3d (CUDA): unsupported dtype ", t);
  }
}

cuda::ConvGeometry geometry(const at::Tensor& x, const at::Tensor& weight, const Arguments& args,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  cuda::ConvGeometry g{};
  g.N = x.size(0); g.C_in = x.size(1); g.T = x.size(2); g.H = x.size(3); g.W = x.size(4);
  g.C_out = weight.size(0);
  g.To = args.out_size[0]; g.Ho = args.out_size[1]; g.Wo = args.out_size[2];
  // check_arguments bounds kernel, stride, padding and dilation by 2^30: they fit in int.
  g.kT = static_cast<int>(args.kernel[0]); g.kH = static_cast<int>(args.kernel[1]);
  g.kW = static_cast<int>(args.kernel[2]);
  g.sT = static_cast<int>(stride[0]); g.sH = static_cast<int>(stride[1]); g.sW = static_cast<int>(stride[2]);
  g.pT = static_cast<int>(padding[0]); g.pH = static_cast<int>(padding[1]); g.pW = static_cast<int>(padding[2]);
  g.dT = static_cast<int>(dilation[0]); g.dH = static_cast<int>(dilation[1]);
  g.dW = static_cast<int>(dilation[2]);
  return g;
}

const void* data_or_null(const std::optional<at::Tensor>& t, std::optional<at::Tensor>& keep) {
  if (!t.has_value()) return nullptr;
  keep = t->contiguous();
  return keep->data_ptr();
}

// Convolution of xm (channels_last_3d) in x.dtype. cuDNN gets the TF32 decision explicitly, so torch's
// global flag (torch.backends.cudnn.allow_tf32, True by default) cannot turn float32 into TF32.
at::Tensor convolution(const at::Tensor& xm, const at::Tensor& weight, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, bool allow_tf32) {
  auto& ctx = at::globalContext();
  const at::Tensor w = weight.contiguous(at::MemoryFormat::ChannelsLast3d);
  if (ctx.userEnabledCuDNN() && at::Context::hasCuDNN()) {
    // (cudnn_convolution splits a batch that 32-bit indexing cannot address, as at::convolution does.)
    const bool deterministic = ctx.deterministicCuDNN() || ctx.deterministicAlgorithms();
    return at::cudnn_convolution(xm, w, padding, stride, dilation, 1, ctx.benchmarkCuDNN(), deterministic,
                                 allow_tf32 && xm.scalar_type() == at::kFloat);
  }
  // cuDNN switched off by the caller: ATen's own CUDA convolution (cuBLAS, full float32 unless the caller
  // set torch.backends.cuda.matmul.allow_tf32).
  return at::convolution(xm, w, std::nullopt, stride, padding, dilation, false, {0, 0, 0}, 1);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> masked_conv3d_cuda(
    const at::Tensor& x, const at::Tensor& mask, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& bn_scale, const std::optional<at::Tensor>& bn_shift, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, c10::string_view activation, double eps, bool allow_tf32) {
  const Arguments args =
      check_arguments("CUDA", x, mask, weight, bias, bn_scale, bn_shift, stride, padding, dilation, activation, eps);
  // Autocast must not reach the convolution below: its result is read and written as x.dtype in place.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const c10::cuda::CUDAGuard guard(x.device());
  const cuda::ConvGeometry g = geometry(x, weight, args, stride, padding, dilation);
  const auto cl = at::MemoryFormat::ChannelsLast3d;
  at::Tensor new_mask = at::empty({g.N, 1, g.To, g.Ho, g.Wo}, x.options());
  if (g.N == 0 || g.C_out == 0) {
    return {at::empty({g.N, g.C_out, g.To, g.Ho, g.Wo}, x.options().memory_format(cl)), new_mask.zero_()};
  }
  TORCH_CHECK_VALUE((g.N * g.To * g.Ho * g.Wo + cuda::kEpilogueVoxels - 1) / cuda::kEpilogueVoxels <
                        std::numeric_limits<int32_t>::max(),
                    "masked_conv3d (CUDA): `x` gives more output voxels than one kernel launch covers (2^31 blocks); "
                    "split the batch");
  const cuda::Dtype dtype = to_dtype(x.scalar_type());
  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  const bool relu = args.act == Activation::Relu;
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor coeffs = at::empty({3, g.C_out}, x.options().dtype(acc));
  std::optional<at::Tensor> keep_bias, keep_scale, keep_shift;
  const char* err = cuda::launch_coefficients(dtype, data_or_null(bias, keep_bias), data_or_null(bn_scale, keep_scale),
                                              data_or_null(bn_shift, keep_shift), coeffs.data_ptr(), g.C_out, relu,
                                              stream);
  TORCH_CHECK(err == nullptr, "masked_conv3d (CUDA): coefficient kernel launch failed: ", err);
  const at::Tensor mask_c = mask.contiguous();
  at::Tensor out;
  if (cuda::use_direct_kernel(dtype, g)) {
    out = at::empty({g.N, g.C_out, g.To, g.Ho, g.Wo}, x.options().memory_format(cl));
    const at::Tensor w = weight.contiguous();
    const int64_t strides[5] = {x.stride(0), x.stride(1), x.stride(2), x.stride(3), x.stride(4)};
    err = cuda::launch_direct_small_cin(dtype, x.data_ptr(), strides, mask_c.data_ptr(), w.data_ptr(),
                                        coeffs.data_ptr(), out.data_ptr(), new_mask.data_ptr(), g, relu, eps,
                                        stream);
  } else {
    at::Tensor xm = at::empty(x.sizes(), x.options().memory_format(cl));
    at::mul_out(xm, x, mask);
    out = convolution(xm, weight, stride, padding, dilation, allow_tf32);
    if (!out.is_contiguous(cl)) out = out.contiguous(cl);
    TORCH_CHECK(out.scalar_type() == x.scalar_type() &&
                    out.sizes() == at::IntArrayRef({g.N, g.C_out, g.To, g.Ho, g.Wo}),
                "masked_conv3d (CUDA): internal: the convolution returned ", out.scalar_type(), " ", out.sizes(),
                " for ", x.scalar_type(), " input (autocast or a changed convolution path?)");
    err = cuda::launch_count_epilogue(dtype, out.data_ptr(), out.data_ptr(), new_mask.data_ptr(), mask_c.data_ptr(),
                                      coeffs.data_ptr(), g, relu, eps, stream);
  }
  TORCH_CHECK(err == nullptr, "masked_conv3d (CUDA): kernel launch failed: ", err);
  return {out, new_mask};
}

TORCH_LIBRARY_IMPL(combcn, CUDA, m) { m.impl("masked_conv3d", &masked_conv3d_cuda); }

}  // namespace combcn::ops
