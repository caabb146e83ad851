/* calib_search.h - the `auto` calibration method's search: for each
 * convolution, which of several candidate thresholds for its input makes
 * its int8 output (symmetric scheme, per-channel weights, computed by the
 * CPU backend's own int8 kernel) closest to its fp32 output over sample
 * images. The squared error of a layer's output is what the next layers
 * inherit, so this ranks thresholds by what they do to the network rather
 * than to the tensor alone (which the mse method already minimises).
 *
 * Use: create for a net, then per image and convolution call observe with
 * the layer's fp32 input and output and the candidates; read the relative
 * errors back. One thread at a time per search (it owns a thread pool and
 * scratch memory); different searches are independent. */
#ifndef MPD_CALIB_SEARCH_H
#define MPD_CALIB_SEARCH_H

#include <stddef.h>

#include "net.h"

#define MPD_CALIB_SEARCH_MAX 16 /* candidates per convolution */

typedef struct mpd_calib_search mpd_calib_search;

/* net (weights loaded) is borrowed and must outlive the search. threads:
 * compute threads, 0 = 1. Quantizes every convolution's weights once.
 * Returns 0, MPD_ENOMEM or MPD_EINVAL (with a message). */
int mpd__calib_search_create(const mpd_net *net, int threads, mpd_calib_search **out, char *msg,
                             size_t msglen);
void mpd__calib_search_free(mpd_calib_search *s);

/* Adds, for convolution layer i and each candidate threshold cand[k]
 * (k < n <= MPD_CALIB_SEARCH_MAX, > 0), the squared error of its int8
 * output against y (its fp32 output on this image, after the activation)
 * when its input x (fp32, CHW) is quantized with that threshold. The
 * candidates must be the same, in the same order, for every image. */
int mpd__calib_search_observe(mpd_calib_search *s, int i, const float *x, const float *y,
                              const float *cand, int n);

/* err[k] = summed squared error of candidate k / summed squared fp32
 * output, over the images observed for layer i (0 when none). Returns the
 * number of candidates, 0 when layer i was never observed. */
int mpd__calib_search_errors(const mpd_calib_search *s, int i, double *err);

#endif
