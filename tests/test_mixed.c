/* test_mixed.c - mixed precision end to end on the CPU backend:
 *   - the int8 convolution kernel is exact against a naive loop (int32
 *     accumulators; the epilogue's float operations in the same order),
 *     in both schemes, both output types and both ways of splitting work;
 *   - every layer's output under fp16 and int8 plans stays within stated
 *     bounds of fp32 on darknet's sample photos;
 *   - the presets detect what fp32 detects on dog.jpg; plans swap at run
 *     time and a bad plan leaves the old one in place. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "cpu/conv_dnnl.h"
#include "cpu/conv_i8.h"
#include "cpu/cpu_kernels.h"
#include "cpu/gemm_f16.h"
#include "cpu/half_cpu.h"
#include "engine.h"
#include "net.h"
#include "quant.h"
#include "testutil.h"

static char msg[1024];

/* ---- the kernel against a naive loop ------------------------------------ */

static mpd_net *one_conv_sized(const char *conv, int width, int height, int channels)
{
    char text[512];
    snprintf(text, sizeof(text), "[net]\nwidth=%d\nheight=%d\nchannels=%d\n[convolutional]\n%s",
             width, height, channels, conv);
    mpd_net *net = tu_net_from_text(text, "t.cfg", msg, sizeof(msg));
    assert_non_null(net);
    mpd_layer *l = &net->layers[0];
    size_t nw = (size_t)l->u.conv.filters * l->in_c * l->u.conv.size * l->u.conv.size;
    l->u.conv.weights = malloc(nw * sizeof(float));
    l->u.conv.bias = malloc((size_t)l->u.conv.filters * sizeof(float));
    tu_fill_random(l->u.conv.weights, nw, -1.f, 1.f, 5);
    tu_fill_random(l->u.conv.bias, (size_t)l->u.conv.filters, -.5f, .5f, 6);
    net->weights_loaded = 1;
    return net;
}

/* The int8 kernels' pool and scratch for l, sized as the backend sizes
 * them. */
static mpd__cpu_exec exec_for(const mpd_layer *l, int threads)
{
    mpd__cpu_exec ex = {0};
    assert_int_equal(mpd__tpool_create(threads, &ex.pool), 0);
    ex.ws = calloc((size_t)threads, sizeof(float *));
    for (int t = 0; t < threads; t++)
        ex.ws[t] = malloc(mpd__conv_i8_ws_worker(l, threads) + 64);
    ex.shared = malloc(mpd__conv_i8_ws_shared(l, threads) + 64);
    ex.scale = malloc((size_t)l->u.conv.filters * sizeof(float));
    return ex;
}

static void exec_free(mpd__cpu_exec *ex, int threads)
{
    for (int t = 0; t < threads; t++)
        free(ex->ws[t]);
    free(ex->ws);
    free(ex->shared);
    free(ex->scale);
    mpd__tpool_destroy(ex->pool);
}

static mpd_net *one_conv(const char *conv)
{
    return one_conv_sized(conv, 11, 9, 5);
}

/* The int8 convolution of net's only layer, on the given kernel ("int8",
 * the int8 GEMM; "fp32", the fp32 GEMM on centred values where the layer
 * allows it; NULL, the faster), against the naive loop. extreme: every
 * weight and input at the far end of its range, so each sum is the
 * largest the layer can make. Returns whether the fp32 GEMM ran. */
static int check_kernel_on(mpd_net *net, const char *conv, mpd_scheme scheme, int int8_out,
                           int threads, const char *kernel, int extreme)
{
    const mpd_layer *l = &net->layers[0];
    const mpd_conv *cv = &l->u.conv;
    if (extreme) /* all positive: the affine zero point goes to -127 */
        for (size_t i = 0; i < (size_t)cv->filters * l->in_c * cv->size * cv->size; i++)
            cv->weights[i] = 1.f;
    mpd__conv_i8_weights w;
    assert_int_equal(mpd__conv_i8_prepare(l, scheme, &w), 0);
    assert_int_equal(mpd__conv_i8_choose(l, &w, threads, int8_out, kernel), 0);
    int via_f32 = w.wf != NULL;
    int c = l->in_c, h = l->in_h, wd = l->in_w, hw = h * wd, m = cv->filters;
    int oh = l->out_h, ow = l->out_w, n = oh * ow, ks = cv->size;
    float *xf = malloc((size_t)c * hw * sizeof(float));
    tu_fill_random(xf, (size_t)c * hw, extreme ? 3.f : -2.f, 3.f, 9);
    mpd_qparams xq = scheme == MPD_SCHEME_AFFINE ? mpd_q_affine(extreme ? 0.f : -2.f, 3.f)
                                                 : mpd_q_symmetric(3.f);
    int8_t *x8 = malloc((size_t)c * hw);
    mpd__quantize_chw_to_hwc(xf, c, hw, xq, x8, 0, hw);
    mpd__cpu_exec ex = exec_for(l, threads);
    float *y = malloc((size_t)m * n * sizeof(float));
    int8_t *y8 = malloc((size_t)m * n);
    float s_out = 0.05f;
    if (via_f32) {
        /* Its input: centred values, from the int8 image or the fp32 one. */
        float *xc = malloc((size_t)c * hw * sizeof(float));
        float *xc2 = malloc((size_t)c * hw * sizeof(float));
        mpd__centre_hwc_to_chw(x8, c, hw, xq.zero, xc, 0, hw);
        mpd__quantize_centred(xf, (size_t)c * hw, xq, xc2);
        assert_memory_equal(xc, xc2, (size_t)c * hw * sizeof(float));
        mpd__conv_i8_centred(l, &w, xc, xq, int8_out ? NULL : y, int8_out ? y8 : NULL,
                             1.f / s_out, &ex);
        free(xc);
        free(xc2);
    } else {
        mpd__conv_i8(l, &w, x8, xq, int8_out ? NULL : y, int8_out ? y8 : NULL, 1.f / s_out, &ex);
    }
    /* Naive: dequantized int8 input (HWC) and weights in darknet order. */
    int bad = 0;
    for (int o = 0; o < m; o++) {
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                int32_t acc = 0;
                for (int ch = 0; ch < c; ch++) {
                    for (int ky = 0; ky < ks; ky++) {
                        for (int kx = 0; kx < ks; kx++) {
                            int iy = oy * cv->stride + ky - cv->pad;
                            int ix = ox * cv->stride + kx - cv->pad;
                            int32_t xv = (iy < 0 || iy >= h || ix < 0 || ix >= wd)
                                             ? xq.zero
                                             : x8[((size_t)iy * wd + ix) * c + ch];
                            int32_t wv = w.w[(size_t)o * w.kp + (ky * ks + kx) * c + ch];
                            acc += (wv - w.w_zero) * (xv - xq.zero);
                        }
                    }
                }
                float v = mpd_q_epilogue(acc, w.w_scale[o] * xq.scale, cv->bias[o]);
                if (cv->act == MPD_ACT_LEAKY)
                    v = mpd_q_leaky(v);
                size_t pix = (size_t)oy * ow + ox;
                if (int8_out)
                    bad += y8[pix * m + o] != mpd_q_quantize_fast(v, 1.f / s_out, 0);
                else
                    bad += y[(size_t)o * n + pix] != v;
            }
        }
    }
    if (bad)
        print_error("%s scheme %d int8_out %d threads %d kernel %s: %d mismatches\n", conv, scheme,
                    int8_out, threads, via_f32 ? "fp32" : "int8", bad);
    assert_int_equal(bad, 0);
    /* The quantized weights reproduce the fp32 ones within half a step. */
    for (int o = 0; o < m; o++)
        for (int ch = 0; ch < c; ch++)
            for (int t = 0; t < ks * ks; t++) {
                float wf = cv->weights[((size_t)o * c + ch) * ks * ks + t];
                int8_t q = w.w[(size_t)o * w.kp + t * c + ch];
                float back = w.w_scale[o] * (float)(q - w.w_zero);
                assert_true(fabsf(back - wf) <= w.w_scale[o] * 0.5001f);
            }
    exec_free(&ex, threads);
    free(y);
    free(y8);
    free(xf);
    free(x8);
    mpd__conv_i8_release(&w);
    return via_f32;
}

static void check_kernel(const char *conv, mpd_scheme scheme, int int8_out, int threads)
{
    mpd_net *net = one_conv(conv);
    check_kernel_on(net, conv, scheme, int8_out, threads, NULL, 0);
    mpd_net_free(net);
}

static void test_int8_kernel_exact(void **state)
{
    (void)state;
    const char *convs[] = {
        "filters=7\nsize=3\nstride=1\npad=1\nactivation=leaky\n", /* K = 45: not a multiple of 4 */
        "filters=16\nsize=1\nstride=1\npad=1\nactivation=linear\n",
        "filters=3\nsize=3\nstride=2\npad=1\nactivation=leaky\n",
        "filters=1\nsize=5\nstride=1\npad=1\nactivation=leaky\n", /* M = 1 */
        "filters=33\nsize=3\nstride=1\npad=0\nactivation=linear\n",
    };
    for (size_t k = 0; k < sizeof(convs) / sizeof(convs[0]); k++)
        for (int scheme = 0; scheme < 2; scheme++)
            for (int out8 = 0; out8 < 2; out8++)
                for (int threads = 1; threads <= 3; threads++)
                    if (!(out8 && scheme == MPD_SCHEME_AFFINE)) /* int8 out is symmetric */
                        check_kernel(convs[k], (mpd_scheme)scheme, out8, threads);
}

/* The fp32 GEMM on centred int8 values gives the int8 GEMM's bits where
 * every sum fits fp32's 24-bit integers, in both schemes, both output
 * types (and both accumulator orientations: 16 and 40 filters), and is
 * never used beyond that bound; the automatic choice is exact too. */
