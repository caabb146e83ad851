/* The CPU backend: the reference every other backend is checked against,
 * and the fallback when there is no GPU. fp32 through OpenBLAS, int8
 * through our GEMM kernels (or oneDNN), fp16 in half arithmetic where the
 * CPU has it (ARMv8.2 FP16, AVX512-FP16: gemm_f16.h) and else as
 * half-rounded values with fp32 arithmetic, bf16 through oneDNN where the
 * CPU has bf16 instructions (on BFDOT where an ARM CPU has them) and else
 * as bf16-rounded values with fp32 arithmetic (the same operands; only the
 * order of the fp32 sums differs).
 *
 * Tensors: every layer output has a buffer, sized for fp32, that a plan
 * may use for fp32, fp16, int8 or bf16 values (int8 and bf16 HWC, the
 * others CHW), as mpd__plan_tensor_types (plan.h)
 * decides for every backend; with reuse_buffers, layers share buffers by
 * liveness (mpd__buffer_plan).
 *
 * Sharing: the weights are the net's (borrowed), and a plan state - the
 * derived int8 and fp16 weights - is read-only during passes, so clones
 * (one context per worker thread) run the plan states of their origin. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../backend.h"
#include "../half.h"
#include "../image.h"
#include "../quant.h"
#include "blas.h"
#include "conv_dnnl.h"
#include "conv_i8.h"
#include "gemm_f16.h"
#include "gemm_i8.h"
#include "cpu_kernels.h"
#include "half_cpu.h"
#include "tpool.h"

typedef struct {
    mpd_plan *plan;           /* copy */
    mpd_tensor_type *type;    /* per layer output */
    mpd_qparams *oq;          /* per layer output, for MPD_TENSOR_I8 */
    mpd__conv_i8_weights *w8; /* per layer, int8 convolutions */
    mpd__dnnl_conv **dconv;   /* per layer: the oneDNN primitive that runs it, or NULL */
    char *hwc;                /* per layer: an fp32 output stored HWC (written by
                                 oneDNN or a maxpool, for readers that take
                                 HWC: plan_create's rule). An fp16
                                 convolution's half output is kept so too,
                                 as fp32 holding the half values */
    float **w16;              /* per layer, fp16 and emulated bf16 convolutions:
                                 the weights rounded to half (bf16), held as
                                 float (the arithmetic is fp32: no conversion
                                 per pass); freed once a oneDNN primitive
                                 holds them */
    uint16_t **h16;           /* per layer, fp16 (bf16) convolutions in the
                                 CPU's half (bf16) arithmetic (gemm_f16.h,
                                 where it has it and oneDNN does not run
                                 them): the weights packed; w16 freed */
    char *emul;               /* per layer: fp16 or emulated bf16 (fp32
                                 arithmetic on rounded operands) */
    char *fuse;               /* per layer: a oneDNN convolution that runs the
                                 maxpool after it (2 x 2, stride 2, its only
                                 reader) on each band of rows as the band
                                 ends, from cache; the maxpool's own pass
                                 is then nothing */
    char *pend;               /* per layer: an fp16 output kept HWC whose
                                 rounding to half is left to its readers,
                                 all maxpools (max commutes with rounding):
                                 a pass over a 4x smaller tensor, in cache;
                                 read_output rounds too */
} cpu_plan;

typedef struct {
    const mpd_net *net; /* borrowed */
    mpd_backend_config cfg;
    int max_batch;
    int threads;
    float *input; /* max_batch x net input */
    mpd_buffer_plan bp;
    void **buf;    /* bp.nbufs buffers */
    void **out;    /* per layer: its buffer (buf[bp.of[i]]) */
    float *xf;     /* one image's layer input converted to fp32 */
    float *yf;     /* one image's fp16 (emulated bf16) convolution output
                      before rounding: allocated by the first such pass */
    int8_t *x8;    /* one image's layer input quantized */
    uint16_t *x16; /* one image's layer input in bf16 (HWC) for oneDNN:
                      allocated by the first such pass */
    float *xh;     /* one image's layer input in fp32 HWC for oneDNN: the
                      same */
    size_t max_in, max_out;
    mpd__cpu_exec ex;  /* pool + scratch */
    mpd__dnnl_exec dx; /* stream and scratch of the oneDNN convolutions */
} cpu_ctx;

static void cpu_destroy(void *p)
{
    cpu_ctx *c = p;
    if (!c)
        return;
    for (int b = 0; c->buf && b < c->bp.nbufs; b++)
        free(c->buf[b]);
    free(c->buf);
    mpd__buffer_plan_free(&c->bp);
    free(c->out);
    free(c->input);
    free(c->xf);
    free(c->yf);
    free(c->x8);
    free(c->x16);
    free(c->xh);
    if (c->ex.ws)
        for (int i = 0; i < c->threads; i++)
            free(c->ex.ws[i]);
    free(c->ex.ws);
    free(c->ex.shared);
    free(c->ex.scale);
    mpd__tpool_destroy(c->ex.pool);
    mpd__dnnl_exec_free(&c->dx);
    free(c);
}

static size_t maxz(size_t a, size_t b)
{
    return a > b ? a : b;
}

static int cpu_create(const mpd_net *net, const mpd_backend_config *cfg, void **out, char *msg,
                      size_t msglen)
{
    *out = NULL;
    if (cfg->max_batch < 1)
        return mpd__fail(msg, msglen, MPD_EINVAL, "max_batch must be >= 1");
    if (mpd__blas_load(msg, msglen))
        return MPD_EINVAL;
    cpu_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
    c->net = net;
    c->cfg = *cfg;
    c->max_batch = cfg->max_batch;
    c->threads = cfg->threads > 0 ? cfg->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (c->threads < 1)
        c->threads = 1;
    size_t b = (size_t)cfg->max_batch, ws = 0, shared = 0;
    int max_filters = 1;
    c->out = calloc((size_t)net->n, sizeof(void *));
    c->input = malloc(b * net->in_c * net->in_h * net->in_w * sizeof(float));
    c->ex.ws = calloc((size_t)c->threads, sizeof(float *));
    if (!c->out || !c->input || !c->ex.ws || mpd__tpool_create(c->threads, &c->ex.pool) ||
        mpd__buffer_plan(net, b * sizeof(float), cfg->reuse_buffers, &c->bp) ||
        !(c->buf = calloc((size_t)c->bp.nbufs, sizeof(void *))))
        goto oom;
    for (int k = 0; k < c->bp.nbufs; k++)
        if (!(c->buf[k] = malloc(c->bp.bytes[k])))
            goto oom;
    for (int i = 0; i < net->n; i++) {
        const mpd_layer *l = &net->layers[i];
        c->out[i] = c->buf[c->bp.of[i]];
        c->max_in = maxz(c->max_in, mpd_layer_in_size(l));
        c->max_out = maxz(c->max_out, mpd_layer_out_size(l));
        if (l->kind == MPD_LAYER_CONV) {
            /* Scratch for whichever precision a later plan picks. */
            ws = maxz(ws, mpd__conv_ws_worker(l, c->threads) * sizeof(float));
            ws = maxz(ws, mpd__conv_i8_ws_worker(l, c->threads));
            shared = maxz(shared, mpd__conv_ws_shared(l, c->threads) * sizeof(float));
            shared = maxz(shared, mpd__conv_i8_ws_shared(l, c->threads));
            max_filters = l->u.conv.filters > max_filters ? l->u.conv.filters : max_filters;
        }
    }
    for (int i = 0; ws && i < c->threads; i++)
        if (!(c->ex.ws[i] = malloc(ws)))
            goto oom;
    if (shared && !(c->ex.shared = malloc(shared)))
        goto oom;
    c->ex.scale = malloc((size_t)max_filters * sizeof(float));
    /* xf also takes a oneDNN convolution's fp32 HWC output. */
    c->xf = malloc(maxz(c->max_in, c->max_out) * sizeof(float));
    c->x8 = malloc(c->max_in);
    if (!c->ex.scale || !c->xf || !c->x8)
        goto oom;
    *out = c;
    return 0;
oom:
    cpu_destroy(c);
    return mpd__fail(msg, msglen, MPD_ENOMEM, "cpu backend: out of memory for buffers");
}

static int cpu_upload(void *p, char *msg, size_t msglen)
{
    /* The net's host copy is used in place: nothing to copy. */
    cpu_ctx *c = p;
    if (!c->net->weights_loaded)
        return mpd__fail(msg, msglen, MPD_EINVAL, "cpu backend: weights not loaded");
    return 0;
}

static int cpu_clone(void *p, void **out, char *msg, size_t msglen)
{
    cpu_ctx *c = p;
    return cpu_create(c->net, &c->cfg, out, msg, msglen);
}

/* Of each activation buffer, what a pass under ps writes: its largest
 * output but those of fused convolutions that are not kept (dnnl_run:
 * their bands never reach the buffer). Buffers are allocated for any plan;
 * the pages no plan output reaches are never touched. */
static size_t buffers_touched(const cpu_ctx *c, const cpu_plan *ps)
{
    if (!ps)
        return mpd__buffer_plan_bytes(&c->bp);
    size_t t = 0;
    for (int k = 0; k < c->bp.nbufs; k++) {
        size_t most = 0;
        for (int i = 0; i < c->net->n; i++)
            if (c->bp.of[i] == k && !(ps->fuse[i] && !c->bp.kept[i]))
                most = maxz(most, mpd_layer_out_size(&c->net->layers[i]));
        t += most * c->max_batch * sizeof(float);
    }
    return t;
}

