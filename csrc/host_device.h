// DETRX_HOST_DEVICE marks helpers that both the CPU kernels and the CUDA kernels call, so the CPU
// tests exercise the same code the GPU runs.
#pragma once

#if defined(__CUDACC__)
#define DETRX_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DETRX_HOST_DEVICE inline
#endif
