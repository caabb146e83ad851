/* yolo.h - YOLO output decoding and non-maximum suppression, following
 * darknet's get_yolo_detections / correct_yolo_boxes / do_nms_sort so the
 * detections agree with the reference implementation. */
#ifndef MPD_YOLO_H
#define MPD_YOLO_H

#include "net.h"

typedef struct {
    float x, y, w, h; /* centre and size, relative to the image (0..1) */
} mpd__box;

typedef struct {
    mpd__box box;
    float objectness;
    float *prob; /* classes entries; 0 where below threshold or suppressed */
} mpd__det;

typedef struct {
    mpd__det *d;
    int n, cap, classes;
} mpd__dets;

/* Appends the candidates of one yolo layer's (activated) output for one
 * image: cells whose objectness > thresh. Boxes are relative to the
 * network input. Returns 0 or MPD_ENOMEM. */
int mpd__yolo_collect(const mpd_layer *l, const float *out, int net_w, int net_h, float thresh,
                      mpd__dets *dets);

/* Maps boxes from letterboxed network coordinates to coordinates relative to
 * the original im_w x im_h image. */
void mpd__yolo_correct(mpd__dets *dets, int im_w, int im_h, int net_w, int net_h);

/* darknet's do_nms_sort: per class, sort by probability and zero the
 * probability of any box whose IoU with a better one exceeds nms. Only a
 * class's nonzero candidates are ranked and compared (same result).
 * Returns 0 or MPD_ENOMEM (nothing changed). */
int mpd__nms_sort(mpd__dets *dets, float nms);

/* Keeps at most max_pairs (box, class) probabilities - the largest; the
 * rest become 0. max_pairs <= 0: no limit. Returns 0 or MPD_ENOMEM. */
int mpd__dets_limit(mpd__dets *dets, int max_pairs);

float mpd__box_iou(mpd__box a, mpd__box b);

void mpd__dets_free(mpd__dets *dets);

#endif
