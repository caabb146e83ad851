/* test_half.c - IEEE half-precision conversions: the scalar functions of
 * half.h against known values and exhaustive properties, and the CPU bulk
 * conversions (F16C / NEON fast path and scalar loop) against the scalar
 * functions, bit for bit. */
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

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu/half_cpu.h"
#include "half.h"
#include "testutil.h"

#define CANARY 16
#define CANARY_H ((mpd_half)0xa5a5)
#define CANARY_F 0x5a5a5a5au

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

static int half_is_nan(mpd_half h)
{
    return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
}

/* Exact value of a non-NaN half, computed independently of half.h. */
static double half_ref(mpd_half h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0x1f)
        v = INFINITY;
    else if (e == 0)
        v = ldexp(m, -24);
    else
        v = ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

/* Small deterministic PRNG (xorshift64*). */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd32(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

/* ---- known values ---------------------------------------------------------- */

static void check_f2h(float f, mpd_half want, const char *what)
{
    mpd_half got = mpd_f32_to_f16(f);
    if (got != want) {
        print_error("%s: f32 %a (0x%08x) -> 0x%04x, want 0x%04x\n", what, (double)f,
                    (unsigned)fbits(f), got, want);
        fail();
    }
}

static void test_known_f32_to_f16(void **state)
{
    (void)state;
    check_f2h(1.0f, 0x3c00, "1");
    check_f2h(-2.0f, 0xc000, "-2");
    check_f2h(0.5f, 0x3800, "0.5");
    check_f2h(0.333333343f, 0x3555, "1/3");
    check_f2h(65504.0f, 0x7bff, "max half");
    check_f2h(65512.0f, 0x7bff, "65512 (below the 65520 midpoint)");
    check_f2h(65519.99f, 0x7bff, "65519.99");
    check_f2h(65520.0f, 0x7c00, "65520 -> inf");
    check_f2h(-65520.0f, 0xfc00, "-65520 -> -inf");
    check_f2h(1e10f, 0x7c00, "1e10");
    check_f2h(FLT_MAX, 0x7c00, "FLT_MAX");
    check_f2h(-FLT_MAX, 0xfc00, "-FLT_MAX");
    check_f2h(0x1p-24f, 0x0001, "2^-24 smallest subnormal");
    check_f2h(-0x1p-24f, 0x8001, "-2^-24");
    check_f2h(0x1p-25f, 0x0000, "2^-25 ties to even 0");
    check_f2h(-0x1p-25f, 0x8000, "-2^-25 ties to even -0");
    check_f2h(nextafterf(0x1p-25f, 1.0f), 0x0001, "just above 2^-25");
    check_f2h(nextafterf(0x1p-25f, 0.0f), 0x0000, "just below 2^-25");
    check_f2h(3 * 0x1p-25f, 0x0002, "3*2^-25 ties to even 2");
    check_f2h(5 * 0x1p-25f, 0x0002, "5*2^-25 ties to even 2");
    check_f2h(7 * 0x1p-25f, 0x0004, "7*2^-25 ties to even 4");
    check_f2h(1023 * 0x1p-24f, 0x03ff, "largest subnormal");
    check_f2h(1023.25f * 0x1p-24f, 0x03ff, "largest subnormal + 1/4 ulp");
    check_f2h(1023.5f * 0x1p-24f, 0x0400, "subnormal tie rounding up into the smallest normal");
    check_f2h(1023.75f * 0x1p-24f, 0x0400, "subnormal rounding up into the smallest normal");
    check_f2h(0x1p-14f, 0x0400, "2^-14 smallest normal");
    check_f2h(nextafterf(0x1p-14f, 0.0f), 0x0400, "just below 2^-14");
    check_f2h(1.0f + 0x1p-11f, 0x3c00, "1 + 2^-11 ties to even");
    check_f2h(1.0f + 3 * 0x1p-11f, 0x3c02, "1 + 3*2^-11 ties to even");
    check_f2h(1.0f + 0x1p-11f + 0x1p-23f, 0x3c01, "1 + 2^-11 + 2^-23 rounds up");
    check_f2h(2047.0f, 0x67ff, "2047");
    check_f2h(2049.0f, 0x6800, "2049 ties to even 2048");
    check_f2h(2051.0f, 0x6802, "2051 ties to even 2052");
    check_f2h(0.0f, 0x0000, "+0");
    check_f2h(-0.0f, 0x8000, "-0");
    check_f2h(0x1p-149f, 0x0000, "f32 denormal");
    check_f2h(-0x1p-130f, 0x8000, "-f32 denormal");
    check_f2h(INFINITY, 0x7c00, "inf");
    check_f2h(-INFINITY, 0xfc00, "-inf");
}

static void test_known_f16_to_f32(void **state)
{
    (void)state;
    static const struct {
        mpd_half h;
        float f;
    } cases[] = {
        {0x3c00, 1.0f},         {0xc000, -2.0f},         {0x7bff, 65504.0f},
        {0x0001, 0x1p-24f},     {0x8001, -0x1p-24f},     {0x0002, 0x1p-23f},
        {0x03ff, 1023 * 0x1p-24f}, {0x0400, 0x1p-14f},   {0x0200, 0x1p-15f},
        {0x3555, 0.333251953125f}, {0x3c01, 1.0f + 0x1p-10f},
        {0x7c00, INFINITY},     {0xfc00, -INFINITY},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        float got = mpd_f16_to_f32(cases[i].h);
        if (fbits(got) != fbits(cases[i].f)) {
            print_error("0x%04x -> %a, want %a\n", cases[i].h, (double)got, (double)cases[i].f);
            fail();
        }
    }
    assert_int_equal(fbits(mpd_f16_to_f32(0x0000)), 0x00000000u);
    assert_int_equal(fbits(mpd_f16_to_f32(0x8000)), 0x80000000u);
}

/* NaN stays NaN (quiet, sign kept, never inf), both directions; the exact
 * payload follows the hardware convention (quiet bit set, payload
 * truncated / shifted), which the bulk tests check bit for bit. */
static void test_nan(void **state)
{
    (void)state;
    static const uint32_t f32_nans[] = {
        0x7fc00000u, 0xffc00000u, /* default quiet NaNs */
        0x7f800001u, 0xff800001u, /* signaling, payload only in the low bits */
        0x7fa00000u, 0x7fbfffffu, 0x7fffffffu, 0xffffffffu, 0x7f802000u,
    };
    for (size_t i = 0; i < sizeof(f32_nans) / sizeof(f32_nans[0]); i++) {
        uint32_t u = f32_nans[i];
        mpd_half h = mpd_f32_to_f16(bitsf(u));
        if (!half_is_nan(h) || !(h & 0x0200u) || (h >> 15) != (u >> 31)) {
            print_error("f32 NaN 0x%08x -> 0x%04x\n", (unsigned)u, h);
            fail();
        }
        assert_int_equal(h & 0x1ffu, (u >> 13) & 0x1ffu); /* top payload bits kept */
    }
    check_f2h(NAN, 0x7e00, "NAN");
    for (uint32_t m = 1; m < 0x400; m++) {
        for (uint32_t s = 0; s < 2; s++) {
            mpd_half h = (mpd_half)(s << 15 | 0x7c00u | m);
            float f = mpd_f16_to_f32(h);
            uint32_t u = fbits(f);
            assert_true(isnan(f));
            assert_int_equal(u >> 31, s);
            assert_int_equal(u & 0x400000u, 0x400000u); /* quiet */
            assert_int_equal((u >> 13) & 0x3ffu, m | 0x200u);
            assert_int_equal(u & 0x1fffu, 0);
        }
    }
}

/* ---- exhaustive properties of the scalar functions -------------------------- */

static void test_roundtrip_all_halves(void **state)
{
    (void)state;
    for (uint32_t i = 0; i < 65536; i++) {
        mpd_half h = (mpd_half)i;
        float f = mpd_f16_to_f32(h);
        mpd_half back = mpd_f32_to_f16(f);
        if (half_is_nan(h)) {
            assert_true(isnan(f));
            assert_true(half_is_nan(back));
            assert_int_equal(back, h | 0x0200u); /* made quiet, payload kept */
            continue;
        }
        if ((double)f != half_ref(h) || back != h) {
            print_error("0x%04x -> %a (want %a) -> 0x%04x\n", h, (double)f, half_ref(h), back);
            fail();
        }
    }
}

/* Every finite float rounds to a nearest half with ties to even: checked
 * against the two neighbouring halves on random inputs of every magnitude. */
static void test_nearest_even_and_error_bound(void **state)
{
    (void)state;
    for (int k = 0; k < 400000; k++) {
        /* Exponents 102..142 cover everything from below half's subnormal
         * range to past its overflow threshold. */
        uint32_t e = 102 + rnd32() % 41;
        uint32_t u = (rnd32() & 0x80000000u) | e << 23 | (rnd32() & 0x7fffffu);
        float x = bitsf(u);
        double ax = fabs((double)x);
        mpd_half h = mpd_f32_to_f16(x);
        double v = half_ref(h);
        if (ax >= 65520.0) {
            assert_true(isinf(v) && (v > 0) == (x > 0));
            continue;
        }
        assert_false(isinf(v));
        double err = fabs(v - (double)x);
        if (ax >= 0x1p-14) {
            /* Normal range: relative error at most 2^-11. */
            if (err > 0x1p-11 * ax) {
                print_error("x=%a -> 0x%04x=%a, error %g > 2^-11 |x|\n", (double)x, h, v, err);
                fail();
            }
        } else {
            assert_true(err <= 0x1p-25); /* subnormal: half a unit of 2^-24 */
        }
        /* Nearest: the halves one step either side are no closer, and a tie
         * goes to the even one. */
        mpd_half mag = h & 0x7fffu;
        if (mag > 0 && mag < 0x7bff) {
            double dlo = fabs(half_ref((mpd_half)(h - 1)) - (double)x);
            double dhi = fabs(half_ref((mpd_half)(h + 1)) - (double)x);
            assert_true(err <= dlo && err <= dhi);
            if (err == dlo || err == dhi)
                assert_int_equal(h & 1, 0);
        }
    }
}

/* ---- bulk conversions ------------------------------------------------------- */

typedef void (*f2h_fn)(const float *, mpd_half *, size_t);
typedef void (*h2f_fn)(const mpd_half *, float *, size_t);

static const struct {
    const char *name;
    f2h_fn f2h;
    h2f_fn h2f;
} paths[] = {
    {"dispatched", mpd__f32_to_f16_n, mpd__f16_to_f32_n},
    {"scalar", mpd__f32_to_f16_n_scalar, mpd__f16_to_f32_n_scalar},
};
#define NPATHS (sizeof(paths) / sizeof(paths[0]))

static void check_h2f(const char *path, const mpd_half *src, const float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t want = fbits(mpd_f16_to_f32(src[i])), got = fbits(dst[i]);
        if (got != want) {
            print_error("%s f16->f32 [%zu of %zu]: 0x%04x -> 0x%08x, scalar 0x%08x\n", path, i, n,
                        src[i], (unsigned)got, (unsigned)want);
            fail();
        }
    }
}

