// Box count of the mask for one output frame of masked_conv3d: how many valid inputs each window holds.
// Header-only and always inlined, so that simd.cpp compiles the same loops a second time for AVX-512.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#if defined(__GNUC__) || defined(__clang__)
#define COMBCN_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define COMBCN_ALWAYS_INLINE inline
#endif

namespace combcn::ops {

// Outputs o in [lo, hi) whose tap o * stride + off falls inside [0, n): n inputs, n_out outputs.
COMBCN_ALWAYS_INLINE std::pair<int64_t, int64_t> tap_range(int64_t off, int64_t stride, int64_t n, int64_t n_out) {
  const int64_t lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
  const int64_t hi = n - 1 - off < 0 ? 0 : std::min(n_out, (n - 1 - off) / stride + 1);
  return {lo, std::max(lo, hi)};
}

struct BoxGeometry {
  int64_t T, H, W, Ho, Wo;                             // input frames and size, output size
  std::array<int64_t, 3> kernel, stride, padding, dilation;
};

// count[ho * Wo + wo] for output frame `to` of the mask frames `m` ([T, H, W], one batch item): separably,
// sum the kT frames into `plane` [H * W], then along W into `rows` [H * Wo], then along H. Each tap's
// in-range outputs are found first, so the inner loops carry no branch and vectorise.
template <typename acc_t>
COMBCN_ALWAYS_INLINE void box_count(const acc_t* m, const BoxGeometry& g, int64_t to, acc_t* plane, acc_t* rows,
                                    acc_t* count) {
  const int64_t H = g.H, W = g.W, Wo = g.Wo;
  std::fill(plane, plane + H * W, acc_t(0));
  for (int64_t kt = 0; kt < g.kernel[0]; ++kt) {
    const int64_t t = to * g.stride[0] - g.padding[0] + kt * g.dilation[0];
    if (t < 0 || t >= g.T) continue;
    const acc_t* __restrict__ frame = m + t * H * W;
    acc_t* __restrict__ p = plane;
    for (int64_t i = 0; i < H * W; ++i) p[i] += frame[i];
  }
  std::fill(rows, rows + H * Wo, acc_t(0));
  const int64_t sw = g.stride[2];
  for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
    const int64_t off = kw * g.dilation[2] - g.padding[2];
    const auto [lo, hi] = tap_range(off, sw, W, Wo);
    for (int64_t h = 0; h < H; ++h) {
      const acc_t* __restrict__ src = plane + h * W + off;
      acc_t* __restrict__ dst = rows + h * Wo;
      if (sw == 1) {
        for (int64_t wo = lo; wo < hi; ++wo) dst[wo] += src[wo];
      } else {
        for (int64_t wo = lo; wo < hi; ++wo) dst[wo] += src[wo * sw];
      }
    }
  }
  std::fill(count, count + g.Ho * Wo, acc_t(0));
  for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
    const int64_t off = kh * g.dilation[1] - g.padding[1];
    const auto [lo, hi] = tap_range(off, g.stride[1], H, g.Ho);
    for (int64_t ho = lo; ho < hi; ++ho) {
      const acc_t* __restrict__ src = rows + (ho * g.stride[1] + off) * Wo;
      acc_t* __restrict__ dst = count + ho * Wo;
      for (int64_t wo = 0; wo < Wo; ++wo) dst[wo] += src[wo];
    }
  }
}

}  // namespace combcn::ops
