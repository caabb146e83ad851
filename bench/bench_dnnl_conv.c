/* bench_dnnl_conv - oneDNN convolution primitives on yolov3-tiny's 13
 * convolution shapes, per precision and layout, beside our own kernels'
 * per-layer times: the measurement behind issue 13, item 2 (would oneDNN's
 * convolutions beat im2col + GEMM + epilogue on x86?). bench/run runs it
 * with --no-ours: oneDNN's fp32 and int8 convolutions alone, summed over
 * the layers, bound what the 4x int8 target can reach through oneDNN
 * (after the tables, conv_ms.t<threads>.<variant>.L<layer>=ms lines give
 * the medians to scripts).
 *
 *   bench_dnnl_conv [--threads 1,2] [--reps N] [--blocks N] [--warmup N] [--layer I]
 *                   [--check] [--min] [--model-dir DIR] [--plans DIR] [--no-ours]
 *
 * Every variant is a forward-inference convolution with its bias and the
 * layer's activation fused as post-ops (eltwise relu with alpha 0.1 = leaky;
 * layers 15 and 22 are linear), batch 1, stride 1, "same" padding, on
 * random data; the weights are reordered to the primitive's layout once,
 * untimed, as a loader would.
 *   fp32   src/dst nchw (our layout), nhwc, and format any (the primitive's
 *          choice); "+in" and "+out" are the reorders from and to nchw,
 *          timed apart: they are paid only where a oneDNN layer meets one of
 *          ours.
 *   int8   s8 weights with per-output-channel scales (2.x: one output scale
 *          per channel, applied after the bias, which is then passed
 *          divided by it; 3.x: src, weights and dst scales, the real bias
 *          added after the first two, as our epilogue), src s8 or u8 nhwc, dst s8 nhwc,
 * requantized, with an eltwise clip to [-127, 127] after the activation because our kernels never
 *          see -128 (host/quant.h); s8 with a src zero point (the affine
 *          scheme); s8 format any (+in/+out from and to s8 nhwc); and on the
 *          linear layers, which feed the yolo layers, dst f32 nchw directly
 *          or f32 nhwc plus a reorder to nchw.
 *   bf16   src/dst bf16 nhwc and format any, f32 bias; +in/+out from and to
 *          f32 nchw (the conversion included). f16 is tried too and shows
 *          n/a where the library has no implementation.
 * The 2x2 max pools after layers 0-10 are a separate pooling primitive on
 * the convolution's output layout: oneDNN 2.6 has no pooling post-op.
 * A few capabilities (f16, zero points on src and weights) are probed first
 * in child processes.
 *
 * Our kernels run in the same process through the public engine, one engine
 * per plan with every convolution in one precision (config/fp32_all,
 * int8_every, fp16_all: our fp16 is the column beside bf16, both halve the
 * activation bytes, ours computes in fp32 through sgemm), on random input;
 * "ours" is the engine's own time of the layer (and of its pool) in a pass.
 *
 * A oneDNN round executes each op of each variant of each layer once, an
 * engine round runs one forward pass of each of our engines: --reps rounds
 * of each after --warmup, in --blocks alternating blocks (oneDNN's rounds,
 * a pause, ours, a pause: the two libraries' spinning threads must not meet)
 * so that a shared machine slows all alike, and the caches are as cold as in
 * a network pass. Cells are medians (with --min, a second set of tables
 * gives the minima); the totals rows sum the medians and the minima.
 * Threads: OpenMP for oneDNN (omp_set_num_threads before the primitives are
 * created: oneDNN partitions the work at creation), the engine's own pool
 * for ours; run it as bench/run runs bench_forward, with OMP_NUM_THREADS
 * and OPENBLAS_NUM_THREADS set to the thread count. Built
 * against a oneDNN 3.x (the program compiles against both APIs) it cannot
 * link libmpdet, which uses Debian's 2.x, and times oneDNN only:
 *   cc -std=c11 -O3 -Ihost -IDIR/include -fopenmp bench/bench_dnnl_conv.c
 *      bench/benchutil.c -LDIR/lib -Wl,-rpath,DIR/lib -ldnnl -lm
 *
 * --check compares each variant's output on every layer with a naive
 * reference: fp32 and bf16 with a double-precision loop (bf16 on the
 * bf16-rounded inputs), int8 with int32 accumulation followed by our own
 * epilogue (host/quant.h), which should agree but for the last rounding of
 * the requantization. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"
#include "half.h"
#include "quant.h"

#if !defined(MPD_NO_DNNL) && defined(__has_include)
#if __has_include(<dnnl.h>)
#define HAVE_DNNL 1
#endif
#endif

#ifndef HAVE_DNNL
int main(void)
{
    printf("bench_dnnl_conv: built without oneDNN (no dnnl.h or libdnnl): nothing to measure\n");
    return 0;
}
#else

#include <dnnl.h>
#include <dnnl_debug.h>
#include <omp.h>

/* ---- the layers ------------------------------------------------------------- */

/* pool: the max pool after the layer, 2 = 2x2 stride 2, 1 = 2x2 stride 1
 * with darknet's padding on the right and bottom (13x13 stays 13x13). */
typedef struct {
    int idx, ic, oc, k, hw, leaky, pool;
} shape;

static const shape LAYERS[] = {
    {0, 3, 16, 3, 416, 1, 2},     {2, 16, 32, 3, 208, 1, 2},    {4, 32, 64, 3, 104, 1, 2},
    {6, 64, 128, 3, 52, 1, 2},    {8, 128, 256, 3, 26, 1, 2},   {10, 256, 512, 3, 13, 1, 1},
    {12, 512, 1024, 3, 13, 1, 0}, {13, 1024, 256, 1, 13, 1, 0}, {14, 256, 512, 3, 13, 1, 0},
    {15, 512, 255, 1, 13, 0, 0},  {18, 256, 128, 1, 13, 1, 0},  {21, 384, 256, 3, 26, 1, 0},
    {22, 256, 255, 1, 26, 0, 0},
};
enum { NLAYERS = sizeof(LAYERS) / sizeof(LAYERS[0]) };

/* ---- the variants ----------------------------------------------------------- */

enum { G_F32, G_I8, G_BF16, NGROUPS };
static const char *const GROUP_NAME[NGROUPS] = {"fp32", "int8", "bf16/f16"};
/* Our plan compared with each group (every conv in that precision). */
static const char *const GROUP_PLAN[NGROUPS] = {"fp32_all", "int8_every", "fp16_all"};

#define ANY dnnl_format_tag_any
typedef struct {
    const char *name;
    int group;
    dnnl_data_type_t sdt, wdt, ddt;
    dnnl_format_tag_t stag, dtag;
    int zp;          /* a src zero point (the affine scheme) */
    int linear_only; /* only layers 15 and 22 */
    int reorders;    /* time the reorders from (R_IN) and to (R_OUT) the plain layouts */
} variant;
enum { R_IN = 1, R_OUT = 2, R_BOTH = 3 };

static const variant VARIANTS[] = {
    {"f32 nchw", G_F32, dnnl_f32, dnnl_f32, dnnl_f32, dnnl_nchw, dnnl_nchw, 0, 0, 0},
    {"f32 nhwc", G_F32, dnnl_f32, dnnl_f32, dnnl_f32, dnnl_nhwc, dnnl_nhwc, 0, 0, R_BOTH},
    {"f32 any", G_F32, dnnl_f32, dnnl_f32, dnnl_f32, ANY, ANY, 0, 0, R_BOTH},
    {"s8 nhwc", G_I8, dnnl_s8, dnnl_s8, dnnl_s8, dnnl_nhwc, dnnl_nhwc, 0, 0, 0},
    {"u8 nhwc", G_I8, dnnl_u8, dnnl_s8, dnnl_s8, dnnl_nhwc, dnnl_nhwc, 0, 0, 0},
    {"s8+zp nhwc", G_I8, dnnl_s8, dnnl_s8, dnnl_s8, dnnl_nhwc, dnnl_nhwc, 1, 0, 0},
    {"s8 any", G_I8, dnnl_s8, dnnl_s8, dnnl_s8, ANY, ANY, 0, 0, R_BOTH},
    {"s8>f32 nchw", G_I8, dnnl_s8, dnnl_s8, dnnl_f32, dnnl_nhwc, dnnl_nchw, 0, 1, 0},
    {"s8>f32 nhwc", G_I8, dnnl_s8, dnnl_s8, dnnl_f32, dnnl_nhwc, dnnl_nhwc, 0, 1, R_OUT},
    {"bf16 nhwc", G_BF16, dnnl_bf16, dnnl_bf16, dnnl_bf16, dnnl_nhwc, dnnl_nhwc, 0, 0, R_BOTH},
    {"bf16 any", G_BF16, dnnl_bf16, dnnl_bf16, dnnl_bf16, ANY, ANY, 0, 0, R_BOTH},
    {"f16 any", G_BF16, dnnl_f16, dnnl_f16, dnnl_f16, ANY, ANY, 0, 0, R_BOTH},
};
enum { NVARIANTS = sizeof(VARIANTS) / sizeof(VARIANTS[0]) };

