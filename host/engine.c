#define _POSIX_C_SOURCE 200809L
#include "engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "calib.h"
#include "calib_search.h"
#include "image.h"
#include "internal.h"
#include "net.h"
#include "overflow.h"
#include "plan.h"
#include "yolo.h"

typedef struct {
    double last_ms, total_ms;
    long long runs;
} layer_stats;

/* A plan with its backend state: prepared (refs 0, not serving), then
 * applied. Forward passes hold a reference, so a plan replaced while one
 * runs is freed only when that pass lets go. mpd_prepared_plan is the
 * public name of one that is prepared and not yet committed. */
typedef struct mpd_prepared_plan {
    mpd_plan *plan;
    void *state; /* the backend's */
    unsigned long generation;
    int refs;           /* forward passes holding it, + 1 while current */
    layer_stats *stats; /* per layer, under this plan */
} plan_ref;

/* What the engines of one model share (engine.h): the network, labels,
 * the plans with their backend states, and the backend context that made
 * them (the first engine's, which holds the weights). Freed with its last
 * engine. */
typedef struct {
    int refs; /* engines; under plan_mu */
    mpd_net *net;
    mpd_backend be;
    pthread_mutex_t plan_mu; /* guards refs, cur, generation, plan refs and stats */
    /* Serialises the backend's plan_create calls (plan preparation and
     * calibration), which share plan-time scratch in the model's backend
     * context (the CUDA backend's weight-range words). Held for the
     * expensive part of a load, so it is not plan_mu: passes and info
     * calls go on meanwhile. */
    pthread_mutex_t prepare_mu;
    plan_ref *cur;            /* the plan new passes use */
    unsigned long generation; /* of the plan last committed */
    char **names;
    int nnames;
    int classes;
    mpd_buffer_plan bp; /* the buffers every engine's backend plans (net.h):
                           which outputs are still there after a pass */
    mpd_log_fn log;
    void *log_ud;
} model;

struct mpd_engine {
    model *m;
    mpd_net *net;     /* m->net */
    mpd_backend be;   /* this engine's context: m->be for the first engine */
    int owns_ctx;     /* 1 for an engine of mpd_engine_open_shared */
    int max_batch;
    float *input;            /* max_batch x net input, host */
    float *yolo_buf;         /* every yolo layer's output of a pass, for backends
                                without host outputs */
    size_t *yolo_off;        /* per layer: its offset in yolo_buf */
    const float **yolo_out;  /* per layer: the yolo output of the last detect pass */
    double *layer_ms;        /* per layer, filled by a backend's whole-pass forward */
    int layer_timing;        /* nonzero: per-layer times are measured (default) */
    int input_batch;         /* images in the backend's input (0: none yet) */
    plan_ref *last;          /* the plan of the last pass (its outputs); only
                                the thread running passes reads or moves it */
    mpd_log_fn log;
    void *log_ud;
};

static int load_names(mpd_engine *e, const char *path, char *msg, size_t msglen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return mpd__fail(msg, msglen, MPD_EIO, "%s: cannot open: %s", path, strerror(errno));
    char line[256];
    int rc = 0, lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof(line) - 1 && line[n - 1] != '\n') {
            rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: label longer than %zu bytes", path,
                           lineno, sizeof(line) - 2);
            break;
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        char **nn = realloc(e->m->names, (size_t)(e->m->nnames + 1) * sizeof(char *));
        if (!nn || !(nn[e->m->nnames] = strdup(line))) {
            if (nn)
                e->m->names = nn;
            rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
            break;
        }
        e->m->names = nn;
        e->m->nnames++;
    }
    fclose(f);
    if (rc == 0 && e->m->nnames < e->m->classes)
        rc =
            mpd__fail(msg, msglen, MPD_EFORMAT, "%s: has %d labels, the network detects %d classes",
                      path, e->m->nnames, e->m->classes);
    return rc;
}

/* Drops one reference; the last one frees the plan and its backend state. */
static void release(mpd_engine *e, plan_ref *r)
{
    pthread_mutex_lock(&e->m->plan_mu);
    int left = --r->refs;
    pthread_mutex_unlock(&e->m->plan_mu);
    if (left > 0)
        return;
    e->m->be.ops->plan_destroy(e->m->be.ctx, r->state);
    mpd_plan_free(r->plan);
    free(r->stats);
    free(r);
}

/* Parses (path) or derives (NULL: the cfg's base plan) a plan and checks
 * that the backend can run it. */
static int build_plan(mpd_engine *e, const char *path, mpd_plan **out, char *msg, size_t msglen)
{
    mpd_plan *base = NULL, *p = NULL;
    int rc = mpd_plan_from_net(e->net, &base, msg, msglen);
    if (rc)
        return rc;
    if (path) {
        rc = mpd_plan_parse_file(path, e->net, base, &p, msg, msglen);
        mpd_plan_free(base);
        if (rc)
            return rc;
    } else {
        p = base;
    }
    /* The int8 K limit of the plan's scheme first: its message says why. */
    char why[384];
    if ((rc = mpd__plan_check_i8(e->net, p, why, sizeof(why)))) {
        mpd__fail(msg, msglen, rc, "%s: %s", path ? path : e->net->cfg_path, why);
        mpd_plan_free(p);
        return rc;
    }
    for (int i = 0; i < e->net->n; i++) {
        if (p->prec[i] != MPD_PREC_FP32 &&
            !e->be.ops->supports(e->be.ctx, &e->net->layers[i], p->prec[i])) {
            rc = mpd__fail(msg, msglen, MPD_EUNSUP, "%s: layer %d (%s) cannot run in %s on %s",
                           path ? path : e->net->cfg_path, i,
                           mpd_layer_kind_name(e->net->layers[i].kind),
                           mpd_precisions[p->prec[i]].name, e->be.ops->name);
            mpd_plan_free(p);
            return rc;
        }
    }
    *out = p;
    return 0;
}

int mpd_engine_check_plan(mpd_engine *e, const char *path, char *msg, size_t msglen)
{
    mpd_plan *p;
    int rc = build_plan(e, path, &p, msg, msglen);
    if (rc == 0)
        mpd_plan_free(p);
    return rc;
}

