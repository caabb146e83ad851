/* The CPU backend: the reference every other backend is checked against,
 * and the fallback when there is no GPU. fp32 through OpenBLAS. */
#define _GNU_SOURCE
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../backend.h"
#include "cpu_kernels.h"
#include "tpool.h"

typedef struct {
    const mpd_net *net; /* borrowed */
    int max_batch;
    int threads;
    float *input;       /* max_batch x net input */
    float **out;        /* per layer: max_batch x layer output */
    mpd__cpu_exec ex;   /* pool + im2col scratch */
} cpu_ctx;

static void cpu_destroy(void *p)
{
    cpu_ctx *c = p;
    if (!c)
        return;
    if (c->out)
        for (int i = 0; i < c->net->n; i++)
            free(c->out[i]);
    free(c->out);
    free(c->input);
    if (c->ex.ws)
        for (int i = 0; i < c->threads; i++)
            free(c->ex.ws[i]);
    free(c->ex.ws);
    free(c->ex.shared);
    mpd__tpool_destroy(c->ex.pool);
    free(c);
}

static int cpu_create(const mpd_net *net, const mpd_backend_config *cfg, void **out, char *msg,
                      size_t msglen)
{
    *out = NULL;
    if (cfg->max_batch < 1)
        return mpd__fail(msg, msglen, MPD_EINVAL, "max_batch must be >= 1");
    cpu_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
    c->net = net;
    c->max_batch = cfg->max_batch;
    c->threads = cfg->threads > 0 ? cfg->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (c->threads < 1)
        c->threads = 1;
    size_t b = (size_t)cfg->max_batch, ws = 0, shared = 0;
    c->out = calloc((size_t)net->n, sizeof(float *));
    c->input = malloc(b * net->in_c * net->in_h * net->in_w * sizeof(float));
    c->ex.ws = calloc((size_t)c->threads, sizeof(float *));
    if (!c->out || !c->input || !c->ex.ws || mpd__tpool_create(c->threads, &c->ex.pool))
        goto oom;
    for (int i = 0; i < net->n; i++) {
        const mpd_layer *l = &net->layers[i];
        c->out[i] = malloc(b * mpd_layer_out_size(l) * sizeof(float));
        if (!c->out[i])
            goto oom;
        if (l->kind == MPD_LAYER_CONV) {
            if (mpd__conv_ws_worker(l, c->threads) > ws)
                ws = mpd__conv_ws_worker(l, c->threads);
            if (mpd__conv_ws_shared(l, c->threads) > shared)
                shared = mpd__conv_ws_shared(l, c->threads);
        }
    }
    for (int i = 0; ws && i < c->threads; i++)
        if (!(c->ex.ws[i] = malloc(ws * sizeof(float))))
            goto oom;
    if (shared && !(c->ex.shared = malloc(shared * sizeof(float))))
        goto oom;
    /* Our pool splits each layer across the cores and calls single-threaded
     * sgemm from every worker; OpenBLAS's own threads would oversubscribe
     * the cores and spin between calls. */
    openblas_set_num_threads(1);
    *out = c;
    return 0;
oom:
    cpu_destroy(c);
    return mpd__fail(msg, msglen, MPD_ENOMEM, "cpu backend: out of memory for buffers");
}

static int cpu_upload(void *p, char *msg, size_t msglen)
{
    /* The net's host copy is used in place: nothing to copy. */
    cpu_ctx *c = p;
    if (!c->net->weights_loaded)
        return mpd__fail(msg, msglen, MPD_EINVAL, "cpu backend: weights not loaded");
    return 0;
}

static int cpu_supports(void *p, const mpd_layer *l, mpd_precision prec)
{
    (void)p;
    (void)l;
    return prec == MPD_PREC_FP32;
}

static int cpu_set_input(void *p, const float *x, int batch, char *msg, size_t msglen)
{
    cpu_ctx *c = p;
    if (batch < 1 || batch > c->max_batch)
        return mpd__fail(msg, msglen, MPD_EINVAL, "batch %d outside 1..%d", batch,
                         c->max_batch);
    memcpy(c->input, x,
           (size_t)batch * c->net->in_c * c->net->in_h * c->net->in_w * sizeof(float));
    return 0;
}

/* Channel-wise layers (maxpool, upsample) split across the pool: each task
 * runs the kernel on a view of the layer restricted to some channels. */
