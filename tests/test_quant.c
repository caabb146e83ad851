/* test_quant.c - the quantization arithmetic shared by every backend
 * (host/quant.h): round trips, clamping, zero points, the vectorisable
 * quantizer, and the affine zero-point correction.
 *
 * Then independent references (issue 11 item 4), each written here from
 * first principles and never from the code under test:
 *   - int8 weights (mpd__conv_i8_prepare, where every int8 weight and its
 *     scale is made): hand-worked codes of a tiny layer in both schemes,
 *     then every convolution of the real yolov3-tiny code by code against
 *     scale = max|w| / 127 per output channel (symmetric) and the paper's
 *     eq. 1-4 over the whole tensor (affine);
 *   - the affine scheme (mpd_q_affine / _quantize / _dequantize) against
 *     the paper's eq. 1-5 worked by hand;
 *   - the activation ranges the engine measures during an uncalibrated
 *     int8 pass, through the output of the int8 convolution that uses
 *     them, against a convolution computed here from the fp32 outputs. */
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
#include <unistd.h>

#include "cpu/conv_i8.h"
#include "engine.h"
#include "net.h"
#include "plan.h"
#include "quant.h"
#include "testutil.h"

/* Inside the range, quantize + dequantize is within half a step. */
static void test_round_trip_within_half_a_step(void **state)
{
    (void)state;
    float x[20000];
    tu_fill_random(x, 20000, -3.f, 5.f, 1);
    mpd_qparams ps[2] = {mpd_q_symmetric(5.f), mpd_q_affine(-3.f, 5.f)};
    for (int k = 0; k < 2; k++) {
        mpd_qparams p = ps[k];
        float inv = 1.f / p.scale;
        for (int i = 0; i < 20000; i++) {
            int8_t q = mpd_q_quantize(x[i], inv, p.zero);
            float back = mpd_q_dequantize(q, p);
            assert_true(fabsf(back - x[i]) <= p.scale / 2 * (1 + 1e-5f));
        }
    }
}

static void test_clamping_and_no_minus_128(void **state)
{
    (void)state;
    mpd_qparams p = mpd_q_symmetric(1.f);
    assert_int_equal(mpd_q_quantize(1000.f, 1.f / p.scale, 0), 127);
    assert_int_equal(mpd_q_quantize(-1000.f, 1.f / p.scale, 0), -127);
    assert_int_equal(mpd_q_quantize(-1.f, 1.f / p.scale, 0), -127);
    mpd_qparams a = mpd_q_affine(-1.f, 3.f);
    assert_int_equal(mpd_q_quantize(-50.f, 1.f / a.scale, a.zero), -127);
    assert_int_equal(mpd_q_quantize(50.f, 1.f / a.scale, a.zero), 127);
}

/* The paper's eq. 1-2 on a known range, and zero exactly representable. */
static void test_affine_parameters_and_exact_zero(void **state)
{
    (void)state;
    mpd_qparams a = mpd_q_affine(-1.f, 3.f);
    assert_float_equal(a.scale, 4.f / 254.f, 1e-7);
    assert_int_equal(a.zero, (int)lrintf(-127.f + 1.f / (4.f / 254.f)));
    float ranges[][2] = {{-1, 3}, {0.5f, 7}, {-9, -2}, {-0.013f, 41.7f}, {-6, 6}};
    for (int k = 0; k < 5; k++) {
        mpd_qparams p = mpd_q_affine(ranges[k][0], ranges[k][1]);
        int8_t q0 = mpd_q_quantize(0.f, 1.f / p.scale, p.zero);
        assert_int_equal(q0, p.zero);
        assert_true(mpd_q_dequantize(q0, p) == 0.f);
        assert_true(p.zero >= MPD_QMIN && p.zero <= MPD_QMAX);
    }
    /* A degenerate range still gives a usable scale. */
    mpd_qparams d = mpd_q_affine(0, 0);
    assert_true(d.scale > 0);
}

/* Round to nearest, ties to even. */
static void test_ties_to_even(void **state)
{
    (void)state;
    assert_int_equal(mpd_q_round(0.5f), 0);
    assert_int_equal(mpd_q_round(1.5f), 2);
    assert_int_equal(mpd_q_round(2.5f), 2);
    assert_int_equal(mpd_q_round(-0.5f), 0);
    assert_int_equal(mpd_q_round(-1.5f), -2);
    assert_int_equal(mpd_q_round(126.5f), 126);
}

/* The vectorisable quantizer gives the same integer as the reference one
 * everywhere, for every zero point, ties and out-of-range values included. */
static void test_fast_quantizer_matches(void **state)
{
    (void)state;
    static float x[200000];
    tu_fill_random(x, 200000, -300.f, 300.f, 7);
    const int32_t zeros[] = {0, 1, -1, 37, -90, 126, -126};
    for (size_t z = 0; z < sizeof(zeros) / sizeof(zeros[0]); z++) {
        int32_t zero = zeros[z];
        for (int i = 0; i < 200000; i++)
            assert_int_equal(mpd_q_quantize_fast(x[i], 0.73f, zero),
                             mpd_q_quantize(x[i], 0.73f, zero));
        for (int i = -600; i <= 600; i++) { /* every half-integer tie */
            float v = i * 0.5f;
            assert_int_equal(mpd_q_quantize_fast(v, 1.f, zero), mpd_q_quantize(v, 1.f, zero));
        }
        assert_int_equal(mpd_q_quantize_fast(1e30f, 1.f, zero), 127);
        assert_int_equal(mpd_q_quantize_fast(-1e30f, 1.f, zero), -127);
        assert_int_equal(mpd_q_quantize_fast(INFINITY, 1.f, zero), 127);
        assert_int_equal(mpd_q_quantize_fast(-INFINITY, 1.f, zero), -127);
        assert_int_equal(mpd_q_quantize_fast(NAN, 1.f, zero), -127);
    }
}