static void test_int8_through_fp32_gemm_exact(void **state)
{
    (void)state;
    const char *convs[] = {
        "filters=16\nsize=3\nstride=1\npad=1\nactivation=leaky\n", /* K = 27, as layer 0 */
        "filters=40\nsize=3\nstride=1\npad=1\nactivation=leaky\n",
        "filters=5\nsize=1\nstride=1\npad=0\nactivation=linear\n",
    };
    /* 80 x 48 = 3840 output pixels: the column split up to 3 threads. */
    for (size_t k = 0; k < sizeof(convs) / sizeof(convs[0]); k++) {
        mpd_net *net = one_conv_sized(convs[k], 80, 48, 3);
        for (int scheme = 0; scheme < 2; scheme++)
            for (int out8 = 0; out8 < 2; out8++)
                for (int threads = 1; threads <= 3; threads++) {
                    if (out8 && scheme == MPD_SCHEME_AFFINE)
                        continue;
                    assert_true(check_kernel_on(net, convs[k], (mpd_scheme)scheme, out8, threads,
                                                "fp32", 0));
                    assert_false(check_kernel_on(net, convs[k], (mpd_scheme)scheme, out8, threads,
                                                 "int8", 0));
                    check_kernel_on(net, convs[k], (mpd_scheme)scheme, out8, threads, NULL, 0);
                }
        mpd_net_free(net);
    }
    /* The bound: K = 3 x 3 x 116 = 1044 > 1040 is beyond it in the
     * symmetric scheme, K = 3 x 3 x 29 = 261 > 260 in the affine one; one
     * channel fewer is within, exact even where every product is the
     * largest (the sums come to 16.7 and 16.3 million, under 2^24). */
    const char *c3 = "filters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n";
    struct {
        int channels;
        mpd_scheme scheme;
        int exact;
    } b[] = {{116, MPD_SCHEME_SYMMETRIC, 0}, {115, MPD_SCHEME_SYMMETRIC, 1},
             {29, MPD_SCHEME_AFFINE, 0},     {28, MPD_SCHEME_AFFINE, 1}};
    for (size_t k = 0; k < sizeof(b) / sizeof(b[0]); k++) {
        mpd_net *net = one_conv_sized(c3, 64, 32, b[k].channels);
        assert_int_equal(mpd__conv_i8_f32_exact(&net->layers[0], b[k].scheme), b[k].exact);
        assert_int_equal(check_kernel_on(net, c3, b[k].scheme, 0, 1, "fp32", 1), b[k].exact);
        mpd_net_free(net);
    }
}

/* oneDNN's int8 convolution (conv_dnnl.h) against ours, the reference:
 * every int8 code within one of ours, and rarely off at all; fp32 outputs
 * within rounding (oneDNN 2.x adds the bias before scaling). Shapes with
 * padding, stride 2, 1x1, a linear activation; 1 to 3 bands of rows. */
static void test_int8_onednn_within_one_code(void **state)
{
    (void)state;
    if (!mpd__dnnl_conv_available())
        skip();
    const char *convs[] = {
        "filters=16\nsize=3\nstride=1\npad=1\nactivation=leaky\n",
        "filters=40\nsize=3\nstride=2\npad=1\nactivation=leaky\n",
        "filters=24\nsize=1\nstride=1\npad=0\nactivation=linear\n",
        "filters=8\nsize=3\nstride=1\npad=0\nactivation=relu\n",
    };
    long total = 0, off = 0;
    for (size_t k = 0; k < sizeof(convs) / sizeof(convs[0]); k++) {
        mpd_net *net = one_conv_sized(convs[k], 37, 29, 19);
        const mpd_layer *l = &net->layers[0];
        int c = l->in_c, hw = l->in_h * l->in_w, m = l->u.conv.filters;
        size_t n = (size_t)l->out_h * l->out_w;
        float *xf = malloc((size_t)c * hw * sizeof(float));
        int8_t *x8 = malloc((size_t)c * hw);
        tu_fill_random(xf, (size_t)c * hw, -2.f, 3.f, 11);
        mpd_qparams xq = mpd_q_symmetric(3.f);
        mpd__quantize_chw_to_hwc(xf, c, hw, xq, x8, 0, hw);
        mpd__conv_i8_weights w;
        assert_int_equal(mpd__conv_i8_prepare(l, MPD_SCHEME_SYMMETRIC, &w), 0);
        float s_out = 0.05f;
        for (int threads = 1; threads <= 3; threads++) {
            mpd__cpu_exec ex = exec_for(l, threads);
            mpd__dnnl_exec dx = {0};
            for (int out8 = 0; out8 < 2; out8++) {
                mpd__dnnl_conv *d;
                /* 3 threads: the cache-sized even bands of a fused pool */
                assert_int_equal(
                    mpd__dnnl_conv_i8_create(l, &w, xq, out8, s_out, threads, threads == 3, &d), 0);
                assert_true(mpd__dnnl_conv_input(d).scale == xq.scale);
                int8_t *r8 = malloc(m * n), *d8 = malloc(m * n);
                float *rf = malloc(m * n * sizeof(float)), *df = malloc(m * n * sizeof(float));
                mpd__conv_i8(l, &w, x8, xq, out8 ? NULL : rf, out8 ? r8 : NULL, 1.f / s_out, &ex);
                assert_int_equal(mpd__dnnl_conv_run(d, &dx, ex.pool, x8,
                                                    out8 ? (void *)d8 : (void *)df, NULL, msg,
                                                    sizeof(msg)),
                                 0);
                for (size_t p = 0; p < n; p++) {
                    for (int o = 0; o < m; o++) {
                        total++;
                        if (out8) { /* ours HWC, theirs HWC */
                            int diff = abs(r8[p * m + o] - d8[p * m + o]);
                            assert_true(diff <= 1);
                            assert_true(d8[p * m + o] >= MPD_QMIN);
                            off += diff != 0;
                        } else { /* ours CHW, theirs HWC */
                            float r = rf[(size_t)o * n + p], v = df[p * m + o];
                            float tol = 1e-5f * (fabsf(r) + fabsf(l->u.conv.bias[o])) + 1e-6f;
                            if (fabsf(r - v) > tol)
                                print_error("%s out %zu/%d: %g vs %g\n", convs[k], p, o, r, v);
                            assert_true(fabsf(r - v) <= tol);
                        }
                    }
                }
                free(r8);
                free(d8);
                free(rf);
                free(df);
                mpd__dnnl_conv_free(d);
            }
            mpd__dnnl_exec_free(&dx);
            exec_free(&ex, threads);
        }
        free(xf);
        free(x8);
        mpd__conv_i8_release(&w);
        mpd_net_free(net);
    }
    print_message("oneDNN int8: %ld of %ld codes one off ours\n", off, total);
    assert_true(off * 1000 < total); /* rare: the bias's rounding only */
}

/* Layer l (leaky, relu or linear) on x (CHW) with weights w, in double:
 * ref (CHW), and in tol each output's fp32 summation bound gamma_K(2^-24) S
 * (S: the sum of |products| and |bias|, K + 1 terms; leaky and relu do not
 * enlarge it). */
static void conv_ref(const mpd_layer *l, const float *x, const float *w, double *ref, double *tol)
{
    const mpd_conv *cv = &l->u.conv;
    int c = l->in_c, h = l->in_h, wd = l->in_w, ks = cv->size, oh = l->out_h, ow = l->out_w;
    size_t n = (size_t)oh * ow;
    double gamma = (ks * ks * c + 1) * 0x1p-24 / (1 - (ks * ks * c + 1) * 0x1p-24);
    for (int o = 0; o < cv->filters; o++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                double acc = cv->bias[o], s = fabs(cv->bias[o]);
                for (int ch = 0; ch < c; ch++)
                    for (int dy = 0; dy < ks; dy++)
                        for (int dx = 0; dx < ks; dx++) {
                            int yy = oy * cv->stride - cv->pad + dy;
                            int xx = ox * cv->stride - cv->pad + dx;
                            if (yy < 0 || yy >= h || xx < 0 || xx >= wd)
                                continue;
                            double pr = (double)w[((size_t)(o * c + ch) * ks + dy) * ks + dx] *
                                        x[((size_t)ch * h + yy) * wd + xx];
                            acc += pr;
                            s += fabs(pr);
                        }
                if (cv->act == MPD_ACT_LEAKY && acc < 0)
                    acc *= .1;
                if (cv->act == MPD_ACT_RELU && acc < 0)
                    acc = 0;
                size_t at = (size_t)o * n + (size_t)oy * ow + ox;
                ref[at] = acc;
                tol[at] = gamma * s;
            }
}

static const char *const float_convs[] = {
    "filters=16\nsize=3\nstride=1\npad=1\nactivation=leaky\n",
    "filters=40\nsize=3\nstride=2\npad=1\nactivation=leaky\n",
    "filters=24\nsize=1\nstride=1\npad=0\nactivation=linear\n",
    "filters=8\nsize=3\nstride=1\npad=0\nactivation=relu\n",
};

/* oneDNN's fp32 convolution (conv_dnnl.h; HWC in and out) against the
 * double loop: within the fp32 sums' bound, as our sgemm path is (its sums
 * are in another order, so the two differ by rounding only). A wrong
 * layout, band or padding is off by whole values. 1 to 3 bands. */
