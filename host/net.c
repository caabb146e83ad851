#define _POSIX_C_SOURCE 200809L
#include "net.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

/* Keys darknet reads for training or augmentation. They carry no meaning for
 * inference, so they are accepted (and otherwise ignored) where they belong. */
static const char *const net_training_keys[] = {
    "batch", "subdivisions", "momentum", "decay", "angle", "saturation", "exposure",
    "hue", "learning_rate", "burn_in", "max_batches", "policy", "steps", "scales",
    "max_crop", "min_crop", "aspect", "power", "step", "gamma", NULL,
};
static const char *const yolo_training_keys[] = {
    "jitter", "ignore_thresh", "truth_thresh", "random", NULL,
};

const char *mpd_layer_kind_name(mpd_layer_kind k)
{
    switch (k) {
    case MPD_LAYER_CONV: return "conv";
    case MPD_LAYER_MAXPOOL: return "max";
    case MPD_LAYER_ROUTE: return "route";
    case MPD_LAYER_UPSAMPLE: return "upsample";
    case MPD_LAYER_SHORTCUT: return "shortcut";
    case MPD_LAYER_YOLO: return "yolo";
    }
    return "?";
}

const char *mpd_act_name(mpd_act a)
{
    switch (a) {
    case MPD_ACT_LINEAR: return "linear";
    case MPD_ACT_LEAKY: return "leaky";
    case MPD_ACT_RELU: return "relu";
    case MPD_ACT_LOGISTIC: return "logistic";
    }
    return "?";
}

static void mark_keys(mpd_cfg_section *s, const char *const *keys)
{
    for (int i = 0; keys[i]; i++)
        (void)mpd_cfg_find(s, keys[i]);
}

#define TRY(x)                                                                                 \
    do {                                                                                       \
        int rc_ = (x);                                                                         \
        if (rc_ < 0)                                                                           \
            return rc_;                                                                        \
    } while (0)

