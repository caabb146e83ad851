/* test_tune.c - the mixed-precision tuner (tools/tune.h) on synthetic
 * timing and sensitivity tables: candidate choice, greedy order by score,
 * the budget, verification with back-off, errors and the report. No model
 * and no images are involved. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpd.h"
#include "tune.h"
#include "testutil.h"

enum { FP32 = MPD_TUNE_FP32, FP16 = MPD_TUNE_FP16, INT8 = MPD_TUNE_INT8, BF16 = MPD_TUNE_BF16 };

/* One table row: times and losses per precision (loss[FP32] is 0); bf16
 * not measured unless a test sets it. */
static mpd_tune_layer row(int layer, double ms32, double ms16, double ms8, double loss16,
                          double loss8)
{
    mpd_tune_layer l = {.layer = layer, .ms = {ms32, ms16, ms8}, .loss = {0, loss16, loss8}};
    l.ms[BF16] = -1;
    l.loss[BF16] = NAN;
    return l;
}

static void assert_plan(const int *got, const int *want, int n)
{
    for (int i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            fail_msg("entry %d: got %s, want %s", i, mpd_tune_prec_name(got[i]),
                     mpd_tune_prec_name(want[i]));
        }
    }
}

/* A verify callback: AP50 = 100 - the sum of the plan's single-layer losses
 * (negatives as 0), minus `penalty` when entries 0 and 1 are both int8; or
 * `fixed` when that is set. It records each plan it is shown. */
typedef struct {
    const mpd_tune_layer *l;
    int n;
    double penalty;
    int pair_b; /* the penalty applies to entries 0 and pair_b (0 = entry 1) */
    int use_fixed;
    double fixed;
    int calls;
    int seen[8][8];
} verifier;

static double verify_cb(void *ud, const int *prec)
{
    verifier *v = ud;
    if (v->calls < 8) {
        memcpy(v->seen[v->calls], prec, (size_t)v->n * sizeof *prec);
    }
    v->calls++;
    if (v->use_fixed) {
        return v->fixed;
    }
    double ap = 100;
    for (int i = 0; i < v->n; i++) {
        double loss = v->l[i].loss[prec[i]];
        ap -= loss > 0 ? loss : 0;
    }
    if (prec[0] == INT8 && prec[v->pair_b ? v->pair_b : 1] == INT8) {
        ap -= v->penalty;
    }
    return ap;
}

static void test_prec_names(void **state)
{
    (void)state;
    assert_string_equal(mpd_tune_prec_name(MPD_TUNE_FP32), "fp32");
    assert_string_equal(mpd_tune_prec_name(MPD_TUNE_FP16), "fp16");
    assert_string_equal(mpd_tune_prec_name(MPD_TUNE_INT8), "int8");
    assert_string_equal(mpd_tune_prec_name(MPD_TUNE_BF16), "bf16");
    assert_string_equal(mpd_tune_prec_name(-1), "?");
    assert_string_equal(mpd_tune_prec_name(MPD_TUNE_NPREC), "?");
}

/* With no loss anywhere, each layer takes its fastest measured precision,
 * and only precisions faster than a measured fp32 count. */
static void test_lossless_takes_fastest(void **state)
{
    (void)state;
    mpd_tune_layer l[] = {
        row(0, 10, 6, 4, 0, 0),    /* int8 fastest */
        row(1, 10, 5, 7, 0, 0),    /* fp16 faster than int8 and fp32 */
        row(2, 10, 12, 11, 0, 0),  /* nothing faster than fp32 */
        row(3, 10, -1, 3, 0, 0),   /* fp16 not measured */
        row(4, 10, 8, -1, 0, 0),   /* int8 not measured */
        row(5, -1, 5, 3, 0, 0),    /* fp32 not measured: nothing to compare with */
        row(6, 10, NAN, 10, 0, 0), /* NaN is unmeasured, equal is not faster */
        row(7, 10, 6, 6, 0, 0),    /* a tie in time and loss keeps fp16 */
        row(8, 10, 1, -0.5, 0, 0), /* int8 "faster" only because unmeasured */
    };
    int n = (int)(sizeof l / sizeof l[0]);
    int want[] = {INT8, FP16, FP32, INT8, FP16, FP32, FP32, FP16, FP16};
    int prec[9];
    mpd_tune_result r;
    assert_int_equal(mpd_tune_choose(l, n, 1.0, NULL, NULL, prec, &r), 0);
    assert_plan(prec, want, n);
    assert_int_equal(r.chosen, 6);
    assert_float_equal(r.fp32_ms, 80, 1e-12);
    /* 4 + 5 + 10 + 3 + 8 + 0 (fp32 unmeasured) + 10 + 6 + 1 */
    assert_float_equal(r.chosen_ms, 47, 1e-12);
    /* 4 + 5 + 10 + 3 + 8 + 3 + 10 + 6 + 1 */
    assert_float_equal(r.fastest_ms, 50, 1e-12);
    assert_float_equal(r.predicted_loss, 0, 0);
    assert_float_equal(r.verified_ap50, -1, 0);
    assert_int_equal(r.verifications, 0);
    assert_int_equal(r.backoffs, 0);
}

