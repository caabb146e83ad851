/* test_weights.c - mpd_net_load_weights: the official yolov3-tiny weights,
 * size checks against truncated / oversized / empty files, header versions
 * (32- vs 64-bit "seen") and batch-norm folding, checked against values
 * computed here from the raw file contents. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "mpd.h"
#include "net.h"
#include "testutil.h"

#define TINY_BYTES 35434956LL

static char msg[2048];

static mpd_net *parse_text(const char *text)
{
    mpd_net *net = tu_net_from_text(text, "mini.cfg", msg, sizeof(msg));
    if (!net)
        print_error("%s\n", msg);
    assert_non_null(net);
    return net;
}

static mpd_net *parse_tiny(void)
{
    char *path = tu_model("yolov3-tiny.cfg");
    mpd_net *net = NULL;
    int rc = mpd_net_parse(path, &net, msg, sizeof(msg));
    free(path);
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    return net;
}

/* The whole official weights file, read once. */
static unsigned char *real_bytes;
static size_t real_len;

static int setup_real(void **state)
{
    (void)state;
    char *path = tu_model("yolov3-tiny.weights");
    FILE *f = fopen(path, "rb");
    free(path);
    if (!f)
        return -1;
    real_bytes = malloc((size_t)TINY_BYTES + 16);
    real_len = real_bytes ? fread(real_bytes, 1, (size_t)TINY_BYTES + 16, f) : 0;
    fclose(f);
    return real_len == (size_t)TINY_BYTES ? 0 : -1;
}

static int teardown_real(void **state)
{
    (void)state;
    free(real_bytes);
    real_bytes = NULL;
    return 0;
}

static float raw_float(size_t byte_off)
{
    float v;
    memcpy(&v, real_bytes + byte_off, 4);
    return v;
}

/* Asserts that the decimal number v appears in s as a whole number (not as
 * part of a longer run of digits). */
static void assert_has_number(const char *s, long long v)
{
    char num[32];
    snprintf(num, sizeof(num), "%lld", v);
    size_t n = strlen(num);
    for (const char *p = strstr(s, num); p; p = strstr(p + 1, num)) {
        int before = p > s && isdigit((unsigned char)p[-1]);
        int after = isdigit((unsigned char)p[n]);
        if (!before && !after)
            return;
    }
    print_error("message '%s' does not mention %lld\n", s, v);
    fail();
}

/* Copy of msg with every occurrence of path removed, so numbers inside a
 * temporary file name cannot satisfy assert_has_number. */
static char *without(const char *m, const char *path)
{
    char *out = strdup(m);
    size_t n = strlen(path);
    char *p;
    while ((p = strstr(out, path)))
        memmove(p, p + n, strlen(p + n) + 1);
    return out;
}

/* ---- the real file ------------------------------------------------------- */

static void test_tiny_expected_file_size(void **state)
{
    (void)state;
    mpd_net *net = parse_tiny();
    assert_int_equal(mpd_net_weights_file_size(net, 0, 2), TINY_BYTES);
    /* Version 0.1 stores "seen" in 32 bits: 4 bytes less. */
    assert_int_equal(mpd_net_weights_file_size(net, 0, 1), TINY_BYTES - 4);
    assert_int_equal(mpd_net_weights_file_size(net, 1, 0), TINY_BYTES);
    assert_int_equal(mpd_net_weights_file_size(net, 0, 0), TINY_BYTES - 4);
    mpd_net_free(net);
}