static int get_act(const mpd_cfg *c, mpd_cfg_section *s, mpd_act def, mpd_act *out, char *msg,
                   size_t msglen)
{
    mpd_cfg_kv *kv = mpd_cfg_find(s, "activation");
    if (!kv) {
        *out = def;
        return 0;
    }
    static const mpd_act all[] = {MPD_ACT_LINEAR, MPD_ACT_LEAKY, MPD_ACT_RELU,
                                  MPD_ACT_LOGISTIC};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (strcmp(kv->val, mpd_act_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    }
    return mpd__fail(msg, msglen, MPD_EPARSE,
                     "%s:%d: activation '%s' is not supported (linear, leaky, relu, logistic)",
                     c->path, kv->line, kv->val);
}

/* The paper's per-layer keys: precision=fp32|fp16|int8|bf16 and quantize=0|1.
 * quantize=1 alone means int8; quantize=0 means fp32 and contradicts any
 * other precision. */
static int get_precision(const mpd_cfg *c, mpd_cfg_section *s, mpd_precision *out, char *msg,
                         size_t msglen)
{
    int quantize;
    TRY(mpd_cfg_get_int(c, s, "quantize", -1, 0, 1, &quantize, msg, msglen));
    mpd_cfg_kv *kv = mpd_cfg_find(s, "precision");
    mpd_precision p = MPD_PREC_FP32;
    if (kv && mpd_precision_parse(kv->val, &p))
        return mpd__fail(msg, msglen, MPD_EPARSE,
                         "%s:%d: precision '%s' is not one of fp32, fp16, int8, bf16", c->path,
                         kv->line, kv->val);
    if (!kv && quantize == 1)
        p = MPD_PREC_INT8;
    if (kv && quantize == 0 && p != MPD_PREC_FP32)
        return mpd__fail(msg, msglen, MPD_EPARSE,
                         "%s:%d: precision=%s contradicts quantize=0 (which means fp32)", c->path,
                         kv->line, kv->val);
    if (kv && quantize == 1 && p == MPD_PREC_FP32)
        return mpd__fail(msg, msglen, MPD_EPARSE,
                         "%s:%d: quantize=1 needs precision=fp16, int8 or bf16, not fp32", c->path,
                         kv->line);
    *out = p;
    return 0;
}

/* Resolves a darknet layer reference (negative = relative to index). */
static int resolve_ref(const mpd_cfg *c, const mpd_cfg_kv *kv, int ref, int index, int *out,
                       char *msg, size_t msglen)
{
    int abs = ref < 0 ? index + ref : ref;
    if (abs < 0 || abs >= index)
        return mpd__fail(msg, msglen, MPD_EPARSE,
                         "%s:%d: %s refers to layer %d, which is not an earlier layer of "
                         "layer %d",
                         c->path, kv->line, kv->key, abs, index);
    *out = abs;
    return 0;
}


static int parse_conv(const mpd_cfg *c, mpd_cfg_section *s, mpd_layer *l, size_t *nparams,
                      char *msg, size_t msglen)
{
    mpd_conv *cv = &l->u.conv;
    int pad, padding;
    TRY(mpd_cfg_get_int(c, s, "filters", 1, 1, 65536, &cv->filters, msg, msglen));
    TRY(mpd_cfg_get_int(c, s, "size", 1, 1, 31, &cv->size, msg, msglen));
    TRY(mpd_cfg_get_int(c, s, "stride", 1, 1, 64, &cv->stride, msg, msglen));
    TRY(mpd_cfg_get_int(c, s, "pad", 0, 0, 1, &pad, msg, msglen));
    TRY(mpd_cfg_get_int(c, s, "padding", 0, 0, 64, &padding, msg, msglen));
    TRY(mpd_cfg_get_int(c, s, "batch_normalize", 0, 0, 1, &cv->batch_normalize, msg, msglen));
    TRY(get_act(c, s, MPD_ACT_LOGISTIC, &cv->act, msg, msglen));
    TRY(get_precision(c, s, &cv->cfg_precision, msg, msglen));
    /* darknet: pad=1 means "same" padding of size/2 and overrides padding=. */
    cv->pad = pad ? cv->size / 2 : padding;
    l->out_c = cv->filters;
    l->out_h = (l->in_h + 2 * cv->pad - cv->size) / cv->stride + 1;
    l->out_w = (l->in_w + 2 * cv->pad - cv->size) / cv->stride + 1;
    if (l->in_h + 2 * cv->pad < cv->size || l->in_w + 2 * cv->pad < cv->size)
        return mpd__fail(msg, msglen, MPD_EPARSE,
                         "%s:%d: convolution size %d is larger than its %dx%d input", c->path,
                         l->line, cv->size, l->in_w, l->in_h);
    size_t k = (size_t)l->in_c * (size_t)cv->size * (size_t)cv->size;
    l->gflop = 2.0 * (double)cv->filters * (double)k * l->out_h * l->out_w / 1e9;
    *nparams += (size_t)cv->filters * (cv->batch_normalize ? 4 : 1) + (size_t)cv->filters * k;
    return 0;
}

static int parse_maxpool(const mpd_cfg *c, mpd_cfg_section *s, mpd_layer *l, char *msg,
                         size_t msglen)
{
    mpd_pool *p = &l->u.pool;
    TRY(mpd_cfg_get_int(c, s, "stride", 1, 1, 64, &p->stride, msg, msglen));
    TRY(mpd_cfg_get_int(c, s, "size", p->stride, 1, 64, &p->size, msg, msglen));
    TRY(mpd_cfg_get_int(c, s, "padding", p->size - 1, 0, 64, &p->padding, msg, msglen));
    if (l->in_w + p->padding < p->size || l->in_h + p->padding < p->size)
        return mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: maxpool size %d is larger than its input",
                         c->path, l->line, p->size);
    l->out_c = l->in_c;
    l->out_w = (l->in_w + p->padding - p->size) / p->stride + 1;
    l->out_h = (l->in_h + p->padding - p->size) / p->stride + 1;
    return 0;
}

