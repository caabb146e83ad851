/* calib.h - activation-calibration statistics: the threshold T of one
 * tensor, from its values over many calibration images. An activation with
 * threshold T is quantized symmetrically as
 *     q = clamp(round(x * 127 / T), -127, 127).
 *
 * Two passes over the same images:
 *   pass 1  mpd_calib_stat_observe_range() on every output: min, max, absmax;
 *           mpd_calib_stat_begin_histogram() once: the histogram range
 *           becomes [0, absmax], MPD_CALIB_BINS bins of |x|;
 *   pass 2  mpd_calib_stat_observe_hist() on the same outputs.
 * Then mpd_calib_stat_threshold() with the method. minmax needs pass 1 only.
 *
 * Pure C11, no I/O, no globals: each mpd_calib_stat may be used by one
 * thread at a time; different ones need no locking. */
#ifndef MPD_CALIB_H
#define MPD_CALIB_H

#include <stddef.h>

#define MPD_CALIB_BINS 2048  /* histogram bins over [0, absmax] */
#define MPD_CALIB_LEVELS 128 /* quantization levels of |x| (entropy method) */

typedef enum {
    MPD_CALIB_MINMAX,
    MPD_CALIB_PERCENTILE,
    MPD_CALIB_ENTROPY,
    MPD_CALIB_MSE,
    MPD_CALIB_AUTO
} mpd_calib_method;

/* "minmax", "percentile", "entropy", "mse", "auto"; "unknown" for anything
 * else. */
const char *mpd_calib_method_name(mpd_calib_method m);
/* Inverse of mpd_calib_method_name (exact, lower case). 0 or MPD_EINVAL. */
int mpd_calib_method_parse(const char *s, mpd_calib_method *out);

/* Statistics of one tensor over many images. */
typedef struct mpd_calib_stat mpd_calib_stat;

mpd_calib_stat *mpd_calib_stat_create(void); /* NULL on ENOMEM */
void mpd_calib_stat_free(mpd_calib_stat *s); /* NULL is fine */

/* Pass 1 (all images): running min, max and absmax. NaN is ignored;
 * infinities are recorded (and then make the histogram unusable). */
void mpd_calib_stat_observe_range(mpd_calib_stat *s, const float *x, size_t n);

/* Between the passes: fixes the histogram range to [0, absmax] and clears
 * the histogram (calling it again starts pass 2 over). When absmax is 0 or
 * not finite there is no usable histogram: pass 2 then records nothing and
 * percentile/entropy fall back to minmax. */
void mpd_calib_stat_begin_histogram(mpd_calib_stat *s);

/* Pass 2 (same images): accumulate the |x| histogram. Values beyond the
 * fixed range (and NaN) are counted in the top bin. */
void mpd_calib_stat_observe_hist(mpd_calib_stat *s, const float *x, size_t n);

/* Over everything pass 1 observed; 0 when nothing (but NaN) was observed.
 * absmax = max(-min, max). */
float mpd_calib_stat_min(const mpd_calib_stat *s);
float mpd_calib_stat_max(const mpd_calib_stat *s);
float mpd_calib_stat_absmax(const mpd_calib_stat *s);

/* The threshold T for the method, always finite and > 0:
 *   minmax:     absmax (pass 1 only);
 *   percentile: the |x| below which `percentile` percent (e.g. 99.99) of
 *               the histogrammed values lie, interpolated within its bin
 *               (`percentile` is ignored by the other methods; outside
 *               (0, 100) it gives absmax);
 *   entropy:    TensorRT-style KL-divergence minimisation: for each
 *               candidate i = 128 .. 2048 bins, P = bins[0, i) with the
 *               count beyond i folded into bin i-1; Q = bins[0, i) (without
 *               that fold, as in TensorRT's description, so that clipping
 *               costs something) merged into 128 levels exactly i/128 bins
 *               wide (a bin straddling two levels is split by overlap, as
 *               ncnn does), each level's count spread evenly over the bins
 *               where P is non-zero; KL(P||Q) of the normalised P and Q; the
 *               first i with the least KL gives T = (i + 0.5) * bin width,
 *               capped at the histogram's absmax. Where P has counts and Q
 *               none (clipped mass in a level otherwise empty), Q gets
 *               1e-4 counts (MXNet's smoothing epsilon) so the cost is
 *               finite. About 25 ms per call.
 *   mse:        the T that minimises the expected squared quantization
 *               error over the histogram: each bin, at its centre c,
 *               costs (c - T)^2 per value when c > T (clipped) and
 *               step^2 / 12 with step = T / 127 when c <= T (rounding,
 *               taken as uniform); candidates are T = i bin widths for
 *               i = 16 .. 2048, the first least cost wins;
 *   auto:       chosen per tensor by mpd_engine_calibrate (see engine.h)
 *               among the others; alone, as here, it is mse.
 * With no usable histogram, percentile and entropy return absmax; if
 * everything observed was 0 (or nothing was observed) T is 1.0; an infinite
 * absmax gives FLT_MAX. The smallest entropy threshold is 128.5/2048 of the
 * histogram range. */
float mpd_calib_stat_threshold(const mpd_calib_stat *s, mpd_calib_method m, double percentile);

#endif
