/* metrics.c - Prometheus text exposition for mpdetd. Fixed-size state
 * behind one mutex; the only allocations are in create and render. */
#define _POSIX_C_SOURCE 200809L
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Histogram upper bounds in seconds, and the same written as their le
 * labels so the text is exactly the canonical spelling. */
#define NB 13
static const double bound[NB] = {.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
static const char *const le[NB] = {"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
                                   "0.25",  "0.5",    "1",     "2.5",  "5",     "10"};

/* Batch sizes (images per forward pass) have their own buckets: powers
 * of two up to max_batch's limit of 64. */
#define NBB 7
static const int batch_bound[NBB] = {1, 2, 4, 8, 16, 32, 64};

static const char *const endpoints[] = {"detect", "vision_detection", "health", "plan",
                                        "reload", "metrics",          "other"};
#define NEP (int)(sizeof(endpoints) / sizeof(endpoints[0]))
#define EP_OTHER (NEP - 1)

static const char *const precisions[] = {"fp32", "fp16", "int8", "-", "other"};
#define NPREC (int)(sizeof(precisions) / sizeof(precisions[0]))

/* Status codes index a flat array so counting needs no lookup table that
 * could fill up; 0 collects anything outside 100..599. */
#define NCODES 600

typedef struct {
    unsigned long long bucket[NB + 1]; /* per bucket, not cumulative; [NB] = +Inf */
    unsigned long long count;
    double sum;
} hist;

typedef struct {
    double seconds;
    unsigned long long runs;
} layer_stat;

/* Everything but the layers, so render can copy it in one go. */
typedef struct {
    unsigned long long requests[NEP][NCODES];
    hist duration[NEP];
    hist inference;
    unsigned long long batch[NBB + 1]; /* per bucket, not cumulative; [NBB] = +Inf */
    unsigned long long batch_count, batch_sum;
    unsigned long long reloads[2]; /* [0] error, [1] ok */
    unsigned long long abandoned;
    int depth, capacity;
    unsigned long generation;
} state;

struct mpdd_metrics {
    pthread_mutex_t mu;
    int layers;
    layer_stat *layer; /* layers x NPREC, owned */
    state s;
};

mpdd_metrics *mpdd_metrics_create(int layers)
{
    if (layers < 0)
        layers = 0;
    mpdd_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->layers = layers;
    m->layer = calloc((size_t)layers * NPREC + 1, sizeof(*m->layer)); /* +1: never calloc(0) */
    if (!m->layer)
        goto fail;
    if (pthread_mutex_init(&m->mu, NULL) != 0)
        goto fail;
    return m;
fail:
    free(m->layer);
    free(m);
    return NULL;
}

void mpdd_metrics_free(mpdd_metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m->layer);
    free(m);
}

/* A duration that cannot be real (negative, NaN) would poison _sum for
 * the life of the process; count it as 0 instead. */
static double clean(double seconds)
{
    return seconds >= 0 ? seconds : 0;
}

static void observe(hist *h, double seconds)
{
    int i = 0;
    while (i < NB && !(seconds <= bound[i]))
        i++;
    h->bucket[i]++;
    h->count++;
    h->sum += seconds;
}

void mpdd_metrics_request(mpdd_metrics *m, const char *endpoint, int status, double seconds)
{
    if (!m)
        return;
    int ep = EP_OTHER;
    for (int i = 0; endpoint && i < NEP; i++)
        if (strcmp(endpoint, endpoints[i]) == 0)
            ep = i;
    int code = status >= 100 && status < NCODES ? status : 0;
    seconds = clean(seconds);
    pthread_mutex_lock(&m->mu);
    m->s.requests[ep][code]++;
    observe(&m->s.duration[ep], seconds);
    pthread_mutex_unlock(&m->mu);
}

void mpdd_metrics_inference(mpdd_metrics *m, double seconds)
{
    if (!m)
        return;
    seconds = clean(seconds);
    pthread_mutex_lock(&m->mu);
    observe(&m->s.inference, seconds);
    pthread_mutex_unlock(&m->mu);
}

void mpdd_metrics_batch(mpdd_metrics *m, int size)
{
    if (!m || size < 1)
        return;
    int i = 0;
    while (i < NBB && size > batch_bound[i])
        i++;
    pthread_mutex_lock(&m->mu);
    m->s.batch[i]++;
    m->s.batch_count++;
    m->s.batch_sum += (unsigned long long)size;
    pthread_mutex_unlock(&m->mu);
}

