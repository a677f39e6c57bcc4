// The host-emulation build of the dwconv_bn_act CUDA kernels and launchers (backend "cuda_emu"): the very
// text of csrc/cuda/dwconv_bn_act.cuh, run through csrc/emu/cuda_emu.h.
#define DLF_CUDA_EMU 1

#include "cuda/dwconv_bn_act.cuh"
#include "cuda/launchers.h"
