/* main.c - mpdetd's command line: options, --check-config, the root
 * check, then the server's life cycle (mpdetd.c): init, start, the event
 * loop until the drain ends, finish. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "notify.h"
#include "server.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: mpdetd [-c FILE] [--socket PATH] [--check-config] [--help-config]\n"
               "  -c FILE          configuration (default /etc/mpdet/mpdetd.conf)\n"
               "  --socket PATH    serve on PATH instead of the configured socket\n"
               "  --check-config   validate the configuration and its plan, then exit\n"
               "  --help-config    list every setting with its type, bounds and default\n");
}

/* --check-config: the plan validated against the real network and
 * backend, then the memory the configured workers and batch will hold,
 * from the engines' own accounting: the model's engine and, with more
 * workers, one engine shared with it (on a GPU the first holds the GEMM
 * workspaces every engine of the model uses; see cuda_backend.c). */
static int check_config(server *s, const char *config)
{
    char msg[1024];
    mpd_engine_options o = {.cfg_path = s->cfg.cfg, .weights_path = s->cfg.weights,
                            .names_path = s->cfg.names, .backend = s->cfg.backend,
                            .threads = s->cfg.threads, .max_batch = s->cfg.max_batch,
                            .reuse_buffers = 1, .plan_path = s->cfg.plan[0] ? s->cfg.plan : NULL};
    mpd_engine *e, *e2 = NULL;
    if (mpd_engine_open(&o, &e, msg, sizeof(msg)) ||
        (s->cfg.workers > 1 && mpd_engine_open_shared(e, &e2, msg, sizeof(msg)))) {
        fprintf(stderr, "mpdetd: %s: %s\n", config, msg);
        return 1;
    }
    printf("mpdetd: %s is valid\n", config);
    mpd_memory_info m0, m1;
    mpd_engine_memory(e, &m0);
    m1 = m0;
    if (e2)
        mpd_engine_memory(e2, &m1);
    const double mib = 1 << 20;
    int w = s->cfg.workers;
    double total = (m0.weights + m0.plan + m0.engine + (double)(w - 1) * m1.engine) / mib;
    printf("mpdetd: memory estimate, %s backend (%s memory): %d worker%s x batch %d: model "
           "%.1f MiB (weights) + %.1f MiB (the plan's derived weights) once, ",
           mpd_engine_backend(e), m0.where, w, w > 1 ? "s" : "", s->cfg.max_batch,
           m0.weights / mib, m0.plan / mib);
    if (w > 1 && m0.engine != m1.engine)
        printf("%.1f MiB for the first worker (with the shared workspaces) and %.1f MiB for each "
               "other: %.1f MiB",
               m0.engine / mib, m1.engine / mib, total);
    else
        printf("%.1f MiB per worker: %.1f MiB", m1.engine / mib, total);
    printf(" (the process's code, libraries and threads come on top; README, Memory)\n");
    mpd_engine_close(e2);
    mpd_engine_close(e);
    return 0;
}

int main(int argc, char **argv)
{
    const char *config = "/etc/mpdet/mpdetd.conf", *socket_override = NULL;
    int check = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-c") && i + 1 < argc) {
            config = argv[++i];
        } else if (!strcmp(argv[i], "--socket") && i + 1 < argc) {
            socket_override = argv[++i];
        } else if (!strcmp(argv[i], "--check-config")) {
            check = 1;
        } else if (!strcmp(argv[i], "--help-config")) {
            mpdd_config_print_table(stdout);
            return 0;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    /* Blocks of 128 KiB and more are mapped and unmapped on their own:
     * glibc would otherwise raise that threshold to the largest block freed
     * (a decoded camera frame, a few MB) and keep such blocks in each worker
     * thread's arena after the request. Measured: 4 workers 147 -> 139 MB
     * resident (bench/daemon_scale.py). */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    mpdd_log_journal = getenv("JOURNAL_STREAM") != NULL || getenv("INVOCATION_ID") != NULL;
    static server srv;
    server *s = &srv;
    char msg[1024];
    if (mpdd_server_init(s, config, socket_override, msg, sizeof(msg))) {
        fprintf(stderr, "mpdetd: %s\n", msg);
        return 1;
    }
    if (check)
        return check_config(s, config);
    if (geteuid() == 0 && !s->cfg.allow_root) {
        fprintf(stderr, "mpdetd: refusing to run as root: run it as its own user (the systemd "
                        "unit does) or set allow_root = yes in %s\n", config);
        return 1;
    }
    if (mpdd_server_start(s, 1, msg, sizeof(msg))) {
        fprintf(stderr, "mpdetd: %s\n", msg);
        return 1;
    }
    mpdd_log(MPD_LOG_INFO, "mpdetd %s starting: %s, loading %s", MPDETD_VERSION, s->cfg.socket,
             s->cfg.weights);
    mpdd_notify_status("loading the model");
    event_base_dispatch(s->base);
    return mpdd_server_finish(s);
}
