/* tune.c - greedy mixed-precision plan under an AP50 budget, with
 * verification and back-off. The algorithm is described in tune.h. */
#include "tune.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "engine.h"

/* One layer that has a candidate precision, as sorted and taken. */
typedef struct {
    int idx;      /* entry in the caller's table */
    int layer;    /* darknet layer index, for ties */
    int prec;     /* the candidate precision */
    double saved; /* ms saved against fp32 */
    double loss;  /* predicted loss, negatives raised to 0 */
    double score; /* saved / max(loss, MPD_TUNE_LOSS_FLOOR) */
    int taken;    /* in the plan now */
} cand;

const char *mpd_tune_prec_name(int p)
{
    if (p < 0 || p >= MPD_TUNE_NPREC) {
        return "?";
    }
    return mpd_precisions[p].name;
}

/* A time the caller measured; negative or non-finite means it could not. */
static int measured(double ms)
{
    return isfinite(ms) && ms >= 0;
}

/* A negative single-layer loss is evaluation noise, not a gain to spend. */
static double clamp_loss(double loss)
{
    return loss > 0 ? loss : 0;
}

/* Compared with slack so that sums such as 0.1 + 0.2 fit a budget of 0.3;
 * a NaN loss never fits. */
static int within(double loss, double budget)
{
    return loss <= budget + MPD_TUNE_SLACK;
}

static double score(double saved, double loss)
{
    return saved / fmax(loss, MPD_TUNE_LOSS_FLOOR);
}

/* Returns the candidate precision of l under budget (MPD_TUNE_FP32 when it
 * has none) and its saving in *saved. */
static int candidate(const mpd_tune_layer *l, double budget, double *saved)
{
    int best = MPD_TUNE_FP32;
    double best_saved = 0;
    if (measured(l->ms[MPD_TUNE_FP32])) {
        for (int p = MPD_TUNE_FP32 + 1; p < MPD_TUNE_NPREC; p++) {
            if (!measured(l->ms[p]) || !within(l->loss[p], budget)) {
                continue;
            }
            double s = l->ms[MPD_TUNE_FP32] - l->ms[p];
            if (!(s > 0)) {
                continue;
            }
            /* Precisions are visited from the most accurate down, so on
             * equal saving and loss the more accurate one stays. */
            if (best == MPD_TUNE_FP32 || s > best_saved ||
                (s == best_saved && l->loss[p] < l->loss[best])) {
                best = p;
                best_saved = s;
            }
        }
    }
    *saved = best_saved;
    return best;
}

/* A total order, so qsort's instability cannot change the plan. */
static int cand_cmp(const void *pa, const void *pb)
{
    const cand *a = pa, *b = pb;
    if (a->score != b->score) {
        return a->score > b->score ? -1 : 1;
    }
    if (a->saved != b->saved) {
        return a->saved > b->saved ? -1 : 1;
    }
    if (a->layer != b->layer) {
        return a->layer < b->layer ? -1 : 1;
    }
    return (a->idx > b->idx) - (a->idx < b->idx);
}

int mpd_tune_choose(const mpd_tune_layer *l, int n, double budget, mpd_tune_verify_fn verify,
                    void *ud, int *prec_out, mpd_tune_result *res)
{
    return mpd_tune_choose_min(l, n, budget, 0, verify, ud, prec_out, res);
}

