// CPU kernel of combcn::masked_conv3d (semantics in ../masked_conv3d.h).
// 1. x * mask into a channels_last_3d buffer (one parallel pass);
// 2. oneDNN convolution, called directly (F.conv3d routes small batch-1 layers to a slow im2col path);
//    bf16/fp16 convolve in float32 where oneDNN lacks them (no AVX512-BF16/AMX), and are rounded to
//    bf16/fp16 before the epilogue like every backend's convolution;
// 3. ONE at::parallel_for pass per output frame: separable dilated box count of the mask, ratio, bias,
//    batch norm, activation and new mask, in place on the convolution output.
// The row loops of passes 1 and 3 run as AVX-512 kernels where the CPU has them (simd.h).
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "../masked_conv3d.h"
#include "box_count.h"
#include "simd.h"

namespace combcn::ops {

Activation parse_activation(c10::string_view name) {
  if (name == "none") return Activation::None;
  if (name == "relu") return Activation::Relu;
  TORCH_CHECK_VALUE(false, "masked_conv3d: `activation` must be 'none' or 'relu', got '", std::string(name), "'");
}

namespace {

std::string describe(const at::Tensor& t) {
  std::ostringstream text;
  text << "shape " << t.sizes() << " " << t.scalar_type() << " on " << t.device();
  return text.str();
}

// bias, bn_scale, bn_shift: absent, or Tensor[C_out] of x.dtype on x's device.
void check_channel_vector(const char* name, const std::optional<at::Tensor>& t, const at::Tensor& x, int64_t c_out) {
  if (!t.has_value()) return;
  TORCH_CHECK_VALUE(t->defined(), "masked_conv3d: `", name, "` is an undefined tensor (pass None instead)");
  TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == c_out && t->scalar_type() == x.scalar_type() &&
                        t->device() == x.device(),
                    "masked_conv3d: `", name, "` must be Tensor[", c_out, "] (C_out) of ", x.scalar_type(), " on ",
                    x.device(), ", got ", describe(*t));
}

// stride/padding/dilation: three values in [minimum, 2^30] (the CUDA kernels hold them in int).
void check_triple(const char* name, at::IntArrayRef values, int64_t minimum) {
  TORCH_CHECK_VALUE(values.size() == 3, "masked_conv3d: `", name, "` needs 3 values (T, H, W), got ", values);
  for (const int64_t v : values) {
    TORCH_CHECK_VALUE(v >= minimum && v <= (int64_t{1} << 30), "masked_conv3d: `", name, "` must be >= ", minimum,
                      " (and <= 2^30) in every dimension, got ", values);
  }
}

}  // namespace

