/* main.c - mpdetd's command line: options, --check-config, the root
 * check, then the server's life cycle (mpdetd.c): init, start, the event
 * loop until the drain ends, finish. */
#define _GNU_SOURCE
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
    mpdd_log_journal = getenv("JOURNAL_STREAM") != NULL || getenv("INVOCATION_ID") != NULL;
    static server srv;
    server *s = &srv;
    char msg[1024];
    if (mpdd_server_init(s, config, socket_override, msg, sizeof(msg))) {
        fprintf(stderr, "mpdetd: %s\n", msg);
        return 1;
    }
    if (check) {
        /* The plan is validated against the real network and backend. */
        mpd_engine_options o = {.cfg_path = s->cfg.cfg, .weights_path = s->cfg.weights,
                                .names_path = s->cfg.names, .backend = s->cfg.backend,
                                .threads = 1, .plan_path = s->cfg.plan[0] ? s->cfg.plan : NULL};
        mpd_engine *e;
        if (mpd_engine_open(&o, &e, msg, sizeof(msg))) {
            fprintf(stderr, "mpdetd: %s: %s\n", config, msg);
            return 1;
        }
        mpd_engine_close(e);
        printf("mpdetd: %s is valid\n", config);
        return 0;
    }
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
