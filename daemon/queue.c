/* queue.c - the job queue and the worker threads: each worker owns one
 * engine, takes jobs in order - up to max_batch at a time, run as one
 * forward pass - and hands each reply back to the loop. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

/* The fault injection of a stuck device call: never returns. */
static void stall_if_injected(worker *w)
{
    if (w->s->fault.stall != w->index)
        return;
    mpdd_log(MPD_LOG_WARNING, "fault injected: worker %d hangs", w->index);
    for (;;)
        pause();
}

/* After a device failure no job runs: each gets 503 until the restart. */
static void reply_device_failed(job *j)
{
    j->status = 503;
    j->reply = mpdd_error_body(j->ep, 503, "the compute device failed; mpdetd is restarting");
}

/* The reply of a job that failed with rc (decoding or the pass). A device
 * error is not the request's fault and may be sticky (a CUDA context that
 * every later call fails in): the first one stops the daemon, so that
 * systemd restarts it (Restart=on-failure) on a fresh one. */
static void reply_failed(worker *w, job *j, int rc, const char *msg)
{
    if (rc == MPD_EDEVICE && !atomic_exchange(&w->s->fatal, 1))
        mpdd_log(MPD_LOG_ERR, "worker %d: %s; exiting so the service restarts", w->index, msg);
    j->status = rc == MPD_ELIMIT ? 413 : rc == MPD_EFORMAT ? 400 : 500;
    j->reply = mpdd_error_body(j->ep, j->status, msg);
}

/* The 200 reply of a job from its result r (trimmed to the job's
 * max_detections here), computed under plan pi; total_ms is the worker's
 * time on this job. */
static void reply_result(worker *w, job *j, mpd_result *r, double total_ms,
                         const mpd_plan_info *pi)
{
    if (r->count > j->max_detections) /* best first: the weakest go */
        r->count = j->max_detections;
    mpdd_metrics_inference(w->s->metrics, r->t.inference_ms / 1e3);
    json_t *jr = j->ep == EP_VISION ? vision_json(r) : detect_json(w->engine, r, total_ms, pi);
    j->reply = json_dumps(jr, JSON_COMPACT);
    j->status = j->reply ? 200 : 500;
    json_decref(jr);
}

/* Per-layer timing on one pass in timing_every: on a GPU a timed pass
 * records an event per layer, and before CUDA 11.1 cannot replay its
 * graph. Counts passes, not requests: a batch is one pass. */
static int time_this_pass(worker *w, int timing_every)
{
    int timed = timing_every > 0 && w->passes++ % (unsigned long)timing_every == 0;
    mpd_engine_set_layer_timing(w->engine, timed);
    return timed;
}

/* The most jobs one batch holds: max_batch's upper bound in config.c. */
#define BATCH_MAX 64

/* CLOCK_MONOTONIC (q.cv waits on it, see mpdd_server_start) us
 * microseconds from now. */
static struct timespec deadline_after(long us)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += us / 1000000;
    t.tv_nsec += (us % 1000000) * 1000;
    if (t.tv_nsec >= 1000000000) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000;
    }
    return t;
}

/* Takes the worker's next batch off the queue into jobs (up to max): waits
 * for a first job, then takes what is queued and, while the batch is not
 * full, waits for more until the first job's batch_window_us (its value
 * when queued, so a reload applies to batches begun after it) has passed
 * since it was taken. Jobs whose client already left go on *dropped
 * instead, unrun and not counted against max. Stopping ends the wait: what
 * was taken runs at once. Returns the jobs taken; 0 with *dropped NULL
 * when stopping and the queue is empty. Marks the worker busy when it
 * takes a job. Worker thread, q.mu not held. */
static int take_batch(worker *w, job **jobs, int max, job **dropped)
{
    queue *q = &w->s->q;
    struct timespec deadline = {0, 0};
    int n = 0, expired = 0;
    *dropped = NULL;
    pthread_mutex_lock(&q->mu);
    while (n < max) {
        job *j = q->head;
        if (j) {
            q->head = j->next;
            if (!q->head)
                q->tail = NULL;
            q->depth--;
            if (atomic_load(&j->abandoned)) {
                j->next = *dropped;
                *dropped = j;
                continue;
            }
            if (n == 0) {
                w->busy = 1;
                expired = j->batch_window_us == 0;
                if (!expired)
                    deadline = deadline_after(j->batch_window_us);
            }
            jobs[n++] = j;
        } else if (n == 0) {
            /* Dropped jobs go back to the loop now rather than wait for
             * the next live one: their requests are freed there. */
            if (*dropped || q->stopping)
                break;
            pthread_cond_wait(&q->cv, &q->mu);
        } else if (expired || q->stopping) {
            break;
        } else if (pthread_cond_timedwait(&q->cv, &q->mu, &deadline) == ETIMEDOUT) {
            expired = 1; /* one more look at the queue, then run */
        }
    }
    pthread_mutex_unlock(&q->mu);
    return n;
}

/* Runs n jobs (one, at max_batch = 1) as one forward pass: each image is
 * decoded (one that fails gets its own error reply and stays out of the
 * pass), then mpd_engine_detect_each with every job's own parameters, and
 * each job gets its own reply, with its own decode time and an equal
 * share of the pass. Jobs whose client left meanwhile are not run. Worker
 * thread. */
