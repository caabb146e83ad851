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

/* Every shipped preset parses; the paper's layers are where they should be. */
static void test_presets(void **state)
{
    (void)state;
    const char *names[] = {"fp32_all",         "fp16_all",         "int8_all",
                           "fp32_int8",        "int8_fp32",        "int8_all_affine",
                           "fp32_int8_affine", "int8_fp32_affine", "int8_every",
                           "int8_every_affine"};
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
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
