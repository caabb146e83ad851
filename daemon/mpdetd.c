/* mpdetd.c - the mpdet detection daemon's life cycle: setting the server
 * up, signals, readiness, the drain on SIGTERM and shutdown (main.c runs
 * them for the command line). How the files divide the work: server.h. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>

#include "notify.h"
#include "server.h"

/* ---- startup, signals, shutdown ------------------------------------- */

static void on_ready(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server *s = arg;
    pthread_mutex_lock(&s->q.mu);
    int loaded = s->engines_loaded, failed = s->load_failed;
    pthread_mutex_unlock(&s->q.mu);
    if (failed) {
        mpdd_log(MPD_LOG_ERR, "cannot load the model: %s", s->load_error);
        event_base_loopbreak(s->base);
        return;
    }
    if (loaded < s->nworkers || s->ready)
        return;
    s->ready = 1;
    mpd_plan_info pi;
    mpd_engine_plan_info(s->workers[0].engine, &pi);
    mpdd_metrics_plan(s->metrics, pi.generation);
    char desc[256], status[600];
    mpd_engine_describe(s->workers[0].engine, desc, sizeof(desc));
    mpd_memory_info m0, m1;
    mpd_engine_memory(s->workers[0].engine, &m0);
    mpd_engine_memory(s->workers[s->nworkers - 1].engine, &m1);
    mpdd_log(MPD_LOG_INFO,
             "ready on %s: %d worker(s), %s, plan %s; %s memory: %.1f MiB for the model, %.1f "
             "MiB per worker",
             s->cfg.socket, s->nworkers, desc, pi.source, m0.where,
             (m0.weights + m0.plan) / 1048576.0, m1.engine / 1048576.0);
    snprintf(status, sizeof(status), "serving, plan %lu (%s)", pi.generation, pi.source);
    mpdd_notify_ready(status);
}

/* Pings systemd's watchdog only while the workers make progress: a worker
 * stuck in one job (a hung device call) for longer than the watchdog
 * interval stops the pings, and systemd restarts the service. */
static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server *s = arg;
    double now = mpd_now(), limit = mpdd_watchdog_seconds();
    for (int i = 0; i < s->nworkers; i++) {
        double since = atomic_load(&s->workers[i].busy_since);
        if (since > 0 && now - since > limit) {
            mpdd_log(MPD_LOG_ERR, "worker %d stuck in one job for %.0f s; not feeding the watchdog",
                     i, now - since);
            return;
        }
    }
    mpdd_notify_watchdog();
}

void mpdd_maybe_finish_drain(server *s)
{
    if (!s->draining)
        return;
    pthread_mutex_lock(&s->q.mu);
    int pending = s->q.depth;
    for (int i = 0; i < s->nworkers; i++)
        pending += s->workers[i].busy;
    pthread_mutex_unlock(&s->q.mu);
    if (pending == 0 && !s->reload_running) {
        /* A moment for the last replies to leave their buffers. */
        struct timeval tv = {0, 200000};
        event_base_loopexit(s->base, &tv);
    }
}