static void check_f2h_n(const char *path, const float *src, const mpd_half *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mpd_half want = mpd_f32_to_f16(src[i]);
        if (dst[i] != want) {
            print_error("%s f32->f16 [%zu of %zu]: 0x%08x -> 0x%04x, scalar 0x%04x\n", path, i, n,
                        (unsigned)fbits(src[i]), dst[i], want);
            fail();
        }
    }
}

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
/* Asked independently of half_cpu.c: CPUID F16C + AVX, OS saves YMM. */
static int cpu_has_f16c(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (!(c & bit_OSXSAVE) || !(c & bit_AVX) || !(c & bit_F16C))
        return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    return (lo & 6u) == 6u;
}
#endif

static void test_impl_name(void **state)
{
    (void)state;
    const char *impl = mpd__half_impl();
    print_message("half conversions: %s\n", impl);
#if defined(__x86_64__) || defined(__i386__)
    int hw = cpu_has_f16c();
    assert_string_equal(impl, hw ? "f16c" : "scalar");
#elif defined(__aarch64__)
    assert_string_equal(impl, "neon");
#else
    assert_string_equal(impl, "scalar");
#endif
}

static void test_bulk_f16_to_f32_all_halves(void **state)
{
    (void)state;
    mpd_half *src = malloc(65536 * sizeof(*src));
    float *dst = malloc(65536 * sizeof(*dst));
    assert_non_null(src);
    assert_non_null(dst);
    for (uint32_t i = 0; i < 65536; i++)
        src[i] = (mpd_half)i;
    for (size_t p = 0; p < NPATHS; p++) {
        memset(dst, 0xff, 65536 * sizeof(*dst));
        paths[p].h2f(src, dst, 65536);
        check_h2f(paths[p].name, src, dst, 65536);
    }
    free(src);
    free(dst);
}

