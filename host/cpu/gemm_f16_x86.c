/* gemm_f16_x86.c - the fp16 GEMM in half arithmetic on x86 AVX512-FP16
 * (gemm_f16.h), chosen at run time by mpd__f16_arith(). Tiles of 8 rows x
 * 32 columns: per k, the 32 columns of B (one vector of halves) times each
 * of A's 8 rows (broadcast) into 8 half accumulators by VFMADD231PH, one
 * rounding each; every
 * 16 k they are widened into 16 fp32 accumulators and cleared. Per output
 * this is the arithmetic of the NEON kernel (gemm_f16.c) and of the CUDA
 * half2 kernel: the same sums in the same order, so the same bits.
 *
 * Only this file is built for AVX512-FP16 (target attributes), so the
 * rest of the library runs on any x86-64. It needs no library but
 * memcpy: tests/emu runs it on an emulated Sapphire Rapids. */
#include "gemm_f16.h"
#include "gemm_tiles.h"

#ifdef MPD_F16_AVX512
#include <immintrin.h>

#define AVX512FP16 __attribute__((target("avx512fp16,avx512bw,avx512vl,avx512dq,avx512f")))

enum {
    MR = MPD_TILE_MR, /* rows of a tile: A's panel width */
    NR = 32,          /* columns of a tile: one vector of halves */
    CHUNK = 16,       /* taps summed in half before the fp32 accumulator */
};

/* Columns [j0, j0 + nr) of taps [k0, k0 + kc) of B as halves, kc x 32
 * (zeros past nr): exact, B holds half values. */
static AVX512FP16 void pack_b(const float *b, int ldb, int k, int k0, int kc, int j0, int nr,
                              uint16_t *dst)
{
    (void)k; /* kc stops within k */
    const __mmask16 mlo = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1),
                    mhi = nr <= 16   ? 0
                          : nr >= 32 ? 0xffff
                                     : (__mmask16)((1u << (nr - 16)) - 1);
    for (int kk = 0; kk < kc; kk++) {
        const float *row = b + (size_t)(k0 + kk) * ldb + j0;
        __m512 lo = _mm512_maskz_loadu_ps(mlo, row), hi = _mm512_maskz_loadu_ps(mhi, row + 16);
        __m256i hlo = _mm512_cvtps_ph(lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                hhi = _mm512_cvtps_ph(hi, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm512_storeu_si512(dst + (size_t)kk * NR,
                            _mm512_inserti64x4(_mm512_castsi256_si512(hlo), hhi, 1));
    }
}

/* acc + b * a[0] (a broadcast to the 32 lanes) by one VFMADD231PH with an
 * embedded broadcast: compilers load the broadcast with VPBROADCASTW,
 * which takes a shuffle port the FMAs need. */
static inline AVX512FP16 __m512h fma_bcast(__m512h acc, __m512h b, const uint16_t *a)
{
    __asm__("vfmadd231ph %2%{1to32%}, %1, %0" : "+v"(acc) : "v"(b), "m"(*a));
    return acc;
}

/* Row r's half accumulator widened into its two fp32 vectors. */
#define WIDEN(r)                                                                                   \
    do {                                                                                           \
        __m512i v = _mm512_castph_si512(h[r]);                                                     \
        lo[r] = _mm512_add_ps(lo[r], _mm512_cvtph_ps(_mm512_castsi512_si256(v)));                  \
        hi[r] = _mm512_add_ps(hi[r], _mm512_cvtph_ps(_mm512_extracti64x4_epi64(v, 1)));            \
    } while (0)

/* One 8 x 32 tile over kc taps: c (row stride ldc) = its value so far
 * (first: 0) + the chunk sums. a: the panel at the block's first tap.
 * The loops over the rows are unrolled before register allocation
 * (#pragma GCC unroll): without that gcc 12 keeps the 16 fp32 accumulators
 * on the stack (32 loads and stores every 16 taps); with it the 8 half
 * and 16 fp32 accumulators stay in registers (25 of the 32). */
static AVX512FP16 void tile(const uint16_t *a, const uint16_t *bp, int kc, float *c, int ldc,
                            int first)
{
    __m512 lo[MR], hi[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        lo[r] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + (size_t)r * ldc);
        hi[r] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + (size_t)r * ldc + 16);
    }
    for (int k0 = 0; k0 < kc; k0 += CHUNK) {
        const int ke = kc - k0 < CHUNK ? kc - k0 : CHUNK;
        const uint16_t *ak = a + (size_t)k0 * MR, *bk = bp + (size_t)k0 * NR;
        __m512h h[MR];
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++)
            h[r] = _mm512_setzero_ph();
        for (int kk = 0; kk < ke; kk++) {
            const __m512h bv = _mm512_castsi512_ph(_mm512_loadu_si512(bk + (size_t)kk * NR));
            const uint16_t *ar = ak + (size_t)kk * MR;
#pragma GCC unroll 8
            for (int r = 0; r < MR; r++)
                h[r] = fma_bcast(h[r], bv, ar + r);
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++)
            WIDEN(r);
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        _mm512_storeu_ps(c + (size_t)r * ldc, lo[r]);
        _mm512_storeu_ps(c + (size_t)r * ldc + 16, hi[r]);
    }
}
#undef WIDEN

void mpd__gemm_f16(int m, int n, int k, const mpd_half *a, const float *b, int ldb, float *c,
                   int ldc)
{
    mpd__gemm_tiles(m, n, k, a, mpd__f16_packed_size(MR, k), b, ldb, c, ldc, NR, pack_b, tile);
}
#endif
