/* The CPU backend's non-convolution layers, in fp32. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "cpu_kernels.h"

void mpd__maxpool_f32(const mpd_layer *l, const float *x, float *y)
{
    const mpd_pool *p = &l->u.pool;
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
