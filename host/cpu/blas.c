/* blas.c - OpenBLAS loaded at run time, its kernels chosen by the CPU's
 * features (see blas.h for why). */
#define _GNU_SOURCE
#include "blas.h"

#include <cblas.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "mpd.h"

typedef void (*sgemm_fn)(enum CBLAS_ORDER, enum CBLAS_TRANSPOSE, enum CBLAS_TRANSPOSE, blasint,
                         blasint, blasint, float, const float *, blasint, const float *, blasint,
                         float, float *, blasint);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static sgemm_fn sgemm;
static const char *core = "?", *source = "?", *config = "?";
static char err[256];

/* The kernel family for this CPU's vector units, or NULL to leave the choice
 * to OpenBLAS. x86 only: a core with AVX-512 (F, BW, VL, DQ: what OpenBLAS's
 * SkylakeX kernels use) gets SkylakeX, or Cooperlake with AVX512-BF16 (the
 * same sgemm plus bf16 kernels); a core with AVX2 and FMA gets Haswell, or
 * Zen on AMD (Haswell's kernels, AMD's blocking). Elsewhere (aarch64, older
 * x86) OpenBLAS's own choice stands. */
const char *mpd__blas_core_for_cpu(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return __builtin_cpu_is("amd") ? "Zen" : "Haswell";
#endif
    return NULL;
}

static void load(void)
{
    const char *user = getenv("OPENBLAS_CORETYPE");
    const char *mine = user && *user ? NULL : mpd__blas_core_for_cpu();
    /* Set only for the constructor that runs inside dlopen, then restored,
     * so that programs we start see the environment they were given. */
    if (mine)
        setenv("OPENBLAS_CORETYPE", mine, 1);
    /* Likewise one thread: its constructor would otherwise start a thread
     * per core, which spin on sched_yield for a while (a second core's
     * worth, measured with perf after load) before set_num_threads(1)
     * below can stop them. */
    const char *nt = getenv("OPENBLAS_NUM_THREADS");
    int one = !(nt && *nt);
    if (one)
        setenv("OPENBLAS_NUM_THREADS", "1", 1);
    static const char *const names[] = {"libopenblas.so.0", "libopenblas.so"};
    void *h = NULL;
    for (size_t i = 0; !h && i < sizeof(names) / sizeof(names[0]); i++)
        h = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
    if (mine)
        unsetenv("OPENBLAS_CORETYPE");
    if (one)
        unsetenv("OPENBLAS_NUM_THREADS");
    if (!h) {
        snprintf(err, sizeof(err), "cpu backend: cannot load OpenBLAS (libopenblas.so.0): %s",
                 dlerror());
        return;
    }
    sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
    void (*threads)(int) = (void (*)(int))dlsym(h, "openblas_set_num_threads");
    char *(*name)(void) = (char *(*)(void))dlsym(h, "openblas_get_corename");
    char *(*conf)(void) = (char *(*)(void))dlsym(h, "openblas_get_config");
    if (!sgemm || !threads) {
        sgemm = NULL;
        snprintf(err, sizeof(err), "cpu backend: %s lacks cblas_sgemm or openblas_set_num_threads",
                 names[0]);
        return;
    }
    /* Our pool splits each layer across the cores and calls single-threaded
     * sgemm from every worker; OpenBLAS's own threads would oversubscribe
     * the cores and spin between calls. */
    threads(1);
    core = name ? name() : "unknown";
    config = conf ? conf() : "unknown";
    /* If the process had loaded OpenBLAS already, our setting came too late:
     * say so only when the kernels are the ones asked for. */
    source = mine && !strcasecmp(core, mine) ? "mpdet"
             : user && *user                 ? "OPENBLAS_CORETYPE"
                                             : "OpenBLAS";
}

int mpd__blas_load(char *msg, size_t msglen)
{
    pthread_once(&once, load);
    return sgemm ? 0 : mpd__fail(msg, msglen, MPD_EINVAL, "%s", err);
}

static void gemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int m, int n, int k,
                 const float *a, int lda, const float *b, int ldb, float *c, int ldc)
{
    if (!sgemm && mpd__blas_load(NULL, 0)) {
        /* Only a kernel called without a CPU backend (whose open loads the
         * library or fails cleanly) gets here. */
        fprintf(stderr, "%s\n", err);
        abort();
    }
    sgemm(CblasRowMajor, ta, tb, m, n, k, 1.f, a, lda, b, ldb, 0.f, c, ldc);
}

void mpd__blas_sgemm(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                     float *c, int ldc)
{
    gemm(CblasNoTrans, CblasNoTrans, m, n, k, a, lda, b, ldb, c, ldc);
}

void mpd__blas_sgemm_tt(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                        float *c, int ldc)
{
    gemm(CblasTrans, CblasTrans, m, n, k, a, lda, b, ldb, c, ldc);
}

const char *mpd__blas_core(void)
{
    return core;
}

const char *mpd__blas_core_source(void)
{
    return source;
}

const char *mpd__blas_config(void)
{
    return config;
}