/* What a pass under ps touches: the input and activation buffers, the
 * convolution scratch of the precisions it runs, and of the conversion
 * buffers (allocated for the largest tensor) what the layers that convert
 * write - as cpu_forward_layer uses them. The rest is never touched, so
 * never resident. */
static size_t cpu_own_bytes(void *p, const void *state)
{
    cpu_ctx *c = p;
    const cpu_plan *ps = state;
    const mpd_net *net = c->net;
    size_t t = (size_t)c->max_batch * net->in_c * net->in_h * net->in_w * sizeof(float);
    t += buffers_touched(c, ps);
    size_t ws = 0, shared = 0, xf = 0, x8 = 0, yf = 0, x16 = 0, xh = 0, rows = 0, scratch = 0;
    for (int i = 0; i < net->n; i++) {
        const mpd_layer *l = &net->layers[i];
        mpd_precision prec = ps ? ps->plan->prec[i] : MPD_PREC_FP32;
        mpd_tensor_type xt = ps && i > 0 ? ps->type[i - 1] : MPD_TENSOR_F32;
        mpd_tensor_type yt = ps ? ps->type[i] : MPD_TENSOR_F32;
        /* input_f32's conversions: every kind but a route, an int8
         * convolution of int8, a oneDNN bf16 one of bf16 and an int8 or
         * bf16 maxpool */
        int hwc_in = ps && i > 0 && ps->hwc[i - 1];
        int as_f32 =
            l->kind != MPD_LAYER_ROUTE && (xt != MPD_TENSOR_F32 || hwc_in) &&
            !(l->kind == MPD_LAYER_CONV && ps && ps->dconv[i] &&
              (prec == MPD_PREC_FP32 || (prec == MPD_PREC_INT8 && hwc_in))) &&
            !(l->kind == MPD_LAYER_MAXPOOL && ps->hwc[i]) &&
            !(l->kind == MPD_LAYER_CONV && prec == MPD_PREC_INT8 && xt == MPD_TENSOR_I8) &&
            !(l->kind == MPD_LAYER_CONV && prec == MPD_PREC_BF16 && ps->dconv[i] &&
              xt == MPD_TENSOR_BF16) &&
            !(l->kind == MPD_LAYER_MAXPOOL && (yt == MPD_TENSOR_I8 || yt == MPD_TENSOR_BF16));
        if (as_f32)
            xf = maxz(xf, mpd_layer_in_size(l) * sizeof(float));
        if (l->kind != MPD_LAYER_CONV)
            continue;
        if (ps && ps->dconv[i]) { /* the oneDNN exec's: as dnnl_run asks */
            rows =
                maxz(rows, mpd__dnnl_conv_rows_worker(ps->dconv[i], ps->fuse[i] && !c->bp.kept[i]));
            scratch = maxz(scratch, mpd__dnnl_conv_scratch_worker(ps->dconv[i]));
        }
        if (prec == MPD_PREC_INT8) {
            if (ps->w8[i].wf) /* the centred input, in xf */
                xf = maxz(xf, mpd_layer_in_size(l) * sizeof(float));
            else if (xt != MPD_TENSOR_I8)
                x8 = maxz(x8, mpd_layer_in_size(l));
            if (ps->dconv[i] && yt != MPD_TENSOR_I8 && !ps->hwc[i]) /* its HWC output */
                xf = maxz(xf, mpd_layer_out_size(l) * sizeof(float));
            ws = maxz(ws, mpd__conv_i8_ws_worker(l, c->threads));
            shared = maxz(shared, mpd__conv_i8_ws_shared(l, c->threads));
        } else if (prec == MPD_PREC_FP32 && ps && ps->dconv[i]) {
            if (!hwc_in) { /* HWC in xh, through xf unless fp32, int8 or bf16 */
                if (xt == MPD_TENSOR_F16)
                    xf = maxz(xf, mpd_layer_in_size(l) * sizeof(float));
                xh = maxz(xh, mpd_layer_in_size(l) * sizeof(float));
            }
            if (!ps->hwc[i]) /* its HWC output */
                xf = maxz(xf, mpd_layer_out_size(l) * sizeof(float));
        } else if (ps && ps->dconv[i] && ps->emul[i]) { /* conv_rounded */
            xh = maxz(xh, mpd_layer_in_size(l) * sizeof(float));
            xf = maxz(xf, maxz(mpd_layer_in_size(l), mpd_layer_out_size(l)) * sizeof(float));
            if (yt == MPD_TENSOR_F16)
                yf = maxz(yf, mpd_layer_out_size(l) * sizeof(float));
        } else if (prec == MPD_PREC_BF16 && ps->dconv[i]) {
            if (xt != MPD_TENSOR_BF16)
                x16 = maxz(x16, mpd_layer_in_size(l) * sizeof(uint16_t));
            if (yt != MPD_TENSOR_BF16 && !ps->hwc[i]) /* its fp32 HWC output, to CHW */
                xf = maxz(xf, mpd_layer_out_size(l) * sizeof(float));
        } else {
            ws = maxz(ws, mpd__conv_ws_worker(l, c->threads) * sizeof(float));
            shared = maxz(shared, mpd__conv_ws_shared(l, c->threads) * sizeof(float));
            if (prec == MPD_PREC_BF16) /* the rounded input */
                xf = maxz(xf, mpd_layer_in_size(l) * sizeof(float));
            if ((prec == MPD_PREC_FP16 && yt == MPD_TENSOR_F16) ||
                (prec == MPD_PREC_BF16 && yt == MPD_TENSOR_BF16))
                yf = maxz(yf, mpd_layer_out_size(l) * sizeof(float));
        }
    }
    return t + (size_t)c->threads * (ws + rows + scratch) + shared + xf + x8 + yf + x16 + xh;
}

static size_t cpu_plan_bytes(void *p, const void *state)
{
    const cpu_ctx *c = p;
    const cpu_plan *ps = state;
    size_t t = 0;
    for (int i = 0; ps && i < c->net->n; i++) {
        const mpd_layer *l = &c->net->layers[i];
        if (l->kind != MPD_LAYER_CONV)
            continue;
        size_t nw = (size_t)l->u.conv.filters * l->in_c * l->u.conv.size * l->u.conv.size;
        if (ps->w16[i])
            t += nw * sizeof(float);
        int m = l->u.conv.filters, k = (int)(nw / (size_t)m);
        if (ps->h16[i])
            t += (ps->plan->prec[i] == MPD_PREC_BF16 ? mpd__bf16_packed_size(m, k)
                                                     : mpd__f16_packed_size(m, k)) *
                 sizeof(uint16_t);
        if (ps->w8[i].w)
            t += (size_t)ps->w8[i].m * (ps->w8[i].kp + sizeof(float) + sizeof(int32_t));
        if (ps->w8[i].wf)
            t += (size_t)ps->w8[i].m * ps->w8[i].kp * sizeof(float);
        if (ps->dconv[i])
            t += mpd__dnnl_conv_bytes(ps->dconv[i]);
    }
    return t;
}

static int cpu_supports(void *p, const mpd_layer *l, mpd_precision prec)
{
    (void)p;
    if (prec == MPD_PREC_FP32)
        return 1;
    /* int8: K within the int32 sums' limit (plan.h); the scheme's own,
     * tighter for affine, is checked by plan_create. */
    return l->kind == MPD_LAYER_CONV && (prec != MPD_PREC_INT8 || mpd__conv_k(l) <= MPD_I8_MAX_K);
}

/* ---- plans ---------------------------------------------------------- */

static void cpu_plan_destroy(void *p, void *state)
{
    cpu_ctx *c = p;
    cpu_plan *ps = state;
    if (!ps)
        return;
    for (int i = 0; i < c->net->n; i++) {
        if (ps->w8)
            mpd__conv_i8_release(&ps->w8[i]);
        if (ps->dconv)
            mpd__dnnl_conv_free(ps->dconv[i]);
        if (ps->w16)
            free(ps->w16[i]);
        if (ps->h16)
            free(ps->h16[i]);
    }
    free(ps->w8);
    free(ps->dconv);
    free(ps->hwc);
    free(ps->emul);
    free(ps->pend);
    free(ps->fuse);
    free(ps->w16);
    free(ps->h16);
    free(ps->type);
    free(ps->oq);
    mpd_plan_free(ps->plan);
    free(ps);
}

/* Whether fp32 arithmetic (fp32, fp16, emulated bf16) runs on oneDNN,
 * unless MPDET_FP32_KERNEL=openblas (=winograd: its Winograd convolutions
 * where it makes them, conv_dnnl.h); whether bf16 runs on oneDNN's bf16
 * kernels, unless MPDET_BF16_KERNEL=emulated. Read as a plan is made. */
static int fp32_on_dnnl(void)
{
    const char *m = getenv("MPDET_FP32_KERNEL");
    return mpd__dnnl_conv_available() && !(m && !strcmp(m, "openblas"));
}

static int bf16_on_dnnl(void)
{
    const char *m = getenv("MPDET_BF16_KERNEL");
    return mpd__dnnl_bf16_native() && !(m && !strcmp(m, "emulated"));
}

/* Layer i's input quantization where the plan fixes it: the producer's
 * int8 codes, or a calibrated symmetric threshold; 0 where a pass measures
 * it (the affine scheme, no calibration). plan_create bakes it into the
 * oneDNN primitives, conv_int8 quantizes with it: one rule for both. */
