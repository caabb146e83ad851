/* test_calib.c - activation-calibration thresholds (host/calib.c) on data
 * whose right answer is known here: exact ranges, the quantiles of uniform
 * data, Gaussians with and without outliers, and the quantization error
 * each threshold gives. Then every method end to end through
 * mpd_engine_calibrate on the real model and two photos, each threshold
 * against the activations the test measures itself from fp32 passes. */
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
#include <unistd.h>

#include "calib.h"
#include "engine.h"
#include "mpd.h"
#include "testutil.h"

/* ---- data ------------------------------------------------------------------ */

/* splitmix64: a fixed, portable stream independent of libc's rand(). */
static uint64_t rng_next(uint64_t *st)
{
    uint64_t z = (*st += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1): 53 random bits, never exactly 0. */
static double rng_unit(uint64_t *st)
{
    return ((double)(rng_next(st) >> 11) + 0.5) / 9007199254740992.0;
}

/* Box-Muller, sigma 1. */
static void fill_gaussian(float *x, size_t n, uint64_t seed)
{
    uint64_t st = seed;
    const double two_pi = 6.283185307179586;
    for (size_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(rng_unit(&st))), a = two_pi * rng_unit(&st);
        x[i] = (float)(r * cos(a));
        if (i + 1 < n)
            x[i + 1] = (float)(r * sin(a));
    }
}

static void fill_uniform01(float *x, size_t n, uint64_t seed)
{
    uint64_t st = seed;
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)((rng_next(&st) >> 40) * (1.0 / 16777216.0)); /* [0, 1) */
    }
}

static float *alloc_floats(size_t n)
{
    float *p = malloc(n * sizeof(float));
    assert_non_null(p);
    return p;
}

/* Runs both passes over x, in `chunks` calls each (as per-image outputs). */
static mpd_calib_stat *calibrate(const float *x, size_t n, size_t chunks)
{
    mpd_calib_stat *s = mpd_calib_stat_create();
    assert_non_null(s);
    size_t step = (n + chunks - 1) / chunks;
    for (size_t i = 0; i < n; i += step)
        mpd_calib_stat_observe_range(s, x + i, n - i < step ? n - i : step);
    mpd_calib_stat_begin_histogram(s);
    for (size_t i = 0; i < n; i += step)
        mpd_calib_stat_observe_hist(s, x + i, n - i < step ? n - i : step);
    return s;
}

/* Mean squared error of symmetric int8 quantization with threshold t,
 * q = clamp(round(x * 127 / t), -127, 127), over x[0, n). */
static double quant_mse(const float *x, size_t n, float t)
{
    double scale = t / 127.0, err = 0;
    for (size_t i = 0; i < n; i++) {
        double q = nearbyint(x[i] / scale);
        q = q < -127 ? -127 : q > 127 ? 127 : q;
        double d = q * scale - x[i];
        err += d * d;
    }
    return err / (double)n;
}

/* ---- method names ------------------------------------------------------------ */

static void test_method_names_round_trip(void **state)
{
    (void)state;
    const mpd_calib_method all[] = {MPD_CALIB_MINMAX, MPD_CALIB_PERCENTILE, MPD_CALIB_ENTROPY,
                                    MPD_CALIB_MSE};
    const char *names[] = {"minmax", "percentile", "entropy", "mse"};
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(mpd_calib_method_name(all[i]), names[i]);
        mpd_calib_method m = (mpd_calib_method)-1;
        assert_int_equal(mpd_calib_method_parse(names[i], &m), 0);
        assert_int_equal(m, all[i]);
    }
    mpd_calib_method m = MPD_CALIB_ENTROPY;
    assert_int_equal(mpd_calib_method_parse("bogus", &m), MPD_EINVAL);
    assert_int_equal(mpd_calib_method_parse("", &m), MPD_EINVAL);
    assert_int_equal(mpd_calib_method_parse("MinMax2", &m), MPD_EINVAL);
    assert_int_equal(mpd_calib_method_parse(NULL, &m), MPD_EINVAL);
    assert_int_equal(m, MPD_CALIB_ENTROPY); /* untouched on failure */
}

/* ---- minmax -------------------------------------------------------------------- */

