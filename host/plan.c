#define _POSIX_C_SOURCE 200809L
#include "plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "internal.h"

const char *mpd_scheme_name(mpd_scheme s)
{
    return s == MPD_SCHEME_AFFINE ? "affine" : "symmetric";
}

static mpd_plan *plan_alloc(int n)
{
    mpd_plan *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->n = n;
    p->prec = calloc((size_t)n, sizeof(mpd_precision));
    if (!p->prec) {
        free(p);
        return NULL;
    }
    return p;
}

void mpd_plan_free(mpd_plan *p)
{
    if (!p)
        return;
    free(p->prec);
    free(p->out_thresh);
    free(p->calibration);
    free(p->source);
    free(p);
}

int mpd_plan_copy(const mpd_plan *src, mpd_plan **out)
{
    *out = NULL;
    mpd_plan *p = plan_alloc(src->n);
    if (!p)
        return MPD_ENOMEM;
    memcpy(p->prec, src->prec, (size_t)src->n * sizeof(mpd_precision));
    p->scheme = src->scheme;
    p->input_thresh = src->input_thresh;
    if (src->out_thresh) {
        p->out_thresh = malloc((size_t)src->n * sizeof(float));
        if (p->out_thresh)
            memcpy(p->out_thresh, src->out_thresh, (size_t)src->n * sizeof(float));
    }
    p->calibration = src->calibration ? strdup(src->calibration) : NULL;
    p->source = src->source ? strdup(src->source) : NULL;
    if ((src->out_thresh && !p->out_thresh) || (src->calibration && !p->calibration) ||
        (src->source && !p->source)) {
        mpd_plan_free(p);
        return MPD_ENOMEM;
    }
    *out = p;
    return 0;
}

int mpd_plan_from_net(const mpd_net *net, mpd_plan **out, char *msg, size_t msglen)
{
    *out = NULL;
    mpd_plan *p = plan_alloc(net->n);
    if (!p || !(p->source = strdup("cfg"))) {
        mpd_plan_free(p);
        return mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
    }
    for (int i = 0; i < net->n; i++)
        p->prec[i] = net->layers[i].kind == MPD_LAYER_CONV ? net->layers[i].u.conv.cfg_precision
                                                           : MPD_PREC_FP32;
    p->scheme = MPD_SCHEME_SYMMETRIC;
    *out = p;
    return 0;
}

/* dir of path + name, unless name is absolute. */
static char *relative_to(const char *path, const char *name)
{
    if (name[0] == '/')
        return strdup(name);
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) + 1 : 0;
    char *r = malloc(dl + strlen(name) + 1);
    if (!r)
        return NULL;
    memcpy(r, path, dl);
    strcpy(r + dl, name);
    return r;
}