/* 2 signs x 256 exponents x 8192 mantissas (4.2M floats): random mantissas
 * whose low k bits (k = 0..23) are often set to a rounding tie, just below
 * or just above one, so every rounding position in the normal and the
 * subnormal half range meets its edge cases. */
static void test_bulk_f32_to_f16_patterns(void **state)
{
    (void)state;
    const size_t per = 8192, n = 512 * per;
    float *src = malloc(n * sizeof(*src));
    mpd_half *dst = malloc(n * sizeof(*dst));
    assert_non_null(src);
    assert_non_null(dst);
    size_t i = 0;
    for (uint32_t se = 0; se < 512; se++) {
        for (size_t j = 0; j < per; j++) {
            uint32_t m = rnd32() & 0x7fffffu;
            uint32_t k = rnd32() % 24, mask = (1u << k) - 1u, half = k ? 1u << (k - 1) : 0u;
            switch (j % 5) {
            case 0: m = (m & ~mask) | half; break;                   /* tie */
            case 1: m = (m & ~mask) | (half ? half - 1 : 0); break;  /* just below */
            case 2: m = (m & ~mask) | ((half + 1) & mask); break;    /* just above */
            case 3: m = (m & ~mask) | (j & 1 ? mask : 0); break;     /* all ones / zeros */
            default: break;                                          /* random */
            }
            if (j < 4)
                m = (uint32_t[]){0, 1, 0x400000u, 0x7fffffu}[j];
            src[i++] = bitsf((se & 0x100u) << 23 | (se & 0xffu) << 23 | m);
        }
    }
    for (size_t p = 0; p < NPATHS; p++) {
        memset(dst, 0xff, n * sizeof(*dst));
        paths[p].f2h(src, dst, n);
        check_f2h_n(paths[p].name, src, dst, n);
    }
    free(src);
    free(dst);
}

