/* test_layers.c - the CPU backend's fp32 kernels (host/cpu) against naive
 * loops written here. Layers are built from small cfg strings so their
 * shapes come from the real net builder. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "cpu/conv_i8.h"
#include "cpu/cpu_kernels.h"
#include "cpu/half_cpu.h"
#include "cpu/tpool.h"
#include "mpd.h"
#include "net.h"
#include "testutil.h"

#define CANARY 64
#define CANARY_VAL 12345.678f

static char msg[1024];

static mpd_net *build(const char *text)
{
    mpd_net *net = tu_net_from_text(text, "layer.cfg", msg, sizeof(msg));
    if (!net)
        print_error("cfg:\n%s\n%s\n", text, msg);
    assert_non_null(net);
    return net;
}

/* n floats followed by CANARY guard values. */
static float *alloc_guarded(size_t n)
{
    float *p = malloc((n + CANARY) * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < CANARY; i++)
        p[n + i] = CANARY_VAL;
    return p;
}

static void check_guard(const float *p, size_t n, const char *what)
{
    for (size_t i = 0; i < CANARY; i++) {
        if (p[n + i] != CANARY_VAL) {
            print_error("%s: write past the end at +%zu\n", what, i);
            fail();
        }
    }
}

/* One unit in the last place of float at |v| (v normal). */
static double ulp_of(double v)
{
    int e;
    frexp(fabs(v), &e);
    return ldexp(1.0, e - 24);
}

static double ref_act(double v, const char *act)
{
    if (strcmp(act, "leaky") == 0)
        return v > 0 ? v : 0.1 * v;
    if (strcmp(act, "relu") == 0)
        return v > 0 ? v : 0;
    if (strcmp(act, "logistic") == 0)
        return 1.0 / (1.0 + exp(-v));
    return v; /* linear */
}

/* ---- convolution ---------------------------------------------------------- */

/* pad_mode: -1 for "pad=1" (same padding size/2), else an explicit
 * padding= value. */
static void check_conv(int w, int h, int c, int filters, int size, int stride, int pad_mode,
                       const char *act, unsigned seed)
{
    char text[512];
    char padline[32];
    if (pad_mode < 0)
        snprintf(padline, sizeof(padline), "pad=1\n");
    else
        snprintf(padline, sizeof(padline), "padding=%d\n", pad_mode);
    snprintf(text, sizeof(text),
             "[net]\nwidth=%d\nheight=%d\nchannels=%d\n"
             "[convolutional]\nfilters=%d\nsize=%d\nstride=%d\n%sactivation=%s\n",
             w, h, c, filters, size, stride, padline, act);
    mpd_net *net = build(text);
    mpd_layer *l = &net->layers[0];

    /* Shapes, computed here. */
    int pad = pad_mode < 0 ? size / 2 : pad_mode;
    int ow = (w + 2 * pad - size) / stride + 1, oh = (h + 2 * pad - size) / stride + 1;
    assert_int_equal(l->out_w, ow);
    assert_int_equal(l->out_h, oh);
    assert_int_equal(l->out_c, filters);

    size_t k = (size_t)c * size * size;
    l->u.conv.weights = malloc((size_t)filters * k * sizeof(float));
    l->u.conv.bias = malloc((size_t)filters * sizeof(float));
    assert_non_null(l->u.conv.weights);
    assert_non_null(l->u.conv.bias);
    tu_fill_random(l->u.conv.weights, (size_t)filters * k, -1.f, 1.f, seed);
    tu_fill_random(l->u.conv.bias, (size_t)filters, -1.f, 1.f, seed + 1);
    size_t in_n = (size_t)c * h * w, out_n = (size_t)filters * oh * ow;
    float *x = malloc(in_n * sizeof(float));
    assert_non_null(x);
    tu_fill_random(x, in_n, -1.f, 1.f, seed + 2);

    /* Run on pools of 1, 2 and 3 threads: small outputs take the
     * shared-unfold + row-split path, large ones the column split. */
    float *ys[3];
    for (int ti = 0; ti < 3; ti++) {
        int threads = ti + 1;
        mpd__tpool *pool = NULL;
        assert_int_equal(mpd__tpool_create(threads, &pool), 0);
        assert_int_equal(mpd__tpool_threads(pool), threads);
        size_t wsn = mpd__conv_ws_worker(l, threads), shn = mpd__conv_ws_shared(l, threads);
        float *ws[3] = {NULL, NULL, NULL};
        for (int t = 0; t < threads; t++)
            ws[t] = alloc_guarded(wsn);
        float *shared = alloc_guarded(shn);
        mpd__cpu_exec ex = {.pool = pool, .ws = ws, .shared = shared};
        ys[ti] = alloc_guarded(out_n);
        mpd__conv_f32(l, x, ys[ti], &ex);
        for (int t = 0; t < threads; t++) {
            check_guard(ws[t], wsn, "worker workspace");
            free(ws[t]);
        }
        check_guard(shared, shn, "shared workspace");
        check_guard(ys[ti], out_n, "output");
        free(shared);
        mpd__tpool_destroy(pool);
    }
    /* Direct convolution with zero padding. */
    float *ref = malloc(out_n * sizeof(float));
    assert_non_null(ref);
    const float *W = l->u.conv.weights;
    for (int o = 0; o < filters; o++) {
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                double s = l->u.conv.bias[o];
                for (int ch = 0; ch < c; ch++) {
                    for (int ky = 0; ky < size; ky++) {
                        for (int kx = 0; kx < size; kx++) {
                            int iy = oy * stride + ky - pad, ix = ox * stride + kx - pad;
                            if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                continue;
                            s += (double)W[(((size_t)o * c + ch) * size + ky) * size + kx] *
                                 x[((size_t)ch * h + iy) * w + ix];
                        }
                    }
                }
                ref[((size_t)o * oh + oy) * ow + ox] = (float)ref_act(s, act);
            }
        }
    }
    for (int ti = 0; ti < 3; ti++) {
        double max_abs, max_ref;
        tu_max_diff(ys[ti], ref, out_n, &max_abs, &max_ref);
        double tol = 1e-5 * fmax(1.0, max_ref);
        if (!(max_abs <= tol))
            print_error("conv %dx%dx%d f%d k%d s%d pad%d %s, %d threads: max diff %g (tol %g)\n",
                        w, h, c, filters, size, stride, pad, act, ti + 1, max_abs, tol);
        assert_true(max_abs <= tol);
    }
    free(ref);
    free(x);
    for (int ti = 0; ti < 3; ti++)
        free(ys[ti]);
    mpd_net_free(net); /* frees weights and bias */
}

