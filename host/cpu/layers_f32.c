/* The CPU backend's non-convolution layers, in fp32. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "cpu_kernels.h"

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
            int y0 = off + i * p->stride;
            for (int j = 0; j < l->out_w; j++) {
                int x0 = off + j * p->stride;
                float m = -FLT_MAX;
                for (int dy = 0; dy < p->size; dy++) {
                    int yy = y0 + dy;
                    if (yy < 0 || yy >= l->in_h)
                        continue;
                    const float *row = src + (size_t)yy * l->in_w;
                    for (int dx = 0; dx < p->size; dx++) {
                        int xx = x0 + dx;
                        if (xx >= 0 && xx < l->in_w && row[xx] > m)
                            m = row[xx];
                    }
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
        for (int i = 0; i < l->out_h; i++) {
            const float *src = x + ((size_t)c * l->in_h + i / s) * l->in_w;
            float *dst = y + ((size_t)c * l->out_h + i) * l->out_w;
            for (int j = 0; j < l->out_w; j++)
                dst[j] = src[j / s];
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
    memcpy(y, x, mpd_layer_out_size(l) * sizeof(float));
    for (int a = 0; a < yl->nmask; a++) {
        float *base = y + a * per_anchor;
        /* Logistic on x, y and on objectness + classes; w, h stay raw. */
        mpd__activate_f32(base, 2 * plane, MPD_ACT_LOGISTIC);
        mpd__activate_f32(base + 4 * plane, (size_t)(1 + yl->classes) * plane,
                          MPD_ACT_LOGISTIC);
    }
}
