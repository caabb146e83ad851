/* queue.c - the job queue and the worker threads: each worker owns one
 * engine, takes jobs in order, and hands each reply back to the loop. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>

#include "server.h"

static json_t *detect_json(const mpd_engine *e, const mpd_result *r, double total_ms,
                           const mpd_plan_info *pi)
{
    json_t *dets = json_array();
    for (int i = 0; i < r->count; i++) {
        const mpd_detection *d = &r->det[i];
        json_array_append_new(
            dets, json_pack("{s:i, s:s, s:f, s:{s:f, s:f, s:f, s:f}}", "class_id", d->class_id,
                            "label", d->label, "confidence", (double)d->confidence, "box", "x0",
                            (double)d->x0, "y0", (double)d->y0, "x1", (double)d->x1, "y1",
                            (double)d->y1));
    }
    return json_pack("{s:{s:i, s:i}, s:s, s:{s:I, s:s}, s:{s:f, s:f, s:f, s:f, s:f}, s:o}",
                     "image", "width", r->image_w, "height", r->image_h, "backend",
                     mpd_engine_backend(e), "plan", "generation", (json_int_t)pi->generation,
                     "source", pi->source, "timings_ms", "decode", r->t.decode_ms, "preprocess",
                     r->t.preprocess_ms, "inference", r->t.inference_ms, "postprocess",
                     r->t.postprocess_ms, "total", total_ms, "detections", dets);
}

/* DeepStack / CodeProject.AI shape: integer pixel boxes, best first. */
static json_t *vision_json(const mpd_result *r)
{
    json_t *preds = json_array();
    for (int i = 0; i < r->count; i++) {
        const mpd_detection *d = &r->det[i];
        json_array_append_new(preds,
                              json_pack("{s:s, s:f, s:i, s:i, s:i, s:i}", "label", d->label,
                                        "confidence", (double)d->confidence, "x_min",
                                        (int)(d->x0 + .5f), "y_min", (int)(d->y0 + .5f),
                                        "x_max", (int)(d->x1 + .5f), "y_max",
                                        (int)(d->y1 + .5f)));
    }
    return json_pack("{s:b, s:o}", "success", 1, "predictions", preds);
}

/* Per-layer metrics of the pass that just ran: skipped for a pass of a
 * plan older than the one now serving (it finished after a reload
 * committed), so the series of a precision no longer in use stay gone. */
static void layer_metrics(worker *w, unsigned long generation)
{
    server *s = w->s;
    if (generation < atomic_load(&s->generation))
        return;
    for (int i = 0; i < mpd_engine_layer_count(w->engine); i++) {
        mpd_layer_info li;
        mpd_engine_last_layer_info(w->engine, i, &li);
        mpdd_metrics_layer(s->metrics, i, li.precision, li.last_ms / 1e3);
    }
}

static void run_job(worker *w, job *j)
{
    server *s = w->s;
    char msg[512];
    mpd_result r;
    if (s->fault.stall == w->index) {
        mpdd_log(MPD_LOG_WARNING, "fault injected: worker %d hangs", w->index);
        for (;;)
            pause();
    }
    if (atomic_load(&s->fatal)) {
        j->status = 503;
        j->reply = mpdd_error_body(j->ep, 503, "the compute device failed; mpdetd is restarting");
        return;
    }
    /* Per-layer timing on one pass in timing_every: on a GPU a timed pass
     * records an event per layer, and before CUDA 11.1 cannot replay its
     * graph. */
    int timed = j->timing_every > 0 && w->passes++ % (unsigned long)j->timing_every == 0;
    mpd_engine_set_layer_timing(w->engine, timed);
    double t0 = mpd_now();
    int rc = mpd_engine_detect_memory_formats(w->engine, j->image, j->image_len,
                                              s->cfg.max_pixels, j->formats, &j->params, &r, msg,
                                              sizeof(msg));
    if (rc == 0 && s->fault.device_error == w->index) {
        mpd_result_free(&r);
        rc = MPD_EDEVICE;
        snprintf(msg, sizeof(msg), "fault injected: device lost");
    }
    double t1 = mpd_now();
    if (rc) {
        /* A device error is not the request's fault and may be sticky (a
         * CUDA context that every later call fails in): stop, so that
         * systemd restarts the daemon (Restart=on-failure) on a fresh one. */
        if (rc == MPD_EDEVICE && !atomic_exchange(&s->fatal, 1))
            mpdd_log(MPD_LOG_ERR, "worker %d: %s; exiting so the service restarts", w->index,
                     msg);
        j->status = rc == MPD_ELIMIT ? 413 : rc == MPD_EFORMAT ? 400 : 500;
        j->reply = mpdd_error_body(j->ep, j->status, msg);
        return;
    }
    if (r.count > j->max_detections) /* best first: the weakest go */
        r.count = j->max_detections;
    mpdd_metrics_inference(s->metrics, r.t.inference_ms / 1e3);
    /* What ran, not what is current: a reload may have committed a newer
     * plan while this pass ran on the old one. */
    mpd_plan_info pi;
    mpd_engine_last_plan_info(w->engine, &pi);
    if (timed)
        layer_metrics(w, pi.generation);
    json_t *jr = j->ep == EP_VISION ? vision_json(&r)
                                    : detect_json(w->engine, &r, (t1 - t0) * 1e3, &pi);
    j->reply = json_dumps(jr, JSON_COMPACT);
    j->status = j->reply ? 200 : 500;
    json_decref(jr);
    mpd_result_free(&r);
}

