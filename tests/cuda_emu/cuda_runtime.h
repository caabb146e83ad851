/* cuda_runtime.h (emulation) - what the kernels of the cuda/ .cu files need to build
 * as host C++: the execution-space keywords, the built-in thread and block
 * indices, __syncthreads, the atomics and bit casts we use, and the launch
 * machinery. The Makefile (sed) rewrites each `kernel<<<grid, block, smem,
 * stream>>>(args)` into `mpd_emu::launcher(kernel, grid, block, smem,
 * stream)(args)`.
 *
 * A launch runs its blocks one after another; the threads of a block run as
 * fibers (ucontext) on the calling thread, switching at __syncthreads, so
 * barriers and __shared__ memory (static storage here: blocks never run at
 * the same time) behave as on a GPU. __CUDA_ARCH__ stays undefined: the
 * code under test takes its portable paths (lrintf instead of
 * __float2int_rn), except that __dp4a is emulated (below) and used where a
 * real GPU would use it. */
#ifndef MPD_EMU_CUDA_RUNTIME_H
#define MPD_EMU_CUDA_RUNTIME_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <functional>

#include "cuda_runtime_api.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(n)

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c)
    {
    }
};
struct uint3 {
    unsigned x, y, z;
};
struct float2 {
    float x, y;
};
static inline float2 make_float2(float x, float y)
{
    float2 v = {x, y};
    return v;
}

/* Plain globals: launches are serialised (one at a time in the process),
 * and thread-local storage read from fiber stacks upsets the sanitizers. */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

void __syncthreads(void);

static inline unsigned atomicMin(unsigned *p, unsigned v)
{
    unsigned o = *p; /* one host thread runs every fiber: no race */
    *p = v < o ? v : o;
    return o;
}
static inline unsigned atomicMax(unsigned *p, unsigned v)
{
    unsigned o = *p;
    *p = v > o ? v : o;
    return o;
}
/* __dp4a(a, b, c): c plus the four products of the signed bytes of a and
 * b, byte 0 the least significant (the PTX dp4a.s32.s32). Written apart
 * from host/quant.h's mpd_q_dot4 (bytes taken through memory here, by
 * shifts there), so that the emulated dp4a kernel and the plain kernel
 * are two implementations, and a packing that only one of them reads
 * right shows. The kernels use it where the hardware would
 * (kernels_util.cuh, MPD_EMU_HAS_DP4A). */
#define MPD_EMU_HAS_DP4A 1
static inline int __dp4a(int a, int b, int c)
{
    signed char x[4], y[4];
    uint32_t ua = (uint32_t)a, ub = (uint32_t)b;
    unsigned char bx[4] = {(unsigned char)ua, (unsigned char)(ua >> 8), (unsigned char)(ua >> 16),
                           (unsigned char)(ua >> 24)};
    unsigned char by[4] = {(unsigned char)ub, (unsigned char)(ub >> 8), (unsigned char)(ub >> 16),
                           (unsigned char)(ub >> 24)};
    memcpy(x, bx, 4);
    memcpy(y, by, 4);
    long long sum = c;
    for (int k = 3; k >= 0; k--)
        sum += (long long)x[k] * (long long)y[k];
    return (int)(int32_t)(uint32_t)(unsigned long long)sum;
}
static inline uint32_t __float_as_uint(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float __uint_as_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

namespace mpd_emu
{
/* Runs body as grid x block threads; returns a cudaError_t. */
int run(dim3 grid, dim3 block, const std::function<void()> &body);

template <typename K> struct launch {
    K kernel;
    dim3 grid, block;
    template <typename... A> void operator()(A... args) const
    {
        K k = kernel;
        run(grid, block, [=]() { k(args...); });
    }
};
template <typename K>
launch<K> launcher(K kernel, dim3 grid, dim3 block, size_t smem = 0, cudaStream_t s = 0)
{
    (void)smem;
    (void)s;
    return launch<K>{kernel, grid, block};
}
} // namespace mpd_emu

#endif
