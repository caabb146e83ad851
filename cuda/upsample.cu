/* upsample.cu - nearest-neighbour upsampling of NCHW fp32 tensors, as
 * mpd__upsample_f32: output (i, j) of a plane copies input (i / stride,
 * j / stride). One thread per output value, so writes are contiguous. */
#include "kernels_util.cuh"

static __global__ void upsample_kernel(const float *x, int h, int w, int stride, size_t total,
                                       float *y)
{
    const int out_h = h * stride, out_w = w * stride;
    MPD_CU_FOR(i, total)
    {
        int j = (int)(i % (size_t)out_w);
        size_t t = i / (size_t)out_w;
        int r = (int)(t % (size_t)out_h);
        size_t plane = t / (size_t)out_h; /* image * c + channel */
        y[i] = x[(plane * h + r / stride) * w + j / stride];
    }
}

extern "C" int mpd_cu_upsample(const float *x, int c, int h, int w, int stride, int batch, float *y,
                               mpd_cu_stream s)
{
    size_t total = (size_t)batch * c * h * stride * w * stride;
    upsample_kernel<<<mpd_cu_blocks(total), MPD_CU_THREADS, 0, (cudaStream_t)s>>>(x, h, w, stride,
                                                                                  total, y);
    return mpd_cu_launched();
}
