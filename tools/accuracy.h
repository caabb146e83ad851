/* accuracy.h - how far a precision plan's detections are from the fp32
 * reference detections, for `mpdet eval`.
 *
 * The reference of an image is the fp32 plan's output at confidence >= 0.25
 * after NMS; the plan under test is run at a low threshold (e.g. 0.05) after
 * NMS, so that its ranking can be scored as average precision, and its
 * detections at or above an operating threshold are compared box by box.
 *
 * Matching is the standard VOC/COCO greedy rule. Per class, all detections
 * of that class across all images are ranked by confidence, descending; ties
 * keep image index, then input order, so results never depend on the sort.
 * Each detection in turn takes the unmatched reference box of the same class
 * in the same image with the highest IoU (on equal IoU, the earlier one in
 * the input) if that IoU is >= the threshold, and is a false positive
 * otherwise. A reference box is matched at most once, so a second detection
 * of the same object is a false positive, and a box found with the wrong
 * class is a false negative for its true class and a false positive for the
 * other one. Reference confidences are not used.
 *
 * Degenerate cases, chosen so that "nothing to find and nothing wrong" reads
 * as perfect agreement and every mistake still shows somewhere:
 *   - no reference box at all: ap50 = ap75 = 100 and recall = 100; false
 *     positives then show in precision, images_changed and disagreement;
 *   - no detection at or above op_thresh: precision = 100 (no detection is
 *     wrong); missed boxes show in recall;
 *   - no matched pair: mean_iou = 0 if there was a reference box to match,
 *     1 if there was none;
 *   - a class with reference boxes but no correct detection has AP 0; a class
 *     with detections but no reference box is not part of the AP mean (its
 *     detections are counted as false positives everywhere else);
 *   - n == 0 is valid and reads as perfect agreement.
 * Detections below op_thresh count for AP only, not for recall, precision,
 * mean_iou, images_changed or disagreement.
 *
 * Cost: O(D log D + D * R) for D detections, R reference boxes per image. */
#ifndef MPD_ACCURACY_H
#define MPD_ACCURACY_H

#include <stdint.h>

/* One detection or reference box, in pixels, with x0 <= x1 and y0 <= y1
 * (a zero-width or zero-height box is allowed and overlaps nothing). */
typedef struct {
    int class_id; /* >= 0 */
    float conf;   /* used for ranking and op_thresh; ignored for reference boxes */
    float x0, y0, x1, y1;
} mpd_acc_box;

/* One image: its reference boxes and the plan's boxes, in any order. The
 * arrays are borrowed for the duration of the call; either may be NULL when
 * its count is 0. */
typedef struct {
    const mpd_acc_box *ref;
    int nref;
    const mpd_acc_box *det;
    int ndet;
} mpd_acc_image;

typedef struct {
    /* Percent. Per class, all-point interpolated AP (the area under the
     * monotone precision envelope, as in VOC2010+ and COCO) over all images'
     * detections of that class, at IoU >= 0.5 and >= 0.75, including
     * detections below op_thresh; then the mean over the classes that have
     * at least one reference box. */
    double ap50, ap75;
    /* Percent, at IoU >= 0.5, counting only detections with conf >= op_thresh:
     * matched / nref and matched / ndet_op. */
    double recall, precision;
    /* Mean IoU of the matched pairs at op_thresh, as a fraction in [0.5, 1]
     * (0 or 1 in the degenerate cases above), not a percentage. */
    double mean_iou;
    int classes;  /* classes with at least one reference box */
    long nref;    /* reference boxes */
    long ndet_op; /* detections with conf >= op_thresh */
    long matched; /* matched pairs at op_thresh, IoU >= 0.5 */
    /* Images whose set of class ids among detections at op_thresh differs
     * from the set of class ids of their reference boxes. */
    int images_changed;
} mpd_acc_summary;

/* Intersection over union of two boxes: inter / (area a + area b - inter),
 * in [0, 1]; 0 when the union is empty or either pointer is NULL. A box with
 * x1 < x0 or y1 < y0 counts as empty. Pure; any thread. */
double mpd_acc_iou(const mpd_acc_box *a, const mpd_acc_box *b);

/* Scores the n images' detections against their references at operating
 * threshold op_thresh (see the top of this file) and fills *out.
 *
 * disagreement is NULL or n doubles that receive, per image, at op_thresh
 * and IoU 0.5 same-class matching: false negatives + false positives + the
 * sum over matched pairs of (1 - IoU). It is 0 for an image the plan gets
 * exactly right and grows by about 1 per wrong box.
 *
 * Returns 0, MPD_EINVAL (n < 0; img NULL with n > 0; out NULL; a negative
 * count, or a NULL array with a positive count; op_thresh NaN; a box with a
 * negative class id, a non-finite coordinate or detection confidence, or
 * x1 < x0 or y1 < y0), or MPD_ENOMEM. On error *out and disagreement are
 * left untouched. Nothing is retained after the call: the caller keeps
 * ownership of img, out and disagreement, and the scratch memory is freed.
 * Pure and reentrant; any thread, concurrently on different outputs. */
int mpd_acc_evaluate(const mpd_acc_image *img, int n, float op_thresh, mpd_acc_summary *out,
                     double *disagreement);

/* How low AP50 can go on other images of the same kind: a bootstrap over
 * images. resamples times, n images are drawn from img with replacement
 * (splitmix64 seeded with seed, so a given seed always gives the same
 * answer) and scored as mpd_acc_evaluate scores them; *bound receives the
 * q-quantile of those AP50s, the k-th smallest with k = floor(q *
 * resamples) counted from 0. With q = 0.1, nine resamples in ten score at
 * least *bound: a lower confidence bound at 90 %. n == 0 gives 100.
 *
 * Why: AP50 relative to fp32 is a mean over classes, many of which have
 * only a few boxes, so it moves by a point or more between image sets; a
 * plan chosen to hold a budget on one set can miss it on the next unless
 * it holds with a margin. The bootstrap measures that margin from the
 * images themselves.
 *
 * Returns 0, MPD_EINVAL (what mpd_acc_evaluate refuses, resamples < 1, q
 * outside (0, 1), bound NULL) or MPD_ENOMEM; *bound is untouched on error.
 * Pure and reentrant. Cost: resamples x mpd_acc_evaluate. */
int mpd_acc_ap50_bound(const mpd_acc_image *img, int n, float op_thresh, int resamples, double q,
                       uint64_t seed, double *bound);

#endif
