/* mpdetd - the mpdet detection daemon.
 *
 * One event-loop thread owns libevent's evhttp: it accepts HTTP/1.1 on a
 * Unix socket (or a socket passed by systemd), answers the cheap endpoints
 * itself and queues detections. Worker threads - one engine each - take
 * jobs from a bounded queue and hand finished replies back to the loop
 * with event_active(); only the loop thread touches evhttp. A reload
 * thread builds new plans off the request path. Signal handling is done by
 * libevent signal events on the loop. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>

#include "config.h"
#include "engine.h"
#include "metrics.h"
#include "multipart.h"
#include "notify.h"

#define MPDETD_VERSION "0.3.0"

/* ---- logging --------------------------------------------------------- */

/* Read by every thread, changed by a reload on the loop thread. */
static _Atomic int log_level = MPD_LOG_INFO;
static int log_journal; /* under systemd: "<N>" priority prefixes */

static void logmsg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logmsg(int prio, const char *fmt, ...)
{
    if (prio > log_level)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (log_journal) {
        fprintf(stderr, "<%d>%s\n", prio, line);
    } else {
        char ts[32];
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        struct tm tm;
        localtime_r(&now.tv_sec, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
        static const char *const names[] = {"emerg", "alert", "crit", "error",
                                            "warning", "notice", "info", "debug"};
        fprintf(stderr, "%s.%03ld mpdetd %s: %s\n", ts, now.tv_nsec / 1000000,
                names[prio & 7], line);
    }
}

static void engine_log(void *ud, int prio, const char *msg)
{
    (void)ud;
    logmsg(prio, "%s", msg);
}

/* ---- jobs and the queue ---------------------------------------------- */

enum endpoint { EP_DETECT, EP_VISION };

typedef struct job {
    struct job *next;
    struct evhttp_request *req; /* NULL once the client went away (loop thread only) */
    enum endpoint ep;
    unsigned char *body;
    size_t len;
    const unsigned char *image; /* into body */
    size_t image_len;
    mpd_detect_params params;
    double t_start;
    /* Filled by the worker. */
    int status;
    char *reply; /* JSON */
} job;

/* A client connection, known from its first request until it closes.
 * evhttp 2.1 has no connection limit of its own: max_clients counts these.
 * (A connection that never sends a request is closed by the timeout.) */
typedef struct conn {
    struct conn *next;
    struct evhttp_connection *evcon;
    struct server *s;
    job *pending; /* the job whose reply this connection waits for */
} conn;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    int depth, capacity;
    int stopping;
    job *done; /* finished, waiting for the loop */
} queue;

struct server;

typedef struct {
    struct server *s;
    int index;
    pthread_t tid;
    mpd_engine *engine;
    int busy;
} worker;

typedef struct server {
    mpdd_config cfg;
    char *config_path;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound, *bound_tcp;
    struct event *done_ev, *reload_ev, *ready_ev, *watchdog_ev;
    struct event *sig_hup, *sig_term, *sig_int;
    queue q;
    worker *workers;
    int nworkers;
    int ready;          /* every engine loaded (atomic-ish: set once by the loop) */
    int engines_loaded; /* under q.mu */
    int load_failed;
    char load_error[512];
    int owns_socket_file;
    int draining;
    struct conn *conns; /* connections that have sent a request (loop thread) */
    int nconns;
    mpdd_metrics *metrics;
    /* Reload. */
    pthread_mutex_t reload_mu;
    int reload_running;
    int reload_ok;
    mpdd_config reload_cfg; /* what the reload read; applied by the loop */
    char reload_msg[512];
    struct evhttp_request *reload_waiters[16];
    int nwaiters;
    pthread_t reload_tid;
} server;

static double now_s(void)
{
    return mpd_now();
}

/* ---- replies (loop thread) ----------------------------------------- */

static void reply_json(struct evhttp_request *req, int code, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "%s\n", text ? text : "{}");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, code, NULL, b);
    evbuffer_free(b);
    free(text);
    json_decref(j);
}

static void reply_text(struct evhttp_request *req, int code, const char *ctype, const char *text)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, text, strlen(text));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evhttp_send_reply(req, code, NULL, b);
    evbuffer_free(b);
}

/* Errors: {"error": ..., "status": N}; the DeepStack endpoint uses its own
 * shape {"success": false, "error": ..., "code": N}. */
