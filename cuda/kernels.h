/* kernels.h - the CUDA kernels' launch functions, one family per .cu file
 * (STYLE.md "Boundaries"). Plain C declarations: cuda_backend.c, compiled
 * by the host C compiler with -Werror, is the one caller.
 *
 * Conventions for every launcher:
 *   - all pointers are device pointers unless named *_host;
 *   - tensors are NCHW per image, images contiguous: image b of a tensor of
 *     per-image size n starts at b * n elements;
 *   - the launch is queued on stream and nothing waits for it;
 *   - the return value is 0 or a cudaError_t from the launch
 *     (cudaGetLastError), which the caller turns into MPD_EDEVICE;
 *   - no launcher allocates memory or synchronises, so a forward pass can
 *     be captured into a CUDA graph.
 *
 * Quantized activations are described by a device-resident mpd_qparams
 * (host/quant.h): computed at plan time when calibrated, or on the device
 * on every pass (affine; uncalibrated symmetric). Launchers read them there
 * so a pass never round-trips to the host. */
#ifndef MPD_CUDA_KERNELS_H
#define MPD_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "../host/half.h"
#include "../host/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque to C: cudaStream_t is a pointer to this. */
typedef struct CUstream_st *mpd_cu_stream;

/* Element types of device tensors. */
typedef enum {
    MPD_CU_F32 = 0,
    MPD_CU_F16 = 1,
    MPD_CU_I8 = 2,
    MPD_CU_I32 = 3,  /* raw accumulators, for the parity tests */
    MPD_CU_BF16 = 4, /* bfloat16 (host/half.h's conversions) */
} mpd_cu_type;

/* Activations, numbered as host/net.h's mpd_act. */
enum { MPD_CU_LINEAR = 0, MPD_CU_LEAKY = 1, MPD_CU_RELU = 2, MPD_CU_LOGISTIC = 3 };

/* ---- im2col.cu ----------------------------------------------------------
 * Convolution geometry of one layer. */
typedef struct {
    int c, h, w; /* input */
    int size, stride, pad;
    int out_h, out_w;
} mpd_cu_conv_geom;

/* fp32 / fp16 / bf16 column matrix of batch images: col[b] is K x N
 * row-major, K = c * size * size in darknet's [c][ky][kx] order,
 * N = out_h * out_w; taps outside the input are 0. x is fp32, fp16 or bf16
 * (xtype); col is fp32 (MPD_CU_F32), half (MPD_CU_F16) or bf16
 * (MPD_CU_BF16, each value rounded with mpd_f32_to_bf16). */
int mpd_cu_im2col(const void *x, mpd_cu_type xtype, const mpd_cu_conv_geom *g, int batch, void *col,
                  mpd_cu_type coltype, mpd_cu_stream s);

/* int8 "im2row": row[b] is N x kp int8, one output pixel per row, taps in
 * [c][ky][kx] order; taps outside the input read the input's zero point
 * (xq[b * xq_stride].zero, so that they dequantize to 0), entries k >= K
 * read 0. kp is K rounded up to a multiple of 4. */
int mpd_cu_im2row_i8(const int8_t *x, const mpd_qparams *xq, int xq_stride,
                     const mpd_cu_conv_geom *g, int batch, int kp, int8_t *row, mpd_cu_stream s);

/* ---- quant.cu ----------------------------------------------------------- */

/* The range (min, max) of each image's n values of x (fp32, fp16 or bf16), into
 * minmax[2 b], minmax[2 b + 1]: words that hold the floats in an
 * order-preserving integer encoding (so blocks can combine them with
 * atomicMin/atomicMax), for mpd_cu_qparams to read. Per image, as the CPU
 * backend measures them: an image's quantization never depends on the
 * others in its batch. */
int mpd_cu_range(const void *x, mpd_cu_type xtype, size_t n, int batch, uint32_t *minmax,
                 mpd_cu_stream s);

/* q[b] = parameters for image b's range (from mpd_cu_range): affine
 * (mpd_q_affine) when affine, else symmetric over max(-min, max), as the CPU
 * backend computes them. */
int mpd_cu_qparams(const uint32_t *minmax, int affine, int batch, mpd_qparams *q, mpd_cu_stream s);