void mpdd_start_drain(server *s, const char *why)
{
    if (s->draining)
        return;
    s->draining = 1;
    pthread_mutex_lock(&s->q.mu);
    int queued = s->q.depth;
    pthread_mutex_unlock(&s->q.mu);
    mpdd_log(MPD_LOG_INFO, "stopping (%s): finishing %d queued request(s)", why, queued);
    mpdd_notify_stopping();
    if (s->bound)
        evhttp_del_accept_socket(s->http, s->bound);
    if (s->bound_tcp)
        evhttp_del_accept_socket(s->http, s->bound_tcp);
    s->bound = s->bound_tcp = NULL;
    mpdd_maybe_finish_drain(s);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    server *s = arg;
    if (sig == SIGHUP) {
        if (s->draining)
            mpdd_log(MPD_LOG_INFO, "SIGHUP ignored: stopping");
        else if (s->ready)
            mpdd_start_reload(s, NULL, mpd_now());
        return;
    }
    /* SIGTERM / SIGINT: stop accepting, answer what is queued, exit 0. A
     * running reload is waited for (mpdd_on_reload_done ends the drain). */
    mpdd_start_drain(s, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* MPDETD_FAULT="name:worker[,name:worker...]" (see faults in server.h). */
static int parse_faults(faults *f, const char *spec, char *msg, size_t msglen)
{
    f->prepare_plan = f->stall = f->device_error = -1;
    if (!spec || !*spec)
        return 0;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", spec);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(t, ':'), *end;
        long n = colon ? strtol(colon + 1, &end, 10) : -1;
        if (!colon || *end || n < 0 || n > 1000) {
            snprintf(msg, msglen, "MPDETD_FAULT: bad entry '%s' (want name:worker)", t);
            return -1;
        }
        *colon = '\0';
        int *slot = !strcmp(t, "prepare_plan") ? &f->prepare_plan
                    : !strcmp(t, "stall")      ? &f->stall
                    : !strcmp(t, "device_error") ? &f->device_error
                                                 : NULL;
        if (!slot) {
            snprintf(msg, msglen, "MPDETD_FAULT: unknown fault '%s'", t);
            return -1;
        }
        *slot = (int)n;
    }
    return 0;
}

void mpdd_apply_overrides(const server *s, mpdd_config *c)
{
    if (s->socket_override)
        snprintf(c->socket, sizeof(c->socket), "%s", s->socket_override);
}

int mpdd_server_init(server *s, const char *config, const char *socket_override, char *msg,
                     size_t msglen)
{
    if (mpdd_config_load(config, &s->cfg, msg, msglen))
        return -1;
    s->socket_override = socket_override;
    atomic_store(&s->generation, 1); /* what every engine starts with */
    mpd_image_formats_parse(s->cfg.image_formats, &s->formats, NULL, 0); /* validated by the load */
    if (parse_faults(&s->fault, getenv("MPDETD_FAULT"), msg, msglen))
        return -1;
    if (getenv("MPDETD_FAULT"))
        mpdd_log(MPD_LOG_WARNING, "fault injection on: MPDETD_FAULT=%s", getenv("MPDETD_FAULT"));
    mpdd_apply_overrides(s, &s->cfg);
    mpdd_log_level = s->cfg.log_level;
    s->config_path = (char *)config;
    return 0;
}

int mpdd_server_start(server *s, int serve, char *msg, size_t msglen)
{
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    s->base = event_base_new();
    s->http = s->base ? evhttp_new(s->base) : NULL;
    /* Room for the largest darknet graphs (yolov3 has 107 layers). */
    s->metrics = mpdd_metrics_create(512);
    if (!s->http || !s->metrics) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    /* evhttp's limits default to unlimited and no timeout: set them all. */
    evhttp_set_max_body_size(s->http, (ev_ssize_t)s->cfg.max_body);
    evhttp_set_max_headers_size(s->http, (ev_ssize_t)s->cfg.max_header);
    evhttp_set_timeout(s->http, s->cfg.timeout);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
    evhttp_set_gencb(s->http, mpdd_on_request, s);
    evhttp_set_bevcb(s->http, mpdd_connection_bev, s);
    if (mpdd_streams_start(s) != 0) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&s->q.mu, NULL);
    /* On the monotonic clock: a worker waiting for its batch to fill
     * (batch_window_us) must not wait longer or shorter when the wall
     * clock is set. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->q.cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&s->model_cv, NULL);
    pthread_mutex_init(&s->reload_mu, NULL);
    s->q.capacity = s->cfg.queue_depth;
    mpdd_metrics_queue(s->metrics, 0, s->q.capacity); /* scraped before any request */
    s->done_ev = event_new(s->base, -1, 0, mpdd_on_done, s);
    s->reload_ev = event_new(s->base, -1, 0, mpdd_on_reload_done, s);
    s->ready_ev = event_new(s->base, -1, 0, on_ready, s);
    if (serve) {
        s->sig_hup = evsignal_new(s->base, SIGHUP, on_signal, s);
        s->sig_term = evsignal_new(s->base, SIGTERM, on_signal, s);
        s->sig_int = evsignal_new(s->base, SIGINT, on_signal, s);
        event_add(s->sig_hup, NULL);
        event_add(s->sig_term, NULL);
        event_add(s->sig_int, NULL);
        if (mpdd_listen(s, msg, msglen))
            return -1;
    }
    double wd = mpdd_watchdog_seconds();
    if (wd > 0) {
        struct timeval tv = {(time_t)(wd / 2), (long)((wd / 2 - (time_t)(wd / 2)) * 1e6)};
        s->watchdog_ev = event_new(s->base, -1, EV_PERSIST, on_watchdog, s);
        event_add(s->watchdog_ev, &tv);
    }
    s->nworkers = s->cfg.workers;
    s->workers = calloc((size_t)s->nworkers, sizeof(worker));
    for (int i = 0; i < s->nworkers; i++) {
        s->workers[i].s = s;
        s->workers[i].index = i;
        if (pthread_create(&s->workers[i].tid, NULL, mpdd_worker_main, &s->workers[i]) != 0) {
            snprintf(msg, msglen, "cannot start worker threads");
            return -1;
        }
    }
    return 0;
}

int mpdd_server_finish(server *s)
{
    /* Drained (or the model failed to load): stop the workers. */
    pthread_mutex_lock(&s->q.mu);
    s->q.stopping = 1;
    pthread_cond_broadcast(&s->q.cv);
    pthread_mutex_unlock(&s->q.mu);
    for (int i = 0; i < s->nworkers; i++)
        pthread_join(s->workers[i].tid, NULL);
    int status = s->load_failed || atomic_load(&s->fatal) ? 1 : 0;
    for (int i = 0; i < s->nworkers; i++) /* the model goes with the last */
        mpd_engine_close(s->workers[i].engine);
    if (s->owns_socket_file)
        unlink(s->cfg.socket);
    mpdd_log(MPD_LOG_INFO, "stopped");
    evhttp_free(s->http);
    mpdd_streams_free(s);
    event_free(s->done_ev);
    event_free(s->reload_ev);
    event_free(s->ready_ev);
    if (s->watchdog_ev)
        event_free(s->watchdog_ev);
    if (s->sig_hup) {
        event_free(s->sig_hup);
        event_free(s->sig_term);
        event_free(s->sig_int);
    }
    event_base_free(s->base);
    mpdd_metrics_free(s->metrics);
    free(s->workers);
    return status;
}