static char *error_body(enum endpoint ep, int code, const char *msg)
{
    json_t *j = ep == EP_VISION
                    ? json_pack("{s:b, s:s, s:i}", "success", 0, "error", msg, "code", code)
                    : json_pack("{s:s, s:i}", "error", msg, "status", code);
    char *t = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return t;
}

static void reply_error(struct evhttp_request *req, enum endpoint ep, int code, const char *msg)
{
    char *t = error_body(ep, code, msg);
    reply_text(req, code, "application/json", t ? t : "{}");
    free(t);
}

static const char *endpoint_name(const char *path)
{
    if (!strcmp(path, "/v1/detect"))
        return "detect";
    if (!strcmp(path, "/v1/vision/detection"))
        return "vision_detection";
    if (!strcmp(path, "/v1/health"))
        return "health";
    if (!strcmp(path, "/v1/plan"))
        return "plan";
    if (!strcmp(path, "/v1/reload"))
        return "reload";
    if (!strcmp(path, "/metrics"))
        return "metrics";
    return "other";
}

/* One line per request at info, with status and time. */
static void log_request(server *s, struct evhttp_request *req, int code, double t0)
{
    const char *uri = evhttp_request_get_uri(req);
    char path[128];
    const char *q = strchr(uri, '?');
    size_t n = q ? (size_t)(q - uri) : strlen(uri);
    snprintf(path, sizeof(path), "%.*s", (int)(n < 100 ? n : 100), uri);
    /* Sanitize: the path is client input. */
    for (char *p = path; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            *p = '?';
    double dt = now_s() - t0;
    logmsg(MPD_LOG_INFO, "%s %s -> %d (%.1f ms)",
           evhttp_request_get_command(req) == EVHTTP_REQ_POST ? "POST" : "GET", path, code,
           dt * 1e3);
    mpdd_metrics_request(s->metrics, endpoint_name(path), code, dt);
}

/* ---- workers --------------------------------------------------------- */

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

static void run_job(worker *w, job *j)
{
    char msg[512];
    mpd_result r;
    double t0 = now_s();
    int rc = mpd_engine_detect_memory(w->engine, j->image, j->image_len, w->s->cfg.max_pixels,
                                      &j->params, &r, msg, sizeof(msg));
    double t1 = now_s();
    if (rc) {
        j->status = rc == MPD_ELIMIT ? 413 : rc == MPD_EFORMAT ? 400 : 500;
        j->reply = error_body(j->ep, j->status, msg);
        return;
    }
    mpdd_metrics_inference(w->s->metrics, r.t.inference_ms / 1e3);
    mpd_plan_info pi;
    mpd_engine_plan_info(w->engine, &pi);
    for (int i = 0; i < mpd_engine_layer_count(w->engine); i++) {
        mpd_layer_info li;
        mpd_engine_layer_info(w->engine, i, &li);
        mpdd_metrics_layer(w->s->metrics, i, li.precision, li.last_ms / 1e3);
    }
    json_t *jr = j->ep == EP_VISION ? vision_json(&r)
                                    : detect_json(w->engine, &r, (t1 - t0) * 1e3, &pi);
    j->reply = json_dumps(jr, JSON_COMPACT);
    j->status = j->reply ? 200 : 500;
    json_decref(jr);
    mpd_result_free(&r);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    server *s = w->s;
    char msg[512];
    mpd_engine_options o = {
        .cfg_path = s->cfg.cfg, .weights_path = s->cfg.weights, .names_path = s->cfg.names,
        .backend = s->cfg.backend, .threads = s->cfg.threads, .max_batch = 1,
        .plan_path = s->cfg.plan[0] ? s->cfg.plan : NULL, .log = engine_log,
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
        run_job(w, j);
        pthread_mutex_lock(&s->q.mu);
        w->busy = 0;
        j->next = s->q.done;
        s->q.done = j;
        pthread_mutex_unlock(&s->q.mu);
        event_active(s->done_ev, 0, 0);
    }
    return NULL;
}

static void free_job(job *j)
{
    free(j->body);
    free(j->reply);
    free(j);
}

/* The connection closed (either side): forget it, and the request of a
 * job still running for it (libevent frees the request). */
static void on_conn_close(struct evhttp_connection *c, void *arg)
{
    (void)c;
    conn *cn = arg;
    server *s = cn->s;
    if (cn->pending)
        cn->pending->req = NULL;
    for (conn **p = &s->conns; *p; p = &(*p)->next) {
        if (*p == cn) {
            *p = cn->next;
            break;
        }
    }
    s->nconns--;
    free(cn);
}

/* The record of req's connection, created on its first request; NULL when
 * max_clients connections are open already (or out of memory). */
static conn *conn_of(server *s, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    for (conn *c = s->conns; c; c = c->next)
        if (c->evcon == evcon)
            return c;
    if (s->nconns >= s->cfg.max_clients)
        return NULL;
    conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->evcon = evcon;
    c->s = s;
    c->next = s->conns;
    s->conns = c;
    s->nconns++;
    evhttp_connection_set_closecb(evcon, on_conn_close, c);
    return c;
}

static void maybe_finish_drain(server *s);

/* Loop thread: send the replies of finished jobs. */
static void on_done(evutil_socket_t fd, short what, void *arg)
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
        if (j->req) {
            for (conn *c = s->conns; c; c = c->next)
                if (c->pending == j)
                    c->pending = NULL;
            reply_text(j->req, j->status, "application/json", j->reply ? j->reply : "{}");
            log_request(s, j->req, j->status, j->t_start);
        } else {
            logmsg(MPD_LOG_INFO, "client left before its reply (%d)", j->status);
        }
        free_job(j);
    }
    mpdd_metrics_queue(s->metrics, depth, s->q.capacity);
    maybe_finish_drain(s);
}

