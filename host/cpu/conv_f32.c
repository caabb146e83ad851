/* fp32 convolution on the CPU: im2col in column blocks + OpenBLAS sgemm,
 * then bias and activation in one pass over the output. */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "blas.h"
#include "cpu_kernels.h"
#include "gemm_f16.h"

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
        /* Output columns ox in [lo, hi) read inside the input row. */
        int lo, hi;
        if (stride == 1) {
            lo = pad - kx > 0 ? pad - kx : 0;
            hi = w + pad - kx < out_w ? w + pad - kx : out_w;
        } else {
            lo = (pad - kx + stride - 1) / stride;
            if (pad - kx <= 0)
                lo = 0;
            hi = w - 1 + pad - kx < 0 ? 0 : (w - 1 + pad - kx) / stride + 1;
            if (hi > out_w)
                hi = out_w;
        }
        for (int j = col0; j < col_end;) {
            /* One output row segment [ox, ox + seg) at a time: same input row. */
            int seg = out_w - ox;
            if (seg > col_end - j)
                seg = col_end - j;
            int iy = oy * stride + ky - pad;
            if (iy < 0 || iy >= h || hi <= lo) {
                memset(dst, 0, (size_t)seg * sizeof(float));
            } else {
                const float *srow = src + (size_t)iy * w;
                int shift = kx - pad; /* input column of output column 0 */
                int end = ox + seg;
                int a = ox > lo ? ox : lo, b = end < hi ? end : hi;
                if (a >= b) {
                    memset(dst, 0, (size_t)seg * sizeof(float));
                } else {
                    for (int t = ox; t < a; t++)
                        dst[t - ox] = 0.f;
                    if (stride == 1) {
                        memcpy(dst + (a - ox), srow + a + shift, (size_t)(b - a) * sizeof(float));
                    } else {
                        for (int t = a; t < b; t++)
                            dst[t - ox] = srow[t * stride + shift];
                    }
                    for (int t = b; t < end; t++)
                        dst[t - ox] = 0.f;
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

/* logistic(v) = 1 / (1 + e^-v), with e^-v computed in float arithmetic
 * the compiler vectorises (libm's expf is a call per value, and [yolo]
 * layers take it on 43k and 172k values a pass): -v = k ln2 + r with
 * |r| <= ln2 / 2 (ln2 in two parts, Cody-Waite), e^r by its Taylor
 * polynomial to r^7 (truncation below 2^-29 relative), and 2^k built in
 * the exponent bits. -v is clamped to [-87, 88], so 2^k stays normal: the
 * results there are 1 and 6.1e-39 where the true ones are closer to 1 and
 * 0. Within 4 ulp of the exact logistic elsewhere (test_layers checks a
 * sweep over [-100, 100] and the range reduction's switching points).
 * On x86 it is built for AVX-512 and AVX2 too, chosen on the first call
 * (not by an ifunc, whose resolver runs before ThreadSanitizer's runtime
 * is up): the same operations in the same order (ISO C: no contraction
 * into FMAs), so the same bits at 16 or 8 values a step instead of 4. */
static inline __attribute__((always_inline)) void logistic(const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = -x[i];
        v = v < -87.f ? -87.f : v > 88.f ? 88.f : v;
        float k = floorf(v * 1.44269504f + .5f);
        float r = (v - k * .693145752f) - k * 1.42860677e-6f;
        float p = 1.f / 5040;
        p = p * r + 1.f / 720;
        p = p * r + 1.f / 120;
        p = p * r + 1.f / 24;
        p = p * r + 1.f / 6;
        p = p * r + .5f;
        p = p * r + 1.f;
        p = p * r + 1.f;
        int32_t bits = ((int32_t)k + 127) << 23;
        float scale;
        memcpy(&scale, &bits, sizeof(scale));
        y[i] = 1.f / (1.f + p * scale);
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) static void logistic_avx512(const float *x, float *y, size_t n)
{
    logistic(x, y, n);
}

__attribute__((target("avx2"))) static void logistic_avx2(const float *x, float *y, size_t n)
{
    logistic(x, y, n);
}
#endif

void mpd__logistic_f32(const float *x, float *y, size_t n)
{
#if defined(__x86_64__) && defined(__GNUC__)
    static _Atomic int isa = -1; /* 2: AVX-512F, 1: AVX2, 0: neither */
    int i = atomic_load_explicit(&isa, memory_order_relaxed);
    if (i < 0) {
        i = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
        atomic_store_explicit(&isa, i, memory_order_relaxed);
    }
    if (i == 2) {
        logistic_avx512(x, y, n);
        return;
    }
    if (i == 1) {
        logistic_avx2(x, y, n);
        return;
    }
#endif
    logistic(x, y, n);
}

void mpd__activate_f32(float *x, size_t n, mpd_act act)
{
    if (act == MPD_ACT_LINEAR)
        return;
    if (act == MPD_ACT_LOGISTIC) {
        mpd__logistic_f32(x, x, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        x[i] = act1(x[i], act);
}

/* Bias + activation over a channels x n block whose rows are ld apart. */
static void bias_act_strided(float *y, const float *bias, int channels, size_t n, size_t ld,
                             mpd_act act)
{
    for (int o = 0; o < channels; o++) {
        float b = bias[o], *p = y + (size_t)o * ld;
        switch (act) {
        case MPD_ACT_LEAKY:
            /* leaky(v) = max(v, 0.1 v) for a slope below 1: same values as
             * darknet's branch, and it compiles to a vector max. */
            for (size_t i = 0; i < n; i++) {
                float v = p[i] + b, s = .1f * v;
                p[i] = v > s ? v : s;
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

void mpd__bias_act_f32(float *y, const float *bias, int channels, size_t n, mpd_act act)
{
    bias_act_strided(y, bias, channels, n, n, act);
}

static int is_pointwise(const mpd_layer *l)
{
    const mpd_conv *cv = &l->u.conv;
    return cv->size == 1 && cv->stride == 1 && cv->pad == 0;
}

/* Column blocks: large enough for sgemm to run near its peak, small enough
 * that a worker's unfolded block stays near its L2 cache: at most COL_BLOCK
 * columns and COL_BYTES of unfolded input (deep layers get narrower
 * blocks), which also bounds each worker's scratch. */
enum { COL_BLOCK = 2048 };
#define COL_BYTES ((size_t)2 << 20)

static int col_block(const mpd_layer *l)
{
    size_t k = (size_t)l->in_c * l->u.conv.size * l->u.conv.size;
    size_t cols = COL_BYTES / (k * sizeof(float));
    return cols >= COL_BLOCK ? COL_BLOCK : cols < 256 ? 256 : (int)cols;
}

/* The shared unfolded matrix (deep layers with few columns: every worker
 * multiplies its rows of W by the whole of it) holds at most this many
 * bytes; wider ones are unfolded and multiplied a column range at a time.
 * It bounds what each engine holds (yolov3-tiny's layer 21: 9 MiB whole). */
#define UNFOLD_BYTES ((size_t)4 << 20)

/* Columns of one shared unfolding of l, near-equal ranges. */
static int unfold_cols(const mpd_layer *l)
{
    size_t k = (size_t)l->in_c * l->u.conv.size * l->u.conv.size, n = (size_t)l->out_h * l->out_w;
    size_t cap = UNFOLD_BYTES / (k * sizeof(float)), ranges;
    if (cap < 64)
        cap = 64;
    if (cap >= n)
        return (int)n;
    ranges = (n + cap - 1) / cap;
    return (int)((n + ranges - 1) / ranges);
}

/* Column split when every worker gets at least one full block. */
static int split_columns(const mpd_layer *l, int threads)
{
    return l->out_h * l->out_w >= threads * COL_BLOCK;
}

size_t mpd__conv_ws_worker(const mpd_layer *l, int threads)
{
    if (is_pointwise(l) || !split_columns(l, threads))
        return 0;
    return (size_t)l->in_c * l->u.conv.size * l->u.conv.size * (size_t)col_block(l);
}

size_t mpd__conv_ws_shared(const mpd_layer *l, int threads)
{
    if (is_pointwise(l) || split_columns(l, threads))
        return 0;
    return (size_t)l->in_c * l->u.conv.size * l->u.conv.size * (size_t)unfold_cols(l);
}

typedef struct {
    const mpd_layer *l;
    const float *x;
    float *y;
    const mpd__cpu_exec *ex;
    int m, n, k;
    int chunk; /* columns (column split), channels (unfold) or rows (row split) */
    int col0, ncols; /* unfold and row split: the column range unfolded */
    const uint16_t *a16; /* packed weights of mpd__conv_f16 (or, with bf16,
                            mpd__conv_bf16); NULL: sgemm */
    int bf16;
} conv_job;

/* Rows [m0, m0 + mb) of the layer's output block: W B, in half or bf16
 * arithmetic where the job has packed weights (m0 is then a multiple of
 * 8: a panel's first row). */
static void gemm(const conv_job *j, int m0, int mb, int nb, const float *b, int ldb, float *y)
{
#ifdef MPD_HAVE_F16_ARITH
    if (j->a16) {
        size_t panel = j->bf16 ? mpd__bf16_packed_size(8, j->k) : mpd__f16_packed_size(8, j->k);
        const uint16_t *a = j->a16 + (size_t)(m0 / 8) * panel;
#ifdef MPD_HAVE_BF16_ARITH
        if (j->bf16) {
            mpd__gemm_bf16(mb, nb, j->k, a, b, ldb, y, j->n);
            return;
        }
#endif
        mpd__gemm_f16(mb, nb, j->k, a, b, ldb, y, j->n);
        return;
    }
#endif
    mpd__blas_sgemm(mb, nb, j->k, j->l->u.conv.weights + (size_t)m0 * j->k, j->k, b, ldb, y, j->n);
}

static void column_task(void *p, int task, int worker)
{
    const conv_job *j = p;
    const mpd_conv *cv = &j->l->u.conv;
    int j0 = task * j->chunk;
    int nb = j->n - j0 < j->chunk ? j->n - j0 : j->chunk;
    const float *b;
    int ldb;
    if (is_pointwise(j->l)) {
        b = j->x + j0;
        ldb = j->n;
    } else {
        mpd__im2col_f32(j->x, j->l->in_c, j->l->in_h, j->l->in_w, cv->size, cv->stride, cv->pad,
                        j->l->out_h, j->l->out_w, j0, nb, j->ex->ws[worker]);
        b = j->ex->ws[worker];
        ldb = nb;
    }
    gemm(j, 0, j->m, nb, b, ldb, j->y + j0);
    /* The epilogue runs on the block while it is still in cache. */
    bias_act_strided(j->y + j0, cv->bias, j->m, (size_t)nb, (size_t)j->n, cv->act);
}

static void unfold_task(void *p, int task, int worker)
{
    (void)worker;
    const conv_job *j = p;
    const mpd_layer *l = j->l;
    const mpd_conv *cv = &l->u.conv;
    int c0 = task * j->chunk;
    int nc = l->in_c - c0 < j->chunk ? l->in_c - c0 : j->chunk;
    size_t rows0 = (size_t)c0 * cv->size * cv->size;
    mpd__im2col_f32(j->x + (size_t)c0 * l->in_h * l->in_w, nc, l->in_h, l->in_w, cv->size,
                    cv->stride, cv->pad, l->out_h, l->out_w, j->col0, j->ncols,
                    j->ex->shared + rows0 * j->ncols);
}

static void row_task(void *p, int task, int worker)
{
    (void)worker;
    const conv_job *j = p;
    const mpd_conv *cv = &j->l->u.conv;
    int m0 = task * j->chunk;
    int mb = j->m - m0 < j->chunk ? j->m - m0 : j->chunk;
    const float *b = is_pointwise(j->l) ? j->x + j->col0 : j->ex->shared;
    int ldb = is_pointwise(j->l) ? j->n : j->ncols;
    float *y = j->y + (size_t)m0 * j->n + j->col0;
    gemm(j, m0, mb, j->ncols, b, ldb, y);
    bias_act_strided(y, cv->bias + m0, mb, (size_t)j->ncols, (size_t)j->n, cv->act);
}

static int ceil_div(int a, int b)
{
    return (a + b - 1) / b;
}

static void conv_run(const mpd_layer *l, const uint16_t *a16, int bf16, const float *x, float *y,
                     const mpd__cpu_exec *ex)
{
    const mpd_conv *cv = &l->u.conv;
    int threads = mpd__tpool_threads(ex->pool);
    conv_job j = {.l = l, .x = x, .y = y, .ex = ex, .m = cv->filters, .a16 = a16, .bf16 = bf16};
    j.n = l->out_h * l->out_w;
    j.k = l->in_c * cv->size * cv->size;
    if (split_columns(l, threads)) {
        /* A multiple of the thread count of near-equal blocks. */
        int ntasks = threads * ceil_div(j.n, threads * col_block(l));
        j.chunk = ceil_div(j.n, ntasks);
        mpd__tpool_run(ex->pool, ceil_div(j.n, j.chunk), column_task, &j);
        return;
    }
    int cols = is_pointwise(l) ? j.n : unfold_cols(l);
    for (j.col0 = 0; j.col0 < j.n; j.col0 += cols) {
        j.ncols = j.n - j.col0 < cols ? j.n - j.col0 : cols;
        if (!is_pointwise(l)) {
            int tasks = threads * 2 < l->in_c ? threads * 2 : l->in_c;
            j.chunk = ceil_div(l->in_c, tasks);
            mpd__tpool_run(ex->pool, ceil_div(l->in_c, j.chunk), unfold_task, &j);
        }
        /* Rows in multiples of 16 so each worker's slice of W stays aligned. */
        j.chunk = ceil_div(ceil_div(j.m, threads), 16) * 16;
        mpd__tpool_run(ex->pool, ceil_div(j.m, j.chunk), row_task, &j);
    }
}

void mpd__conv_f32(const mpd_layer *l, const float *x, float *y, const mpd__cpu_exec *ex)
{
    conv_run(l, NULL, 0, x, y, ex);
}

void mpd__conv_f16(const mpd_layer *l, const mpd_half *a16, const float *x, float *y,
                   const mpd__cpu_exec *ex)
{
    conv_run(l, a16, 0, x, y, ex);
}

void mpd__conv_bf16(const mpd_layer *l, const mpd_bf16 *a16, const float *x, float *y,
                    const mpd__cpu_exec *ex)
{
    conv_run(l, a16, 1, x, y, ex);
}
