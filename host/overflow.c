/* overflow.c - counts of int8 products and int16 window sums that overflow
 * in one convolution (see overflow.h).
 *
 * Nothing here loops over the M * N * K products. Products: for each tap k
 * a table gives, for every activation code a, how many of the M filters
 * have a weight code at k whose product with a leaves int8; scanning the
 * unfolded input (N x K codes) and adding table[k][a] counts every product
 * exactly. Sums: the engine's own int8 GEMM forms all M * N window sums of
 * the codes; the zero-point-corrected sums follow from them with
 * mpd_q_affine_correct, as in the engine's affine epilogue.
 *
 * The input is quantized by the CPU backend's own functions
 * (mpd__range_f32, mpd_q_affine / mpd_q_symmetric, mpd__quantize_chw_to_hwc,
 * mpd__im2row_i8) and the weights by mpd__conv_i8_prepare itself, so the
 * codes, and with them the symmetric sums, are the backend's bit for bit. */
#include "overflow.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/conv_i8.h"
#include "cpu/gemm_i8.h"
#include "mpd.h"
#include "plan.h"
#include "quant.h"

/* Each of the four terms of mpd_q_affine_correct is at most K * 127 * 127
 * in magnitude, so with K <= 32768 every partial sum fits int32. */
enum { MAX_TAPS = 32768 };
/* Keeps the overflow counts of TAP_BLOCK taps, at most TAP_BLOCK * filters,
 * within 32 bits (see the product scan). */
enum { MAX_FILTERS = 1 << 24 };
/* Unfolded rows and accumulators per chunk of output pixels, in bytes:
 * bounds memory on the large layers and keeps a chunk in the caches. */
enum { CHUNK_BYTES = 8 << 20, MIN_CHUNK = 64 };
/* Taps whose product tables are built and scanned together: their 32 KiB
 * of weight histograms stay in the L1 cache while they are counted, and
 * their 64 KiB of tables in L2 while every unfolded row is scanned. */
enum { TAP_BLOCK = 32 };
/* Table rows: activation code a (in [-127, 127]) is entry a + 128. */
enum { ROW = 256 };

const char *mpd_ovf_variant_name(mpd_ovf_variant v)
{
    switch (v) {
    case MPD_OVF_AFFINE_CODES: return "affine_codes";
    case MPD_OVF_AFFINE_CORRECTED: return "affine_corrected";
    case MPD_OVF_SYMMETRIC: return "symmetric";
    case MPD_OVF_NVARIANTS: break;
    }
    return "?";
}

/* The values v for which u * v stays within int8 [-128, 127], for u != 0:
 * [*lo, *hi]. Integer division of positive numbers floors, which gives
 * the bounds exactly (for u > 0: u v <= 127 iff v <= floor(127 / u), and
 * u v >= -128 iff v >= -floor(128 / u); mirrored for u < 0). */
static void int8_range(int u, int *lo, int *hi)
{
    if (u > 0) {
        *lo = -(128 / u);
        *hi = 127 / u;
    } else {
        *lo = -(127 / -u);
        *hi = 128 / -u;
    }
}

/* For every activation code a (at a + 128) and the two products formed
 * with it, a * w (slot 0) and (a - zx) * (w - zw) (slot 1): the weight
 * codes w that keep the product within int8 are those in [lo, hi], counted
 * as cum[hi_idx] - cum[lo_idx] from a tap's running histogram cum (cum[i]:
 * filters with a code below i - 127). Worked out once per count, so that
 * a table entry costs two subtractions. */
typedef struct {
    uint8_t lo_idx[2][ROW], hi_idx[2][ROW];
} in_ranges;

