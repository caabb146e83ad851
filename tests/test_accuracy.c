/* test_accuracy.c - the detection agreement metric of `mpdet eval`
 * (tools/accuracy.h) on hand-made images whose AP, recall, precision, mean
 * IoU and disagreement were computed by hand. Boxes use integer pixels so
 * that every IoU is an exact fraction. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "accuracy.h"
#include "mpd.h"
#include "testutil.h"

/* cmocka's assert_float_equal compares floats; the metric is double and the
 * hand-computed values are asked for to 1e-9. */
#define assert_near(got, want)                                                                     \
    do {                                                                                           \
        double g_ = (got), w_ = (want);                                                            \
        if (!(fabs(g_ - w_) <= 1e-9))                                                              \
            fail_msg("%s = %.12g, want %.12g", #got, g_, w_);                                      \
    } while (0)

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static mpd_acc_box bx(int cls, float conf, float x0, float y0, float x1, float y1)
{
    mpd_acc_box b = {cls, conf, x0, y0, x1, y1};
    return b;
}

static mpd_acc_image im(const mpd_acc_box *ref, int nref, const mpd_acc_box *det, int ndet)
{
    mpd_acc_image m = {ref, nref, det, ndet};
    return m;
}

/* Evaluates and fails the test unless the call succeeds. */
static mpd_acc_summary eval(const mpd_acc_image *img, int n, float op, double *dis)
{
    mpd_acc_summary s;
    assert_int_equal(mpd_acc_evaluate(img, n, op, &s, dis), 0);
    return s;
}

static void test_perfect_match(void **state)
{
    (void)state;
    mpd_acc_box r0[] = {bx(0, 1, 0, 0, 10, 10), bx(1, 1, 20, 20, 40, 50)};
    mpd_acc_box d0[] = {bx(1, .8f, 20, 20, 40, 50), bx(0, .9f, 0, 0, 10, 10)};
    mpd_acc_box r1[] = {bx(0, 1, 5, 5, 15, 25)};
    mpd_acc_box d1[] = {bx(0, .6f, 5, 5, 15, 25)};
    mpd_acc_image img[] = {im(r0, 2, d0, 2), im(r1, 1, d1, 1)};
    double dis[2] = {-1, -1};
    mpd_acc_summary s = eval(img, 2, .25f, dis);
    assert_near(s.ap50, 100);
    assert_near(s.ap75, 100);
    assert_near(s.recall, 100);
    assert_near(s.precision, 100);
    assert_near(s.mean_iou, 1);
    assert_int_equal(s.classes, 2);
    assert_int_equal(s.nref, 3);
    assert_int_equal(s.ndet_op, 3);
    assert_int_equal(s.matched, 3);
    assert_int_equal(s.images_changed, 0);
    assert_near(dis[0], 0);
    assert_near(dis[1], 0);
}

/* Two classes with one box each, one found: class APs 1 and 0, mean 50. */
static void test_one_missed_box(void **state)
{
    (void)state;
    mpd_acc_box r[] = {bx(0, 1, 0, 0, 10, 10), bx(1, 1, 20, 20, 30, 30)};
    mpd_acc_box d[] = {bx(0, .9f, 0, 0, 10, 10)};
    mpd_acc_image img[] = {im(r, 2, d, 1)};
    double dis[1];
    mpd_acc_summary s = eval(img, 1, .25f, dis);
    assert_near(s.ap50, 50);
    assert_near(s.ap75, 50);
    assert_near(s.recall, 50);
    assert_near(s.precision, 100);
    assert_near(s.mean_iou, 1);
    assert_int_equal(s.classes, 2);
    assert_int_equal(s.matched, 1);
    assert_int_equal(s.images_changed, 1);
    assert_near(dis[0], 1);
}

/* A 10x10 box shifted by 2 px overlaps 80 of a 120 px union, IoU 2/3: a hit
 * at 0.5, a miss at 0.75. IoU exactly 0.5 is a hit at 0.5 (the test is >=). */
static void test_shifted_box(void **state)
{
    (void)state;
    mpd_acc_box a = bx(0, 1, 0, 0, 10, 10), shifted = bx(0, 1, 2, 0, 12, 10);
    mpd_acc_box half = bx(0, 1, 0, 0, 5, 10), far = bx(0, 1, 30, 30, 40, 40);
    mpd_acc_box touching = bx(0, 1, 10, 0, 20, 10), point = bx(0, 1, 3, 3, 3, 3);
    assert_near(mpd_acc_iou(&a, &shifted), 2.0 / 3);
    assert_near(mpd_acc_iou(&shifted, &a), 2.0 / 3);
    assert_near(mpd_acc_iou(&a, &a), 1);
    assert_near(mpd_acc_iou(&a, &half), .5);
    assert_near(mpd_acc_iou(&a, &far), 0);
    assert_near(mpd_acc_iou(&a, &touching), 0);
    assert_near(mpd_acc_iou(&point, &point), 0);
    assert_near(mpd_acc_iou(&a, NULL), 0);

    mpd_acc_box r[] = {bx(0, 1, 0, 0, 10, 10), bx(1, 1, 20, 0, 30, 10), bx(2, 1, 0, 20, 10, 30)};
    mpd_acc_box d[] = {bx(0, .9f, 0, 0, 10, 10), bx(1, .8f, 22, 0, 32, 10),
                       bx(2, .7f, 0, 20, 5, 30)};
    mpd_acc_image img[] = {im(r, 3, d, 3)};
    double dis[1];
    mpd_acc_summary s = eval(img, 1, .25f, dis);
    assert_near(s.ap50, 100);
    assert_near(s.ap75, 100.0 / 3);
    assert_near(s.recall, 100);
    assert_near(s.precision, 100);
    assert_near(s.mean_iou, (1 + 2.0 / 3 + .5) / 3);
    assert_int_equal(s.images_changed, 0);
    assert_near(dis[0], 1.0 / 3 + .5);
}

/* Image 0's class-0 object is reported as class 1: a miss for class 0 and a
 * false positive for class 1, which outranks image 1's correct class-1 box.
 * Class 0: AP 0. Class 1: FP then TP, precisions 0, 1/2, AP 1/2. */
static void test_class_confusion(void **state)
{
    (void)state;
    mpd_acc_box r0[] = {bx(0, 1, 0, 0, 10, 10)};
    mpd_acc_box d0[] = {bx(1, .9f, 0, 0, 10, 10)};
    mpd_acc_box r1[] = {bx(1, 1, 0, 0, 10, 10)};
    mpd_acc_box d1[] = {bx(1, .8f, 0, 0, 10, 10)};
    mpd_acc_image img[] = {im(r0, 1, d0, 1), im(r1, 1, d1, 1)};
    double dis[2];
    mpd_acc_summary s = eval(img, 2, .25f, dis);
    assert_near(s.ap50, 25);
    assert_near(s.ap75, 25);
    assert_near(s.recall, 50);
    assert_near(s.precision, 50);
    assert_near(s.mean_iou, 1);
    assert_int_equal(s.classes, 2);
    assert_int_equal(s.images_changed, 1);
    assert_near(dis[0], 2);
    assert_near(dis[1], 0);

    /* Alone, the confused image has nothing right at all. */
    s = eval(img, 1, .25f, dis);
    assert_near(s.ap50, 0);
    assert_near(s.recall, 0);
    assert_near(s.precision, 0);
    assert_near(s.mean_iou, 0);
    assert_int_equal(s.classes, 1);
    assert_int_equal(s.matched, 0);
}

/* A second, lower-ranked box on an already found object (IoU 9/11) is a
 * false positive: precision halves, but it ranks after the only true
 * positive, so AP stays 100. */
static void test_lower_confidence_duplicate(void **state)
{
    (void)state;
    mpd_acc_box r[] = {bx(0, 1, 0, 0, 10, 10)};
    mpd_acc_box d[] = {bx(0, .8f, 1, 0, 11, 10), bx(0, .9f, 0, 0, 10, 10)};
    mpd_acc_image img[] = {im(r, 1, d, 2)};
    double dis[1];
    mpd_acc_summary s = eval(img, 1, .25f, dis);
    assert_near(s.ap50, 100);
    assert_near(s.ap75, 100);
    assert_near(s.recall, 100);
    assert_near(s.precision, 50);
    assert_near(s.mean_iou, 1);
    assert_int_equal(s.ndet_op, 2);
    assert_int_equal(s.matched, 1);
    assert_int_equal(s.images_changed, 0);
    assert_near(dis[0], 1);
}

/* The duplicate in image 0 (conf 0.8) outranks image 1's true positive
 * (0.7): ranks TP, FP, TP with precisions 1, 1/2, 2/3, envelope 1, 2/3,
 * 2/3, AP (1 + 2/3) / 2 = 5/6. Ranked below it (0.6), AP is 100 again. */
static void test_duplicate_ranked_above_true_positive(void **state)
{
    (void)state;
    mpd_acc_box r[] = {bx(0, 1, 0, 0, 10, 10)};
    mpd_acc_box d0[] = {bx(0, .9f, 0, 0, 10, 10), bx(0, .8f, 1, 0, 11, 10)};
    mpd_acc_box d1[] = {bx(0, .7f, 0, 0, 10, 10)};
    mpd_acc_image img[] = {im(r, 1, d0, 2), im(r, 1, d1, 1)};
    double dis[2];
    mpd_acc_summary s = eval(img, 2, .25f, dis);
    assert_near(s.ap50, 500.0 / 6);
    assert_near(s.ap75, 500.0 / 6);
    assert_near(s.recall, 100);
    assert_near(s.precision, 200.0 / 3);
    assert_near(dis[0], 1);
    assert_near(dis[1], 0);

    d0[1].conf = .6f;
    s = eval(img, 2, .25f, dis);
    assert_near(s.ap50, 100);
    assert_near(s.precision, 200.0 / 3);
}

/* The same four detections (three hits, one false positive) ranked two
 * ways: recall and precision at the operating point do not change, AP does.
 * FP first: precisions 0, 1/2, 2/3, 3/4, envelope 3/4 throughout, AP 3/4.
 * Then the envelope itself: TP, FP, FP, TP, TP has precisions 1, 1/2, 1/3,
 * 1/2, 3/5 and envelope 1, 3/5, 3/5, 3/5, 3/5, so AP = (1 + 3/5 + 3/5) / 3
 * = 11/15, where raw precisions would give (1 + 1/2 + 3/5) / 3 = 7/10. */
static void test_false_positive_ranked_first(void **state)
{
    (void)state;
    mpd_acc_box r[] = {bx(0, 1, 0, 0, 10, 10), bx(0, 1, 20, 0, 30, 10), bx(0, 1, 40, 0, 50, 10)};
    mpd_acc_box d[] = {bx(0, .95f, 100, 100, 110, 110), bx(0, .9f, 0, 0, 10, 10),
                       bx(0, .85f, 20, 0, 30, 10), bx(0, .8f, 40, 0, 50, 10)};
    mpd_acc_image img[] = {im(r, 3, d, 4)};
    mpd_acc_summary s = eval(img, 1, .05f, NULL);
    assert_near(s.ap50, 75);
    assert_near(s.recall, 100);
    assert_near(s.precision, 75);

    d[0].conf = .1f;
    s = eval(img, 1, .05f, NULL);
    assert_near(s.ap50, 100);
    assert_near(s.recall, 100);
    assert_near(s.precision, 75);

    mpd_acc_box e[] = {bx(0, .9f, 0, 0, 10, 10), bx(0, .8f, 100, 100, 110, 110),
                       bx(0, .7f, 200, 200, 210, 210), bx(0, .6f, 20, 0, 30, 10),
                       bx(0, .5f, 40, 0, 50, 10)};
    img[0] = im(r, 3, e, 5);
    s = eval(img, 1, .05f, NULL);
    assert_near(s.ap50, 1100.0 / 15);
    assert_near(s.precision, 60);
}

/* An image with neither references nor detections changes nothing. One
 * with no reference but two detections of a class no image has lowers
 * precision and counts as changed, but leaves AP alone: that class has no
 * reference box, so it is not part of the mean. */
static void test_empty_images(void **state)
{
    (void)state;
    mpd_acc_box r[] = {bx(0, 1, 0, 0, 10, 10)};
    mpd_acc_box d[] = {bx(0, .9f, 0, 0, 10, 10)};
    mpd_acc_box fp[] = {bx(5, .9f, 0, 0, 10, 10), bx(5, .3f, 50, 50, 60, 60)};
    mpd_acc_image img[] = {im(NULL, 0, NULL, 0), im(r, 1, d, 1), im(NULL, 0, fp, 2)};
    double dis[3];
    mpd_acc_summary s = eval(img, 2, .25f, dis);
    assert_near(s.ap50, 100);
    assert_near(s.recall, 100);
    assert_near(s.precision, 100);
    assert_int_equal(s.images_changed, 0);
    assert_near(dis[0], 0);
    assert_near(dis[1], 0);

    s = eval(img, 3, .25f, dis);
    assert_near(s.ap50, 100);
    assert_near(s.ap75, 100);
    assert_near(s.recall, 100);
    assert_near(s.precision, 100.0 / 3);
    assert_near(s.mean_iou, 1);
    assert_int_equal(s.classes, 1);
    assert_int_equal(s.ndet_op, 3);
    assert_int_equal(s.images_changed, 1);
    assert_near(dis[0], 0);
    assert_near(dis[1], 0);
    assert_near(dis[2], 2);
}

/* Nothing to find reads as AP and recall 100; false positives then show in
 * precision. No image at all is perfect agreement. */
static void test_no_reference_boxes_at_all(void **state)
{
    (void)state;
    mpd_acc_summary s = eval(NULL, 0, .25f, NULL);
    assert_near(s.ap50, 100);
    assert_near(s.ap75, 100);
    assert_near(s.recall, 100);
    assert_near(s.precision, 100);
    assert_near(s.mean_iou, 1);
    assert_int_equal(s.classes, 0);
    assert_int_equal(s.nref, 0);
    assert_int_equal(s.ndet_op, 0);
    assert_int_equal(s.images_changed, 0);

    mpd_acc_box d[] = {bx(0, .9f, 0, 0, 10, 10), bx(3, .1f, 20, 20, 30, 30)};
    mpd_acc_image img[] = {im(NULL, 0, d, 2)};
    double dis[1];
    s = eval(img, 1, .25f, dis);
    assert_near(s.ap50, 100);
    assert_near(s.ap75, 100);
    assert_near(s.recall, 100);
    assert_near(s.precision, 0);
    assert_near(s.mean_iou, 1);
    assert_int_equal(s.ndet_op, 1);
    assert_int_equal(s.matched, 0);
    assert_int_equal(s.images_changed, 1);
    assert_near(dis[0], 1);
}

/* Detections below op_thresh are ranked for AP only. Here a hit at 0.1
 * behind a false positive at 0.2 lifts AP from 50 to (1 + 2/3) / 2 = 5/6,
 * while recall, precision, the class set and disagreement only see the
 * detection at 0.9. */
static void test_low_confidence_affects_ap_only(void **state)
{
    (void)state;
    mpd_acc_box r[] = {bx(0, 1, 0, 0, 10, 10), bx(0, 1, 20, 0, 30, 10)};
    mpd_acc_box d[] = {bx(0, .9f, 0, 0, 10, 10), bx(0, .2f, 100, 100, 110, 110),
                       bx(0, .1f, 20, 0, 30, 10)};
    mpd_acc_image img[] = {im(r, 2, d, 3)};
    double dis[1];
    mpd_acc_summary s = eval(img, 1, .25f, dis);
    assert_near(s.ap50, 500.0 / 6);
    assert_near(s.ap75, 500.0 / 6);
    assert_near(s.recall, 50);
    assert_near(s.precision, 100);
    assert_near(s.mean_iou, 1);
    assert_int_equal(s.ndet_op, 1);
    assert_int_equal(s.matched, 1);
    assert_int_equal(s.images_changed, 0);
    assert_near(dis[0], 1);

    img[0].ndet = 1;
    s = eval(img, 1, .25f, dis);
    assert_near(s.ap50, 50);
    assert_near(s.recall, 50);
    assert_near(s.precision, 100);
    assert_near(dis[0], 1);
}

/* Per image: misses + false positives + (1 - IoU) of each matched pair, at
 * the operating threshold. */
static void test_disagreement_values(void **state)
{
    (void)state;
    mpd_acc_box r0[] = {bx(0, 1, 0, 0, 10, 10), bx(1, 1, 20, 0, 30, 10)};
    mpd_acc_box d0[] = {bx(0, .9f, 0, 0, 10, 10), bx(1, .9f, 20, 0, 30, 10)};
    /* A shifted hit (IoU 2/3) and a miss: 1/3 + 1. */
    mpd_acc_box d1[] = {bx(0, .9f, 2, 0, 12, 10)};
    /* A hit, a duplicate, a stray class and one ignored below threshold: 2. */
    mpd_acc_box r2[] = {bx(0, 1, 0, 0, 10, 10)};
    mpd_acc_box d2[] = {bx(0, .9f, 0, 0, 10, 10), bx(0, .8f, 1, 0, 11, 10),
                        bx(2, .7f, 50, 50, 60, 60), bx(0, .1f, 70, 70, 80, 80)};
    /* The wrong class on the right box: 2. */
    mpd_acc_box r3[] = {bx(1, 1, 0, 0, 10, 10)};
    mpd_acc_box d3[] = {bx(0, .9f, 0, 0, 10, 10)};
    mpd_acc_image img[] = {im(r0, 2, d0, 2), im(r0, 2, d1, 1), im(r2, 1, d2, 4), im(r3, 1, d3, 1)};
    double dis[4];
    mpd_acc_summary s = eval(img, N_OF(img), .25f, dis);
    assert_near(dis[0], 0);
    assert_near(dis[1], 4.0 / 3);
    assert_near(dis[2], 2);
    assert_near(dis[3], 2);
    assert_int_equal(s.nref, 6);
    assert_int_equal(s.ndet_op, 7);
    assert_int_equal(s.matched, 4);
    assert_near(s.recall, 400.0 / 6);
    assert_near(s.precision, 400.0 / 7);
    assert_near(s.mean_iou, (3 + 2.0 / 3) / 4);
    assert_int_equal(s.images_changed, 3);

    /* Asking for no disagreement array changes nothing else. */
    mpd_acc_summary t = eval(img, N_OF(img), .25f, NULL);
    assert_near(t.ap50, s.ap50);
    assert_near(t.mean_iou, s.mean_iou);
    assert_int_equal(t.matched, s.matched);
}

/* A detection takes the free reference it overlaps most, not the first one:
 * D1 overlaps R1 by 7/13 and R2 by 9/11 and takes R2, leaving R1 to D2
 * (IoU 1). Taking R1 would have left D2 with R2 at 3/7, a miss. The input
 * order of either array does not matter, and equal confidences rank by
 * image: image 0's false positive first, so AP is 1/2 * 1/2 = 25, not 50. */
static void test_greedy_match_and_deterministic_order(void **state)
{
    (void)state;
    mpd_acc_box r[] = {bx(0, 1, 0, 0, 10, 10), bx(0, 1, 4, 0, 14, 10)};
    mpd_acc_box d[] = {bx(0, .9f, 3, 0, 13, 10), bx(0, .8f, 0, 0, 10, 10)};
    mpd_acc_image img[] = {im(r, 2, d, 2)};
    double dis[1];
    mpd_acc_summary s = eval(img, 1, .25f, dis);
    assert_near(s.ap50, 100);
    assert_near(s.ap75, 100);
    assert_int_equal(s.matched, 2);
    assert_near(s.mean_iou, (9.0 / 11 + 1) / 2);
    assert_near(dis[0], 2.0 / 11);

    mpd_acc_box rr[] = {r[1], r[0]}, dr[] = {d[1], d[0]};
    img[0] = im(rr, 2, dr, 2);
    mpd_acc_summary t = eval(img, 1, .25f, dis);
    assert_near(t.ap50, s.ap50);
    assert_near(t.ap75, s.ap75);
    assert_near(t.mean_iou, s.mean_iou);
    assert_near(dis[0], 2.0 / 11);

    mpd_acc_box one[] = {bx(0, 1, 0, 0, 10, 10)};
    mpd_acc_box miss[] = {bx(0, .5f, 50, 50, 60, 60)}, hit[] = {bx(0, .5f, 0, 0, 10, 10)};
    mpd_acc_image tie[] = {im(one, 1, miss, 1), im(one, 1, hit, 1)};
    s = eval(tie, 2, .25f, NULL);
    assert_near(s.ap50, 25);
}

/* Every bad argument is refused before anything is written. */
static void test_invalid_arguments(void **state)
{
    (void)state;
    mpd_acc_box r[] = {bx(0, 1, 0, 0, 10, 10)};
    mpd_acc_box d[] = {bx(0, .9f, 0, 0, 10, 10)};
    mpd_acc_image img[] = {im(r, 1, d, 1)};
    mpd_acc_summary s;
    memset(&s, 0x5a, sizeof s);
    mpd_acc_summary before = s;
    double dis[1] = {-7};

    assert_int_equal(mpd_acc_evaluate(img, -1, .25f, &s, dis), MPD_EINVAL);
    assert_int_equal(mpd_acc_evaluate(NULL, 1, .25f, &s, dis), MPD_EINVAL);
    assert_int_equal(mpd_acc_evaluate(img, 1, .25f, NULL, dis), MPD_EINVAL);
    assert_int_equal(mpd_acc_evaluate(img, 1, NAN, &s, dis), MPD_EINVAL);

    mpd_acc_image bad = im(r, -1, d, 1);
    assert_int_equal(mpd_acc_evaluate(&bad, 1, .25f, &s, dis), MPD_EINVAL);
    bad = im(r, 1, d, -1);
    assert_int_equal(mpd_acc_evaluate(&bad, 1, .25f, &s, dis), MPD_EINVAL);
    bad = im(NULL, 1, d, 1);
    assert_int_equal(mpd_acc_evaluate(&bad, 1, .25f, &s, dis), MPD_EINVAL);
    bad = im(r, 1, NULL, 1);
    assert_int_equal(mpd_acc_evaluate(&bad, 1, .25f, &s, dis), MPD_EINVAL);

    mpd_acc_box wrong[] = {bx(-1, .9f, 0, 0, 10, 10), bx(0, NAN, 0, 0, 10, 10),
                           bx(0, .9f, 10, 0, 0, 10), bx(0, .9f, 0, 10, 10, 0),
                           bx(0, .9f, 0, 0, INFINITY, 10)};
    for (int k = 0; k < N_OF(wrong); k++) {
        bad = im(r, 1, &wrong[k], 1);
        assert_int_equal(mpd_acc_evaluate(&bad, 1, .25f, &s, dis), MPD_EINVAL);
        /* The same box as a reference is refused too, except for the
         * confidence, which a reference box does not use. */
        bad = im(&wrong[k], 1, d, 1);
        assert_int_equal(mpd_acc_evaluate(&bad, 1, .25f, &s, dis), k == 1 ? 0 : MPD_EINVAL);
        if (k == 1) {
            memcpy(&s, &before, sizeof s);
            dis[0] = -7;
        }
    }
    assert_memory_equal(&s, &before, sizeof s);
    assert_near(dis[0], -7);
}

/* 1000 images of 100 detections each, all exact: the scale `mpdet eval`
 * runs at, finishing in a moment because matching only looks inside each
 * image. Every image also has one low-ranked duplicate of its first box. */
/* The bootstrap bound, by hand: image A finds its one box, image B misses
 * its one box (same class). A resample of two images is {A,A} (AP50 100)
 * with probability 1/4, {B,B} (0: the class is present and nothing is
 * found) 1/4, and {A,B} in either order (50: half the boxes found at
 * precision 1) 1/2. So the 0.1-, 0.5- and 0.9-quantiles are 0, 50 and
 * 100; with 400 resamples each is 6 or more standard deviations from
 * flipping, whatever the seed. */
static void test_ap50_bound_by_hand(void **state)
{
    (void)state;
    mpd_acc_box r[] = {bx(0, 1, 0, 0, 10, 10)};
    mpd_acc_box d[] = {bx(0, .9f, 0, 0, 10, 10)};
    mpd_acc_image img[] = {im(r, 1, d, 1), im(r, 1, NULL, 0)};
    double lo = -1, mid = -1, hi = -1;
    assert_int_equal(mpd_acc_ap50_bound(img, 2, .25f, 400, .1, 1, &lo), 0);
    assert_int_equal(mpd_acc_ap50_bound(img, 2, .25f, 400, .5, 2, &mid), 0);
    assert_int_equal(mpd_acc_ap50_bound(img, 2, .25f, 400, .9, 3, &hi), 0);
    assert_near(lo, 0);
    assert_near(mid, 50);
    assert_near(hi, 100);
    /* Perfect agreement stays perfect in every resample; no images is perfect. */
    assert_int_equal(mpd_acc_ap50_bound(img, 1, .25f, 50, .1, 7, &lo), 0);
    assert_near(lo, 100);
    assert_int_equal(mpd_acc_ap50_bound(NULL, 0, .25f, 50, .1, 7, &lo), 0);
    assert_near(lo, 100);
}

/* Ten images, seven found and three missed: the point estimate is 70; the
 * lower bound is below it, the same for the same seed, and ordered by q. */
static void test_ap50_bound_is_a_lower_bound(void **state)
{
    (void)state;
    mpd_acc_box r[] = {bx(0, 1, 0, 0, 10, 10)};
    mpd_acc_box d[] = {bx(0, .9f, 0, 0, 10, 10)};
    mpd_acc_image img[10];
    for (int i = 0; i < 10; i++)
        img[i] = im(r, 1, i < 7 ? d : NULL, i < 7 ? 1 : 0);
    mpd_acc_summary s = eval(img, 10, .25f, NULL);
    assert_near(s.ap50, 70);
    double a = -1, b = -1, c = -1;
    assert_int_equal(mpd_acc_ap50_bound(img, 10, .25f, 200, .1, 42, &a), 0);
    assert_int_equal(mpd_acc_ap50_bound(img, 10, .25f, 200, .1, 42, &b), 0);
    assert_int_equal(mpd_acc_ap50_bound(img, 10, .25f, 200, .02, 42, &c), 0);
    assert_near(a, b);
    assert_true(a < 70 && a >= 30);
    assert_true(c <= a);
    /* What it refuses. */
    double keep = 123;
    assert_int_equal(mpd_acc_ap50_bound(img, 10, .25f, 0, .1, 1, &keep), MPD_EINVAL);
    assert_int_equal(mpd_acc_ap50_bound(img, 10, .25f, 10, 0, 1, &keep), MPD_EINVAL);
    assert_int_equal(mpd_acc_ap50_bound(img, 10, .25f, 10, 1, 1, &keep), MPD_EINVAL);
    assert_int_equal(mpd_acc_ap50_bound(img, 10, .25f, 10, .1, 1, NULL), MPD_EINVAL);
    assert_int_equal(mpd_acc_ap50_bound(NULL, 3, .25f, 10, .1, 1, &keep), MPD_EINVAL);
    assert_near(keep, 123);
}

static void test_large_input(void **state)
{
    (void)state;
    enum { IMAGES = 1000, BOXES = 100 };
    mpd_acc_box *ref = tu_xmalloc(sizeof *ref * IMAGES * BOXES);
    mpd_acc_box *det = tu_xmalloc(sizeof *det * IMAGES * (BOXES + 1));
    mpd_acc_image *img = tu_xmalloc(sizeof *img * IMAGES);
    double *dis = tu_xmalloc(sizeof *dis * IMAGES);
    for (int i = 0; i < IMAGES; i++) {
        mpd_acc_box *r = ref + (size_t)i * BOXES, *d = det + (size_t)i * (BOXES + 1);
        for (int j = 0; j < BOXES; j++) {
            float x = (float)(j % 10 * 20), y = (float)(j / 10 * 20);
            r[j] = bx((i + j) % 80, 1, x, y, x + 10, y + 10);
            d[j] = r[j];
            d[j].conf = .3f + .6f * (float)((i * BOXES + j) % 997) / 997.f;
        }
        d[BOXES] = r[0];
        d[BOXES].conf = .26f;
        img[i] = im(r, BOXES, d, BOXES + 1);
    }
    mpd_acc_summary s = eval(img, IMAGES, .25f, dis);
    assert_near(s.ap50, 100);
    assert_near(s.ap75, 100);
    assert_near(s.recall, 100);
    assert_near(s.precision, 100.0 * BOXES / (BOXES + 1));
    assert_near(s.mean_iou, 1);
    assert_int_equal(s.classes, 80);
    assert_int_equal(s.nref, (long)IMAGES * BOXES);
    assert_int_equal(s.matched, (long)IMAGES * BOXES);
    assert_int_equal(s.images_changed, 0);
    for (int i = 0; i < IMAGES; i++)
        assert_near(dis[i], 1);
    free(ref);
    free(det);
    free(img);
    free(dis);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_perfect_match),
        cmocka_unit_test(test_one_missed_box),
        cmocka_unit_test(test_shifted_box),
        cmocka_unit_test(test_class_confusion),
        cmocka_unit_test(test_lower_confidence_duplicate),
        cmocka_unit_test(test_duplicate_ranked_above_true_positive),
        cmocka_unit_test(test_false_positive_ranked_first),
        cmocka_unit_test(test_empty_images),
        cmocka_unit_test(test_no_reference_boxes_at_all),
        cmocka_unit_test(test_low_confidence_affects_ap_only),
        cmocka_unit_test(test_disagreement_values),
        cmocka_unit_test(test_greedy_match_and_deterministic_order),
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test(test_large_input),
        cmocka_unit_test(test_ap50_bound_by_hand),
        cmocka_unit_test(test_ap50_bound_is_a_lower_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
