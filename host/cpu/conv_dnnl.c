/* conv_dnnl.c - see conv_dnnl.h. oneDNN 2.x C API (Debian's 2.6). */
#include "conv_dnnl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine.h"
#include "../internal.h"
#include "cpu_kernels.h"

#if !defined(MPD_NO_DNNL) && defined(__has_include)
#if __has_include(<dnnl.h>)
#define MPD_CONV_DNNL 1
#include <dlfcn.h>
#include <dnnl.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <pthread.h>
#include <stdatomic.h>
#endif
#endif

#ifdef MPD_CONV_DNNL

/* One band of the output, run by one pool worker: rows [r0, r1) of all
 * channels, or (channel bands) channels [c0, c1) of all rows. */
typedef struct {
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src, wei, dst, bias;
    void *weights;  /* in this primitive's layout; band 0's unless it differs */
    size_t scratch; /* per worker: [xw][yw] (Winograd) then the scratchpad */
    size_t pad;     /* of which the primitive's scratchpad */
    size_t xs, ys;  /* of which xw's and yw's (64-byte aligned; 0 unless Winograd) */
    /* Winograd (rin set): the primitive reads and writes oneDNN's blocked
     * layouts xw and yw, in the worker's scratch; rin reorders the band's
     * input rows into xw, rout yw into the band's output rows, then the
     * activation is applied (oneDNN takes no post-op there). */
    dnnl_primitive_t rin, rout;
    dnnl_memory_desc_t xw, yw;
    int r0, r1, i0; /* its output rows [r0, r1) and first input row */
    int c0, c1;     /* its output channels [c0, c1) */
} band;

struct mpd__dnnl_conv {
    band *b;
    int nb;
    int cbands;      /* bands of channels (each written apart, then copied in) */
    int out_w;       /* output columns */
    size_t out_elem; /* bytes per output value */
    dnnl_memory_desc_t bias_md;
    float *bias;            /* int8: over the output scale (oneDNN 2.x adds it before scaling) */
    size_t in_row, out_row; /* bytes per input and output row (HWC) */
    mpd_qparams xq;         /* the input's, baked into the scales */
    mpd_act after;          /* applied after the primitive, which could not fuse it (0: none) */
    char name[200];
};

static dnnl_engine_t eng;
static void (*omp_set_threads)(int);
static int (*omp_get_threads)(void);
static pthread_once_t once = PTHREAD_ONCE_INIT, omp_once = PTHREAD_ONCE_INIT;

static void init(void)
{
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success)
        eng = NULL;
}

static void omp_init(void)
{
    /* The OpenMP runtime oneDNN was linked against (POSIX way to turn
     * dlsym's void * into a function pointer). */
    *(void **)&omp_set_threads = dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    *(void **)&omp_get_threads = dlsym(RTLD_DEFAULT, "omp_get_max_threads");
    if (!omp_set_threads || !omp_get_threads)
        omp_set_threads = NULL, omp_get_threads = NULL;
}

int mpd__dnnl_conv_available(void)
{
    pthread_once(&once, init);
    return eng != NULL;
}

int mpd__dnnl_bf16_native(void)
{
#if defined(__x86_64__)
    /* CPUID leaf 7: AVX512-BF16 is subleaf 1 EAX bit 5, AMX-BF16 subleaf 0
     * EDX bit 22 (asked directly: not every compiler's
     * __builtin_cpu_supports knows them). Whether the OS enables their
     * state, oneDNN checks when it makes a primitive. */
    unsigned a, b, c, d, bf16 = 0;
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d))
        bf16 |= a & (1u << 5);
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d))
        bf16 |= d & (1u << 22);
    return mpd__dnnl_conv_available() && bf16;
#else
    return 0;
#endif
}

int mpd__omp_one(void)
{
    pthread_once(&omp_once, omp_init);
    if (!omp_get_threads)
        return 0;
    int old = omp_get_threads();
    if (old != 1)
        omp_set_threads(1);
    return old;
}

void mpd__omp_restore(int old)
{
    if (omp_set_threads && old > 1)
        omp_set_threads(old);
}

static int dims4(dnnl_memory_desc_t *md, int64_t a, int64_t b, int64_t c, int64_t d,
                 dnnl_data_type_t t, dnnl_format_tag_t tag)
{
    dnnl_dims_t dims = {a, b, c, d};
    return dnnl_memory_desc_init_by_tag(md, 4, dims, t, tag) == dnnl_success;
}

