/* fuzz_plan.c - libFuzzer target: the precision-plan parser (host/plan.c,
 * mpd_plan_parse_file) against the real yolov3-tiny net, then the tensor
 * types every backend derives from a plan (mpd__plan_tensor_types).
 *
 * Input: plan text. It is written to fuzz.plan in a private directory that
 * also holds a copy of config/yolov3-tiny.calib, so `calibration =
 * yolov3-tiny.calib` (relative to the plan, as config/ plans do) loads the
 * real calibration and other names fail to open. Seeds: the plans of config/.
 * Built and run by scripts/fuzz, which sets MPD_FUZZ_CFG and
 * MPD_FUZZ_CALIB; see tests/fuzz/README. */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "engine.h"
#include "fuzz.h"
#include "net.h"
#include "plan.h"

static mpd_net *net;
static mpd_plan *base;
static char dir[4096], plan_path[4200], calib_path[4200];
static mpd_tensor_type *types;
static mpd_qparams *oq;

static void cleanup(void)
{
    unlink(plan_path);
    unlink(calib_path);
    rmdir(dir);
    mpd_plan_free(base);
    mpd_net_free(net);
    free(types);
    free(oq);
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    FUZZ_SETUP(in && out, "cannot copy %s to %s", from, to);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        FUZZ_SETUP(fwrite(buf, 1, n, out) == n, "cannot write %s", to);
    fclose(in);
    FUZZ_SETUP(fclose(out) == 0, "cannot write %s", to);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_real_net(&net, &base);
    const char *tmp = fuzz_path("TMPDIR", "/tmp");
    snprintf(dir, sizeof(dir), "%s/mpd-fuzz-plan.XXXXXX", tmp);
    FUZZ_SETUP(mkdtemp(dir), "mkdtemp in %s failed", tmp);
    snprintf(plan_path, sizeof(plan_path), "%s/fuzz.plan", dir);
    snprintf(calib_path, sizeof(calib_path), "%s/yolov3-tiny.calib", dir);
    copy_file(fuzz_path("MPD_FUZZ_CALIB", "config/yolov3-tiny.calib"), calib_path);
    types = calloc((size_t)net->n, sizeof(*types));
    oq = calloc((size_t)net->n, sizeof(*oq));
    FUZZ_SETUP(types && oq, "out of memory");
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = open(plan_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FUZZ_SETUP(fd >= 0, "cannot write %s", plan_path);
    FUZZ_SETUP(write(fd, data, size) == (ssize_t)size, "cannot write %s", plan_path);
    close(fd);
    char msg[512];
    mpd_plan *p = NULL;
    int rc = mpd_plan_parse_file(plan_path, net, base, &p, msg, sizeof(msg));
    if (rc) {
        FUZZ_CHECK(rc < 0 && !p);
        fuzz_check_msg(msg, sizeof(msg));
        return 0;
    }
    FUZZ_CHECK(p && p->n == net->n && p->prec && p->source);
    for (int i = 0; i < net->n; i++) {
        FUZZ_CHECK(p->prec[i] >= 0 && p->prec[i] < MPD_PREC_COUNT);
        FUZZ_CHECK(net->layers[i].kind == MPD_LAYER_CONV || p->prec[i] == MPD_PREC_FP32);
    }
    if (p->out_thresh) {
        FUZZ_CHECK(p->calibration && p->input_thresh > 0);
        for (int i = 0; i < net->n; i++)
            if (net->layers[i].kind == MPD_LAYER_CONV)
                FUZZ_CHECK(p->out_thresh[i] > 0);
    }
    FUZZ_CHECK(mpd__plan_tensor_types(net, p, types, oq) == 0);
    mpd_plan *copy = NULL;
    FUZZ_CHECK(mpd_plan_copy(p, &copy) == 0);
    mpd_plan_free(copy);
    mpd_plan_free(p);
    return 0;
}
