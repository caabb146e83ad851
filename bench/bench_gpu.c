/* bench_gpu - times the mpdet engine on the CUDA backend for bench/run-gpu:
 * every precision preset, batch-1 latency and throughput per batch size.
 *
 *   bench_gpu [--backend B] [--plan FILE]... [--iters N] [--tput-iters N]
 *             [--warmup N] [--batches A,B,...] [--image F] [--model-dir DIR]
 *             [--threads N]
 *
 * The engine is opened once with max_batch = the largest batch asked; then
 * for each --plan (default: config/fp32_all.plan, fp16_all.plan,
 * int8_all.plan, fp32_int8.plan, bf16_all.plan), loaded with
 * mpd_engine_load_plan:
 * (a) forward: median over --iters (200) runs of mpd_engine_forward at
 *     batch 1 on the letterboxed tensor of --image (dog.jpg) after --warmup
 *     runs, and per-layer mean ms over those timed runs only (deltas of
 *     mpd_engine_layer_info's total_ms / runs);
 * (b) throughput: for each batch of --batches (1,8,32,64), the image
 *     replicated batch times, median over --tput-iters (50) of the time of
 *     one mpd_engine_forward call; images/s = batch / median.
 * Times are wall clock around mpd_engine_forward (host-to-device copy of the
 * input included, pre- and post-processing not).
 *
 * Output: `key=value` lines, and `forward ...`, `layer ...`, `tput ...`
 * records of key=value fields, all naming their preset, for bench/run-gpu.
 * When the backend cannot be opened for want of a device (or of CUDA in
 * this build) it prints `skipped: <reason>` and exits 0. --backend cpu runs
 * the same on the CPU, to check this program where there is no GPU. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "benchutil.h"
#include "engine.h"

#define MAX_PLANS 32
#define MAX_BATCHES 32

static const char *const default_plans[] = {
    "config/fp32_all.plan",  "config/fp16_all.plan", "config/int8_all.plan",
    "config/fp32_int8.plan", "config/bf16_all.plan",
};

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_gpu [--backend B] [--plan FILE]... [--iters N] [--tput-iters N]\n"
               "                 [--warmup N] [--batches A,B,...] [--image F]\n"
               "                 [--model-dir DIR] [--threads N]\n");
}

/* "fp16_all" from "config/fp16_all.plan". */
static void preset_name(const char *path, char *out, size_t len)
{
    snprintf(out, len, "%s", bu_base_name(path));
    char *dot = strrchr(out, '.');
    if (dot && !strcmp(dot, ".plan"))
        *dot = 0;
    for (char *p = out; *p; p++)
        if (*p == ' ' || *p == '=')
            *p = '_';
}

static int parse_batches(const char *s, int *out, int max)
{
    char *copy = strdup(s), *save = NULL;
    int n = 0;
    if (!copy)
        return -1;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int v;
        if (n == max) {
            fprintf(stderr, "bench_gpu: --batches takes at most %d sizes\n", max);
            free(copy);
            return -1;
        }
        if (bu_parse_int("bench_gpu", "--batches", tok, 1, &v)) {
            free(copy);
            return -1;
        }
        out[n++] = v;
    }
    free(copy);
    return n;
}

/* Runs mpd_engine_forward n times on batch images, writing each call's ms
 * into ms (when non-NULL). Returns 0 or prints the error and returns 1. */
static int run_forward(mpd_engine *e, const float *input, int batch, int n, double *ms)
{
    char msg[512] = "";
    for (int i = 0; i < n; i++) {
        double t0 = mpd_now();
        int rc = mpd_engine_forward(e, input, batch, msg, sizeof msg);
        double t = (mpd_now() - t0) * 1e3;
        if (rc) {
            fprintf(stderr, "bench_gpu: forward (batch %d): %s (%s)\n", batch, msg,
                    mpd_strerror(rc));
            return 1;
        }
        if (ms)
            ms[i] = t;
    }
    return 0;
}

static void stats(const double *v, int n, double *min, double *mean)
{
    *min = n > 0 ? v[0] : 0;
    *mean = 0;
    for (int i = 0; i < n; i++) {
        *mean += v[i] / n;
        if (v[i] < *min)
            *min = v[i];
    }
}

