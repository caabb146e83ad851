/* test_overflow.c - the overflow counts of host/overflow.h (the paper's
 * Tables 1 and 2):
 *   - every count equals a brute-force loop over every product and window
 *     sum on small random convolutions (sizes 1 and 3, strides 1 and 2,
 *     padding, K not a multiple of 4, one filter and many, several chunks);
 *   - a 1x1 convolution worked out by hand;
 *   - a symmetric threshold against the measured absmax;
 *   - on the real yolov3-tiny and one photo: the symmetric window sums are
 *     the CPU backend's int32 accumulators, two real layers match the
 *     brute force, and the time per image is printed;
 *   - errors. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/conv_i8.h"
#include "engine.h"
#include "mpd.h"
#include "net.h"
#include "overflow.h"
#include "quant.h"
#include "testutil.h"

static char msg[1024];

/* One convolution on a c x h x w input; conv holds the section's keys.
 * Weights uniform in [wlo, whi). */
static mpd_net *one_conv(int c, int h, int w, const char *conv, float wlo, float whi, unsigned seed)
{
    char text[512];
    snprintf(text, sizeof(text), "[net]\nwidth=%d\nheight=%d\nchannels=%d\n[convolutional]\n%s", w,
             h, c, conv);
    mpd_net *net = tu_net_from_text(text, "t.cfg", msg, sizeof(msg));
    if (!net)
        fail_msg("%s", msg);
    mpd_layer *l = &net->layers[0];
    size_t nw = (size_t)l->u.conv.filters * l->in_c * l->u.conv.size * l->u.conv.size;
    l->u.conv.weights = tu_xmalloc(nw * sizeof(float));
    l->u.conv.bias = tu_xmalloc((size_t)l->u.conv.filters * sizeof(float));
    tu_fill_random(l->u.conv.weights, nw, wlo, whi, seed);
    tu_fill_random(l->u.conv.bias, (size_t)l->u.conv.filters, -.5f, .5f, seed + 1);
    net->weights_loaded = 1;
    return net;
}

/* ---- the brute-force reference ------------------------------------------ */

/* Quantizes n floats with p as every backend does (x times 1/scale). */
static void quantize(const float *x, size_t n, mpd_qparams p, int *q)
{
    float inv = 1.f / p.scale;
    for (size_t i = 0; i < n; i++)
        q[i] = mpd_q_quantize(x[i], inv, p.zero);
}

static void range(const float *x, size_t n, float *mn, float *mx)
{
    *mn = x[0];
    *mx = x[0];
    for (size_t i = 1; i < n; i++) {
        *mn = x[i] < *mn ? x[i] : *mn;
        *mx = x[i] > *mx ? x[i] : *mx;
    }
}

/* Every product and every window sum of one variant, in int64, straight
 * from the definition: darknet's [c][ky][kx] weight order, CHW input, the
 * zero-point code at padding taps. */
static void brute_variant(const mpd_layer *l, const int *xq, int zx, const int *wq, int zw,
                          int corrected, long long *prod_ovf, long long *sum_ovf,
                          long long *max_abs)
{
    const mpd_conv *cv = &l->u.conv;
    int c = l->in_c, h = l->in_h, w = l->in_w, ks = cv->size;
    *prod_ovf = *sum_ovf = *max_abs = 0;
    for (int o = 0; o < cv->filters; o++) {
        for (int oy = 0; oy < l->out_h; oy++) {
            for (int ox = 0; ox < l->out_w; ox++) {
                long long sum = 0;
                for (int ch = 0; ch < c; ch++) {
                    for (int ky = 0; ky < ks; ky++) {
                        for (int kx = 0; kx < ks; kx++) {
                            int iy = oy * cv->stride + ky - cv->pad;
                            int ix = ox * cv->stride + kx - cv->pad;
                            long long a = iy < 0 || iy >= h || ix < 0 || ix >= w
                                              ? zx
                                              : xq[((size_t)ch * h + iy) * w + ix];
                            long long b = wq[(((size_t)o * c + ch) * ks + ky) * ks + kx];
                            long long p = corrected ? (a - zx) * (b - zw) : a * b;
                            *prod_ovf += p < -128 || p > 127;
                            sum += p;
                        }
                    }
                }
                *sum_ovf += sum < -32768 || sum > 32767;
                long long m = sum < 0 ? -sum : sum;
                *max_abs = m > *max_abs ? m : *max_abs;
            }
        }
    }
}

