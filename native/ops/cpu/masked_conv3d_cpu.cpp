// CPU kernel of combcn::masked_conv3d (semantics in ../masked_conv3d.h).
// 1. x * mask into a channels_last_3d buffer (one parallel pass);
// 2. oneDNN convolution, called directly (F.conv3d routes small batch-1 layers to a slow im2col path);
//    bf16/fp16 convolve in float32 where oneDNN lacks them (no AVX512-BF16/AMX);
// 3. ONE at::parallel_for pass per output frame: separable dilated box count of the mask, ratio, bias,
//    batch norm, activation and new mask, in place on the convolution output.
// The row loops of passes 1 and 3 run as AVX-512 kernels where the CPU has them (simd.h).
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../masked_conv3d.h"
#include "box_count.h"
#include "simd.h"

namespace combcn::ops {

Activation parse_activation(c10::string_view name) {
  if (name == "none") return Activation::None;
  if (name == "relu") return Activation::Relu;
  TORCH_CHECK(false, "masked_conv3d: activation must be 'none' or 'relu', got '", std::string(name), "'");
}

void check_inputs(
    const at::Tensor& x, const at::Tensor& mask, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(x.dim() == 5 && mask.dim() == 5 && weight.dim() == 5, "masked_conv3d: x, mask, weight must be 5-D");
  TORCH_CHECK(mask.size(1) == 1, "masked_conv3d: mask must have one channel");
  TORCH_CHECK(weight.size(1) == x.size(1), "masked_conv3d: weight C_in does not match x");
  TORCH_CHECK(mask.scalar_type() == x.scalar_type() && weight.scalar_type() == x.scalar_type(),
              "masked_conv3d: x, mask and weight must share a dtype");
  TORCH_CHECK(stride.size() == 3 && padding.size() == 3 && dilation.size() == 3,
              "masked_conv3d: stride, padding, dilation need 3 values");
  for (int i = 0; i < 3; ++i) {
    TORCH_CHECK(stride[i] >= 1 && dilation[i] >= 1 && padding[i] >= 0, "masked_conv3d: bad stride/padding/dilation");
    TORCH_CHECK(mask.size(2 + i) == x.size(2 + i), "masked_conv3d: mask and x sizes differ");
  }
  TORCH_CHECK(mask.size(0) == x.size(0), "masked_conv3d: mask and x batch sizes differ");
}

// CPU tensors: plain loops (as tensor ops, ~10 dispatches, measurable next to the small layers' 2-5 ms);
// device tensors (the CUDA glue): the same rows as tensor ops, so nothing leaves the device.
at::Tensor epilogue_coefficients(
    const at::Tensor& x, int64_t c_out, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& bn_scale, const std::optional<at::Tensor>& bn_shift, Activation act) {
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto opts = x.options().dtype(acc);
  if (!x.is_cpu()) {
    at::Tensor scale = bn_scale.has_value() ? bn_scale->to(acc) : at::ones({c_out}, opts);
    at::Tensor shift = bn_shift.has_value() ? bn_shift->to(acc) : at::zeros({c_out}, opts);
    at::Tensor add = bias.has_value() ? scale * bias->to(acc) + shift : shift.clone();
    at::Tensor hole = act == Activation::Relu ? shift.clamp_min(0) : shift;
    return at::stack({scale, add, hole}).contiguous();
  }
  at::Tensor coeffs = at::empty({3, c_out}, opts);
  const auto as_acc = [&](const std::optional<at::Tensor>& t) {
    return t.has_value() ? std::optional<at::Tensor>(t->to(acc).contiguous()) : std::nullopt;
  };
  const auto b = as_acc(bias), sc = as_acc(bn_scale), sh = as_acc(bn_shift);
  AT_DISPATCH_FLOATING_TYPES(acc, "masked_conv3d_coefficients", [&] {
    scalar_t* scale = coeffs.data_ptr<scalar_t>();
    scalar_t* add = scale + c_out;
    scalar_t* hole = scale + 2 * c_out;
    for (int64_t k = 0; k < c_out; ++k) {
      const scalar_t s = sc ? sc->data_ptr<scalar_t>()[k] : scalar_t(1);
      const scalar_t t = sh ? sh->data_ptr<scalar_t>()[k] : scalar_t(0);
      scale[k] = s;
      add[k] = b ? s * b->data_ptr<scalar_t>()[k] + t : t;
      hole[k] = act == Activation::Relu ? std::max(t, scalar_t(0)) : t;
    }
  });
  return coeffs;
}

namespace {

// One valid voxel's C_out outputs: y = act(r * scale * acc + add). In place when in_t == out_t
// (then `in` and `out` are the same row and only `out` is touched, so the loop vectorises).
template <typename in_t, typename out_t, typename acc_t>
inline void epilogue_row(const in_t* in, out_t* out, int64_t C, acc_t r, const acc_t* __restrict__ scale,
                         const acc_t* __restrict__ add, bool relu) {
  if constexpr (std::is_same_v<in_t, out_t>) {
    out_t* __restrict__ y = out;
    if (relu) {
      for (int64_t c = 0; c < C; ++c) {
        const acc_t v = r * scale[c] * static_cast<acc_t>(y[c]) + add[c];
        y[c] = static_cast<out_t>(v > acc_t(0) ? v : acc_t(0));
      }
    } else {
      for (int64_t c = 0; c < C; ++c) y[c] = static_cast<out_t>(r * scale[c] * static_cast<acc_t>(y[c]) + add[c]);
    }
  } else {
    const in_t* __restrict__ x = in;
    out_t* __restrict__ y = out;
    if (relu) {
      for (int64_t c = 0; c < C; ++c) {
        const acc_t v = r * scale[c] * static_cast<acc_t>(x[c]) + add[c];
        y[c] = static_cast<out_t>(v > acc_t(0) ? v : acc_t(0));
      }
    } else {
      for (int64_t c = 0; c < C; ++c) y[c] = static_cast<out_t>(r * scale[c] * static_cast<acc_t>(x[c]) + add[c]);
    }
  }
}

// conv (in_t: x.dtype, or float when a bf16/fp16 conv ran in float32) -> out (out_t = x.dtype); may alias.
template <typename in_t, typename out_t>
void fused_epilogue(
    const at::Tensor& conv, at::Tensor& out, at::Tensor& new_mask, const at::Tensor& mask_acc, const at::Tensor& coeffs,
    std::array<int64_t, 3> kernel, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    Activation act, double eps) {
  using acc_t = at::opmath_type<out_t>;
  const int64_t N = out.size(0), C = out.size(1), To = out.size(2), Ho = out.size(3), Wo = out.size(4);
  const int64_t T = mask_acc.size(1), H = mask_acc.size(2), W = mask_acc.size(3);
  const acc_t window = static_cast<acc_t>(kernel[0] * kernel[1] * kernel[2]);
  const acc_t threshold = static_cast<acc_t>(eps);
  const acc_t* m = mask_acc.data_ptr<acc_t>();
  const acc_t* scale = coeffs.data_ptr<acc_t>();
  const acc_t* add = scale + C;
  const acc_t* hole = scale + 2 * C;
  const in_t* a = conv.data_ptr<in_t>();
  out_t* o = out.data_ptr<out_t>();
  out_t* nm = new_mask.data_ptr<out_t>();
  const bool relu = act == Activation::Relu;
  const BoxGeometry geometry{T, H, W, Ho, Wo, kernel, {stride[0], stride[1], stride[2]},
                             {padding[0], padding[1], padding[2]}, {dilation[0], dilation[1], dilation[2]}};

  // At least ~32K outputs per task: small layers run inline instead of waking the thread pool.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, Ho * Wo * C));
  at::parallel_for(0, N * To, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> plane(H * W), rows(H * Wo), count(Ho * Wo);
    for (int64_t slab = begin; slab < end; ++slab) {
      const int64_t n = slab / To, to = slab % To;
      // Box count of the mask (box_count.h), AVX-512 where the CPU has it.
      const acc_t* mn = m + n * T * H * W;
      bool counted = false;
      if constexpr (std::is_same_v<acc_t, float>) {
        counted = simd::box_count(mn, geometry, to, plane.data(), rows.data(), count.data());
      }
      if (!counted) box_count(mn, geometry, to, plane.data(), rows.data(), count.data());
      // Epilogue over the frame's C_out-contiguous voxels (channels_last_3d).
      const in_t* frame_in = a + slab * Ho * Wo * C;
      out_t* frame_out = o + slab * Ho * Wo * C;
      out_t* frame_mask = nm + slab * Ho * Wo;
      if constexpr (std::is_same_v<acc_t, float>) {
        if (simd::epilogue(frame_in, conv.scalar_type(), frame_out, out.scalar_type(), frame_mask, count.data(),
                           Ho * Wo, C, window, threshold, scale, add, hole, relu)) {
          continue;
        }
      }
      for (int64_t v = 0; v < Ho * Wo; ++v) {
        const acc_t s = count[v];
        const bool valid = s > threshold;
        frame_mask[v] = out_t(valid ? 1 : 0);
        if (valid) {
          epilogue_row<in_t, out_t, acc_t>(frame_in + v * C, frame_out + v * C, C, window / s, scale, add, relu);
        } else {
          out_t* __restrict__ py = frame_out + v * C;
          for (int64_t c = 0; c < C; ++c) py[c] = static_cast<out_t>(hole[c]);
        }
      }
    }
  });
}

// oneDNN's bf16/fp16 convolutions need AVX512-BF16/FP16 (or AMX); probed once per dtype by trying.
// COMBCN_CPU_LOWP_CONV=0 takes the float32 path even where oneDNN has them (tests of that path on such CPUs).
std::atomic<int> g_low_precision_ok[2] = {-1, -1};

bool low_precision_conv_allowed() {
  static const bool allowed = [] {
    const char* env = std::getenv("COMBCN_CPU_LOWP_CONV");
    return !(env != nullptr && std::strcmp(env, "0") == 0);
  }();
  return allowed;
}

// x * mask written straight into a channels_last_3d buffer of `dtype` (what oneDNN wants): one pass,
// one thread pool round. (at::mul_out with the broadcast mask measured 5x slower at 2 threads here.)
template <typename in_t, typename out_t, typename acc_t>
void mask_multiply(const at::Tensor& x, const at::Tensor& mask_acc, at::Tensor& xm) {
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), H = x.size(3), W = x.size(4);
  const int64_t sN = x.stride(0), sC = x.stride(1), sT = x.stride(2), sH = x.stride(3), sW = x.stride(4);
  const in_t* xp = x.data_ptr<in_t>();
  const acc_t* mp = mask_acc.data_ptr<acc_t>();
  out_t* op = xm.data_ptr<out_t>();
  const bool channels_last = sC == 1 && sW == C && sH == W * C;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, H * W * C));
  at::parallel_for(0, N * T, grain, [&](int64_t begin, int64_t end) {
    for (int64_t slab = begin; slab < end; ++slab) {
      const int64_t n = slab / T, t = slab % T;
      const acc_t* m = mp + slab * H * W;
      out_t* __restrict__ o = op + slab * H * W * C;
      const in_t* __restrict__ xs = xp + n * sN + t * sT;
      if (channels_last) {
        if constexpr (std::is_same_v<acc_t, float>) {
          if (simd::mask_multiply(xs, x.scalar_type(), o, xm.scalar_type(), m, H * W, C)) continue;
        }
        for (int64_t v = 0; v < H * W; ++v) {
          const acc_t mv = m[v];
          for (int64_t c = 0; c < C; ++c) o[v * C + c] = static_cast<out_t>(static_cast<acc_t>(xs[v * C + c]) * mv);
        }
      } else {
        for (int64_t h = 0; h < H; ++h) {
          for (int64_t w = 0; w < W; ++w) {
            const acc_t mv = m[h * W + w];
            const in_t* px = xs + h * sH + w * sW;
            out_t* po = o + (h * W + w) * C;
            for (int64_t c = 0; c < C; ++c) po[c] = static_cast<out_t>(static_cast<acc_t>(px[c * sC]) * mv);
          }
        }
      }
    }
  });
}

