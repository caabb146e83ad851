/* fuzz_calib.c - libFuzzer target: the calibration-file parser
 * (mpd_plan_load_calibration in host/plan.c; host/calib.c computes the
 * thresholds this file stores but reads no file) against the real
 * yolov3-tiny net.
 *
 * Input: calibration text, through a memfd. Seed:
 * config/yolov3-tiny.calib. Built and run by scripts/fuzz, which sets
 * MPD_FUZZ_CFG; see tests/fuzz/README. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "fuzz.h"
#include "net.h"
#include "plan.h"

static mpd_net *net;
static mpd_plan *base;
static fuzz_file calib;

static void cleanup(void)
{
    mpd_plan_free(base);
    mpd_net_free(net);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_real_net(&net, &base);
    fuzz_file_open(&calib, "fuzz.calib");
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_file_set(&calib, data, size);
    mpd_plan *p = NULL;
    FUZZ_SETUP(mpd_plan_copy(base, &p) == 0, "out of memory");
    char msg[512];
    int rc = mpd_plan_load_calibration(p, net, calib.path, msg, sizeof(msg));
    if (rc == 0) {
        FUZZ_CHECK(p->out_thresh && p->calibration);
        FUZZ_CHECK(p->input_thresh > 0 && isfinite(p->input_thresh));
        for (int i = 0; i < net->n; i++) {
            FUZZ_CHECK(p->out_thresh[i] >= 0 && isfinite(p->out_thresh[i]));
            if (net->layers[i].kind == MPD_LAYER_CONV)
                FUZZ_CHECK(p->out_thresh[i] > 0);
        }
    } else {
        /* A failed load leaves the plan as it was. */
        FUZZ_CHECK(rc < 0 && !p->out_thresh && !p->calibration);
        fuzz_check_msg(msg, sizeof(msg));
    }
    mpd_plan_free(p);
    return 0;
}
