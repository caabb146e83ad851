/* test_plan.c - precision plans: the cfg's precision= / quantize= keys (the
 * base plan), plan files and their errors (each naming file:line), the
 * presets in config/, and calibration files. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "mpd.h"
#include "net.h"
#include "plan.h"
#include "testutil.h"

static char msg[1024];
static mpd_net *tiny; /* yolov3-tiny, no weights */

static int setup(void **state)
{
    (void)state;
    char *cfg = tu_model("yolov3-tiny.cfg");
    int rc = mpd_net_parse(cfg, &tiny, msg, sizeof(msg));
    free(cfg);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    mpd_net_free(tiny);
    return 0;
}

/* Writes text to a temp plan file in /tmp (so relative calibration paths
 * resolve there) and parses it on top of the cfg's base plan. */
static int parse_text(const char *text, mpd_plan **out, char **path)
{
    mpd_plan *base;
    assert_int_equal(mpd_plan_from_net(tiny, &base, msg, sizeof(msg)), 0);
    *path = tu_write_temp(text, strlen(text));
    assert_non_null(*path);
    msg[0] = '\0';
    int rc = mpd_plan_parse_file(*path, tiny, base, out, msg, sizeof(msg));
    mpd_plan_free(base);
    return rc;
}

static void expect_error_at(const char *text, int line, const char *words)
{
    mpd_plan *p = NULL;
    char *path;
    int rc = parse_text(text, &p, &path);
    char want[128];
    snprintf(want, sizeof(want), "%s:%d:", path, line);
    if (rc == 0 || !strstr(msg, want) || (words && !strstr(msg, words)))
        print_error("plan:\n%s\n-> rc %d, '%s' (wanted '%s' and '%s')\n", text, rc, msg, want,
                    words ? words : "");
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(msg, want));
    if (words)
        assert_non_null(strstr(msg, words));
    assert_null(p);
    unlink(path);
    free(path);
}

static void test_base_plan_is_fp32_without_keys(void **state)
{
    (void)state;
    mpd_plan *p;
    assert_int_equal(mpd_plan_from_net(tiny, &p, msg, sizeof(msg)), 0);
    for (int i = 0; i < p->n; i++)
        assert_int_equal(p->prec[i], MPD_PREC_FP32);
    assert_int_equal(p->scheme, MPD_SCHEME_SYMMETRIC);
    assert_null(p->out_thresh);
    mpd_plan_free(p);
}

/* The paper's Fig. 2 keys in the cfg make the base plan. */
static void test_cfg_keys_make_the_base_plan(void **state)
{
    (void)state;
    const char *text = "[net]\nwidth=8\nheight=8\nchannels=3\n"
                       "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"
                       "precision=int8\nquantize=1\n"
                       "[convolutional]\nfilters=4\nsize=1\nactivation=leaky\nprecision=fp16\n"
                       "[convolutional]\nfilters=4\nsize=1\nactivation=leaky\nquantize=1\n"
                       "[convolutional]\nfilters=4\nsize=1\nactivation=leaky\nquantize=0\n";
    mpd_cfg *cfg;
    mpd_net *net;
    assert_int_equal(mpd_cfg_parse_string(text, "k.cfg", &cfg, msg, sizeof(msg)), 0);
    assert_int_equal(mpd_net_from_cfg(cfg, &net, msg, sizeof(msg)), 0);
    mpd_plan *p;
    assert_int_equal(mpd_plan_from_net(net, &p, msg, sizeof(msg)), 0);
    assert_int_equal(p->prec[0], MPD_PREC_INT8);
    assert_int_equal(p->prec[1], MPD_PREC_FP16);
    assert_int_equal(p->prec[2], MPD_PREC_INT8); /* quantize=1 alone means int8 */
    assert_int_equal(p->prec[3], MPD_PREC_FP32);
    mpd_plan_free(p);
    mpd_net_free(net);
    mpd_cfg_free(cfg);
}

