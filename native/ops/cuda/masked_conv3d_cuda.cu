// Launchers of the CUDA kernels of combcn::masked_conv3d: dtype dispatch and launch geometry only.
// No torch headers (a .cu that includes torch/extension.h takes about a minute to compile); the ATen
// glue (cuDNN convolution, registration) lives in masked_conv3d_cuda.cpp.
#include "masked_conv3d_kernels.cuh"

namespace combcn::cuda {
namespace {

template <typename T>
const char* count_epilogue(const void* conv, void* out, void* new_mask, const void* mask, const void* coeffs,
                           const ConvGeometry& g, bool relu, double eps, cudaStream_t stream) {
  using Acc = typename AccType<T>::type;
  const int64_t total = g.N * g.To * g.Ho * g.Wo;
  const int64_t blocks = (total + kEpilogueVoxels - 1) / kEpilogueVoxels;
  if (blocks == 0) return nullptr;
  const Acc window = static_cast<Acc>(g.kT * g.kH * g.kW);
  count_epilogue_kernel<T, kEpilogueVoxels><<<static_cast<unsigned>(blocks), kEpilogueThreads, 0, stream>>>(
      static_cast<const T*>(conv), static_cast<T*>(out), static_cast<T*>(new_mask), static_cast<const T*>(mask),
      static_cast<const Acc*>(coeffs), g, relu, window, static_cast<Acc>(eps));
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

template <typename T>
const char* direct(const void* x, const int64_t* xs, const void* mask, const void* weight, const void* coeffs,
                   void* out, void* new_mask, const ConvGeometry& g, bool relu, double eps, cudaStream_t stream) {
  using Acc = typename AccType<T>::type;
  const int64_t total = g.N * g.To * g.Ho * g.Wo;
  if (total == 0) return nullptr;
  const dim3 grid(static_cast<unsigned>((total + kDirectThreads - 1) / kDirectThreads),
                  static_cast<unsigned>((g.C_out + kDirectCoTile - 1) / kDirectCoTile));
  const std::size_t smem = sizeof(Acc) * g.kT * g.kH * g.kW * g.C_in * kDirectCoTile;
  const Acc window = static_cast<Acc>(g.kT * g.kH * g.kW);
  direct_small_cin_kernel<T, kDirectCoTile><<<grid, kDirectThreads, smem, stream>>>(
      static_cast<const T*>(x), xs[0], xs[1], xs[2], xs[3], xs[4], static_cast<const T*>(mask),
      static_cast<const T*>(weight), static_cast<const Acc*>(coeffs), static_cast<T*>(out),
      static_cast<T*>(new_mask), g, relu, window, static_cast<Acc>(eps));
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* launch_count_epilogue(Dtype dtype, const void* conv, void* out, void* new_mask, const void* mask,
                                  const void* coeffs, const ConvGeometry& g, bool relu, double eps, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case Dtype::Float32: return count_epilogue<float>(conv, out, new_mask, mask, coeffs, g, relu, eps, s);
    case Dtype::Float16: return count_epilogue<__half>(conv, out, new_mask, mask, coeffs, g, relu, eps, s);
    case Dtype::BFloat16: return count_epilogue<__nv_bfloat16>(conv, out, new_mask, mask, coeffs, g, relu, eps, s);
    case Dtype::Float64: return count_epilogue<double>(conv, out, new_mask, mask, coeffs, g, relu, eps, s);
  }
  return "masked_conv3d: unsupported dtype";
}

const char* launch_direct_small_cin(Dtype dtype, const void* x, const int64_t* x_strides, const void* mask,
                                    const void* weight, const void* coeffs, void* out, void* new_mask,
                                    const ConvGeometry& g, bool relu, double eps, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case Dtype::Float32:
      return direct<float>(x, x_strides, mask, weight, coeffs, out, new_mask, g, relu, eps, s);
    case Dtype::Float16:
      return direct<__half>(x, x_strides, mask, weight, coeffs, out, new_mask, g, relu, eps, s);
    case Dtype::BFloat16:
      return direct<__nv_bfloat16>(x, x_strides, mask, weight, coeffs, out, new_mask, g, relu, eps, s);
    case Dtype::Float64:
      return direct<double>(x, x_strides, mask, weight, coeffs, out, new_mask, g, relu, eps, s);
  }
  return "masked_conv3d: unsupported dtype";
}

std::size_t direct_small_cin_smem_bytes(Dtype dtype, const ConvGeometry& g) {
  const std::size_t acc = dtype == Dtype::Float64 ? sizeof(double) : sizeof(float);
  return acc * static_cast<std::size_t>(g.kT * g.kH * g.kW) * static_cast<std::size_t>(g.C_in) * kDirectCoTile;
}

}  // namespace combcn::cuda