void mpdd_metrics_layer(mpdd_metrics *m, int layer, const char *precision, double seconds)
{
    if (!m || layer < 0 || layer >= m->layers)
        return;
    int p = NPREC - 1;
    for (int i = 0; precision && i < NPREC - 1; i++)
        if (strcmp(precision, precisions[i]) == 0)
            p = i;
    seconds = clean(seconds);
    pthread_mutex_lock(&m->mu);
    layer_stat *st = &m->layer[(size_t)layer * NPREC + (size_t)p];
    st->seconds += seconds;
    st->runs++;
    pthread_mutex_unlock(&m->mu);
}

void mpdd_metrics_layer_precision(mpdd_metrics *m, int layer, const char *precision)
{
    if (!m || layer < 0 || layer >= m->layers)
        return;
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < NPREC; i++) {
        layer_stat *st = &m->layer[(size_t)layer * NPREC + (size_t)i];
        if (!precision || strcmp(precision, precisions[i]) != 0)
            st->seconds = 0, st->runs = 0;
    }
    pthread_mutex_unlock(&m->mu);
}

void mpdd_metrics_abandoned(mpdd_metrics *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->s.abandoned++;
    pthread_mutex_unlock(&m->mu);
}

void mpdd_metrics_reload(mpdd_metrics *m, int ok)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->s.reloads[ok != 0]++;
    pthread_mutex_unlock(&m->mu);
}

void mpdd_metrics_queue(mpdd_metrics *m, int depth, int capacity)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->s.depth = depth;
    m->s.capacity = capacity;
    pthread_mutex_unlock(&m->mu);
}

void mpdd_metrics_plan(mpdd_metrics *m, unsigned long generation)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->s.generation = generation;
    pthread_mutex_unlock(&m->mu);
}

/* Growing output buffer; after a failed allocation every append is a no-op
 * and render returns NULL. */
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} out;

