/* Parity with the reference implementation: Debian's libdarknet runs the
 * same cfg and weights, and our CPU engine must agree with it
 *   (a) layer by layer on the same input tensor (dog.jpg): max abs diff of
 *       every layer's output <= 1e-4 x that layer's max |value|;
 *   (b) on the final detections of all seven darknet sample photos at
 *       thresh 0.25, both sides decoding with stb: same labels, confidences
 *       within 0.5 percentage points, boxes within 2 px. */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../tests/darknet_ref.h"
#include "engine.h"
#include "testutil.h"

static const char *const photos[] = {"dog.jpg",     "person.jpg", "horses.jpg", "eagle.jpg",
                                     "giraffe.jpg", "kite.jpg",   "scream.jpg"};

typedef struct {
    dnref *ref;
    mpd_engine *eng;
} fixture;

/* f's engine: 0 threads (all cores) and oneDNN's default fp32 kernels,
 * or (wino) 3 threads and MPDET_FP32_KERNEL=winograd, whose bands (and so
 * tiles) differ. */
static int open_fixture(fixture *f, int wino, void **state)
{
    char *cfg = tu_model("yolov3-tiny.cfg"), *w = tu_model("yolov3-tiny.weights");
    char *names = tu_model("coco.names");
    /* darknet prints its layer table on stderr; keep the test output short. */
    fflush(stderr);
    int saved = dup(2), devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 2);
    f->ref = dnref_open(cfg, w);
    dup2(saved, 2);
    close(saved);
    close(devnull);
    char msg[512];
    mpd_engine_options o = {.cfg_path = cfg,
                            .weights_path = w,
                            .names_path = names,
                            .backend = "cpu",
                            .threads = wino ? 3 : 0};
    if (wino)
        setenv("MPDET_FP32_KERNEL", "winograd", 1);
    int rc = mpd_engine_open(&o, &f->eng, msg, sizeof(msg));
    unsetenv("MPDET_FP32_KERNEL");
    if (rc)
        fprintf(stderr, "engine: %s\n", msg);
    free(cfg);
    free(w);
    free(names);
    if (!f->ref || rc)
        return -1;
    *state = f;
    return 0;
}

static int setup(void **state)
{
    static fixture f;
    return open_fixture(&f, 0, state);
}

static int setup_wino(void **state)
{
    static fixture f;
    return open_fixture(&f, 1, state);
}

static int teardown(void **state)
{
    fixture *f = *state;
    dnref_close(f->ref);
    mpd_engine_close(f->eng);
    return 0;
}

/* Our decoder + letterbox against darknet's on the same file. Both decode
 * with stb, so the tensors should agree to float rounding. */
static void test_letterbox_matches_darknet(void **state)
{
    fixture *f = *state;
    int c, h, w;
    dnref_input_size(f->ref, &c, &h, &w);
    size_t n = (size_t)c * h * w;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    assert_non_null(a);
    assert_non_null(b);
    for (size_t p = 0; p < sizeof(photos) / sizeof(photos[0]); p++) {
        char *path = tu_darknet_data(photos[p]);
        int iw, ih;
        assert_int_equal(dnref_load_letterboxed(f->ref, path, b, &iw, &ih), 0);
        mpd_image im;
        char msg[256];
        assert_int_equal(mpd_image_load(path, 0, &im, msg, sizeof(msg)), 0);
        assert_int_equal(im.w, iw);
        assert_int_equal(im.h, ih);
        assert_int_equal(mpd_engine_preprocess(f->eng, &im, a), 0);
        double md, mr;
        tu_max_diff(a, b, n, &md, &mr);
        print_message("%-12s letterbox max diff %.3g\n", photos[p], md);
        assert_true(md <= 1e-6);
        mpd_image_free(&im);
        free(path);
    }
    free(a);
    free(b);
}

static void test_every_layer_matches_darknet(void **state)
{
    fixture *f = *state;
    int c, h, w;
    dnref_input_size(f->ref, &c, &h, &w);
    size_t n = (size_t)c * h * w;
    float *in = malloc(n * sizeof(float)), *copy = malloc(n * sizeof(float));
    assert_non_null(in);
    assert_non_null(copy);
    char *path = tu_darknet_data("dog.jpg");
    int iw, ih;
    assert_int_equal(dnref_load_letterboxed(f->ref, path, in, &iw, &ih), 0);
    memcpy(copy, in, n * sizeof(float));
    dnref_forward(f->ref, copy);
    char msg[256];
    assert_int_equal(mpd_engine_forward(f->eng, in, 1, msg, sizeof(msg)), 0);
    int layers = mpd_engine_layer_count(f->eng);
    assert_int_equal(layers, dnref_layer_count(f->ref));
    int bad = 0;
    for (int i = 0; i < layers; i++) {
        int rn;
        const float *ref = dnref_layer_output(f->ref, i, &rn);
        size_t on = mpd_engine_layer_output_size(f->eng, i);
        assert_int_equal((size_t)rn, on);
        float *ours = malloc(on * sizeof(float));
        assert_non_null(ours);
        assert_int_equal(mpd_engine_layer_output(f->eng, i, 1, ours, msg, sizeof(msg)), 0);
        double md, mr;
        tu_max_diff(ours, ref, on, &md, &mr);
        mpd_layer_info li;
        mpd_engine_layer_info(f->eng, i, &li);
        double rel = mr > 0 ? md / mr : md;
        print_message("layer %2d %-8s %4dx%4dx%4d  max|ref| %9.4f  max diff %.3g (rel %.3g)\n",
                      i, li.kind, li.out_w, li.out_h, li.out_c, mr, md, rel);
        if (!(rel <= 1e-4))
            bad++;
        free(ours);
    }
    assert_int_equal(bad, 0);
    free(path);
    free(in);
    free(copy);
}

