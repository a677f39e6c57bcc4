// Transitional forwarding header: the upsample launchers are declared in csrc/cpu/launchers.h and
// csrc/cuda/launchers.h. Only csrc/ops/upsample_ops.cpp still includes this file; once it includes those
// two headers directly, delete this one.
#pragma once

#include "cpu/launchers.h"
#ifdef DLF_WITH_CUDA
#include "cuda/launchers.h"
#endif