int mpd_tune_choose_min(const mpd_tune_layer *l, int n, double budget, double min_gain,
                        mpd_tune_verify_fn verify, void *ud, int *prec_out, mpd_tune_result *res)
{
    if (!l || n < 1 || !prec_out || !res || !(budget >= 0) || !(min_gain >= 0)) {
        return MPD_EINVAL;
    }
    /* The exchange rate a candidate must beat, in ms per AP50 point. */
    double fp32_total = 0;
    for (int i = 0; i < n; i++) {
        if (measured(l[i].ms[MPD_TUNE_FP32])) {
            fp32_total += l[i].ms[MPD_TUNE_FP32];
        }
    }
    double min_score = min_gain / 100 * fp32_total;
    if ((size_t)n > SIZE_MAX / sizeof(cand)) {
        return MPD_ENOMEM;
    }
    int rc = MPD_OK;
    cand *c = malloc((size_t)n * sizeof *c);
    /* The plan is built in a buffer of our own so that prec_out is written
     * only on success. */
    int *plan = malloc((size_t)n * sizeof *plan);
    if (!c || !plan) {
        rc = MPD_ENOMEM;
        goto fail;
    }

    int nc = 0;
    for (int i = 0; i < n; i++) {
        plan[i] = MPD_TUNE_FP32;
        double saved;
        int p = candidate(&l[i], budget, &saved);
        if (p != MPD_TUNE_FP32 &&
            score(saved, clamp_loss(l[i].loss[p])) >= min_score - MPD_TUNE_SLACK) {
            double loss = clamp_loss(l[i].loss[p]);
            c[nc++] = (cand){.idx = i,
                             .layer = l[i].layer,
                             .prec = p,
                             .saved = saved,
                             .loss = loss,
                             .score = score(saved, loss)};
        }
    }
    qsort(c, (size_t)nc, sizeof *c, cand_cmp);

    double predicted = 0;
    int chosen = 0;
    for (int k = 0; k < nc; k++) {
        if (within(predicted + c[k].loss, budget)) {
            predicted += c[k].loss;
            c[k].taken = 1;
            plan[c[k].idx] = c[k].prec;
            chosen++;
        }
    }

    double ap50 = -1;
    int verifications = 0, backoffs = 0;
    if (verify && chosen > 0) {
        ap50 = verify(ud, plan);
        verifications++;
        if (!(ap50 >= 0)) {
            rc = MPD_EIO;
            goto fail;
        }
        if (!within(100 - ap50, budget)) {
            /* The losses interact: rebuild the plan from fp32 one taken
             * candidate at a time, in score order, keeping each only if
             * the plan with it still holds the budget. The layer dropped
             * is then the one whose addition breaks it, not merely the
             * cheapest one. */
            for (int i = 0; i < n; i++) {
                plan[i] = MPD_TUNE_FP32;
            }
            chosen = 0;
            ap50 = 100;
            for (int k = 0; k < nc; k++) {
                if (!c[k].taken) {
                    continue;
                }
                plan[c[k].idx] = c[k].prec;
                double a = verify(ud, plan);
                verifications++;
                if (!(a >= 0)) {
                    rc = MPD_EIO;
                    goto fail;
                }
                if (within(100 - a, budget)) {
                    ap50 = a;
                    chosen++;
                } else {
                    plan[c[k].idx] = MPD_TUNE_FP32;
                    c[k].taken = 0;
                    backoffs++;
                }
            }
        }
    } else if (verify) {
        ap50 = 100;
    }
    /* Summed again, in the order taken, rather than by subtracting the
     * layers backed off, so no rounding residue is left. */
    predicted = 0;
    for (int k = 0; k < nc; k++) {
        if (c[k].taken) {
            predicted += c[k].loss;
        }
    }

    mpd_tune_result r = {.predicted_loss = predicted,
                         .verified_ap50 = ap50,
                         .verifications = verifications,
                         .backoffs = backoffs,
                         .chosen = chosen};
    for (int i = 0; i < n; i++) {
        double fastest = -1;
        for (int p = 0; p < MPD_TUNE_NPREC; p++) {
            if (measured(l[i].ms[p]) && (fastest < 0 || l[i].ms[p] < fastest)) {
                fastest = l[i].ms[p];
            }
        }
        if (measured(l[i].ms[MPD_TUNE_FP32])) {
            r.fp32_ms += l[i].ms[MPD_TUNE_FP32];
        }
        if (measured(l[i].ms[plan[i]])) {
            r.chosen_ms += l[i].ms[plan[i]];
        }
        if (fastest >= 0) {
            r.fastest_ms += fastest;
        }
        prec_out[i] = plan[i];
    }
    *res = r;

fail:
    free(c);
    free(plan);
    return rc;
}

/* Prints a time or loss in a fixed-width column, "-" where unavailable. */
static void put_num(FILE *f, int width, int prec, double v, int available)
{
    if (available) {
        fprintf(f, " %*.*f", width, prec, v);
    } else {
        fprintf(f, " %*s", width, "-");
    }
}