static void fill_ranges(int zx, int zw, in_ranges *r)
{
    const int zxs[2] = {0, zx}, zws[2] = {0, zw};
    memset(r, 0, sizeof(*r));
    for (int s = 0; s < 2; s++) {
        for (int a = MPD_QMIN; a <= MPD_QMAX; a++) {
            int u = a - zxs[s], lo = MPD_QMIN, hi = MPD_QMAX;
            if (u != 0) { /* u == 0: every product is 0, every code fits */
                int8_range(u, &lo, &hi);
                lo += zws[s];
                hi += zws[s];
                lo = lo < MPD_QMIN ? MPD_QMIN : lo;
                hi = hi > MPD_QMAX ? MPD_QMAX : hi;
            }
            if (lo <= hi) { /* else both 0: an empty range */
                r->lo_idx[s][a + 128] = (uint8_t)(lo - MPD_QMIN);
                r->hi_idx[s][a + 128] = (uint8_t)(hi - MPD_QMIN + 1);
            }
        }
    }
}

/* Fills the overflow tables of taps [t0, t0 + tb) of the m weight rows w
 * (kp apart): tab[i * ROW + a + 128] holds, in its low 32 bits, the number
 * of filters o with a * w[o][t0 + i] outside int8 and, in its high 32 bits
 * when both is set, the number with (a - zx) * (w[o][t0 + i] - zw) outside
 * int8. The histograms (tb x ROW ints in hist) are gathered reading the
 * weight rows in order. */
static void build_tables(const int8_t *w, int m, int kp, int t0, int tb, const in_ranges *r,
                         int both, int32_t *hist, uint64_t *tab)
{
    memset(hist, 0, (size_t)tb * ROW * sizeof(*hist));
    for (int o = 0; o < m; o++) {
        const int8_t *row = w + (size_t)o * kp + t0;
        for (int i = 0; i < tb; i++)
            hist[i * ROW + row[i] + 128]++;
    }
    int32_t cum[ROW];
    for (int i = 0; i < tb; i++) {
        const int32_t *h = hist + i * ROW;
        uint64_t *e = tab + (size_t)i * ROW;
        cum[0] = 0;
        for (int c = 0; c < ROW - 1; c++)
            cum[c + 1] = cum[c] + h[c + 1];
        e[0] = 0; /* code -128 never occurs */
        for (int a = 1; a < ROW; a++) {
            uint32_t in0 = (uint32_t)(cum[r->hi_idx[0][a]] - cum[r->lo_idx[0][a]]);
            uint32_t in1 = (uint32_t)(cum[r->hi_idx[1][a]] - cum[r->lo_idx[1][a]]);
            e[a] = (uint64_t)((uint32_t)m - in0) | (both ? (uint64_t)((uint32_t)m - in1) << 32 : 0);
        }
    }
}

/* The state of one count: layer shape and scratch memory. */
typedef struct {
    const mpd_layer *l;
    int m, n, k, kp, chunk;
    const int8_t *w;      /* m x kp weight codes of the scheme being counted */
    const int32_t *wsum;  /* m row sums of w */
    int8_t *x8;      /* the quantized input, HWC */
    int8_t *bt;      /* chunk x kp unfolded rows */
    int32_t *colsum; /* chunk row sums */
    int32_t *acc;    /* m x chunk window sums */
    int32_t *hist;   /* TAP_BLOCK x ROW weight code histograms */
    uint64_t *tab;   /* TAP_BLOCK x ROW overflow tables */
    in_ranges ranges;
} ovf_work;

/* Adds the window sums s[0..n) outside int16 to *ovf and raises *maxabs
 * to their largest magnitude. |s| < 2^31 (K <= MAX_TAPS), so the negation
 * cannot overflow; the loop is branch-free so that it vectorises. */
static void tally(const int32_t *s, int n, long long *ovf, long long *maxabs)
{
    int32_t cnt = 0, mx = 0;
    for (int j = 0; j < n; j++) {
        int32_t v = s[j], a = v < 0 ? -v : v;
        /* One unsigned comparison: v + 32768 wraps below 0 to large values. */
        cnt += (uint32_t)v + 32768u > 65535u;
        mx = a > mx ? a : mx;
    }
    *ovf += cnt;
    *maxabs = mx > *maxabs ? mx : *maxabs;
}

/* Counts one quantization of the layer: the codes' products and sums into
 * variant vc and, when affine, the zero-point-corrected ones into
 * MPD_OVF_AFFINE_CORRECTED. wk->w, wsum hold the weight codes with zero
 * point zw, and wk->x8 the input quantized with xq. */
