/* quant.cu - quantization on the device: ranges, parameters, activation
 * quantize / convert, and the plan-time quantization of weights from the
 * fp32 copy already on the device. The arithmetic is host/quant.h's, the
 * same functions the CPU backend runs, so both produce the same int8
 * values from the same floats. */
#include <float.h>

#include "kernels_util.cuh"

/* Order-preserving encoding of floats as unsigned integers. */
static __device__ __forceinline__ uint32_t enc(float f)
{
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

static __device__ __forceinline__ float dec(uint32_t u)
{
    return __uint_as_float((u & 0x80000000u) ? u & 0x7fffffffu : ~u);
}

static __global__ void range_init(uint32_t *mm, int batch)
{
    for (int b = threadIdx.x; b < batch; b += blockDim.x) {
        mm[2 * b] = 0xffffffffu; /* min so far: above every encoding */
        mm[2 * b + 1] = 0;
    }
}

/* Block-wide min and max over part of image blockIdx.y, then one atomic
 * per block. */
static __global__ void range_kernel(const void *x, mpd_cu_type t, size_t n, uint32_t *mm)
{
    __shared__ float smin[MPD_CU_THREADS], smax[MPD_CU_THREADS];
    float lo = FLT_MAX, hi = -FLT_MAX;
    const size_t base = (size_t)blockIdx.y * n;
    mm += 2 * blockIdx.y;
    MPD_CU_FOR(i, n)
    {
        float v = mpd_cu_load(x, t, base + i, NULL);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    smin[threadIdx.x] = lo;
    smax[threadIdx.x] = hi;
    __syncthreads();
    for (int w = MPD_CU_THREADS / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w) {
            smin[threadIdx.x] = fminf(smin[threadIdx.x], smin[threadIdx.x + w]);
            smax[threadIdx.x] = fmaxf(smax[threadIdx.x], smax[threadIdx.x + w]);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        atomicMin(&mm[0], enc(smin[0]));
        atomicMax(&mm[1], enc(smax[0]));
    }
}

static int range(const void *x, mpd_cu_type t, size_t n, int batch, uint32_t *mm, cudaStream_t s)
{
    range_init<<<1, MPD_CU_THREADS, 0, s>>>(mm, batch);
    unsigned blocks = mpd_cu_blocks(n);
    /* Enough blocks per image to fill the GPU; each then loops. */
    dim3 grid(blocks < 256 ? blocks : 256, (unsigned)batch);
    range_kernel<<<grid, MPD_CU_THREADS, 0, s>>>(x, t, n, mm);
    return mpd_cu_launched();
}

extern "C" int mpd_cu_range(const void *x, mpd_cu_type xtype, size_t n, int batch, uint32_t *minmax,
                            mpd_cu_stream s)
{
    return range(x, xtype, n, batch, minmax, (cudaStream_t)s);
}

static __device__ mpd_qparams params_of(const uint32_t *mm, int affine)
{
    float mn = dec(mm[0]), mx = dec(mm[1]);
    return affine ? mpd_q_affine(mn, mx) : mpd_q_symmetric(-mn > mx ? -mn : mx);
}

static __global__ void qparams_kernel(const uint32_t *mm, int affine, int batch, mpd_qparams *q)
{
    for (int b = threadIdx.x; b < batch; b += blockDim.x)
        q[b] = params_of(mm + 2 * b, affine);
}

extern "C" int mpd_cu_qparams(const uint32_t *minmax, int affine, int batch, mpd_qparams *q,
                              mpd_cu_stream s)
{
    qparams_kernel<<<1, 64, 0, (cudaStream_t)s>>>(minmax, affine, batch, q);
    return mpd_cu_launched();
}

/* Grid y = image. */
static __global__ void quantize_kernel(const void *x, mpd_cu_type t, size_t n, const mpd_qparams *q,
                                       int q_stride, int8_t *y)
{
    const size_t base = (size_t)blockIdx.y * n;
    const mpd_qparams p = q[blockIdx.y * q_stride];
    const float inv = 1.f / p.scale;
    MPD_CU_FOR(i, n)
    y[base + i] = mpd_q_quantize(mpd_cu_load(x, t, base + i, NULL), inv, p.zero);
}

extern "C" int mpd_cu_quantize(const void *x, mpd_cu_type xtype, size_t n, int batch,
                               const mpd_qparams *q, int q_stride, int8_t *y, mpd_cu_stream s)
{
    dim3 grid(mpd_cu_blocks(n) < 4096 ? mpd_cu_blocks(n) : 4096, (unsigned)batch);
    quantize_kernel<<<grid, MPD_CU_THREADS, 0, (cudaStream_t)s>>>(x, xtype, n, q, q_stride, y);
    return mpd_cu_launched();
}

static __global__ void convert_kernel(const void *x, mpd_cu_type xt, const mpd_qparams *q, size_t n,
                                      size_t xs, void *y, mpd_cu_type yt, size_t ys, size_t total)
{
    MPD_CU_FOR(i, total)
    {
        size_t b = i / n, j = i % n;
        mpd_cu_store(y, yt, b * ys + j, mpd_cu_load(x, xt, b * xs + j, q), q);
    }
}

extern "C" int mpd_cu_convert(const void *x, mpd_cu_type xtype, const mpd_qparams *q, size_t n,
                              size_t x_stride, void *y, mpd_cu_type ytype, size_t y_stride,
                              int batch, mpd_cu_stream s)
{
    size_t total = n * (size_t)batch;
    convert_kernel<<<mpd_cu_blocks(total), MPD_CU_THREADS, 0, (cudaStream_t)s>>>(
        x, xtype, q, n, x_stride, y, ytype, y_stride, total);
    return mpd_cu_launched();
}

/* One block per weight row: its range (symmetric), its int8 values and
 * their sum. */
static __global__ void quantize_weights_kernel(const float *w, int k, int kp,
                                               const uint32_t *tensor_range, int8_t *wq,
                                               float *scale, int32_t *sum, int32_t *w_zero)
{
    __shared__ float sabs[MPD_CU_THREADS];
    __shared__ int32_t ssum[MPD_CU_THREADS];
    __shared__ mpd_qparams p;
    const int o = blockIdx.x, tid = threadIdx.x;
    const float *src = w + (size_t)o * k;
    if (!tensor_range) {
        float a = 0.f;
        for (int j = tid; j < k; j += blockDim.x)
            a = fabsf(src[j]) > a ? fabsf(src[j]) : a;
        sabs[tid] = a;
        __syncthreads();
        for (int s = MPD_CU_THREADS / 2; s > 0; s /= 2) {
            if (tid < s)
                sabs[tid] = fmaxf(sabs[tid], sabs[tid + s]);
            __syncthreads();
        }
    }
    if (tid == 0) {
        p = tensor_range ? params_of(tensor_range, 1) : mpd_q_symmetric(sabs[0]);
        scale[o] = p.scale;
        if (o == 0)
            *w_zero = p.zero;
    }
    __syncthreads();
    const float inv = 1.f / p.scale;
    int32_t part = 0;
    int8_t *dst = wq + (size_t)o * kp;
    for (int j = tid; j < kp; j += blockDim.x) {
        int8_t v = j < k ? mpd_q_quantize(src[j], inv, p.zero) : (int8_t)0;
        dst[j] = v;
        part += v;
    }
    ssum[tid] = part;
    __syncthreads();
    for (int s = MPD_CU_THREADS / 2; s > 0; s /= 2) {
        if (tid < s)
            ssum[tid] += ssum[tid + s];
        __syncthreads();
    }
    if (tid == 0)
        sum[o] = ssum[0];
}

extern "C" int mpd_cu_quantize_weights(const float *w, int m, int k, int kp, int affine, int8_t *wq,
                                       float *scale, int32_t *sum, int32_t *w_zero,
                                       uint32_t *scratch, mpd_cu_stream s)
{
    cudaStream_t st = (cudaStream_t)s;
    if (affine) {
        /* The paper's scheme: one range for the whole tensor. */
        int rc = range(w, MPD_CU_F32, (size_t)m * k, 1, scratch, st);
        if (rc)
            return rc;
    }
    quantize_weights_kernel<<<m, MPD_CU_THREADS, 0, st>>>(w, k, kp, affine ? scratch : NULL, wq,
                                                          scale, sum, w_zero);
    return mpd_cu_launched();
}

/* One thread per row, four bytes at a time (kp is a multiple of 4, and
 * entries past k are zero by construction, so whole words can be summed). */
static __global__ void row_sums_kernel(const int8_t *a, int rows, int k, int kp, int32_t *sum)
{
    const uint32_t ones = 0x01010101u;
    MPD_CU_FOR(r, (size_t)rows)
    {
        const uint32_t *row = (const uint32_t *)(a + r * kp);
        int32_t acc = 0;
        for (int wd = 0; wd < (k + 3) / 4; wd++) {
            uint32_t v = row[wd];
            int rem = k - wd * 4;
            if (rem < 4) /* taps past k: masked, whatever they hold */
                v &= (1u << (8 * rem)) - 1u;
            acc = mpd_cu_dot4(v, ones, acc);
        }
        sum[r] = acc;
    }
}

extern "C" int mpd_cu_row_sums_i8(const int8_t *a, int rows, int k, int kp, int32_t *sum,
                                  mpd_cu_stream s)
{
    row_sums_kernel<<<mpd_cu_blocks((size_t)rows), MPD_CU_THREADS, 0, (cudaStream_t)s>>>(a, rows, k,
                                                                                         kp, sum);
    return mpd_cu_launched();
}