/* ---- request handlers (loop thread) ----------------------------------- */

static int query_unit(struct evhttp_request *req, const char *key, float *out)
{
    struct evkeyvalq q;
    const char *uri = evhttp_request_get_uri(req);
    const char *qs = strchr(uri, '?');
    if (!qs)
        return 0;
    if (evhttp_parse_query_str(qs + 1, &q) != 0)
        return -1;
    const char *v = evhttp_find_header(&q, key);
    int rc = 0;
    if (v) {
        char *end;
        double d = strtod(v, &end);
        if (*end || end == v || !(d >= 0 && d <= 1))
            rc = -1;
        else
            *out = (float)d;
    }
    evhttp_clear_headers(&q);
    return rc;
}

static void enqueue(server *s, struct evhttp_request *req, enum endpoint ep, double t0)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len == 0) {
        reply_error(req, ep, 400, "empty body: send the image bytes");
        log_request(s, req, 400, t0);
        return;
    }
    job *j = calloc(1, sizeof(*j));
    if (j)
        j->body = malloc(len);
    if (!j || !j->body) {
        free(j);
        reply_error(req, ep, 503, "out of memory");
        log_request(s, req, 503, t0);
        return;
    }
    evbuffer_remove(in, j->body, len);
    j->len = len;
    j->req = req;
    j->ep = ep;
    j->t_start = t0;
    j->params.thresh = s->cfg.thresh;
    j->params.nms = s->cfg.nms;
    j->image = j->body;
    j->image_len = len;
    if (ep == EP_DETECT) {
        if (query_unit(req, "thresh", &j->params.thresh) ||
            query_unit(req, "nms", &j->params.nms)) {
            reply_error(req, ep, 400, "thresh and nms must be numbers in [0, 1]");
            log_request(s, req, 400, t0);
            free_job(j);
            return;
        }
    } else {
        const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
        char msg[256];
        int found = 0;
        const unsigned char *conf;
        size_t conf_len;
        if (!ct || mpdd_multipart_field(ct, j->body, len, "image", &j->image, &j->image_len,
                                        &found, msg, sizeof(msg)) < 0) {
            reply_error(req, ep, 400, ct ? msg : "expected multipart/form-data with field 'image'");
            log_request(s, req, 400, t0);
            free_job(j);
            return;
        }
        if (!found) {
            reply_error(req, ep, 400, "multipart field 'image' is missing");
            log_request(s, req, 400, t0);
            free_job(j);
            return;
        }
        if (mpdd_multipart_field(ct, j->body, len, "min_confidence", &conf, &conf_len, &found,
                                 msg, sizeof(msg)) == 0 &&
            found) {
            char v[32];
            snprintf(v, sizeof(v), "%.*s", (int)(conf_len < 31 ? conf_len : 31), conf);
            char *end;
            double d = strtod(v, &end);
            if (end == v || !(d >= 0 && d <= 1)) {
                reply_error(req, ep, 400, "min_confidence must be a number in [0, 1]");
                log_request(s, req, 400, t0);
                free_job(j);
                return;
            }
            j->params.thresh = (float)d;
        }
    }
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
    int depth = s->q.depth;
    pthread_mutex_unlock(&s->q.mu);
    if (full) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        reply_error(req, ep, 503, "overloaded: the request queue is full, retry later");
        log_request(s, req, 503, t0);
        free_job(j);
        return;
    }
    conn_of(s, req)->pending = j; /* on_request registered the connection */
    mpdd_metrics_queue(s->metrics, depth, s->q.capacity);
}

