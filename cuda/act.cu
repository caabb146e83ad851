/* act.cu - element-wise activations: the bias + activation epilogue of the
 * fp32 / fp16 convolutions, and the shortcut (residual) layer. One thread
 * per value; mpd_cu_act computes each activation as the CPU backend does. */
#include "kernels_util.cuh"

/* y[i] = act(acc[i] + bias[o]), o the channel of value i. y may be acc
 * (fp32): each thread reads its value before writing it. */
static __global__ void bias_act_kernel(const float *acc, const float *bias, int m, int npix,
                                       int act, size_t total, void *y, mpd_cu_type yt)
{
    MPD_CU_FOR(i, total)
    {
        int o = (int)((i / (size_t)npix) % (size_t)m);
        mpd_cu_store(y, yt, i, mpd_cu_act(acc[i] + bias[o], act), NULL);
    }
}

extern "C" int mpd_cu_bias_act(const float *acc, const float *bias, int m, int npix, int batch,
                               int act, void *y, mpd_cu_type ytype, mpd_cu_stream s)
{
    size_t total = (size_t)batch * m * npix;
    bias_act_kernel<<<mpd_cu_blocks(total), MPD_CU_THREADS, 0, (cudaStream_t)s>>>(
        acc, bias, m, npix, act, total, y, ytype);
    return mpd_cu_launched();
}

/* y[i] = act(x[i] + from[i]) over all images at once (they are contiguous):
 * the sum, then the activation, as mpd__shortcut_f32 + mpd__activate_f32
 * (which leaves linear values untouched, as mpd_cu_act does). */
static __global__ void shortcut_kernel(const float *x, const float *from, int act, size_t total,
                                       float *y)
{
    MPD_CU_FOR(i, total)
    {
        y[i] = mpd_cu_act(x[i] + from[i], act);
    }
}

extern "C" int mpd_cu_shortcut(const float *x, const float *from, size_t n, int batch, int act,
                               float *y, mpd_cu_stream s)
{
    size_t total = n * (size_t)batch;
    shortcut_kernel<<<mpd_cu_blocks(total), MPD_CU_THREADS, 0, (cudaStream_t)s>>>(x, from, act,
                                                                                  total, y);
    return mpd_cu_launched();
}
