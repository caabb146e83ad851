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

#include "client.h"
#include "common.h"
#include "engine.h"
#include "experiments.h"

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
            "  --plan FILE      precision plan (default: the cfg's precision= keys, else fp32);\n"
            "                   presets in config/: fp32_all, fp16_all, bf16_all, int8_all, "
            "fp32_int8,\n"
            "                   int8_fp32 (+ _affine variants, the paper's quantizer)\n"
            "\n"
            "  --socket PATH    send the images to a running mpdetd instead\n"
            "                   ($MPDET_SOCKET, default /run/mpdetd/mpdetd.sock)\n"
            "\n"
            "usage: mpdet health|plan|reload|metrics [--socket PATH]   (ask a running mpdetd)\n"
            "\n"
            "usage: mpdet plan show [--plan FILE] [--cfg F] [--weights F]\n"
            "  lists every layer: index, type, output shape, GFLOP, precision\n"
            "\n"
            "usage: mpdet calibrate --images DIR|LIST -o FILE [--method M] [--percentile P]\n"
            "  measures int8 activation ranges on the images (a directory, or a file listing\n"
            "  one path per line) and writes a calibration file for plans to name;\n"
            "  M: minmax (default), percentile (P, default 99.99), entropy, mse or auto\n"
            "  (auto: per convolution the candidate whose int8 output is closest to fp32)\n"
            "\n"
            "usage: mpdet eval|overflow|bench|tune ...   (the paper's experiments and the plan\n"
            "  tuner; mpdet eval --help lists their options)\n"
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

/* mpdet plan show: the layers under the chosen plan. */
static void print_plan(mpd_engine *e)
{
    mpd_plan_info pi;
    mpd_engine_plan_info(e, &pi);
    char kernels[256];
    mpd_engine_describe(e, kernels, sizeof(kernels));
    printf("plan: %s, scheme %s%s%s; convolutions: %d fp32, %d fp16, %d int8, %d bf16\n", pi.source,
           pi.scheme, pi.calibration[0] ? ", calibration " : "", pi.calibration,
           pi.layers[MPD_PREC_FP32], pi.layers[MPD_PREC_FP16], pi.layers[MPD_PREC_INT8],
           pi.layers[MPD_PREC_BF16]);
    printf("backend: %s\n", kernels);
    printf("%5s  %-8s  %-16s  %-16s  %7s  %-9s  %s\n", "layer", "type", "input", "output",
           "GFLOP", "precision", "kernel");
    double total = 0;
    for (int i = 0; i < mpd_engine_layer_count(e); i++) {
        mpd_layer_info li;
        mpd_engine_layer_info(e, i, &li);
        char in[32], out[32];
        snprintf(in, sizeof(in), "%dx%dx%d", li.in_w, li.in_h, li.in_c);
        snprintf(out, sizeof(out), "%dx%dx%d", li.out_w, li.out_h, li.out_c);
        printf("%5d  %-8s  %-16s  %-16s  %7.3f  %-9s  %s\n", li.index, li.kind, in, out, li.gflop,
               li.precision, li.kernel);
        total += li.gflop;
    }
    printf("%5s  %-8s  %-16s  %-16s  %7.3f\n", "", "total", "", "", total);
}

enum { MODE_DETECT, MODE_PLAN, MODE_CALIBRATE };

static const char *default_socket(void)
{
    const char *s = getenv("MPDET_SOCKET");
    return s && *s ? s : "/run/mpdetd/mpdetd.sock";
}

/* mpdet detect --socket: the daemon detects; the reply is printed the same
 * way as a local detection (or as the daemon's JSON with --json). */
