/* gemm_f16.h - the GEMMs of 16-bit floats in the CPU's own arithmetic,
 * where it has it: fp16 on AArch64 with ARMv8.2 FP16 (HWCAP_FPHP and
 * HWCAP_ASIMDHP) and on x86 with AVX512-FP16 (CPUID, the OS saving the
 * AVX-512 state), bf16 on AArch64 with ARMv8.6 BF16 (HWCAP2_BF16).
 *
 * fp16: the arithmetic is the CUDA half2 kernel's (cuda/gemm_f16.cu), with one
 * half accumulator per output instead of two lanes: each output's K taps
 * are taken in chunks of 16 (k = 0-15, 16-31, ...), each chunk's products
 * summed in half by fused multiply-adds (one rounding each), and the
 * chunk sums added in order into an fp32 accumulator. The order is fixed
 * by k alone, so the result does not depend on blocking or threads. With
 * S = sum |a_i b_i| and gamma_j(r) = j r / (1 - j r):
 *   |err| <= (gamma_16(2^-11) + gamma_n(2^-24) (1 + gamma_16(2^-11))) S
 *            + (1 + gamma_16(2^-11)) (1 + gamma_n(2^-24)) K 2^-25
 * with n = ceil(K / 16) fp32 additions; the last term is half subnormals.
 * A chunk's partial sum overflows to inf past 65504 (at most its 16
 * |products|, which on yolov3-tiny stay below 160).
 *
 * bf16: BFDOT, as the architecture defines it without FEAT_EBF16: the two
 * products of a pair of taps (exact in fp32), their sum and its addition
 * to the fp32 accumulator each rounded to odd with subnormals flushed to
 * zero, pairs taken in the order of k (an odd K's last pair padded with
 * zero). Against an fp64 sum of the same bf16 operands:
 *   |err| <= gamma_K(2^-23) S + K 2^-125
 * (round to odd errs by up to one ulp, not half; the last term is the
 * flushed subnormals). */
#ifndef MPD_GEMM_F16_H
#define MPD_GEMM_F16_H

#include <stddef.h>

#include "../half.h"

#if defined(__aarch64__) && !defined(MPD_NO_NEON)
#define MPD_F16_NEON 1        /* the NEON kernels (gemm_f16.c) */
#define MPD_HAVE_F16_ARITH 1  /* mpd__gemm_f16 exists */
#define MPD_HAVE_BF16_ARITH 1 /* mpd__gemm_bf16 exists */
#elif defined(__x86_64__) && ((defined(__clang__) && __clang_major__ >= 15) ||                     \
                              (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 12))
#define MPD_F16_AVX512 1     /* the AVX512-FP16 kernel (gemm_f16_x86.c) */
#define MPD_HAVE_F16_ARITH 1 /* mpd__gemm_f16 exists */
#endif
#ifdef MPD_F16_NEON
#define MPD_F16_ISA "ARMv8.2 FP16" /* the half arithmetic, for plan show */
#else
#define MPD_F16_ISA "AVX512-FP16"
#endif

/* 1 where this CPU runs half arithmetic and MPDET_FP16_KERNEL is not
 * "emulated" (which keeps fp16 on fp32 arithmetic of the half values). */
int mpd__f16_arith(void);

/* 1 where this CPU has BFDOT and MPDET_BF16_KERNEL is not "emulated". */
int mpd__bf16_arith(void);

/* Halves (mpd_half) that mpd__f16_pack writes for an m x k matrix. */
size_t mpd__f16_packed_size(int m, int k);

/* Packs a row-major m x k fp32 matrix of half values (the rounded
 * weights) for mpd__gemm_f16: panels of 8 rows (the last padded with
 * zeros), each k x 8. Row r's panel starts at (r / 8) * 8 * k. */
void mpd__f16_pack(const float *a, int m, int k, mpd_half *dst);

/* The same for mpd__gemm_bf16, of bf16 values: panels of 8 rows, each
 * ceil(k / 2) pairs of taps x 8 rows x 2 (a pair's two taps adjacent, an
 * odd k's last pair padded with zero); mpd__bf16_packed_size values, row
 * r's panel at (r / 8) * mpd__bf16_packed_size(8, k). */
size_t mpd__bf16_packed_size(int m, int k);
void mpd__bf16_pack(const float *a, int m, int k, mpd_bf16 *dst);

/* C (m x n, row stride ldc) = A B in the arithmetic above, where a is
 * mpd__f16_pack's panel of A's first row (a multiple of 8) and b is k x n
 * fp32 holding half values (row stride ldb). Only where mpd__f16_arith()
 * is 1. mpd__gemm_bf16: the same in bf16 (a from mpd__bf16_pack at A's
 * first row, b holding bf16 values), where mpd__bf16_arith() is 1. */
#ifdef MPD_HAVE_F16_ARITH
void mpd__gemm_f16(int m, int n, int k, const mpd_half *a, const float *b, int ldb, float *c,
                   int ldc);
#endif
#ifdef MPD_HAVE_BF16_ARITH
void mpd__gemm_bf16(int m, int n, int k, const mpd_bf16 *a, const float *b, int ldb, float *c,
                    int ldc);
#endif

#endif