static void count_scheme(ovf_work *wk, int32_t zw, mpd_qparams xq, int affine, mpd_ovf_variant vc,
                         mpd_ovf_counts *out)
{
    const mpd_layer *l = wk->l;
    const mpd_conv *cv = &l->u.conv;
    const int m = wk->m, k = wk->k, kp = wk->kp;
    const int32_t zx = xq.zero;
    fill_ranges(zx, zw, &wk->ranges);
    const mpd_ovf_variant vr = MPD_OVF_AFFINE_CORRECTED;
    for (int n0 = 0; n0 < wk->n; n0 += wk->chunk) {
        int nb = wk->n - n0 < wk->chunk ? wk->n - n0 : wk->chunk;
        mpd__im2row_i8(wk->x8, l->in_c, l->in_h, l->in_w, cv->size, cv->stride, cv->pad, l->out_w,
                       n0, nb, kp, (int8_t)zx, wk->bt, affine ? wk->colsum : NULL);
        /* Products: one table lookup per unfolded code, TAP_BLOCK taps at a
         * time so that their tables stay in the cache while every row of
         * the chunk is scanned. */
        long long p0 = 0, p1 = 0;
        for (int t0 = 0; t0 < k; t0 += TAP_BLOCK) {
            int tb = k - t0 < TAP_BLOCK ? k - t0 : TAP_BLOCK;
            build_tables(wk->w, m, kp, t0, tb, &wk->ranges, affine, wk->hist, wk->tab);
            for (int j = 0; j < nb; j++) {
                const int8_t *r = wk->bt + (size_t)j * kp + t0;
                const uint64_t *t = wk->tab + 128;
                /* Both counts in one add: each half stays below
                 * TAP_BLOCK * MAX_FILTERS < 2^32. */
                uint64_t both = 0;
                for (int i = 0; i < tb; i++, t += ROW)
                    both += t[r[i]];
                p0 += (uint32_t)both;
                p1 += both >> 32;
            }
        }
        out->prod_ovf[vc] += p0;
        if (affine)
            out->prod_ovf[vr] += p1;
        /* Sums: the engine's GEMM over the padded K (the padding is 0 in
         * both operands, so it adds nothing). */
        mpd__gemm_i8(MPD_GEMM_I8_AUTO, m, nb, kp, wk->w, kp, wk->bt, kp, wk->acc, nb);
        for (int o = 0; o < m; o++) {
            int32_t *a = wk->acc + (size_t)o * nb;
            tally(a, nb, &out->sum_ovf[vc], &out->max_abs_sum[vc]);
            if (!affine)
                continue;
            /* In place: the codes' sums of this row are counted. */
            for (int j = 0; j < nb; j++)
                a[j] = mpd_q_affine_correct(a[j], wk->wsum[o], wk->colsum[j], zw, zx, k);
            tally(a, nb, &out->sum_ovf[vr], &out->max_abs_sum[vr]);
        }
    }
}

