/* test_gemm_f16.c - the fp16 and bf16 GEMMs in the CPU's own arithmetic
 * (host/cpu/gemm_f16.h): fp16 bit for bit against the exact reference of
 * its arithmetic (f16_ref.h), and both against an fp64 sum of the same
 * operands: every output within the bound gemm_f16.h states, on random
 * K = 27, 144, 1152, 4608, edge tiles (M, N not multiples of the tile;
 * odd K), all-positive terms (the worst case for the bound) and
 * subnormals; and the same bits whatever the blocking (rows and columns
 * computed apart). Skipped where the CPU has no such arithmetic:
 * test-arm64 runs the fp16 tests on an emulated Neoverse N1 (ARMv8.2
 * FP16) and all on qemu's "max" CPU (BF16); AVX512-FP16 runs them natively
 * where the CPU has it, and `make test-avx512fp16` runs the x86 kernel on
 * an emulated Sapphire Rapids (tests/emu). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/gemm_f16.h"
#include "f16_ref.h"
#include "half.h"
#include "testutil.h"

#define U16 0x1p-11 /* half's unit roundoff */
#define U32 0x1p-24

static int bf16; /* the tests run on mpd__gemm_bf16, else mpd__gemm_f16 */

#ifdef MPD_HAVE_F16_ARITH
static double gamma_(double j, double u)
{
    return j * u / (1 - j * u);
}

/* Values of the GEMM's type (half, or bf16): uniform in [lo, hi], rounded. */
static float *values(size_t n, float lo, float hi, unsigned seed)
{
    float *x = malloc(n * sizeof(float));
    assert_non_null(x);
    tu_fill_random(x, n, lo, hi, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = bf16 ? mpd_bf16_round(x[i]) : mpd_f16_to_f32(mpd_f32_to_f16(x[i]));
    return x;
}

static uint16_t *pack(const float *a, int m, int k)
{
    size_t n = bf16 ? mpd__bf16_packed_size(m, k) : mpd__f16_packed_size(m, k);
    uint16_t *p = malloc(n * sizeof(uint16_t));
    assert_non_null(p);
    if (bf16)
        mpd__bf16_pack(a, m, k, p);
    else
        mpd__f16_pack(a, m, k, p);
    return p;
}

/* Rows from r0 (a multiple of 8) of C = A B, columns of b as given. */
static void gemm(int m, int n, int k, const uint16_t *ap, int r0, const float *b, int ldb, float *c,
                 int ldc)
{
#ifdef MPD_HAVE_BF16_ARITH
    if (bf16) {
        mpd__gemm_bf16(m, n, k, ap + (size_t)(r0 / 8) * mpd__bf16_packed_size(8, k), b, ldb, c,
                       ldc);
        return;
    }
#endif
    mpd__gemm_f16(m, n, k, ap + (size_t)r0 * k, b, ldb, c, ldc);
}

/* Worst |err| / bound over C = A B (m x k times k x n); fails past 1. */
static double check(int m, int n, int k, const float *a, const float *b)
{
    uint16_t *ap = pack(a, m, k);
    float *c = malloc((size_t)m * n * sizeof(float));
    assert_non_null(c);
    gemm(m, n, k, ap, 0, b, n, c, n);
    const double g = gamma_(16, U16), gn = gamma_((k + 15) / 16, U32), gk = gamma_(k, 0x1p-23);
    double worst = 0;
    long bad = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0, abs_s = 0;
            for (int t = 0; t < k; t++) {
                double p = (double)a[(size_t)i * k + t] * b[(size_t)t * n + j];
                s += p;
                abs_s += fabs(p);
            }
            double bound = bf16 ? gk * abs_s + k * 0x1p-125
                                : (g + gn * (1 + g)) * abs_s + (1 + g) * (1 + gn) * k * 0x1p-25;
            double e = fabs(c[(size_t)i * n + j] - s) / bound;
            bad += !(e <= 1);
            worst = e > worst ? e : worst;
        }
    if (bad)
        print_error("%s m %d n %d k %d: %ld outputs beyond the bound (worst err/bound %.3g)\n",
                    bf16 ? "bf16" : "fp16", m, n, k, bad, worst);
    assert_int_equal(bad, 0);
    free(ap);
    free(c);
    return worst;
}
#endif

