/* http.c - the HTTP side of mpdetd (loop thread only): routing, request
 * parsing, replies and the record of client connections. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "multipart.h"
#include "server.h"

/* Sends body (len bytes) as the reply. evhttp 2.1 would send a body after
 * HEAD too, which a kept-alive client would then read as the next reply:
 * for HEAD only the headers go, with the body's length. */
static void send_body(struct evhttp_request *req, int code, const char *ctype, const char *body,
                      size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", ctype);
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        char n[32];
        snprintf(n, sizeof(n), "%zu", len);
        evhttp_add_header(h, "Content-Length", n);
        evhttp_send_reply(req, code, NULL, NULL);
        return;
    }
    struct evbuffer *b = evbuffer_new();
    if (b)
        evbuffer_add(b, body, len);
    evhttp_send_reply(req, code, NULL, b);
    if (b)
        evbuffer_free(b);
}

void mpdd_reply_json(struct evhttp_request *req, int code, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    size_t n = text ? strlen(text) : 0;
    char *line = malloc(n + 2);
    if (line) {
        memcpy(line, text ? text : "", n);
        line[n] = '\n';
        line[n + 1] = '\0';
    }
    send_body(req, code, "application/json", line ? line : "{}\n", line ? n + 1 : 3);
    free(line);
    free(text);
    json_decref(j);
}

void mpdd_reply_text(struct evhttp_request *req, int code, const char *ctype, const char *text)
{
    send_body(req, code, ctype, text, strlen(text));
}

/* Errors: {"error": ..., "status": N}; the DeepStack endpoint uses its own
 * shape {"success": false, "error": ..., "code": N}. */
char *mpdd_error_body(enum endpoint ep, int code, const char *msg)
{
    json_t *j = ep == EP_VISION
                    ? json_pack("{s:b, s:s, s:i}", "success", 0, "error", msg, "code", code)
                    : json_pack("{s:s, s:i}", "error", msg, "status", code);
    char *t = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return t;
}

void mpdd_reply_error(struct evhttp_request *req, enum endpoint ep, int code, const char *msg)
{
    char *t = mpdd_error_body(ep, code, msg);
    mpdd_reply_text(req, code, "application/json", t ? t : "{}");
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
void mpdd_log_request(server *s, struct evhttp_request *req, int code, double t0)
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
    double dt = mpd_now() - t0;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    mpdd_log(MPD_LOG_INFO, "%s %s -> %d (%.1f ms)",
             cmd == EVHTTP_REQ_POST ? "POST" : cmd == EVHTTP_REQ_GET ? "GET"
                                             : cmd == EVHTTP_REQ_HEAD ? "HEAD" : "other",
             path, code, dt * 1e3);
    mpdd_metrics_request(s->metrics, endpoint_name(path), code, dt);
}

/* The connection closed (either side): forget it. A job still waiting for
 * it is marked abandoned: a worker skips it, and mpdd_on_done frees the
 * request evhttp detached from the connection. */
static void on_conn_close(struct evhttp_connection *c, void *arg)
{
    (void)c;
    conn *cn = arg;
    server *s = cn->s;
    if (cn->pending) /* its job is dropped, or its reply discarded */
        atomic_store(&cn->pending->abandoned, 1);
    if (cn->watch)
        event_free(cn->watch);
    for (conn **p = &s->conns; *p; p = &(*p)->next) {
        if (*p == cn) {
            *p = cn->next;
            break;
        }
    }
    s->nconns--;
    free(cn);
}

/* Which listener the connection came from, and on the Unix socket the
 * peer's uid as the kernel vouches for it. */
static void identify_peer(conn *c)
{
    c->uid = -1;
    int fd = bufferevent_getfd(evhttp_connection_get_bufferevent(c->evcon));
    struct sockaddr_storage sa;
    socklen_t len = sizeof(sa);
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        return;
    c->tcp = sa.ss_family != AF_UNIX;
    struct ucred cred;
    socklen_t clen = sizeof(cred);
    if (!c->tcp && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0)
        c->uid = (long)cred.uid;
}

/* Compares without an early exit, so timing does not tell how much of a
 * guess was right. */
static int same_key(const char *a, const char *b, size_t blen)
{
    size_t alen = strlen(a);
    unsigned char diff = alen != blen;
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)a[i % (alen ? alen : 1)] ^ (unsigned char)b[i];
    return diff == 0;
}

