/* quant.h - quantization arithmetic shared by every backend, written once.
 * Plain inline functions of floats and integers, marked MPD_HD so the CUDA
 * backend compiles the very same code for the device: CPU and GPU then
 * agree bit for bit on quantized values and int32 accumulators.
 *
 * Both schemes use the symmetric integer range [-127, 127] (255 levels):
 * the int8 GEMM kernels rely on -128 never occurring.
 *   symmetric: real = scale * q                 (zero = 0)
 *   affine:    real = scale * (q - zero)        (the paper's eq. 1-5)   */
#ifndef MPD_QUANT_H
#define MPD_QUANT_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define MPD_HD __host__ __device__
#else
#define MPD_HD
#endif

#define MPD_QMIN (-127)
#define MPD_QMAX 127

typedef struct {
    float scale;  /* > 0 */
    int32_t zero; /* 0 for symmetric */
} mpd_qparams;

/* Round to nearest, ties to even (the default FP rounding mode; on the GPU
 * __float2int_rn). */
static inline MPD_HD int32_t mpd_q_round(float x)
{
#ifdef __CUDA_ARCH__
    return __float2int_rn(x);
#else
    return (int32_t)lrintf(x);
#endif
}

static inline MPD_HD int32_t mpd_q_clamp(int32_t q)
{
    return q < MPD_QMIN ? MPD_QMIN : q > MPD_QMAX ? MPD_QMAX : q;
}

/* Symmetric parameters for values in [-absmax, absmax]. */
static inline MPD_HD mpd_qparams mpd_q_symmetric(float absmax)
{
    mpd_qparams p;
    p.scale = absmax > 0 ? absmax / (float)MPD_QMAX : 1.f;
    p.zero = 0;
    return p;
}

/* Affine parameters (paper eq. 1-2) for values in [min, max]. The range is
 * widened to include 0 so that zero - convolution padding - is exactly
 * representable: dequantize(zero) == 0. */
static inline MPD_HD mpd_qparams mpd_q_affine(float min, float max)
{
    mpd_qparams p;
    if (min > 0)
        min = 0;
    if (max < 0)
        max = 0;
    if (!(max > min)) {
        p.scale = 1.f;
        p.zero = 0;
        return p;
    }
    p.scale = (max - min) / (float)(MPD_QMAX - MPD_QMIN);
    p.zero = mpd_q_clamp(mpd_q_round((float)MPD_QMIN - min / p.scale));
    return p;
}

/* eq. 3-4: clamp(round(x / s) + z). Computed as x * (1/s) by callers that
 * pass inv_scale, so every backend multiplies by the same float. */
static inline MPD_HD int8_t mpd_q_quantize(float x, float inv_scale, int32_t zero)
{
    return (int8_t)mpd_q_clamp(mpd_q_round(x * inv_scale) + zero);
}

/* The same value as mpd_q_quantize(x, inv_scale, zero) for every finite x,
 * written so that a loop of it vectorises: clamping before rounding gives
 * the same integer (the clamp bounds, shifted by the zero point, are
 * integers), and adding and subtracting 1.5 * 2^23 rounds to nearest-even
 * for |v| <= 2^22. +-inf clamp to the range's ends and NaN to its lowest
 * code (where lrintf's result is undefined). */
static inline MPD_HD int8_t mpd_q_quantize_fast(float x, float inv_scale, int32_t zero)
{
    float v = x * inv_scale;
    const float lo = (float)(MPD_QMIN - zero), hi = (float)(MPD_QMAX - zero);
    v = v > lo ? v : lo;
    v = v < hi ? v : hi;
    v = (v + 12582912.f) - 12582912.f;
    return (int8_t)((int32_t)v + zero);
}

/* eq. 5 */
static inline MPD_HD float mpd_q_dequantize(int32_t q, mpd_qparams p)
{
    return p.scale * (float)(q - p.zero);
}

/* Leaky ReLU as darknet computes it (slope 0.1), written as a max so it
 * vectorises; linear passes through. */
static inline MPD_HD float mpd_q_leaky(float v)
{
    float s = .1f * v;
    return v > s ? v : s;
}

/* The int8 convolution epilogue for one output value:
 *   acc: sum of q_w * q_x over the window (int32), already corrected for
 *        zero points (affine) so it equals sum (q_w - z_w)(q_x - z_x);
 *   scale: s_w[channel] * s_x;  bias: the folded fp32 bias.
 * Returns the real-valued pre-activation. */
static inline MPD_HD float mpd_q_epilogue(int32_t acc, float scale, float bias)
{
#ifdef __CUDA_ARCH__
    /* Rounded twice as on the CPU: nvcc would otherwise fuse the two into
     * one FMA and differ in the last bit. */
    return __fadd_rn(__fmul_rn((float)acc, scale), bias);
#else
    return (float)acc * scale + bias;
#endif
}

/* Zero-point correction of a raw int8 dot product (affine scheme):
 * sum (w - zw)(x - zx) = sum w x - zx sum w - zw sum x + K zw zx. */
static inline MPD_HD int32_t mpd_q_affine_correct(int32_t raw, int32_t sum_w, int32_t sum_x,
                                                  int32_t zw, int32_t zx, int32_t k)
{
    return raw - zx * sum_w - zw * sum_x + k * zw * zx;
}

/* Four int8 products packed little-endian in two 32-bit words, added to
 * acc: what the GPU's __dp4a computes (sm_61 and later), written out for
 * the plain int8 kernel of older GPUs (the original Jetson Nano, sm_53). */
static inline MPD_HD int32_t mpd_q_dot4(uint32_t a, uint32_t b, int32_t acc)
{
    for (int j = 0; j < 4; j++)
        acc += (int32_t)(int8_t)(uint8_t)(a >> (8 * j)) * (int32_t)(int8_t)(uint8_t)(b >> (8 * j));
    return acc;
}

#endif