static void run_batch(worker *w, job **jobs, int n)
{
    server *s = w->s;
    job *live[BATCH_MAX], *run[BATCH_MAX];
    mpd_image im[BATCH_MAX];
    mpd_detect_params params[BATCH_MAX];
    mpd_result r[BATCH_MAX];
    double decode_ms[BATCH_MAX];
    char msg[512];
    int m = 0, b = 0;
    for (int k = 0; k < n; k++)
        if (!atomic_load(&jobs[k]->abandoned))
            live[m++] = jobs[k];
    if (m == 0)
        return;
    stall_if_injected(w);
    if (atomic_load(&s->fatal)) {
        for (int k = 0; k < m; k++)
            reply_device_failed(live[k]);
        return;
    }
    for (int k = 0; k < m; k++) {
        job *j = live[k];
        double t0 = mpd_now();
        int rc = mpd_image_decode_formats(j->image, j->image_len, s->cfg.max_pixels, j->formats,
                                          &im[b], msg, sizeof(msg));
        if (rc) {
            reply_failed(w, j, rc, msg);
            continue;
        }
        decode_ms[b] = (mpd_now() - t0) * 1e3;
        params[b] = j->params;
        run[b++] = j;
    }
    if (b == 0)
        return;
    int timed = time_this_pass(w, run[0]->timing_every);
    double t0 = mpd_now();
    int rc = mpd_engine_detect_each(w->engine, im, b, params, r, msg, sizeof(msg));
    if (rc == 0 && s->fault.device_error == w->index) {
        for (int k = 0; k < b; k++)
            mpd_result_free(&r[k]);
        rc = MPD_EDEVICE;
        snprintf(msg, sizeof(msg), "fault injected: device lost");
    }
    double pass_ms = (mpd_now() - t0) * 1e3;
    for (int k = 0; k < b; k++)
        mpd_image_free(&im[k]);
    if (rc) {
        for (int k = 0; k < b; k++)
            reply_failed(w, run[k], rc, msg);
        return;
    }
    mpdd_metrics_batch(s->metrics, b);
    /* What ran, not what is current: a reload may have committed a newer
     * plan while this pass ran on the old one. */
    mpd_plan_info pi;
    mpd_engine_last_plan_info(w->engine, &pi);
    if (timed)
        layer_metrics(w, pi.generation);
    for (int k = 0; k < b; k++) {
        r[k].t.decode_ms = decode_ms[k];
        reply_result(w, run[k], &r[k], decode_ms[k] + pass_ms / b, &pi);
        mpd_result_free(&r[k]);
    }
}

/* Hands a finished batch and the dropped jobs to the loop. */
static void hand_back(worker *w, job **jobs, int n, job *dropped)
{
    server *s = w->s;
    pthread_mutex_lock(&s->q.mu);
    w->busy = 0;
    for (int k = 0; k < n; k++) {
        jobs[k]->next = s->q.done;
        s->q.done = jobs[k];
    }
    while (dropped) {
        job *j = dropped;
        dropped = j->next;
        j->next = s->q.done;
        s->q.done = j;
    }
    pthread_mutex_unlock(&s->q.mu);
    event_active(s->done_ev, 0, 0);
}

/* Worker 0 loads the model; the others wait for it and open engines of
 * their own on it (mpd_engine_open_shared): one copy of the weights and of
 * each plan's derived weights, buffers per worker. 0, or -1 when there is
 * no model (worker 0 failed, and said why). */
static int open_engine(worker *w, char *msg, size_t msglen)
{
    server *s = w->s;
    if (w->index == 0) {
        mpd_engine_options o = {
            .cfg_path = s->cfg.cfg, .weights_path = s->cfg.weights, .names_path = s->cfg.names,
            .backend = s->cfg.backend, .threads = s->cfg.threads, .max_batch = s->cfg.max_batch,
            .plan_path = s->cfg.plan[0] ? s->cfg.plan : NULL, .log = mpdd_engine_log,
            .reuse_buffers = 1,
        };
        int rc = mpd_engine_open(&o, &w->engine, msg, msglen);
        pthread_mutex_lock(&s->q.mu);
        s->model = rc ? -1 : 1;
        pthread_cond_broadcast(&s->model_cv);
        pthread_mutex_unlock(&s->q.mu);
        return rc;
    }
    pthread_mutex_lock(&s->q.mu);
    while (!s->model)
        pthread_cond_wait(&s->model_cv, &s->q.mu);
    int model = s->model;
    pthread_mutex_unlock(&s->q.mu);
    if (model < 0) {
        snprintf(msg, msglen, "no model");
        return -1;
    }
    return mpd_engine_open_shared(s->workers[0].engine, &w->engine, msg, msglen);
}

void *mpdd_worker_main(void *arg)
{
    worker *w = arg;
    server *s = w->s;
    char msg[512];
    int rc = open_engine(w, msg, sizeof(msg));
    pthread_mutex_lock(&s->q.mu);
    if (rc) {
        /* The first failure names the cause; "no model" only follows one. */
        if (!s->load_failed)
            snprintf(s->load_error, sizeof(s->load_error), "%s", msg);
        s->load_failed = 1;
    } else {
        s->engines_loaded++;
    }
    pthread_mutex_unlock(&s->q.mu);
    event_active(s->ready_ev, 0, 0);
    if (rc)
        return NULL;
    int max = s->cfg.max_batch; /* 1..64 by config.c's bounds; jobs[] holds BATCH_MAX */
    if (max < 1)
        max = 1;
    if (max > BATCH_MAX)
        max = BATCH_MAX;
    for (;;) {
        job *jobs[BATCH_MAX], *dropped;
        int n = take_batch(w, jobs, max, &dropped);
        if (!n && !dropped) /* stopping and drained */
            break;
        if (n) {
            atomic_store(&w->busy_since, mpd_now());
            run_batch(w, jobs, n);
            atomic_store(&w->busy_since, 0.0);
        }
        hand_back(w, jobs, n, dropped);
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