static int fixed_input_q(const cpu_plan *ps, int i, mpd_qparams *xq)
{
    const mpd_plan *pl = ps->plan;
    if (i > 0 && ps->type[i - 1] == MPD_TENSOR_I8) {
        *xq = ps->oq[i - 1];
        return 1;
    }
    if (pl->scheme == MPD_SCHEME_SYMMETRIC && pl->out_thresh) {
        *xq = mpd_q_symmetric(i > 0 ? pl->out_thresh[i - 1] : pl->input_thresh);
        return 1;
    }
    return 0;
}

/* Whether layer i's only reader is the maxpool after it, 2 x 2 at stride
 * 2 over an even height and width (pool_hwc.h's fast case): the pool a
 * convolution can run on its bands of rows (cpu_plan.fuse). */
static int pool2_after(const mpd_net *net, int i)
{
    if (i + 1 >= net->n || net->layers[i].kind != MPD_LAYER_CONV)
        return 0;
    const mpd_layer *pl = &net->layers[i + 1];
    const mpd_pool *p = &pl->u.pool;
    if (pl->kind != MPD_LAYER_MAXPOOL || p->size != 2 || p->stride != 2 || p->padding / 2 != 0 ||
        pl->in_h % 2 || pl->in_w % 2 || pl->out_h != pl->in_h / 2 || pl->out_w != pl->in_w / 2)
        return 0;
    for (int j = i + 2; j < net->n; j++)
        if (mpd__plan_reads(net, j, i))
            return 0;
    return 1;
}

/* Whether fp16 layers choose, per layer, between our GEMM in the CPU's
 * half arithmetic and oneDNN's fp32 convolution of the half values, by
 * timing both once per plan (fp16_pick): where the CPU has half
 * arithmetic and oneDNN runs fp32, unless MPDET_FP16_KERNEL says "half"
 * (always half) or "emulated" (never: mpd__f16_arith). */
static int fp16_timed(void)
{
    const char *m = getenv("MPDET_FP16_KERNEL");
    return mpd__f16_arith() && fp32_on_dnnl() && !(m && !strcmp(m, "half"));
}

typedef struct {
    const mpd_layer *l, *pool; /* pool: the maxpool the primitive would run in its bands */
    const cpu_plan *ps;
    int i;
    mpd__cpu_exec ex;
    mpd__dnnl_exec dx;
    float *x, *y, *yp;
    int failed;
} pick_job;

static void run_half(void *p)
{
    pick_job *j = p;
    mpd__conv_f16(j->l, j->ps->h16[j->i], j->x, j->y, &j->ex);
    if (j->pool)
        mpd__maxpool_f32(j->pool, j->y, j->yp);
}

static void run_dnnl(void *p)
{
    pick_job *j = p;
    char why[128];
    j->failed |= mpd__dnnl_conv_run(j->ps->dconv[j->i], &j->dx, j->ex.pool, j->x, j->y, NULL, why,
                                    sizeof(why)) != 0;
}

/* fp16 layer i holds both kernels (packed half weights and a oneDNN
 * primitive): keeps the faster (mpd__time_in_turn) on one thread of its own -
 * plans are made while passes run - for the layer and the maxpool the
 * primitive would run in its bands (ours runs it after), and frees the
 * other. The input is made up: the time does not depend on the values.
 * The two compute the same half operands, in half or in fp32 arithmetic,
 * each within its bound of the exact sums (README, Precision plans). 0 or
 * MPD_ENOMEM. */
static int fp16_pick(const mpd_net *net, cpu_plan *ps, int i)
{
    const mpd_layer *l = &net->layers[i];
    size_t in = mpd_layer_in_size(l), out = mpd_layer_out_size(l);
    pick_job j = {
        .l = l, .pool = pool2_after(net, i) ? &net->layers[i + 1] : NULL, .ps = ps, .i = i};
    float *ws = malloc(mpd__conv_ws_worker(l, 1) * sizeof(float) + 64);
    j.ex.ws = &ws;
    j.ex.shared = malloc(mpd__conv_ws_shared(l, 1) * sizeof(float) + 64);
    j.x = malloc(in * sizeof(float));
    j.y = malloc(out * sizeof(float));
    j.yp = malloc(out * sizeof(float));
    int rc = MPD_ENOMEM;
    if (ws && j.ex.shared && j.x && j.y && j.yp && mpd__tpool_create(1, &j.ex.pool) == 0) {
        for (size_t k = 0; k < in; k++)
            j.x[k] = (float)((k * 2654435761u >> 13) % 255) * (1.f / 128) - 1.f;
        double t_half, t_dnnl;
        mpd__time_in_turn(run_half, run_dnnl, &j, &t_half, &t_dnnl);
        char note[96];
        if (j.failed || t_half <= t_dnnl) {
            mpd__dnnl_conv_free(ps->dconv[i]);
            ps->dconv[i] = NULL;
        } else {
            free(ps->h16[i]);
            ps->h16[i] = NULL;
            snprintf(note, sizeof(note), " (timed faster than half arithmetic: %.2f vs %.2f ms)",
                     t_dnnl * 1e3, t_half * 1e3);
            mpd__dnnl_conv_name_add(ps->dconv[i], note);
        }
        mpd__dnnl_exec_free(&j.dx);
        mpd__tpool_destroy(j.ex.pool);
        rc = 0;
    }
    free(ws);
    free(j.ex.shared);
    free(j.x);
    free(j.y);
    free(j.yp);
    return rc;
}

