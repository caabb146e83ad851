/* gemm_f16.c - the fp16 and bf16 GEMMs in the CPU's own arithmetic
 * (gemm_f16.h), chosen at run time: by HWCAP on AArch64 (the NEON kernels
 * here), by CPUID on x86 (AVX512-FP16: gemm_f16_x86.c). AArch64 tiles
 * are 8 rows x 8 columns. fp16 (ARMv8.2 FP16): per k, the 8 columns of B
 * (one vector) times each of A's 8 rows (a lane each) into 8 half
 * accumulators; every 16 k they are widened into 16 fp32 accumulators and
 * cleared. bf16 (ARMv8.6 BF16): per pair of taps, BFDOT of 4 columns'
 * pairs (one vector) with each row's pair (a lane) straight into the 16
 * fp32 accumulators. */
#include "gemm_f16.h"
#include "gemm_tiles.h"

#include <stdlib.h>
#include <string.h>

#ifdef MPD_HAVE_F16_ARITH
#include <pthread.h>
#endif
#ifdef MPD_F16_NEON
#include <arm_neon.h>
#include <sys/auxv.h>
#ifndef HWCAP_FPHP
#define HWCAP_FPHP (1 << 9)
#endif
#ifndef HWCAP_ASIMDHP
#define HWCAP_ASIMDHP (1 << 10)
#endif
#ifndef HWCAP2_BF16
#define HWCAP2_BF16 (1 << 14)
#endif
#elif defined(MPD_HAVE_F16_ARITH)
#include <cpuid.h>
#endif

enum {
    MR = MPD_TILE_MR, /* rows of a tile: A's panel width */
    NR = 8,           /* columns of a tile: one vector of halves */
    CHUNK = 16,       /* taps summed in half before the fp32 accumulator */
};

#ifdef MPD_HAVE_F16_ARITH
static int has_f16;
#ifdef MPD_HAVE_BF16_ARITH
static int has_bf16;
#endif
static pthread_once_t arith_once = PTHREAD_ONCE_INIT;
static void arith_init(void)
{
#ifdef MPD_F16_NEON
    unsigned long want = HWCAP_FPHP | HWCAP_ASIMDHP;
    has_f16 = (getauxval(AT_HWCAP) & want) == want;
    has_bf16 = (getauxval(AT_HWCAP2) & HWCAP2_BF16) != 0;
#else
    /* AVX512-FP16 and the AVX-512 it builds on (F, DQ, BW, VL), with the
     * OS saving the SSE, AVX and AVX-512 registers (XCR0). */
    unsigned a, b, c, d, lo, hi;
    const unsigned f_dq_bw_vl = 1u << 16 | 1u << 17 | 1u << 30 | 1u << 31;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & 1u << 27) /* OSXSAVE */ ||
        !__get_cpuid_count(7, 0, &a, &b, &c, &d) || (b & f_dq_bw_vl) != f_dq_bw_vl ||
        !(d & 1u << 23))
        return;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    has_f16 = (lo & 0xe6) == 0xe6;
#endif
}

/* The CPU has it (*has, once probed) and the environment variable does
 * not say "emulated". */
static int chosen(const int *has, const char *env)
{
    pthread_once(&arith_once, arith_init);
    const char *m = getenv(env);
    return *has && !(m && !strcmp(m, "emulated"));
}
#endif

int mpd__f16_arith(void)
{
#ifdef MPD_HAVE_F16_ARITH
    return chosen(&has_f16, "MPDET_FP16_KERNEL");
#else
    return 0;
#endif
}

int mpd__bf16_arith(void)
{
#ifdef MPD_HAVE_BF16_ARITH
    return chosen(&has_bf16, "MPDET_BF16_KERNEL");
#else
    return 0;
#endif
}

#ifdef MPD_F16_NEON
#define F16_TARGET __attribute__((target("arch=armv8.2-a+fp16")))

/* Columns [j0, j0 + nr) of taps [k0, k0 + kc) of B as halves, kc x 8 (zeros
 * past nr): exact, B holds half values. */
static F16_TARGET void pack_b(const float *b, int ldb, int k, int k0, int kc, int j0, int nr,
                              uint16_t *dst16)
{
    (void)k; /* kc stops within k */
    float16_t *dst = (float16_t *)dst16;
    for (int kk = 0; kk < kc; kk++) {
        const float *row = b + (size_t)(k0 + kk) * ldb + j0;
        if (nr == NR) {
            float16x4_t lo = vcvt_f16_f32(vld1q_f32(row)), hi = vcvt_f16_f32(vld1q_f32(row + 4));
            vst1q_f16(dst + (size_t)kk * NR, vcombine_f16(lo, hi));
        } else {
            float t[NR] = {0};
            memcpy(t, row, (size_t)nr * sizeof(float));
            float16x4_t lo = vcvt_f16_f32(vld1q_f32(t)), hi = vcvt_f16_f32(vld1q_f32(t + 4));
            vst1q_f16(dst + (size_t)kk * NR, vcombine_f16(lo, hi));
        }
    }
}

/* h += bv * av[lane], one rounding: FMLA by element. Written as asm
 * because gcc 12 compiles vfmaq_laneq_f16 into a DUP of the lane and a
 * vector FMLA (15 instructions per tap instead of 8). "x": this form
 * takes its indexed register from v0-v15 only. */