static void add(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(out *o, const char *fmt, ...)
{
    if (o->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n;
        char *p = realloc(o->p, cap);
        if (!p) {
            o->oom = 1;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
}

/* Appends a label value escaped as the text format requires: backslash,
 * double quote and newline. */
static void add_escaped(out *o, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '\\')
            add(o, "\\\\");
        else if (*s == '"')
            add(o, "\\\"");
        else if (*s == '\n')
            add(o, "\\n");
        else
            add(o, "%c", *s);
    }
}

/* Shortest text that reads back as exactly v (what Go's client writes),
 * so sums survive the round trip and small values stay readable. */
static void add_double(out *o, double v)
{
    if (isinf(v)) {
        add(o, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (isnan(v)) {
        add(o, "NaN");
        return;
    }
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    add(o, "%s", buf);
}

static void family(out *o, const char *name, const char *type, const char *help)
{
    add(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Writes one histogram's series; labels is "" or `key="value",` (with the
 * trailing comma, so le can follow). */
static void add_hist(out *o, const char *name, const char *labels, const hist *h)
{
    unsigned long long cum = 0;
    for (int i = 0; i <= NB; i++) {
        cum += h->bucket[i];
        add(o, "%s_bucket{%sle=\"%s\"} %llu\n", name, labels, i < NB ? le[i] : "+Inf", cum);
    }
    size_t n = strlen(labels);
    /* Drop the trailing comma for _sum and _count. */
    if (n)
        add(o, "%s_sum{%.*s} ", name, (int)(n - 1), labels);
    else
        add(o, "%s_sum ", name);
    add_double(o, h->sum);
    if (n)
        add(o, "\n%s_count{%.*s} %llu\n", name, (int)(n - 1), labels, h->count);
    else
        add(o, "\n%s_count %llu\n", name, h->count);
}

char *mpdd_metrics_render(mpdd_metrics *m, const char *version, const char *backend)
{
    if (!m)
        return NULL;
    /* Snapshot under the lock so every family is from one instant (a
     * histogram's _count always equals its +Inf bucket) and workers wait
     * only for two memcpy calls, not for the formatting. */
    state *s = malloc(sizeof(*s));
    size_t nl = (size_t)m->layers * NPREC;
    layer_stat *ls = malloc((nl + 1) * sizeof(*ls));
    out o = {malloc(16384), 0, 16384, 0};
    if (!s || !ls || !o.p) {
        free(s);
        free(ls);
        free(o.p);
        return NULL;
    }
    pthread_mutex_lock(&m->mu);
    memcpy(s, &m->s, sizeof(*s));
    memcpy(ls, m->layer, nl * sizeof(*ls));
    pthread_mutex_unlock(&m->mu);
    o.p[0] = '\0';

    family(&o, "mpdetd_build_info", "gauge",
           "Version and compute backend of this mpdetd; always 1.");
    add(&o, "mpdetd_build_info{version=\"");
    add_escaped(&o, version);
    add(&o, "\",backend=\"");
    add_escaped(&o, backend);
    add(&o, "\"} 1\n");

    family(&o, "mpdetd_requests_total", "counter",
           "HTTP requests answered, by endpoint and status.");
    for (int e = 0; e < NEP; e++)
        for (int c = 0; c < NCODES; c++)
            if (s->requests[e][c])
                add(&o, "mpdetd_requests_total{endpoint=\"%s\",code=\"%d\"} %llu\n", endpoints[e],
                    c, s->requests[e][c]);

    family(&o, "mpdetd_request_duration_seconds", "histogram",
           "Time from a request's arrival to its reply, by endpoint.");
    for (int e = 0; e < NEP; e++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "endpoint=\"%s\",", endpoints[e]);
        add_hist(&o, "mpdetd_request_duration_seconds", labels, &s->duration[e]);
    }

    family(&o, "mpdetd_inference_duration_seconds", "histogram",
           "Time of one detection's forward pass (without decoding, letterbox, "
           "post-processing or queueing).");
    add_hist(&o, "mpdetd_inference_duration_seconds", "", &s->inference);

    family(&o, "mpdetd_batch_size", "histogram",
           "Images in each forward pass a worker ran (requests batched together, at most "
           "max_batch).");
    unsigned long long cum = 0;
    for (int i = 0; i <= NBB; i++) {
        cum += s->batch[i];
        if (i < NBB)
            add(&o, "mpdetd_batch_size_bucket{le=\"%d\"} %llu\n", batch_bound[i], cum);
        else
            add(&o, "mpdetd_batch_size_bucket{le=\"+Inf\"} %llu\n", cum);
    }
    add(&o, "mpdetd_batch_size_sum %llu\nmpdetd_batch_size_count %llu\n", s->batch_sum,
        s->batch_count);

    family(&o, "mpdetd_layer_seconds_total", "counter",
           "Time spent in each layer over the timed passes (one in layer_timing_every per "
           "worker), by darknet layer index and precision.");
    for (size_t i = 0; i < nl; i++)
        if (ls[i].runs) {
            add(&o, "mpdetd_layer_seconds_total{layer=\"%zu\",precision=\"%s\"} ", i / NPREC,
                precisions[i % NPREC]);
            add_double(&o, ls[i].seconds);
            add(&o, "\n");
        }
    family(&o, "mpdetd_layer_runs_total", "counter",
           "Timed runs of each layer (seconds_total / runs_total: its mean time), by darknet "
           "layer index and precision.");
    for (size_t i = 0; i < nl; i++)
        if (ls[i].runs)
            add(&o, "mpdetd_layer_runs_total{layer=\"%zu\",precision=\"%s\"} %llu\n", i / NPREC,
                precisions[i % NPREC], ls[i].runs);

    family(&o, "mpdetd_queue_depth", "gauge", "Requests waiting for a worker.");
    add(&o, "mpdetd_queue_depth %d\n", s->depth);
    family(&o, "mpdetd_queue_capacity", "gauge", "Requests that may wait before new ones get 503.");
    add(&o, "mpdetd_queue_capacity %d\n", s->capacity);

    family(&o, "mpdetd_abandoned_total", "counter",
           "Detection requests dropped unrun because their client disconnected first.");
    add(&o, "mpdetd_abandoned_total %llu\n", s->abandoned);

    family(&o, "mpdetd_reloads_total", "counter", "Configuration and plan reloads, by result.");
    add(&o, "mpdetd_reloads_total{result=\"ok\"} %llu\n", s->reloads[1]);
    add(&o, "mpdetd_reloads_total{result=\"error\"} %llu\n", s->reloads[0]);

    family(&o, "mpdetd_plan_generation", "gauge",
           "Generation of the precision plan in use; 1 at start, +1 per applied plan.");
    add(&o, "mpdetd_plan_generation %lu\n", s->generation);

    free(s);
    free(ls);
    if (o.oom) {
        free(o.p);
        return NULL;
    }
    return o.p;
}
