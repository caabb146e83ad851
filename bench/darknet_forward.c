/* darknet_forward - times Debian's libdarknet (the reference) for bench/run,
 * the same two measurements as bench_forward:
 *
 *   darknet_forward [--iters N] [--e2e-iters N] [--images A,B,...]
 *                   [--forward-image F] [--model-dir DIR] [IMAGE...]
 *
 * (a) forward: median over --iters network_predict runs on darknet's own
 *     letterboxed tensor of --forward-image, after 3 warm-up runs.
 * (b) end to end: dnref_detect (stb decode from the file -> letterbox ->
 *     forward -> boxes -> do_nms_sort), --e2e-iters per image, median over
 *     images x iters. darknet only decodes from a path, so its end-to-end
 *     time includes opening the file; each file is read once beforehand so
 *     that it is in the page cache.
 *
 * Threads: the caller sets OMP_NUM_THREADS / OPENBLAS_NUM_THREADS; this
 * program has no thread knob of its own. It links only libdarknet, so it
 * keeps its own clock. darknet's layer table (stderr, at load) is hidden;
 * it is shown if darknet exits during the load. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"

#include "../tests/darknet_ref.h"

#define WARMUP 3

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* stderr is parked in a temporary file while darknet loads; if darknet
 * exit()s in the middle, the atexit hook puts its messages back. */
static int saved_stderr = -1;
static FILE *load_log;

static void restore_stderr(int replay)
{
    if (saved_stderr < 0)
        return;
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    saved_stderr = -1;
    if (replay && load_log) {
        char buf[4096];
        size_t n;
        rewind(load_log);
        while ((n = fread(buf, 1, sizeof buf, load_log)) > 0)
            fwrite(buf, 1, n, stderr);
    }
    if (load_log)
        fclose(load_log);
    load_log = NULL;
}

static void on_exit_during_load(void)
{
    restore_stderr(1);
}

static void quiet_stderr(void)
{
    fflush(stderr);
    load_log = tmpfile();
    saved_stderr = dup(2);
    if (!load_log || saved_stderr < 0)
        return;
    dup2(fileno(load_log), 2);
    atexit(on_exit_during_load);
}

static int file_readable(const char *path)
{
    /* Reads the file once: it is then in the page cache for dnref_detect. */
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char buf[65536];
    while (fread(buf, 1, sizeof buf, f) == sizeof buf)
        ;
    int ok = !ferror(f);
    fclose(f);
    return ok;
}