#define FMLA_LANE(h, lane)                                                                         \
    __asm__("fmla %0.8h, %1.8h, %2.h[" #lane "]" : "+w"(h) : "w"(bv), "x"(av))

/* One 8 x 8 tile over kc taps: c (row stride ldc) = its value so far
 * (first: 0) + the chunk sums. a: the panel at the block's first tap. */
static F16_TARGET void tile(const uint16_t *a16, const uint16_t *bp16, int kc, float *c, int ldc,
                            int first)
{
    const float16_t *a = (const float16_t *)a16, *bp = (const float16_t *)bp16;
    float32x4_t lo[MR], hi[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        lo[r] = first ? vdupq_n_f32(0) : vld1q_f32(c + (size_t)r * ldc);
        hi[r] = first ? vdupq_n_f32(0) : vld1q_f32(c + (size_t)r * ldc + 4);
    }
    for (int k0 = 0; k0 < kc; k0 += CHUNK) {
        int ke = kc - k0 < CHUNK ? kc - k0 : CHUNK;
        float16x8_t h0 = vdupq_n_f16(0), h1 = h0, h2 = h0, h3 = h0, h4 = h0, h5 = h0, h6 = h0,
                    h7 = h0;
        const float16_t *ak = a + (size_t)k0 * MR, *bk = bp + (size_t)k0 * NR;
        for (int kk = 0; kk < ke; kk++) {
            float16x8_t bv = vld1q_f16(bk + kk * NR), av = vld1q_f16(ak + kk * MR);
            FMLA_LANE(h0, 0);
            FMLA_LANE(h1, 1);
            FMLA_LANE(h2, 2);
            FMLA_LANE(h3, 3);
            FMLA_LANE(h4, 4);
            FMLA_LANE(h5, 5);
            FMLA_LANE(h6, 6);
            FMLA_LANE(h7, 7);
        }
#define WIDEN(r)                                                                                   \
    lo[r] = vaddq_f32(lo[r], vcvt_f32_f16(vget_low_f16(h##r)));                                    \
    hi[r] = vaddq_f32(hi[r], vcvt_high_f32_f16(h##r))
        WIDEN(0);
        WIDEN(1);
        WIDEN(2);
        WIDEN(3);
        WIDEN(4);
        WIDEN(5);
        WIDEN(6);
        WIDEN(7);
#undef WIDEN
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        vst1q_f32(c + (size_t)r * ldc, lo[r]);
        vst1q_f32(c + (size_t)r * ldc + 4, hi[r]);
    }
}
#undef FMLA_LANE

void mpd__gemm_f16(int m, int n, int k, const mpd_half *a, const float *b, int ldb, float *c,
                   int ldc)
{
    mpd__gemm_tiles(m, n, k, a, mpd__f16_packed_size(MR, k), b, ldb, c, ldc, NR, pack_b, tile);
}

#define BF16_TARGET __attribute__((target("arch=armv8.6-a+bf16")))

/* Pairs of taps [k0, k0 + kc) of columns [j0, j0 + nr) of B as bf16: pair
 * q's 8 columns x 2 taps at 16 q (columns 0-3, then 4-7), zeros past nr
 * and k. Exact: B holds bf16 values. */
static void pack_b_bf16(const float *b, int ldb, int k, int k0, int kc, int j0, int nr,
                        uint16_t *dst)
{
    for (int q = 0; q < (kc + 1) / 2; q++)
        for (int c = 0; c < NR; c++)
            for (int t = 0; t < 2; t++) {
                int kk = k0 + 2 * q + t;
                dst[q * 2 * NR + 2 * c + t] =
                    c < nr && kk < k ? mpd_f32_to_bf16(b[(size_t)kk * ldb + j0 + c]) : 0;
            }
}

/* One 8 x 8 tile over the pairs of a block: c (row stride ldc) = its value
 * so far (first: 0) + the BFDOT sums. a: the panel at the block's first
 * pair. */
static BF16_TARGET void tile_bf16(const uint16_t *a, const uint16_t *bp, int kc, float *c, int ldc,
                                  int first)
{
    const int pairs = (kc + 1) / 2;
    float32x4_t lo[MR], hi[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        lo[r] = first ? vdupq_n_f32(0) : vld1q_f32(c + (size_t)r * ldc);
        hi[r] = first ? vdupq_n_f32(0) : vld1q_f32(c + (size_t)r * ldc + 4);
    }
    for (int q = 0; q < pairs; q++) {
        bfloat16x8_t b0 = vld1q_bf16((const bfloat16_t *)bp + q * 16),
                     b1 = vld1q_bf16((const bfloat16_t *)bp + q * 16 + 8),
                     a0 = vld1q_bf16((const bfloat16_t *)a + q * 16),
                     a1 = vld1q_bf16((const bfloat16_t *)a + q * 16 + 8);
#define DOT(r, av, lane)                                                                           \
    lo[r] = vbfdotq_laneq_f32(lo[r], b0, av, lane);                                                \
    hi[r] = vbfdotq_laneq_f32(hi[r], b1, av, lane)
        DOT(0, a0, 0);
        DOT(1, a0, 1);
        DOT(2, a0, 2);
        DOT(3, a0, 3);
        DOT(4, a1, 0);
        DOT(5, a1, 1);
        DOT(6, a1, 2);
        DOT(7, a1, 3);
#undef DOT
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        vst1q_f32(c + (size_t)r * ldc, lo[r]);
        vst1q_f32(c + (size_t)r * ldc + 4, hi[r]);
    }
}

void mpd__gemm_bf16(int m, int n, int k, const mpd_bf16 *a, const float *b, int ldb, float *c,
                    int ldc)
{
    mpd__gemm_tiles(m, n, k, a, mpd__bf16_packed_size(MR, k), b, ldb, c, ldc, NR, pack_b_bf16,
                    tile_bf16);
}
#endif
