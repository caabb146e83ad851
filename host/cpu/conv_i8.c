#include "conv_i8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../engine.h"
#include "../internal.h"
#include "blas.h"
#include "gemm_i8.h"
#include "pool_hwc.h"

/* Output columns per task in the column split (see conv_f32.c). */
enum { COL_BLOCK = 1024 };

static int round4(int k)
{
    return (k + 3) & ~3;
}

static int split_columns(const mpd_layer *l, int threads)
{
    return l->out_h * l->out_w >= threads * COL_BLOCK;
}

/* max |x[i]| over n floats. Eight running maxima break the dependency
 * chain of one; the maximum does not depend on the order. */
static float absmax(const float *x, int n)
{
    float m8[8] = {0}, amax = 0;
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int i = 0; i < 8; i++)
            m8[i] = fabsf(x[j + i]) > m8[i] ? fabsf(x[j + i]) : m8[i];
    for (; j < n; j++)
        amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
    for (int i = 0; i < 8; i++)
        amax = m8[i] > amax ? m8[i] : amax;
    return amax;
}

int mpd__conv_i8_prepare(const mpd_layer *l, mpd_scheme scheme, mpd__conv_i8_weights *q)
{
    const mpd_conv *cv = &l->u.conv;
    memset(q, 0, sizeof(*q));
    q->m = cv->filters;
    q->k = l->in_c * cv->size * cv->size;
    q->kp = round4(q->k);
    q->scheme = scheme;
    q->w = calloc((size_t)q->m * q->kp, 1);
    q->w_scale = malloc((size_t)q->m * sizeof(float));
    q->w_sum = malloc((size_t)q->m * sizeof(int32_t));
    if (!q->w || !q->w_scale || !q->w_sum) {
        mpd__conv_i8_release(q);
        return MPD_ENOMEM;
    }
    mpd_qparams tensor = {1.f, 0};
    if (scheme == MPD_SCHEME_AFFINE) {
        /* The paper's scheme: one min/max range for the whole tensor. */
        float mn, mx;
        mpd__range_f32(cv->weights, (size_t)q->m * q->k, &mn, &mx);
        tensor = mpd_q_affine(mn, mx);
        q->w_zero = tensor.zero;
    }
    int c = l->in_c, ks = cv->size * cv->size;
    for (int o = 0; o < q->m; o++) {
        const float *src = cv->weights + (size_t)o * q->k;
        mpd_qparams p = tensor;
        if (scheme == MPD_SCHEME_SYMMETRIC) {
            /* Per output channel: BN folding gives channels very different
             * ranges, which one tensor-wide scale would crush. */
            p = mpd_q_symmetric(absmax(src, q->k));
        }
        float inv = 1.f / p.scale;
        int8_t *dst = q->w + (size_t)o * q->kp;
        /* darknet's [c][ky][kx] becomes [ky][kx][c], the order of an HWC
         * patch. */
        for (int ch = 0; ch < c; ch++)
            for (int t = 0; t < ks; t++)
                dst[t * c + ch] = mpd_q_quantize(src[ch * ks + t], inv, p.zero);
        /* Summed in a loop of its own: summing as it quantizes makes GCC
         * pass each code through the stack into a vector add, a
         * store-forwarding stall per weight (it made this function slower
         * than counting a layer's overflows, host/overflow.c). */
        int32_t sum = 0;
        for (int j = 0; j < q->k; j++)
            sum += dst[j];
        q->w_scale[o] = p.scale;
        q->w_sum[o] = sum;
    }
    return 0;
}

void mpd__conv_i8_release(mpd__conv_i8_weights *q)
{
    free(q->w);
    free(q->w_scale);
    free(q->w_sum);
    free(q->wf);
    memset(q, 0, sizeof(*q));
}

void mpd__range_f32(const float *x, size_t n, float *min, float *max)
{
    float mn = n ? x[0] : 0, mx = n ? x[0] : 0;
    for (size_t i = 0; i < n; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
    }
    *min = mn;
    *max = mx;
}