/* All three variants, quantizing with the schemes' definitions. */
static void brute_force(const mpd_layer *l, const float *x, float x_thresh, mpd_ovf_counts *r)
{
    const mpd_conv *cv = &l->u.conv;
    int m = cv->filters, k = l->in_c * cv->size * cv->size;
    size_t nx = mpd_layer_in_size(l), nw = (size_t)m * k;
    int *xq = tu_xmalloc(nx * sizeof(int)), *wq = tu_xmalloc(nw * sizeof(int));
    memset(r, 0, sizeof(*r));
    r->products = (long long)m * l->out_h * l->out_w * k;
    r->sums = (long long)m * l->out_h * l->out_w;

    float mn, mx, wmn, wmx;
    range(x, nx, &mn, &mx);
    range(cv->weights, nw, &wmn, &wmx);
    mpd_qparams pa = mpd_q_affine(mn, mx), pw = mpd_q_affine(wmn, wmx);
    quantize(x, nx, pa, xq);
    quantize(cv->weights, nw, pw, wq);
    brute_variant(l, xq, pa.zero, wq, pw.zero, 0, &r->prod_ovf[MPD_OVF_AFFINE_CODES],
                  &r->sum_ovf[MPD_OVF_AFFINE_CODES], &r->max_abs_sum[MPD_OVF_AFFINE_CODES]);
    brute_variant(l, xq, pa.zero, wq, pw.zero, 1, &r->prod_ovf[MPD_OVF_AFFINE_CORRECTED],
                  &r->sum_ovf[MPD_OVF_AFFINE_CORRECTED], &r->max_abs_sum[MPD_OVF_AFFINE_CORRECTED]);

    float thr = x_thresh > 0 ? x_thresh : fmaxf(-mn, mx);
    quantize(x, nx, mpd_q_symmetric(thr), xq);
    for (int o = 0; o < m; o++) {
        const float *src = cv->weights + (size_t)o * k;
        float amax = 0;
        for (int j = 0; j < k; j++)
            amax = fmaxf(amax, fabsf(src[j]));
        quantize(src, (size_t)k, mpd_q_symmetric(amax), wq + (size_t)o * k);
    }
    brute_variant(l, xq, 0, wq, 0, 0, &r->prod_ovf[MPD_OVF_SYMMETRIC],
                  &r->sum_ovf[MPD_OVF_SYMMETRIC], &r->max_abs_sum[MPD_OVF_SYMMETRIC]);
    free(xq);
    free(wq);
}

/* Field by field, naming every variant that differs. */
static void assert_counts_equal(const mpd_ovf_counts *got, const mpd_ovf_counts *want,
                                const char *what)
{
    int bad = got->products != want->products || got->sums != want->sums;
    for (int v = 0; v < MPD_OVF_NVARIANTS; v++) {
        if (got->prod_ovf[v] != want->prod_ovf[v] || got->sum_ovf[v] != want->sum_ovf[v] ||
            got->max_abs_sum[v] != want->max_abs_sum[v]) {
            print_error("%s, %s: products %lld/%lld overflow (want %lld), sums %lld/%lld "
                        "(want %lld), max |sum| %lld (want %lld)\n",
                        what, mpd_ovf_variant_name((mpd_ovf_variant)v), got->prod_ovf[v],
                        got->products, want->prod_ovf[v], got->sum_ovf[v], got->sums,
                        want->sum_ovf[v], got->max_abs_sum[v], want->max_abs_sum[v]);
            bad = 1;
        }
    }
    if (got->products != want->products || got->sums != want->sums)
        print_error("%s: %lld products, %lld sums (want %lld, %lld)\n", what, got->products,
                    got->sums, want->products, want->sums);
    assert_false(bad);
}

/* ---- small random convolutions against the brute force ---------------- */

typedef struct {
    int c, h, w;
    const char *conv;
    float wlo, whi; /* weight range */
    float xlo, xhi; /* input range */
} conv_case;