static int cpu_plan_create(void *p, const mpd_plan *plan, void **state, char *msg, size_t msglen)
{
    cpu_ctx *c = p;
    const mpd_net *net = c->net;
    *state = NULL;
    if (plan->n != net->n)
        return mpd__fail(msg, msglen, MPD_EINVAL, "plan has %d layers, the net %d", plan->n,
                         net->n);
    int rc = mpd__plan_check_i8(net, plan, msg, msglen);
    if (rc)
        return rc;
    cpu_plan *ps = calloc(1, sizeof(*ps));
    if (!ps || mpd_plan_copy(plan, &ps->plan))
        goto oom;
    ps->type = calloc((size_t)net->n, sizeof(mpd_tensor_type));
    ps->oq = calloc((size_t)net->n, sizeof(mpd_qparams));
    ps->w8 = calloc((size_t)net->n, sizeof(mpd__conv_i8_weights));
    ps->w16 = calloc((size_t)net->n, sizeof(float *));
    ps->h16 = calloc((size_t)net->n, sizeof(uint16_t *));
    ps->dconv = calloc((size_t)net->n, sizeof(mpd__dnnl_conv *));
    ps->hwc = calloc((size_t)net->n, 1);
    ps->emul = calloc((size_t)net->n, 1);
    ps->pend = calloc((size_t)net->n, 1);
    ps->fuse = calloc((size_t)net->n, 1);
    if (!ps->type || !ps->oq || !ps->w8 || !ps->w16 || !ps->h16 || !ps->dconv || !ps->hwc ||
        !ps->emul || !ps->pend || !ps->fuse)
        goto oom;
    for (int i = 0; i < net->n; i++) {
        const mpd_layer *l = &net->layers[i];
        if (plan->prec[i] != MPD_PREC_FP32 && !cpu_supports(c, l, plan->prec[i])) {
            cpu_plan_destroy(c, ps);
            return mpd__fail(msg, msglen, MPD_EUNSUP, "layer %d (%s) cannot run in %s", i,
                             mpd_layer_kind_name(l->kind), mpd_precisions[plan->prec[i]].name);
        }
        if (l->kind != MPD_LAYER_CONV)
            continue;
        if (plan->prec[i] == MPD_PREC_INT8 && mpd__conv_i8_prepare(l, plan->scheme, &ps->w8[i]))
            goto oom;
        if (plan->prec[i] == MPD_PREC_FP16) {
            size_t nw = (size_t)l->u.conv.filters * l->in_c * l->u.conv.size * l->u.conv.size;
            /* Rounded to half and back (exact): the values an fp16 weight
             * has, once for every worker instead of once per pass. */
            mpd_half *h = malloc(nw * sizeof(mpd_half));
            if (!h || !(ps->w16[i] = malloc(nw * sizeof(float)))) {
                free(h);
                goto oom;
            }
            mpd__f32_to_f16_n(l->u.conv.weights, h, nw);
            mpd__f16_to_f32_n(h, ps->w16[i], nw);
            free(h);
        }
    }
    if (mpd__plan_tensor_types(net, ps->plan, ps->type, ps->oq))
        goto oom;
    /* Each int8 convolution's kernel: a oneDNN primitive where it can
     * (within one code of ours, conv_dnnl.h), else the fastest of our exact
     * kernels for its shape, timed here once per plan. MPDET_INT8_KERNEL:
     * auto (that), exact (ours only), int8 or fp32 (one of ours). */
    const char *mode = getenv("MPDET_INT8_KERNEL");
    if (mode && (!*mode || !strcmp(mode, "auto")))
        mode = NULL;
    const char *force = mode && (!strcmp(mode, "int8") || !strcmp(mode, "fp32")) ? mode : NULL;
    for (int i = 0; i < net->n; i++) {
        if (!ps->w8[i].w)
            continue;
        int out8 = ps->type[i] == MPD_TENSOR_I8;
        /* oneDNN bakes the input's scale into its primitive: it takes the
         * layers whose input quantization the plan fixes. */
        mpd_qparams xq;
        if (!mode && fixed_input_q(ps, i, &xq)) {
            int rc = mpd__dnnl_conv_i8_create(&net->layers[i], &ps->w8[i], xq, out8,
                                              out8 ? ps->oq[i].scale : 1.f, c->threads,
                                              pool2_after(net, i), &ps->dconv[i]);
            if (rc == MPD_ENOMEM)
                goto oom;
            if (rc == 0)
                continue;
        }
        if (mpd__conv_i8_choose(&net->layers[i], &ps->w8[i], c->threads, out8, force))
            goto oom;
    }
    /* bf16: a oneDNN primitive where the CPU has bf16 instructions (unless
     * MPDET_BF16_KERNEL=emulated), else our emulation on the same
     * operands. */
    int emulate = !bf16_on_dnnl();
    for (int i = 0; i < net->n; i++) {
        const mpd_layer *l = &net->layers[i];
        if (l->kind != MPD_LAYER_CONV || plan->prec[i] != MPD_PREC_BF16)
            continue;
        size_t nw = (size_t)l->u.conv.filters * l->in_c * l->u.conv.size * l->u.conv.size;
        uint16_t *wb = malloc(nw * sizeof(uint16_t));
        if (!wb)
            goto oom;
        for (size_t k = 0; k < nw; k++)
            wb[k] = mpd_f32_to_bf16(l->u.conv.weights[k]);
        int rc = emulate
                     ? MPD_EUNSUP
                     : mpd__dnnl_conv_bf16_create(l, wb, ps->type[i] == MPD_TENSOR_BF16, c->threads,
                                                  pool2_after(net, i), &ps->dconv[i]);
        if (rc == MPD_EUNSUP && (ps->w16[i] = malloc(nw * sizeof(float)))) {
            for (size_t k = 0; k < nw; k++)
                ps->w16[i][k] = mpd_bf16_to_f32(wb[k]);
            rc = 0;
        }
        free(wb);
        if (rc)
            goto oom;
    }
    /* fp32 (and the fp32 arithmetic of fp16 and emulated bf16): oneDNN's
     * NHWC convolutions unless MPDET_FP32_KERNEL=openblas. fp32 outputs
     * stay HWC where every reader takes HWC (a convolution on oneDNN, or a
     * maxpool whose own readers do). */
    for (int i = 0; i < net->n; i++)
        ps->emul[i] = ps->w16[i] != NULL;
    const int timed16 = fp16_timed();
    for (int i = 0; i < net->n && fp32_on_dnnl(); i++) {
        const mpd_layer *l = &net->layers[i];
        mpd_precision pr = plan->prec[i];
        /* fp16 and emulated bf16 too: an fp32 primitive of the rounded
         * weights, the same operands as the sgemm path. */
        const char *label = pr == MPD_PREC_FP32   ? "fp32"
                            : pr == MPD_PREC_FP16 ? "fp16 emulated (half-rounded values) on fp32"
                                                  : "bf16 emulated (bf16-rounded values) on fp32";
        /* fp16 in half arithmetic below: alone, or timed against this */
        int half = pr == MPD_PREC_FP16 && mpd__f16_arith();
        if (l->kind != MPD_LAYER_CONV || (pr != MPD_PREC_FP32 && !ps->emul[i]) ||
            (half && !timed16))
            continue;
        if (mpd__dnnl_conv_f32_create(l, pr == MPD_PREC_FP32 ? NULL : ps->w16[i], label, c->threads,
                                      pool2_after(net, i), &ps->dconv[i]) == MPD_ENOMEM)
            goto oom;
        if (ps->dconv[i] && ps->emul[i] && !half) { /* the primitive has its own copy */
            free(ps->w16[i]);
            ps->w16[i] = NULL;
        }
    }
    /* fp16 and bf16 left to our GEMM: in the CPU's half or bf16
     * arithmetic where it has it; fp16 with a primitive too where timed16,
     * then the faster of the two. */
    for (int i = 0; i < net->n; i++) {
        const mpd_layer *l = &net->layers[i];
        mpd_precision pr = plan->prec[i];
        int bf16 = pr == MPD_PREC_BF16;
        if (l->kind != MPD_LAYER_CONV || (ps->dconv[i] && bf16) || !ps->w16[i] ||
            !(bf16 ? mpd__bf16_arith() : pr == MPD_PREC_FP16 && mpd__f16_arith()))
            continue;
        int m = l->u.conv.filters, k = l->in_c * l->u.conv.size * l->u.conv.size;
        size_t n = bf16 ? mpd__bf16_packed_size(m, k) : mpd__f16_packed_size(m, k);
        if (!(ps->h16[i] = malloc(n * sizeof(uint16_t))))
            goto oom;
        if (bf16)
            mpd__bf16_pack(ps->w16[i], m, k, ps->h16[i]);
        else
            mpd__f16_pack(ps->w16[i], m, k, ps->h16[i]);
        free(ps->w16[i]);
        ps->w16[i] = NULL;
        if (ps->dconv[i] && fp16_pick(net, ps, i))
            goto oom;
    }
    for (int i = net->n - 1; i >= 0; i--) {
        const mpd_layer *l = &net->layers[i];
        int readers = 0, ok = 1, pools = 1;
        for (int j = i + 1; j < net->n; j++) {
            if (!mpd__plan_reads(net, j, i))
                continue;
            const mpd_layer *rl = &net->layers[j];
            readers++;
            ok &= (rl->kind == MPD_LAYER_CONV && ps->dconv[j]) ||
                  (rl->kind == MPD_LAYER_MAXPOOL && ps->hwc[j]);
            pools &= rl->kind == MPD_LAYER_MAXPOOL;
        }
        /* Writers of fp32 HWC: oneDNN's convolutions (whose output is
         * HWC), and maxpools whose input is: decided here for the input
         * first (i - 1 < i), so a maxpool is marked as wanting it, then
         * confirmed below. An fp16 convolution's half output (F16) goes
         * the same way, as fp32 holding the half values: the same values
         * for every reader, without a transpose and two conversions per
         * layer (and the buffers hold fp32 for any plan). */
        int dnnl_out = l->kind == MPD_LAYER_CONV && ps->dconv[i];
        ps->hwc[i] =
            readers > 0 && ok &&
            (ps->type[i] == MPD_TENSOR_F32 || (dnnl_out && ps->type[i] == MPD_TENSOR_F16)) &&
            (dnnl_out || l->kind == MPD_LAYER_MAXPOOL);
        if (ps->hwc[i] && ps->type[i] == MPD_TENSOR_F16) {
            ps->type[i] = MPD_TENSOR_F32;
            ps->pend[i] = pools;
        }
    }
    for (int i = 0; i < net->n; i++) /* a maxpool only where its input is */
        if (net->layers[i].kind == MPD_LAYER_MAXPOOL && ps->hwc[i] && !(i > 0 && ps->hwc[i - 1]))
            ps->hwc[i] = 0;
    /* A convolution whose primitive writes its HWC output where it stays
     * (int8, bf16 or fp32 kept HWC) runs the maxpool after it, on HWC
     * too, band by band. */
    for (int i = 0; i + 1 < net->n; i++) {
        mpd_tensor_type t = ps->type[i];
        ps->fuse[i] =
            ps->dconv[i] && pool2_after(net, i) &&
            (t == MPD_TENSOR_I8 || ps->hwc[i] || (t == MPD_TENSOR_BF16 && !ps->emul[i])) &&
            (ps->type[i + 1] != MPD_TENSOR_F32 || ps->hwc[i + 1]) &&
            /* the pool must not write where the bands still read (the
             * buffer plan keeps them apart: mpd__buffer_plan) */
            (i == 0 || c->bp.of[i + 1] != c->bp.of[i - 1]);
        if (ps->fuse[i])
            mpd__dnnl_conv_name_add(ps->dconv[i], " + maxpool in its bands");
    }
    *state = ps;
    return 0;
oom:
    cpu_plan_destroy(c, ps);
    return mpd__fail(msg, msglen, MPD_ENOMEM, "cpu backend: out of memory applying the plan");
}

/* ---- forward -------------------------------------------------------- */

static int cpu_set_input(void *p, const float *x, int batch, char *msg, size_t msglen)
{
    cpu_ctx *c = p;
    if (batch < 1 || batch > c->max_batch)
        return mpd__fail(msg, msglen, MPD_EINVAL, "batch %d outside 1..%d", batch, c->max_batch);
    memcpy(c->input, x, (size_t)batch * c->net->in_c * c->net->in_h * c->net->in_w * sizeof(float));
    return 0;
}

/* Letterboxes straight into the input: no staging copy in the engine
 * (whose input buffer then stays untouched, so not resident). */
static int cpu_set_input_rgb(void *p, const unsigned char *const *rgb, const int *w, const int *h,
                             int n, char *msg, size_t msglen)
{
    cpu_ctx *c = p;
    if (n < 1 || n > c->max_batch)
        return mpd__fail(msg, msglen, MPD_EINVAL, "batch %d outside 1..%d", n, c->max_batch);
    size_t insz = (size_t)c->net->in_c * c->net->in_h * c->net->in_w;
    for (int b = 0; b < n; b++) {
        mpd_image im = {w[b], h[b], (unsigned char *)rgb[b]};
        int rc = mpd__letterbox(&im, c->net->in_w, c->net->in_h, c->input + b * insz);
        if (rc)
            return mpd__fail(msg, msglen, rc, "preprocess: %s", mpd_strerror(rc));
    }
    return 0;
}