static void test_conv_3x3_stride1_pad1_leaky(void **state)
{
    (void)state;
    check_conv(8, 6, 3, 4, 3, 1, -1, "leaky", 1);
    check_conv(13, 13, 64, 32, 3, 1, -1, "leaky", 2);
}

static void test_conv_1x1_pointwise(void **state)
{
    (void)state;
    check_conv(7, 5, 8, 6, 1, 1, -1, "linear", 3); /* pad=1 with size 1 pads 0 */
    check_conv(13, 13, 32, 16, 1, 1, 0, "leaky", 4);
}

static void test_conv_1x1_stride2(void **state)
{
    (void)state;
    check_conv(9, 9, 3, 4, 1, 2, 0, "linear", 5);
}

static void test_conv_3x3_stride2(void **state)
{
    (void)state;
    check_conv(9, 7, 3, 5, 3, 2, -1, "relu", 6);
    check_conv(10, 10, 2, 3, 3, 2, 2, "leaky", 7); /* explicit padding=2 */
    check_conv(8, 8, 4, 4, 3, 2, 0, "linear", 8);
}

static void test_conv_5x5_pad2_logistic(void **state)
{
    (void)state;
    check_conv(11, 10, 2, 3, 5, 1, -1, "logistic", 9);
    check_conv(11, 10, 2, 3, 5, 1, 2, "logistic", 10);
}

static void test_conv_odd_7x5_input(void **state)
{
    (void)state;
    check_conv(7, 5, 4, 2, 3, 1, 0, "linear", 11);  /* valid: 5x3 */
    check_conv(7, 5, 4, 2, 3, 1, -1, "leaky", 12);  /* same: 7x5 */
    check_conv(7, 5, 4, 2, 3, 2, -1, "relu", 13);   /* 4x3 */
    check_conv(7, 5, 3, 2, 7, 3, 3, "linear", 14);  /* 7x7 kernel, stride 3 */
}

static void test_conv_single_channel(void **state)
{
    (void)state;
    check_conv(6, 6, 1, 1, 3, 1, -1, "leaky", 15);
    check_conv(5, 9, 1, 3, 5, 2, -1, "linear", 16);
}