static void test_matches_brute_force(void **state)
{
    (void)state;
    const conv_case cases[] = {
        /* K = 45: not a multiple of 4, and more than the 32 taps whose
         * tables are built at a time; "same" padding; a symmetric and a
         * shifted weight range. */
        {5, 9, 11, "filters=7\nsize=3\nstride=1\npad=1\n", -1.f, 1.f, -2.f, 3.f},
        {5, 9, 11, "filters=7\nsize=3\nstride=1\npad=1\n", -.2f, 1.f, -2.f, 3.f},
        /* M = 1, K = 3; inputs after a ReLU (zero point -127). */
        {3, 6, 7, "filters=1\nsize=1\nstride=1\n", -1.f, 1.f, 0.f, 4.f},
        /* Stride 2 over an odd size; all-negative inputs (zero point 127). */
        {3, 13, 9, "filters=4\nsize=3\nstride=2\npad=1\n", -.5f, .3f, -5.f, -1.f},
        /* No padding; then more padding than "same". */
        {2, 8, 8, "filters=5\nsize=3\nstride=1\n", -1.f, .1f, -1.f, 6.f},
        {6, 7, 5, "filters=3\nsize=3\nstride=2\npadding=2\n", -.3f, .9f, -.5f, 2.f},
        /* 1x1 with stride 2, K = 9. */
        {9, 10, 10, "filters=10\nsize=1\nstride=2\n", -1.f, 1.f, -1.f, 1.f},
        /* Many filters: N = 2500 output pixels are counted in two chunks
         * (8 MiB / (K + 4 M + 4 bytes) = 2044 pixels, then 456). */
        {4, 50, 50, "filters=1024\nsize=1\nstride=1\n", -.4f, .6f, -.1f, 3.f},
    };
    const float thresholds[] = {0.f, 1.5f, 100.f};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const conv_case *cc = &cases[i];
        mpd_net *net = one_conv(cc->c, cc->h, cc->w, cc->conv, cc->wlo, cc->whi, 11 + (unsigned)i);
        const mpd_layer *l = &net->layers[0];
        size_t nx = mpd_layer_in_size(l);
        float *x = tu_xmalloc(nx * sizeof(float));
        tu_fill_random(x, nx, cc->xlo, cc->xhi, 101 + (unsigned)i);
        for (size_t t = 0; t < sizeof(thresholds) / sizeof(thresholds[0]); t++) {
            mpd_ovf_counts got, want;
            assert_int_equal(mpd_ovf_conv(l, x, thresholds[t], &got, msg, sizeof(msg)), 0);
            brute_force(l, x, thresholds[t], &want);
            char what[64];
            snprintf(what, sizeof(what), "case %zu, x_thresh %g", i, (double)thresholds[t]);
            assert_counts_equal(&got, &want, what);
            /* Every case must exercise something: overflowing products. */
            assert_true(got.prod_ovf[MPD_OVF_AFFINE_CODES] > 0);
        }
        free(x);
        mpd_net_free(net);
    }
}

/* ---- worked by hand ------------------------------------------------------ */

/* A 1x1 convolution with two filters over a 1 x 2 image of 3 channels.
 *   Weights f0 = {1, 1, 1}, f1 = {1, 0, -1}: per tensor, min -1 and max 1
 *   give scale 1/127 and zero point 0, codes {127, 127, 127} and
 *   {127, 0, -127}; per channel symmetric gives the same codes.
 *   Input: pixel 0 is 1 in every channel, pixel 1 is 0. Affine: min 0,
 *   max 1 give scale 1/254 and zero point -127, codes 127 and -127.
 * M = 2, N = 2, K = 3: 12 products and 4 sums. */
static mpd_net *hand_net(float **x)
{
    mpd_net *net = one_conv(3, 1, 2, "filters=2\nsize=1\nstride=1\n", 0.f, 1.f, 1);
    const float w[6] = {1, 1, 1, 1, 0, -1};
    memcpy(net->layers[0].u.conv.weights, w, sizeof(w));
    static float in[6] = {1, 0, 1, 0, 1, 0}; /* CHW: each channel is {pixel 0, pixel 1} */
    *x = in;
    return net;
}