/* bf16 is a candidate like the others: under a budget of 0 the fastest
 * lossless precision wins, bf16 or not. */
static void test_bf16_is_a_candidate(void **state)
{
    (void)state;
    mpd_tune_layer l[] = {row(0, 10, 6, 4, 0, 0), row(1, 10, 6, 4, 0, 0.5),
                          row(2, 10, 6, 4, 0, 0)};
    l[0].ms[BF16] = 3, l[0].loss[BF16] = 0;   /* fastest and lossless */
    l[1].ms[BF16] = 5, l[1].loss[BF16] = 0;   /* int8 loses; bf16 beats fp16 */
    l[2].ms[BF16] = 3, l[2].loss[BF16] = 0.4; /* bf16 loses: int8 */
    int want[] = {BF16, BF16, INT8}, prec[3];
    mpd_tune_result r;
    assert_int_equal(mpd_tune_choose(l, 3, 0.0, NULL, NULL, prec, &r), 0);
    assert_plan(prec, want, 3);
}

/* A budget of 0 admits only layers whose loss is 0 or negative (noise); a
 * faster precision that loses anything gives way to a slower lossless one. */
static void test_zero_budget_only_lossless(void **state)
{
    (void)state;
    mpd_tune_layer l[] = {
        row(0, 10, 5, 2, 0, 0.5),      /* int8 loses: fp16 instead */
        row(1, 10, 5, 2, 0.3, 0.2),    /* both lose: fp32 */
        row(2, 10, 9, 4, 0, -0.1),     /* negative loss counts as 0 */
        row(3, 10, 9, 4, 0.0001, 0),   /* the smallest loss is still a loss */
        row(4, 10, 9, 4, 0.0001, NAN), /* an unmeasured loss never fits */
    };
    int want[] = {FP16, FP32, INT8, INT8, FP32};
    int prec[5];
    mpd_tune_result r;
    assert_int_equal(mpd_tune_choose(l, 5, 0, NULL, NULL, prec, &r), 0);
    assert_plan(prec, want, 5);
    assert_int_equal(r.chosen, 3);
    assert_float_equal(r.predicted_loss, 0, 0);
    assert_float_equal(r.chosen_ms, 5 + 10 + 4 + 4 + 10, 1e-12);
}

/* A layer whose own loss is over the budget is never chosen, however much
 * it saves; a more accurate precision of the same layer may still be. */
static void test_own_loss_over_budget_never_chosen(void **state)
{
    (void)state;
    mpd_tune_layer l[] = {
        row(0, 100, -1, 10, 0, 1.5), /* saves 90 but loses 1.5 */
        row(1, 10, -1, 5, 0, 0.5),   /* score 10 */
        row(2, 10, -1, 8, 0, 0.4),   /* score 5 */
        row(3, 20, 15, 5, 0.05, 2),  /* int8 over budget, fp16 score 100 */
    };
    int want[] = {FP32, INT8, INT8, FP16};
    int prec[4];
    mpd_tune_result r;
    assert_int_equal(mpd_tune_choose(l, 4, 1.0, NULL, NULL, prec, &r), 0);
    assert_plan(prec, want, 4);
    assert_int_equal(r.chosen, 3);
    assert_float_equal(r.predicted_loss, 0.95, 1e-9);
    assert_float_equal(r.fp32_ms, 140, 1e-12);
    assert_float_equal(r.chosen_ms, 100 + 5 + 8 + 15, 1e-12);
    assert_float_equal(r.fastest_ms, 10 + 5 + 8 + 5, 1e-12);
}

