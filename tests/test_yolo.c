/* test_yolo.c - YOLO decoding (host/yolo.c): IoU, darknet's do_nms_sort,
 * candidate collection from a synthetic activated yolo output, and the
 * letterbox correction, all against values worked out here. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "mpd.h"
#include "net.h"
#include "testutil.h"
#include "yolo.h"

static char msg[1024];

static mpd__box B(float x, float y, float w, float h)
{
    mpd__box b = {x, y, w, h};
    return b;
}

#define NEAR(a, b, tol) assert_true(fabs((double)(a) - (double)(b)) <= (tol))

/* ---- IoU ----------------------------------------------------------------- */

static void test_iou_identical_is_one(void **state)
{
    (void)state;
    NEAR(mpd__box_iou(B(.5f, .5f, .2f, .3f), B(.5f, .5f, .2f, .3f)), 1.0, 1e-6);
    NEAR(mpd__box_iou(B(10, 20, 4, 8), B(10, 20, 4, 8)), 1.0, 1e-6);
}

static void test_iou_disjoint_is_zero(void **state)
{
    (void)state;
    assert_true(mpd__box_iou(B(.2f, .2f, .1f, .1f), B(.8f, .8f, .1f, .1f)) == 0.f);
    /* Overlapping in x only. */
    assert_true(mpd__box_iou(B(.5f, .2f, .4f, .1f), B(.5f, .8f, .4f, .1f)) == 0.f);
    /* Touching edges: zero area. */
    assert_true(mpd__box_iou(B(0.5f, 0.5f, 1, 1), B(1.5f, 0.5f, 1, 1)) == 0.f);
    /* Degenerate boxes do not divide by zero. */
    assert_true(mpd__box_iou(B(0, 0, 0, 0), B(0, 0, 0, 0)) == 0.f);
}

static void test_iou_half_overlap(void **state)
{
    (void)state;
    /* Unit squares shifted by half a width: inter 0.5, union 1.5. */
    NEAR(mpd__box_iou(B(0.5f, 0.5f, 1, 1), B(1.0f, 0.5f, 1, 1)), 1.0 / 3, 1e-6);
    NEAR(mpd__box_iou(B(1.0f, 0.5f, 1, 1), B(0.5f, 0.5f, 1, 1)), 1.0 / 3, 1e-6);
    /* Shifted half in both directions: inter .25, union 1.75. */
    NEAR(mpd__box_iou(B(0.5f, 0.5f, 1, 1), B(1.0f, 1.0f, 1, 1)), 0.25 / 1.75, 1e-6);
}

static void test_iou_contained(void **state)
{
    (void)state;
    /* Quarter-area box inside: inter .25, union 1. */
    NEAR(mpd__box_iou(B(0.5f, 0.5f, 1, 1), B(0.5f, 0.5f, 0.5f, 0.5f)), 0.25, 1e-6);
    /* Off-centre but inside. */
    NEAR(mpd__box_iou(B(0.5f, 0.5f, 1, 1), B(0.2f, 0.7f, 0.2f, 0.4f)), 0.08, 1e-6);
}

/* ---- NMS ------------------------------------------------------------------ */

static void add_det(mpd__dets *d, mpd__box box, float obj, int cls, float p)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 8;
        d->d = realloc(d->d, (size_t)d->cap * sizeof(*d->d));
        assert_non_null(d->d);
    }
    mpd__det *x = &d->d[d->n++];
    x->box = box;
    x->objectness = obj;
    x->prob = calloc((size_t)d->classes, sizeof(float));
    assert_non_null(x->prob);
    if (cls >= 0)
        x->prob[cls] = p;
}

/* Finds the candidate by its (unique) objectness; NMS reorders them. */
static const mpd__det *by_obj(const mpd__dets *d, float obj)
{
    for (int i = 0; i < d->n; i++)
        if (d->d[i].objectness == obj)
            return &d->d[i];
    fail_msg("no candidate with objectness %g", (double)obj);
    return NULL;
}

