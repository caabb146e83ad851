/* test_calib.c - activation-calibration thresholds (host/calib.c) on data
 * whose right answer is known here: exact ranges, the quantiles of uniform
 * data, Gaussians with and without outliers, and the quantization error
 * each threshold gives. */
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

#include "calib.h"
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
    return cmocka_run_group_tests(tests, NULL, NULL);
}