static void test_fp32_onednn_within_bound(void **state)
{
    (void)state;
    if (!mpd__dnnl_conv_available())
        skip();
    double worst = 0;
    for (size_t k = 0; k < sizeof(float_convs) / sizeof(float_convs[0]); k++) {
        mpd_net *net = one_conv_sized(float_convs[k], 37, 29, 19);
        const mpd_layer *l = &net->layers[0];
        int c = l->in_c, hw = l->in_h * l->in_w, m = l->u.conv.filters;
        size_t n = (size_t)l->out_h * l->out_w;
        float *x = malloc((size_t)c * hw * sizeof(float)), *xh = malloc((size_t)c * hw * 4);
        float *y = malloc((size_t)m * n * sizeof(float));
        double *ref = malloc((size_t)m * n * sizeof(double)), *tol = malloc((size_t)m * n * 8);
        tu_fill_random(x, (size_t)c * hw, -2.f, 3.f, 11);
        for (int ch = 0; ch < c; ch++)
            for (int p = 0; p < hw; p++)
                xh[(size_t)p * c + ch] = x[(size_t)ch * hw + p];
        conv_ref(l, x, l->u.conv.weights, ref, tol);
        for (int threads = 1; threads <= 3; threads++) {
            mpd__cpu_exec ex = {0};
            assert_int_equal(mpd__tpool_create(threads, &ex.pool), 0);
            mpd__dnnl_exec dx = {0};
            mpd__dnnl_conv *d;
            assert_int_equal(mpd__dnnl_conv_f32_create(l, NULL, NULL, threads, threads == 3, &d),
                             0);
            assert_non_null(strstr(mpd__dnnl_conv_name(d), "fp32 oneDNN"));
            assert_int_equal(mpd__dnnl_conv_run(d, &dx, ex.pool, xh, y, NULL, msg, sizeof(msg)), 0);
            for (size_t px = 0; px < n; px++)
                for (int o = 0; o < m; o++) {
                    size_t at = (size_t)o * n + px;
                    double e = fabs(y[px * m + o] - ref[at]);
                    if (tol[at] > 0)
                        worst = fmax(worst, e / tol[at]);
                    assert_true(e <= tol[at]);
                }
            mpd__dnnl_conv_free(d);
            mpd__dnnl_exec_free(&dx);
            mpd__tpool_destroy(ex.pool);
        }
        free(x);
        free(xh);
        free(y);
        free(ref);
        free(tol);
        mpd_net_free(net);
    }
    print_message("fp32 oneDNN convolutions: worst error %.3f of the bound\n", worst);
}

static void ignore_rows(void *arg, const void *rows, int r0, int r1)
{
    (void)arg, (void)rows, (void)r0, (void)r1;
}

/* What a oneDNN convolution's run allocates per worker (its exec's rows
 * and scratch) is what mpd__dnnl_conv_rows_worker and _scratch_worker say,
 * which the backend's memory estimate adds up (cpu_own_bytes): bands of
 * rows kept out of y under a fused pool, bands of channels, and the int8
 * primitives' scratchpads. The estimate had counted the channel bands
 * alone, about 1 MiB per thread short with fused pools. */
static void test_dnnl_worker_bytes_cover_the_run(void **state)
{
    (void)state;
    if (!mpd__dnnl_conv_available())
        skip();
    size_t most_rows = 0, most_scratch = 0;
    static const struct {
        const char *conv;
        int side, channels, pool2;
    } shapes[] = {
        {"filters=16\nsize=3\nstride=1\npad=1\nactivation=leaky\n", 96, 3, 1},
        {"filters=64\nsize=3\nstride=1\npad=1\nactivation=leaky\n", 13, 32, 0},
    };
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        mpd_net *net =
            one_conv_sized(shapes[k].conv, shapes[k].side, shapes[k].side, shapes[k].channels);
        const mpd_layer *l = &net->layers[0];
        size_t nx = mpd_layer_in_size(l), ny = mpd_layer_out_size(l);
        float *x = calloc(nx, sizeof(float)), *y = malloc(ny * sizeof(float));
        mpd__conv_i8_weights w;
        assert_int_equal(mpd__conv_i8_prepare(l, MPD_SCHEME_SYMMETRIC, &w), 0);
        for (int threads = 1; threads <= 3; threads++) {
            mpd__cpu_exec ex = {0};
            assert_int_equal(mpd__tpool_create(threads, &ex.pool), 0);
            for (int pool2 = 0; pool2 <= shapes[k].pool2; pool2++)
                for (int int8 = 0; int8 < 2; int8++) {
                    mpd__dnnl_exec dx = {0};
                    mpd__dnnl_conv *d;
                    if (int8)
                        assert_int_equal(mpd__dnnl_conv_i8_create(l, &w, mpd_q_symmetric(1.f), 1,
                                                                  .05f, threads, pool2, &d),
                                         0);
                    else
                        assert_int_equal(
                            mpd__dnnl_conv_f32_create(l, NULL, NULL, threads, pool2, &d), 0);
                    mpd__dnnl_after after = {ignore_rows, NULL, 1};
                    size_t rows = mpd__dnnl_conv_rows_worker(d, pool2),
                           scratch = mpd__dnnl_conv_scratch_worker(d);
                    assert_int_equal(mpd__dnnl_conv_run(d, &dx, ex.pool, x, y,
                                                        pool2 ? &after : NULL, msg, sizeof(msg)),
                                     0);
                    most_rows = dx.rows_each > most_rows ? dx.rows_each : most_rows;
                    most_scratch = dx.scratch_each > most_scratch ? dx.scratch_each : most_scratch;
                    assert_true(dx.rows_each <= rows && dx.scratch_each <= scratch);
                    if (pool2) /* each band's rows, an eighth of the output at least */
                        assert_true(rows >= ny * (int8 ? 1 : sizeof(float)) / 8);
                    mpd__dnnl_conv_free(d);
                    mpd__dnnl_exec_free(&dx);
                }
            mpd__tpool_destroy(ex.pool);
        }
        mpd__conv_i8_release(&w);
        free(x);
        free(y);
        mpd_net_free(net);
    }
    print_message("oneDNN runs: up to %zu bytes of rows and %zu of scratch per worker\n", most_rows,
                  most_scratch);
}

/* The bf16 convolution of one layer, oneDNN's and our emulation, against
 * a double-precision loop on the same bf16-rounded input and weights: the
 * products are exact in fp32, so an fp32 output is off by the fp32 sums
 * alone, |err| <= gamma_K(2^-24) S (S: the sum of |products| and |bias|,
 * K + 1 terms; leaky and relu do not enlarge it), and a bf16 output by that
 * plus its own rounding of that sum, half a bf16 step (at most 2^-8 of
 * |ref| + that error; nearly all of it near a power of two). A kernel that skips
 * a rounding of its operands is off by about 2^-9 S: far outside. Shapes
 * with padding, stride 2, 1x1, linear and relu; 1 to 3 bands of rows. */
static void test_bf16_onednn_and_emulation_within_bound(void **state)
{
    (void)state;
    const char *const *convs = float_convs;
    int native = mpd__dnnl_bf16_native();
    if (!native)
        print_message("oneDNN bf16: not run (no oneDNN, or no bf16 instructions); the "
                      "emulation only\n");
    double worst[2] = {0, 0};
    for (size_t k = 0; k < sizeof(float_convs) / sizeof(float_convs[0]); k++) {
        mpd_net *net = one_conv_sized(convs[k], 37, 29, 19);
        const mpd_layer *l = &net->layers[0];
        const mpd_conv *cv = &l->u.conv;
        int c = l->in_c, hw = l->in_h * l->in_w, m = cv->filters, ks = cv->size;
        int oh = l->out_h, ow = l->out_w;
        size_t n = (size_t)oh * ow, nw = (size_t)m * c * ks * ks;
        float *xf = malloc((size_t)c * hw * sizeof(float)), *wf = malloc(nw * sizeof(float));
        uint16_t *xb = malloc((size_t)c * hw * 2), *wb = malloc(nw * 2);
        tu_fill_random(xf, (size_t)c * hw, -2.f, 3.f, 11);
        mpd__bf16_round_n(xf, xf, (size_t)c * hw);
        mpd__f32_chw_to_bf16_hwc(xf, c, hw, xb, 0, hw);
        for (size_t i = 0; i < nw; i++) {
            wb[i] = mpd_f32_to_bf16(cv->weights[i]);
            wf[i] = mpd_bf16_to_f32(wb[i]);
        }
        double *ref = malloc((size_t)m * n * sizeof(double)), *tol = malloc((size_t)m * n * 8);
        conv_ref(l, xf, wf, ref, tol);
        float *y = malloc((size_t)m * n * sizeof(float));
        uint16_t *y16 = malloc((size_t)m * n * 2);
        /* Ours: the fp32 convolution with the rounded weights. */
        mpd_layer view = *l;
        view.u.conv.weights = wf;
        for (int threads = 1; threads <= 3; threads++) {
            mpd__cpu_exec ex = {0};
            assert_int_equal(mpd__tpool_create(threads, &ex.pool), 0);
            ex.ws = calloc((size_t)threads, sizeof(float *));
            for (int t = 0; t < threads; t++)
                ex.ws[t] = malloc(mpd__conv_ws_worker(l, threads) * sizeof(float) + 64);
            ex.shared = malloc(mpd__conv_ws_shared(l, threads) * sizeof(float) + 64);
            mpd__dnnl_exec dx = {0};
            for (int path = 0; path < 2; path++) {
                if (path == 1 && !native)
                    continue;
                for (int out16 = 0; out16 < 2; out16++) {
                    if (path == 0) {
                        mpd__conv_f32(&view, xf, y, &ex); /* CHW */
                        if (out16)
                            mpd__f32_chw_to_bf16_hwc(y, m, (int)n, y16, 0, (int)n);
                    } else {
                        mpd__dnnl_conv *d;
                        assert_int_equal(
                            mpd__dnnl_conv_bf16_create(l, wb, out16, threads, threads == 3, &d), 0);
                        assert_non_null(strstr(mpd__dnnl_conv_name(d), "bf16"));
                        float *yh = malloc((size_t)m * n * sizeof(float));
                        assert_int_equal(mpd__dnnl_conv_run(d, &dx, ex.pool, xb,
                                                            out16 ? (void *)y16 : (void *)yh, NULL,
                                                            msg, sizeof(msg)),
                                         0);
                        for (size_t px = 0; px < n; px++) /* HWC -> CHW */
                            for (int o = 0; o < m; o++)
                                y[(size_t)o * n + px] = yh[px * m + o];
                        free(yh);
                        mpd__dnnl_conv_free(d);
                    }
                    for (size_t px = 0; px < n; px++) {
                        for (int o = 0; o < m; o++) {
                            size_t at = (size_t)o * n + px;
                            double v = out16 ? mpd_bf16_to_f32(y16[px * m + o]) : y[at];
                            double t =
                                out16 ? tol[at] * (1 + 0x1p-8) + fabs(ref[at]) * 0x1p-8 : tol[at];
                            double e = fabs(v - ref[at]);
                            if (t > 0)
                                worst[out16] = fmax(worst[out16], e / t);
                            if (e > t)
                                print_error("%s %s out%d: [%d][%zu] %.9g, want %.9g +- %.3g\n",
                                            convs[k], path ? "oneDNN" : "ours", out16 ? 16 : 32, o,
                                            px, v, ref[at], t);
                            assert_true(e <= t);
                        }
                    }
                }
            }
            mpd__dnnl_exec_free(&dx);
            for (int t = 0; t < threads; t++)
                free(ex.ws[t]);
            free(ex.ws);
            free(ex.shared);
            mpd__tpool_destroy(ex.pool);
        }
        free(xf);
        free(wf);
        free(xb);
        free(wb);
        free(ref);
        free(tol);
        free(y);
        free(y16);
        mpd_net_free(net);
    }
    print_message("bf16 convolutions: worst error %.3f of the bound (fp32 out), %.3f (bf16 out)\n",
                  worst[0], worst[1]);
}

