/* experiments.c - the paper's experiments as mpdet subcommands:
 *   eval      accuracy of plans relative to fp32 (the paper's Fig. 7)
 *   overflow  int8 product and int16 window-sum overflow (Tables 1, 2)
 *   bench     per-layer and total time per plan (Figs. 5, 6)
 *   tune      a plan chosen under an accuracy budget (beyond the paper)
 * Each takes any image directory or list, prints a table, and writes CSV,
 * JSON and gnuplot charts on request. */
#define _XOPEN_SOURCE 700
#include "experiments.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "accuracy.h"
#include "chart.h"
#include "common.h"
#include "tune.h"

#define MAX_PLANS 64

/* Options of the four subcommands; each uses the ones it documents. */
typedef struct {
    tool_model m;
    const char *plans[MAX_PLANS];
    int nplans;
    const char *images, *csv, *json, *chart, *out, *calibration, *scheme;
    double thresh, low, nms, budget, confidence, min_gain;
    int top, limit, runs, warmup, sens_images, report;
} opts;

/* Bootstrap resamples behind tune's --confidence (mpd_acc_ap50_bound). */
#define TUNE_RESAMPLES 200

static void usage_experiments(FILE *f)
{
    fprintf(f,
            "usage: mpdet eval --plan P [--plan P...] --images DIR|LIST [options]\n"
            "  AP50/AP75, recall, precision and mean IoU of each plan's detections against\n"
            "  the fp32 ones (the reference: the cfg's plan, which must be all fp32)\n"
            "  --thresh T    operating threshold, also the reference's (default 0.25)\n"
            "  --low T       threshold of the ranked detections for AP (default 0.05)\n"
            "  --top N       images with the largest disagreement listed per plan (10)\n"
            "\n"
            "usage: mpdet overflow --images DIR|LIST [--plan P] [--calibration F] [options]\n"
            "  per convolution, the share of int8 x int8 products outside int8 and of window\n"
            "  sums outside int16 (avg/max/min over images), affine (stored codes and\n"
            "  zero-point corrected) and symmetric, and the largest |int32 sum|; the\n"
            "  activations are those of plan P (default: the cfg's); symmetric activation\n"
            "  scales from F, else P's calibration, else measured per image\n"
            "\n"
            "usage: mpdet bench --plan P [--plan P...] --images DIR|LIST [options]\n"
            "  per-layer and total forward time and end-to-end detection time per plan\n"
            "  (median of --runs N after --warmup W; plans alternate), relative to the\n"
            "  first plan\n"
            "\n"
            "usage: mpdet tune --budget PCT --images DIR|LIST -o PLAN [--report] [options]\n"
            "  measures each convolution's time per precision and its accuracy loss alone,\n"
            "  chooses layers greedily by time saved per AP50 point lost, verifies the plan\n"
            "  on all images and backs off until AP50 >= 100 - PCT relative to fp32\n"
            "  --confidence C     hold the budget at this confidence on images like these:\n"
            "                     the verified AP50 is the (1 - C) quantile of %d bootstrap\n"
            "                     resamples of the images (default 0.9; 0 = AP50 on the\n"
            "                     images themselves)\n"
            "  --min-gain G       leave in fp32 a layer that saves less than G %% of the\n"
            "                     fp32 time per AP50 point it costs alone (default 20)\n"
            "  --scheme S         symmetric (default) or affine\n"
            "  --calibration F    calibration of the int8 layers (default\n"
            "                     config/yolov3-tiny.calib when it exists)\n"
            "  --sens-images N    images for the per-layer sensitivity (default 100)\n"
            "  --report           print each layer's time share and sensitivity\n"
            "\n"
            "common: --limit N (first N images only), --csv FILE, --json FILE (\"-\" =\n"
            "  stdout), --chart FILE.png (eval: Fig. 7; bench: FILE.png per layer (Fig. 5),\n"
            "  FILE_stacked.png, FILE_total.png (Fig. 6); overflow: FILE.png products\n"
            "  (Table 1), FILE_sums.png (Table 2)), --runs N, --warmup N, --nms T,\n"
            "  --cfg/--weights/--names/--threads/--backend as for detect; --images takes a\n"
            "  directory, a file listing one image per line, or one image\n",
            TUNE_RESAMPLES);
}

static int parse_opts(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof(*o));
    tool_model_init(&o->m, tool_stderr_log);
    o->thresh = 0.25;
    o->low = 0.05;
    o->nms = 0.45;
    o->top = 10;
    o->runs = 10;
    o->warmup = 2;
    o->sens_images = 100;
    o->budget = -1;
    o->confidence = 0.9;
    o->min_gain = 20;
    o->scheme = "symmetric";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--report")) {
            o->report = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage_experiments(stdout);
            return 1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "mpdet: %s needs a value (or is unknown)\n", a);
            return -1;
        }
        const char *v = argv[++i];
        int r = tool_model_option(&o->m, a, v);
        if (r < 0)
            return -1;
        if (r > 0)
            continue;
        if (!strcmp(a, "--plan")) {
            if (o->nplans == MAX_PLANS) {
                fprintf(stderr, "mpdet: at most %d plans\n", MAX_PLANS);
                return -1;
            }
            o->plans[o->nplans++] = v;
        } else if (!strcmp(a, "--images")) {
            o->images = v;
        } else if (!strcmp(a, "--csv")) {
            o->csv = v;
        } else if (!strcmp(a, "--json")) {
            o->json = v;
        } else if (!strcmp(a, "--chart")) {
            o->chart = v;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
            o->out = v;
        } else if (!strcmp(a, "--calibration")) {
            o->calibration = v;
        } else if (!strcmp(a, "--scheme")) {
            if (strcmp(v, "symmetric") && strcmp(v, "affine")) {
                fprintf(stderr, "mpdet: --scheme is symmetric or affine, got '%s'\n", v);
                return -1;
            }
            o->scheme = v;
        } else if (!strcmp(a, "--thresh")) {
            r = tool_parse_double(a, v, 0, 1, &o->thresh);
        } else if (!strcmp(a, "--low")) {
            r = tool_parse_double(a, v, 0.001, 1, &o->low);
        } else if (!strcmp(a, "--nms")) {
            r = tool_parse_double(a, v, 0, 1, &o->nms);
        } else if (!strcmp(a, "--budget")) {
            r = tool_parse_double(a, v, 0, 100, &o->budget);
        } else if (!strcmp(a, "--top")) {
            r = tool_parse_int(a, v, 0, 1000, &o->top);
        } else if (!strcmp(a, "--limit")) {
            r = tool_parse_int(a, v, 1, INT_MAX, &o->limit);
        } else if (!strcmp(a, "--runs")) {
            r = tool_parse_int(a, v, 1, 100000, &o->runs);
        } else if (!strcmp(a, "--warmup")) {
            r = tool_parse_int(a, v, 0, 100000, &o->warmup);
        } else if (!strcmp(a, "--sens-images")) {
            r = tool_parse_int(a, v, 1, INT_MAX, &o->sens_images);
        } else if (!strcmp(a, "--confidence")) {
            r = tool_parse_double(a, v, 0, 0.999, &o->confidence);
        } else if (!strcmp(a, "--min-gain")) {
            r = tool_parse_double(a, v, 0, 1e6, &o->min_gain);
        } else {
            fprintf(stderr, "mpdet: unknown option %s\n", a);
            usage_experiments(stderr);
            return -1;
        }
        if (r < 0)
            return -1;
    }
    if (!o->images) {
        fprintf(stderr, "mpdet: --images DIR|LIST is required\n");
        return -1;
    }
    if (o->low > o->thresh) {
        fprintf(stderr, "mpdet: --low must not exceed --thresh\n");
        return -1;
    }
    return 0;
}

