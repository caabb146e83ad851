/* kernels_util.cuh - device helpers every kernel family shares: element
 * loads and stores of the tensor types, activations, and the launch check.
 * CUDA C++, included by the .cu files only. */
#ifndef MPD_CUDA_KERNELS_UTIL_CUH
#define MPD_CUDA_KERNELS_UTIL_CUH

#include <cuda_runtime.h>

#include "kernels.h"

/* Threads per block of the element-wise kernels. */
#define MPD_CU_THREADS 256

/* Blocks for n elements at MPD_CU_THREADS per block, capped so a
 * grid-stride loop covers the rest (and the grid size fits in an int). */
static inline unsigned mpd_cu_blocks(size_t n)
{
    size_t b = (n + MPD_CU_THREADS - 1) / MPD_CU_THREADS;
    return (unsigned)(b < 1 ? 1 : b > 65535u * 8u ? 65535u * 8u : b);
}

/* 0, or the error of the launch just queued. */
static inline int mpd_cu_launched(void)
{
    return (int)cudaGetLastError();
}

#define MPD_CU_FOR(i, n)                                                                           \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                        \
         i += (size_t)gridDim.x * blockDim.x)

/* Activation functions as the CPU backend computes them (leaky from
 * host/quant.h; logistic with expf, which differs from glibc's in the last
 * bit at most, hence the parity bounds on logistic outputs). */
static __device__ __forceinline__ float mpd_cu_act(float v, int act)
{
    switch (act) {
    case MPD_CU_LEAKY: return mpd_q_leaky(v);
    case MPD_CU_RELU: return v > 0.f ? v : 0.f;
    case MPD_CU_LOGISTIC: return 1.f / (1.f + expf(-v));
    default: return v;
    }
}

/* acc + the four int8 products of two packed words: __dp4a where the code
 * is compiled for sm_61 or later (and on the test emulator, which has its
 * own __dp4a), else the plain version of host/quant.h. */
static __device__ __forceinline__ int32_t mpd_cu_dot4(uint32_t a, uint32_t b, int32_t acc)
{
#if __CUDA_ARCH__ >= 610 || defined(MPD_EMU_HAS_DP4A)
    return __dp4a((int)a, (int)b, acc);
#else
    return mpd_q_dot4(a, b, acc);
#endif
}

/* Element i of a tensor of type t as float (int8 dequantized with q). */
static __device__ __forceinline__ float mpd_cu_load(const void *x, mpd_cu_type t, size_t i,
                                                    const mpd_qparams *q)
{
    switch (t) {
    case MPD_CU_F16: return mpd_f16_to_f32(((const mpd_half *)x)[i]);
    case MPD_CU_BF16: return mpd_bf16_to_f32(((const mpd_bf16 *)x)[i]);
    case MPD_CU_I8: return mpd_q_dequantize(((const int8_t *)x)[i], *q);
    case MPD_CU_I32: return (float)((const int32_t *)x)[i];
    default: return ((const float *)x)[i];
    }
}

/* Stores v as element i of a tensor of type t (int8 quantized with q;
 * bf16 rounded as the CPU rounds it, host/half.h, so both backends store
 * the same bits). */
static __device__ __forceinline__ void mpd_cu_store(void *y, mpd_cu_type t, size_t i, float v,
                                                    const mpd_qparams *q)
{
    switch (t) {
    case MPD_CU_F16: ((mpd_half *)y)[i] = mpd_f32_to_f16(v); break;
    case MPD_CU_BF16: ((mpd_bf16 *)y)[i] = mpd_f32_to_bf16(v); break;
    case MPD_CU_I8: ((int8_t *)y)[i] = mpd_q_quantize(v, 1.f / q->scale, q->zero); break;
    case MPD_CU_I32: ((int32_t *)y)[i] = (int32_t)v; break;
    default: ((float *)y)[i] = v; break;
    }
}

#endif