static void test_minmax_known_array(void **state)
{
    (void)state;
    /* 37 values: not a multiple of any vector width, extremes near the
     * start, the middle and the tail; plus a second call. */
    float x[37];
    for (int i = 0; i < 37; i++)
        x[i] = (float)((i * 7) % 11) - 4.25f; /* in [-4.25, 5.75] */
    x[3] = -6.5f;
    x[35] = 6.25f;
    mpd_calib_stat *s = mpd_calib_stat_create();
    assert_non_null(s);
    mpd_calib_stat_observe_range(s, x, 37);
    assert_true(mpd_calib_stat_min(s) == -6.5f);
    assert_true(mpd_calib_stat_max(s) == 6.25f);
    assert_true(mpd_calib_stat_absmax(s) == 6.5f);
    assert_true(mpd_calib_stat_threshold(s, MPD_CALIB_MINMAX, 0) == 6.5f);

    const float more[3] = {1.f, 7.125f, -2.f};
    mpd_calib_stat_observe_range(s, more, 3);
    assert_true(mpd_calib_stat_min(s) == -6.5f);
    assert_true(mpd_calib_stat_max(s) == 7.125f);
    assert_true(mpd_calib_stat_absmax(s) == 7.125f);
    /* Without pass 2 every method is minmax. */
    assert_true(mpd_calib_stat_threshold(s, MPD_CALIB_ENTROPY, 0) == 7.125f);
    assert_true(mpd_calib_stat_threshold(s, MPD_CALIB_PERCENTILE, 99.0) == 7.125f);
    mpd_calib_stat_free(s);
}

static void test_minmax_all_negative(void **state)
{
    (void)state;
    float x[100];
    for (int i = 0; i < 100; i++)
        x[i] = -1.0f - 0.03125f * (float)i; /* -1 .. -4.09375 */
    mpd_calib_stat *s = mpd_calib_stat_create();
    assert_non_null(s);
    mpd_calib_stat_observe_range(s, x, 100);
    assert_true(mpd_calib_stat_min(s) == -4.09375f);
    assert_true(mpd_calib_stat_max(s) == -1.0f);
    assert_true(mpd_calib_stat_absmax(s) == 4.09375f);
    assert_true(mpd_calib_stat_threshold(s, MPD_CALIB_MINMAX, 0) == 4.09375f);
    mpd_calib_stat_free(s);
}

static void test_all_zero_falls_back_to_one(void **state)
{
    (void)state;
    float x[1000] = {0};
    x[17] = -0.0f;
    mpd_calib_stat *s = calibrate(x, 1000, 3);
    assert_true(mpd_calib_stat_min(s) == 0.f);
    assert_true(mpd_calib_stat_max(s) == 0.f);
    assert_true(mpd_calib_stat_absmax(s) == 0.f);
    assert_true(mpd_calib_stat_threshold(s, MPD_CALIB_MINMAX, 0) == 1.0f);
    assert_true(mpd_calib_stat_threshold(s, MPD_CALIB_PERCENTILE, 99.99) == 1.0f);
    assert_true(mpd_calib_stat_threshold(s, MPD_CALIB_ENTROPY, 0) == 1.0f);
    mpd_calib_stat_free(s);

    /* Nothing observed at all. */
    s = mpd_calib_stat_create();
    assert_non_null(s);
    assert_true(mpd_calib_stat_absmax(s) == 0.f);
    assert_true(mpd_calib_stat_threshold(s, MPD_CALIB_ENTROPY, 0) == 1.0f);
    mpd_calib_stat_free(s);
}

static void test_nan_is_ignored_by_the_range(void **state)
{
    (void)state;
    float x[20];
    for (int i = 0; i < 20; i++)
        x[i] = (float)i * 0.5f;
    x[0] = NAN;
    x[19] = NAN;
    mpd_calib_stat *s = calibrate(x, 20, 1);
    assert_true(mpd_calib_stat_min(s) == 0.5f);
    assert_true(mpd_calib_stat_max(s) == 9.0f);
    float t = mpd_calib_stat_threshold(s, MPD_CALIB_ENTROPY, 0);
    assert_true(t > 0 && t <= 9.0f);
    mpd_calib_stat_free(s);
}

/* ---- percentile -------------------------------------------------------------- */

static void test_percentile_uniform(void **state)
{
    (void)state;
    const size_t n = 1000000;
    float *x = alloc_floats(n);
    fill_uniform01(x, n, 42);
    mpd_calib_stat *s = calibrate(x, n, 10);
    float absmax = mpd_calib_stat_absmax(s);
    double width = absmax / 2048.0;
    assert_true(absmax > 0.9999f && absmax < 1.0f);
    float p9999 = mpd_calib_stat_threshold(s, MPD_CALIB_PERCENTILE, 99.99);
    float p50 = mpd_calib_stat_threshold(s, MPD_CALIB_PERCENTILE, 50.0);
    float p90 = mpd_calib_stat_threshold(s, MPD_CALIB_PERCENTILE, 90.0);
    print_message("uniform: absmax %.6f p99.99 %.6f p50 %.6f p90 %.6f (bin %.6f)\n", absmax,
                  p9999, p50, p90, width);
    assert_true(fabs(p9999 - 0.9999) < width);
    assert_true(fabs(p50 - 0.5) < width);
    assert_true(fabs(p90 - 0.9) < width);
    /* Out-of-range percentiles give minmax. */
    assert_true(mpd_calib_stat_threshold(s, MPD_CALIB_PERCENTILE, 100.0) == absmax);
    assert_true(mpd_calib_stat_threshold(s, MPD_CALIB_PERCENTILE, 0.0) == absmax);
    mpd_calib_stat_free(s);
    free(x);
}

