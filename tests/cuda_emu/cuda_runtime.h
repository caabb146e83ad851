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
 * code under test takes its portable paths (mpd_q_dot4 instead of __dp4a,
 * lrintf instead of __float2int_rn). */
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
