/* server.h - mpdetd's internals, shared by its files and by nothing else.
 *
 * One event-loop thread owns libevent's evhttp: it accepts HTTP/1.1 on a
 * Unix socket (or a socket passed by systemd), answers the cheap endpoints
 * itself and queues detections. Worker threads - one engine each - take
 * jobs from a bounded queue and hand finished replies back to the loop
 * with event_active(); only the loop thread touches evhttp. A reload
 * thread builds new plans off the request path. Signals are libevent
 * signal events on the loop.
 *
 * The files, one role each:
 *   main.c    the command line (options, --check-config)
 *   mpdetd.c  start-up, signals, readiness, drain and shutdown
 *   listen.c  the listening sockets (Unix, systemd's, loopback TCP)
 *   http.c    routing, request parsing, replies, client connections
 *   queue.c   the job queue and the workers that run detections
 *   reload.c  applying a new configuration and plan at run time
 *   log.c     the log (stderr, or the journal's priority prefixes) */
#ifndef MPDD_SERVER_H
#define MPDD_SERVER_H

#include <pthread.h>
#include <stdatomic.h>

#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "config.h"
#include "engine.h"
#include "metrics.h"

#define MPDETD_VERSION "0.3.0"

/* ---- log.c ----------------------------------------------------------- */

/* Read by every thread, changed by a reload on the loop thread. */
extern _Atomic int mpdd_log_level;
/* Nonzero under systemd: lines carry "<N>" priority prefixes. */
extern int mpdd_log_journal;
void mpdd_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An mpd_log_fn for the engine. */
void mpdd_engine_log(void *ud, int prio, const char *msg);

/* ---- jobs, connections, the queue ------------------------------------ */

enum endpoint { EP_DETECT, EP_VISION };

typedef struct job {
    struct job *next;
    /* Loop thread only. Once abandoned: a request evhttp detached from the
     * failed connection (ours to free), or NULL when we closed the
     * connection and the request with it. */
    struct evhttp_request *req;
    enum endpoint ep;
    unsigned char *body;
    size_t len;
    const unsigned char *image; /* into body */
    size_t image_len;
    mpd_detect_params params;
    int max_detections; /* the reply keeps the best this many */
    int timing_every;   /* cfg.layer_timing_every when queued */
    int batch_window_us; /* cfg.batch_window_us when queued */
    unsigned formats;   /* image formats accepted (MPD_IMAGE_FORMAT_BIT set) */
    double t_start;
    /* Set by the loop when the client hangs up: a worker skips the job,
     * and the loop frees the request libevent detached (evhttp 2.1 frees a
     * request detached from a failed connection only on a reply or
     * evhttp_request_free). */
    _Atomic int abandoned;
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
    job *pending;       /* the job whose reply this connection waits for */
    int waiting_reload; /* its request waits for a reload's answer */
    double last_active; /* arrival of its latest request */
    int tcp;            /* came in on the TCP listener */
    long uid;           /* Unix socket peer's uid (SO_PEERCRED), -1 if unknown */
    struct event *watch; /* notices a hang-up while its job waits */
} conn;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    int depth, capacity;
    int stopping;
    job *done; /* finished, waiting for the loop */
} queue;

typedef struct {
    struct server *s;
    int index;
    pthread_t tid;
    mpd_engine *engine; /* worker 0's loaded the model; the others share it */
    int busy;                  /* under q.mu */
    unsigned long passes;      /* forward passes run, timed or not (the worker's own) */
    _Atomic double busy_since; /* when its current job started; 0 when idle */
} worker;

/* Fault injection for the tests of docs/reliability.md, from the
 * environment variable MPDETD_FAULT (unset in production: every field
 * is then inert):
 *   prepare_plan:N   preparing a reloaded plan fails (N: any worker; the
 *                    workers share one model, so one preparation serves all)
 *   stall:N          worker N hangs in its next job (a stuck device call)
 *   device_error:N   worker N's next job fails as a lost device does */
typedef struct {
    int prepare_plan, stall, device_error; /* a worker index, or -1 */
} faults;

/* A reload waiter: the request and when it arrived. */
typedef struct {
    struct evhttp_request *req;
    double t0;
} waiter;

typedef struct server {
    mpdd_config cfg;
    char *config_path;
    const char *socket_override; /* --socket: wins over the file, at reload too */
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
    int model;          /* under q.mu: 0 loading, 1 loaded by worker 0, -1 failed */
    pthread_cond_t model_cv; /* model left 0 */
    int load_failed;
    char load_error[512];
    int owns_socket_file;
    int draining;
    _Atomic int fatal; /* a worker hit an unrecoverable device error */
    unsigned formats;  /* cfg.image_formats parsed (loop thread) */
    faults fault;
    struct conn *conns; /* connections that have sent a request (loop thread) */
    int nconns;
    struct framed *framed; /* every connection's stream (loop thread) */
    struct event *sweep_ev; /* drops the streams of closed connections */
    mpdd_metrics *metrics;
    /* Reload. */
    pthread_mutex_t reload_mu;
    int reload_running;
    int reload_ok;
    mpdd_config reload_cfg; /* what the reload read; applied by the loop */
    char reload_msg[512];
    waiter reload_waiters[16];
    int nwaiters;
    pthread_t reload_tid;
    /* The plan generation every engine serves (they share the number);
     * written by the loop when a reload commits, read by workers. */
    _Atomic unsigned long generation;
} server;