/* Hand-computed, budget 1.0 point, int8 only:
 *   layer 0: saves 10, loses 0.8  -> score 12.5 (the biggest saver)
 *   layer 2: saves 4,  loses 0.2  -> score 20
 *   layer 4: saves 3,  loses 0.25 -> score 12
 *   layer 6: saves 6,  loses 0.4  -> score 15
 *   layer 8: saves 1,  loses 0    -> score 100 (1 / 0.01)
 * Order 8, 2, 6, 0, 4: after 8, 2 and 6 the total is 0.6; layer 0 would
 * make it 1.4 and is skipped; layer 4 then fits at 0.85. */
static void test_greedy_by_score_skips_then_fits(void **state)
{
    (void)state;
    mpd_tune_layer l[] = {
        row(0, 20, -1, 10, 0, 0.8), row(2, 10, -1, 6, 0, 0.2), row(4, 10, -1, 7, 0, 0.25),
        row(6, 10, -1, 4, 0, 0.4),  row(8, 10, -1, 9, 0, 0),
    };
    int want[] = {FP32, INT8, INT8, INT8, INT8};
    int prec[5];
    mpd_tune_result r;
    assert_int_equal(mpd_tune_choose(l, 5, 1.0, NULL, NULL, prec, &r), 0);
    assert_plan(prec, want, 5);
    assert_int_equal(r.chosen, 4);
    assert_float_equal(r.predicted_loss, 0.85, 1e-9);
    assert_float_equal(r.chosen_ms, 20 + 6 + 7 + 4 + 9, 1e-12);

    /* With a budget of 1.4 the biggest saver fits after the better scores
     * (0.6 + 0.8) and then leaves no room for layer 4. */
    int want_wide[] = {INT8, INT8, FP32, INT8, INT8};
    assert_int_equal(mpd_tune_choose(l, 5, 1.4, NULL, NULL, prec, &r), 0);
    assert_plan(prec, want_wide, 5);
    assert_float_equal(r.predicted_loss, 1.4, 1e-9);
}

/* Equal scores go to the larger saving, then the lower layer index, not to
 * the table order. Budget 0.6: layer 5 (0.4), then layer 1 (0.6, which
 * fits only thanks to the rounding slack: 0.4 + 0.2 > 0.6 in binary), then
 * layer 3 no longer fits. */
static void test_ties_are_deterministic(void **state)
{
    (void)state;
    mpd_tune_layer l[] = {
        row(3, 10, -1, 8, 0, 0.2), /* saves 2, score 10 */
        row(5, 10, -1, 6, 0, 0.4), /* saves 4, score 10 */
        row(1, 10, -1, 8, 0, 0.2), /* saves 2, score 10 */
    };
    int want[] = {FP32, INT8, INT8};
    int prec[3];
    mpd_tune_result r;
    assert_int_equal(mpd_tune_choose(l, 3, 0.6, NULL, NULL, prec, &r), 0);
    assert_plan(prec, want, 3);
    assert_int_equal(r.chosen, 2);
}

/* An interaction the single-layer losses cannot predict: entries 0 and 1
 * both in int8 cost 2 more points. Predicted 0.8 fits the budget of 1, the
 * whole plan loses 2.8, so the plan is rebuilt in score order (entries 3,
 * 2, 0, 1): the first three hold (100, 99.9, 99.6), adding entry 1 loses
 * 2.8 and it goes back to fp32. Five verifications, one back-off. */