/* A one-off reorder of p (md from) into a new buffer of md to, or NULL. */
static void *reorder_new(const dnnl_memory_desc_t *from, const void *p,
                         const dnnl_memory_desc_t *to)
{
    size_t n = dnnl_memory_desc_get_size(to);
    void *out = aligned_alloc(64, mpd__align64(n));
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t r = NULL;
    dnnl_memory_t ms = NULL, md = NULL;
    dnnl_stream_t s = NULL;
    int old = mpd__omp_one();
    int ok = out &&
             dnnl_reorder_primitive_desc_create(&pd, from, eng, to, eng, NULL) == dnnl_success &&
             dnnl_primitive_create(&r, pd) == dnnl_success &&
             dnnl_memory_create(&ms, from, eng, (void *)p) == dnnl_success &&
             dnnl_memory_create(&md, to, eng, out) == dnnl_success &&
             dnnl_stream_create(&s, eng, dnnl_stream_default_flags) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, md}};
        ok = dnnl_primitive_execute(r, s, 2, args) == dnnl_success &&
             dnnl_stream_wait(s) == dnnl_success;
    }
    mpd__omp_restore(old);
    if (s)
        dnnl_stream_destroy(s);
    if (ms)
        dnnl_memory_destroy(ms);
    if (md)
        dnnl_memory_destroy(md);
    if (r)
        dnnl_primitive_destroy(r);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (!ok) {
        free(out);
        return NULL;
    }
    return out;
}

/* A reorder primitive from md from to md to, or NULL. */
static dnnl_primitive_t reorder_prim(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to)
{
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t r = NULL;
    if (dnnl_reorder_primitive_desc_create(&pd, from, eng, to, eng, NULL) == dnnl_success &&
        dnnl_primitive_create(&r, pd) != dnnl_success)
        r = NULL;
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return r;
}

/* Any refusal: the layer runs on our kernels. */
#define TRY(x)                                                                                     \
    if (!(x))                                                                                      \
    goto done

/* What the primitives of one layer are made of. */
typedef struct {
    const char *prec;                /* "int8", "bf16": for the name */
    int m;                           /* output channels */
    dnnl_data_type_t xt, wt, yt;     /* input, weights, output */
    const dnnl_memory_desc_t *wours; /* the weights as we hold them */
    const void *w;
    const float *scale; /* per output channel, or NULL */
    int clip;           /* clip to our int8 codes */
    int wino;           /* fp32 Winograd (no post-ops, blocked layouts) */
} spec;

/* Band t's primitive: output rows [r0, r1) of channels [c0, c1) from the
 * input rows they read. */
