/* test_cfg.c - the darknet cfg reader (host/cfg.c) and the network builder
 * (host/net.c): syntax, shapes of the real yolov3-tiny / yolov3 graphs, and
 * every malformed-cfg error naming "file:line". */
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
#include <unistd.h>

#include "cfg.h"
#include "mpd.h"
#include "net.h"
#include "testutil.h"

#define NAME "t.cfg"

static char msg[1024];

/* Parses text and builds a net from it. Returns the first non-zero code. */
static int build(const char *text, mpd_net **net)
{
    mpd_cfg *cfg = NULL;
    *net = NULL;
    msg[0] = '\0';
    int rc = mpd_cfg_parse_string(text, NAME, &cfg, msg, sizeof(msg));
    if (rc)
        return rc;
    rc = mpd_net_from_cfg(cfg, net, msg, sizeof(msg));
    mpd_cfg_free(cfg);
    return rc;
}

/* Asserts that text fails with MPD_EPARSE and that the message names
 * "t.cfg:LINE:". */
static void expect_error_at(const char *text, int line)
{
    mpd_net *net = NULL;
    int rc = build(text, &net);
    char want[64];
    snprintf(want, sizeof(want), NAME ":%d:", line);
    if (rc != MPD_EPARSE || !strstr(msg, want))
        print_error("cfg:\n%s\n-> rc %d, message '%s' (wanted MPD_EPARSE and '%s')\n", text, rc,
                    msg, want);
    assert_int_equal(rc, MPD_EPARSE);
    assert_non_null(strstr(msg, want));
    assert_null(net);
}

/* ---- the reader --------------------------------------------------------- */

static void test_reader_sections_keys_comments_blank_lines(void **state)
{
    (void)state;
    const char *text = "# leading comment\n"           /* 1 */
                       "\n"                            /* 2 */
                       "[net]\n"                       /* 3 */
                       "width=416\n"                   /* 4 */
                       "  height   =   320  \n"        /* 5 */
                       "; semicolon comment\n"         /* 6 */
                       "\t# indented comment\n"        /* 7 */
                       "\n"                            /* 8 */
                       "   \t  \n"                     /* 9 */
                       "[ convolutional ]\n"           /* 10 */
                       "filters = 16\n"                /* 11 */
                       "activation=leaky\r\n"          /* 12: CRLF */
                       "[yolo]\n"                      /* 13 */
                       "mask = 3,4,5\n"                /* 14 */
                       "anchors = 10,14,  23,27\n";    /* 15 */
    mpd_cfg *cfg = NULL;
    int rc = mpd_cfg_parse_string(text, NAME, &cfg, msg, sizeof(msg));
    assert_int_equal(rc, 0);
    assert_non_null(cfg);
    assert_string_equal(cfg->path, NAME);
    assert_int_equal(cfg->nsec, 3);

    assert_string_equal(cfg->sec[0].name, "net");
    assert_int_equal(cfg->sec[0].line, 3);
    assert_int_equal(cfg->sec[0].nkv, 2);
    assert_string_equal(cfg->sec[0].kv[0].key, "width");
    assert_string_equal(cfg->sec[0].kv[0].val, "416");
    assert_int_equal(cfg->sec[0].kv[0].line, 4);
    assert_string_equal(cfg->sec[0].kv[1].key, "height");
    assert_string_equal(cfg->sec[0].kv[1].val, "320");
    assert_int_equal(cfg->sec[0].kv[1].line, 5);

    assert_string_equal(cfg->sec[1].name, "convolutional");
    assert_int_equal(cfg->sec[1].line, 10);
    assert_int_equal(cfg->sec[1].nkv, 2);
    assert_string_equal(cfg->sec[1].kv[0].key, "filters");
    assert_string_equal(cfg->sec[1].kv[0].val, "16");
    assert_int_equal(cfg->sec[1].kv[0].line, 11);
    assert_string_equal(cfg->sec[1].kv[1].val, "leaky");
    assert_int_equal(cfg->sec[1].kv[1].line, 12);

    assert_string_equal(cfg->sec[2].name, "yolo");
    assert_int_equal(cfg->sec[2].line, 13);
    assert_string_equal(cfg->sec[2].kv[0].val, "3,4,5");
    assert_string_equal(cfg->sec[2].kv[1].key, "anchors");
    assert_int_equal(cfg->sec[2].kv[1].line, 15);

    /* find marks used; check_unused then names the first unused key. */
    assert_non_null(mpd_cfg_find(&cfg->sec[1], "filters"));
    assert_null(mpd_cfg_find(&cfg->sec[1], "size"));
    rc = mpd_cfg_check_unused(cfg, &cfg->sec[1], msg, sizeof(msg));
    assert_int_equal(rc, MPD_EPARSE);
    assert_non_null(strstr(msg, NAME ":12:"));
    assert_non_null(strstr(msg, "activation"));
    mpd_cfg_free(cfg);
}