/* The image list, cut to --limit. */
static int load_images(const opts *o, char ***imgs)
{
    int n = tool_image_list(o->images, imgs);
    if (n > 0 && o->limit && o->limit < n) {
        for (int i = o->limit; i < n; i++)
            free((*imgs)[i]);
        n = o->limit;
    }
    return n;
}

/* The start every subcommand shares: options, then the image list.
 * no_plan: the message when no --plan was given (NULL: none needed).
 * Returns -1 to go on, else the exit status to return. */
static int begin(int argc, char **argv, opts *o, const char *no_plan, char ***imgs, int *nimg)
{
    int rc = parse_opts(argc, argv, o);
    if (rc)
        return rc > 0 ? 0 : 2;
    if (no_plan && o->nplans < 1) {
        fprintf(stderr, "%s\n", no_plan);
        return 2;
    }
    *nimg = load_images(o, imgs);
    return *nimg < 0 ? 1 : -1;
}

static int open_engine(const opts *o, const char *plan, mpd_engine **e)
{
    mpd_engine_options eo = o->m.eo;
    char msg[1024];
    eo.plan_path = plan;
    if (mpd_engine_open(&eo, e, msg, sizeof(msg))) {
        fprintf(stderr, "mpdet: %s\n", msg);
        return -1;
    }
    return 0;
}

/* "FILE.png" + "_stacked" -> "FILE_stacked.png". */
static void chart_path(const char *base, const char *suffix, char *buf, size_t len)
{
    size_t n = strlen(base);
    if (n > 4 && strcmp(base + n - 4, ".png") == 0)
        n -= 4;
    snprintf(buf, len, "%.*s%s.png", (int)n, base, suffix);
}

static int draw(const chart_bars *c)
{
    char msg[512];
    if (chart_draw(c, msg, sizeof(msg))) {
        fprintf(stderr, "mpdet: %s\n", msg);
        return -1;
    }
    fprintf(stderr, "mpdet: wrote %s\n", c->png);
    return 0;
}

/* Writes j (consumed) to path ("-" = stdout), indented. 0, or 1 after
 * printing why. */
static int write_json(const char *path, json_t *j)
{
    FILE *f = tool_open_out(path);
    int bad = !f || json_dumpf(j, f, JSON_INDENT(2)) != 0;
    if (!bad)
        fputc('\n', f);
    bad |= f ? tool_close_out(f) : 0;
    json_decref(j);
    return bad;
}

static void header(FILE *f, const char *what, const mpd_engine *e, int threads, int nimg)
{
    char machine[512], kernels[512];
    tool_machine(machine, sizeof(machine));
    mpd_engine_describe(e, kernels, sizeof(kernels));
    fprintf(f, "# %s on %d images\n# machine: %s\n# backend: %s; threads: %d%s\n", what, nimg,
            machine, kernels, threads, threads ? "" : " (all cores)");
}

/* ---- detections of many plans over many images ------------------------ */

typedef struct {
    mpd_acc_box *b;
    int n;
} boxes;

static void boxes_free(boxes *v, int n)
{
    for (int i = 0; v && i < n; i++)
        free(v[i].b);
    free(v);
}

/* Runs each image through every engine, engine k at threshold thresh[k];
 * out[k] receives nimg box lists. Each image is decoded once. */
static int run_engines(mpd_engine **eng, const float *thresh, int ne, char **imgs, int nimg,
                       float nms, boxes **out, const char *what)
{
    char msg[1024];
    for (int k = 0; k < ne; k++)
        if (!(out[k] = calloc((size_t)nimg, sizeof(boxes)))) {
            fprintf(stderr, "mpdet: out of memory\n");
            return -1;
        }
    double t0 = mpd_now(), last = t0;
    for (int i = 0; i < nimg; i++) {
        mpd_image im;
        if (mpd_image_load(imgs[i], 0, &im, msg, sizeof(msg))) {
            fprintf(stderr, "mpdet: %s\n", msg);
            return -1;
        }
        for (int k = 0; k < ne; k++) {
            mpd_detect_params p = {thresh[k], nms};
            mpd_result r;
            if (mpd_engine_detect(eng[k], &im, 1, &p, &r, msg, sizeof(msg))) {
                fprintf(stderr, "mpdet: %s: %s\n", imgs[i], msg);
                mpd_image_free(&im);
                return -1;
            }
            boxes *bx = &out[k][i];
            bx->b = malloc((size_t)(r.count ? r.count : 1) * sizeof(mpd_acc_box));
            if (!bx->b) {
                mpd_result_free(&r);
                mpd_image_free(&im);
                fprintf(stderr, "mpdet: out of memory\n");
                return -1;
            }
            for (int d = 0; d < r.count; d++)
                bx->b[d] = (mpd_acc_box){r.det[d].class_id, r.det[d].confidence, r.det[d].x0,
                                         r.det[d].y0, r.det[d].x1, r.det[d].y1};
            bx->n = r.count;
            mpd_result_free(&r);
        }
        mpd_image_free(&im);
        double now = mpd_now();
        if (now - last > 15 || i + 1 == nimg) {
            fprintf(stderr, "mpdet: %s: %d/%d images, %d plans, %.0f s\n", what, i + 1, nimg, ne,
                    now - t0);
            last = now;
        }
    }
    return 0;
}

/* Scores boxes of one plan against the reference. */
/* The scorer's view of per-image reference and detected boxes (borrowed);
 * NULL when out of memory. */
static mpd_acc_image *acc_images(const boxes *ref, const boxes *det, int nimg)
{
    mpd_acc_image *im = calloc((size_t)nimg + 1, sizeof(*im));
    for (int i = 0; im && i < nimg; i++)
        im[i] = (mpd_acc_image){ref[i].b, ref[i].n, det[i].b, det[i].n};
    return im;
}

static int score(const boxes *ref, const boxes *det, int nimg, float thresh, mpd_acc_summary *s,
                 double *disagreement)
{
    mpd_acc_image *im = acc_images(ref, det, nimg);
    if (!im)
        return MPD_ENOMEM;
    int rc = mpd_acc_evaluate(im, nimg, thresh, s, disagreement);
    free(im);
    return rc;
}

/* The reference engine: the cfg's own plan, which must be all fp32. */
static int open_reference(const opts *o, mpd_engine **e)
{
    if (open_engine(o, NULL, e))
        return -1;
    mpd_plan_info pi;
    mpd_engine_plan_info(*e, &pi);
    if (pi.layers[MPD_PREC_FP16] || pi.layers[MPD_PREC_INT8] || pi.layers[MPD_PREC_BF16]) {
        fprintf(stderr,
                "mpdet: the reference must be fp32, but %s asks for %d fp16, %d int8 and "
                "%d bf16 convolutions (precision= keys)\n",
                o->m.eo.cfg_path, pi.layers[MPD_PREC_FP16], pi.layers[MPD_PREC_INT8],
                pi.layers[MPD_PREC_BF16]);
        mpd_engine_close(*e);
        return -1;
    }
    return 0;
}

/* ---- eval ------------------------------------------------------------ */

typedef struct {
    int idx;
    double v;
} ranked;

static int by_v_desc(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    return x->v < y->v ? 1 : x->v > y->v ? -1 : x->idx - y->idx;
}

