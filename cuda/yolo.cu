/* yolo.cu - the YOLO layer's activations, as mpd__yolo_f32: each image is
 * nmask anchor blocks of classes + 5 planes (x, y, w, h, objectness,
 * classes); logistic on every plane but w and h, which are copied raw. One
 * thread per value. */
#include "kernels_util.cuh"

static __global__ void yolo_kernel(const float *x, int classes, size_t plane, size_t total,
                                   float *y)
{
    const size_t per_anchor = (size_t)classes + 5;
    MPD_CU_FOR(i, total)
    {
        /* Plane index within its anchor block; images and anchor blocks
         * are both whole numbers of blocks, so no image index is needed. */
        size_t p = (i / plane) % per_anchor;
        float v = x[i];
        y[i] = p == 2 || p == 3 ? v : mpd_cu_act(v, MPD_CU_LOGISTIC);
    }
}

extern "C" int mpd_cu_yolo(const float *x, int nmask, int classes, int plane, int batch, float *y,
                           mpd_cu_stream s)
{
    size_t total = (size_t)batch * nmask * (classes + 5) * plane;
    yolo_kernel<<<mpd_cu_blocks(total), MPD_CU_THREADS, 0, (cudaStream_t)s>>>(
        x, classes, (size_t)plane, total, y);
    return mpd_cu_launched();
}
