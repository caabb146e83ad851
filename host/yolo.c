#include "yolo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "mpd.h"

void mpd__dets_free(mpd__dets *dets)
{
    for (int i = 0; i < dets->n; i++)
        free(dets->d[i].prob);
    free(dets->d);
    dets->d = NULL;
    dets->n = dets->cap = 0;
}

static int push(mpd__dets *dets, mpd__det **slot)
{
    if (dets->n == dets->cap) {
        int nc = dets->cap ? dets->cap * 2 : 64;
        mpd__det *nd = realloc(dets->d, (size_t)nc * sizeof(*nd));
        if (!nd)
            return MPD_ENOMEM;
        dets->d = nd;
        dets->cap = nc;
    }
    mpd__det *d = &dets->d[dets->n];
    d->prob = calloc((size_t)dets->classes, sizeof(float));
    if (!d->prob)
        return MPD_ENOMEM;
    dets->n++;
    *slot = d;
    return 0;
}

int mpd__yolo_collect(const mpd_layer *l, const float *out, int net_w, int net_h, float thresh,
                      mpd__dets *dets)
{
    const mpd_yolo *y = &l->u.yolo;
    int lw = l->out_w, lh = l->out_h;
    size_t plane = (size_t)lw * lh;
    if (dets->classes == 0)
        dets->classes = y->classes;
    if (dets->classes != y->classes)
        return MPD_EINVAL;
    for (size_t i = 0; i < plane; i++) {
        int row = (int)(i / lw), col = (int)(i % lw);
        for (int a = 0; a < y->nmask; a++) {
            const float *p = out + (size_t)a * (y->classes + 5) * plane + i;
            float obj = p[4 * plane];
            if (obj <= thresh)
                continue;
            mpd__det *d;
            if (push(dets, &d))
                return MPD_ENOMEM;
            int an = y->mask[a];
            d->box.x = (col + p[0]) / lw;
            d->box.y = (row + p[plane]) / lh;
            d->box.w = expf(p[2 * plane]) * y->anchors[2 * an] / net_w;
            d->box.h = expf(p[3 * plane]) * y->anchors[2 * an + 1] / net_h;
            d->objectness = obj;
            for (int c = 0; c < y->classes; c++) {
                float pr = obj * p[(5 + (size_t)c) * plane];
                d->prob[c] = pr > thresh ? pr : 0;
            }
        }
    }
    return 0;
}

void mpd__yolo_correct(mpd__dets *dets, int im_w, int im_h, int net_w, int net_h)
{
    /* Same geometry as the letterbox that produced the input. */
    int new_w, new_h;
    mpd__letterbox_size(im_w, im_h, net_w, net_h, &new_w, &new_h);
    for (int i = 0; i < dets->n; i++) {
        mpd__box *b = &dets->d[i].box;
        b->x = (b->x - (net_w - new_w) / 2. / net_w) / ((float)new_w / net_w);
        b->y = (b->y - (net_h - new_h) / 2. / net_h) / ((float)new_h / net_h);
        b->w *= (float)net_w / new_w;
        b->h *= (float)net_h / new_h;
    }
}

static float overlap(float x1, float w1, float x2, float w2)
{
    float l1 = x1 - w1 / 2, l2 = x2 - w2 / 2;
    float r1 = x1 + w1 / 2, r2 = x2 + w2 / 2;
    float left = l1 > l2 ? l1 : l2;
    float right = r1 < r2 ? r1 : r2;
    return right - left;
}

float mpd__box_iou(mpd__box a, mpd__box b)
{
    float w = overlap(a.x, a.w, b.x, b.w);
    float h = overlap(a.y, a.h, b.y, b.h);
    float inter = (w < 0 || h < 0) ? 0 : w * h;
    float uni = a.w * a.h + b.w * b.h - inter;
    return uni > 0 ? inter / uni : 0;
}

/* qsort has no context argument; the class being sorted travels in a
 * thread-local so concurrent engines do not interfere. */
/* One class's candidates: indices into dets->d with the probability they
 * are sorted by. */
typedef struct {
    float p;
    int i;
} ranked;

static int by_p_desc(const void *pa, const void *pb)
{
    const ranked *a = pa, *b = pb;
    return a->p < b->p ? 1 : a->p > b->p ? -1 : (a->i > b->i) - (a->i < b->i);
}

int mpd__nms_sort(mpd__dets *dets, float nms)
{
    /* darknet's do_nms_sort compares every pair of candidates in every
     * class: quadratic in all boxes x classes, whatever their
     * probabilities. Only boxes with a nonzero probability in class k can
     * suppress or be suppressed there, so each class ranks and compares
     * just those: the same survivors (ties broken by position, where
     * darknet's qsort leaves them unspecified), in time quadratic in the
     * candidates of one class. */
    ranked *r = malloc((size_t)(dets->n ? dets->n : 1) * sizeof(*r));
    if (!r)
        return MPD_ENOMEM;
    for (int k = 0; k < dets->classes; k++) {
        int m = 0;
        for (int i = 0; i < dets->n; i++)
            if (dets->d[i].objectness != 0 && dets->d[i].prob[k] != 0)
                r[m++] = (ranked){dets->d[i].prob[k], i};
        if (m < 2)
            continue;
        qsort(r, (size_t)m, sizeof(*r), by_p_desc);
        for (int a = 0; a < m; a++) {
            mpd__det *da = &dets->d[r[a].i];
            if (da->prob[k] == 0)
                continue;
            for (int b = a + 1; b < m; b++) {
                mpd__det *db = &dets->d[r[b].i];
                if (db->prob[k] != 0 && mpd__box_iou(da->box, db->box) > nms)
                    db->prob[k] = 0;
            }
        }
    }
    free(r);
    return 0;
}

static int float_desc(const void *pa, const void *pb)
{
    float a = *(const float *)pa, b = *(const float *)pb;
    return a < b ? 1 : a > b ? -1 : 0;
}

int mpd__dets_limit(mpd__dets *dets, int max_pairs)
{
    /* Counts the (box, class) pairs above threshold; beyond max_pairs the
     * weakest are zeroed, so a threshold near 0 cannot make NMS and the
     * reply grow with every box of every class. */
    size_t n = 0;
    for (int i = 0; i < dets->n; i++)
        for (int c = 0; c < dets->classes; c++)
            n += dets->d[i].prob[c] != 0;
    if (max_pairs <= 0 || n <= (size_t)max_pairs)
        return 0;
    float *p = malloc(n * sizeof(float));
    if (!p)
        return MPD_ENOMEM;
    size_t j = 0;
    for (int i = 0; i < dets->n; i++)
        for (int c = 0; c < dets->classes; c++)
            if (dets->d[i].prob[c] != 0)
                p[j++] = dets->d[i].prob[c];
    qsort(p, n, sizeof(float), float_desc);
    float cut = p[max_pairs - 1];
    /* Keep those above the cut, then as many equal to it as fit. */
    size_t kept = 0;
    for (size_t t = 0; t < n; t++)
        kept += p[t] > cut;
    for (int i = 0; i < dets->n; i++)
        for (int c = 0; c < dets->classes; c++) {
            float *q = &dets->d[i].prob[c];
            if (*q == 0 || *q > cut)
                continue;
            if (*q == cut && kept < (size_t)max_pairs)
                kept++;
            else
                *q = 0;
        }
    free(p);
    return 0;
}
