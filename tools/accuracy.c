/* accuracy.c - detection agreement between a precision plan and the fp32
 * reference: per-class all-point AP at IoU 0.5 and 0.75 over all images, and
 * operating-point recall, precision, mean IoU and per-image disagreement.
 * See accuracy.h for the matching rule and the degenerate cases. */
#include "accuracy.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* One detection, flattened out of its image so that all detections of a
 * class can be ranked together. */
typedef struct {
    int cls;
    float conf;
    int img;
    int idx; /* index in img[img].det */
} rank_entry;

/* The per-call scratch memory, freed at one place. */
typedef struct {
    rank_entry *rank;     /* all detections, sorted by class then rank */
    size_t *ref_off;      /* n + 1 offsets of each image's refs in taken */
    unsigned char *taken; /* per reference box: already matched in this pass */
    unsigned char *tp;    /* per ranked detection: true positive in this pass */
    double *iou;          /* per ranked detection: IoU of its match */
    double *prec;         /* per ranked detection: precision, then its envelope */
    int *ref_cls;         /* all reference class ids, sorted */
    int *set_a, *set_b;   /* one image's class ids, for images_changed */
} scratch;

double mpd_acc_iou(const mpd_acc_box *a, const mpd_acc_box *b)
{
    if (!a || !b)
        return 0;
    /* Double precision so that integer pixel boxes give IoUs exactly equal
     * to the rational value a person computes by hand. */
    double aw = fmax(0, (double)a->x1 - a->x0), ah = fmax(0, (double)a->y1 - a->y0);
    double bw = fmax(0, (double)b->x1 - b->x0), bh = fmax(0, (double)b->y1 - b->y0);
    double iw = fmin(a->x1, b->x1) - fmax(a->x0, b->x0);
    double ih = fmin(a->y1, b->y1) - fmax(a->y0, b->y0);
    double inter = iw > 0 && ih > 0 ? iw * ih : 0;
    double uni = aw * ah + bw * bh - inter;
    return uni > 0 ? inter / uni : 0;
}

/* Class ascending, then confidence descending, then image and input order:
 * a total order, so qsort's instability cannot change any result. */