void mpd__quantize_chw_to_hwc(const float *x, int c, int hw, mpd_qparams p, int8_t *q, int p0,
                              int p1)
{
    float inv = 1.f / p.scale;
    /* Blocks of 64 pixels, so that a block's c x 64 codes stay in cache
     * while each channel writes its 64. */
    for (int b0 = p0; b0 < p1; b0 += 64) {
        int b1 = b0 + 64 < p1 ? b0 + 64 : p1;
        for (int ch = 0; ch < c; ch++) {
            const float *src = x + (size_t)ch * hw;
            for (int i = b0; i < b1; i++)
                q[(size_t)i * c + ch] = mpd_q_quantize_fast(src[i], inv, p.zero);
        }
    }
}

void mpd__quantize_n(const float *x, size_t n, mpd_qparams p, int8_t *q)
{
    float inv = 1.f / p.scale;
    for (size_t i = 0; i < n; i++)
        q[i] = mpd_q_quantize_fast(x[i], inv, p.zero);
}

void mpd__dequantize_n(const int8_t *q, size_t n, mpd_qparams p, float *x)
{
    for (size_t i = 0; i < n; i++)
        x[i] = mpd_q_dequantize(q[i], p);
}

void mpd__dequantize_hwc_to_chw(const int8_t *q, int c, int hw, mpd_qparams p, float *x)
{
    for (int ch = 0; ch < c; ch++) {
        float *dst = x + (size_t)ch * hw;
        for (int i = 0; i < hw; i++)
            dst[i] = mpd_q_dequantize(q[(size_t)i * c + ch], p);
    }
}

/* An empty window (padding >= 2 x size - 1): the fp32 path gives
 * -FLT_MAX; MPD_QMIN is the lowest int8 code, and what the GPU gives. */
#define I8_KEY(v) (v)
MPD__MAXPOOL_HWC(mpd__maxpool_i8_hwc, int8_t, int8_t, I8_KEY, MPD_QMIN)

void mpd__im2row_i8(const int8_t *im, int c, int h, int w, int size, int stride, int pad,
                    int out_w, int col0, int ncols, int kp, int8_t padv, int8_t *bt,
                    int32_t *colsum)
{
    int k = c * size * size;
    size_t rowlen = (size_t)size * c; /* one kernel row of an HWC patch */
    for (int j = 0; j < ncols; j++) {
        int col = col0 + j, oy = col / out_w, ox = col % out_w;
        int y0 = oy * stride - pad, x0 = ox * stride - pad;
        int8_t *row = bt + (size_t)j * kp;
        int cols_inside = x0 >= 0 && x0 + size <= w;
        for (int ky = 0; ky < size; ky++) {
            int iy = y0 + ky;
            int8_t *dst = row + ky * rowlen;
            if (iy < 0 || iy >= h) {
                memset(dst, padv, rowlen);
            } else if (cols_inside) {
                const int8_t *src = im + ((size_t)iy * w + x0) * c;
                if (rowlen <= 32) /* a call costs more than the copy */
                    for (size_t t = 0; t < rowlen; t++)
                        dst[t] = src[t];
                else
                    memcpy(dst, src, rowlen);
            } else {
                for (int kx = 0; kx < size; kx++) {
                    int ix = x0 + kx;
                    if (ix >= 0 && ix < w)
                        memcpy(dst + kx * c, im + ((size_t)iy * w + ix) * c, (size_t)c);
                    else
                        memset(dst + kx * c, padv, (size_t)c);
                }
            }
        }
        for (int t = k; t < kp; t++)
            row[t] = 0;
        if (colsum) {
            int32_t s = 0;
            for (int t = 0; t < k; t++)
                s += row[t];
            colsum[j] = s;
        }
    }
}

