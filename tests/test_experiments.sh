#!/usr/bin/env bash
# test_experiments.sh - the paper's experiments end to end on a few images
# of the evaluation corpus (scripts/make-data): the corpus itself, mpdet
# eval, overflow, bench and tune, their CSV/JSON/chart outputs. The metric
# and tuner logic have their own unit tests (test_accuracy, test_tune);
# here the whole path from images to tables must hold together. Prints
# cmocka-style lines so tests/run counts them.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MPDET=$BUILD/mpdet
DATA=$BUILD/data
PY=/usr/bin/python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failed=0

source "$(dirname "$0")/lib.sh"

# The corpus: at least 500 evaluation and 200 calibration images, listed in
# a manifest whose hashes match, and no source image or video frame in both.
corpus() {
    scripts/make-data "$DATA" || return 1
    "$PY" - "$DATA" <<'PY'
import csv, hashlib, os, sys
d = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(d, "manifest.tsv")), delimiter="\t"))
sets = {"calib": set(), "eval": set()}
for r in rows:
    with open(r["path"], "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == r["sha256"], r["path"]
    sets[r["set"]].add(r["source"])
n = {s: sum(1 for r in rows if r["set"] == s) for s in sets}
print(n, "sources", {s: len(v) for s, v in sets.items()})
assert n["eval"] >= 500 and n["calib"] >= 200, n
assert not (sets["calib"] & sets["eval"]), sets["calib"] & sets["eval"]
for s, lst in (("calib", "calib.txt"), ("eval", "eval.txt")):
    listed = [l.strip() for l in open(os.path.join(d, lst)) if l.strip()]
    assert sorted(listed) == sorted(r["path"] for r in rows if r["set"] == s), lst
PY
}
check data_corpus_is_complete_and_disjoint corpus

head -n 12 "$DATA/eval.txt" >"$TMP/eval12"
head -n 3 "$DATA/eval.txt" >"$TMP/eval3"

