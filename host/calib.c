/* calib.c - activation-calibration statistics (see calib.h). */
#include "calib.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "quant.h"

/* Independent accumulators of the range pass: GCC 12 turns 32 into packed
 * min/max (16 it unrolls to scalar code). */
#define LANES 32
/* Bin indices computed per block in the histogram pass. */
#define HIST_BLOCK 64

/* Counts a level with no mass gets in bins where P has some (MXNet's and
 * TVM's smoothing epsilon, in counts). */
#define ENTROPY_EPS 1e-4

struct mpd_calib_stat {
    float min, max;     /* +inf / -inf until a non-NaN value is observed */
    int hist_on;        /* begin_histogram fixed a usable range */
    float hist_absmax;  /* the histogram covers [0, hist_absmax] */
    float inv_width;    /* MPD_CALIB_BINS / hist_absmax */
    uint64_t n_hist;    /* values histogrammed */
    uint64_t bins[MPD_CALIB_BINS];
};

static const char *const method_names[] = {
    [MPD_CALIB_MINMAX] = "minmax",
    [MPD_CALIB_PERCENTILE] = "percentile",
    [MPD_CALIB_ENTROPY] = "entropy",
    [MPD_CALIB_MSE] = "mse",
    [MPD_CALIB_AUTO] = "auto",
};
#define N_METHODS (sizeof(method_names) / sizeof(method_names[0]))

const char *mpd_calib_method_name(mpd_calib_method m)
{
    return (unsigned)m < N_METHODS ? method_names[m] : "unknown";
}

int mpd_calib_method_parse(const char *s, mpd_calib_method *out)
{
    if (!s || !out)
        return MPD_EINVAL;
    for (size_t i = 0; i < N_METHODS; i++) {
        if (strcmp(s, method_names[i]) == 0) {
            *out = (mpd_calib_method)i;
            return 0;
        }
    }
    return MPD_EINVAL;
}

mpd_calib_stat *mpd_calib_stat_create(void)
{
    mpd_calib_stat *s = calloc(1, sizeof(*s));
    if (s) {
        s->min = INFINITY;
        s->max = -INFINITY;
    }
    return s;
}

void mpd_calib_stat_free(mpd_calib_stat *s)
{
    free(s);
}