int mpd_plan_parse_file(const char *path, const mpd_net *net, const mpd_plan *base, mpd_plan **out,
                        char *msg, size_t msglen)
{
    *out = NULL;
    mpd_cfg *cfg = NULL;
    mpd_plan *p = NULL;
    char *calib = NULL; /* before the first goto: oom frees it */
    int rc = mpd_cfg_parse_file(path, &cfg, msg, msglen);
    if (rc)
        return rc;
    if ((rc = mpd_plan_copy(base, &p)))
        goto oom;
    free(p->source);
    free(p->calibration);
    free(p->out_thresh);
    p->calibration = NULL;
    p->out_thresh = NULL;
    p->input_thresh = 0;
    if (!(p->source = strdup(path)))
        goto oom;
    int seen_plan = 0, seen_layers = 0;
    for (int si = 0; si < cfg->nsec; si++) {
        mpd_cfg_section *s = &cfg->sec[si];
        if (strcmp(s->name, "plan") == 0) {
            if (seen_plan++) {
                rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: second [plan] section", path,
                               s->line);
                goto fail;
            }
            mpd_cfg_kv *kv;
            if ((kv = mpd_cfg_find(s, "default"))) {
                mpd_precision d;
                if (mpd_precision_parse(kv->val, &d)) {
                    rc = mpd__fail(msg, msglen, MPD_EPARSE,
                                   "%s:%d: default '%s' is not one of fp32, fp16, int8, bf16", path,
                                   kv->line, kv->val);
                    goto fail;
                }
                for (int i = 0; i < net->n; i++)
                    if (net->layers[i].kind == MPD_LAYER_CONV)
                        p->prec[i] = d;
            }
            if ((kv = mpd_cfg_find(s, "scheme"))) {
                if (strcmp(kv->val, "symmetric") == 0) {
                    p->scheme = MPD_SCHEME_SYMMETRIC;
                } else if (strcmp(kv->val, "affine") == 0) {
                    p->scheme = MPD_SCHEME_AFFINE;
                } else {
                    rc = mpd__fail(msg, msglen, MPD_EPARSE,
                                   "%s:%d: scheme '%s' is not symmetric or affine", path, kv->line,
                                   kv->val);
                    goto fail;
                }
            }
            if ((kv = mpd_cfg_find(s, "calibration")) && kv->val[0]) {
                if (!(calib = relative_to(path, kv->val)))
                    goto oom;
            }
            if ((rc = mpd_cfg_check_unused(cfg, s, msg, msglen)))
                goto fail;
        } else if (strcmp(s->name, "layers") == 0) {
            if (seen_layers++) {
                rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: second [layers] section", path,
                               s->line);
                goto fail;
            }
            for (int k = 0; k < s->nkv; k++) {
                mpd_cfg_kv *kv = &s->kv[k];
                kv->used = 1;
                long idx;
                mpd_precision pr;
                if (mpd__parse_int(kv->key, 0, net->n - 1, &idx)) {
                    rc =
                        mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: '%s' is not a layer index 0..%d",
                                  path, kv->line, kv->key, net->n - 1);
                    goto fail;
                }
                if (mpd_precision_parse(kv->val, &pr)) {
                    rc = mpd__fail(msg, msglen, MPD_EPARSE,
                                   "%s:%d: precision '%s' is not one of fp32, fp16, int8, bf16",
                                   path, kv->line, kv->val);
                    goto fail;
                }
                const mpd_layer *l = &net->layers[idx];
                if (l->kind != MPD_LAYER_CONV && pr != MPD_PREC_FP32) {
                    rc = mpd__fail(msg, msglen, MPD_EPARSE,
                                   "%s:%d: layer %ld is a %s layer; only convolutions can run "
                                   "in %s",
                                   path, kv->line, idx, mpd_layer_kind_name(l->kind), kv->val);
                    goto fail;
                }
                p->prec[idx] = pr;
            }
        } else {
            rc = mpd__fail(msg, msglen, MPD_EPARSE,
                           "%s:%d: unknown section [%s] (a plan has [plan] and [layers])", path,
                           s->line, s->name);
            goto fail;
        }
    }
    if (calib) {
        char detail[512];
        rc = mpd_plan_load_calibration(p, net, calib, detail, sizeof(detail));
        if (rc) {
            mpd__fail(msg, msglen, rc, "%s: calibration: %s", path, detail);
            goto fail;
        }
        free(calib);
        calib = NULL;
    }
    mpd_cfg_free(cfg);
    *out = p;
    return 0;
oom:
    rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
fail:
    free(calib);
    mpd_cfg_free(cfg);
    mpd_plan_free(p);
    return rc;
}