static void test_real_weights_load_and_fold(void **state)
{
    (void)state;
    /* The header is version 0.2.x. */
    int32_t hdr[3];
    memcpy(hdr, real_bytes, sizeof(hdr));
    assert_int_equal(hdr[0], 0);
    assert_int_equal(hdr[1], 2);

    mpd_net *net = parse_tiny();
    char *path = tu_model("yolov3-tiny.weights");
    int rc = mpd_net_load_weights(net, path, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_int_equal(net->weights_loaded, 1);

    /* Every conv has finite weights and biases. */
    for (int i = 0; i < net->n; i++) {
        const mpd_layer *l = &net->layers[i];
        if (l->kind != MPD_LAYER_CONV)
            continue;
        assert_non_null(l->u.conv.weights);
        assert_non_null(l->u.conv.bias);
        size_t k = (size_t)l->in_c * l->u.conv.size * l->u.conv.size;
        for (int o = 0; o < l->u.conv.filters; o++)
            assert_true(isfinite(l->u.conv.bias[o]));
        for (size_t j = 0; j < (size_t)l->u.conv.filters * k; j++)
            assert_true(isfinite(l->u.conv.weights[j]));
    }

    /* Layer 0 (16 filters, 3x3x3, batch-normalized) folded by hand from the
     * raw bytes: biases, scales, means, variances, then weights. */
    const size_t h = 20, nf = 16, k = 27;
    const mpd_layer *l0 = &net->layers[0];
    for (size_t o = 0; o < nf; o++) {
        double bias = raw_float(h + 4 * o);
        double scale = raw_float(h + 4 * (nf + o));
        double mean = raw_float(h + 4 * (2 * nf + o));
        double var = raw_float(h + 4 * (3 * nf + o));
        double s = scale / (sqrt(var) + 1e-6);
        double want_b = bias - mean * s;
        assert_true(fabs(l0->u.conv.bias[o] - want_b) <= 1e-5 * fmax(1, fabs(want_b)));
        for (size_t j = 0; j < k; j++) {
            double w = raw_float(h + 4 * (4 * nf + o * k + j));
            double want_w = w * s;
            assert_true(fabs(l0->u.conv.weights[o * k + j] - want_w) <=
                        1e-5 * fmax(1e-3, fabs(want_w)));
        }
    }
    /* Layer 22 (255 filters, 1x1x256, no batch norm) is the last block of
     * the file and is stored unchanged: 255 biases then 255*256 weights. */
    const mpd_layer *l22 = &net->layers[22];
    assert_int_equal(l22->u.conv.batch_normalize, 0);
    size_t tail = (size_t)TINY_BYTES - 4 * (255 + 255 * 256);
    for (size_t o = 0; o < 255; o++)
        assert_true(l22->u.conv.bias[o] == raw_float(tail + 4 * o));
    for (size_t j = 0; j < 255 * 256; j += 97)
        assert_true(l22->u.conv.weights[j] == raw_float(tail + 4 * (255 + j)));

    /* Loading twice is refused. */
    rc = mpd_net_load_weights(net, path, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EINVAL);
    mpd_net_free(net);
    free(path);
}

/* ---- size mismatches ------------------------------------------------------ */

/* Writes the first len bytes of the real file (plus zero padding when len
 * is larger) to a temp file and tries to load it. */
static void expect_size_refused(size_t len, int want_rc)
{
    unsigned char *buf = calloc(len ? len : 1, 1);
    assert_non_null(buf);
    memcpy(buf, real_bytes, len < real_len ? len : real_len);
    char *path = tu_write_temp((const char *)buf, len);
    free(buf);
    assert_non_null(path);
    mpd_net *net = parse_tiny();
    int rc = mpd_net_load_weights(net, path, msg, sizeof(msg));
    if (rc != want_rc)
        print_error("%zu bytes: rc %d, message '%s'\n", len, rc, msg);
    assert_int_equal(rc, want_rc);
    assert_int_equal(net->weights_loaded, 0);
    assert_non_null(strstr(msg, path));
    char *m = without(msg, path);
    assert_has_number(m, (long long)len);
    assert_has_number(m, TINY_BYTES);
    free(m);
    mpd_net_free(net);
    unlink(path);
    free(path);
}

static void test_truncated_by_one_byte(void **state)
{
    (void)state;
    expect_size_refused((size_t)TINY_BYTES - 1, MPD_EFORMAT);
}

static void test_truncated_by_1000_bytes(void **state)
{
    (void)state;
    expect_size_refused((size_t)TINY_BYTES - 1000, MPD_EFORMAT);
}

static void test_oversized_by_4_bytes(void **state)
{
    (void)state;
    expect_size_refused((size_t)TINY_BYTES + 4, MPD_EFORMAT);
}

static void test_empty_file(void **state)
{
    (void)state;
    expect_size_refused(0, MPD_EFORMAT);
}

static void test_eight_byte_file(void **state)
{
    (void)state;
    expect_size_refused(8, MPD_EFORMAT);
}

static void test_nonexistent_path(void **state)
{
    (void)state;
    mpd_net *net = parse_tiny();
    const char *path = "/nonexistent/dir/yolov3-tiny.weights";
    int rc = mpd_net_load_weights(net, path, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EIO);
    assert_non_null(strstr(msg, path));
    assert_int_equal(net->weights_loaded, 0);
    /* A directory is not a weights file either. */
    rc = mpd_net_load_weights(net, "/tmp", msg, sizeof(msg));
    assert_int_equal(rc, MPD_EIO);
    mpd_net_free(net);
}

static void test_real_file_with_v01_header_is_4_bytes_too_long(void **state)
{
    (void)state;
    /* Same bytes, but the header claims 0.1 (32-bit seen): the file is then
     * 4 bytes larger than that version needs. */
    unsigned char *buf = malloc(real_len);
    assert_non_null(buf);
    memcpy(buf, real_bytes, real_len);
    int32_t minor = 1;
    memcpy(buf + 4, &minor, 4);
    char *path = tu_write_temp((const char *)buf, real_len);
    free(buf);
    assert_non_null(path);
    mpd_net *net = parse_tiny();
    int rc = mpd_net_load_weights(net, path, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EFORMAT);
    char *m = without(msg, path);
    assert_has_number(m, TINY_BYTES);
    assert_has_number(m, TINY_BYTES - 4);
    free(m);
    mpd_net_free(net);
    unlink(path);
    free(path);
}

/* ---- hand-made networks and files ------------------------------------- */

#define MINI_CFG(bn)                                                                           \
    "[net]\nwidth=4\nheight=4\nchannels=1\n"                                                   \
    "[convolutional]\nfilters=2\nsize=1\nstride=1\nactivation=linear\n" bn

/* Writes header (major, minor, revision, seen with the width the version
 * implies) and the floats, returns the temp path. */
static char *write_weights(int major, int minor, int seen_bytes, const float *vals, size_t n)
{
    size_t len = 12 + (size_t)seen_bytes + n * 4;
    unsigned char *buf = calloc(len, 1);
    int32_t hdr[3] = {major, minor, 0};
    memcpy(buf, hdr, 12);
    uint64_t seen = 12345;
    memcpy(buf + 12, &seen, (size_t)seen_bytes); /* little-endian */
    memcpy(buf + 12 + seen_bytes, vals, n * 4);
    char *path = tu_write_temp((const char *)buf, len);
    free(buf);
    assert_non_null(path);
    return path;
}

static void check_plain_load(int major, int minor, int seen_bytes)
{
    mpd_net *net = parse_text(MINI_CFG(""));
    assert_int_equal(net->nparams, 4); /* 2 biases + 2x1 weights */
    assert_int_equal(mpd_net_weights_file_size(net, major, minor), 12 + seen_bytes + 16);
    const float vals[4] = {0.25f, -1.5f, 3.0f, -0.125f};
    char *path = write_weights(major, minor, seen_bytes, vals, 4);
    int rc = mpd_net_load_weights(net, path, msg, sizeof(msg));
    if (rc)
        print_error("%d.%d: %s\n", major, minor, msg);
    assert_int_equal(rc, 0);
    const mpd_conv *cv = &net->layers[0].u.conv;
    assert_true(cv->bias[0] == 0.25f && cv->bias[1] == -1.5f);
    assert_true(cv->weights[0] == 3.0f && cv->weights[1] == -0.125f);
    mpd_net_free(net);
    unlink(path);
    free(path);

    /* The same floats behind the other seen width: refused. */
    net = parse_text(MINI_CFG(""));
    path = write_weights(major, minor, seen_bytes == 4 ? 8 : 4, vals, 4);
    rc = mpd_net_load_weights(net, path, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EFORMAT);
    char *m = without(msg, path);
    assert_has_number(m, 12 + seen_bytes + 16);
    assert_has_number(m, 12 + (seen_bytes == 4 ? 8 : 4) + 16);
    free(m);
    mpd_net_free(net);
    unlink(path);
    free(path);
}

static void test_header_v01_has_32bit_seen(void **state)
{
    (void)state;
    check_plain_load(0, 1, 4);
}

static void test_header_v02_has_64bit_seen(void **state)
{
    (void)state;
    check_plain_load(0, 2, 8);
}

static void test_header_v10_has_64bit_seen(void **state)
{
    (void)state;
    /* darknet: (major*10 + minor) >= 2 && major < 1000 && minor < 1000 */
    check_plain_load(1, 0, 8);
    check_plain_load(0, 0, 4);
    check_plain_load(1000, 2, 4);
}

static void test_batchnorm_folding_formula(void **state)
{
    (void)state;
    for (int v = 1; v <= 2; v++) {
        int seen_bytes = v == 1 ? 4 : 8;
        mpd_net *net = parse_text(MINI_CFG("batch_normalize=1\n"));
        assert_int_equal(net->nparams, 2 * 4 + 2);
        /* bias[2], scales[2], mean[2], var[2], weights[2] */
        const float vals[10] = {0.5f, -0.25f, 2.0f, 0.75f, 0.1f, -3.0f,
                                4.0f, 0.0625f, 1.5f, -2.5f};
        char *path = write_weights(0, v, seen_bytes, vals, 10);
        int rc = mpd_net_load_weights(net, path, msg, sizeof(msg));
        if (rc)
            print_error("%s\n", msg);
        assert_int_equal(rc, 0);
        const mpd_conv *cv = &net->layers[0].u.conv;
        for (int o = 0; o < 2; o++) {
            double bias = vals[o], scale = vals[2 + o], mean = vals[4 + o],
                   var = vals[6 + o], w = vals[8 + o];
            double s = scale / (sqrt(var) + 1e-6);
            double want_w = w * s, want_b = bias - mean * s;
            assert_true(fabs(cv->weights[o] - want_w) <= 1e-6 * fabs(want_w));
            assert_true(fabs(cv->bias[o] - want_b) <= 1e-6 * fmax(1, fabs(want_b)));
        }
        /* Spelled out for filter 0: s = 2 / (2 + 1e-6). */
        assert_true(fabs(cv->weights[0] - 1.5 * 2 / 2.000001) < 1e-6);
        assert_true(fabs(cv->bias[0] - (0.5 - 0.1 * 2 / 2.000001)) < 1e-6);
        mpd_net_free(net);
        unlink(path);
        free(path);
    }
}

static void test_negative_variance_gives_non_finite_weight(void **state)
{
    (void)state;
    mpd_net *net = parse_text(MINI_CFG("batch_normalize=1\n"));
    const float vals[10] = {0, 0, 1, 1, 0, 0, 1, -1, 1, 1};
    char *path = write_weights(0, 2, 8, vals, 10);
    int rc = mpd_net_load_weights(net, path, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EFORMAT);
    assert_int_equal(net->weights_loaded, 0);
    assert_non_null(strstr(msg, "layer 0"));
    mpd_net_free(net);
    unlink(path);
    free(path);
}

/* A load that fails after allocating (non-finite weights) must leave the
 * net as it was, so a retry neither leaks nor fails; the sanitizer build's
 * leak checker catches a regression. */
static void test_failed_load_can_be_retried(void **state)
{
    (void)state;
    /* A refused file leaves the net unloaded; a good file then loads. */
    mpd_net *net = parse_text(MINI_CFG("batch_normalize=1\n"));
    const float bad[10] = {0, 0, 1, 1, 0, 0, 1, -1, 1, 1};
    const float good[10] = {0, 0, 1, 1, 0, 0, 1, 1, 2, 3};
    char *p1 = write_weights(0, 2, 8, bad, 10), *p2 = write_weights(0, 2, 8, good, 10);
    assert_int_equal(mpd_net_load_weights(net, p1, msg, sizeof(msg)), MPD_EFORMAT);
    assert_int_equal(net->weights_loaded, 0);
    int rc = mpd_net_load_weights(net, p2, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_int_equal(net->weights_loaded, 1);
    const mpd_conv *cv = &net->layers[0].u.conv;
    assert_true(fabs(cv->weights[0] - 2 / (1 + 1e-6)) < 1e-6);
    assert_true(fabs(cv->weights[1] - 3 / (1 + 1e-6)) < 1e-6);
    mpd_net_free(net);
    unlink(p1);
    unlink(p2);
    free(p1);
    free(p2);
}

static void test_multi_layer_read_order(void **state)
{
    (void)state;
    /* Two convs, the second batch-normalized: layer 0's biases and weights
     * come first, then layer 1's bias, scales, mean, var, weights. */
    mpd_net *net = parse_text("[net]\nwidth=3\nheight=3\nchannels=2\n"
                              "[convolutional]\nfilters=1\nsize=1\nactivation=linear\n"
                              "[maxpool]\nsize=2\nstride=1\n"
                              "[convolutional]\nfilters=2\nsize=1\nbatch_normalize=1\n");
    /* layer 0: 1 + 1*2 = 3; layer 2: 2*4 + 2*1 = 10 */
    assert_int_equal(net->nparams, 13);
    float vals[13];
    for (int i = 0; i < 13; i++)
        vals[i] = (float)(i + 1);
    /* variances must be positive: vals[3+6], vals[3+7] = 10, 11 */
    char *path = write_weights(0, 2, 8, vals, 13);
    int rc = mpd_net_load_weights(net, path, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    const mpd_conv *c0 = &net->layers[0].u.conv, *c2 = &net->layers[2].u.conv;
    assert_true(c0->bias[0] == 1.f);
    assert_true(c0->weights[0] == 2.f && c0->weights[1] == 3.f);
    for (int o = 0; o < 2; o++) {
        double bias = 4 + o, scale = 6 + o, mean = 8 + o, var = 10 + o, w = 12 + o;
        double s = scale / (sqrt(var) + 1e-6);
        assert_true(fabs(c2->weights[o] - w * s) <= 1e-6 * fabs(w * s));
        assert_true(fabs(c2->bias[o] - (bias - mean * s)) <= 1e-6 * fabs(bias - mean * s));
    }
    mpd_net_free(net);
    unlink(path);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_expected_file_size),
        cmocka_unit_test(test_real_weights_load_and_fold),
        cmocka_unit_test(test_truncated_by_one_byte),
        cmocka_unit_test(test_truncated_by_1000_bytes),
        cmocka_unit_test(test_oversized_by_4_bytes),
        cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_eight_byte_file),
        cmocka_unit_test(test_nonexistent_path),
        cmocka_unit_test(test_real_file_with_v01_header_is_4_bytes_too_long),
        cmocka_unit_test(test_header_v01_has_32bit_seen),
        cmocka_unit_test(test_header_v02_has_64bit_seen),
        cmocka_unit_test(test_header_v10_has_64bit_seen),
        cmocka_unit_test(test_batchnorm_folding_formula),
        cmocka_unit_test(test_negative_variance_gives_non_finite_weight),
        cmocka_unit_test(test_multi_layer_read_order),
        cmocka_unit_test(test_failed_load_can_be_retried),
    };
    return cmocka_run_group_tests(tests, setup_real, teardown_real);
}