/* ---- allocation failures, injected ---------------------------------------
 * This program's own malloc, calloc and realloc pass through to glibc's
 * (__libc_*), except that the nth call after arm_alloc_failure(n) returns
 * NULL: a real failure at a real call site, not a mock. glibc's free and
 * the other entry points stay as they are (the same allocator). Off under
 * the address and thread sanitizers, whose own malloc would not see these
 * blocks. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ALLOC_INJECTION 0
static void arm_alloc_failure(long n)
{
    (void)n;
}
static int disarm_alloc_failure(void)
{
    return 0;
}
#else
#define ALLOC_INJECTION 1
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
static atomic_long alloc_countdown; /* > 0: that many allocations until one fails */
static atomic_int alloc_failed;

static int inject_now(void)
{
    if (atomic_load_explicit(&alloc_countdown, memory_order_relaxed) <= 0)
        return 0;
    if (atomic_fetch_sub(&alloc_countdown, 1) != 1)
        return 0;
    atomic_store(&alloc_failed, 1);
    return 1;
}

void *malloc(size_t n)
{
    return inject_now() ? NULL : __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    return inject_now() ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    return inject_now() ? NULL : __libc_realloc(p, n);
}

static void arm_alloc_failure(long n)
{
    atomic_store(&alloc_failed, 0);
    atomic_store(&alloc_countdown, n);
}

/* Returns whether the armed failure happened. */
static int disarm_alloc_failure(void)
{
    atomic_store(&alloc_countdown, 0);
    return atomic_load(&alloc_failed);
}
#endif

/* ---- small generated models ----------------------------------------------- */

/* Writes cfg text and a darknet weights file for it (version 0.2 header,
 * then every parameter uniform in [0.05, 0.3): batch-norm variances stay
 * positive and activations moderate) to temporary files. */
static void write_model(const char *cfg, char **cfg_path, char **weights_path)
{
    mpd_net *net = tu_net_from_text(cfg, "gen.cfg", msg, sizeof(msg));
    if (!net)
        fail_msg("generated cfg: %s", msg);
    size_t n = net->nparams;
    mpd_net_free(net);
    *cfg_path = tu_write_temp(cfg, strlen(cfg));
    float *w = tu_xmalloc(n * sizeof(float));
    tu_fill_random(w, n, .05f, .3f, 17);
    *weights_path = tu_write_weights(w, n);
    free(w);
    assert_non_null(*cfg_path);
    assert_non_null(*weights_path);
}

static void remove_model(char *cfg_path, char *weights_path)
{
    unlink(cfg_path);
    unlink(weights_path);
    free(cfg_path);
    free(weights_path);
}

static mpd_engine *open_generated(const char *cfg_path, const char *weights_path)
{
    mpd_engine_options o = {
        .cfg_path = cfg_path, .weights_path = weights_path, .backend = "cpu", .threads = 2};
    mpd_engine *e = NULL;
    int rc = mpd_engine_open(&o, &e, msg, sizeof(msg));
    if (rc)
        fail_msg("open %s: %s", cfg_path, msg);
    return e;
}

/* One forward pass on a fixed input; *out (malloc'd) receives the last
 * layer's output. */
static void forward_last(mpd_engine *e, float **out, size_t *n)
{
    int c, h, w;
    mpd_engine_input_shape(e, &c, &h, &w);
    float *x = tu_xmalloc((size_t)c * h * w * sizeof(float));
    tu_fill_random(x, (size_t)c * h * w, 0.f, 1.f, 3);
    int rc = mpd_engine_forward(e, x, 1, msg, sizeof(msg));
    if (rc)
        fail_msg("forward: %s", msg);
    int last = mpd_engine_layer_count(e) - 1;
    *n = mpd_engine_layer_output_size(e, last);
    *out = tu_xmalloc(*n * sizeof(float));
    assert_int_equal(mpd_engine_layer_output(e, last, 1, *out, msg, sizeof(msg)), 0);
    free(x);
}

/* conv, maxpool, conv, conv, route, conv, yolo: every tensor type a plan
 * can choose (int8 and half storage through the maxpool, fp32 at the
 * route). */
static const char small_cfg[] =
    "[net]\nwidth=16\nheight=16\nchannels=3\n"
    "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\nactivation=leaky\n"
    "[maxpool]\nsize=2\nstride=2\n"
    "[convolutional]\nfilters=16\nsize=3\npad=1\nactivation=leaky\n"
    "[convolutional]\nfilters=8\nsize=1\nactivation=leaky\n"
    "[route]\nlayers=-1,-2\n"
    "[convolutional]\nfilters=21\nsize=1\nactivation=linear\n"
    "[yolo]\nmask=0,1,2\nanchors=1,1,2,2,3,3,4,4,5,5,6,6\nclasses=2\nnum=6\n";

/* Issue 10, defect 12: "NULL write in the CPU backend after a partial
 * allocation failure of the fp16 scratch". The CPU backend allocates its
 * fp16 conversion scratch (two buffers) with the first fp16 plan; when the
 * second allocation failed, the next fp16 plan saw the first buffer and
 * skipped both, and its passes wrote through the NULL one. Here every
 * allocation of a plan load fails in turn, on a fresh engine each time;
 * each load must fail cleanly (the old plan keeps serving, same
 * generation) or succeed, and a load of the same plan after it must run
 * and give the output a load without failures gives. Then the same for
 * mpd_engine_open. */
static void test_allocation_failures_are_clean(void **state)
{
    (void)state;
    if (!ALLOC_INJECTION) {
        print_message("skipped: allocation failures are not injected under this sanitizer\n");
        skip();
    }
    /* Our kernels only: oneDNN (C++) answers a failed allocation with
     * std::bad_alloc, which no C caller can catch (README, Speed). */
    setenv("MPDET_INT8_KERNEL", "exact", 1);
    setenv("MPDET_FP32_KERNEL", "openblas", 1);
    setenv("MPDET_BF16_KERNEL", "emulated", 1);
    char *cfg, *weights;
    write_model(small_cfg, &cfg, &weights);
    char calib_text[512];
    int len = snprintf(calib_text, sizeof(calib_text), "[thresholds]\ninput = 1\n");
    for (int i = 0; i < 7; i++)
        len +=
            snprintf(calib_text + len, sizeof(calib_text) - (size_t)len, "%d = %d\n", i, 4 + 2 * i);
    char *calib = tu_write_temp(calib_text, (size_t)len);
    char plan_text[4][512];
    snprintf(plan_text[0], sizeof(plan_text[0]), "[plan]\ndefault = fp16\n");
    snprintf(plan_text[1], sizeof(plan_text[1]), "[plan]\ndefault = int8\ncalibration = %s\n",
             calib);
    snprintf(plan_text[2], sizeof(plan_text[2]),
             "[plan]\ndefault = int8\nscheme = affine\n[layers]\n3 = fp16\n");
    int total_failures = 0;
    snprintf(plan_text[3], sizeof(plan_text[3]), "[plan]\ndefault = bf16\n[layers]\n3 = fp32\n");
    for (int k = 0; k < 4; k++) {
        char *plan = tu_write_temp(plan_text[k], strlen(plan_text[k]));
        mpd_engine *e = open_generated(cfg, weights);
        assert_int_equal(mpd_engine_load_plan(e, plan, msg, sizeof(msg)), 0);
        float *ref;
        size_t n;
        forward_last(e, &ref, &n);
        mpd_engine_close(e);
        int failures = 0;
        for (long at = 1;; at++) {
            e = open_generated(cfg, weights);
            arm_alloc_failure(at);
            int rc = mpd_engine_load_plan(e, plan, msg, sizeof(msg));
            int hit = disarm_alloc_failure();
            if (!hit) {
                assert_int_equal(rc, 0);
                mpd_engine_close(e);
                break;
            }
            failures++;
            mpd_plan_info info;
            assert_int_equal(mpd_engine_plan_info(e, &info), 0);
            if (rc) {
                /* The plan the engine opened with keeps serving. */
                assert_int_equal(info.generation, 1);
                assert_string_equal(info.source, "cfg");
                rc = mpd_engine_load_plan(e, plan, msg, sizeof(msg));
                if (rc)
                    fail_msg("plan %d, allocation %ld failed: the next load fails: %s", k, at, msg);
            }
            float *got;
            size_t m;
            forward_last(e, &got, &m);
            assert_int_equal(m, n);
            if (memcmp(got, ref, n * sizeof(float)) != 0)
                fail_msg("plan %d, allocation %ld failed: the output differs after reloading", k,
                         at);
            free(got);
            mpd_engine_close(e);
        }
        print_message("plan %d: %d allocations of the load failed in turn\n", k, failures);
        assert_true(failures > 5);
        total_failures += failures;
        free(ref);
        unlink(plan);
        free(plan);
    }
    /* Opening: fails cleanly (no engine) or succeeds and runs. */
    int open_failures = 0;
    for (long at = 1;; at++) {
        mpd_engine_options o = {
            .cfg_path = cfg, .weights_path = weights, .backend = "cpu", .threads = 2};
        mpd_engine *e = (mpd_engine *)1;
        arm_alloc_failure(at);
        int rc = mpd_engine_open(&o, &e, msg, sizeof(msg));
        int hit = disarm_alloc_failure();
        if (!hit) {
            assert_int_equal(rc, 0);
            mpd_engine_close(e);
            break;
        }
        open_failures++;
        if (rc) {
            assert_null(e);
            continue;
        }
        float *got;
        size_t m;
        forward_last(e, &got, &m);
        free(got);
        mpd_engine_close(e);
    }
    print_message("open: %d allocations failed in turn\n", open_failures);
    assert_true(open_failures > 10);
    assert_true(total_failures > 15);
    unlink(calib);
    free(calib);
    remove_model(cfg, weights);
    unsetenv("MPDET_INT8_KERNEL");
    unsetenv("MPDET_FP32_KERNEL");
    unsetenv("MPDET_BF16_KERNEL");
}