/* The src zero point of the "+zp" variant. */
enum { SRC_ZP = 3 };

/* The layouts the rest of our engine hands over and takes back: f32 CHW,
 * int8 HWC. */
static dnnl_data_type_t plain_dt(const variant *v, int out)
{
    return v->group == G_I8 && !(out && v->ddt == dnnl_f32) ? dnnl_s8 : dnnl_f32;
}

static dnnl_format_tag_t plain_tag(const variant *v, int out)
{
    return plain_dt(v, out) == dnnl_s8 ? dnnl_nhwc : dnnl_nchw;
}

static const variant *variant_named(const char *name)
{
    for (int v = 0; v < NVARIANTS; v++)
        if (!strcmp(VARIANTS[v].name, name))
            return &VARIANTS[v];
    return NULL;
}

/* ---- small helpers ------------------------------------------------------------ */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static unsigned rng = 12345;
static float frand(void) /* uniform in [-1, 1) */
{
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.f - 1.f;
}

static int8_t rand_i8(void) /* -127..127, our quantizers' range */
{
    rng = rng * 1664525u + 1013904223u;
    return (int8_t)((int)(rng >> 24) % 255 - 127);
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p) {
        fprintf(stderr, "bench_dnnl_conv: out of memory\n");
        exit(1);
    }
    return p;
}

/* f16 rounding (to nearest even) of a float, as a float. */
static float f16_round(float f)
{
    return mpd_f16_to_f32(mpd_f32_to_f16(f));
}

/* bf16 rounding (to nearest even) of a finite float, as a float. */
static float bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- oneDNN plumbing ---------------------------------------------------------- */

static dnnl_engine_t eng;
static dnnl_stream_t strm;