static void test_nms_same_class_overlap_suppresses_weaker(void **state)
{
    (void)state;
    mpd__dets d = {.classes = 2};
    /* IoU: inter .38*.4 = .152, union .32 - .152 = .168: 0.905. The weaker
     * one comes first to show NMS ranks by probability, not position. */
    add_det(&d, B(.50f, .5f, .4f, .4f), .61f, 0, .6f);
    add_det(&d, B(.52f, .5f, .4f, .4f), .91f, 0, .9f);
    NEAR(mpd__box_iou(d.d[0].box, d.d[1].box), .152 / .168, 1e-5);
    mpd__nms_sort(&d, .45f);
    assert_int_equal(d.n, 2);
    assert_true(by_obj(&d, .91f)->prob[0] == .9f);
    assert_true(by_obj(&d, .61f)->prob[0] == 0.f);
    mpd__dets_free(&d);
    assert_null(d.d);
    assert_int_equal(d.n, 0);
}

static void test_nms_different_classes_both_kept(void **state)
{
    (void)state;
    mpd__dets d = {.classes = 2};
    add_det(&d, B(.50f, .5f, .4f, .4f), .61f, 0, .6f);
    add_det(&d, B(.52f, .5f, .4f, .4f), .91f, 1, .9f);
    mpd__nms_sort(&d, .45f);
    assert_true(by_obj(&d, .61f)->prob[0] == .6f);
    assert_true(by_obj(&d, .91f)->prob[1] == .9f);
    mpd__dets_free(&d);
}

static void test_nms_low_iou_both_kept(void **state)
{
    (void)state;
    mpd__dets d = {.classes = 1};
    /* inter .05*.2 = .01, union .08 - .01 = .07: IoU 0.143 */
    add_det(&d, B(.30f, .5f, .2f, .2f), .71f, 0, .7f);
    add_det(&d, B(.45f, .5f, .2f, .2f), .81f, 0, .8f);
    NEAR(mpd__box_iou(d.d[0].box, d.d[1].box), 1.0 / 7, 1e-5);
    mpd__nms_sort(&d, .45f);
    assert_true(by_obj(&d, .71f)->prob[0] == .7f);
    assert_true(by_obj(&d, .81f)->prob[0] == .8f);
    /* With a threshold below that IoU the weaker goes. */
    mpd__nms_sort(&d, .1f);
    assert_true(by_obj(&d, .71f)->prob[0] == 0.f);
    assert_true(by_obj(&d, .81f)->prob[0] == .8f);
    mpd__dets_free(&d);
}

static void test_nms_suppressed_box_does_not_suppress(void **state)
{
    (void)state;
    mpd__dets d = {.classes = 1};
    /* A overlaps B a lot, B overlaps C a lot, A and C barely. */
    add_det(&d, B(.30f, .5f, .2f, .2f), .701f, 0, .7f); /* C */
    add_det(&d, B(.20f, .5f, .2f, .2f), .901f, 0, .9f); /* A */
    add_det(&d, B(.25f, .5f, .2f, .2f), .801f, 0, .8f); /* B */
    assert_true(mpd__box_iou(d.d[1].box, d.d[2].box) > .45f);
    assert_true(mpd__box_iou(d.d[0].box, d.d[2].box) > .45f);
    assert_true(mpd__box_iou(d.d[0].box, d.d[1].box) < .45f);
    mpd__nms_sort(&d, .45f);
    assert_true(by_obj(&d, .901f)->prob[0] == .9f);
    assert_true(by_obj(&d, .801f)->prob[0] == 0.f);
    assert_true(by_obj(&d, .701f)->prob[0] == .7f);
    mpd__dets_free(&d);
}

static void test_nms_zero_objectness_not_compared(void **state)
{
    (void)state;
    /* darknet moves objectness == 0 candidates to the end and leaves them
     * out of the comparison altogether. */
    mpd__dets d = {.classes = 1};
    add_det(&d, B(.5f, .5f, .4f, .4f), 0.f, 0, .95f);
    add_det(&d, B(.5f, .5f, .4f, .4f), .9f, 0, .9f);
    mpd__nms_sort(&d, .45f);
    assert_true(by_obj(&d, .9f)->prob[0] == .9f);
    assert_true(by_obj(&d, 0.f)->prob[0] == .95f);
    mpd__dets_free(&d);
}

