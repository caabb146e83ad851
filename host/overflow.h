/* overflow.h - how often the int8 arithmetic of one convolution leaves the
 * narrow integer types the paper discusses (its Tables 1 and 2): single
 * int8 x int8 products outside int8, and full window sums outside int16.
 *
 * The counts are of the convolution exactly as the engine computes it: the
 * weights and the input quantized with the CPU backend's functions and
 * float operations, the input unfolded one output pixel per row (im2row),
 * padding taps holding the code of 0 (the zero point). For one
 * layer with M = filters, N = out_h * out_w output pixels and
 * K = in_c * size * size taps, one image has M * N * K products and M * N
 * window sums. Three variants:
 *   affine_codes:     the paper's scheme (per-tensor min/max affine for the
 *                     activation, measured on this image, and for the
 *                     weights); products and sums of the stored codes
 *                     x_q * w_q, as an int8 kernel without zero-point
 *                     handling would form them;
 *   affine_corrected: the same scheme on the zero-point-corrected values
 *                     (x_q - z_x) * (w_q - z_w), which range over
 *                     [-254, 254]; the sums are the engine's affine
 *                     accumulators after mpd_q_affine_correct;
 *   symmetric:        weights symmetric per output channel, the activation
 *                     symmetric per tensor (threshold given, or measured);
 *                     the sums are the CPU backend's int32 accumulators. */
#ifndef MPD_OVERFLOW_H
#define MPD_OVERFLOW_H

#include <stddef.h>

#include "engine.h"
#include "net.h"

/* mpd_ovf_variant, mpd_ovf_counts and mpd_ovf_variant_name are declared in
 * engine.h, the public API, so that tools read the counts without the
 * engine's internal headers; they are defined here. mpd_ovf_variant_name
 * returns a static string ("affine_codes", "affine_corrected",
 * "symmetric"; "?" for anything else) and may be called from any thread. */

/* Counts the overflows of convolution layer l on one image's input x
 * (CHW floats, l->in_c x l->in_h x l->in_w) into *out, for every variant.
 * x_thresh > 0 is the symmetric activation threshold (scale x_thresh / 127,
 * as a calibrated plan uses); x_thresh <= 0 measures max |x| on this image,
 * as an uncalibrated plan does. The affine variants always measure min/max
 * of x on this image, as the engine does.
 *
 * Returns 0; MPD_EINVAL (with a message) when l is not a convolution, its
 * weights are not loaded, its window has more than 32768 taps (so that
 * every corrected sum fits int32), it has more than 2^24 filters,
 * x_thresh is not finite or a pointer is NULL; MPD_ENOMEM. On error *out
 * is zeroed when out is not NULL. The weights and x are taken to be
 * finite, as everywhere in the engine.
 *
 * Ownership: reads l and x, writes only *out and msg; every allocation is
 * freed before it returns. Thread-safety: holds no shared state, so any
 * number of threads may call it at once, on the same layer or on others,
 * as long as nothing modifies l or x meanwhile. Single-threaded inside. */
int mpd_ovf_conv(const mpd_layer *l, const float *x, float x_thresh, mpd_ovf_counts *out, char *msg,
                 size_t msglen);

#endif
