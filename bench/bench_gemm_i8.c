/* bench_gemm_i8 - single-threaded speed of each int8 GEMM implementation
 * (host/cpu/gemm_i8.h) on the 13 convolution shapes of yolov3-tiny, beside
 * OpenBLAS sgemm on the same shapes (the fp32 path's product).
 *
 *   bench_gemm_i8 [--reps N] [--min-ms MS] [--ref] [--shape I]
 *
 * M = filters, N = out_h * out_w, K = in_c * size * size. The int8 kernels
 * get K padded to a multiple of 4 (as the quantized path calls them), sgemm
 * the real K; GOP/s counts 2*M*N*K with the real K for every column. Each
 * implementation is timed reps times, alternating between implementations
 * so that a noisy machine affects all alike, and the best time is kept.
 * Each result is also checked against REF ("MISMATCH" otherwise; oneDNN is
 * run and checked even where mpd__gemm_i8_available() says it is not
 * exact). */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/blas.h"
#include "cpu/gemm_i8.h"

typedef struct {
    int m, n, k;
} shape;

static const shape SHAPES[] = {
    {16, 173056, 27}, {32, 43264, 144}, {64, 10816, 288}, {128, 2704, 576},
    {256, 676, 1152}, {512, 169, 2304}, {1024, 169, 4608}, {256, 169, 1024},
    {512, 169, 2304}, {255, 169, 512},  {128, 169, 256},  {256, 676, 3456},
    {255, 676, 256},
};
enum { NSHAPES = sizeof(SHAPES) / sizeof(SHAPES[0]) };

/* Columns: the int8 implementations, then sgemm. */
enum { COL_SGEMM = MPD_GEMM_I8_AUTO, NCOLS };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static unsigned rng = 12345;
static int8_t rand_i8(void)
{
    rng = rng * 1664525u + 1013904223u;
    return (int8_t)((int)(rng >> 24) % 255 - 127); /* -127..127 */
}

static void *xmalloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1) != 0) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

typedef struct {
    int m, n, k, k4;
    int8_t *a, *bt;
    int32_t *c;
    float *af, *bf, *cf;
} problem;

static void run(int col, const problem *p)
{
    if (col == COL_SGEMM)
        mpd__blas_sgemm(p->m, p->n, p->k, p->af, p->k, p->bf, p->n, p->cf, p->n);
    else
        mpd__gemm_i8((mpd_gemm_i8_impl)col, p->m, p->n, p->k4, p->a, p->k4, p->bt, p->k4, p->c,
                     p->n);
}

/* Seconds for one call: repeats until min_s has passed, keeps the average. */
static double time_once(int col, const problem *p, double min_s)
{
    int iters = 0;
    double t0 = now(), t;
    do {
        run(col, p);
        iters++;
        t = now() - t0;
    } while (t < min_s);
    return t / iters;
}

int main(int argc, char **argv)
{
    int reps = 5, with_ref = 0, only = -1;
    double min_s = 0.05;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--min-ms") && i + 1 < argc)
            min_s = atof(argv[++i]) / 1000;
        else if (!strcmp(argv[i], "--ref"))
            with_ref = 1;
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc)
            only = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--reps N] [--min-ms MS] [--ref] [--shape I]\n", argv[0]);
            return 2;
        }
    }
    char msg[256];
    if (mpd__blas_load(msg, sizeof(msg))) {
        fprintf(stderr, "%s\n", msg);
        return 1;
    }

    int use[NCOLS] = {0};
    use[MPD_GEMM_I8_REF] = with_ref;
    for (int i = MPD_GEMM_I8_AVX2; i < MPD_GEMM_I8_AUTO; i++)
        use[i] = mpd__gemm_i8_available(i);
    /* oneDNN runs here even when it is not exact on this CPU (marked '*'):
     * a build without it falls back to another implementation, so only
     * show it when it is there. */
#if !defined(MPD_NO_DNNL) && defined(__has_include)
#if __has_include(<dnnl.h>)
    int dnnl_built = 1; /* gemm_i8.c decides the same way */
#else
    int dnnl_built = 0;
#endif
#else
    int dnnl_built = 0;