static void test_cfg_key_errors_name_their_line(void **state)
{
    (void)state;
    const char *bad[] = {
        "[net]\nwidth=8\nheight=8\n[convolutional]\nfilters=4\nprecision=int4\n",
        "[net]\nwidth=8\nheight=8\n[convolutional]\nfilters=4\nprecision=int8\nquantize=0\n",
        "[net]\nwidth=8\nheight=8\n[convolutional]\nfilters=4\nquantize=2\n",
        "[net]\nwidth=8\nheight=8\n[maxpool]\nsize=2\nprecision=int8\n",
    };
    const int line[] = {6, 6, 6, 6};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        mpd_cfg *cfg;
        mpd_net *net = NULL;
        assert_int_equal(mpd_cfg_parse_string(bad[k], "k.cfg", &cfg, msg, sizeof(msg)), 0);
        int rc = mpd_net_from_cfg(cfg, &net, msg, sizeof(msg));
        char want[32];
        snprintf(want, sizeof(want), "k.cfg:%d:", line[k]);
        if (rc != MPD_EPARSE || !strstr(msg, want))
            print_error("case %zu: rc %d '%s'\n", k, rc, msg);
        assert_int_equal(rc, MPD_EPARSE);
        assert_non_null(strstr(msg, want));
        assert_null(net);
        mpd_cfg_free(cfg);
    }
}

static void test_plan_file_default_and_overrides(void **state)
{
    (void)state;
    mpd_plan *p;
    char *path;
    assert_int_equal(parse_text("# comment\n[plan]\ndefault = int8\nscheme = affine\n"
                                "[layers]\n2 = fp32\n12 = fp16\n",
                                &p, &path),
                     0);
    for (int i = 0; i < tiny->n; i++) {
        mpd_precision want = tiny->layers[i].kind != MPD_LAYER_CONV ? MPD_PREC_FP32
                             : i == 2                             ? MPD_PREC_FP32
                             : i == 12                            ? MPD_PREC_FP16
                                                                  : MPD_PREC_INT8;
        assert_int_equal(p->prec[i], want);
    }
    assert_int_equal(p->scheme, MPD_SCHEME_AFFINE);
    assert_string_equal(p->source, path);
    mpd_plan_free(p);
    unlink(path);
    free(path);
}

static void test_plan_file_errors_name_file_and_line(void **state)
{
    (void)state;
    expect_error_at("[plan]\ndefault = int4\n", 2, "int4");
    expect_error_at("[plan]\nscheme = asymmetric\n", 2, "asymmetric");
    expect_error_at("[plan]\ndefault = fp32\nspeed = fast\n", 3, "unknown key");
    expect_error_at("[plan]\n[layers]\n24 = int8\n", 3, "0..23");
    expect_error_at("[plan]\n[layers]\n-1 = int8\n", 3, NULL);
    expect_error_at("[plan]\n[layers]\nx = int8\n", 3, NULL);
    /* Layer 1 is a maxpool: only convolutions take another precision. */
    expect_error_at("[layers]\n1 = int8\n", 2, "layer 1 is a max layer");
    expect_error_at("[layers]\n2 = int3\n", 2, "int3");
    expect_error_at("[plans]\ndefault = int8\n", 1, "unknown section");
    expect_error_at("[plan]\ndefault = fp32\n[plan]\n", 3, "second");
    expect_error_at("[layers]\n2 = int8\n2 = fp16\n", 3, "duplicate");
}

static void test_missing_calibration_is_an_error(void **state)
{
    (void)state;
    mpd_plan *p = NULL;
    char *path;
    int rc = parse_text("[plan]\ncalibration = does-not-exist.calib\n", &p, &path);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(msg, "does-not-exist.calib"));
    assert_non_null(strstr(msg, path));
    unlink(path);
    free(path);
}

static void test_calibration_file_errors(void **state)
{
    (void)state;
    const char *bad[] = {
        "[thresholds]\ninput = 1\n0 = -3\n",          /* not positive */
        "[thresholds]\ninput = 1\n99 = 3\n",          /* layer out of range */
        "[thresholds]\n0 = 3\n",                      /* no input */
        "[thresholds]\ninput = 1\n0 = 3\n",           /* conv 2 missing */
        "[calibration]\nmethod=x\n[weird]\n",         /* unknown section */
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        mpd_plan *p;
        assert_int_equal(mpd_plan_from_net(tiny, &p, msg, sizeof(msg)), 0);
        char *path = tu_write_temp(bad[k], strlen(bad[k]));
        int rc = mpd_plan_load_calibration(p, tiny, path, msg, sizeof(msg));
        if (rc == 0)
            print_error("case %zu accepted\n", k);
        assert_int_not_equal(rc, 0);
        assert_non_null(strstr(msg, path));
        assert_null(p->out_thresh); /* the plan is untouched */
        mpd_plan_free(p);
        unlink(path);
        free(path);
    }
}

/* The conv-output entries of config/yolov3-tiny.calib (and input), as a
 * calibration file of its own: what an older or hand-made file holds. */
