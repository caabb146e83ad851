/* tune.h - automatic mixed precision for `mpdet tune --budget PCT`: given
 * each convolution's measured time per precision and its accuracy
 * sensitivity, choose a per-layer precision plan that saves the most time
 * while the whole plan stays within an AP50 budget.
 *
 * The caller (the CLI) does the measuring: it times each convolution in
 * every precision, and for each non-fp32 precision evaluates the net with
 * only that one layer changed, giving the AP50 points lost relative to fp32.
 * This module is pure logic and does no I/O except mpd_tune_report(), which
 * writes to a FILE* it is given.
 *
 * Algorithm of mpd_tune_choose(). Like Intel Neural Compressor's basic
 * strategy it falls back to fp32 one layer at a time until the loss is
 * tolerable, but it ranks layers by time saved per point lost rather than
 * by accuracy impact alone:
 *   1. Candidate per layer. Among fp16 and int8, a precision p is eligible
 *      when both its time and the fp32 time are measured (finite, >= 0), it
 *      is faster than fp32 (saved = ms[FP32] - ms[p] > 0) and its own loss
 *      is within the budget. The layer's candidate is the eligible
 *      precision that saves the most time (on a tie the lower loss, then
 *      fp16); a layer with no eligible precision stays fp32.
 *   2. Order. Candidates are sorted by score = saved / max(loss,
 *      MPD_TUNE_LOSS_FLOOR) descending, so lossless layers come first,
 *      ordered by the time they save. Ties go to the larger saving, then to
 *      the lower darknet layer index, then to the earlier table entry, so
 *      the order is fully deterministic.
 *   3. Greedy fill. Candidates are taken in that order while the sum of
 *      their predicted losses (a negative loss, which is measurement noise,
 *      counts as 0) stays within the budget. A candidate that would exceed
 *      it is skipped and later, cheaper ones may still fit.
 *   4. Verification. Single-layer losses do not simply add up, so when a
 *      verify callback is given the whole plan is evaluated. If it loses
 *      more than the budget (100 - AP50 > budget), the plan is rebuilt from
 *      all fp32: the candidates taken in step 3 are added back one at a
 *      time in score order, the plan verified after each, and a candidate
 *      whose addition breaks the budget goes back to fp32 (one back-off).
 *      That drops the layers that cause the loss in combination rather
 *      than the cheapest ones, at one verification per candidate. The
 *      all-fp32 plan holds any budget by definition and is never verified.
 * "Within the budget" allows MPD_TUNE_SLACK points of rounding error, so
 * that losses of 0.1 and 0.2 fit a budget of 0.3.
 *
 * Everything here is reentrant: no globals, no locks. The verify callback
 * is called synchronously on the calling thread. */
#ifndef MPD_TUNE_H
#define MPD_TUNE_H

#include <stdio.h>

#include "precision.h"

/* The precisions, numbered as the engine numbers them (mpd_precision), so a
 * chosen plan can be handed to the engine entry by entry. */
enum {
    MPD_TUNE_FP32 = MPD_PREC_FP32,
    MPD_TUNE_FP16 = MPD_PREC_FP16,
    MPD_TUNE_INT8 = MPD_PREC_INT8,
    MPD_TUNE_BF16 = MPD_PREC_BF16,
    MPD_TUNE_NPREC = MPD_PREC_COUNT
};

/* Losses below this many AP50 points count as this much when computing a
 * score, so a lossless layer gets a large finite score instead of a
 * division by zero. */
#define MPD_TUNE_LOSS_FLOOR 0.01
/* Rounding slack, in AP50 points, of every comparison with the budget. */
#define MPD_TUNE_SLACK 1e-9

/* Returns the static name of precision p ("fp32", "fp16", "int8", "bf16"), or "?"
 * when p is out of range. Any thread. */
const char *mpd_tune_prec_name(int p);