/* Output of layer i (-1 = the network input) for image b, with its type. */
static const void *tensor(cpu_ctx *c, const cpu_plan *ps, int i, int b, mpd_tensor_type *t)
{
    if (i < 0) {
        *t = MPD_TENSOR_F32;
        return c->input + (size_t)b * c->net->in_c * c->net->in_h * c->net->in_w;
    }
    *t = ps->type[i];
    size_t n = mpd_layer_out_size(&c->net->layers[i]);
    size_t bytes = *t == MPD_TENSOR_F32 ? 4 : *t == MPD_TENSOR_I8 ? 1 : 2;
    return (const char *)c->out[i] + (size_t)b * n * bytes;
}

/* Converts a c x hw tensor of any type to fp32 CHW in dst. */
static void to_f32(const void *src, mpd_tensor_type t, mpd_qparams q, int c, int hw, float *dst)
{
    size_t n = (size_t)c * hw;
    if (t == MPD_TENSOR_F32)
        memcpy(dst, src, n * sizeof(float));
    else if (t == MPD_TENSOR_F16)
        mpd__f16_to_f32_n(src, dst, n);
    else if (t == MPD_TENSOR_BF16)
        mpd__bf16_hwc_to_f32_chw(src, c, hw, dst, 0, hw);
    else
        mpd__dequantize_hwc_to_chw(src, c, hw, q, dst);
}

/* n floats to the half values they round to (dst may be src), through
 * the cache a block at a time. */
static void round_half(const float *src, float *dst, size_t n)
{
    mpd_half h[1024];
    for (size_t k = 0; k < n; k += 1024) {
        size_t m = n - k < 1024 ? n - k : 1024;
        mpd__f32_to_f16_n(src + k, h, m);
        mpd__f16_to_f32_n(h, dst + k, m);
    }
}

/* Half <-> float conversions of large arrays, split across the pool;
 * ROUND_HALF: floats to the half values they round to (dst may be src). */
enum { FROM_HALF, TO_HALF, ROUND_HALF, FROM_I8 };

typedef struct {
    const void *src;
    void *dst;
    size_t n, chunk;
    int op;
    mpd_qparams q; /* FROM_I8's */
} conv_job;

static void convert_task(void *p, int task, int worker)
{
    (void)worker;
    const conv_job *j = p;
    size_t i0 = (size_t)task * j->chunk, n = j->n - i0 < j->chunk ? j->n - i0 : j->chunk;
    if (j->op == TO_HALF) {
        mpd__f32_to_f16_n((const float *)j->src + i0, (mpd_half *)j->dst + i0, n);
    } else if (j->op == FROM_HALF) {
        mpd__f16_to_f32_n((const mpd_half *)j->src + i0, (float *)j->dst + i0, n);
    } else if (j->op == FROM_I8) {
        mpd__dequantize_n((const int8_t *)j->src + i0, n, j->q, (float *)j->dst + i0);
    } else {
        round_half((const float *)j->src + i0, (float *)j->dst + i0, n);
    }
}

static void convert_q_par(cpu_ctx *c, const void *src, void *dst, size_t n, int op, mpd_qparams q)
{
    size_t tasks = (size_t)c->threads * 2;
    conv_job j = {src, dst, n, (n + tasks - 1) / tasks, op, q};
    j.chunk = (j.chunk + 63) & ~(size_t)63;
    mpd__tpool_run(c->ex.pool, (int)((n + j.chunk - 1) / j.chunk), convert_task, &j);
}

static void convert_par(cpu_ctx *c, const void *src, void *dst, size_t n, int op)
{
    convert_q_par(c, src, dst, n, op, (mpd_qparams){1.f, 0});
}

/* An fp32 image (c channels, hw pixels) from HWC into CHW or back, by
 * ranges of pixels, each in blocks of 64 whose c x 64 values stay in cache
 * while every channel takes its 64 (a channel at a time over the whole
 * image would read all of it c times). */
typedef struct {
    const float *x;
    float *y;
    int c, hw, chunk, to_hwc;
} hwc_job;

static void hwc_task(void *p, int task, int worker)
{
    (void)worker;
    const hwc_job *j = p;
    int p0 = task * j->chunk, p1 = p0 + j->chunk < j->hw ? p0 + j->chunk : j->hw;
    if (j->to_hwc && j->c == 3) { /* the image: whole pixels, 2.3x the blocks below */
        const float *r = j->x, *g = r + j->hw, *b = g + j->hw;
        for (int i = p0; i < p1; i++) {
            j->y[3 * (size_t)i] = r[i];
            j->y[3 * (size_t)i + 1] = g[i];
            j->y[3 * (size_t)i + 2] = b[i];
        }
        return;
    }
    for (int b0 = p0; b0 < p1; b0 += 64) {
        int b1 = b0 + 64 < p1 ? b0 + 64 : p1;
        for (int ch = 0; ch < j->c; ch++) {
            if (j->to_hwc) {
                const float *s = j->x + (size_t)ch * j->hw;
                for (int i = b0; i < b1; i++)
                    j->y[(size_t)i * j->c + ch] = s[i];
            } else {
                float *d = j->y + (size_t)ch * j->hw;
                for (int i = b0; i < b1; i++)
                    d[i] = j->x[(size_t)i * j->c + ch];
            }
        }
    }
}

/* HWC -> CHW, or CHW -> HWC (to_hwc). */
static void transpose_par(cpu_ctx *c, const float *x, int ch, int hw, float *y, int to_hwc)
{
    hwc_job j = {x, y, ch, hw, 0, to_hwc};
    int tasks = c->threads * 2;
    j.chunk = (hw + tasks - 1) / tasks;
    mpd__tpool_run(c->ex.pool, (hw + j.chunk - 1) / j.chunk, hwc_task, &j);
}

static void hwc_to_chw_par(cpu_ctx *c, const float *x, int ch, int hw, float *y)
{
    transpose_par(c, x, ch, hw, y, 0);
}

/* bf16 conversions of a c x hw image, by ranges of pixels across the
 * pool: fp32 CHW rounded to bf16 values (dst may be src), fp32 CHW into
 * bf16 HWC, bf16 HWC into fp32 CHW. With c = 1 and hw = the element count
 * they are elementwise, for tensors that are HWC on both sides. */
typedef enum { BF16_ROUND, BF16_FROM_CHW, BF16_TO_CHW } bf16_op;

typedef struct {
    bf16_op op;
    const void *x;
    void *y;
    int c, hw, chunk;
} bf16_job;

static void bf16_task(void *p, int task, int worker)
{
    (void)worker;
    const bf16_job *j = p;
    int p0 = task * j->chunk, p1 = p0 + j->chunk < j->hw ? p0 + j->chunk : j->hw;
    switch (j->op) {
    case BF16_ROUND:
        for (int ch = 0; ch < j->c; ch++) {
            size_t o = (size_t)ch * j->hw + p0;
            mpd__bf16_round_n((const float *)j->x + o, (float *)j->y + o, (size_t)(p1 - p0));
        }
        break;
    case BF16_FROM_CHW: mpd__f32_chw_to_bf16_hwc(j->x, j->c, j->hw, j->y, p0, p1); break;
    case BF16_TO_CHW: mpd__bf16_hwc_to_f32_chw(j->x, j->c, j->hw, j->y, p0, p1); break;
    }
}

static void bf16_par(cpu_ctx *c, bf16_op op, const void *x, void *y, int ch, int hw)
{
    bf16_job j = {op, x, y, ch, hw, 0};
    int tasks = c->threads * 2;
    j.chunk = (hw + tasks - 1) / tasks;
    mpd__tpool_run(c->ex.pool, (hw + j.chunk - 1) / j.chunk, bf16_task, &j);
}

/* Layer i's input for image b as fp32: in place when it already is. */
static const float *input_f32(cpu_ctx *c, const cpu_plan *ps, int i, int b)
{
    mpd_tensor_type t;
    const void *x = tensor(c, ps, i - 1, b, &t);
    const mpd_layer *l = &c->net->layers[i];
    if (t == MPD_TENSOR_F32 && i > 0 && ps->hwc[i - 1]) {
        hwc_to_chw_par(c, x, l->in_c, l->in_h * l->in_w, c->xf);
        return c->xf;
    }
    if (t == MPD_TENSOR_F32)
        return x;
    if (t == MPD_TENSOR_F16)
        convert_par(c, x, c->xf, mpd_layer_in_size(l), FROM_HALF);
    else if (t == MPD_TENSOR_BF16)
        bf16_par(c, BF16_TO_CHW, x, c->xf, l->in_c, l->in_h * l->in_w);
    else
        to_f32(x, t, i > 0 ? ps->oq[i - 1] : (mpd_qparams){1, 0}, l->in_c, l->in_h * l->in_w,
               c->xf);
    return c->xf;
}

/* Layer i's input for image b as fp32 HWC, for a oneDNN primitive: the
 * producer's where it is HWC fp32 already, else in xh: int8 and bf16
 * (HWC) widened elementwise, anything else turned HWC from CHW. NULL when
 * xh cannot be allocated. */