int mpd_cmd_eval(int argc, char **argv)
{
    opts o;
    char **imgs = NULL;
    int nimg = 0, status = begin(argc, argv, &o, "mpdet eval: at least one --plan", &imgs, &nimg);
    if (status >= 0)
        return status;
    status = 1;
    int np = o.nplans;
    mpd_engine **eng = calloc((size_t)np + 1, sizeof(*eng));
    boxes **res = calloc((size_t)np + 1, sizeof(*res));
    float *th = calloc((size_t)np + 1, sizeof(float));
    mpd_acc_summary *sum = calloc((size_t)np, sizeof(*sum));
    double *dis = calloc((size_t)np * nimg, sizeof(double));
    ranked *rk = calloc((size_t)nimg, sizeof(ranked));
    if (!eng || !res || !th || !sum || !dis || !rk || open_reference(&o, &eng[0]))
        goto done;
    th[0] = (float)o.thresh;
    for (int k = 0; k < np; k++) {
        if (open_engine(&o, o.plans[k], &eng[k + 1]))
            goto done;
        th[k + 1] = (float)o.low;
    }
    if (run_engines(eng, th, np + 1, imgs, nimg, (float)o.nms, res, "eval"))
        goto done;
    for (int k = 0; k < np; k++)
        if (score(res[0], res[k + 1], nimg, (float)o.thresh, &sum[k], dis + (size_t)k * nimg)) {
            fprintf(stderr, "mpdet: out of memory\n");
            goto done;
        }
    long nref = 0;
    for (int i = 0; i < nimg; i++)
        nref += res[0][i].n;
    header(stdout, "accuracy relative to fp32", eng[0], o.m.eo.threads, nimg);
    printf("# reference: fp32 detections at conf >= %.2f after NMS %.2f (%ld boxes); plans "
           "ranked from conf >= %.2f\n",
           o.thresh, o.nms, nref, o.low);
    printf("%-22s %7s %7s %7s %7s %7s %9s\n", "plan", "AP50%", "AP75%", "recall", "prec.",
           "meanIoU", "changed");
    for (int k = 0; k < np; k++) {
        char name[256];
        tool_plan_name(o.plans[k], name, sizeof(name));
        printf("%-22s %7.2f %7.2f %7.2f %7.2f %7.3f %5d/%d\n", name, sum[k].ap50, sum[k].ap75,
               sum[k].recall, sum[k].precision, sum[k].mean_iou, sum[k].images_changed, nimg);
    }
    json_t *jplans = json_array();
    for (int k = 0; k < np; k++) {
        char name[256];
        tool_plan_name(o.plans[k], name, sizeof(name));
        for (int i = 0; i < nimg; i++)
            rk[i] = (ranked){i, dis[(size_t)k * nimg + i]};
        qsort(rk, (size_t)nimg, sizeof(ranked), by_v_desc);
        int top = o.top < nimg ? o.top : nimg;
        json_t *worst = json_array();
        if (top > 0 && rk[0].v > 0)
            printf("\n%s: images with the largest disagreement (missed + extra boxes + "
                   "1 - IoU of matched ones)\n",
                   name);
        for (int t = 0; t < top && rk[t].v > 0; t++) {
            printf("  %6.2f  %s\n", rk[t].v, imgs[rk[t].idx]);
            json_array_append_new(worst, json_pack("{s:s, s:f}", "image", imgs[rk[t].idx],
                                                   "disagreement", rk[t].v));
        }
        json_array_append_new(
            jplans, json_pack("{s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:i, s:i, s:I, s:I, s:I, s:o}",
                              "plan", name, "path", o.plans[k], "ap50", sum[k].ap50, "ap75",
                              sum[k].ap75, "recall", sum[k].recall, "precision", sum[k].precision,
                              "mean_iou", sum[k].mean_iou, "images_changed", sum[k].images_changed,
                              "classes", sum[k].classes, "ref_boxes", (json_int_t)sum[k].nref,
                              "boxes", (json_int_t)sum[k].ndet_op, "matched",
                              (json_int_t)sum[k].matched, "worst", worst));
    }
    status = 0;
    if (o.csv) {
        FILE *f = tool_open_out(o.csv);
        if (!f) {
            status = 1;
        } else {
            fprintf(f, "plan,ap50,ap75,recall,precision,mean_iou,images_changed,images,classes\n");
            for (int k = 0; k < np; k++) {
                char name[256];
                tool_plan_name(o.plans[k], name, sizeof(name));
                fprintf(f, "%s,%.4f,%.4f,%.4f,%.4f,%.5f,%d,%d,%d\n", name, sum[k].ap50,
                        sum[k].ap75, sum[k].recall, sum[k].precision, sum[k].mean_iou,
                        sum[k].images_changed, nimg, sum[k].classes);
            }
            status |= tool_close_out(f);
        }
    }
    if (o.json) {
        char machine[512];
        tool_machine(machine, sizeof(machine));
        json_t *j = json_pack("{s:s, s:s, s:i, s:f, s:f, s:f, s:I, s:o}", "machine", machine,
                              "backend", mpd_engine_backend(eng[0]), "images", nimg, "thresh",
                              o.thresh, "low", o.low, "nms", o.nms, "ref_boxes",
                              (json_int_t)nref, "plans", jplans);
        status |= write_json(o.json, j);
    } else {
        json_decref(jplans);
    }
    if (o.chart) {
        const char **xl = calloc((size_t)np, sizeof(char *));
        double *v = calloc((size_t)np * 2, sizeof(double));
        char(*names)[256] = calloc((size_t)np, 256);
        if (xl && v && names) {
            for (int k = 0; k < np; k++) {
                tool_plan_name(o.plans[k], names[k], 256);
                xl[k] = names[k];
                v[2 * k] = sum[k].ap50;
                v[2 * k + 1] = sum[k].ap75;
            }
            static const char *const series[] = {"AP50", "AP75"};
            char title[256];
            snprintf(title, sizeof(title),
                     "Accuracy relative to fp32 (= 100), %d images (paper Fig. 7)", nimg);
            /* The axis starts below the lowest bar, so that points of
             * difference show; the labels give the values. */
            double lo = 100;
            for (int k = 0; k < 2 * np; k++)
                lo = v[k] < lo ? v[k] : lo;
            chart_bars c = {.png = o.chart, .title = title, .ylabel = "% of fp32",
                            .style = CHART_CLUSTERED, .nx = np, .ns = 2, .xlabels = xl,
                            .series = series, .v = v, .value_labels = 1,
                            .ymin = lo > 10 ? floor(lo / 5) * 5 - 5 : 0};
            if (draw(&c))
                status = 1;
        } else {
            status = 1;
        }
        free(xl);
        free(v);
        free(names);
    }
done:
    for (int k = 0; eng && k <= np; k++) {
        mpd_engine_close(eng[k]);
        if (res)
            boxes_free(res[k], nimg);
    }
    free(eng);
    free(res);
    free(th);
    free(sum);
    free(dis);
    free(rk);
    tool_list_free(imgs, nimg);
    return status;
}

/* ---- bench ----------------------------------------------------------- */

/* Per plan: the layer times of every measured run and the totals. */
typedef struct {
    double *layer; /* runs x layers */
    double *fwd, *e2e;
} timing;

/* Runs --warmup then --runs forward passes and end-to-end detections of
 * every plan, alternating the plans each run so that a machine whose speed
 * drifts treats them alike. Forward passes use the first image; end-to-end
 * runs cycle through the images (read once, decoded each run). */