static int parse_route(const mpd_cfg *c, mpd_cfg_section *s, mpd_layer *l,
                       const mpd_layer *layers, char *msg, size_t msglen)
{
    mpd_route *r = &l->u.route;
    int refs[MPD_ROUTE_MAX], n;
    TRY(mpd_cfg_get_int_list(c, s, "layers", refs, MPD_ROUTE_MAX, &n, msg, msglen));
    if (n == 0)
        return mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: [route] needs layers=", c->path,
                         l->line);
    mpd_cfg_kv *kv = mpd_cfg_find(s, "layers");
    r->n = n;
    l->out_c = 0;
    for (int i = 0; i < n; i++) {
        TRY(resolve_ref(c, kv, refs[i], l->index, &r->from[i], msg, msglen));
        const mpd_layer *src = &layers[r->from[i]];
        if (i == 0) {
            l->out_h = src->out_h;
            l->out_w = src->out_w;
        } else if (src->out_h != l->out_h || src->out_w != l->out_w) {
            return mpd__fail(msg, msglen, MPD_EPARSE,
                             "%s:%d: route joins layer %d (%dx%d) with layer %d (%dx%d); "
                             "sizes must match",
                             c->path, kv->line, r->from[0], l->out_w, l->out_h, r->from[i],
                             src->out_w, src->out_h);
        }
        /* Checked before adding: up to MPD_ROUTE_MAX inputs of up to 2^30
         * channels each would overflow an int (and could wrap around to a
         * small, plausible count). */
        if (src->out_c > (1 << 30) - l->out_c)
            return mpd__fail(msg, msglen, MPD_EPARSE,
                             "%s:%d: route joins more than 2^30 channels", c->path, kv->line);
        l->out_c += src->out_c;
    }
    l->in_c = l->out_c;
    l->in_h = l->out_h;
    l->in_w = l->out_w;
    return 0;
}

static int parse_upsample(const mpd_cfg *c, mpd_cfg_section *s, mpd_layer *l, char *msg,
                          size_t msglen)
{
    TRY(mpd_cfg_get_int(c, s, "stride", 2, 1, 32, &l->u.up.stride, msg, msglen));
    l->out_c = l->in_c;
    l->out_h = l->in_h * l->u.up.stride;
    l->out_w = l->in_w * l->u.up.stride;
    return 0;
}

static int parse_shortcut(const mpd_cfg *c, mpd_cfg_section *s, mpd_layer *l,
                          const mpd_layer *layers, char *msg, size_t msglen)
{
    int ref;
    TRY(mpd_cfg_get_int(c, s, "from", 0, -100000, 100000, &ref, msg, msglen));
    mpd_cfg_kv *kv = mpd_cfg_find(s, "from");
    if (!kv)
        return mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: [shortcut] needs from=", c->path,
                         l->line);
    TRY(resolve_ref(c, kv, ref, l->index, &l->u.shortcut.from, msg, msglen));
    TRY(get_act(c, s, MPD_ACT_LINEAR, &l->u.shortcut.act, msg, msglen));
    const mpd_layer *src = &layers[l->u.shortcut.from];
    if (src->out_c != l->in_c || src->out_h != l->in_h || src->out_w != l->in_w)
        return mpd__fail(msg, msglen, MPD_EPARSE,
                         "%s:%d: shortcut adds layer %d (%dx%dx%d) to a %dx%dx%d input; "
                         "shapes must match",
                         c->path, kv->line, src->index, src->out_w, src->out_h, src->out_c,
                         l->in_w, l->in_h, l->in_c);
    l->out_c = l->in_c;
    l->out_h = l->in_h;
    l->out_w = l->in_w;
    return 0;
}

