/* half.h - IEEE 754 binary16 ("half") and bfloat16 <-> binary32 scalar conversions.
 *
 * Written once, with integer bit manipulation only (no compiler half types,
 * no FPU rounding modes), so the CPU backend, its vector fast paths and the
 * CUDA kernels all convert bit-identically. Usable from C11 and CUDA: under
 * nvcc the functions are __host__ __device__.
 *
 * Conventions, chosen to match x86 F16C (vcvtps2ph / vcvtph2ps) and AArch64
 * FCVT with default control registers:
 *   float -> half: round to nearest, ties to even; |x| >= 65520 gives +-inf;
 *     half subnormals are produced (never flushed); f32 subnormals become +-0.
 *   NaN, both directions: the result is a quiet NaN with the input's sign
 *     and the top bits of the payload (10 -> 23 bits: shifted up; 23 -> 10
 *     bits: truncated); the quiet bit is always set, so a NaN never turns
 *     into an infinity and a signaling NaN comes out quiet.
 *   half -> float is otherwise exact (every half is a float). */
#ifndef MPD_HALF_H
#define MPD_HALF_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define MPD_HD __host__ __device__
#else
#define MPD_HD
#endif

/* Raw binary16 bits. */
typedef uint16_t mpd_half;

static inline MPD_HD uint32_t mpd__f32_bits(float f)
{
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
#endif
}

static inline MPD_HD float mpd__bits_f32(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
#endif
}

static inline MPD_HD uint16_t mpd_f32_to_f16(float f)
{
    uint32_t x = mpd__f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;

    if (ax >= 0x7f800000u) {             /* inf or NaN */
        if (ax == 0x7f800000u)
            return (uint16_t)(sign | 0x7c00u);
        /* Quiet bit set, payload truncated to its top 9 bits. */
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    }
    if (ax >= 0x477ff000u)               /* >= 65520: rounds past 65504 */
        return (uint16_t)(sign | 0x7c00u);
    if (ax >= 0x38800000u) {             /* >= 2^-14: normal half */
        /* Rebias the exponent (127 -> 15), then round off 13 bits to
         * nearest even; a mantissa carry bumps the exponent correctly. */
        uint32_t r = ax - 0x38000000u;
        r += 0x0fffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    if (ax <= 0x33000000u)               /* <= 2^-25: rounds to 0 (2^-25 ties to even 0) */
        return sign;
    /* Subnormal half: value = m * 2^(e-150) in units of 2^-24 is
     * m >> (126 - e), with e in 102..112 so the shift is 14..24. A carry
     * out of 0x3ff lands on 0x0400, the smallest normal, as it should. */
    uint32_t e = ax >> 23;
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e;
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (q & 1u)))
        q++;
    return (uint16_t)(sign | q);
}

static inline MPD_HD float mpd_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    uint32_t bits;

    if (e == 0x1fu) {
        /* inf, or NaN made quiet with its payload shifted up. */
        bits = sign | 0x7f800000u | (m ? 0x400000u | (m << 13) : 0u);
    } else if (e != 0) {
        bits = sign | ((e + 112u) << 23) | (m << 13);
    } else if (m == 0) {
        bits = sign;
    } else {
        /* Subnormal m * 2^-24: normalise so bit 10 is the implicit one. */
        uint32_t sh = 0;
        while (!(m & 0x400u)) {
            m <<= 1;
            sh++;
        }
        bits = sign | ((113u - sh) << 23) | ((m & 0x3ffu) << 13);
    }
    return mpd__bits_f32(bits);
}

/* bfloat16: the top half of a binary32 (8 exponent bits, 7 mantissa
 * bits). Conventions, chosen to match x86 VCVTNEPS2BF16 (AVX512-BF16, the
 * conversion oneDNN's bf16 kernels use) bit for bit:
 *   float -> bf16: round to nearest, ties to even; a rounding past the
 *     largest finite value gives +-inf; f32 subnormals become +-0 (the
 *     instruction treats input denormals as zero), so no bf16 result is
 *     subnormal;
 *   NaN: quiet, the input's sign and the top 6 bits of its payload;
 *   bf16 -> float is exact (a shift). */
typedef uint16_t mpd_bf16;

static inline MPD_HD uint16_t mpd_f32_to_bf16(float f)
{
    uint32_t x = mpd__f32_bits(f);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN */
        return (uint16_t)((x >> 16) | 0x0040u);
    if (ax < 0x00800000u) /* zero or subnormal */
        return (uint16_t)((x >> 16) & 0x8000u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

static inline MPD_HD float mpd_bf16_to_f32(uint16_t h)
{
    return mpd__bits_f32((uint32_t)h << 16);
}

/* f rounded to the nearest bf16, as a float. */
static inline MPD_HD float mpd_bf16_round(float f)
{
    return mpd_bf16_to_f32(mpd_f32_to_bf16(f));
}

#endif
