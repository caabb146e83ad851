/* cuda_backend.h - the CUDA backend (cuda/cuda_backend.c over the kernels of
 * cuda/kernels.h), for host/backend_registry.c and the parity tests. Only
 * built when nvcc is found (MPD_HAVE_CUDA). */
#ifndef MPD_CUDA_BACKEND_H
#define MPD_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "../host/backend.h"

extern const mpd_backend_ops mpd__cuda_backend_ops;

/* Number of usable CUDA devices (0 when there is no device or driver);
 * never fails. When 0 and why is non-NULL, *why says why ("no CUDA
 * device", the driver's error). */
int mpd__cuda_device_count(char *why, size_t whylen);

/* Variants, for tests and benchmarks, read from the environment at create:
 *   MPDET_CUDA_INT8=auto|dp4a|plain  int8 GEMM: auto (default) uses cuBLAS's
 *                                int8 GEMM (tensor cores) on each layer where a
 *                                check at plan time finds it exact, else our
 *                                dp4a kernel; dp4a or plain: our kernel only
 *   MPDET_CUDA_FP16=cublas|half2 fp16 GEMM (default cublas where the device
 *                                has fp16 tensor cores, else half2)
 *   MPDET_CUDA_BF16=cublas|kernel bf16 GEMM (default cublas where the device
 *                                has bf16 tensor cores, sm_80 on, and the
 *                                toolkit CUDA 11 on; else our fp32-FMA kernel
 *                                on bf16 operands, "emulated" in the plan)
 *   MPDET_CUDA_GRAPHS=0|1        CUDA graph capture of whole passes (1)
 *   MPDET_CUDA_DEVICE=N          device ordinal (0) */

/* Loads cuBLAS (once; the backend does so when it opens) and resolves every
 * function the backend calls. 0, or MPD_EUNSUP with the reason. Needs no
 * device. */
int mpd__cuda_blas_ready(char *msg, size_t msglen);

/* Test hooks: run one kernel on host arrays through a temporary device
 * buffer. They return MPD_EUNSUP when there is no device. */
/* Raw int32 accumulators of the int8 GEMM: acc[b][o][n] = sum_k w[o][k] *
 * row[b][n][k]; w: m x kp, row: batch x npix x kp (kp a multiple of 4). */
int mpd__cuda_gemm_i8_host(const int8_t *w, const int8_t *row, int m, int npix, int kp, int batch,
                           int use_dp4a, int32_t *acc, char *msg, size_t msglen);
/* fp32 sums of bf16 operands (host/half.h bit patterns), as a bf16
 * convolution's GEMM computes them: c[b] (m x n) = a (m x k) x b[b]
 * (k x n), all row-major; use_cublas 1: cuBLAS's bf16 GEMM in the
 * backend's call shape (MPD_EUNSUP where the build has no bf16 cuBLAS),
 * 0: mpd_cu_gemm_bf16. */
int mpd__cuda_gemm_bf16_host(const uint16_t *a, const uint16_t *b, float *c, int m, int n, int k,
                             int batch, int use_cublas, char *msg, size_t msglen);
/* The GPU letterbox of an RGB u8 image (w x h) into 3 x net_h x net_w. */
int mpd__cuda_letterbox_host(const unsigned char *rgb, int w, int h, int net_w, int net_h,
                             float *dst, char *msg, size_t msglen);

#endif