static void test_reader_typed_getters_and_lists(void **state)
{
    (void)state;
    const char *text = "[s]\n"
                       "a = 42\n"
                       "f = 0.5\n"
                       "l = 3 , 4,5 \n"
                       "fl = 1.5,  -2 ,3e1\n"
                       "big = 99\n";
    mpd_cfg *cfg = NULL;
    assert_int_equal(mpd_cfg_parse_string(text, NAME, &cfg, msg, sizeof(msg)), 0);
    mpd_cfg_section *s = &cfg->sec[0];
    int iv = 0, n = 0, il[8];
    float fv = 0, fl[8];
    assert_int_equal(mpd_cfg_get_int(cfg, s, "a", 7, 0, 100, &iv, msg, sizeof(msg)), 0);
    assert_int_equal(iv, 42);
    assert_int_equal(mpd_cfg_get_int(cfg, s, "absent", 7, 0, 100, &iv, msg, sizeof(msg)), 0);
    assert_int_equal(iv, 7);
    assert_int_equal(mpd_cfg_get_float(cfg, s, "f", 1, 0, 1, &fv, msg, sizeof(msg)), 0);
    assert_true(fv == 0.5f);
    assert_int_equal(mpd_cfg_get_int_list(cfg, s, "l", il, 8, &n, msg, sizeof(msg)), 0);
    assert_int_equal(n, 3);
    assert_int_equal(il[0], 3);
    assert_int_equal(il[1], 4);
    assert_int_equal(il[2], 5);
    assert_int_equal(mpd_cfg_get_float_list(cfg, s, "fl", fl, 8, &n, msg, sizeof(msg)), 0);
    assert_int_equal(n, 3);
    assert_true(fl[0] == 1.5f && fl[1] == -2.f && fl[2] == 30.f);
    /* A list longer than the cap is an error naming the line. */
    assert_int_equal(mpd_cfg_get_int_list(cfg, s, "l", il, 2, &n, msg, sizeof(msg)),
                     MPD_EPARSE);
    assert_non_null(strstr(msg, NAME ":4:"));
    /* Out of range. */
    assert_int_equal(mpd_cfg_get_int(cfg, s, "big", 0, 0, 10, &iv, msg, sizeof(msg)),
                     MPD_EPARSE);
    assert_non_null(strstr(msg, NAME ":6:"));
    assert_int_equal(mpd_cfg_check_unused(cfg, s, msg, sizeof(msg)), 0);
    mpd_cfg_free(cfg);
}

static void test_reader_strict_number_parsing(void **state)
{
    (void)state;
    long l = 0;
    double d = 0;
    assert_int_equal(mpd__parse_int(" 12 ", 0, 100, &l), 0);
    assert_int_equal(l, 12);
    assert_int_equal(mpd__parse_int("-3", -10, 10, &l), 0);
    assert_int_equal(l, -3);
    assert_int_equal(mpd__parse_int("12x", 0, 100, &l), MPD_EPARSE);
    assert_int_equal(mpd__parse_int("abc", 0, 100, &l), MPD_EPARSE);
    assert_int_equal(mpd__parse_int("", 0, 100, &l), MPD_EPARSE);
    assert_int_equal(mpd__parse_int("1 2", 0, 100, &l), MPD_EPARSE);
    assert_int_equal(mpd__parse_int("101", 0, 100, &l), MPD_ELIMIT);
    assert_int_equal(mpd__parse_int("99999999999999999999999", 0, 100, &l), MPD_EPARSE);
    assert_int_equal(mpd__parse_float(".1", 0, 1, &d), 0);
    assert_true(fabs(d - 0.1) < 1e-12);
    assert_int_equal(mpd__parse_float("nan", -1, 1, &d), MPD_EPARSE);
    assert_int_equal(mpd__parse_float("inf", -1, 1, &d), MPD_EPARSE);
    assert_int_equal(mpd__parse_float("0.5.5", 0, 1, &d), MPD_EPARSE);
    assert_int_equal(mpd__parse_float("2", 0, 1, &d), MPD_ELIMIT);
}

/* ---- the net builder ---------------------------------------------------- */

