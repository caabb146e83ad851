/* f16_ref.h - the exact reference of the fp16 GEMM in half arithmetic
 * (host/cpu/gemm_f16.h): per output, its taps in chunks of 16 summed in
 * half by fused multiply-adds (each rounded once, to nearest even), the
 * chunk sums added in order into an fp32 accumulator. Every kernel of that
 * arithmetic (NEON, AVX512-FP16) must give these bits. Header-only and
 * free of library calls but memcpy: test_gemm_f16 uses it, and so does
 * tests/emu/f16_avx512.c on an emulated CPU. */
#ifndef MPD_F16_REF_H
#define MPD_F16_REF_H

#include <stdint.h>
#include <string.h>

#include "half.h"

/* d rounded once to half. d = a b + c of halves is exact in double (|a b|
 * <= 2^17 for a finite result, and no half is below 2^-24, so the sum
 * spans under 53 bits), so this is the fused multiply-add's one rounding.
 * Rounding to float first would round twice; to odd it does not: float
 * has 13 bits more than half, so round-to-odd then to nearest even is
 * exact rounding. */
static inline uint16_t f16_ref_round(double d)
{
    float f = (float)d; /* to nearest even */
    if ((double)f != d) {
        uint32_t u;
        memcpy(&u, &f, sizeof(u));
        if ((d > 0) == ((double)f > d)) /* rounded away from zero: back one ulp */
            u--;
        u |= 1; /* to odd */
        memcpy(&f, &u, sizeof(f));
    }
    return mpd_f32_to_f16(f);
}

/* C (m x n) = A (m x k, row-major) B (k x n, row-major), both holding half
 * values, in the chunked half arithmetic. */
static inline void f16_ref_gemm(int m, int n, int k, const float *a, const float *b, float *c)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float acc = 0;
            for (int k0 = 0; k0 < k; k0 += 16) {
                float h = 0;
                for (int t = k0; t < k && t < k0 + 16; t++)
                    h = mpd_f16_to_f32(
                        f16_ref_round((double)a[(size_t)i * k + t] * b[(size_t)t * n + j] + h));
                acc += h;
            }
            c[(size_t)i * n + j] = acc;
        }
}

/* xorshift32: the same values on every machine and in the emulator. */
static inline uint32_t f16_ref_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* x[0..n) uniform in [lo, hi], rounded to half. */
static inline void f16_ref_fill(float *x, size_t n, float lo, float hi, uint32_t seed)
{
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        float u = (float)(f16_ref_next(&s) >> 8) * 0x1p-24f;
        x[i] = mpd_f16_to_f32(mpd_f32_to_f16(lo + (hi - lo) * u));
    }
}

#endif