static const float *input_hwc_f32(cpu_ctx *c, const cpu_plan *ps, int i, int b)
{
    const mpd_layer *l = &c->net->layers[i];
    const int hw = l->in_h * l->in_w, n = l->in_c * hw;
    mpd_tensor_type t;
    const void *x = tensor(c, ps, i - 1, b, &t);
    if (t == MPD_TENSOR_F32 && i > 0 && ps->hwc[i - 1])
        return x;
    if (!c->xh && !(c->xh = malloc(c->max_in * sizeof(float))))
        return NULL;
    if (t == MPD_TENSOR_I8)
        convert_q_par(c, x, c->xh, (size_t)n, FROM_I8, ps->oq[i - 1]);
    else if (t == MPD_TENSOR_BF16) /* 1 x n: elementwise */
        bf16_par(c, BF16_TO_CHW, x, c->xh, 1, n);
    else
        transpose_par(c, input_f32(c, ps, i, b), l->in_c, hw, c->xh, 1);
    return c->xh;
}

/* Channel-wise layers (maxpool, upsample) split across the pool: each task
 * runs the kernel on a view of the layer restricted to some channels. */
typedef struct {
    const mpd_layer *l;
    const void *x;
    void *y;
    int chunk;
    size_t elem; /* bytes per element */
    void (*kernel)(const mpd_layer *, const void *, void *);
} chan_job;

static void chan_task(void *p, int task, int worker)
{
    (void)worker;
    const chan_job *j = p;
    mpd_layer view = *j->l;
    int c0 = task * j->chunk;
    view.in_c = view.out_c = j->l->out_c - c0 < j->chunk ? j->l->out_c - c0 : j->chunk;
    j->kernel(&view, (const char *)j->x + (size_t)c0 * j->l->in_h * j->l->in_w * j->elem,
              (char *)j->y + (size_t)c0 * j->l->out_h * j->l->out_w * j->elem);
}

static void per_channel(cpu_ctx *c, const mpd_layer *l, const void *x, void *y, size_t elem,
                        void (*kernel)(const mpd_layer *, const void *, void *))
{
    int tasks = c->threads * 2 < l->out_c ? c->threads * 2 : l->out_c;
    chan_job j = {l, x, y, (l->out_c + tasks - 1) / tasks, elem, kernel};
    mpd__tpool_run(c->ex.pool, (l->out_c + j.chunk - 1) / j.chunk, chan_task, &j);
}

static void maxpool_f32(const mpd_layer *l, const void *x, void *y)
{
    mpd__maxpool_f32(l, x, y);
}
/* int8, bf16 and some fp32 tensors are HWC: maxpool splits by output rows
 * instead. */
typedef struct {
    const mpd_layer *l;
    const void *x;
    void *y;
    int chunk;
    mpd_tensor_type t;
} rows_job;

static void pool_rows(const mpd_layer *l, const void *x, void *y, mpd_tensor_type t, int r0, int r1)
{
    if (t == MPD_TENSOR_I8)
        mpd__maxpool_i8_hwc(l, x, y, r0, r1);
    else if (t == MPD_TENSOR_BF16)
        mpd__maxpool_bf16_hwc(l, x, y, r0, r1);
    else
        mpd__maxpool_f32_hwc(l, x, y, r0, r1);
}

static void maxpool_rows_task(void *p, int task, int worker)
{
    (void)worker;
    const rows_job *j = p;
    int r0 = task * j->chunk, r1 = r0 + j->chunk < j->l->out_h ? r0 + j->chunk : j->l->out_h;
    pool_rows(j->l, j->x, j->y, j->t, r0, r1);
}

/* The maxpool a convolution runs on each band of its rows (cpu_plan.fuse):
 * a band's output rows [r0, r1) (even bounds) give pool rows
 * [r0 / 2, r1 / 2), rounded to half where cpu_plan.pend says. */
typedef struct {
    const mpd_layer *l; /* the maxpool */
    void *y;
    mpd_tensor_type t;
    int round;
} band_pool;

static void band_pool_rows(void *arg, const void *rows, int r0, int r1)
{
    const band_pool *bp = arg;
    /* The pool of these rows alone: a layer of r1 - r0 input rows. */
    mpd_layer v = *bp->l;
    v.in_h = r1 - r0;
    v.out_h = v.in_h / 2;
    size_t row = (size_t)v.out_w * v.out_c;
    size_t bytes = bp->t == MPD_TENSOR_I8 ? 1 : bp->t == MPD_TENSOR_BF16 ? 2 : 4;
    void *y = (char *)bp->y + (size_t)(r0 / 2) * row * bytes;
    pool_rows(&v, rows, y, bp->t, 0, v.out_h);
    if (bp->round)
        round_half(y, y, (size_t)v.out_h * row);
}

/* Layer i's oneDNN primitive on image b: into y where its output is kept
 * as written (direct), else into xf; with the maxpool after it where the
 * plan fuses it (which it does only where the output is direct). */
static int dnnl_run(cpu_ctx *c, const cpu_plan *ps, int i, int b, const void *x, void *y,
                    int direct, char *msg, size_t msglen)
{
    band_pool bp = {0};
    int fused = direct && ps->fuse[i];
    /* An output not kept after the pass (reuse_buffers: its buffer goes
     * to a later layer) need not be written at all: the bands stay in
     * each worker's cache. */
    mpd__dnnl_after after = {band_pool_rows, &bp, fused && !c->bp.kept[i]};
    if (fused) {
        mpd_tensor_type t;
        bp = (band_pool){&c->net->layers[i + 1], (void *)tensor(c, ps, i + 1, b, &t),
                         ps->type[i + 1], ps->pend[i]};
    }
    return mpd__dnnl_conv_run(ps->dconv[i], &c->dx, c->ex.pool, x, direct ? y : c->xf,
                              fused ? &after : NULL, msg, msglen);
}

static void maxpool_hwc(cpu_ctx *c, const mpd_layer *l, const void *x, void *y, mpd_tensor_type t)
{
    int tasks = c->threads * 2 < l->out_h ? c->threads * 2 : l->out_h;
    rows_job j = {l, x, y, (l->out_h + tasks - 1) / tasks, t};
    mpd__tpool_run(c->ex.pool, (l->out_h + j.chunk - 1) / j.chunk, maxpool_rows_task, &j);
}
static void upsample_f32(const mpd_layer *l, const void *x, void *y)
{
    mpd__upsample_f32(l, x, y);
}

/* Range and quantization of a layer input, split across the pool. */
typedef struct {
    const float *x;
    const int8_t *x8; /* centre_par's input */
    int c, hw, chunk;
    float mn[64], mx[64]; /* per task */
    mpd_qparams q;
    int8_t *dst;
    float *dstf; /* centred values for the fp32 GEMM */
    int hwc;     /* quantize_par's x is HWC already */
} quant_job;

static void range_task(void *p, int task, int worker)
{
    (void)worker;
    quant_job *j = p;
    size_t n = (size_t)j->c * j->hw, i0 = (size_t)task * j->chunk;
    size_t len = n - i0 < (size_t)j->chunk ? n - i0 : (size_t)j->chunk;
    mpd__range_f32(j->x + i0, len, &j->mn[task], &j->mx[task]);
}

static void quant_task(void *p, int task, int worker)
{
    (void)worker;
    quant_job *j = p;
    int p0 = task * j->chunk, p1 = p0 + j->chunk < j->hw ? p0 + j->chunk : j->hw;
    if (j->hwc)
        mpd__quantize_n(j->x + (size_t)p0 * j->c, (size_t)(p1 - p0) * j->c, j->q,
                        j->dst + (size_t)p0 * j->c);
    else
        mpd__quantize_chw_to_hwc(j->x, j->c, j->hw, j->q, j->dst, p0, p1);
}

static void centred_task(void *p, int task, int worker)
{
    (void)worker;
    quant_job *j = p;
    int p0 = task * j->chunk, p1 = p0 + j->chunk < j->hw ? p0 + j->chunk : j->hw;
    if (j->x8) {
        mpd__centre_hwc_to_chw(j->x8, j->c, j->hw, j->q.zero, j->dstf, p0, p1);
    } else {
        for (int ch = 0; ch < j->c; ch++) {
            size_t o = (size_t)ch * j->hw + p0;
            mpd__quantize_centred(j->x + o, (size_t)(p1 - p0), j->q, j->dstf + o);
        }
    }
}

/* The input of an int8 convolution that runs through the fp32 GEMM: x
 * (fp32 CHW) quantized with q, or x8 (int8 HWC), as centred values in dst
 * (CHW; may be x). */
static void centred_par(cpu_ctx *c, const float *x, const int8_t *x8, int ch, int hw,
                        mpd_qparams q, float *dst)
{
    quant_job j = {.x = x, .x8 = x8, .c = ch, .hw = hw, .q = q, .dstf = dst};
    int tasks = c->threads * 2;
    j.chunk = (hw + tasks - 1) / tasks;
    mpd__tpool_run(c->ex.pool, (hw + j.chunk - 1) / j.chunk, centred_task, &j);
}

static void range_par(cpu_ctx *c, const float *x, int ch, int hw, float *mn, float *mx)
{
    quant_job j = {.x = x, .c = ch, .hw = hw};
    size_t n = (size_t)ch * hw;
    int tasks = c->threads * 2 < 64 ? c->threads * 2 : 64;
    j.chunk = (int)((n + tasks - 1) / tasks);
    tasks = (int)((n + j.chunk - 1) / j.chunk);
    mpd__tpool_run(c->ex.pool, tasks, range_task, &j);
    *mn = j.mn[0];
    *mx = j.mx[0];
    for (int t = 1; t < tasks; t++) {
        *mn = j.mn[t] < *mn ? j.mn[t] : *mn;
        *mx = j.mx[t] > *mx ? j.mx[t] : *mx;
    }
}

