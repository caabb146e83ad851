/* mpdet - command-line client of the engine.
 *
 *   mpdet detect IMAGE... [--cfg F] [--weights F] [--names F] [--thresh T]
 *                [--nms T] [--json] [--draw OUT] [--threads N] [--backend B]
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine.h"

#ifndef MPD_MODEL_DIR
#define MPD_MODEL_DIR "models"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mpdet detect IMAGE... [options]\n"
            "  --cfg FILE       darknet cfg      (default MODEL_DIR/yolov3-tiny.cfg)\n"
            "  --weights FILE   darknet weights  (default MODEL_DIR/yolov3-tiny.weights)\n"
            "  --names FILE     class labels     (default MODEL_DIR/coco.names)\n"
            "  --thresh T       minimum confidence, 0..1 (default 0.25)\n"
            "  --nms T          NMS IoU threshold, 0..1 (default 0.45)\n"
            "  --json           print JSON instead of text\n"
            "  --draw OUT       write OUT (PNG) with boxes; with several images OUT is a\n"
            "                   directory that receives NAME.png per image\n"
            "  --threads N      compute threads (default: all cores)\n"
            "  --backend B      auto, cpu or cuda (default auto)\n"
            "MODEL_DIR is $MPDET_MODEL_DIR, else %s.\n",
            MPD_MODEL_DIR);
}

static int parse_unit(const char *opt, const char *s, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || !(v >= 0 && v <= 1)) {
        fprintf(stderr, "mpdet: %s needs a number in [0, 1], got '%s'\n", opt, s);
        return -1;
    }
    *out = (float)v;
    return 0;
}

static void stderr_log(void *ud, int prio, const char *msg)
{
    (void)ud;
    if (prio <= MPD_LOG_WARNING)
        fprintf(stderr, "mpdet: %s\n", msg);
}

static json_t *result_json(const char *path, const mpd_result *r, const char *backend)
{
    json_t *dets = json_array();
    for (int i = 0; i < r->count; i++) {
        const mpd_detection *d = &r->det[i];
        json_array_append_new(dets,
                              json_pack("{s:i, s:s, s:f, s:{s:f, s:f, s:f, s:f}}", "class_id",
                                        d->class_id, "label", d->label, "confidence",
                                        (double)d->confidence, "box", "x0", (double)d->x0,
                                        "y0", (double)d->y0, "x1", (double)d->x1, "y1",
                                        (double)d->y1));
    }
    return json_pack("{s:s, s:i, s:i, s:s, s:{s:f, s:f, s:f, s:f}, s:o}", "image", path,
                     "width", r->image_w, "height", r->image_h, "backend", backend, "timings_ms",
                     "decode", r->t.decode_ms, "preprocess", r->t.preprocess_ms, "inference",
                     r->t.inference_ms, "postprocess", r->t.postprocess_ms, "detections",
                     dets);
}

static void draw_path(const char *draw, const char *img, int many, char *out, size_t len)
{
    if (!many) {
        snprintf(out, len, "%s", draw);
        return;
    }
    const char *base = strrchr(img, '/');
    base = base ? base + 1 : img;
    const char *dot = strrchr(base, '.');
    int n = dot ? (int)(dot - base) : (int)strlen(base);
    snprintf(out, len, "%s/%.*s.png", draw, n, base);
}

static int cmd_detect(int argc, char **argv)
{
    const char *dir = getenv("MPDET_MODEL_DIR");
    if (!dir || !*dir)
        dir = MPD_MODEL_DIR;
    char cfg[4096], weights[4096], names[4096];
    snprintf(cfg, sizeof(cfg), "%s/yolov3-tiny.cfg", dir);
    snprintf(weights, sizeof(weights), "%s/yolov3-tiny.weights", dir);
    snprintf(names, sizeof(names), "%s/coco.names", dir);
    mpd_engine_options o = {.cfg_path = cfg, .weights_path = weights, .names_path = names,
                            .backend = "auto", .log = stderr_log};
    mpd_detect_params p = MPD_DETECT_DEFAULTS;
    const char *draw = NULL;
    int json = 0, nimg = 0;
    const char **imgs = calloc((size_t)argc + 1, sizeof(char *));
    if (!imgs)
        return 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            free(imgs);
            return 0;
        } else if (a[0] == '-' && a[1] == '-') {
            if (!has) {
                fprintf(stderr, "mpdet: %s needs a value\n", a);
                free(imgs);
                return 2;
            }
            const char *v = argv[++i];
            int bad = 0;
            if (strcmp(a, "--cfg") == 0)
                o.cfg_path = v;
            else if (strcmp(a, "--weights") == 0)
                o.weights_path = v;
            else if (strcmp(a, "--names") == 0)
                o.names_path = v;
            else if (strcmp(a, "--thresh") == 0)
                bad = parse_unit(a, v, &p.thresh);
            else if (strcmp(a, "--nms") == 0)
                bad = parse_unit(a, v, &p.nms);
            else if (strcmp(a, "--draw") == 0)
                draw = v;
            else if (strcmp(a, "--backend") == 0)
                o.backend = v;
            else if (strcmp(a, "--threads") == 0) {
                char *end;
                long t = strtol(v, &end, 10);
                if (*end || end == v || t < 0 || t > 1024) {
                    fprintf(stderr, "mpdet: --threads needs 0..1024, got '%s'\n", v);
                    bad = 1;
                }
                o.threads = (int)t;
            } else {
                fprintf(stderr, "mpdet: unknown option %s\n", a);
                usage(stderr);
                bad = 1;
            }
            if (bad) {
                free(imgs);
                return 2;
            }
        } else {
            imgs[nimg++] = a;
        }
    }
    if (nimg == 0) {
        usage(stderr);
        free(imgs);
        return 2;
    }
    if (draw && nimg > 1) {
        struct stat st;
        if (stat(draw, &st) != 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "mpdet: with several images --draw needs an existing directory\n");
            free(imgs);
            return 2;
        }
    }
    char msg[1024];
    mpd_engine *e;
    if (mpd_engine_open(&o, &e, msg, sizeof(msg))) {
        fprintf(stderr, "mpdet: %s\n", msg);
        free(imgs);
        return 1;
    }
    int status = 0;
    json_t *all = json ? json_array() : NULL;
    for (int i = 0; i < nimg; i++) {
        mpd_image im;
        mpd_result r;
        double t0 = mpd_now();
        if (mpd_image_load(imgs[i], 0, &im, msg, sizeof(msg))) {
            fprintf(stderr, "mpdet: %s\n", msg);
            status = 1;
            continue;
        }
        double t1 = mpd_now();
        if (mpd_engine_detect(e, &im, 1, &p, &r, msg, sizeof(msg))) {
            fprintf(stderr, "mpdet: %s: %s\n", imgs[i], msg);
            mpd_image_free(&im);
            status = 1;
            continue;
        }
        r.t.decode_ms = (t1 - t0) * 1e3;
        if (json) {
            json_array_append_new(all, result_json(imgs[i], &r, mpd_engine_backend(e)));
        } else {
            double total =
                r.t.decode_ms + r.t.preprocess_ms + r.t.inference_ms + r.t.postprocess_ms;
            printf("%s: %dx%d, %d detections, %.1f ms (inference %.1f ms, %s)\n", imgs[i],
                   r.image_w, r.image_h, r.count, total, r.t.inference_ms,
                   mpd_engine_backend(e));
            for (int k = 0; k < r.count; k++) {
                const mpd_detection *d = &r.det[k];
                printf("  %s: %.0f%%  [%.0f, %.0f, %.0f, %.0f]\n", d->label,
                       d->confidence * 100, d->x0, d->y0, d->x1, d->y1);
            }
        }
        if (draw) {
            char out[4096];
            draw_path(draw, imgs[i], nimg > 1, out, sizeof(out));
            mpd_image_draw_detections(&im, r.det, r.count);
            if (mpd_image_write_png(&im, out, msg, sizeof(msg))) {
                fprintf(stderr, "mpdet: %s\n", msg);
                status = 1;
            }
        }
        mpd_result_free(&r);
        mpd_image_free(&im);
    }
    if (json) {
        json_dumpf(all, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(all);
    }
    mpd_engine_close(e);
    free(imgs);
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "detect") == 0)
        return cmd_detect(argc - 2, argv + 2);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "mpdet: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
