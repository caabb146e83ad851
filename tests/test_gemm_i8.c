/* test_gemm_i8.c - every int8 GEMM implementation (host/cpu/gemm_i8.h)
 * against REF, exact int32 equality: K sweeps across the vector and tail
 * sizes, M or N of 1, strides larger than the rows, extreme values (the
 * cases where a saturating 16-bit pair sum would go wrong), the yolov3-tiny
 * convolution shapes, reads at the very edge of mapped memory, and calls
 * from two threads at once. Implementations that this CPU or build cannot
 * run are reported as skipped. */
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cpu/gemm_i8.h"
#include "testutil.h"

#define C_SENTINEL ((int32_t)0x5A5A5A5A)

/* ---- data ------------------------------------------------------------------ */

typedef enum {
    FILL_RANDOM,  /* uniform in [-127, 127] */
    FILL_EXTREME, /* random signs of 127 */
    FILL_POS,     /* A = B = +127: every product +16129 */
    FILL_NEG,     /* A = B = -127: every product +16129 */
    FILL_POS_NEG, /* A = +127, B = -127: every product -16129 */
    FILL_ALT,     /* A = B = +127, -127, +127, ...: every product +16129 */
    FILL_ALT_ANTI /* A alternating, B its negation: every product -16129 */
} fill_mode;

static const char *fill_name(fill_mode f)
{
    static const char *names[] = {"random", "extreme", "pos", "neg", "pos_neg", "alt", "alt_anti"};
    return names[f];
}

static unsigned lcg(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

static int8_t value(fill_mode f, int is_b, int k, unsigned *s)
{
    switch (f) {
    case FILL_RANDOM: return (int8_t)((int)(lcg(s) % 255) - 127);
    case FILL_EXTREME: return (lcg(s) & 1) ? 127 : -127;
    case FILL_POS: return 127;
    case FILL_NEG: return -127;
    case FILL_POS_NEG: return is_b ? -127 : 127;
    case FILL_ALT: return (k & 1) ? -127 : 127;
    case FILL_ALT_ANTI: return ((k & 1) ^ is_b) ? -127 : 127;
    }
    return 0;
}

/* rows x ld bytes: [0, K) from the fill mode, the padding [K, ld) garbage
 * (including -128) that no kernel may read into a result. */
static void fill(int8_t *x, int rows, int K, int ld, fill_mode f, int is_b, unsigned seed)
{
    unsigned s = seed * 2654435761u + 7;
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < ld; k++)
            x[(size_t)r * ld + k] = k < K ? value(f, is_b, k, &s) : (int8_t)(lcg(&s) & 0xff);
}

/* ---- checks -------------------------------------------------------------------- */

static void skip_unless(mpd_gemm_i8_impl impl)
{
    if (!mpd__gemm_i8_available(impl)) {
        print_message("skipped: %s not available on this CPU\n", mpd__gemm_i8_name(impl));
        skip();
    }
}

/* Runs impl and REF on the same data and requires identical C, with the
 * columns [N, ldc) untouched. */
static void check_case(mpd_gemm_i8_impl impl, int M, int N, int K, int lda, int ldb, int ldc,
                       fill_mode f, unsigned seed)
{
    int8_t *A = tu_xmalloc((size_t)M * lda), *B = tu_xmalloc((size_t)N * ldb);
    int32_t *C = tu_xmalloc((size_t)M * ldc * sizeof(int32_t));
    int32_t *R = tu_xmalloc((size_t)M * ldc * sizeof(int32_t));
    fill(A, M, K, lda, f, 0, seed);
    fill(B, N, K, ldb, f, 1, seed + 1);
    for (size_t i = 0; i < (size_t)M * ldc; i++)
        C[i] = R[i] = C_SENTINEL;
    mpd__gemm_i8(MPD_GEMM_I8_REF, M, N, K, A, lda, B, ldb, R, ldc);
    mpd__gemm_i8(impl, M, N, K, A, lda, B, ldb, C, ldc);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < ldc; n++) {
            size_t i = (size_t)m * ldc + n;
            if (C[i] != R[i]) {
                print_error("%s M=%d N=%d K=%d lda=%d ldb=%d ldc=%d fill=%s: C[%d][%d] = %d, "
                            "ref %d%s\n",
                            mpd__gemm_i8_name(impl), M, N, K, lda, ldb, ldc, fill_name(f), m, n,
                            C[i], R[i], n >= N ? " (written outside the block)" : "");
                fail();
            }
        }
    free(A), free(B), free(C), free(R);
}