/* The backend's plan_create under prepare_mu (see struct mpd_engine). */
static int create_state(mpd_engine *e, const mpd_plan *p, void **state, char *msg, size_t msglen)
{
    pthread_mutex_lock(&e->m->prepare_mu);
    int rc = e->m->be.ops->plan_create(e->m->be.ctx, p, state, msg, msglen);
    pthread_mutex_unlock(&e->m->prepare_mu);
    return rc;
}

int mpd_engine_prepare_plan(mpd_engine *e, const char *path, mpd_prepared_plan **out, char *msg,
                            size_t msglen)
{
    *out = NULL;
    mpd_plan *p;
    int rc = build_plan(e, path, &p, msg, msglen);
    if (rc)
        return rc;
    plan_ref *r = calloc(1, sizeof(*r));
    if (r)
        r->stats = calloc((size_t)e->net->n, sizeof(layer_stats));
    if (!r || !r->stats) {
        free(r);
        mpd_plan_free(p);
        return mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
    }
    /* The expensive part - quantizing weights - happens here, while the
     * current plan keeps serving. */
    if ((rc = create_state(e, p, &r->state, msg, msglen))) {
        free(r->stats);
        free(r);
        mpd_plan_free(p);
        return rc;
    }
    r->plan = p;
    *out = r; /* owned by the caller until commit or discard */
    return 0;
}

void mpd_engine_discard_plan(mpd_engine *e, mpd_prepared_plan *r)
{
    if (!r)
        return;
    e->m->be.ops->plan_destroy(e->m->be.ctx, r->state);
    mpd_plan_free(r->plan);
    free(r->stats);
    free(r);
}

void mpd_engine_commit_plan(mpd_engine *e, mpd_prepared_plan *r, unsigned long generation)
{
    if (!r)
        return;
    /* One reference for being current, one for the log line below: a
     * commit on another thread may replace and release this plan as soon
     * as plan_mu is let go. */
    r->refs = 2;
    pthread_mutex_lock(&e->m->plan_mu);
    plan_ref *old = e->m->cur;
    e->m->generation = generation ? generation : e->m->generation + 1;
    r->generation = e->m->generation;
    e->m->cur = r;
    pthread_mutex_unlock(&e->m->plan_mu);
    if (old)
        release(e, old);
    const mpd_plan *p = r->plan;
    mpd__logf(e->log, e->log_ud, MPD_LOG_INFO, "plan %lu applied: %s (%s%s%s)", r->generation,
              p->source, mpd_scheme_name(p->scheme), p->calibration ? ", calibration " : "",
              p->calibration ? p->calibration : "");
    release(e, r);
}

int mpd_engine_load_plan(mpd_engine *e, const char *path, char *msg, size_t msglen)
{
    mpd_prepared_plan *r;
    int rc = mpd_engine_prepare_plan(e, path, &r, msg, msglen);
    if (rc == 0)
        mpd_engine_commit_plan(e, r, 0);
    return rc;
}

/* info from plan ref; plan_mu held (stats). */
static void plan_info_of(const mpd_engine *e, const plan_ref *ref, mpd_plan_info *info)
{
    const mpd_plan *p = ref->plan;
    info->generation = ref->generation;
    info->scheme = mpd_scheme_name(p->scheme);
    snprintf(info->source, sizeof(info->source), "%s", p->source ? p->source : "");
    snprintf(info->calibration, sizeof(info->calibration), "%s",
             p->calibration ? p->calibration : "");
    for (int k = 0; k < MPD_PREC_COUNT; k++)
        info->layers[k] = 0;
    for (int i = 0; i < p->n; i++)
        if (e->net->layers[i].kind == MPD_LAYER_CONV)
            info->layers[p->prec[i]]++;
}

int mpd_engine_plan_info(mpd_engine *e, mpd_plan_info *info)
{
    pthread_mutex_lock(&e->m->plan_mu);
    plan_info_of(e, e->m->cur, info);
    pthread_mutex_unlock(&e->m->plan_mu);
    return 0;
}

int mpd_engine_last_plan_info(mpd_engine *e, mpd_plan_info *info)
{
    /* e->last moves only with a pass, on the calling thread. */
    if (!e->last)
        return MPD_EINVAL;
    pthread_mutex_lock(&e->m->plan_mu);
    plan_info_of(e, e->last, info);
    pthread_mutex_unlock(&e->m->plan_mu);
    return 0;
}

/* Without a names file, class i is labelled "class i". */
static int default_names(mpd_engine *e, char *msg, size_t msglen)
{
    e->m->names = calloc((size_t)e->m->classes, sizeof(char *));
    if (!e->m->names)
        return mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
    for (; e->m->nnames < e->m->classes; e->m->nnames++) {
        char buf[32];
        snprintf(buf, sizeof(buf), "class %d", e->m->nnames);
        if (!(e->m->names[e->m->nnames] = strdup(buf)))
            return mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
    }
    return 0;
}

/* An engine's own host side (engine.h): input and yolo staging and
 * per-layer times (its backend context is the model's for the first
 * engine, a clone after). */
static int engine_buffers(mpd_engine *e, char *msg, size_t msglen)
{
    const mpd_net *net = e->net;
    size_t ybuf = 0;
    for (int i = 0; i < net->n; i++)
        if (net->layers[i].kind == MPD_LAYER_YOLO)
            ybuf += mpd_layer_out_size(&net->layers[i]);
    size_t insz = (size_t)net->in_c * net->in_h * net->in_w;
    e->input = malloc((size_t)e->max_batch * insz * sizeof(float));
    e->yolo_buf = malloc((size_t)e->max_batch * ybuf * sizeof(float));
    e->yolo_off = calloc((size_t)net->n, sizeof(size_t));
    e->yolo_out = calloc((size_t)net->n, sizeof(float *));
    e->layer_ms = calloc((size_t)net->n, sizeof(double));
    e->layer_timing = 1;
    if (!e->input || !e->yolo_buf || !e->yolo_off || !e->yolo_out || !e->layer_ms)
        return mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
    size_t off = 0;
    for (int i = 0; i < net->n; i++) {
        if (net->layers[i].kind != MPD_LAYER_YOLO)
            continue;
        e->yolo_off[i] = off;
        off += (size_t)e->max_batch * mpd_layer_out_size(&net->layers[i]);
    }
    return 0;
}

