/* cuda_fp16.h (emulation) - the half type and conversions cuda/gemm_f16.cu
 * uses, through host/half.h's conversions (IEEE round to nearest even, as
 * the GPU's). */
#ifndef MPD_EMU_CUDA_FP16_H
#define MPD_EMU_CUDA_FP16_H

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
static inline float2 __half22float2(__half2 h)
{
    return make_float2(mpd_f16_to_f32(h.x.bits), mpd_f16_to_f32(h.y.bits));
}

#endif