static const int KS[] = {1,  3,  4,  5,   15,  16,  17,  31,   32,  33,
                         63, 64, 65, 127, 128, 129, 300, 1152, 4608};
enum { NKS = sizeof(KS) / sizeof(KS[0]) };

/* M and N around the tile sizes (AVX2 2 x 4, NEON 4 x 4) and cache blocks. */
static void run_k_sweep(mpd_gemm_i8_impl impl)
{
    static const int MN[][2] = {{1, 1}, {1, 7}, {7, 1}, {2, 4}, {3, 5}, {5, 9}, {4, 4}, {9, 13}};
    unsigned seed = 1;
    for (int ki = 0; ki < NKS; ki++) {
        int K = KS[ki];
        for (size_t s = 0; s < sizeof(MN) / sizeof(MN[0]); s++) {
            int M = MN[s][0], N = MN[s][1];
            if ((long)K * M * N > 200000 && s > 3)
                continue; /* keep the big K fast */
            check_case(impl, M, N, K, K, K, N, FILL_RANDOM, seed++);
            /* Strides past the rows, odd ones included. */
            check_case(impl, M, N, K, K + 13, K + 64, N + 3, FILL_RANDOM, seed++);
        }
    }
}

static void run_extremes(mpd_gemm_i8_impl impl)
{
    for (int f = FILL_EXTREME; f <= FILL_ALT_ANTI; f++)
        for (int ki = 0; ki < NKS; ki++) {
            int K = KS[ki];
            check_case(impl, 3, 5, K, K, K, 5, (fill_mode)f, 100 + ki);
            check_case(impl, 2, 4, K, K + 1, K + 31, 7, (fill_mode)f, 200 + ki);
        }
}

/* M and N from 1 to past the cache block of A (AVX2 blocks up to 256 rows). */
static void run_random_shapes(mpd_gemm_i8_impl impl)
{
    unsigned s = 77;
    for (int t = 0; t < 60; t++) {
        int M = 1 + (int)(lcg(&s) % 70), N = 1 + (int)(lcg(&s) % 70);
        int K = 1 + (int)(lcg(&s) % 700);
        int lda = K + (int)(lcg(&s) % 3) * (int)(lcg(&s) % 40);
        int ldb = K + (int)(lcg(&s) % 3) * (int)(lcg(&s) % 40);
        int ldc = N + (int)(lcg(&s) % 2) * (int)(lcg(&s) % 9);
        check_case(impl, M, N, K, lda, ldb, ldc, t % 5 == 4 ? FILL_EXTREME : FILL_RANDOM, 1000 + t);
    }
    check_case(impl, 300, 9, 64, 64, 64, 9, FILL_RANDOM, 5);  /* two blocks of A */
    check_case(impl, 600, 6, 20, 20, 20, 6, FILL_EXTREME, 6); /* small K: big blocks */
    check_case(impl, 70, 3, 5000, 5000, 5000, 3, FILL_EXTREME, 7);
}

/* The 13 convolutions: M = filters, N = out_h * out_w, K = in_c * size *
 * size padded to 4 with zeros (as the quantized path calls it). */
static const int YOLO[][3] = {
    {16, 173056, 27}, {32, 43264, 144}, {64, 10816, 288}, {128, 2704, 576},
    {256, 676, 1152}, {512, 169, 2304}, {1024, 169, 4608}, {256, 169, 1024},
    {512, 169, 2304}, {255, 169, 512},  {128, 169, 256},  {256, 676, 3456},
    {255, 676, 256},
};

