/* image.h - internal image helpers (decode is public in engine.h). */
#ifndef MPD_IMAGE_H
#define MPD_IMAGE_H

#include "engine.h"

/* Letterboxes im (HWC uint8 RGB) into dst (3 x net_h x net_w floats in
 * [0, 1]) exactly as darknet's letterbox_image: aspect-preserving bilinear
 * resize in two passes, centred, borders 0.5. Returns 0 or MPD_ENOMEM. */
int mpd__letterbox(const mpd_image *im, int net_w, int net_h, float *dst);

/* The size of the image inside the letterbox, as darknet computes it (at
 * least 1x1). Shared by the letterbox and the box correction. */
void mpd__letterbox_size(int im_w, int im_h, int net_w, int net_h, int *new_w, int *new_h);

#endif
