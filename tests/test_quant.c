/* test_quant.c - the quantization arithmetic shared by every backend
 * (host/quant.h): round trips, clamping, zero points, the vectorisable
 * quantizer, and the affine zero-point correction. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
 * everywhere, ties and out-of-range values included. */
static void test_fast_quantizer_matches(void **state)
{
    (void)state;
    float x[200000];
    tu_fill_random(x, 200000, -300.f, 300.f, 7);
    for (int i = 0; i < 200000; i++)
        assert_int_equal(mpd_q_quantize_fast(x[i], 0.73f), mpd_q_quantize(x[i], 0.73f, 0));
    for (int i = -600; i <= 600; i++) { /* every half-integer tie */
        float v = i * 0.5f;
        assert_int_equal(mpd_q_quantize_fast(v, 1.f), mpd_q_quantize(v, 1.f, 0));
    }
    assert_int_equal(mpd_q_quantize_fast(1e30f, 1.f), 127);
    assert_int_equal(mpd_q_quantize_fast(-1e30f, 1.f), -127);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
