/* test_engine.c - the public engine API with the real yolov3-tiny model on
 * the CPU backend: opening (and its errors), detection on darknet's sample
 * photos, batching, per-layer info and outputs. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu/blas.h"
#include "engine.h"
#include "mpd.h"
#include "testutil.h"

static char msg[1024];

/* Shared by the detection tests: one engine (batch 2) and two photos. */
static mpd_engine *eng;
static mpd_image dog, person;
static char *cfg_path, *weights_path, *names_path;

static int log_calls;
static void count_log(void *ud, int prio, const char *m)
{
    (void)prio;
    (void)m;
    (*(int *)ud)++;
}

static int setup(void **state)
{
    (void)state;
    cfg_path = tu_model("yolov3-tiny.cfg");
    weights_path = tu_model("yolov3-tiny.weights");
    names_path = tu_model("coco.names");
    mpd_engine_options o = {0};
    o.cfg_path = cfg_path;
    o.weights_path = weights_path;
    o.names_path = names_path;
    o.backend = "cpu";
    o.max_batch = 2;
    o.log = count_log;
    o.log_ud = &log_calls;
    if (mpd_engine_open(&o, &eng, msg, sizeof(msg))) {
        fprintf(stderr, "engine open: %s\n", msg);
        return -1;
    }
    char *p = tu_darknet_data("dog.jpg");
    int rc = mpd_image_load(p, 0, &dog, msg, sizeof(msg));
    free(p);
    p = tu_darknet_data("person.jpg");
    if (rc == 0)
        rc = mpd_image_load(p, 0, &person, msg, sizeof(msg));
    free(p);
    if (rc)
        fprintf(stderr, "image: %s\n", msg);
    return rc ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    mpd_engine_close(eng);
    mpd_image_free(&dog);
    mpd_image_free(&person);
    free(cfg_path);
    free(weights_path);
    free(names_path);
    return 0;
}

static mpd_engine_options opts(const char *cfg, const char *weights, const char *names)
{
    mpd_engine_options o = {0};
    o.cfg_path = cfg;
    o.weights_path = weights;
    o.names_path = names;
    o.backend = "cpu";
    return o;
}

/* ---- opening -------------------------------------------------------------- */

/* Regression: OpenBLAS 0.3.21 did not know this project's Xeon (family 6,
 * model 207) and ran its generic SSE3 kernels (Prescott), every fp32
 * convolution 4-5x slower. The CPU backend now chooses by the CPU's
 * features; the engine's description names the kernels in use. */
static void test_fp32_kernels_match_the_cpu(void **state)
{
    (void)state;
    const char *want = mpd__blas_core_for_cpu(), *user = getenv("OPENBLAS_CORETYPE");
    char d[512];
    mpd_engine_describe(eng, d, sizeof(d));
    if (user && *user) {
        assert_string_equal(mpd__blas_core_source(), "OPENBLAS_CORETYPE");
        skip(); /* the user's choice stands; nothing of ours to check */
    }
    /* The environment the load changed is restored. */
    assert_null(getenv("OPENBLAS_CORETYPE"));
    if (!want) {
        assert_string_equal(mpd__blas_core_source(), "OpenBLAS");
        return;
    }
    assert_string_equal(mpd__blas_core(), want);
    assert_string_equal(mpd__blas_core_source(), "mpdet");
    char kernels[64];
    snprintf(kernels, sizeof(kernels), "(%s kernels, chosen by mpdet)", want);
    assert_non_null(strstr(d, kernels));
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2"))
        assert_null(strstr(d, "Prescott"));
#endif
}

static void test_open_reports_model_facts(void **state)
{
    (void)state;
    assert_true(log_calls >= 1);
    assert_string_equal(mpd_engine_backend(eng), "cpu");
    assert_int_equal(mpd_engine_layer_count(eng), 24);
    assert_int_equal(mpd_engine_class_count(eng), 80);
    assert_int_equal(mpd_engine_max_batch(eng), 2);
    int c, h, w;
    mpd_engine_input_shape(eng, &c, &h, &w);
    assert_int_equal(c, 3);
    assert_int_equal(h, 416);
    assert_int_equal(w, 416);
    /* coco.names: 0 person, 1 bicycle, 2 car, 7 truck, 16 dog, 79 toothbrush */
    assert_string_equal(mpd_engine_label(eng, 0), "person");
    assert_string_equal(mpd_engine_label(eng, 1), "bicycle");
    assert_string_equal(mpd_engine_label(eng, 16), "dog");
    assert_string_equal(mpd_engine_label(eng, 79), "toothbrush");
    assert_string_equal(mpd_engine_label(eng, 80), "?");
    assert_string_equal(mpd_engine_label(eng, -1), "?");
}

static void test_open_missing_cfg(void **state)
{
    (void)state;
    mpd_engine *e = (mpd_engine *)1;
    mpd_engine_options o = opts("/nonexistent/tiny.cfg", weights_path, names_path);
    int rc = mpd_engine_open(&o, &e, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EIO);
    assert_null(e);
    assert_non_null(strstr(msg, "/nonexistent/tiny.cfg"));
}

static void test_open_missing_weights(void **state)
{
    (void)state;
    mpd_engine *e = NULL;
    mpd_engine_options o = opts(cfg_path, "/nonexistent/tiny.weights", names_path);
    int rc = mpd_engine_open(&o, &e, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EIO);
    assert_null(e);
    assert_non_null(strstr(msg, "/nonexistent/tiny.weights"));
}

static void test_open_missing_names(void **state)
{
    (void)state;
    mpd_engine *e = NULL;
    mpd_engine_options o = opts(cfg_path, weights_path, "/nonexistent/coco.names");
    int rc = mpd_engine_open(&o, &e, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EIO);
    assert_null(e);
    assert_non_null(strstr(msg, "/nonexistent/coco.names"));
}