void mpd_calib_stat_observe_range(mpd_calib_stat *s, const float *x, size_t n)
{
    float mn = s->min, mx = s->max;
    size_t i = 0;
    if (n >= LANES) {
        /* LANES independent running extremes, kept in arrays so the block
         * loop becomes packed min/max (`v < lo ? v : lo` is exactly minps,
         * and a NaN v leaves lo alone). A single scalar reduction is not
         * vectorised without -ffast-math. */
        float lo[LANES], hi[LANES];
        for (int j = 0; j < LANES; j++) {
            lo[j] = mn;
            hi[j] = mx;
        }
        for (; i + LANES <= n; i += LANES) {
            for (int j = 0; j < LANES; j++) {
                const float v = x[i + j];
                lo[j] = v < lo[j] ? v : lo[j];
                hi[j] = v > hi[j] ? v : hi[j];
            }
        }
        for (int j = 0; j < LANES; j++) {
            mn = lo[j] < mn ? lo[j] : mn;
            mx = hi[j] > mx ? hi[j] : mx;
        }
    }
    for (; i < n; i++) {
        const float v = x[i];
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    s->min = mn;
    s->max = mx;
}

float mpd_calib_stat_min(const mpd_calib_stat *s)
{
    return s->min <= s->max ? s->min : 0.f;
}

float mpd_calib_stat_max(const mpd_calib_stat *s)
{
    return s->min <= s->max ? s->max : 0.f;
}

float mpd_calib_stat_absmax(const mpd_calib_stat *s)
{
    if (!(s->min <= s->max))
        return 0.f;
    float a = -s->min;
    return s->max > a ? s->max : a;
}

void mpd_calib_stat_begin_histogram(mpd_calib_stat *s)
{
    memset(s->bins, 0, sizeof(s->bins));
    s->n_hist = 0;
    float a = mpd_calib_stat_absmax(s);
    float inv = (float)MPD_CALIB_BINS / a;
    /* absmax 0, infinite, or so small that the bin scale overflows. */
    s->hist_on = a > 0 && a <= FLT_MAX && inv <= FLT_MAX;
    s->hist_absmax = s->hist_on ? a : 0.f;
    s->inv_width = s->hist_on ? inv : 0.f;
}

/* The bin of |v|: beyond the range, and NaN, go to the top bin (the
 * comparison is false for NaN), so the conversion is always defined. */
static inline int32_t bin_of(float v, float inv)
{
    const float top = (float)(MPD_CALIB_BINS - 1);
    float f = fabsf(v) * inv;
    f = f < top ? f : top;
    return (int32_t)f;
}

void mpd_calib_stat_observe_hist(mpd_calib_stat *s, const float *x, size_t n)
{
    if (!s->hist_on)
        return;
    const float inv = s->inv_width;
    uint64_t *restrict b = s->bins;
    int32_t idx[HIST_BLOCK];
    size_t i = 0;
    /* Bin indices a block at a time (a packed loop), then the increments:
     * about 1.5x faster than one loop doing both. */
    for (; i + HIST_BLOCK <= n; i += HIST_BLOCK) {
        for (int j = 0; j < HIST_BLOCK; j++)
            idx[j] = bin_of(x[i + j], inv);
        for (int j = 0; j < HIST_BLOCK; j++)
            b[idx[j]]++;
    }
    for (; i < n; i++)
        b[bin_of(x[i], inv)]++;
    s->n_hist += n;
}

/* ---- thresholds ----------------------------------------------------------- */

static float percentile_threshold(const mpd_calib_stat *s, double pct, double width)
{
    double target = pct / 100.0 * (double)s->n_hist, cum = 0;
    for (int b = 0; b < MPD_CALIB_BINS; b++) {
        double c = (double)s->bins[b];
        if (c > 0 && cum + c >= target) {
            double frac = (target - cum) / c;
            frac = frac < 0 ? 0 : frac > 1 ? 1 : frac;
            return (float)((b + frac) * width);
        }
        cum += c;
    }
    return s->hist_absmax;
}

static double xlogx(double x)
{
    return x > 0 ? x * log(x) : 0;
}

/* KL(P || Q) for the candidate of i bins (see calib.h). Levels are exactly
 * i/128 bins wide: a bin that straddles a level boundary contributes to
 * both levels in proportion to its overlap (a bin is at least one level
 * wide, so it meets at most two). Overlaps are exact: positions are kept
 * in units of 1/128 bin. */
static double entropy_kl(const uint64_t *h, int i, double out, double total,
                         double sum_plogp_head)
{
    enum { NL = MPD_CALIB_LEVELS };
    /* A straddling bin ends before the last level's end (128 i), so k + 1
     * stays below NL. */
    double mass[NL] = {0}, norm[NL] = {0};
    const double p_last = (double)h[i - 1] + out;
    /* Pass 1: Q's count of each level (from the unfolded bins) and the
     * overlap-weighted number of P's non-zero bins in it. */
    for (int b = 0; b < i; b++) {
        const double p = b == i - 1 ? p_last : (double)h[b];
        if (p == 0)
            continue; /* h[b] is 0 too: adds to neither */
        const long lo = (long)b * NL, hi = lo + NL;  /* the bin, in 1/128 bin */
        const int k = (int)(lo / i);                 /* level where it starts */
        const long edge = (long)(k + 1) * i;         /* that level's end */
        const double c = (double)h[b];
        if (edge >= hi) {
            mass[k] += c;
            norm[k] += 1;
        } else {
            const double f = (double)(edge - lo) / NL;
            mass[k] += f * c;
            norm[k] += f;
            mass[k + 1] += (1 - f) * c;
            norm[k + 1] += 1 - f;
        }
    }
    /* Pass 2: expand Q over P's non-zero bins and sum p log q. */
    double sum_plogq = 0, q_total = 0;
    for (int b = 0; b < i; b++) {
        const double p = b == i - 1 ? p_last : (double)h[b];
        if (p == 0)
            continue;
        const long lo = (long)b * NL, hi = lo + NL;
        const int k = (int)(lo / i);
        const long edge = (long)(k + 1) * i;
        double q;
        if (edge >= hi) {
            q = mass[k] / norm[k];
        } else {
            const double f = (double)(edge - lo) / NL;
            q = f * mass[k] / norm[k] + (1 - f) * mass[k + 1] / norm[k + 1];
        }
        if (!(q > 0))
            q = ENTROPY_EPS; /* clipped mass where the candidate has none */
        q_total += q;
        sum_plogq += p * log(q);
    }
    const double sum_plogp = sum_plogp_head + xlogx(p_last);
    /* KL of the normalised distributions (P's total is `total`):
     * sum (p/Pt) log((p/Pt) / (q/Qt)). */
    return (sum_plogp - sum_plogq) / total + log(q_total / total);
}

/* Returns the chosen number of bins i, MPD_CALIB_LEVELS .. MPD_CALIB_BINS:
 * the first with the least KL(P || Q). */
static int entropy_bins(const uint64_t *h)
{
    enum { NB = MPD_CALIB_BINS };
    /* cnt[j] = sum h[0, j); hlh[j] = sum h log h over [0, j). */
    double cnt[NB + 1], hlh[NB + 1];
    cnt[0] = hlh[0] = 0;
    for (int j = 0; j < NB; j++) {
        cnt[j + 1] = cnt[j] + (double)h[j];
        hlh[j + 1] = hlh[j] + xlogx((double)h[j]);
    }
    const double total = cnt[NB];
    int best_i = NB;
    double best_kl = INFINITY;
    for (int i = MPD_CALIB_LEVELS; i <= NB; i++) {
        const double kl = entropy_kl(h, i, total - cnt[i], total, hlh[i - 1]);
        if (kl < best_kl) {
            best_kl = kl;
            best_i = i;
        }
    }
    return best_i;
}

/* Returns the number of bins i whose threshold i * width has the least
 * expected squared error (see calib.h). With prefix sums of the counts,
 * their first and second moments (in bin units), the clipped part of each
 * candidate is O(1): sum over b >= i of n_b (c_b - i)^2 with c_b = b + 0.5. */
static int mse_bins(const uint64_t *h)
{
    enum { NB = MPD_CALIB_BINS };
    double n[NB + 1], m1[NB + 1], m2[NB + 1];
    n[0] = m1[0] = m2[0] = 0;
    for (int b = 0; b < NB; b++) {
        const double c = b + 0.5, k = (double)h[b];
        n[b + 1] = n[b] + k;
        m1[b + 1] = m1[b] + k * c;
        m2[b + 1] = m2[b] + k * c * c;
    }
    int best_i = NB;
    double best = INFINITY;
    for (int i = 16; i <= NB; i++) {
        const double step = (double)i / MPD_QMAX;
        const double inside = n[i] * step * step / 12;
        const double cn = n[NB] - n[i], c1 = m1[NB] - m1[i], c2 = m2[NB] - m2[i];
        const double clipped = c2 - 2 * i * c1 + (double)i * i * cn;
        const double cost = inside + clipped;
        if (cost < best) {
            best = cost;
            best_i = i;
        }
    }
    return best_i;
}

float mpd_calib_stat_threshold(const mpd_calib_stat *s, mpd_calib_method m, double percentile)
{
    float absmax = mpd_calib_stat_absmax(s);
    if (!(absmax > 0))
        return 1.0f;
    if (absmax > FLT_MAX)
        absmax = FLT_MAX;
    if (m == MPD_CALIB_MINMAX || !s->hist_on || s->n_hist == 0)
        return absmax;
    const double width = (double)s->hist_absmax / MPD_CALIB_BINS;
    float t;
    if (m == MPD_CALIB_PERCENTILE) {
        if (!(percentile > 0 && percentile < 100))
            return absmax;
        t = percentile_threshold(s, percentile, width);
    } else if (m == MPD_CALIB_ENTROPY) {
        t = (float)((entropy_bins(s->bins) + 0.5) * width);
    } else if (m == MPD_CALIB_MSE || m == MPD_CALIB_AUTO) {
        t = (float)(mse_bins(s->bins) * width);
    } else {
        return absmax;
    }
    if (t > s->hist_absmax)
        t = s->hist_absmax;
    return t > 0 ? t : absmax;
}