/* sum (w - zw)(x - zx) from raw sums equals the direct sum. */
static void test_affine_correction_identity(void **state)
{
    (void)state;
    for (int trial = 0; trial < 200; trial++) {
        int k = 1 + trial * 7 % 300;
        int8_t w[300], x[300];
        float r[600];
        tu_fill_random(r, 600, -127.f, 127.99f, (unsigned)trial + 3);
        int32_t raw = 0, sw = 0, sx = 0, direct = 0;
        int32_t zw = trial % 11 - 5, zx = trial % 37 - 18;
        for (int i = 0; i < k; i++) {
            w[i] = (int8_t)r[i];
            x[i] = (int8_t)r[300 + i];
            raw += w[i] * x[i];
            sw += w[i];
            sx += x[i];
            direct += (w[i] - zw) * (x[i] - zx);
        }
        assert_int_equal(mpd_q_affine_correct(raw, sw, sx, zw, zx, k), direct);
    }
}

/* mpd_q_dot4 (the GPU's plain int8 path) against bytes multiplied one by
 * one, including -128, which __dp4a accepts although we never produce it. */
static void test_dot4_is_four_int8_products(void **state)
{
    (void)state;
    const uint32_t edge[] = {0, 0x7f7f7f7fu, 0x81818181u, 0x80808080u, 0x017f80ffu, 0xffffffffu};
    unsigned seed = 12345;
    for (int t = 0; t < 20000; t++) {
        uint32_t a, b;
        if (t < 36) {
            a = edge[t / 6];
            b = edge[t % 6];
        } else {
            seed = seed * 1103515245u + 12345u;
            a = seed;
            seed = seed * 1103515245u + 12345u;
            b = seed ^ (seed >> 16);
        }
        int32_t acc0 = (int32_t)(t * 7919) - 5000000, want = acc0;
        for (int j = 0; j < 4; j++) {
            int8_t x, y;
            uint8_t ab = (uint8_t)(a >> (8 * j)), bb = (uint8_t)(b >> (8 * j));
            memcpy(&x, &ab, 1);
            memcpy(&y, &bb, 1);
            want += (int32_t)x * (int32_t)y;
        }
        assert_int_equal(mpd_q_dot4(a, b, acc0), want);
    }
}

/* ==== independent references (issue 11 item 4) ============================ */

static char qmsg[1024];

/* The reference rounding: to nearest, ties to even (quant.h documents
 * ties-to-even; the paper only says "round"). lrint in the default
 * rounding mode, on the exact double quotient. */
static int ref_clamp(long q)
{
    return q < MPD_QMIN ? MPD_QMIN : q > MPD_QMAX ? MPD_QMAX : (int)q;
}

/* 1 when v is within a relative 1e-6 of a tie (k + 0.5): there x / s and
 * x * (1 / s) (two float roundings, 1.2e-7 relative, and an affine scale
 * that may differ from the reference's by two more) may round to
 * neighbouring integers. Used only to allow a one-code disagreement at
 * such a tie (and its effect on a convolution output), never more. */
static int near_tie(double v)
{
    double f = fabs(v - floor(v) - 0.5);
    return f <= 1e-6 * (fabs(v) > 1 ? fabs(v) : 1);
}

/* Symmetric per-output-channel reference (the standard practice PAPER.md's
 * "known weak points" names; conv_i8.h: w_scale per channel when
 * symmetric):
 * scale = max|w| / 127 over the channel's K weights, in exact arithmetic
 * rounded once to float; codes = clamp(round(w / scale), -127, 127). An
 * all-zero channel has codes 0 and any positive scale. */
static float ref_sym_scale(const float *w, int k)
{
    double a = 0;
    for (int j = 0; j < k; j++)
        a = fabs((double)w[j]) > a ? fabs((double)w[j]) : a;
    return (float)(a / 127.0);
}

/* The paper's eq. 1-2 on [mn, mx] widened to include 0 (quant.h: "the
 * range is widened to include 0 so that zero is exactly representable"),
 * in double: s = (max - min) / (qmax - qmin), z = clamp(round(qmin -
 * min / s)). */
static void ref_affine_params(double mn, double mx, double *s, int *z)
{
    mn = mn > 0 ? 0 : mn;
    mx = mx < 0 ? 0 : mx;
    if (!(mx > mn)) {
        *s = 1;
        *z = 0;
        return;
    }
    *s = (mx - mn) / (MPD_QMAX - MPD_QMIN);
    *z = ref_clamp(lrint(MPD_QMIN - mn / *s));
}

/* A one-convolution net whose weights are w ([filters][in_c][size][size]),
 * bias 0. */
static mpd_net *tiny_layer(const float *w, int filters, int in_c, int size)
{
    char text[256];
    snprintf(text, sizeof(text),
             "[net]\nwidth=4\nheight=4\nchannels=%d\n[convolutional]\nfilters=%d\nsize=%d\n"
             "stride=1\npad=0\nactivation=linear\n",
             in_c, filters, size);
    mpd_net *net = tu_net_from_text(text, "tiny.cfg", qmsg, sizeof(qmsg));
    assert_non_null(net);
    mpd_layer *l = &net->layers[0];
    size_t nw = (size_t)filters * in_c * size * size;
    l->u.conv.weights = tu_xmalloc(nw * sizeof(float));
    memcpy(l->u.conv.weights, w, nw * sizeof(float));
    l->u.conv.bias = calloc((size_t)filters, sizeof(float));
    assert_non_null(l->u.conv.bias);
    net->weights_loaded = 1;
    return net;
}

/* The hand-worked tiny layer: 4 filters of K = 3 (in_c 3, 1x1), so the
 * [ky][kx][c] storage order of conv_i8.h is the darknet order. */
static const float tiny_w[4][3] = {
    {0.5f, -1.27f, 0.01f},
    {0.9921875f, -0.01171875f, 0.01953125f}, /* 127, -1.5, 2.5 steps of 2^-7 */
    {-3.81f, 1.0f, 0.0f},
    {0.f, -0.f, 0.f},
};