static char *conv_only_calibration(void)
{
    FILE *f = fopen("config/yolov3-tiny.calib", "r");
    assert_non_null(f);
    char line[256], *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    int in_thresholds = 0;
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '[')
            in_thresholds = strncmp(line, "[thresholds]", 12) == 0;
        int idx;
        if (in_thresholds && sscanf(line, "%d =", &idx) == 1 &&
            tiny->layers[idx].kind != MPD_LAYER_CONV)
            continue;
        fputs(line, out);
    }
    fclose(f);
    fclose(out);
    char *path = tu_write_temp(text, len);
    free(text);
    assert_non_null(path);
    return path;
}

/* Issue 10, defect 11: a file without the maxpool, route and upsample
 * entries used to leave them 0, i.e. scale 1.0 for the convolutions that
 * read them. They are derived instead: a maxpool and an upsample keep their
 * input's range, a route takes the largest of its sources'. */
static void test_calibration_derives_pool_route_upsample_ranges(void **state)
{
    (void)state;
    char *path = conv_only_calibration();
    mpd_plan *p;
    assert_int_equal(mpd_plan_from_net(tiny, &p, msg, sizeof(msg)), 0);
    int rc = mpd_plan_load_calibration(p, tiny, path, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    const float *t = p->out_thresh;
    for (int i = 0; i < tiny->n; i++) {
        const mpd_layer *l = &tiny->layers[i];
        float want = -1;
        if (l->kind == MPD_LAYER_MAXPOOL || l->kind == MPD_LAYER_UPSAMPLE) {
            want = t[i - 1];
        } else if (l->kind == MPD_LAYER_ROUTE) {
            want = 0;
            for (int r = 0; r < l->u.route.n; r++)
                want = t[l->u.route.from[r]] > want ? t[l->u.route.from[r]] : want;
        }
        if (want < 0)
            continue;
        if (!(t[i] == want && want > 0))
            print_error("layer %d (%s): threshold %g, want %g\n", i, mpd_layer_kind_name(l->kind),
                        (double)t[i], (double)want);
        assert_true(t[i] == want && want > 0);
    }
    /* yolov3-tiny: 1, 3, .. 11 maxpools, 17 route(13), 19 upsample(18),
     * 20 route(19, 8). */
    assert_true(t[11] == t[10]);
    assert_true(t[17] == t[13]);
    assert_true(t[19] == t[18]);
    assert_true(t[20] == (t[19] > t[8] ? t[19] : t[8]));
    mpd_plan_free(p);
    unlink(path);
    free(path);
}

/* An entry the file gives wins over a derived one. */
static void test_calibration_entries_given_are_kept(void **state)
{
    (void)state;
    mpd_plan *p;
    assert_int_equal(mpd_plan_from_net(tiny, &p, msg, sizeof(msg)), 0);
    assert_int_equal(
        mpd_plan_load_calibration(p, tiny, "config/yolov3-tiny.calib", msg, sizeof(msg)), 0);
    /* The committed file's own route entries differ from their sources'. */
    assert_true(p->out_thresh[17] > 3.77f && p->out_thresh[17] < 3.78f);
    assert_true(p->out_thresh[20] > 12.75f && p->out_thresh[20] < 12.76f);
    mpd_plan_free(p);
}

/* A range that cannot be derived - here a [yolo] layer's output, read by a
 * convolution - and is not in the file refuses the file, naming the file,
 * the line of its [thresholds] section and the layer. */
static void test_calibration_refuses_an_underivable_range(void **state)
{
    (void)state;
    const char *cfg = "[net]\nwidth=8\nheight=8\nchannels=3\n"
                      "[convolutional]\nfilters=21\nsize=1\nactivation=linear\n"
                      "[yolo]\nmask=0,1,2\nanchors=1,1,2,2,3,3\nclasses=2\nnum=3\n"
                      "[convolutional]\nfilters=4\nsize=1\nactivation=leaky\n";
    mpd_net *net = tu_net_from_text(cfg, "y.cfg", msg, sizeof(msg));
    assert_non_null(net);
    const char *text = "# made by hand\n[thresholds]\ninput = 1\n0 = 5\n2 = 3\n";
    char *path = tu_write_temp(text, strlen(text));
    mpd_plan *p;
    assert_int_equal(mpd_plan_from_net(net, &p, msg, sizeof(msg)), 0);
    msg[0] = '\0';
    int rc = mpd_plan_load_calibration(p, net, path, msg, sizeof(msg));
    char want[128];
    snprintf(want, sizeof(want), "%s:2:", path);
    if (rc == 0 || !strstr(msg, want) || !strstr(msg, "layer 1"))
        print_error("rc %d, '%s' (wanted '%s' and 'layer 1')\n", rc, msg, want);
    assert_int_equal(rc, MPD_EPARSE);
    assert_non_null(strstr(msg, want));
    assert_non_null(strstr(msg, "layer 1"));
    assert_null(p->out_thresh);
    /* Given, it is taken. */
    const char *ok = "[thresholds]\ninput = 1\n0 = 5\n1 = 1\n2 = 3\n";
    char *okpath = tu_write_temp(ok, strlen(ok));
    assert_int_equal(mpd_plan_load_calibration(p, net, okpath, msg, sizeof(msg)), 0);
    assert_true(p->out_thresh[1] == 1.f);
    mpd_plan_free(p);
    mpd_net_free(net);
    unlink(path);
    unlink(okpath);
    free(path);
    free(okpath);
}

/* Issue 10, defect 12: the tensor types looked at no more than 32 readers
 * of a layer. Only the layer right after can be a reader that takes int8
 * or half (a convolution or a maxpool; routes and shortcuts read fp32), so
 * the cap could not change a decision yet; this pins the rule for a layer
 * with 40 readers. Layer 1 is read by convolution 2 and by 40 routes (the
 * 33rd and later ones included): its output must stay fp32; the rest get
 * the types they would get without the routes. */
static void test_tensor_types_see_every_reader(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    fputs("[net]\nwidth=6\nheight=6\nchannels=3\n"
          "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"  /* 0 */
          "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"  /* 1 */
          "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"  /* 2 */
          "[maxpool]\nsize=2\nstride=2\n"                                  /* 3 */
          "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"  /* 4 */
          "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n", /* 5 */
          f);
    /* Layers 6 .. 45: routes of layer 1. */
    for (int r = 0; r < 40; r++)
        fputs("[route]\nlayers=1\n", f);
    fclose(f);
    mpd_net *net = tu_net_from_text(text, "many.cfg", msg, sizeof(msg));
    free(text);
    if (!net)
        print_error("%s\n", msg);
    assert_non_null(net);
    mpd_plan *p;
    assert_int_equal(mpd_plan_from_net(net, &p, msg, sizeof(msg)), 0);
    p->out_thresh = calloc((size_t)net->n, sizeof(float));
    assert_non_null(p->out_thresh);
    p->input_thresh = 1;
    for (int i = 0; i < net->n; i++) {
        p->out_thresh[i] = 2;
        if (net->layers[i].kind == MPD_LAYER_CONV)
            p->prec[i] = MPD_PREC_INT8;
    }
    mpd_tensor_type *type = calloc((size_t)net->n, sizeof(*type));
    mpd_qparams *oq = calloc((size_t)net->n, sizeof(*oq));
    assert_int_equal(mpd__plan_tensor_types(net, p, type, oq), 0);
    /* 0 -> 1 only: int8. 1 -> 2 and 40 routes: fp32. 2 -> maxpool -> 4:
     * int8 through the maxpool. 4 -> 5: int8. 5 is read by a route (6
     * follows it): fp32. */
    const mpd_tensor_type want[6] = {MPD_TENSOR_I8, MPD_TENSOR_F32, MPD_TENSOR_I8,
                                     MPD_TENSOR_I8, MPD_TENSOR_I8,  MPD_TENSOR_F32};
    for (int i = 0; i < 6; i++) {
        if (type[i] != want[i])
            print_error("layer %d: type %d, want %d\n", i, type[i], want[i]);
        assert_int_equal(type[i], want[i]);
    }
    for (int i = 6; i < net->n; i++)
        assert_int_equal(type[i], MPD_TENSOR_F32);
    /* fp16: a convolution read by routes beyond the 32nd stays fp32 too. */
    for (int i = 0; i < net->n; i++)
        if (net->layers[i].kind == MPD_LAYER_CONV)
            p->prec[i] = MPD_PREC_FP16;
    assert_int_equal(mpd__plan_tensor_types(net, p, type, oq), 0);
    assert_int_equal(type[0], MPD_TENSOR_F16);
    assert_int_equal(type[1], MPD_TENSOR_F32);
    assert_int_equal(type[2], MPD_TENSOR_F16);
    assert_int_equal(type[4], MPD_TENSOR_F16);
    assert_int_equal(type[5], MPD_TENSOR_F32);
    /* bf16 chains like int8: 0 -> 1 bf16; 1 (routes) fp32; 2 -> maxpool
     * -> 4 bf16 through the maxpool; 4 -> 5 bf16; 5 (routes) fp32. With
     * 4 in fp32, 2 and the maxpool have no bf16 reader: fp32. */
    for (int i = 0; i < net->n; i++)
        if (net->layers[i].kind == MPD_LAYER_CONV)
            p->prec[i] = MPD_PREC_BF16;
    assert_int_equal(mpd__plan_tensor_types(net, p, type, oq), 0);
    const mpd_tensor_type want16[6] = {MPD_TENSOR_BF16, MPD_TENSOR_F32,  MPD_TENSOR_BF16,
                                       MPD_TENSOR_BF16, MPD_TENSOR_BF16, MPD_TENSOR_F32};
    for (int i = 0; i < 6; i++)
        assert_int_equal(type[i], want16[i]);
    p->prec[4] = MPD_PREC_FP32;
    assert_int_equal(mpd__plan_tensor_types(net, p, type, oq), 0);
    assert_int_equal(type[0], MPD_TENSOR_BF16);
    assert_int_equal(type[2], MPD_TENSOR_F32);
    assert_int_equal(type[3], MPD_TENSOR_F32);
    free(type);
    free(oq);
    mpd_plan_free(p);
    mpd_net_free(net);
}

/* Every shipped preset parses; the paper's layers are where they should be. */
static void test_presets(void **state)
{
    (void)state;
    const char *names[] = {"fp32_all",         "fp16_all",   "bf16_all",         "int8_all",
                           "fp32_int8",        "int8_fp32",  "int8_all_affine",  "fp32_int8_affine",
                           "int8_fp32_affine", "int8_every", "int8_every_affine"};
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        char path[256];
        snprintf(path, sizeof(path), "config/%s.plan", names[k]);
        mpd_plan *base, *p;
        assert_int_equal(mpd_plan_from_net(tiny, &base, msg, sizeof(msg)), 0);
        int rc = mpd_plan_parse_file(path, tiny, base, &p, msg, sizeof(msg));
        if (rc)
            print_error("%s: %s\n", path, msg);
        assert_int_equal(rc, 0);
        int affine = strstr(names[k], "affine") != NULL;
        assert_int_equal(p->scheme, affine ? MPD_SCHEME_AFFINE : MPD_SCHEME_SYMMETRIC);
        /* Symmetric int8 presets carry the calibration; affine ranges are
         * measured on the fly. */
        int has_int8 = strstr(names[k], "int8") != NULL;
        if (has_int8 && !affine)
            assert_non_null(p->out_thresh);
        for (int i = 0; i < tiny->n; i++) {
            if (tiny->layers[i].kind != MPD_LAYER_CONV) {
                assert_int_equal(p->prec[i], MPD_PREC_FP32);
                continue;
            }
            int paper = i == 2 || i == 12 || i == 21;
            /* int8_all keeps the first convolution and the detection
             * heads in fp32 (README, "Accuracy"). */
            int kept = i == 0 || i == 15 || i == 22;
            mpd_precision want = MPD_PREC_FP32;
            if (strncmp(names[k], "fp16_all", 8) == 0)
                want = MPD_PREC_FP16;
            else if (strncmp(names[k], "bf16_all", 8) == 0)
                want = MPD_PREC_BF16;
            else if (strncmp(names[k], "int8_every", 10) == 0)
                want = MPD_PREC_INT8;
            else if (strncmp(names[k], "int8_all", 8) == 0)
                want = kept ? MPD_PREC_FP32 : MPD_PREC_INT8;
            else if (strncmp(names[k], "fp32_int8", 9) == 0)
                want = paper ? MPD_PREC_INT8 : MPD_PREC_FP32;
            else if (strncmp(names[k], "int8_fp32", 9) == 0)
                want = paper ? MPD_PREC_FP32 : MPD_PREC_INT8;
            assert_int_equal(p->prec[i], want);
        }
        mpd_plan_free(p);
        mpd_plan_free(base);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_plan_is_fp32_without_keys),
        cmocka_unit_test(test_cfg_keys_make_the_base_plan),
        cmocka_unit_test(test_cfg_key_errors_name_their_line),
        cmocka_unit_test(test_plan_file_default_and_overrides),
        cmocka_unit_test(test_plan_file_errors_name_file_and_line),
        cmocka_unit_test(test_missing_calibration_is_an_error),
        cmocka_unit_test(test_calibration_file_errors),
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_calibration_derives_pool_route_upsample_ranges),
        cmocka_unit_test(test_calibration_entries_given_are_kept),
        cmocka_unit_test(test_calibration_refuses_an_underivable_range),
        cmocka_unit_test(test_tensor_types_see_every_reader),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
