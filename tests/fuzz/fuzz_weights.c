/* fuzz_weights.c - libFuzzer target: the darknet .weights loader
 * (host/net.c, mpd_net_load_weights): header versions, the exact-size
 * check, the read order and batch-norm folding.
 *
 * Input: either a weights file for the built-in net fuzz_net_tiny
 * (fuzz_nets.h), or "cfg text" NUL "weights file" to load the weights of
 * any net the cfg describes. The weights go through a memfd, since the
 * loader takes a path. Seeds (fuzz_seeds.c): well-formed files for the
 * built-in nets with 0.1, 0.2 and 1.0 headers, one filled with the real
 * yolov3-tiny.weights' floats, and the real cfg with the real file's first
 * bytes. Built and run by scripts/fuzz; see tests/fuzz/README. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "engine.h"
#include "fuzz.h"
#include "fuzz_nets.h"
#include "net.h"

static fuzz_file weights;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_file_open(&weights, "fuzz.weights");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    char *text;
    const uint8_t *w = data;
    size_t wlen = size;
    if (nul) {
        text = fuzz_strndup(data, (size_t)(nul - data));
        w = nul + 1;
        wlen = size - (size_t)(nul - data) - 1;
    } else {
        text = fuzz_strndup(fuzz_net_tiny, strlen(fuzz_net_tiny));
    }
    char msg[512];
    mpd_cfg *cfg = NULL;
    mpd_net *net = NULL;
    if (mpd_cfg_parse_string(text, "fuzz.cfg", &cfg, msg, sizeof(msg)) ||
        mpd_net_from_cfg(cfg, &net, msg, sizeof(msg)))
        goto done;
    fuzz_file_set(&weights, w, wlen);
    int rc = mpd_net_load_weights(net, weights.path, msg, sizeof(msg));
    if (rc == 0) {
        FUZZ_CHECK(net->weights_loaded);
        FUZZ_CHECK(wlen == mpd_net_weights_file_size(net, 0, 2) ||
                   wlen == mpd_net_weights_file_size(net, 0, 1));
        for (int i = 0; i < net->n; i++) {
            const mpd_layer *l = &net->layers[i];
            if (l->kind != MPD_LAYER_CONV)
                continue;
            size_t nf = (size_t)l->u.conv.filters;
            size_t nw = nf * (size_t)l->in_c * (size_t)l->u.conv.size * (size_t)l->u.conv.size;
            FUZZ_CHECK(l->u.conv.weights && l->u.conv.bias);
            /* Reading every value also lets ASan check the buffer sizes. */
            for (size_t j = 0; j < nw; j++)
                FUZZ_CHECK(isfinite(l->u.conv.weights[j]));
            for (size_t j = 0; j < nf; j++)
                FUZZ_CHECK(isfinite(l->u.conv.bias[j]));
        }
        /* A second load is refused and leaves the weights alone. */
        FUZZ_CHECK(mpd_net_load_weights(net, weights.path, msg, sizeof(msg)) == MPD_EINVAL);
        FUZZ_CHECK(net->weights_loaded);
    } else {
        FUZZ_CHECK(rc < 0 && !net->weights_loaded);
        fuzz_check_msg(msg, sizeof(msg));
        for (int i = 0; i < net->n; i++)
            if (net->layers[i].kind == MPD_LAYER_CONV)
                FUZZ_CHECK(!net->layers[i].u.conv.weights && !net->layers[i].u.conv.bias);
    }
done:
    mpd_net_free(net);
    mpd_cfg_free(cfg);
    free(text);
    return 0;
}