typedef struct {
    const mpd_layer *l;
    const mpd__conv_i8_weights *w;
    const int8_t *x8;
    mpd_qparams xq;
    float *y;
    int8_t *y8;
    float inv_out;
    const mpd__cpu_exec *ex;
    int n, chunk;
    float *scale; /* per channel: s_w[c] * s_x */
    const float *xc; /* the centred input of the fp32 GEMM (CHW), or NULL */
    const int8_t *bt; /* shared unfold (row split) */
    const int32_t *colsum;
} i8_job;

/* Applies the activation to one value. */
static inline float activate(float v, mpd_act act)
{
    switch (act) {
    case MPD_ACT_LEAKY: return mpd_q_leaky(v);
    case MPD_ACT_RELU: return v > 0 ? v : 0;
    case MPD_ACT_LOGISTIC: return 1.f / (1.f + expf(-v));
    case MPD_ACT_LINEAR: break;
    }
    return v;
}

/* Epilogue into a CHW fp32 output. acc holds channels [m0, m0 + mb) x
 * pixels [n0, n0 + nb), rows ld apart. */
static void epilogue_chw(const i8_job *j, const int32_t *acc, int ld, int m0, int mb, int n0,
                         int nb, const int32_t *colsum)
{
    const mpd_conv *cv = &j->l->u.conv;
    const mpd__conv_i8_weights *w = j->w;
    const mpd_act act = cv->act;
    /* Through the fp32 GEMM, the sums are of centred values already. */
    const int affine = w->scheme == MPD_SCHEME_AFFINE && !j->xc;
    const int32_t zx = j->xq.zero, zw = w->w_zero;
    for (int o = m0; o < m0 + mb; o++) {
        const int32_t *restrict a = acc + (size_t)(o - m0) * ld;
        float *restrict yf = j->y + (size_t)o * j->n + n0;
        const float s = j->scale[o], b = cv->bias[o];
        if (affine) {
            /* sum (w - zw)(x - zx) = raw - zx sum w - zw sum x + K zw zx */
            const int32_t corr = -zx * w->w_sum[o] + w->k * zw * zx;
            for (int t = 0; t < nb; t++)
                yf[t] = activate(mpd_q_epilogue(a[t] + corr - zw * colsum[t], s, b), act);
        } else if (act == MPD_ACT_LEAKY) {
            for (int t = 0; t < nb; t++)
                yf[t] = mpd_q_leaky(mpd_q_epilogue(a[t], s, b));
        } else {
            for (int t = 0; t < nb; t++)
                yf[t] = activate(mpd_q_epilogue(a[t], s, b), act);
        }
    }
}

/* Epilogue into an HWC int8 output (symmetric scheme only): acc holds
 * pixels [n0, n0 + nb) x channels [m0, m0 + mb), rows ld apart, so both the
 * reads and the writes are contiguous and the channel loop vectorises. */
static void epilogue_hwc(const i8_job *j, const int32_t *acc, int ld, int m0, int mb, int n0,
                         int nb)
{
    const mpd_conv *cv = &j->l->u.conv;
    const mpd_act act = cv->act;
    const int m = j->w->m;
    const float inv = j->inv_out;
    const float *restrict sc = j->scale + m0, *restrict bias = cv->bias + m0;
    for (int t = 0; t < nb; t++) {
        const int32_t *restrict a = acc + (size_t)t * ld;
        int8_t *restrict d = j->y8 + (size_t)(n0 + t) * m + m0;
        if (act == MPD_ACT_LEAKY) { /* the common case, in a loop that vectorises */
            for (int o = 0; o < mb; o++)
                d[o] =
                    mpd_q_quantize_fast(mpd_q_leaky(mpd_q_epilogue(a[o], sc[o], bias[o])), inv, 0);
        } else {
            for (int o = 0; o < mb; o++)
                d[o] = mpd_q_quantize_fast(activate(mpd_q_epilogue(a[o], sc[o], bias[o]), act), inv,
                                           0);
        }
    }
}

/* Epilogue into an HWC int8 output from channel-major accumulators (acc
 * holds channels [0, m) x pixels [n0, n0 + nb), rows ld apart): used when
 * there are few channels, where the GEMM runs faster in this orientation. */