typedef struct {
    const mpd_layer *l;
    const float *x;
    float *y;
    int chunk;
    void (*kernel)(const mpd_layer *, const float *, float *);
} chan_job;

static void chan_task(void *p, int task, int worker)
{
    (void)worker;
    const chan_job *j = p;
    mpd_layer view = *j->l;
    int c0 = task * j->chunk;
    view.in_c = view.out_c = j->l->out_c - c0 < j->chunk ? j->l->out_c - c0 : j->chunk;
    j->kernel(&view, j->x + (size_t)c0 * j->l->in_h * j->l->in_w,
              j->y + (size_t)c0 * j->l->out_h * j->l->out_w);
}

static void per_channel(cpu_ctx *c, const mpd_layer *l, const float *x, float *y,
                        void (*kernel)(const mpd_layer *, const float *, float *))
{
    int tasks = c->threads * 2 < l->out_c ? c->threads * 2 : l->out_c;
    chan_job j = {l, x, y, (l->out_c + tasks - 1) / tasks, kernel};
    mpd__tpool_run(c->ex.pool, (l->out_c + j.chunk - 1) / j.chunk, chan_task, &j);
}

static const float *layer_input(cpu_ctx *c, int i)
{
    return i == 0 ? c->input : c->out[i - 1];
}

static int cpu_forward_layer(void *p, int i, int batch, char *msg, size_t msglen)
{
    cpu_ctx *c = p;
    if (i < 0 || i >= c->net->n || batch < 1 || batch > c->max_batch)
        return mpd__fail(msg, msglen, MPD_EINVAL, "layer %d / batch %d out of range", i, batch);
    const mpd_layer *l = &c->net->layers[i];
    size_t isz = mpd_layer_in_size(l), osz = mpd_layer_out_size(l);
    const float *in = layer_input(c, i);
    float *out = c->out[i];
    for (int b = 0; b < batch; b++) {
        const float *x = in + b * isz;
        float *y = out + b * osz;
        switch (l->kind) {
        case MPD_LAYER_CONV: mpd__conv_f32(l, x, y, &c->ex); break;
        case MPD_LAYER_MAXPOOL: per_channel(c, l, x, y, mpd__maxpool_f32); break;
        case MPD_LAYER_UPSAMPLE: per_channel(c, l, x, y, mpd__upsample_f32); break;
        case MPD_LAYER_YOLO: mpd__yolo_f32(l, x, y); break;
        case MPD_LAYER_SHORTCUT: {
            const mpd_layer *f = &c->net->layers[l->u.shortcut.from];
            mpd__shortcut_f32(l, x, c->out[f->index] + b * mpd_layer_out_size(f), y);
            break;
        }
        case MPD_LAYER_ROUTE: {
            float *dst = y;
            for (int r = 0; r < l->u.route.n; r++) {
                const mpd_layer *f = &c->net->layers[l->u.route.from[r]];
                size_t n = mpd_layer_out_size(f);
                memcpy(dst, c->out[f->index] + b * n, n * sizeof(float));
                dst += n;
            }
            break;
        }
        }
    }
    return 0;
}

static int cpu_sync(void *p, char *msg, size_t msglen)
{
    (void)p;
    (void)msg;
    (void)msglen;
    return 0;
}

static int cpu_read_output(void *p, int i, int batch, float *dst, char *msg, size_t msglen)
{
    cpu_ctx *c = p;
    if (i < 0 || i >= c->net->n || batch < 1 || batch > c->max_batch)
        return mpd__fail(msg, msglen, MPD_EINVAL, "layer %d / batch %d out of range", i, batch);
    memcpy(dst, c->out[i], (size_t)batch * mpd_layer_out_size(&c->net->layers[i]) * sizeof(float));
    return 0;
}

static const float *cpu_output_host(void *p, int i)
{
    cpu_ctx *c = p;
    return (i >= 0 && i < c->net->n) ? c->out[i] : NULL;
}

const mpd_backend_ops mpd__cpu_backend_ops = {
    .name = "cpu",
    .create = cpu_create,
    .upload_weights = cpu_upload,
    .supports = cpu_supports,
    .set_input = cpu_set_input,
    .forward_layer = cpu_forward_layer,
    .sync = cpu_sync,
    .read_output = cpu_read_output,
    .output_host = cpu_output_host,
    .destroy = cpu_destroy,
};
