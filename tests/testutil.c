#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include "cfg.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *tu_model_dir(void)
{
    const char *d = getenv("MPDET_MODEL_DIR");
    return d && *d ? d : "models";
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

char *tu_model(const char *name)
{
    return join(tu_model_dir(), name);
}

char *tu_darknet_data(const char *name)
{
    return join("/usr/share/darknet/data", name);
}

char *tu_write_temp(const char *text, size_t len)
{
    char tmpl[] = "/tmp/mpdet-test-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0)
        return NULL;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w <= 0) {
            close(fd);
            return NULL;
        }
        off += (size_t)w;
    }
    close(fd);
    return strdup(tmpl);
}

void tu_fill_random(float *x, size_t n, float lo, float hi, unsigned seed)
{
    unsigned s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = lo + (hi - lo) * (float)(s >> 8) / (float)(1u << 24);
    }
}

void tu_max_diff(const float *a, const float *b, size_t n, double *max_abs, double *max_ref)
{
    double ma = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > ma || isnan(d))
            ma = isnan(d) ? INFINITY : d;
        if (fabs(b[i]) > mr)
            mr = fabs(b[i]);
    }
    *max_abs = ma;
    *max_ref = mr;
}

mpd_net *tu_net_from_text(const char *text, const char *name, char *msg, size_t msglen)
{
    mpd_cfg *cfg = NULL;
    mpd_net *net = NULL;
    if (mpd_cfg_parse_string(text, name, &cfg, msg, msglen) == 0)
        mpd_net_from_cfg(cfg, &net, msg, msglen);
    mpd_cfg_free(cfg);
    return net;
}

double tu_rel_rms(const float *a, const float *ref, size_t n)
{
    double se = 0, sr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        se += d * d;
        sr += (double)ref[i] * ref[i];
    }
    return sr > 0 ? sqrt(se / sr) : n ? sqrt(se / (double)n) : 0;
}

void *tu_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test: out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

int tu_detections_differ(const mpd_result *got, const mpd_result *ref, char *why, size_t len)
{
    if (got->count != ref->count) {
        snprintf(why, len, "%d detections, %d alone", got->count, ref->count);
        return 1;
    }
    for (int i = 0; i < ref->count; i++) {
        const mpd_detection *x = &got->det[i], *y = &ref->det[i];
        if (x->class_id != y->class_id || x->confidence != y->confidence || x->x0 != y->x0 ||
            x->y0 != y->y0 || x->x1 != y->x1 || x->y1 != y->y1) {
            snprintf(why, len,
                     "detection %d: %s %.6f [%.2f %.2f %.2f %.2f], alone %s %.6f [%.2f %.2f %.2f "
                     "%.2f]",
                     i, x->label, (double)x->confidence, (double)x->x0, (double)x->y0,
                     (double)x->x1, (double)x->y1, y->label, (double)y->confidence,
                     (double)y->x0, (double)y->y0, (double)y->x1, (double)y->y1);
            return 1;
        }
    }
    return 0;
}

char *tu_write_weights(const float *w, size_t n)
{
    size_t bytes = 20 + n * sizeof(float);
    char *buf = tu_xmalloc(bytes);
    const int32_t hdr[3] = {0, 2, 0}; /* major, minor, revision */
    const uint64_t seen = 0;          /* images seen: 64 bits from 0.2 on */
    memcpy(buf, hdr, 12);
    memcpy(buf + 12, &seen, 8);
    memcpy(buf + 20, w, n * sizeof(float));
    char *path = tu_write_temp(buf, bytes);
    free(buf);
    return path;
}