/* Whether this CPU runs the arithmetic of the tests' type; else skipped. */
static int available(void)
{
    if (bf16 ? mpd__bf16_arith() : mpd__f16_arith())
        return 1;
    print_message("skipped: no %s arithmetic on this CPU (%s)\n", bf16 ? "bf16" : "half",
                  bf16 ? "ARMv8.6 BF16" : "ARMv8.2 FP16 or AVX512-FP16");
    return 0;
}

static void within_bound(void)
{
#ifdef MPD_HAVE_F16_ARITH
    static const int shapes[][3] = {{16, 200, 27},  {32, 64, 144}, {13, 29, 1152},
                                    {24, 17, 4608}, {1, 1, 1},     {9, 9, 301}};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        for (int pos = 0; pos < 2; pos++) { /* signed, then all-positive terms */
            float *a = values((size_t)m * k, pos ? 0.f : -1.f, 1.f, 11 + (unsigned)s);
            float *b = values((size_t)k * n, pos ? 0.f : -4.f, 4.f, 97 + (unsigned)s);
            double w = check(m, n, k, a, b);
            print_message("%s m %4d n %4d k %4d %s: worst err/bound %.3f\n", bf16 ? "bf16" : "fp16",
                          m, n, k, pos ? "positive" : "signed  ", w);
            free(a);
            free(b);
        }
    }
    /* Subnormal products and partial sums: fp16 |a b| near 2^-24, bf16
     * near 2^-126 (flushed). */
    float lo = bf16 ? 0x1p-63f : 0x1p-7f, hi = bf16 ? 0x1p-64f : 0x1p-10f;
    float *a = values(8 * 64, -lo, lo, 5), *b = values(64 * 8, -hi, hi, 6);
    check(8, 8, 64, a, b);
    free(a);
    free(b);
#endif
}

/* The order of the sums is fixed by k: rows and columns computed apart
 * give the whole product's bits. */
static void blocking_invariant(void)
{
#ifdef MPD_HAVE_F16_ARITH
    const int m = 40, n = 37, k = 701;
    float *a = values((size_t)m * k, -1.f, 1.f, 3), *b = values((size_t)k * n, -2.f, 2.f, 4);
    uint16_t *ap = pack(a, m, k);
    float *whole = malloc((size_t)m * n * sizeof(float)), *parts = malloc((size_t)m * n * 4);
    assert_true(whole && parts);
    gemm(m, n, k, ap, 0, b, n, whole, n);
    /* rows 0-15, 16-31, 32-39; columns 0-10 and 11-36 */
    for (int r0 = 0; r0 < m; r0 += 16) {
        int mr = m - r0 < 16 ? m - r0 : 16;
        gemm(mr, 11, k, ap, r0, b, n, parts + (size_t)r0 * n, n);
        gemm(mr, n - 11, k, ap, r0, b + 11, n, parts + (size_t)r0 * n + 11, n);
    }
    assert_memory_equal(whole, parts, (size_t)m * n * sizeof(float));
    free(a);
    free(b);
    free(ap);
    free(whole);
    free(parts);
#endif
}

/* fp16: the bits of the exact reference on every output, edge tiles and
 * a K past one block of taps included; then chunk sums past 65504, which
 * overflow to inf in both. */