is_png() { [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; }

# The reference against itself is 100 on every measure; int8 is scored and
# lands in a sane range; the outputs agree with the table.
eval_small() {
    "$MPDET" eval --plan config/fp32_all.plan --plan config/int8_all.plan \
        --plan config/fp16_all.plan --plan config/bf16_all.plan --images "$TMP/eval12" \
        --csv "$TMP/e.csv" \
        --json "$TMP/e.json" --chart "$TMP/e.png" >"$TMP/e.txt" || return 1
    cat "$TMP/e.txt"
    grep -qE '^fp32_all +100\.00 +100\.00 +100\.00 +100\.00 +1\.000 +0/12$' "$TMP/e.txt" || return 1
    is_png "$TMP/e.png" || return 1
    "$PY" - "$TMP/e.csv" "$TMP/e.json" <<'PY'
import csv, json, sys
rows = {r["plan"]: r for r in csv.DictReader(open(sys.argv[1]))}
j = json.load(open(sys.argv[2]))
assert j["images"] == 12 and j["ref_boxes"] > 0, j
assert [p["plan"] for p in j["plans"]] == ["fp32_all", "int8_all", "fp16_all", "bf16_all"]
for p in j["plans"]:
    r = rows[p["plan"]]
    assert abs(float(r["ap50"]) - p["ap50"]) < 1e-3, (r, p)
    assert 0 <= p["ap50"] <= 100 and 0 <= p["ap75"] <= 100, p
assert j["plans"][1]["ap50"] > 50, j["plans"][1]
assert j["plans"][2]["ap50"] > 95, j["plans"][2]
assert j["plans"][3]["ap50"] > 90, j["plans"][3]
PY
}
check eval_scores_plans_against_fp32 eval_small

eval_errors() {
    ! "$MPDET" eval --images "$TMP/eval3" 2>"$TMP/err1" || return 1
    grep -q "at least one --plan" "$TMP/err1" || return 1
    ! "$MPDET" eval --plan config/int8_all.plan --images "$TMP/nothere" 2>"$TMP/err2" || return 1
    grep -q "nothere" "$TMP/err2"
}
check eval_refuses_bad_arguments eval_errors

# Regression: --images given one photo read the JPEG as a list of paths
# ("mpdet: \xff\xd8...: cannot open"). One image, by name or by content.
images_one_file() {
    "$MPDET" eval --plan config/int8_all.plan --images /usr/share/darknet/data/dog.jpg \
        >"$TMP/one.txt" || return 1
    grep -q '^# accuracy relative to fp32 on 1 images' "$TMP/one.txt" || return 1
    cp /usr/share/darknet/data/dog.jpg "$TMP/camera-frame"
    "$MPDET" bench --plan config/int8_all.plan --images "$TMP/camera-frame" --runs 1 \
        --warmup 0 >"$TMP/one-b.txt" || return 1
    grep -q 'first 1 images' "$TMP/one-b.txt"
}
check images_takes_one_image_file images_one_file

# Tables 1 and 2 for all 13 convolutions: shares are percentages with
# min <= avg <= max, the largest window sums fit int32, and some products
# and sums do overflow the narrow types (the paper's point).
overflow_small() {
    "$MPDET" overflow --images "$TMP/eval3" --calibration config/yolov3-tiny.calib \
        --csv "$TMP/o.csv" --json "$TMP/o.json" --chart "$TMP/o.png" >"$TMP/o.txt" || return 1
    cat "$TMP/o.txt"
    grep -q '^Table 1' "$TMP/o.txt" && grep -q '^Table 2' "$TMP/o.txt" || return 1
    is_png "$TMP/o.png" && is_png "$TMP/o_sums.png" || return 1
    "$PY" - "$TMP/o.csv" "$TMP/o.json" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 13 * 3, len(rows)
assert [int(r["layer"]) for r in rows[::3]] == [0, 2, 4, 6, 8, 10, 12, 13, 14, 15, 18, 21, 22]
for r in rows:
    for k in ("prod_avg", "prod_max", "prod_min", "sum_avg", "sum_max", "sum_min"):
        assert 0 <= float(r[k]) <= 100, r
    assert float(r["prod_min"]) <= float(r["prod_avg"]) <= float(r["prod_max"]) + 1e-9, r
    assert 0 < int(r["max_abs_sum"]) < 2**31, r
assert any(float(r["prod_avg"]) > 0 for r in rows)
assert any(float(r["sum_avg"]) > 0 for r in rows)
j = json.load(open(sys.argv[2]))
assert j["images"] == 3 and len(j["layers"]) == 13
PY
}
check overflow_tables_for_every_convolution overflow_small

bench_small() {
    "$MPDET" bench --plan config/fp32_all.plan --plan config/int8_all.plan --images "$TMP/eval3" \
        --runs 2 --warmup 1 --csv "$TMP/b.csv" --chart "$TMP/b.png" >"$TMP/b.txt" || return 1
    cat "$TMP/b.txt"
    grep -q '^# machine: .*cores' "$TMP/b.txt" || return 1
    [ "$(grep -cE '^ +[0-9]+ (conv|max|route|upsample|yolo) ' "$TMP/b.txt")" = 24 ] || return 1
    grep -qE '^forward ms +[0-9.]+ +[0-9.]+$' "$TMP/b.txt" || return 1
    for f in b.png b_stacked.png b_total.png; do is_png "$TMP/$f" || return 1; done
    [ "$(grep -c '^fp32_all,' "$TMP/b.csv")" = 26 ]
}
check bench_times_every_layer_per_plan bench_small

# tune on a handful of images: the plan it writes loads, records what was
# measured, and holds its budget on the images it was verified on.
tune_small() {
    "$MPDET" tune --budget 1 --images "$TMP/eval3" --sens-images 3 --runs 2 --warmup 0 \
        -o "$TMP/t.plan" --report >"$TMP/t.txt" || return 1
    cat "$TMP/t.txt" "$TMP/t.plan"
    grep -q '^# Verified: AP50 ' "$TMP/t.plan" || return 1
    "$MPDET" plan show --plan "$TMP/t.plan" >"$TMP/show" || return 1
    ap=$(sed -n 's/^# Verified: AP50 \([0-9.]*\) .*/\1/p' "$TMP/t.plan")
    awk -v a="$ap" 'BEGIN { exit !(a >= 99) }' || return 1
    "$MPDET" eval --plan "$TMP/t.plan" --images "$TMP/eval3" >"$TMP/te.txt" || return 1
    grep -qE "^t +$ap" "$TMP/te.txt" || { cat "$TMP/te.txt"; return 1; }
}
check tune_writes_a_plan_that_holds_its_budget tune_small

echo "[==========] experiment tests done, $failed failed"
[ "$failed" -eq 0 ]
