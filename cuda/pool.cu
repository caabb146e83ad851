/* pool.cu - darknet's maxpool on NCHW fp32, fp16, bf16 and int8 tensors, one
 * thread per output value. The window of output (i, j) starts at
 * (off + i * stride, off + j * stride), off = -padding / 2 (C division, so
 * 0 for a size of 2 and its default padding of size - 1 = 1), and taps outside the input are
 * skipped, as in mpd__maxpool_f32. */
#include <float.h>

#include "kernels_util.cuh"

/* The window of output value i clipped to the input: rows [*y0, *y1),
 * columns [*x0, *x1) of plane *plane (image * c + channel). */
static __device__ __forceinline__ void
pool_window(const mpd_cu_pool_geom *g, size_t i, size_t *plane, int *y0, int *y1, int *x0, int *x1)
{
    int off = -g->padding / 2;
    int j = (int)(i % (size_t)g->out_w);
    size_t t = i / (size_t)g->out_w;
    int r = (int)(t % (size_t)g->out_h);
    *plane = t / (size_t)g->out_h;
    int a = off + r * g->stride, b = a + g->size;
    *y0 = a < 0 ? 0 : a;
    *y1 = b > g->h ? g->h : b;
    a = off + j * g->stride;
    b = a + g->size;
    *x0 = a < 0 ? 0 : a;
    *x1 = b > g->w ? g->w : b;
}

/* Starts from -FLT_MAX and keeps the larger value, as the CPU's general
 * path does (an all -inf window therefore gives -FLT_MAX there and here;
 * the CPU's 2x2 stride-2 fast path would give -inf). */
static __global__ void maxpool_f32_kernel(const float *x, mpd_cu_pool_geom g, size_t total,
                                          float *y)
{
    MPD_CU_FOR(i, total)
    {
        size_t plane;
        int y0, y1, x0, x1;
        pool_window(&g, i, &plane, &y0, &y1, &x0, &x1);
        const float *src = x + plane * g.h * g.w;
        float m = -FLT_MAX;
        for (int yy = y0; yy < y1; yy++)
            for (int xx = x0; xx < x1; xx++) {
                float v = src[(size_t)yy * g.w + xx];
                m = v > m ? v : m;
            }
        y[i] = m;
    }
}

/* Half and bf16 tensors (T): the fp32 comparisons on the converted values;
 * the winner's own 16 bits are stored, so nothing is rounded. A window
 * with no value above -FLT_MAX stores -FLT_MAX converted (-inf in both
 * types), as fp32 pooling followed by a conversion would. */
template <mpd_cu_type T>
static __global__ void maxpool_16_kernel(const uint16_t *x, mpd_cu_pool_geom g, size_t total,
                                         void *y, int out_f32)
{
    MPD_CU_FOR(i, total)
    {
        size_t plane;
        int y0, y1, x0, x1;
        pool_window(&g, i, &plane, &y0, &y1, &x0, &x1);
        const uint16_t *src = x + plane * g.h * g.w;
        float m = -FLT_MAX;
        uint16_t mh = T == MPD_CU_BF16 ? mpd_f32_to_bf16(-FLT_MAX) : mpd_f32_to_f16(-FLT_MAX);
        for (int yy = y0; yy < y1; yy++)
            for (int xx = x0; xx < x1; xx++) {
                size_t at = (size_t)yy * g.w + xx;
                float v = mpd_cu_load(src, T, at, NULL);
                if (v > m) {
                    m = v;
                    mh = src[at];
                }
            }
        /* fp32 out: the max of the converted values, which is what
         * converting first and pooling in fp32 gives. */
        if (out_f32)
            ((float *)y)[i] = m;
        else
            ((uint16_t *)y)[i] = mh;
    }
}

/* Raw int8 comparisons: scales are positive, so the largest int8 value is
 * the largest dequantized one under either scheme. Starting from -128 gives
 * the CPU's result (which starts from the window's first tap) for every
 * input, -128 included. A window wholly outside the input - with darknet's
 * output size, only possible for a padding of at least 2 * size - 1 - has
 * no value at all: the fp32
 * path gives -FLT_MAX, its nearest int8 counterpart here is MPD_QMIN, the
 * lowest quantized value (-128 never occurs in quantized tensors, and the
 * int8 GEMM kernels rely on that). */
static __global__ void maxpool_i8_kernel(const int8_t *x, mpd_cu_pool_geom g, size_t total,
                                         int8_t *y)
{
    MPD_CU_FOR(i, total)
    {
        size_t plane;
        int y0, y1, x0, x1;
        pool_window(&g, i, &plane, &y0, &y1, &x0, &x1);
        const int8_t *src = x + plane * g.h * g.w;
        int m = -128;
        for (int yy = y0; yy < y1; yy++)
            for (int xx = x0; xx < x1; xx++) {
                int v = src[(size_t)yy * g.w + xx];
                m = v > m ? v : m;
            }
        if (y0 >= y1 || x0 >= x1)
            m = MPD_QMIN;
        y[i] = (int8_t)m;
    }
}

extern "C" int mpd_cu_maxpool(const void *x, const mpd_cu_pool_geom *g, int batch, void *y,
                              mpd_cu_type t, mpd_cu_type yt, mpd_cu_stream s)
{
    size_t total = (size_t)batch * g->c * g->out_h * g->out_w;
    unsigned blocks = mpd_cu_blocks(total);
    cudaStream_t st = (cudaStream_t)s;
    switch (t) {
    case MPD_CU_F16:
        maxpool_16_kernel<MPD_CU_F16><<<blocks, MPD_CU_THREADS, 0, st>>>(
            (const uint16_t *)x, *g, total, y, yt == MPD_CU_F32);
        break;
    case MPD_CU_BF16:
        maxpool_16_kernel<MPD_CU_BF16><<<blocks, MPD_CU_THREADS, 0, st>>>(
            (const uint16_t *)x, *g, total, y, yt == MPD_CU_F32);
        break;
    case MPD_CU_I8:
        maxpool_i8_kernel<<<blocks, MPD_CU_THREADS, 0, st>>>((const int8_t *)x, *g, total,
                                                             (int8_t *)y);
        break;
    default:
        maxpool_f32_kernel<<<blocks, MPD_CU_THREADS, 0, st>>>((const float *)x, *g, total,
                                                              (float *)y);
        break;
    }
    return mpd_cu_launched();
}