int mpd_tune_report(FILE *f, const mpd_tune_layer *l, int n, double budget, double min_gain,
                    const int *prec)
{
    if (!f || !l || n < 1 || !prec || !(min_gain >= 0)) {
        return MPD_EINVAL;
    }
    for (int i = 0; i < n; i++) {
        if (prec[i] < 0 || prec[i] >= MPD_TUNE_NPREC) {
            return MPD_EINVAL;
        }
    }

    double fp32_total = 0, plan_total = 0, predicted = 0;
    for (int i = 0; i < n; i++) {
        if (measured(l[i].ms[MPD_TUNE_FP32])) {
            fp32_total += l[i].ms[MPD_TUNE_FP32];
        }
        if (measured(l[i].ms[prec[i]])) {
            plan_total += l[i].ms[prec[i]];
        }
        if (prec[i] != MPD_TUNE_FP32 && !isnan(l[i].loss[prec[i]])) {
            predicted += clamp_loss(l[i].loss[prec[i]]);
        }
    }

    fprintf(f, "%5s %6s %9s %9s %9s %9s %9s %9s %5s  %s\n", "layer", "share", "fp32_ms", "fp16_ms",
            "int8_ms", "fp16_loss", "int8_loss", "score", "plan", "why");
    for (int i = 0; i < n; i++) {
        const mpd_tune_layer *x = &l[i];
        int have32 = measured(x->ms[MPD_TUNE_FP32]);
        fprintf(f, "%5d", x->layer);
        if (have32 && fp32_total > 0) {
            fprintf(f, " %5.1f%%", 100 * x->ms[MPD_TUNE_FP32] / fp32_total);
        } else {
            fprintf(f, " %6s", "-");
        }
        for (int p = 0; p < MPD_TUNE_NPREC; p++) {
            put_num(f, 9, 3, x->ms[p], measured(x->ms[p]));
        }
        for (int p = MPD_TUNE_FP32 + 1; p < MPD_TUNE_NPREC; p++) {
            put_num(f, 9, 2, x->loss[p], !isnan(x->loss[p]));
        }

        /* The score shown is that of the precision in the plan, or, for a
         * layer left in fp32, of the candidate it would have had. */
        double saved;
        int cand_p = candidate(x, budget, &saved);
        int p = prec[i];
        int faster = have32 && measured(x->ms[p]) && x->ms[MPD_TUNE_FP32] - x->ms[p] > 0;
        if (p != MPD_TUNE_FP32 && faster && !isnan(x->loss[p])) {
            saved = x->ms[MPD_TUNE_FP32] - x->ms[p];
            put_num(f, 9, 1, score(saved, clamp_loss(x->loss[p])), 1);
        } else if (p == MPD_TUNE_FP32 && cand_p != MPD_TUNE_FP32) {
            put_num(f, 9, 1, score(saved, clamp_loss(x->loss[cand_p])), 1);
        } else {
            put_num(f, 9, 1, 0, 0);
        }
        fprintf(f, " %5s  ", mpd_tune_prec_name(p));

        if (p != MPD_TUNE_FP32) {
            if (faster) {
                fprintf(f, "saves %.3f ms for %.2f points\n", x->ms[MPD_TUNE_FP32] - x->ms[p],
                        clamp_loss(x->loss[p]));
            } else if (have32 && measured(x->ms[p])) {
                fprintf(f, "set by the plan, not faster than fp32\n");
            } else {
                fprintf(f, "set by the plan, time not measured\n");
            }
            continue;
        }
        int any_faster = 0;
        for (int q = MPD_TUNE_FP32 + 1; q < MPD_TUNE_NPREC && have32; q++) {
            if (measured(x->ms[q]) && x->ms[MPD_TUNE_FP32] - x->ms[q] > 0) {
                any_faster = 1;
            }
        }
        if (!have32) {
            fprintf(f, "fp32 time not measured\n");
        } else if (!any_faster) {
            fprintf(f, "no faster precision\n");
        } else if (cand_p == MPD_TUNE_FP32) {
            fprintf(f, "every faster precision loses more than the budget\n");
        } else if (score(saved, clamp_loss(x->loss[cand_p])) < min_gain / 100 * fp32_total -
                                                                   MPD_TUNE_SLACK) {
            fprintf(f, "gains less than %.1f ms per point (--min-gain %g)\n",
                    min_gain / 100 * fp32_total, min_gain);
        } else {
            fprintf(f, "budget spent on better scores, or backed off after verification\n");
        }
    }
    fprintf(f, "total: fp32 %.3f ms, plan %.3f ms", fp32_total, plan_total);
    if (fp32_total > 0) {
        fprintf(f, " (%.1f%% saved)", 100 * (fp32_total - plan_total) / fp32_total);
    }
    fprintf(f, ", predicted loss %.2f of %.2f points\n", predicted, budget);
    return ferror(f) ? MPD_EIO : MPD_OK;
}