static int parse_yolo(const mpd_cfg *c, mpd_cfg_section *s, mpd_layer *l, char *msg,
                      size_t msglen)
{
    mpd_yolo *y = &l->u.yolo;
    int nanch;
    TRY(mpd_cfg_get_int(c, s, "classes", 20, 1, 10000, &y->classes, msg, msglen));
    TRY(mpd_cfg_get_int(c, s, "num", 1, 1, MPD_YOLO_MAX_ANCHORS, &y->total, msg, msglen));
    TRY(mpd_cfg_get_int_list(c, s, "mask", y->mask, MPD_YOLO_MAX_ANCHORS, &y->nmask, msg,
                             msglen));
    TRY(mpd_cfg_get_float_list(c, s, "anchors", y->anchors, 2 * MPD_YOLO_MAX_ANCHORS, &nanch,
                               msg, msglen));
    mark_keys(s, yolo_training_keys);
    mpd_cfg_kv *akv = mpd_cfg_find(s, "anchors");
    if (!akv || nanch != 2 * y->total)
        return mpd__fail(msg, msglen, MPD_EPARSE,
                         "%s:%d: [yolo] needs anchors= with 2*num = %d values, has %d", c->path,
                         akv ? akv->line : l->line, 2 * y->total, nanch);
    for (int i = 0; i < nanch; i++) {
        if (!(y->anchors[i] > 0))
            return mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: anchor %d must be > 0", c->path,
                             akv->line, i + 1);
    }
    if (y->nmask == 0) {
        y->nmask = y->total;
        for (int i = 0; i < y->total; i++)
            y->mask[i] = i;
    }
    mpd_cfg_kv *mkv = mpd_cfg_find(s, "mask");
    for (int i = 0; i < y->nmask; i++) {
        if (y->mask[i] < 0 || y->mask[i] >= y->total)
            return mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: mask index %d outside 0..%d",
                             c->path, mkv ? mkv->line : l->line, y->mask[i], y->total - 1);
    }
    if (l->in_c != y->nmask * (y->classes + 5))
        return mpd__fail(msg, msglen, MPD_EPARSE,
                         "%s:%d: [yolo] with %d anchors and %d classes needs %d input channels, "
                         "the layer before gives %d",
                         c->path, l->line, y->nmask, y->classes, y->nmask * (y->classes + 5),
                         l->in_c);
    l->out_c = l->in_c;
    l->out_h = l->in_h;
    l->out_w = l->in_w;
    return 0;
}

int mpd_net_from_cfg(const mpd_cfg *cfg, mpd_net **out, char *msg, size_t msglen)
{
    *out = NULL;
    mpd_cfg_section *ns = &cfg->sec[0];
    if (strcmp(ns->name, "net") != 0 && strcmp(ns->name, "network") != 0)
        return mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: first section must be [net], not [%s]",
                         cfg->path, ns->line, ns->name);
    if (cfg->nsec < 2)
        return mpd__fail(msg, msglen, MPD_EPARSE, "%s: no layers after [net]", cfg->path);

    mpd_net *net = calloc(1, sizeof(*net));
    int rc = MPD_ENOMEM;
    if (!net)
        goto fail;
    net->cfg_path = strdup(cfg->path);
    net->n = cfg->nsec - 1;
    net->layers = calloc((size_t)net->n, sizeof(mpd_layer));
    if (!net->cfg_path || !net->layers)
        goto fail;

    if ((rc = mpd_cfg_get_int(cfg, ns, "width", 416, 1, 16384, &net->in_w, msg, msglen)) ||
        (rc = mpd_cfg_get_int(cfg, ns, "height", 416, 1, 16384, &net->in_h, msg, msglen)) ||
        (rc = mpd_cfg_get_int(cfg, ns, "channels", 3, 1, 4096, &net->in_c, msg, msglen)))
        goto fail;
    mark_keys(ns, net_training_keys);
    if ((rc = mpd_cfg_check_unused(cfg, ns, msg, msglen)))
        goto fail;

    for (int i = 0; i < net->n; i++) {
        mpd_cfg_section *s = &cfg->sec[i + 1];
        mpd_layer *l = &net->layers[i];
        l->index = i;
        l->line = s->line;
        const mpd_layer *prev = i ? &net->layers[i - 1] : NULL;
        l->in_c = prev ? prev->out_c : net->in_c;
        l->in_h = prev ? prev->out_h : net->in_h;
        l->in_w = prev ? prev->out_w : net->in_w;
        if (strcmp(s->name, "convolutional") == 0 || strcmp(s->name, "conv") == 0) {
            l->kind = MPD_LAYER_CONV;
            rc = parse_conv(cfg, s, l, &net->nparams, msg, msglen);
        } else if (strcmp(s->name, "maxpool") == 0 || strcmp(s->name, "max") == 0) {
            l->kind = MPD_LAYER_MAXPOOL;
            rc = parse_maxpool(cfg, s, l, msg, msglen);
        } else if (strcmp(s->name, "route") == 0) {
            l->kind = MPD_LAYER_ROUTE;
            rc = parse_route(cfg, s, l, net->layers, msg, msglen);
        } else if (strcmp(s->name, "upsample") == 0) {
            l->kind = MPD_LAYER_UPSAMPLE;
            rc = parse_upsample(cfg, s, l, msg, msglen);
        } else if (strcmp(s->name, "shortcut") == 0) {
            l->kind = MPD_LAYER_SHORTCUT;
            rc = parse_shortcut(cfg, s, l, net->layers, msg, msglen);
        } else if (strcmp(s->name, "yolo") == 0) {
            l->kind = MPD_LAYER_YOLO;
            rc = parse_yolo(cfg, s, l, msg, msglen);
        } else {
            rc = mpd__fail(msg, msglen, MPD_EPARSE,
                           "%s:%d: unknown section [%s] (supported: convolutional, maxpool, "
                           "route, upsample, shortcut, yolo)",
                           cfg->path, s->line, s->name);
        }
        if (rc)
            goto fail;
        if ((rc = mpd_cfg_check_unused(cfg, s, msg, msglen)))
            goto fail;
        if (l->out_c <= 0 || l->out_h <= 0 || l->out_w <= 0) {
            rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: layer %d has an empty output",
                           cfg->path, s->line, i);
            goto fail;
        }
        if (mpd_layer_out_size(l) > ((size_t)1 << 30)) {
            rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: layer %d output is too large",
                           cfg->path, s->line, i);
            goto fail;
        }
    }
    *out = net;
    return 0;