static void test_net_whitespace_in_lists_and_defaults(void **state)
{
    (void)state;
    const char *text = "[net]\n"
                       "width = 32\n"
                       "height=16\n"
                       "channels = 3\n"
                       "batch=64\n"
                       "subdivisions=16\n"
                       "[convolutional]\n"
                       "filters = 21\n"
                       "size = 3\n"
                       "stride = 2\n"
                       "pad = 1\n"
                       "batch_normalize = 1\n"
                       "activation = leaky\n"
                       "[yolo]\n"
                       "mask = 3, 4 ,5\n"
                       "anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319\n"
                       "classes = 2\n"
                       "num = 6\n"
                       "jitter=.3\n"
                       "ignore_thresh = .7\n"
                       "truth_thresh = 1\n"
                       "random=1\n";
    mpd_net *net = NULL;
    int rc = build(text, &net);
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_int_equal(net->in_w, 32);
    assert_int_equal(net->in_h, 16);
    assert_int_equal(net->in_c, 3);
    assert_int_equal(net->n, 2);
    const mpd_layer *c = &net->layers[0];
    assert_int_equal(c->kind, MPD_LAYER_CONV);
    assert_int_equal(c->line, 7);
    assert_int_equal(c->u.conv.filters, 21);
    assert_int_equal(c->u.conv.size, 3);
    assert_int_equal(c->u.conv.stride, 2);
    assert_int_equal(c->u.conv.pad, 1);
    assert_int_equal(c->u.conv.batch_normalize, 1);
    assert_int_equal(c->u.conv.act, MPD_ACT_LEAKY);
    /* (32 + 2 - 3) / 2 + 1 = 16, (16 + 2 - 3) / 2 + 1 = 8 */
    assert_int_equal(c->out_w, 16);
    assert_int_equal(c->out_h, 8);
    assert_int_equal(c->out_c, 21);
    /* bn: 4 per filter + weights 21*3*3*3 */
    assert_int_equal(net->nparams, 21 * 4 + 21 * 27);
    const mpd_layer *y = &net->layers[1];
    assert_int_equal(y->kind, MPD_LAYER_YOLO);
    assert_int_equal(y->u.yolo.classes, 2);
    assert_int_equal(y->u.yolo.total, 6);
    assert_int_equal(y->u.yolo.nmask, 3);
    assert_int_equal(y->u.yolo.mask[0], 3);
    assert_int_equal(y->u.yolo.mask[1], 4);
    assert_int_equal(y->u.yolo.mask[2], 5);
    assert_true(y->u.yolo.anchors[0] == 10.f && y->u.yolo.anchors[11] == 319.f);
    assert_int_equal(y->out_c, 21);
    assert_int_equal(y->out_w, 16);
    assert_int_equal(y->out_h, 8);
    mpd_net_free(net);
}

static void test_net_conv_defaults_and_explicit_padding(void **state)
{
    (void)state;
    /* No activation: darknet's default for [convolutional] is logistic.
     * padding=2 without pad=1 pads 2; pad=1 overrides padding=. */
    mpd_net *net = NULL;
    int rc = build("[net]\nwidth=10\nheight=7\nchannels=2\n"
                   "[convolutional]\nfilters=4\nsize=5\npadding=2\n"
                   "[convolutional]\nfilters=3\nsize=3\npad=1\npadding=5\nactivation=relu\n"
                   "[convolutional]\nfilters=1\nsize=3\nactivation=linear\n",
                   &net);
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_int_equal(net->layers[0].u.conv.act, MPD_ACT_LOGISTIC);
    assert_int_equal(net->layers[0].u.conv.pad, 2);
    assert_int_equal(net->layers[0].u.conv.stride, 1);
    assert_int_equal(net->layers[0].out_w, 10);
    assert_int_equal(net->layers[0].out_h, 7);
    assert_int_equal(net->layers[1].u.conv.pad, 1);
    assert_int_equal(net->layers[1].u.conv.act, MPD_ACT_RELU);
    assert_int_equal(net->layers[1].out_w, 10);
    assert_int_equal(net->layers[1].in_c, 4);
    /* no padding at all: 10-3+1 = 8, 7-3+1 = 5 */
    assert_int_equal(net->layers[2].u.conv.pad, 0);
    assert_int_equal(net->layers[2].out_w, 8);
    assert_int_equal(net->layers[2].out_h, 5);
    assert_int_equal(net->layers[2].out_c, 1);
    assert_int_equal(net->nparams, (4 + 4 * 2 * 25) + (3 + 3 * 4 * 9) + (1 + 1 * 3 * 9));
    mpd_net_free(net);
}

static void test_net_maxpool_upsample_shortcut_route_shapes(void **state)
{
    (void)state;
    mpd_net *net = NULL;
    int rc = build("[net]\nwidth=13\nheight=9\nchannels=4\n"
                   "[maxpool]\nsize=2\nstride=2\n"        /* 0: 7x5 */
                   "[maxpool]\nsize=3\nstride=2\n"        /* 1: pad 2 -> (7+2-3)/2+1 = 4, 3 */
                   "[maxpool]\nsize=2\nstride=1\n"        /* 2: 4x3 stays */
                   "[upsample]\nstride=3\n"               /* 3: 12x9 */
                   "[convolutional]\nfilters=4\nsize=1\nactivation=linear\n" /* 4 */
                   "[shortcut]\nfrom=-2\nactivation=linear\n"                /* 5 */
                   "[route]\nlayers=-1, 3 ,4\n"           /* 6: 12 channels */
                   "[route]\nlayers=2\n"                  /* 7: 4x3x4 */
                   "[maxpool]\nstride=2\n",               /* 8: size defaults to stride */
                   &net);
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_int_equal(net->n, 9);
    const mpd_layer *L = net->layers;
    assert_int_equal(L[0].out_w, 7);
    assert_int_equal(L[0].out_h, 5);
    assert_int_equal(L[0].u.pool.padding, 1);
    assert_int_equal(L[1].u.pool.padding, 2);
    assert_int_equal(L[1].out_w, 4);
    assert_int_equal(L[1].out_h, 3);
    assert_int_equal(L[2].out_w, 4);
    assert_int_equal(L[2].out_h, 3);
    assert_int_equal(L[3].kind, MPD_LAYER_UPSAMPLE);
    assert_int_equal(L[3].out_w, 12);
    assert_int_equal(L[3].out_h, 9);
    assert_int_equal(L[3].out_c, 4);
    assert_int_equal(L[5].kind, MPD_LAYER_SHORTCUT);
    assert_int_equal(L[5].u.shortcut.from, 3);
    assert_int_equal(L[6].kind, MPD_LAYER_ROUTE);
    assert_int_equal(L[6].u.route.n, 3);
    assert_int_equal(L[6].u.route.from[0], 5);
    assert_int_equal(L[6].u.route.from[1], 3);
    assert_int_equal(L[6].u.route.from[2], 4);
    assert_int_equal(L[6].out_c, 12);
    assert_int_equal(L[6].out_w, 12);
    assert_int_equal(L[7].out_c, 4);
    assert_int_equal(L[7].out_w, 4);
    assert_int_equal(L[7].out_h, 3);
    assert_int_equal(L[8].u.pool.size, 2);
    assert_int_equal(L[8].out_w, 2);
    assert_int_equal(L[8].out_h, 2);
    mpd_net_free(net);
}