/* One preset: load, warm up, (a) batch-1 forward + layers, (b) throughput. */
static int bench_plan(mpd_engine *e, const char *plan, const float *input, const int *batches,
                      int nbatches, int iters, int tput_iters, int warmup)
{
    char name[256], msg[512] = "", desc[512] = "";
    preset_name(plan, name, sizeof name);
    double t0 = mpd_now();
    int rc = mpd_engine_load_plan(e, plan, msg, sizeof msg);
    if (rc) {
        fprintf(stderr, "bench_gpu: %s: %s (%s)\n", plan, msg, mpd_strerror(rc));
        return 1;
    }
    double load_ms = (mpd_now() - t0) * 1e3;
    mpd_plan_info pi;
    memset(&pi, 0, sizeof pi);
    mpd_engine_plan_info(e, &pi);
    printf("preset name=%s plan=%s scheme=%s convs_fp32=%d convs_fp16=%d convs_int8=%d "
           "convs_bf16=%d load_plan_ms=%.1f\n",
           name, plan, pi.scheme ? pi.scheme : "-", pi.layers[MPD_PREC_FP32],
           pi.layers[MPD_PREC_FP16], pi.layers[MPD_PREC_INT8], pi.layers[MPD_PREC_BF16], load_ms);
    mpd_engine_describe(e, desc, sizeof desc);
    printf("describe.%s=%s\n", name, desc);
    fflush(stdout);

    /* (a) batch 1. */
    if (run_forward(e, input, 1, warmup, NULL))
        return 1;
    int nl = mpd_engine_layer_count(e);
    double *base_total = calloc((size_t)nl, sizeof(double));
    long long *base_runs = calloc((size_t)nl, sizeof(long long));
    int nt = iters > tput_iters ? iters : tput_iters;
    double *ms = malloc((size_t)nt * sizeof(double));
    if (!base_total || !base_runs || !ms) {
        fprintf(stderr, "bench_gpu: out of memory\n");
        free(base_total);
        free(base_runs);
        free(ms);
        return 1;
    }
    for (int i = 0; i < nl; i++) {
        mpd_layer_info li;
        mpd_engine_layer_info(e, i, &li);
        base_total[i] = li.total_ms;
        base_runs[i] = li.runs;
    }
    if (run_forward(e, input, 1, iters, ms)) {
        free(base_total);
        free(base_runs);
        free(ms);
        return 1;
    }
    double sum_layers = 0;
    for (int i = 0; i < nl; i++) {
        mpd_layer_info li;
        mpd_engine_layer_info(e, i, &li);
        long long runs = li.runs - base_runs[i];
        double mean = runs > 0 ? (li.total_ms - base_total[i]) / (double)runs : 0;
        sum_layers += mean;
        printf("layer preset=%s index=%d kind=%s in=%dx%dx%d out=%dx%dx%d size=%d stride=%d "
               "gflop=%.4f precision=%s mean_ms=%.4f runs=%lld\n",
               name, li.index, li.kind, li.in_c, li.in_h, li.in_w, li.out_c, li.out_h, li.out_w,
               li.size, li.stride, li.gflop, li.precision, mean, runs);
    }
    double mn, mean;
    stats(ms, iters, &mn, &mean);
    printf("forward preset=%s batch=1 iters=%d warmup=%d ms_median=%.4f ms_min=%.4f "
           "ms_mean=%.4f layers_sum_ms=%.4f\n",
           name, iters, warmup, bu_median(ms, iters), mn, mean, sum_layers);
    fflush(stdout);

    /* (b) throughput per batch size; the input holds max_batch copies. */
    for (int k = 0; k < nbatches; k++) {
        int b = batches[k];
        int w = warmup < 3 ? warmup : 3;
        if (run_forward(e, input, b, w, NULL) || run_forward(e, input, b, tput_iters, ms)) {
            free(base_total);
            free(base_runs);
            free(ms);
            return 1;
        }
        stats(ms, tput_iters, &mn, &mean);
        double med = bu_median(ms, tput_iters);
        printf("tput preset=%s batch=%d iters=%d ms_median=%.4f ms_min=%.4f ms_mean=%.4f "
               "ips=%.1f\n",
               name, b, tput_iters, med, mn, mean, med > 0 ? b / med * 1e3 : 0);
        /* The pass alone: input already on the device (forward NULL), no
         * per-layer events - what a pipeline that letterboxes on the GPU
         * pays per batch. */
        mpd_engine_set_layer_timing(e, 0);
        int rc = run_forward(e, NULL, b, tput_iters, ms);
        mpd_engine_set_layer_timing(e, 1);
        if (rc) {
            free(base_total);
            free(base_runs);
            free(ms);
            return 1;
        }
        stats(ms, tput_iters, &mn, &mean);
        med = bu_median(ms, tput_iters);
        printf("tputdev preset=%s batch=%d iters=%d ms_median=%.4f ms_min=%.4f ms_mean=%.4f "
               "ips=%.1f\n",
               name, b, tput_iters, med, mn, mean, med > 0 ? b / med * 1e3 : 0);
        fflush(stdout);
    }
    free(base_total);
    free(base_runs);
    free(ms);
    return 0;
}