/* Whether a request carries the right api_key in its headers or query:
 * 1 yes, 0 a wrong one, -1 none at all. */
static int request_key(const server *s, struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *k = evhttp_find_header(h, "X-Api-Key");
    const char *auth = evhttp_find_header(h, "Authorization");
    if (!k && auth && !strncasecmp(auth, "Bearer ", 7))
        k = auth + 7;
    if (k)
        return same_key(s->cfg.api_key, k, strlen(k));
    const char *qs = strchr(evhttp_request_get_uri(req), '?');
    struct evkeyvalq q;
    if (!qs || evhttp_parse_query_str(qs + 1, &q) != 0)
        return -1;
    k = evhttp_find_header(&q, "api_key");
    int rc = k ? same_key(s->cfg.api_key, k, strlen(k)) : -1;
    evhttp_clear_headers(&q);
    return rc;
}

/* 0 when a TCP request may go on: no key is configured, or it carries the
 * right one (for DeepStack's endpoint also as the form field, checked once
 * the body is parsed: *check_form is set). */
static int tcp_key_ok(const server *s, struct evhttp_request *req, int vision, int *check_form)
{
    *check_form = 0;
    if (!s->cfg.api_key[0])
        return 0;
    int k = request_key(s, req);
    if (k == 1)
        return 0;
    if (vision && k < 0) {
        *check_form = 1;
        return 0;
    }
    return -1;
}

/* Whether c's peer may POST /v1/reload (a TCP peer got past the key). */
static int may_reload(const server *s, const conn *c)
{
    if (c->tcp)
        return s->cfg.api_key[0] != 0;
    if (!strcmp(s->cfg.reload_access, "socket"))
        return 1;
    return c->uid == 0 || c->uid == (long)geteuid();
}

/* Closes the connection idle the longest - one that waits for neither a
 * detection nor a reload - to make room for a new client. Returns 0, or -1
 * when every connection is busy. */
static int evict_idle(server *s)
{
    conn *victim = NULL;
    for (conn *c = s->conns; c; c = c->next)
        if (!c->pending && !c->waiting_reload &&
            (!victim || c->last_active < victim->last_active))
            victim = c;
    if (!victim)
        return -1;
    mpdd_log(MPD_LOG_DEBUG, "max_clients reached: closing a connection idle for %.1f s",
             mpd_now() - victim->last_active);
    /* Runs on_conn_close, which forgets the record. */
    evhttp_connection_free(victim->evcon);
    return 0;
}

/* The record of req's connection, created on its first request. At
 * max_clients the longest idle connection is closed for it, so kept-alive
 * clients that went quiet cannot lock out working ones; NULL when every
 * connection is busy (or out of memory). */
static conn *conn_of(server *s, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    for (conn *c = s->conns; c; c = c->next)
        if (c->evcon == evcon) {
            c->last_active = mpd_now();
            return c;
        }
    if (s->nconns >= s->cfg.max_clients && evict_idle(s) != 0)
        return NULL;
    conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->evcon = evcon;
    c->s = s;
    c->last_active = mpd_now();
    identify_peer(c);
    c->next = s->conns;
    s->conns = c;
    s->nconns++;
    evhttp_connection_set_closecb(evcon, on_conn_close, c);
    return c;
}

void mpdd_conn_waiting_reload(server *s, struct evhttp_request *req, int waiting)
{
    /* A request detached from its closed connection has none. */
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    for (conn *c = s->conns; evcon && c; c = c->next)
        if (c->evcon == evcon)
            c->waiting_reload = waiting;
}

void mpdd_conn_job_done(server *s, job *j)
{
    for (conn *c = s->conns; c; c = c->next)
        if (c->pending == j) {
            c->pending = NULL;
            if (c->watch)
                event_free(c->watch);
            c->watch = NULL;
        }
}

/* The socket of a connection whose job waits became readable: the client
 * hung up (or sent more). evhttp 2.1 stops reading a connection once it
 * has a whole request, so without this watch a hang-up is only noticed
 * when the reply is written - after the job ran. */
