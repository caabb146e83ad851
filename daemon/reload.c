/* reload.c - applying a new configuration at run time (SIGHUP or POST
 * /v1/reload). A thread reads the file and prepares the new plan once, on
 * the model every worker's engine shares, while the old plan serves; the
 * commit then swaps it for every worker at once (it cannot fail), or, when
 * preparing failed, nothing changed. The loop then applies the reloadable
 * settings and answers the waiters. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notify.h"
#include "server.h"

static void *reload_main(void *arg)
{
    server *s = arg;
    char msg[512] = "";
    mpdd_config next;
    int rc = mpdd_config_load(s->config_path, &next, msg, sizeof(msg));
    if (rc == 0) {
        /* The command line still wins, so it is no "change". */
        mpdd_apply_overrides(s, &next);
        rc = mpdd_config_check_reload(&s->cfg, &next, msg, sizeof(msg));
    }
    const char *plan = next.plan[0] ? next.plan : NULL;
    mpd_engine *e = s->workers[0].engine; /* any: they share the model */
    mpd_prepared_plan *pp = NULL;
    /* The expensive part, and the one that can fail (a bad plan, device
     * memory). */
    if (rc == 0)
        rc = mpd_engine_prepare_plan(e, plan, &pp, msg, sizeof(msg));
    if (rc == 0 && s->fault.prepare_plan >= 0 && s->fault.prepare_plan < s->nworkers) {
        rc = MPD_ENOMEM;
        snprintf(msg, sizeof(msg), "fault injected: out of device memory");
    }
    unsigned long gen = atomic_load(&s->generation);
    if (rc == 0) {
        mpd_engine_commit_plan(e, pp, ++gen);
        pp = NULL;
    }
    mpd_engine_discard_plan(e, pp);
    pthread_mutex_lock(&s->reload_mu);
    s->reload_ok = rc == 0;
    snprintf(s->reload_msg, sizeof(s->reload_msg), "%s", msg);
    if (rc == 0) {
        s->reload_cfg = next;
        atomic_store(&s->generation, gen);
    }
    pthread_mutex_unlock(&s->reload_mu);
    event_active(s->reload_ev, 0, 0);
    return NULL;
}

void mpdd_start_reload(server *s, struct evhttp_request *req, double t0)
{
    if (req) {
        if (s->nwaiters == (int)(sizeof(s->reload_waiters) / sizeof(s->reload_waiters[0]))) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
            mpdd_reply_error(req, EP_DETECT, 503, "too many reloads waiting; retry later");
            mpdd_log_request(s, req, 503, t0);
            return;
        }
        s->reload_waiters[s->nwaiters++] = (waiter){req, t0};
        mpdd_conn_waiting_reload(s, req, 1);
    }
    if (s->reload_running)
        return; /* the running reload answers every waiter */
    s->reload_running = 1;
    mpdd_notify_reloading();
    mpdd_log(MPD_LOG_INFO, "reloading %s", s->config_path);
    if (pthread_create(&s->reload_tid, NULL, reload_main, s) != 0) {
        s->reload_running = 0;
        s->reload_ok = 0;
        snprintf(s->reload_msg, sizeof(s->reload_msg), "cannot start the reload thread");
        event_active(s->reload_ev, 0, 0);
    }
}

/* The plan's per-layer precisions, for the metrics: series of the
 * precisions a layer left are dropped. */
static void reset_layer_series(server *s)
{
    mpd_engine *e = s->workers[0].engine;
    for (int i = 0; i < mpd_engine_layer_count(e); i++) {
        mpd_layer_info li;
        mpd_engine_layer_info(e, i, &li);
        mpdd_metrics_layer_precision(s->metrics, i, li.precision);
    }
}

void mpdd_on_reload_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server *s = arg;
    if (s->reload_running)
        pthread_join(s->reload_tid, NULL);
    s->reload_running = 0;
    if (s->reload_ok) {
        /* The loop thread owns cfg; only reloadable settings differ. */
        pthread_mutex_lock(&s->reload_mu);
        mpdd_config_apply_reload(&s->cfg, &s->reload_cfg);
        mpd_image_formats_parse(s->cfg.image_formats, &s->formats, NULL, 0); /* validated */
        pthread_mutex_unlock(&s->reload_mu);
        mpdd_log_level = s->cfg.log_level;
        reset_layer_series(s);
    }
    mpd_plan_info pi;
    mpd_engine_plan_info(s->workers[0].engine, &pi);
    mpdd_metrics_reload(s->metrics, s->reload_ok);
    mpdd_metrics_plan(s->metrics, pi.generation);
    if (s->reload_ok)
        mpdd_log(MPD_LOG_INFO, "reload done: plan generation %lu (%s)", pi.generation, pi.source);
    else
        mpdd_log(MPD_LOG_ERR, "reload failed, the old plan keeps serving: %s", s->reload_msg);
    if (!s->draining) { /* stopping: systemd was told so, and READY=1 would undo it */
        char status[1200];
        snprintf(status, sizeof(status), "serving, plan %lu (%s)%s%s", pi.generation, pi.source,
                 s->reload_ok ? "" : "; last reload failed: ", s->reload_ok ? "" : s->reload_msg);
        mpdd_notify_ready(status);
    }
    for (int i = 0; i < s->nwaiters; i++) {
        waiter *w = &s->reload_waiters[i];
        json_t *j = s->reload_ok ? json_pack("{s:b, s:I, s:s}", "reloaded", 1, "generation",
                                             (json_int_t)pi.generation, "source", pi.source)
                                 : json_pack("{s:b, s:I, s:s, s:i}", "reloaded", 0, "generation",
                                             (json_int_t)pi.generation, "error", s->reload_msg,
                                             "status", 422);
        mpdd_conn_waiting_reload(s, w->req, 0);
        /* Logged first: the reply frees a request whose client left. */
        mpdd_log_request(s, w->req, s->reload_ok ? 200 : 422, w->t0);
        mpdd_reply_json(w->req, s->reload_ok ? 200 : 422, j);
    }
    s->nwaiters = 0;
    mpdd_maybe_finish_drain(s);
}