/* Issue 10, defect 12: an int8 convolution sums K products of up to
 * 127 x 127 (symmetric) in int32, and the affine epilogue adds three
 * zero-point terms of the same size: K is limited (host/plan.h), and a plan
 * that puts a larger layer in int8 is refused when it is loaded, naming
 * the layer, instead of overflowing. */
static const char k_cfg[] =
    "[net]\nwidth=3\nheight=3\nchannels=1\n"
    "[convolutional]\nfilters=16384\nsize=1\nactivation=leaky\n"    /* 0: K = 1 */
    "[convolutional]\nfilters=1\nsize=3\npad=1\nactivation=leaky\n" /* 1: K = 147456 */
    "[route]\nlayers=-2\n"                                          /* 2 */
    "[convolutional]\nfilters=1\nsize=2\nactivation=leaky\n"        /* 3: K = 65536 */
    "[convolutional]\nfilters=18\nsize=1\nactivation=linear\n"      /* 4: K = 1 */
    "[yolo]\nmask=0,1,2\nanchors=1,1,2,2,3,3\nclasses=1\nnum=3\n";  /* 5 */

static void expect_refused(mpd_engine *e, const char *text, const char *layer)
{
    char *plan = tu_write_temp(text, strlen(text));
    mpd_plan_info before, after;
    assert_int_equal(mpd_engine_plan_info(e, &before), 0);
    msg[0] = '\0';
    int rc = mpd_engine_check_plan(e, plan, msg, sizeof(msg));
    print_message("%s-> %s: %s\n", text, mpd_strerror(rc), msg);
    assert_int_equal(rc, MPD_EUNSUP);
    assert_non_null(strstr(msg, layer));
    assert_non_null(strstr(msg, plan));
    msg[0] = '\0';
    assert_int_equal(mpd_engine_load_plan(e, plan, msg, sizeof(msg)), MPD_EUNSUP);
    assert_non_null(strstr(msg, layer));
    assert_int_equal(mpd_engine_plan_info(e, &after), 0);
    assert_int_equal(after.generation, before.generation);
    unlink(plan);
    free(plan);
}

static void expect_accepted(mpd_engine *e, const char *text)
{
    char *plan = tu_write_temp(text, strlen(text));
    int rc = mpd_engine_load_plan(e, plan, msg, sizeof(msg));
    if (rc)
        print_error("%s-> %s\n", text, msg);
    assert_int_equal(rc, 0);
    unlink(plan);
    free(plan);
}

static void test_int8_k_limit_refused_at_load(void **state)
{
    (void)state;
    char *cfg, *weights;
    write_model(k_cfg, &cfg, &weights);
    mpd_engine *e = open_generated(cfg, weights);
    expect_refused(e, "[layers]\n1 = int8\n", "layer 1");
    expect_refused(e, "[plan]\nscheme = affine\n[layers]\n3 = int8\n", "layer 3");
    expect_refused(e, "[plan]\ndefault = int8\n", "layer 1");
    /* Within the limits. */
    expect_accepted(e, "[layers]\n3 = int8\n0 = int8\n4 = int8\n");
    expect_accepted(e, "[plan]\nscheme = affine\n[layers]\n0 = int8\n4 = int8\n1 = fp16\n");
    float *out;
    size_t n;
    forward_last(e, &out, &n);
    free(out);
    mpd_engine_close(e);
    remove_model(cfg, weights);
}

/* Issue 10, defect 4: a plan is applied to several engines (the daemon's
 * workers) all or nothing: prepared on every engine while the current plan
 * serves, then committed on all, or discarded on all when one fails. */
static void test_prepare_commit_discard_across_engines(void **state)
{
    (void)state;
    char *cfg, *weights;
    write_model(k_cfg, &cfg, &weights);
    mpd_engine *e[2] = {open_generated(cfg, weights), open_generated(cfg, weights)};
    float *ref[2];
    size_t n;
    for (int k = 0; k < 2; k++)
        forward_last(e[k], &ref[k], &n);
    /* The first engine prepares a plan it can run; the second gets one its
     * backend refuses (K over the int8 limit). */
    const char *good = "[layers]\n0 = int8\n4 = fp16\n", *bad = "[layers]\n1 = int8\n";
    char *gp = tu_write_temp(good, strlen(good)), *bp = tu_write_temp(bad, strlen(bad));
    mpd_prepared_plan *pp[2] = {NULL, NULL};
    assert_int_equal(mpd_engine_prepare_plan(e[0], gp, &pp[0], msg, sizeof(msg)), 0);
    assert_non_null(pp[0]);
    assert_int_equal(mpd_engine_prepare_plan(e[1], bp, &pp[1], msg, sizeof(msg)), MPD_EUNSUP);
    assert_null(pp[1]);
    mpd_engine_discard_plan(e[0], pp[0]);
    mpd_engine_discard_plan(e[1], pp[1]); /* NULL is fine */
    for (int k = 0; k < 2; k++) {
        mpd_plan_info info;
        assert_int_equal(mpd_engine_plan_info(e[k], &info), 0);
        assert_int_equal(info.generation, 1);
        assert_string_equal(info.source, "cfg");
        assert_int_equal(info.layers[0], 4); /* all fp32 */
        float *got;
        forward_last(e[k], &got, &n);
        assert_memory_equal(got, ref[k], n * sizeof(float));
        free(got);
        mpd_layer_info li;
        assert_int_equal(mpd_engine_last_layer_info(e[k], 0, &li), 0);
        assert_string_equal(li.precision, "fp32");
    }
    /* Both prepare: commit both under one generation number. A prepared
     * plan does not serve before it is committed. */
    for (int k = 0; k < 2; k++)
        assert_int_equal(mpd_engine_prepare_plan(e[k], gp, &pp[k], msg, sizeof(msg)), 0);
    mpd_plan_info info;
    assert_int_equal(mpd_engine_plan_info(e[0], &info), 0);
    assert_int_equal(info.generation, 1);
    for (int k = 0; k < 2; k++)
        mpd_engine_commit_plan(e[k], pp[k], 7);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(mpd_engine_plan_info(e[k], &info), 0);
        assert_int_equal(info.generation, 7);
        assert_string_equal(info.source, gp);
        assert_int_equal(info.layers[2], 1);
        assert_int_equal(info.layers[1], 1);
        float *got;
        forward_last(e[k], &got, &n);
        free(got);
        mpd_layer_info li;
        assert_int_equal(mpd_engine_last_layer_info(e[k], 0, &li), 0);
        assert_string_equal(li.precision, "int8");
    }
    /* Generation 0: the engine's own next number, after the forced one. */
    assert_int_equal(mpd_engine_prepare_plan(e[0], NULL, &pp[0], msg, sizeof(msg)), 0);
    mpd_engine_commit_plan(e[0], pp[0], 0);
    assert_int_equal(mpd_engine_plan_info(e[0], &info), 0);
    assert_int_equal(info.generation, 8);
    assert_string_equal(info.source, "cfg");
    /* mpd_engine_load_plan is prepare + commit. */
    assert_int_equal(mpd_engine_load_plan(e[0], gp, msg, sizeof(msg)), 0);
    assert_int_equal(mpd_engine_plan_info(e[0], &info), 0);
    assert_int_equal(info.generation, 9);
    for (int k = 0; k < 2; k++) {
        free(ref[k]);
        mpd_engine_close(e[k]);
    }
    unlink(gp);
    unlink(bp);
    free(gp);
    free(bp);
    remove_model(cfg, weights);
}

/* ---- the real network ------------------------------------------------- */

static mpd_engine *eng;

static int setup(void **state)
{
    (void)state;
    char *cfg = tu_model("yolov3-tiny.cfg"), *w = tu_model("yolov3-tiny.weights");
    char *names = tu_model("coco.names");
    mpd_engine_options o = {
        .cfg_path = cfg, .weights_path = w, .names_path = names, .backend = "cpu"};
    int rc = mpd_engine_open(&o, &eng, msg, sizeof(msg));
    if (rc)
        fprintf(stderr, "%s\n", msg);
    free(cfg);
    free(w);
    free(names);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    mpd_engine_close(eng);
    return 0;
}