static void test_conv_more_columns_than_one_block(void **state)
{
    (void)state;
    /* 80x80 = 6400 output columns, more than one 4096-column block. */
    check_conv(80, 80, 3, 4, 3, 1, -1, "leaky", 17);
    /* Strided, 81x81 = 6561 columns. */
    check_conv(162, 162, 2, 3, 3, 2, -1, "linear", 18);
    /* 8193 = 3 x 2731 columns: one more than a multiple of every block
     * size in use. */
    check_conv(2731, 3, 1, 2, 3, 1, -1, "relu", 19);
    /* Pointwise, large: the column split without an unfold. */
    check_conv(80, 80, 8, 5, 1, 1, 0, "leaky", 20);
    /* 50x50 = 2500 columns: column split on one thread, row split on more. */
    check_conv(50, 50, 3, 7, 3, 1, -1, "logistic", 21);
}

static void test_conv_many_filters_row_split(void **state)
{
    (void)state;
    /* Filter counts around the 16-row slices of the row split. */
    check_conv(13, 13, 8, 33, 3, 1, -1, "leaky", 22);
    check_conv(9, 11, 5, 40, 3, 2, -1, "linear", 23);
    check_conv(7, 7, 16, 17, 1, 1, 0, "relu", 24);
    check_conv(6, 5, 64, 48, 3, 1, -1, "leaky", 25);
}

/* ---- im2col directly -------------------------------------------------------- */

static void check_im2col(int c, int h, int w, int size, int stride, int pad, int col0,
                         int ncols)
{
    int oh = (h + 2 * pad - size) / stride + 1, ow = (w + 2 * pad - size) / stride + 1;
    assert_true(col0 + ncols <= oh * ow);
    size_t in_n = (size_t)c * h * w;
    float *im = malloc(in_n * sizeof(float));
    assert_non_null(im);
    tu_fill_random(im, in_n, -1.f, 1.f, (unsigned)(c * 7 + h * 3 + w + col0));
    int rows = c * size * size;
    size_t n = (size_t)rows * ncols;
    float *col = alloc_guarded(n);
    mpd__im2col_f32(im, c, h, w, size, stride, pad, oh, ow, col0, ncols, col);
    check_guard(col, n, "im2col");
    for (int ch = 0; ch < c; ch++) {
        for (int ky = 0; ky < size; ky++) {
            for (int kx = 0; kx < size; kx++) {
                int r = (ch * size + ky) * size + kx;
                for (int j = col0; j < col0 + ncols; j++) {
                    int oy = j / ow, ox = j % ow;
                    int iy = oy * stride + ky - pad, ix = ox * stride + kx - pad;
                    float want = (iy >= 0 && iy < h && ix >= 0 && ix < w)
                                     ? im[((size_t)ch * h + iy) * w + ix]
                                     : 0.f;
                    float got = col[(size_t)r * ncols + (j - col0)];
                    if (got != want) {
                        print_error("im2col c%d %dx%d k%d s%d p%d cols [%d,+%d): row %d col %d: "
                                    "%g, want %g\n",
                                    c, h, w, size, stride, pad, col0, ncols, r, j, got, want);
                        fail();
                    }
                }
            }
        }
    }
    free(col);
    free(im);
}

static void test_im2col_partial_column_ranges(void **state)
{
    (void)state;
    /* 5x7 out of a 5x7 image: start mid-row, end mid-row. */
    check_im2col(2, 5, 7, 3, 1, 1, 9, 17);
    /* Whole range. */
    check_im2col(2, 5, 7, 3, 1, 1, 0, 35);
    /* Single column at the end, last row. */
    check_im2col(2, 5, 7, 3, 1, 1, 34, 1);
    /* Stride 2: out 4 rows x 5 cols. */
    check_im2col(3, 7, 9, 3, 2, 1, 3, 13);
    /* 1x1, no padding (memcpy path), partial. */
    check_im2col(3, 4, 6, 1, 1, 0, 4, 10);
    /* 5x5 pad 2: the row segments straddle both borders. */
    check_im2col(1, 6, 5, 5, 1, 2, 7, 11);
    /* Output row shorter than kernel offset range. */
    check_im2col(2, 3, 3, 3, 1, 1, 2, 5);
    /* A range spanning several full rows. */
    check_im2col(1, 20, 20, 3, 1, 1, 15, 65);
}