static void on_client_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    conn *c = arg;
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        event_add(c->watch, NULL); /* spurious: keep watching */
        return;
    }
    if (n > 0) /* a pipelined request: evhttp reads it after the reply */
        return;
    /* End of file or a socket error: nobody will read the reply. Closing
     * the connection frees its request and runs on_conn_close, which marks
     * the job abandoned and frees c; the job must forget the request. */
    job *j = c->pending;
    mpdd_log(MPD_LOG_DEBUG, "client hung up while its request waited");
    evhttp_connection_free(c->evcon);
    if (j)
        j->req = NULL;
}

/* Starts watching c's socket for a hang-up while its job waits. */
static void watch_client(server *s, conn *c)
{
    int fd = bufferevent_getfd(evhttp_connection_get_bufferevent(c->evcon));
    if (fd < 0 || c->watch)
        return;
    c->watch = event_new(s->base, fd, EV_READ, on_client_readable, c);
    if (c->watch)
        event_add(c->watch, NULL);
}

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

static void enqueue(server *s, struct evhttp_request *req, enum endpoint ep, double t0,
                    int form_key)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len == 0) {
        mpdd_reply_error(req, ep, 400, "empty body: send the image bytes");
        mpdd_log_request(s, req, 400, t0);
        return;
    }
    job *j = calloc(1, sizeof(*j));
    if (j)
        j->body = malloc(len);
    if (!j || !j->body) {
        free(j);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        mpdd_reply_error(req, ep, 503, "out of memory");
        mpdd_log_request(s, req, 503, t0);
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
            mpdd_reply_error(req, ep, 400, "thresh and nms must be numbers in [0, 1]");
            mpdd_log_request(s, req, 400, t0);
            mpdd_free_job(j);
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
            mpdd_reply_error(req, ep, 400, ct ? msg : "expected multipart/form-data with field 'image'");
            mpdd_log_request(s, req, 400, t0);
            mpdd_free_job(j);
            return;
        }
        if (!found) {
            mpdd_reply_error(req, ep, 400, "multipart field 'image' is missing");
            mpdd_log_request(s, req, 400, t0);
            mpdd_free_job(j);
            return;
        }
        if (form_key) {
            const unsigned char *key;
            size_t key_len;
            if (mpdd_multipart_field(ct, j->body, len, "api_key", &key, &key_len, &found, msg,
                                     sizeof(msg)) != 0 ||
                !found || !same_key(s->cfg.api_key, (const char *)key, key_len)) {
                mpdd_reply_error(req, ep, 401, "this listener needs the api_key");
                mpdd_log_request(s, req, 401, t0);
                mpdd_free_job(j);
                return;
            }
        }
        if (mpdd_multipart_field(ct, j->body, len, "min_confidence", &conf, &conf_len, &found,
                                 msg, sizeof(msg)) == 0 &&
            found) {
            char v[32];
            snprintf(v, sizeof(v), "%.*s", (int)(conf_len < 31 ? conf_len : 31), conf);
            char *end;
            double d = strtod(v, &end);
            if (end == v || !(d >= 0 && d <= 1)) {
                mpdd_reply_error(req, ep, 400, "min_confidence must be a number in [0, 1]");
                mpdd_log_request(s, req, 400, t0);
                mpdd_free_job(j);
                return;
            }
            j->params.thresh = (float)d;
        }
    }
    /* Bounded work whatever the client asks: thresh=0 would rank and
     * return every box of every class. */
    if (j->params.thresh < s->cfg.min_thresh)
        j->params.thresh = s->cfg.min_thresh;
    j->max_detections = s->cfg.max_detections;
    j->timing_every = s->cfg.layer_timing_every;
    j->batch_window_us = s->cfg.batch_window_us;
    j->formats = s->formats;
    int depth = mpdd_queue_push(s, j);
    if (depth < 0) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        mpdd_reply_error(req, ep, 503, "overloaded: the request queue is full, retry later");
        mpdd_log_request(s, req, 503, t0);
        mpdd_free_job(j);
        return;
    }
    conn *c = conn_of(s, req); /* mpdd_on_request registered the connection */
    c->pending = j;
    watch_client(s, c);
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
    return json_pack("{s:I, s:s, s:s, s:s, s:{s:i, s:i, s:i, s:i}, s:o}", "generation",
                     (json_int_t)pi.generation, "scheme", pi.scheme, "source", pi.source,
                     "calibration", pi.calibration, "convolutions", "fp32",
                     pi.layers[MPD_PREC_FP32], "fp16", pi.layers[MPD_PREC_FP16], "int8",
                     pi.layers[MPD_PREC_INT8], "bf16", pi.layers[MPD_PREC_BF16], "layers", layers);
}


