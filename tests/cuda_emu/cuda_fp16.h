/* cuda_fp16.h (emulation) - the half type, conversions and half2
 * arithmetic cuda/gemm_f16.cu uses. Conversions go through host/half.h
 * (IEEE round to nearest even, as the GPU's). Arithmetic is rounded as the
 * hardware rounds it: each lane of __hmul2, __hadd2 and __hfma2 is the
 * exact result rounded once to half, to nearest even, subnormals kept and
 * overflow to infinity (see emu_half_round). Only intrinsics that CUDA
 * 10.2's cuda_fp16.h has are provided, so a kernel that builds here also
 * builds for the Jetson Nano. */
#ifndef MPD_EMU_CUDA_FP16_H
#define MPD_EMU_CUDA_FP16_H

#include <math.h>

#include "../../host/half.h"
#include "cuda_runtime.h"

struct __half {
    uint16_t bits;
};
struct __half2 {
    __half x, y;
};
static inline __half __ushort_as_half(uint16_t b)
{
    __half h = {b};
    return h;
}
static inline float __half2float(__half h)
{
    return mpd_f16_to_f32(h.bits);
}
static inline __half __float2half_rn(float f)
{
    __half h = {mpd_f32_to_f16(f)};
    return h;
}
static inline float2 __half22float2(__half2 h)
{
    return make_float2(mpd_f16_to_f32(h.x.bits), mpd_f16_to_f32(h.y.bits));
}
static inline float __low2float(__half2 h)
{
    return mpd_f16_to_f32(h.x.bits);
}
static inline float __high2float(__half2 h)
{
    return mpd_f16_to_f32(h.y.bits);
}
static inline __half2 __halves2half2(__half lo, __half hi)
{
    __half2 h = {lo, hi};
    return h;
}
static inline __half2 __float2half2_rn(float f)
{
    return __halves2half2(__float2half_rn(f), __float2half_rn(f));
}
static inline __half2 __floats2half2_rn(float lo, float hi)
{
    return __halves2half2(__float2half_rn(lo), __float2half_rn(hi));
}

/* The exact value s + e (s = fl(s + e) in double, e its rounding error,
 * both from emu_two_sum) rounded once to half, to nearest even.
 *
 * Why the error term: a product of two halves is exact in double (22
 * significant bits), but product + addend can need up to about 70 bits and
 * is rounded to double's 53 first. Rounding that double again to half is
 * then wrong in one case only: when the double rounding landed exactly on
 * a midpoint between two halves (the exact value lying just off it), and
 * ties-to-even then picks the side away from the exact value. e says
 * which side the exact value is on, and breaks that false tie. Every
 * other case rounds the same from s as from s + e, because a double
 * rounding error is far below half a half-ulp. (For half operands the
 * false tie needs a product of 2^29 or more, whose sum overflows half
 * anyway, so the correction is a guarantee rather than a fix seen.) */
static inline __half emu_half_round(double s, double e)
{
    if (s != s)
        return __ushort_as_half(0x7e00u);
    double a = fabs(s);
    /* The spacing of halves at |s|: 2^(exponent - 10), at least 2^-24
     * (the subnormal spacing). */
    int ex;
    frexp(a, &ex); /* a = f * 2^ex, f in [0.5, 1) */
    int q = ex - 11 < -24 ? -24 : ex - 11;
    double scaled = ldexp(s, -q), r = nearbyint(scaled); /* ties to even */
    if (fabs(scaled - r) == 0.5 && e != 0)               /* a false tie: go e's way */
        r = e > 0 ? ceil(scaled) : floor(scaled);
    double v = ldexp(r, q);
    if (fabs(v) > 65504.0)
        return __ushort_as_half(s < 0 ? 0xfc00u : 0x7c00u);
    /* v is a half value (or +-0): the float conversion is exact. */
    return __float2half_rn(v == 0 ? (float)copysign(0.0, s) : (float)v);
}

/* s = fl(a + b) and e = the exact a + b - s (Knuth's two-sum). */
static inline double emu_two_sum(double a, double b, double *e)
{
    double s = a + b, bb = s - a;
    *e = (a - (s - bb)) + (b - bb);
    return s;
}

/* a * b + c rounded once, as the hardware's fma.rn.f16. */
static inline __half emu_hfma(__half a, __half b, __half c)
{
    double e, s = emu_two_sum((double)__half2float(a) * __half2float(b), __half2float(c), &e);
    return emu_half_round(s, e);
}
static inline __half2 __hfma2(__half2 a, __half2 b, __half2 c)
{
    return __halves2half2(emu_hfma(a.x, b.x, c.x), emu_hfma(a.y, b.y, c.y));
}
static inline __half2 __hmul2(__half2 a, __half2 b)
{
    /* Exact in double, so one rounding. */
    return __halves2half2(emu_half_round((double)__half2float(a.x) * __half2float(b.x), 0),
                          emu_half_round((double)__half2float(a.y) * __half2float(b.y), 0));
}
static inline __half2 __hadd2(__half2 a, __half2 b)
{
    /* Two halves add exactly in double (their exponents differ by < 40). */
    return __halves2half2(emu_half_round((double)__half2float(a.x) + __half2float(b.x), 0),
                          emu_half_round((double)__half2float(a.y) + __half2float(b.y), 0));
}

/* Emulation only: the half2 GEMM takes its half-arithmetic path (as on
 * sm_53, sm_62, sm_72, sm_87) when mpd_emu_half_arith() is nonzero, its
 * fp32-arithmetic path (every other architecture) when zero; see
 * cuda/gemm_f16.cu and mpd_emu_set_half_arith in cuda_runtime_api.h. */
#define MPD_EMU_HALF_ARITH 1

#endif