fail:
    if (rc == MPD_ENOMEM)
        mpd__fail(msg, msglen, rc, "%s: out of memory", cfg->path);
    mpd_net_free(net);
    return rc;
}

int mpd_net_parse(const char *cfg_path, mpd_net **out, char *msg, size_t msglen)
{
    *out = NULL;
    mpd_cfg *cfg;
    int rc = mpd_cfg_parse_file(cfg_path, &cfg, msg, msglen);
    if (rc)
        return rc;
    rc = mpd_net_from_cfg(cfg, out, msg, msglen);
    mpd_cfg_free(cfg);
    return rc;
}

size_t mpd_net_weights_file_size(const mpd_net *net, int major, int minor)
{
    /* darknet: a 64-bit "seen" counter from version 0.2 on. */
    size_t seen = (major >= 0 && minor >= 0 && major < 1000 && minor < 1000 &&
                   major * 10 + minor >= 2)
                      ? 8
                      : 4;
    return 12 + seen + net->nparams * sizeof(float);
}

static int read_floats(FILE *f, float *dst, size_t n)
{
    return fread(dst, sizeof(float), n, f) == n ? 0 : MPD_EIO;
}

int mpd_net_load_weights(mpd_net *net, const char *path, char *msg, size_t msglen)
{
    if (net->weights_loaded)
        return mpd__fail(msg, msglen, MPD_EINVAL, "%s: weights already loaded", path);
    FILE *f = fopen(path, "rb");
    if (!f)
        return mpd__fail(msg, msglen, MPD_EIO, "%s: cannot open: %s", path, strerror(errno));
    int rc = 0;
    float *scratch = NULL;
    struct stat st;
    int32_t hdr[3];
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = mpd__fail(msg, msglen, MPD_EIO, "%s: not a regular file", path);
        goto done;
    }
    if (st.st_size < 12 || fread(hdr, 4, 3, f) != 3) {
        rc = mpd__fail(msg, msglen, MPD_EFORMAT,
                       "%s: %lld bytes is too short for a darknet weights header "
                       "(expected %zu bytes for %s)",
                       path, (long long)st.st_size, mpd_net_weights_file_size(net, 0, 2),
                       net->cfg_path);
        goto done;
    }
    size_t want = mpd_net_weights_file_size(net, hdr[0], hdr[1]);
    if ((unsigned long long)st.st_size != (unsigned long long)want) {
        rc = mpd__fail(msg, msglen, MPD_EFORMAT,
                       "%s: size %lld bytes does not match %s, which needs %zu bytes "
                       "(version %d.%d.%d header + %zu floats); %s",
                       path, (long long)st.st_size, net->cfg_path, want, hdr[0], hdr[1], hdr[2],
                       net->nparams,
                       (unsigned long long)st.st_size < want ? "file is truncated or for a "
                                                               "smaller network"
                                                             : "file has extra bytes or is for "
                                                               "a larger network");
        goto done;
    }
    if (fseek(f, (long)(want - net->nparams * sizeof(float)), SEEK_SET) != 0) {
        rc = mpd__fail(msg, msglen, MPD_EIO, "%s: seek failed", path);
        goto done;
    }
    int maxf = 0;
    for (int i = 0; i < net->n; i++)
        if (net->layers[i].kind == MPD_LAYER_CONV && net->layers[i].u.conv.filters > maxf)
            maxf = net->layers[i].u.conv.filters;
    scratch = malloc((size_t)maxf * 3 * sizeof(float));
    if (!scratch) {
        rc = mpd__fail(msg, msglen, MPD_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    for (int i = 0; i < net->n && rc == 0; i++) {
        mpd_layer *l = &net->layers[i];
        if (l->kind != MPD_LAYER_CONV)
            continue;
        mpd_conv *cv = &l->u.conv;
        size_t nf = (size_t)cv->filters;
        size_t k = (size_t)l->in_c * (size_t)cv->size * (size_t)cv->size;
        cv->bias = malloc(nf * sizeof(float));
        cv->weights = malloc(nf * k * sizeof(float));
        if (!cv->bias || !cv->weights) {
            rc = mpd__fail(msg, msglen, MPD_ENOMEM, "%s: out of memory", path);
            break;
        }
        /* darknet order: biases, then scales, rolling mean, rolling variance
         * when batch-normalized, then the weights. */
        float *scales = scratch, *mean = scratch + nf, *var = scratch + 2 * nf;
        if (read_floats(f, cv->bias, nf) ||
            (cv->batch_normalize && read_floats(f, scratch, 3 * nf)) ||
            read_floats(f, cv->weights, nf * k)) {
            rc = mpd__fail(msg, msglen, MPD_EIO, "%s: read failed at layer %d", path, i);
            break;
        }
        if (cv->batch_normalize) {
            /* darknet normalizes with (x - mean) / (sqrt(var) + 1e-6), then
             * scales and adds the bias; fold that into w and b. */
            for (size_t o = 0; o < nf; o++) {
                float s = scales[o] / (sqrtf(var[o]) + .000001f);
                for (size_t j = 0; j < k; j++)
                    cv->weights[o * k + j] *= s;
                cv->bias[o] -= mean[o] * s;
            }
        }
        for (size_t j = 0; j < nf * k + nf; j++) {
            if (!isfinite(j < nf * k ? cv->weights[j] : cv->bias[j - nf * k])) {
                rc = mpd__fail(msg, msglen, MPD_EFORMAT,
                               "%s: layer %d has a non-finite weight or bias after batch-norm "
                               "folding",
                               path, i);
                break;
            }
        }
    }
    if (rc == 0) {
        net->weights_loaded = 1;
    } else {
        /* Leave the net as it was, so a later load can succeed. */
        for (int i = 0; i < net->n; i++) {
            if (net->layers[i].kind == MPD_LAYER_CONV) {
                free(net->layers[i].u.conv.weights);
                free(net->layers[i].u.conv.bias);
                net->layers[i].u.conv.weights = NULL;
                net->layers[i].u.conv.bias = NULL;
            }
        }
    }
done:
    free(scratch);
    fclose(f);
    return rc;
}

void mpd_net_free(mpd_net *net)
{
    if (!net)
        return;
    for (int i = 0; i < net->n && net->layers; i++) {
        if (net->layers[i].kind == MPD_LAYER_CONV) {
            free(net->layers[i].u.conv.weights);
            free(net->layers[i].u.conv.bias);
        }
    }
    free(net->layers);
    free(net->cfg_path);
    free(net);
}

/* ---- activation buffers by liveness ------------------------------------ */

void mpd__buffer_plan_free(mpd_buffer_plan *bp)
{
    free(bp->of);
    free(bp->bytes);
    free(bp->kept);
    memset(bp, 0, sizeof(*bp));
}

size_t mpd__buffer_plan_bytes(const mpd_buffer_plan *bp)
{
    size_t t = 0;
    for (int b = 0; b < bp->nbufs; b++)
        t += bp->bytes[b];
    return t;
}

int mpd__buffer_plan(const mpd_net *net, size_t elem_bytes, int reuse, mpd_buffer_plan *bp)
{
    int n = net->n;
    memset(bp, 0, sizeof(*bp));
    int *last = malloc((size_t)n * sizeof(int)), *holder = malloc((size_t)n * sizeof(int));
    bp->of = malloc((size_t)n * sizeof(int));
    bp->bytes = calloc((size_t)n, sizeof(size_t));
    bp->kept = calloc((size_t)n, 1);
    if (!last || !holder || !bp->of || !bp->bytes || !bp->kept) {
        free(last);
        free(holder);
        mpd__buffer_plan_free(bp);
        return MPD_ENOMEM;
    }
    /* Last reader of every output: a route reads only the layers it names;
     * every other layer reads the one before it, a shortcut also its
     * "from"; yolo outputs are read after the pass. */
    for (int i = 0; i < n; i++)
        last[i] = net->layers[i].kind == MPD_LAYER_YOLO ? n : i;
    for (int j = 0; j < n; j++) {
        const mpd_layer *l = &net->layers[j];
        if (l->kind == MPD_LAYER_ROUTE) {
            for (int r = 0; r < l->u.route.n; r++)
                last[l->u.route.from[r]] = j > last[l->u.route.from[r]] ? j : last[l->u.route.from[r]];
            continue;
        }
        if (j > 0 && j > last[j - 1])
            last[j - 1] = j;
        /* A maxpool after a convolution may run inside it, band by band
         * (the CPU backend's fusion): the convolution's input is still
         * being read while the maxpool writes. */
        if (l->kind == MPD_LAYER_MAXPOOL && j >= 2 && net->layers[j - 1].kind == MPD_LAYER_CONV &&
            j > last[j - 2])
            last[j - 2] = j;
        if (l->kind == MPD_LAYER_SHORTCUT && j > last[l->u.shortcut.from])
            last[l->u.shortcut.from] = j;
    }
    /* Greedy in layer order: a buffer is free once the output it holds
     * has had its last reader before this layer; take the smallest free
     * one that fits, else grow the largest free one, else add one. */
    for (int i = 0; i < n; i++) {
        size_t need = mpd_layer_out_size(&net->layers[i]) * elem_bytes;
        int pick = -1;
        for (int b = 0; reuse && b < bp->nbufs; b++) {
            if (last[holder[b]] >= i)
                continue;
            if (pick < 0) {
                pick = b;
                continue;
            }
            int fits = bp->bytes[b] >= need, pfits = bp->bytes[pick] >= need;
            if ((fits && (!pfits || bp->bytes[b] < bp->bytes[pick])) ||
                (!fits && !pfits && bp->bytes[b] > bp->bytes[pick]))
                pick = b;
        }
        if (pick < 0)
            pick = bp->nbufs++;
        if (bp->bytes[pick] < need)
            bp->bytes[pick] = need;
        holder[pick] = i;
        bp->of[i] = pick;
    }
    for (int i = 0; i < n; i++)
        bp->kept[i] = holder[bp->of[i]] == i;
    free(last);
    free(holder);
    return 0;
}
