#define _POSIX_C_SOURCE 200809L
#include "benchutil.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bu_parse_int(const char *prog, const char *opt, const char *s, int lo, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > INT_MAX) {
        fprintf(stderr, "%s: %s needs an integer >= %d, got '%s'\n", prog, opt, lo, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int cmp_double(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return a < b ? -1 : a > b ? 1 : 0;
}

double bu_median(double *v, int n)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

const char *bu_base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

const char *bu_model_dir(void)
{
    const char *d = getenv("MPDET_MODEL_DIR");
    return d && *d ? d : "models";
}

void bu_model_paths(const char *dir, bu_model *m)
{
    snprintf(m->cfg, sizeof(m->cfg), "%s/yolov3-tiny.cfg", dir);
    snprintf(m->weights, sizeof(m->weights), "%s/yolov3-tiny.weights", dir);
    snprintf(m->names, sizeof(m->names), "%s/coco.names", dir);
}

void bu_image_list(char *csv, const char **images, int *n, int cap)
{
    if (csv)
        for (char *save = NULL, *tok = strtok_r(csv, ",", &save); tok && *n < cap;
             tok = strtok_r(NULL, ",", &save))
            if (*tok)
                images[(*n)++] = tok;
    if (*n == 0 && cap > 0)
        images[(*n)++] = "/usr/share/darknet/data/dog.jpg";
}

const char *bu_forward_image(const char *const *images, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(bu_base_name(images[i]), "dog.jpg"))
            return images[i];
    return images[0];
}
