/* gemm_i8.h - int8 x int8 -> int32 matrix products for the CPU backend's
 * quantized convolutions. Several implementations, all bit-identical in
 * int32 (REF is the definition; the tests check every other one against it).
 *
 * Thread-safety: every function here may be called concurrently from any
 * number of threads (on disjoint C blocks). The only shared state is
 * read-only after a pthread_once initialisation, plus oneDNN's primitive
 * cache, which is protected by a mutex. Scratch memory is per calling
 * thread (freed when the thread exits). */
#ifndef MPD_GEMM_I8_H
#define MPD_GEMM_I8_H

#include <stdint.h>

typedef enum {
    MPD_GEMM_I8_REF,
    MPD_GEMM_I8_AVX2,
    MPD_GEMM_I8_DNNL,
    MPD_GEMM_I8_NEON,
    MPD_GEMM_I8_AUTO
} mpd_gemm_i8_impl;

/* C[m][n] (int32, row stride ldc) = sum_k A[m][k] * Bt[n][k] for m < M, n < N.
 * A: M x K int8 row-major (row stride lda); Bt: N x K int8 row-major (row
 * stride ldb), i.e. the im2col matrix stored one output pixel per row
 * ("im2row"). K may be any value >= 1 (callers pad K to a multiple of 4 with
 * zeros, but kernels are correct for any K); M or N may be 1. All values are
 * in [-127, 127] (the caller never produces -128), which the fast kernels rely
 * on. K <= 131072 so that no int32 sum can overflow. No alignment is
 * required of any pointer or stride. Single-threaded: callers split M or N
 * across their own thread pool and call this concurrently on disjoint C
 * blocks.
 *
 * impl AUTO runs mpd__gemm_i8_best(). An impl that cannot run on this CPU /
 * build at all (AVX2 without AVX2, NEON off aarch64, DNNL without oneDNN)
 * falls back to AUTO. DNNL in a build with oneDNN always runs oneDNN, even
 * where mpd__gemm_i8_available() says it is not exact (kept for the tests
 * and the benchmark, which measure that). */
void mpd__gemm_i8(mpd_gemm_i8_impl impl, int M, int N, int K, const int8_t *A, int lda,
                  const int8_t *Bt, int ldb, int32_t *C, int ldc);

/* The implementation AUTO resolves to on this CPU (fastest available that
 * is exact). */
mpd_gemm_i8_impl mpd__gemm_i8_best(void);

/* Nonzero when impl can run on this CPU / build and is exact there. */
int mpd__gemm_i8_available(mpd_gemm_i8_impl impl);

/* "ref", "avx2", "onednn", "neon" ("auto" for AUTO, "?" otherwise). */
const char *mpd__gemm_i8_name(mpd_gemm_i8_impl impl);

#endif
