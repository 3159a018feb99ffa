// Schema of the combcn ops (one place); kernels register per device in cpu/ and cuda/.
#include <torch/library.h>

#include "masked_conv3d.h"

TORCH_LIBRARY(combcn, m) {
  m.def(
      "masked_conv3d(Tensor x, Tensor mask, Tensor weight, Tensor? bias, Tensor? bn_scale, "
      "Tensor? bn_shift, int[3] stride, int[3] padding, int[3] dilation, str activation, float eps) "
      "-> (Tensor, Tensor)");
}