/* ---- entropy -------------------------------------------------------------------- */

static void test_entropy_gaussian(void **state)
{
    (void)state;
    const size_t n = 2000000;
    float *x = alloc_floats(n);
    fill_gaussian(x, n, 7);
    mpd_calib_stat *s = calibrate(x, n, 20);
    float absmax = mpd_calib_stat_absmax(s);
    float te = mpd_calib_stat_threshold(s, MPD_CALIB_ENTROPY, 0);
    float tp = mpd_calib_stat_threshold(s, MPD_CALIB_PERCENTILE, 99.99);
    print_message("gaussian: absmax %.4f entropy %.4f p99.99 %.4f (sigma 1)\n", absmax, te, tp);
    assert_true(absmax > 4.5f && absmax < 6.5f);
    assert_true(te > 2.5f && te < 5.0f);
    assert_true(te < absmax);
    /* 99.99 % of |N(0,1)| lie below 3.8906. */
    assert_true(fabs(tp - 3.8906) < 0.05);
    mpd_calib_stat_free(s);
    free(x);
}

static void test_entropy_uniform_keeps_the_range(void **state)
{
    (void)state;
    const size_t n = 1000000;
    float *x = alloc_floats(n);
    fill_uniform01(x, n, 1234);
    /* Symmetric: |x| is still uniform. */
    for (size_t i = 0; i < n; i += 2)
        x[i] = -x[i];
    mpd_calib_stat *s = calibrate(x, n, 4);
    float absmax = mpd_calib_stat_absmax(s);
    float te = mpd_calib_stat_threshold(s, MPD_CALIB_ENTROPY, 0);
    print_message("uniform: absmax %.6f entropy %.6f\n", absmax, te);
    assert_true(te > 0.9f * absmax);
    assert_true(te <= absmax);
    mpd_calib_stat_free(s);
    free(x);
}

static void test_outliers(void **state)
{
    (void)state;
    const size_t ng = 1000000, n = ng + 10;
    float *x = alloc_floats(n);
    fill_gaussian(x, ng, 99);
    /* 10 huge outliers, spread through the data. */
    for (int k = 0; k < 10; k++) {
        size_t at = (size_t)k * (ng / 10) + 12345;
        x[ng + k] = x[at];
        x[at] = 1000.0f;
    }
    mpd_calib_stat *s = calibrate(x, n, 16);
    float tm = mpd_calib_stat_threshold(s, MPD_CALIB_MINMAX, 0);
    float tp = mpd_calib_stat_threshold(s, MPD_CALIB_PERCENTILE, 99.99);
    float te = mpd_calib_stat_threshold(s, MPD_CALIB_ENTROPY, 0);
    print_message("outliers: minmax %.4f p99.99 %.4f entropy %.4f\n", tm, tp, te);
    assert_true(tm == 1000.0f);
    assert_true(tp < 10.0f && tp > 3.0f);
    /* The histogram spans [0, 1000] in 2048 bins and entropy considers
     * at least 128 of them, so its smallest possible threshold is
     * 128.5 / 2048 * 1000 = 62.74: it must pick exactly that one (every
     * larger candidate only coarsens the Gaussian). */
    double lowest = 128.5 / 2048.0 * 1000.0;
    assert_true(fabs(te - lowest) < 1e-3);
    assert_true(te < 0.1f * tm);

    /* Quantization error over the Gaussian values (the outliers moved to
     * x[ng, n) are excluded): the clipped thresholds resolve them, minmax
     * rounds nearly all of them to 0. */
    float *g = alloc_floats(ng);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (x[i] != 1000.0f)
            g[m++] = x[i];
    assert_int_equal(m, ng);
    double mse_minmax = quant_mse(g, m, tm), mse_entropy = quant_mse(g, m, te),
           mse_pct = quant_mse(g, m, tp);
    print_message("outliers: gaussian MSE minmax %.3g entropy %.3g p99.99 %.3g\n", mse_minmax,
                  mse_entropy, mse_pct);
    assert_true(mse_entropy < mse_minmax);
    assert_true(mse_pct < mse_entropy);
    free(g);
    mpd_calib_stat_free(s);
    free(x);
}

/* Moderate outliers: the entropy search has room to clip well inside the
 * range, and the error over the Gaussian bulk beats minmax. */