/* x (CHW, or HWC where hwc) quantized with q into dst (HWC). */
static void quantize_par(cpu_ctx *c, const float *x, int hwc, int ch, int hw, mpd_qparams q,
                         int8_t *dst)
{
    quant_job j = {.x = x, .c = ch, .hw = hw, .q = q, .dst = dst, .hwc = hwc};
    int tasks = c->threads * 2;
    j.chunk = (hw + tasks - 1) / tasks;
    mpd__tpool_run(c->ex.pool, (hw + j.chunk - 1) / j.chunk, quant_task, &j);
}

/* The int8 convolution of image b: quantize the input unless the producer
 * already wrote int8, then run the kernel into fp32 or int8. A layer that
 * runs through the fp32 GEMM (mpd__conv_i8_choose) gets its input as
 * centred values in xf instead. */
static int conv_int8(cpu_ctx *c, const cpu_plan *ps, int i, int b, void *y, char *msg,
                     size_t msglen)
{
    const mpd_layer *l = &c->net->layers[i];
    const mpd__conv_i8_weights *w = &ps->w8[i];
    const int hw = l->in_h * l->in_w;
    mpd_tensor_type t;
    const void *x = tensor(c, ps, i - 1, b, &t);
    const int8_t *x8 = NULL;
    const float *xf = NULL;
    /* oneDNN's layers may read an fp32 HWC producer as it is. */
    const int hwc_in = ps->dconv[i] && t == MPD_TENSOR_F32 && i > 0 && ps->hwc[i - 1];
    if (t == MPD_TENSOR_I8)
        x8 = x;
    else
        xf = hwc_in ? x : input_f32(c, ps, i, b);
    mpd_qparams xq;
    if (!fixed_input_q(ps, i, &xq)) {
        /* Affine, or no calibration: this tensor's own range, measured now
         * (an int8 input's is always fixed). */
        float mn, mx;
        range_par(c, xf, l->in_c, hw, &mn, &mx);
        xq = ps->plan->scheme == MPD_SCHEME_AFFINE ? mpd_q_affine(mn, mx)
                                                   : mpd_q_symmetric(-mn > mx ? -mn : mx);
    }
    const int out8 = ps->type[i] == MPD_TENSOR_I8;
    const float inv_out = out8 ? 1.f / ps->oq[i].scale : 1.f;
    if (ps->dconv[i]) { /* xq is the one it was made for (plan_create) */
        if (!x8) {
            quantize_par(c, xf, hwc_in, l->in_c, hw, xq, c->x8);
            x8 = c->x8;
        }
        /* An fp32 output is HWC: kept where the plan keeps it so, else
         * through xf (free once the input is quantized) into CHW. */
        int direct = out8 || ps->hwc[i];
        int rc = dnnl_run(c, ps, i, b, x8, y, direct, msg, msglen);
        if (rc == 0 && !direct)
            hwc_to_chw_par(c, c->xf, l->out_c, l->out_h * l->out_w, y);
        return rc;
    }
    if (w->wf) {
        centred_par(c, xf, x8, l->in_c, hw, xq, c->xf);
        mpd__conv_i8_centred(l, w, c->xf, xq, out8 ? NULL : y, out8 ? y : NULL, inv_out, &c->ex);
        return 0;
    }
    if (!x8) {
        quantize_par(c, xf, 0, l->in_c, hw, xq, c->x8);
        x8 = c->x8;
    }
    mpd__conv_i8(l, w, x8, xq, out8 ? NULL : y, out8 ? y : NULL, inv_out, &c->ex);
    return 0;
}

/* fp16 and emulated bf16 on a oneDNN fp32 primitive of the rounded
 * weights: the input as fp32 HWC in xh (bf16: rounded; an HWC producer's
 * read as it is), the output HWC in xf, then stored as the plan says. */
static int conv_rounded(cpu_ctx *c, const cpu_plan *ps, int i, int b, void *y, char *msg,
                        size_t msglen)
{
    const mpd_layer *l = &c->net->layers[i];
    const int hw = l->in_h * l->in_w, ohw = l->out_h * l->out_w, n = l->in_c * hw;
    const int bf16 = ps->plan->prec[i] == MPD_PREC_BF16;
    const mpd_tensor_type yt = ps->type[i];
    mpd_tensor_type t;
    tensor(c, ps, i - 1, b, &t);
    const float *x = input_hwc_f32(c, ps, i, b);
    if (!x || (!c->xh && !(c->xh = malloc(c->max_in * sizeof(float)))) ||
        (yt == MPD_TENSOR_F16 && !c->yf && !(c->yf = malloc(c->max_out * sizeof(float)))))
        return mpd__fail(msg, msglen, MPD_ENOMEM, "cpu backend: out of memory for fp16/bf16");
    if (bf16 && t != MPD_TENSOR_BF16) { /* a bf16 input is bf16 values already */
        bf16_par(c, BF16_ROUND, x, c->xh, 1, n);
        x = c->xh;
    }
    int rc = dnnl_run(c, ps, i, b, x, y, ps->hwc[i], msg, msglen);
    if (rc)
        return rc;
    if (ps->hwc[i]) { /* kept HWC; fp16's output takes half values (plan_create) */
        if (!bf16 && !ps->pend[i])
            convert_par(c, y, y, mpd_layer_out_size(l), ROUND_HALF);
    } else if (yt == MPD_TENSOR_BF16) { /* HWC both: 1 x n */
        bf16_par(c, BF16_FROM_CHW, c->xf, y, 1, l->out_c * ohw);
    } else if (yt == MPD_TENSOR_F16) {
        hwc_to_chw_par(c, c->xf, l->out_c, ohw, c->yf);
        convert_par(c, c->yf, y, mpd_layer_out_size(l), TO_HALF);
    } else {
        hwc_to_chw_par(c, c->xf, l->out_c, ohw, y);
    }
    return 0;
}

/* An fp16 or bf16 convolution on our GEMMs: in the CPU's half or bf16
 * arithmetic where the plan packed its weights so, else sgemm on the
 * rounded weights (x: rounded values, fp32 CHW). */
static void conv_ours(cpu_ctx *c, const cpu_plan *ps, int i, const float *x, float *y)
{
    const mpd_layer *l = &c->net->layers[i];
    if (ps->h16[i] && ps->plan->prec[i] == MPD_PREC_BF16) {
        mpd__conv_bf16(l, ps->h16[i], x, y, &c->ex);
    } else if (ps->h16[i]) {
        mpd__conv_f16(l, ps->h16[i], x, y, &c->ex);
    } else {
        mpd_layer view = *l;
        view.u.conv.weights = ps->w16[i];
        mpd__conv_f32(&view, x, y, &c->ex);
    }
}

/* fp16: half-rounded weights, fp32 arithmetic, and the output rounded to
 * half when it is stored as half (through yf, which the context allocates
 * on its first such pass: plans come and go, a context holds it only once
 * it runs fp16). */
static int conv_fp16(cpu_ctx *c, const cpu_plan *ps, int i, int b, void *y, char *msg,
                     size_t msglen)
{
    const mpd_layer *l = &c->net->layers[i];
    if (ps->dconv[i])
        return conv_rounded(c, ps, i, b, y, msg, msglen);
    const float *x = input_f32(c, ps, i, b);
    const int out16 = ps->type[i] == MPD_TENSOR_F16;
    if (out16 && !c->yf && !(c->yf = malloc(c->max_out * sizeof(float))))
        return mpd__fail(msg, msglen, MPD_ENOMEM, "cpu backend: out of memory for fp16");
    conv_ours(c, ps, i, x, out16 ? c->yf : y);
    if (out16)
        convert_par(c, c->yf, y, mpd_layer_out_size(l), TO_HALF);
    return 0;
}

/* fp32: a oneDNN primitive on HWC (the producer's, or the input turned
 * HWC in xh), writing HWC (kept, or turned CHW from xf); else im2col +
 * sgemm. */
static int conv_fp32(cpu_ctx *c, const cpu_plan *ps, int i, int b, void *y, char *msg,
                     size_t msglen)
{
    const mpd_layer *l = &c->net->layers[i];
    if (!ps->dconv[i]) {
        mpd__conv_f32(l, input_f32(c, ps, i, b), y, &c->ex);
        return 0;
    }
    const float *x = input_hwc_f32(c, ps, i, b);
    if (!x)
        return mpd__fail(msg, msglen, MPD_ENOMEM, "cpu backend: out of memory for fp32");
    int rc = dnnl_run(c, ps, i, b, x, y, ps->hwc[i], msg, msglen);
    if (rc == 0 && !ps->hwc[i])
        hwc_to_chw_par(c, c->xf, l->out_c, l->out_h * l->out_w, y);
    return rc;
}

/* bf16: the input in bf16 (HWC) into a oneDNN primitive, or rounded to
 * bf16 (CHW) into the fp32 convolution with bf16-rounded weights; the
 * output rounded to bf16 when it is stored so. */