static void test_im2col_all_small_shapes(void **state)
{
    (void)state;
    /* Every small shape, stride and padding (including padding larger than
     * the kernel offset), each over its whole column range and two partial
     * ones. */
    static const int sizes[] = {1, 2, 3, 5};
    int cases = 0;
    for (int h = 1; h <= 6; h++)
        for (int w = 1; w <= 7; w++)
            for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++)
                for (int stride = 1; stride <= 3; stride++)
                    for (int pad = 0; pad <= sizes[si]; pad++) {
                        int size = sizes[si];
                        if (h + 2 * pad < size || w + 2 * pad < size)
                            continue;
                        int oh = (h + 2 * pad - size) / stride + 1;
                        int ow = (w + 2 * pad - size) / stride + 1;
                        int n = oh * ow;
                        check_im2col(2, h, w, size, stride, pad, 0, n);
                        if (n > 2) {
                            check_im2col(2, h, w, size, stride, pad, n / 3, n - n / 3 - 1);
                            check_im2col(2, h, w, size, stride, pad, n - 2, 2);
                        }
                        cases++;
                    }
    assert_true(cases > 1000);
}

/* ---- activations ------------------------------------------------------------ */

static void test_activate_and_bias_act(void **state)
{
    (void)state;
    enum { N = 257, C = 3 };
    static const mpd_act acts[] = {MPD_ACT_LINEAR, MPD_ACT_LEAKY, MPD_ACT_RELU,
                                   MPD_ACT_LOGISTIC};
    float x[N], y[C * N], bias[C];
    tu_fill_random(x, N, -6.f, 6.f, 21);
    tu_fill_random(bias, C, -1.f, 1.f, 22);
    for (size_t a = 0; a < sizeof(acts) / sizeof(acts[0]); a++) {
        float t[N];
        memcpy(t, x, sizeof(t));
        mpd__activate_f32(t, N, acts[a]);
        for (int i = 0; i < N; i++) {
            double want = ref_act(x[i], mpd_act_name(acts[a]));
            assert_true(fabs(t[i] - want) <= 1e-6 * fmax(1, fabs(want)));
        }
        tu_fill_random(y, C * N, -6.f, 6.f, 23);
        float y0[C * N];
        memcpy(y0, y, sizeof(y0));
        mpd__bias_act_f32(y, bias, C, N, acts[a]);
        for (int o = 0; o < C; o++) {
            for (int i = 0; i < N; i++) {
                double want = ref_act((double)(y0[o * N + i] + bias[o]), mpd_act_name(acts[a]));
                assert_true(fabs(y[o * N + i] - want) <= 1e-6 * fmax(1, fabs(want)));
            }
        }
    }
    /* Exact values. */
    float v[4] = {-2.f, 0.f, 3.f, -0.5f};
    mpd__activate_f32(v, 4, MPD_ACT_LEAKY);
    assert_true(v[0] == -0.2f && v[1] == 0.f && v[2] == 3.f && v[3] == -0.05f);
    float r[3] = {-2.f, 0.f, 3.f};
    mpd__activate_f32(r, 3, MPD_ACT_RELU);
    assert_true(r[0] == 0.f && r[1] == 0.f && r[2] == 3.f);
    float s[1] = {0.f};
    mpd__activate_f32(s, 1, MPD_ACT_LOGISTIC);
    assert_true(s[0] == 0.5f);
}

/* ---- maxpool ------------------------------------------------------------------ */