/* ---- collecting candidates ------------------------------------------------ */

/* 64x32 input, a 1x1 stride-8 conv -> 8 x 4 grid, 2 anchors of 3, 2 classes. */
static const char *YOLO_CFG = "[net]\nwidth=64\nheight=32\nchannels=3\n"
                              "[convolutional]\nfilters=14\nsize=1\nstride=8\nactivation=linear\n"
                              "[yolo]\nmask=1,2\nanchors=10,14, 23,27, 37,58\nclasses=2\nnum=3\n";

static mpd_net *yolo_net(void)
{
    mpd_net *net = tu_net_from_text(YOLO_CFG, "yolo.cfg", msg, sizeof(msg));
    if (!net)
        print_error("%s\n", msg);
    assert_non_null(net);
    assert_int_equal(net->layers[1].kind, MPD_LAYER_YOLO);
    assert_int_equal(net->layers[1].out_w, 8);
    assert_int_equal(net->layers[1].out_h, 4);
    assert_int_equal(net->layers[1].out_c, 14);
    return net;
}

enum { LW = 8, LH = 4, PLANE = LW * LH, CLASSES = 2, ENTRIES = CLASSES + 5 };

static float *cell(float *out, int anchor, int entry, int row, int col)
{
    return &out[((size_t)anchor * ENTRIES + entry) * PLANE + (size_t)row * LW + col];
}

static void test_collect_box_and_probabilities(void **state)
{
    (void)state;
    mpd_net *net = yolo_net();
    const mpd_layer *l = &net->layers[1];
    float out[2 * ENTRIES * PLANE];
    memset(out, 0, sizeof(out));
    /* Candidate 1: row 1, col 2, anchor slot 1 (mask 2: 37 x 58). */
    *cell(out, 1, 0, 1, 2) = .25f;
    *cell(out, 1, 1, 1, 2) = .75f;
    *cell(out, 1, 2, 1, 2) = .5f;   /* tw */
    *cell(out, 1, 3, 1, 2) = -.25f; /* th */
    *cell(out, 1, 4, 1, 2) = .8f;   /* objectness */
    *cell(out, 1, 5, 1, 2) = .9f;   /* class 0: .72 */
    *cell(out, 1, 6, 1, 2) = .2f;   /* class 1: .16, under thresh */
    /* Candidate 2: row 0, col 0, anchor slot 0 (mask 1: 23 x 27). */
    *cell(out, 0, 4, 0, 0) = .6f;
    *cell(out, 0, 5, 0, 0) = .5f; /* .3: zeroed */
    *cell(out, 0, 6, 0, 0) = 1.f; /* .6 */
    /* Objectness exactly at thresh is not a candidate. */
    *cell(out, 0, 4, 3, 7) = .5f;
    *cell(out, 0, 5, 3, 7) = 1.f;
    /* High class score without objectness is not one either. */
    *cell(out, 1, 5, 2, 5) = 1.f;

    mpd__dets d = {0};
    int rc = mpd__yolo_collect(l, out, 64, 32, .5f, &d);
    assert_int_equal(rc, 0);
    assert_int_equal(d.classes, 2);
    assert_int_equal(d.n, 2);
    /* Cell order: (0,0) before (1,2). */
    const mpd__det *a = &d.d[0], *b = &d.d[1];
    NEAR(a->box.x, (0 + 0.0) / LW, 1e-6);
    NEAR(a->box.y, (0 + 0.0) / LH, 1e-6);
    NEAR(a->box.w, exp(0.0) * 23 / 64, 1e-6);
    NEAR(a->box.h, exp(0.0) * 27 / 32, 1e-6);
    NEAR(a->objectness, .6, 1e-6);
    assert_true(a->prob[0] == 0.f);
    NEAR(a->prob[1], .6, 1e-6);

    NEAR(b->box.x, (2 + .25) / LW, 1e-6);
    NEAR(b->box.y, (1 + .75) / LH, 1e-6);
    NEAR(b->box.w, exp(.5) * 37 / 64, 1e-6);
    NEAR(b->box.h, exp(-.25) * 58 / 32, 1e-6);
    NEAR(b->objectness, .8, 1e-6);
    NEAR(b->prob[0], .72, 1e-6);
    assert_true(b->prob[1] == 0.f);

    /* A second call appends. */
    rc = mpd__yolo_collect(l, out, 64, 32, .5f, &d);
    assert_int_equal(rc, 0);
    assert_int_equal(d.n, 4);
    /* A lower threshold lets the at-threshold cell in. */
    mpd__dets_free(&d);
    d.classes = 0;
    rc = mpd__yolo_collect(l, out, 64, 32, .25f, &d);
    assert_int_equal(rc, 0);
    assert_int_equal(d.n, 3);
    const mpd__det *c = &d.d[2]; /* row 3, col 7 comes last */
    NEAR(c->box.x, 7.0 / LW, 1e-6);
    NEAR(c->box.y, 3.0 / LH, 1e-6);
    NEAR(c->prob[0], .5, 1e-6);
    NEAR(d.d[0].prob[0], .3, 1e-6); /* .3 > .25 now */
    mpd__dets_free(&d);
    mpd_net_free(net);
}

