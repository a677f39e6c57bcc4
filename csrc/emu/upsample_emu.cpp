// The host-emulation build of the upsample CUDA kernels and launchers (backend "cuda_emu"): the very text
// of csrc/cuda/upsample.cuh, run through csrc/emu/cuda_emu.h.
#define DLF_CUDA_EMU 1

#include "cuda/launchers.h"
#include "cuda/upsample.cuh"