int main(int argc, char **argv)
{
    int iters = 5, e2e_iters = 1;
    const char *model_dir = bu_model_dir();
    const char *fwd_image = NULL;
    char *images_arg = NULL;
    const char *images[256];
    int nimages = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--iters") && has) {
            if (bu_parse_int("darknet_forward", a, argv[++i], 1, &iters))
                return 2;
        } else if (!strcmp(a, "--e2e-iters") && has) {
            if (bu_parse_int("darknet_forward", a, argv[++i], 0, &e2e_iters))
                return 2;
        } else if (!strcmp(a, "--images") && has) {
            images_arg = argv[++i];
        } else if (!strcmp(a, "--forward-image") && has) {
            fwd_image = argv[++i];
        } else if (!strcmp(a, "--model-dir") && has) {
            model_dir = argv[++i];
        } else if (!strcmp(a, "--threads") && has) {
            i++; /* accepted for symmetry; darknet takes OMP_NUM_THREADS */
        } else if (a[0] == '-') {
            fprintf(stderr, "usage: darknet_forward [--iters N] [--e2e-iters N] "
                            "[--images A,B,...] [--forward-image F] [--model-dir DIR]\n");
            return 2;
        } else if (nimages < 256) {
            images[nimages++] = a;
        }
    }
    bu_image_list(images_arg, images, &nimages, 256);
    if (!fwd_image)
        fwd_image = bu_forward_image(images, nimages);
    for (int i = 0; i < nimages; i++)
        if (!file_readable(images[i])) {
            fprintf(stderr, "darknet_forward: cannot read %s\n", images[i]);
            return 1;
        }

    bu_model m;
    bu_model_paths(model_dir, &m);
    const char *cfg = m.cfg, *weights = m.weights;
    if (access(cfg, R_OK) || access(weights, R_OK)) {
        fprintf(stderr, "darknet_forward: cannot read %s or %s\n", cfg, weights);
        return 1;
    }

    double t0 = now_ms();
    quiet_stderr();
    dnref *r = dnref_open(cfg, weights);
    restore_stderr(r == NULL);
    if (!r) {
        fprintf(stderr, "darknet_forward: darknet could not load %s\n", cfg);
        return 1;
    }
    double load_ms = now_ms() - t0;
    const char *omp = getenv("OMP_NUM_THREADS");
    printf("engine=darknet\nomp_num_threads=%s\nload_ms=%.1f\n", omp ? omp : "unset", load_ms);

    /* (a) forward pass on darknet's letterboxed tensor. */
    int c, h, w, iw, ih;
    dnref_input_size(r, &c, &h, &w);
    size_t n = (size_t)c * h * w;
    float *tensor = malloc(n * sizeof(float)), *input = malloc(n * sizeof(float));
    double *fwd = malloc((size_t)iters * sizeof(double));
    if (!tensor || !input || !fwd) {
        fprintf(stderr, "darknet_forward: out of memory\n");
        return 1;
    }
    if (dnref_load_letterboxed(r, fwd_image, tensor, &iw, &ih)) {
        fprintf(stderr, "darknet_forward: cannot load %s\n", fwd_image);
        return 1;
    }
    for (int i = 0; i < WARMUP + iters; i++) {
        memcpy(input, tensor, n * sizeof(float)); /* darknet may modify its input */
        double s = now_ms();
        dnref_forward(r, input);
        if (i >= WARMUP)
            fwd[i - WARMUP] = now_ms() - s;
    }
    double fmin = fwd[0], fmean = 0;
    for (int i = 0; i < iters; i++) {
        fmean += fwd[i] / iters;
        if (fwd[i] < fmin)
            fmin = fwd[i];
    }
    printf("forward_iters=%d\nforward_warmup=%d\n", iters, WARMUP);
    printf("forward_ms_min=%.2f\nforward_ms_mean=%.2f\n", fmin, fmean);
    printf("forward_ms_median=%.2f\n", bu_median(fwd, iters));
    free(fwd);
    free(tensor);
    free(input);

    /* (b) end to end through darknet's own detector path. */
    if (e2e_iters > 0) {
        enum { CAP = 4096 };
        dnref_det *dets = malloc(CAP * sizeof(*dets));
        double *all = malloc((size_t)nimages * e2e_iters * sizeof(double));
        double *one = malloc((size_t)e2e_iters * sizeof(double));
        if (!dets || !all || !one) {
            fprintf(stderr, "darknet_forward: out of memory\n");
            return 1;
        }
        int nall = 0;
        for (int i = 0; i < nimages; i++) {
            int nd = 0;
            for (int k = 0; k < e2e_iters; k++) {
                double s = now_ms();
                nd = dnref_detect(r, images[i], 0.25f, 0.45f, dets, CAP);
                double ms = now_ms() - s;
                if (nd < 0) {
                    fprintf(stderr, "darknet_forward: detect failed on %s\n", images[i]);
                    return 1;
                }
                one[k] = ms;
                all[nall++] = ms;
            }
            printf("image name=%s dets=%d e2e_ms_median=%.2f\n", bu_base_name(images[i]), nd,
                   bu_median(one, e2e_iters));
        }
        printf("e2e_images=%d\ne2e_iters=%d\n", nimages, e2e_iters);
        printf("e2e_ms_median=%.2f\n", bu_median(all, nall));
        free(dets);
        free(all);
        free(one);
    }

    dnref_close(r);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak_rss_mb=%.1f\n", ru.ru_maxrss / 1024.0);
    return 0;
}
