// Schema of the combcn ops (one place); kernels register per device in cpu/ and cuda/.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <bitset>

#include "cpu/simd.h"
#include "masked_conv3d.h"

TORCH_LIBRARY(combcn, m) {
  m.def(
      "masked_conv3d(Tensor x, Tensor mask, Tensor weight, Tensor? bias, Tensor? bn_scale, "
      "Tensor? bn_shift, int[3] stride, int[3] padding, int[3] dilation, str activation, float eps, "
      "bool allow_tf32=False) -> (Tensor, Tensor)");
  // Which row kernels the CPU kernel uses ("avx512" or "scalar"); enable 0/1 switches, -1 only asks.
  m.def("_cpu_simd(int enable) -> str", [](int64_t enable) { return combcn::ops::simd::configure(enable); });
  // How many threads at::parallel_for runs on inside this extension (1 if it was built without OpenMP).
  m.def("_parallel_threads() -> int", []() -> int64_t {
    std::atomic<uint64_t> seen{0};
    at::parallel_for(0, 256, 1, [&](int64_t, int64_t) { seen |= uint64_t{1} << (at::get_thread_num() % 64); });
    return static_cast<int64_t>(std::bitset<64>(seen.load()).count());
  });
}
