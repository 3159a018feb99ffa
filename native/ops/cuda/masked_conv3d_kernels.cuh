// CUDA kernels of combcn::masked_conv3d (semantics in ../masked_conv3d.h). Kernels only: no torch
// headers, so nvcc compile-checks this in about a second on a machine without a GPU, and
// tests/test_ops_cuda_emulation.cpp runs these very kernels on the CPU (one std::thread per CUDA thread).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../masked_conv3d_common.h"
#include "masked_conv3d_cuda.h"

namespace combcn::cuda {

template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };

template <typename Acc> __device__ __forceinline__ Acc to_acc(float v) { return v; }
template <typename Acc> __device__ __forceinline__ Acc to_acc(double v) { return static_cast<Acc>(v); }
template <typename Acc> __device__ __forceinline__ Acc to_acc(__half v) { return __half2float(v); }
template <typename Acc> __device__ __forceinline__ Acc to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_acc(float v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <typename T> __device__ __forceinline__ T from_acc(double v) { return static_cast<T>(v); }

// The convolution rounded to the input dtype before the epilogue, as cuDNN's output is (every backend).
template <typename T, typename Acc> __device__ __forceinline__ Acc round_to_input(Acc v) {
  return to_acc<Acc>(from_acc<T>(v));
}

// The coefficient table [3, C_out] (masked_conv3d_common.h), one thread per output channel; `bias`,
// `bn_scale`, `bn_shift` may be null (the last two together).
template <typename T>
__global__ void coefficients_kernel(const T* __restrict__ bias, const T* __restrict__ bn_scale,
                                    const T* __restrict__ bn_shift, typename AccType<T>::type* __restrict__ coeffs,
                                    int64_t C, bool relu) {
  using Acc = typename AccType<T>::type;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const bool has_bias = bias != nullptr, has_bn = bn_scale != nullptr && bn_shift != nullptr;
  const ops::Coefficient<Acc> k = ops::epilogue_coefficient<Acc>(
      has_bias, has_bias ? to_acc<Acc>(bias[c]) : Acc(0), has_bn, has_bn ? to_acc<Acc>(bn_scale[c]) : Acc(1),
      has_bn ? to_acc<Acc>(bn_shift[c]) : Acc(0), relu);
  coeffs[c] = k.scale;
  coeffs[C + c] = k.add;
  coeffs[2 * C + c] = k.hole;
}

// Output voxel index -> (n, to, ho, wo).
struct Voxel { int64_t n, t, h, w; };
__device__ __forceinline__ Voxel unflatten(int64_t v, const ConvGeometry& g) {
  Voxel p;
  p.w = v % g.Wo; v /= g.Wo;
  p.h = v % g.Ho; v /= g.Ho;
  p.t = v % g.To;
  p.n = v / g.To;
  return p;
}

// s(p): valid mask taps in the dilated window of output voxel p; padding counts as hole.
template <typename T, typename Acc>
__device__ Acc window_count(const T* __restrict__ mask, const ConvGeometry& g, const Voxel& p) {
  Acc s = 0;
  for (int kt = 0; kt < g.kT; ++kt) {
    const int64_t t = p.t * g.sT - g.pT + kt * g.dT;
    if (t < 0 || t >= g.T) continue;
    for (int kh = 0; kh < g.kH; ++kh) {
      const int64_t h = p.h * g.sH - g.pH + kh * g.dH;
      if (h < 0 || h >= g.H) continue;
      const T* row = mask + ((p.n * g.T + t) * g.H + h) * g.W;
      for (int kw = 0; kw < g.kW; ++kw) {
        const int64_t w = p.w * g.sW - g.pW + kw * g.dW;
        if (w >= 0 && w < g.W) s += to_acc<Acc>(row[w]);
      }
    }
  }
  return s;
}

// One block owns VOXELS output voxels: first their ratios (shared memory), then all their
// VOXELS * C_out outputs, read and written coalesced along the channel-innermost layout.
// `conv` and `out` may alias (in place), so neither is __restrict__.
template <typename T, int VOXELS>
__global__ void count_epilogue_kernel(
    const T* conv, T* out, T* __restrict__ new_mask, const T* __restrict__ mask,
    const typename AccType<T>::type* __restrict__ coeffs, ConvGeometry g, bool relu,
    typename AccType<T>::type window, typename AccType<T>::type eps) {
  using Acc = typename AccType<T>::type;
  __shared__ Acc ratio[VOXELS];
  __shared__ bool valid[VOXELS];
  const int64_t total = g.N * g.To * g.Ho * g.Wo;
  const int64_t v0 = static_cast<int64_t>(blockIdx.x) * VOXELS;
  for (int i = threadIdx.x; i < VOXELS; i += blockDim.x) {
    const int64_t v = v0 + i;
    if (v >= total) break;
    const Acc s = window_count<T, Acc>(mask, g, unflatten(v, g));
    valid[i] = s > eps;
    ratio[i] = valid[i] ? window / s : Acc(0);
    new_mask[v] = from_acc<T>(valid[i] ? Acc(1) : Acc(0));
  }
  __syncthreads();
  const int64_t C = g.C_out;
  const int64_t count = (total - v0 < VOXELS ? total - v0 : VOXELS) * C;
  for (int64_t e = threadIdx.x; e < count; e += blockDim.x) {
    const int64_t i = e / C, c = e % C;
    const int64_t idx = v0 * C + e;
    const Acc y = valid[i] ? ops::epilogue_value<Acc>(ratio[i], coeffs[c], to_acc<Acc>(conv[idx]), coeffs[C + c], relu)
                           : coeffs[2 * C + c];
    out[idx] = from_acc<T>(y);
  }
}

// Direct conv for small C_in: one thread per output voxel and CO_TILE output channels (blockIdx.y),
// weights of the tile staged in shared memory as [tap][C_in][CO_TILE]. Fully fused: x * mask on
// load, the window count, the convolution and the epilogue; no intermediate tensor. x * mask is formed
// at hole taps too (0 * NaN is NaN, as in the cuDNN path): a NaN or Inf in the window is never skipped.
template <typename T, int CO_TILE>
__global__ void direct_small_cin_kernel(
    const T* __restrict__ x, int64_t xs0, int64_t xs1, int64_t xs2, int64_t xs3, int64_t xs4,
    const T* __restrict__ mask, const T* __restrict__ weight, const typename AccType<T>::type* __restrict__ coeffs,
    T* __restrict__ out, T* __restrict__ new_mask, ConvGeometry g, bool relu,
    typename AccType<T>::type window, typename AccType<T>::type eps) {
  using Acc = typename AccType<T>::type;
#ifndef COMBCN_CUDA_EMULATION  // the CPU emulation test provides smem_raw itself
  extern __shared__ unsigned char smem_raw[];
#endif
  Acc* w_tile = reinterpret_cast<Acc*>(smem_raw);
  const int taps = g.kT * g.kH * g.kW;
  const int64_t co0 = static_cast<int64_t>(blockIdx.y) * CO_TILE;
  for (int i = threadIdx.x; i < taps * g.C_in * CO_TILE; i += blockDim.x) {
    const int co = i % CO_TILE;
    const int rest = i / CO_TILE;
    const int ci = rest % g.C_in, tap = rest / g.C_in;
    w_tile[i] = co0 + co < g.C_out ? to_acc<Acc>(weight[((co0 + co) * g.C_in + ci) * taps + tap]) : Acc(0);
  }
  __syncthreads();
  const int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (v >= g.N * g.To * g.Ho * g.Wo) return;
  const Voxel p = unflatten(v, g);
  Acc acc[CO_TILE];
#pragma unroll
  for (int co = 0; co < CO_TILE; ++co) acc[co] = Acc(0);
  Acc s = 0;
  int tap = 0;
  for (int kt = 0; kt < g.kT; ++kt) {
    const int64_t t = p.t * g.sT - g.pT + kt * g.dT;
    for (int kh = 0; kh < g.kH; ++kh) {
      const int64_t h = p.h * g.sH - g.pH + kh * g.dH;
      for (int kw = 0; kw < g.kW; ++kw, ++tap) {
        const int64_t w = p.w * g.sW - g.pW + kw * g.dW;
        if (t < 0 || t >= g.T || h < 0 || h >= g.H || w < 0 || w >= g.W) continue;
        const Acc m = to_acc<Acc>(mask[((p.n * g.T + t) * g.H + h) * g.W + w]);
        s += m;
        const T* xp = x + p.n * xs0 + t * xs2 + h * xs3 + w * xs4;
        for (int ci = 0; ci < g.C_in; ++ci) {
          const Acc xv = to_acc<Acc>(xp[ci * xs1]) * m;
          const Acc* wp = w_tile + (tap * g.C_in + ci) * CO_TILE;
#pragma unroll
          for (int co = 0; co < CO_TILE; ++co) acc[co] += wp[co] * xv;
        }
      }
    }
  }
  const bool u = s > eps;
  const Acc r = u ? window / s : Acc(0);
  if (blockIdx.y == 0) new_mask[v] = from_acc<T>(u ? Acc(1) : Acc(0));
  const int64_t C = g.C_out;
#pragma unroll
  for (int co = 0; co < CO_TILE; ++co) {
    const int64_t c = co0 + co;
    if (c >= C) break;
    const Acc y = u ? ops::epilogue_value<Acc>(r, coeffs[c], round_to_input<T, Acc>(acc[co]), coeffs[C + c], relu)
                    : coeffs[2 * C + c];
    out[v * C + c] = from_acc<T>(y);
  }
}

}  // namespace combcn::cuda