/* Drops one engine's reference to its model; the last frees it. */
static void model_release(model *m)
{
    pthread_mutex_lock(&m->plan_mu);
    int left = --m->refs;
    plan_ref *cur = left ? NULL : m->cur;
    pthread_mutex_unlock(&m->plan_mu);
    if (left)
        return;
    if (cur) {
        m->be.ops->plan_destroy(m->be.ctx, cur->state);
        mpd_plan_free(cur->plan);
        free(cur->stats);
        free(cur);
    }
    for (int i = 0; i < m->nnames; i++)
        free(m->names[i]);
    free(m->names);
    mpd__buffer_plan_free(&m->bp);
    pthread_mutex_destroy(&m->plan_mu);
    pthread_mutex_destroy(&m->prepare_mu);
    mpd_backend_close(&m->be);
    mpd_net_free(m->net);
    free(m);
}

int mpd_engine_open(const mpd_engine_options *opt, mpd_engine **out, char *msg, size_t msglen)
{
    *out = NULL;
    if (!opt || !opt->cfg_path || !opt->weights_path)
        return mpd__fail(msg, msglen, MPD_EINVAL, "cfg and weights paths are required");
    if (opt->max_batch < 0 || opt->max_batch > 1024 || opt->threads < 0)
        return mpd__fail(msg, msglen, MPD_EINVAL, "max_batch must be 0..1024, threads >= 0");
    mpd_engine *e = calloc(1, sizeof(*e));
    model *m = calloc(1, sizeof(*m));
    if (!e || !m) {
        free(e);
        free(m);
        return mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
    }
    e->m = m;
    m->refs = 1;
    pthread_mutex_init(&m->plan_mu, NULL);
    pthread_mutex_init(&m->prepare_mu, NULL);
    e->log = m->log = opt->log;
    e->log_ud = m->log_ud = opt->log_ud;
    e->max_batch = opt->max_batch ? opt->max_batch : 1;
    int rc;
    if ((rc = mpd_net_parse(opt->cfg_path, &m->net, msg, msglen)))
        goto fail;
    e->net = m->net;
    if ((rc = mpd_net_load_weights(m->net, opt->weights_path, msg, msglen)))
        goto fail;
    for (int i = 0; i < m->net->n; i++) {
        const mpd_layer *l = &m->net->layers[i];
        if (l->kind != MPD_LAYER_YOLO)
            continue;
        if (m->classes && m->classes != l->u.yolo.classes) {
            rc = mpd__fail(msg, msglen, MPD_EUNSUP, "%s: yolo layers disagree on classes",
                           opt->cfg_path);
            goto fail;
        }
        m->classes = l->u.yolo.classes;
    }
    if (!m->classes) {
        rc = mpd__fail(msg, msglen, MPD_EUNSUP, "%s: no [yolo] layer; nothing to detect with",
                       opt->cfg_path);
        goto fail;
    }
    if (opt->names_path)
        rc = load_names(e, opt->names_path, msg, msglen);
    else
        rc = default_names(e, msg, msglen);
    if (rc || (rc = engine_buffers(e, msg, msglen)))
        goto fail;
    if (mpd__buffer_plan(m->net, 1, opt->reuse_buffers, &m->bp)) {
        rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
        goto fail;
    }
    mpd_backend_config bc = {
        .threads = opt->threads,
        .max_batch = e->max_batch,
        .reuse_buffers = opt->reuse_buffers,
        .log = opt->log,
        .log_ud = opt->log_ud,
    };
    if ((rc = mpd_backend_open(opt->backend, m->net, &bc, &m->be, msg, msglen)))
        goto fail;
    e->be = m->be;
    if ((rc = mpd_engine_load_plan(e, opt->plan_path, msg, msglen)))
        goto fail;
    mpd__logf(e->log, e->log_ud, MPD_LOG_INFO,
              "engine: %s, %d layers, %dx%dx%d input, backend %s, batch %d, plan %s", opt->cfg_path,
              e->net->n, e->net->in_w, e->net->in_h, e->net->in_c, e->be.ops->name, e->max_batch,
              m->cur->plan->source);
    *out = e;
    return 0;
fail:
    mpd_engine_close(e);
    return rc;
}

int mpd_engine_open_shared(mpd_engine *from, mpd_engine **out, char *msg, size_t msglen)
{
    *out = NULL;
    mpd_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
    model *m = from->m;
    e->net = from->net;
    e->log = from->log;
    e->log_ud = from->log_ud;
    e->max_batch = from->max_batch;
    int rc = engine_buffers(e, msg, msglen);
    if (rc == 0)
        rc = m->be.ops->clone(m->be.ctx, &e->be.ctx, msg, msglen);
    if (rc) {
        e->m = NULL; /* nothing of the model's to let go */
        mpd_engine_close(e);
        return rc;
    }
    e->be.ops = m->be.ops;
    e->owns_ctx = 1;
    pthread_mutex_lock(&m->plan_mu);
    m->refs++;
    pthread_mutex_unlock(&m->plan_mu);
    e->m = m;
    *out = e;
    return 0;
}

void mpd_engine_close(mpd_engine *e)
{
    if (!e)
        return;
    free(e->input);
    free(e->yolo_buf);
    free(e->yolo_off);
    free(e->yolo_out);
    free(e->layer_ms);
    if (e->last)
        release(e, e->last);
    if (e->owns_ctx)
        e->be.ops->destroy(e->be.ctx);
    if (e->m)
        model_release(e->m);
    free(e);
}

void mpd_engine_memory(mpd_engine *e, mpd_memory_info *mi)
{
    const mpd_backend_ops *ops = e->be.ops;
    memset(mi, 0, sizeof(*mi));
    for (int i = 0; i < e->net->n; i++) {
        const mpd_layer *l = &e->net->layers[i];
        if (l->kind == MPD_LAYER_CONV)
            mi->weights += ((size_t)l->u.conv.filters * l->in_c * l->u.conv.size * l->u.conv.size +
                            (size_t)l->u.conv.filters) *
                           sizeof(float);
    }
    pthread_mutex_lock(&e->m->plan_mu);
    if (ops->plan_bytes)
        mi->plan = ops->plan_bytes(e->m->be.ctx, e->m->cur->state);
    mi->engine = ops->own_bytes ? ops->own_bytes(e->be.ctx, e->m->cur->state) : 0;
    pthread_mutex_unlock(&e->m->plan_mu);
    mi->where = ops->memory;
    if (!strcmp(mi->where, "host")) {
        /* The engine's own staging is host memory too. */
        size_t insz = (size_t)e->net->in_c * e->net->in_h * e->net->in_w, ybuf = 0;
        for (int i = 0; i < e->net->n; i++)
            if (e->net->layers[i].kind == MPD_LAYER_YOLO)
                ybuf += mpd_layer_out_size(&e->net->layers[i]);
        mi->engine += (size_t)e->max_batch * (insz + ybuf) * sizeof(float);
    }
}