/* y[b][i] = mpd_q_quantize(x[b][i], 1 / q->scale, q->zero) for n values
 * per image (fp32, fp16 or bf16 x), with q = &q[b * q_stride] (q_stride 0: one
 * set of parameters for every image, 1: one per image); layout is kept. */
int mpd_cu_quantize(const void *x, mpd_cu_type xtype, size_t n, int batch, const mpd_qparams *q,
                    int q_stride, int8_t *y, mpd_cu_stream s);

/* Converts n values between any two of F32, F16, BF16 and I8 (I8
 * dequantized with *q, which may be NULL otherwise; BF16 rounded with
 * mpd_f32_to_bf16), written with strides so that a
 * route can place a source into its slice of the output:
 *   for b < batch, i < n: y[b * y_stride + i] = convert(x[b * x_stride + i]). */
int mpd_cu_convert(const void *x, mpd_cu_type xtype, const mpd_qparams *q, size_t n,
                   size_t x_stride, void *y, mpd_cu_type ytype, size_t y_stride, int batch,
                   mpd_cu_stream s);

/* Quantizes an m x k fp32 weight matrix (darknet order) into m x kp int8,
 * zero padded past k, with the scheme's parameters:
 *   symmetric: per row, scale = mpd_q_symmetric(max |w|);
 *   affine: one range over the whole matrix (mpd_q_affine), zero point in
 *           *w_zero.
 * Writes scale[m] (the affine scale repeated when affine), sum[m] (sum of
 * the row's int8 values over its k real entries) and *w_zero (0 when
 * symmetric). scratch: 2 words (the affine range). */
int mpd_cu_quantize_weights(const float *w, int m, int k, int kp, int affine, int8_t *wq,
                            float *scale, int32_t *sum, int32_t *w_zero, uint32_t *scratch,
                            mpd_cu_stream s);

/* sum[r] = sum of the first k values of row r of an rows x kp int8 matrix
 * (the zero-point correction of the affine scheme). */
int mpd_cu_row_sums_i8(const int8_t *a, int rows, int k, int kp, int32_t *sum, mpd_cu_stream s);

/* ---- gemm_dp4a.cu -------------------------------------------------------
 * The int8 convolution: for each image b, filter o < m and pixel n < npix
 *   acc = sum_k w[o][k] * row[b][n][k]            (int32, exact)
 * corrected for zero points in the affine scheme,
 *   acc += -zx * w_sum[o] - zw * x_sum[b][n] + k * zw * zx,
 * then, by out type:
 *   MPD_CU_I32: acc itself (tests);
 *   otherwise v = act(mpd_q_epilogue(acc, w_scale[o] * s_x, bias[o])), with
 *   s_x = xq[b * xq_stride].scale,
 *   written as fp32, half, or int8 quantized with *yq (symmetric, scale
 *   only). Output layout NCHW: y[b][o][n]. */
typedef struct {
    const int8_t *w;       /* m x kp */
    const float *w_scale;  /* m */
    const int32_t *w_sum;  /* m (affine only) */
    const int32_t *w_zero; /* 1 value (affine only) */
    const float *bias;     /* m */
    const mpd_qparams *xq; /* input's parameters: xq[b * xq_stride] for image b */
    int xq_stride;         /* 0 (static) or 1 (per image) */
    const int32_t *x_sum;  /* batch x npix row sums of row (affine only) */
    const mpd_qparams *yq; /* output's parameters (int8 output) */
    int m, npix, k, kp;
    int act; /* MPD_CU_* activation */
    int affine;
} mpd_cu_i8_conv;

/* use_dp4a: 1 = the __dp4a kernel (falls back to the plain kernel where
 * the device code was compiled for an architecture below sm_61), 0 = the
 * plain int8 kernel everywhere (tests). */
int mpd_cu_gemm_i8(const mpd_cu_i8_conv *p, const int8_t *row, int batch, void *y,
                   mpd_cu_type ytype, int use_dp4a, mpd_cu_stream s);

/* The epilogue alone, for accumulators computed elsewhere (cuBLAS's int8
 * GEMM): acc[b] holds m rows of ldc int32 values, row o's first npix being
 * pixel n's sums; everything else as mpd_cu_gemm_i8. */