void mpdd_on_request(struct evhttp_request *req, void *arg)
{
    server *s = arg;
    double t0 = mpd_now();
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
    /* The framing check ended a malformed chunked body early; nothing
     * after it on this connection can be trusted. */
    const char *framing = mpdd_framing_error(s, req);
    if (framing) {
        char m[160];
        snprintf(m, sizeof(m), "malformed chunked body: %s", framing);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        mpdd_reply_error(req, ep, 400, m);
        mpdd_log_request(s, req, 400, t0);
        return;
    }
    conn *c = conn_of(s, req);
    if (!c) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        mpdd_reply_error(req, ep, 503, "too many clients connected (max_clients); retry later");
        mpdd_log_request(s, req, 503, t0);
        return;
    }
    /* The TCP listener bypasses the socket's permissions: with api_key set
     * every request there but a health check must carry it. */
    int form_key = 0;
    if (c->tcp && route != 2 && tcp_key_ok(s, req, route == 1, &form_key) != 0) {
        mpdd_reply_error(req, ep, 401, "this listener needs the api_key (X-Api-Key header)");
        mpdd_log_request(s, req, 401, t0);
        return;
    }
    if (route == 4 && !may_reload(s, c)) {
        char m[200];
        if (c->tcp)
            snprintf(m, sizeof(m), "reloads over TCP need api_key to be set");
        else
            snprintf(m, sizeof(m), "uid %ld may not reload (reload_access = owner: root or uid %ld)",
                     c->uid, (long)geteuid());
        mpdd_reply_error(req, ep, 403, m);
        mpdd_log_request(s, req, 403, t0);
        return;
    }
    if (route < 0) {
        mpdd_reply_error(req, ep, 404, "no such endpoint (see GET /v1/health, POST /v1/detect)");
        mpdd_log_request(s, req, 404, t0);
        return;
    }
    /* HEAD is GET without the body (evhttp leaves the body out). */
    if (cmd == EVHTTP_REQ_HEAD && routes[route].method == EVHTTP_REQ_GET)
        cmd = EVHTTP_REQ_GET;
    if (cmd != routes[route].method) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          routes[route].method == EVHTTP_REQ_GET ? "GET" : "POST");
        mpdd_reply_error(req, ep, 405, "method not allowed for this endpoint");
        mpdd_log_request(s, req, 405, t0);
        return;
    }
    if (route == 5) {
        char *text = mpdd_metrics_render(s->metrics, MPDETD_VERSION,
                                         s->ready ? mpd_engine_backend(s->workers[0].engine)
                                                  : "loading");
        mpdd_reply_text(req, 200, "text/plain; version=0.0.4", text ? text : "");
        free(text);
        mpdd_log_request(s, req, 200, t0);
        return;
    }
    if (!s->ready) {
        /* Loading takes a second or two (more on a GPU); a failed load
         * is retried by systemd's restart. */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
                          s->load_failed ? "5" : "1");
        mpdd_reply_error(req, ep, 503, s->load_failed ? s->load_error : "loading the model");
        mpdd_log_request(s, req, 503, t0);
        return;
    }
    if (s->draining) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "5");
        mpdd_reply_error(req, ep, 503, "shutting down");
        mpdd_log_request(s, req, 503, t0);
        return;
    }
    switch (route) {
    case 0:
    case 1: enqueue(s, req, ep, t0, form_key); return;
    case 2: {
        mpd_plan_info pi;
        mpd_engine_plan_info(s->workers[0].engine, &pi);
        pthread_mutex_lock(&s->q.mu);
        int depth = s->q.depth;
        pthread_mutex_unlock(&s->q.mu);
        mpdd_reply_json(req, 200,
                   json_pack("{s:s, s:s, s:I, s:i, s:i}", "status", "ok", "backend",
                             mpd_engine_backend(s->workers[0].engine), "plan_generation",
                             (json_int_t)pi.generation, "queue_depth", depth,
                             "queue_capacity", s->q.capacity));
        mpdd_log_request(s, req, 200, t0);
        return;
    }
    case 3:
        mpdd_reply_json(req, 200, plan_json(s));
        mpdd_log_request(s, req, 200, t0);
        return;
    case 4: mpdd_start_reload(s, req, t0); return;
    }
}