/* image.h - the engine's internal image helpers: letterbox and decode
 * accounting. Formats and decoding are public, in engine.h. */
#ifndef MPD_IMAGE_H
#define MPD_IMAGE_H

#include <stddef.h>

#include "engine.h"

/* Letterboxes im (HWC uint8 RGB) into dst (3 x net_h x net_w floats in
 * [0, 1]) exactly as darknet's letterbox_image: aspect-preserving bilinear
 * resize in two passes, centred, borders 0.5. Allocates 6 x net_w floats
 * at most, whatever the image's size. Returns 0, MPD_EINVAL or MPD_ENOMEM. */
int mpd__letterbox(const mpd_image *im, int net_w, int net_h, float *dst);

/* The size of the image inside the letterbox, as darknet computes it (at
 * least 1x1). Shared by the letterbox and the box correction. */
void mpd__letterbox_size(int im_w, int im_h, int net_w, int net_h, int *new_w, int *new_h);

/* The calling thread's heap use by image decoding and the letterbox, in
 * bytes (malloc's usable sizes): held now, and the most held since the last
 * reset. For tests and measurements. */
void mpd__image_mem_reset(void);
size_t mpd__image_mem_peak(void);
size_t mpd__image_mem_live(void);

#endif
