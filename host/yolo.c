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
static _Thread_local int sort_class;

static int by_prob_desc(const void *pa, const void *pb)
{
    const mpd__det *a = pa, *b = pb;
    float diff = a->prob[sort_class] - b->prob[sort_class];
    return diff < 0 ? 1 : diff > 0 ? -1 : 0;
}

void mpd__nms_sort(mpd__dets *dets, float nms)
{
    /* Candidates with zero objectness go to the end and are not compared. */
    int total = dets->n;
    for (int i = 0; i < total;) {
        if (dets->d[i].objectness == 0) {
            mpd__det t = dets->d[i];
            dets->d[i] = dets->d[total - 1];
            dets->d[total - 1] = t;
            total--;
        } else {
            i++;
        }
    }
    for (int k = 0; k < dets->classes && total > 1; k++) {
        sort_class = k;
        qsort(dets->d, (size_t)total, sizeof(mpd__det), by_prob_desc);
        for (int i = 0; i < total; i++) {
            if (dets->d[i].prob[k] == 0)
                continue;
            mpd__box a = dets->d[i].box;
            for (int j = i + 1; j < total; j++) {
                if (mpd__box_iou(a, dets->d[j].box) > nms)
                    dets->d[j].prob[k] = 0;
            }
        }
    }
}