static void test_rebuild_drops_the_breaking_layer(void **state)
{
    (void)state;
    mpd_tune_layer l[] = {
        row(0, 10, -1, 4, 0, 0.3), /* saves 6, score 20 */
        row(1, 10, -1, 8, 0, 0.4), /* saves 2, score 5 */
        row(2, 10, -1, 7, 0, 0.1), /* saves 3, score 30 */
        row(3, 10, 9, -1, 0, 0),   /* saves 1 in fp16, score 100 */
    };
    verifier v = {.l = l, .n = 4, .penalty = 2};
    int prec[4];
    mpd_tune_result r;
    assert_int_equal(mpd_tune_choose(l, 4, 1.0, verify_cb, &v, prec, &r), 0);
    int first[] = {INT8, INT8, INT8, FP16};
    int want[] = {INT8, FP32, INT8, FP16};
    int only3[] = {FP32, FP32, FP32, FP16}, with2[] = {FP32, FP32, INT8, FP16};
    assert_int_equal(v.calls, 5);
    assert_plan(v.seen[0], first, 4);
    assert_plan(v.seen[1], only3, 4);
    assert_plan(v.seen[2], with2, 4);
    assert_plan(v.seen[3], want, 4);
    assert_plan(v.seen[4], first, 4);
    assert_plan(prec, want, 4);
    assert_int_equal(r.verifications, 5);
    assert_int_equal(r.backoffs, 1);
    assert_int_equal(r.chosen, 3);
    assert_float_equal(r.verified_ap50, 99.6, 1e-9);
    assert_float_equal(r.predicted_loss, 0.4, 1e-9);
    assert_float_equal(r.chosen_ms, 4 + 10 + 7 + 9, 1e-12);

    /* Without the interaction the first verification passes. */
    v = (verifier){.l = l, .n = 4};
    assert_int_equal(mpd_tune_choose(l, 4, 1.0, verify_cb, &v, prec, &r), 0);
    assert_plan(prec, first, 4);
    assert_int_equal(r.verifications, 1);
    assert_int_equal(r.backoffs, 0);
    assert_float_equal(r.verified_ap50, 99.2, 1e-9);

    /* The culprit scores high (entries 0 and 2 together cost 2 points):
     * the rebuild drops entry 0, whose addition breaks the budget, and
     * keeps the cheaper entry 1, which dropping by score would lose. */
    v = (verifier){.l = l, .n = 4, .penalty = 2, .pair_b = 2};
    assert_int_equal(mpd_tune_choose(l, 4, 1.0, verify_cb, &v, prec, &r), 0);
    int keep1[] = {FP32, INT8, INT8, FP16};
    assert_plan(prec, keep1, 4);
    assert_int_equal(r.verifications, 5);
    assert_int_equal(r.backoffs, 1);
    assert_int_equal(r.chosen, 3);
    assert_float_equal(r.verified_ap50, 99.5, 1e-9);
}

/* A plan that never verifies backs off to all fp32, which is not verified
 * and reports 100; a plan with nothing chosen is never verified. */
static void test_backoff_to_all_fp32(void **state)
{
    (void)state;
    mpd_tune_layer l[] = {row(0, 10, -1, 4, 0, 0.3), row(1, 10, 8, -1, 0.1, 0)};
    verifier v = {.l = l, .n = 2, .use_fixed = 1, .fixed = 90};
    int prec[2];
    int fp32[] = {FP32, FP32};
    mpd_tune_result r;
    assert_int_equal(mpd_tune_choose(l, 2, 1.0, verify_cb, &v, prec, &r), 0);
    assert_plan(prec, fp32, 2);
    assert_int_equal(v.calls, 3);
    /* The rebuild tries entry 0 first (score 6/0.3 = 20, equal to entry 1's
     * but a larger saving), then entry 1 alone. */
    int second[] = {INT8, FP32}, third[] = {FP32, FP16};
    assert_plan(v.seen[1], second, 2);
    assert_plan(v.seen[2], third, 2);
    assert_int_equal(r.verifications, 3);
    assert_int_equal(r.backoffs, 2);
    assert_int_equal(r.chosen, 0);
    assert_float_equal(r.verified_ap50, 100, 0);
    assert_float_equal(r.predicted_loss, 0, 0);
    assert_float_equal(r.chosen_ms, r.fp32_ms, 0);

    mpd_tune_layer slow[] = {row(0, 10, 11, 12, 0, 0)};
    v = (verifier){.l = slow, .n = 1};
    assert_int_equal(mpd_tune_choose(slow, 1, 1.0, verify_cb, &v, prec, &r), 0);
    assert_int_equal(prec[0], FP32);
    assert_int_equal(v.calls, 0);
    assert_int_equal(r.verifications, 0);
    assert_float_equal(r.verified_ap50, 100, 0);
}

/* A failing verification (negative or NaN) fails the tuning with MPD_EIO
 * and leaves the outputs untouched. */
