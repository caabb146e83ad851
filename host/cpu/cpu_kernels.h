/* cpu_kernels.h - the CPU backend's fp32 layer kernels, one image at a time
 * (NCHW, C x H x W). Exposed for the kernel unit tests, which compare each
 * one against a naive loop. All are thread-compatible: no shared state. */
#ifndef MPD_CPU_KERNELS_H
#define MPD_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "../net.h"
#include "tpool.h"

/* What a layer kernel may use to run in parallel: the pool and scratch
 * memory sized by the *_workspace functions below. */
typedef struct {
    mpd__tpool *pool;
    float **ws;    /* one scratch buffer per worker */
    float *shared; /* one scratch buffer for the whole layer */
    float *scale;  /* one float per output channel of the widest layer */
} mpd__cpu_exec;

/* Unfolds a C x H x W image into a (C*size*size) x (out_h*out_w) matrix,
 * columns [col0, col0 + ncols) only, row stride ncols. Out-of-image taps
 * read 0. */
void mpd__im2col_f32(const float *im, int c, int h, int w, int size, int stride, int pad,
                     int out_h, int out_w, int col0, int ncols, float *col);

/* Elementwise activation in place. */
void mpd__activate_f32(float *x, size_t n, mpd_act act);

/* y[i] = 1 / (1 + e^-x[i]), vectorised; within 4 ulp (conv_f32.c). y
 * may be x. */
void mpd__logistic_f32(const float *x, float *y, size_t n);

/* Adds bias[o] to each of the n values of channel o, then activates. */
void mpd__bias_act_f32(float *y, const float *bias, int channels, size_t n, mpd_act act);

/* Full convolution of one image: y[l->out_c][out_h][out_w], on the pool's
 * threads. Large outputs are split by columns (each worker unfolds and
 * multiplies its own column blocks); small ones by output channels after one
 * shared unfold. ex->ws[i] must hold mpd__conv_ws_worker(l, threads) floats
 * and ex->shared mpd__conv_ws_shared(l, threads). */
void mpd__conv_f32(const mpd_layer *l, const float *x, float *y, const mpd__cpu_exec *ex);
/* The same convolution in half arithmetic (gemm_f16.h), where
 * mpd__f16_arith() is 1: a16 = the weights packed by mpd__f16_pack, x
 * holding half values. */
void mpd__conv_f16(const mpd_layer *l, const uint16_t *a16, const float *x, float *y,
                   const mpd__cpu_exec *ex);
/* And in bf16 arithmetic (BFDOT), where mpd__bf16_arith() is 1: a16 from
 * mpd__bf16_pack, x holding bf16 values. */
void mpd__conv_bf16(const mpd_layer *l, const uint16_t *a16, const float *x, float *y,
                    const mpd__cpu_exec *ex);
size_t mpd__conv_ws_worker(const mpd_layer *l, int threads);
size_t mpd__conv_ws_shared(const mpd_layer *l, int threads);

void mpd__maxpool_f32(const mpd_layer *l, const float *x, float *y);
/* Output rows [r0, r1) of a maxpool on bf16 HWC tensors (uint16_t bit
 * patterns): the fp32 kernel's maxima, which are bf16 values already (where
 * a window holds both zeros, +0 rather than the first one). */
/* Output rows [r0, r1) of a maxpool on fp32 HWC tensors: mpd__maxpool_f32's
 * values. */
void mpd__maxpool_f32_hwc(const mpd_layer *l, const float *x, float *y, int r0, int r1);
void mpd__maxpool_bf16_hwc(const mpd_layer *l, const uint16_t *x, uint16_t *y, int r0, int r1);
void mpd__upsample_f32(const mpd_layer *l, const float *x, float *y);
void mpd__shortcut_f32(const mpd_layer *l, const float *x, const float *from, float *y);
void mpd__yolo_f32(const mpd_layer *l, const float *x, float *y);

#endif