void mpd_engine_describe(const mpd_engine *e, char *buf, size_t len)
{
    if (e->be.ops->describe)
        e->be.ops->describe(e->be.ctx, buf, len);
    else
        snprintf(buf, len, "%s", e->be.ops->name);
}

const char *mpd_engine_backend(const mpd_engine *e)
{
    return e->be.ops->name;
}

int mpd_engine_layer_count(const mpd_engine *e)
{
    return e->net->n;
}

void mpd_engine_input_shape(const mpd_engine *e, int *c, int *h, int *w)
{
    *c = e->net->in_c;
    *h = e->net->in_h;
    *w = e->net->in_w;
}

int mpd_engine_max_batch(const mpd_engine *e)
{
    return e->max_batch;
}

int mpd_engine_class_count(const mpd_engine *e)
{
    return e->m->classes;
}

const char *mpd_engine_label(const mpd_engine *e, int id)
{
    if (id < 0 || id >= e->m->classes)
        return "?";
    return e->m->names[id];
}

/* Layer i's shape, and its precision and times under ref. */
static int layer_info_of(const mpd_engine *e, const plan_ref *ref, int i, mpd_layer_info *info)
{
    if (i < 0 || i >= e->net->n || !ref)
        return MPD_EINVAL;
    const mpd_layer *l = &e->net->layers[i];
    memset(info, 0, sizeof(*info));
    info->index = i;
    info->kind = mpd_layer_kind_name(l->kind);
    info->in_c = l->in_c;
    info->in_h = l->in_h;
    info->in_w = l->in_w;
    info->out_c = l->out_c;
    info->out_h = l->out_h;
    info->out_w = l->out_w;
    if (l->kind == MPD_LAYER_CONV) {
        info->filters = l->u.conv.filters;
        info->size = l->u.conv.size;
        info->stride = l->u.conv.stride;
        info->precision = mpd_precisions[ref->plan->prec[i]].name;
        info->kernel = e->be.ops->layer_kernel
                           ? e->be.ops->layer_kernel(e->be.ctx, ref->state, i)
                           : "-";
    } else {
        info->kernel = "-";
        if (l->kind == MPD_LAYER_MAXPOOL) {
            info->size = l->u.pool.size;
            info->stride = l->u.pool.stride;
        }
        info->precision = "-";
    }
    info->gflop = l->gflop;
    info->last_ms = ref->stats[i].last_ms;
    info->total_ms = ref->stats[i].total_ms;
    info->runs = ref->stats[i].runs;
    return 0;
}

int mpd_engine_layer_info(const mpd_engine *e, int i, mpd_layer_info *info)
{
    /* The mutex is not const-correct; layer_info only reads. */
    pthread_mutex_lock(&e->m->plan_mu);
    int rc = layer_info_of(e, e->m->cur, i, info);
    pthread_mutex_unlock(&e->m->plan_mu);
    return rc;
}

int mpd_engine_last_layer_info(const mpd_engine *e, int i, mpd_layer_info *info)
{
    /* e->last moves only with a pass, on the calling thread; plan_mu for
     * the stats, as everywhere. */
    pthread_mutex_lock(&e->m->plan_mu);
    int rc = layer_info_of(e, e->last, i, info);
    pthread_mutex_unlock(&e->m->plan_mu);
    return rc;
}

size_t mpd_engine_layer_output_size(const mpd_engine *e, int i)
{
    return (i < 0 || i >= e->net->n) ? 0 : mpd_layer_out_size(&e->net->layers[i]);
}

int mpd_engine_layer_output(mpd_engine *e, int i, int batch, float *dst, char *msg, size_t msglen)
{
    if (!e->last)
        return mpd__fail(msg, msglen, MPD_EINVAL, "no forward pass has run yet");
    if (i >= 0 && i < e->net->n && !e->m->bp.kept[i])
        return mpd__fail(msg, msglen, MPD_EINVAL,
                         "layer %d's output is not kept after a pass: its buffer is reused "
                         "(an engine opened with reuse_buffers)",
                         i);
    return e->be.ops->read_output(e->be.ctx, e->last->state, i, batch, dst, msg, msglen);
}

int mpd_engine_preprocess(const mpd_engine *e, const mpd_image *im, float *input)
{
    if (e->net->in_c != 3)
        return MPD_EUNSUP;
    return mpd__letterbox(im, e->net->in_w, e->net->in_h, input);
}

/* Adds one layer time to a plan's statistics; plan_mu held. */
static void record(plan_ref *ref, int i, double ms)
{
    ref->stats[i].last_ms = ms;
    ref->stats[i].total_ms += ms;
    ref->stats[i].runs++;
}

void mpd_engine_set_layer_timing(mpd_engine *e, int on)
{
    e->layer_timing = on != 0;
}

/* Runs every layer under the current plan, timing each. The plan used
 * stays referenced as e->last, whose outputs read_output returns. */