void *mpdd_worker_main(void *arg)
{
    worker *w = arg;
    server *s = w->s;
    char msg[512];
    mpd_engine_options o = {
        .cfg_path = s->cfg.cfg, .weights_path = s->cfg.weights, .names_path = s->cfg.names,
        .backend = s->cfg.backend, .threads = s->cfg.threads, .max_batch = 1,
        .plan_path = s->cfg.plan[0] ? s->cfg.plan : NULL, .log = mpdd_engine_log,
    };
    int rc = mpd_engine_open(&o, &w->engine, msg, sizeof(msg));
    pthread_mutex_lock(&s->q.mu);
    if (rc) {
        s->load_failed = 1;
        snprintf(s->load_error, sizeof(s->load_error), "%s", msg);
    } else {
        s->engines_loaded++;
    }
    pthread_mutex_unlock(&s->q.mu);
    event_active(s->ready_ev, 0, 0);
    if (rc)
        return NULL;
    for (;;) {
        pthread_mutex_lock(&s->q.mu);
        while (!s->q.head && !s->q.stopping)
            pthread_cond_wait(&s->q.cv, &s->q.mu);
        job *j = s->q.head;
        if (!j) { /* stopping and drained */
            pthread_mutex_unlock(&s->q.mu);
            break;
        }
        s->q.head = j->next;
        if (!s->q.head)
            s->q.tail = NULL;
        s->q.depth--;
        w->busy = 1;
        pthread_mutex_unlock(&s->q.mu);
        /* A job whose client already left is not run at all. */
        if (!atomic_load(&j->abandoned)) {
            atomic_store(&w->busy_since, mpd_now());
            run_job(w, j);
            atomic_store(&w->busy_since, 0.0);
        }
        pthread_mutex_lock(&s->q.mu);
        w->busy = 0;
        j->next = s->q.done;
        s->q.done = j;
        pthread_mutex_unlock(&s->q.mu);
        event_active(s->done_ev, 0, 0);
    }
    return NULL;
}

int mpdd_queue_push(server *s, job *j)
{
    pthread_mutex_lock(&s->q.mu);
    int full = s->q.depth >= s->q.capacity;
    if (!full) {
        if (s->q.tail)
            s->q.tail->next = j;
        else
            s->q.head = j;
        s->q.tail = j;
        s->q.depth++;
        pthread_cond_signal(&s->q.cv);
    }
    int depth = full ? -1 : s->q.depth;
    pthread_mutex_unlock(&s->q.mu);
    return depth;
}

void mpdd_free_job(job *j)
{
    free(j->body);
    free(j->reply);
    free(j);
}

/* Loop thread: send the replies of finished jobs. */
void mpdd_on_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server *s = arg;
    pthread_mutex_lock(&s->q.mu);
    job *list = s->q.done;
    s->q.done = NULL;
    int depth = s->q.depth;
    pthread_mutex_unlock(&s->q.mu);
    while (list) {
        job *j = list;
        list = j->next;
        if (atomic_load(&j->abandoned)) {
            /* The client hung up: libevent detached the request and left
             * it to us. Counted when it never ran. */
            if (!j->status)
                mpdd_metrics_abandoned(s->metrics);
            mpdd_log(MPD_LOG_DEBUG, "client left before its reply (%s)",
                     j->status ? "ran" : "dropped unrun");
            if (j->req) /* NULL when the connection was closed with it */
                evhttp_request_free(j->req);
        } else {
            mpdd_conn_job_done(s, j);
            if (j->status == 503) /* the device failed: back after the restart */
                evhttp_add_header(evhttp_request_get_output_headers(j->req), "Retry-After", "5");
            mpdd_reply_text(j->req, j->status, "application/json", j->reply ? j->reply : "{}");
            mpdd_log_request(s, j->req, j->status, j->t_start);
        }
        mpdd_free_job(j);
    }
    if (atomic_load(&s->fatal))
        mpdd_start_drain(s, "the compute device failed");
    mpdd_metrics_queue(s->metrics, depth, s->q.capacity);
    mpdd_maybe_finish_drain(s);
}