#endif
    int dnnl_inexact = dnnl_built && !use[MPD_GEMM_I8_DNNL];
    if (dnnl_built)
        use[MPD_GEMM_I8_DNNL] = 1;
    use[COL_SGEMM] = 1;

    printf("int8 GEMM, single thread; auto = %s; GOP/s = 2*M*N*K / time (K unpadded)\n",
           mpd__gemm_i8_name(mpd__gemm_i8_best()));
    if (dnnl_inexact)
        printf("onednn*: not exact on this CPU (no VNNI/AMX); timed anyway\n");
    printf("%-18s", "M,N,K");
    for (int c = 0; c < NCOLS; c++)
        if (use[c])
            printf(" %16s", c == COL_SGEMM ? "sgemm" : mpd__gemm_i8_name((mpd_gemm_i8_impl)c));
    if (use[MPD_GEMM_I8_AVX2])
        printf(" %9s", "avx2/sgemm");
    printf("\n%-18s", "");
    for (int c = 0; c < NCOLS; c++)
        if (use[c])
            printf(" %16s", "ms   GOP/s");
    printf("\n");

    double total[NCOLS] = {0}, total_ops = 0;
    int bad_total[NCOLS] = {0};
    for (int s = 0; s < NSHAPES; s++) {
        if (only >= 0 && s != only)
            continue;
        problem p;
        p.m = SHAPES[s].m, p.n = SHAPES[s].n, p.k = SHAPES[s].k;
        p.k4 = (p.k + 3) & ~3;
        size_t na = (size_t)p.m * p.k4, nb = (size_t)p.n * p.k4, nc = (size_t)p.m * p.n;
        p.a = xmalloc(na);
        p.bt = xmalloc(nb);
        p.c = xmalloc(nc * sizeof(int32_t));
        p.af = xmalloc((size_t)p.m * p.k * sizeof(float));
        p.bf = xmalloc((size_t)p.k * p.n * sizeof(float));
        p.cf = xmalloc(nc * sizeof(float));
        for (int m = 0; m < p.m; m++)
            for (int k = 0; k < p.k4; k++) {
                int8_t v = k < p.k ? rand_i8() : 0;
                p.a[(size_t)m * p.k4 + k] = v;
                if (k < p.k)
                    p.af[(size_t)m * p.k + k] = v;
            }
        for (int n = 0; n < p.n; n++)
            for (int k = 0; k < p.k4; k++) {
                int8_t v = k < p.k ? rand_i8() : 0;
                p.bt[(size_t)n * p.k4 + k] = v;
                if (k < p.k)
                    p.bf[(size_t)k * p.n + n] = v;
            }

        /* Exactness against REF. */
        int32_t *ref = xmalloc(nc * sizeof(int32_t));
        mpd__gemm_i8(MPD_GEMM_I8_REF, p.m, p.n, p.k4, p.a, p.k4, p.bt, p.k4, ref, p.n);
        size_t bad[NCOLS] = {0};
        for (int c = 0; c < COL_SGEMM; c++) {
            if (!use[c] || c == MPD_GEMM_I8_REF)
                continue;
            memset(p.c, 0x55, nc * sizeof(int32_t));
            run(c, &p);
            for (size_t i = 0; i < nc; i++)
                bad[c] += p.c[i] != ref[i];
            bad_total[c] += bad[c] != 0;
        }
        free(ref);

        double best[NCOLS];
        for (int c = 0; c < NCOLS; c++)
            best[c] = 1e30;
        for (int r = 0; r < reps; r++)
            for (int c = 0; c < NCOLS; c++) {
                if (!use[c] || (c == MPD_GEMM_I8_REF && r > 0))
                    continue; /* REF is slow: once */
                double t = time_once(c, &p, c == MPD_GEMM_I8_REF ? 0 : min_s);
                if (t < best[c])
                    best[c] = t;
            }

        double ops = 2.0 * p.m * p.n * p.k;
        total_ops += ops;
        char name[32];
        snprintf(name, sizeof(name), "%d,%d,%d", p.m, p.n, p.k);
        printf("%-18s", name);
        for (int c = 0; c < NCOLS; c++) {
            if (!use[c])
                continue;
            total[c] += best[c];
            printf(" %7.3f %7.1f%s", best[c] * 1e3, ops / best[c] * 1e-9,
                   bad[c] ? "!" : (c == MPD_GEMM_I8_DNNL && dnnl_inexact) ? "*" : " ");
        }
        if (use[MPD_GEMM_I8_AVX2])
            printf(" %8.2fx", best[COL_SGEMM] / best[MPD_GEMM_I8_AVX2]);
        printf("\n");
        fflush(stdout);
        free(p.a), free(p.bt), free(p.c), free(p.af), free(p.bf), free(p.cf);
    }
    printf("%-18s", "total");
    for (int c = 0; c < NCOLS; c++)
        if (use[c])
            printf(" %7.3f %7.1f ", total[c] * 1e3, total_ops / total[c] * 1e-9);
    if (use[MPD_GEMM_I8_AVX2])
        printf(" %8.2fx", total[COL_SGEMM] / total[MPD_GEMM_I8_AVX2]);
    printf("\n");
    for (int c = 0; c < COL_SGEMM; c++)
        if (use[c] && c != MPD_GEMM_I8_REF)
            printf("%s: %s\n", mpd__gemm_i8_name((mpd_gemm_i8_impl)c),
                   bad_total[c] ? "MISMATCH against ref on some shapes (marked !)"
                                : "exact on every shape");
    return 0;
}