/* Symmetric, per channel, worked by hand:
 *   ch 0: max|w| = 1.27      -> s = 1.27 / 127 = 0.01
 *         0.5 / 0.01 = 50, -1.27 / 0.01 = -127, 0.01 / 0.01 = 1
 *   ch 1: max|w| = 0.9921875 = 127 * 2^-7 -> s = 2^-7 = 0.0078125 (exact)
 *         127, -1.5 -> -2, 2.5 -> 2 (ties to even, both exact ties)
 *   ch 2: max|w| = 3.81      -> s = 0.03
 *         -3.81 / 0.03 = -127, 1.0 / 0.03 = 33.33 -> 33, 0 -> 0
 *         (1.0 comes back as 33 * 0.03 = 0.99)
 *   ch 3: all zero           -> codes 0, any positive finite scale
 * Sums of the codes (w_sum): -76, 127, -94, 0. K = 3 pads to 4 with 0. */
static void test_weight_codes_hand_worked_symmetric(void **state)
{
    (void)state;
    mpd_net *net = tiny_layer(&tiny_w[0][0], 4, 3, 1);
    mpd__conv_i8_weights w;
    assert_int_equal(mpd__conv_i8_prepare(&net->layers[0], MPD_SCHEME_SYMMETRIC, &w), 0);
    const int codes[4][3] = {{50, -127, 1}, {127, -2, 2}, {-127, 33, 0}, {0, 0, 0}};
    const int sums[4] = {-76, 127, -94, 0};
    const double scales[3] = {0.01, 0.0078125, 0.03};
    assert_int_equal(w.m, 4);
    assert_int_equal(w.k, 3);
    assert_int_equal(w.kp, 4);
    assert_int_equal(w.w_zero, 0);
    for (int o = 0; o < 4; o++) {
        for (int j = 0; j < 3; j++) {
            if (w.w[o * w.kp + j] != codes[o][j])
                print_error("channel %d weight %d: code %d, by hand %d\n", o, j, w.w[o * w.kp + j],
                            codes[o][j]);
            assert_int_equal(w.w[o * w.kp + j], codes[o][j]);
        }
        assert_int_equal(w.w[o * w.kp + 3], 0); /* K padding */
        assert_int_equal(w.w_sum[o], sums[o]);
        if (o < 3)
            assert_true(fabs(w.w_scale[o] - scales[o]) <= 1e-6 * scales[o]);
        else
            assert_true(w.w_scale[o] > 0 && isfinite(w.w_scale[o]));
    }
    assert_true(w.w_scale[1] == 0.0078125f); /* exact: a power of two */
    /* Dequantized: 33 * 0.03 = 0.99 for the 1.0 of channel 2. */
    assert_true(fabs(w.w_scale[2] * w.w[2 * w.kp + 1] - 0.99) < 1e-6);
    mpd__conv_i8_release(&w);
    mpd_net_free(net);
}

/* The same layer in the paper's affine scheme, one range for the whole
 * tensor (plan.h: scheme = affine is the paper's), by hand:
 *   min = -3.81, max = 1.0 (0 inside: no widening)
 *   eq. 1: s = (1.0 - (-3.81)) / 254 = 4.81 / 254 = 0.0189370079
 *   eq. 2: z = round(-127 - (-3.81) / s) = round(-127 + 201.1933) = 74
 *   eq. 3-4: q = clamp(round(w / s) + z):
 *     0.5 / s = 26.403 -> 26 + 74 = 100   -1.27 / s = -67.064 -> 7
 *     0.01 / s = 0.528 -> 1 + 74 = 75      0.9921875 / s = 52.394 -> 126
 *     -0.01171875 / s = -0.619 -> 73       0.01953125 / s = 1.031 -> 75
 *     -3.81 / s = -201.193 -> -127 (min)   1.0 / s = 52.807 -> 127 (max)
 *     0 -> 74 = z
 *   sums: 182, 274, 74, 222. */
static void test_weight_codes_hand_worked_affine(void **state)
{
    (void)state;
    mpd_net *net = tiny_layer(&tiny_w[0][0], 4, 3, 1);
    mpd__conv_i8_weights w;
    assert_int_equal(mpd__conv_i8_prepare(&net->layers[0], MPD_SCHEME_AFFINE, &w), 0);
    const int codes[4][3] = {{100, 7, 75}, {126, 73, 75}, {-127, 127, 74}, {74, 74, 74}};
    const int sums[4] = {182, 274, 74, 222};
    assert_int_equal(w.w_zero, 74);
    for (int o = 0; o < 4; o++) {
        assert_true(fabs(w.w_scale[o] - 4.81 / 254) <= 1e-6 * (4.81 / 254));
        for (int j = 0; j < 3; j++) {
            if (w.w[o * w.kp + j] != codes[o][j])
                print_error("channel %d weight %d: code %d, by hand %d\n", o, j, w.w[o * w.kp + j],
                            codes[o][j]);
            assert_int_equal(w.w[o * w.kp + j], codes[o][j]);
        }
        assert_int_equal(w.w_sum[o], sums[o]);
    }
    /* eq. 5 brings 1.0 back as s * (127 - 74) = 53 s = 1.00366. */
    assert_true(fabs(w.w_scale[2] * (w.w[2 * w.kp + 1] - w.w_zero) - 53 * 4.81 / 254) < 1e-6);
    mpd__conv_i8_release(&w);
    mpd_net_free(net);
}

static mpd_net *real_net(void)
{
    char *cfg = tu_model("yolov3-tiny.cfg"), *wts = tu_model("yolov3-tiny.weights");
    mpd_net *net = NULL;
    int rc = mpd_net_parse(cfg, &net, qmsg, sizeof(qmsg));
    rc = rc ? rc : mpd_net_load_weights(net, wts, qmsg, sizeof(qmsg));
    if (rc)
        print_error("%s\n", qmsg);
    assert_int_equal(rc, 0);
    free(cfg);
    free(wts);
    return net;
}

/* Every convolution of the real yolov3-tiny (batch-norm folded, as the
 * engine quantizes it), both schemes, code by code against the
 * references above: the scales exactly (symmetric: one rounding of
 * max|w| / 127, which is what absmax / 127.f computes) or within two float
 * roundings (affine: (max - min) is rounded before the division), the zero
 * point exactly, each code exactly except where the exact quotient is
 * within 1e-6 of a tie and x * (1/s) in float (quant.h's documented form
 * of eq. 3) lands on the neighbour: such flips are counted and reported,
 * anything else fails. */
