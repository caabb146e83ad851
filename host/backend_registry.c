/* The one place that names concrete backends. */
#include <string.h>

#include "backend.h"
#ifdef MPD_HAVE_CUDA
#include "../cuda/cuda_backend.h"
#endif

const mpd_precision_info mpd_precisions[MPD_PREC_COUNT] = {
    [MPD_PREC_FP32] = {"fp32", 4},
    [MPD_PREC_FP16] = {"fp16", 2},
    [MPD_PREC_INT8] = {"int8", 1},
    [MPD_PREC_BF16] = {"bf16", 2},
};

int mpd_precision_parse(const char *s, mpd_precision *out)
{
    for (int p = 0; p < MPD_PREC_COUNT; p++) {
        if (strcmp(s, mpd_precisions[p].name) == 0) {
            *out = (mpd_precision)p;
            return 0;
        }
    }
    return MPD_EINVAL;
}

static int open_one(const mpd_backend_ops *ops, const mpd_net *net, const mpd_backend_config *cfg,
                    mpd_backend *out, char *msg, size_t msglen)
{
    void *ctx = NULL;
    int rc = ops->create(net, cfg, &ctx, msg, msglen);
    if (rc)
        return rc;
    rc = ops->upload_weights(ctx, msg, msglen);
    if (rc) {
        ops->destroy(ctx);
        return rc;
    }
    out->ops = ops;
    out->ctx = ctx;
    return 0;
}

int mpd_backend_open(const char *name, const mpd_net *net, const mpd_backend_config *cfg,
                     mpd_backend *out, char *msg, size_t msglen)
{
    out->ops = NULL;
    out->ctx = NULL;
    int is_auto = !name || strcmp(name, "auto") == 0;
    if (!is_auto && strcmp(name, "cpu") != 0 && strcmp(name, "cuda") != 0)
        return mpd__fail(msg, msglen, MPD_EINVAL, "unknown backend '%s' (auto, cpu, cuda)", name);
#ifdef MPD_HAVE_CUDA
    if (is_auto || strcmp(name, "cuda") == 0) {
        char why[256];
        if (mpd__cuda_device_count(why, sizeof(why)) > 0) {
            int rc = open_one(&mpd__cuda_backend_ops, net, cfg, out, msg, msglen);
            if (rc == 0 || !is_auto)
                return rc;
            /* auto: a GPU that cannot take the model leaves the CPU. */
            mpd__logf(cfg->log, cfg->log_ud, MPD_LOG_WARNING,
                      "backend auto: cuda failed (%s); using cpu", msg);
        } else if (!is_auto) {
            return mpd__fail(msg, msglen, MPD_EUNSUP, "backend 'cuda': %s", why);
        } else {
            mpd__logf(cfg->log, cfg->log_ud, MPD_LOG_INFO, "backend auto: %s; using cpu", why);
        }
    }
#else
    if (!is_auto && strcmp(name, "cuda") == 0)
        return mpd__fail(msg, msglen, MPD_EUNSUP,
                         "backend 'cuda' is not built into this binary (no nvcc at build time)");
#endif
    return open_one(&mpd__cpu_backend_ops, net, cfg, out, msg, msglen);
}

void mpd_backend_close(mpd_backend *b)
{
    if (b && b->ops)
        b->ops->destroy(b->ctx);
    if (b) {
        b->ops = NULL;
        b->ctx = NULL;
    }
}