static int run_layers(mpd_engine *e, int batch, char *msg, size_t msglen)
{
    const mpd_backend_ops *ops = e->be.ops;
    pthread_mutex_lock(&e->m->plan_mu);
    plan_ref *ref = e->m->cur;
    ref->refs++;
    pthread_mutex_unlock(&e->m->plan_mu);
    if (e->last)
        release(e, e->last);
    e->last = ref;
    if (ops->forward) {
        /* The backend runs the whole pass (a GPU: one graph launch). */
        double *ms = e->layer_timing ? e->layer_ms : NULL;
        int rc = ops->forward(e->be.ctx, ref->state, batch, ms, msg, msglen);
        if (rc)
            return rc;
        if (ms) {
            pthread_mutex_lock(&e->m->plan_mu);
            for (int i = 0; i < e->net->n; i++)
                record(ref, i, ms[i]);
            pthread_mutex_unlock(&e->m->plan_mu);
        }
        return 0;
    }
    for (int i = 0; i < e->net->n; i++) {
        double t0 = mpd_now();
        int rc = ops->forward_layer(e->be.ctx, ref->state, i, batch, msg, msglen);
        if (rc == 0 && e->layer_timing)
            rc = ops->sync(e->be.ctx, msg, msglen);
        if (rc)
            return rc;
        if (!e->layer_timing)
            continue;
        double ms = (mpd_now() - t0) * 1e3;
        /* Under the lock: mpd_engine_layer_info may read from another
         * thread (the daemon's /v1/plan). One uncontended lock per layer is
         * noise next to a layer's time. */
        pthread_mutex_lock(&e->m->plan_mu);
        record(ref, i, ms);
        pthread_mutex_unlock(&e->m->plan_mu);
    }
    /* Untimed: one wait for the whole pass. */
    return e->layer_timing ? 0 : ops->sync(e->be.ctx, msg, msglen);
}

int mpd_engine_forward(mpd_engine *e, const float *input, int batch, char *msg, size_t msglen)
{
    if (batch < 1 || batch > e->max_batch)
        return mpd__fail(msg, msglen, MPD_EINVAL, "batch %d outside 1..%d", batch, e->max_batch);
    if (!input) {
        if (batch > e->input_batch)
            return mpd__fail(msg, msglen, MPD_EINVAL, "no input of %d images to run again (%d set)",
                             batch, e->input_batch);
        return run_layers(e, batch, msg, msglen);
    }
    int rc = e->be.ops->set_input(e->be.ctx, input, batch, msg, msglen);
    e->input_batch = rc ? 0 : batch;
    return rc ? rc : run_layers(e, batch, msg, msglen);
}

static int by_confidence(const void *pa, const void *pb)
{
    const mpd_detection *a = pa, *b = pb;
    return a->confidence < b->confidence ? 1 : a->confidence > b->confidence ? -1 : 0;
}

static float clampf(float v, float lo, float hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Points e->yolo_out at every yolo layer's output of the last pass (batch
 * images): in place on the host when the backend allows, else copied once
 * per pass into yolo_buf. */
static int fetch_yolo(mpd_engine *e, int batch, char *msg, size_t msglen)
{
    const mpd_backend_ops *ops = e->be.ops;
    for (int i = 0; i < e->net->n; i++) {
        if (e->net->layers[i].kind != MPD_LAYER_YOLO)
            continue;
        const float *out = ops->output_host ? ops->output_host(e->be.ctx, e->last->state, i) : NULL;
        if (!out) {
            float *dst = e->yolo_buf + e->yolo_off[i];
            int rc = ops->read_output(e->be.ctx, e->last->state, i, batch, dst, msg, msglen);
            if (rc)
                return rc;
            out = dst;
        }
        e->yolo_out[i] = out;
    }
    return 0;
}

/* (box, class) candidates that enter NMS at most, the strongest: at the
 * default threshold a photo has a few dozen, so this only bounds abuse
 * (thresh near 0 on yolov3-tiny gives 2,535 boxes x 80 classes). */
#define MAX_CANDIDATES 4096

/* Turns the yolo outputs of image b into the public detection list. */
static int postprocess(mpd_engine *e, int b, const mpd_image *im, const mpd_detect_params *p,
                       mpd_result *res, char *msg, size_t msglen)
{
    mpd__dets dets = {0};
    int rc = 0;
    dets.classes = e->m->classes;
    for (int i = 0; i < e->net->n && rc == 0; i++) {
        const mpd_layer *l = &e->net->layers[i];
        if (l->kind != MPD_LAYER_YOLO)
            continue;
        size_t osz = mpd_layer_out_size(l);
        const float *out = e->yolo_out[i];
        rc = mpd__yolo_collect(l, out + b * osz, e->net->in_w, e->net->in_h, p->thresh, &dets);
    }
    if (rc == 0) {
        mpd__yolo_correct(&dets, im->w, im->h, e->net->in_w, e->net->in_h);
        /* Bounded work whatever the threshold: NMS and the reply see at
         * most MAX_CANDIDATES (box, class) pairs, the strongest. */
        rc = mpd__dets_limit(&dets, MAX_CANDIDATES);
        if (rc == 0 && p->nms > 0)
            rc = mpd__nms_sort(&dets, p->nms);
    }
    if (rc == 0) {
        int count = 0;
        for (int i = 0; i < dets.n; i++)
            for (int c = 0; c < dets.classes; c++)
                count += dets.d[i].prob[c] > p->thresh;
        res->det = calloc(count ? (size_t)count : 1, sizeof(mpd_detection));
        if (!res->det)
            rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
        for (int i = 0; i < dets.n && res->det; i++) {
            const mpd__det *d = &dets.d[i];
            for (int c = 0; c < dets.classes; c++) {
                if (!(d->prob[c] > p->thresh))
                    continue;
                mpd_detection *o = &res->det[res->count++];
                o->class_id = c;
                o->label = mpd_engine_label(e, c);
                o->confidence = d->prob[c];
                /* Same pixel mapping and clipping as darknet's drawing. */
                o->x0 = clampf((d->box.x - d->box.w / 2) * im->w, 0, im->w - 1);
                o->x1 = clampf((d->box.x + d->box.w / 2) * im->w, 0, im->w - 1);
                o->y0 = clampf((d->box.y - d->box.h / 2) * im->h, 0, im->h - 1);
                o->y1 = clampf((d->box.y + d->box.h / 2) * im->h, 0, im->h - 1);
            }
        }
        if (res->det)
            qsort(res->det, (size_t)res->count, sizeof(mpd_detection), by_confidence);
    } else if (rc == MPD_ENOMEM) {
        mpd__fail(msg, msglen, rc, "out of memory");
    }
    mpd__dets_free(&dets);
    return rc;
}

/* One pass over n images; image b is post-processed with p[b * pstep]
 * (pstep 0: one set of parameters for all, 1: one each). */