/* ---- the real networks -------------------------------------------------- */

static void test_yolov3_tiny_cfg_layers_and_shapes(void **state)
{
    (void)state;
    mpd_net *net = NULL;
    char *path = tu_model("yolov3-tiny.cfg");
    int rc = mpd_net_parse(path, &net, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_int_equal(net->n, 24);
    assert_int_equal(net->in_w, 416);
    assert_int_equal(net->in_h, 416);
    assert_int_equal(net->in_c, 3);

    /* darknet's printout of yolov3-tiny: kind, output w/h/c per layer. */
    static const struct {
        mpd_layer_kind k;
        int w, h, c;
    } want[24] = {
        {MPD_LAYER_CONV, 416, 416, 16},   {MPD_LAYER_MAXPOOL, 208, 208, 16},
        {MPD_LAYER_CONV, 208, 208, 32},   {MPD_LAYER_MAXPOOL, 104, 104, 32},
        {MPD_LAYER_CONV, 104, 104, 64},   {MPD_LAYER_MAXPOOL, 52, 52, 64},
        {MPD_LAYER_CONV, 52, 52, 128},    {MPD_LAYER_MAXPOOL, 26, 26, 128},
        {MPD_LAYER_CONV, 26, 26, 256},    {MPD_LAYER_MAXPOOL, 13, 13, 256},
        {MPD_LAYER_CONV, 13, 13, 512},    {MPD_LAYER_MAXPOOL, 13, 13, 512},
        {MPD_LAYER_CONV, 13, 13, 1024},   {MPD_LAYER_CONV, 13, 13, 256},
        {MPD_LAYER_CONV, 13, 13, 512},    {MPD_LAYER_CONV, 13, 13, 255},
        {MPD_LAYER_YOLO, 13, 13, 255},    {MPD_LAYER_ROUTE, 13, 13, 256},
        {MPD_LAYER_CONV, 13, 13, 128},    {MPD_LAYER_UPSAMPLE, 26, 26, 128},
        {MPD_LAYER_ROUTE, 26, 26, 384},   {MPD_LAYER_CONV, 26, 26, 256},
        {MPD_LAYER_CONV, 26, 26, 255},    {MPD_LAYER_YOLO, 26, 26, 255},
    };
    for (int i = 0; i < 24; i++) {
        const mpd_layer *l = &net->layers[i];
        if (l->kind != want[i].k || l->out_w != want[i].w || l->out_h != want[i].h ||
            l->out_c != want[i].c)
            print_error("layer %d: kind %d %dx%dx%d\n", i, l->kind, l->out_w, l->out_h,
                        l->out_c);
        assert_int_equal(l->index, i);
        assert_int_equal(l->kind, want[i].k);
        assert_int_equal(l->out_w, want[i].w);
        assert_int_equal(l->out_h, want[i].h);
        assert_int_equal(l->out_c, want[i].c);
    }
    /* Layer 11: maxpool size 2 stride 1 keeps 13x13x512. */
    assert_int_equal(net->layers[11].u.pool.size, 2);
    assert_int_equal(net->layers[11].u.pool.stride, 1);
    assert_int_equal(net->layers[11].in_w, 13);
    assert_int_equal(net->layers[11].in_c, 512);
    /* The convs before the yolo layers are linear 255-filter 1x1s. */
    assert_int_equal(net->layers[15].u.conv.act, MPD_ACT_LINEAR);
    assert_int_equal(net->layers[15].u.conv.batch_normalize, 0);
    assert_int_equal(net->layers[22].u.conv.act, MPD_ACT_LINEAR);
    /* Routes. */
    assert_int_equal(net->layers[17].u.route.n, 1);
    assert_int_equal(net->layers[17].u.route.from[0], 13);
    assert_int_equal(net->layers[20].u.route.n, 2);
    assert_int_equal(net->layers[20].u.route.from[0], 19);
    assert_int_equal(net->layers[20].u.route.from[1], 8);
    /* Yolo masks. */
    const mpd_yolo *y16 = &net->layers[16].u.yolo, *y23 = &net->layers[23].u.yolo;
    assert_int_equal(y16->classes, 80);
    assert_int_equal(y16->total, 6);
    assert_int_equal(y16->nmask, 3);
    assert_int_equal(y16->mask[0], 3);
    assert_int_equal(y16->mask[2], 5);
    assert_int_equal(y23->mask[0], 0);
    assert_int_equal(y23->mask[2], 2);
    assert_true(y23->anchors[10] == 344.f && y23->anchors[11] == 319.f);

    /* GFLOPs, counted independently from the architecture:
     * 2 * filters * in_c * k * k * out_h * out_w for each convolution. */
    static const int conv[][5] = {
        /* index, filters, in_c, k, out_hw */
        {0, 16, 3, 3, 416},    {2, 32, 16, 3, 208},   {4, 64, 32, 3, 104},
        {6, 128, 64, 3, 52},   {8, 256, 128, 3, 26},  {10, 512, 256, 3, 13},
        {12, 1024, 512, 3, 13}, {13, 256, 1024, 1, 13}, {14, 512, 256, 3, 13},
        {15, 255, 512, 1, 13}, {18, 128, 256, 1, 13}, {21, 256, 384, 3, 26},
        {22, 255, 256, 1, 26},
    };
    double total_want = 0, total = 0;
    for (size_t i = 0; i < sizeof(conv) / sizeof(conv[0]); i++) {
        double g = 2.0 * conv[i][1] * conv[i][2] * conv[i][3] * conv[i][3] * conv[i][4] *
                   conv[i][4] / 1e9;
        total_want += g;
        assert_true(fabs(net->layers[conv[i][0]].gflop - g) < 1e-9);
    }
    for (int i = 0; i < net->n; i++)
        total += net->layers[i].gflop;
    assert_true(fabs(total - total_want) < 1e-9);
    /* pjreddie.com lists YOLOv3-tiny at 5.56 Bn FLOPS (AlexeyAB's 5.571
     * also counts the maxpool comparisons, which darknet does not). */
    assert_true(fabs(total - 5.56) < 0.01);
    assert_true(fabs(net->layers[12].gflop - 1.595) < 0.001);
    assert_true(fabs(net->layers[21].gflop - 1.196) < 0.001);
    assert_true(net->layers[1].gflop == 0 && net->layers[16].gflop == 0);
    /* Float count: the official weights file is 35434956 bytes with a
     * 20-byte header. */
    assert_int_equal(net->nparams, (35434956 - 20) / 4);
    assert_int_equal(net->weights_loaded, 0);
    mpd_net_free(net);
    free(path);
}

static void test_yolov3_full_cfg_parses(void **state)
{
    (void)state;
    mpd_net *net = NULL;
    int rc = mpd_net_parse("/usr/share/darknet/cfg/yolov3.cfg", &net, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_int_equal(net->n, 107);
    int convs = 0, shortcuts = 0, yolos = 0, routes = 0, ups = 0;
    for (int i = 0; i < net->n; i++) {
        switch (net->layers[i].kind) {
        case MPD_LAYER_CONV: convs++; break;
        case MPD_LAYER_SHORTCUT: shortcuts++; break;
        case MPD_LAYER_YOLO: yolos++; break;
        case MPD_LAYER_ROUTE: routes++; break;
        case MPD_LAYER_UPSAMPLE: ups++; break;
        default: break;
        }
    }
    assert_int_equal(convs, 75);
    assert_int_equal(shortcuts, 23);
    assert_int_equal(yolos, 3);
    assert_int_equal(routes, 4);
    assert_int_equal(ups, 2);
    /* Debian's yolov3.cfg is the 608x608 variant: strides 32/16/8 give
     * 19, 38 and 76 cell heads. */
    assert_int_equal(net->in_w, 608);
    assert_int_equal(net->in_h, 608);
    const mpd_layer *L = net->layers;
    /* Darknet-53 backbone. */
    assert_int_equal(L[0].out_w, 608);
    assert_int_equal(L[0].out_c, 32);
    assert_int_equal(L[1].out_w, 304);
    assert_int_equal(L[1].out_c, 64);
    assert_int_equal(L[4].kind, MPD_LAYER_SHORTCUT);
    assert_int_equal(L[4].u.shortcut.from, 1);
    assert_int_equal(L[4].out_c, 64);
    assert_int_equal(L[36].kind, MPD_LAYER_SHORTCUT);
    assert_int_equal(L[36].out_w, 76);
    assert_int_equal(L[36].out_c, 256);
    assert_int_equal(L[61].out_w, 38);
    assert_int_equal(L[61].out_c, 512);
    assert_int_equal(L[74].out_w, 19);
    assert_int_equal(L[74].out_c, 1024);
    /* Heads. */
    static const int yolo_at[3][2] = {{82, 19}, {94, 38}, {106, 76}};
    for (int i = 0; i < 3; i++) {
        const mpd_layer *y = &L[yolo_at[i][0]];
        assert_int_equal(y->kind, MPD_LAYER_YOLO);
        assert_int_equal(y->out_w, yolo_at[i][1]);
        assert_int_equal(y->out_h, yolo_at[i][1]);
        assert_int_equal(y->out_c, 255);
        assert_int_equal(y->u.yolo.total, 9);
        assert_int_equal(y->u.yolo.nmask, 3);
    }
    assert_int_equal(L[82].u.yolo.mask[0], 6);
    assert_int_equal(L[106].u.yolo.mask[0], 0);
    assert_int_equal(L[83].kind, MPD_LAYER_ROUTE);
    assert_int_equal(L[83].u.route.from[0], 79);
    assert_int_equal(L[86].out_c, 256 + 512);
    assert_int_equal(L[86].out_w, 38);
    assert_int_equal(L[98].out_c, 128 + 256);
    assert_int_equal(L[98].out_w, 76);
    double total = 0;
    for (int i = 0; i < net->n; i++)
        total += L[i].gflop;
    /* pjreddie.com lists YOLOv3-608 at 140.69 Bn FLOPS. */
    assert_true(fabs(total - 140.69) < 0.1);
    /* The official yolov3.weights is 248,007,048 bytes (20-byte header). */
    assert_int_equal(mpd_net_weights_file_size(net, 0, 2), 248007048);
    mpd_net_free(net);
}

static void test_net_parse_file_errors_name_the_file(void **state)
{
    (void)state;
    mpd_net *net = NULL;
    int rc = mpd_net_parse("/nonexistent/dir/x.cfg", &net, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EIO);
    assert_null(net);
    assert_non_null(strstr(msg, "/nonexistent/dir/x.cfg"));

    const char *text = "[net]\nwidth=8\nheight=8\n\n[convolutional]\nfilters=2\nsize=3\n"
                       "bogus_key=1\n";
    char *path = tu_write_temp(text, strlen(text));
    assert_non_null(path);
    rc = mpd_net_parse(path, &net, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EPARSE);
    char want[128];
    snprintf(want, sizeof(want), "%s:8:", path);
    if (!strstr(msg, want))
        print_error("message '%s' lacks '%s'\n", msg, want);
    assert_non_null(strstr(msg, want));
    unlink(path);
    free(path);

    /* A NUL byte means this is not a text file. */
    static const char bin[] = "[net]\nwidth=8\0\n";
    path = tu_write_temp(bin, sizeof(bin));
    assert_non_null(path);
    rc = mpd_net_parse(path, &net, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EPARSE);
    unlink(path);
    free(path);
}

/* ---- malformed cfgs: MPD_EPARSE naming "name:line:" ---------------------- */

#define NET4 "[net]\nwidth=4\nheight=4\nchannels=3\n" /* lines 1-4 */

static void test_error_unknown_section(void **state)
{
    (void)state;
    expect_error_at(NET4 "[convolutional]\nfilters=2\n[dropout]\nprobability=.5\n", 7);
}

static void test_error_unknown_key(void **state)
{
    (void)state;
    expect_error_at(NET4 "[convolutional]\nfilters=2\nfliters=3\nsize=1\n", 7);
    /* Unknown keys in [net] too. */
    expect_error_at("[net]\nwidth=4\nheight=4\nwidht=5\n[convolutional]\n", 4);
    /* And in [yolo]. */
    expect_error_at(NET4 "[convolutional]\nfilters=6\nsize=1\n[yolo]\nclasses=1\nnum=1\n"
                         "anchors=2,3\nmasks=0\n",
                    12);
}

static void test_error_bad_integer(void **state)
{
    (void)state;
    expect_error_at(NET4 "[convolutional]\nsize=1\nfilters=abc\n", 7);
    expect_error_at(NET4 "[convolutional]\nsize=1\n\nfilters=12x\n", 8);
    expect_error_at(NET4 "[convolutional]\nfilters=\n", 6);
    expect_error_at("[net]\nwidth=4.5\n[convolutional]\n", 2);
    expect_error_at(NET4 "[route]\nlayers=-1,x\n", 6);
}

static void test_error_out_of_range(void **state)
{
    (void)state;
    expect_error_at(NET4 "[convolutional]\nfilters=0\n", 6);
    expect_error_at(NET4 "[convolutional]\nfilters=2\nsize=-3\n", 7);
    expect_error_at(NET4 "[convolutional]\nfilters=2\nstride=0\n", 7);
    expect_error_at(NET4 "[convolutional]\nfilters=2\npad=2\n", 7);
    expect_error_at("[net]\nwidth=0\nheight=4\n[maxpool]\n", 2);
    expect_error_at("[net]\nwidth=4\nheight=-4\n[maxpool]\n", 3);
    expect_error_at(NET4 "[convolutional]\nfilters=2\nbatch_normalize=2\n", 7);
}

static void test_error_duplicate_key(void **state)
{
    (void)state;
    const char *text = NET4 "[convolutional]\nfilters=2\nsize=1\nfilters=3\n";
    expect_error_at(text, 8);
    assert_non_null(strstr(msg, "line 6")); /* where it was first set */
    /* The same key in different sections is fine. */
    mpd_net *net = NULL;
    assert_int_equal(build(NET4 "[convolutional]\nfilters=2\n[convolutional]\nfilters=2\n",
                           &net),
                     0);
    mpd_net_free(net);
}

static void test_error_key_before_any_section(void **state)
{
    (void)state;
    expect_error_at("width=4\n[net]\n", 1);
    expect_error_at("# comment\n\n  height = 4\n[net]\n", 3);
}

static void test_error_missing_equals(void **state)
{
    (void)state;
    expect_error_at(NET4 "[convolutional]\nfilters 16\n", 6);
    expect_error_at("[net]\nwidth\n", 2);
    expect_error_at(NET4 "[convolutional]\n=16\n", 6); /* empty key */
}

static void test_error_malformed_section_header(void **state)
{
    (void)state;
    expect_error_at(NET4 "[convolutional\nfilters=2\n", 5);
    expect_error_at(NET4 "[]\n", 5);
    expect_error_at(NET4 "[conv olutional]\n", 5);
    expect_error_at("[net\n", 1);
}

static void test_error_route_to_later_or_missing_layer(void **state)
{
    (void)state;
    /* layers 0: conv, 1: route -> 1 is itself, not earlier. */
    expect_error_at(NET4 "[convolutional]\nfilters=2\n[route]\nlayers=1\n", 8);
    expect_error_at(NET4 "[convolutional]\nfilters=2\n[route]\nlayers=5\n", 8);
    expect_error_at(NET4 "[convolutional]\nfilters=2\n[route]\nlayers=-2\n", 8);
    expect_error_at(NET4 "[convolutional]\nfilters=2\n[route]\nlayers=0, -7\n", 8);
    /* Route without layers names the section line. */
    expect_error_at(NET4 "[convolutional]\nfilters=2\n[route]\n", 7);
    /* Shortcut forward reference / shape mismatch. */
    expect_error_at(NET4 "[convolutional]\nfilters=2\n[shortcut]\nfrom=3\n", 8);
    expect_error_at(NET4 "[convolutional]\nfilters=2\n[convolutional]\nfilters=4\n"
                         "[shortcut]\nfrom=-2\n",
                    10);
    /* Route joining different spatial sizes. */
    expect_error_at(NET4 "[convolutional]\nfilters=2\n[maxpool]\nsize=2\nstride=2\n"
                         "[route]\nlayers=-1,0\n",
                    11);
}

/* Found writing the cfg fuzz target: a route summed its inputs' channels in an int, so
 * eight inputs of 2^29 channels wrapped around. This one wrapped to 3
 * channels and was accepted, leaving a 3-channel buffer for 2^32 channels
 * of data. */
static void test_error_route_channel_sum_overflow(void **state)
{
    (void)state;
    const char *text = "[net]\nwidth=1\nheight=1\nchannels=1\n"
                       "[convolutional]\nfilters=65536\nsize=1\n" /* 0: 2^16 channels */
                       "[route]\nlayers=-1,-1,-1,-1,-1,-1,-1,-1\n"  /* 1: 2^19 */
                       "[route]\nlayers=-1,-1,-1,-1,-1,-1,-1,-1\n"  /* 2: 2^22 */
                       "[route]\nlayers=-1,-1,-1,-1,-1,-1,-1,-1\n"  /* 3: 2^25 */
                       "[route]\nlayers=-1,-1,-1,-1,-1,-1,-1,-1\n"  /* 4: 2^28 */
                       "[route]\nlayers=-1,-1\n"                    /* 5: 2^29 */
                       "[convolutional]\nfilters=3\nsize=1\n"      /* 6: 3 */
                       "[route]\nlayers=5,6\n"                      /* 7: 2^29 + 3 */
                       "[route]\nlayers=5,5,5,5,5,5,5,7\n";         /* 8: 2^32 + 3 */
    expect_error_at(text, 24);
    assert_non_null(strstr(msg, "channels"));
    /* The same at exactly 2^31 channels, and a legal 2^30 still builds. */
    expect_error_at("[net]\nwidth=1\nheight=1\nchannels=1\n"
                    "[convolutional]\nfilters=65536\nsize=1\n"
                    "[route]\nlayers=-1,-1,-1,-1,-1,-1,-1,-1\n"
                    "[route]\nlayers=-1,-1,-1,-1,-1,-1,-1,-1\n"
                    "[route]\nlayers=-1,-1,-1,-1,-1,-1,-1,-1\n"
                    "[route]\nlayers=-1,-1,-1,-1,-1,-1,-1,-1\n"
                    "[route]\nlayers=-1,-1,-1,-1,-1,-1,-1,-1\n",
                    17);
    mpd_net *net = NULL;
    assert_int_equal(build("[net]\nwidth=1\nheight=1\nchannels=1\n"
                           "[convolutional]\nfilters=65536\nsize=1\n"
                           "[route]\nlayers=-1,-1,-1,-1,-1,-1,-1,-1\n"
                           "[route]\nlayers=-1,-1,-1,-1,-1,-1,-1,-1\n"
                           "[route]\nlayers=-1,-1,-1,-1,-1,-1,-1,-1\n"
                           "[route]\nlayers=-1,-1,-1,-1,-1,-1,-1,-1\n"
                           "[route]\nlayers=-1,-1,-1,-1\n",
                           &net),
                     0);
    assert_int_equal(net->layers[5].out_c, 1 << 30);
    mpd_net_free(net);
}

static void test_error_yolo_channel_mismatch(void **state)
{
    (void)state;
    /* 2 anchors x (3 classes + 5) = 16 channels needed, conv gives 15. */
    expect_error_at(NET4 "[convolutional]\nfilters=15\nsize=1\n"
                         "[yolo]\nmask=0,1\nanchors=1,2,3,4\nclasses=3\nnum=2\n",
                    8);
    assert_non_null(strstr(msg, "16"));
    assert_non_null(strstr(msg, "15"));
}

static void test_error_yolo_anchor_count(void **state)
{
    (void)state;
    /* num=3 needs 6 anchor values, 5 given. */
    expect_error_at(NET4 "[convolutional]\nfilters=6\nsize=1\n"
                         "[yolo]\nmask=0\nclasses=1\nnum=3\nanchors=1,2,3,4,5\n",
                    12);
    /* No anchors at all: the [yolo] line. */
    expect_error_at(NET4 "[convolutional]\nfilters=6\nsize=1\n"
                         "[yolo]\nclasses=1\nnum=1\n",
                    8);
    /* mask outside 0..num-1. */
    expect_error_at(NET4 "[convolutional]\nfilters=6\nsize=1\n"
                         "[yolo]\nmask=3\nclasses=1\nnum=2\nanchors=1,2,3,4\n",
                    9);
    /* non-positive anchor. */
    expect_error_at(NET4 "[convolutional]\nfilters=6\nsize=1\n"
                         "[yolo]\nmask=0\nclasses=1\nnum=1\nanchors=0,4\n",
                    12);
}

static void test_error_first_section_not_net(void **state)
{
    (void)state;
    expect_error_at("\n# c\n[convolutional]\nfilters=2\n[net]\nwidth=4\n", 3);
    /* [network] is darknet's alias and is accepted. */
    mpd_net *net = NULL;
    assert_int_equal(build("[network]\nwidth=4\nheight=4\n[maxpool]\n", &net), 0);
    mpd_net_free(net);
}

static void test_error_bad_activation(void **state)
{
    (void)state;
    expect_error_at(NET4 "[convolutional]\nfilters=2\nsize=1\nactivation=mish\n", 8);
    expect_error_at(NET4 "[convolutional]\nfilters=2\n[convolutional]\nfilters=2\n"
                         "[shortcut]\nfrom=-2\nactivation=swish\n",
                    11);
}

static void test_error_conv_larger_than_input(void **state)
{
    (void)state;
    expect_error_at(NET4 "[convolutional]\nfilters=2\nsize=7\n", 5);
    expect_error_at(NET4 "[maxpool]\nsize=9\nstride=1\npadding=0\n", 5);
}

static void test_error_empty_file_or_no_sections(void **state)
{
    (void)state;
    static const char *const empties[] = {"", "\n\n\n", "# only\n; comments\n"};
    for (size_t i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
        mpd_net *net = NULL;
        int rc = build(empties[i], &net);
        assert_int_equal(rc, MPD_EPARSE);
        assert_null(net);
        assert_non_null(strstr(msg, NAME ":"));
    }
    /* [net] alone: no layers. */
    mpd_net *net = NULL;
    assert_int_equal(build("[net]\nwidth=4\n", &net), MPD_EPARSE);
    assert_non_null(strstr(msg, NAME));
    assert_null(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader_sections_keys_comments_blank_lines),
        cmocka_unit_test(test_reader_typed_getters_and_lists),
        cmocka_unit_test(test_reader_strict_number_parsing),
        cmocka_unit_test(test_net_whitespace_in_lists_and_defaults),
        cmocka_unit_test(test_net_conv_defaults_and_explicit_padding),
        cmocka_unit_test(test_net_maxpool_upsample_shortcut_route_shapes),
        cmocka_unit_test(test_yolov3_tiny_cfg_layers_and_shapes),
        cmocka_unit_test(test_yolov3_full_cfg_parses),
        cmocka_unit_test(test_net_parse_file_errors_name_the_file),
        cmocka_unit_test(test_error_unknown_section),
        cmocka_unit_test(test_error_unknown_key),
        cmocka_unit_test(test_error_bad_integer),
        cmocka_unit_test(test_error_out_of_range),
        cmocka_unit_test(test_error_duplicate_key),
        cmocka_unit_test(test_error_key_before_any_section),
        cmocka_unit_test(test_error_missing_equals),
        cmocka_unit_test(test_error_malformed_section_header),
        cmocka_unit_test(test_error_route_to_later_or_missing_layer),
        cmocka_unit_test(test_error_route_channel_sum_overflow),
        cmocka_unit_test(test_error_yolo_channel_mismatch),
        cmocka_unit_test(test_error_yolo_anchor_count),
        cmocka_unit_test(test_error_first_section_not_net),
        cmocka_unit_test(test_error_bad_activation),
        cmocka_unit_test(test_error_conv_larger_than_input),
        cmocka_unit_test(test_error_empty_file_or_no_sections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
