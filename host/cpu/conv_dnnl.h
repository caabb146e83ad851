/* conv_dnnl.h - int8 and bf16 convolutions as oneDNN convolution primitives (x86,
 * where Debian's oneDNN is installed): the input and output in our int8
 * layout (HWC, which oneDNN calls nhwc), weights reordered once per plan
 * into the layout the primitive prefers, per-channel output scales and the
 * activation as post-ops, requantized to int8 (clipped to [-127, 127]) or
 * written as fp32 HWC. On AMX or VNNI it is several times our own int8
 * kernels (README, Speed).
 *
 * Not exact: oneDNN 2.x adds the bias before the output scale, so the
 * bias goes in divided by it, and a value near a rounding boundary can
 * land one int8 code from our epilogue's (mpd__conv_i8, the reference).
 * The bound, tested: every output within one code of the reference (fp32
 * outputs within one code's worth, the scale s_w s_x, plus 1e-5 relative).
 * Symmetric scheme only (oneDNN takes no weight zero point). */
#ifndef MPD_CONV_DNNL_H
#define MPD_CONV_DNNL_H

#include <stddef.h>
#include <stdint.h>

#include "conv_i8.h"
#include "tpool.h"

typedef struct mpd__dnnl_conv mpd__dnnl_conv;

/* What a context needs to run the primitives on its pool: a stream and
 * scratch per worker, made on first use. Zero-initialised;
 * mpd__dnnl_exec_free. */
typedef struct {
    void **streams; /* one per pool worker */
    int nstreams;
    void *scratch;  /* scratch_each bytes per pool worker */
    size_t scratch_each;
    void *rows; /* rows_each bytes per pool worker: bands kept out of y */
    size_t rows_each;
} mpd__dnnl_exec;

/* One OpenMP thread for the calling thread (a per-thread setting outside
 * parallel regions), for oneDNN calls made from our pool's workers:
 * oneDNN plans its work for the count current when a primitive is made and
 * runs that many threads; ours run one per pool worker, so no OpenMP team
 * spins beside the pool. Returns the old count for mpd__omp_restore. */
int mpd__omp_one(void);
void mpd__omp_restore(int old);

/* Whether oneDNN convolutions are built in. */
int mpd__dnnl_conv_available(void);
/* Whether they are, and the CPU computes bf16 itself (AVX512-BF16 or
 * AMX-BF16): where it does not, oneDNN would emulate bf16 too, and ours
 * is the emulation plan show names. */
int mpd__dnnl_bf16_native(void);

/* The int8 convolution of layer l with w's weights (symmetric) on an
 * input quantized with xq (a plan's calibrated one: the scales are part of
 * the primitive), writing int8 with out_scale (out8) or fp32, both HWC.
 * The output is cut into `threads` bands, a single-threaded primitive
 * each, which a pool of as many workers runs: one threading owner (our
 * pool), no OpenMP team spinning beside it. Bands of rows, or of output
 * channels (16 at a time) where the rows split less evenly (13 over 2
 * threads). pool2: the caller pools the output 2 x 2 as each band ends
 * (mpd__dnnl_after), so the bands are of an even number of rows and
 * cache-sized (a multiple of `threads` of them).
 * 0 and *out, or MPD_EUNSUP (no oneDNN, the affine scheme, an activation
 * it lacks, a shape it refuses) or MPD_ENOMEM with *out NULL. */
int mpd__dnnl_conv_i8_create(const mpd_layer *l, const mpd__conv_i8_weights *w, mpd_qparams xq,
                             int out8, float out_scale, int threads, int pool2,
                             mpd__dnnl_conv **out);
/* The bf16 convolution of layer l with w's weights (bf16 bit patterns,
 * darknet's order): bf16 HWC input, fp32 sums, the bias and activation in
 * fp32, written as bf16 (out16) or fp32, HWC, in bands as above. The
 * operands are exactly our emulation's; only the order of the fp32 sums
 * differs (and so, by a rounding, a bf16 output). Same returns. */
int mpd__dnnl_conv_bf16_create(const mpd_layer *l, const uint16_t *w, int out16, int threads,
                               int pool2, mpd__dnnl_conv **out);
/* The fp32 convolution of layer l with weights w (NULL: its own; else the
 * same shape, e.g. rounded to half), fp32 HWC in and out: oneDNN's direct
 * convolutions on NHWC, 1.2-2.2x our im2col + sgemm on yolov3-tiny's
 * layers with AVX-512 (bench_dnnl_conv); with MPDET_FP32_KERNEL=winograd,
 * on 3 x 3 stride-1 layers of 32 input channels or more, its Winograd
 * convolutions where it makes them (AVX-512), each band reordered from and
 * to its blocked layouts in the worker's scratch and the activation
 * applied after. Sums in another order than ours: fp32 rounding apart (Winograd:
 * a few 1e-6 of a layer's largest value, and the last bits follow the
 * bands, so the thread count). label starts its name (NULL: "fp32"). Same
 * returns. */
int mpd__dnnl_conv_f32_create(const mpd_layer *l, const float *w, const char *label, int threads,
                              int pool2, mpd__dnnl_conv **out);
void mpd__dnnl_conv_free(mpd__dnnl_conv *d);
/* "int8 oneDNN conv (brgconv:avx512_core_amx_int8)", "bf16 oneDNN conv
 * (...)": lives as long as d. */
const char *mpd__dnnl_conv_name(const mpd__dnnl_conv *d);
/* Appends s to that name (it is cut to fit). */
void mpd__dnnl_conv_name_add(mpd__dnnl_conv *d, const char *s);

/* Bytes d holds: its weights and bias. */
size_t mpd__dnnl_conv_bytes(const mpd__dnnl_conv *d);
/* Bytes of its own each pool worker needs to run d (mpd__dnnl_conv_run
 * allocates them in the exec on first use), in two buffers: rows, where a
 * band of channels is written before it is copied in, and, with own_rows
 * (mpd__dnnl_after), a band of rows that never reaches y; scratch, the
 * primitive's scratchpad. Both rounded up to 64 bytes. */
size_t mpd__dnnl_conv_rows_worker(const mpd__dnnl_conv *d, int own_rows);
size_t mpd__dnnl_conv_scratch_worker(const mpd__dnnl_conv *d);
/* The input quantization d was made for. */
mpd_qparams mpd__dnnl_conv_input(const mpd__dnnl_conv *d);
/* Called by the worker that ran a band, on its output rows [r0, r1) (at
 * rows, HWC) once they are written: the epilogue a oneDNN primitive cannot
 * take (a maxpool). With own_rows the band writes them to a buffer of the
 * worker's, in its cache, and not to y: for an output no one reads after
 * the epilogue. */
typedef struct {
    void (*fn)(void *arg, const void *rows, int r0, int r1);
    void *arg;
    int own_rows;
} mpd__dnnl_after;

/* Runs it on one image on pool (its bands in parallel): x (HWC; int8
 * quantized as mpd__dnnl_conv_input says, or bf16) into y (HWC, the type
 * it was made for), then after (NULL: none) on each band. 0, MPD_ENOMEM
 * or MPD_EDEVICE (oneDNN failed; msg says how). */
int mpd__dnnl_conv_run(const mpd__dnnl_conv *d, mpd__dnnl_exec *ex, mpd__tpool *pool, const void *x,
                       void *y, const mpd__dnnl_after *after, char *msg, size_t msglen);
void mpd__dnnl_exec_free(mpd__dnnl_exec *ex);

#endif
