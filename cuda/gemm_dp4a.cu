/* gemm_dp4a.cu - the int8 convolution's GEMM with its fused epilogue.
 *
 * Both operands keep the taps of one output value contiguous (weights
 * m x kp, im2row pixels npix x kp, kp a multiple of 4), so every 32-bit word
 * holds four taps and one __dp4a multiplies and adds all four into an int32
 * accumulator. A block computes a 64 x 64 tile (filters x pixels) with 256
 * threads of 4 x 4 accumulators, staging 32 taps of both operands at a time
 * in shared memory. The accumulators are exact, so the result does not
 * depend on the order of the sum and equals the CPU backend's bit for bit.
 *
 * The plain kernel (template DP4A = false, or any build for an architecture
 * below sm_61 such as the original Jetson Nano's sm_53) computes the same
 * four products with byte extraction: mpd_q_dot4 of host/quant.h. */
#include "kernels_util.cuh"

#define BM 64 /* filters per block */
#define BN 64 /* pixels per block */
#define BKW 8 /* 32-bit words (4 taps each) staged per step */

template <bool DP4A>
static __device__ __forceinline__ int32_t dot4(uint32_t a, uint32_t b, int32_t acc)
{
    return DP4A ? mpd_cu_dot4(a, b, acc) : mpd_q_dot4(a, b, acc);
}

template <bool DP4A>
static __global__ void __launch_bounds__(256)
    gemm_i8_kernel(mpd_cu_i8_conv p, const int8_t *row, void *y, mpd_cu_type yt)
{
    /* +1 word per row: the loads write a column of 8 words per row, which
     * would otherwise fall in one bank. */
    __shared__ uint32_t As[BKW][BM + 1];
    __shared__ uint32_t Bs[BKW][BN + 1];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN, b = blockIdx.z;
    const int kpw = p.kp / 4;
    const uint32_t *A = (const uint32_t *)p.w;
    const uint32_t *B = (const uint32_t *)(row + (size_t)b * p.npix * p.kp);
    int32_t acc[4][4] = {{0}};

    for (int k0 = 0; k0 < kpw; k0 += BKW) {
        for (int idx = tid; idx < BM * BKW; idx += 256) {
            int r = idx / BKW, wd = idx % BKW, k = k0 + wd;
            int m = m0 + r, n = n0 + r;
            As[wd][r] = (m < p.m && k < kpw) ? A[(size_t)m * kpw + k] : 0u;
            Bs[wd][r] = (n < p.npix && k < kpw) ? B[(size_t)n * kpw + k] : 0u;
        }
        __syncthreads();
#pragma unroll
        for (int wd = 0; wd < BKW; wd++) {
            uint32_t a[4], bb[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                a[i] = As[wd][ty + 16 * i];
                bb[i] = Bs[wd][tx + 16 * i];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[i][j] = dot4<DP4A>(a[i], bb[j], acc[i][j]);
        }
        __syncthreads();
    }

    const size_t img = (size_t)p.m * p.npix;
    for (int i = 0; i < 4; i++) {
        int m = m0 + ty + 16 * i;
        if (m >= p.m)
            continue;
        float scale = 0.f, bias = 0.f;
        int32_t corr = 0;
        if (yt != MPD_CU_I32) {
            scale = p.w_scale[m] * p.xq[b * p.xq_stride].scale;
            bias = p.bias[m];
        }
        if (p.affine) {
            /* sum (w - zw)(x - zx) = raw - zx sum w - zw sum x + K zw zx */
            const int32_t zx = p.xq[b * p.xq_stride].zero, zw = *p.w_zero;
            corr = -zx * p.w_sum[m] + p.k * zw * zx;
        }
        for (int j = 0; j < 4; j++) {
            int n = n0 + tx + 16 * j;
            if (n >= p.npix)
                continue;
            int32_t a = acc[i][j];
            if (p.affine)
                a += corr - *p.w_zero * p.x_sum[(size_t)b * p.npix + n];
            size_t at = (size_t)b * img + (size_t)m * p.npix + n;
            if (yt == MPD_CU_I32)
                ((int32_t *)y)[at] = a;
            else
                mpd_cu_store(y, yt, at, mpd_cu_act(mpd_q_epilogue(a, scale, bias), p.act), p.yq);
        }
    }
}

extern "C" int mpd_cu_gemm_i8(const mpd_cu_i8_conv *p, const int8_t *row, int batch, void *y,
                              mpd_cu_type ytype, int use_dp4a, mpd_cu_stream s)
{
    dim3 grid((unsigned)((p->npix + BN - 1) / BN), (unsigned)((p->m + BM - 1) / BM),
              (unsigned)batch);
    if (use_dp4a)
        gemm_i8_kernel<true><<<grid, 256, 0, (cudaStream_t)s>>>(*p, row, y, ytype);
    else
        gemm_i8_kernel<false><<<grid, 256, 0, (cudaStream_t)s>>>(*p, row, y, ytype);
    return mpd_cu_launched();
}