static void test_collect_all_zero_gives_nothing_and_class_mismatch(void **state)
{
    (void)state;
    mpd_net *net = yolo_net();
    float out[2 * ENTRIES * PLANE];
    memset(out, 0, sizeof(out));
    mpd__dets d = {0};
    assert_int_equal(mpd__yolo_collect(&net->layers[1], out, 64, 32, 0.f, &d), 0);
    assert_int_equal(d.n, 0);
    mpd__dets_free(&d);
    mpd__dets e = {.classes = 80};
    assert_int_equal(mpd__yolo_collect(&net->layers[1], out, 64, 32, .5f, &e), MPD_EINVAL);
    mpd__dets_free(&e);
    mpd_net_free(net);
}

/* ---- letterbox correction --------------------------------------------------- */

static void correct_one(mpd__box in, int im_w, int im_h, int net_w, int net_h, mpd__box *out)
{
    mpd__dets d = {.classes = 1};
    add_det(&d, in, .5f, 0, .5f);
    mpd__yolo_correct(&d, im_w, im_h, net_w, net_h);
    *out = d.d[0].box;
    mpd__dets_free(&d);
}

static void test_correct_wide_image(void **state)
{
    (void)state;
    /* 200x100 into 64x64: the picture is 64x32 at rows 16..47. */
    mpd__box r;
    correct_one(B(.5f, .3f, .25f, .125f), 200, 100, 64, 64, &r);
    NEAR(r.x, .5, 1e-6);
    NEAR(r.y, (.3 - 16.0 / 64) / (32.0 / 64), 1e-6); /* .1 */
    NEAR(r.w, .25, 1e-6);
    NEAR(r.h, .25, 1e-6);
    correct_one(B(.25f, .75f, .5f, .5f), 200, 100, 64, 64, &r);
    NEAR(r.x, .25, 1e-6);
    NEAR(r.y, 1.0, 1e-6);
    NEAR(r.h, 1.0, 1e-6);
}

static void test_correct_tall_image_integer_rounding(void **state)
{
    (void)state;
    /* 100x300 into 416x416: new_w = 100*416/300 = 138 (rounded down),
     * offset (416-138)/2 = 139 pixels. */
    mpd__box r;
    correct_one(B(.4f, .6f, .1f, .2f), 100, 300, 416, 416, &r);
    NEAR(r.x, (.4 - 139.0 / 416) / (138.0 / 416), 1e-5);
    NEAR(r.y, .6, 1e-6);
    NEAR(r.w, .1 * 416 / 138, 1e-5);
    NEAR(r.h, .2, 1e-6);
}

