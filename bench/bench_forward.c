/* bench_forward - times the mpdet engine (fp32, CPU backend) for bench/run.
 *
 *   bench_forward [--threads N] [--iters N] [--e2e-iters N] [--images A,B,...]
 *                 [--forward-image F] [--model-dir DIR] [--plan FILE]
 *                 [--dump DIR] [--info] [IMAGE...]
 *
 * (a) forward: median over --iters runs of mpd_engine_forward on the
 *     letterboxed tensor of --forward-image (default: dog.jpg from the list,
 *     else the first image), after 3 warm-up runs; per-layer mean ms over the
 *     timed runs only.
 * (b) end to end: every image is read from disk once into memory, then
 *     mpd_engine_detect_memory (decode -> letterbox -> forward -> boxes + NMS)
 *     is timed --e2e-iters times per image; median over images x iters.
 *
 * (c) --dump DIR, after the timed runs: the input tensor those runs were fed
 *     (DIR/input.f32) and the output of every layer that feeds a yolo
 *     layer (DIR/layerN.f32), raw native-endian float32 in NCHW order, with
 *     DIR/dump.txt naming the files and their shapes. bench/peers.py feeds
 *     the same input to the ONNX export and compares its outputs with these.
 *
 * Output is `key=value` lines (and `layer ...` / `image ...` lines) that
 * bench/run parses. --info prints only the OpenBLAS build and exits. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "benchutil.h"
#include "cpu/blas.h"
#include "engine.h"

#define WARMUP 3

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_forward [--threads N] [--iters N] [--e2e-iters N]\n"
               "                     [--images A,B,...] [--forward-image F]\n"
               "                     [--model-dir DIR] [--plan FILE] [--dump DIR] [--info]\n"
               "                     [IMAGE...]\n");
}

static void print_info(void)
{
    mpd__blas_load(NULL, 0);
    printf("openblas_config=%s\n", mpd__blas_config());
    printf("openblas_corename=%s\n", mpd__blas_core());
    printf("openblas_core_chosen_by=%s\n", mpd__blas_core_source());
}

/* Writes n floats to dir/name. Returns 0, or -1 after printing why. */
static int write_f32(const char *dir, const char *name, const float *v, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "bench_forward: %s: %s\n", path, strerror(errno));
        return -1;
    }
    int bad = fwrite(v, sizeof(float), n, f) != n;
    bad |= fclose(f) != 0;
    if (bad)
        fprintf(stderr, "bench_forward: %s: write failed\n", path);
    return bad ? -1 : 0;
}

/* (c) above: the input of the last pass and the outputs of the layers that
 * feed yolo layers (a yolo layer reads the layer before it), which every
 * layer's own buffer still holds (the engine was opened without
 * reuse_buffers). Returns 0, or -1 after printing why. */
