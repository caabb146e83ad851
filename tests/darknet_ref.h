/* darknet_ref.h - a thin wrapper over Debian's libdarknet, the reference
 * implementation our engine is checked (tests) and timed (bench) against.
 * It hides darknet.h, which is not C11-clean, from the rest of the build. */
#ifndef MPD_DARKNET_REF_H
#define MPD_DARKNET_REF_H

typedef struct dnref dnref;

typedef struct {
    int cls;
    float prob;
    float x0, y0, x1, y1; /* pixels, clipped to the image as darknet draws */
} dnref_det;

/* Loads cfg + weights at batch 1; NULL on failure (darknet itself may exit). */
dnref *dnref_open(const char *cfg, const char *weights);
void dnref_close(dnref *r);
int dnref_layer_count(const dnref *r);
int dnref_input_size(const dnref *r, int *c, int *h, int *w);
/* Runs the network on a C x H x W tensor (darknet may modify it). */
void dnref_forward(dnref *r, float *input);
/* Output of layer i from the last forward; *n receives its element count. */
const float *dnref_layer_output(const dnref *r, int i, int *n);
/* Loads path with darknet's stb loader and letterboxes it into dst
 * (C x H x W); *w, *h receive the image size. Returns 0 on success. */
int dnref_load_letterboxed(const dnref *r, const char *path, float *dst, int *w, int *h);
/* Full detection as `darknet detector test` does it, with the image decoded
 * by stb: returns the number of (box, class) pairs above thresh written to
 * out (at most cap), or -1. */
int dnref_detect(dnref *r, const char *path, float thresh, float nms, dnref_det *out, int cap);

#endif