static void test_hand_worked_1x1(void **state)
{
    (void)state;
    float *x;
    mpd_net *net = hand_net(&x);
    mpd_ovf_counts r;
    assert_int_equal(mpd_ovf_conv(&net->layers[0], x, 0.f, &r, msg, sizeof(msg)), 0);
    assert_int_equal(r.products, 12);
    assert_int_equal(r.sums, 4);

    /* Codes. Pixel 0 (codes 127): f0 gives 127 * 127 = 16129 three times
     * (3 overflows) summing to 48387 > 32767; f1 gives 16129, 0, -16129
     * (2 overflows) summing to 0. Pixel 1 (codes -127) mirrors it: 3 + 2
     * overflows and the sums -48387 (overflows) and 0. */
    assert_int_equal(r.prod_ovf[MPD_OVF_AFFINE_CODES], 10);
    assert_int_equal(r.sum_ovf[MPD_OVF_AFFINE_CODES], 2);
    assert_int_equal(r.max_abs_sum[MPD_OVF_AFFINE_CODES], 48387);

    /* Corrected: x - z_x is 254 at pixel 0 and 0 at pixel 1 (which then
     * contributes nothing); w - z_w = w. Pixel 0: f0 gives 254 * 127 =
     * 32258 three times, summing to 96774; f1 gives 32258, 0, -32258. */
    assert_int_equal(r.prod_ovf[MPD_OVF_AFFINE_CORRECTED], 5);
    assert_int_equal(r.sum_ovf[MPD_OVF_AFFINE_CORRECTED], 1);
    assert_int_equal(r.max_abs_sum[MPD_OVF_AFFINE_CORRECTED], 96774);

    /* Symmetric, measured absmax 1: codes 127 at pixel 0 and 0 at pixel
     * 1, so pixel 0 alone counts as in the codes variant. */
    assert_int_equal(r.prod_ovf[MPD_OVF_SYMMETRIC], 5);
    assert_int_equal(r.sum_ovf[MPD_OVF_SYMMETRIC], 1);
    assert_int_equal(r.max_abs_sum[MPD_OVF_SYMMETRIC], 48387);
    mpd_net_free(net);
}

/* A threshold changes only the symmetric variant. Threshold 4: 1.0 gets
 * code round(127 / 4) = 32, so f0's products 32 * 127 = 4064 still
 * overflow int8, but their sum 12192 fits int16. Threshold 0.5: 1.0 clips
 * to 127, as with the measured absmax. The measured absmax given as the
 * threshold is the same quantization as measuring it. */
static void test_threshold_against_measured(void **state)
{
    (void)state;
    float *x;
    mpd_net *net = hand_net(&x);
    const mpd_layer *l = &net->layers[0];
    mpd_ovf_counts meas, t4, t05, t1;
    assert_int_equal(mpd_ovf_conv(l, x, 0.f, &meas, msg, sizeof(msg)), 0);
    assert_int_equal(mpd_ovf_conv(l, x, 4.f, &t4, msg, sizeof(msg)), 0);
    assert_int_equal(mpd_ovf_conv(l, x, .5f, &t05, msg, sizeof(msg)), 0);
    assert_int_equal(mpd_ovf_conv(l, x, 1.f, &t1, msg, sizeof(msg)), 0);
    assert_int_equal(t4.prod_ovf[MPD_OVF_SYMMETRIC], 5);
    assert_int_equal(t4.sum_ovf[MPD_OVF_SYMMETRIC], 0);
    assert_int_equal(t4.max_abs_sum[MPD_OVF_SYMMETRIC], 12192);
    assert_memory_equal(&t05, &meas, sizeof(meas));
    assert_memory_equal(&t1, &meas, sizeof(meas));
    for (int v = MPD_OVF_AFFINE_CODES; v <= MPD_OVF_AFFINE_CORRECTED; v++) {
        assert_int_equal(t4.prod_ovf[v], meas.prod_ovf[v]);
        assert_int_equal(t4.sum_ovf[v], meas.sum_ovf[v]);
        assert_int_equal(t4.max_abs_sum[v], meas.max_abs_sum[v]);
    }
    /* A negative threshold means "measure", like 0. */
    mpd_ovf_counts neg;
    assert_int_equal(mpd_ovf_conv(l, x, -3.f, &neg, msg, sizeof(msg)), 0);
    assert_memory_equal(&neg, &meas, sizeof(meas));
    mpd_net_free(net);
}

/* ---- errors ------------------------------------------------------------- */