int main(int argc, char **argv)
{
    int iters = 200, tput_iters = 50, warmup = 20, threads = 0;
    const char *backend = "cuda";
    const char *model_dir = bu_model_dir();
    const char *image = "/usr/share/darknet/data/dog.jpg";
    const char *plans[MAX_PLANS];
    int nplans = 0;
    int batches[MAX_BATCHES] = {1, 8, 32, 64}, nbatches = 4;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--backend") && has) {
            backend = argv[++i];
        } else if (!strcmp(a, "--plan") && has) {
            if (nplans == MAX_PLANS) {
                fprintf(stderr, "bench_gpu: at most %d --plan\n", MAX_PLANS);
                return 2;
            }
            plans[nplans++] = argv[++i];
        } else if (!strcmp(a, "--iters") && has) {
            if (bu_parse_int("bench_gpu", a, argv[++i], 1, &iters))
                return 2;
        } else if (!strcmp(a, "--tput-iters") && has) {
            if (bu_parse_int("bench_gpu", a, argv[++i], 1, &tput_iters))
                return 2;
        } else if (!strcmp(a, "--warmup") && has) {
            if (bu_parse_int("bench_gpu", a, argv[++i], 0, &warmup))
                return 2;
        } else if (!strcmp(a, "--threads") && has) {
            if (bu_parse_int("bench_gpu", a, argv[++i], 0, &threads))
                return 2;
        } else if (!strcmp(a, "--batches") && has) {
            if ((nbatches = parse_batches(argv[++i], batches, MAX_BATCHES)) < 1) {
                if (nbatches == 0)
                    fprintf(stderr, "bench_gpu: --batches needs a comma list of sizes\n");
                return 2;
            }
        } else if (!strcmp(a, "--image") && has) {
            image = argv[++i];
        } else if (!strcmp(a, "--model-dir") && has) {
            model_dir = argv[++i];
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (nplans == 0)
        for (size_t i = 0; i < sizeof default_plans / sizeof *default_plans; i++)
            plans[nplans++] = default_plans[i];
    int max_batch = 1;
    for (int i = 0; i < nbatches; i++)
        if (batches[i] > max_batch)
            max_batch = batches[i];

    char msg[512] = "";
    bu_model m;
    bu_model_paths(model_dir, &m);
    const char *cfg = m.cfg, *weights = m.weights, *names = m.names;

    /* Decode first: a missing image is an error, not a skip. */
    mpd_image im = {0};
    int rc = mpd_image_load(image, 0, &im, msg, sizeof msg);
    if (rc) {
        fprintf(stderr, "bench_gpu: %s (%s)\n", msg, mpd_strerror(rc));
        return 1;
    }

    mpd_engine_options opt = {
        .cfg_path = cfg,
        .weights_path = weights,
        .names_path = names,
        .backend = backend,
        .threads = threads,
        .max_batch = max_batch,
        .plan_path = NULL,
    };
    mpd_engine *e = NULL;
    double t0 = mpd_now();
    rc = mpd_engine_open(&opt, &e, msg, sizeof msg);
    if (rc) {
        mpd_image_free(&im);
        /* No device, no driver or no CUDA in this build: nothing to time. */
        if (rc == MPD_EDEVICE || rc == MPD_EUNSUP) {
            printf("skipped: backend %s: %s\n", backend, msg);
            return 0;
        }
        fprintf(stderr, "bench_gpu: open (backend %s, max batch %d): %s (%s)\n", backend, max_batch,
                msg, mpd_strerror(rc));
        return 1;
    }
    double load_ms = (mpd_now() - t0) * 1e3;

    printf("engine=mpdet\nbackend=%s\n", mpd_engine_backend(e));
    char desc[512] = "";
    mpd_engine_describe(e, desc, sizeof desc);
    printf("describe=%s\n", desc);
    printf("max_batch=%d\nload_ms=%.1f\n", mpd_engine_max_batch(e), load_ms);
    printf("image=%s\nimage_size=%dx%d\n", image, im.w, im.h);
    printf("iters=%d\ntput_iters=%d\nwarmup=%d\n", iters, tput_iters, warmup);
    printf("batches=");
    for (int i = 0; i < nbatches; i++)
        printf("%s%d", i ? "," : "", batches[i]);
    printf("\npresets=");
    for (int i = 0; i < nplans; i++) {
        char name[256];
        preset_name(plans[i], name, sizeof name);
        printf("%s%s", i ? "," : "", name);
    }
    printf("\n");
    fflush(stdout);

    int c, h, w;
    mpd_engine_input_shape(e, &c, &h, &w);
    size_t one = (size_t)c * h * w;
    float *input = malloc(one * (size_t)max_batch * sizeof(float));
    if (!input) {
        fprintf(stderr, "bench_gpu: out of memory\n");
        mpd_image_free(&im);
        mpd_engine_close(e);
        return 1;
    }
    rc = mpd_engine_preprocess(e, &im, input);
    mpd_image_free(&im);
    if (rc) {
        fprintf(stderr, "bench_gpu: %s: letterbox failed (%s)\n", image, mpd_strerror(rc));
        free(input);
        mpd_engine_close(e);
        return 1;
    }
    for (int b = 1; b < max_batch; b++)
        memcpy(input + (size_t)b * one, input, one * sizeof(float));

    int failed = 0;
    for (int p = 0; p < nplans && !failed; p++)
        failed = bench_plan(e, plans[p], input, batches, nbatches, iters, tput_iters, warmup);

    /* The backend may report memory only once buffers are in use. */
    mpd_engine_describe(e, desc, sizeof desc);
    printf("describe_end=%s\n", desc);
    free(input);
    mpd_engine_close(e);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak_rss_mb=%.1f\n", ru.ru_maxrss / 1024.0);
    return failed;
}