static void test_weight_codes_real_model(void **state)
{
    (void)state;
    mpd_net *net = real_net();
    long total = 0, flips[2] = {0, 0}, convs = 0;
    for (int i = 0; i < net->n; i++) {
        const mpd_layer *l = &net->layers[i];
        if (l->kind != MPD_LAYER_CONV)
            continue;
        convs++;
        const mpd_conv *cv = &l->u.conv;
        int c = l->in_c, ks = cv->size * cv->size, k = c * ks, m = cv->filters;
        for (int sch = 0; sch < 2; sch++) {
            mpd_scheme scheme = sch ? MPD_SCHEME_AFFINE : MPD_SCHEME_SYMMETRIC;
            mpd__conv_i8_weights w;
            assert_int_equal(mpd__conv_i8_prepare(l, scheme, &w), 0);
            assert_int_equal(w.k, k);
            assert_true(w.kp >= k && w.kp % 4 == 0 && w.kp < k + 4);
            double ts = 1;
            int tz = 0;
            if (scheme == MPD_SCHEME_AFFINE) {
                double mn = INFINITY, mx = -INFINITY;
                for (size_t j = 0; j < (size_t)m * k; j++) {
                    mn = cv->weights[j] < mn ? cv->weights[j] : mn;
                    mx = cv->weights[j] > mx ? cv->weights[j] : mx;
                }
                assert_true(mn < 0 && mx > 0); /* real filters straddle 0 */
                ref_affine_params(mn, mx, &ts, &tz);
                assert_int_equal(w.w_zero, tz);
            } else {
                assert_int_equal(w.w_zero, 0);
            }
            long bad = 0;
            for (int o = 0; o < m; o++) {
                const float *src = cv->weights + (size_t)o * k;
                double s;
                if (scheme == MPD_SCHEME_SYMMETRIC) {
                    float rs = ref_sym_scale(src, k);
                    assert_true(rs > 0);
                    if (w.w_scale[o] != rs)
                        print_error("layer %d channel %d: scale %.9g, max|w|/127 = %.9g\n", i, o,
                                    (double)w.w_scale[o], (double)rs);
                    assert_true(w.w_scale[o] == rs);
                    s = rs;
                } else {
                    assert_true(fabs(w.w_scale[o] - ts) <= 2.5e-7 * ts);
                    s = ts;
                }
                const int8_t *q = w.w + (size_t)o * w.kp;
                int32_t sum = 0;
                for (int ch = 0; ch < c; ch++) {
                    for (int t = 0; t < ks; t++) {
                        double v = (double)src[ch * ks + t] / s;
                        int want = ref_clamp(lrint(v) + (scheme == MPD_SCHEME_AFFINE ? tz : 0));
                        int got = q[t * c + ch]; /* [ky][kx][c] */
                        sum += got;
                        if (got == want)
                            continue;
                        if (abs(got - want) == 1 && near_tie(v)) {
                            flips[sch]++;
                            print_message("tie: layer %d %s filter %d: w %.9g, w/s %.9f: code "
                                          "%d, reference %d\n",
                                          i, mpd_scheme_name(scheme), o, (double)src[ch * ks + t],
                                          v, got, want);
                        } else if (bad++ < 5) {
                            print_error("layer %d (%s) filter %d ch %d tap %d: w %.9g code %d, "
                                        "reference %d (w/s = %.6f)\n",
                                        i, mpd_scheme_name(scheme), o, ch, t,
                                        (double)src[ch * ks + t], got, want, v);
                        }
                    }
                }
                for (int j = k; j < w.kp; j++)
                    assert_int_equal(q[j], 0);
                assert_int_equal(w.w_sum[o], sum);
            }
            assert_int_equal(bad, 0);
            mpd__conv_i8_release(&w);
        }
        total += (long)m * k;
    }
    print_message("weights: %ld convolutions, %ld weights per scheme; codes off by one at a "
                  "tie (x * (1/s) vs x / s): %ld symmetric, %ld affine\n",
                  convs, total, flips[0], flips[1]);
    assert_int_equal(convs, 13);
    /* A flip needs w / s within 1e-6 of k + 0.5: a few codes in a million;
     * more would mean a systematic difference. */
    assert_true(flips[0] + flips[1] <= total / 10000 + 1);
    mpd_net_free(net);
}

/* ---- the affine scheme against the paper's eq. 1-5, by hand ------------ */

typedef struct {
    float mn, mx; /* the range given to mpd_q_affine */
    double s;     /* eq. 1, by hand */
    int z;        /* eq. 2, by hand */
    int n;
    float x[10];
    int q[10];       /* eq. 3-4, by hand */
    double back[10]; /* eq. 5, by hand */
} affine_case;