static void test_errors(void **state)
{
    (void)state;
    mpd_net *net = tu_net_from_text("[net]\nwidth=8\nheight=8\nchannels=3\n"
                                    "[convolutional]\nfilters=4\nsize=3\nstride=1\npad=1\n"
                                    "[maxpool]\nsize=2\nstride=2\n",
                                    "e.cfg", msg, sizeof(msg));
    assert_non_null(net);
    float x[4 * 8 * 8] = {0};
    mpd_ovf_counts r;
    memset(&r, 0x55, sizeof(r));
    msg[0] = 0;
    assert_int_equal(mpd_ovf_conv(&net->layers[1], x, 0.f, &r, msg, sizeof(msg)), MPD_EINVAL);
    assert_non_null(strstr(msg, "not a convolution"));
    assert_non_null(strstr(msg, "layer 1"));
    assert_int_equal(r.products, 0); /* zeroed on error */
    /* The convolution before its weights are loaded. */
    msg[0] = 0;
    assert_int_equal(mpd_ovf_conv(&net->layers[0], x, 0.f, &r, msg, sizeof(msg)), MPD_EINVAL);
    assert_non_null(strstr(msg, "weights"));
    /* Limits, checked before the weights are read. */
    mpd_layer big = net->layers[0];
    big.u.conv.weights = x;
    big.in_c = 4000; /* 36000 taps */
    msg[0] = 0;
    assert_int_equal(mpd_ovf_conv(&big, x, 0.f, &r, msg, sizeof(msg)), MPD_EINVAL);
    assert_non_null(strstr(msg, "taps"));
    big.in_c = 3;
    big.u.conv.filters = (1 << 24) + 1;
    msg[0] = 0;
    assert_int_equal(mpd_ovf_conv(&big, x, 0.f, &r, msg, sizeof(msg)), MPD_EINVAL);
    assert_non_null(strstr(msg, "filters"));
    assert_int_equal(mpd_ovf_conv(NULL, x, 0.f, &r, msg, sizeof(msg)), MPD_EINVAL);
    assert_int_equal(mpd_ovf_conv(&net->layers[0], NULL, 0.f, &r, msg, sizeof(msg)), MPD_EINVAL);
    assert_int_equal(mpd_ovf_conv(&net->layers[0], x, 0.f, NULL, NULL, 0), MPD_EINVAL);
    mpd_net_free(net);

    float *hx;
    net = hand_net(&hx);
    msg[0] = 0;
    assert_int_equal(mpd_ovf_conv(&net->layers[0], hx, NAN, &r, msg, sizeof(msg)), MPD_EINVAL);
    assert_non_null(strstr(msg, "threshold"));
    assert_int_equal(mpd_ovf_conv(&net->layers[0], hx, INFINITY, &r, msg, sizeof(msg)), MPD_EINVAL);
    mpd_net_free(net);

    assert_string_equal(mpd_ovf_variant_name(MPD_OVF_AFFINE_CODES), "affine_codes");
    assert_string_equal(mpd_ovf_variant_name(MPD_OVF_AFFINE_CORRECTED), "affine_corrected");
    assert_string_equal(mpd_ovf_variant_name(MPD_OVF_SYMMETRIC), "symmetric");
    assert_string_equal(mpd_ovf_variant_name(MPD_OVF_NVARIANTS), "?");
}

/* ---- the real network ----------------------------------------------------- */

/* yolov3-tiny with its weights, and each layer's fp32 input for dog.jpg. */
typedef struct {
    mpd_net *net;
    float **in; /* per layer; NULL for layers that are not convolutions */
} real_fixture;