static json_t *plan_json(server *s)
{
    mpd_engine *e = s->workers[0].engine;
    mpd_plan_info pi;
    mpd_engine_plan_info(e, &pi);
    json_t *layers = json_array();
    for (int i = 0; i < mpd_engine_layer_count(e); i++) {
        mpd_layer_info li;
        mpd_engine_layer_info(e, i, &li);
        json_array_append_new(layers,
                              json_pack("{s:i, s:s, s:s, s:f, s:f, s:I}", "index", i, "type",
                                        li.kind, "precision", li.precision, "gflop", li.gflop,
                                        "mean_ms", li.runs ? li.total_ms / li.runs : 0.0,
                                        "runs", (json_int_t)li.runs));
    }
    return json_pack("{s:I, s:s, s:s, s:s, s:{s:i, s:i, s:i}, s:o}", "generation",
                     (json_int_t)pi.generation, "scheme", pi.scheme, "source", pi.source,
                     "calibration", pi.calibration, "convolutions", "fp32", pi.layers[0], "fp16",
                     pi.layers[1], "int8", pi.layers[2], "layers", layers);
}

static void start_reload(server *s, struct evhttp_request *waiter);

static void on_request(struct evhttp_request *req, void *arg)
{
    server *s = arg;
    double t0 = now_s();
    const char *uri = evhttp_request_get_uri(req);
    char path[256];
    const char *q = strchr(uri, '?');
    size_t n = q ? (size_t)(q - uri) : strlen(uri);
    snprintf(path, sizeof(path), "%.*s", (int)(n < 255 ? n : 255), uri);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    struct {
        const char *path;
        enum evhttp_cmd_type method;
    } routes[] = {{"/v1/detect", EVHTTP_REQ_POST}, {"/v1/vision/detection", EVHTTP_REQ_POST},
                  {"/v1/health", EVHTTP_REQ_GET},  {"/v1/plan", EVHTTP_REQ_GET},
                  {"/v1/reload", EVHTTP_REQ_POST}, {"/metrics", EVHTTP_REQ_GET}};
    int route = -1;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (!strcmp(path, routes[i].path))
            route = (int)i;
    enum endpoint ep = route == 1 ? EP_VISION : EP_DETECT;
    if (!conn_of(s, req)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        reply_error(req, ep, 503, "too many clients connected (max_clients); retry later");
        log_request(s, req, 503, t0);
        return;
    }
    if (route < 0) {
        reply_error(req, ep, 404, "no such endpoint (see GET /v1/health, POST /v1/detect)");
        log_request(s, req, 404, t0);
        return;
    }
    if (cmd != routes[route].method) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          routes[route].method == EVHTTP_REQ_GET ? "GET" : "POST");
        reply_error(req, ep, 405, "method not allowed for this endpoint");
        log_request(s, req, 405, t0);
        return;
    }
    if (route == 5) {
        char *text = mpdd_metrics_render(s->metrics, MPDETD_VERSION,
                                         s->ready ? mpd_engine_backend(s->workers[0].engine)
                                                  : "loading");
        reply_text(req, 200, "text/plain; version=0.0.4", text ? text : "");
        free(text);
        log_request(s, req, 200, t0);
        return;
    }
    if (!s->ready) {
        reply_error(req, ep, 503, s->load_failed ? s->load_error : "loading the model");
        log_request(s, req, 503, t0);
        return;
    }
    if (s->draining) {
        reply_error(req, ep, 503, "shutting down");
        log_request(s, req, 503, t0);
        return;
    }
    switch (route) {
    case 0:
    case 1: enqueue(s, req, ep, t0); return;
    case 2: {
        mpd_plan_info pi;
        mpd_engine_plan_info(s->workers[0].engine, &pi);
        pthread_mutex_lock(&s->q.mu);
        int depth = s->q.depth;
        pthread_mutex_unlock(&s->q.mu);
        reply_json(req, 200,
                   json_pack("{s:s, s:s, s:I, s:i, s:i}", "status", "ok", "backend",
                             mpd_engine_backend(s->workers[0].engine), "plan_generation",
                             (json_int_t)pi.generation, "queue_depth", depth,
                             "queue_capacity", s->q.capacity));
        log_request(s, req, 200, t0);
        return;
    }
    case 3:
        reply_json(req, 200, plan_json(s));
        log_request(s, req, 200, t0);
        return;
    case 4: start_reload(s, req); return;
    }
}

