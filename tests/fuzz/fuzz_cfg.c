/* fuzz_cfg.c - libFuzzer target: the darknet .cfg reader (host/cfg.c,
 * mpd_cfg_parse_string) and the network builder that reads every typed key
 * through it (host/net.c, mpd_net_from_cfg).
 *
 * Input: cfg text (stops at a NUL, as a C string does). Seeds: the model's
 * yolov3-tiny.cfg and Debian darknet's cfg/ files. Built and run by
 * scripts/fuzz; see tests/fuzz/README. */
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "engine.h"
#include "fuzz.h"
#include "net.h"

/* What mpd_net_from_cfg promises about a net it returns. */
static void check_net(const mpd_net *net)
{
    FUZZ_CHECK(net->n >= 1 && net->layers);
    FUZZ_CHECK(!net->weights_loaded);
    FUZZ_CHECK(mpd_net_weights_file_size(net, 0, 2) == 20 + net->nparams * sizeof(float));
    for (int i = 0; i < net->n; i++) {
        const mpd_layer *l = &net->layers[i];
        FUZZ_CHECK(l->index == i);
        FUZZ_CHECK(l->out_c > 0 && l->out_h > 0 && l->out_w > 0);
        FUZZ_CHECK(mpd_layer_out_size(l) <= ((size_t)1 << 30));
        switch (l->kind) {
        case MPD_LAYER_CONV:
            FUZZ_CHECK(l->u.conv.filters == l->out_c);
            FUZZ_CHECK(!l->u.conv.weights && !l->u.conv.bias);
            break;
        case MPD_LAYER_ROUTE:
            FUZZ_CHECK(l->u.route.n >= 1 && l->u.route.n <= MPD_ROUTE_MAX);
            for (int r = 0; r < l->u.route.n; r++)
                FUZZ_CHECK(l->u.route.from[r] >= 0 && l->u.route.from[r] < i);
            break;
        case MPD_LAYER_SHORTCUT:
            FUZZ_CHECK(l->u.shortcut.from >= 0 && l->u.shortcut.from < i);
            break;
        case MPD_LAYER_YOLO:
            FUZZ_CHECK(l->u.yolo.nmask >= 1 && l->u.yolo.nmask <= MPD_YOLO_MAX_ANCHORS);
            for (int m = 0; m < l->u.yolo.nmask; m++)
                FUZZ_CHECK(l->u.yolo.mask[m] >= 0 && l->u.yolo.mask[m] < l->u.yolo.total);
            FUZZ_CHECK(l->in_c == l->u.yolo.nmask * (l->u.yolo.classes + 5));
            break;
        case MPD_LAYER_MAXPOOL:
        case MPD_LAYER_UPSAMPLE: break;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_strndup(data, size);
    char msg[512];
    mpd_cfg *cfg = NULL;
    int rc = mpd_cfg_parse_string(text, "fuzz.cfg", &cfg, msg, sizeof(msg));
    if (rc) {
        FUZZ_CHECK(rc < 0 && !cfg);
        fuzz_check_msg(msg, sizeof(msg));
        free(text);
        return 0;
    }
    FUZZ_CHECK(cfg && cfg->nsec >= 1);
    for (int s = 0; s < cfg->nsec; s++)
        for (int k = 0; k < cfg->sec[s].nkv; k++)
            FUZZ_CHECK(cfg->sec[s].kv[k].key[0] != '\0');
    mpd_net *net = NULL;
    rc = mpd_net_from_cfg(cfg, &net, msg, sizeof(msg));
    if (rc == 0) {
        check_net(net);
        mpd_net_free(net);
    } else {
        FUZZ_CHECK(rc < 0 && !net);
        fuzz_check_msg(msg, sizeof(msg));
    }
    mpd_cfg_free(cfg);
    free(text);
    return 0;
}