static int measure(const opts *o, mpd_engine **eng, int np, char **imgs, int nimg, timing *t)
{
    char msg[1024];
    int nl = mpd_engine_layer_count(eng[0]), c, h, w, rc = -1;
    mpd_engine_input_shape(eng[0], &c, &h, &w);
    int nfile = nimg < 16 ? nimg : 16;
    float *input = malloc((size_t)c * h * w * sizeof(float));
    unsigned char **buf = calloc((size_t)nfile, sizeof(*buf));
    size_t *len = calloc((size_t)nfile, sizeof(*len));
    mpd_image im = {0};
    if (!input || !buf || !len)
        goto done;
    for (int i = 0; i < nfile; i++)
        if (mpd_file_read(imgs[i], &buf[i], &len[i], msg, sizeof(msg))) {
            fprintf(stderr, "mpdet: %s\n", msg);
            goto done;
        }
    if (mpd_image_load(imgs[0], 0, &im, msg, sizeof(msg)) ||
        mpd_engine_preprocess(eng[0], &im, input)) {
        fprintf(stderr, "mpdet: %s: %s\n", imgs[0], msg);
        goto done;
    }
    for (int k = 0; k < np; k++) {
        t[k].layer = calloc((size_t)o->runs * nl, sizeof(double));
        t[k].fwd = calloc((size_t)o->runs, sizeof(double));
        t[k].e2e = calloc((size_t)o->runs, sizeof(double));
        if (!t[k].layer || !t[k].fwd || !t[k].e2e)
            goto done;
    }
    for (int r = -o->warmup; r < o->runs; r++) {
        for (int k = 0; k < np; k++) {
            double t0 = mpd_now();
            if (mpd_engine_forward(eng[k], input, 1, msg, sizeof(msg))) {
                fprintf(stderr, "mpdet: forward: %s\n", msg);
                goto done;
            }
            double t1 = mpd_now();
            /* The layer times of this pass, before the detection below
             * replaces them. */
            for (int i = 0; i < nl && r >= 0; i++) {
                mpd_layer_info li;
                mpd_engine_layer_info(eng[k], i, &li);
                t[k].layer[(size_t)r * nl + i] = li.last_ms;
            }
            int f = (r < 0 ? -r : r) % nfile;
            mpd_result res;
            double t2 = mpd_now();
            if (mpd_engine_detect_memory(eng[k], buf[f], len[f], 0, NULL, &res, msg,
                                         sizeof(msg))) {
                fprintf(stderr, "mpdet: %s: %s\n", imgs[f], msg);
                goto done;
            }
            double t3 = mpd_now();
            mpd_result_free(&res);
            if (r >= 0) {
                t[k].fwd[r] = (t1 - t0) * 1e3;
                t[k].e2e[r] = (t3 - t2) * 1e3;
            }
        }
    }
    rc = 0;
done:
    if (rc)
        fprintf(stderr, "mpdet: bench failed\n");
    mpd_image_free(&im);
    for (int i = 0; buf && i < nfile; i++)
        free(buf[i]);
    free(buf);
    free(len);
    free(input);
    return rc;
}

int mpd_cmd_bench(int argc, char **argv)
{
    opts o;
    char **imgs = NULL;
    int nimg = 0, status = begin(argc, argv, &o,
                                 "mpdet bench: at least one --plan (the first is the baseline)",
                                 &imgs, &nimg);
    if (status >= 0)
        return status;
    status = 1;
    int np = o.nplans;
    mpd_engine **eng = calloc((size_t)np, sizeof(*eng));
    timing *t = calloc((size_t)np, sizeof(*t));
    double *med = NULL, *fwd = NULL, *e2e = NULL, *col = NULL;
    char(*names)[256] = calloc((size_t)np, 256);
    if (!eng || !t || !names)
        goto done;
    for (int k = 0; k < np; k++) {
        tool_plan_name(o.plans[k], names[k], 256);
        if (open_engine(&o, o.plans[k], &eng[k]))
            goto done;
    }
    int nl = mpd_engine_layer_count(eng[0]);
    med = calloc((size_t)np * nl, sizeof(double));
    fwd = calloc((size_t)np, sizeof(double));
    e2e = calloc((size_t)np, sizeof(double));
    col = calloc((size_t)o.runs, sizeof(double));
    if (!med || !fwd || !e2e || !col || measure(&o, eng, np, imgs, nimg, t))
        goto done;
    for (int k = 0; k < np; k++) {
        for (int i = 0; i < nl; i++) {
            for (int r = 0; r < o.runs; r++)
                col[r] = t[k].layer[(size_t)r * nl + i];
            med[(size_t)k * nl + i] = tool_median(col, o.runs);
        }
        fwd[k] = tool_median(t[k].fwd, o.runs);
        e2e[k] = tool_median(t[k].e2e, o.runs);
    }
    header(stdout, "time per plan (median of runs)", eng[0], o.m.eo.threads, nimg);
    printf("# %d runs after %d warm-up, plans alternating; forward on %s, end to end (decode +"
           " letterbox + forward + decode boxes + NMS) over the first %d images\n",
           o.runs, o.warmup, imgs[0], nimg < 16 ? nimg : 16);
    printf("%5s %-9s", "layer", "type");
    for (int k = 0; k < np; k++)
        printf(" %12.12s", names[k]);
    printf("   (ms)\n");
    for (int i = 0; i < nl; i++) {
        mpd_layer_info li;
        mpd_engine_layer_info(eng[0], i, &li);
        printf("%5d %-9s", i, li.kind);
        for (int k = 0; k < np; k++) {
            mpd_layer_info lk;
            mpd_engine_layer_info(eng[k], i, &lk);
            char cell[32];
            snprintf(cell, sizeof(cell), "%.2f %s", med[(size_t)k * nl + i],
                     strcmp(lk.kind, "conv") ? "" : lk.precision);
            printf(" %12s", cell);
        }
        printf("\n");
    }
    const char *rows[] = {"forward ms", "vs first", "saved %", "end-to-end ms", "vs first",
                          "saved %"};
    for (int row = 0; row < 6; row++) {
        printf("%-15s", rows[row]);
        const double *v = row < 3 ? fwd : e2e;
        for (int k = 0; k < np; k++) {
            if (row % 3 == 0)
                printf(" %12.2f", v[k]);
            else if (row % 3 == 1)
                printf(" %11.2fx", v[0] / v[k]);
            else
                printf(" %11.1f%%", 100 * (1 - v[k] / v[0]));
        }
        printf("\n");
    }
    status = 0;
    if (o.csv) {
        FILE *f = tool_open_out(o.csv);
        if (!f) {
            status = 1;
        } else {
            fprintf(f, "plan,layer,type,precision,ms\n");
            for (int k = 0; k < np; k++) {
                for (int i = 0; i < nl; i++) {
                    mpd_layer_info li;
                    mpd_engine_layer_info(eng[k], i, &li);
                    fprintf(f, "%s,%d,%s,%s,%.4f\n", names[k], i, li.kind, li.precision,
                            med[(size_t)k * nl + i]);
                }
                fprintf(f, "%s,forward,,,%.4f\n%s,end_to_end,,,%.4f\n", names[k], fwd[k],
                        names[k], e2e[k]);
            }
            status |= tool_close_out(f);
        }
    }
    if (o.json) {
        char machine[512], kernels[512];
        tool_machine(machine, sizeof(machine));
        mpd_engine_describe(eng[0], kernels, sizeof(kernels));
        json_t *jp = json_array();
        for (int k = 0; k < np; k++) {
            json_t *layers = json_array();
            for (int i = 0; i < nl; i++) {
                mpd_layer_info li;
                mpd_engine_layer_info(eng[k], i, &li);
                json_array_append_new(layers,
                                      json_pack("{s:i, s:s, s:s, s:f}", "layer", i, "type",
                                                li.kind, "precision", li.precision, "ms",
                                                med[(size_t)k * nl + i]));
            }
            json_array_append_new(jp, json_pack("{s:s, s:s, s:f, s:f, s:o}", "plan", names[k],
                                                "path", o.plans[k], "forward_ms", fwd[k],
                                                "end_to_end_ms", e2e[k], "layers", layers));
        }
        json_t *j = json_pack("{s:s, s:s, s:i, s:i, s:i, s:o}", "machine", machine, "kernels",
                              kernels, "threads", o.m.eo.threads, "runs", o.runs, "warmup",
                              o.warmup, "plans", jp);
        status |= write_json(o.json, j);
    }
    if (o.chart && status == 0) {
        /* Fig. 5: the convolutions (by darknet index) plus everything else
         * as one group, absolute per layer and stacked relative to the
         * first plan's total; Fig. 6: totals per plan. */
        int nconv = 0;
        int *conv = calloc((size_t)nl, sizeof(int));
        char(*xl)[32] = calloc((size_t)nl + 1, 32);
        const char **xp = calloc((size_t)nl + 1 + np, sizeof(char *));
        const char **sp = calloc((size_t)np + nl + 1, sizeof(char *));
        double *v = calloc((size_t)(nl + 1) * (np + 1) * 2, sizeof(double));
        if (!conv || !xl || !xp || !sp || !v) {
            status = 1;
        } else {
            for (int i = 0; i < nl; i++) {
                mpd_layer_info li;
                mpd_engine_layer_info(eng[0], i, &li);
                if (!strcmp(li.kind, "conv"))
                    conv[nconv++] = i;
            }
            for (int c2 = 0; c2 <= nconv; c2++) {
                if (c2 < nconv)
                    snprintf(xl[c2], 32, "%d", conv[c2]);
                else
                    snprintf(xl[c2], 32, "other");
                xp[c2] = xl[c2];
            }
            for (int k = 0; k < np; k++) {
                sp[k] = names[k];
                double other = 0;
                for (int i = 0; i < nl; i++)
                    other += med[(size_t)k * nl + i];
                for (int c2 = 0; c2 < nconv; c2++) {
                    v[(size_t)c2 * np + k] = med[(size_t)k * nl + conv[c2]];
                    other -= med[(size_t)k * nl + conv[c2]];
                }
                v[(size_t)nconv * np + k] = other;
            }
            char path[4096], title[256];
            snprintf(title, sizeof(title), "Time per layer (darknet index; paper Fig. 5), ms");
            chart_bars c = {.png = o.chart, .title = title, .ylabel = "ms",
                            .xlabel = "convolution (darknet layer index); other = pool, route, "
                                      "upsample, yolo",
                            .style = CHART_CLUSTERED, .nx = nconv + 1, .ns = np, .xlabels = xp,
                            .series = sp, .v = v, .width = 1200};
            status |= draw(&c) ? 1 : 0;
            /* Stacked: x = plan, segments = layers, % of the first plan. */
            double *s = v + (size_t)(nl + 1) * (np + 1), base = 0;
            for (int i = 0; i < nl; i++)
                base += med[i];
            for (int k = 0; k < np; k++)
                for (int c2 = 0; c2 <= nconv; c2++)
                    s[(size_t)k * (nconv + 1) + c2] =
                        base > 0 ? 100 * v[(size_t)c2 * np + k] / base : 0;
            const char **segs = sp + np;
            for (int c2 = 0; c2 <= nconv; c2++)
                segs[c2] = xl[c2];
            chart_path(o.chart, "_stacked", path, sizeof(path));
            snprintf(title, sizeof(title), "Time per layer, stacked, %% of %s (paper Fig. 5)",
                     names[0]);
            chart_bars cs = {.png = path, .title = title, .ylabel = "% of the first plan's time",
                             .style = CHART_STACKED, .nx = np, .ns = nconv + 1,
                             .xlabels = (const char *const *)sp, .series = segs, .v = s,
                             .width = 1100};
            status |= draw(&cs) ? 1 : 0;
            double *tot = calloc((size_t)np * 2, sizeof(double));
            if (tot) {
                for (int k = 0; k < np; k++) {
                    tot[2 * k] = fwd[k];
                    tot[2 * k + 1] = e2e[k];
                }
                static const char *const ser[] = {"forward pass", "end to end"};
                chart_path(o.chart, "_total", path, sizeof(path));
                snprintf(title, sizeof(title), "Detection time per plan (paper Fig. 6), ms");
                chart_bars ct = {.png = path, .title = title, .ylabel = "ms",
                                 .style = CHART_CLUSTERED, .nx = np, .ns = 2,
                                 .xlabels = (const char *const *)sp, .series = ser, .v = tot,
                                 .value_labels = 1};
                status |= draw(&ct) ? 1 : 0;
                free(tot);
            }
        }
        free(conv);
        free(xl);
        free(xp);
        free(sp);
        free(v);
    }
done:
    for (int k = 0; k < np; k++) {
        if (eng)
            mpd_engine_close(eng[k]);
        if (t) {
            free(t[k].layer);
            free(t[k].fwd);
            free(t[k].e2e);
        }
    }
    free(eng);
    free(t);
    free(med);
    free(fwd);
    free(e2e);
    free(col);
    free(names);
    tool_list_free(imgs, nimg);
    return status;
}