/* Lengths around the vector width and a long odd one, from aligned and
 * unaligned starts: results match and nothing past n is written. */
static void test_bulk_odd_lengths(void **state)
{
    (void)state;
    static const size_t lens[] = {0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 1000003};
    const size_t maxn = 1000003 + 1;
    float *fsrc = malloc((maxn + CANARY) * sizeof(float));
    float *fdst = malloc((maxn + CANARY) * sizeof(float));
    mpd_half *hsrc = malloc((maxn + CANARY) * sizeof(mpd_half));
    mpd_half *hdst = malloc((maxn + CANARY) * sizeof(mpd_half));
    assert_non_null(fsrc);
    assert_non_null(fdst);
    assert_non_null(hsrc);
    assert_non_null(hdst);
    tu_fill_random(fsrc, maxn, -70000.f, 70000.f, 7);
    for (size_t i = 0; i < maxn; i += 3)
        fsrc[i] *= 0x1p-20f; /* some subnormal halves too */
    for (size_t i = 0; i < maxn; i++)
        hsrc[i] = (mpd_half)rnd32();

    for (size_t p = 0; p < NPATHS; p++) {
        for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
            for (size_t off = 0; off < 2; off++) {
                size_t n = lens[li];
                for (size_t i = 0; i < n + CANARY; i++) {
                    hdst[off + i] = CANARY_H;
                    memcpy(&fdst[off + i], &(uint32_t){CANARY_F}, sizeof(float));
                }
                paths[p].f2h(fsrc + off, hdst + off, n);
                paths[p].h2f(hsrc + off, fdst + off, n);
                check_f2h_n(paths[p].name, fsrc + off, hdst + off, n);
                check_h2f(paths[p].name, hsrc + off, fdst + off, n);
                for (size_t i = n; i < n + CANARY; i++) {
                    if (hdst[off + i] != CANARY_H || fbits(fdst[off + i]) != CANARY_F) {
                        print_error("%s n=%zu off=%zu: write past the end at +%zu\n",
                                    paths[p].name, n, off, i - n);
                        fail();
                    }
                }
            }
        }
    }
    free(fsrc);
    free(fdst);
    free(hsrc);
    free(hdst);
}

