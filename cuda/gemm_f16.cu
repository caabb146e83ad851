/* gemm_f16.cu - the fp16 GEMM for GPUs without fp16 tensor cores (below
 * sm_70, e.g. the original Jetson Nano), where cuBLAS's half GEMM gains
 * nothing: operands are read from memory as half2 pairs (half the traffic
 * of fp32), 4 x 4 outputs per thread over 64 x 64 tiles of 16 taps. Same
 * contract as the cuBLAS path: fp32 accumulators out. The same kernel
 * also runs bf16 operands (below).
 *
 * Two arithmetics, chosen at compile time by the architecture (HALF_ARITH
 * below):
 *   half - where half2 arithmetic runs at twice the fp32 rate (sm_53 Nano,
 *     sm_62 TX2, sm_72 Xavier, sm_87 Orin): each 16-tap tile is one chunk,
 *     multiplied and summed with __hfma2 in two half lanes per output (even
 *     and odd taps, 8 products each), and each chunk's two lane sums are
 *     then added into the fp32 accumulator;
 *   fp32 - everywhere else (sm_60/61 run half arithmetic at 1/64 or 1/2
 *     rate, and sm_70+ default to cuBLAS's tensor cores anyway): products
 *     of the half operands (exact in fp32) accumulated with fmaf.
 *
 * Error of one output c = sum_i a_i b_i of K taps, S = sum_i |a_i b_i|
 * (the exact products of the half operands), gamma_j(r) = j r / (1 - j r):
 *   half: each __hfma2 lane rounds once (fma.rn.f16: the product is not
 *     rounded on its own), so a lane's 8-term chunk sum has relative error
 *     gamma_8(2^-11), plus at most 2^-25 absolute per fma where a partial
 *     sum is a half subnormal (below 2^-14; subnormals are kept, not
 *     flushed). The n = 2 ceil(K / 16) lane sums then go into fp32 with
 *     two additions per chunk: gamma_n(2^-24) of their magnitudes. In all:
 *       |err| <= (gamma_8(2^-11) + gamma_n(2^-24) (1 + gamma_8(2^-11))) S
 *                + (1 + gamma_8(2^-11)) (1 + gamma_n(2^-24)) K 2^-25,
 *     about (0.0039 + K 2^-27) S + K 2^-25; for K = 4608 (yolov3-tiny's
 *     largest, 512 x 3 x 3): 0.00396 S + 1.4e-4. That is within the looser
 *     textbook form for c = 16 products rounded separately and c - 1
 *     rounded additions, ((c + 1) 2^-11 + (K / c) 2^-24) S.
 *     Overflow: a lane's partial sum is at most (1 + gamma_8) times its
 *     8 |products| (plus the subnormal term); past 65504 (from 65520 on,
 *     after rounding) it becomes +-inf, the fp32 accumulator and the
 *     output with it, and NaN in later layers. yolov3-tiny's largest
 *     8-tap |product| sum on darknet's photos is far below that (the
 *     emulated test test_gemm_f16_within_bound prints it; its weights are
 *     below 2 in magnitude, activations below a few hundred);
 *   fp32: |err| <= gamma_K(2^-24) S.
 * tests/test_backend_parity.c checks both bounds output by output on the
 * emulated device, which rounds half arithmetic as the hardware does.
 *
 * bf16 (mpd_cu_gemm_bf16): the fp32-arithmetic tiles on bf16 operands, for
 * GPUs without bf16 tensor cores (below sm_80) and toolkits whose cuBLAS
 * has no bf16 (before CUDA 11). Operand pairs are read as one 32-bit word
 * and widened with host/half.h's mpd_bf16_to_f32 (a shift: no cuda_bf16.h,
 * any architecture). Never in half arithmetic: bf16 has none of its own
 * before sm_80. A product of two bf16 values (8 significant bits each) is
 * exact in fp32 unless it falls below fp32's normal range (2^-126; the
 * operands themselves are never subnormal, mpd_f32_to_bf16 flushes them,
 * and yolov3-tiny's products are nowhere near), so as for half operands
 *   |err| <= gamma_K(2^-24) S, S over the products of the bf16 operands.
 * cuBLAS's bf16 GEMM (sm_80 on) multiplies the same operands exactly; its
 * fp32 accumulation inside the tensor cores may truncate instead of
 * rounding, so gamma_K(2^-23) S there. test_gemm_bf16_within_bound checks
 * both paths output by output, on the emulated device and on a GPU. */
