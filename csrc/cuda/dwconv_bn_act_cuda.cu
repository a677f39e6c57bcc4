// The GPU build of the dwconv_bn_act kernels and launchers: csrc/cuda/dwconv_bn_act.cuh.
#include "cuda/dwconv_bn_act.cuh"
#include "cuda/launchers.h"