/* Worked by hand (qmin = -127, qmax = 127, qmax - qmin = 254; round =
 * nearest, ties to even):
 *
 * A. [-1, 2.96875]: s = 3.96875 / 254 = 0.015625 = 2^-6 (exact),
 *    z = round(-127 - (-1) * 64) = -63.
 *    0 -> 0 + z = -63 -> 0;  1 -> 64 - 63 = 1 -> 1;  -1 -> -127 -> -1;
 *    2.96875 -> 190 - 63 = 127;  0.5 -> 32 - 63 = -31;
 *    0.0234375 = 1.5 s -> round(1.5) = 2 -> -61 -> 0.03125;
 *    0.0390625 = 2.5 s -> round(2.5) = 2 -> -61 -> 0.03125 (tie to even);
 *    0.1 = 6.4 s -> 6 -> -57 -> 0.09375;
 *    3.5 -> 224 - 63 = 161 -> clamps to 127 -> 2.96875;
 *    -1.5 -> -96 - 63 = -159 -> clamps to -127 -> -1.
 * B. [-1, 1.54]: s = 2.54 / 254 = 0.01, z = round(-127 + 100) = -27.
 *    0 -> -27;  0.5 -> 50 - 27 = 23;  -1 -> -127;  1.54 -> 127;
 *    2.0 -> 173 -> 127 -> 1.54;  0.004 -> round(0.4) = 0 -> -27 -> 0;
 *    -0.333 -> round(-33.3) = -33 -> -60 -> -0.33.
 * C. [-0.02, 5.06] (z near qmin): s = 5.08 / 254 = 0.02,
 *    z = round(-127 + 1) = -126.
 *    -0.02 -> -1 - 126 = -127;  5.06 -> 253 - 126 = 127;
 *    1.0 -> 50 - 126 = -76 -> 1.0;  0 -> -126;  -1 -> -176 -> -127 -> -0.02.
 * D. [0.5, 3.96875], a range without 0. The paper's eq. 1-2 literally:
 *    s = 3.46875 / 254 = 0.0136565, z = round(-127 - 36.613) = -164,
 *    which eq. 2's clamp pulls up to -127; codes then cover only
 *    s * (q + 127) in [0, 3.46875], so 3.96875 -> 291 - 127 -> 127 comes
 *    back as 3.46875 (the top 0.5 of the range lost). quant.h instead
 *    widens the range to [0, 3.96875] (zero, i.e. padding, exact):
 *    s = 3.96875 / 254 = 2^-6, z = round(-127 - 0) = -127 (at the clamp
 *    bound, no longer beyond it).
 *    0.5 -> 32 - 127 = -95 -> 0.5;  3.96875 -> 254 - 127 = 127 -> 3.96875;
 *    0 -> -127 -> 0;  1 -> -63;  -0.25 -> -143 -> -127 -> 0;
 *    4.5 -> 161 -> 127 -> 3.96875.
 * E. [-3.96875, -0.5], all negative: literally z = round(-127 + 290.6)
 *    = 164, clamped to 127; widened to [-3.96875, 0]: s = 2^-6,
 *    z = round(-127 + 254) = 127.
 *    -0.5 -> -32 + 127 = 95;  -3.96875 -> -127;  0.25 -> 143 -> 127 -> 0;
 *    -1 -> 63;  -5 -> -193 -> -127 -> -3.96875. */
/* clang-format off */
static const affine_case affine_cases[] = {
    {-1.f, 2.96875f, 0.015625, -63, 10,
     {0.f, 1.f, -1.f, 2.96875f, 0.5f, 0.0234375f, 0.0390625f, 0.1f, 3.5f, -1.5f},
     {-63, 1, -127, 127, -31, -61, -61, -57, 127, -127},
     {0, 1, -1, 2.96875, 0.5, 0.03125, 0.03125, 0.09375, 2.96875, -1}},
    {-1.f, 1.54f, 0.01, -27, 7,
     {0.f, 0.5f, -1.f, 1.54f, 2.f, 0.004f, -0.333f},
     {-27, 23, -127, 127, 127, -27, -60},
     {0, 0.5, -1, 1.54, 1.54, 0, -0.33}},
    {-0.02f, 5.06f, 0.02, -126, 5,
     {-0.02f, 5.06f, 1.f, 0.f, -1.f},
     {-127, 127, -76, -126, -127},
     {-0.02, 5.06, 1.0, 0, -0.02}},
    {0.5f, 3.96875f, 0.015625, -127, 6,
     {0.5f, 3.96875f, 0.f, 1.f, -0.25f, 4.5f},
     {-95, 127, -127, -63, -127, 127},
     {0.5, 3.96875, 0, 1, 0, 3.96875}},
    {-3.96875f, -0.5f, 0.015625, 127, 5,
     {-0.5f, -3.96875f, 0.25f, -1.f, -5.f},
     {95, -127, 127, 63, -127},
     {-0.5, -3.96875, 0, -1, -3.96875}},
};
/* clang-format on */

static void test_affine_hand_worked_eq_1_to_5(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof(affine_cases) / sizeof(affine_cases[0]); c++) {
        const affine_case *a = &affine_cases[c];
        mpd_qparams p = mpd_q_affine(a->mn, a->mx);
        print_message("[%g, %g]: s %.9g z %d (by hand %.9g, %d)\n", (double)a->mn, (double)a->mx,
                      (double)p.scale, p.zero, a->s, a->z);
        assert_true(fabs(p.scale - a->s) <= 1e-6 * a->s);
        assert_int_equal(p.zero, a->z);
        float inv = 1.f / p.scale;
        for (int i = 0; i < a->n; i++) {
            int q = mpd_q_quantize(a->x[i], inv, p.zero);
            if (q != a->q[i])
                print_error("[%g, %g]: x %g -> %d, by hand %d\n", (double)a->mn, (double)a->mx,
                            (double)a->x[i], q, a->q[i]);
            assert_int_equal(q, a->q[i]);
            double back = mpd_q_dequantize(q, p);
            assert_true(fabs(back - a->back[i]) <= 1e-6 * (1 + fabs(a->back[i])));
        }
        /* Binary-exact cases (s a power of two) must be exact. */
        if (a->s == 0.015625)
            for (int i = 0; i < a->n; i++)
                assert_true(mpd_q_dequantize(a->q[i], p) == (float)a->back[i]);
    }
    /* Where the range holds 0 the widening changes nothing: mpd_q_affine
     * is eq. 1-2 exactly (the reference in double, one float rounding
     * apart), over many ranges. */
    float r[2000];
    tu_fill_random(r, 2000, -50.f, 50.f, 31);
    for (int i = 0; i < 2000; i += 2) {
        float mn = r[i] < r[i + 1] ? r[i] : r[i + 1], mx = r[i] < r[i + 1] ? r[i + 1] : r[i];
        mn = mn > 0 ? -mn * 0.01f : mn;
        mx = mx < 0 ? -mx * 0.01f : mx;
        double s;
        int z;
        ref_affine_params(mn, mx, &s, &z);
        mpd_qparams p = mpd_q_affine(mn, mx);
        assert_true(fabs(p.scale - s) <= 2.5e-7 * s);
        double zr = MPD_QMIN - mn / s;
        if (!near_tie(zr))
            assert_int_equal(p.zero, z);
        else
            assert_true(abs(p.zero - z) <= 1);
        /* The ends of the range map to qmin and qmax (or one inside, by
         * rounding), and back within half a step. */
        int qlo = mpd_q_quantize(mn, 1.f / p.scale, p.zero);
        int qhi = mpd_q_quantize(mx, 1.f / p.scale, p.zero);
        assert_true(qlo <= MPD_QMIN + 1 && qhi >= MPD_QMAX - 1);
        assert_true(fabs(mpd_q_dequantize(qlo, p) - mn) <= 0.5001 * s);
        assert_true(fabs(mpd_q_dequantize(qhi, p) - mx) <= 0.5001 * s);
    }
}

