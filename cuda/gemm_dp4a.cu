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

/* Output (b, m, n) from its raw accumulator: the affine zero-point
 * correction, then acc * (s_w[m] * s_x) + bias rounded as on the CPU, the
 * activation, and the store in the output type (raw int32 for I32). */
static __device__ __forceinline__ void epilogue(const mpd_cu_i8_conv &p, int b, int m, int n,
                                                int32_t a, void *y, mpd_cu_type yt)
{
    const mpd_qparams xq = p.xq[b * p.xq_stride];
    if (p.affine) {
        /* sum (w - zw)(x - zx) = raw - zx sum w - zw sum x + K zw zx */
        const int32_t zw = *p.w_zero;
        a += -xq.zero * p.w_sum[m] + p.k * zw * xq.zero - zw * p.x_sum[(size_t)b * p.npix + n];
    }
    size_t at = ((size_t)b * p.m + m) * p.npix + n;
    if (yt == MPD_CU_I32) {
        ((int32_t *)y)[at] = a;
        return;
    }
    float v = mpd_q_epilogue(a, p.w_scale[m] * xq.scale, p.bias[m]);
    mpd_cu_store(y, yt, at, mpd_cu_act(v, p.act), p.yq);
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

    for (int i = 0; i < 4; i++) {
        int m = m0 + ty + 16 * i;
        for (int j = 0; j < 4; j++) {
            int n = n0 + tx + 16 * j;
            if (m < p.m && n < p.npix)
                epilogue(p, b, m, n, acc[i][j], y, yt);
        }
    }
}

/* The epilogue alone over accumulators another GEMM wrote (cuBLAS's int8
 * GEMM): acc[b] is m rows of ldc int32. One thread per output value. */
static __global__ void epilogue_kernel(mpd_cu_i8_conv p, const int32_t *acc, int ldc, size_t total,
                                       void *y, mpd_cu_type yt)
{
    MPD_CU_FOR(i, total)
    {
        int n = (int)(i % (size_t)p.npix);
        size_t t = i / (size_t)p.npix;
        int m = (int)(t % (size_t)p.m), b = (int)(t / (size_t)p.m);
        epilogue(p, b, m, n, acc[((size_t)b * p.m + m) * ldc + n], y, yt);
    }
}

extern "C" int mpd_cu_i8_epilogue(const mpd_cu_i8_conv *p, const int32_t *acc, int ldc, int batch,
                                  void *y, mpd_cu_type ytype, mpd_cu_stream s)
{
    size_t total = (size_t)batch * p->m * p->npix;
    epilogue_kernel<<<mpd_cu_blocks(total), MPD_CU_THREADS, 0, (cudaStream_t)s>>>(*p, acc, ldc,
                                                                                  total, y, ytype);
    return mpd_cu_launched();
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