int mpd_plan_load_calibration(mpd_plan *p, const mpd_net *net, const char *path, char *msg,
                              size_t msglen)
{
    mpd_cfg *cfg = NULL;
    int rc = mpd_cfg_parse_file(path, &cfg, msg, msglen);
    if (rc)
        return rc;
    float *th = calloc((size_t)net->n, sizeof(float));
    float input = 0;
    int have_thresholds = 0, thresholds_line = 0;
    if (!th) {
        rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
        goto done;
    }
    for (int si = 0; si < cfg->nsec && rc == 0; si++) {
        mpd_cfg_section *s = &cfg->sec[si];
        if (strcmp(s->name, "calibration") == 0) {
            /* Provenance (method, images, cfg): informational. */
            for (int k = 0; k < s->nkv; k++)
                s->kv[k].used = 1;
        } else if (strcmp(s->name, "thresholds") == 0) {
            have_thresholds = 1;
            thresholds_line = s->line;
            for (int k = 0; k < s->nkv && rc == 0; k++) {
                mpd_cfg_kv *kv = &s->kv[k];
                double v;
                long idx = -1;
                if (strcmp(kv->key, "input") != 0 && mpd__parse_int(kv->key, 0, net->n - 1, &idx))
                    rc = mpd__fail(msg, msglen, MPD_EPARSE,
                                   "%s:%d: '%s' is not 'input' or a layer index 0..%d", path,
                                   kv->line, kv->key, net->n - 1);
                else if (mpd__parse_float(kv->val, 1e-30, 1e30, &v))
                    rc = mpd__fail(msg, msglen, MPD_EPARSE,
                                   "%s:%d: threshold '%s' is not a positive number", path, kv->line,
                                   kv->val);
                else if (idx < 0)
                    input = (float)v;
                else
                    th[idx] = (float)v;
            }
        } else {
            rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: unknown section [%s]", path, s->line,
                           s->name);
        }
    }
    if (rc == 0 && (!have_thresholds || !(input > 0)))
        rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s: needs [thresholds] with input = ...", path);
    /* Every convolution's output must be covered: it is what int8 layers
     * downstream are quantized with. */
    for (int i = 0; i < net->n && rc == 0; i++)
        if (net->layers[i].kind == MPD_LAYER_CONV && !(th[i] > 0))
            rc = mpd__fail(msg, msglen, MPD_EPARSE,
                           "%s:%d: no threshold for layer %d (a convolution); was it made for "
                           "another cfg?",
                           path, thresholds_line, i);
    /* Ranges the file leaves out, derived in layer order from their
     * inputs' (given or derived): a maxpool and an upsample keep their
     * input's values, a route copies its sources', and |a + b| <= |a| + |b|
     * bounds a shortcut (its linear, leaky or relu activation does not
     * grow |x|; a logistic one stays within 1). A [yolo] output mixes
     * logistic and raw values: not derived. */
    for (int i = 0; i < net->n && rc == 0; i++) {
        const mpd_layer *l = &net->layers[i];
        if (th[i] > 0)
            continue;
        float prev = i > 0 ? th[i - 1] : input, t = 0;
        switch (l->kind) {
        case MPD_LAYER_MAXPOOL:
        case MPD_LAYER_UPSAMPLE: t = prev; break;
        case MPD_LAYER_ROUTE:
            for (int r = 0; r < l->u.route.n; r++) {
                float f = th[l->u.route.from[r]];
                if (!(f > 0)) {
                    t = 0; /* a source without a range */
                    break;
                }
                t = f > t ? f : t;
            }
            break;
        case MPD_LAYER_SHORTCUT:
            if (prev > 0 && th[l->u.shortcut.from] > 0)
                t = l->u.shortcut.act == MPD_ACT_LOGISTIC ? 1.f : prev + th[l->u.shortcut.from];
            break;
        default: break;
        }
        th[i] = t;
    }
    /* What a convolution reads must be known now. */
    for (int i = 1; i < net->n && rc == 0; i++)
        if (net->layers[i].kind == MPD_LAYER_CONV && !(th[i - 1] > 0))
            rc = mpd__fail(msg, msglen, MPD_EPARSE,
                           "%s:%d: no threshold for layer %d (a %s layer read by convolution %d), "
                           "and it cannot be derived from its inputs' thresholds",
                           path, thresholds_line, i - 1,
                           mpd_layer_kind_name(net->layers[i - 1].kind), i);
    if (rc == 0) {
        free(p->out_thresh);
        free(p->calibration);
        p->out_thresh = th;
        p->input_thresh = input;
        p->calibration = strdup(path);
        th = NULL;
        if (!p->calibration)
            rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
    }
done:
    free(th);
    mpd_cfg_free(cfg);
    return rc;
}

/* ---- tensor types --------------------------------------------------- */

int mpd__plan_reads(const mpd_net *net, int j, int i)
{
    const mpd_layer *l = &net->layers[j];
    if (l->kind == MPD_LAYER_ROUTE) {
        for (int r = 0; r < l->u.route.n; r++)
            if (l->u.route.from[r] == i)
                return 1;
        return 0;
    }
    return j == i + 1 || (l->kind == MPD_LAYER_SHORTCUT && l->u.shortcut.from == i);
}

