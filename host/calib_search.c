/* calib_search.c - int8 output error per candidate input threshold (see
 * calib_search.h). Runs the CPU backend's int8 convolution, the reference
 * every backend matches, so the error measured is the one a plan gets. */
#include "calib_search.h"

#include <stdlib.h>
#include <string.h>

#include "cpu/conv_i8.h"
#include "cpu/cpu_kernels.h"
#include "cpu/tpool.h"
#include "mpd.h"
#include "quant.h"

typedef struct {
    mpd__conv_i8_weights w; /* symmetric, per output channel */
    int prepared, ncand;
    double err[MPD_CALIB_SEARCH_MAX], ref;
} layer_state;

struct mpd_calib_search {
    const mpd_net *net;
    layer_state *layer;
    mpd__cpu_exec ex;
    int threads;
    int8_t *x8;
    float *y;
};

void mpd__calib_search_free(mpd_calib_search *s)
{
    if (!s)
        return;
    for (int i = 0; s->layer && i < s->net->n; i++)
        if (s->layer[i].prepared)
            mpd__conv_i8_release(&s->layer[i].w);
    free(s->layer);
    for (int t = 0; s->ex.ws && t < s->threads; t++)
        free(s->ex.ws[t]);
    free(s->ex.ws);
    free(s->ex.shared);
    free(s->ex.scale);
    if (s->ex.pool)
        mpd__tpool_destroy(s->ex.pool);
    free(s->x8);
    free(s->y);
    free(s);
}

int mpd__calib_search_create(const mpd_net *net, int threads, mpd_calib_search **out, char *msg,
                             size_t msglen)
{
    *out = NULL;
    if (!net->weights_loaded)
        return mpd__fail(msg, msglen, MPD_EINVAL, "calibration search: weights not loaded");
    mpd_calib_search *s = calloc(1, sizeof(*s));
    if (!s)
        return mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
    s->net = net;
    s->threads = threads > 0 ? threads : 1;
    size_t ws = 0, shared = 0, in = 0, outn = 0;
    int filters = 1;
    s->layer = calloc((size_t)net->n, sizeof(layer_state));
    s->ex.ws = calloc((size_t)s->threads, sizeof(float *));
    if (!s->layer || !s->ex.ws || mpd__tpool_create(s->threads, &s->ex.pool))
        goto oom;
    for (int i = 0; i < net->n; i++) {
        const mpd_layer *l = &net->layers[i];
        if (l->kind != MPD_LAYER_CONV)
            continue;
        if (mpd__conv_i8_prepare(l, MPD_SCHEME_SYMMETRIC, &s->layer[i].w))
            goto oom;
        s->layer[i].prepared = 1;
        size_t a = mpd__conv_i8_ws_worker(l, s->threads), b = mpd__conv_i8_ws_shared(l, s->threads);
        ws = a > ws ? a : ws;
        shared = b > shared ? b : shared;
        in = mpd_layer_in_size(l) > in ? mpd_layer_in_size(l) : in;
        outn = mpd_layer_out_size(l) > outn ? mpd_layer_out_size(l) : outn;
        filters = l->u.conv.filters > filters ? l->u.conv.filters : filters;
    }
    for (int t = 0; ws && t < s->threads; t++)
        if (!(s->ex.ws[t] = malloc(ws)))
            goto oom;
    if ((shared && !(s->ex.shared = malloc(shared))) ||
        !(s->ex.scale = malloc((size_t)filters * sizeof(float))) || !(s->x8 = malloc(in + 1)) ||
        !(s->y = malloc((outn + 1) * sizeof(float))))
        goto oom;
    *out = s;
    return 0;
oom:
    mpd__calib_search_free(s);
    return mpd__fail(msg, msglen, MPD_ENOMEM, "calibration search: out of memory");
}

int mpd__calib_search_observe(mpd_calib_search *s, int i, const float *x, const float *y,
                              const float *cand, int n)
{
    if (i < 0 || i >= s->net->n || !s->layer[i].prepared || n < 1 || n > MPD_CALIB_SEARCH_MAX)
        return MPD_EINVAL;
    const mpd_layer *l = &s->net->layers[i];
    layer_state *st = &s->layer[i];
    if (st->ncand && st->ncand != n)
        return MPD_EINVAL;
    st->ncand = n;
    size_t no = mpd_layer_out_size(l);
    int hw = l->in_h * l->in_w;
    for (size_t j = 0; j < no; j++)
        st->ref += (double)y[j] * y[j];
    for (int k = 0; k < n; k++) {
        mpd_qparams xq = mpd_q_symmetric(cand[k]);
        mpd__quantize_chw_to_hwc(x, l->in_c, hw, xq, s->x8, 0, hw);
        mpd__conv_i8(l, &st->w, s->x8, xq, s->y, NULL, 1.f, &s->ex);
        double e = 0;
        for (size_t j = 0; j < no; j++) {
            double d = (double)s->y[j] - y[j];
            e += d * d;
        }
        st->err[k] += e;
    }
    return 0;
}

int mpd__calib_search_errors(const mpd_calib_search *s, int i, double *err)
{
    if (i < 0 || i >= s->net->n || !s->layer[i].prepared || !s->layer[i].ncand)
        return 0;
    const layer_state *st = &s->layer[i];
    for (int k = 0; k < st->ncand; k++)
        err[k] = st->ref > 0 ? st->err[k] / st->ref : 0;
    return st->ncand;
}