static int detect(mpd_engine *e, const mpd_image *images, int n, const mpd_detect_params *p,
                  int pstep, mpd_result *results, char *msg, size_t msglen)
{
    if (n < 1 || n > e->max_batch)
        return mpd__fail(msg, msglen, MPD_EINVAL, "%d images, engine takes 1..%d", n, e->max_batch);
    for (int b = 0; b < n; b++) {
        const mpd_detect_params *q = &p[b * pstep];
        if (!(q->thresh >= 0 && q->thresh <= 1) || !(q->nms >= 0 && q->nms <= 1))
            return mpd__fail(msg, msglen, MPD_EINVAL, "thresh and nms must lie in [0, 1]");
    }
    for (int b = 0; b < n; b++)
        if (images[b].w < 1 || images[b].h < 1 || !images[b].data)
            return mpd__fail(msg, msglen, MPD_EINVAL, "image %d is empty", b);
    memset(results, 0, (size_t)n * sizeof(*results));
    size_t insz = (size_t)e->net->in_c * e->net->in_h * e->net->in_w;
    double t0 = mpd_now();
    int rc;
    if (e->be.ops->set_input_rgb && e->net->in_c == 3) {
        /* The backend letterboxes on its device (bit-identical). */
        const unsigned char *rgb[n];
        int w[n], h[n];
        for (int b = 0; b < n; b++) {
            rgb[b] = images[b].data;
            w[b] = images[b].w;
            h[b] = images[b].h;
        }
        e->input_batch = 0;
        if ((rc = e->be.ops->set_input_rgb(e->be.ctx, rgb, w, h, n, msg, msglen)))
            return rc;
        e->input_batch = n;
    } else {
        for (int b = 0; b < n; b++) {
            rc = mpd_engine_preprocess(e, &images[b], e->input + b * insz);
            if (rc)
                return mpd__fail(msg, msglen, rc, "preprocess: %s", mpd_strerror(rc));
        }
        e->input_batch = 0;
        if ((rc = e->be.ops->set_input(e->be.ctx, e->input, n, msg, msglen)))
            return rc;
        e->input_batch = n;
    }
    double t1 = mpd_now();
    if ((rc = run_layers(e, n, msg, msglen)) || (rc = fetch_yolo(e, n, msg, msglen)))
        return rc;
    double t2 = mpd_now();
    for (int b = 0; b < n; b++) {
        results[b].image_w = images[b].w;
        results[b].image_h = images[b].h;
        if ((rc = postprocess(e, b, &images[b], &p[b * pstep], &results[b], msg, msglen))) {
            for (int j = 0; j <= b; j++)
                mpd_result_free(&results[j]);
            return rc;
        }
    }
    double t3 = mpd_now();
    for (int b = 0; b < n; b++) {
        results[b].plan_generation = e->last->generation;
        results[b].t.preprocess_ms = (t1 - t0) * 1e3 / n;
        results[b].t.inference_ms = (t2 - t1) * 1e3 / n;
        results[b].t.postprocess_ms = (t3 - t2) * 1e3 / n;
    }
    return 0;
}

int mpd_engine_detect(mpd_engine *e, const mpd_image *images, int n, const mpd_detect_params *p,
                      mpd_result *results, char *msg, size_t msglen)
{
    static const mpd_detect_params defaults = MPD_DETECT_DEFAULTS;
    return detect(e, images, n, p ? p : &defaults, 0, results, msg, msglen);
}

int mpd_engine_detect_each(mpd_engine *e, const mpd_image *images, int n,
                           const mpd_detect_params *params, mpd_result *results, char *msg,
                           size_t msglen)
{
    if (!params)
        return mpd_engine_detect(e, images, n, NULL, results, msg, msglen);
    return detect(e, images, n, params, 1, results, msg, msglen);
}

int mpd_engine_detect_memory(mpd_engine *e, const void *buf, size_t len, long long max_pixels,
                             const mpd_detect_params *p, mpd_result *res, char *msg, size_t msglen)
{
    mpd_image im;
    memset(res, 0, sizeof(*res));
    double t0 = mpd_now();
    int rc = mpd_image_decode_formats(buf, len, max_pixels, MPD_IMAGE_FORMATS_ALL, &im, msg,
                                      msglen);
    if (rc)
        return rc;
    double t1 = mpd_now();
    rc = mpd_engine_detect(e, &im, 1, p, res, msg, msglen);
    res->t.decode_ms = (t1 - t0) * 1e3;
    mpd_image_free(&im);
    return rc;
}

void mpd_result_free(mpd_result *r)
{
    if (!r)
        return;
    free(r->det);
    r->det = NULL;
    r->count = 0;
}

/* ---- calibration ------------------------------------------------------ */

/* One fp32 pass over image path with state, feeding every layer output to
 * fn(stats[i], data, n) and the input to stats[n]. */
static int calib_pass(mpd_engine *e, void *state, const char *path, mpd_calib_stat **st, int hist,
                      char *msg, size_t msglen)
{
    mpd_image im;
    int rc = mpd_image_load(path, 0, &im, msg, msglen);
    if (rc)
        return rc;
    size_t insz = (size_t)e->net->in_c * e->net->in_h * e->net->in_w;
    rc = mpd_engine_preprocess(e, &im, e->input);
    mpd_image_free(&im);
    if (rc)
        return mpd__fail(msg, msglen, rc, "%s: preprocess failed", path);
    const mpd_backend_ops *ops = e->be.ops;
    e->input_batch = 0;
    if ((rc = ops->set_input(e->be.ctx, e->input, 1, msg, msglen)))
        return rc;
    e->input_batch = 1;
    (hist ? mpd_calib_stat_observe_hist : mpd_calib_stat_observe_range)(st[e->net->n], e->input,
                                                                        insz);
    float *buf = NULL;
    for (int i = 0; i < e->net->n && rc == 0; i++) {
        if ((rc = ops->forward_layer(e->be.ctx, state, i, 1, msg, msglen)) ||
            (rc = ops->sync(e->be.ctx, msg, msglen)))
            break;
        size_t n = mpd_layer_out_size(&e->net->layers[i]);
        const float *out = ops->output_host ? ops->output_host(e->be.ctx, state, i) : NULL;
        if (!out) {
            free(buf);
            if (!(buf = malloc(n * sizeof(float)))) {
                rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
                break;
            }
            if ((rc = ops->read_output(e->be.ctx, state, i, 1, buf, msg, msglen)))
                break;
            out = buf;
        }
        (hist ? mpd_calib_stat_observe_hist : mpd_calib_stat_observe_range)(st[i], out, n);
    }
    free(buf);
    return rc;
}