int mpd_ovf_conv(const mpd_layer *l, const float *x, float x_thresh, mpd_ovf_counts *out, char *msg,
                 size_t msglen)
{
    if (out)
        memset(out, 0, sizeof(*out));
    if (!l || !x || !out)
        return mpd__fail(msg, msglen, MPD_EINVAL, "overflow count: NULL %s",
                         !l   ? "layer"
                         : !x ? "input"
                              : "result");
    if (l->kind != MPD_LAYER_CONV)
        return mpd__fail(msg, msglen, MPD_EINVAL, "layer %d (%s): not a convolution", l->index,
                         mpd_layer_kind_name(l->kind));
    const mpd_conv *cv = &l->u.conv;
    if (!cv->weights)
        return mpd__fail(msg, msglen, MPD_EINVAL, "layer %d: weights not loaded", l->index);
    if (cv->filters < 1 || cv->size < 1 || cv->stride < 1 || l->in_c < 1 || l->in_h < 1 ||
        l->in_w < 1 || l->out_h < 1 || l->out_w < 1)
        return mpd__fail(msg, msglen, MPD_EINVAL, "layer %d: empty shape", l->index);
    long long taps = (long long)l->in_c * cv->size * cv->size;
    if (taps > MAX_TAPS)
        return mpd__fail(msg, msglen, MPD_EINVAL,
                         "layer %d: %lld taps per window, more than %d (corrected sums could "
                         "overflow int32)",
                         l->index, taps, MAX_TAPS);
    if (cv->filters > MAX_FILTERS)
        return mpd__fail(msg, msglen, MPD_EINVAL, "layer %d: %d filters, more than %d", l->index,
                         cv->filters, MAX_FILTERS);
    if (!isfinite(x_thresh))
        return mpd__fail(msg, msglen, MPD_EINVAL, "layer %d: activation threshold %g is not finite",
                         l->index, (double)x_thresh);

    ovf_work wk = {.l = l, .m = cv->filters, .n = l->out_h * l->out_w, .k = (int)taps};
    wk.kp = (wk.k + 3) & ~3;
    int chunk = CHUNK_BYTES / (wk.kp + 4 * wk.m + 4);
    chunk = chunk < MIN_CHUNK ? MIN_CHUNK : chunk;
    wk.chunk = chunk < wk.n ? chunk : wk.n;
    size_t hw = (size_t)l->in_h * l->in_w;
    /* Owned here and freed before returning, on every path. */
    wk.x8 = malloc((size_t)l->in_c * hw);
    wk.bt = malloc((size_t)wk.chunk * wk.kp);
    wk.colsum = malloc((size_t)wk.chunk * sizeof(int32_t));
    wk.acc = malloc((size_t)wk.m * wk.chunk * sizeof(int32_t));
    wk.hist = malloc((size_t)TAP_BLOCK * ROW * sizeof(int32_t));
    wk.tab = malloc((size_t)TAP_BLOCK * ROW * sizeof(uint64_t));
    mpd__conv_i8_weights q = {0};
    int rc = 0;
    if (!wk.x8 || !wk.bt || !wk.colsum || !wk.acc || !wk.hist || !wk.tab) {
        rc = mpd__fail(msg, msglen, MPD_ENOMEM, "layer %d: out of memory counting overflows",
                       l->index);
        goto done;
    }

    out->products = (long long)wk.m * wk.n * wk.k;
    out->sums = (long long)wk.m * wk.n;
    /* The input's range, as the CPU backend measures it (min and max do
     * not depend on how the backend splits the tensor among threads). */
    float mn, mx;
    mpd__range_f32(x, (size_t)l->in_c * hw, &mn, &mx);

    /* The weights as the CPU backend quantizes them, one scheme at a time. */
    if (mpd__conv_i8_prepare(l, MPD_SCHEME_AFFINE, &q))
        goto oom;
    wk.w = q.w;
    wk.wsum = q.w_sum;
    mpd_qparams xq = mpd_q_affine(mn, mx);
    mpd__quantize_chw_to_hwc(x, l->in_c, (int)hw, xq, wk.x8, 0, (int)hw);
    count_scheme(&wk, q.w_zero, xq, 1, MPD_OVF_AFFINE_CODES, out);

    mpd__conv_i8_release(&q);
    if (mpd__conv_i8_prepare(l, MPD_SCHEME_SYMMETRIC, &q))
        goto oom;
    wk.w = q.w;
    wk.wsum = q.w_sum;
    xq = mpd_q_symmetric(x_thresh > 0 ? x_thresh : -mn > mx ? -mn : mx);
    mpd__quantize_chw_to_hwc(x, l->in_c, (int)hw, xq, wk.x8, 0, (int)hw);
    count_scheme(&wk, q.w_zero, xq, 0, MPD_OVF_SYMMETRIC, out);
    goto done;

oom:
    rc = mpd__fail(msg, msglen, MPD_ENOMEM, "layer %d: out of memory counting overflows", l->index);
done:
    if (rc)
        memset(out, 0, sizeof(*out));
    mpd__conv_i8_release(&q);
    free(wk.x8);
    free(wk.bt);
    free(wk.colsum);
    free(wk.acc);
    free(wk.hist);
    free(wk.tab);
    return rc;
}