/* ---- activation ranges measured during a pass ----------------------------- */

/* With no calibration, an int8 convolution quantizes its input with the
 * range of that very tensor, measured during the pass (cpu_backend.c
 * conv_int8: max|x| for the symmetric scheme, [min, max] for the affine
 * one). The engine records the range nowhere else, so it is checked
 * through the convolution's output: the test reads the fp32 input of the
 * layer (the previous layer's output under an fp32 plan), measures the
 * range itself, quantizes input and weights from first principles, runs
 * the convolution in exact integers and applies the scales, bias and
 * activation in double. A wrong range (stale, from another image, min
 * for max, the absmax of the wrong tensor) moves most outputs by far more
 * than the tolerance. */

typedef struct {
    double lo, hi; /* the activation range: symmetric uses T = hi, lo = -hi */
    int literal;   /* affine: eq. 1-2 on [lo, hi] as printed, not widened to 0 */
} act_range;

static act_range measure_range(const float *x, size_t n, int affine)
{
    double mn = INFINITY, mx = -INFINITY, a = 0;
    for (size_t i = 0; i < n; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
        a = fabs((double)x[i]) > a ? fabs((double)x[i]) : a;
    }
    act_range r = {mn, mx, 0};
    if (!affine)
        r.lo = -a, r.hi = a;
    return r;
}

/* The reference int8 convolution of one image; y gets the real-valued
 * output, tol a bound on the float arithmetic the engine's epilogue
 * adds (three roundings of |acc s| + |b| at 2^-24 each, generously x4),
 * amb the largest change one flip at a tie could make, per output. */
static void ref_conv_int8(const mpd_layer *l, const float *x, int affine, act_range r, double *y,
                          double *tol, double *amb)
{
    const mpd_conv *cv = &l->u.conv;
    int c = l->in_c, h = l->in_h, wd = l->in_w, ks = cv->size, k = c * ks * ks, m = cv->filters;
    int oh = l->out_h, ow = l->out_w, n = oh * ow;
    /* Input parameters: T / 127, or eq. 1-2 on [min, max]. */
    double sx;
    int zx = 0;
    if (affine && r.literal) {
        sx = (r.hi - r.lo) / (MPD_QMAX - MPD_QMIN);
        zx = ref_clamp(lrint(MPD_QMIN - r.lo / sx));
    } else if (affine) {
        ref_affine_params(r.lo, r.hi, &sx, &zx);
    } else {
        sx = (float)(r.hi / 127.0);
    }
    size_t nx = (size_t)c * h * wd;
    int8_t *qx = tu_xmalloc(nx);
    unsigned char *tie = tu_xmalloc(nx);
    for (size_t i = 0; i < nx; i++) {
        double v = x[i] / sx;
        qx[i] = (int8_t)ref_clamp(lrint(v) + zx);
        tie[i] = near_tie(v);
    }
    /* Weights: per channel max|w| / 127, or eq. 1-2 over the tensor. */
    double *sw = tu_xmalloc((size_t)m * sizeof(double));
    int zw = 0;
    int *qw = tu_xmalloc((size_t)m * k * sizeof(int));
    if (affine) {
        double mn = INFINITY, mx = -INFINITY, s;
        for (size_t j = 0; j < (size_t)m * k; j++) {
            mn = cv->weights[j] < mn ? cv->weights[j] : mn;
            mx = cv->weights[j] > mx ? cv->weights[j] : mx;
        }
        ref_affine_params(mn, mx, &s, &zw);
        for (int o = 0; o < m; o++)
            sw[o] = s;
    } else {
        for (int o = 0; o < m; o++)
            sw[o] = ref_sym_scale(cv->weights + (size_t)o * k, k);
    }
    for (int o = 0; o < m; o++)
        for (int j = 0; j < k; j++)
            qw[(size_t)o * k + j] =
                ref_clamp(lrint(cv->weights[(size_t)o * k + j] / sw[o]) + zw) - zw;
    int32_t *acc = tu_xmalloc((size_t)n * sizeof(int32_t));
    int32_t *ambq = tu_xmalloc((size_t)n * sizeof(int32_t));
    for (int o = 0; o < m; o++) {
        memset(acc, 0, (size_t)n * sizeof(int32_t));
        memset(ambq, 0, (size_t)n * sizeof(int32_t));
        for (int ch = 0; ch < c; ch++) {
            for (int ky = 0; ky < ks; ky++) {
                for (int kx = 0; kx < ks; kx++) {
                    int32_t wv = qw[(size_t)o * k + (ch * ks + ky) * ks + kx];
                    for (int oy = 0; oy < oh; oy++) {
                        int iy = oy * cv->stride + ky - cv->pad;
                        if (iy < 0 || iy >= h)
                            continue; /* padding: real 0, code zx, adds 0 */
                        const int8_t *row = qx + ((size_t)ch * h + iy) * wd;
                        const unsigned char *trow = tie + ((size_t)ch * h + iy) * wd;
                        for (int ox = 0; ox < ow; ox++) {
                            int ix = ox * cv->stride + kx - cv->pad;
                            if (ix < 0 || ix >= wd)
                                continue;
                            acc[oy * ow + ox] += wv * (row[ix] - zx);
                            ambq[oy * ow + ox] += trow[ix] ? abs(wv) : 0;
                        }
                    }
                }
            }
        }
        for (int p = 0; p < n; p++) {
            double s = sw[o] * sx, b = cv->bias[o], v = acc[p] * s + b;
            if (cv->act == MPD_ACT_LEAKY)
                v = v > 0 ? v : 0.1 * v;
            y[(size_t)o * n + p] = v;
            tol[(size_t)o * n + p] = 4 * 3 * 0x1p-24 * (fabs(acc[p] * s) + fabs(b)) + 1e-30;
            amb[(size_t)o * n + p] = ambq[p] * s;
        }
    }
    free(qx);
    free(tie);
    free(sw);
    free(qw);
    free(acc);
    free(ambq);
}