int mpd_cu_i8_epilogue(const mpd_cu_i8_conv *p, const int32_t *acc, int ldc, int batch, void *y,
                       mpd_cu_type ytype, mpd_cu_stream s);

/* ---- gemm_f16.cu --------------------------------------------------------
 * The half2 GEMM for devices without fp16 tensor cores (cuBLAS does the
 * work elsewhere): for each image b,
 *   c[b] (m x n fp32) = a (m x k half, row-major) x bcol[b] (k x n half).
 * fp32 accumulators. */
int mpd_cu_gemm_f16(const mpd_half *a, const mpd_half *bcol, float *c, int m, int n, int k,
                    int batch, mpd_cu_stream s);

/* The same contract for bf16 operands (bit patterns of host/half.h's
 * mpd_bf16), on devices without bf16 tensor cores (below sm_80) or a
 * toolkit without bf16 in cuBLAS: the fp32-arithmetic path of the half2
 * GEMM, each product of two bf16 values exact in fp32 and accumulated
 * with fmaf, so |err| <= gamma_K(2^-24) S (see gemm_f16.cu). No bf16
 * hardware or cuda_bf16.h needed: it runs on every architecture. */
int mpd_cu_gemm_bf16(const mpd_bf16 *a, const mpd_bf16 *bcol, float *c, int m, int n, int k,
                     int batch, mpd_cu_stream s);

/* ---- act.cu -------------------------------------------------------------
 * The epilogue of fp32 / fp16 / bf16 convolutions, after the GEMM:
 *   y[b][o][i] = act(acc[b][o][i] + bias[o]) for i < npix,
 * acc fp32, y fp32, half or bf16 (may alias acc when fp32). */
int mpd_cu_bias_act(const float *acc, const float *bias, int m, int npix, int batch, int act,
                    void *y, mpd_cu_type ytype, mpd_cu_stream s);

/* Shortcut: y = act(x + from), n values per image, all fp32. */
int mpd_cu_shortcut(const float *x, const float *from, size_t n, int batch, int act, float *y,
                    mpd_cu_stream s);

/* ---- pool.cu ------------------------------------------------------------
 * darknet's maxpool (window from -padding/2, taps outside skipped) on
 * c x h x w images of type t (F32, F16, BF16 or I8: int8 values compare as
 * their dequantized ones since scales are positive). */
typedef struct {
    int c, h, w, out_h, out_w;
    int size, stride, padding;
} mpd_cu_pool_geom;
/* y has type yt: t, or F32 from an F16 or BF16 x (the CPU pools fp16
 * tensors in fp32; the result is the same value). */
int mpd_cu_maxpool(const void *x, const mpd_cu_pool_geom *g, int batch, void *y, mpd_cu_type t,
                   mpd_cu_type yt, mpd_cu_stream s);

/* ---- upsample.cu --------------------------------------------------------
 * Nearest-neighbour upsampling by stride of c x h x w fp32 images. */
int mpd_cu_upsample(const float *x, int c, int h, int w, int stride, int batch, float *y,
                    mpd_cu_stream s);

/* ---- yolo.cu ------------------------------------------------------------
 * YOLO activations (darknet's): per anchor a < nmask, logistic on the x, y
 * planes and on the objectness + classes planes; w, h copied raw.
 * plane = h * w; one image is nmask * (classes + 5) planes. */
int mpd_cu_yolo(const float *x, int nmask, int classes, int plane, int batch, float *y,
                mpd_cu_stream s);

/* ---- preprocess.cu ------------------------------------------------------
 * darknet's letterbox of an RGB u8 image (w x h, 3 bytes per pixel,
 * row-major) into a 3 x net_h x net_w fp32 tensor: bilinear resize to
 * new_w x new_h (horizontal pass then vertical, the same float operations
 * in the same order as host/image.c's mpd__letterbox, so results are
 * bit-identical), centred on a 0.5 grey canvas. */
int mpd_cu_letterbox(const uint8_t *rgb, int w, int h, int new_w, int new_h, int net_w, int net_h,
                     float *y, mpd_cu_stream s);

#ifdef __cplusplus
}
#endif
#endif