/* padding < 0: the cfg leaves padding out (default size - 1). */
static void check_maxpool(int w, int h, int c, int size, int stride, int padding,
                          int want_w, int want_h)
{
    char text[256], padline[32] = "";
    if (padding >= 0)
        snprintf(padline, sizeof(padline), "padding=%d\n", padding);
    snprintf(text, sizeof(text),
             "[net]\nwidth=%d\nheight=%d\nchannels=%d\n[maxpool]\nsize=%d\nstride=%d\n%s", w, h,
             c, size, stride, padline);
    mpd_net *net = build(text);
    const mpd_layer *l = &net->layers[0];
    int pad = padding >= 0 ? padding : size - 1;
    assert_int_equal(l->out_w, want_w);
    assert_int_equal(l->out_h, want_h);
    assert_int_equal(l->out_c, c);
    size_t in_n = (size_t)c * h * w, out_n = (size_t)c * want_h * want_w;
    float *x = malloc(in_n * sizeof(float));
    assert_non_null(x);
    /* All negative in one channel so a zero-padded window would show. */
    tu_fill_random(x, in_n, -1.f, 1.f, (unsigned)(w * 31 + h * 7 + size + stride));
    for (size_t i = 0; i < (size_t)h * w; i++)
        x[i] = -1.f - fabsf(x[i]);
    float *y = alloc_guarded(out_n);
    mpd__maxpool_f32(l, x, y);
    check_guard(y, out_n, "maxpool");
    int off = -pad / 2;
    for (int ch = 0; ch < c; ch++) {
        for (int i = 0; i < want_h; i++) {
            for (int j = 0; j < want_w; j++) {
                float m = -FLT_MAX;
                for (int dy = 0; dy < size; dy++) {
                    for (int dx = 0; dx < size; dx++) {
                        int yy = off + i * stride + dy, xx = off + j * stride + dx;
                        if (yy < 0 || yy >= h || xx < 0 || xx >= w)
                            continue;
                        float v = x[((size_t)ch * h + yy) * w + xx];
                        if (v > m)
                            m = v;
                    }
                }
                float got = y[((size_t)ch * want_h + i) * want_w + j];
                if (got != m) {
                    print_error("maxpool %dx%d k%d s%d p%d: c%d (%d,%d) = %g, want %g\n", w, h,
                                size, stride, pad, ch, i, j, got, m);
                    fail();
                }
            }
        }
    }
    /* The fp32 HWC kernel (by rows: two calls) gives the same bits. */
    float *xh = malloc(in_n * sizeof(float)), *yh = malloc(out_n * sizeof(float));
    assert_non_null(xh);
    assert_non_null(yh);
    for (int ch = 0; ch < c; ch++)
        for (int p = 0; p < h * w; p++)
            xh[(size_t)p * c + ch] = x[(size_t)ch * h * w + p];
    mpd__maxpool_f32_hwc(l, xh, yh, 0, want_h / 2);
    mpd__maxpool_f32_hwc(l, xh, yh, want_h / 2, want_h);
    for (int ch = 0; ch < c; ch++)
        for (int p = 0; p < want_h * want_w; p++)
            assert_memory_equal(&yh[(size_t)p * c + ch], &y[(size_t)ch * want_h * want_w + p],
                                sizeof(float));
    /* The int8 kernel on the quantized input gives the quantized maxima
     * (quantizing is monotonic). */
    int8_t *x8 = malloc(in_n), *y8 = malloc(out_n), *want8 = malloc(out_n);
    assert_non_null(x8);
    assert_non_null(y8);
    assert_non_null(want8);
    mpd_qparams q = mpd_q_symmetric(2.f);
    mpd__quantize_chw_to_hwc(x, c, h * w, q, x8, 0, h * w);
    mpd__quantize_chw_to_hwc(y, c, want_h * want_w, q, want8, 0, want_h * want_w);
    mpd__maxpool_i8_hwc(l, x8, y8, 0, want_h / 2);
    mpd__maxpool_i8_hwc(l, x8, y8, want_h / 2, want_h);
    assert_memory_equal(y8, want8, out_n);
    free(x8);
    free(y8);
    free(want8);
    free(xh);
    free(yh);
    /* The bf16 kernel (HWC, by rows: two calls) gives the fp32 kernel's
     * maxima of the bf16-rounded input, exactly; an empty window the
     * lowest finite bf16. */
    uint16_t *xb = malloc(in_n * sizeof(uint16_t)), *yb = malloc(out_n * sizeof(uint16_t));
    assert_non_null(xb);
    assert_non_null(yb);
    for (size_t i = 0; i < in_n; i++)
        x[i] = mpd_bf16_round(x[i]);
    mpd__f32_chw_to_bf16_hwc(x, c, h * w, xb, 0, h * w);
    mpd__maxpool_f32(l, x, y);
    mpd__maxpool_bf16_hwc(l, xb, yb, 0, want_h / 2);
    mpd__maxpool_bf16_hwc(l, xb, yb, want_h / 2, want_h);
    for (int ch = 0; ch < c; ch++) {
        for (int p = 0; p < want_h * want_w; p++) {
            float m = y[(size_t)ch * want_h * want_w + p];
            uint16_t want = m == -FLT_MAX ? 0xff7fu : mpd_f32_to_bf16(m);
            if (yb[(size_t)p * c + ch] != want) {
                print_error("bf16 maxpool %dx%d k%d s%d: c%d p%d = 0x%04x, want 0x%04x\n", w, h,
                            size, stride, ch, p, yb[(size_t)p * c + ch], want);
                fail();
            }
        }
    }
    free(xb);
    free(yb);
    free(x);
    free(y);
    mpd_net_free(net);
}

