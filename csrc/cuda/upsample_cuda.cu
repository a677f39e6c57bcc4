// The GPU build of the upsample kernels and launchers: csrc/cuda/upsample.cuh.
#include "cuda/launchers.h"
#include "cuda/upsample.cuh"