static void test_entropy_mse_beats_minmax_with_outliers(void **state)
{
    (void)state;
    const size_t ng = 1000000, n = ng + 10;
    float *x = alloc_floats(n);
    fill_gaussian(x, ng, 5);
    for (size_t k = 0; k < 10; k++)
        x[ng + k] = k % 2 ? 30.0f : -30.0f;
    mpd_calib_stat *s = calibrate(x, n, 8);
    float tm = mpd_calib_stat_threshold(s, MPD_CALIB_MINMAX, 0);
    float te = mpd_calib_stat_threshold(s, MPD_CALIB_ENTROPY, 0);
    double mse_minmax = quant_mse(x, ng, tm), mse_entropy = quant_mse(x, ng, te);
    print_message("outliers at 30: minmax %.4f entropy %.4f; gaussian MSE %.3g vs %.3g\n", tm, te,
                  mse_minmax, mse_entropy);
    assert_true(tm == 30.0f);
    assert_true(te > 2.5f && te < 10.0f);
    assert_true(mse_entropy < 0.5 * mse_minmax);
    mpd_calib_stat_free(s);
    free(x);
}

/* mse: the threshold's real quantization error over all the data (the
 * outliers included) is within 2 % of the least found by scanning every
 * threshold in steps of 0.01, and far below minmax's; and on data without
 * outliers it keeps (nearly) the whole range, where clipping costs more
 * than it saves. */
static void test_mse_threshold_minimises_the_error(void **state)
{
    (void)state;
    const size_t ng = 1000000, n = ng + 10;
    float *x = alloc_floats(n);
    fill_gaussian(x, ng, 7);
    for (size_t k = 0; k < 10; k++)
        x[ng + k] = k % 2 ? 30.0f : -30.0f;
    mpd_calib_stat *s = calibrate(x, n, 8);
    float tq = mpd_calib_stat_threshold(s, MPD_CALIB_MSE, 0);
    double best = INFINITY, best_t = 0;
    for (double t = 0.5; t <= 30.0; t += 0.01) {
        double e = quant_mse(x, n, (float)t);
        if (e < best) {
            best = e;
            best_t = t;
        }
    }
    double eq = quant_mse(x, n, tq), em = quant_mse(x, n, 30.0f);
    print_message("mse: threshold %.3f (scan best %.3f), error %.4g vs best %.4g, minmax %.4g\n",
                  tq, best_t, eq, best, em);
    assert_true(eq <= 1.02 * best);
    assert_true(eq < 0.7 * em);
    mpd_calib_stat_free(s);

    fill_uniform01(x, ng, 3);
    s = calibrate(x, ng, 4);
    tq = mpd_calib_stat_threshold(s, MPD_CALIB_MSE, 0);
    assert_true(tq > 0.97f && tq <= mpd_calib_stat_absmax(s));
    mpd_calib_stat_free(s);
    free(x);
}

/* Values beyond the range fixed by pass 1 land in the top bin. */
static void test_hist_clamps_out_of_range(void **state)
{
    (void)state;
    float x[4096];
    for (int i = 0; i < 4096; i++)
        x[i] = (float)i / 4096.0f; /* [0, 1) */
    mpd_calib_stat *s = mpd_calib_stat_create();
    assert_non_null(s);
    mpd_calib_stat_observe_range(s, x, 4096);
    mpd_calib_stat_begin_histogram(s);
    float big[3] = {5.0f, -7.0f, INFINITY};
    mpd_calib_stat_observe_hist(s, x, 4096);
    mpd_calib_stat_observe_hist(s, big, 3);
    float t = mpd_calib_stat_threshold(s, MPD_CALIB_PERCENTILE, 99.99);
    float absmax = mpd_calib_stat_absmax(s);
    assert_true(t > 0.99f * absmax && t <= absmax);
    t = mpd_calib_stat_threshold(s, MPD_CALIB_ENTROPY, 0);
    assert_true(t > 0 && t <= absmax);
    mpd_calib_stat_free(s);
}

/* ==== end to end through the engine (issue 11 item 4) ===================== */

/* mpd_engine_calibrate with every method on two of darknet's photos and the
 * real yolov3-tiny, each threshold it writes checked against the
 * activations this test measures itself: the same photos through
 * mpd_engine_forward under the (fp32) base plan, every layer's output read
 * back with mpd_engine_layer_output, and the input tensor from
 * mpd_engine_preprocess. Tensor t = 0 .. layers-1 is layer t's output,
 * t = layers the network input. */

#define E2E_MAX_LAYERS 64

static char emsg[1024];
static mpd_engine *e2e;
static int e2e_layers;
static const char *const e2e_photos[2] = {"dog.jpg", "eagle.jpg"};
static char *e2e_paths[2];
/* |x| of every tensor over both photos (image 0's values, then image
 * 1's), their count, and per photo the largest |x|. */
static float *e2e_abs[E2E_MAX_LAYERS + 1];
static size_t e2e_n[E2E_MAX_LAYERS + 1], e2e_n0[E2E_MAX_LAYERS + 1];
static float e2e_absmax[E2E_MAX_LAYERS + 1], e2e_absmax_img[2][E2E_MAX_LAYERS + 1];