/* ---- overflow -------------------------------------------------------- */

/* Per convolution and variant: the per-image shares (percent) summed,
 * and their max and min, for products and for sums. */
typedef struct {
    double sum, max, min;
} stat3;

static void stat_add(stat3 *s, double v, int first)
{
    s->sum += v;
    if (first || v > s->max)
        s->max = v;
    if (first || v < s->min)
        s->min = v;
}

int mpd_cmd_overflow(int argc, char **argv)
{
    opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc)
        return rc > 0 ? 0 : 2;
    if (o.nplans > 1) {
        fprintf(stderr, "mpdet overflow: at most one --plan\n");
        return 2;
    }
    char **imgs = NULL;
    int nimg = load_images(&o, &imgs), status = 1;
    if (nimg < 0)
        return 1;
    mpd_engine *e = NULL;
    const char *plan = o.nplans ? o.plans[0] : NULL;
    mpd_ovf_counts *cnt = NULL;
    stat3 *prod = NULL, *sums = NULL;
    long long *maxsum = NULL;
    int *conv = NULL, nconv = 0;
    char msg[1024];
    if (open_engine(&o, plan, &e))
        goto done;
    int nl = mpd_engine_layer_count(e), V = MPD_OVF_NVARIANTS;
    cnt = calloc((size_t)nl, sizeof(*cnt));
    prod = calloc((size_t)nl * V, sizeof(*prod));
    sums = calloc((size_t)nl * V, sizeof(*sums));
    maxsum = calloc((size_t)nl * V, sizeof(*maxsum));
    conv = calloc((size_t)nl, sizeof(int));
    if (!cnt || !prod || !sums || !maxsum || !conv)
        goto done;
    for (int i = 0; i < nl; i++) {
        mpd_layer_info li;
        mpd_engine_layer_info(e, i, &li);
        if (!strcmp(li.kind, "conv"))
            conv[nconv++] = i;
    }
    long long products = 0, nsums = 0;
    double t0 = mpd_now(), last = t0;
    for (int k = 0; k < nimg; k++) {
        mpd_image im;
        if (mpd_image_load(imgs[k], 0, &im, msg, sizeof(msg))) {
            fprintf(stderr, "mpdet: %s\n", msg);
            goto done;
        }
        rc = mpd_engine_overflow(e, &im, o.calibration, cnt, msg, sizeof(msg));
        mpd_image_free(&im);
        if (rc) {
            fprintf(stderr, "mpdet: %s: %s\n", imgs[k], msg);
            goto done;
        }
        for (int c = 0; c < nconv; c++) {
            const mpd_ovf_counts *q = &cnt[conv[c]];
            if (k == 0) {
                products += q->products;
                nsums += q->sums;
            }
            for (int v = 0; v < V; v++) {
                size_t at = (size_t)conv[c] * V + v;
                stat_add(&prod[at], 100.0 * (double)q->prod_ovf[v] / (double)q->products, k == 0);
                stat_add(&sums[at], 100.0 * (double)q->sum_ovf[v] / (double)q->sums, k == 0);
                if (q->max_abs_sum[v] > maxsum[at])
                    maxsum[at] = q->max_abs_sum[v];
            }
        }
        double now = mpd_now();
        if (now - last > 15 || k + 1 == nimg) {
            fprintf(stderr, "mpdet: overflow: %d/%d images, %.0f s\n", k + 1, nimg, now - t0);
            last = now;
        }
    }
    char pname[256];
    tool_plan_name(plan, pname, sizeof(pname));
    header(stdout, "int8/int16 overflow per convolution", e, o.m.eo.threads, nimg);
    printf("# activations of plan %s; symmetric activation scales: %s; %lld products and %lld "
           "window sums per image\n",
           pname,
           o.calibration ? o.calibration : "the plan's calibration, else measured per image",
           products, nsums);
    printf("# conv# = the paper's numbering (convolutions counted from 1); layer = darknet's\n");
    const char *vname[] = {"affine codes", "affine corrected", "symmetric"};
    for (int table = 0; table < 2; table++) {
        printf("\n%s: %% of %s (avg / max / min over images)\n",
               table ? "Table 2" : "Table 1",
               table ? "window sums outside int16" : "single int8 x int8 products outside int8");
        printf("%5s %5s", "conv#", "layer");
        for (int v = 0; v < V; v++)
            printf(" | %-26s", vname[v]);
        printf("\n");
        for (int c = 0; c < nconv; c++) {
            printf("%5d %5d", c + 1, conv[c]);
            for (int v = 0; v < V; v++) {
                const stat3 *s = &(table ? sums : prod)[(size_t)conv[c] * V + v];
                printf(" | %8.3f %8.3f %8.3f", s->sum / nimg, s->max, s->min);
            }
            printf("\n");
        }
    }
    printf("\nlargest |int32 window sum| and headroom to 2^31 (x)\n%5s %5s", "conv#", "layer");
    for (int v = 0; v < V; v++)
        printf(" | %-24s", vname[v]);
    printf("\n");
    for (int c = 0; c < nconv; c++) {
        printf("%5d %5d", c + 1, conv[c]);
        for (int v = 0; v < V; v++) {
            long long m = maxsum[(size_t)conv[c] * V + v];
            printf(" | %12lld %10.0fx", m, m ? 2147483648.0 / (double)m : 0.0);
        }
        printf("\n");
    }
    status = 0;
    if (o.csv) {
        FILE *f = tool_open_out(o.csv);
        if (!f) {
            status = 1;
        } else {
            fprintf(f, "conv,layer,variant,prod_avg,prod_max,prod_min,sum_avg,sum_max,sum_min,"
                       "max_abs_sum\n");
            for (int c = 0; c < nconv; c++)
                for (int v = 0; v < V; v++) {
                    size_t at = (size_t)conv[c] * V + v;
                    fprintf(f, "%d,%d,%s,%.5f,%.5f,%.5f,%.5f,%.5f,%.5f,%lld\n", c + 1, conv[c],
                            mpd_ovf_variant_name((mpd_ovf_variant)v), prod[at].sum / nimg,
                            prod[at].max, prod[at].min, sums[at].sum / nimg, sums[at].max,
                            sums[at].min, maxsum[at]);
                }
            status |= tool_close_out(f);
        }
    }
    if (o.json) {
        char machine[512];
        tool_machine(machine, sizeof(machine));
        json_t *jl = json_array();
        for (int c = 0; c < nconv; c++) {
            json_t *jv = json_object();
            for (int v = 0; v < V; v++) {
                size_t at = (size_t)conv[c] * V + v;
                json_object_set_new(
                    jv, mpd_ovf_variant_name((mpd_ovf_variant)v),
                    json_pack("{s:[f,f,f], s:[f,f,f], s:I}", "products_pct", prod[at].sum / nimg,
                              prod[at].max, prod[at].min, "sums_pct", sums[at].sum / nimg,
                              sums[at].max, sums[at].min, "max_abs_sum", (json_int_t)maxsum[at]));
            }
            json_array_append_new(jl, json_pack("{s:i, s:i, s:o}", "conv", c + 1, "layer",
                                                conv[c], "variants", jv));
        }
        json_t *j = json_pack("{s:s, s:s, s:i, s:o}", "machine", machine, "plan", pname, "images",
                              nimg, "layers", jl);
        status |= write_json(o.json, j);
    }
    if (o.chart) {
        char(*xl)[32] = calloc((size_t)nconv, 32);
        const char **xp = calloc((size_t)nconv, sizeof(char *));
        double *v = calloc((size_t)nconv * V, sizeof(double));
        if (!xl || !xp || !v) {
            status = 1;
        } else {
            for (int table = 0; table < 2 && xl; table++) {
                for (int c = 0; c < nconv; c++) {
                    snprintf(xl[c], 32, "%d (L%d)", c + 1, conv[c]);
                    xp[c] = xl[c];
                    for (int k = 0; k < V; k++)
                        v[(size_t)c * V + k] =
                            (table ? sums : prod)[(size_t)conv[c] * V + k].sum / nimg;
                }
                char path[4096], title[256];
                if (table)
                    chart_path(o.chart, "_sums", path, sizeof(path));
                else
                    snprintf(path, sizeof(path), "%s", o.chart);
                snprintf(title, sizeof(title), "%s, mean over %d images (paper Table %d)",
                         table ? "Window sums outside int16" : "int8 x int8 products outside int8",
                         nimg, table + 1);
                chart_bars c = {.png = path, .title = title, .ylabel = "% per image",
                                .xlabel = "convolution # (darknet layer)",
                                .style = CHART_CLUSTERED, .nx = nconv, .ns = V, .xlabels = xp,
                                .series = vname, .v = v, .width = 1100};
                status |= draw(&c) ? 1 : 0;
            }
        }
        free(xl);
        free(xp);
        free(v);
    }