at::Tensor masked_input(const at::Tensor& x, const at::Tensor& mask_acc, at::ScalarType dtype) {
  at::Tensor xm = at::empty(x.sizes(), x.options().dtype(dtype).memory_format(at::MemoryFormat::ChannelsLast3d));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "masked_conv3d_mask_multiply", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (dtype == x.scalar_type()) {
      mask_multiply<scalar_t, scalar_t, acc_t>(x, mask_acc, xm);
    } else {
      TORCH_CHECK(dtype == at::kFloat, "masked_conv3d: internal: unexpected upcast");
      mask_multiply<scalar_t, float, float>(x, mask_acc, xm);
    }
  });
  return xm;
}

// Convolution of x * mask, channels_last_3d, in x.dtype or (bf16/fp16 without oneDNN support) float.
at::Tensor masked_input_conv(
    const at::Tensor& x, const at::Tensor& mask_acc, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation) {
  const auto dt = x.scalar_type();
  const bool low = dt == at::kBFloat16 || dt == at::kHalf;
  if (at::hasMKLDNN() && (dt == at::kFloat || low)) {
    if (low) {
      std::atomic<int>& ok = g_low_precision_ok[dt == at::kHalf ? 1 : 0];
      if (ok.load() != 0 && low_precision_conv_allowed()) {
        at::Tensor xm = masked_input(x, mask_acc, dt);
        try {
          at::Tensor out = at::mkldnn_convolution(xm, weight, std::nullopt, padding, stride, dilation, 1);
          ok.store(1);
          return out;
        } catch (const c10::Error&) {
          ok.store(0);
        }
      }
      at::Tensor xm = masked_input(x, mask_acc, at::kFloat);
      return at::mkldnn_convolution(xm, weight.to(at::kFloat), std::nullopt, padding, stride, dilation, 1);
    }
    return at::mkldnn_convolution(masked_input(x, mask_acc, dt), weight, std::nullopt, padding, stride, dilation, 1);
  }
  return at::convolution(masked_input(x, mask_acc, dt), weight, std::nullopt, stride, padding, dilation, false,
                         {0, 0, 0}, 1);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> masked_conv3d_cpu(
    const at::Tensor& x, const at::Tensor& mask, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& bn_scale, const std::optional<at::Tensor>& bn_shift, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, c10::string_view activation, double eps) {
  check_inputs(x, mask, weight, stride, padding, dilation);
  const Activation act = parse_activation(activation);
  const std::array<int64_t, 3> kernel{weight.size(2), weight.size(3), weight.size(4)};
  std::array<int64_t, 3> out_size{};
  for (int i = 0; i < 3; ++i) {
    out_size[i] = conv_output_size(x.size(2 + i), kernel[i], stride[i], padding[i], dilation[i]);
    TORCH_CHECK(out_size[i] >= 1, "masked_conv3d: input too small for the kernel");
  }
  const int64_t N = x.size(0), C_out = weight.size(0);
  const auto cl = at::MemoryFormat::ChannelsLast3d;
  at::Tensor new_mask = at::empty({N, 1, out_size[0], out_size[1], out_size[2]}, x.options());
  if (N == 0 || C_out == 0) {
    return {at::empty({N, C_out, out_size[0], out_size[1], out_size[2]}, x.options().memory_format(cl)),
            new_mask.zero_()};
  }
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor mask_acc = mask.reshape({N, x.size(2), x.size(3), x.size(4)}).to(acc).contiguous();
  at::Tensor conv = masked_input_conv(x, mask_acc, weight, stride, padding, dilation);
  if (!conv.is_contiguous(cl)) conv = conv.contiguous(cl);
  const bool upcast = conv.scalar_type() != x.scalar_type();
  at::Tensor out = upcast ? at::empty(conv.sizes(), x.options().memory_format(cl)) : conv;
  at::Tensor coeffs = epilogue_coefficients(x, C_out, bias, bn_scale, bn_shift, act);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "masked_conv3d_cpu", [&] {
    if (upcast) {
      fused_epilogue<float, scalar_t>(conv, out, new_mask, mask_acc, coeffs, kernel, stride, padding, dilation,
                                      act, eps);
    } else {
      fused_epilogue<scalar_t, scalar_t>(conv, out, new_mask, mask_acc, coeffs, kernel, stride, padding,
                                         dilation, act, eps);
    }
  });
  return {out, new_mask};
}

TORCH_LIBRARY_IMPL(combcn, CPU, m) { m.impl("masked_conv3d", &masked_conv3d_cpu); }

}  // namespace combcn::ops