/* ---- reload ------------------------------------------------------------ */

static void *reload_main(void *arg)
{
    server *s = arg;
    char msg[512] = "";
    mpdd_config next;
    int rc = mpdd_config_load(s->config_path, &next, msg, sizeof(msg));
    if (rc == 0)
        rc = mpdd_config_check_reload(&s->cfg, &next, msg, sizeof(msg));
    /* Validate once, then build the plan for every engine; each swap
     * happens between two of that engine's requests. */
    if (rc == 0)
        rc = mpd_engine_check_plan(s->workers[0].engine, next.plan[0] ? next.plan : NULL, msg,
                                   sizeof(msg));
    for (int i = 0; rc == 0 && i < s->nworkers; i++)
        rc = mpd_engine_load_plan(s->workers[i].engine, next.plan[0] ? next.plan : NULL, msg,
                                  sizeof(msg));
    pthread_mutex_lock(&s->reload_mu);
    s->reload_ok = rc == 0;
    snprintf(s->reload_msg, sizeof(s->reload_msg), "%s", msg);
    if (rc == 0)
        s->reload_cfg = next;
    pthread_mutex_unlock(&s->reload_mu);
    event_active(s->reload_ev, 0, 0);
    return NULL;
}

static void start_reload(server *s, struct evhttp_request *waiter)
{
    if (waiter) {
        if (s->nwaiters == (int)(sizeof(s->reload_waiters) / sizeof(s->reload_waiters[0]))) {
            reply_error(waiter, EP_DETECT, 503, "too many reloads waiting");
            return;
        }
        s->reload_waiters[s->nwaiters++] = waiter;
    }
    if (s->reload_running)
        return; /* the running reload answers every waiter */
    s->reload_running = 1;
    mpdd_notify_reloading();
    logmsg(MPD_LOG_INFO, "reloading %s", s->config_path);
    if (pthread_create(&s->reload_tid, NULL, reload_main, s) != 0) {
        s->reload_running = 0;
        s->reload_ok = 0;
        snprintf(s->reload_msg, sizeof(s->reload_msg), "cannot start the reload thread");
        event_active(s->reload_ev, 0, 0);
    }
}

static void on_reload_done(evutil_socket_t fd, short what, void *arg)
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
        memcpy(s->cfg.plan, s->reload_cfg.plan, sizeof(s->cfg.plan));
        s->cfg.thresh = s->reload_cfg.thresh;
        s->cfg.nms = s->reload_cfg.nms;
        s->cfg.log_level = s->reload_cfg.log_level;
        pthread_mutex_unlock(&s->reload_mu);
        log_level = s->cfg.log_level;
    }
    mpd_plan_info pi;
    mpd_engine_plan_info(s->workers[0].engine, &pi);
    mpdd_metrics_reload(s->metrics, s->reload_ok);
    mpdd_metrics_plan(s->metrics, pi.generation);
    if (s->reload_ok)
        logmsg(MPD_LOG_INFO, "reload done: plan generation %lu (%s)", pi.generation, pi.source);
    else
        logmsg(MPD_LOG_ERR, "reload failed, the old plan keeps serving: %s", s->reload_msg);
    char status[1200];
    snprintf(status, sizeof(status), "serving, plan %lu (%s)%s%s", pi.generation, pi.source,
             s->reload_ok ? "" : "; last reload failed: ", s->reload_ok ? "" : s->reload_msg);
    mpdd_notify_ready(status);
    for (int i = 0; i < s->nwaiters; i++) {
        struct evhttp_request *req = s->reload_waiters[i];
        json_t *j = s->reload_ok ? json_pack("{s:b, s:I, s:s}", "reloaded", 1, "generation",
                                             (json_int_t)pi.generation, "source", pi.source)
                                 : json_pack("{s:b, s:I, s:s, s:i}", "reloaded", 0, "generation",
                                             (json_int_t)pi.generation, "error", s->reload_msg,
                                             "status", 422);
        reply_json(req, s->reload_ok ? 200 : 422, j);
        log_request(s, req, s->reload_ok ? 200 : 422, now_s());
    }
    s->nwaiters = 0;
}

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
        logmsg(MPD_LOG_ERR, "cannot load the model: %s", s->load_error);
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
    logmsg(MPD_LOG_INFO, "ready on %s: %d worker(s), %s, plan %s", s->cfg.socket, s->nworkers,
           desc, pi.source);
    snprintf(status, sizeof(status), "serving, plan %lu (%s)", pi.generation, pi.source);
    mpdd_notify_ready(status);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    mpdd_notify_watchdog();
}