static void test_open_weights_for_another_network(void **state)
{
    (void)state;
    /* yolov3.cfg with the tiny weights: a size mismatch, refused. */
    mpd_engine *e = NULL;
    mpd_engine_options o = opts("/usr/share/darknet/cfg/yolov3.cfg", weights_path, NULL);
    int rc = mpd_engine_open(&o, &e, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EFORMAT);
    assert_null(e);
    assert_non_null(strstr(msg, "35434956"));
}

static void test_open_names_with_too_few_labels(void **state)
{
    (void)state;
    const char *names = "person\nbicycle\ncar\n";
    char *p = tu_write_temp(names, strlen(names));
    assert_non_null(p);
    mpd_engine *e = NULL;
    mpd_engine_options o = opts(cfg_path, weights_path, p);
    int rc = mpd_engine_open(&o, &e, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EFORMAT);
    assert_null(e);
    assert_non_null(strstr(msg, p));
    assert_non_null(strstr(msg, "3"));
    assert_non_null(strstr(msg, "80"));
    unlink(p);
    free(p);
}

static void test_open_bogus_backend(void **state)
{
    (void)state;
    mpd_engine *e = NULL;
    mpd_engine_options o = opts(cfg_path, weights_path, names_path);
    o.backend = "bogus";
    int rc = mpd_engine_open(&o, &e, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EINVAL);
    assert_null(e);
    assert_non_null(strstr(msg, "bogus"));
}

/* backend "cuda" where the CUDA backend is not built or there is no GPU:
 * a clear error, never a silent CPU engine. */
static void test_open_cuda_without_gpu_says_why(void **state)
{
    (void)state;
    mpd_engine *e = NULL;
    mpd_engine_options o = opts(cfg_path, weights_path, names_path);
    o.backend = "cuda";
    int rc = mpd_engine_open(&o, &e, msg, sizeof(msg));
    if (rc == 0) {
        assert_string_equal(mpd_engine_backend(e), "cuda"); /* a GPU is here */
        mpd_engine_close(e);
        return;
    }
    assert_int_equal(rc, MPD_EUNSUP);
    assert_null(e);
    assert_true(strstr(msg, "no CUDA device") || strstr(msg, "not built"));
}

static void test_open_bad_options(void **state)
{
    (void)state;
    mpd_engine *e = NULL;
    mpd_engine_options o = opts(NULL, weights_path, NULL);
    assert_int_equal(mpd_engine_open(&o, &e, msg, sizeof(msg)), MPD_EINVAL);
    o = opts(cfg_path, NULL, NULL);
    assert_int_equal(mpd_engine_open(&o, &e, msg, sizeof(msg)), MPD_EINVAL);
    o = opts(cfg_path, weights_path, NULL);
    o.max_batch = -1;
    assert_int_equal(mpd_engine_open(&o, &e, msg, sizeof(msg)), MPD_EINVAL);
    o.max_batch = 1;
    o.threads = -2;
    assert_int_equal(mpd_engine_open(&o, &e, msg, sizeof(msg)), MPD_EINVAL);
    assert_int_equal(mpd_engine_open(NULL, &e, msg, sizeof(msg)), MPD_EINVAL);
    assert_null(e);
}

/* Without a names file every class has a label of its own, "class N",
 * as engine.h promises. */
