/* preprocess.cu - darknet's letterbox on the GPU: an RGB u8 image resized
 * bilinearly to new_w x new_h and centred on a 0.5 grey net_w x net_h
 * canvas, as a 3 x net_h x net_w fp32 tensor.
 *
 * host/image.c's mpd__letterbox makes two passes (horizontal into a
 * 3 x h x new_w buffer, then vertical); here each output value computes the
 * one or two horizontal values it needs on the fly. Every intermediate is
 * a float rounded the same way either way, and this file is built with
 * --fmad=false, so the operations below - the C code's, in its order - give
 * bit-identical results. Keep them so: no intrinsics, no reassociation. */
#include "kernels_util.cuh"

typedef struct {
    int w, h, new_w, new_h, net_w, net_h;
    int ox, oy; /* the resized image's top-left on the canvas */
    float w_scale, h_scale;
} letterbox_geom;

/* The horizontal pass's value at column c of image row r, channel k. */
static __device__ __forceinline__ float hpass(const uint8_t *px, const letterbox_geom *g, int c,
                                              int r, int k)
{
#define PIX(x) ((float)px[((size_t)r * g->w + (x)) * 3 + k] / 255.f)
    if (c == g->new_w - 1 || g->w == 1)
        return PIX(g->w - 1);
    float sx = c * g->w_scale;
    int ix = (int)sx;
    float dx = sx - ix;
    return (1 - dx) * PIX(ix) + dx * PIX(ix + 1);
#undef PIX
}

/* One thread per canvas value. */
static __global__ void letterbox_kernel(const uint8_t *px, letterbox_geom g, size_t total, float *y)
{
    MPD_CU_FOR(i, total)
    {
        int c = (int)(i % (size_t)g.net_w) - g.ox;
        size_t t = i / (size_t)g.net_w;
        int r = (int)(t % (size_t)g.net_h) - g.oy;
        int k = (int)(t / (size_t)g.net_h);
        if (c < 0 || c >= g.new_w || r < 0 || r >= g.new_h) {
            y[i] = .5f;
            continue;
        }
        float sy = r * g.h_scale;
        int iy = (int)sy;
        float dy = sy - iy;
        float v = (1 - dy) * hpass(px, &g, c, iy, k);
        if (!(r == g.new_h - 1 || g.h == 1))
            v += dy * hpass(px, &g, c, iy + 1, k);
        y[i] = v;
    }
}

extern "C" int mpd_cu_letterbox(const uint8_t *rgb, int w, int h, int new_w, int new_h, int net_w,
                                int net_h, float *y, mpd_cu_stream s)
{
    letterbox_geom g;
    g.w = w;
    g.h = h;
    g.new_w = new_w;
    g.new_h = new_h;
    g.net_w = net_w;
    g.net_h = net_h;
    g.ox = (net_w - new_w) / 2;
    g.oy = (net_h - new_h) / 2;
    /* As mpd__letterbox computes them (IEEE division on the host). */
    g.w_scale = new_w > 1 ? (float)(w - 1) / (new_w - 1) : 0;
    g.h_scale = new_h > 1 ? (float)(h - 1) / (new_h - 1) : 0;
    size_t total = (size_t)3 * net_h * net_w;
    letterbox_kernel<<<mpd_cu_blocks(total), MPD_CU_THREADS, 0, (cudaStream_t)s>>>(rgb, g, total,
                                                                                   y);
    return mpd_cu_launched();
}