/* Records the first failing call (for the n/a cells) and jumps to fail. */
#define TRY(call)                                                                                  \
    do {                                                                                           \
        dnnl_status_t st_ = (call);                                                                \
        if (st_ != dnnl_success) {                                                                 \
            snprintf(why, sizeof(why), "%s", dnnl_status2str(st_));                                \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* Memory descriptors: values in the 2.x API, opaque handles from 3.0 on.
 * cmd_t is a descriptor passed in (never owned); mdesc one we own, released
 * by md_free whatever happened. */
#if DNNL_VERSION_MAJOR >= 3
#define DNNL_V3 1
typedef const_dnnl_memory_desc_t cmd_t;
typedef struct {
    dnnl_memory_desc_t p;
} mdesc;
#else
typedef const dnnl_memory_desc_t *cmd_t;
typedef struct {
    dnnl_memory_desc_t v;
} mdesc;
#endif

static dnnl_status_t md_tag(mdesc *m, int nd, const dnnl_dims_t dims, dnnl_data_type_t dt,
                            dnnl_format_tag_t tag)
{
#ifdef DNNL_V3
    return dnnl_memory_desc_create_with_tag(&m->p, nd, dims, dt, tag);
#else
    return dnnl_memory_desc_init_by_tag(&m->v, nd, dims, dt, tag);
#endif
}

static dnnl_status_t md_copy(mdesc *m, cmd_t src)
{
#ifdef DNNL_V3
    return dnnl_memory_desc_clone(&m->p, src);
#else
    m->v = *src;
    return dnnl_success;
#endif
}

static cmd_t md_get(const mdesc *m)
{
#ifdef DNNL_V3
    return m->p;
#else
    return &m->v;
#endif
}

static void md_free(mdesc *m)
{
#ifdef DNNL_V3
    if (m->p)
        dnnl_memory_desc_destroy(m->p);
    m->p = NULL;
#else
    (void)m;
#endif
}

/* A memory descriptor's layout in oneDNN's notation (e.g. aBcd16b). */
static void md_layout(cmd_t md, char *buf, size_t cap)
{
    int nd, nblks;
    const dnnl_dim_t *strides, *blks, *idxs;
#ifdef DNNL_V3
    dnnl_format_kind_t fk = dnnl_format_kind_undef;
    const dnnl_dims_t *qs = NULL, *qb = NULL, *qi = NULL;
    dnnl_memory_desc_query(md, dnnl_query_format_kind, &fk);
    if (fk != dnnl_blocked) {
        snprintf(buf, cap, "%s", dnnl_fmt_kind2str(fk));
        return;
    }
    if (dnnl_memory_desc_query(md, dnnl_query_ndims_s32, &nd) != dnnl_success ||
        dnnl_memory_desc_query(md, dnnl_query_inner_nblks_s32, &nblks) != dnnl_success ||
        dnnl_memory_desc_query(md, dnnl_query_strides, &qs) != dnnl_success ||
        dnnl_memory_desc_query(md, dnnl_query_inner_blks, &qb) != dnnl_success ||
        dnnl_memory_desc_query(md, dnnl_query_inner_idxs, &qi) != dnnl_success) {
        snprintf(buf, cap, "?");
        return;
    }
    strides = *qs;
    blks = *qb;
    idxs = *qi;
#else
    if (md->format_kind != dnnl_blocked) {
        snprintf(buf, cap, "%s", dnnl_fmt_kind2str((dnnl_format_kind_t)md->format_kind));
        return;
    }
    nd = md->ndims;
    nblks = md->format_desc.blocking.inner_nblks;
    strides = md->format_desc.blocking.strides;
    blks = md->format_desc.blocking.inner_blks;
    idxs = md->format_desc.blocking.inner_idxs;
#endif
    int order[DNNL_MAX_NDIMS], blocked[DNNL_MAX_NDIMS] = {0};
    for (int i = 0; i < nd; i++)
        order[i] = i;
    /* Outer dimensions by decreasing stride (stable). */
    for (int i = 1; i < nd; i++)
        for (int j = i; j > 0 && strides[order[j]] > strides[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (int i = 0; i < nblks; i++)
        blocked[idxs[i]] = 1;
    size_t n = 0;
    for (int i = 0; i < nd && n + 1 < cap; i++)
        buf[n++] = (char)((blocked[order[i]] ? 'A' : 'a') + order[i]);
    for (int i = 0; i < nblks && n + 8 < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%d%c", (int)blks[i], 'a' + (int)idxs[i]);
    buf[n < cap ? n : cap - 1] = 0;
}

/* A primitive with its arguments; the scratchpad is ours (user mode), as in
 * host/cpu/gemm_i8.c. */
typedef struct {
    dnnl_primitive_t prim;
    dnnl_exec_arg_t args[10];
    int nargs;
    dnnl_memory_t own[10]; /* memories this op allocated */
    int nown;
    char impl[96];
} op;

static void op_free(op *o)
{
    if (o->prim)
        dnnl_primitive_destroy(o->prim);
    for (int i = 0; i < o->nown; i++)
        dnnl_memory_destroy(o->own[i]);
    memset(o, 0, sizeof(*o));
}

static dnnl_status_t op_run(const op *o)
{
    dnnl_status_t st = dnnl_primitive_execute(o->prim, strm, o->nargs, o->args);
    return st != dnnl_success ? st : dnnl_stream_wait(strm);
}

/* Takes pd (destroyed here): creates the primitive, its scratchpad and the
 * implementation name. */
static dnnl_status_t op_make(op *o, dnnl_primitive_desc_t pd)
{
    const char *impl = NULL;
    dnnl_status_t st = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    snprintf(o->impl, sizeof(o->impl), "%s", st == dnnl_success && impl ? impl : "?");
    cmd_t sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (st == dnnl_success && sp && dnnl_memory_desc_get_size(sp) > 0) {
        dnnl_memory_t m;
        st = dnnl_memory_create(&m, sp, eng, DNNL_MEMORY_ALLOCATE);
        if (st == dnnl_success) {
            o->own[o->nown++] = m;
            o->args[o->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, m};
        }
    }
    if (st == dnnl_success)
        st = dnnl_primitive_create(&o->prim, pd);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

static dnnl_primitive_attr_t user_scratchpad_attr(void)
{
    dnnl_primitive_attr_t a = NULL;
    if (dnnl_primitive_attr_create(&a) != dnnl_success)
        return NULL;
    dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user);
    return a;
}

/* A reorder from src to dst (memories owned by the caller). */
static dnnl_status_t reorder_make(op *o, dnnl_memory_t src, dnnl_memory_t dst)
{
    cmd_t smd, dmd;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t a = user_scratchpad_attr();
    dnnl_status_t st = a ? dnnl_success : dnnl_out_of_memory;
    if (st == dnnl_success)
        st = dnnl_memory_get_memory_desc(src, &smd);
    if (st == dnnl_success)
        st = dnnl_memory_get_memory_desc(dst, &dmd);
    if (st == dnnl_success)
        st = dnnl_reorder_primitive_desc_create(&pd, smd, eng, dmd, eng, a);
    dnnl_primitive_attr_destroy(a);
    if (st != dnnl_success)
        return st;
    o->args[o->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_FROM, src};
    o->args[o->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_TO, dst};
    return op_make(o, pd);
}

/* Copies the logical tensor `data` (plain layout dt/tag, dims) into m,
 * whatever m's layout and type: one reorder. */
static dnnl_status_t fill(dnnl_memory_t m, int nd, const dnnl_dims_t dims, dnnl_data_type_t dt,
                          dnnl_format_tag_t tag, const void *data)
{
    mdesc md = {0};
    dnnl_memory_t user = NULL;
    op r = {0};
    dnnl_status_t st = md_tag(&md, nd, dims, dt, tag);
    if (st == dnnl_success)
        st = dnnl_memory_create(&user, md_get(&md), eng, (void *)data);
    if (st == dnnl_success)
        st = reorder_make(&r, user, m);
    if (st == dnnl_success)
        st = op_run(&r);
    op_free(&r);
    if (user)
        dnnl_memory_destroy(user);
    md_free(&md);
    return st;
}

/* Copies m (any layout) into `out`, laid out as dt/tag. */
static dnnl_status_t unfill(dnnl_memory_t m, int nd, const dnnl_dims_t dims, dnnl_data_type_t dt,
                            dnnl_format_tag_t tag, void *out)
{
    mdesc md = {0};
    dnnl_memory_t user = NULL;
    op r = {0};
    dnnl_status_t st = md_tag(&md, nd, dims, dt, tag);
    if (st == dnnl_success)
        st = dnnl_memory_create(&user, md_get(&md), eng, out);
    if (st == dnnl_success)
        st = reorder_make(&r, m, user);
    if (st == dnnl_success)
        st = op_run(&r);
    op_free(&r);
    if (user)
        dnnl_memory_destroy(user);
    md_free(&md);
    return st;
}

/* ---- per-layer data ------------------------------------------------------------- */

/* The layer's tensors in plain layouts (nchw / oihw), fp32 and int8, and
 * the quantization parameters of the int8 variants. */
typedef struct {
    const shape *s;
    int n;                   /* output pixels */
    float *xf, *wf, *bf;     /* fp32: input, weights, bias */
    int8_t *x8, *w8;         /* int8 codes (-127..127) */
    uint8_t *xu8;            /* |x8|: the u8 variant's input */
    float sx, *sw, *breal;   /* scales and the real bias of the int8 layer */
    float *bias_q;           /* breal / (sx * sw): oneDNN adds the bias before scaling */
    float *osc_s8, *osc_f32; /* output scales for dst s8 and dst f32 */
    float inv_out;
} layer_data;

static void layer_data_init(layer_data *d, const shape *s)
{
    size_t nx = (size_t)s->ic * s->hw * s->hw, nw = (size_t)s->oc * s->ic * s->k * s->k;
    int kk = s->ic * s->k * s->k;
    memset(d, 0, sizeof(*d));
    d->s = s;
    d->n = s->hw * s->hw;
    d->xf = xcalloc(nx, sizeof(float));
    d->wf = xcalloc(nw, sizeof(float));
    d->bf = xcalloc((size_t)s->oc, sizeof(float));
    d->x8 = xcalloc(nx, 1);
    d->xu8 = xcalloc(nx, 1);
    d->w8 = xcalloc(nw, 1);
    d->sw = xcalloc((size_t)s->oc, sizeof(float));
    d->breal = xcalloc((size_t)s->oc, sizeof(float));
    d->bias_q = xcalloc((size_t)s->oc, sizeof(float));
    d->osc_s8 = xcalloc((size_t)s->oc, sizeof(float));
    d->osc_f32 = xcalloc((size_t)s->oc, sizeof(float));
    float wr = sqrtf(3.f / (float)kk); /* unit variance outputs */
    for (size_t i = 0; i < nx; i++) {
        d->xf[i] = frand();
        d->x8[i] = rand_i8();
        d->xu8[i] = (uint8_t)abs(d->x8[i]);
    }
    for (size_t i = 0; i < nw; i++) {
        d->wf[i] = wr * frand();
        d->w8[i] = rand_i8();
    }
    /* Uniform codes in [-127, 127] have variance 127^2 / 3, so a product
     * sum over kk has a standard deviation of about 5376 sqrt(kk). The
     * output scale puts 3 of those at the top of the int8 range. */
    d->sx = 0.02f;
    float sw_mean = 0.01f, sd = d->sx * sw_mean * 5376.f * sqrtf((float)kk);
    d->inv_out = 127.f / (3.f * sd);
    for (int o = 0; o < s->oc; o++) {
        d->bf[o] = 0.5f * frand();
        d->sw[o] = sw_mean * (1.f + 0.5f * frand());
        d->breal[o] = sd * frand();
        float sc = d->sx * d->sw[o];
        d->bias_q[o] = d->breal[o] / sc;
        d->osc_f32[o] = sc;
        d->osc_s8[o] = sc * d->inv_out;
    }
}

static void layer_data_free(layer_data *d)
{
    free(d->xf);
    free(d->wf);
    free(d->bf);
    free(d->x8);
    free(d->xu8);
    free(d->w8);
    free(d->sw);
    free(d->breal);
    free(d->bias_q);
    free(d->osc_s8);
    free(d->osc_f32);
}

/* ---- one variant on one layer ------------------------------------------------- */

typedef struct {
    const variant *v;
    int ok;
    char why[96];
    op conv, rin, rout, pool;
    dnnl_memory_t src, dst;
    char layout[48]; /* the conv's dst layout (the src's when it differs) */
    /* Timings of the rounds (ms); rin/rout/pool only when made. */
    double *t[4];
} run;

enum { T_CONV, T_RIN, T_ROUT, T_POOL };

static void run_free(run *r)
{
    op_free(&r->conv);
    op_free(&r->rin);
    op_free(&r->rout);
    op_free(&r->pool);
    for (int i = 0; i < 4; i++)
        free(r->t[i]);
    memset(r, 0, sizeof(*r));
}

static dnnl_status_t attr_eltwise(dnnl_post_ops_t po, dnnl_alg_kind_t alg, float alpha, float beta)
{
#ifdef DNNL_V3
    return dnnl_post_ops_append_eltwise(po, alg, alpha, beta);
#else
    return dnnl_post_ops_append_eltwise(po, 1.f, alg, alpha, beta);
#endif
}

/* The int8 attributes. 2.x: one output scale per channel (s_x s_w[o], times
 * 1/s_out for an int8 dst) applied to acc + bias, so the bias is passed
 * divided by s_x s_w[o]; zero points fixed at creation (zp_mode 1) or given
 * at run time (2). 3.x: src, weights and dst scales apart, given at run time,
 * the real bias added after the src and weights scales, the post-ops on real
 * values and the dst scale last; zero points only at run time. */
static dnnl_status_t attr_int8(dnnl_primitive_attr_t a, const shape *s, const variant *v,
                               const layer_data *d, int zp_mode, int wei_zp)
{
    dnnl_status_t st = dnnl_success;
#ifdef DNNL_V3
    (void)d;
    (void)s;
    if ((st = dnnl_primitive_attr_set_scales_mask(a, DNNL_ARG_SRC, 0)) != dnnl_success ||
        (st = dnnl_primitive_attr_set_scales_mask(a, DNNL_ARG_WEIGHTS, 1 << 0)) != dnnl_success)
        return st;
    if (v->ddt == dnnl_s8 &&
        (st = dnnl_primitive_attr_set_scales_mask(a, DNNL_ARG_DST, 0)) != dnnl_success)
        return st;
    if (zp_mode &&
        (st = dnnl_primitive_attr_set_zero_points_mask(a, DNNL_ARG_SRC, 0)) != dnnl_success)
        return st;
    if (wei_zp &&
        (st = dnnl_primitive_attr_set_zero_points_mask(a, DNNL_ARG_WEIGHTS, 0)) != dnnl_success)
        return st;
#else
    const float *sc = v->ddt == dnnl_s8 ? d->osc_s8 : d->osc_f32;
    if ((st = dnnl_primitive_attr_set_output_scales(a, s->oc, 1 << 1, sc)) != dnnl_success)
        return st;
    if (zp_mode) {
        int32_t z = zp_mode == 1 ? SRC_ZP : DNNL_RUNTIME_S32_VAL;
        if ((st = dnnl_primitive_attr_set_zero_points(a, DNNL_ARG_SRC, 1, 0, &z)) != dnnl_success)
            return st;
    }
    if (wei_zp) {
        int32_t z = wei_zp == 1 ? 1 : DNNL_RUNTIME_S32_VAL;
        if ((st = dnnl_primitive_attr_set_zero_points(a, DNNL_ARG_WEIGHTS, 1, 0, &z)) !=
            dnnl_success)
            return st;
    }
#endif
    return st;
}

static dnnl_status_t conv_pd(dnnl_primitive_desc_t *pd, const shape *s, const variant *v,
                             const layer_data *d, int zp_mode, int wei_zp)
{
    dnnl_dims_t sdims = {1, s->ic, s->hw, s->hw}, ddims = {1, s->oc, s->hw, s->hw};
    dnnl_dims_t wdims = {s->oc, s->ic, s->k, s->k}, bdims = {s->oc};
    dnnl_dims_t strides = {1, 1}, pad = {s->k / 2, s->k / 2};
    mdesc smd = {0}, wmd = {0}, bmd = {0}, dmd = {0};
    dnnl_primitive_attr_t a = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_status_t st;
    if ((st = md_tag(&smd, 4, sdims, v->sdt, v->stag)) != dnnl_success ||
        (st = md_tag(&wmd, 4, wdims, v->wdt, ANY)) != dnnl_success ||
        (st = md_tag(&bmd, 1, bdims, dnnl_f32, dnnl_a)) != dnnl_success ||
        (st = md_tag(&dmd, 4, ddims, v->ddt, v->dtag)) != dnnl_success)
        goto done;
    if (!(a = user_scratchpad_attr())) {
        st = dnnl_out_of_memory;
        goto done;
    }
    if ((st = dnnl_post_ops_create(&po)) != dnnl_success)
        goto done;
    if (v->group == G_I8 && (st = attr_int8(a, s, v, d, zp_mode, wei_zp)) != dnnl_success)
        goto done;
    if (s->leaky && (st = attr_eltwise(po, dnnl_eltwise_relu, .1f, 0.f)) != dnnl_success)
        goto done;
        /* oneDNN saturates to [-128, 127]; our int8 kernels rely on -128 never
         * occurring (host/quant.h). In 3.x the clip sees real values, before
         * the dst scale. */
#ifdef DNNL_V3
    const float qmax = (float)MPD_QMAX / d->inv_out;
#else
    const float qmax = (float)MPD_QMAX;
#endif
    if (v->ddt == dnnl_s8 &&
        (st = attr_eltwise(po, dnnl_eltwise_clip, -qmax, qmax)) != dnnl_success)
        goto done;
    if ((st = dnnl_primitive_attr_set_post_ops(a, po)) != dnnl_success)
        goto done;
#ifdef DNNL_V3
    st = dnnl_convolution_forward_primitive_desc_create(
        pd, eng, dnnl_forward_inference, dnnl_convolution_direct, md_get(&smd), md_get(&wmd),
        md_get(&bmd), md_get(&dmd), strides, NULL, pad, pad, a);
#else
    dnnl_convolution_desc_t cd;
    if ((st = dnnl_convolution_forward_desc_init(
             &cd, dnnl_forward_inference, dnnl_convolution_direct, md_get(&smd), md_get(&wmd),
             md_get(&bmd), md_get(&dmd), strides, pad, pad)) == dnnl_success)
        st = dnnl_primitive_desc_create(pd, &cd, a, eng, NULL);
#endif
done:
    if (po)
        dnnl_post_ops_destroy(po);
    if (a)
        dnnl_primitive_attr_destroy(a);
    md_free(&smd);
    md_free(&wmd);
    md_free(&bmd);
    md_free(&dmd);
    return st;
}

/* The zero point mode the library accepts (1 fixed, 2 runtime), found once. */
static int zp_mode_ok;

/* A plain f32 or s32 vector of n values as a memory the op owns, passed to
 * the op as argument arg (run-time scales and zero points). */
static dnnl_status_t op_vector(op *o, int arg, dnnl_data_type_t dt, int n, const void *vals)
{
    mdesc md = {0};
    dnnl_dims_t dims = {n};
    dnnl_memory_t m = NULL;
    void *h = NULL;
    dnnl_status_t st = md_tag(&md, 1, dims, dt, dnnl_a);
    if (st == dnnl_success)
        st = dnnl_memory_create(&m, md_get(&md), eng, DNNL_MEMORY_ALLOCATE);
    md_free(&md);
    if (st != dnnl_success)
        return st;
    o->own[o->nown++] = m;
    if ((st = dnnl_memory_get_data_handle(m, &h)) != dnnl_success)
        return st;
    memcpy(h, vals, (size_t)n * 4);
    o->args[o->nargs++] = (dnnl_exec_arg_t){arg, m};
    return dnnl_success;
}

static int run_setup(run *r, const variant *v, const layer_data *d)
{
    const shape *s = d->s;
    char why[96] = "";
    dnnl_primitive_desc_t pd = NULL, ppd = NULL;
    dnnl_primitive_attr_t pa = NULL;
    dnnl_memory_t wei = NULL, bias = NULL, pin = NULL, pout = NULL, pdst = NULL;
    dnnl_dims_t sdims = {1, s->ic, s->hw, s->hw}, ddims = {1, s->oc, s->hw, s->hw};
    dnnl_dims_t wdims = {s->oc, s->ic, s->k, s->k}, bdims = {s->oc};
    /* dmd is a copy: pd goes with op_make, and the pool needs the layout. */
    mdesc dmd = {0}, md = {0}, pmd = {0};
    memset(r, 0, sizeof(*r));
    r->v = v;
    TRY(conv_pd(&pd, s, v, d, v->zp ? zp_mode_ok : 0, 0));
    cmd_t smd = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    cmd_t wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    cmd_t bmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1);
    TRY(md_copy(&dmd, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0)));
    char sl[24], dl[24];
    md_layout(smd, sl, sizeof(sl));
    md_layout(md_get(&dmd), dl, sizeof(dl));
    if (strcmp(sl, dl))
        snprintf(r->layout, sizeof(r->layout), "%s>%s", sl, dl);
    else
        snprintf(r->layout, sizeof(r->layout), "%s", dl);
    op *c = &r->conv;
    TRY(dnnl_memory_create(&r->src, smd, eng, DNNL_MEMORY_ALLOCATE));
    c->own[c->nown++] = r->src;
    TRY(dnnl_memory_create(&wei, wmd, eng, DNNL_MEMORY_ALLOCATE));
    c->own[c->nown++] = wei;
    TRY(dnnl_memory_create(&bias, bmd, eng, DNNL_MEMORY_ALLOCATE));
    c->own[c->nown++] = bias;
    TRY(dnnl_memory_create(&r->dst, md_get(&dmd), eng, DNNL_MEMORY_ALLOCATE));
    c->own[c->nown++] = r->dst;
    /* The data, whatever the layouts the primitive chose. */
    if (v->group == G_I8) {
        TRY(fill(r->src, 4, sdims, v->sdt, dnnl_nchw, v->sdt == dnnl_u8 ? (void *)d->xu8 : d->x8));
        TRY(fill(wei, 4, wdims, dnnl_s8, dnnl_oihw, d->w8));
    } else {
        TRY(fill(r->src, 4, sdims, dnnl_f32, dnnl_nchw, d->xf));
        TRY(fill(wei, 4, wdims, dnnl_f32, dnnl_oihw, d->wf));
    }
#ifdef DNNL_V3
    const float *bias_i8 = d->breal;
#else
    const float *bias_i8 = d->bias_q;
#endif
    TRY(fill(bias, 1, bdims, dnnl_f32, dnnl_a, v->group == G_I8 ? bias_i8 : d->bf));
    c->args[c->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, r->src};
    c->args[c->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, wei};
    c->args[c->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, bias};
    c->args[c->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, r->dst};
    if (v->zp && zp_mode_ok == 2) {
        int32_t z = SRC_ZP;
        TRY(op_vector(c, DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, dnnl_s32, 1, &z));
    }
#ifdef DNNL_V3
    if (v->group == G_I8) {
        float dsc = 1.f / d->inv_out;
        TRY(op_vector(c, DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, dnnl_f32, 1, &d->sx));
        TRY(op_vector(c, DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, dnnl_f32, s->oc, d->sw));
        if (v->ddt == dnnl_s8)
            TRY(op_vector(c, DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST, dnnl_f32, 1, &dsc));
    }
#endif
    TRY(op_make(c, pd));
    pd = NULL;
    /* From the plain layout of the rest of the engine into the src, and
     * from the dst back. */
    if (v->reorders & R_IN) {
        TRY(md_tag(&md, 4, sdims, plain_dt(v, 0), plain_tag(v, 0)));
        TRY(dnnl_memory_create(&pin, md_get(&md), eng, DNNL_MEMORY_ALLOCATE));
        md_free(&md);
        r->rin.own[r->rin.nown++] = pin;
        TRY(fill(pin, 4, sdims, plain_dt(v, 0), dnnl_nchw,
                 v->group == G_I8 ? (void *)d->x8 : d->xf));
        TRY(reorder_make(&r->rin, pin, r->src));
    }
    if (v->reorders & R_OUT) {
        TRY(md_tag(&md, 4, ddims, plain_dt(v, 1), plain_tag(v, 1)));
        TRY(dnnl_memory_create(&pout, md_get(&md), eng, DNNL_MEMORY_ALLOCATE));
        md_free(&md);
        r->rout.own[r->rout.nown++] = pout;
        TRY(reorder_make(&r->rout, r->dst, pout));
    }
    if (s->pool) {
        int st1 = s->pool == 1, ph = st1 ? s->hw : s->hw / 2;
        dnnl_dims_t pdims = {1, s->oc, ph, ph}, kern = {2, 2}, dil = {0, 0};
        dnnl_dims_t pst = {st1 ? 1 : 2, st1 ? 1 : 2}, pl = {0, 0};
        dnnl_dims_t pr = {st1, st1}; /* darknet pads the right and bottom */
        TRY((pa = user_scratchpad_attr()) ? dnnl_success : dnnl_out_of_memory);
        TRY(md_tag(&pmd, 4, pdims, v->ddt, ANY));
#ifdef DNNL_V3
        TRY(dnnl_pooling_forward_primitive_desc_create(&ppd, eng, dnnl_forward_inference,
                                                       dnnl_pooling_max, md_get(&dmd), md_get(&pmd),
                                                       pst, kern, dil, pl, pr, pa));
#else
        dnnl_pooling_v2_desc_t pdsc;
        TRY(dnnl_pooling_v2_forward_desc_init(&pdsc, dnnl_forward_inference, dnnl_pooling_max,
                                              md_get(&dmd), md_get(&pmd), pst, kern, dil, pl, pr));
        TRY(dnnl_primitive_desc_create(&ppd, &pdsc, pa, eng, NULL));
#endif
        TRY(dnnl_memory_create(&pdst, dnnl_primitive_desc_query_md(ppd, dnnl_query_dst_md, 0), eng,
                               DNNL_MEMORY_ALLOCATE));
        r->pool.own[r->pool.nown++] = pdst;
        r->pool.args[r->pool.nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, r->dst};
        r->pool.args[r->pool.nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, pdst};
        TRY(op_make(&r->pool, ppd));
        ppd = NULL;
    }
    r->ok = 1;
fail:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (ppd)
        dnnl_primitive_desc_destroy(ppd);
    if (pa)
        dnnl_primitive_attr_destroy(pa);
    md_free(&dmd);
    md_free(&md);
    md_free(&pmd);
    if (r->ok)
        return 0;
    run_free(r);
    r->v = v;
    snprintf(r->why, sizeof(r->why), "%s", why);
    return -1;
}

/* ---- references ------------------------------------------------------------------ */

/* y[o][p] (double, nchw) = bias + sum over the window, then the activation. */
static void ref_f32(const shape *s, const float *x, const float *w, const float *b, double *y)
{
    int hw = s->hw, k = s->k, pad = k / 2;
    for (int o = 0; o < s->oc; o++)
        for (int oy = 0; oy < hw; oy++)
            for (int ox = 0; ox < hw; ox++) {
                double acc = b[o];
                for (int c = 0; c < s->ic; c++)
                    for (int ky = 0; ky < k; ky++) {
                        int iy = oy + ky - pad;
                        if (iy < 0 || iy >= hw)
                            continue;
                        for (int kx = 0; kx < k; kx++) {
                            int ix = ox + kx - pad;
                            if (ix < 0 || ix >= hw)
                                continue;
                            acc += (double)x[((size_t)c * hw + iy) * hw + ix] *
                                   w[(((size_t)o * s->ic + c) * k + ky) * k + kx];
                        }
                    }
                y[((size_t)o * hw + oy) * hw + ox] = s->leaky && acc < 0 ? 0.1 * acc : acc;
            }
}

/* int32 accumulators acc[o][p] = sum (x - zx) * w over the window; x is
 * int8 or uint8 (u8 != 0), nchw. Padding contributes nothing: the zero
 * point stands for 0, as in our im2row. */
static void ref_acc(const shape *s, const void *x, int u8, int zx, const int8_t *w, int32_t *acc)
{
    int hw = s->hw, k = s->k, pad = k / 2;
    for (int o = 0; o < s->oc; o++)
        for (int oy = 0; oy < hw; oy++)
            for (int ox = 0; ox < hw; ox++) {
                int32_t a = 0;
                for (int c = 0; c < s->ic; c++)
                    for (int ky = 0; ky < k; ky++) {
                        int iy = oy + ky - pad;
                        if (iy < 0 || iy >= hw)
                            continue;
                        for (int kx = 0; kx < k; kx++) {
                            int ix = ox + kx - pad;
                            if (ix < 0 || ix >= hw)
                                continue;
                            size_t xi = ((size_t)c * hw + iy) * hw + ix;
                            int xv = u8 ? ((const uint8_t *)x)[xi] : ((const int8_t *)x)[xi];
                            a += (xv - zx) * w[(((size_t)o * s->ic + c) * k + ky) * k + kx];
                        }
                    }
                acc[((size_t)o * hw + oy) * hw + ox] = a;
            }
}

/* Our epilogue (host/cpu/conv_i8.c) on the accumulators. */
static float ours_real(const layer_data *d, int o, int32_t acc)
{
    float v = mpd_q_epilogue(acc, d->sx * d->sw[o], d->breal[o]);
    return d->s->leaky ? mpd_q_leaky(v) : v;
}

/* Compares one variant's output with the reference; prints one line. */
static void check(const run *r, const layer_data *d)
{
    const shape *s = d->s;
    const variant *v = r->v;
    size_t ny = (size_t)s->oc * d->n;
    dnnl_dims_t ddims = {1, s->oc, s->hw, s->hw};
    printf("check layer=%-2d variant=%-12s ", s->idx, v->name);
    if (v->group == G_I8) {
        int32_t *acc = xcalloc(ny, sizeof(int32_t));
        ref_acc(s, v->sdt == dnnl_u8 ? (const void *)d->xu8 : d->x8, v->sdt == dnnl_u8,
                v->zp ? SRC_ZP : 0, d->w8, acc);
        if (v->ddt == dnnl_s8) {
            int8_t *y = xcalloc(ny, 1);
            long mism = 0, m128 = 0, sat = 0;
            int maxd = 0;
            if (unfill(r->dst, 4, ddims, dnnl_s8, dnnl_nchw, y) != dnnl_success) {
                printf("FAILED (reorder)\n");
            } else {
                for (size_t i = 0; i < ny; i++) {
                    int o = (int)(i / (size_t)d->n);
                    int q = mpd_q_quantize(ours_real(d, o, acc[i]), d->inv_out, 0);
                    int dd = abs(q - y[i]);
                    mism += dd != 0;
                    maxd = dd > maxd ? dd : maxd;
                    m128 += y[i] == -128;
                    sat += q == MPD_QMAX || q == MPD_QMIN;
                }
                printf("int8 vs int32 ref + our epilogue: mismatches=%ld/%zu (%.4f%%) "
                       "max_abs_diff=%d (int8 units) minus128=%ld saturated_ref=%.2f%%\n",
                       mism, ny, 100.0 * (double)mism / (double)ny, maxd, m128,
                       100.0 * (double)sat / (double)ny);
            }
            free(y);
        } else {
            float *y = xcalloc(ny, sizeof(float));
            double maxref = 0, maxd = 0;
            if (unfill(r->dst, 4, ddims, dnnl_f32, dnnl_nchw, y) != dnnl_success) {
                printf("FAILED (reorder)\n");
            } else {
                for (size_t i = 0; i < ny; i++) {
                    double ref = ours_real(d, (int)(i / (size_t)d->n), acc[i]);
                    maxref = fmax(maxref, fabs(ref));
                    maxd = fmax(maxd, fabs(ref - y[i]));
                }
                printf("f32 out vs int32 ref + our epilogue: max_abs_diff/max|ref|=%.2e\n",
                       maxref > 0 ? maxd / maxref : maxd);
            }
            free(y);
        }
        free(acc);
        return;
    }
    size_t nx = (size_t)s->ic * d->n, nw = (size_t)s->oc * s->ic * s->k * s->k;
    const float *x = d->xf, *w = d->wf;
    float *xr = NULL, *wr = NULL;
    if (v->group == G_BF16) {
        /* The reference on the rounded inputs: what is left is the
         * accumulation and the rounding of the output. */
        float (*rnd)(float) = v->sdt == dnnl_f16 ? f16_round : bf16_round;
        xr = xcalloc(nx, sizeof(float));
        wr = xcalloc(nw, sizeof(float));
        for (size_t i = 0; i < nx; i++)
            xr[i] = rnd(d->xf[i]);
        for (size_t i = 0; i < nw; i++)
            wr[i] = rnd(d->wf[i]);
        x = xr;
        w = wr;
    }
    double *ref = xcalloc(ny, sizeof(double));
    float *y = xcalloc(ny, sizeof(float));
    ref_f32(s, x, w, d->bf, ref);
    if (unfill(r->dst, 4, ddims, dnnl_f32, dnnl_nchw, y) != dnnl_success) {
        printf("FAILED (reorder)\n");
    } else {
        double maxref = 0, maxd = 0, maxrel = 0;
        for (size_t i = 0; i < ny; i++)
            maxref = fmax(maxref, fabs(ref[i]));
        for (size_t i = 0; i < ny; i++) {
            double e = fabs(ref[i] - y[i]);
            maxd = fmax(maxd, e);
            if (fabs(ref[i]) > 1e-2 * maxref)
                maxrel = fmax(maxrel, e / fabs(ref[i]));
        }
        printf("vs double ref%s: max_abs_diff/max|ref|=%.2e max_rel_err=%.2e "
               "(|ref| > 1%% of max)\n",
               v->group != G_BF16   ? ""
               : v->sdt == dnnl_f16 ? " on f16-rounded inputs"
                                    : " on bf16-rounded inputs",
               maxd / maxref, maxrel);
    }
    free(ref);
    free(y);
    free(xr);
    free(wr);
}

/* ---- our kernels, through the public engine ----------------------------------------- */

enum { MAX_THREADS_LIST = 8, MAX_LAYER = 64 };

/* libmpdet links Debian's oneDNN 2.x (its int8 GEMM): a build against
 * another oneDNN (3.x) times oneDNN only. */
#if DNNL_VERSION_MAJOR < 3
#define HAVE_ENGINE 1
#include "engine.h"
#endif

/* One engine per precision plan; every round runs one forward pass of each
 * and keeps every layer's time in that pass. */
typedef struct {
    const char *plan;
    char kernels[256];
#ifdef HAVE_ENGINE
    mpd_engine *e;
#endif
    int nl;
    float *input;
    double *t; /* t[layer * reps + rep], ms */
} ours_engine;

/* 0, -1 on an error (printed), 1 where this build cannot run our engine. */
static int ours_open(ours_engine *o, const char *model_dir, int threads, int reps)
{
#ifdef HAVE_ENGINE
    bu_model m;
    char msg[512];
    bu_model_paths(model_dir, &m);
    /* "ours" are our own int8 kernels: the engine would otherwise run
     * these very oneDNN convolutions (host/cpu/conv_dnnl.c). */
    setenv("MPDET_INT8_KERNEL", "exact", 1);
    mpd_engine_options opt = {.cfg_path = m.cfg,
                              .weights_path = m.weights,
                              .names_path = m.names,
                              .backend = "cpu",
                              .threads = threads,
                              .max_batch = 1,
                              .plan_path = o->plan};
    int rc = mpd_engine_open(&opt, &o->e, msg, sizeof(msg));
    if (rc) {
        fprintf(stderr, "bench_dnnl_conv: %s: %s (%s)\n", o->plan, msg, mpd_strerror(rc));
        o->e = NULL;
        return -1;
    }
    mpd_engine_describe(o->e, o->kernels, sizeof(o->kernels));
    int c, h, w;
    mpd_engine_input_shape(o->e, &c, &h, &w);
    o->input = xcalloc((size_t)c * h * w, sizeof(float));
    for (size_t i = 0; i < (size_t)c * h * w; i++) /* timing does not depend on the image */
        o->input[i] = 0.5f + 0.5f * frand();
    o->nl = mpd_engine_layer_count(o->e);
    o->t = xcalloc((size_t)o->nl * reps, sizeof(double));
    return 0;
#else
    (void)model_dir, (void)threads, (void)reps;
    snprintf(o->kernels, sizeof(o->kernels), "not timed: built against oneDNN %d",
             DNNL_VERSION_MAJOR);
    return 1;
#endif
}

static int ours_pass(ours_engine *o, int rep, int reps)
{
#ifdef HAVE_ENGINE
    char msg[512];
    if (!o->e)
        return 0;
    int rc = mpd_engine_forward(o->e, o->input, 1, msg, sizeof(msg));
    if (rc) {
        fprintf(stderr, "bench_dnnl_conv: %s: forward: %s\n", o->plan, msg);
        return -1;
    }
    for (int i = 0; i < o->nl && rep >= 0; i++) {
        mpd_layer_info li;
        if (mpd_engine_last_layer_info(o->e, i, &li) == 0)
            o->t[(size_t)i * reps + rep] = li.last_ms;
    }
#else
    (void)o, (void)rep, (void)reps;
#endif
    return 0;
}

static void ours_close(ours_engine *o)
{
#ifdef HAVE_ENGINE
    mpd_engine_close(o->e);
    o->e = NULL;
#endif
    free(o->input);
    free(o->t);
    o->input = NULL;
    o->t = NULL;
}

/* ---- capabilities ------------------------------------------------------------------ */

/* Tries to create the primitive descriptor in a child process: oneDNN
 * 2.6.3 crashes on some attributes instead of refusing them. */
static void probe(const char *what, const shape *s, const variant *v, const layer_data *d,
                  int zp_mode, int wei_zp)
{
    printf("  %-44s ", what);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dnnl_primitive_desc_t pd = NULL;
        dnnl_status_t st = conv_pd(&pd, s, v, d, zp_mode, wei_zp);
        const char *impl = NULL;
        if (st == dnnl_success)
            dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
        printf("%s%s\n", st == dnnl_success ? "yes: " : "no: ",
               st == dnnl_success ? (impl ? impl : "?") : dnnl_status2str(st));
        fflush(stdout);
        _exit(0);
    }
    int ws = 0;
    if (pid < 0 || waitpid(pid, &ws, 0) != pid)
        printf("? (fork failed)\n");
    else if (WIFSIGNALED(ws))
        printf("no: the library crashes (signal %d) creating it\n", WTERMSIG(ws));
}

static void capabilities(void)
{
    const shape *s = &LAYERS[3]; /* 64->128 3x3 52x52 */
    const variant *s8 = variant_named("s8 nhwc"), *f16 = variant_named("f16 any");
    if (!s8 || !f16)
        return;
    layer_data d;
    layer_data_init(&d, s);
    printf("capabilities (layer %d shape; 'no' = the primitive descriptor is refused):\n", s->idx);
    probe("f16 src/wei/dst convolution", s, f16, &d, 0, 0);
#ifdef DNNL_V3
    /* 3.x has run-time zero points only. */
    probe("s8: src zero point (run time)", s, s8, &d, 2, 0);
    probe("s8: weights zero point (run time)", s, s8, &d, 0, 2);
    zp_mode_ok = 2;
#else
    probe("s8: src zero point, fixed at creation", s, s8, &d, 1, 0);
    probe("s8: src zero point, given at run time", s, s8, &d, 2, 0);
    probe("s8: weights zero point, fixed at creation", s, s8, &d, 0, 1);
    probe("s8: weights zero point, given at run time", s, s8, &d, 0, 2);
    dnnl_primitive_desc_t pd = NULL;
    zp_mode_ok = conv_pd(&pd, s, s8, &d, 1, 0) == dnnl_success ? 1 : 2;
    if (pd)
        dnnl_primitive_desc_destroy(pd);
#endif
    /* There is no API to probe for a post-op kind that does not exist. */
    printf("  post-op kinds in this API: sum, eltwise, depthwise conv, binary, prelu "
           "(no pooling)\n\n");
    layer_data_free(&d);
}

/* ---- the tables ---------------------------------------------------------------------- */

typedef struct {
    double med[4], min[4];
    int has[4];
    int ok;
    char impl[96], pool_impl[96], layout[48], why[96];
} cell;

/* One column of a table: a variant's conv, reorder or pool times. */
typedef struct {
    int v, k;
} column;

static int group_columns(int g, int pool, column *cols)
{
    int n = 0;
    for (int v = 0; v < NVARIANTS; v++) {
        const variant *x = &VARIANTS[v];
        if (x->group != g)
            continue;
        if (pool) {
            if (!x->linear_only)
                cols[n++] = (column){v, T_POOL};
            continue;
        }
        cols[n++] = (column){v, T_CONV};
        if (x->reorders & R_IN)
            cols[n++] = (column){v, T_RIN};
        if (x->reorders & R_OUT)
            cols[n++] = (column){v, T_ROUT};
    }
    return n;
}

/* Our times of one layer: median and minimum over the rounds, by darknet
 * layer index; med < 0 where there are none. */
typedef struct {
    double med[MAX_LAYER], min[MAX_LAYER];
} ours_times;

/* One table: the cells are medians, or minima where use_min. */
static void print_group(int g, int threads, cell (*cells)[NVARIANTS], const int *layers, int nl,
                        int reps, const ours_engine *oe, const ours_times *ot, int use_min)
{
    column cc[3 * NVARIANTS], pc[NVARIANTS];
    int ncc = group_columns(g, 0, cc), npc = group_columns(g, 1, pc);
    printf("== %s, %d thread(s): ms per layer, %s of %d rounds (totals: sums of the medians "
           "and of the minima) ==\n",
           GROUP_NAME[g], threads, use_min ? "MINIMUM" : "median", reps);
    printf("   ours: %s, %s\n", oe->plan, oe->kernels);
    printf("%-3s %-15s %8s", "L", "shape", "ours");
    for (int i = 0; i < ncc; i++)
        printf(cc[i].k == T_CONV ? " %12s" : " %6s", cc[i].k == T_CONV  ? VARIANTS[cc[i].v].name
                                                     : cc[i].k == T_RIN ? "+in"
                                                                        : "+out");
    printf(" | pool %6s", "ours");
    for (int i = 0; i < npc; i++)
        printf(" %12s", VARIANTS[pc[i].v].name);
    printf("\n");
    double tot_ours = 0, tot_pool_ours = 0, tot_ours_min = 0, tot_pool_ours_min = 0;
    double tot[2][3 * NVARIANTS] = {{0}}, ptot[2][NVARIANTS] = {{0}};
    int nours_l = 0, npool_l = 0, any[3 * NVARIANTS] = {0}, pany[NVARIANTS] = {0};
    for (int li = 0; li < nl; li++) {
        const shape *s = &LAYERS[layers[li]];
        char shp[32];
        snprintf(shp, sizeof(shp), "%d>%d k%d %d", s->ic, s->oc, s->k, s->hw);
        printf("%-3d %-15s", s->idx, shp);
        double o = ot->med[s->idx];
        if (o >= 0) {
            printf(" %8.3f", use_min ? ot->min[s->idx] : o);
            tot_ours += o;
            tot_ours_min += ot->min[s->idx];
            nours_l++;
        } else {
            printf(" %8s", "-");
        }
        for (int i = 0; i < ncc; i++) {
            const cell *c = &cells[li][cc[i].v];
            int w = cc[i].k == T_CONV ? 12 : 6;
            if (c->ok && c->has[cc[i].k]) {
                printf(" %*.3f", w, use_min ? c->min[cc[i].k] : c->med[cc[i].k]);
                tot[0][i] += c->med[cc[i].k];
                tot[1][i] += c->min[cc[i].k];
                any[i] = 1;
            } else {
                int skipped = VARIANTS[cc[i].v].linear_only && s->leaky;
                printf(" %*s", w, skipped ? "" : cc[i].k == T_CONV ? "n/a" : "-");
            }
        }
        double po = s->pool ? ot->med[s->idx + 1] : -1;
        if (po >= 0) {
            printf(" | pool %6.3f", use_min ? ot->min[s->idx + 1] : po);
            tot_pool_ours += po;
            tot_pool_ours_min += ot->min[s->idx + 1];
            npool_l++;
        } else {
            printf(" | pool %6s", "");
        }
        for (int i = 0; i < npc; i++) {
            const cell *c = &cells[li][pc[i].v];
            if (c->ok && c->has[T_POOL]) {
                printf(" %12.3f", use_min ? c->min[T_POOL] : c->med[T_POOL]);
                ptot[0][i] += c->med[T_POOL];
                ptot[1][i] += c->min[T_POOL];
                pany[i] = 1;
            } else {
                printf(" %12s", "");
            }
        }
        printf("\n");
    }
    for (int m = 0; m < 2; m++) {
        printf("%-19s", m ? "total, sum of min" : "total, medians");
        if (nours_l)
            printf(" %8.3f", m ? tot_ours_min : tot_ours);
        else
            printf(" %8s", "");
        for (int i = 0; i < ncc; i++) {
            int w = cc[i].k == T_CONV ? 12 : 6;
            if (any[i])
                printf(" %*.3f", w, tot[m][i]);
            else
                printf(" %*s", w, "-");
        }
        if (npool_l)
            printf(" | pool %6.3f", m ? tot_pool_ours_min : tot_pool_ours);
        else
            printf(" | pool %6s", "");
        for (int i = 0; i < npc; i++) {
            if (pany[i])
                printf(" %12.3f", ptot[m][i]);
            else
                printf(" %12s", "-");
        }
        printf("\n");
    }
    /* Implementations: one line per variant, layers grouped by name, each
     * with its src>dst layout. */
    for (int v = 0; v < NVARIANTS; v++) {
        if (VARIANTS[v].group != g)
            continue;
        int done[NLAYERS] = {0}, shown = 0;
        for (int li = 0; li < nl; li++) {
            const cell *c = &cells[li][v];
            if (done[li] || (VARIANTS[v].linear_only && LAYERS[layers[li]].leaky))
                continue;
            if (!shown++)
                printf("  impl %-12s:", VARIANTS[v].name);
            const char *key = c->ok ? c->impl : c->why;
            printf(" %s%s [", c->ok ? "" : "n/a: ", key);
            int first = 1;
            for (int lj = li; lj < nl; lj++) {
                const cell *cj = &cells[lj][v];
                if (done[lj] || cj->ok != c->ok || strcmp(cj->ok ? cj->impl : cj->why, key) ||
                    (VARIANTS[v].linear_only && LAYERS[layers[lj]].leaky))
                    continue;
                done[lj] = 1;
                printf("%s%d%s%s", first ? "" : ",", LAYERS[layers[lj]].idx, cj->ok ? ":" : "",
                       cj->ok ? cj->layout : "");
                first = 0;
            }
            printf("];");
        }
        if (shown)
            printf("\n");
    }
    /* The medians again, one per line, for bench/run:
     * conv_ms.t<threads>.<variant>.L<layer>=ms (the variant's name with
     * '_' for each space and '>'). */
    for (int i = 0; i < ncc && !use_min; i++) {
        char key[32];
        snprintf(key, sizeof(key), "%s", VARIANTS[cc[i].v].name);
        for (char *k = key; *k; k++)
            *k = *k == ' ' || *k == '>' ? '_' : *k;
        for (int li = 0; li < nl; li++) {
            const cell *c = &cells[li][cc[i].v];
            if (cc[i].k == T_CONV && c->ok && c->has[T_CONV])
                printf("conv_ms.t%d.%s.L%d=%.3f\n", threads, key, LAYERS[layers[li]].idx,
                       c->med[T_CONV]);
        }
    }
    for (int v = 0; v < NVARIANTS; v++) {
        for (int li = 0; li < nl; li++) {
            const cell *c = &cells[li][v];
            if (VARIANTS[v].group == g && c->ok && c->pool_impl[0]) {
                printf("  pool %-12s: %s\n", VARIANTS[v].name, c->pool_impl);
                break;
            }
        }
    }
    printf("\n");
}

/* ---- main ------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_dnnl_conv [--threads 1,2] [--reps N] [--blocks N] [--warmup N]\n"
               "                       [--layer I]\n"
               "                       [--check] [--min] [--model-dir DIR] [--plans DIR] "
               "[--no-ours]\n");
}

static double min_of(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++)
        m = v[i] < m ? v[i] : m;
    return m;
}

static void pause_ms(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Times one execution of each op of a variant; rep < 0: a warm-up round. */
static int run_round(run *r, int rep)
{
    const op *ops[4] = {&r->conv, &r->rin, &r->rout, &r->pool};
    for (int k = 0; k < 4; k++) {
        if (!ops[k]->prim)
            continue;
        double t0 = now();
        dnnl_status_t st = op_run(ops[k]);
        double t1 = now();
        if (st != dnnl_success) {
            snprintf(r->why, sizeof(r->why), "execute: %s", dnnl_status2str(st));
            r->ok = 0;
            return -1;
        }
        if (rep >= 0)
            r->t[k][rep] = 1e3 * (t1 - t0);
    }
    return 0;
}

static void run_summary(run *r, cell *c, int reps)
{
    c->ok = r->ok;
    snprintf(c->why, sizeof(c->why), "%s", r->why);
    if (!r->ok)
        return;
    const op *ops[4] = {&r->conv, &r->rin, &r->rout, &r->pool};
    for (int k = 0; k < 4; k++) {
        if (!ops[k]->prim)
            continue;
        c->has[k] = 1;
        c->min[k] = min_of(r->t[k], reps);
        c->med[k] = bu_median(r->t[k], reps);
    }
    snprintf(c->impl, sizeof(c->impl), "%s", r->conv.impl);
    snprintf(c->pool_impl, sizeof(c->pool_impl), "%s", r->pool.impl);
    snprintf(c->layout, sizeof(c->layout), "%s", r->layout);
}

int main(int argc, char **argv)
{
    int threads[MAX_THREADS_LIST] = {1}, nthreads = 1, reps = 20, warmup = 3, only = -1;
    int do_check = 0, no_ours = 0, show_min = 0, blocks = 3;
    const char *model_dir = bu_model_dir(), *plan_dir = "config";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--threads") && has) {
            char *list = argv[++i], *save = NULL;
            nthreads = 0;
            for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (nthreads == MAX_THREADS_LIST ||
                    bu_parse_int("bench_dnnl_conv", "--threads", t, 1, &threads[nthreads]))
                    return 2;
                nthreads++;
            }
            if (!nthreads)
                return usage(stderr), 2;
        } else if (!strcmp(a, "--reps") && has) {
            if (bu_parse_int("bench_dnnl_conv", a, argv[++i], 1, &reps))
                return 2;
        } else if (!strcmp(a, "--blocks") && has) {
            if (bu_parse_int("bench_dnnl_conv", a, argv[++i], 1, &blocks))
                return 2;
        } else if (!strcmp(a, "--warmup") && has) {
            if (bu_parse_int("bench_dnnl_conv", a, argv[++i], 0, &warmup))
                return 2;
        } else if (!strcmp(a, "--layer") && has) {
            if (bu_parse_int("bench_dnnl_conv", a, argv[++i], 0, &only))
                return 2;
        } else if (!strcmp(a, "--check")) {
            do_check = 1;
        } else if (!strcmp(a, "--model-dir") && has) {
            model_dir = argv[++i];
        } else if (!strcmp(a, "--plans") && has) {
            plan_dir = argv[++i];
        } else if (!strcmp(a, "--no-ours")) {
            no_ours = 1;
        } else if (!strcmp(a, "--min")) {
            show_min = 1;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    int layers[NLAYERS], nl = 0;
    for (int i = 0; i < NLAYERS; i++)
        if (only < 0 || LAYERS[i].idx == only)
            layers[nl++] = i;
    if (!nl) {
        fprintf(stderr, "bench_dnnl_conv: layer %d is not a convolution of yolov3-tiny\n", only);
        return 2;
    }
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&strm, eng, dnnl_stream_default_flags) != dnnl_success) {
        fprintf(stderr, "bench_dnnl_conv: no oneDNN CPU engine\n");
        return 1;
    }
    const dnnl_version_t *ver = dnnl_version();
    printf("oneDNN %d.%d.%d (%s), CPU runtime %s, effective ISA %s\n", ver->major, ver->minor,
           ver->patch, ver->hash ? ver->hash : "?", dnnl_runtime2str(ver->cpu_runtime),
           dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa()));
    printf("reps=%d warmup=%d; oneDNN: one execute + stream wait per op; ours: the engine's own "
           "time of the layer in a forward pass on random input; ms\n\n",
           reps, warmup);
    capabilities();

    cell(*cells)[NVARIANTS] = xcalloc(NLAYERS, sizeof(*cells));
    run(*runs)[NVARIANTS] = xcalloc(NLAYERS, sizeof(*runs));
    layer_data *data = xcalloc(NLAYERS, sizeof(*data));
    char plan_path[NGROUPS][4096];
    ours_engine oe[NGROUPS];
    ours_times *ot = xcalloc(NGROUPS, sizeof(*ot));
    int failed = 0;
    for (int ti = 0; ti < nthreads; ti++) {
        omp_set_num_threads(threads[ti]);
        memset(cells, 0, NLAYERS * sizeof(*cells));
        for (int li = 0; li < nl; li++) {
            layer_data_init(&data[li], &LAYERS[layers[li]]);
            for (int v = 0; v < NVARIANTS; v++) {
                memset(&runs[li][v], 0, sizeof(runs[li][v]));
                if (VARIANTS[v].linear_only && LAYERS[layers[li]].leaky)
                    continue;
                run_setup(&runs[li][v], &VARIANTS[v], &data[li]);
                for (int k = 0; k < 4 && runs[li][v].ok; k++)
                    runs[li][v].t[k] = xcalloc((size_t)reps, sizeof(double));
            }
        }
        for (int g = 0; g < NGROUPS; g++) {
            memset(&oe[g], 0, sizeof(oe[g]));
            snprintf(plan_path[g], sizeof(plan_path[g]), "%s/%s.plan", plan_dir, GROUP_PLAN[g]);
            oe[g].plan = plan_path[g];
            if (no_ours)
                snprintf(oe[g].kernels, sizeof(oe[g].kernels), "not timed (--no-ours)");
            else if (ours_open(&oe[g], model_dir, threads[ti], reps) < 0)
                failed = 1;
        }
        /* Blocks of rounds, oneDNN's then ours, with a pause between:
         * OpenBLAS's threads spin for a while after an sgemm and OpenMP's
         * after a parallel region, and on a machine with as many cores as
         * threads a spinning thread of one library delays every parallel
         * region of the other by a scheduler time slice. A oneDNN round is
         * one execution of every op of every variant of every layer; ours,
         * one forward pass of each plan. */
        int per_block = (reps + blocks - 1) / blocks;
        for (int b = 0; b * per_block < reps; b++) {
            int r0 = b * per_block, r1 = r0 + per_block < reps ? r0 + per_block : reps;
            for (int rep = b ? r0 : -warmup; rep < r1; rep++) {
                for (int li = 0; li < nl; li++)
                    for (int v = 0; v < NVARIANTS; v++)
                        if (runs[li][v].ok && run_round(&runs[li][v], rep))
                            failed = 1;
                if (rep == (warmup ? -1 : 0) && do_check && ti == 0)
                    for (int li = 0; li < nl; li++)
                        for (int v = 0; v < NVARIANTS; v++)
                            if (runs[li][v].ok)
                                check(&runs[li][v], &data[li]);
                fprintf(stderr, "\r  threads=%d oneDNN round %d/%d", threads[ti], rep + 1, reps);
            }
            pause_ms(300);
            for (int rep = b ? r0 : -warmup; rep < r1; rep++) {
                for (int g = 0; g < NGROUPS; g++)
                    if (ours_pass(&oe[g], rep, reps))
                        failed = 1;
                fprintf(stderr, "\r  threads=%d ours round %d/%d  ", threads[ti], rep + 1, reps);
            }
            pause_ms(300);
        }
        fprintf(stderr, "\n");
        for (int g = 0; g < NGROUPS; g++) {
            for (int i = 0; i < MAX_LAYER; i++) {
                ot[g].med[i] = -1;
                if (oe[g].t && i < oe[g].nl) {
                    double *t = &oe[g].t[(size_t)i * reps];
                    ot[g].min[i] = min_of(t, reps);
                    ot[g].med[i] = bu_median(t, reps);
                }
            }
        }
        for (int li = 0; li < nl; li++) {
            for (int v = 0; v < NVARIANTS; v++) {
                run_summary(&runs[li][v], &cells[li][v], reps);
                run_free(&runs[li][v]);
            }
            layer_data_free(&data[li]);
        }
        for (int m = 0; m <= show_min; m++)
            for (int g = 0; g < NGROUPS; g++)
                print_group(g, threads[ti], cells, layers, nl, reps, &oe[g], &ot[g], m);
        for (int g = 0; g < NGROUPS; g++)
            ours_close(&oe[g]);
    }
    free(ot);
    free(data);
    free(runs);
    free(cells);
    dnnl_stream_destroy(strm);
    dnnl_engine_destroy(eng);
    return failed;
}
#endif