static void matches_reference(void)
{
#ifdef MPD_HAVE_F16_ARITH
    static const int shapes[][3] = {{8, 32, 16},  {16, 200, 27}, {13, 29, 1152},
                                    {9, 70, 301}, {1, 1, 1},     {24, 33, 4608}};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]) + 1; s++) {
        const int last = s == sizeof(shapes) / sizeof(shapes[0]);
        const int m = last ? 8 : shapes[s][0], n = last ? 40 : shapes[s][1],
                  k = last ? 64 : shapes[s][2];
        float *a = malloc((size_t)m * k * sizeof(float)), *b = malloc((size_t)k * n * 4),
              *want = malloc((size_t)m * n * 4), *got = malloc((size_t)m * n * 4);
        assert_true(a && b && want && got);
        f16_ref_fill(a, (size_t)m * k, last ? 0.f : -1.f, last ? 100.f : 1.f, 7 + (uint32_t)s);
        f16_ref_fill(b, (size_t)k * n, last ? 0.f : -4.f, last ? 100.f : 4.f, 70 + (uint32_t)s);
        uint16_t *ap = pack(a, m, k);
        gemm(m, n, k, ap, 0, b, n, got, n);
        f16_ref_gemm(m, n, k, a, b, want);
        long bad = 0;
        for (size_t i = 0; i < (size_t)m * n; i++)
            if (memcmp(&got[i], &want[i], sizeof(float)) && bad++ < 3)
                print_error("m %d n %d k %d: C[%zu] %.9g, reference %.9g\n", m, n, k, i,
                            (double)got[i], (double)want[i]);
        print_message("fp16 m %4d n %4d k %4d: %ld of %d outputs differ from the reference\n", m, n,
                      k, bad, m * n);
        assert_int_equal(bad, 0);
        free(a);
        free(b);
        free(want);
        free(got);
        free(ap);
    }
#endif
}

/* body on the GEMM of one type (as_bf16), skipped where this CPU lacks it. */
static void run_as(int as_bf16, void (*body)(void))
{
    bf16 = as_bf16;
    if (!available())
        skip();
    body();
}

static void test_f16_within_bound(void **state)
{
    (void)state;
    run_as(0, within_bound);
}

static void test_f16_blocking_invariant(void **state)
{
    (void)state;
    run_as(0, blocking_invariant);
}

static void test_f16_matches_reference(void **state)
{
    (void)state;
    run_as(0, matches_reference);
}

static void test_neon_bf16_within_bound(void **state)
{
    (void)state;
    run_as(1, within_bound);
}

static void test_neon_bf16_blocking_invariant(void **state)
{
    (void)state;
    run_as(1, blocking_invariant);
}

/* Packing is portable: panels of 8 rows, zero-padded. */
static void test_pack_layout(void **state)
{
    (void)state;
    const int m = 11, k = 5;
    float a[11 * 5];
    for (int i = 0; i < m * k; i++)
        a[i] = (float)(i + 1);
    mpd_half p[16 * 5];
    assert_int_equal(mpd__f16_packed_size(m, k), 16 * 5);
    mpd__f16_pack(a, m, k, p);
    for (int r = 0; r < 16; r++)
        for (int t = 0; t < k; t++) {
            float want = r < m ? a[r * k + t] : 0.f;
            assert_true(mpd_f16_to_f32(p[(r / 8) * 8 * k + t * 8 + r % 8]) == want);
        }
    /* bf16: 3 pairs of taps (the last padded) x 8 rows x 2 per panel */
    mpd_bf16 q[16 * 6];
    assert_int_equal(mpd__bf16_packed_size(m, k), 16 * 6);
    mpd__bf16_pack(a, m, k, q);
    for (int r = 0; r < 16; r++)
        for (int t = 0; t < 6; t++) {
            float want = r < m && t < k ? a[r * k + t] : 0.f;
            assert_true(mpd_bf16_to_f32(q[(r / 8) * 48 + (t / 2) * 16 + (r % 8) * 2 + t % 2]) ==
                        want);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_layout),
        cmocka_unit_test(test_f16_within_bound),
        cmocka_unit_test(test_f16_blocking_invariant),
        cmocka_unit_test(test_f16_matches_reference),
        cmocka_unit_test(test_neon_bf16_within_bound),
        cmocka_unit_test(test_neon_bf16_blocking_invariant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
