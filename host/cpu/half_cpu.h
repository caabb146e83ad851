/* half_cpu.h - bulk float <-> half conversions for the CPU backend.
 *
 * Every path (x86 F16C, AArch64 NEON, scalar) gives exactly the bits of the
 * scalar mpd_f32_to_f16 / mpd_f16_to_f32 in half.h, for every input. The
 * fast path is chosen at run time (x86: CPUID via __builtin_cpu_supports;
 * the default build targets x86-64-v2, which lacks F16C). Thread-safe: no
 * state. src and dst must not overlap; n may be 0. */
#ifndef MPD_HALF_CPU_H
#define MPD_HALF_CPU_H

#include <stddef.h>

#include "../half.h"

void mpd__f32_to_f16_n(const float *src, mpd_half *dst, size_t n);
void mpd__f16_to_f32_n(const mpd_half *src, float *dst, size_t n);

/* bf16 (half.h's conversions, bit for bit). dst may be src for the
 * first. The others convert pixels [p0, p1) of a c x hw image between our
 * fp32 layout (CHW) and the bf16 one (HWC, what oneDNN's bf16 kernels read
 * and write), in blocks of 64 pixels whose c x 64 values stay in cache. */
void mpd__bf16_round_n(const float *src, float *dst, size_t n);
void mpd__f32_chw_to_bf16_hwc(const float *x, int c, int hw, mpd_bf16 *y, int p0, int p1);
void mpd__bf16_hwc_to_f32_chw(const mpd_bf16 *x, int c, int hw, float *y, int p0, int p1);

/* "f16c", "neon" or "scalar": the path the two functions above take. */
const char *mpd__half_impl(void);

/* The scalar loops, always available (tests compare the paths). */
void mpd__f32_to_f16_n_scalar(const float *src, mpd_half *dst, size_t n);
void mpd__f16_to_f32_n_scalar(const mpd_half *src, float *dst, size_t n);

#endif