static void run_yolo(mpd_gemm_i8_impl impl)
{
    for (size_t s = 0; s < sizeof(YOLO) / sizeof(YOLO[0]); s++) {
        if (s == 8)
            continue; /* same shape as 5 */
        int M = YOLO[s][0], N = YOLO[s][1], K = YOLO[s][2], K4 = (K + 3) & ~3;
        int8_t *A = tu_xmalloc((size_t)M * K4), *B = tu_xmalloc((size_t)N * K4);
        int32_t *C = tu_xmalloc((size_t)M * N * sizeof(int32_t));
        int32_t *R = tu_xmalloc((size_t)M * N * sizeof(int32_t));
        fill(A, M, K4, K4, s % 3 == 2 ? FILL_EXTREME : FILL_RANDOM, 0, 300 + (unsigned)s);
        fill(B, N, K4, K4, FILL_RANDOM, 1, 400 + (unsigned)s);
        for (int m = 0; m < M; m++)
            memset(A + (size_t)m * K4 + K, 0, (size_t)(K4 - K));
        for (int n = 0; n < N; n++)
            memset(B + (size_t)n * K4 + K, 0, (size_t)(K4 - K));
        mpd__gemm_i8(MPD_GEMM_I8_REF, M, N, K4, A, K4, B, K4, R, N);
        memset(C, 0x5A, (size_t)M * N * sizeof(int32_t));
        mpd__gemm_i8(impl, M, N, K4, A, K4, B, K4, C, N);
        for (size_t i = 0; i < (size_t)M * N; i++)
            if (C[i] != R[i]) {
                print_error("%s yolo shape M=%d N=%d K=%d: C[%zu][%zu] = %d, ref %d\n",
                            mpd__gemm_i8_name(impl), M, N, K4, i / (size_t)N, i % (size_t)N, C[i],
                            R[i]);
                fail();
            }
        free(A), free(B), free(C), free(R);
    }
}

/* Operands flush against an inaccessible page on either side: a kernel that
 * reads a byte before the first row or past the last one crashes. */
typedef struct {
    uint8_t *base;
    size_t len;
} guarded;

static void *guarded_alloc(guarded *g, size_t n, int at_end)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t body = (n + (size_t)page - 1) / (size_t)page * (size_t)page;
    g->len = body + 2 * (size_t)page;
    g->base = mmap(NULL, g->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g->base != MAP_FAILED);
    assert_int_equal(mprotect(g->base, (size_t)page, PROT_NONE), 0);
    assert_int_equal(mprotect(g->base + page + body, (size_t)page, PROT_NONE), 0);
    return at_end ? g->base + page + body - n : g->base + page;
}

static void run_guarded(mpd_gemm_i8_impl impl)
{
    static const int ks[] = {1, 3, 4, 5, 12, 28, 31, 32, 33, 36, 63, 65, 100, 513, 515, 1200};
    for (size_t ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ki++)
        for (int at_end = 0; at_end < 2; at_end++)
            for (int shape = 0; shape < 4; shape++) {
                /* Small ones take the AVX2 row-tile kernel, 6 x 17 the
                 * vertical one. */
                static const int MN[4][2] = {{1, 1}, {3, 5}, {6, 5}, {6, 17}};
                int K = ks[ki], M = MN[shape][0], N = MN[shape][1];
                guarded ga, gb;
                int8_t *A = guarded_alloc(&ga, (size_t)M * K, at_end);
                int8_t *B = guarded_alloc(&gb, (size_t)N * K, at_end);
                fill(A, M, K, K, FILL_RANDOM, 0, (unsigned)(K * 10 + shape));
                fill(B, N, K, K, FILL_EXTREME, 1, (unsigned)(K * 10 + shape + 5));
                int32_t C[6 * 17], R[6 * 17];
                mpd__gemm_i8(MPD_GEMM_I8_REF, M, N, K, A, K, B, K, R, N);
                mpd__gemm_i8(impl, M, N, K, A, K, B, K, C, N);
                for (int i = 0; i < M * N; i++)
                    if (C[i] != R[i]) {
                        print_error("%s guarded M=%d N=%d K=%d: C[%d] = %d, ref %d\n",
                                    mpd__gemm_i8_name(impl), M, N, K, i, C[i], R[i]);
                        fail();
                    }
                munmap(ga.base, ga.len);
                munmap(gb.base, gb.len);
            }
}

/* Two threads on disjoint blocks of one C: halves of M, then halves of N. */
typedef struct {
    mpd_gemm_i8_impl impl;
    int M, N, K;
    const int8_t *A, *B;
    int lda, ldb, ldc;
    int32_t *C;
    int reps;
} job;

static void *job_run(void *p)
{
    const job *j = p;
    for (int r = 0; r < j->reps; r++)
        mpd__gemm_i8(j->impl, j->M, j->N, j->K, j->A, j->lda, j->B, j->ldb, j->C, j->ldc);
    return NULL;
}