/* Outputs of y outside ref +- (tol + amb). */
static long count_outside(const float *y, const double *ref, const double *tol, const double *amb,
                          size_t n, double *worst)
{
    long bad = 0;
    *worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(y[i] - ref[i]);
        double rel = d / (tol[i] + amb[i]);
        *worst = rel > *worst ? rel : *worst;
        bad += !(d <= tol[i] + amb[i]);
    }
    return bad;
}

static mpd_engine *open_real_engine(void)
{
    char *cfg = tu_model("yolov3-tiny.cfg"), *w = tu_model("yolov3-tiny.weights");
    mpd_engine_options o = {.cfg_path = cfg, .weights_path = w, .backend = "cpu"};
    mpd_engine *e = NULL;
    int rc = mpd_engine_open(&o, &e, qmsg, sizeof(qmsg));
    if (rc)
        print_error("%s\n", qmsg);
    assert_int_equal(rc, 0);
    free(cfg);
    free(w);
    return e;
}

static void load_plan_text(mpd_engine *e, const char *text)
{
    char *path = tu_write_temp(text, strlen(text));
    assert_non_null(path);
    int rc = mpd_engine_load_plan(e, path, qmsg, sizeof(qmsg));
    if (rc)
        print_error("%s\n", qmsg);
    assert_int_equal(rc, 0);
    unlink(path);
    free(path);
}

static float *layer_out(mpd_engine *e, int i)
{
    size_t n = mpd_engine_layer_output_size(e, i);
    float *y = tu_xmalloc(n * sizeof(float));
    assert_int_equal(mpd_engine_layer_output(e, i, 1, y, qmsg, sizeof(qmsg)), 0);
    return y;
}

/* Two photos through the same engine: the range is the pass's own
 * (image 2 against image 2's range), and a reference built on image 1's
 * range - a stale range - is far off (the control that shows the check
 * can fail). Layers 2 (3x3, leaky, the paper's first heavy layer) and 15
 * (1x1, linear, a detection head), in both schemes. */
static void test_pass_ranges_drive_the_int8_layer(void **state)
{
    (void)state;
    mpd_engine *e = open_real_engine();
    mpd_net *net = real_net(); /* the same folded weights, for the reference */
    const char *photos[2] = {"dog.jpg", "eagle.jpg"};
    float *in[2];
    for (int k = 0; k < 2; k++) {
        char *path = tu_darknet_data(photos[k]);
        mpd_image im;
        assert_int_equal(mpd_image_load(path, 0, &im, qmsg, sizeof(qmsg)), 0);
        in[k] = tu_xmalloc(3 * 416 * 416 * sizeof(float));
        assert_int_equal(mpd_engine_preprocess(e, &im, in[k]), 0);
        mpd_image_free(&im);
        free(path);
    }
    const int layers[2] = {2, 15};
    for (int li = 0; li < 2; li++) {
        int L = layers[li];
        const mpd_layer *l = &net->layers[L];
        size_t nx = mpd_layer_in_size(l), ny = mpd_layer_out_size(l);
        assert_int_equal(mpd_engine_layer_output_size(e, L - 1), nx);
        /* fp32 inputs of layer L for both photos. */
        float *x[2];
        load_plan_text(e, "[plan]\ndefault = fp32\n");
        for (int k = 0; k < 2; k++) {
            assert_int_equal(mpd_engine_forward(e, in[k], 1, qmsg, sizeof(qmsg)), 0);
            x[k] = layer_out(e, L - 1);
        }
        for (int affine = 0; affine < 2; affine++) {
            char plan[160];
            snprintf(plan, sizeof(plan),
                     "[plan]\ndefault = fp32\nscheme = %s\n[layers]\n%d = int8\n",
                     affine ? "affine" : "symmetric", L);
            load_plan_text(e, plan);
            act_range r[2];
            for (int k = 0; k < 2; k++)
                r[k] = measure_range(x[k], nx, affine);
            assert_true(r[0].hi != r[1].hi || r[0].lo != r[1].lo);
            double *ref = tu_xmalloc(ny * sizeof(double)), *tol = tu_xmalloc(ny * sizeof(double));
            double *amb = tu_xmalloc(ny * sizeof(double));
            for (int k = 0; k < 2; k++) {
                assert_int_equal(mpd_engine_forward(e, in[k], 1, qmsg, sizeof(qmsg)), 0);
                float *y = layer_out(e, L);
                /* The layer before still ran in fp32: its output is x[k]. */
                float *xin = layer_out(e, L - 1);
                assert_memory_equal(xin, x[k], nx * sizeof(float));
                free(xin);
                ref_conv_int8(l, x[k], affine, r[k], ref, tol, amb);
                double worst;
                long bad = count_outside(y, ref, tol, amb, ny, &worst);
                long ties = 0;
                for (size_t i = 0; i < ny; i++)
                    ties += amb[i] > 0;
                print_message("layer %d %s %s: range [%.6g, %.6g], %ld of %zu outside the "
                              "reference (worst %.3g of the bound; %ld outputs near a tie)\n",
                              L, affine ? "affine" : "symmetric", photos[k], r[k].lo, r[k].hi, bad,
                              ny, worst, ties);
                assert_int_equal(bad, 0);
                if (k == 1) {
                    /* Control: image 1's range on image 2. */
                    ref_conv_int8(l, x[1], affine, r[0], ref, tol, amb);
                    long stale = count_outside(y, ref, tol, amb, ny, &worst);
                    print_message("  with %s's range instead: %ld of %zu outside\n", photos[0],
                                  stale, ny);
                    assert_true(stale > (long)(ny / 4));
                }
                free(y);
            }
            free(ref);
            free(tol);
            free(amb);
        }
        free(x[0]);
        free(x[1]);
    }
    free(in[0]);
    free(in[1]);
    mpd_net_free(net);
    mpd_engine_close(e);
}