static int real_setup(void **state)
{
    static real_fixture f;
    char *cfg = tu_model("yolov3-tiny.cfg"), *wts = tu_model("yolov3-tiny.weights");
    char *photo = tu_darknet_data("dog.jpg");
    mpd_engine_options o = {.cfg_path = cfg, .weights_path = wts, .backend = "cpu"};
    mpd_engine *eng = NULL;
    mpd_image im = {0};
    int rc = mpd_net_parse(cfg, &f.net, msg, sizeof(msg));
    rc = rc ? rc : mpd_net_load_weights(f.net, wts, msg, sizeof(msg));
    rc = rc ? rc : mpd_engine_open(&o, &eng, msg, sizeof(msg));
    rc = rc ? rc : mpd_engine_load_plan(eng, "config/fp32_all.plan", msg, sizeof(msg));
    rc = rc ? rc : mpd_image_load(photo, 0, &im, msg, sizeof(msg));
    if (rc) {
        fprintf(stderr, "%s\n", msg);
        goto out;
    }
    /* The layer inputs of an fp32 forward pass: the network input for
     * layer 0, else the previous layer's output (yolov3-tiny's
     * convolutions all read the layer before them, routes included). */
    int c, h, w;
    mpd_engine_input_shape(eng, &c, &h, &w);
    size_t nin = (size_t)c * h * w;
    float *input = tu_xmalloc(nin * sizeof(float));
    assert_int_equal(mpd_engine_preprocess(eng, &im, input), 0);
    assert_int_equal(mpd_engine_forward(eng, input, 1, msg, sizeof(msg)), 0);
    f.in = calloc((size_t)f.net->n, sizeof(float *));
    for (int i = 0; i < f.net->n; i++) {
        const mpd_layer *l = &f.net->layers[i];
        if (l->kind != MPD_LAYER_CONV)
            continue;
        f.in[i] = tu_xmalloc(mpd_layer_in_size(l) * sizeof(float));
        if (i == 0) {
            memcpy(f.in[i], input, nin * sizeof(float));
        } else {
            assert_int_equal(mpd_engine_layer_output_size(eng, i - 1), mpd_layer_in_size(l));
            assert_int_equal(mpd_engine_layer_output(eng, i - 1, 1, f.in[i], msg, sizeof(msg)), 0);
        }
    }
    free(input);
    *state = &f;
out:
    mpd_image_free(&im);
    mpd_engine_close(eng);
    free(cfg);
    free(wts);
    free(photo);
    return rc;
}

static int real_teardown(void **state)
{
    real_fixture *f = *state;
    for (int i = 0; f->in && i < f->net->n; i++)
        free(f->in[i]);
    free(f->in);
    mpd_net_free(f->net);
    return 0;
}

/* The symmetric window sums are the CPU backend's int32 accumulators: run
 * the backend's int8 kernel with the weight scales, the input scale and
 * the bias made 1, 1 and 0, so that its fp32 output (float)acc * 1 + 0 is
 * each accumulator exactly (while |acc| < 2^24), and count them. */
static void backend_symmetric_sums(const mpd_layer *l, const float *x, long long *ovf,
                                   long long *maxabs)
{
    mpd_layer view = *l;
    int m = l->u.conv.filters, n = l->out_h * l->out_w, hw = l->in_h * l->in_w;
    view.u.conv.act = MPD_ACT_LINEAR;
    view.u.conv.bias = calloc((size_t)m, sizeof(float));
    mpd__conv_i8_weights w;
    assert_int_equal(mpd__conv_i8_prepare(&view, MPD_SCHEME_SYMMETRIC, &w), 0);
    for (int o = 0; o < m; o++)
        w.w_scale[o] = 1.f;
    float mn, mx;
    mpd__range_f32(x, mpd_layer_in_size(l), &mn, &mx);
    mpd_qparams xq = mpd_q_symmetric(-mn > mx ? -mn : mx);
    int8_t *x8 = tu_xmalloc(mpd_layer_in_size(l));
    mpd__quantize_chw_to_hwc(x, l->in_c, hw, xq, x8, 0, hw);
    mpd__cpu_exec ex = {0};
    assert_int_equal(mpd__tpool_create(1, &ex.pool), 0);
    float *ws = tu_xmalloc(mpd__conv_i8_ws_worker(&view, 1) + 64);
    ex.ws = &ws;
    ex.shared = tu_xmalloc(mpd__conv_i8_ws_shared(&view, 1) + 64);
    ex.scale = tu_xmalloc((size_t)m * sizeof(float));
    float *y = tu_xmalloc((size_t)m * n * sizeof(float));
    mpd__conv_i8(&view, &w, x8, (mpd_qparams){1.f, 0}, y, NULL, 1.f, &ex);
    *ovf = *maxabs = 0;
    for (size_t i = 0; i < (size_t)m * n; i++) {
        long long s = (long long)y[i], a = s < 0 ? -s : s;
        assert_true((double)y[i] == (double)s); /* an integer, so exact */
        *ovf += s < -32768 || s > 32767;
        *maxabs = a > *maxabs ? a : *maxabs;
    }
    assert_true(*maxabs < (1 << 24));
    free(y);
    free(ex.scale);
    free(ex.shared);
    free(ws);
    mpd__tpool_destroy(ex.pool);
    free(x8);
    mpd__conv_i8_release(&w);
    free(view.u.conv.bias);
}