static int dump(mpd_engine *e, const char *dir, const char *image, const char *plan,
                const float *input)
{
    char msg[512] = "", path[4096];
    int c, h, w;
    mpd_engine_input_shape(e, &c, &h, &w);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "bench_forward: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof path, "%s/dump.txt", dir);
    FILE *m = fopen(path, "w");
    if (!m) {
        fprintf(stderr, "bench_forward: %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(m, "image=%s\nplan=%s\n", image, plan ? plan : "cfg");
    fprintf(m, "input file=input.f32 shape=1x%dx%dx%d\n", c, h, w);
    int rc = write_f32(dir, "input.f32", input, (size_t)c * h * w);
    for (int i = 1; i < mpd_engine_layer_count(e) && rc == 0; i++) {
        mpd_layer_info li, src;
        mpd_engine_layer_info(e, i, &li);
        if (strcmp(li.kind, "yolo") != 0)
            continue;
        mpd_engine_layer_info(e, i - 1, &src);
        size_t n = mpd_engine_layer_output_size(e, i - 1);
        float *out = malloc(n * sizeof(float));
        char name[64];
        snprintf(name, sizeof name, "layer%d.f32", i - 1);
        if (!out) {
            fprintf(stderr, "bench_forward: out of memory\n");
            rc = -1;
        } else if (mpd_engine_layer_output(e, i - 1, 1, out, msg, sizeof msg)) {
            fprintf(stderr, "bench_forward: layer %d: %s\n", i - 1, msg);
            rc = -1;
        } else {
            rc = write_f32(dir, name, out, n);
            fprintf(m, "output name=layer%d layer=%d feeds=%d shape=1x%dx%dx%d file=%s\n", i - 1,
                    i - 1, i, src.out_c, src.out_h, src.out_w, name);
        }
        free(out);
    }
    if (fclose(m) != 0 && rc == 0) {
        fprintf(stderr, "bench_forward: %s: write failed\n", path);
        rc = -1;
    }
    return rc;
}

int main(int argc, char **argv)
{
    int threads = 0, iters = 20, e2e_iters = 3, info_only = 0;
    const char *model_dir = bu_model_dir();
    const char *fwd_image = NULL, *plan = NULL, *dump_dir = NULL;
    char *images_arg = NULL;
    const char *images[256];
    int nimages = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--threads") && has) {
            if (bu_parse_int("bench_forward", a, argv[++i], 0, &threads))
                return 2;
        } else if (!strcmp(a, "--iters") && has) {
            if (bu_parse_int("bench_forward", a, argv[++i], 1, &iters))
                return 2;
        } else if (!strcmp(a, "--e2e-iters") && has) {
            if (bu_parse_int("bench_forward", a, argv[++i], 0, &e2e_iters))
                return 2;
        } else if (!strcmp(a, "--images") && has) {
            images_arg = argv[++i];
        } else if (!strcmp(a, "--forward-image") && has) {
            fwd_image = argv[++i];
        } else if (!strcmp(a, "--model-dir") && has) {
            model_dir = argv[++i];
        } else if (!strcmp(a, "--plan") && has) {
            plan = argv[++i];
        } else if (!strcmp(a, "--dump") && has) {
            dump_dir = argv[++i];
        } else if (!strcmp(a, "--info")) {
            info_only = 1;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (a[0] == '-') {
            usage(stderr);
            return 2;
        } else if (nimages < 256) {
            images[nimages++] = a;
        }
    }
    if (info_only) {
        print_info();
        return 0;
    }
    bu_image_list(images_arg, images, &nimages, 256);
    if (!fwd_image)
        fwd_image = bu_forward_image(images, nimages);

    char msg[512] = "";
    bu_model m;
    bu_model_paths(model_dir, &m);
    const char *cfg = m.cfg, *weights = m.weights, *names = m.names;

    mpd_engine_options opt = {
        .cfg_path = cfg,
        .weights_path = weights,
        .names_path = names,
        .backend = "cpu",
        .threads = threads,
        .max_batch = 1,
        .plan_path = plan,
        /* Buffers reused by liveness, as the daemon runs (so outputs no
         * one reads after the pass need not be written); --dump reads
         * layers the reuse gives away. */
        .reuse_buffers = dump_dir == NULL,
    };
    mpd_engine *e = NULL;
    double t0 = mpd_now();
    int rc = mpd_engine_open(&opt, &e, msg, sizeof msg);
    if (rc) {
        fprintf(stderr, "bench_forward: open: %s (%s)\n", msg, mpd_strerror(rc));
        return 1;
    }
    double load_ms = (mpd_now() - t0) * 1e3;
    print_info();
    printf("engine=mpdet\nbackend=%s\nplan=%s\n", mpd_engine_backend(e), plan ? plan : "cfg");
    char kernels[256];
    mpd_engine_describe(e, kernels, sizeof kernels);
    printf("kernels=%s\n", kernels);
    printf("threads_requested=%d\n", threads);
    printf("load_ms=%.1f\n", load_ms);

    /* (a) forward pass on the letterboxed tensor. */
    int c, h, w;
    mpd_engine_input_shape(e, &c, &h, &w);
    float *input = malloc((size_t)c * h * w * sizeof(float));
    mpd_image im = {0};
    if (!input) {
        fprintf(stderr, "bench_forward: out of memory\n");
        return 1;
    }
    if ((rc = mpd_image_load(fwd_image, 0, &im, msg, sizeof msg)) ||
        (rc = mpd_engine_preprocess(e, &im, input))) {
        fprintf(stderr, "bench_forward: %s: %s (%s)\n", fwd_image, msg, mpd_strerror(rc));
        return 1;
    }
    mpd_image_free(&im);
    for (int i = 0; i < WARMUP; i++)
        if ((rc = mpd_engine_forward(e, input, 1, msg, sizeof msg))) {
            fprintf(stderr, "bench_forward: forward: %s\n", msg);
            return 1;
        }

    int nl = mpd_engine_layer_count(e);
    double *base_total = calloc((size_t)nl, sizeof(double));
    long long *base_runs = calloc((size_t)nl, sizeof(long long));
    double *fwd = malloc((size_t)iters * sizeof(double));
    if (!base_total || !base_runs || !fwd) {
        fprintf(stderr, "bench_forward: out of memory\n");
        return 1;
    }
    for (int i = 0; i < nl; i++) {
        mpd_layer_info li;
        mpd_engine_layer_info(e, i, &li);
        base_total[i] = li.total_ms;
        base_runs[i] = li.runs;
    }
    for (int i = 0; i < iters; i++) {
        t0 = mpd_now();
        rc = mpd_engine_forward(e, input, 1, msg, sizeof msg);
        fwd[i] = (mpd_now() - t0) * 1e3;
        if (rc) {
            fprintf(stderr, "bench_forward: forward: %s\n", msg);
            return 1;
        }
    }
    double sum_layers = 0, fwd_min = fwd[0], fwd_mean = 0;
    for (int i = 0; i < nl; i++) {
        mpd_layer_info li;
        mpd_engine_layer_info(e, i, &li);
        long long runs = li.runs - base_runs[i];
        double mean = runs > 0 ? (li.total_ms - base_total[i]) / (double)runs : 0;
        sum_layers += mean;
        printf("layer index=%d kind=%s in=%dx%dx%d out=%dx%dx%d size=%d stride=%d "
               "gflop=%.4f precision=%s mean_ms=%.3f\n",
               li.index, li.kind, li.in_c, li.in_h, li.in_w, li.out_c, li.out_h, li.out_w, li.size,
               li.stride, li.gflop, li.precision, mean);
    }
    for (int i = 0; i < iters; i++) {
        fwd_mean += fwd[i] / iters;
        if (fwd[i] < fwd_min)
            fwd_min = fwd[i];
    }
    printf("forward_iters=%d\nforward_warmup=%d\n", iters, WARMUP);
    printf("forward_ms_min=%.2f\nforward_ms_mean=%.2f\n", fwd_min, fwd_mean);
    printf("forward_ms_median=%.2f\n", bu_median(fwd, iters));
    printf("layers_sum_ms=%.2f\n", sum_layers);
    if (dump_dir) {
        if (dump(e, dump_dir, fwd_image, plan, input))
            return 1;
        printf("dump=%s\n", dump_dir);
    }
    free(fwd);
    free(input);
    free(base_total);
    free(base_runs);

    /* (b) end to end from in-memory bytes. */
    if (e2e_iters > 0) {
        unsigned char **buf = calloc((size_t)nimages, sizeof(*buf));
        size_t *len = calloc((size_t)nimages, sizeof(*len));
        double *all = malloc((size_t)nimages * e2e_iters * sizeof(double));
        double *one = malloc((size_t)e2e_iters * sizeof(double));
        if (!buf || !len || !all || !one) {
            fprintf(stderr, "bench_forward: out of memory\n");
            return 1;
        }
        for (int i = 0; i < nimages; i++)
            if (mpd_file_read(images[i], &buf[i], &len[i], msg, sizeof msg)) {
                fprintf(stderr, "bench_forward: %s\n", msg);
                return 1;
            }
        mpd_detect_params p = MPD_DETECT_DEFAULTS;
        mpd_timings tsum = {0, 0, 0, 0};
        int nall = 0;
        /* One untimed run warms the decoder and the output paths. */
        mpd_result res = {0};
        if ((rc = mpd_engine_detect_memory(e, buf[0], len[0], 0, &p, &res, msg, sizeof msg))) {
            fprintf(stderr, "bench_forward: %s: %s\n", images[0], msg);
            return 1;
        }
        mpd_result_free(&res);
        for (int i = 0; i < nimages; i++) {
            int dets = 0, iw = 0, ih = 0;
            for (int k = 0; k < e2e_iters; k++) {
                memset(&res, 0, sizeof res);
                t0 = mpd_now();
                rc = mpd_engine_detect_memory(e, buf[i], len[i], 0, &p, &res, msg, sizeof msg);
                double ms = (mpd_now() - t0) * 1e3;
                if (rc) {
                    fprintf(stderr, "bench_forward: %s: %s\n", images[i], msg);
                    return 1;
                }
                dets = res.count;
                iw = res.image_w;
                ih = res.image_h;
                tsum.decode_ms += res.t.decode_ms;
                tsum.preprocess_ms += res.t.preprocess_ms;
                tsum.inference_ms += res.t.inference_ms;
                tsum.postprocess_ms += res.t.postprocess_ms;
                mpd_result_free(&res);
                one[k] = ms;
                all[nall++] = ms;
            }
            printf("image name=%s size=%dx%d dets=%d e2e_ms_median=%.2f\n", bu_base_name(images[i]),
                   iw, ih, dets, bu_median(one, e2e_iters));
        }
        printf("e2e_images=%d\ne2e_iters=%d\n", nimages, e2e_iters);
        printf("e2e_decode_ms_mean=%.2f\ne2e_preprocess_ms_mean=%.2f\n", tsum.decode_ms / nall,
               tsum.preprocess_ms / nall);
        printf("e2e_inference_ms_mean=%.2f\ne2e_postprocess_ms_mean=%.2f\n",
               tsum.inference_ms / nall, tsum.postprocess_ms / nall);
        printf("e2e_ms_median=%.2f\n", bu_median(all, nall));
        for (int i = 0; i < nimages; i++)
            free(buf[i]);
        free(buf);
        free(len);
        free(all);
        free(one);
    }

    mpd_engine_close(e);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak_rss_mb=%.1f\n", ru.ru_maxrss / 1024.0);
    return 0;
}