/* The candidates of the auto method, per tensor. */
static const struct {
    mpd_calib_method m;
    double pct;
    const char *name;
} auto_cand[] = {
    {MPD_CALIB_MINMAX, 0, "minmax"},         {MPD_CALIB_PERCENTILE, 99.99, "p99.99"},
    {MPD_CALIB_PERCENTILE, 99.999, "p99.999"}, {MPD_CALIB_ENTROPY, 0, "entropy"},
    {MPD_CALIB_MSE, 0, "mse"}, /* last: AUTO_MSE */
};
#define N_AUTO ((int)(sizeof(auto_cand) / sizeof(auto_cand[0])))
#define AUTO_MSE (N_AUTO - 1)
#define AUTO_IMAGES 24

/* The auto method's third pass (see engine.h): th[0..layers] (the input
 * last) hold mse thresholds on entry and the chosen ones on return; the
 * choices are described, one comment line per convolution, in *report
 * (malloc'd). */
static int auto_search(mpd_engine *e, void *state, const char *const *images, int n,
                       mpd_calib_stat **st, float *th, char **report, char *msg, size_t msglen)
{
    const mpd_net *net = e->net;
    const mpd_backend_ops *ops = e->be.ops;
    int layers = net->n, rc;
    mpd_calib_search *cs = NULL;
    float **out = calloc((size_t)layers, sizeof(float *));
    float(*cand)[2 * N_AUTO] = calloc((size_t)layers, sizeof(*cand));
    int *ncand = calloc((size_t)layers, sizeof(int)), *pair = calloc((size_t)layers, sizeof(int));
    size_t rlen = 0;
    FILE *rep = open_memstream(report, &rlen);
    if (!out || !cand || !ncand || !pair || !rep) {
        rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < layers; i++)
        if (!(out[i] = malloc(mpd_layer_out_size(&net->layers[i]) * sizeof(float)))) {
            rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
            goto done;
        }
    /* A convolution's input is the previous layer's output (the input
     * for layer 0). Behind a maxpool the int8 chain keeps the scale of the
     * convolution before it, so that one's candidates compete too and the
     * choice is written to both. */
    for (int c = 0; c < layers; c++) {
        if (net->layers[c].kind != MPD_LAYER_CONV)
            continue;
        int t = c > 0 ? c - 1 : layers;
        pair[c] = c > 1 && net->layers[c - 1].kind == MPD_LAYER_MAXPOOL &&
                          net->layers[c - 2].kind == MPD_LAYER_CONV
                      ? c - 2
                      : -1;
        for (int k = 0; k < N_AUTO; k++) {
            cand[c][ncand[c]++] = mpd_calib_stat_threshold(st[t], auto_cand[k].m, auto_cand[k].pct);
            if (pair[c] >= 0)
                cand[c][N_AUTO + k] =
                    mpd_calib_stat_threshold(st[pair[c]], auto_cand[k].m, auto_cand[k].pct);
        }
        if (pair[c] >= 0)
            ncand[c] = 2 * N_AUTO;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if ((rc = mpd__calib_search_create(net, cores > 0 ? (int)cores : 1, &cs, msg, msglen)))
        goto done;
    int nimg = n < AUTO_IMAGES ? n : AUTO_IMAGES;
    for (int k = 0; k < nimg && rc == 0; k++) {
        mpd_image im;
        if ((rc = mpd_image_load(images[k], 0, &im, msg, msglen)))
            break;
        rc = mpd_engine_preprocess(e, &im, e->input);
        mpd_image_free(&im);
        e->input_batch = 0;
        if (rc || (rc = ops->set_input(e->be.ctx, e->input, 1, msg, msglen)))
            break;
        e->input_batch = 1;
        for (int i = 0; i < layers && rc == 0; i++)
            if (!(rc = ops->forward_layer(e->be.ctx, state, i, 1, msg, msglen)) &&
                !(rc = ops->sync(e->be.ctx, msg, msglen)))
                rc = ops->read_output(e->be.ctx, state, i, 1, out[i], msg, msglen);
        for (int c = 0; c < layers && rc == 0; c++)
            if (ncand[c] && mpd__calib_search_observe(cs, c, c > 0 ? out[c - 1] : e->input,
                                                      out[c], cand[c], ncand[c]))
                rc = mpd__fail(msg, msglen, MPD_EINVAL, "calibration search failed at layer %d",
                               c);
    }
    if (rc)
        goto done;
    fprintf(rep, "# auto: per convolution, the input threshold whose int8 output came closest\n"
                 "# to fp32 on %d images (relative squared error of the output):\n",
            nimg);
    for (int c = 0; c < layers; c++) {
        double err[2 * N_AUTO];
        int nc = mpd__calib_search_errors(cs, c, err), best = 0;
        for (int k = 1; k < nc; k++)
            best = err[k] < err[best] ? k : best;
        if (!nc)
            continue;
        int t = c > 0 ? c - 1 : layers;
        th[t] = cand[c][best];
        if (pair[c] >= 0)
            th[pair[c]] = cand[c][best];
        char from[32];
        int src = best < N_AUTO ? t : pair[c];
        if (src == layers)
            snprintf(from, sizeof(from), "the input");
        else
            snprintf(from, sizeof(from), "layer %d", src);
        fprintf(rep, "#   conv %2d: %s of %s, error %.3g (minmax %.3g, mse %.3g)\n", c,
                auto_cand[best % N_AUTO].name, from, err[best], err[0], err[AUTO_MSE]);
    }
done:
    if (rep)
        fclose(rep);
    mpd__calib_search_free(cs);
    for (int i = 0; out && i < layers; i++)
        free(out[i]);
    free(out);
    free(cand);
    free(ncand);
    free(pair);
    return rc;
}

int mpd_engine_calibrate(mpd_engine *e, const char *const *images, int n, const char *method,
                         double percentile, const char *out_path, char *msg, size_t msglen)
{
    mpd_calib_method m;
    if (!method || mpd_calib_method_parse(method, &m))
        return mpd__fail(msg, msglen, MPD_EINVAL,
                         "calibration method '%s' is not minmax, percentile, entropy, mse or auto",
                         method ? method : "");
    if (n < 1)
        return mpd__fail(msg, msglen, MPD_EINVAL, "calibration needs at least one image");
    if (m == MPD_CALIB_PERCENTILE && !(percentile > 0 && percentile <= 100))
        return mpd__fail(msg, msglen, MPD_EINVAL, "percentile must lie in (0, 100]");
    int layers = e->net->n, rc;
    mpd_plan *fp32 = NULL;
    void *state = NULL;
    float *th = NULL;
    char *report = NULL;
    mpd_calib_stat **st = calloc((size_t)layers + 1, sizeof(*st));
    if (!st)
        return mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
    for (int i = 0; i <= layers; i++)
        if (!(st[i] = mpd_calib_stat_create())) {
            rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
            goto done;
        }
    /* Ranges are measured in fp32 whatever plan is serving. */
    if ((rc = mpd_plan_from_net(e->net, &fp32, msg, msglen)))
        goto done;
    for (int i = 0; i < layers; i++)
        fp32->prec[i] = MPD_PREC_FP32;
    if ((rc = create_state(e, fp32, &state, msg, msglen)))
        goto done;
    for (int pass = 0; pass < (m == MPD_CALIB_MINMAX ? 1 : 2) && rc == 0; pass++) {
        if (pass == 1)
            for (int i = 0; i <= layers; i++)
                mpd_calib_stat_begin_histogram(st[i]);
        for (int k = 0; k < n && rc == 0; k++)
            rc = calib_pass(e, state, images[k], st, pass, msg, msglen);
    }
    if (rc)
        goto done;
    if (!(th = malloc(((size_t)layers + 1) * sizeof(float)))) {
        rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i <= layers; i++)
        th[i] = mpd_calib_stat_threshold(st[i], m, percentile);
    if (m == MPD_CALIB_AUTO &&
        (rc = auto_search(e, state, images, n, st, th, &report, msg, msglen)))
        goto done;
    /* Written beside the target and renamed over it once complete, so a
     * full disk or a crash leaves the previous file whole. A device or pipe
     * (/dev/stdout) is written directly. */
    char tmp[4200] = "";
    struct stat ost;
    if (!(stat(out_path, &ost) == 0 && !S_ISREG(ost.st_mode)))
        snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", out_path, (long)getpid());
    FILE *f = fopen(tmp[0] ? tmp : out_path, "w");
    if (!f) {
        rc = mpd__fail(msg, msglen, MPD_EIO, "%s: cannot write: %s", tmp[0] ? tmp : out_path,
                       strerror(errno));
        goto done;
    }
    fprintf(f, "# Activation thresholds (|x| ranges) of every layer output, written by\n");
    fprintf(f, "# mpdet calibrate; an int8 tensor with threshold T has scale T / 127.\n");
    if (report)
        fputs(report, f);
    fprintf(f, "[calibration]\nmethod = %s\n", mpd_calib_method_name(m));
    if (m == MPD_CALIB_PERCENTILE)
        fprintf(f, "percentile = %g\n", percentile);
    fprintf(f, "images = %d\ncfg = %s\n[thresholds]\n", n, e->net->cfg_path);
    fprintf(f, "input = %.9g\n", (double)th[layers]);
    for (int i = 0; i < layers; i++)
        fprintf(f, "%d = %.9g\n", i, (double)th[i]);
    int bad = fflush(f) != 0 || (tmp[0] && fsync(fileno(f)) != 0);
    int err = errno;
    if (fclose(f) != 0 && !bad)
        bad = 1, err = errno;
    if (!bad && tmp[0] && rename(tmp, out_path) != 0)
        bad = 1, err = errno;
    if (bad) {
        if (tmp[0])
            unlink(tmp);
        rc = mpd__fail(msg, msglen, MPD_EIO, "%s: write failed: %s (the previous file is unchanged)",
                       out_path, strerror(err));
    }
done:
    if (state)
        e->m->be.ops->plan_destroy(e->m->be.ctx, state);
    free(th);
    free(report);
    mpd_plan_free(fp32);
    for (int i = 0; i <= layers; i++)
        mpd_calib_stat_free(st[i]);
    free(st);
    return rc;
}

/* ---- overflow statistics ---------------------------------------------- */

int mpd_engine_overflow(mpd_engine *e, const mpd_image *im, const char *calibration,
                        mpd_ovf_counts *out, char *msg, size_t msglen)
{
    const mpd_net *net = e->net;
    mpd_plan *cal = NULL;
    float *x = NULL;
    int rc;
    memset(out, 0, (size_t)net->n * sizeof(*out));
    if (calibration) {
        if ((rc = mpd_plan_from_net(net, &cal, msg, msglen)) ||
            (rc = mpd_plan_load_calibration(cal, net, calibration, msg, msglen)))
            goto done;
    }
    if ((rc = mpd_engine_preprocess(e, im, e->input)))
        return mpd__fail(msg, msglen, rc, "preprocess: %s", mpd_strerror(rc));
    if ((rc = mpd_engine_forward(e, e->input, 1, msg, msglen)))
        goto done;
    /* The thresholds of the plan that ran; e->last stays referenced until
     * the next pass, which only this thread starts. */
    const mpd_plan *pl = cal ? cal : e->last->plan;
    const float *th = pl->scheme == MPD_SCHEME_SYMMETRIC ? pl->out_thresh : NULL;
    size_t cap = 0;
    for (int i = 0; i < net->n; i++) {
        const mpd_layer *l = &net->layers[i];
        if (l->kind != MPD_LAYER_CONV)
            continue;
        /* A darknet layer reads the previous layer's output (routes are
         * layers of their own); layer 0 reads the network input. */
        const float *in = e->input;
        if (i > 0) {
            size_t n = mpd_layer_in_size(l);
            if (n > cap) {
                free(x);
                if (!(x = malloc(n * sizeof(float)))) {
                    rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
                    goto done;
                }
                cap = n;
            }
            if ((rc = e->be.ops->read_output(e->be.ctx, e->last->state, i - 1, 1, x, msg, msglen)))
                goto done;
            in = x;
        }
        float t = th ? (i > 0 ? th[i - 1] : pl->input_thresh) : 0;
        if ((rc = mpd_ovf_conv(l, in, t, &out[i], msg, msglen)))
            goto done;
    }
done:
    free(x);
    mpd_plan_free(cal);
    return rc;
}