static int make_band(mpd__dnnl_conv *d, band *bd, const mpd_layer *l, const spec *sp, int r0,
                     int r1, int c0, int c1)
{
    const mpd_conv *cv = &l->u.conv;
    int k = cv->size, s = cv->stride, p = cv->pad;
    int top = r0 * s - p, i0 = top > 0 ? top : 0;
    int i1 = (r1 - 1) * s - p + k < l->in_h ? (r1 - 1) * s - p + k : l->in_h;
    int64_t pt = i0 - top, pb = (int64_t)(r1 - r0 - 1) * s + k - (i1 - i0) - pt;
    /* darknet's output width leaves (out - 1) s + k - in - p on the right
     * (negative: input columns no window reaches). */
    int64_t pr = (int64_t)(l->out_w - 1) * s + k - l->in_w - p;
    dnnl_memory_desc_t wany, wsub;
    dnnl_dims_t strides = {s, s}, pad_l = {pt, p}, pad_r = {pb, pr};
    dnnl_convolution_desc_t cdesc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int rc = MPD_EUNSUP;
    const int m = c1 - c0;
    dnnl_dims_t bdims = {m}, wdims = {m, l->in_c, k, k}, woff = {c0, 0, 0, 0};
    bd->r0 = r0;
    bd->r1 = r1;
    bd->i0 = i0;
    bd->c0 = c0;
    bd->c1 = c1;
    TRY(dims4(&bd->src, 1, l->in_c, i1 - i0, l->in_w, sp->xt, dnnl_nhwc));
    TRY(dims4(&wany, m, l->in_c, k, k, sp->wt, dnnl_format_tag_any));
    TRY(dims4(&bd->dst, 1, m, r1 - r0, l->out_w, sp->yt, dnnl_nhwc));
    TRY(dnnl_memory_desc_init_by_tag(&bd->bias, 1, bdims, dnnl_f32, dnnl_a) == dnnl_success);
    /* Winograd's weight reorders (2.6) ignore a submemory's offset: its
     * bands of channels take theirs as a tensor of their own (fp32, oihw:
     * a band's filters are contiguous). */
    const void *wsrc = sp->w;
    if (sp->wino) {
        TRY(dims4(&wsub, m, l->in_c, k, k, sp->wt, dnnl_oihw));
        wsrc = (const float *)sp->w + (size_t)c0 * l->in_c * k * k;
    } else {
        TRY(dnnl_memory_desc_init_submemory(&wsub, sp->wours, wdims, woff) == dnnl_success);
    }
    dnnl_memory_desc_t xany, yany;
    TRY(dims4(&xany, 1, l->in_c, i1 - i0, l->in_w, sp->xt, dnnl_format_tag_any));
    TRY(dims4(&yany, 1, m, r1 - r0, l->out_w, sp->yt, dnnl_format_tag_any));
    TRY(dnnl_convolution_forward_desc_init(
            &cdesc, dnnl_forward_inference,
            sp->wino ? dnnl_convolution_winograd : dnnl_convolution_direct,
            sp->wino ? &xany : &bd->src, &wany, &bd->bias, sp->wino ? &yany : &bd->dst, strides,
            pad_l, pad_r) == dnnl_success);
    TRY(dnnl_primitive_attr_create(&attr) == dnnl_success);
    TRY(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success);
    /* Per output channel (mask bit 1). */
    if (sp->scale)
        TRY(dnnl_primitive_attr_set_output_scales(attr, m, 1 << 1, sp->scale + c0) == dnnl_success);
    TRY(dnnl_post_ops_create(&po) == dnnl_success);
    /* On the scaled value: leaky(v / s) = leaky(v) / s for s > 0. */
    if (cv->act == MPD_ACT_LEAKY && !sp->wino)
        TRY(dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_relu, .1f, 0.f) == dnnl_success);
    if (cv->act == MPD_ACT_RELU && !sp->wino)
        TRY(dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_relu, 0.f, 0.f) == dnnl_success);
    /* Our codes stop at -127; oneDNN would saturate at -128. */
    if (sp->clip)
        TRY(dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_clip, (float)MPD_QMIN,
                                         (float)MPD_QMAX) == dnnl_success);
    TRY(dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success);
    int old = mpd__omp_one();
    int made = dnnl_primitive_desc_create(&pd, &cdesc, attr, eng, NULL) == dnnl_success &&
               dnnl_primitive_create(&bd->prim, pd) == dnnl_success;
    mpd__omp_restore(old);
    TRY(made);
    bd->wei = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *spmd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    bd->pad = spmd ? dnnl_memory_desc_get_size(spmd) : 0;
    bd->scratch = bd->pad;
    if (sp->wino) {
        bd->xw = *dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
        bd->yw = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
        TRY((bd->rin = reorder_prim(&bd->src, &bd->xw)) &&
            (bd->rout = reorder_prim(&bd->yw, &bd->dst)));
        bd->xs = mpd__align64(dnnl_memory_desc_get_size(&bd->xw));
        bd->ys = mpd__align64(dnnl_memory_desc_get_size(&bd->yw));
        bd->scratch += bd->xs + bd->ys;
    }
    if (bd == d->b) {
        const char *impl = NULL;
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
        snprintf(d->name, sizeof(d->name), "%s oneDNN conv (%s)", sp->prec, impl ? impl : "?");
    }
    if (bd != d->b && c0 == d->b[0].c0 && dnnl_memory_desc_equal(&bd->wei, &d->b[0].wei)) {
        bd->weights = d->b[0].weights;
    } else {
        bd->weights = reorder_new(&wsub, wsrc, &bd->wei);
        TRY(bd->weights);
    }
    rc = 0;
done:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (po)
        dnnl_post_ops_destroy(po);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    return rc;
}

static int act_ok(const mpd_layer *l)
{
    mpd_act a = l->u.conv.act;
    return a == MPD_ACT_LEAKY || a == MPD_ACT_LINEAR || a == MPD_ACT_RELU;
}