static void test_detections_match_darknet(void **state)
{
    fixture *f = *state;
    const float thresh = .25f, nms = .45f;
    mpd_detect_params p = {thresh, nms};
    int total = 0;
    for (size_t k = 0; k < sizeof(photos) / sizeof(photos[0]); k++) {
        char *path = tu_darknet_data(photos[k]);
        dnref_det ref[256];
        int nref = dnref_detect(f->ref, path, thresh, nms, ref, 256);
        assert_true(nref >= 0);
        mpd_image im;
        mpd_result r;
        char msg[256];
        assert_int_equal(mpd_image_load(path, 0, &im, msg, sizeof(msg)), 0);
        assert_int_equal(mpd_engine_detect(f->eng, &im, 1, &p, &r, msg, sizeof(msg)), 0);
        print_message("%-12s darknet %d, mpdet %d detections\n", photos[k], nref, r.count);
        assert_int_equal(r.count, nref);
        int *used = calloc((size_t)r.count + 1, sizeof(int));
        for (int i = 0; i < nref; i++) {
            int found = -1;
            for (int j = 0; j < r.count && found < 0; j++) {
                const mpd_detection *d = &r.det[j];
                if (used[j] || d->class_id != ref[i].cls)
                    continue;
                if (fabsf(d->x0 - ref[i].x0) <= 2 && fabsf(d->y0 - ref[i].y0) <= 2 &&
                    fabsf(d->x1 - ref[i].x1) <= 2 && fabsf(d->y1 - ref[i].y1) <= 2)
                    found = j;
            }
            if (found < 0)
                fail_msg("%s: darknet's %s %.1f%% [%.0f %.0f %.0f %.0f] has no match", photos[k],
                         mpd_engine_label(f->eng, ref[i].cls), ref[i].prob * 100, ref[i].x0,
                         ref[i].y0, ref[i].x1, ref[i].y1);
            used[found] = 1;
            const mpd_detection *d = &r.det[found];
            print_message("  %-10s darknet %5.1f%% mpdet %5.1f%%  box diff %.2f px\n", d->label,
                          ref[i].prob * 100, d->confidence * 100,
                          fmaxf(fmaxf(fabsf(d->x0 - ref[i].x0), fabsf(d->y0 - ref[i].y0)),
                                fmaxf(fabsf(d->x1 - ref[i].x1), fabsf(d->y1 - ref[i].y1))));
            assert_true(fabsf(d->confidence - ref[i].prob) <= .005f);
        }
        total += nref;
        free(used);
        mpd_result_free(&r);
        mpd_image_free(&im);
        free(path);
    }
    /* The photos are full of objects: an empty comparison would prove nothing. */
    assert_true(total >= 20);
}

/* MPDET_FP32_KERNEL=winograd: oneDNN makes Winograd convolutions with
 * AVX-512 only; elsewhere the group's parity tests rerun the direct ones. */
static void test_winograd_where_onednn_makes_it(void **state)
{
    fixture *f = *state;
    int wino = 0;
    for (int i = 0; i < mpd_engine_layer_count(f->eng); i++) {
        mpd_layer_info li;
        mpd_engine_layer_info(f->eng, i, &li);
        if (strstr(li.kernel, "wino")) {
            print_message("layer %2d: %s\n", i, li.kernel);
            wino++;
            assert_true(li.size == 3 && li.stride == 1 && li.in_c >= 32);
        }
    }
    if (!wino) {
        print_message("skipped: oneDNN makes no Winograd convolution on this CPU (AVX-512 only)\n");
        skip();
    }
    assert_true(wino >= 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_letterbox_matches_darknet),
        cmocka_unit_test(test_every_layer_matches_darknet),
        cmocka_unit_test(test_detections_match_darknet),
    };
    const struct CMUnitTest wino_tests[] = {
        cmocka_unit_test(test_winograd_where_onednn_makes_it),
        cmocka_unit_test(test_every_layer_matches_darknet),
        cmocka_unit_test(test_detections_match_darknet),
    };
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    failed += cmocka_run_group_tests_name("MPDET_FP32_KERNEL=winograd, 3 threads", wino_tests,
                                          setup_wino, teardown);
    return failed;
}