static double thread_cpu(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void test_real_network(void **state)
{
    real_fixture *f = *state;
    mpd_ovf_counts r[64];
    assert_true(f->net->n <= 64);
    /* Time per image: every convolution once, best of five passes (the
     * first warms the caches and the allocator), in wall-clock time and in
     * this thread's CPU time (which other processes on a busy machine
     * disturb less). */
    double best = 1e30, best_cpu = 1e30;
    for (int pass = 0; pass < 5; pass++) {
        double t0 = mpd_now(), c0 = thread_cpu();
        for (int i = 0; i < f->net->n; i++)
            if (f->in[i] &&
                mpd_ovf_conv(&f->net->layers[i], f->in[i], 0.f, &r[i], msg, sizeof(msg)))
                fail_msg("layer %d: %s", i, msg);
        double t = mpd_now() - t0, c = thread_cpu() - c0;
        best = t < best ? t : best;
        best_cpu = c < best_cpu ? c : best_cpu;
    }
    print_message("layer  filters   N      K  | %% products > int8        | %% sums > int16"
                  "           | max |sum|\n");
    print_message("                           | codes  corr   sym        | codes  corr   sym"
                  "        | corr\n");
    int convs = 0;
    for (int i = 0; i < f->net->n; i++) {
        if (!f->in[i])
            continue;
        const mpd_layer *l = &f->net->layers[i];
        const mpd_ovf_counts *c = &r[i];
        int k = l->in_c * l->u.conv.size * l->u.conv.size, n = l->out_h * l->out_w;
        assert_int_equal(c->products, (long long)l->u.conv.filters * n * k);
        assert_int_equal(c->sums, (long long)l->u.conv.filters * n);
        print_message("%5d  %7d  %6d %5d | %5.2f  %5.2f  %5.2f      | %5.2f  %5.2f  %5.2f"
                      "      | %lld\n",
                      i, l->u.conv.filters, n, k, 100.0 * c->prod_ovf[0] / c->products,
                      100.0 * c->prod_ovf[1] / c->products, 100.0 * c->prod_ovf[2] / c->products,
                      100.0 * c->sum_ovf[0] / c->sums, 100.0 * c->sum_ovf[1] / c->sums,
                      100.0 * c->sum_ovf[2] / c->sums, c->max_abs_sum[1]);
        long long ovf, maxabs;
        backend_symmetric_sums(l, f->in[i], &ovf, &maxabs);
        assert_int_equal(c->sum_ovf[MPD_OVF_SYMMETRIC], ovf);
        assert_int_equal(c->max_abs_sum[MPD_OVF_SYMMETRIC], maxabs);
        convs++;
    }
    assert_int_equal(convs, 13);
    print_message("%d convolutions: %.1f ms per image wall clock, %.1f ms CPU (best of 5, one "
                  "thread)\n",
                  convs, best * 1e3, best_cpu * 1e3);
}

/* Two real layers (1x1, K = 1024 and 512) against the brute force, with
 * real weight and activation distributions. */
static void test_real_layers_match_brute_force(void **state)
{
    real_fixture *f = *state;
    const int layers[] = {13, 15};
    for (int j = 0; j < 2; j++) {
        const mpd_layer *l = &f->net->layers[layers[j]];
        assert_non_null(f->in[layers[j]]);
        mpd_ovf_counts got, want;
        assert_int_equal(mpd_ovf_conv(l, f->in[layers[j]], 0.f, &got, msg, sizeof(msg)), 0);
        brute_force(l, f->in[layers[j]], 0.f, &want);
        char what[32];
        snprintf(what, sizeof(what), "layer %d", layers[j]);
        assert_counts_equal(&got, &want, what);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_brute_force),
        cmocka_unit_test(test_hand_worked_1x1),
        cmocka_unit_test(test_threshold_against_measured),
        cmocka_unit_test(test_errors),
    };
    const struct CMUnitTest real[] = {
        cmocka_unit_test(test_real_network),
        cmocka_unit_test(test_real_layers_match_brute_force),
    };
    int failed = cmocka_run_group_tests_name("overflow", tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("overflow_yolov3_tiny", real, real_setup, real_teardown);
    return failed;
}
