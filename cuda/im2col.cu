/* im2col.cu - unfolding convolution windows into GEMM operands.
 *   fp32 / fp16: darknet's column matrix, K x N per image, for cuBLAS;
 *   int8: one output pixel per row, N x kp, so that each row's taps are
 *         contiguous 32-bit words for __dp4a. */
#include "kernels_util.cuh"

/* One thread per column entry (k, n) of image b. */
static __global__ void im2col_kernel(const void *x, mpd_cu_type xt, mpd_cu_conv_geom g,
                                     size_t total, void *col, mpd_cu_type ct)
{
    const int ks = g.size * g.size;
    const size_t npix = (size_t)g.out_h * g.out_w, K = (size_t)g.c * ks;
    const size_t img_in = (size_t)g.c * g.h * g.w, img_col = K * npix;
    MPD_CU_FOR(i, total)
    {
        size_t b = i / img_col, r = i % img_col;
        int k = (int)(r / npix), n = (int)(r % npix);
        int ch = k / ks, t = k % ks, ky = t / g.size, kx = t % g.size;
        int oy = n / g.out_w, ox = n % g.out_w;
        int iy = oy * g.stride - g.pad + ky, ix = ox * g.stride - g.pad + kx;
        float v = 0.f;
        if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w)
            v = mpd_cu_load(x, xt, b * img_in + ((size_t)ch * g.h + iy) * g.w + ix, NULL);
        mpd_cu_store(col, ct, i, v, NULL);
    }
}

extern "C" int mpd_cu_im2col(const void *x, mpd_cu_type xtype, const mpd_cu_conv_geom *g, int batch,
                             void *col, mpd_cu_type coltype, mpd_cu_stream s)
{
    size_t total = (size_t)batch * g->c * g->size * g->size * g->out_h * g->out_w;
    im2col_kernel<<<mpd_cu_blocks(total), MPD_CU_THREADS, 0, (cudaStream_t)s>>>(x, xtype, *g, total,
                                                                                col, coltype);
    return mpd_cu_launched();
}

/* One thread per 4-byte word of a row: taps k0..k0+3 of pixel n, packed
 * little-endian as __dp4a reads them. */
static __global__ void im2row_i8_kernel(const int8_t *x, const mpd_qparams *xq, int xq_stride,
                                        mpd_cu_conv_geom g, int kp, size_t total, int8_t *row)
{
    const int ks = g.size * g.size, K = g.c * ks, words = kp / 4;
    const size_t npix = (size_t)g.out_h * g.out_w, img_in = (size_t)g.c * g.h * g.w;
    MPD_CU_FOR(i, total)
    {
        size_t p = i / words; /* b * npix + n */
        int wd = (int)(i % words);
        size_t b = p / npix;
        int n = (int)(p % npix), oy = n / g.out_w, ox = n % g.out_w;
        const int8_t *xb = x + b * img_in;
        const int8_t padv = (int8_t)xq[b * xq_stride].zero;
        uint32_t packed = 0;
        for (int j = 0; j < 4; j++) {
            int k = wd * 4 + j;
            int8_t v = 0;
            if (k < K) {
                int ch = k / ks, t = k % ks, ky = t / g.size, kx = t % g.size;
                int iy = oy * g.stride - g.pad + ky, ix = ox * g.stride - g.pad + kx;
                v = (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w)
                        ? xb[((size_t)ch * g.h + iy) * g.w + ix]
                        : padv;
            }
            packed |= (uint32_t)(uint8_t)v << (8 * j);
        }
        ((uint32_t *)row)[i] = packed;
    }
}

extern "C" int mpd_cu_im2row_i8(const int8_t *x, const mpd_qparams *xq, int xq_stride,
                                const mpd_cu_conv_geom *g, int batch, int kp, int8_t *row,
                                mpd_cu_stream s)
{
    size_t total = (size_t)batch * g->out_h * g->out_w * (kp / 4);
    im2row_i8_kernel<<<mpd_cu_blocks(total), MPD_CU_THREADS, 0, (cudaStream_t)s>>>(
        x, xq, xq_stride, *g, kp, total, row);
    return mpd_cu_launched();
}
