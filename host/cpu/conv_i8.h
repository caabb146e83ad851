/* conv_i8.h - int8 convolution on the CPU: weights quantized at plan time,
 * input quantized (or taken as int8 from the producer), unfolded one output
 * pixel per row ("im2row", K padded to a multiple of 4), int8 x int8 GEMM
 * with int32 accumulators, and an epilogue that scales, adds the bias,
 * applies the activation and writes fp32 or requantized int8.
 *
 * int8 tensors are stored channels-last (HWC): a pixel's channels are
 * contiguous, so unfolding copies whole rows of size x C bytes, and the
 * weights are ordered [filter][ky][kx][channel] to match. fp32 and fp16
 * tensors stay CHW like darknet's. */
#ifndef MPD_CONV_I8_H
#define MPD_CONV_I8_H

#include <stdint.h>

#include "../plan.h"
#include "../quant.h"
#include "cpu_kernels.h"

typedef struct {
    int m, k, kp;     /* filters, real K, K padded to a multiple of 4 */
    mpd_scheme scheme;
    int8_t *w;        /* m x kp, [ky][kx][c] order, zero padded */
    float *w_scale;   /* m (per channel when symmetric, one value repeated when affine) */
    int32_t w_zero;   /* affine zero point of the weights (0 when symmetric) */
    int32_t *w_sum;   /* m: sum over k of the int8 weights (zero-point corrections) */
    float *wf;        /* m x kp: w - w_zero as floats, zero padded, when the layer runs
                         through the fp32 GEMM (mpd__conv_i8_choose); else NULL */
} mpd__conv_i8_weights;

/* Quantizes layer l's fp32 weights. Returns 0 or MPD_ENOMEM. */
int mpd__conv_i8_prepare(const mpd_layer *l, mpd_scheme scheme, mpd__conv_i8_weights *w);
void mpd__conv_i8_release(mpd__conv_i8_weights *w);

/* Whether layer l's int8 sums are exact in fp32 under scheme: K x the
 * largest |w - w_zero| x the largest |x - x_zero| is at most 2^24, so
 * every partial sum, in any order, is an integer fp32 holds exactly, and
 * the fp32 GEMM on the zero-point-centred values returns the int32
 * accumulator itself (K <= 1040 symmetric, 260 affine). */
int mpd__conv_i8_f32_exact(const mpd_layer *l, mpd_scheme scheme);

/* Picks layer l's kernel for `threads` workers: the int8 GEMM, or where
 * the sums are exact in fp32 and the layer splits by columns, the fp32
 * GEMM on centred values (fast where K is small: layer 0's K = 27 leaves
 * the int8 GEMMs mostly padding). Both give the same bits; force
 * "int8" or "fp32" picks one, NULL times both on a sample of the layer
 * (a few ms, one thread, the two in turn: mpd__time_in_turn) and keeps
 * the faster, for output into int8 (int8_out) or fp32. Sets or clears
 * w->wf. 0 or MPD_ENOMEM. */
int mpd__conv_i8_choose(const mpd_layer *l, mpd__conv_i8_weights *w, int threads, int int8_out,
                        const char *force);

/* Runs the convolution of one image. x8: the input quantized with xq (HWC).
 * Output: y (fp32, CHW) when y8 is NULL, else y8 (HWC) =
 * clamp(round(v / s_out)) with inv_out = 1 / s_out. Scratch from
 * mpd__conv_i8_ws_* sizes (in bytes). */
void mpd__conv_i8(const mpd_layer *l, const mpd__conv_i8_weights *w, const int8_t *x8,
                  mpd_qparams xq, float *y, int8_t *y8, float inv_out,
                  const mpd__cpu_exec *ex);
/* The same through the fp32 GEMM (w->wf set by mpd__conv_i8_choose for
 * the pool's thread count): xc is the input as centred int8 values in
 * fp32, CHW: q - xq.zero (mpd__centre_hwc_to_chw, mpd__quantize_centred).
 * The output has mpd__conv_i8's bits. */
void mpd__conv_i8_centred(const mpd_layer *l, const mpd__conv_i8_weights *w, const float *xc,
                          mpd_qparams xq, float *y, int8_t *y8, float inv_out,
                          const mpd__cpu_exec *ex);
/* Pixels [p0, p1) of an HWC int8 image, less zero, into CHW floats. */
void mpd__centre_hwc_to_chw(const int8_t *q, int c, int hw, int32_t zero, float *x, int p0,
                            int p1);
/* n floats quantized with p (as mpd__quantize_chw_to_hwc does), less
 * p.zero; q may be x. */
void mpd__quantize_centred(const float *x, size_t n, mpd_qparams p, float *q);
size_t mpd__conv_i8_ws_worker(const mpd_layer *l, int threads);
size_t mpd__conv_i8_ws_shared(const mpd_layer *l, int threads);

/* Unfolds output pixels [col0, col0 + ncols) of an HWC int8 image into bt
 * (ncols x kp, [ky][kx][c] per row): taps outside the image read padv,
 * entries k >= K read 0. colsum (may be NULL) receives each row's sum over
 * its K real taps. */
void mpd__im2row_i8(const int8_t *im, int c, int h, int w, int size, int stride, int pad,
                    int out_w, int col0, int ncols, int kp, int8_t padv, int8_t *bt,
                    int32_t *colsum);

/* Range of n floats (min, max, absmax). */
void mpd__range_f32(const float *x, size_t n, float *min, float *max);
/* Quantizes pixels [p0, p1) of a CHW fp32 image into an HWC int8 one. */
void mpd__quantize_chw_to_hwc(const float *x, int c, int hw, mpd_qparams p, int8_t *q, int p0,
                              int p1);
/* n floats quantized with p, in place of layout (HWC stays HWC). */
void mpd__quantize_n(const float *x, size_t n, mpd_qparams p, int8_t *q);
/* n codes dequantized with p, in place of layout. */
void mpd__dequantize_n(const int8_t *q, size_t n, mpd_qparams p, float *x);
/* Dequantizes an HWC int8 image into a CHW fp32 one. */
void mpd__dequantize_hwc_to_chw(const int8_t *q, int c, int hw, mpd_qparams p, float *x);
/* Maxpool on an HWC int8 image, output rows [r0, r1). Max commutes with a
 * monotonic quantization, so the output keeps the input's scale. A window
 * wholly outside the input gives MPD_QMIN, as on the GPU. */
void mpd__maxpool_i8_hwc(const mpd_layer *l, const int8_t *x, int8_t *y, int r0, int r1);

#endif