static void test_maxpool_2x2_stride2_even(void **state)
{
    (void)state;
    check_maxpool(8, 8, 3, 2, 2, -1, 4, 4);
    check_maxpool(416, 416, 1, 2, 2, -1, 208, 208);
}

static void test_maxpool_2x2_stride2_odd(void **state)
{
    (void)state;
    /* (7 + 1 - 2) / 2 + 1 = 4: the last window hangs over the edge. */
    check_maxpool(7, 7, 2, 2, 2, -1, 4, 4);
    check_maxpool(7, 5, 2, 2, 2, -1, 4, 3);
    /* padding=0: (7 - 2) / 2 + 1 = 3. */
    check_maxpool(7, 7, 2, 2, 2, 0, 3, 3);
    /* padding=0 on even sizes: same windows as the default. */
    check_maxpool(8, 6, 2, 2, 2, 0, 4, 3);
    /* One pixel wide or high. */
    check_maxpool(1, 5, 2, 2, 2, -1, 1, 3);
    check_maxpool(5, 1, 2, 2, 2, -1, 3, 1);
    check_maxpool(1, 1, 1, 2, 2, -1, 1, 1);
    /* padding=2: the window starts at -1; (6 + 2 - 2) / 2 + 1 = 4. */
    check_maxpool(6, 6, 2, 2, 2, 2, 4, 4);
    check_maxpool(5, 5, 2, 2, 2, 2, 3, 3);
}

static void test_maxpool_2x2_stride1_keeps_size(void **state)
{
    (void)state;
    check_maxpool(13, 13, 4, 2, 1, -1, 13, 13);
    check_maxpool(5, 3, 2, 2, 1, -1, 5, 3);
}

static void test_maxpool_3x3_stride2(void **state)
{
    (void)state;
    /* padding 2: the window starts at -1. */
    check_maxpool(9, 9, 2, 3, 2, -1, 5, 5);
    check_maxpool(10, 7, 2, 3, 2, -1, 5, 4);
    /* size 3 stride 1: same size, centred window */
    check_maxpool(6, 6, 1, 3, 1, -1, 6, 6);
    /* odd padding 3: start -1, (8 + 3 - 3) / 2 + 1 = 5 */
    check_maxpool(8, 8, 1, 3, 2, 3, 5, 5);
}

/* Issue 10, defect 12: with a padding of at least 2 x size - 1 some
 * windows lie wholly outside the input. The int8 maxpool copied the pixel
 * at the clipped window's corner there (beyond the input's last row for the
 * bottom windows); it must give MPD_QMIN, the int8 counterpart of the fp32
 * path's -FLT_MAX and what the GPU kernel gives. The int8 input is exactly
 * the size of the tensor (heap), so an out-of-bounds read shows under the
 * address sanitizer too. */
static void check_maxpool_i8_empty_windows(int w, int h, int c, int size, int stride, int padding)
{
    char text[256];
    snprintf(text, sizeof(text),
             "[net]\nwidth=%d\nheight=%d\nchannels=%d\n[maxpool]\nsize=%d\nstride=%d\n"
             "padding=%d\n",
             w, h, c, size, stride, padding);
    mpd_net *net = build(text);
    const mpd_layer *l = &net->layers[0];
    size_t in_n = (size_t)c * h * w, out_n = (size_t)c * l->out_h * l->out_w;
    int8_t *x = malloc(in_n), *y = malloc(out_n);
    assert_non_null(x);
    assert_non_null(y);
    /* Values 0..100 (HWC), none of them MPD_QMIN. */
    for (size_t i = 0; i < in_n; i++)
        x[i] = (int8_t)((i * 37 + 11) % 101);
    memset(y, 0x55, out_n);
    /* In two row ranges, as the backend splits the work. */
    mpd__maxpool_i8_hwc(l, x, y, 0, l->out_h / 2);
    mpd__maxpool_i8_hwc(l, x, y, l->out_h / 2, l->out_h);
    int off = -padding / 2, empty = 0;
    for (int i = 0; i < l->out_h; i++) {
        for (int j = 0; j < l->out_w; j++) {
            for (int ch = 0; ch < c; ch++) {
                int m = MPD_QMIN, any = 0;
                for (int dy = 0; dy < size; dy++) {
                    for (int dx = 0; dx < size; dx++) {
                        int yy = off + i * stride + dy, xx = off + j * stride + dx;
                        if (yy < 0 || yy >= h || xx < 0 || xx >= w)
                            continue;
                        int v = x[((size_t)yy * w + xx) * c + ch];
                        m = !any || v > m ? v : m;
                        any = 1;
                    }
                }
                empty += !any;
                int got = y[((size_t)i * l->out_w + j) * c + ch];
                if (got != m) {
                    print_error("int8 maxpool %dx%d k%d s%d p%d: c%d (%d,%d) = %d, want %d%s\n", w,
                                h, size, stride, padding, ch, i, j, got, m,
                                any ? "" : " (empty window)");
                    fail();
                }
            }
        }
    }
    assert_true(empty > 0); /* the case has empty windows */
    free(x);
    free(y);
    mpd_net_free(net);
}