static int rank_cmp(const void *pa, const void *pb)
{
    const rank_entry *a = pa, *b = pb;
    if (a->cls != b->cls)
        return a->cls < b->cls ? -1 : 1;
    if (a->conf != b->conf)
        return a->conf > b->conf ? -1 : 1;
    if (a->img != b->img)
        return a->img < b->img ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

static int int_cmp(const void *pa, const void *pb)
{
    int a = *(const int *)pa, b = *(const int *)pb;
    return (a > b) - (a < b);
}

static int box_valid(const mpd_acc_box *b, int is_det)
{
    if (b->class_id < 0 || !isfinite(b->x0) || !isfinite(b->y0) || !isfinite(b->x1) ||
        !isfinite(b->y1))
        return 0;
    if (b->x1 < b->x0 || b->y1 < b->y0)
        return 0;
    /* A NaN confidence would make the ranking order undefined. */
    return !is_det || isfinite(b->conf);
}

/* malloc of count elements of size bytes, NULL on overflow; never asks for 0
 * bytes, so NULL always means failure. */
static void *alloc_array(size_t count, size_t size)
{
    if (count > SIZE_MAX / size)
        return NULL;
    return malloc(count ? count * size : 1);
}

/* Greedy matching of every ranked detection at IoU >= t: fills s->tp and
 * s->iou. Because each class's detections are visited in rank order, the
 * matching of the detections at or above any confidence is the same as if
 * the lower ones did not exist, which lets the operating point reuse the
 * t = 0.5 pass. */
static void match_pass(const mpd_acc_image *img, scratch *s, size_t nd, size_t nr, double t)
{
    memset(s->taken, 0, nr ? nr : 1);
    for (size_t k = 0; k < nd; k++) {
        const rank_entry *e = &s->rank[k];
        const mpd_acc_image *im = &img[e->img];
        const mpd_acc_box *d = &im->det[e->idx];
        unsigned char *taken = s->taken + s->ref_off[e->img];
        int best = -1;
        double best_iou = -1;
        for (int r = 0; r < im->nref; r++) {
            if (taken[r] || im->ref[r].class_id != e->cls)
                continue;
            double v = mpd_acc_iou(d, &im->ref[r]);
            if (v > best_iou) {
                best = r;
                best_iou = v;
            }
        }
        s->tp[k] = best >= 0 && best_iou >= t;
        s->iou[k] = s->tp[k] ? best_iou : 0;
        if (s->tp[k])
            taken[best] = 1;
    }
}

/* Number of reference boxes of class c, from the sorted class list. */
static size_t count_class(const int *sorted, size_t nr, int c)
{
    size_t lo = 0, hi = nr;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t end = lo;
    while (end < nr && sorted[end] == c)
        end++;
    return end - lo;
}

/* All-point interpolated AP over the ranked detections [a, b) of one class
 * with npos > 0 reference boxes, as a fraction. Each true positive raises
 * recall by 1 / npos, and the area it adds is that step times the highest
 * precision reached at this rank or any later one (the monotone envelope). */
static double class_ap(scratch *s, size_t a, size_t b, size_t npos)
{
    size_t hits = 0;
    for (size_t k = a; k < b; k++) {
        hits += s->tp[k];
        s->prec[k] = (double)hits / (double)(k - a + 1);
    }
    double env = 0, sum = 0;
    for (size_t k = b; k-- > a;) {
        env = fmax(env, s->prec[k]);
        if (s->tp[k])
            sum += env;
    }
    return sum / (double)npos;
}

/* Mean over the classes with reference boxes of the AP at IoU >= t, in
 * percent. Classes never detected contribute 0 to the sum. Leaves the
 * matching at t in s->tp and s->iou. */
static double mean_ap(const mpd_acc_image *img, scratch *s, size_t nd, size_t nr, int classes,
                      double t)
{
    match_pass(img, s, nd, nr, t);
    if (classes == 0)
        return 100;
    double sum = 0;
    for (size_t a = 0, b; a < nd; a = b) {
        b = a + 1;
        while (b < nd && s->rank[b].cls == s->rank[a].cls)
            b++;
        size_t npos = count_class(s->ref_cls, nr, s->rank[a].cls);
        if (npos > 0)
            sum += class_ap(s, a, b, npos);
    }
    return 100 * sum / classes;
}

/* Sorts and deduplicates x[0..n), returning the number of distinct values. */
static int sort_unique(int *x, int n)
{
    if (n == 0)
        return 0;
    qsort(x, (size_t)n, sizeof *x, int_cmp);
    int m = 1;
    for (int i = 1; i < n; i++)
        if (x[i] != x[m - 1])
            x[m++] = x[i];
    return m;
}

/* Whether the image's reference class set differs from the class set of its
 * detections at or above op_thresh. */
static int class_set_changed(const mpd_acc_image *im, float op_thresh, int *a, int *b)
{
    int na = 0, nb = 0;
    for (int r = 0; r < im->nref; r++)
        a[na++] = im->ref[r].class_id;
    for (int d = 0; d < im->ndet; d++)
        if (im->det[d].conf >= op_thresh)
            b[nb++] = im->det[d].class_id;
    na = sort_unique(a, na);
    nb = sort_unique(b, nb);
    return na != nb || (na > 0 && memcmp(a, b, (size_t)na * sizeof *a) != 0);
}

static void scratch_free(scratch *s)
{
    free(s->rank);
    free(s->ref_off);
    free(s->taken);
    free(s->tp);
    free(s->iou);
    free(s->prec);
    free(s->ref_cls);
    free(s->set_a);
    free(s->set_b);
}

int mpd_acc_evaluate(const mpd_acc_image *img, int n, float op_thresh, mpd_acc_summary *out,
                     double *disagreement)
{
    if (n < 0 || (n > 0 && !img) || !out || isnan(op_thresh))
        return MPD_EINVAL;
    size_t nd = 0, nr = 0;
    int max_img = 0;
    for (int i = 0; i < n; i++) {
        const mpd_acc_image *im = &img[i];
        if (im->nref < 0 || im->ndet < 0 || (im->nref > 0 && !im->ref) ||
            (im->ndet > 0 && !im->det))
            return MPD_EINVAL;
        for (int r = 0; r < im->nref; r++)
            if (!box_valid(&im->ref[r], 0))
                return MPD_EINVAL;
        for (int d = 0; d < im->ndet; d++)
            if (!box_valid(&im->det[d], 1))
                return MPD_EINVAL;
        nd += (size_t)im->ndet;
        nr += (size_t)im->nref;
        if (im->nref > max_img)
            max_img = im->nref;
        if (im->ndet > max_img)
            max_img = im->ndet;
    }

    int rc = MPD_ENOMEM;
    scratch s = {0};
    s.rank = alloc_array(nd, sizeof *s.rank);
    s.ref_off = alloc_array((size_t)n + 1, sizeof *s.ref_off);
    s.taken = alloc_array(nr, 1);
    s.tp = alloc_array(nd, 1);
    s.iou = alloc_array(nd, sizeof *s.iou);
    s.prec = alloc_array(nd, sizeof *s.prec);
    s.ref_cls = alloc_array(nr, sizeof *s.ref_cls);
    s.set_a = alloc_array((size_t)max_img, sizeof *s.set_a);
    s.set_b = alloc_array((size_t)max_img, sizeof *s.set_b);
    if (!s.rank || !s.ref_off || !s.taken || !s.tp || !s.iou || !s.prec || !s.ref_cls || !s.set_a ||
        !s.set_b)
        goto fail;

    size_t k = 0, off = 0;
    for (int i = 0; i < n; i++) {
        s.ref_off[i] = off;
        for (int r = 0; r < img[i].nref; r++)
            s.ref_cls[off++] = img[i].ref[r].class_id;
        for (int d = 0; d < img[i].ndet; d++) {
            const mpd_acc_box *b = &img[i].det[d];
            s.rank[k++] = (rank_entry){.cls = b->class_id, .conf = b->conf, .img = i, .idx = d};
        }
    }
    s.ref_off[n] = off;
    if (nd > 0)
        qsort(s.rank, nd, sizeof *s.rank, rank_cmp);
    if (nr > 0)
        qsort(s.ref_cls, nr, sizeof *s.ref_cls, int_cmp);
    int classes = 0;
    for (size_t r = 0; r < nr; r++)
        classes += r == 0 || s.ref_cls[r] != s.ref_cls[r - 1];

    mpd_acc_summary sum = {0};
    sum.classes = classes;
    sum.nref = (long)nr;
    sum.ap75 = mean_ap(img, &s, nd, nr, classes, 0.75);
    /* The 0.5 pass runs last so that s.tp and s.iou describe it below. */
    sum.ap50 = mean_ap(img, &s, nd, nr, classes, 0.5);

    /* A matched pair removes one false negative and one false positive from
     * the image's nref + ndet_op and adds its localisation cost 1 - IoU. */
    if (disagreement)
        for (int i = 0; i < n; i++)
            disagreement[i] = img[i].nref;
    double iou_sum = 0;
    for (k = 0; k < nd; k++) {
        const rank_entry *e = &s.rank[k];
        if (!(e->conf >= op_thresh))
            continue;
        sum.ndet_op++;
        if (disagreement)
            disagreement[e->img] += 1;
        if (s.tp[k]) {
            sum.matched++;
            iou_sum += s.iou[k];
            if (disagreement)
                disagreement[e->img] -= 1 + s.iou[k];
        }
    }
    sum.recall = nr > 0 ? 100.0 * (double)sum.matched / (double)nr : 100;
    sum.precision = sum.ndet_op > 0 ? 100.0 * (double)sum.matched / (double)sum.ndet_op : 100;
    sum.mean_iou = sum.matched > 0 ? iou_sum / (double)sum.matched : nr > 0 ? 0 : 1;
    for (int i = 0; i < n; i++)
        sum.images_changed += class_set_changed(&img[i], op_thresh, s.set_a, s.set_b);

    *out = sum;
    rc = 0;
fail:
    scratch_free(&s);
    return rc;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static int by_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int mpd_acc_ap50_bound(const mpd_acc_image *img, int n, float op_thresh, int resamples, double q,
                       uint64_t seed, double *bound)
{
    mpd_acc_summary s;
    if (!bound || resamples < 1 || !(q > 0 && q < 1))
        return MPD_EINVAL;
    int rc = mpd_acc_evaluate(img, n, op_thresh, &s, NULL); /* validates the input once */
    if (rc || n == 0) {
        if (!rc)
            *bound = 100;
        return rc;
    }
    mpd_acc_image *r = malloc((size_t)n * sizeof(*r));
    double *ap = malloc((size_t)resamples * sizeof(*ap));
    rc = r && ap ? 0 : MPD_ENOMEM;
    uint64_t state = seed;
    for (int b = 0; !rc && b < resamples; b++) {
        for (int i = 0; i < n; i++)
            r[i] = img[splitmix64(&state) % (uint64_t)n];
        rc = mpd_acc_evaluate(r, n, op_thresh, &s, NULL);
        ap[b] = s.ap50;
    }
    if (!rc) {
        qsort(ap, (size_t)resamples, sizeof(*ap), by_double);
        *bound = ap[(int)floor(q * resamples)];
    }
    free(r);
    free(ap);
    return rc;
}