/* The same on a generated model (conv, conv, conv, yolo: the engine wants
 * something to detect with) whose first layer (fp32,
 * linear, bias -2) gives the int8 layer an input of mostly negative
 * values, max|x| = -min > max: symmetric must take T = -min (not max),
 * and the affine range [min, max] must be widened to include 0 (z = 127
 * when max < 0: the all-negative case of the hand-worked table). */
static void test_pass_ranges_negative_input(void **state)
{
    (void)state;
    static const char cfg[] = "[net]\nwidth=12\nheight=10\nchannels=3\n"
                              "[convolutional]\nfilters=6\nsize=3\npad=1\nactivation=linear\n"
                              "[convolutional]\nfilters=5\nsize=3\npad=1\nactivation=leaky\n"
                              "[convolutional]\nfilters=21\nsize=1\nactivation=linear\n"
                              "[yolo]\nmask=0,1,2\nanchors=1,1,2,2,3,3,4,4,5,5,6,6\n"
                              "classes=2\nnum=6\n";
    mpd_net *net = tu_net_from_text(cfg, "neg.cfg", qmsg, sizeof(qmsg));
    assert_non_null(net);
    size_t np = net->nparams;
    mpd_net_free(net);
    /* darknet 0.2 header, then per layer: biases, weights. */
    float *par = tu_xmalloc(np * sizeof(float));
    tu_fill_random(par, np, -.3f, .3f, 41);
    for (int b = 0; b < 6; b++)
        par[b] = -2.f; /* layer 0's biases */
    char *cfg_path = tu_write_temp(cfg, strlen(cfg)), *w_path = tu_write_weights(par, np);
    assert_non_null(cfg_path);
    assert_non_null(w_path);
    free(par);
    mpd_engine_options o = {.cfg_path = cfg_path, .weights_path = w_path, .backend = "cpu"};
    mpd_engine *e = NULL;
    int rc = mpd_engine_open(&o, &e, qmsg, sizeof(qmsg));
    if (rc)
        print_error("%s\n", qmsg);
    assert_int_equal(rc, 0);
    assert_int_equal(mpd_net_parse(cfg_path, &net, qmsg, sizeof(qmsg)), 0);
    assert_int_equal(mpd_net_load_weights(net, w_path, qmsg, sizeof(qmsg)), 0);
    float in[3 * 10 * 12];
    tu_fill_random(in, 3 * 10 * 12, 0.f, 1.f, 43);
    const mpd_layer *l = &net->layers[1];
    size_t nx = mpd_layer_in_size(l), ny = mpd_layer_out_size(l);
    double *ref = tu_xmalloc(ny * sizeof(double)), *tol = tu_xmalloc(ny * sizeof(double));
    double *amb = tu_xmalloc(ny * sizeof(double));
    for (int affine = 0; affine < 2; affine++) {
        char plan[128];
        snprintf(plan, sizeof(plan), "[plan]\ndefault = fp32\nscheme = %s\n[layers]\n1 = int8\n",
                 affine ? "affine" : "symmetric");
        load_plan_text(e, plan);
        assert_int_equal(mpd_engine_forward(e, in, 1, qmsg, sizeof(qmsg)), 0);
        float *x = layer_out(e, 0), *y = layer_out(e, 1);
        act_range r = measure_range(x, nx, affine), mm = measure_range(x, nx, 1);
        assert_true(-mm.lo > mm.hi); /* the premise: |min| > max */
        ref_conv_int8(l, x, affine, r, ref, tol, amb);
        double worst;
        long bad = count_outside(y, ref, tol, amb, ny, &worst);
        print_message("negative input, %s: min %.4f max %.4f, %ld of %zu outside (worst %.3g)\n",
                      affine ? "affine" : "symmetric", mm.lo, mm.hi, bad, ny, worst);
        assert_int_equal(bad, 0);
        /* Controls, what a plausible slip would compute: T = |max| (the
         * positive side only) instead of max|x|; the affine range not
         * widened to 0 (eq. 1-2 as printed on [min, max] < 0: s =
         * (max - min) / 254 and z = round(-127 - min / s) > 127, clamped
         * to 127, so that codes reach down only to -(max - min)). */
        act_range wrong = {-fabs(mm.hi), fabs(mm.hi), 0};
        if (affine) {
            int zw;
            double sw;
            ref_affine_params(mm.lo, mm.hi, &sw, &zw);
            assert_int_equal(zw, 127); /* widened: [min, 0] */
            wrong = (act_range){mm.lo, mm.hi, 1};
        }
        ref_conv_int8(l, x, affine, wrong, ref, tol, amb);
        long off = count_outside(y, ref, tol, amb, ny, &worst);
        print_message("  control (%s): %ld of %zu outside\n",
                      affine ? "eq. 1-2 not widened" : "T = |max|", off, ny);
        assert_true(off > (long)(ny / 4));
        free(x);
        free(y);
    }
    free(ref);
    free(tol);
    free(amb);
    mpd_net_free(net);
    mpd_engine_close(e);
    unlink(cfg_path);
    unlink(w_path);
    free(cfg_path);
    free(w_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_within_half_a_step),
        cmocka_unit_test(test_clamping_and_no_minus_128),
        cmocka_unit_test(test_affine_parameters_and_exact_zero),
        cmocka_unit_test(test_ties_to_even),
        cmocka_unit_test(test_fast_quantizer_matches),
        cmocka_unit_test(test_affine_correction_identity),
        cmocka_unit_test(test_dot4_is_four_int8_products),
        cmocka_unit_test(test_weight_codes_hand_worked_symmetric),
        cmocka_unit_test(test_weight_codes_hand_worked_affine),
        cmocka_unit_test(test_weight_codes_real_model),
        cmocka_unit_test(test_affine_hand_worked_eq_1_to_5),
        cmocka_unit_test(test_pass_ranges_drive_the_int8_layer),
        cmocka_unit_test(test_pass_ranges_negative_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