static const char *const photos[] = {"dog.jpg",     "person.jpg", "horses.jpg", "eagle.jpg",
                                     "giraffe.jpg", "kite.jpg",   "scream.jpg"};

/* Worst relative RMS error per layer (rms(y - ref) / rms(ref)) of plan
 * against fp32 over the sample photos. */
static void layer_errors(const char *plan, double *worst, int layers)
{
    float *in = malloc(3 * 416 * 416 * sizeof(float));
    for (int i = 0; i < layers; i++)
        worst[i] = 0;
    for (size_t k = 0; k < sizeof(photos) / sizeof(photos[0]); k++) {
        char *path = tu_darknet_data(photos[k]);
        mpd_image im;
        assert_int_equal(mpd_image_load(path, 0, &im, msg, sizeof(msg)), 0);
        assert_int_equal(mpd_engine_preprocess(eng, &im, in), 0);
        mpd_image_free(&im);
        free(path);
        float *ref[64];
        assert_int_equal(mpd_engine_load_plan(eng, "config/fp32_all.plan", msg, sizeof(msg)), 0);
        assert_int_equal(mpd_engine_forward(eng, in, 1, msg, sizeof(msg)), 0);
        for (int i = 0; i < layers; i++) {
            size_t n = mpd_engine_layer_output_size(eng, i);
            ref[i] = malloc(n * sizeof(float));
            assert_int_equal(mpd_engine_layer_output(eng, i, 1, ref[i], msg, sizeof(msg)), 0);
        }
        int rc = mpd_engine_load_plan(eng, plan, msg, sizeof(msg));
        if (rc)
            print_error("%s: %s\n", plan, msg);
        assert_int_equal(rc, 0);
        assert_int_equal(mpd_engine_forward(eng, in, 1, msg, sizeof(msg)), 0);
        for (int i = 0; i < layers; i++) {
            size_t n = mpd_engine_layer_output_size(eng, i);
            float *y = malloc(n * sizeof(float));
            assert_int_equal(mpd_engine_layer_output(eng, i, 1, y, msg, sizeof(msg)), 0);
            double r = tu_rel_rms(y, ref[i], n);
            worst[i] = r > worst[i] ? r : worst[i];
            free(y);
            free(ref[i]);
        }
    }
    free(in);
}

/* fp16 rounds every convolution's weights and input to 11 significant
 * bits (relative error <= 2^-11 = 4.9e-4 each); over at most 13 chained
 * convolutions that stays near 1e-2 in the worst case. Measured: at most
 * 0.0045 (RMS, any layer, any photo). */
static void test_fp16_layers_within_bound(void **state)
{
    (void)state;
    int layers = mpd_engine_layer_count(eng);
    double worst[64];
    layer_errors("config/fp16_all.plan", worst, layers);
    for (int i = 0; i < layers; i++) {
        if (!(worst[i] <= 1e-2))
            print_error("fp16 layer %d: relative RMS error %.4f\n", i, worst[i]);
        assert_true(worst[i] <= 1e-2);
    }
}

/* bf16 rounds every convolution's weights and input to 8 significant bits
 * (relative error <= 2^-8 = 3.9e-3 each, 8x fp16's), and its stored
 * outputs once more; over 13 chained convolutions. Measured: at most
 * 0.052 (RMS, any layer, any photo). */
static void test_bf16_layers_within_bound(void **state)
{
    (void)state;
    int layers = mpd_engine_layer_count(eng);
    double worst[64], max = 0;
    layer_errors("config/bf16_all.plan", worst, layers);
    for (int i = 0; i < layers; i++) {
        max = worst[i] > max ? worst[i] : max;
        if (!(worst[i] <= 8e-2))
            print_error("bf16 layer %d: relative RMS error %.4f\n", i, worst[i]);
        assert_true(worst[i] <= 8e-2);
    }
    print_message("bf16_all: worst layer relative RMS %.4f\n", max);
}

/* Per layer of yolov3-tiny under plan: 1 where the plan stores its output
 * rounded to half, 2 to bf16 (mpd__plan_tensor_types), and a maxpool of
 * such an output keeps that; 0 elsewhere. */
static void stored_rounded(const char *plan, char *rounded, int layers)
{
    char *cfg = tu_model("yolov3-tiny.cfg");
    mpd_net *net;
    mpd_plan *base, *pl;
    assert_int_equal(mpd_net_parse(cfg, &net, msg, sizeof(msg)), 0);
    assert_int_equal(net->n, layers);
    assert_int_equal(mpd_plan_from_net(net, &base, msg, sizeof(msg)), 0);
    assert_int_equal(mpd_plan_parse_file(plan, net, base, &pl, msg, sizeof(msg)), 0);
    mpd_tensor_type type[64];
    mpd_qparams oq[64];
    assert_int_equal(mpd__plan_tensor_types(net, pl, type, oq), 0);
    for (int i = 0; i < layers; i++) {
        rounded[i] = type[i] == MPD_TENSOR_F16 ? 1 : type[i] == MPD_TENSOR_BF16 ? 2 : 0;
        if (net->layers[i].kind == MPD_LAYER_MAXPOOL && i > 0 && rounded[i - 1])
            rounded[i] = rounded[i - 1];
    }
    mpd_plan_free(pl);
    mpd_plan_free(base);
    mpd_net_free(net);
    free(cfg);
}

/* plan on dog.jpg under two kernel settings (env: "NAME=value" pairs,
 * space-separated, set while the plan loads), which compute the same
 * operands and differ only in the order of fp32 sums and so, where an
 * output is stored rounded, by a rounding step: layer 0 (the image as
 * input to both) within one step (relative) + atol everywhere - a path
 * that skipped rounding its input or weights would not be - and every
 * layer within rms relative RMS, as such flips spread. want_a/want_b: a
 * word layer 0's kernel name must contain. Every output the plan stores
 * rounded (stored_rounded) must hold rounded values on both. step 0: no
 * check per output of layer 0 (kernels whose arithmetic differs by more
 * than the order of sums, their per-output bound tested on the GEMM). */
static void kernels_agree(const char *plan, const char *env_a, const char *want_a,
                          const char *env_b, const char *want_b, float step, float atol, double rms)
{
    int layers = mpd_engine_layer_count(eng);
    float *in = malloc(3 * 416 * 416 * sizeof(float)), *out[2][64];
    char *path = tu_darknet_data("dog.jpg");
    mpd_image im;
    assert_int_equal(mpd_image_load(path, 0, &im, msg, sizeof(msg)), 0);
    assert_int_equal(mpd_engine_preprocess(eng, &im, in), 0);
    mpd_image_free(&im);
    free(path);
    const char *env[2] = {env_a, env_b}, *want[2] = {want_a, want_b};
    char rounded[64];
    stored_rounded(plan, rounded, layers);
    for (int k = 0; k < 2; k++) {
        char buf[256], *save = NULL;
        snprintf(buf, sizeof(buf), "%s", env[k]);
        for (char *kv = strtok_r(buf, " ", &save); kv; kv = strtok_r(NULL, " ", &save)) {
            char *eq = strchr(kv, '=');
            *eq = 0;
            setenv(kv, eq + 1, 1);
        }
        int rc = mpd_engine_load_plan(eng, plan, msg, sizeof(msg));
        unsetenv("MPDET_BF16_KERNEL");
        unsetenv("MPDET_FP16_KERNEL");
        unsetenv("MPDET_FP32_KERNEL");
        assert_int_equal(rc, 0);
        mpd_layer_info li;
        mpd_engine_layer_info(eng, 0, &li);
        if (!strstr(li.kernel, want[k]))
            print_error("%s [%s]: layer 0 runs '%s', not %s\n", plan, env[k], li.kernel, want[k]);
        assert_non_null(strstr(li.kernel, want[k]));
        assert_int_equal(mpd_engine_forward(eng, in, 1, msg, sizeof(msg)), 0);
        for (int i = 0; i < layers; i++) {
            size_t n = mpd_engine_layer_output_size(eng, i), off = 0;
            out[k][i] = malloc(n * sizeof(float));
            assert_int_equal(mpd_engine_layer_output(eng, i, 1, out[k][i], msg, sizeof(msg)), 0);
            /* What the plan stores rounded holds rounded values, however a
             * kernel keeps it. */
            for (size_t j = 0; j < n; j++) {
                float v = out[k][i][j];
                off += rounded[i] == 1   ? mpd_f16_to_f32(mpd_f32_to_f16(v)) != v
                       : rounded[i] == 2 ? mpd_bf16_round(v) != v
                                         : 0;
            }
            if (off)
                print_error("%s [%s]: layer %d has %zu of %zu values not rounded to %s\n", plan,
                            env[k], i, off, n, rounded[i] == 1 ? "half" : "bf16");
            assert_true(off == 0);
        }
    }
    size_t n0 = mpd_engine_layer_output_size(eng, 0), far = 0;
    for (size_t j = 0; j < n0; j++) {
        float a = out[0][0][j], b = out[1][0][j];
        far += step > 0 && fabsf(a - b) > step * fmaxf(fabsf(a), fabsf(b)) + atol;
    }
    double max = 0;
    for (int i = 0; i < layers; i++) {
        double r = tu_rel_rms(out[0][i], out[1][i], mpd_engine_layer_output_size(eng, i));
        max = r > max ? r : max;
        if (!(r <= rms))
            print_error("%s layer %d: [%s] vs [%s] relative RMS %.6f\n", plan, i, env_a, env_b, r);
        assert_true(r <= rms);
        free(out[0][i]);
        free(out[1][i]);
    }
    print_message("%s [%s] vs [%s]: layer 0 %zu of %zu beyond a step, worst layer relative RMS "
                  "%.6f\n",
                  plan, env_a, env_b, far, n0, max);
    assert_true(far == 0);
    free(in);
}

/* The four all-one-precision presets. */
static const char *const plans[] = {"config/fp32_all.plan", "config/fp16_all.plan",
                                    "config/bf16_all.plan", "config/int8_all.plan"};

