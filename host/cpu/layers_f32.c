/* The CPU backend's non-convolution layers, in fp32. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "../half.h"
#include "cpu_kernels.h"
#include "pool_hwc.h"

/* 2x2 windows at stride 2 starting at 0: the common YOLO downsampling. Rows
 * and columns whose window is complete take the branch-free path. */
static void maxpool_2x2s2(const mpd_layer *l, const float *x, float *y)
{
    int full_h = l->in_h / 2, full_w = l->in_w / 2;
    for (int c = 0; c < l->out_c; c++) {
        const float *src = x + (size_t)c * l->in_h * l->in_w;
        float *dst = y + (size_t)c * l->out_h * l->out_w;
        for (int i = 0; i < l->out_h; i++) {
            const float *r0 = src + (size_t)(2 * i) * l->in_w;
            const float *r1 = i < full_h ? r0 + l->in_w : r0;
            float *d = dst + (size_t)i * l->out_w;
            for (int j = 0; j < full_w; j++) {
                float a = r0[2 * j] > r0[2 * j + 1] ? r0[2 * j] : r0[2 * j + 1];
                float b = r1[2 * j] > r1[2 * j + 1] ? r1[2 * j] : r1[2 * j + 1];
                d[j] = a > b ? a : b;
            }
            for (int j = full_w; j < l->out_w; j++) { /* odd width: one column left */
                float a = r0[2 * j], b = r1[2 * j];
                d[j] = a > b ? a : b;
            }
        }
    }
}

/* A bf16 (sign and magnitude) as an int16 in the same order as the
 * values: negatives get their magnitude bits flipped; its own inverse.
 * Maxima of keys vectorise as plain int16 maxima. Where a window holds
 * both zeros, +0 wins (the fp32 kernel keeps the first). */
static inline int16_t bf16_key(uint16_t b)
{
    return (int16_t)(b ^ ((uint16_t)((int16_t)b >> 15) & 0x7fffu));
}
#define F32_KEY(v) (v)

/* An empty window: -FLT_MAX in fp32, which bf16 rounds to -inf; the
 * lowest finite bf16 instead. */
MPD__MAXPOOL_HWC(mpd__maxpool_bf16_hwc, uint16_t, int16_t, bf16_key, 0xff7fu)
MPD__MAXPOOL_HWC(mpd__maxpool_f32_hwc, float, float, F32_KEY, -FLT_MAX)

void mpd__maxpool_f32(const mpd_layer *l, const float *x, float *y)
{
    const mpd_pool *p = &l->u.pool;
    if (p->size == 2 && p->stride == 2 && p->padding / 2 == 0 &&
        l->out_h == (l->in_h + 1) / 2 && l->out_w == (l->in_w + 1) / 2) {
        maxpool_2x2s2(l, x, y);
        return;
    }
    /* darknet starts the window at -padding/2 (C division, so 0 for the
     * default padding of size-1 = 1) and skips taps outside the input. */
    int off = -p->padding / 2;
    for (int c = 0; c < l->out_c; c++) {
        const float *src = x + (size_t)c * l->in_h * l->in_w;
        float *dst = y + (size_t)c * l->out_h * l->out_w;
        for (int i = 0; i < l->out_h; i++) {
            /* Clip the window to the input once per row and column, so the
             * inner loops need no bounds checks. */
            int y0 = off + i * p->stride, y1 = y0 + p->size;
            if (y0 < 0)
                y0 = 0;
            if (y1 > l->in_h)
                y1 = l->in_h;
            for (int j = 0; j < l->out_w; j++) {
                int x0 = off + j * p->stride, x1 = x0 + p->size;
                if (x0 < 0)
                    x0 = 0;
                if (x1 > l->in_w)
                    x1 = l->in_w;
                float m = -FLT_MAX;
                for (int yy = y0; yy < y1; yy++) {
                    const float *row = src + (size_t)yy * l->in_w;
                    for (int xx = x0; xx < x1; xx++)
                        m = row[xx] > m ? row[xx] : m;
                }
                dst[(size_t)i * l->out_w + j] = m;
            }
        }
    }
}

void mpd__upsample_f32(const mpd_layer *l, const float *x, float *y)
{
    int s = l->u.up.stride;
    for (int c = 0; c < l->out_c; c++) {
        for (int i = 0; i < l->in_h; i++) {
            /* Widen one input row, then repeat it s times. */
            const float *src = x + ((size_t)c * l->in_h + i) * l->in_w;
            float *dst = y + ((size_t)c * l->out_h + (size_t)i * s) * l->out_w;
            for (int j = 0; j < l->in_w; j++)
                for (int k = 0; k < s; k++)
                    dst[j * s + k] = src[j];
            for (int k = 1; k < s; k++)
                memcpy(dst + (size_t)k * l->out_w, dst, (size_t)l->out_w * sizeof(float));
        }
    }
}

void mpd__shortcut_f32(const mpd_layer *l, const float *x, const float *from, float *y)
{
    size_t n = mpd_layer_out_size(l);
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] + from[i];
    mpd__activate_f32(y, n, l->u.shortcut.act);
}

void mpd__yolo_f32(const mpd_layer *l, const float *x, float *y)
{
    const mpd_yolo *yl = &l->u.yolo;
    size_t plane = (size_t)l->out_h * l->out_w;
    size_t per_anchor = (size_t)(yl->classes + 5) * plane;
    for (int a = 0; a < yl->nmask; a++) {
        const float *in = x + a * per_anchor;
        float *out = y + a * per_anchor;
        /* Logistic on x, y and on objectness + classes; w, h stay raw. */
        mpd__logistic_f32(in, out, 2 * plane);
        memcpy(out + 2 * plane, in + 2 * plane, 2 * plane * sizeof(float));
        mpd__logistic_f32(in + 4 * plane, out + 4 * plane, (size_t)(1 + yl->classes) * plane);
    }
}