static void test_verify_error_propagates(void **state)
{
    (void)state;
    mpd_tune_layer l[] = {row(0, 10, -1, 4, 0, 0.3), row(1, 10, 8, -1, 0.1, 0)};
    double bad[] = {-1, NAN};
    for (int k = 0; k < 2; k++) {
        verifier v = {.l = l, .n = 2, .use_fixed = 1, .fixed = bad[k]};
        int prec[2] = {77, 77};
        mpd_tune_result r = {.chosen = 77};
        assert_int_equal(mpd_tune_choose(l, 2, 1.0, verify_cb, &v, prec, &r), MPD_EIO);
        assert_int_equal(v.calls, 1);
        assert_int_equal(prec[0], 77);
        assert_int_equal(prec[1], 77);
        assert_int_equal(r.chosen, 77);
    }
}

static void test_invalid_arguments(void **state)
{
    (void)state;
    mpd_tune_layer l[] = {row(0, 10, 5, 4, 0, 0)};
    int prec[1] = {77};
    mpd_tune_result r;
    assert_int_equal(mpd_tune_choose(l, 1, -0.1, NULL, NULL, prec, &r), MPD_EINVAL);
    assert_int_equal(mpd_tune_choose(l, 1, NAN, NULL, NULL, prec, &r), MPD_EINVAL);
    assert_int_equal(mpd_tune_choose(l, 0, 1.0, NULL, NULL, prec, &r), MPD_EINVAL);
    assert_int_equal(mpd_tune_choose(l, -3, 1.0, NULL, NULL, prec, &r), MPD_EINVAL);
    assert_int_equal(mpd_tune_choose(NULL, 1, 1.0, NULL, NULL, prec, &r), MPD_EINVAL);
    assert_int_equal(mpd_tune_choose(l, 1, 1.0, NULL, NULL, NULL, &r), MPD_EINVAL);
    assert_int_equal(mpd_tune_choose(l, 1, 1.0, NULL, NULL, prec, NULL), MPD_EINVAL);
    assert_int_equal(prec[0], 77);

    int good[1] = {FP16}, bad[1] = {MPD_TUNE_NPREC};
    assert_int_equal(mpd_tune_report(NULL, l, 1, 1.0, 0, good), MPD_EINVAL);
    assert_int_equal(mpd_tune_report(stderr, NULL, 1, 1.0, 0, good), MPD_EINVAL);
    assert_int_equal(mpd_tune_report(stderr, l, 0, 1.0, 0, good), MPD_EINVAL);
    assert_int_equal(mpd_tune_report(stderr, l, 1, 1.0, 0, NULL), MPD_EINVAL);
    assert_int_equal(mpd_tune_report(stderr, l, 1, 1.0, 0, bad), MPD_EINVAL);
}

/* The report names every layer, the chosen precisions and why the others
 * stayed in fp32. */
/* The minimum gain, by hand. fp32 total = 10 + 10 + 10 + 10 = 40 ms, so
 * min_gain 20 asks for 8 ms per AP50 point. Entry 0 saves 9 ms for 0.5
 * points (18 ms/point: taken); entry 1 saves 0.5 ms for 0.1 points (5
 * ms/point: dropped, the layer-22 case); entry 2 saves 0.1 ms losslessly
 * (0.1 / 0.01 floor = 10 ms/point: taken); entry 3 saves 0.05 ms losslessly
 * (5 ms/point: dropped, nothing to gain). Without the minimum all four fit
 * the budget of 1 point. */