static void epilogue_hwc_from_chw(const i8_job *j, const int32_t *acc, int ld, int n0, int nb)
{
    const mpd_conv *cv = &j->l->u.conv;
    const mpd_act act = cv->act;
    const int m = j->w->m;
    const float inv = j->inv_out;
    int8_t *restrict y8 = j->y8 + (size_t)n0 * m;
    for (int o = 0; o < m; o++) {
        const int32_t *restrict a = acc + (size_t)o * ld;
        const float s = j->scale[o], b = cv->bias[o];
        for (int t = 0; t < nb; t++) {
            float v = mpd_q_epilogue(a[t], s, b);
            v = act == MPD_ACT_LEAKY ? mpd_q_leaky(v) : activate(v, act);
            y8[(size_t)t * m + o] = mpd_q_quantize_fast(v, inv, 0);
        }
    }
}

/* Worker scratch layout for the column split: bt block, then int32
 * accumulators, then column sums. */
static size_t ws_bt(const mpd_layer *l)
{
    return (size_t)COL_BLOCK * round4(l->in_c * l->u.conv.size * l->u.conv.size);
}

/* Worker scratch for the fp32 GEMM's column split: the unfolded block,
 * fp32 then int32 accumulators. */
static size_t ws_f32(const mpd_layer *l)
{
    size_t k = (size_t)l->in_c * l->u.conv.size * l->u.conv.size;
    size_t acc = (size_t)l->u.conv.filters * COL_BLOCK * sizeof(float);
    return mpd__align64(k * COL_BLOCK * sizeof(float)) + mpd__align64(acc) + acc;
}

int mpd__conv_i8_f32_exact(const mpd_layer *l, mpd_scheme scheme)
{
    long v = scheme == MPD_SCHEME_AFFINE ? MPD_QMAX - MPD_QMIN : MPD_QMAX;
    return mpd__conv_k(l) * v * v <= (1L << 24);
}

/* Output pixels [n0, n0 + nb) through the fp32 GEMM: the centred input
 * (CHW floats) unfolded as the fp32 kernel does, whose zero padding is the
 * zero point once centred; the exact int32 accumulators
 * (mpd__conv_i8_f32_exact); then the int8 kernel's own epilogues, so the
 * output has the same bits. */
static void columns_f32(const i8_job *j, int n0, int nb, char *ws)
{
    const mpd_layer *l = j->l;
    const mpd_conv *cv = &l->u.conv;
    const mpd__conv_i8_weights *w = j->w;
    const int m = w->m, k = w->k;
    float *col = (float *)ws;
    float *af = (float *)(ws + mpd__align64((size_t)k * COL_BLOCK * sizeof(float)));
    int32_t *acc = (int32_t *)((char *)af + mpd__align64((size_t)m * COL_BLOCK * sizeof(float)));
    const float *b = j->xc + n0; /* a pointwise layer's input is its own unfold */
    int ldb = j->n;
    if (cv->size != 1 || cv->stride != 1 || cv->pad != 0) {
        mpd__im2col_f32(j->xc, l->in_c, l->in_h, l->in_w, cv->size, cv->stride, cv->pad,
                        l->out_h, l->out_w, n0, nb, col);
        b = col;
        ldb = nb;
    }
    /* Pixel-major accumulators for an int8 (HWC) output, whose epilogue
     * then reads and writes contiguously; channel-major for fp32 (CHW). */
    if (j->y8)
        mpd__blas_sgemm_tt(nb, m, k, b, ldb, w->wf, k, af, m);
    else
        mpd__blas_sgemm(m, nb, k, w->wf, k, b, ldb, af, nb);
    const size_t nm = (size_t)nb * m;
    for (size_t i = 0; i < nm; i++)
        acc[i] = (int32_t)af[i];
    if (j->y8)
        epilogue_hwc(j, acc, m, 0, m, n0, nb);
    else
        epilogue_chw(j, acc, nb, 0, m, n0, nb, NULL);
}