static void run_threads(mpd_gemm_i8_impl impl)
{
    const int M = 130, N = 343, K = 580, lda = 600, ldb = 580, ldc = 350;
    int8_t *A = tu_xmalloc((size_t)M * lda), *B = tu_xmalloc((size_t)N * ldb);
    int32_t *C = tu_xmalloc((size_t)M * ldc * sizeof(int32_t));
    int32_t *R = tu_xmalloc((size_t)M * ldc * sizeof(int32_t));
    fill(A, M, K, lda, FILL_RANDOM, 0, 11);
    fill(B, N, K, ldb, FILL_EXTREME, 1, 12);
    for (size_t i = 0; i < (size_t)M * ldc; i++)
        R[i] = C_SENTINEL;
    mpd__gemm_i8(MPD_GEMM_I8_REF, M, N, K, A, lda, B, ldb, R, ldc);
    for (int split_n = 0; split_n < 2; split_n++) {
        for (size_t i = 0; i < (size_t)M * ldc; i++)
            C[i] = C_SENTINEL;
        job j[2];
        for (int t = 0; t < 2; t++) {
            j[t] = (job){impl, M, N, K, A, B, lda, ldb, ldc, C, 20};
            if (split_n) {
                int n0 = t == 0 ? 0 : 171;
                j[t].N = t == 0 ? 171 : N - 171;
                j[t].B = B + (size_t)n0 * ldb;
                j[t].C = C + n0;
            } else {
                int m0 = t == 0 ? 0 : 67;
                j[t].M = t == 0 ? 67 : M - 67;
                j[t].A = A + (size_t)m0 * lda;
                j[t].C = C + (size_t)m0 * ldc;
            }
        }
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, job_run, &j[1]), 0);
        job_run(&j[0]);
        assert_int_equal(pthread_join(th, NULL), 0);
        for (size_t i = 0; i < (size_t)M * ldc; i++)
            if (C[i] != R[i]) {
                print_error("%s threads (split %s): C[%zu][%zu] = %d, ref %d\n",
                            mpd__gemm_i8_name(impl), split_n ? "N" : "M", i / ldc, i % ldc, C[i],
                            R[i]);
                fail();
            }
    }
    free(A), free(B), free(C), free(R);
}

/* ---- tests --------------------------------------------------------------------- */

#define IMPL_TESTS(impl, tag)                                                               \
    static void test_##tag##_k_sweep(void **state)                                         \
    {                                                                                       \
        (void)state;                                                                        \
        skip_unless(impl);                                                                  \
        run_k_sweep(impl);                                                                  \
    }                                                                                       \
    static void test_##tag##_extremes(void **state)                                        \
    {                                                                                       \
        (void)state;                                                                        \
        skip_unless(impl);                                                                  \
        run_extremes(impl);                                                                 \
    }                                                                                       \
    static void test_##tag##_random_shapes(void **state)                                   \
    {                                                                                       \
        (void)state;                                                                        \
        skip_unless(impl);                                                                  \
        run_random_shapes(impl);                                                            \
    }                                                                                       \
    static void test_##tag##_yolo_shapes(void **state)                                     \
    {                                                                                       \
        (void)state;                                                                        \
        skip_unless(impl);                                                                  \
        run_yolo(impl);                                                                     \
    }                                                                                       \
    static void test_##tag##_guarded(void **state)                                         \
    {                                                                                       \
        (void)state;                                                                        \
        skip_unless(impl);                                                                  \
        run_guarded(impl);                                                                  \
    }                                                                                       \
    static void test_##tag##_threads(void **state)                                         \
    {                                                                                       \
        (void)state;                                                                        \
        skip_unless(impl);                                                                  \
        run_threads(impl);                                                                  \
    }

IMPL_TESTS(MPD_GEMM_I8_AVX2, avx2)
IMPL_TESTS(MPD_GEMM_I8_DNNL, onednn)
IMPL_TESTS(MPD_GEMM_I8_NEON, neon)
IMPL_TESTS(MPD_GEMM_I8_AUTO, auto)

