/* fp32 convolution on the CPU: im2col in column blocks + OpenBLAS sgemm,
 * then bias and activation in one pass over the output. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "cpu_kernels.h"

/* Columns per im2col block: large enough that sgemm stays efficient, small
 * enough that the unfolded block (K x COLS floats) stays cache-friendly and
 * the workspace small (K = 4608 for yolov3-tiny's biggest 3x3 layer). */
enum { COL_BLOCK = 4096 };

void mpd__im2col_f32(const float *im, int c, int h, int w, int size, int stride, int pad,
                     int out_h, int out_w, int col0, int ncols, float *col)
{
    (void)out_h; /* rows follow from col0 / out_w; kept for a complete shape */
    int rows = c * size * size;
    int col_end = col0 + ncols;
    for (int r = 0; r < rows; r++) {
        int kx = r % size, ky = (r / size) % size, ch = r / size / size;
        const float *src = im + (size_t)ch * h * w;
        float *dst = col + (size_t)r * ncols;
        int oy = col0 / out_w, ox = col0 % out_w;
        for (int j = col0; j < col_end;) {
            /* One output row segment at a time: same input row. */
            int seg = out_w - ox;
            if (seg > col_end - j)
                seg = col_end - j;
            int iy = oy * stride + ky - pad;
            if (iy < 0 || iy >= h) {
                memset(dst, 0, (size_t)seg * sizeof(float));
            } else {
                const float *srow = src + (size_t)iy * w;
                int ix = ox * stride + kx - pad;
                if (stride == 1 && ix >= 0 && ix + seg <= w) {
                    memcpy(dst, srow + ix, (size_t)seg * sizeof(float));
                } else {
                    for (int t = 0; t < seg; t++, ix += stride)
                        dst[t] = (ix >= 0 && ix < w) ? srow[ix] : 0.f;
                }
            }
            dst += seg;
            j += seg;
            ox = 0;
            oy++;
        }
    }
}

static inline float act1(float v, mpd_act act)
{
    switch (act) {
    case MPD_ACT_LEAKY: return v > 0 ? v : .1f * v;
    case MPD_ACT_RELU: return v > 0 ? v : 0;
    case MPD_ACT_LOGISTIC: return 1.f / (1.f + expf(-v));
    case MPD_ACT_LINEAR: break;
    }
    return v;
}

void mpd__activate_f32(float *x, size_t n, mpd_act act)
{
    if (act == MPD_ACT_LINEAR)
        return;
    for (size_t i = 0; i < n; i++)
        x[i] = act1(x[i], act);
}

void mpd__bias_act_f32(float *y, const float *bias, int channels, size_t n, mpd_act act)
{
    for (int o = 0; o < channels; o++) {
        float b = bias[o], *p = y + (size_t)o * n;
        switch (act) {
        case MPD_ACT_LEAKY:
            for (size_t i = 0; i < n; i++) {
                float v = p[i] + b;
                p[i] = v > 0 ? v : .1f * v;
            }
            break;
        case MPD_ACT_LINEAR:
            for (size_t i = 0; i < n; i++)
                p[i] += b;
            break;
        default:
            for (size_t i = 0; i < n; i++)
                p[i] = act1(p[i] + b, act);
        }
    }
}

static int is_pointwise(const mpd_layer *l)
{
    const mpd_conv *cv = &l->u.conv;
    return cv->size == 1 && cv->stride == 1 && cv->pad == 0;
}

size_t mpd__conv_workspace(const mpd_layer *l)
{
    if (is_pointwise(l))
        return 0;
    size_t n = (size_t)l->out_h * l->out_w;
    size_t k = (size_t)l->in_c * l->u.conv.size * l->u.conv.size;
    return k * (n < COL_BLOCK ? n : COL_BLOCK);
}

void mpd__conv_f32(const mpd_layer *l, const float *x, float *y, float *ws)
{
    const mpd_conv *cv = &l->u.conv;
    int m = cv->filters;
    int n = l->out_h * l->out_w;
    int k = l->in_c * cv->size * cv->size;
    if (is_pointwise(l)) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.f, cv->weights, k, x,
                    n, 0.f, y, n);
    } else {
        for (int j0 = 0; j0 < n; j0 += COL_BLOCK) {
            int nb = n - j0 < COL_BLOCK ? n - j0 : COL_BLOCK;
            mpd__im2col_f32(x, l->in_c, l->in_h, l->in_w, cv->size, cv->stride, cv->pad,
                            l->out_h, l->out_w, j0, nb, ws);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, nb, k, 1.f, cv->weights,
                        k, ws, nb, 0.f, y + j0, n);
        }
    }
    mpd__bias_act_f32(y, cv->bias, m, (size_t)n, cv->act);
}