static void test_min_gain_drops_cheap_risks(void **state)
{
    (void)state;
    mpd_tune_layer l[] = {row(0, 10, -1, 1, NAN, .5), row(1, 10, -1, 9.5, NAN, .1),
                          row(2, 10, -1, 9.9, NAN, 0), row(3, 10, -1, 9.95, NAN, 0)};
    int prec[4];
    mpd_tune_result r;
    assert_int_equal(mpd_tune_choose_min(l, 4, 1, 0, NULL, NULL, prec, &r), 0);
    assert_plan(prec, (int[]){INT8, INT8, INT8, INT8}, 4);
    assert_int_equal(mpd_tune_choose_min(l, 4, 1, 20, NULL, NULL, prec, &r), 0);
    assert_plan(prec, (int[]){INT8, FP32, INT8, FP32}, 4);
    assert_int_equal(r.chosen, 2);
    assert_true(fabs(r.predicted_loss - .5) < 1e-12);
    /* Exactly at the rate counts as paying: 8 ms/point. */
    mpd_tune_layer e[] = {row(0, 10, -1, 2, NAN, 1), row(1, 30, -1, 30, NAN, 0)};
    assert_int_equal(mpd_tune_choose_min(e, 2, 1, 20, NULL, NULL, prec, &r), 0);
    assert_int_equal(prec[0], INT8);
    /* Negative or NaN minimum gains are refused; mpd_tune_choose is 0. */
    assert_int_equal(mpd_tune_choose_min(l, 4, 1, -1, NULL, NULL, prec, &r), MPD_EINVAL);
    assert_int_equal(mpd_tune_choose_min(l, 4, 1, NAN, NULL, NULL, prec, &r), MPD_EINVAL);
    assert_int_equal(mpd_tune_choose(l, 4, 1, NULL, NULL, prec, &r), 0);
    assert_int_equal(r.chosen, 4);
    /* The report says why entries 1 and 3 stayed fp32. */
    assert_int_equal(mpd_tune_choose_min(l, 4, 1, 20, NULL, NULL, prec, &r), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(mpd_tune_report(f, l, 4, 1, 20, prec), 0);
    fclose(f);
    const char *at = buf;
    int dropped = 0;
    while ((at = strstr(at, "gains less than 8.0 ms per point (--min-gain 20)"))) {
        dropped++;
        at++;
    }
    assert_int_equal(dropped, 2);
    assert_int_equal(mpd_tune_report(stderr, l, 4, 1, -1, prec), MPD_EINVAL);
    free(buf);
}

static void test_report(void **state)
{
    (void)state;
    mpd_tune_layer l[] = {
        row(13, 30, 20, 10, 0.1, 0.2), /* chosen int8 */
        row(15, 10, 12, 11, 0, 0),     /* nothing faster */
        row(22, 40, -1, 5, 0, 3),      /* over budget */
        row(27, 20, -1, 10, 0, 0.9),   /* fits alone, not with 13 */
        row(31, -1, 2, 1, 0, 0),       /* fp32 not measured */
    };
    int prec[5];
    mpd_tune_result r;
    assert_int_equal(mpd_tune_choose(l, 5, 1.0, NULL, NULL, prec, &r), 0);
    int want[] = {INT8, FP32, FP32, FP32, FP32};
    assert_plan(prec, want, 5);

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(mpd_tune_report(f, l, 5, 1.0, 0, prec), 0);
    assert_int_equal(fclose(f), 0);
    assert_non_null(buf);
    const char *layers[] = {"   13 ", "   15 ", "   22 ", "   27 ", "   31 "};
    for (int i = 0; i < 5; i++) {
        if (!strstr(buf, layers[i])) {
            fail_msg("layer '%s' missing from report:\n%s", layers[i], buf);
        }
    }
    assert_non_null(strstr(buf, "int8"));
    assert_non_null(strstr(buf, "saves 20.000 ms for 0.20 points"));
    assert_non_null(strstr(buf, "no faster precision"));
    assert_non_null(strstr(buf, "loses more than the budget"));
    assert_non_null(strstr(buf, "budget spent"));
    assert_non_null(strstr(buf, "fp32 time not measured"));
    /* Layer 13 is 30 of the 100 ms measured in fp32. */
    assert_non_null(strstr(buf, " 30.0%"));
    assert_non_null(strstr(buf, "total: fp32 100.000 ms, plan 80.000 ms (20.0% saved)"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prec_names),
        cmocka_unit_test(test_lossless_takes_fastest),
        cmocka_unit_test(test_bf16_is_a_candidate),
        cmocka_unit_test(test_zero_budget_only_lossless),
        cmocka_unit_test(test_own_loss_over_budget_never_chosen),
        cmocka_unit_test(test_greedy_by_score_skips_then_fits),
        cmocka_unit_test(test_ties_are_deterministic),
        cmocka_unit_test(test_rebuild_drops_the_breaking_layer),
        cmocka_unit_test(test_backoff_to_all_fp32),
        cmocka_unit_test(test_verify_error_propagates),
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test(test_report),
        cmocka_unit_test(test_min_gain_drops_cheap_risks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