static void test_maxpool_i8_empty_window_is_qmin(void **state)
{
    (void)state;
    /* Window starts at -2: the first and last rows and columns are empty. */
    check_maxpool_i8_empty_windows(5, 4, 3, 2, 2, 4);
    /* size 1, padding 2: a one-pixel border of empty windows. */
    check_maxpool_i8_empty_windows(6, 5, 16, 1, 1, 2);
    /* size 3 stride 1 padding 6: windows from -3; 3 empty rows each side. */
    check_maxpool_i8_empty_windows(4, 4, 2, 3, 1, 6);
}

/* ---- upsample, shortcut, yolo -------------------------------------------------- */

static void check_upsample(int w, int h, int c, int stride)
{
    char text[256];
    snprintf(text, sizeof(text), "[net]\nwidth=%d\nheight=%d\nchannels=%d\n[upsample]\nstride=%d\n",
             w, h, c, stride);
    mpd_net *net = build(text);
    const mpd_layer *l = &net->layers[0];
    assert_int_equal(l->out_w, w * stride);
    assert_int_equal(l->out_h, h * stride);
    size_t in_n = (size_t)c * h * w, out_n = in_n * stride * stride;
    float *x = malloc(in_n * sizeof(float));
    assert_non_null(x);
    tu_fill_random(x, in_n, -1.f, 1.f, 31);
    float *y = alloc_guarded(out_n);
    mpd__upsample_f32(l, x, y);
    check_guard(y, out_n, "upsample");
    int W = w * stride, H = h * stride;
    for (int ch = 0; ch < c; ch++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++)
                assert_true(y[((size_t)ch * H + i) * W + j] ==
                            x[((size_t)ch * h + i / stride) * w + j / stride]);
    free(x);
    free(y);
    mpd_net_free(net);
}

static void test_upsample_nearest(void **state)
{
    (void)state;
    check_upsample(5, 3, 4, 2);
    check_upsample(13, 13, 2, 2);
    check_upsample(2, 3, 1, 3);
    check_upsample(4, 4, 2, 1);
}

static void check_shortcut(const char *act)
{
    char text[512];
    snprintf(text, sizeof(text),
             "[net]\nwidth=5\nheight=4\nchannels=3\n"
             "[convolutional]\nfilters=3\nsize=1\n"
             "[convolutional]\nfilters=3\nsize=1\n"
             "[shortcut]\nfrom=-2\nactivation=%s\n",
             act);
    mpd_net *net = build(text);
    const mpd_layer *l = &net->layers[2];
    assert_int_equal(l->kind, MPD_LAYER_SHORTCUT);
    size_t n = mpd_layer_out_size(l);
    assert_int_equal(n, 3 * 4 * 5);
    float *x = malloc(n * sizeof(float)), *from = malloc(n * sizeof(float));
    assert_non_null(x);
    assert_non_null(from);
    tu_fill_random(x, n, -1.f, 1.f, 41);
    tu_fill_random(from, n, -1.f, 1.f, 42);
    float *y = alloc_guarded(n);
    mpd__shortcut_f32(l, x, from, y);
    check_guard(y, n, "shortcut");
    for (size_t i = 0; i < n; i++) {
        float v = x[i] + from[i];
        if (strcmp(act, "leaky") == 0)
            v = v > 0 ? v : .1f * v;
        assert_true(y[i] == v);
    }
    free(x);
    free(from);
    free(y);
    mpd_net_free(net);
}

static void test_shortcut_add(void **state)
{
    (void)state;
    check_shortcut("linear");
    check_shortcut("leaky");
}