done:
    mpd_engine_close(e);
    free(cnt);
    free(prod);
    free(sums);
    free(maxsum);
    free(conv);
    tool_list_free(imgs, nimg);
    return status;
}

/* ---- tune ------------------------------------------------------------ */

/* Writes a plan file: fp32 by default, prec[k] on layer conv[k]. */
static int write_plan(const char *path, const char *scheme, const char *calibration,
                      const int *conv, const int *prec, int nconv, const char *comment)
{
    char tmp[4200];
    FILE *f = tool_open_replace(path, tmp, sizeof(tmp));
    if (!f)
        return -1;
    if (comment)
        fputs(comment, f);
    fprintf(f, "[plan]\ndefault = fp32\nscheme = %s\n", scheme);
    if (calibration)
        fprintf(f, "calibration = %s\n", calibration);
    int any = 0;
    for (int k = 0; k < nconv; k++)
        if (prec[k] != MPD_TUNE_FP32)
            fprintf(f, "%s%d = %s\n", any++ ? "" : "[layers]\n", conv[k],
                    mpd_tune_prec_name(prec[k]));
    return tool_commit_replace(f, tmp, path) ? -1 : 0;
}

typedef struct {
    const opts *o;
    const char *dir, *calibration;
    const int *conv;
    int nconv, nimg;
    char **imgs;
    const boxes *ref;
    /* Every plan verified (a copy of its precisions) with its AP50 on the
     * images and the bound that verification used. */
    struct verified {
        int *prec;
        double ap50, bound;
    } *seen;
    int nseen;
} tune_ctx;

/* The AP50 on the images themselves of a plan verify_plan saw; -1 if none. */
static double verified_ap50(const tune_ctx *t, const int *prec)
{
    for (int i = 0; i < t->nseen; i++)
        if (!memcmp(t->seen[i].prec, prec, (size_t)t->nconv * sizeof(int)))
            return t->seen[i].ap50;
    return -1;
}

