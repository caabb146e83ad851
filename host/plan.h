/* plan.h - precision plans: which precision each convolution runs in, the
 * quantization scheme, and (optionally) calibrated activation ranges.
 *
 * The base plan comes from the cfg's per-layer keys (precision=,
 * quantize=). A plan file overrides it:
 *
 *   [plan]
 *   default = int8            # every convolution not listed below
 *   scheme = symmetric        # or affine (the paper's)
 *   calibration = yolov3-tiny.calib   # relative to this file
 *   [layers]
 *   2 = fp32                  # darknet layer index, 0-based
 *
 * Every error names file:line. */
#ifndef MPD_PLAN_H
#define MPD_PLAN_H

#include <stddef.h>

#include "net.h"
#include "precision.h"
#include "quant.h"

typedef enum { MPD_SCHEME_SYMMETRIC, MPD_SCHEME_AFFINE } mpd_scheme;

typedef struct {
    int n;               /* layers */
    mpd_precision *prec; /* per layer; FP32 for everything but convolutions */
    mpd_scheme scheme;
    /* Calibrated activation thresholds (|x| range) of each layer's output
     * and of the network input; NULL when the plan has no calibration, in
     * which case activation ranges are measured on the fly. Every entry a
     * convolution reads (its input layer's) and every convolution's own is
     * > 0; others may be 0 (a [yolo] output nothing reads as a
     * convolution input). */
    float *out_thresh;
    float input_thresh;
    char *calibration; /* path it came from, or NULL */
    char *source;      /* "cfg" or the plan file's path */
} mpd_plan;

/* The base plan of a net (from its cfg keys); symmetric, uncalibrated. */
int mpd_plan_from_net(const mpd_net *net, mpd_plan **out, char *msg, size_t msglen);
/* Parses a plan file on top of base. *out is owned by the caller. */
int mpd_plan_parse_file(const char *path, const mpd_net *net, const mpd_plan *base, mpd_plan **out,
                        char *msg, size_t msglen);
/* Reads a calibration file (written by mpd_engine_calibrate) into plan.
 * Every convolution's output and the input need an entry. The output of a
 * maxpool, upsample, route or shortcut the file leaves out is derived from
 * its inputs' (a maxpool or upsample keeps its input's range, a route
 * takes its sources' largest, a shortcut the sum of its two - a bound);
 * a range a convolution reads that is neither given nor derivable (a
 * [yolo] output) refuses the file, naming file:line of its [thresholds]
 * section and the layer. */
int mpd_plan_load_calibration(mpd_plan *plan, const mpd_net *net, const char *path, char *msg,
                              size_t msglen);
int mpd_plan_copy(const mpd_plan *src, mpd_plan **out);
void mpd_plan_free(mpd_plan *plan);
const char *mpd_scheme_name(mpd_scheme s);

/* int8 convolutions multiply int8 values in [-127, 127] and add the K =
 * in_c x size x size products of an output in int32: |sum| <= K x 127^2
 * stays below 2^31 for K <= 133,143, and the CPU's GEMM kernels are
 * specified for K <= 131,072 (cpu/gemm_i8.h), the limit for the symmetric
 * scheme. The affine epilogue adds three zero-point terms of the same size
 * to the raw sum in int32 (on the CPU and the GPU alike), whose value is
 * sum (x - zx)(w - zw) with each factor within 254: K <= 33,285. */
#define MPD_I8_MAX_K 131072
#define MPD_I8_MAX_K_AFFINE 33285
/* K of convolution l. */
static inline long mpd__conv_k(const mpd_layer *l)
{
    return (long)l->in_c * l->u.conv.size * l->u.conv.size;
}
/* The largest K an int8 convolution may have under scheme s. */
static inline long mpd__i8_max_k(mpd_scheme s)
{
    return s == MPD_SCHEME_AFFINE ? MPD_I8_MAX_K_AFFINE : MPD_I8_MAX_K;
}
/* 0 when every int8 layer of plan is within the limit of the plan's
 * scheme, else MPD_EUNSUP with "layer N (conv, K = ...) ..." in msg.
 * Backends call it from plan_create (and supports() applies MPD_I8_MAX_K,
 * the loosest limit, as it does not see the scheme). */
int mpd__plan_check_i8(const mpd_net *net, const mpd_plan *plan, char *msg, size_t msglen);

/* How a plan stores each layer's output, the same in every backend:
 *   int8 where the producer can requantize in its epilogue and every
 *     consumer takes int8 at that scale: int8 convolutions with a static
 *     (calibrated, symmetric) output scale read only by int8 convolutions
 *     or by maxpools that are themselves int8; such maxpools keep their
 *     input's scale;
 *   half after fp16 convolutions read only by convolutions or maxpools;
 *   bf16 after bf16 convolutions read only by bf16 convolutions or by
 *     maxpools that are themselves bf16 (as int8: the chain a oneDNN or
 *     cuBLAS bf16 GEMM reads without a conversion);
 *   fp32 everywhere else (routes, upsample, shortcut and yolo read and
 *   write fp32). */
typedef enum { MPD_TENSOR_F32, MPD_TENSOR_F16, MPD_TENSOR_I8, MPD_TENSOR_BF16 } mpd_tensor_type;
/* Nonzero when layer j (> i) reads layer i's output. */
int mpd__plan_reads(const mpd_net *net, int j, int i);
/* Fills type[net->n] and, for int8 outputs, oq[net->n]. Returns 0 or
 * MPD_ENOMEM. */
int mpd__plan_tensor_types(const mpd_net *net, const mpd_plan *plan, mpd_tensor_type *type,
                           mpd_qparams *oq);

#endif