Arguments check_arguments(
    const char* backend, const at::Tensor& x, const at::Tensor& mask, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& bn_scale,
    const std::optional<at::Tensor>& bn_shift, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, c10::string_view activation, double eps) {
  TORCH_CHECK_VALUE(x.defined() && mask.defined() && weight.defined(),
                    "masked_conv3d: `x`, `mask` and `weight` must be defined tensors");
  TORCH_CHECK_VALUE(x.dim() == 5, "masked_conv3d: `x` must be Tensor[N, C_in, T, H, W], got ", describe(x));
  // N may be 0 (an empty batch); an input without channels or voxels is refused, as the reference must.
  TORCH_CHECK_VALUE(x.size(1) >= 1 && x.size(2) >= 1 && x.size(3) >= 1 && x.size(4) >= 1,
                    "masked_conv3d: `x` needs at least one channel, frame, row and column, got ", describe(x));
  const auto dt = x.scalar_type();
  TORCH_CHECK_VALUE(dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16 || dt == at::kHalf,
                    "masked_conv3d: `x` must be float32, float64, bfloat16 or float16, got ", dt);
  TORCH_CHECK_VALUE(mask.dim() == 5 && mask.size(0) == x.size(0) && mask.size(1) == 1 &&
                        mask.sizes().slice(2) == x.sizes().slice(2),
                    "masked_conv3d: `mask` must be Tensor[N, 1, T, H, W] matching `x` ", x.sizes(), ", got ",
                    describe(mask));
  TORCH_CHECK_VALUE(mask.scalar_type() == dt && mask.device() == x.device(), "masked_conv3d: `mask` must be ", dt,
                    " on ", x.device(), " like `x`, got ", describe(mask));
  TORCH_CHECK_VALUE(weight.dim() == 5 && weight.size(1) == x.size(1),
                    "masked_conv3d: `weight` must be Tensor[C_out, C_in, kT, kH, kW] with C_in = ", x.size(1),
                    ", got ", describe(weight));
  TORCH_CHECK_VALUE(weight.scalar_type() == dt && weight.device() == x.device(), "masked_conv3d: `weight` must be ",
                    dt, " on ", x.device(), " like `x`, got ", describe(weight));
  for (int i = 2; i < 5; ++i) {
    TORCH_CHECK_VALUE(weight.size(i) >= 1 && weight.size(i) <= (int64_t{1} << 30),
                      "masked_conv3d: `weight` kernel sizes must be >= 1, got ", describe(weight));
  }
  const int64_t c_out = weight.size(0);
  check_channel_vector("bias", bias, x, c_out);
  check_channel_vector("bn_scale", bn_scale, x, c_out);
  check_channel_vector("bn_shift", bn_shift, x, c_out);
  TORCH_CHECK_VALUE(bn_scale.has_value() == bn_shift.has_value(),
                    "masked_conv3d: `bn_scale` and `bn_shift` come together (both None or both Tensor[C_out])");
  // Last: the dispatcher picks the CUDA kernel when any argument is on CUDA, so x's device is checked
  // after the others were compared with it (the message then names the argument on the other device).
  const bool cuda = std::string(backend) == "CUDA";
  TORCH_CHECK_VALUE(cuda ? x.is_cuda() : x.is_cpu(), "masked_conv3d (", backend, "): `x` must be on ",
                    cuda ? "cuda" : "cpu", ", got ", describe(x));
  check_triple("stride", stride, 1);
  check_triple("padding", padding, 0);
  check_triple("dilation", dilation, 1);
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0, "masked_conv3d: `eps` must be finite and >= 0, got ", eps);
  Arguments args{};
  args.act = parse_activation(activation);
  for (int i = 0; i < 3; ++i) {
    args.kernel[i] = weight.size(2 + i);
    args.out_size[i] = conv_output_size(x.size(2 + i), args.kernel[i], stride[i], padding[i], dilation[i]);
  }
  TORCH_CHECK_VALUE(args.out_size[0] >= 1 && args.out_size[1] >= 1 && args.out_size[2] >= 1,
                    "masked_conv3d: `x` of size (T, H, W) = ", x.sizes().slice(2), " with padding ", padding,
                    " is smaller than the kernel ", weight.sizes().slice(2), " at dilation ", dilation,
                    ": it needs T + 2 pT >= dT (kT - 1) + 1 in every dimension");
  return args;
}