static void test_correct_non_square_net_round_trip(void **state)
{
    (void)state;
    /* 300x200 into 320x256: 320/300 < 256/200, so new_w = 320 and
     * new_h = 200*320/300 = 213; offset (256-213)/2 = 21.5 rows. */
    const int im_w = 300, im_h = 200, nw = 320, nh = 256, new_h = 213;
    /* An object at image pixels x 60..120, y 50..170. */
    double ix = 90.0 / im_w, iy = 110.0 / im_h, iw = 60.0 / im_w, ih = 120.0 / im_h;
    /* Where the letterbox puts it, relative to the network input. */
    double nx = ix, ny = (iy * new_h + 21.5) / nh, nwid = iw, nhei = ih * new_h / nh;
    mpd__box r;
    correct_one(B((float)nx, (float)ny, (float)nwid, (float)nhei), im_w, im_h, nw, nh, &r);
    NEAR(r.x, ix, 1e-5);
    NEAR(r.y, iy, 1e-5);
    NEAR(r.w, iw, 1e-5);
    NEAR(r.h, ih, 1e-5);
    /* Square image into a square net: unchanged. */
    correct_one(B(.3f, .7f, .2f, .1f), 500, 500, 416, 416, &r);
    NEAR(r.x, .3, 1e-6);
    NEAR(r.y, .7, 1e-6);
    NEAR(r.w, .2, 1e-6);
    NEAR(r.h, .1, 1e-6);
}

/* The box correction uses the same clamped letterbox size as the
 * letterbox: a 1000x1 image maps to a 1-pixel-high window, giving
 * h' = h * 416; likewise 1x1000 for x and w. */
static void test_correct_extreme_aspect_matches_letterbox_clamp(void **state)
{
    (void)state;
    mpd__box r;
    /* The letterbox put the single row at y = (416-1)/2 = 207 of 416. */
    correct_one(B(.3f, (207 + .5f) / 416, .1f, 1.f / 416), 1000, 1, 416, 416, &r);
    if (!isfinite(r.y) || !isfinite(r.h))
        print_error("1000x1 image: corrected y %g h %g\n", (double)r.y, (double)r.h);
    NEAR(r.x, .3, 1e-6);
    NEAR(r.w, .1, 1e-6);
    assert_true(isfinite(r.y) && isfinite(r.h));
    NEAR(r.y, ((207 + .5) / 416 - 415 / 2.0 / 416) * 416, 1e-3);
    NEAR(r.h, 1.0, 1e-5);
    correct_one(B((207 + .5f) / 416, .3f, 1.f / 416, .1f), 1, 1000, 416, 416, &r);
    assert_true(isfinite(r.x) && isfinite(r.w));
    NEAR(r.w, 1.0, 1e-5);
}

static void test_nms_empty_list_is_noop(void **state)
{
    (void)state;
    /* No candidates at all (d == NULL): nothing to sort. Under
     * SANITIZE=undefined this also checks qsort is not handed NULL. */
    mpd__dets d = {.classes = 3};
    mpd__nms_sort(&d, .45f);
    assert_int_equal(d.n, 0);
    mpd__yolo_correct(&d, 640, 480, 416, 416);
    mpd__dets_free(&d);
}

/* darknet's do_nms_sort as darknet writes it (every pair of candidates in
 * every class, the array sorted per class), the oracle for ours. */
static int oracle_class;
static int oracle_cmp(const void *pa, const void *pb)
{
    const mpd__det *a = pa, *b = pb;
    float d = a->prob[oracle_class] - b->prob[oracle_class];
    return d < 0 ? 1 : d > 0 ? -1 : 0;
}

static void oracle_nms(mpd__det *d, int n, int classes, float nms)
{
    for (int k = 0; k < classes; k++) {
        oracle_class = k;
        qsort(d, (size_t)n, sizeof(*d), oracle_cmp);
        for (int i = 0; i < n; i++) {
            if (d[i].prob[k] == 0)
                continue;
            for (int j = i + 1; j < n; j++)
                if (mpd__box_iou(d[i].box, d[j].box) > nms)
                    d[j].prob[k] = 0;
        }
    }
}

/* Random clustered boxes, many classes, some probabilities zero: ours keeps
 * exactly darknet's survivors (matched by objectness, unique here). */