static void column_task(void *p, int task, int worker)
{
    const i8_job *j = p;
    const mpd_layer *l = j->l;
    const mpd_conv *cv = &l->u.conv;
    int n0 = task * j->chunk;
    int nb = j->n - n0 < j->chunk ? j->n - n0 : j->chunk;
    char *ws = (char *)j->ex->ws[worker];
    if (j->xc) {
        columns_f32(j, n0, nb, ws);
        return;
    }
    int8_t *bt = (int8_t *)ws;
    int32_t *acc = (int32_t *)(ws + mpd__align64(ws_bt(l)));
    int32_t *colsum = acc + (size_t)j->w->m * COL_BLOCK;
    mpd__im2row_i8(j->x8, l->in_c, l->in_h, l->in_w, cv->size, cv->stride, cv->pad, l->out_w,
                   n0, nb, j->w->kp, (int8_t)j->xq.zero, bt,
                   j->w->scheme == MPD_SCHEME_AFFINE ? colsum : NULL);
    if (j->y8 && j->w->m < 32) {
        /* Few channels (yolov3-tiny's first layer): the GEMM is much faster
         * channel-major; the epilogue then writes with a stride of m. */
        mpd__gemm_i8(MPD_GEMM_I8_AUTO, j->w->m, nb, j->w->kp, j->w->w, j->w->kp, bt, j->w->kp,
                     acc, nb);
        epilogue_hwc_from_chw(j, acc, nb, n0, nb);
    } else if (j->y8) { /* pixel-major accumulators for the HWC epilogue */
        mpd__gemm_i8(MPD_GEMM_I8_AUTO, nb, j->w->m, j->w->kp, bt, j->w->kp, j->w->w, j->w->kp,
                     acc, j->w->m);
        epilogue_hwc(j, acc, j->w->m, 0, j->w->m, n0, nb);
    } else {
        mpd__gemm_i8(MPD_GEMM_I8_AUTO, j->w->m, nb, j->w->kp, j->w->w, j->w->kp, bt, j->w->kp,
                     acc, nb);
        epilogue_chw(j, acc, nb, 0, j->w->m, n0, nb, colsum);
    }
}

static void unfold_task(void *p, int task, int worker)
{
    (void)worker;
    const i8_job *j = p;
    const mpd_layer *l = j->l;
    const mpd_conv *cv = &l->u.conv;
    int n0 = task * j->chunk;
    int nb = j->n - n0 < j->chunk ? j->n - n0 : j->chunk;
    mpd__im2row_i8(j->x8, l->in_c, l->in_h, l->in_w, cv->size, cv->stride, cv->pad, l->out_w,
                   n0, nb, j->w->kp, (int8_t)j->xq.zero, (int8_t *)j->bt + (size_t)n0 * j->w->kp,
                   j->w->scheme == MPD_SCHEME_AFFINE ? (int32_t *)j->colsum + n0 : NULL);
}

static void row_task(void *p, int task, int worker)
{
    const i8_job *j = p;
    int m0 = task * j->chunk;
    int mb = j->w->m - m0 < j->chunk ? j->w->m - m0 : j->chunk;
    int32_t *acc = (int32_t *)j->ex->ws[worker];
    const int8_t *wr = j->w->w + (size_t)m0 * j->w->kp;
    if (j->y8) {
        mpd__gemm_i8(MPD_GEMM_I8_AUTO, j->n, mb, j->w->kp, j->bt, j->w->kp, wr, j->w->kp, acc, mb);
        epilogue_hwc(j, acc, mb, m0, mb, 0, j->n);
    } else {
        mpd__gemm_i8(MPD_GEMM_I8_AUTO, mb, j->n, j->w->kp, wr, j->w->kp, j->bt, j->w->kp, acc,
                     j->n);
        epilogue_chw(j, acc, j->n, m0, mb, 0, j->n, j->colsum);
    }
}

static int ceil_div(int a, int b)
{
    return (a + b - 1) / b;
}