static size_t dt_bytes(dnnl_data_type_t t)
{
    return t == dnnl_f32 ? 4 : t == dnnl_bf16 ? 2 : 1;
}

/* Output bytes a band aims at where a pool follows in its bands: within
 * a core's L2 (1 to 2 MiB on server x86 cores), so the pool reads what
 * the band just wrote from cache. On the Xeon the README measures
 * (2 MiB L2), bf16_all's layers 0-3 at 1 thread took 3.6 + 1.2 ms in
 * bands of 128 KiB, 2.9 + 1.0 at 512 KiB, 2.6 + 0.9 at 2 MiB, and
 * 3.7 + 1.7 as one band pooled after it. */
#define POOL_BAND_BYTES (1u << 20)

/* A new conv of layer l with bias d->bias (set by the caller, who gets d
 * back in *out unless this fails: then it is freed). Bands: one per
 * thread; with pool2 (the caller pools each band's rows 2 x 2 as it
 * ends), bands of an even number of rows, of about POOL_BAND_BYTES, as
 * many as a multiple of the threads. Without pool2, bands of channels
 * (16 at a time) where rows split less evenly: 13 rows over 2 threads
 * leave one 7, 54 % of the work, where 1024 channels split in halves. */
static int create(mpd__dnnl_conv *d, const mpd_layer *l, const spec *sp, int threads, int pool2,
                  mpd__dnnl_conv **out)
{
    int nb = threads < l->out_h ? threads : l->out_h, rc = MPD_EUNSUP;
    dnnl_dims_t bdims = {sp->m};
    d->in_row = (size_t)l->in_w * l->in_c * dt_bytes(sp->xt);
    d->out_row = (size_t)l->out_w * sp->m * dt_bytes(sp->yt);
    d->out_w = l->out_w;
    d->out_elem = dt_bytes(sp->yt);
    int pairs = l->out_h / 2, even = pool2 && l->out_h % 2 == 0 && pairs > 0;
    int blocks = (sp->m + 15) / 16, bmost = (blocks + threads - 1) / threads * 16;
    d->cbands = !pool2 && threads > 1 && blocks >= threads &&
                (double)(bmost < sp->m ? bmost : sp->m) / sp->m <
                    (double)((l->out_h + threads - 1) / threads) / l->out_h;
    if (d->cbands)
        nb = threads;
    if (even) {
        int per = (int)(POOL_BAND_BYTES / (2 * d->out_row)); /* row pairs per band */
        per = per > 0 ? per : 1;
        nb = (pairs + per - 1) / per;
        nb = (nb + threads - 1) / threads * threads;
        nb = nb < pairs ? nb : pairs;
    }
    if (!(d->b = calloc((size_t)(nb > 0 ? nb : 1), sizeof(band)))) {
        rc = MPD_ENOMEM;
    } else if (dnnl_memory_desc_init_by_tag(&d->bias_md, 1, bdims, dnnl_f32, dnnl_a) ==
               dnnl_success) {
        rc = 0;
        for (int t = 0; !rc && t < nb; t++) {
            int c1 = 16 * (blocks * (t + 1) / nb);
            rc = d->cbands ? make_band(d, &d->b[t], l, sp, 0, l->out_h, 16 * (blocks * t / nb),
                                       c1 < sp->m ? c1 : sp->m)
                 : even    ? make_band(d, &d->b[t], l, sp, 2 * (pairs * t / nb),
                                       2 * (pairs * (t + 1) / nb), 0, sp->m)
                        : make_band(d, &d->b[t], l, sp, l->out_h * t / nb, l->out_h * (t + 1) / nb,
                                    0, sp->m);
            if (!rc || d->b[t].prim)
                d->nb = t + 1; /* what it holds, for mpd__dnnl_conv_free */
        }
    }
    if (rc) {
        mpd__dnnl_conv_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

int mpd__dnnl_conv_i8_create(const mpd_layer *l, const mpd__conv_i8_weights *w, mpd_qparams xq,
                             int out8, float out_scale, int threads, int pool2,
                             mpd__dnnl_conv **out)
{
    *out = NULL;
    const mpd_conv *cv = &l->u.conv;
    if (!mpd__dnnl_conv_available() || w->scheme != MPD_SCHEME_SYMMETRIC || !act_ok(l))
        return MPD_EUNSUP;
    mpd__dnnl_conv *d = calloc(1, sizeof(*d));
    float *scale = malloc((size_t)w->m * sizeof(float));
    if (!d || !scale || !(d->bias = malloc((size_t)w->m * sizeof(float)))) {
        free(scale);
        mpd__dnnl_conv_free(d);
        return MPD_ENOMEM;
    }
    d->xq = xq;
    /* dst = scale (acc + bias), then the post-ops. */
    for (int o = 0; o < w->m; o++) {
        float sc = w->w_scale[o] * xq.scale;
        scale[o] = out8 ? sc / out_scale : sc;
        d->bias[o] = cv->bias[o] / sc;
    }
    int k = cv->size, rc = MPD_EUNSUP;
    dnnl_dims_t wd = {w->m, l->in_c, k, k};
    /* Ours: [filter][ky][kx][channel], rows kp apart. */
    dnnl_dims_t ws = {w->kp, 1, (int64_t)k * l->in_c, l->in_c};
    dnnl_memory_desc_t wours;
    spec sp = {"int8", w->m, dnnl_s8, dnnl_s8, out8 ? dnnl_s8 : dnnl_f32,
               &wours, w->w, scale,   out8,    0};
    if (dnnl_memory_desc_init_by_strides(&wours, 4, wd, dnnl_s8, ws) == dnnl_success)
        rc = create(d, l, &sp, threads, pool2, out);
    else
        mpd__dnnl_conv_free(d);
    free(scale);
    return rc;
}

/* A floating-point conv: weights w of type t in darknet's order
 * [filter][channel][ky][kx], input of type t, output yt; wino: fp32
 * Winograd. */
static int create_float1(const mpd_layer *l, const char *prec, dnnl_data_type_t t, const void *w,
                         dnnl_data_type_t yt, int threads, int pool2, int wino,
                         mpd__dnnl_conv **out)
{
    *out = NULL;
    const mpd_conv *cv = &l->u.conv;
    if (!mpd__dnnl_conv_available() || !act_ok(l))
        return MPD_EUNSUP;
    mpd__dnnl_conv *d = calloc(1, sizeof(*d));
    if (!d || !(d->bias = malloc((size_t)cv->filters * sizeof(float)))) {
        mpd__dnnl_conv_free(d);
        return MPD_ENOMEM;
    }
    memcpy(d->bias, cv->bias, (size_t)cv->filters * sizeof(float));
    d->after = wino ? cv->act : MPD_ACT_LINEAR;
    int k = cv->size;
    dnnl_dims_t wd = {cv->filters, l->in_c, k, k};
    dnnl_memory_desc_t wours;
    spec sp = {prec, cv->filters, t, t, yt, &wours, w, NULL, 0, wino};
    if (dnnl_memory_desc_init_by_tag(&wours, 4, wd, t, dnnl_oihw) != dnnl_success) {
        mpd__dnnl_conv_free(d);
        return MPD_EUNSUP;
    }
    return create(d, l, &sp, threads, pool2, out);
}

/* oneDNN's fp32 Winograd (F(4x4, 3x3) or F(2x2, 3x3); AVX-512 only), with
 * MPDET_FP32_KERNEL=winograd, on 3 x 3 stride-1 layers of 32 input
 * channels or more, where oneDNN makes one. Faster, and larger: on the
 * Zen 4 the README measures, fp32_all's pass 0.7x the direct one's, its
 * weights (transformed: 16 or 36 values per 9) 69.6 MiB against 33.8, and
 * each thread's scratch 23 MiB more (README, Speed). */
static int wino_wanted(const mpd_layer *l)
{
    const char *e = getenv("MPDET_FP32_KERNEL");
    return e && !strcmp(e, "winograd") && l->u.conv.size == 3 && l->u.conv.stride == 1 &&
           l->in_c >= 32;
}

static int create_float(const mpd_layer *l, const char *prec, dnnl_data_type_t t, const void *w,
                        dnnl_data_type_t yt, int threads, int pool2, mpd__dnnl_conv **out)
{
    int rc = MPD_EUNSUP;
    if (t == dnnl_f32 && yt == dnnl_f32 && wino_wanted(l))
        rc = create_float1(l, prec, t, w, yt, threads, pool2, 1, out);
    if (rc == MPD_EUNSUP)
        rc = create_float1(l, prec, t, w, yt, threads, pool2, 0, out);
    return rc;
}

int mpd__dnnl_conv_bf16_create(const mpd_layer *l, const uint16_t *w, int out16, int threads,
                               int pool2, mpd__dnnl_conv **out)
{
    return create_float(l, "bf16", dnnl_bf16, w, out16 ? dnnl_bf16 : dnnl_f32, threads, pool2, out);
}

int mpd__dnnl_conv_f32_create(const mpd_layer *l, const float *w, const char *label, int threads,
                              int pool2, mpd__dnnl_conv **out)
{
    return create_float(l, label ? label : "fp32", dnnl_f32, w ? w : l->u.conv.weights, dnnl_f32,
                        threads, pool2, out);
}

void mpd__dnnl_conv_free(mpd__dnnl_conv *d)
{
    if (!d)
        return;
    for (int t = 0; t < d->nb; t++) {
        if (d->b[t].prim)
            dnnl_primitive_destroy(d->b[t].prim);
        if (d->b[t].rin)
            dnnl_primitive_destroy(d->b[t].rin);
        if (d->b[t].rout)
            dnnl_primitive_destroy(d->b[t].rout);
        if (t == 0 || d->b[t].weights != d->b[0].weights)
            free(d->b[t].weights);
    }
    free(d->b);
    free(d->bias);
    free(d);
}

const char *mpd__dnnl_conv_name(const mpd__dnnl_conv *d)
{
    return d->name;
}

void mpd__dnnl_conv_name_add(mpd__dnnl_conv *d, const char *s)
{
    size_t n = strlen(d->name);
    snprintf(d->name + n, sizeof(d->name) - n, "%s", s);
}

mpd_qparams mpd__dnnl_conv_input(const mpd__dnnl_conv *d)
{
    return d->xq;
}

/* Bytes of one output pixel of band bd's channels. */
static size_t band_px(const mpd__dnnl_conv *d, const band *bd)
{
    return (size_t)(bd->c1 - bd->c0) * d->out_elem;
}

size_t mpd__dnnl_conv_rows_worker(const mpd__dnnl_conv *d, int own_rows)
{
    size_t most = 0;
    for (int t = 0; (d->cbands || own_rows) && t < d->nb; t++) {
        const band *bd = &d->b[t];
        size_t b = (size_t)(bd->r1 - bd->r0) * d->out_w * band_px(d, bd);
        most = b > most ? b : most;
    }
    return mpd__align64(most);
}

size_t mpd__dnnl_conv_scratch_worker(const mpd__dnnl_conv *d)
{
    size_t most = 0;
    for (int t = 0; t < d->nb; t++)
        most = d->b[t].scratch > most ? d->b[t].scratch : most;
    return mpd__align64(most);
}

size_t mpd__dnnl_conv_bytes(const mpd__dnnl_conv *d)
{
    size_t t = (size_t)d->bias_md.dims[0] * sizeof(float);
    for (int i = 0; i < d->nb; i++)
        if (i == 0 || d->b[i].weights != d->b[0].weights)
            t += dnnl_memory_desc_get_size(&d->b[i].wei);
    return t;
}

typedef struct {
    const mpd__dnnl_conv *d;
    mpd__dnnl_exec *ex;
    const char *x;
    char *y;
    const mpd__dnnl_after *after;
    atomic_int failed;
} run_job;

/* Band `task` on pool worker `worker`, with that worker's stream and
 * scratch. */
static void band_task(void *p, int task, int worker)
{
    run_job *j = p;
    const band *bd = &j->d->b[task];
    mpd__dnnl_exec *ex = j->ex;
    /* src, weights, bias, dst, scratchpad; Winograd: the band's input
     * and output rows too. */
    dnnl_memory_t m[7] = {0};
    dnnl_memory_desc_t spmd;
    dnnl_dims_t spd = {(int64_t)(bd->pad ? bd->pad : 1)};
    char *rows = (j->after && j->after->own_rows) || j->d->cbands
                     ? (char *)ex->rows + worker * ex->rows_each
                     : j->y + bd->r0 * j->d->out_row;
    char *sc = (char *)ex->scratch + worker * ex->scratch_each,
         *xin = (char *)j->x + bd->i0 * j->d->in_row;
    const dnnl_memory_desc_t *mds[7] = {bd->rin ? &bd->xw : &bd->src,
                                        &bd->wei,
                                        &bd->bias,
                                        bd->rin ? &bd->yw : &bd->dst,
                                        &spmd,
                                        &bd->src,
                                        &bd->dst};
    void *h[7] = {bd->rin ? sc : xin,
                  bd->weights,
                  j->d->bias + bd->c0,
                  bd->rin ? sc + bd->xs : rows,
                  sc + bd->xs + bd->ys,
                  xin,
                  rows};
    int n = bd->pad ? 5 : 4;
    int ok = dnnl_memory_desc_init_by_tag(&spmd, 1, spd, dnnl_u8, dnnl_a) == dnnl_success;
    for (int i = 0; ok && i < 7; i++)
        if (i < n || (i >= 5 && bd->rin))
            ok = dnnl_memory_create(&m[i], mds[i], eng, h[i]) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t args[5] = {
            {DNNL_ARG_SRC, m[0]}, {DNNL_ARG_WEIGHTS, m[1]},    {DNNL_ARG_BIAS, m[2]},
            {DNNL_ARG_DST, m[3]}, {DNNL_ARG_SCRATCHPAD, m[4]},
        };
        dnnl_exec_arg_t in[2] = {{DNNL_ARG_FROM, m[5]}, {DNNL_ARG_TO, m[0]}},
                        back[2] = {{DNNL_ARG_FROM, m[3]}, {DNNL_ARG_TO, m[6]}};
        dnnl_stream_t st = ex->streams[worker];
        int old = mpd__omp_one();
        ok = (!bd->rin || dnnl_primitive_execute(bd->rin, st, 2, in) == dnnl_success) &&
             dnnl_primitive_execute(bd->prim, st, n, args) == dnnl_success &&
             (!bd->rout || dnnl_primitive_execute(bd->rout, st, 2, back) == dnnl_success) &&
             dnnl_stream_wait(st) == dnnl_success;
        mpd__omp_restore(old);
    }
    for (int i = 0; i < 7; i++)
        if (m[i])
            dnnl_memory_destroy(m[i]);
    if (ok)
        mpd__activate_f32((float *)rows,
                          (size_t)(bd->r1 - bd->r0) * j->d->out_w * (size_t)(bd->c1 - bd->c0),
                          j->d->after);
    if (!ok) {
        atomic_store(&j->failed, 1);
    } else if (j->d->cbands) { /* its channels of every pixel, into y */
        const mpd__dnnl_conv *d = j->d;
        const size_t each = band_px(d, bd), px = (size_t)(bd->r1 - bd->r0) * d->out_w,
                     stride = d->out_row / d->out_w;
        char *dst = j->y + bd->r0 * d->out_row + (size_t)bd->c0 * d->out_elem;
        for (size_t q = 0; q < px; q++)
            memcpy(dst + q * stride, rows + q * each, each);
    } else if (j->after) { /* its rows, still in this core's cache */
        j->after->fn(j->after->arg, rows, bd->r0, bd->r1);
    }
}

int mpd__dnnl_conv_run(const mpd__dnnl_conv *d, mpd__dnnl_exec *ex, mpd__tpool *pool, const void *x,
                       void *y, const mpd__dnnl_after *after, char *msg, size_t msglen)
{
    int workers = mpd__tpool_threads(pool);
    size_t need = mpd__dnnl_conv_scratch_worker(d);
    if (!ex->streams) {
        ex->streams = calloc((size_t)workers, sizeof(void *));
        if (!ex->streams)
            return mpd__fail(msg, msglen, MPD_ENOMEM, "oneDNN: out of memory");
        ex->nstreams = workers;
        for (int i = 0; i < workers; i++)
            if (dnnl_stream_create((dnnl_stream_t *)&ex->streams[i], eng,
                                   dnnl_stream_default_flags) != dnnl_success)
                return mpd__fail(msg, msglen, MPD_EDEVICE, "oneDNN: cannot create a stream");
    }
    if (ex->scratch_each < need) {
        free(ex->scratch);
        ex->scratch = aligned_alloc(64, need * (size_t)workers);
        ex->scratch_each = ex->scratch ? need : 0;
        if (!ex->scratch)
            return mpd__fail(msg, msglen, MPD_ENOMEM, "oneDNN: out of memory for scratch");
    }
    if (d->cbands && after)
        return mpd__fail(msg, msglen, MPD_EUNSUP, "oneDNN: bands of channels run no epilogue");
    size_t rows = mpd__dnnl_conv_rows_worker(d, after && after->own_rows);
    if (ex->rows_each < rows) {
        free(ex->rows);
        ex->rows = aligned_alloc(64, rows * (size_t)workers);
        ex->rows_each = ex->rows ? rows : 0;
        if (!ex->rows)
            return mpd__fail(msg, msglen, MPD_ENOMEM, "oneDNN: out of memory for a band's rows");
    }
    run_job j = {.d = d, .ex = ex, .x = x, .y = y, .after = after};
    atomic_init(&j.failed, 0);
    mpd__tpool_run(pool, d->nb, band_task, &j);
    return atomic_load(&j.failed) ? mpd__fail(msg, msglen, MPD_EDEVICE, "oneDNN: convolution failed")
                                  : 0;
}

void mpd__dnnl_exec_free(mpd__dnnl_exec *ex)
{
    for (int i = 0; ex->streams && i < ex->nstreams; i++)
        if (ex->streams[i])
            dnnl_stream_destroy(ex->streams[i]);
    free(ex->streams);
    free(ex->scratch);
    free(ex->rows);
    memset(ex, 0, sizeof(*ex));
}

#else /* no oneDNN: our own kernels run every int8 convolution */

int mpd__omp_one(void)
{
    return 0;
}

void mpd__omp_restore(int old)
{
    (void)old;
}

int mpd__dnnl_conv_available(void)
{
    return 0;
}

int mpd__dnnl_bf16_native(void)
{
    return 0;
}

int mpd__dnnl_conv_i8_create(const mpd_layer *l, const mpd__conv_i8_weights *w, mpd_qparams xq,
                             int out8, float out_scale, int threads, int pool2,
                             mpd__dnnl_conv **out)
{
    (void)l, (void)w, (void)xq, (void)out8, (void)out_scale, (void)threads, (void)pool2;
    *out = NULL;
    return MPD_EUNSUP;
}

void mpd__dnnl_conv_free(mpd__dnnl_conv *d)
{
    (void)d;
}

const char *mpd__dnnl_conv_name(const mpd__dnnl_conv *d)
{
    (void)d;
    return "-";
}

void mpd__dnnl_conv_name_add(mpd__dnnl_conv *d, const char *s)
{
    (void)d, (void)s;
}

int mpd__dnnl_conv_bf16_create(const mpd_layer *l, const uint16_t *w, int out16, int threads,
                               int pool2, mpd__dnnl_conv **out)
{
    (void)l, (void)w, (void)out16, (void)threads, (void)pool2;
    *out = NULL;
    return MPD_EUNSUP;
}

int mpd__dnnl_conv_f32_create(const mpd_layer *l, const float *w, const char *label, int threads,
                              int pool2, mpd__dnnl_conv **out)
{
    (void)l, (void)w, (void)label, (void)threads, (void)pool2;
    *out = NULL;
    return MPD_EUNSUP;
}

int mpd__dnnl_conv_run(const mpd__dnnl_conv *d, mpd__dnnl_exec *ex, mpd__tpool *pool, const void *x,
                       void *y, const mpd__dnnl_after *after, char *msg, size_t msglen)
{
    (void)d, (void)ex, (void)pool, (void)x, (void)y, (void)after;
    return mpd__fail(msg, msglen, MPD_EUNSUP, "built without oneDNN");
}

mpd_qparams mpd__dnnl_conv_input(const mpd__dnnl_conv *d)
{
    (void)d;
    return (mpd_qparams){1.f, 0};
}

size_t mpd__dnnl_conv_rows_worker(const mpd__dnnl_conv *d, int own_rows)
{
    (void)d, (void)own_rows;
    return 0;
}

size_t mpd__dnnl_conv_scratch_worker(const mpd__dnnl_conv *d)
{
    (void)d;
    return 0;
}

size_t mpd__dnnl_conv_bytes(const mpd__dnnl_conv *d)
{
    (void)d;
    return 0;
}

void mpd__dnnl_exec_free(mpd__dnnl_exec *ex)
{
    (void)ex;
}

#endif