/* ---- bf16 ------------------------------------------------------------------ */

static void check_f2b(uint32_t f, uint16_t want)
{
    uint16_t got = mpd_f32_to_bf16(bitsf(f));
    if (got != want) {
        print_error("bf16: f32 0x%08x -> 0x%04x, want 0x%04x\n", (unsigned)f, got, want);
        fail();
    }
}

static void test_bf16_known(void **state)
{
    (void)state;
    check_f2b(0x3f800000u, 0x3f80u); /* 1 */
    check_f2b(0x3f808000u, 0x3f80u); /* 1 + 2^-8: a tie, to even (down) */
    check_f2b(0x3f818000u, 0x3f82u); /* 1 + 3 2^-8: a tie, to even (up) */
    check_f2b(0x3f808001u, 0x3f81u); /* just past the tie */
    check_f2b(0xbf80ffffu, 0xbf81u);
    check_f2b(0x7f7fffffu, 0x7f80u); /* FLT_MAX rounds past the largest bf16: inf */
    check_f2b(0xff7f7fffu, 0xff7fu); /* just below the tie: the largest finite */
    check_f2b(0x7f800000u, 0x7f80u);
    check_f2b(0xff800000u, 0xff80u);
    check_f2b(0x00800000u, 0x0080u); /* the smallest normal */
    check_f2b(0x007fffffu, 0x0000u); /* subnormals become zero, keeping the sign */
    check_f2b(0x80000001u, 0x8000u);
    check_f2b(0x7fc00000u, 0x7fc0u); /* NaN: quiet, sign, top payload bits */
    check_f2b(0x7f800001u, 0x7fc0u); /* a signaling NaN comes out quiet, not inf */
    check_f2b(0xffa50000u, 0xffe5u);
    /* bf16 -> f32 is exact and every bf16 (but NaN) goes round trip. */
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float f = mpd_bf16_to_f32((uint16_t)h);
        assert_int_equal(fbits(f), h << 16);
        if (!isnan(f) && (h & 0x7f80u))
            assert_int_equal(mpd_f32_to_bf16(f), h);
    }
}

#if defined(__x86_64__)
/* The hardware's conversion, which oneDNN's bf16 kernels use. */
__attribute__((target("avx512f,avx512bf16"))) static void hw_f32_to_bf16(const float *src,
                                                                         uint16_t *dst)
{
    __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src));
    memcpy(dst, &v, 32);
}
#endif