/* Row split: rows per task, a multiple of 16. */
static int row_chunk(int m, int threads)
{
    return ceil_div(ceil_div(m, threads), 16) * 16;
}

size_t mpd__conv_i8_ws_worker(const mpd_layer *l, int threads)
{
    int m = l->u.conv.filters, n = l->out_h * l->out_w;
    if (split_columns(l, threads)) {
        size_t ws = mpd__align64(ws_bt(l)) + (size_t)(m + 1) * COL_BLOCK * sizeof(int32_t);
        /* Room for the fp32 GEMM whenever some scheme may pick it. */
        if (mpd__conv_i8_f32_exact(l, MPD_SCHEME_SYMMETRIC) && ws_f32(l) > ws)
            ws = ws_f32(l);
        return ws;
    }
    return (size_t)row_chunk(m, threads) * n * sizeof(int32_t);
}

size_t mpd__conv_i8_ws_shared(const mpd_layer *l, int threads)
{
    if (split_columns(l, threads))
        return 0;
    size_t n = (size_t)l->out_h * l->out_w;
    return n * round4(l->in_c * l->u.conv.size * l->u.conv.size) + n * sizeof(int32_t) + 64;
}

static void conv_i8(const mpd_layer *l, const mpd__conv_i8_weights *w, const int8_t *x8,
                    const float *xc, mpd_qparams xq, float *y, int8_t *y8, float inv_out,
                    const mpd__cpu_exec *ex)
{
    int threads = mpd__tpool_threads(ex->pool);
    float *scale = ex->scale;
    for (int o = 0; o < w->m; o++)
        scale[o] = w->w_scale[o] * xq.scale;
    i8_job j = {.l = l, .w = w, .x8 = x8, .xc = xc, .xq = xq, .y = y8 ? NULL : y, .y8 = y8,
                .inv_out = inv_out, .ex = ex, .n = l->out_h * l->out_w, .scale = scale};
    if (xc || split_columns(l, threads)) {
        int ntasks = threads * ceil_div(j.n, threads * COL_BLOCK);
        j.chunk = ceil_div(j.n, ntasks);
        mpd__tpool_run(ex->pool, ceil_div(j.n, j.chunk), column_task, &j);
        return;
    }
    /* Small outputs: one shared unfold (in parallel), then split the
     * output channels. */
    char *sh = (char *)ex->shared;
    size_t btsz = (size_t)j.n * w->kp;
    j.bt = (const int8_t *)sh;
    j.colsum = (const int32_t *)(sh + mpd__align64(btsz));
    int tasks = threads * 4 < j.n ? threads * 4 : j.n;
    j.chunk = ceil_div(j.n, tasks);
    mpd__tpool_run(ex->pool, ceil_div(j.n, j.chunk), unfold_task, &j);
    j.chunk = row_chunk(w->m, threads);
    mpd__tpool_run(ex->pool, ceil_div(w->m, j.chunk), row_task, &j);
}

void mpd__conv_i8(const mpd_layer *l, const mpd__conv_i8_weights *w, const int8_t *x8,
                  mpd_qparams xq, float *y, int8_t *y8, float inv_out, const mpd__cpu_exec *ex)
{
    conv_i8(l, w, x8, NULL, xq, y, y8, inv_out, ex);
}

void mpd__conv_i8_centred(const mpd_layer *l, const mpd__conv_i8_weights *w, const float *xc,
                          mpd_qparams xq, float *y, int8_t *y8, float inv_out,
                          const mpd__cpu_exec *ex)
{
    conv_i8(l, w, NULL, xc, xq, y, y8, inv_out, ex);
}

void mpd__centre_hwc_to_chw(const int8_t *q, int c, int hw, int32_t zero, float *x, int p0,
                            int p1)
{
    for (int ch = 0; ch < c; ch++) {
        float *dst = x + (size_t)ch * hw;
        for (int i = p0; i < p1; i++)
            dst[i] = (float)(q[(size_t)i * c + ch] - zero);
    }
}