static int e2e_setup(void **state)
{
    (void)state;
    char *cfg = tu_model("yolov3-tiny.cfg"), *w = tu_model("yolov3-tiny.weights");
    mpd_engine_options o = {.cfg_path = cfg, .weights_path = w, .backend = "cpu"};
    int rc = mpd_engine_open(&o, &e2e, emsg, sizeof(emsg));
    free(cfg);
    free(w);
    if (rc) {
        fprintf(stderr, "%s\n", emsg);
        return rc;
    }
    e2e_layers = mpd_engine_layer_count(e2e);
    if (e2e_layers > E2E_MAX_LAYERS)
        return -1;
    /* The cfg's base plan: every layer fp32 (yolov3-tiny.cfg has no
     * precision keys); said again so that the reference is fp32. */
    char *plan = tu_write_temp("[plan]\ndefault = fp32\n", 22);
    if (!plan || mpd_engine_load_plan(e2e, plan, emsg, sizeof(emsg)))
        return -1;
    unlink(plan);
    free(plan);
    int c, h, wd;
    mpd_engine_input_shape(e2e, &c, &h, &wd);
    size_t nin = (size_t)c * h * wd;
    for (int t = 0; t <= e2e_layers; t++) {
        e2e_n0[t] = t < e2e_layers ? mpd_engine_layer_output_size(e2e, t) : nin;
        e2e_n[t] = 2 * e2e_n0[t];
        e2e_abs[t] = tu_xmalloc(e2e_n[t] * sizeof(float));
    }
    float *in = tu_xmalloc(nin * sizeof(float));
    for (int k = 0; k < 2; k++) {
        e2e_paths[k] = tu_darknet_data(e2e_photos[k]);
        mpd_image im;
        if (mpd_image_load(e2e_paths[k], 0, &im, emsg, sizeof(emsg))) {
            fprintf(stderr, "%s\n", emsg);
            return -1;
        }
        rc = mpd_engine_preprocess(e2e, &im, in);
        mpd_image_free(&im);
        if (rc || mpd_engine_forward(e2e, in, 1, emsg, sizeof(emsg))) {
            fprintf(stderr, "%s: preprocess or forward failed: %s\n", e2e_paths[k], emsg);
            return -1;
        }
        for (int t = 0; t <= e2e_layers; t++) {
            float *dst = e2e_abs[t] + (size_t)k * e2e_n0[t];
            if (t < e2e_layers) {
                if (mpd_engine_layer_output(e2e, t, 1, dst, emsg, sizeof(emsg)))
                    return -1;
            } else {
                memcpy(dst, in, nin * sizeof(float));
            }
            float a = 0;
            for (size_t i = 0; i < e2e_n0[t]; i++) {
                dst[i] = fabsf(dst[i]);
                a = dst[i] > a ? dst[i] : a;
            }
            e2e_absmax_img[k][t] = a;
        }
    }
    for (int t = 0; t <= e2e_layers; t++)
        e2e_absmax[t] = fmaxf(e2e_absmax_img[0][t], e2e_absmax_img[1][t]);
    free(in);
    return 0;
}

static int e2e_teardown(void **state)
{
    (void)state;
    for (int t = 0; t <= e2e_layers; t++)
        free(e2e_abs[t]);
    for (int k = 0; k < 2; k++)
        free(e2e_paths[k]);
    mpd_engine_close(e2e);
    return 0;
}

/* Runs mpd_engine_calibrate and reads the thresholds back from the file it
 * wrote ([thresholds]: input = T, then "i = T" per layer): th[t] as
 * above; every tensor must have one. */
static void e2e_calibrate(const char *const *images, int n, const char *method, double pct,
                          float *th)
{
    char path[] = "/tmp/mpdet-calib-e2e-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    double t0 = mpd_now();
    int rc = mpd_engine_calibrate(e2e, images, n, method, pct, path, emsg, sizeof(emsg));
    if (rc)
        print_error("calibrate %s: %s\n", method, emsg);
    assert_int_equal(rc, 0);
    print_message("calibrate %s (%d images): %.2f s\n", method, n, mpd_now() - t0);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    int in_thresholds = 0, got = 0;
    for (int t = 0; t <= e2e_layers; t++)
        th[t] = -1;
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '[') {
            in_thresholds = strncmp(line, "[thresholds]", 12) == 0;
            continue;
        }
        if (!in_thresholds || line[0] == '#')
            continue;
        char key[64];
        double v;
        if (sscanf(line, " %63[^ =] = %lf", key, &v) != 2)
            continue;
        int t = strcmp(key, "input") == 0 ? e2e_layers : atoi(key);
        assert_true(t >= 0 && t <= e2e_layers);
        th[t] = (float)v; /* written with %.9g: the float exactly */
        got++;
    }
    fclose(f);
    unlink(path);
    assert_int_equal(got, e2e_layers + 1);
    for (int t = 0; t <= e2e_layers; t++)
        assert_true(th[t] > 0 && isfinite(th[t]));
}