namespace {

// Coefficient table [3, C_out] in float (double for double): masked_conv3d_common.h's rules, per channel.
at::Tensor epilogue_coefficients(
    const at::Tensor& x, int64_t c_out, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& bn_scale, const std::optional<at::Tensor>& bn_shift, Activation act) {
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor coeffs = at::empty({3, c_out}, x.options().dtype(acc));
  const auto as_acc = [&](const std::optional<at::Tensor>& t) {
    return t.has_value() ? std::optional<at::Tensor>(t->to(acc).contiguous()) : std::nullopt;
  };
  const auto b = as_acc(bias), sc = as_acc(bn_scale), sh = as_acc(bn_shift);
  const bool has_bn = sc.has_value() && sh.has_value();
  AT_DISPATCH_FLOATING_TYPES(acc, "masked_conv3d_coefficients", [&] {
    scalar_t* table = coeffs.data_ptr<scalar_t>();
    for (int64_t k = 0; k < c_out; ++k) {
      const Coefficient<scalar_t> c = epilogue_coefficient<scalar_t>(
          b.has_value(), b ? b->data_ptr<scalar_t>()[k] : scalar_t(0), has_bn,
          has_bn ? sc->data_ptr<scalar_t>()[k] : scalar_t(1), has_bn ? sh->data_ptr<scalar_t>()[k] : scalar_t(0),
          act == Activation::Relu);
      table[k] = c.scale;
      table[c_out + k] = c.add;
      table[2 * c_out + k] = c.hole;
    }
  });
  return coeffs;
}

// One valid voxel's C_out outputs in place: y = act(r * scale * conv + add) (masked_conv3d_common.h).
template <typename scalar_t, typename acc_t>
inline void epilogue_row(scalar_t* row, int64_t C, acc_t r, const acc_t* __restrict__ scale,
                         const acc_t* __restrict__ add, bool relu) {
  scalar_t* __restrict__ y = row;
  if (relu) {
    for (int64_t c = 0; c < C; ++c) {
      y[c] = static_cast<scalar_t>(epilogue_value<acc_t>(r, scale[c], static_cast<acc_t>(y[c]), add[c], true));
    }
  } else {
    for (int64_t c = 0; c < C; ++c) {
      y[c] = static_cast<scalar_t>(epilogue_value<acc_t>(r, scale[c], static_cast<acc_t>(y[c]), add[c], false));
    }
  }
}

// The epilogue in place on the convolution output (x.dtype, channels_last_3d).
template <typename out_t>
void fused_epilogue(
    at::Tensor& out, at::Tensor& new_mask, const at::Tensor& mask_acc, const at::Tensor& coeffs,
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
      out_t* frame_out = o + slab * Ho * Wo * C;
      out_t* frame_mask = nm + slab * Ho * Wo;
      if constexpr (std::is_same_v<acc_t, float>) {
        if (simd::epilogue(frame_out, out.scalar_type(), frame_out, out.scalar_type(), frame_mask, count.data(),
                           Ho * Wo, C, window, threshold, scale, add, hole, relu)) {
          continue;
        }
      }
      for (int64_t v = 0; v < Ho * Wo; ++v) {
        const acc_t s = count[v];
        const bool valid = s > threshold;
        frame_mask[v] = out_t(valid ? 1 : 0);
        if (valid) {
          epilogue_row<out_t, acc_t>(frame_out + v * C, C, window / s, scale, add, relu);
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
        // oneDNN's AVX512-BF16 kernels (without AMX) carry a NaN input to outputs outside its receptive
        // field (seen on an AMD EPYC): a plane holding NaN or Inf is convolved in float32 below instead.
        if (at::isfinite(xm).all().item<bool>()) {
          try {
            at::Tensor out = at::mkldnn_convolution(xm, weight, std::nullopt, padding, stride, dilation, 1);
            ok.store(1);
            return out;
          } catch (const c10::Error&) {
            ok.store(0);
          }
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
    at::IntArrayRef padding, at::IntArrayRef dilation, c10::string_view activation, double eps, bool allow_tf32) {
  (void)allow_tf32;  // TF32 is a CUDA matter: oneDNN's float32 convolution here is full float32
  const Arguments args =
      check_arguments("CPU", x, mask, weight, bias, bn_scale, bn_shift, stride, padding, dilation, activation, eps);
  // Autocast must not reach the convolution below: its result is read as x.dtype.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const auto& out_size = args.out_size;
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
  // A bf16/fp16 convolution run in float32 is rounded to x.dtype here, as every backend rounds it.
  if (conv.scalar_type() != x.scalar_type()) conv = conv.to(x.scalar_type());
  if (!conv.is_contiguous(cl)) conv = conv.contiguous(cl);
  TORCH_CHECK(conv.scalar_type() == x.scalar_type() && conv.sizes() == at::IntArrayRef({N, C_out, out_size[0],
                                                                                         out_size[1], out_size[2]}),
              "masked_conv3d (CPU): internal: the convolution returned ", describe(conv));
  at::Tensor coeffs = epilogue_coefficients(x, C_out, bias, bn_scale, bn_shift, args.act);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "masked_conv3d_cpu", [&] {
    fused_epilogue<scalar_t>(conv, new_mask, mask_acc, coeffs, args.kernel, stride, padding, dilation, args.act,
                             eps);
  });
  return {conv, new_mask};
}

TORCH_LIBRARY_IMPL(combcn, CPU, m) { m.impl("masked_conv3d", &masked_conv3d_cpu); }

}  // namespace combcn::ops