static int detect_remote(const char *sock, const char **imgs, int nimg, const mpd_detect_params *p,
                         int json, const char *draw)
{
    int status = 0;
    for (int i = 0; i < nimg; i++) {
        unsigned char *buf;
        size_t len;
        char msg[512], path[96];
        if (mpd_file_read(imgs[i], &buf, &len, msg, sizeof(msg))) {
            fprintf(stderr, "mpdet: %s\n", msg);
            status = 1;
            continue;
        }
        snprintf(path, sizeof(path), "/v1/detect?thresh=%g&nms=%g", (double)p->thresh,
                 (double)p->nms);
        mpd_http_reply r;
        int rc = mpd_http(sock, "POST", path, "application/octet-stream", buf, len, 120, &r, msg,
                          sizeof(msg));
        free(buf);
        if (rc) {
            fprintf(stderr, "mpdet: %s\n", msg);
            return 1;
        }
        json_error_t jerr;
        json_t *j = json_loads(r.body, 0, &jerr);
        if (r.status != 200 || !j) {
            json_t *e = j ? json_object_get(j, "error") : NULL;
            fprintf(stderr, "mpdet: %s: %d %s\n", imgs[i], r.status,
                    e ? json_string_value(e) : r.body);
            status = 1;
        } else if (json) {
            json_object_set_new(j, "file", json_string(imgs[i]));
            json_dumpf(j, stdout, JSON_INDENT(2));
            putchar('\n');
        } else {
            json_t *dets = json_object_get(j, "detections");
            json_t *t = json_object_get(j, "timings_ms");
            printf("%s: %dx%d, %zu detections, %.1f ms (inference %.1f ms, %s, plan %lld)\n",
                   imgs[i], (int)json_integer_value(json_object_get(json_object_get(j, "image"), "width")),
                   (int)json_integer_value(json_object_get(json_object_get(j, "image"), "height")),
                   json_array_size(dets), json_real_value(json_object_get(t, "total")),
                   json_real_value(json_object_get(t, "inference")),
                   json_string_value(json_object_get(j, "backend")),
                   (long long)json_integer_value(json_object_get(json_object_get(j, "plan"), "generation")));
            size_t k;
            json_t *d;
            mpd_detection *list = calloc(json_array_size(dets) + 1, sizeof(*list));
            json_array_foreach(dets, k, d)
            {
                json_t *b = json_object_get(d, "box");
                mpd_detection *o = &list[k];
                o->class_id = (int)json_integer_value(json_object_get(d, "class_id"));
                o->label = json_string_value(json_object_get(d, "label"));
                o->confidence = (float)json_real_value(json_object_get(d, "confidence"));
                o->x0 = (float)json_real_value(json_object_get(b, "x0"));
                o->y0 = (float)json_real_value(json_object_get(b, "y0"));
                o->x1 = (float)json_real_value(json_object_get(b, "x1"));
                o->y1 = (float)json_real_value(json_object_get(b, "y1"));
                printf("  %s: %.0f%%  [%.0f, %.0f, %.0f, %.0f]\n", o->label, o->confidence * 100,
                       o->x0, o->y0, o->x1, o->y1);
            }
            if (draw && list) {
                char out[4096];
                mpd_image im;
                draw_path(draw, imgs[i], nimg > 1, out, sizeof(out));
                if (mpd_image_load(imgs[i], 0, &im, msg, sizeof(msg)) == 0) {
                    mpd_image_draw_detections(&im, list, (int)json_array_size(dets));
                    if (mpd_image_write_png(&im, out, msg, sizeof(msg)))
                        status = 1;
                    mpd_image_free(&im);
                }
            }
            free(list);
        }
        json_decref(j);
        free(r.body);
    }
    return status;
}

/* mpdet health | plan | reload | metrics: one request, the reply printed. */
static int cmd_remote(int argc, char **argv, const char *what)
{
    const char *sock = default_socket();
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--socket") && i + 1 < argc) {
            sock = argv[++i];
        } else {
            fprintf(stderr, "mpdet %s: unknown argument %s\n", what, argv[i]);
            return 2;
        }
    }
    const char *method = !strcmp(what, "reload") ? "POST" : "GET";
    char path[64];
    snprintf(path, sizeof(path), "%s%s", !strcmp(what, "metrics") ? "/" : "/v1/", what);
    mpd_http_reply r;
    char msg[512];
    if (mpd_http(sock, method, path, NULL, NULL, 0, 300, &r, msg, sizeof(msg))) {
        fprintf(stderr, "mpdet: %s\n", msg);
        return 1;
    }
    json_t *j = strcmp(what, "metrics") ? json_loads(r.body, 0, NULL) : NULL;
    if (j) {
        json_dumpf(j, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(j);
    } else {
        fputs(r.body, stdout);
    }
    int rc = r.status == 200 ? 0 : 1;
    if (rc)
        fprintf(stderr, "mpdet: %s: HTTP %d\n", what, r.status);
    free(r.body);
    return rc;
}