/* The two-photo thresholds of method (at pct), calibrated once and kept
 * for the later tests. */
static struct {
    const char *method;
    double pct;
    float th[E2E_MAX_LAYERS + 1];
} e2e_cache[8];

static void e2e_thresholds(const char *method, double pct, float *th)
{
    size_t k = 0;
    for (; k < 8 && e2e_cache[k].method; k++) {
        if (strcmp(e2e_cache[k].method, method) == 0 && e2e_cache[k].pct == pct) {
            memcpy(th, e2e_cache[k].th, sizeof(e2e_cache[k].th));
            return;
        }
    }
    e2e_calibrate((const char *const *)e2e_paths, 2, method, pct, th);
    if (k < 8) {
        e2e_cache[k].method = method;
        e2e_cache[k].pct = pct;
        memcpy(e2e_cache[k].th, th, sizeof(e2e_cache[k].th));
    }
}

/* Values of tensor t with |x| < v, and with |x| <= v. */
static void count_below(int t, double v, size_t *lt, size_t *le)
{
    size_t a = 0, b = 0;
    const float *x = e2e_abs[t];
    for (size_t i = 0; i < e2e_n[t]; i++) {
        a += x[i] < v;
        b += x[i] <= v;
    }
    *lt = a;
    *le = b;
}

/* minmax: the threshold is the largest |x| the test measured, exactly
 * (the calibration's pass runs the same fp32 kernels on the same input,
 * and %.9g gives the float back). Per pass, too: one photo alone gives
 * that photo's own max|x|, and both together the larger of the two. */