/* darknet's photo `name`, letterboxed into in (3 x 416 x 416). */
static void photo_input(const char *name, float *in)
{
    char *path = tu_darknet_data(name);
    mpd_image im;
    assert_int_equal(mpd_image_load(path, 0, &im, msg, sizeof(msg)), 0);
    assert_int_equal(mpd_engine_preprocess(eng, &im, in), 0);
    mpd_image_free(&im);
    free(path);
}

/* A maxpool's output is the maxpool of its input, bit for bit, in every
 * precision, wherever it runs: on its own or inside the convolution
 * before it, band by band (cpu_plan.fuse: layers 1, 3, 5 and 7 on x86
 * with oneDNN; 9's convolution is read by a route too). Two photos in turn, so rows a band missed would hold the
 * first photo's values. The dequantized int8 and widened half and bf16
 * outputs keep the order (max commutes with them). */
static void test_maxpools_match_their_inputs(void **state)
{
    (void)state;
    char *cfg = tu_model("yolov3-tiny.cfg");
    mpd_net *net;
    assert_int_equal(mpd_net_parse(cfg, &net, msg, sizeof(msg)), 0);
    free(cfg);
    float *in = malloc(3 * 416 * 416 * sizeof(float));
    for (size_t p = 0; p < sizeof(plans) / sizeof(plans[0]); p++) {
        assert_int_equal(mpd_engine_load_plan(eng, plans[p], msg, sizeof(msg)), 0);
        mpd_layer_info li;
        mpd_engine_layer_info(eng, 0, &li);
        print_message("%s layer 0: %s\n", plans[p], li.kernel);
        if (mpd__dnnl_conv_available() && !strstr(li.kernel, "half arithmetic"))
            assert_non_null(strstr(li.kernel, "+ maxpool"));
        for (int k = 0; k < 2; k++) {
            photo_input(k ? "eagle.jpg" : "dog.jpg", in);
            assert_int_equal(mpd_engine_forward(eng, in, 1, msg, sizeof(msg)), 0);
        }
        for (int j = 1; j < net->n; j++) {
            const mpd_layer *l = &net->layers[j];
            if (l->kind != MPD_LAYER_MAXPOOL)
                continue;
            size_t nx = mpd_layer_in_size(l), ny = mpd_layer_out_size(l), off = 0;
            float *x = malloc(nx * sizeof(float)), *y = malloc(ny * sizeof(float));
            float *ref = malloc(ny * sizeof(float));
            assert_int_equal(mpd_engine_layer_output(eng, j - 1, 1, x, msg, sizeof(msg)), 0);
            assert_int_equal(mpd_engine_layer_output(eng, j, 1, y, msg, sizeof(msg)), 0);
            mpd__maxpool_f32(l, x, ref);
            for (size_t e = 0; e < ny; e++)
                off += memcmp(&y[e], &ref[e], sizeof(float)) != 0;
            if (off)
                print_error("%s: maxpool %d differs from its input's maxpool in %zu of %zu\n",
                            plans[p], j, off, ny);
            assert_true(off == 0);
            free(x);
            free(y);
            free(ref);
        }
    }
    free(in);
    mpd_net_free(net);
}

/* An engine that reuses buffers (the daemon's) computes what one that
 * keeps every output does, bit for bit, under every preset: its fused
 * convolutions write no output of their own (nothing reads it after their
 * maxpool), and the maxpool's buffer is never the one the convolution's
 * bands still read. Without that (mpd__buffer_plan), pool 3 took layer
 * 1's buffer: a band that finished early pooled over input rows another
 * band had yet to read. The yolo outputs are compared, two photos each. */
static void test_reused_buffers_match_kept(void **state)
{
    (void)state;
    char *cfg = tu_model("yolov3-tiny.cfg"), *w = tu_model("yolov3-tiny.weights");
    char *names = tu_model("coco.names");
    mpd_engine_options o = {.cfg_path = cfg,
                            .weights_path = w,
                            .names_path = names,
                            .backend = "cpu",
                            .reuse_buffers = 1};
    mpd_engine *re;
    assert_int_equal(mpd_engine_open(&o, &re, msg, sizeof(msg)), 0);
    free(cfg);
    free(w);
    free(names);
    float *in = malloc(3 * 416 * 416 * sizeof(float));
    int layers = mpd_engine_layer_count(eng);
    for (size_t p = 0; p < sizeof(plans) / sizeof(plans[0]); p++) {
        assert_int_equal(mpd_engine_load_plan(eng, plans[p], msg, sizeof(msg)), 0);
        assert_int_equal(mpd_engine_load_plan(re, plans[p], msg, sizeof(msg)), 0);
        for (int k = 0; k < 2; k++) {
            photo_input(k ? "eagle.jpg" : "dog.jpg", in);
            assert_int_equal(mpd_engine_forward(eng, in, 1, msg, sizeof(msg)), 0);
            assert_int_equal(mpd_engine_forward(re, in, 1, msg, sizeof(msg)), 0);
            for (int i = 0; i < layers; i++) {
                mpd_layer_info li;
                mpd_engine_layer_info(eng, i, &li);
                if (strcmp(li.kind, "yolo") != 0)
                    continue;
                size_t n = mpd_engine_layer_output_size(eng, i), off = 0;
                float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
                assert_int_equal(mpd_engine_layer_output(eng, i, 1, a, msg, sizeof(msg)), 0);
                assert_int_equal(mpd_engine_layer_output(re, i, 1, b, msg, sizeof(msg)), 0);
                for (size_t e = 0; e < n; e++)
                    off += memcmp(&a[e], &b[e], sizeof(float)) != 0;
                if (off)
                    print_error("%s photo %d: yolo layer %d differs in %zu of %zu values\n",
                                plans[p], k, i, off, n);
                assert_true(off == 0);
                free(a);
                free(b);
            }
        }
    }
    free(in);
    mpd_engine_close(re);
}

/* Every kernel a precision runs on computes the same numbers but for the
 * order of fp32 sums: bf16 on oneDNN's bf16 primitives, emulated on its
 * fp32 ones and on our sgemm; fp16 and fp32 on oneDNN and on our sgemm.
 * Measured on dog.jpg: bf16 native vs emulated 0.0027 relative RMS at
 * worst, the rest far less. */
static void test_float_kernels_agree(void **state)
{
    (void)state;
    if (!mpd__dnnl_conv_available()) {
        print_message("skipped: no oneDNN here: one kernel per precision\n");
        skip();
    }
    if (mpd__dnnl_bf16_native())
        kernels_agree("config/bf16_all.plan", "", "bf16 oneDNN", "MPDET_BF16_KERNEL=emulated",
                      "emulated", 0x1p-7f, 1e-5f, 1e-2);
    kernels_agree("config/bf16_all.plan", "MPDET_BF16_KERNEL=emulated", "on fp32 oneDNN",
                  "MPDET_BF16_KERNEL=emulated MPDET_FP32_KERNEL=openblas", "fp32 GEMM", 0x1p-7f,
                  1e-5f, 1e-2);
    kernels_agree("config/fp16_all.plan", "MPDET_FP16_KERNEL=emulated", "on fp32 oneDNN",
                  "MPDET_FP16_KERNEL=emulated MPDET_FP32_KERNEL=openblas", "fp32 GEMM", 0x1p-10f,
                  1e-5f, 1e-3);
    /* fp16 in half arithmetic (AVX512-FP16) against fp32 arithmetic on
     * the same half values: each 16-tap chunk summed in half, within
     * gemm_f16.h's bound per output (test_gemm_f16, make
     * test-avx512fp16); here every layer within 1e-2 relative RMS. By
     * default each layer runs the faster of the two (timed per plan), so
     * a mix of them too, through every change of layout between them. */
    if (mpd__f16_arith()) {
        kernels_agree("config/fp16_all.plan", "MPDET_FP16_KERNEL=half", "in half arithmetic",
                      "MPDET_FP16_KERNEL=emulated", "on fp32 oneDNN", 0, 0, 1e-2);
        kernels_agree("config/fp16_all.plan", "", "fp16", "MPDET_FP16_KERNEL=emulated",
                      "on fp32 oneDNN", 0, 0, 1e-2);
    }
    /* fp32: no rounding step; its sums' error near outputs that cancel
     * to about 0 calls for an absolute part. */
    kernels_agree("config/fp32_all.plan", "", "fp32 oneDNN", "MPDET_FP32_KERNEL=openblas",
                  "fp32 GEMM", 1e-5f, 1e-4f, 1e-4);
}

/* int8 adds one rounding of 1/254 of each tensor's calibrated range per
 * layer, plus per-channel weight rounding; layer 0 alone is ~7% (its BN-
 * folded filters have outliers that coarsen the per-channel step), and the
 * error grows through the 13 chained int8 convolutions. Measured (minmax
 * calibration, 7 photos): 0.07 after layer 0, at most 0.24 anywhere. The
 * bound 0.35 flags a real regression (a wrong scale or layout gives >1). */
static void test_int8_layers_within_bound(void **state)
{
    (void)state;
    const char *plans[] = {"config/int8_all.plan", "config/int8_all_affine.plan",
                           "config/fp32_int8.plan", "config/int8_every.plan"};
    int layers = mpd_engine_layer_count(eng);
    for (int p = 0; p < 4; p++) {
        double worst[64];
        layer_errors(plans[p], worst, layers);
        for (int i = 0; i < layers; i++) {
            if (!(worst[i] <= .35))
                print_error("%s layer %d: relative RMS error %.4f\n", plans[p], i, worst[i]);
            assert_true(worst[i] <= .35);
        }
    }
}

static int has_label(const mpd_result *r, const char *label)
{
    for (int i = 0; i < r->count; i++)
        if (strcmp(r->det[i].label, label) == 0)
            return 1;
    return 0;
}