typedef struct {
    int layer;                   /* darknet layer index, for ordering ties and reports */
    double ms[MPD_TUNE_NPREC];   /* measured time per precision; negative or not finite = not
                                    available */
    double loss[MPD_TUNE_NPREC]; /* AP50 points lost (100 - AP50 relative to fp32) with only this
                                    layer in that precision; loss[FP32] is ignored (taken as 0);
                                    may be slightly negative (noise); NaN = not available */
} mpd_tune_layer;

/* Evaluates the whole plan prec[0..n-1] (one MPD_TUNE_* per table entry, in
 * table order) and returns its AP50 in percent relative to fp32 (100 = no
 * loss), or a negative value (or NaN) on error. prec is owned by the tuner
 * and valid only during the call. */
typedef double (*mpd_tune_verify_fn)(void *ud, const int *prec);

/* The figures of a chosen plan. In the time sums an unmeasured time counts
 * as 0. */
typedef struct {
    double fp32_ms;        /* sum over layers of the fp32 time */
    double chosen_ms;      /* sum over layers of the time in the chosen precision */
    double fastest_ms;     /* sum over layers of the fastest measured time, budget aside */
    double predicted_loss; /* sum of the chosen layers' single-layer losses, negatives as 0 */
    double verified_ap50;  /* the last verification's AP50; 100 when the plan ended all fp32
                              and verify was given; -1 when verify was NULL */
    int verifications;     /* calls made to verify */
    int backoffs;          /* layers returned to fp32 after a failed verification */
    int chosen;            /* layers not in fp32 */
} mpd_tune_result;

/* Chooses a plan for the n layers of l within budget AP50 points (>= 0) as
 * described at the top of this file, calling verify(ud, plan) when verify
 * is non-NULL. On success writes the plan to prec_out[0..n-1] (caller-owned,
 * one MPD_TUNE_* per table entry) and the figures to *res, and returns 0.
 * Returns MPD_EINVAL when budget is negative or NaN, n < 1, or l, prec_out
 * or res is NULL; MPD_ENOMEM when out of memory; MPD_EIO when verify
 * returns a negative value or NaN. On error prec_out and *res are left
 * untouched. Any thread; l is only read. */
int mpd_tune_choose(const mpd_tune_layer *l, int n, double budget, mpd_tune_verify_fn verify,
                    void *ud, int *prec_out, mpd_tune_result *res);

/* mpd_tune_choose with a minimum gain: a layer's candidate is dropped in
 * step 1 unless it saves at least min_gain percent of the table's total
 * fp32 time per AP50 point it costs (its score, with the loss floor, is
 * >= min_gain / 100 x the sum of ms[FP32]). Why: a single-layer loss is
 * measured on a sample; a layer that saves little for a loss that shows
 * there risks a budget it cannot repay. (With mpdet's own data: the 26x26
 * head, layer 22, saved 0.6 % of the time in int8 for 0.05 points on the
 * tuning images, and cost 1.1 points on the unseen evaluation images.)
 * min_gain = 0 is mpd_tune_choose. MPD_EINVAL also when min_gain is
 * negative or NaN. */
int mpd_tune_choose_min(const mpd_tune_layer *l, int n, double budget, double min_gain,
                        mpd_tune_verify_fn verify, void *ud, int *prec_out, mpd_tune_result *res);

/* Writes a table to f, one row per layer: darknet layer index, its share of
 * the fp32 total time, time and loss per precision, the score of the
 * precision in prec (of the layer's candidate under budget when prec says
 * fp32), the precision in prec, and why; then a line of totals. budget and
 * min_gain are those the plan was chosen with and only explain the choices.
 * Returns 0, MPD_EINVAL when f, l or prec is NULL, n < 1, min_gain is
 * negative or NaN, or a prec entry is out of range (nothing is written
 * then), or MPD_EIO when the stream reports an error. Any thread that may
 * write to f. */
int mpd_tune_report(FILE *f, const mpd_tune_layer *l, int n, double budget, double min_gain,
                    const int *prec);

#endif
