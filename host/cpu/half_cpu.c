/* half_cpu.c - bulk float <-> half conversions: F16C on x86 when the CPU
 * has it, NEON on AArch64, else the scalar functions of half.h.
 *
 * The vector paths handle the tail (n % lanes) by staging it through a
 * small zero-padded buffer, so every element goes through the same
 * instruction and the fast path never mixes in scalar results. */
#include "half_cpu.h"

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define MPD_HALF_X86 1
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

void mpd__f32_to_f16_n_scalar(const float *src, mpd_half *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = mpd_f32_to_f16(src[i]);
}

void mpd__f16_to_f32_n_scalar(const mpd_half *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = mpd_f16_to_f32(src[i]);
}

/* The bf16 loops are integer arithmetic the compiler vectorises. */
/* half.h's mpd_f32_to_bf16 without its early returns: every case
 * computed and selected, so the loops below vectorise (the branches kept
 * them scalar: 14 % of a bf16_all pass in perf). The same bits for every
 * input (test_half compares the bulk forms over all patterns it makes). */
static inline mpd_bf16 to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    uint32_t ax = x & 0x7fffffffu;
    uint32_t r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
    r = ax < 0x00800000u ? (x >> 16) & 0x8000u : r; /* zero or subnormal */
    r = ax > 0x7f800000u ? (x >> 16) | 0x0040u : r; /* NaN */
    return (mpd_bf16)r;
}

void mpd__bf16_round_n(const float *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t b = (uint32_t)to_bf16(src[i]) << 16;
        memcpy(&dst[i], &b, sizeof(b));
    }
}

void mpd__f32_chw_to_bf16_hwc(const float *x, int c, int hw, mpd_bf16 *y, int p0, int p1)
{
    if (c == 1) { /* elementwise: one loop that vectorises */
        for (int i = p0; i < p1; i++)
            y[i] = to_bf16(x[i]);
        return;
    }
    if (c == 3) { /* the image: whole pixels */
        for (int i = p0; i < p1; i++) {
            y[3 * (size_t)i] = to_bf16(x[i]);
            y[3 * (size_t)i + 1] = to_bf16(x[hw + i]);
            y[3 * (size_t)i + 2] = to_bf16(x[2 * (size_t)hw + i]);
        }
        return;
    }
    for (int b0 = p0; b0 < p1; b0 += 64) {
        int b1 = b0 + 64 < p1 ? b0 + 64 : p1;
        for (int ch = 0; ch < c; ch++) {
            const float *s = x + (size_t)ch * hw;
            for (int i = b0; i < b1; i++)
                y[(size_t)i * c + ch] = to_bf16(s[i]);
        }
    }
}

void mpd__bf16_hwc_to_f32_chw(const mpd_bf16 *x, int c, int hw, float *y, int p0, int p1)
{
    for (int b0 = p0; b0 < p1; b0 += 64) {
        int b1 = b0 + 64 < p1 ? b0 + 64 : p1;
        for (int ch = 0; ch < c; ch++) {
            float *d = y + (size_t)ch * hw;
            for (int i = b0; i < b1; i++)
                d[i] = mpd_bf16_to_f32(x[(size_t)i * c + ch]);
        }
    }
}

#ifdef MPD_HALF_X86

/* Rounding is encoded in the instruction (imm8 = round to nearest even,
 * MXCSR.RC not consulted). The F16C conversions ignore MXCSR.FTZ/DAZ for
 * halves; f32 denormal inputs round to +-0 in half either way. */
__attribute__((target("f16c,avx"))) static void f32_to_f16_f16c(const float *src,
                                                                 mpd_half *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(src + i);
        _mm_storeu_si128((__m128i *)(void *)(dst + i),
                         _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    if (i < n) {
        float in[8] = {0};
        mpd_half out[8];
        memcpy(in, src + i, (n - i) * sizeof(float));
        _mm_storeu_si128((__m128i *)(void *)out,
                         _mm256_cvtps_ph(_mm256_loadu_ps(in), _MM_FROUND_TO_NEAREST_INT));
        memcpy(dst + i, out, (n - i) * sizeof(mpd_half));
    }
}

__attribute__((target("f16c,avx"))) static void f16_to_f32_f16c(const mpd_half *src,
                                                                 float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    if (i < n) {
        mpd_half in[8] = {0};
        float out[8];
        memcpy(in, src + i, (n - i) * sizeof(mpd_half));
        _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(void *)in)));
        memcpy(dst + i, out, (n - i) * sizeof(float));
    }
}

/* F16C and AVX (the 256-bit forms), with the OS saving the YMM state.
 * GCC's __builtin_cpu_supports("avx") checks XGETBV too; clang before 16
 * rejects the "f16c" feature string, so clang asks CPUID directly. */
#if defined(__clang__)
#include <cpuid.h>
static int have_f16c(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (!(c & bit_OSXSAVE) || !(c & bit_AVX) || !(c & bit_F16C))
        return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    return (lo & 6u) == 6u; /* XMM and YMM state enabled */
}
#else
static int have_f16c(void)
{
    return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
}
#endif

#elif defined(__aarch64__)

/* FCVT with the default FPCR (round to nearest, FZ/FZ16/DN clear) matches
 * half.h, NaN convention included. */
static void f32_to_f16_neon(const float *src, mpd_half *dst, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
    if (i < n) {
        float in[4] = {0};
        mpd_half out[4];
        memcpy(in, src + i, (n - i) * sizeof(float));
        vst1_u16(out, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(in))));
        memcpy(dst + i, out, (n - i) * sizeof(mpd_half));
    }
}

static void f16_to_f32_neon(const mpd_half *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
    if (i < n) {
        mpd_half in[4] = {0};
        float out[4];
        memcpy(in, src + i, (n - i) * sizeof(mpd_half));
        vst1q_f32(out, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(in))));
        memcpy(dst + i, out, (n - i) * sizeof(float));
    }
}

#endif

void mpd__f32_to_f16_n(const float *src, mpd_half *dst, size_t n)
{
#ifdef MPD_HALF_X86
    if (have_f16c()) {
        f32_to_f16_f16c(src, dst, n);
        return;
    }
#elif defined(__aarch64__)
    f32_to_f16_neon(src, dst, n);
    return;
#endif
    mpd__f32_to_f16_n_scalar(src, dst, n);
}

void mpd__f16_to_f32_n(const mpd_half *src, float *dst, size_t n)
{
#ifdef MPD_HALF_X86
    if (have_f16c()) {
        f16_to_f32_f16c(src, dst, n);
        return;
    }
#elif defined(__aarch64__)
    f16_to_f32_neon(src, dst, n);
    return;
#endif
    mpd__f16_to_f32_n_scalar(src, dst, n);
}

const char *mpd__half_impl(void)
{
#ifdef MPD_HALF_X86
    return have_f16c() ? "f16c" : "scalar";
#elif defined(__aarch64__)
    return "neon";
#else
    return "scalar";
#endif
}
