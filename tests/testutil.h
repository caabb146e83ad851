/* testutil.h - shared helpers for the cmocka test programs. */
#ifndef MPD_TESTUTIL_H
#define MPD_TESTUTIL_H

#include <stddef.h>

#include "engine.h"
#include "net.h"

/* The model directory: $MPDET_MODEL_DIR, else "models" (the bootstrap puts
 * yolov3-tiny.cfg, yolov3-tiny.weights and coco.names there). */
const char *tu_model_dir(void);
/* "<model dir>/<name>" in a static buffer (one per call site is enough:
 * each call returns a fresh strdup the caller may leak in tests). */
char *tu_model(const char *name);
/* Debian darknet's sample data directory (/usr/share/darknet/data). */
char *tu_darknet_data(const char *name);
/* Writes text to a new temporary file and returns its path (strdup). */
char *tu_write_temp(const char *text, size_t len);
/* Writes a darknet weights file (version 0.2 header, then the n floats of
 * w) to a new temporary file and returns its path (strdup), or NULL. */
char *tu_write_weights(const float *w, size_t n);
/* Fills x with deterministic pseudo-random floats in [lo, hi). */
void tu_fill_random(float *x, size_t n, float lo, float hi, unsigned seed);
/* Parses cfg text (named name in messages) and builds the graph. Returns
 * the net, or NULL with the reason in msg. */
mpd_net *tu_net_from_text(const char *text, const char *name, char *msg, size_t msglen);

/* Largest |a[i] - b[i]| and largest |b[i]|. */
void tu_max_diff(const float *a, const float *b, size_t n, double *max_abs, double *max_ref);

/* rms(a - ref) / rms(ref), the relative RMS error of a against ref; the
 * absolute RMS of a - ref where ref is all 0. */
double tu_rel_rms(const float *a, const float *ref, size_t n);
/* 0 when got has exactly ref's detections, bit for bit (a batch against
 * single passes); else nonzero with the first difference in why. */
int tu_detections_differ(const mpd_result *got, const mpd_result *ref, char *why, size_t len);
/* malloc that never returns NULL (a test without memory stops, saying so). */
void *tu_xmalloc(size_t n);

#endif
