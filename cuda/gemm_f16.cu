/* gemm_f16.cu - the fp16 GEMM for GPUs without fp16 tensor cores (below
 * sm_70, e.g. the original Jetson Nano), where cuBLAS's half GEMM gains
 * nothing: operands are read from memory as half2 pairs (half the traffic
 * of fp32) and multiplied in fp32, 4 x 4 outputs per thread over 64 x 64
 * tiles. Same contract as the cuBLAS path: fp32 accumulators out. */
#include <cuda_fp16.h>

#include "kernels_util.cuh"

#define BM 64
#define BN 64
#define BK 16

static __device__ __forceinline__ float h2f(const mpd_half *p, size_t i)
{
    return __half2float(__ushort_as_half(p[i]));
}

/* Two consecutive halves of a row at [i], [i + 1]: one half2 load when
 * both exist and the pair is 4-byte aligned, else one by one (zero past the
 * end). */
static __device__ __forceinline__ float2 pair(const mpd_half *p, size_t i, int have2, int have1)
{
    if (have2 && ((uintptr_t)(p + i) & 3u) == 0)
        return __half22float2(*(const __half2 *)(p + i));
    float2 v;
    v.x = have1 ? h2f(p, i) : 0.f;
    v.y = have2 ? h2f(p, i + 1) : 0.f;
    return v;
}

static __global__ void __launch_bounds__(256)
    gemm_f16_kernel(const mpd_half *a, const mpd_half *bcol, float *c, int m, int n, int k)
{
    __shared__ float As[BK][BM + 1];
    __shared__ float Bs[BK][BN];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN, b = blockIdx.z;
    const mpd_half *B = bcol + (size_t)b * k * n;
    float acc[4][4] = {{0.f}};

    for (int k0 = 0; k0 < k; k0 += BK) {
        for (int idx = tid; idx < BM * BK / 2; idx += 256) {
            /* A: row r, taps kk, kk + 1 */
            int r = idx / (BK / 2), kk = 2 * (idx % (BK / 2));
            int mm = m0 + r, ka = k0 + kk;
            float2 v = make_float2(0.f, 0.f);
            if (mm < m)
                v = pair(a, (size_t)mm * k + ka, ka + 1 < k, ka < k);
            As[kk][r] = v.x;
            As[kk + 1][r] = v.y;
            /* B: tap row kr, pixels nn, nn + 1 */
            int kr = idx / (BN / 2), nn = 2 * (idx % (BN / 2));
            int kb = k0 + kr, np = n0 + nn;
            float2 w = make_float2(0.f, 0.f);
            if (kb < k)
                w = pair(B, (size_t)kb * n + np, np + 1 < n, np < n);
            Bs[kr][nn] = w.x;
            Bs[kr][nn + 1] = w.y;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; kk++) {
            float av[4], bv[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                av[i] = As[kk][ty + 16 * i];
                bv[i] = Bs[kk][tx + 16 * i];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }
    float *C = c + (size_t)b * m * n;
    for (int i = 0; i < 4; i++) {
        int mm = m0 + ty + 16 * i;
        for (int j = 0; j < 4; j++) {
            int nn = n0 + tx + 16 * j;
            if (mm < m && nn < n)
                C[(size_t)mm * n + nn] = acc[i][j];
        }
    }
}

extern "C" int mpd_cu_gemm_f16(const mpd_half *a, const mpd_half *bcol, float *c, int m, int n,
                               int k, int batch, mpd_cu_stream s)
{
    dim3 grid((unsigned)((n + BN - 1) / BN), (unsigned)((m + BM - 1) / BM), (unsigned)batch);
    gemm_f16_kernel<<<grid, 256, 0, (cudaStream_t)s>>>(a, bcol, c, m, n, k);
    return mpd_cu_launched();
}