static void test_nms_matches_darknet_on_random_candidates(void **state)
{
    (void)state;
    enum { N = 400, C = 12 };
    unsigned seed = 12345;
    mpd__dets d = {.classes = C};
    mpd__det *ref = calloc(N, sizeof(*ref));
    for (int i = 0; i < N; i++) {
        seed = seed * 1103515245u + 12345u;
        float cx = .2f + .6f * (float)((seed >> 8) % 4) / 3, cy = .5f;
        float obj = .05f + .9f * (float)i / N; /* unique */
        mpd__det *x;
        add_det(&d, B(cx + .05f * (float)((seed >> 12) % 100) / 100,
                      cy + .05f * (float)((seed >> 20) % 100) / 100, .1f, .1f), obj, 0, 0);
        x = &d.d[d.n - 1];
        for (int c = 0; c < C; c++) {
            seed = seed * 1103515245u + 12345u;
            x->prob[c] = (seed >> 16) % 3 == 0 ? 0 : obj * (float)((seed >> 8) % 1000) / 1000;
        }
        ref[i].box = x->box;
        ref[i].objectness = obj;
        ref[i].prob = malloc(C * sizeof(float));
        memcpy(ref[i].prob, x->prob, C * sizeof(float));
    }
    assert_int_equal(mpd__nms_sort(&d, .45f), 0);
    oracle_nms(ref, N, C, .45f);
    int kept = 0;
    for (int i = 0; i < N; i++) {
        const mpd__det *o = by_obj(&d, ref[i].objectness);
        for (int c = 0; c < C; c++) {
            assert_true(o->prob[c] == ref[i].prob[c]);
            kept += o->prob[c] != 0;
        }
        free(ref[i].prob);
    }
    free(ref);
    assert_true(kept > 20 && kept < N * C / 2); /* suppression happened, not everywhere */
    mpd__dets_free(&d);
}

/* The limit keeps the strongest pairs, ties included up to the limit. */
static void test_limit_keeps_the_strongest(void **state)
{
    (void)state;
    mpd__dets d = {.classes = 3};
    add_det(&d, B(.2f, .2f, .1f, .1f), .9f, 0, .9f);
    d.d[0].prob[1] = .5f;
    d.d[0].prob[2] = .3f;
    add_det(&d, B(.6f, .6f, .1f, .1f), .8f, 1, .5f);
    d.d[1].prob[2] = .1f;
    assert_int_equal(mpd__dets_limit(&d, 0), 0); /* no limit */
    assert_int_equal(mpd__dets_limit(&d, 10), 0);
    assert_true(d.d[1].prob[2] == .1f);
    assert_int_equal(mpd__dets_limit(&d, 3), 0); /* .9, .5, .5 stay */
    assert_true(d.d[0].prob[0] == .9f && d.d[0].prob[1] == .5f && d.d[1].prob[1] == .5f);
    assert_true(d.d[0].prob[2] == 0 && d.d[1].prob[2] == 0);
    assert_int_equal(mpd__dets_limit(&d, 2), 0); /* one of the two .5 goes */
    assert_true(d.d[0].prob[0] == .9f && (d.d[0].prob[1] == .5f) + (d.d[1].prob[1] == .5f) == 1);
    mpd__dets_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iou_identical_is_one),
        cmocka_unit_test(test_iou_disjoint_is_zero),
        cmocka_unit_test(test_iou_half_overlap),
        cmocka_unit_test(test_iou_contained),
        cmocka_unit_test(test_nms_same_class_overlap_suppresses_weaker),
        cmocka_unit_test(test_nms_different_classes_both_kept),
        cmocka_unit_test(test_nms_low_iou_both_kept),
        cmocka_unit_test(test_nms_suppressed_box_does_not_suppress),
        cmocka_unit_test(test_nms_zero_objectness_not_compared),
        cmocka_unit_test(test_collect_box_and_probabilities),
        cmocka_unit_test(test_collect_all_zero_gives_nothing_and_class_mismatch),
        cmocka_unit_test(test_correct_wide_image),
        cmocka_unit_test(test_correct_tall_image_integer_rounding),
        cmocka_unit_test(test_correct_non_square_net_round_trip),
        cmocka_unit_test(test_correct_extreme_aspect_matches_letterbox_clamp),
        cmocka_unit_test(test_nms_empty_list_is_noop),
        cmocka_unit_test(test_nms_matches_darknet_on_random_candidates),
        cmocka_unit_test(test_limit_keeps_the_strongest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
