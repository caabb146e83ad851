/* blas.h - OpenBLAS, loaded when the first CPU backend opens.
 *
 * Why loaded, not linked: OpenBLAS built with DYNAMIC_ARCH (Debian's, and
 * most distributions') picks its kernels in a library constructor, from the
 * CPU's family and model numbers. A CPU newer than the OpenBLAS release is
 * not in its table and gets the generic SSE3 kernels ("Prescott"): on the
 * Xeon (family 6, model 207) this project is measured on, OpenBLAS 0.3.21
 * did that and every fp32 convolution ran 4-5x slower than with its
 * AVX-512 kernels. The constructor reads OPENBLAS_CORETYPE, so the choice
 * can only be made before the library is loaded. mpd__blas_load() sets it
 * from the CPU's features when the user has not (see blas.c for the
 * rule), loads the library, then restores the environment as it was.
 *
 * Everything here is safe from any thread; the load happens once. */
#ifndef MPD_CPU_BLAS_H
#define MPD_CPU_BLAS_H

#include <stddef.h>

/* Loads OpenBLAS once (later calls return the first result) and sets its
 * own threading to 1 (our pool calls sgemm from every worker). 0, or
 * MPD_EINVAL with a message naming the library when it cannot be loaded. */
int mpd__blas_load(char *msg, size_t msglen);

/* C = A * B, row-major, no transposes, alpha 1, beta 0: A is m x k (lda),
 * B is k x n (ldb), C is m x n (ldc). Loads the library on first use (a
 * CPU backend has already done so); aborts with a message if it cannot. */
void mpd__blas_sgemm(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                     float *c, int ldc);

/* C = A^T * B^T: as mpd__blas_sgemm, but A is stored k x m (lda) and B
 * n x k (ldb), both read transposed. */
void mpd__blas_sgemm_tt(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                        float *c, int ldc);

/* The kernel family OpenBLAS runs ("SkylakeX", "Haswell", ...), and where
 * the choice came from: "OpenBLAS" (its own detection), "mpdet" (set by
 * mpd__blas_load from the CPU's features, and in effect) or "OPENBLAS_CORETYPE" (the
 * user's environment). "?" before a successful load. */
const char *mpd__blas_core(void);
const char *mpd__blas_core_source(void);

/* OpenBLAS's build description (version, DYNAMIC_ARCH, ...); "?" before a
 * successful load. */
const char *mpd__blas_config(void);

/* The OPENBLAS_CORETYPE that mpd__blas_load() sets on this CPU when the user
 * has not set one, or NULL where it leaves the choice to OpenBLAS. Pure. */
const char *mpd__blas_core_for_cpu(void);

#endif