/* AP50 of a whole plan on every image (the verification of the tuner). */
static double verify_plan(void *ud, const int *prec)
{
    tune_ctx *t = ud;
    char path[4096];
    snprintf(path, sizeof(path), "%s/verify.plan", t->dir);
    if (write_plan(path, t->o->scheme, t->calibration, t->conv, prec, t->nconv, NULL))
        return -1;
    mpd_engine *e;
    if (open_engine(t->o, path, &e))
        return -1;
    float low = (float)t->o->low;
    boxes *res = NULL;
    double ap = -1, bound = -1;
    mpd_acc_summary s;
    mpd_acc_image *im = NULL;
    float thresh = (float)t->o->thresh;
    if (run_engines(&e, &low, 1, t->imgs, t->nimg, (float)t->o->nms, &res, "tune: verify") == 0 &&
        (im = acc_images(t->ref, res, t->nimg)) && mpd_acc_evaluate(im, t->nimg, thresh, &s, NULL) == 0)
        ap = bound = s.ap50;
    /* A fixed seed: the same detections always give the same verdict. */
    if (ap >= 0 && t->o->confidence > 0 &&
        mpd_acc_ap50_bound(im, t->nimg, thresh, TUNE_RESAMPLES, 1 - t->o->confidence, 1, &bound))
        ap = bound = -1;
    free(im);
    mpd_engine_close(e);
    boxes_free(res, t->nimg);
    struct verified *nv = realloc(t->seen, (size_t)(t->nseen + 1) * sizeof(*nv));
    if (nv)
        t->seen = nv;
    if (ap < 0 || !nv || !(nv[t->nseen].prec = malloc((size_t)t->nconv * sizeof(int))))
        return -1;
    memcpy(nv[t->nseen].prec, prec, (size_t)t->nconv * sizeof(int));
    nv[t->nseen].ap50 = ap;
    nv[t->nseen++].bound = bound;
    int chosen = 0;
    for (int k = 0; k < t->nconv; k++)
        chosen += prec[k] != MPD_TUNE_FP32;
    fprintf(stderr, "mpdet: tune: plan with %d layers changed: AP50 %.2f %%", chosen, ap);
    if (t->o->confidence > 0)
        fprintf(stderr, ", at %g confidence %.2f %%", t->o->confidence, bound);
    fputc('\n', stderr);
    return bound;
}

/* Writes into buf the path of target (absolute) relative to the directory
 * of the file `from` (which may not exist yet; its directory must). 0, or
 * -1 when a path cannot be resolved, the two share only the root, or the
 * result does not fit. */
static int relative_path(const char *from, const char *target, char *buf, size_t len)
{
    char dir[PATH_MAX], rdir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", from);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    if (!realpath(dir, rdir) || target[0] != '/')
        return -1;
    /* The longest common prefix ending at a directory boundary. */
    size_t common = 0;
    for (size_t i = 0; rdir[i] && rdir[i] == target[i]; i++)
        if (rdir[i + 1] == '\0' ? target[i + 1] == '/' : rdir[i] == '/')
            common = rdir[i + 1] == '\0' ? i + 1 : i;
    if (common == 0 || strcmp(rdir, "/") == 0)
        return -1; /* nothing in common but the root: the absolute path reads better */
    size_t at = 0;
    buf[0] = '\0';
    for (const char *p = rdir + common; *p; p++)
        if (*p == '/' && at + 3 < len) {
            memcpy(buf + at, "../", 4);
            at += 3;
        }
    int n = snprintf(buf + at, len - at, "%s", target + common + 1);
    return n < 0 || (size_t)n >= len - at ? -1 : 0;
}