static void maybe_finish_drain(server *s)
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

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    server *s = arg;
    if (sig == SIGHUP) {
        if (s->ready)
            start_reload(s, NULL);
        return;
    }
    if (s->draining)
        return;
    /* SIGTERM / SIGINT: stop accepting, answer what is queued, exit 0. */
    s->draining = 1;
    pthread_mutex_lock(&s->q.mu);
    int queued = s->q.depth;
    pthread_mutex_unlock(&s->q.mu);
    logmsg(MPD_LOG_INFO, "stopping: finishing %d queued request(s)", queued);
    mpdd_notify_stopping();
    if (s->bound)
        evhttp_del_accept_socket(s->http, s->bound);
    if (s->bound_tcp)
        evhttp_del_accept_socket(s->http, s->bound_tcp);
    s->bound = s->bound_tcp = NULL;
    maybe_finish_drain(s);
}

/* Binds the Unix socket. A socket file whose server is gone is replaced; a
 * live one is left alone and startup fails. */
static int bind_unix(server *s, char *msg, size_t msglen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(s->cfg.socket) >= sizeof(sa.sun_path)) {
        snprintf(msg, msglen, "socket path too long: %s", s->cfg.socket);
        return -1;
    }
    strcpy(sa.sun_path, s->cfg.socket);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(msg, msglen, "socket: %s", strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (errno != EADDRINUSE) {
            snprintf(msg, msglen, "bind %s: %s", s->cfg.socket, strerror(errno));
            close(fd);
            return -1;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (probe >= 0)
            close(probe);
        if (live) {
            snprintf(msg, msglen, "%s: another mpdetd is serving there", s->cfg.socket);
            close(fd);
            return -1;
        }
        logmsg(MPD_LOG_WARNING, "replacing stale socket %s", s->cfg.socket);
        unlink(s->cfg.socket);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            snprintf(msg, msglen, "bind %s: %s", s->cfg.socket, strerror(errno));
            close(fd);
            return -1;
        }
    }
    s->owns_socket_file = 1;
    if (chmod(s->cfg.socket, s->cfg.socket_mode) != 0)
        logmsg(MPD_LOG_WARNING, "chmod %s: %s", s->cfg.socket, strerror(errno));
    if (s->cfg.socket_group[0]) {
        struct group *g = getgrnam(s->cfg.socket_group);
        if (!g || chown(s->cfg.socket, (uid_t)-1, g->gr_gid) != 0)
            logmsg(MPD_LOG_WARNING, "cannot give %s to group %s", s->cfg.socket,
                   s->cfg.socket_group);
    }
    if (listen(fd, 128) != 0) {
        snprintf(msg, msglen, "listen %s: %s", s->cfg.socket, strerror(errno));
        close(fd);
        return -1;
    }
    s->bound = evhttp_accept_socket_with_handle(s->http, fd);
    if (!s->bound) {
        snprintf(msg, msglen, "cannot serve %s", s->cfg.socket);
        close(fd);
        return -1;
    }
    return 0;
}

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
    log_journal = getenv("JOURNAL_STREAM") != NULL || getenv("INVOCATION_ID") != NULL;
    static server srv;
    server *s = &srv;
    char msg[1024];
    if (mpdd_config_load(config, &s->cfg, msg, sizeof(msg))) {
        fprintf(stderr, "mpdetd: %s\n", msg);
        return 1;
    }
    if (socket_override)
        snprintf(s->cfg.socket, sizeof(s->cfg.socket), "%s", socket_override);
    log_level = s->cfg.log_level;
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
    s->config_path = (char *)config;
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    s->base = event_base_new();
    s->http = s->base ? evhttp_new(s->base) : NULL;
    /* Room for the largest darknet graphs (yolov3 has 107 layers). */
    s->metrics = mpdd_metrics_create(512);
    if (!s->http || !s->metrics) {
        fprintf(stderr, "mpdetd: out of memory\n");
        return 1;
    }
    /* evhttp's limits default to unlimited and no timeout: set them all. */
    evhttp_set_max_body_size(s->http, (ev_ssize_t)s->cfg.max_body);
    evhttp_set_max_headers_size(s->http, (ev_ssize_t)s->cfg.max_header);
    evhttp_set_timeout(s->http, s->cfg.timeout);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
    evhttp_set_gencb(s->http, on_request, s);
    pthread_mutex_init(&s->q.mu, NULL);
    pthread_cond_init(&s->q.cv, NULL);
    pthread_mutex_init(&s->reload_mu, NULL);
    s->q.capacity = s->cfg.queue_depth;
    s->done_ev = event_new(s->base, -1, 0, on_done, s);
    s->reload_ev = event_new(s->base, -1, 0, on_reload_done, s);
    s->ready_ev = event_new(s->base, -1, 0, on_ready, s);
    s->sig_hup = evsignal_new(s->base, SIGHUP, on_signal, s);
    s->sig_term = evsignal_new(s->base, SIGTERM, on_signal, s);
    s->sig_int = evsignal_new(s->base, SIGINT, on_signal, s);
    event_add(s->sig_hup, NULL);
    event_add(s->sig_term, NULL);
    event_add(s->sig_int, NULL);
    /* A socket from systemd (LISTEN_FDS) wins over the configured path. */
    int passed = mpdd_listen_fds();
    if (passed > 0) {
        s->bound = evhttp_accept_socket_with_handle(s->http, 3);
        if (!s->bound) {
            fprintf(stderr, "mpdetd: cannot serve the socket passed by systemd\n");
            return 1;
        }
        logmsg(MPD_LOG_INFO, "serving the socket passed by systemd");
    } else if (bind_unix(s, msg, sizeof(msg))) {
        fprintf(stderr, "mpdetd: %s\n", msg);
        return 1;
    }
    if (s->cfg.tcp_listen[0]) {
        char host[64];
        int port;
        if (mpdd_config_tcp_split(s->cfg.tcp_listen, host, sizeof(host), &port, msg,
                                  sizeof(msg))) {
            fprintf(stderr, "mpdetd: %s\n", msg);
            return 1;
        }
        s->bound_tcp = evhttp_bind_socket_with_handle(s->http, host, (ev_uint16_t)port);
        if (!s->bound_tcp) {
            fprintf(stderr, "mpdetd: cannot listen on %s\n", s->cfg.tcp_listen);
            return 1;
        }
        logmsg(MPD_LOG_INFO, "also listening on %s", s->cfg.tcp_listen);
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
        if (pthread_create(&s->workers[i].tid, NULL, worker_main, &s->workers[i]) != 0) {
            fprintf(stderr, "mpdetd: cannot start worker threads\n");
            return 1;
        }
    }
    logmsg(MPD_LOG_INFO, "mpdetd %s starting: %s, loading %s", MPDETD_VERSION, s->cfg.socket,
           s->cfg.weights);
    mpdd_notify_status("loading the model");
    event_base_dispatch(s->base);
    /* Drained (or the model failed to load): stop the workers. */
    pthread_mutex_lock(&s->q.mu);
    s->q.stopping = 1;
    pthread_cond_broadcast(&s->q.cv);
    pthread_mutex_unlock(&s->q.mu);
    for (int i = 0; i < s->nworkers; i++)
        pthread_join(s->workers[i].tid, NULL);
    int status = s->load_failed ? 1 : 0;
    for (int i = 0; i < s->nworkers; i++)
        mpd_engine_close(s->workers[i].engine);
    if (s->owns_socket_file)
        unlink(s->cfg.socket);
    logmsg(MPD_LOG_INFO, "stopped");
    evhttp_free(s->http);
    event_free(s->done_ev);
    event_free(s->reload_ev);
    event_free(s->ready_ev);
    if (s->watchdog_ev)
        event_free(s->watchdog_ev);
    event_free(s->sig_hup);
    event_free(s->sig_term);
    event_free(s->sig_int);
    event_base_free(s->base);
    mpdd_metrics_free(s->metrics);
    free(s->workers);
    return status;
}