/* half.h's conversion is VCVTNEPS2BF16's, bit for bit: 16 million random
 * patterns (every class: NaNs, subnormals, ties), where the CPU has it. */
static void test_bf16_matches_the_instruction(void **state)
{
    (void)state;
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5))) {
        print_message("skipped: the CPU has no AVX512-BF16\n");
        skip();
    }
    float src[16];
    uint16_t hw[16];
    for (long k = 0; k < (1l << 20); k++) {
        for (int i = 0; i < 16; i++) {
            uint32_t u = rnd32();
            if (i == 1)
                u = (u & 0xffff0000u) | 0x8000u; /* a tie */
            if (i == 2)
                u &= 0x807fffffu; /* a subnormal */
            src[i] = bitsf(u);
        }
        hw_f32_to_bf16(src, hw);
        for (int i = 0; i < 16; i++) {
            if (hw[i] != mpd_f32_to_bf16(src[i])) {
                print_error("f32 0x%08x: instruction 0x%04x, half.h 0x%04x\n",
                            (unsigned)fbits(src[i]), hw[i], mpd_f32_to_bf16(src[i]));
                fail();
            }
        }
    }
#else
    print_message("skipped: not x86-64\n");
    skip();
#endif
}

/* The bulk forms give the scalar function's bits, in place too, and the
 * layout changes put every value where CHW and HWC say. */
static void test_bf16_bulk(void **state)
{
    (void)state;
    const int c = 19, hw = 150;
    size_t n = (size_t)c * hw;
    float *x = malloc(n * sizeof(float)), *r = malloc(n * sizeof(float));
    float *back = malloc(n * sizeof(float));
    uint16_t *b = malloc(n * sizeof(uint16_t));
    assert_non_null(x);
    assert_non_null(r);
    assert_non_null(back);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        x[i] = bitsf(rnd32());
    mpd__bf16_round_n(x, r, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(fbits(r[i]), (uint32_t)mpd_f32_to_bf16(x[i]) << 16);
    memcpy(back, x, n * sizeof(float));
    mpd__bf16_round_n(back, back, n);
    assert_memory_equal(back, r, n * sizeof(float));
    /* Two pixel ranges, the second not a multiple of the block; 1 and 3
     * channels take loops of their own. */
    static const int cs[] = {1, 3, c};
    for (int k = 0; k < 3; k++) {
        int cc = cs[k];
        memset(b, 0, n * sizeof(uint16_t));
        mpd__f32_chw_to_bf16_hwc(x, cc, hw, b, 0, 70);
        mpd__f32_chw_to_bf16_hwc(x, cc, hw, b, 70, hw);
        for (int ch = 0; ch < cc; ch++)
            for (int p = 0; p < hw; p++)
                assert_int_equal(b[(size_t)p * cc + ch], mpd_f32_to_bf16(x[(size_t)ch * hw + p]));
        mpd__bf16_hwc_to_f32_chw(b, cc, hw, back, 0, 65);
        mpd__bf16_hwc_to_f32_chw(b, cc, hw, back, 65, hw);
        assert_memory_equal(back, r, (size_t)cc * hw * sizeof(float));
    }
    free(x);
    free(r);
    free(back);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_known),
        cmocka_unit_test(test_bf16_matches_the_instruction),
        cmocka_unit_test(test_bf16_bulk),
        cmocka_unit_test(test_known_f32_to_f16),
        cmocka_unit_test(test_known_f16_to_f32),
        cmocka_unit_test(test_nan),
        cmocka_unit_test(test_roundtrip_all_halves),
        cmocka_unit_test(test_nearest_even_and_error_bound),
        cmocka_unit_test(test_impl_name),
        cmocka_unit_test(test_bulk_f16_to_f32_all_halves),
        cmocka_unit_test(test_bulk_f32_to_f16_patterns),
        cmocka_unit_test(test_bulk_odd_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
