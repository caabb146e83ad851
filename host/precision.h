/* precision.h - the precisions a convolution can run in, and the element
 * types tensors are stored in. Formats are data: one table row each. */
#ifndef MPD_PRECISION_H
#define MPD_PRECISION_H

/* bf16 came last: the numbers of the others are in saved tables. */
typedef enum {
    MPD_PREC_FP32,
    MPD_PREC_FP16,
    MPD_PREC_INT8,
    MPD_PREC_BF16,
    MPD_PREC_COUNT
} mpd_precision;

typedef struct {
    const char *name; /* as written in cfg and plan files */
    int bytes;        /* per stored element */
} mpd_precision_info;

extern const mpd_precision_info mpd_precisions[MPD_PREC_COUNT];

/* Parses "fp32", "fp16", "int8" or "bf16"; returns 0 or MPD_EINVAL. */
int mpd_precision_parse(const char *s, mpd_precision *out);

#endif