#include <cuda_fp16.h>

#include "kernels_util.cuh"

#define BM 64
#define BN 64
#define BK 16 /* taps per tile, and per half-arithmetic chunk */

/* 1 where the kernel sums chunks in half arithmetic (see the top). The
 * emulator (tests/cuda_emu/cuda_fp16.h) decides at run time, so that one
 * test build runs both paths. */
#if defined(MPD_EMU_HALF_ARITH)
#define HALF_ARITH() mpd_emu_half_arith()
#elif defined(__CUDA_ARCH__) &&                                                                    \
    (__CUDA_ARCH__ == 530 || __CUDA_ARCH__ == 620 || __CUDA_ARCH__ == 720 || __CUDA_ARCH__ == 870)
#define HALF_ARITH() 1
#else
#define HALF_ARITH() 0
#endif

static __device__ __forceinline__ float h2f(const mpd_half *p, size_t i)
{
    return __half2float(__ushort_as_half(p[i]));
}

/* Two consecutive halves of a row at [i], [i + 1]: one half2 load when
 * both exist and the pair is 4-byte aligned, else one by one (zero past the
 * end). */
static __device__ __forceinline__ __half2 hpair(const mpd_half *p, size_t i, int have2, int have1)
{
    if (have2 && ((uintptr_t)(p + i) & 3u) == 0)
        return *(const __half2 *)(p + i);
    return __halves2half2(__ushort_as_half(have1 ? p[i] : (mpd_half)0),
                          __ushort_as_half(have2 ? p[i + 1] : (mpd_half)0));
}

/* The operand types of the fp32-arithmetic tiles: OP_F16 half, OP_BF16
 * bfloat16, both 16-bit patterns. */
enum { OP_F16, OP_BF16 };

/* One 16-bit operand as float (exact in both cases). */
template <int OP> static __device__ __forceinline__ float op2f(const uint16_t *p, size_t i)
{
    return OP == OP_BF16 ? mpd_bf16_to_f32(p[i]) : h2f(p, i);
}

/* Two consecutive operands [i], [i + 1] as floats: one 32-bit load when
 * both exist and the pair is 4-byte aligned (element i in the low half:
 * little-endian, as half2), else one by one (zero past the end). */
template <int OP>
static __device__ __forceinline__ float2 pair(const uint16_t *p, size_t i, int have2, int have1)
{
    if (have2 && ((uintptr_t)(p + i) & 3u) == 0) {
        if (OP == OP_F16)
            return __half22float2(*(const __half2 *)(p + i));
        uint32_t w = *(const uint32_t *)(p + i);
        return make_float2(mpd_bf16_to_f32((uint16_t)(w & 0xffffu)),
                           mpd_bf16_to_f32((uint16_t)(w >> 16)));
    }
    float2 v;
    v.x = have1 ? op2f<OP>(p, i) : 0.f;
    v.y = have2 ? op2f<OP>(p, i + 1) : 0.f;
    return v;
}

/* acc[i][j] += row m0 + ty + 16 i of a times column n0 + tx + 16 j of B,
 * in fp32: products exact (half or bf16 operands), one rounding per fmaf. */