void mpd__quantize_centred(const float *x, size_t n, mpd_qparams p, float *q)
{
    float inv = 1.f / p.scale;
    for (size_t i = 0; i < n; i++)
        q[i] = (float)(mpd_q_quantize_fast(x[i], inv, p.zero) - p.zero);
}

/* The column tasks [0, blocks) of j on one thread, through the int8
 * GEMM (run_int8: no centred input) or the fp32 one (run_fp32). */
typedef struct {
    i8_job j;
    int blocks;
    const float *xc;
} columns_job;

static void run_columns(columns_job *c, const float *xc)
{
    c->j.xc = xc;
    for (int t = 0; t < c->blocks; t++)
        column_task(&c->j, t, 0);
}

static void run_int8(void *p)
{
    run_columns(p, NULL);
}

static void run_fp32(void *p)
{
    columns_job *c = p;
    run_columns(c, c->xc);
}

int mpd__conv_i8_choose(const mpd_layer *l, mpd__conv_i8_weights *w, int threads, int int8_out,
                        const char *force)
{
    free(w->wf);
    w->wf = NULL;
    if (!mpd__conv_i8_f32_exact(l, w->scheme) || !split_columns(l, threads) ||
        (force && !strcmp(force, "int8")))
        return 0;
    int c = l->in_c, ks = l->u.conv.size * l->u.conv.size;
    w->wf = malloc((size_t)w->m * w->k * sizeof(float));
    if (!w->wf)
        return MPD_ENOMEM;
    /* Back to darknet's [c][ky][kx] order, the order of the fp32 unfold. */
    for (int o = 0; o < w->m; o++)
        for (int ch = 0; ch < c; ch++)
            for (int t = 0; t < ks; t++)
                w->wf[(size_t)o * w->k + (size_t)ch * ks + t] =
                    (float)(w->w[(size_t)o * w->kp + (size_t)t * c + ch] - w->w_zero);
    if (force && !strcmp(force, "fp32"))
        return 0;
    /* A sample of the layer: its first 4 column blocks, each kernel with
     * its own input, made up (the time does not depend on the values). */
    int n = l->out_h * l->out_w, blocks = n / COL_BLOCK < 4 ? n / COL_BLOCK : 4;
    size_t in = (size_t)c * l->in_h * l->in_w, out = (size_t)w->m * blocks * COL_BLOCK;
    int8_t *x8 = malloc(in);
    float *xc = malloc(in * sizeof(float));
    void *y = malloc(out * (int8_out ? 1 : sizeof(float)));
    float *ws = malloc(mpd__conv_i8_ws_worker(l, threads));
    float *scale = malloc((size_t)w->m * sizeof(float));
    int rc = MPD_ENOMEM;
    if (x8 && xc && y && ws && scale) {
        for (size_t i = 0; i < in; i++) {
            x8[i] = (int8_t)((i * 2654435761u >> 13) % 255 - 127);
            xc[i] = x8[i];
        }
        for (int o = 0; o < w->m; o++)
            scale[o] = w->w_scale[o] * 0.01f;
        mpd__cpu_exec ex = {.ws = &ws};
        i8_job j = {.l = l, .w = w, .x8 = x8, .xq = {0.01f, 0}, .inv_out = 1.f, .ex = &ex,
                    .n = blocks * COL_BLOCK, .chunk = COL_BLOCK, .scale = scale};
        if (int8_out)
            j.y8 = y;
        else
            j.y = y;
        columns_job c = {.j = j, .blocks = blocks, .xc = xc};
        double t_i8, t_f32;
        mpd__time_in_turn(run_int8, run_fp32, &c, &t_i8, &t_f32);
        if (t_f32 >= t_i8) {
            free(w->wf);
            w->wf = NULL;
        }
        rc = 0;
    }
    free(x8);
    free(xc);
    free(y);
    free(ws);
    free(scale);
    if (rc) {
        free(w->wf);
        w->wf = NULL;
    }
    return rc;
}