/* ---- http.c (loop thread) -------------------------------------------- */

/* evhttp's callback for every request. */
void mpdd_on_request(struct evhttp_request *req, void *arg);
void mpdd_reply_text(struct evhttp_request *req, int code, const char *ctype, const char *text);
void mpdd_reply_json(struct evhttp_request *req, int code, json_t *j);
void mpdd_reply_error(struct evhttp_request *req, enum endpoint ep, int code, const char *msg);
/* The error body of either endpoint's shape (malloc'd; NULL when out of
 * memory). */
char *mpdd_error_body(enum endpoint ep, int code, const char *msg);
/* One line per request at info, with status and time, and its metrics. */
void mpdd_log_request(server *s, struct evhttp_request *req, int code, double t0);
/* Forgets a finished job in its connection's record. */
void mpdd_conn_job_done(server *s, job *j);
/* Marks whether req's connection waits for a reload (is busy). */
void mpdd_conn_waiting_reload(server *s, struct evhttp_request *req, int waiting);

/* ---- queue.c --------------------------------------------------------- */

/* A worker thread: opens its engine (for max_batch images), then runs
 * jobs, in batches of up to max_batch, until stopping. */
void *mpdd_worker_main(void *arg);
/* Queues j; returns the new depth, or -1 when the queue is full. */
int mpdd_queue_push(server *s, job *j);
/* Loop thread: the done_ev callback that sends finished replies. */
void mpdd_on_done(evutil_socket_t fd, short what, void *arg);
void mpdd_free_job(job *j);

/* ---- reload.c (loop thread) ------------------------------------------ */

/* Starts a reload, or joins the running one; waiter (may be NULL) gets
 * the answer. */
void mpdd_start_reload(server *s, struct evhttp_request *waiter, double t0);
/* The reload_ev callback: applies what the reload thread built. */
void mpdd_on_reload_done(evutil_socket_t fd, short what, void *arg);

/* ---- listen.c (start-up) --------------------------------------------- */

/* Serves systemd's socket or binds the configured one, and the TCP
 * listener when set. Returns 0, or -1 with msg. */
int mpdd_listen(server *s, char *msg, size_t msglen);

/* ---- stream.c (loop thread) ------------------------------------------ */

/* evhttp's bufferevent callback (evhttp_set_bevcb, arg s): a socket
 * bufferevent with the framing check of framing.h on its input, so a
 * malformed chunked body gets 400, not evhttp's 413. NULL (out of memory)
 * lets evhttp make a plain one. */
struct bufferevent *mpdd_connection_bev(struct event_base *base, void *arg);
/* Starts the timer that, each second, drops what closed connections left;
 * 0 or -1. */
int mpdd_streams_start(server *s);
/* After evhttp_free: drops every stream and the timer. */
void mpdd_streams_free(server *s);
/* The client connections evhttp holds open, from accept on: unlike
 * nconns, also those that have not yet sent a whole first request. */
int mpdd_streams_open(server *s);
/* Why the framing of req's body failed (the filter ended the body early:
 * the request must get 400 and the connection close), or NULL. */
const char *mpdd_framing_error(server *s, struct evhttp_request *req);

/* ---- mpdetd.c (loop thread) ------------------------------------------ */

/* Reads the configuration at config into s (a zeroed server), with the
 * command line's socket_override (may be NULL) and MPDETD_FAULT from the
 * environment, and sets the log level. Returns 0, or -1 with msg. */
int mpdd_server_init(server *s, const char *config, const char *socket_override, char *msg,
                     size_t msglen);
/* Sets up the event base, evhttp with the configured limits, the queue
 * and the loop's events, and starts the workers, which load the engines
 * (s->ready once all have). With serve set, also the signal events
 * (SIGHUP, SIGTERM, SIGINT) and the listening sockets (mpdd_listen);
 * without, the caller hands evhttp its own (evhttp_accept_socket) and
 * keeps its signal handlers (a test harness). SIGPIPE is ignored. The
 * caller then runs s->base. Returns 0, or -1 with msg (what was set up is
 * left: the process is expected to exit). */
int mpdd_server_start(server *s, int serve, char *msg, size_t msglen);
/* Once the loop has returned: stops and joins the workers, closes the
 * engines, removes the socket file it created and frees what start set
 * up. Returns the exit status: 1 when the model failed to load or a
 * device failed, else 0. */
int mpdd_server_finish(server *s);

/* Writes the command line's settings over c (a file just read). */
void mpdd_apply_overrides(const server *s, mpdd_config *c);

/* Exits the loop once draining and nothing is left to answer. */
void mpdd_maybe_finish_drain(server *s);
/* Starts the drain: stop accepting, answer what is queued, then exit
 * (status 1 when s->fatal is set). */
void mpdd_start_drain(server *s, const char *why);

#endif