static void test_e2e_minmax_is_the_measured_absmax(void **state)
{
    (void)state;
    float both[E2E_MAX_LAYERS + 1], one[E2E_MAX_LAYERS + 1];
    e2e_thresholds("minmax", 0, both);
    int bad = 0;
    for (int t = 0; t <= e2e_layers; t++) {
        if (both[t] != e2e_absmax[t]) {
            print_error("tensor %d: minmax %.9g, measured max|x| %.9g\n", t, (double)both[t],
                        (double)e2e_absmax[t]);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
    /* The input is a letterboxed image in [0, 1]. */
    assert_true(both[e2e_layers] <= 1.0f && both[e2e_layers] > 0.5f);
    int differs = 0;
    for (int k = 0; k < 2; k++) {
        e2e_calibrate((const char *const *)&e2e_paths[k], 1, "minmax", 0, one);
        for (int t = 0; t <= e2e_layers; t++) {
            if (one[t] != e2e_absmax_img[k][t])
                print_error("%s tensor %d: minmax %.9g, measured %.9g\n", e2e_photos[k], t,
                            (double)one[t], (double)e2e_absmax_img[k][t]);
            assert_true(one[t] == e2e_absmax_img[k][t]);
            assert_true(one[t] <= both[t]);
            differs += one[t] != both[t];
        }
    }
    /* The photos differ, so the per-photo files are not all the union's. */
    assert_true(differs > 0);
}

/* percentile p: the |x| below which p % of the values lie, interpolated in
 * its histogram bin (2048 bins over [0, max|x|], calib.h). The true
 * quantile q (the k-th smallest |x|, k = ceil(p/100 N)) lies in the same
 * bin as the threshold, so |T - q| <= one bin width w = max|x| / 2048
 * (plus float rounding at bin edges: w' = w (1 + 1e-5)). With counts,
 * no sort: q >= T - w' iff fewer than k values are < T - w', and
 * q <= T + w' iff at least k are <= T + w'. And T <= minmax (the histogram
 * ends at max|x|); a larger p never gives a smaller T. */
static void test_e2e_percentile_is_the_measured_quantile(void **state)
{
    (void)state;
    const double pcts[2] = {99.99, 99.0};
    float th[2][E2E_MAX_LAYERS + 1];
    for (int p = 0; p < 2; p++) {
        e2e_thresholds("percentile", pcts[p], th[p]);
        int bad = 0;
        for (int t = 0; t <= e2e_layers; t++) {
            double w = e2e_absmax[t] / 2048.0, w1 = w * (1 + 1e-5), T = th[p][t];
            size_t k = (size_t)ceil(pcts[p] / 100.0 * (double)e2e_n[t]), lt, le, lt2, le2;
            count_below(t, T - w1, &lt, &le);
            count_below(t, T + w1, &lt2, &le2);
            int ok = T <= e2e_absmax[t] && lt < k && le2 >= k;
            if (!ok) {
                print_error("p%g tensor %d: T %.9g (max|x| %.9g, bin %.3g): %zu values below "
                            "T - w, %zu at most T + w, k = %zu of %zu\n",
                            pcts[p], t, T, (double)e2e_absmax[t], w, lt, le2, k, e2e_n[t]);
                bad++;
            }
        }
        assert_int_equal(bad, 0);
    }
    for (int t = 0; t <= e2e_layers; t++)
        assert_true(th[1][t] <= th[0][t]);
}

/* A histogram of tensor t built here: n_b values with |x| in bin b of
 * 2048 over [0, max|x|] (the top bin closed). */
static void e2e_histogram(int t, double *h)
{
    const double w = e2e_absmax[t] / 2048.0;
    for (int b = 0; b < 2048; b++)
        h[b] = 0;
    for (size_t i = 0; i < e2e_n[t]; i++) {
        long b = (long)(e2e_abs[t][i] / w);
        h[b > 2047 ? 2047 : b]++;
    }
}

/* calib.h's mse cost of the threshold T = i bins, from its description:
 * bins whose centre c <= T cost step^2 / 12 per value (step = T / 127),
 * bins beyond cost (c - T)^2 per value (in bin units). */
static double mse_cost(const double *h, int i)
{
    double step = i / 127.0, cost = 0;
    for (int b = 0; b < 2048; b++) {
        double c = b + 0.5;
        cost += h[b] * (c <= i ? step * step / 12 : (c - i) * (c - i));
    }
    return cost;
}

/* The real mean squared error of q = clamp(round(x 127 / T)) over tensor
 * t. */
static double real_mse(int t, double T)
{
    double s = T / 127, e = 0;
    size_t n = 0;
    for (size_t i = 0; i < e2e_n[t]; i++, n++) {
        double q = nearbyint(e2e_abs[t][i] / s);
        q = q > 127 ? 127 : q;
        e += (q * s - e2e_abs[t][i]) * (q * s - e2e_abs[t][i]);
    }
    return e / (double)n;
}

/* entropy: T = (i + 0.5) bin widths for some i in 128 .. 2048, capped at
 * max|x| (calib.h), so within [128.5 w, max|x|] and on that grid.
 * mse: T = i bin widths, i in 16 .. 2048, and its modelled cost (computed
 * here from the description in calib.h, on a histogram built here) is the
 * least over all candidates (within 1e-3: a value at a bin edge may fall
 * in the neighbouring bin by float rounding). And the real quantization
 * error of the mse threshold over the measured values is at most 1.05 x
 * minmax's: minmax is one of its candidates (i = 2048), and the model is
 * within a few % of the real error where, as here, the step is small
 * against the spread of the values (measured: 0.44 to 0.96 of minmax's).
 * Printed, not asserted: the entropy threshold's real error (KL is not
 * squared error; see the report for the input tensor). */
static void test_e2e_entropy_and_mse_bounds(void **state)
{
    (void)state;
    float te[E2E_MAX_LAYERS + 1], tm[E2E_MAX_LAYERS + 1];
    e2e_thresholds("entropy", 0, te);
    e2e_thresholds("mse", 0, tm);
    double *h = tu_xmalloc(2048 * sizeof(double));
    int bad = 0;
    for (int t = 0; t <= e2e_layers; t++) {
        double A = e2e_absmax[t], w = A / 2048.0;
        /* entropy */
        double ie = te[t] / w - 0.5;
        int on_grid =
            fabs(ie - nearbyint(ie)) < 1e-3 && nearbyint(ie) >= 128 && nearbyint(ie) <= 2048;
        if (!(te[t] > 0 && te[t] <= A && te[t] >= 128.5 * w * (1 - 1e-6) &&
              (on_grid || te[t] == (float)A))) {
            print_error("entropy tensor %d: T %.9g, max|x| %.9g, T/w - 0.5 = %.4f\n", t,
                        (double)te[t], A, ie);
            bad++;
        }
        /* mse */
        double im = tm[t] / w;
        int i = (int)nearbyint(im);
        if (!(tm[t] > 0 && tm[t] <= A && fabs(im - i) < 1e-3 && i >= 16 && i <= 2048)) {
            print_error("mse tensor %d: T %.9g, max|x| %.9g, T/w = %.4f\n", t, (double)tm[t], A,
                        im);
            bad++;
            continue;
        }
        e2e_histogram(t, h);
        double best = INFINITY;
        int best_i = 0;
        for (int j = 16; j <= 2048; j++) {
            double c = mse_cost(h, j);
            if (c < best)
                best = c, best_i = j;
        }
        double got = mse_cost(h, i);
        if (!(got <= best * (1 + 1e-3))) {
            print_error("mse tensor %d: %d bins cost %.6g, the least is %.6g at %d bins\n", t, i,
                        got, best, best_i);
            bad++;
        }
        double e_minmax = real_mse(t, A), e_mse = real_mse(t, tm[t]);
        print_message("tensor %2d: max|x| %9.4f entropy %9.4f mse %9.4f (here %4d bins, engine "
                      "%4d); real MSE minmax %.3g entropy %.3g mse %.3g\n",
                      t, A, (double)te[t], (double)tm[t], best_i, i, e_minmax, real_mse(t, te[t]),
                      e_mse);
        if (!(e_mse <= 1.05 * e_minmax)) {
            print_error("mse tensor %d: real error %.4g, minmax's %.4g\n", t, e_mse, e_minmax);
            bad++;
        }
    }
    free(h);
    assert_int_equal(bad, 0);
}

/* auto (engine.h): each convolution's input tensor gets one of the
 * candidates minmax, p99.99, p99.999, entropy, mse of that tensor or, when
 * the tensor is a maxpool after a convolution, of that convolution's
 * output (which then gets the same value); every other tensor gets mse.
 * Checked against the other methods' files: a tensor no convolution reads
 * (and not such a pair) has exactly the mse threshold; every other
 * tensor's threshold is exactly one of its candidates, or of its pair's. */
static void test_e2e_auto_picks_a_candidate(void **state)
{
    (void)state;
    enum { NC = 5 };
    float cand[NC][E2E_MAX_LAYERS + 1], ta[E2E_MAX_LAYERS + 1];
    e2e_thresholds("minmax", 0, cand[0]);
    e2e_thresholds("percentile", 99.99, cand[1]);
    e2e_thresholds("percentile", 99.999, cand[2]);
    e2e_thresholds("entropy", 0, cand[3]);
    e2e_thresholds("mse", 0, cand[4]);
    e2e_thresholds("auto", 0, ta);
    int read_by_conv[E2E_MAX_LAYERS + 1] = {0}, pair[E2E_MAX_LAYERS + 1] = {0};
    const char *kind[E2E_MAX_LAYERS];
    for (int i = 0; i < e2e_layers; i++) {
        mpd_layer_info li;
        assert_int_equal(mpd_engine_layer_info(e2e, i, &li), 0);
        kind[i] = li.kind;
    }
    for (int c = 0; c < e2e_layers; c++) {
        if (strcmp(kind[c], "conv") != 0)
            continue;
        read_by_conv[c > 0 ? c - 1 : e2e_layers] = 1;
        if (c > 1 && strcmp(kind[c - 1], "max") == 0 && strcmp(kind[c - 2], "conv") == 0)
            pair[c - 2] = 1;
    }
    int bad = 0, chosen[NC] = {0};
    for (int t = 0; t <= e2e_layers; t++) {
        if (!read_by_conv[t] && !pair[t]) {
            if (ta[t] != cand[4][t]) {
                print_error("auto tensor %d (read by no convolution): %.9g, mse %.9g\n", t,
                            (double)ta[t], (double)cand[4][t]);
                bad++;
            }
            continue;
        }
        /* Its own candidates; a pair's convolution output also those of
         * the maxpool after it, and that maxpool those of the
         * convolution before it. */
        int src[3] = {t, -1, -1}, found = 0;
        if (pair[t])
            src[1] = t + 1;
        if (t > 0 && t < e2e_layers && pair[t - 1])
            src[2] = t - 1;
        for (int j = 0; j < 3 && !found; j++)
            for (int m = 0; m < NC && src[j] >= 0 && !found; m++)
                if (ta[t] == cand[m][src[j]]) {
                    found = 1;
                    chosen[m]++;
                }
        if (!found) {
            print_error("auto tensor %d: %.9g is no candidate (minmax %.9g mse %.9g)\n", t,
                        (double)ta[t], (double)cand[0][t], (double)cand[4][t]);
            bad++;
        }
    }
    print_message("auto: minmax %d, p99.99 %d, p99.999 %d, entropy %d, mse %d\n", chosen[0],
                  chosen[1], chosen[2], chosen[3], chosen[4]);
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_method_names_round_trip),
        cmocka_unit_test(test_minmax_known_array),
        cmocka_unit_test(test_minmax_all_negative),
        cmocka_unit_test(test_all_zero_falls_back_to_one),
        cmocka_unit_test(test_nan_is_ignored_by_the_range),
        cmocka_unit_test(test_percentile_uniform),
        cmocka_unit_test(test_entropy_gaussian),
        cmocka_unit_test(test_entropy_uniform_keeps_the_range),
        cmocka_unit_test(test_outliers),
        cmocka_unit_test(test_entropy_mse_beats_minmax_with_outliers),
        cmocka_unit_test(test_hist_clamps_out_of_range),
        cmocka_unit_test(test_mse_threshold_minimises_the_error),
    };
    const struct CMUnitTest e2e_tests[] = {
        cmocka_unit_test(test_e2e_minmax_is_the_measured_absmax),
        cmocka_unit_test(test_e2e_percentile_is_the_measured_quantile),
        cmocka_unit_test(test_e2e_entropy_and_mse_bounds),
        cmocka_unit_test(test_e2e_auto_picks_a_candidate),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    failed +=
        cmocka_run_group_tests_name("calibration end to end", e2e_tests, e2e_setup, e2e_teardown);
    return failed;
}