int mpd_cmd_tune(int argc, char **argv)
{
    opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc)
        return rc > 0 ? 0 : 2;
    if (o.budget < 0 || !o.out || o.nplans) {
        fprintf(stderr, "mpdet tune: needs --budget PCT, --images and -o PLAN (no --plan)\n");
        return 2;
    }
    char dir[] = "/tmp/mpdet-tune.XXXXXX", calib[PATH_MAX] = "", path[4096];
    const char *cal = o.calibration;
    if (!cal && access("config/yolov3-tiny.calib", R_OK) == 0)
        cal = "config/yolov3-tiny.calib";
    if (cal && !realpath(cal, calib)) {
        fprintf(stderr, "mpdet: %s: %s\n", cal, strerror(errno));
        return 1;
    }
    char **imgs = NULL;
    int nimg = load_images(&o, &imgs), status = 1, nconv = 0;
    if (nimg < 0)
        return 1;
    if (!mkdtemp(dir)) {
        fprintf(stderr, "mpdet: cannot create a temporary directory: %s\n", strerror(errno));
        tool_list_free(imgs, nimg);
        return 1;
    }
    mpd_engine *eng[MPD_TUNE_NPREC] = {0}, *ref = NULL, **single = NULL;
    boxes *refbox = NULL, **sres = NULL;
    int *conv = NULL, *prec = NULL, *sl = NULL, *sp = NULL, nsingle = 0;
    mpd_tune_layer *tl = NULL;
    timing tm[MPD_TUNE_NPREC] = {{0}};
    int nsens = o.sens_images < nimg ? o.sens_images : nimg;
    /* 1. Time per layer in each precision: whole-network plans, alternated. */
    static const char *const pname[MPD_TUNE_NPREC] = {"fp32", "fp16", "int8", "bf16"};
    char cnt[MPD_TUNE_NPREC][4096];
    for (int p = 0; p < MPD_TUNE_NPREC; p++) {
        snprintf(cnt[p], sizeof(cnt[p]), "%s/all_%s.plan", dir, pname[p]);
        FILE *f = fopen(cnt[p], "w");
        if (!f) {
            fprintf(stderr, "mpdet: %s: %s\n", cnt[p], strerror(errno));
            goto done;
        }
        fprintf(f, "[plan]\ndefault = %s\nscheme = %s\n", pname[p], o.scheme);
        if (calib[0])
            fprintf(f, "calibration = %s\n", calib);
        fclose(f);
        if (open_engine(&o, cnt[p], &eng[p]))
            goto done;
    }
    int nl = mpd_engine_layer_count(eng[0]);
    conv = calloc((size_t)nl, sizeof(int));
    prec = calloc((size_t)nl, sizeof(int));
    tl = calloc((size_t)nl, sizeof(*tl));
    double *col = calloc((size_t)o.runs, sizeof(double));
    if (!conv || !prec || !tl || !col) {
        free(col);
        goto done;
    }
    for (int i = 0; i < nl; i++) {
        mpd_layer_info li;
        mpd_engine_layer_info(eng[0], i, &li);
        if (!strcmp(li.kind, "conv"))
            conv[nconv++] = i;
    }
    fprintf(stderr, "mpdet: tune: timing %d convolutions in fp32, fp16, int8 and bf16\n", nconv);
    if (measure(&o, eng, MPD_TUNE_NPREC, imgs, nimg, tm)) {
        free(col);
        goto done;
    }
    for (int k = 0; k < nconv; k++) {
        tl[k].layer = conv[k];
        for (int p = 0; p < MPD_TUNE_NPREC; p++) {
            for (int r = 0; r < o.runs; r++)
                col[r] = tm[p].layer[(size_t)r * nl + conv[k]];
            tl[k].ms[p] = tool_median(col, o.runs);
            tl[k].loss[p] = p == MPD_TUNE_FP32 ? 0 : NAN;
        }
    }
    double fwd32 = tool_median(tm[MPD_TUNE_FP32].fwd, o.runs),
           fwd8 = tool_median(tm[MPD_TUNE_INT8].fwd, o.runs);
    free(col);
    for (int p = 0; p < MPD_TUNE_NPREC; p++) {
        mpd_engine_close(eng[p]);
        eng[p] = NULL;
    }
    /* 2. The reference on every image, and each layer alone in each
     * precision that saves time, on the first nsens images. */
    if (open_reference(&o, &ref))
        goto done;
    single = calloc((size_t)nconv * MPD_TUNE_NPREC, sizeof(*single));
    sres = calloc((size_t)nconv * MPD_TUNE_NPREC, sizeof(*sres));
    sl = calloc((size_t)nconv * MPD_TUNE_NPREC, sizeof(int));
    sp = calloc((size_t)nconv * MPD_TUNE_NPREC, sizeof(int));
    float *th = calloc((size_t)nconv * MPD_TUNE_NPREC + 1, sizeof(float));
    if (!single || !sres || !sl || !sp || !th) {
        free(th);
        goto done;
    }
    float rth = (float)o.thresh;
    if (run_engines(&ref, &rth, 1, imgs, nimg, (float)o.nms, &refbox, "tune: reference")) {
        free(th);
        goto done;
    }
    for (int k = 0; k < nconv; k++)
        for (int p = 1; p < MPD_TUNE_NPREC; p++) {
            if (!(tl[k].ms[p] < tl[k].ms[MPD_TUNE_FP32]))
                continue;
            for (int j = 0; j < nconv; j++)
                prec[j] = j == k ? p : MPD_TUNE_FP32;
            snprintf(path, sizeof(path), "%s/L%d_%s.plan", dir, conv[k], pname[p]);
            if (write_plan(path, o.scheme, calib[0] ? calib : NULL, conv, prec, nconv, NULL) ||
                open_engine(&o, path, &single[nsingle])) {
                free(th);
                goto done;
            }
            sl[nsingle] = k;
            sp[nsingle] = p;
            th[nsingle++] = (float)o.low;
        }
    fprintf(stderr, "mpdet: tune: sensitivity of %d layer/precision pairs on %d images\n",
            nsingle, nsens);
    rc = run_engines(single, th, nsingle, imgs, nsens, (float)o.nms, sres, "tune: sensitivity");
    free(th);
    if (rc)
        goto done;
    for (int s = 0; s < nsingle; s++) {
        mpd_acc_summary sum;
        if (score(refbox, sres[s], nsens, (float)o.thresh, &sum, NULL))
            goto done;
        tl[sl[s]].loss[sp[s]] = 100 - sum.ap50;
        mpd_engine_close(single[s]);
        single[s] = NULL;
    }
    /* 3. Choose, verify on every image, back off. */
    tune_ctx ctx = {&o, dir, calib[0] ? calib : NULL, conv, nconv, nimg, imgs, refbox, NULL, 0};
    mpd_tune_result res;
    rc = mpd_tune_choose_min(tl, nconv, o.budget, o.min_gain, verify_plan, &ctx, prec, &res);
    /* res.verified_ap50 is the bound verify_plan returned; the AP50 on the
     * images themselves is what eval will print for them. */
    double ap_images = res.chosen ? verified_ap50(&ctx, prec) : 100;
    for (int i = 0; i < ctx.nseen; i++)
        free(ctx.seen[i].prec);
    free(ctx.seen);
    if (rc || ap_images < 0) {
        fprintf(stderr, "mpdet: tune: verification failed\n");
        goto done;
    }
    char held[160] = "";
    if (o.confidence > 0)
        snprintf(held, sizeof(held), "; the budget holds at %g confidence (bootstrap bound %.2f %%)",
                 o.confidence, res.verified_ap50);
    if (o.report)
        mpd_tune_report(stdout, tl, nconv, o.budget, o.min_gain, prec);
    /* 4. The plan file, its header recording what was measured. */
    char machine[512], kernels[512], when[64], *hdr = NULL;
    size_t hlen = 0;
    time_t now = time(NULL);
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M UTC", gmtime(&now));
    tool_machine(machine, sizeof(machine));
    mpd_engine_describe(ref, kernels, sizeof(kernels));
    FILE *h = open_memstream(&hdr, &hlen);
    if (!h)
        goto done;
    fprintf(h, "# Chosen by mpdet tune on %s: budget %g AP50 points relative to fp32,\n"
               "# min gain %g %% of the fp32 time per point, confidence %g;\n"
               "# %s scheme; sensitivity on %d images, verified on %d (%s).\n"
               "# machine: %s\n# backend: %s, threads %d\n"
               "# Measured per convolution (ms per precision; AP50 points lost with only\n"
               "# this layer changed; '-' = not measured because it saves no time):\n"
               "# layer   fp32_ms  fp16_ms  int8_ms  fp16_loss  int8_loss  chosen\n",
            when, o.budget, o.min_gain, o.confidence, o.scheme, nsens, nimg, o.images, machine,
            kernels, o.m.eo.threads);
    for (int k = 0; k < nconv; k++) {
        fprintf(h, "# %5d %9.3f %8.3f %8.3f", conv[k], tl[k].ms[0], tl[k].ms[1], tl[k].ms[2]);
        for (int p = 1; p < MPD_TUNE_NPREC; p++) {
            if (isnan(tl[k].loss[p]))
                fprintf(h, " %10s", "-");
            else
                fprintf(h, " %10.2f", tl[k].loss[p]);
        }
        fprintf(h, "  %s\n", mpd_tune_prec_name(prec[k]));
    }
    fprintf(h, "# Convolutions: fp32 %.2f ms, this plan %.2f ms (%.1f %% saved); every convolution "
               "in int8\n# saves %.1f %% of the whole forward pass (%.2f -> %.2f ms).\n"
               "# Verified: AP50 %.2f %% relative to fp32 after %d verification(s), %d "
               "back-off(s)%s.\n",
            res.fp32_ms, res.chosen_ms, 100 * (1 - res.chosen_ms / res.fp32_ms),
            100 * (1 - fwd8 / fwd32), fwd32, fwd8, ap_images, res.verifications, res.backoffs,
            held);
    fclose(h);
    /* The calibration is named relative to the plan's directory, so that
     * the two travel together (as config/ does); plans resolve relative
     * names against their own directory. */
    char rel[PATH_MAX];
    const char *calname = calib[0] ? calib : NULL;
    if (calname && relative_path(o.out, calib, rel, sizeof(rel)) == 0)
        calname = rel;
    rc = write_plan(o.out, o.scheme, calname, conv, prec, nconv, hdr);
    free(hdr);
    if (rc)
        goto done;
    printf("tune: %d of %d convolutions changed; convolution time %.2f -> %.2f ms (%.1f %% "
           "saved); AP50 %.2f %% relative to fp32 (budget %g%s); wrote %s\n",
           res.chosen, nconv, res.fp32_ms, res.chosen_ms, 100 * (1 - res.chosen_ms / res.fp32_ms),
           ap_images, o.budget, held, o.out);
    status = 0;
done:
    for (int p = 0; p < MPD_TUNE_NPREC; p++) {
        mpd_engine_close(eng[p]);
        free(tm[p].layer);
        free(tm[p].fwd);
        free(tm[p].e2e);
    }
    for (int s = 0; single && s < nsingle; s++)
        mpd_engine_close(single[s]);
    for (int s = 0; sres && s < nsingle; s++)
        boxes_free(sres[s], nsens);
    mpd_engine_close(ref);
    boxes_free(refbox, nimg);
    free(single);
    free(sres);
    free(sl);
    free(sp);
    free(conv);
    free(prec);
    free(tl);
    /* The temporary plans. */
    snprintf(path, sizeof(path), "rm -rf '%s'", dir);
    if (system(path) != 0)
        fprintf(stderr, "mpdet: could not remove %s\n", dir);
    tool_list_free(imgs, nimg);
    return status;
}