static int conv_bf16(cpu_ctx *c, const cpu_plan *ps, int i, int b, void *y, char *msg,
                     size_t msglen)
{
    const mpd_layer *l = &c->net->layers[i];
    const int hw = l->in_h * l->in_w, out16 = ps->type[i] == MPD_TENSOR_BF16;
    const int ohw = l->out_h * l->out_w;
    mpd_tensor_type t;
    const void *x = tensor(c, ps, i - 1, b, &t);
    if (ps->dconv[i] && !ps->emul[i]) {
        if (t != MPD_TENSOR_BF16) {
            if (!c->x16 && !(c->x16 = malloc(c->max_in * sizeof(uint16_t))))
                return mpd__fail(msg, msglen, MPD_ENOMEM, "cpu backend: out of memory for bf16");
            if (t == MPD_TENSOR_F32 && i > 0 && ps->hwc[i - 1]) /* HWC already: 1 x n */
                bf16_par(c, BF16_FROM_CHW, x, c->x16, 1, l->in_c * hw);
            else
                bf16_par(c, BF16_FROM_CHW, input_f32(c, ps, i, b), c->x16, l->in_c, hw);
            x = c->x16;
        }
        /* An fp32 output is HWC: kept where the plan keeps it so, else
         * through xf (free once the input is converted) into CHW. */
        int direct = out16 || ps->hwc[i];
        int rc = dnnl_run(c, ps, i, b, x, y, direct, msg, msglen);
        if (rc == 0 && !direct)
            hwc_to_chw_par(c, c->xf, l->out_c, ohw, y);
        return rc;
    }
    if (ps->dconv[i])
        return conv_rounded(c, ps, i, b, y, msg, msglen);
    const float *xf = input_f32(c, ps, i, b);
    if (t != MPD_TENSOR_BF16) { /* a bf16 input converts exactly */
        bf16_par(c, BF16_ROUND, xf, c->xf, l->in_c, hw);
        xf = c->xf;
    }
    if (out16 && !c->yf && !(c->yf = malloc(c->max_out * sizeof(float))))
        return mpd__fail(msg, msglen, MPD_ENOMEM, "cpu backend: out of memory for bf16");
    conv_ours(c, ps, i, xf, out16 ? c->yf : y);
    if (out16)
        bf16_par(c, BF16_FROM_CHW, c->yf, y, l->out_c, ohw);
    return 0;
}

static int cpu_forward_layer(void *p, const void *state, int i, int batch, char *msg, size_t msglen)
{
    cpu_ctx *c = p;
    const cpu_plan *ps = state;
    if (i < 0 || i >= c->net->n || batch < 1 || batch > c->max_batch || !ps)
        return mpd__fail(msg, msglen, MPD_EINVAL, "layer %d / batch %d out of range", i, batch);
    const mpd_layer *l = &c->net->layers[i];
    for (int b = 0; b < batch; b++) {
        mpd_tensor_type yt;
        void *y = (void *)tensor(c, ps, i, b, &yt);
        switch (l->kind) {
        case MPD_LAYER_CONV: {
            static int (*const conv[MPD_PREC_COUNT])(cpu_ctx *, const cpu_plan *, int, int, void *,
                                                     char *, size_t) = {
                [MPD_PREC_FP32] = conv_fp32,
                [MPD_PREC_FP16] = conv_fp16,
                [MPD_PREC_INT8] = conv_int8,
                [MPD_PREC_BF16] = conv_bf16,
            };
            int rc = conv[ps->plan->prec[i]](c, ps, i, b, y, msg, msglen);
            if (rc)
                return rc;
            break;
        }
        case MPD_LAYER_MAXPOOL: {
            if (i > 0 && ps->fuse[i - 1]) /* its convolution ran it */
                break;
            mpd_tensor_type xt;
            const void *x = tensor(c, ps, i - 1, b, &xt);
            if (yt == MPD_TENSOR_I8 || yt == MPD_TENSOR_BF16 || ps->hwc[i]) {
                maxpool_hwc(c, l, x, y, yt);
                if (ps->pend[i - 1])
                    convert_par(c, y, y, mpd_layer_out_size(l), ROUND_HALF);
            } else
                per_channel(c, l, input_f32(c, ps, i, b), y, 4, maxpool_f32);
            break;
        }
        case MPD_LAYER_UPSAMPLE:
            per_channel(c, l, input_f32(c, ps, i, b), y, 4, upsample_f32);
            break;
        case MPD_LAYER_YOLO: mpd__yolo_f32(l, input_f32(c, ps, i, b), y); break;
        case MPD_LAYER_SHORTCUT: {
            mpd_tensor_type ft;
            const float *from = tensor(c, ps, l->u.shortcut.from, b, &ft);
            mpd__shortcut_f32(l, input_f32(c, ps, i, b), from, y);
            break;
        }
        case MPD_LAYER_ROUTE: {
            float *dst = y;
            for (int r = 0; r < l->u.route.n; r++) {
                int f = l->u.route.from[r];
                mpd_tensor_type ft;
                const void *src = tensor(c, ps, f, b, &ft);
                const mpd_layer *fl = &c->net->layers[f];
                if (ps->hwc[f]) /* not by plan_create's rule; for any reader */
                    hwc_to_chw_par(c, src, fl->out_c, fl->out_h * fl->out_w, dst);
                else
                    to_f32(src, ft, ps->oq[f], fl->out_c, fl->out_h * fl->out_w, dst);
                dst += mpd_layer_out_size(fl);
            }
            break;
        }
        }
    }
    return 0;
}

static int cpu_sync(void *p, char *msg, size_t msglen)
{
    (void)p;
    (void)msg;
    (void)msglen;
    return 0;
}

static int cpu_read_output(void *p, const void *state, int i, int batch, float *dst, char *msg,
                           size_t msglen)
{
    cpu_ctx *c = p;
    const cpu_plan *ps = state;
    if (i < 0 || i >= c->net->n || batch < 1 || batch > c->max_batch || !ps)
        return mpd__fail(msg, msglen, MPD_EINVAL, "layer %d / batch %d out of range", i, batch);
    const mpd_layer *l = &c->net->layers[i];
    size_t n = mpd_layer_out_size(l);
    for (int b = 0; b < batch; b++) {
        mpd_tensor_type t;
        const void *src = tensor(c, ps, i, b, &t);
        if (ps->hwc[i])
            hwc_to_chw_par(c, src, l->out_c, l->out_h * l->out_w, dst + (size_t)b * n);
        else
            to_f32(src, t, ps->oq[i], l->out_c, l->out_h * l->out_w, dst + (size_t)b * n);
        if (ps->pend[i])
            convert_par(c, dst + (size_t)b * n, dst + (size_t)b * n, n, ROUND_HALF);
    }
    return 0;
}

static const float *cpu_output_host(void *p, const void *state, int i)
{
    cpu_ctx *c = p;
    const cpu_plan *ps = state;
    if (i < 0 || i >= c->net->n || !ps || ps->type[i] != MPD_TENSOR_F32 || ps->hwc[i])
        return NULL;
    return c->out[i];
}

static const char *cpu_layer_kernel(void *p, const void *state, int i)
{
    (void)p;
    const cpu_plan *ps = state;
    if (!ps)
        return "fp32 GEMM";
    switch (ps->plan->prec[i]) {
    case MPD_PREC_INT8:
        return ps->dconv[i] ? mpd__dnnl_conv_name(ps->dconv[i])
               : ps->w8[i].wf ? "int8 on the fp32 GEMM (exact)"
                              : "int8 GEMM";
    case MPD_PREC_FP16:
        return ps->dconv[i] ? mpd__dnnl_conv_name(ps->dconv[i])
               : ps->h16[i] ? "fp16 in half arithmetic (" MPD_F16_ISA
                              ": 16-tap half sums into fp32)"
                            : "fp16 emulated (half-rounded values, fp32 GEMM)";
    case MPD_PREC_FP32: return ps->dconv[i] ? mpd__dnnl_conv_name(ps->dconv[i]) : "fp32 GEMM";
    case MPD_PREC_BF16:
        return ps->dconv[i] ? mpd__dnnl_conv_name(ps->dconv[i])
               : ps->h16[i] ? "bf16 on BFDOT (ARMv8.6 BF16: fp32 sums rounded to odd)"
                            : "bf16 emulated (bf16-rounded values, fp32 GEMM)";
    default: return "fp32 GEMM";
    }
}

static void cpu_describe(void *p, char *buf, size_t len)
{
    cpu_ctx *c = p;
    int dnnl = fp32_on_dnnl(), bf16 = bf16_on_dnnl();
    snprintf(buf, len,
             "cpu: %d threads; fp32 %sOpenBLAS sgemm (%s kernels, chosen by %s); int8 GEMM %s; "
             "fp16 conversions %s%s; bf16 %s",
             c->threads, dnnl ? "oneDNN NHWC convolutions, else " : "", mpd__blas_core(),
             mpd__blas_core_source(), mpd__gemm_i8_name(mpd__gemm_i8_best()), mpd__half_impl(),
             mpd__f16_arith() ? ", arithmetic in half (" MPD_F16_ISA ")" : "",
             bf16                ? "on oneDNN (bf16 instructions)"
             : mpd__bf16_arith() ? "on BFDOT (ARMv8.6 BF16)"
                                 : "emulated");
}

const mpd_backend_ops mpd__cpu_backend_ops = {
    .describe = cpu_describe,
    .layer_kernel = cpu_layer_kernel,
    .name = "cpu",
    .memory = "host",
    .create = cpu_create,
    .upload_weights = cpu_upload,
    .clone = cpu_clone,
    .own_bytes = cpu_own_bytes,
    .plan_bytes = cpu_plan_bytes,
    .supports = cpu_supports,
    .plan_create = cpu_plan_create,
    .plan_destroy = cpu_plan_destroy,
    .set_input = cpu_set_input,
    .set_input_rgb = cpu_set_input_rgb,
    .forward_layer = cpu_forward_layer,
    .sync = cpu_sync,
    .read_output = cpu_read_output,
    .output_host = cpu_output_host,
    .destroy = cpu_destroy,
};