int mpd__plan_check_i8(const mpd_net *net, const mpd_plan *pl, char *msg, size_t msglen)
{
    long max = mpd__i8_max_k(pl->scheme);
    for (int i = 0; i < net->n && i < pl->n; i++) {
        const mpd_layer *l = &net->layers[i];
        if (l->kind != MPD_LAYER_CONV || pl->prec[i] != MPD_PREC_INT8 || mpd__conv_k(l) <= max)
            continue;
        return mpd__fail(msg, msglen, MPD_EUNSUP,
                         "layer %d (conv, K = %ld = %d x %d x %d) cannot run in int8 (%s): its "
                         "int32 sums allow K <= %ld",
                         i, mpd__conv_k(l), l->in_c, l->u.conv.size, l->u.conv.size,
                         mpd_scheme_name(pl->scheme), max);
    }
    return 0;
}

int mpd__plan_tensor_types(const mpd_net *net, const mpd_plan *pl, mpd_tensor_type *type,
                           mpd_qparams *oq)
{
    int n = net->n, *wants_i8 = calloc((size_t)n, sizeof(int)),
        *wants_bf16 = calloc((size_t)n, sizeof(int));
    if (!wants_i8 || !wants_bf16) {
        free(wants_i8);
        free(wants_bf16);
        return MPD_ENOMEM;
    }
    int static_scales = pl->scheme == MPD_SCHEME_SYMMETRIC && pl->out_thresh;
    /* Every reader of layer i, however many: int8 (bf16) where each one
     * takes it. */
    for (int i = n - 1; i >= 0; i--) {
        int readers = 0, ok8 = 1, ok16 = 1;
        for (int j = i + 1; j < n; j++) {
            if (!mpd__plan_reads(net, j, i))
                continue;
            const mpd_layer *cl = &net->layers[j];
            readers++;
            ok8 &= (cl->kind == MPD_LAYER_CONV && pl->prec[j] == MPD_PREC_INT8) ||
                   (cl->kind == MPD_LAYER_MAXPOOL && wants_i8[j]);
            ok16 &= (cl->kind == MPD_LAYER_CONV && pl->prec[j] == MPD_PREC_BF16) ||
                    (cl->kind == MPD_LAYER_MAXPOOL && wants_bf16[j]);
        }
        wants_i8[i] = readers > 0 && ok8;
        wants_bf16[i] = readers > 0 && ok16;
    }
    for (int i = 0; i < n; i++) {
        const mpd_layer *l = &net->layers[i];
        type[i] = MPD_TENSOR_F32;
        if (l->kind == MPD_LAYER_CONV && pl->prec[i] == MPD_PREC_INT8 && static_scales &&
            wants_i8[i]) {
            type[i] = MPD_TENSOR_I8;
            oq[i] = mpd_q_symmetric(pl->out_thresh[i]);
        } else if (l->kind == MPD_LAYER_MAXPOOL && i > 0 && type[i - 1] == MPD_TENSOR_I8 &&
                   wants_i8[i]) {
            type[i] = MPD_TENSOR_I8;
            oq[i] = oq[i - 1];
        } else if (wants_bf16[i] &&
                   ((l->kind == MPD_LAYER_CONV && pl->prec[i] == MPD_PREC_BF16) ||
                    (l->kind == MPD_LAYER_MAXPOOL && i > 0 && type[i - 1] == MPD_TENSOR_BF16))) {
            type[i] = MPD_TENSOR_BF16;
        } else if (l->kind == MPD_LAYER_CONV && pl->prec[i] == MPD_PREC_FP16) {
            int readers = 0, ok = 1;
            for (int j = i + 1; j < n; j++) {
                if (!mpd__plan_reads(net, j, i))
                    continue;
                mpd_layer_kind ck = net->layers[j].kind;
                readers++;
                ok &= ck == MPD_LAYER_CONV || ck == MPD_LAYER_MAXPOOL;
            }
            if (readers > 0 && ok)
                type[i] = MPD_TENSOR_F16;
        }
    }
    free(wants_i8);
    free(wants_bf16);
    return 0;
}