template <int OP>
static __device__ __forceinline__ void tiles_f32(const uint16_t *a, const uint16_t *B, int m0,
                                                 int n0, int m, int n, int k, float acc[4][4])
{
    __shared__ float As[BK][BM + 1];
    __shared__ float Bs[BK][BN];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    for (int k0 = 0; k0 < k; k0 += BK) {
        for (int idx = tid; idx < BM * BK / 2; idx += 256) {
            /* A: row r, taps kk, kk + 1 */
            int r = idx / (BK / 2), kk = 2 * (idx % (BK / 2));
            int mm = m0 + r, ka = k0 + kk;
            float2 v = make_float2(0.f, 0.f);
            if (mm < m)
                v = pair<OP>(a, (size_t)mm * k + ka, ka + 1 < k, ka < k);
            As[kk][r] = v.x;
            As[kk + 1][r] = v.y;
            /* B: tap row kr, pixels nn, nn + 1 */
            int kr = idx / (BN / 2), nn = 2 * (idx % (BN / 2));
            int kb = k0 + kr, np = n0 + nn;
            float2 w = make_float2(0.f, 0.f);
            if (kb < k)
                w = pair<OP>(B, (size_t)kb * n + np, np + 1 < n, np < n);
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
}

/* The same sums in half arithmetic, chunk by chunk: shared memory holds
 * tap pairs (2p, 2p + 1) as half2, one __hfma2 does both lanes' products
 * and sums, and each 16-tap chunk's lanes are added into acc in fp32. */
static __device__ __forceinline__ void tiles_half(const mpd_half *a, const mpd_half *B, int m0,
                                                  int n0, int m, int n, int k, float acc[4][4])
{
    __shared__ __half2 As2[BK / 2][BM + 1];
    __shared__ __half2 Bs2[BK / 2][BN];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const __half2 zero = __float2half2_rn(0.f);
    for (int k0 = 0; k0 < k; k0 += BK) {
        for (int idx = tid; idx < BM * BK / 2; idx += 256) {
            /* A: row r, taps kk, kk + 1: already a tap pair in memory. */
            int r = idx / (BK / 2), kk = 2 * (idx % (BK / 2));
            int mm = m0 + r, ka = k0 + kk;
            __half2 v = zero;
            if (mm < m)
                v = hpair(a, (size_t)mm * k + ka, ka + 1 < k, ka < k);
            As2[kk / 2][r] = v;
            /* B: tap row kr, pixels nn, nn + 1, each into the lane of its
             * tap's pair. */
            int kr = idx / (BN / 2), nn = 2 * (idx % (BN / 2));
            int kb = k0 + kr, np = n0 + nn;
            __half2 w = zero;
            if (kb < k)
                w = hpair(B, (size_t)kb * n + np, np + 1 < n, np < n);
            if (kr & 1) {
                Bs2[kr / 2][nn].y = w.x;
                Bs2[kr / 2][nn + 1].y = w.y;
            } else {
                Bs2[kr / 2][nn].x = w.x;
                Bs2[kr / 2][nn + 1].x = w.y;
            }
        }
        __syncthreads();
        __half2 part[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
                part[i][j] = zero;
#pragma unroll
        for (int p = 0; p < BK / 2; p++) {
            __half2 av[4], bv[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                av[i] = As2[p][ty + 16 * i];
                bv[i] = Bs2[p][tx + 16 * i];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    part[i][j] = __hfma2(av[i], bv[j], part[i][j]);
        }
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
                acc[i][j] += __low2float(part[i][j]) + __high2float(part[i][j]);
        __syncthreads();
    }
}

/* OP_F16: half arithmetic where HALF_ARITH(), else fp32; OP_BF16: fp32. */
template <int OP>
static __global__ void __launch_bounds__(256)
    gemm_16_kernel(const uint16_t *a, const uint16_t *bcol, float *c, int m, int n, int k)
{
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN, b = blockIdx.z;
    const uint16_t *B = bcol + (size_t)b * k * n;
    float acc[4][4] = {{0.f}};
    if (OP == OP_F16 && HALF_ARITH())
        tiles_half(a, B, m0, n0, m, n, k, acc);
    else
        tiles_f32<OP>(a, B, m0, n0, m, n, k, acc);
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
    gemm_16_kernel<OP_F16><<<grid, 256, 0, (cudaStream_t)s>>>(a, bcol, c, m, n, k);
    return mpd_cu_launched();
}

extern "C" int mpd_cu_gemm_bf16(const mpd_bf16 *a, const mpd_bf16 *bcol, float *c, int m, int n,
                                int k, int batch, mpd_cu_stream s)
{
    dim3 grid((unsigned)((n + BN - 1) / BN), (unsigned)((m + BM - 1) / BM), (unsigned)batch);
    gemm_16_kernel<OP_BF16><<<grid, 256, 0, (cudaStream_t)s>>>(a, bcol, c, m, n, k);
    return mpd_cu_launched();
}