static void test_labels_without_names_file_are_class_n(void **state)
{
    (void)state;
    mpd_engine *e = NULL;
    mpd_engine_options o = opts(cfg_path, weights_path, NULL);
    int rc = mpd_engine_open(&o, &e, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    const char *l0 = mpd_engine_label(e, 0), *l16 = mpd_engine_label(e, 16);
    char a[16], b[16];
    snprintf(a, sizeof(a), "%s", l0);
    snprintf(b, sizeof(b), "%s", l16);
    mpd_engine_close(e);
    if (strcmp(b, "class 16") != 0)
        print_error("label of class 16 without names: '%s', want 'class 16'\n", b);
    assert_string_equal(a, "class 0");
    assert_string_equal(b, "class 16");
}

/* ---- detection -------------------------------------------------------------- */

static void check_result_sane(const mpd_result *r, const mpd_image *im, float thresh)
{
    assert_int_equal(r->image_w, im->w);
    assert_int_equal(r->image_h, im->h);
    for (int i = 0; i < r->count; i++) {
        const mpd_detection *d = &r->det[i];
        assert_true(d->class_id >= 0 && d->class_id < 80);
        assert_string_equal(d->label, mpd_engine_label(eng, d->class_id));
        assert_true(d->confidence > thresh && d->confidence <= 1.f);
        assert_true(d->x0 >= 0 && d->x0 <= d->x1 && d->x1 <= im->w - 1);
        assert_true(d->y0 >= 0 && d->y0 <= d->y1 && d->y1 <= im->h - 1);
        if (i)
            assert_true(r->det[i - 1].confidence >= d->confidence);
    }
}

static const mpd_detection *find(const mpd_result *r, const char *label)
{
    for (int i = 0; i < r->count; i++)
        if (strcmp(r->det[i].label, label) == 0)
            return &r->det[i];
    return NULL;
}

static void test_detect_dog_jpg(void **state)
{
    (void)state;
    mpd_result r;
    int rc = mpd_engine_detect(eng, &dog, 1, NULL, &r, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    for (int i = 0; i < r.count; i++)
        print_message("  %s %.3f [%.0f %.0f %.0f %.0f]\n", r.det[i].label,
                      (double)r.det[i].confidence, (double)r.det[i].x0, (double)r.det[i].y0,
                      (double)r.det[i].x1, (double)r.det[i].y1);
    check_result_sane(&r, &dog, .25f);
    const mpd_detection *d = find(&r, "dog"), *b = find(&r, "bicycle");
    const mpd_detection *t = find(&r, "truck");
    if (!t)
        t = find(&r, "car");
    assert_non_null(d);
    assert_non_null(b);
    assert_non_null(t);
    assert_int_equal(d->class_id, 16);
    assert_int_equal(b->class_id, 1);
    /* Where they are in the photo: the dog sits bottom-left, the truck is
     * parked top-right, the bicycle spans the middle. */
    float dcx = (d->x0 + d->x1) / 2, dcy = (d->y0 + d->y1) / 2;
    float tcx = (t->x0 + t->x1) / 2, tcy = (t->y0 + t->y1) / 2;
    float bcx = (b->x0 + b->x1) / 2, bcy = (b->y0 + b->y1) / 2;
    assert_true(dcx < 384 && dcy > 288);
    assert_true(tcx > 384 && tcy < 288);
    assert_true(bcx > 150 && bcx < 600 && bcy > 100 && bcy < 450);
    assert_true(r.t.inference_ms > 0);
    mpd_result_free(&r);
    assert_null(r.det);
    assert_int_equal(r.count, 0);
}

static void test_detect_thresh_one_finds_nothing(void **state)
{
    (void)state;
    mpd_detect_params p = {1.0f, 0.45f};
    mpd_result r;
    int rc = mpd_engine_detect(eng, &dog, 1, &p, &r, msg, sizeof(msg));
    assert_int_equal(rc, 0);
    assert_int_equal(r.count, 0);
    mpd_result_free(&r);
}

static void test_detect_rejects_bad_arguments(void **state)
{
    (void)state;
    mpd_result r[3];
    mpd_image ims[3] = {dog, dog, dog};
    assert_int_equal(mpd_engine_detect(eng, ims, 3, NULL, r, msg, sizeof(msg)), MPD_EINVAL);
    assert_int_equal(mpd_engine_detect(eng, ims, 0, NULL, r, msg, sizeof(msg)), MPD_EINVAL);
    mpd_detect_params p = {1.5f, .45f};
    assert_int_equal(mpd_engine_detect(eng, ims, 1, &p, r, msg, sizeof(msg)), MPD_EINVAL);
    p.thresh = .25f;
    p.nms = -.1f;
    assert_int_equal(mpd_engine_detect(eng, ims, 1, &p, r, msg, sizeof(msg)), MPD_EINVAL);
    p.nms = NAN;
    assert_int_equal(mpd_engine_detect(eng, ims, 1, &p, r, msg, sizeof(msg)), MPD_EINVAL);
    float dummy = 0;
    assert_int_equal(mpd_engine_forward(eng, &dummy, 0, msg, sizeof(msg)), MPD_EINVAL);
    assert_int_equal(mpd_engine_forward(eng, &dummy, 3, msg, sizeof(msg)), MPD_EINVAL);
}

static void assert_same_detections(const mpd_result *a, const mpd_result *b)
{
    if (a->count != b->count)
        print_error("%d vs %d detections\n", a->count, b->count);
    assert_int_equal(a->count, b->count);
    for (int i = 0; i < a->count; i++) {
        const mpd_detection *x = &a->det[i], *y = &b->det[i];
        assert_int_equal(x->class_id, y->class_id);
        assert_string_equal(x->label, y->label);
        assert_true(fabsf(x->confidence - y->confidence) <= 1e-4f);
        assert_true(fabsf(x->x0 - y->x0) <= .01f);
        assert_true(fabsf(x->y0 - y->y0) <= .01f);
        assert_true(fabsf(x->x1 - y->x1) <= .01f);
        assert_true(fabsf(x->y1 - y->y1) <= .01f);
    }
}

static void test_batch_of_two_matches_single_images(void **state)
{
    (void)state;
    mpd_image both[2] = {dog, person};
    mpd_result rb[2], r0, r1;
    int rc = mpd_engine_detect(eng, both, 2, NULL, rb, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_int_equal(mpd_engine_detect(eng, &dog, 1, NULL, &r0, msg, sizeof(msg)), 0);
    assert_int_equal(mpd_engine_detect(eng, &person, 1, NULL, &r1, msg, sizeof(msg)), 0);
    check_result_sane(&rb[0], &dog, .25f);
    check_result_sane(&rb[1], &person, .25f);
    assert_true(r0.count > 0 && r1.count > 0);
    /* person.jpg has a person (and a horse and a dog). */
    assert_non_null(find(&r1, "person"));
    assert_same_detections(&rb[0], &r0);
    assert_same_detections(&rb[1], &r1);
    /* The other order in the batch changes nothing either. */
    mpd_image rev[2] = {person, dog};
    mpd_result rr[2];
    assert_int_equal(mpd_engine_detect(eng, rev, 2, NULL, rr, msg, sizeof(msg)), 0);
    assert_same_detections(&rr[0], &r1);
    assert_same_detections(&rr[1], &r0);
    mpd_result_free(&rb[0]);
    mpd_result_free(&rb[1]);
    mpd_result_free(&rr[0]);
    mpd_result_free(&rr[1]);
    mpd_result_free(&r0);
    mpd_result_free(&r1);
}

static void test_layer_info_counts_runs(void **state)
{
    (void)state;
    int n = mpd_engine_layer_count(eng);
    assert_int_equal(n, 24);
    long long before[24];
    mpd_layer_info info;
    for (int i = 0; i < n; i++) {
        assert_int_equal(mpd_engine_layer_info(eng, i, &info), 0);
        before[i] = info.runs;
    }
    assert_int_equal(mpd_engine_layer_info(eng, 24, &info), MPD_EINVAL);
    assert_int_equal(mpd_engine_layer_info(eng, -1, &info), MPD_EINVAL);

    mpd_result r;
    assert_int_equal(mpd_engine_detect(eng, &dog, 1, NULL, &r, msg, sizeof(msg)), 0);
    mpd_result_free(&r);
    double gflop = 0, sum_ms = 0;
    for (int i = 0; i < n; i++) {
        assert_int_equal(mpd_engine_layer_info(eng, i, &info), 0);
        assert_int_equal(info.index, i);
        assert_int_equal(info.runs, before[i] + 1);
        assert_true(info.last_ms >= 0);
        assert_true(info.total_ms >= info.last_ms);
        sum_ms += info.last_ms;
        gflop += info.gflop;
    }
    assert_true(sum_ms > 0);
    assert_true(fabs(gflop - 5.56) < 0.01);
    assert_int_equal(mpd_engine_layer_info(eng, 0, &info), 0);
    assert_string_equal(info.kind, "conv");
    assert_string_equal(info.precision, "fp32");
    assert_int_equal(info.filters, 16);
    assert_int_equal(info.size, 3);
    assert_int_equal(info.stride, 1);
    assert_int_equal(info.in_c, 3);
    assert_int_equal(info.out_w, 416);
    assert_int_equal(mpd_engine_layer_info(eng, 11, &info), 0);
    assert_string_equal(info.kind, "max");
    assert_string_equal(info.precision, "-");
    assert_int_equal(info.size, 2);
    assert_int_equal(info.stride, 1);
    assert_int_equal(info.out_w, 13);
    assert_int_equal(mpd_engine_layer_info(eng, 16, &info), 0);
    assert_string_equal(info.kind, "yolo");
    assert_int_equal(info.filters, 0);
    assert_int_equal(mpd_engine_layer_info(eng, 20, &info), 0);
    assert_string_equal(info.kind, "route");
    assert_int_equal(info.out_c, 384);
    assert_int_equal(mpd_engine_layer_info(eng, 19, &info), 0);
    assert_string_equal(info.kind, "upsample");
}

/* Issue 12: timing sampled per pass. With timing off a pass leaves every
 * layer's runs, total and last time as they were (and detects the same);
 * switched on again, the next pass counts. */
static void test_layer_timing_off_leaves_stats(void **state)
{
    (void)state;
    int n = mpd_engine_layer_count(eng);
    mpd_layer_info a[24], b;
    mpd_result r0, r1;
    assert_int_equal(mpd_engine_detect(eng, &dog, 1, NULL, &r0, msg, sizeof(msg)), 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(mpd_engine_layer_info(eng, i, &a[i]), 0);
    mpd_engine_set_layer_timing(eng, 0);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(mpd_engine_detect(eng, &dog, 1, NULL, &r1, msg, sizeof(msg)), 0);
        assert_int_equal(r1.count, r0.count);
        for (int d = 0; d < r0.count; d++) {
            assert_int_equal(r1.det[d].class_id, r0.det[d].class_id);
            assert_true(r1.det[d].confidence == r0.det[d].confidence);
        }
        mpd_result_free(&r1);
    }
    for (int i = 0; i < n; i++) {
        assert_int_equal(mpd_engine_layer_info(eng, i, &b), 0);
        assert_int_equal(b.runs, a[i].runs);
        assert_true(b.total_ms == a[i].total_ms && b.last_ms == a[i].last_ms);
    }
    mpd_engine_set_layer_timing(eng, 1);
    assert_int_equal(mpd_engine_detect(eng, &dog, 1, NULL, &r1, msg, sizeof(msg)), 0);
    mpd_result_free(&r1);
    for (int i = 0; i < n; i++) {
        assert_int_equal(mpd_engine_layer_info(eng, i, &b), 0);
        assert_int_equal(b.runs, a[i].runs + 1);
        assert_true(b.total_ms >= a[i].total_ms);
    }
    mpd_result_free(&r0);
}

/* Exactly the same detections: a batch must not move a box or a
 * confidence by one bit. */
static void assert_identical(const char *what, const mpd_result *a, const mpd_result *b)
{
    char why[256];
    if (tu_detections_differ(a, b, why, sizeof(why)))
        fail_msg("%s: %s", what, why);
}

/* The daemon's batches (max_batch): darknet's seven photos, of mixed
 * sizes, in one pass detect exactly what seven single passes detect,
 * under the fp32, fp16 and two int8 presets; and mpd_engine_detect_each
 * post-processes each image with its own parameters, exactly as a single
 * pass with those. */
static void test_batch_of_seven_photos_equals_single_passes(void **state)
{
    (void)state;
    static const char *const photos[] = {"dog.jpg",     "person.jpg", "horses.jpg", "eagle.jpg",
                                         "giraffe.jpg", "kite.jpg",   "scream.jpg"};
    static const char *const presets[] = {"fp32_all", "fp16_all", "int8_all", "fp32_int8"};
    enum { N = sizeof(photos) / sizeof(photos[0]) };
    mpd_engine_options o = {0};
    o.cfg_path = cfg_path;
    o.weights_path = weights_path;
    o.names_path = names_path;
    o.backend = "cpu";
    o.max_batch = N;
    mpd_engine *e;
    assert_int_equal(mpd_engine_open(&o, &e, msg, sizeof(msg)), 0);
    mpd_image ims[N];
    for (int k = 0; k < N; k++) {
        char *p = tu_darknet_data(photos[k]);
        assert_int_equal(mpd_image_load(p, 0, &ims[k], msg, sizeof(msg)), 0);
        free(p);
    }
    mpd_detect_params each[N];
    for (int k = 0; k < N; k++) {
        each[k].thresh = .1f + .1f * (float)k;
        each[k].nms = k % 2 ? .45f : .3f;
    }
    for (size_t s = 0; s < sizeof(presets) / sizeof(presets[0]); s++) {
        char path[64], what[96];
        snprintf(path, sizeof(path), "config/%s.plan", presets[s]);
        assert_int_equal(mpd_engine_load_plan(e, path, msg, sizeof(msg)), 0);
        mpd_result batch[N], one;
        assert_int_equal(mpd_engine_detect(e, ims, N, NULL, batch, msg, sizeof(msg)), 0);
        int total = 0;
        for (int k = 0; k < N; k++) {
            assert_int_equal(mpd_engine_detect(e, &ims[k], 1, NULL, &one, msg, sizeof(msg)), 0);
            snprintf(what, sizeof(what), "%s %s batch of %d", presets[s], photos[k], N);
            assert_identical(what, &batch[k], &one);
            total += one.count;
            mpd_result_free(&one);
            mpd_result_free(&batch[k]);
        }
        /* Full of objects: an empty comparison would prove nothing. */
        assert_true(total >= 20);
        assert_int_equal(mpd_engine_detect_each(e, ims, N, each, batch, msg, sizeof(msg)), 0);
        for (int k = 0; k < N; k++) {
            int rc = mpd_engine_detect(e, &ims[k], 1, &each[k], &one, msg, sizeof(msg));
            assert_int_equal(rc, 0);
            snprintf(what, sizeof(what), "%s %s thresh %.1f nms %.2f", presets[s], photos[k],
                     (double)each[k].thresh, (double)each[k].nms);
            assert_identical(what, &batch[k], &one);
            mpd_result_free(&one);
            mpd_result_free(&batch[k]);
        }
        print_message("%s: a batch of %d photos = %d single passes, exactly (%d detections); "
                      "per-image parameters too\n",
                      presets[s], N, N, total);
    }
    /* One image's bad parameters refuse the whole pass. */
    mpd_result batch0[N];
    each[3].thresh = 2;
    assert_int_equal(mpd_engine_detect_each(e, ims, N, each, batch0, msg, sizeof(msg)), MPD_EINVAL);
    for (int k = 0; k < N; k++)
        mpd_image_free(&ims[k]);
    mpd_engine_close(e);
}

/* ---- the plan that ran ------------------------------------------------------ */

/* Issue 10, defect 1: a reply must name the plan that computed it, not the
 * one current when it is written. A pass under plan A, then plan B is
 * loaded (the daemon does it from another thread, between or during
 * passes): the result and mpd_engine_last_* still say A, the current-plan
 * functions say B, until the next pass runs under B. */
static void test_last_plan_info_names_the_plan_that_ran(void **state)
{
    (void)state;
    assert_int_equal(mpd_engine_load_plan(eng, "config/fp32_all.plan", msg, sizeof(msg)), 0);
    mpd_plan_info a, b, last, cur;
    assert_int_equal(mpd_engine_plan_info(eng, &a), 0);
    mpd_result r;
    assert_int_equal(mpd_engine_detect(eng, &dog, 1, NULL, &r, msg, sizeof(msg)), 0);
    assert_int_equal(r.plan_generation, a.generation);
    mpd_result_free(&r);
    mpd_layer_info li_a;
    assert_int_equal(mpd_engine_last_layer_info(eng, 12, &li_a), 0);
    assert_string_equal(li_a.precision, "fp32");
    assert_true(li_a.last_ms > 0);

    assert_int_equal(mpd_engine_load_plan(eng, "config/int8_all.plan", msg, sizeof(msg)), 0);
    assert_int_equal(mpd_engine_plan_info(eng, &b), 0);
    assert_int_equal(b.generation, a.generation + 1);
    assert_int_equal(mpd_engine_last_plan_info(eng, &last), 0);
    assert_int_equal(last.generation, a.generation);
    assert_string_equal(last.source, "config/fp32_all.plan");
    assert_int_equal(last.layers[0], 13);
    mpd_layer_info li;
    assert_int_equal(mpd_engine_last_layer_info(eng, 12, &li), 0);
    assert_string_equal(li.precision, "fp32");
    assert_true(li.last_ms == li_a.last_ms);
    assert_int_equal(li.runs, li_a.runs);
    assert_int_equal(mpd_engine_layer_info(eng, 12, &li), 0);
    assert_string_equal(li.precision, "int8");
    assert_int_equal(li.runs, 0); /* nothing ran under B yet */
    assert_int_equal(mpd_engine_last_layer_info(eng, 24, &li), MPD_EINVAL);

    assert_int_equal(mpd_engine_detect(eng, &dog, 1, NULL, &r, msg, sizeof(msg)), 0);
    assert_int_equal(r.plan_generation, b.generation);
    mpd_result_free(&r);
    assert_int_equal(mpd_engine_last_plan_info(eng, &last), 0);
    assert_int_equal(last.generation, b.generation);
    assert_string_equal(last.source, "config/int8_all.plan");
    assert_int_equal(mpd_engine_plan_info(eng, &cur), 0);
    assert_int_equal(cur.generation, b.generation);
    assert_int_equal(mpd_engine_last_layer_info(eng, 12, &li), 0);
    assert_string_equal(li.precision, "int8");
    assert_int_equal(li.runs, 1);
    assert_true(li.last_ms > 0);
    assert_int_equal(mpd_engine_load_plan(eng, NULL, msg, sizeof(msg)), 0);
}

/* Before any pass there is no last plan. */
static void test_last_plan_info_before_any_pass(void **state)
{
    (void)state;
    mpd_engine *e = NULL;
    mpd_engine_options o = opts(cfg_path, weights_path, names_path);
    assert_int_equal(mpd_engine_open(&o, &e, msg, sizeof(msg)), 0);
    mpd_plan_info info;
    mpd_layer_info li;
    assert_int_equal(mpd_engine_last_plan_info(e, &info), MPD_EINVAL);
    assert_int_equal(mpd_engine_last_layer_info(e, 0, &li), MPD_EINVAL);
    mpd_engine_close(e);
}

/* Issue 10, defect 12: mpd_engine_load_plan is documented safe from any
 * thread, but two loads at once raced on the backend's plan-time scratch
 * (the CPU backend's fp16 conversion buffers, allocated by the first fp16
 * plan: both loads allocated them, one pair leaked; the CUDA backend's
 * weight-range words). Three threads load plans on one fresh engine while
 * this one detects; every load succeeds, the generations are 2, 3, 4 in
 * some order, and the detections are those of one of the plans. The race
 * itself shows under `make SANITIZE=thread` (a data race) or address (a
 * leak). */
typedef struct {
    mpd_engine *e;
    const char *plan;
    int rc;
    char msg[512];
} load_job;

static void *load_main(void *arg)
{
    load_job *j = arg;
    j->rc = mpd_engine_load_plan(j->e, j->plan, j->msg, sizeof(j->msg));
    return NULL;
}

static void test_concurrent_plan_loads(void **state)
{
    (void)state;
    for (int round = 0; round < 2; round++) {
        mpd_engine *e = NULL;
        mpd_engine_options o = opts(cfg_path, weights_path, names_path);
        o.threads = 2;
        assert_int_equal(mpd_engine_open(&o, &e, msg, sizeof(msg)), 0);
        load_job jobs[3] = {{e, "config/fp16_all.plan", -1, ""},
                            {e, "config/fp16_all.plan", -1, ""},
                            {e, "config/int8_all.plan", -1, ""}};
        pthread_t t[3];
        for (int k = 0; k < 3; k++)
            assert_int_equal(pthread_create(&t[k], NULL, load_main, &jobs[k]), 0);
        mpd_result r;
        assert_int_equal(mpd_engine_detect(e, &dog, 1, NULL, &r, msg, sizeof(msg)), 0);
        assert_true(r.count >= 3);
        mpd_result_free(&r);
        for (int k = 0; k < 3; k++) {
            assert_int_equal(pthread_join(t[k], NULL), 0);
            if (jobs[k].rc)
                print_error("%s: %s\n", jobs[k].plan, jobs[k].msg);
            assert_int_equal(jobs[k].rc, 0);
        }
        mpd_plan_info info;
        assert_int_equal(mpd_engine_plan_info(e, &info), 0);
        assert_int_equal(info.generation, 4);
        assert_int_equal(mpd_engine_detect(e, &dog, 1, NULL, &r, msg, sizeof(msg)), 0);
        assert_int_equal(r.plan_generation, 4);
        assert_true(r.count >= 3);
        mpd_result_free(&r);
        mpd_engine_close(e);
    }
}

static void test_detect_memory_garbage_then_recovers(void **state)
{
    (void)state;
    unsigned char junk[2048];
    unsigned s = 12345;
    for (size_t i = 0; i < sizeof(junk); i++) {
        s = s * 1664525u + 1013904223u;
        junk[i] = (unsigned char)(s >> 24);
    }
    mpd_result r;
    int rc = mpd_engine_detect_memory(eng, junk, sizeof(junk), 0, NULL, &r, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EFORMAT);
    assert_int_equal(r.count, 0);
    assert_null(r.det);
    rc = mpd_engine_detect_memory(eng, junk, 0, 0, NULL, &r, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EFORMAT);

    /* The engine still works: from memory, and with a pixel limit. */
    char *p = tu_darknet_data("dog.jpg");
    FILE *f = fopen(p, "rb");
    free(p);
    assert_non_null(f);
    unsigned char *buf = malloc(1 << 20);
    size_t len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    assert_true(len > 1000);
    rc = mpd_engine_detect_memory(eng, buf, len, 768 * 576 - 1, NULL, &r, msg, sizeof(msg));
    assert_int_equal(rc, MPD_ELIMIT);
    rc = mpd_engine_detect_memory(eng, buf, len, 768 * 576, NULL, &r, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_int_equal(r.image_w, 768);
    assert_int_equal(r.image_h, 576);
    assert_non_null(find(&r, "dog"));
    assert_non_null(find(&r, "bicycle"));
    assert_true(r.t.decode_ms > 0);
    /* Same answer as detecting the decoded image. */
    mpd_result r2;
    assert_int_equal(mpd_engine_detect(eng, &dog, 1, NULL, &r2, msg, sizeof(msg)), 0);
    assert_same_detections(&r, &r2);
    mpd_result_free(&r);
    mpd_result_free(&r2);
    free(buf);
}

static void test_layer_output_yolo16(void **state)
{
    (void)state;
    size_t n = mpd_engine_layer_output_size(eng, 16);
    assert_int_equal(n, 13 * 13 * 255);
    assert_int_equal(mpd_engine_layer_output_size(eng, 23), 26 * 26 * 255);
    assert_int_equal(mpd_engine_layer_output_size(eng, 24), 0);
    mpd_result r;
    assert_int_equal(mpd_engine_detect(eng, &dog, 1, NULL, &r, msg, sizeof(msg)), 0);
    mpd_result_free(&r);
    float *out = malloc(n * sizeof(float));
    assert_non_null(out);
    int rc = mpd_engine_layer_output(eng, 16, 1, out, msg, sizeof(msg));
    assert_int_equal(rc, 0);
    const size_t plane = 13 * 13;
    float max_obj = 0;
    for (size_t i = 0; i < n; i++) {
        size_t entry = (i / plane) % 85;
        assert_true(isfinite(out[i]));
        if (entry != 2 && entry != 3)
            assert_true(out[i] >= 0.f && out[i] <= 1.f); /* logistic */
        if (entry == 4 && out[i] > max_obj)
            max_obj = out[i];
    }
    /* The large dog and bicycle are seen at the coarse scale. */
    assert_true(max_obj > .25f);
    /* Layer 15 (the conv feeding it) holds the raw values: the yolo output
     * is their logistic except for w, h. */
    float *raw = malloc(n * sizeof(float));
    assert_non_null(raw);
    assert_int_equal(mpd_engine_layer_output(eng, 15, 1, raw, msg, sizeof(msg)), 0);
    for (size_t i = 0; i < n; i++) {
        size_t entry = (i / plane) % 85;
        double want = (entry == 2 || entry == 3) ? raw[i] : 1.0 / (1.0 + exp(-raw[i]));
        assert_true(fabs(out[i] - want) <= 1e-6);
    }
    assert_int_equal(mpd_engine_layer_output(eng, 24, 1, out, msg, sizeof(msg)), MPD_EINVAL);
    free(raw);
    free(out);
}

static void test_forward_and_preprocess_match_detect(void **state)
{
    (void)state;
    /* preprocess + forward gives the same yolo output as detect. */
    size_t insz = (size_t)3 * 416 * 416, n = mpd_engine_layer_output_size(eng, 23);
    float *in = malloc(insz * sizeof(float));
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    assert_non_null(in);
    assert_non_null(a);
    assert_non_null(b);
    mpd_result r;
    assert_int_equal(mpd_engine_detect(eng, &person, 1, NULL, &r, msg, sizeof(msg)), 0);
    mpd_result_free(&r);
    assert_int_equal(mpd_engine_layer_output(eng, 23, 1, a, msg, sizeof(msg)), 0);
    assert_int_equal(mpd_engine_preprocess(eng, &person, in), 0);
    for (size_t i = 0; i < insz; i++)
        assert_true(in[i] >= 0.f && in[i] <= 1.f);
    assert_int_equal(mpd_engine_forward(eng, in, 1, msg, sizeof(msg)), 0);
    assert_int_equal(mpd_engine_layer_output(eng, 23, 1, b, msg, sizeof(msg)), 0);
    assert_memory_equal(a, b, n * sizeof(float));
    /* input NULL runs again on the input already set: same output; more
     * images than were set is an error. */
    memset(b, 0, n * sizeof(float));
    assert_int_equal(mpd_engine_forward(eng, NULL, 1, msg, sizeof(msg)), 0);
    assert_int_equal(mpd_engine_layer_output(eng, 23, 1, b, msg, sizeof(msg)), 0);
    assert_memory_equal(a, b, n * sizeof(float));
    if (mpd_engine_max_batch(eng) > 1) {
        assert_int_equal(mpd_engine_forward(eng, NULL, 2, msg, sizeof(msg)), MPD_EINVAL);
        assert_non_null(strstr(msg, "run again"));
    }
    free(in);
    free(a);
    free(b);
}

static void test_thread_counts_give_same_detections(void **state)
{
    (void)state;
    /* The CPU backend splits convolutions differently per thread count
     * (column blocks vs. output-channel slices); the answer must not
     * change. */
    mpd_result ref;
    assert_int_equal(mpd_engine_detect(eng, &dog, 1, NULL, &ref, msg, sizeof(msg)), 0);
    static const int counts[] = {1, 3};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        mpd_engine *e = NULL;
        mpd_engine_options o = opts(cfg_path, weights_path, names_path);
        o.threads = counts[i];
        int rc = mpd_engine_open(&o, &e, msg, sizeof(msg));
        if (rc)
            print_error("%s\n", msg);
        assert_int_equal(rc, 0);
        mpd_result r;
        assert_int_equal(mpd_engine_detect(e, &dog, 1, NULL, &r, msg, sizeof(msg)), 0);
        assert_same_detections(&r, &ref);
        mpd_result_free(&r);
        mpd_engine_close(e);
    }
    mpd_result_free(&ref);
}

/* An extreme aspect ratio (1000x1) letterboxes to a 1-pixel-high image;
 * the box correction must use the same clamped size, or it divides by zero
 * and every box becomes NaN. */
static void test_detect_extreme_aspect_image_has_finite_boxes(void **state)
{
    (void)state;
    mpd_image im = {1000, 1, malloc(1000 * 3)};
    assert_non_null(im.data);
    for (int i = 0; i < 1000 * 3; i++)
        im.data[i] = (unsigned char)(i * 37);
    mpd_detect_params p = {0.f, 0.f}; /* nms 0: skipped, keeps this fast */
    mpd_result r;
    int rc = mpd_engine_detect(eng, &im, 1, &p, &r, msg, sizeof(msg));
    assert_int_equal(rc, 0);
    assert_true(r.count > 0);
    int bad = 0;
    for (int i = 0; i < r.count; i++) {
        const mpd_detection *d = &r.det[i];
        if (!(d->x0 >= 0 && d->x0 <= d->x1 && d->x1 <= 999 && d->y0 >= 0 && d->y0 <= d->y1 &&
              d->y1 <= 0)) {
            if (!bad)
                print_error("1000x1 image: %s [%g %g %g %g]\n", d->label, (double)d->x0,
                            (double)d->y0, (double)d->x1, (double)d->y1);
            bad++;
        }
    }
    if (bad)
        print_error("%d of %d boxes outside the image or not finite\n", bad, r.count);
    mpd_result_free(&r);
    free(im.data);
    assert_int_equal(bad, 0);
}

/* A 0x0 image is an argument error, not a division by zero. Runs last so
 * a crash here cannot hide the other results. */
static void test_detect_rejects_empty_image(void **state)
{
    (void)state;
    unsigned char px[3] = {0, 0, 0};
    mpd_image im = {0, 0, px};
    mpd_result r;
    int rc = mpd_engine_detect(eng, &im, 1, NULL, &r, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EINVAL);
}

/* Issue 12: one model for several workers. Engines opened with
 * mpd_engine_open_shared share the model - weights, labels, plans - and
 * have buffers of their own (here planned by liveness, as the daemon
 * does). Three engines detect at once from three threads while a plan is
 * loaded through one of them (make test-sanitize runs this under TSan):
 * each detects what an engine of its own detects; the plan loaded through
 * one is every engine's, under one generation; the first engine may close
 * before the others. */
typedef struct {
    mpd_engine *e;
    const mpd_result *ref; /* dog, person */
    int bad;
} shared_job;

static void *shared_main(void *arg)
{
    shared_job *j = arg;
    for (int k = 0; k < 4; k++) {
        mpd_result r;
        char m[256];
        const mpd_image *im = k % 2 ? &person : &dog;
        if (mpd_engine_detect(j->e, im, 1, NULL, &r, m, sizeof(m))) {
            j->bad++;
            continue;
        }
        const mpd_result *ref = &j->ref[k % 2];
        j->bad += r.count != ref->count;
        for (int i = 0; i < r.count && i < ref->count; i++)
            j->bad += r.det[i].class_id != ref->det[i].class_id ||
                      r.det[i].confidence != ref->det[i].confidence ||
                      r.det[i].x0 != ref->det[i].x0 || r.det[i].y1 != ref->det[i].y1;
        mpd_result_free(&r);
    }
    return NULL;
}

static void test_shared_engines(void **state)
{
    (void)state;
    mpd_engine_options o = opts(cfg_path, weights_path, names_path);
    o.threads = 1;
    o.reuse_buffers = 1;
    o.plan_path = "config/fp32_all.plan";
    mpd_engine *e[3];
    assert_int_equal(mpd_engine_open(&o, &e[0], msg, sizeof(msg)), 0);
    for (int k = 1; k < 3; k++)
        assert_int_equal(mpd_engine_open_shared(e[0], &e[k], msg, sizeof(msg)), 0);
    /* The references: an engine of its own, every buffer kept. */
    assert_int_equal(mpd_engine_load_plan(eng, "config/fp32_all.plan", msg, sizeof(msg)), 0);
    mpd_result ref[2];
    assert_int_equal(mpd_engine_detect(eng, &dog, 1, NULL, &ref[0], msg, sizeof(msg)), 0);
    assert_int_equal(mpd_engine_detect(eng, &person, 1, NULL, &ref[1], msg, sizeof(msg)), 0);
    assert_true(ref[0].count >= 3 && ref[1].count >= 2);
    pthread_t t[3];
    shared_job jobs[3];
    for (int k = 0; k < 3; k++) {
        jobs[k] = (shared_job){e[k], ref, 0};
        assert_int_equal(pthread_create(&t[k], NULL, shared_main, &jobs[k]), 0);
    }
    /* The same plan again, through engine 1, while they run: detections
     * do not change, the generation does, for all. */
    assert_int_equal(mpd_engine_load_plan(e[1], "config/fp32_all.plan", msg, sizeof(msg)), 0);
    for (int k = 0; k < 3; k++) {
        pthread_join(t[k], NULL);
        assert_int_equal(jobs[k].bad, 0);
    }
    mpd_plan_info pi[3];
    for (int k = 0; k < 3; k++)
        assert_int_equal(mpd_engine_plan_info(e[k], &pi[k]), 0);
    assert_int_equal(pi[0].generation, 2);
    assert_int_equal(pi[1].generation, 2);
    assert_int_equal(pi[2].generation, 2);
    /* int8 through engine 2: every engine runs it, to the same detections
     * as an engine of its own under it. */
    assert_int_equal(mpd_engine_load_plan(e[2], "config/int8_all.plan", msg, sizeof(msg)), 0);
    assert_int_equal(mpd_engine_load_plan(eng, "config/int8_all.plan", msg, sizeof(msg)), 0);
    mpd_result ref8, r8;
    assert_int_equal(mpd_engine_detect(eng, &dog, 1, NULL, &ref8, msg, sizeof(msg)), 0);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(mpd_engine_detect(e[k], &dog, 1, NULL, &r8, msg, sizeof(msg)), 0);
        assert_int_equal(r8.plan_generation, 3);
        assert_same_detections(&ref8, &r8);
        mpd_result_free(&r8);
    }
    /* The derived weights exist once; each engine's own memory is its
     * buffers, and liveness makes them smaller than one per layer. */
    mpd_memory_info m0, m1, mk;
    mpd_engine_memory(e[0], &m0);
    mpd_engine_memory(e[1], &m1);
    mpd_engine_memory(eng, &mk);
    assert_string_equal(m0.where, "host");
    assert_true(m0.plan > 0 && m0.plan == m1.plan && m0.weights == m1.weights);
    assert_true(m1.engine > 0 && m1.engine == m0.engine);
    /* eng: max_batch 2, every buffer kept; per image it holds more. */
    print_message("per engine: %.1f MiB reused buffers, %.1f MiB (batch 2) kept; weights %.1f "
                  "MiB and int8 plan %.1f MiB once\n",
                  m1.engine / 1048576.0, mk.engine / 1048576.0, m0.weights / 1048576.0,
                  m0.plan / 1048576.0);
    assert_true(2 * m1.engine < mk.engine);
    /* Reused buffers are not read back as a layer's output; the yolo
     * outputs (the detections') are kept. */
    float *y = malloc(mpd_engine_layer_output_size(e[1], 16) * sizeof(float));
    assert_int_equal(mpd_engine_layer_output(e[1], 0, 1, y, msg, sizeof(msg)), MPD_EINVAL);
    assert_int_equal(mpd_engine_layer_output(e[1], 16, 1, y, msg, sizeof(msg)), 0);
    free(y);
    /* The model's first engine closes first; the others go on. */
    mpd_engine_close(e[0]);
    assert_int_equal(mpd_engine_detect(e[1], &dog, 1, NULL, &r8, msg, sizeof(msg)), 0);
    assert_same_detections(&ref8, &r8);
    mpd_result_free(&r8);
    mpd_engine_close(e[2]);
    mpd_engine_close(e[1]);
    mpd_result_free(&ref8);
    mpd_result_free(&ref[0]);
    mpd_result_free(&ref[1]);
    assert_int_equal(mpd_engine_load_plan(eng, "config/fp32_all.plan", msg, sizeof(msg)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_reports_model_facts),
        cmocka_unit_test(test_fp32_kernels_match_the_cpu),
        cmocka_unit_test(test_open_missing_cfg),
        cmocka_unit_test(test_open_missing_weights),
        cmocka_unit_test(test_open_missing_names),
        cmocka_unit_test(test_open_weights_for_another_network),
        cmocka_unit_test(test_open_names_with_too_few_labels),
        cmocka_unit_test(test_open_bogus_backend),
        cmocka_unit_test(test_open_cuda_without_gpu_says_why),
        cmocka_unit_test(test_open_bad_options),
        cmocka_unit_test(test_labels_without_names_file_are_class_n),
        cmocka_unit_test(test_detect_dog_jpg),
        cmocka_unit_test(test_detect_thresh_one_finds_nothing),
        cmocka_unit_test(test_detect_rejects_bad_arguments),
        cmocka_unit_test(test_batch_of_two_matches_single_images),
        cmocka_unit_test(test_batch_of_seven_photos_equals_single_passes),
        cmocka_unit_test(test_layer_info_counts_runs),
        cmocka_unit_test(test_layer_timing_off_leaves_stats),
        cmocka_unit_test(test_detect_memory_garbage_then_recovers),
        cmocka_unit_test(test_layer_output_yolo16),
        cmocka_unit_test(test_forward_and_preprocess_match_detect),
        cmocka_unit_test(test_thread_counts_give_same_detections),
        cmocka_unit_test(test_detect_extreme_aspect_image_has_finite_boxes),
        cmocka_unit_test(test_detect_rejects_empty_image),
        cmocka_unit_test(test_last_plan_info_names_the_plan_that_ran),
        cmocka_unit_test(test_last_plan_info_before_any_pass),
        cmocka_unit_test(test_concurrent_plan_loads),
        cmocka_unit_test(test_shared_engines),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