static void detect_dog(const char *plan, mpd_result *r)
{
    int rc = mpd_engine_load_plan(eng, plan, msg, sizeof(msg));
    if (rc)
        print_error("%s: %s\n", plan, msg);
    assert_int_equal(rc, 0);
    char *path = tu_darknet_data("dog.jpg");
    mpd_image im;
    assert_int_equal(mpd_image_load(path, 0, &im, msg, sizeof(msg)), 0);
    mpd_detect_params p = MPD_DETECT_DEFAULTS;
    assert_int_equal(mpd_engine_detect(eng, &im, 1, &p, r, msg, sizeof(msg)), 0);
    mpd_image_free(&im);
    free(path);
}

static void test_presets_detect_dog_bicycle_truck(void **state)
{
    (void)state;
    const char *plans[] = {"config/fp32_all.plan",         "config/fp16_all.plan",
                           "config/bf16_all.plan",         "config/int8_all.plan",
                           "config/fp32_int8.plan",        "config/int8_fp32.plan",
                           "config/int8_all_affine.plan",  "config/fp32_int8_affine.plan",
                           "config/int8_fp32_affine.plan", "config/int8_every.plan",
                           "config/int8_every_affine.plan"};
    for (size_t k = 0; k < sizeof(plans) / sizeof(plans[0]); k++) {
        mpd_result r;
        detect_dog(plans[k], &r);
        print_message("%-32s", plans[k]);
        for (int i = 0; i < r.count; i++)
            print_message(" %s %.0f%%", r.det[i].label, r.det[i].confidence * 100);
        print_message("\n");
        assert_true(has_label(&r, "dog"));
        assert_true(has_label(&r, "bicycle"));
        /* The requirement for int8_all (symmetric); the others too. */
        assert_true(has_label(&r, "truck"));
        mpd_result_free(&r);
    }
}

/* plan detects on dog.jpg what fp32 does: the same objects, confidences
 * within conf, boxes within px. */
static void detections_match_fp32(const char *plan, float conf, float px)
{
    mpd_result a, b;
    detect_dog("config/fp32_all.plan", &a);
    detect_dog(plan, &b);
    assert_int_equal(a.count, b.count);
    for (int i = 0; i < a.count; i++) {
        int found = 0;
        for (int j = 0; j < b.count && !found; j++)
            found = a.det[i].class_id == b.det[j].class_id &&
                    fabsf(a.det[i].confidence - b.det[j].confidence) <= conf &&
                    fabsf(a.det[i].x0 - b.det[j].x0) <= px &&
                    fabsf(a.det[i].y1 - b.det[j].y1) <= px;
        if (!found)
            print_error("%s: no match for %s %.3f\n", plan, a.det[i].label, a.det[i].confidence);
        assert_true(found);
    }
    mpd_result_free(&a);
    mpd_result_free(&b);
}

/* fp16 changes nothing a user sees: same labels, confidences within 1
 * point, boxes within 2 px of fp32. */
static void test_fp16_detections_match_fp32(void **state)
{
    (void)state;
    detections_match_fp32("config/fp16_all.plan", .01f, 2);
}

/* bf16 keeps 8 bits where fp16 keeps 11: the same objects, confidences
 * within 5 points, boxes within 4 px of fp32 (measured: 3 points, 1 px),
 * oneDNN's and the emulation alike. */
static void test_bf16_detections_match_fp32(void **state)
{
    (void)state;
    detections_match_fp32("config/bf16_all.plan", .05f, 4);
    setenv("MPDET_BF16_KERNEL", "emulated", 1);
    detections_match_fp32("config/bf16_all.plan", .05f, 4);
    unsetenv("MPDET_BF16_KERNEL");
}

/* Issue 10, defect 11: a calibration file with the convolutions' entries
 * only (no maxpool, route or upsample entries) used to give the
 * convolutions that read those layers scale 1.0. Their ranges are derived
 * now (a maxpool and an upsample keep their input's, a route takes its
 * sources' largest), so int8_all detects on dog.jpg what it detects with
 * the full file: the same objects, confidences within 5 points, boxes
 * within 8 px (the derived route ranges are a little wider than the
 * calibrated ones: 4.43 instead of 3.77 at layer 17, 16.8 instead of 12.8
 * at layer 20). */
static void test_conv_only_calibration_detects_as_the_full_file(void **state)
{
    (void)state;
    FILE *f = fopen("config/yolov3-tiny.calib", "r");
    assert_non_null(f);
    char line[256], *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    int in_thresholds = 0, dropped = 0;
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '[')
            in_thresholds = strncmp(line, "[thresholds]", 12) == 0;
        mpd_layer_info li;
        int idx;
        if (in_thresholds && sscanf(line, "%d =", &idx) == 1 &&
            mpd_engine_layer_info(eng, idx, &li) == 0 && strcmp(li.kind, "conv") != 0) {
            dropped++;
            continue;
        }
        fputs(line, out);
    }
    fclose(f);
    fclose(out);
    assert_int_equal(dropped, 11); /* 6 maxpools, 2 yolo, 2 routes, 1 upsample */
    char *calib = tu_write_temp(text, len);
    free(text);
    char plan_text[1024];
    snprintf(plan_text, sizeof(plan_text),
             "[plan]\ndefault = int8\nscheme = symmetric\ncalibration = %s\n"
             "[layers]\n0 = fp32\n15 = fp32\n22 = fp32\n",
             calib);
    char *plan = tu_write_temp(plan_text, strlen(plan_text));
    mpd_result full, part;
    detect_dog("config/int8_all.plan", &full);
    detect_dog(plan, &part);
    print_message("full calibration:     ");
    for (int i = 0; i < full.count; i++)
        print_message(" %s %.1f%%", full.det[i].label, full.det[i].confidence * 100);
    print_message("\nconv-only calibration:");
    for (int i = 0; i < part.count; i++)
        print_message(" %s %.1f%%", part.det[i].label, part.det[i].confidence * 100);
    print_message("\n");
    assert_int_equal(part.count, full.count);
    for (int i = 0; i < full.count; i++) {
        int found = 0;
        for (int j = 0; j < part.count && !found; j++)
            found = full.det[i].class_id == part.det[j].class_id &&
                    fabsf(full.det[i].confidence - part.det[j].confidence) <= .05f &&
                    fabsf(full.det[i].x0 - part.det[j].x0) <= 8 &&
                    fabsf(full.det[i].y0 - part.det[j].y0) <= 8 &&
                    fabsf(full.det[i].x1 - part.det[j].x1) <= 8 &&
                    fabsf(full.det[i].y1 - part.det[j].y1) <= 8;
        if (!found)
            print_error("%s %.1f%% of the full file: not found\n", full.det[i].label,
                        full.det[i].confidence * 100);
        assert_true(found);
    }
    mpd_result_free(&full);
    mpd_result_free(&part);
    unlink(plan);
    unlink(calib);
    free(plan);
    free(calib);
}

static void test_plan_swap_and_bad_plan_keeps_old(void **state)
{
    (void)state;
    assert_int_equal(mpd_engine_load_plan(eng, "config/int8_all.plan", msg, sizeof(msg)), 0);
    mpd_plan_info a;
    mpd_engine_plan_info(eng, &a);
    assert_string_equal(a.source, "config/int8_all.plan");
    assert_int_equal(a.layers[2], 10);
    assert_int_equal(a.layers[0], 3);
    char *bad = tu_write_temp("[plan]\ndefault = int9\n", 22);
    assert_int_not_equal(mpd_engine_load_plan(eng, bad, msg, sizeof(msg)), 0);
    assert_non_null(strstr(msg, ":2:"));
    mpd_plan_info b;
    mpd_engine_plan_info(eng, &b);
    assert_int_equal(b.generation, a.generation);
    assert_string_equal(b.source, a.source);
    mpd_result r;
    detect_dog("config/fp32_int8.plan", &r);
    mpd_plan_info c;
    mpd_engine_plan_info(eng, &c);
    assert_true(c.generation > a.generation);
    mpd_layer_info li;
    mpd_engine_layer_info(eng, 12, &li);
    assert_string_equal(li.precision, "int8");
    mpd_engine_layer_info(eng, 13, &li);
    assert_string_equal(li.precision, "fp32");
    assert_true(li.runs == 1);
    mpd_result_free(&r);
    remove(bad);
    free(bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int8_kernel_exact),
        cmocka_unit_test(test_int8_through_fp32_gemm_exact),
        cmocka_unit_test(test_int8_onednn_within_one_code),
        cmocka_unit_test(test_fp32_onednn_within_bound),
        cmocka_unit_test(test_dnnl_worker_bytes_cover_the_run),
        cmocka_unit_test(test_bf16_onednn_and_emulation_within_bound),
        cmocka_unit_test(test_fp16_layers_within_bound),
        cmocka_unit_test(test_int8_layers_within_bound),
        cmocka_unit_test(test_presets_detect_dog_bicycle_truck),
        cmocka_unit_test(test_fp16_detections_match_fp32),
        cmocka_unit_test(test_bf16_layers_within_bound),
        cmocka_unit_test(test_float_kernels_agree),
        cmocka_unit_test(test_maxpools_match_their_inputs),
        cmocka_unit_test(test_reused_buffers_match_kept),
        cmocka_unit_test(test_bf16_detections_match_fp32),
        cmocka_unit_test(test_plan_swap_and_bad_plan_keeps_old),
        cmocka_unit_test(test_conv_only_calibration_detects_as_the_full_file),
        cmocka_unit_test(test_allocation_failures_are_clean),
        cmocka_unit_test(test_int8_k_limit_refused_at_load),
        cmocka_unit_test(test_prepare_commit_discard_across_engines),
    };
    if (getenv("TEST_ONLY")) /* e.g. TEST_ONLY='test_bf16*' */
        cmocka_set_test_filter(getenv("TEST_ONLY"));
    return cmocka_run_group_tests(tests, setup, teardown);
}