static int cmd_detect(int argc, char **argv, int mode)
{
    tool_model model;
    tool_model_init(&model, tool_stderr_log);
    mpd_engine_options o = model.eo;
    mpd_detect_params p = MPD_DETECT_DEFAULTS;
    const char *draw = NULL, *images = NULL, *method = "minmax", *outp = NULL, *sock = NULL;
    double percentile = 99.99;
    int json = 0, nimg = 0, show_plan = mode == MODE_PLAN;
    const char **imgs = calloc((size_t)argc + 1, sizeof(char *));
    if (!imgs)
        return 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (strcmp(a, "-o") == 0 && mode == MODE_CALIBRATE && has) {
            outp = argv[++i];
        } else if (strcmp(a, "--json") == 0) {
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
            else if (strcmp(a, "--plan") == 0)
                o.plan_path = v;
            else if (strcmp(a, "--socket") == 0 && mode == MODE_DETECT)
                sock = v;
            else if (strcmp(a, "--images") == 0 && mode == MODE_CALIBRATE)
                images = v;
            else if (strcmp(a, "--method") == 0 && mode == MODE_CALIBRATE)
                method = v;
            else if (strcmp(a, "--out") == 0 && mode == MODE_CALIBRATE)
                outp = v;
            else if (strcmp(a, "--percentile") == 0 && mode == MODE_CALIBRATE) {
                char *end;
                percentile = strtod(v, &end);
                if (*end || end == v || !(percentile > 0 && percentile <= 100)) {
                    fprintf(stderr, "mpdet: --percentile needs (0, 100], got '%s'\n", v);
                    bad = 1;
                }
            }
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
    if (mode == MODE_CALIBRATE ? (nimg || !images || !outp) : (nimg == 0) != show_plan) {
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
    if (sock) {
        int rc = detect_remote(sock, imgs, nimg, &p, json, draw);
        free(imgs);
        return rc;
    }
    /* Detection reads only the yolo outputs: buffers reused by liveness,
     * as the daemon runs (less memory, and outputs nothing reads after a
     * fused maxpool are never written). Calibration reads every layer. */
    o.reuse_buffers = mode == MODE_DETECT;
    char msg[1024];
    mpd_engine *e;
    if (mpd_engine_open(&o, &e, msg, sizeof(msg))) {
        fprintf(stderr, "mpdet: %s\n", msg);
        free(imgs);
        return 1;
    }
    if (show_plan) {
        print_plan(e);
        mpd_engine_close(e);
        free(imgs);
        return 0;
    }
    if (mode == MODE_CALIBRATE) {
        char **list;
        int n = tool_image_list(images, &list), rc = 1;
        if (n > 0) {
            fprintf(stderr, "mpdet: calibrating on %d images (%s)\n", n, method);
            rc = mpd_engine_calibrate(e, (const char *const *)list, n, method, percentile, outp,
                                      msg, sizeof(msg));
            if (rc)
                fprintf(stderr, "mpdet: %s\n", msg);
            else
                fprintf(stderr, "mpdet: wrote %s\n", outp);
            tool_list_free(list, n);
        }
        mpd_engine_close(e);
        free(imgs);
        return rc ? 1 : 0;
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
        return cmd_detect(argc - 2, argv + 2, MODE_DETECT);
    if (strcmp(argv[1], "plan") == 0 && argc >= 3 && strcmp(argv[2], "show") == 0)
        return cmd_detect(argc - 3, argv + 3, MODE_PLAN);
    if (strcmp(argv[1], "calibrate") == 0)
        return cmd_detect(argc - 2, argv + 2, MODE_CALIBRATE);
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } experiments[] = {{"eval", mpd_cmd_eval},
                       {"overflow", mpd_cmd_overflow},
                       {"bench", mpd_cmd_bench},
                       {"tune", mpd_cmd_tune}};
    for (size_t i = 0; i < sizeof(experiments) / sizeof(experiments[0]); i++)
        if (strcmp(argv[1], experiments[i].name) == 0)
            return experiments[i].fn(argc - 2, argv + 2);
    static const char *const remote[] = {"health", "plan", "reload", "metrics"};
    for (size_t i = 0; i < sizeof(remote) / sizeof(remote[0]); i++)
        if (strcmp(argv[1], remote[i]) == 0 && !(i == 1 && argc >= 3 && !strcmp(argv[2], "show")))
            return cmd_remote(argc - 2, argv + 2, remote[i]);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "mpdet: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