static void check_yolo(int w, int h, int classes, const char *mask, int nmask)
{
    char text[512];
    snprintf(text, sizeof(text),
             "[net]\nwidth=%d\nheight=%d\nchannels=%d\n"
             "[yolo]\nmask=%s\nanchors=10,14, 23,27, 37,58, 81,82\nclasses=%d\nnum=4\n",
             w, h, nmask * (classes + 5), mask, classes);
    mpd_net *net = build(text);
    const mpd_layer *l = &net->layers[0];
    size_t n = mpd_layer_out_size(l), plane = (size_t)w * h;
    float *x = malloc(n * sizeof(float));
    assert_non_null(x);
    tu_fill_random(x, n, -5.f, 5.f, 51);
    float *y = alloc_guarded(n);
    mpd__yolo_f32(l, x, y);
    check_guard(y, n, "yolo");
    for (size_t i = 0; i < n; i++) {
        size_t entry = (i / plane) % (size_t)(classes + 5);
        int raw = entry == 2 || entry == 3;
        double want = raw ? x[i] : 1.0 / (1.0 + exp(-(double)x[i]));
        if (raw ? y[i] != x[i] : fabs(y[i] - want) > 4 * ulp_of(want)) {
            print_error("yolo %dx%d: element %zu (entry %zu) = %g, want %g\n", w, h, i, entry,
                        y[i], want);
            fail();
        }
    }
    free(x);
    free(y);
    mpd_net_free(net);
}

/* The vectorised logistic against the exact one, on a fine sweep over
 * [-100, 100] (both clamps included) and at the points where its range
 * reduction switches: within 4 ulp of the result, or 1.2e-38 where the
 * result is below float's normal range (x < -87.3). */
static void test_logistic_within_4_ulp(void **state)
{
    (void)state;
    enum { N = 1 << 16 };
    static float x[N];
    double worst = 0, worst_x = 0;
    long checked = 0;
    for (long base = 0; base < 5000000; base += N) {
        for (int i = 0; i < N; i++)
            x[i] = (float)(-100.0 + (double)(base + i) * 4e-5);
        if (base == 0) /* range-reduction boundaries: (k + 1/2) ln 2 */
            for (int k = -130; k <= 130; k++)
                x[k + 130] = (float)((k + .5) * 0.69314718055994531);
        float y[N];
        memcpy(y, x, sizeof(y));
        mpd__logistic_f32(y, y, N);
        for (int i = 0; i < N; i++) {
            double want = 1.0 / (1.0 + exp(-(double)x[i]));
            double err = fabs(y[i] - want);
            if (want < 1.17549435e-38) {
                assert_true(err <= 1.2e-38);
                continue;
            }
            err /= ulp_of(want);
            if (err > worst) {
                worst = err;
                worst_x = x[i];
            }
            checked++;
        }
    }
    print_message("logistic: worst %.2f ulp at x = %.9g over %ld values\n", worst, worst_x,
                  checked);
    assert_true(worst <= 4);
}

static void test_yolo_logistic_on_xy_objectness_classes(void **state)
{
    (void)state;
    check_yolo(4, 3, 2, "0,2", 2);
    check_yolo(13, 13, 80, "1,2,3", 3);
    check_yolo(1, 1, 1, "3", 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_3x3_stride1_pad1_leaky),
        cmocka_unit_test(test_conv_1x1_pointwise),
        cmocka_unit_test(test_conv_1x1_stride2),
        cmocka_unit_test(test_conv_3x3_stride2),
        cmocka_unit_test(test_conv_5x5_pad2_logistic),
        cmocka_unit_test(test_conv_odd_7x5_input),
        cmocka_unit_test(test_conv_single_channel),
        cmocka_unit_test(test_conv_more_columns_than_one_block),
        cmocka_unit_test(test_conv_many_filters_row_split),
        cmocka_unit_test(test_im2col_all_small_shapes),
        cmocka_unit_test(test_im2col_partial_column_ranges),
        cmocka_unit_test(test_activate_and_bias_act),
        cmocka_unit_test(test_maxpool_2x2_stride2_even),
        cmocka_unit_test(test_maxpool_2x2_stride2_odd),
        cmocka_unit_test(test_maxpool_2x2_stride1_keeps_size),
        cmocka_unit_test(test_maxpool_3x3_stride2),
        cmocka_unit_test(test_maxpool_i8_empty_window_is_qmin),
        cmocka_unit_test(test_upsample_nearest),
        cmocka_unit_test(test_shortcut_add),
        cmocka_unit_test(test_logistic_within_4_ulp),
        cmocka_unit_test(test_yolo_logistic_on_xy_objectness_classes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
