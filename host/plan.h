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
     * which case activation ranges are measured on the fly. */
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
/* Reads a calibration file (written by mpd_calib_write) into plan. */
int mpd_plan_load_calibration(mpd_plan *plan, const mpd_net *net, const char *path, char *msg,
                              size_t msglen);
int mpd_plan_copy(const mpd_plan *src, mpd_plan **out);
void mpd_plan_free(mpd_plan *plan);
const char *mpd_scheme_name(mpd_scheme s);

/* How a plan stores each layer's output, the same in every backend:
 *   int8 where the producer can requantize in its epilogue and every
 *     consumer takes int8 at that scale: int8 convolutions with a static
 *     (calibrated, symmetric) output scale read only by int8 convolutions
 *     or by maxpools that are themselves int8; such maxpools keep their
 *     input's scale;
 *   half after fp16 convolutions read only by convolutions or maxpools;
 *   fp32 everywhere else (routes, upsample, shortcut and yolo read and
 *   write fp32). */
typedef enum { MPD_TENSOR_F32, MPD_TENSOR_F16, MPD_TENSOR_I8 } mpd_tensor_type;
/* Fills type[net->n] and, for int8 outputs, oq[net->n]. Returns 0 or
 * MPD_ENOMEM. */
int mpd__plan_tensor_types(const mpd_net *net, const mpd_plan *plan, mpd_tensor_type *type,
                           mpd_qparams *oq);

#endif