#define IMPL_TEST_LIST(tag)                                                                 \
    cmocka_unit_test(test_##tag##_k_sweep), cmocka_unit_test(test_##tag##_extremes),        \
        cmocka_unit_test(test_##tag##_random_shapes),                                       \
        cmocka_unit_test(test_##tag##_yolo_shapes), cmocka_unit_test(test_##tag##_guarded), \
        cmocka_unit_test(test_##tag##_threads)

/* REF itself, on a product worked out by hand. */
static void test_ref_by_hand(void **state)
{
    (void)state;
    /* A 2 x 3 (lda 4), Bt 3 x 3 (ldb 3), C 2 x 3 (ldc 4). */
    const int8_t A[] = {1, -2, 3, 99, 127, -127, 0, 99};
    const int8_t Bt[] = {4, 5, 6, -1, 0, 1, 127, 127, -127};
    int32_t C[8];
    for (int i = 0; i < 8; i++)
        C[i] = C_SENTINEL;
    mpd__gemm_i8(MPD_GEMM_I8_REF, 2, 3, 3, A, 4, Bt, 3, C, 4);
    const int32_t want[8] = {4 - 10 + 18, -1 + 3, 127 - 254 - 381, C_SENTINEL,
                             508 - 635,   -127,   0,               C_SENTINEL};
    for (int i = 0; i < 8; i++)
        assert_int_equal(C[i], want[i]);
}

static void test_availability(void **state)
{
    (void)state;
    assert_true(mpd__gemm_i8_available(MPD_GEMM_I8_REF));
    assert_true(mpd__gemm_i8_available(MPD_GEMM_I8_AUTO));
    mpd_gemm_i8_impl best = mpd__gemm_i8_best();
    assert_true(best != MPD_GEMM_I8_AUTO);
    assert_true(mpd__gemm_i8_available(best));
    assert_string_equal(mpd__gemm_i8_name(MPD_GEMM_I8_REF), "ref");
    assert_string_equal(mpd__gemm_i8_name(MPD_GEMM_I8_AVX2), "avx2");
    assert_string_equal(mpd__gemm_i8_name(MPD_GEMM_I8_DNNL), "onednn");
    assert_string_equal(mpd__gemm_i8_name(MPD_GEMM_I8_NEON), "neon");
#if defined(__x86_64__)
    __builtin_cpu_init();
#ifndef MPD_NO_AVX2 /* the build switch that leaves the AVX2 kernels out */
    assert_int_equal(!!mpd__gemm_i8_available(MPD_GEMM_I8_AVX2),
                     !!__builtin_cpu_supports("avx2"));
#endif
    if (mpd__gemm_i8_available(MPD_GEMM_I8_AVX2))
        assert_true(__builtin_cpu_supports("avx2"));
    assert_false(mpd__gemm_i8_available(MPD_GEMM_I8_NEON));
    if (mpd__gemm_i8_available(MPD_GEMM_I8_AVX2) && !mpd__gemm_i8_available(MPD_GEMM_I8_DNNL))
        assert_int_equal(best, MPD_GEMM_I8_AVX2);
#elif defined(__aarch64__)
    assert_false(mpd__gemm_i8_available(MPD_GEMM_I8_AVX2));
    assert_true(mpd__gemm_i8_available(MPD_GEMM_I8_NEON));
#endif
    print_message("auto = %s; available:%s%s%s%s\n", mpd__gemm_i8_name(best),
                  mpd__gemm_i8_available(MPD_GEMM_I8_REF) ? " ref" : "",
                  mpd__gemm_i8_available(MPD_GEMM_I8_AVX2) ? " avx2" : "",
                  mpd__gemm_i8_available(MPD_GEMM_I8_DNNL) ? " onednn" : "",
                  mpd__gemm_i8_available(MPD_GEMM_I8_NEON) ? " neon" : "");
}

/* An implementation this CPU cannot run still gives REF's answer. */
static void test_unavailable_falls_back(void **state)
{
    (void)state;
    for (int impl = MPD_GEMM_I8_AVX2; impl <= MPD_GEMM_I8_NEON; impl++)
        if (impl != MPD_GEMM_I8_DNNL && !mpd__gemm_i8_available((mpd_gemm_i8_impl)impl))
            check_case((mpd_gemm_i8_impl)impl, 5, 6, 37, 40, 37, 6, FILL_EXTREME, 9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_by_hand),
        cmocka_unit_test(test_availability),
        cmocka_unit_test(test_unavailable_falls_back),
        IMPL_TEST_LIST(avx2),
        IMPL_TEST_LIST(onednn),
        IMPL_TEST_LIST(neon),
        IMPL_TEST_LIST(auto),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
