#!/usr/bin/env bash
# test_cli.sh - the mpdet command line end to end: detection with every
# preset and a custom plan in both schemes, plan show, plan errors, and
# calibration. Prints cmocka-style lines so tests/run counts them.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MPDET=$BUILD/mpdet
DOG=/usr/share/darknet/data/dog.jpg
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failed=0

source "$(dirname "$0")/lib.sh"

detects() { # plan file, then labels that must appear
    local plan=$1 out
    shift
    out=$("$MPDET" detect "$DOG" --plan "$plan") || return 1
    echo "$out"
    for label in "$@"; do
        grep -q "^  $label: " <<<"$out" || { echo "missing $label"; return 1; }
    done
}

for p in fp32_all fp16_all bf16_all int8_all fp32_int8 int8_fp32 int8_all_affine fp32_int8_affine \
         int8_fp32_affine int8_every int8_every_affine; do
    check "detect_with_preset_$p" detects "config/$p.plan" dog bicycle truck
done

cat >"$TMP/custom.plan" <<'PLAN'
# int8 on the first half, fp16 on two layers, the paper's affine scheme
[plan]
default = fp32
scheme = affine
[layers]
0 = int8
2 = int8
4 = int8
13 = fp16
21 = fp16
PLAN
check detect_with_custom_affine_plan detects "$TMP/custom.plan" dog bicycle
sed -e 's/affine/symmetric/' -e '/^\[plan\]/a calibration = '"$PWD"'/config/yolov3-tiny.calib' \
    "$TMP/custom.plan" >"$TMP/custom_sym.plan"
check detect_with_custom_symmetric_plan detects "$TMP/custom_sym.plan" dog bicycle

plan_show() {
    local out
    out=$("$MPDET" plan show --plan config/fp32_int8.plan) || return 1
    echo "$out"
    [ "$(grep -cE '^ +[0-9]+  (conv|max|route|upsample|yolo) ' <<<"$out")" = 24 ] || return 1
    grep -qE '^ +12  conv .* 1\.595  int8 +int8 ' <<<"$out" || return 1
    grep -qE '^ +13  conv .*  fp32 +fp32 (GEMM|oneDNN conv \(.*\))$' <<<"$out" || return 1
    out=$(MPDET_FP32_KERNEL=openblas "$MPDET" plan show --plan config/fp32_int8.plan) || return 1
    grep -qE '^ +13  conv .*  fp32 +fp32 GEMM$' <<<"$out" || return 1
    grep -q 'convolutions: 10 fp32, 0 fp16, 3 int8' <<<"$out"
}
check plan_show_lists_layers plan_show

# The kernel column: layer 0 (K = 27) runs int8 on the fp32 GEMM when told
# to (exact), on the int8 GEMM when told that; fp16 computes in half where
# the CPU has AVX512-FP16 (by default where it timed faster than oneDNN's
# fp32 convolution, which then says so) and says it is emulated elsewhere
# or when told.
plan_show_kernels() {
    local out
    out=$(MPDET_INT8_KERNEL=fp32 "$MPDET" plan show --plan config/int8_every.plan) || return 1
    echo "$out"
    grep -qE '^ +0  conv .*  int8 +int8 on the fp32 GEMM \(exact\)$' <<<"$out" || return 1
    grep -qE '^ +12  conv .*  int8 +int8 GEMM$' <<<"$out" || return 1
    out=$(MPDET_INT8_KERNEL=int8 "$MPDET" plan show --plan config/int8_every.plan) || return 1
    grep -qE '^ +0  conv .*  int8 +int8 GEMM$' <<<"$out" || return 1
    out=$("$MPDET" plan show --plan config/fp16_all.plan) || return 1
    if grep -qE '^flags\s*:.* avx512_fp16( |$)' /proc/cpuinfo; then
        grep -qE '^ +0  conv .*  fp16 +fp16 (in half arithmetic \(AVX512-FP16|emulated .*timed faster than half arithmetic)' <<<"$out" || return 1
        out=$(MPDET_FP16_KERNEL=half "$MPDET" plan show --plan config/fp16_all.plan) || return 1
        grep -qE '^ +0  conv .*  fp16 +fp16 in half arithmetic \(AVX512-FP16' <<<"$out" || return 1
    else
        grep -qE '^ +0  conv .*  fp16 +fp16 emulated' <<<"$out" || return 1
    fi
    out=$(MPDET_FP16_KERNEL=emulated "$MPDET" plan show --plan config/fp16_all.plan) || return 1
    grep -qE '^ +0  conv .*  fp16 +fp16 emulated' <<<"$out" || return 1
    # bf16: oneDNN where the CPU has bf16 instructions, else (and when
    # told) our emulation, which says so.
    out=$("$MPDET" plan show --plan config/bf16_all.plan) || return 1
    echo "$out"
    grep -q 'convolutions: 0 fp32, 0 fp16, 0 int8, 13 bf16' <<<"$out" || return 1
    if grep -qE '^flags\s*:.*(avx512_bf16|amx_bf16)' /proc/cpuinfo &&
        "$MPDET" plan show --plan config/int8_all.plan | grep -q 'oneDNN'; then
        grep -qE '^ +12  conv .*  bf16 +bf16 oneDNN conv \(.*bf16.*\)$' <<<"$out" || return 1
    else
        grep -qE '^ +12  conv .*  bf16 +bf16 emulated' <<<"$out" || return 1
    fi
    out=$(MPDET_BF16_KERNEL=emulated "$MPDET" plan show --plan config/bf16_all.plan) || return 1
    grep -qE '^ +12  conv .*  bf16 +bf16 emulated \(bf16-rounded values' <<<"$out" || return 1
    out=$(MPDET_BF16_KERNEL=emulated MPDET_FP32_KERNEL=openblas "$MPDET" plan show \
        --plan config/bf16_all.plan) || return 1
    grep -qE '^ +12  conv .*  bf16 +bf16 emulated \(bf16-rounded values, fp32 GEMM\)$' <<<"$out"
}
check plan_show_names_kernels plan_show_kernels

# Both int8 kernels give the same bits: the whole network's detections
# under every convolution in int8, both schemes, are identical (JSON with
# full-precision confidences and corners).
int8_kernels_agree() {
    local p
    for p in int8_every int8_every_affine; do
        MPDET_INT8_KERNEL=int8 "$MPDET" detect "$DOG" --plan "config/$p.plan" --json \
            >"$TMP/k_int8.json" || return 1
        MPDET_INT8_KERNEL=fp32 "$MPDET" detect "$DOG" --plan "config/$p.plan" --json \
            >"$TMP/k_fp32.json" || return 1
        grep -q '"label"' "$TMP/k_int8.json" || return 1
        # Everything but the timings.
        cmp <(grep -vE '"(decode|preprocess|inference|postprocess)"' "$TMP/k_int8.json") \
            <(grep -vE '"(decode|preprocess|inference|postprocess)"' "$TMP/k_fp32.json") ||
            return 1
    done
}
check int8_kernels_give_the_same_detections int8_kernels_agree

bad_plan() {
    printf '[plan]\ndefault = fp32\n[layers]\n7 = int8\n' >"$TMP/bad.plan"
    if "$MPDET" detect "$DOG" --plan "$TMP/bad.plan" >"$TMP/bad.out" 2>&1; then
        return 1
    fi
    cat "$TMP/bad.out"
    grep -q "$TMP/bad.plan:4: layer 7 is a max layer" "$TMP/bad.out"
}
check bad_plan_names_file_and_line bad_plan

calibrate() {
    printf '%s\n' /usr/share/doc/opencv-doc/examples/data/baboon.jpg \
        /usr/share/doc/opencv-doc/examples/data/fruits.jpg >"$TMP/list"
    "$MPDET" calibrate --images "$TMP/list" --method percentile -o "$TMP/c.calib" || return 1
    grep -q '^method = percentile' "$TMP/c.calib" || return 1
    [ "$(grep -cE '^[0-9]+ = [0-9.e+-]+$' "$TMP/c.calib")" = 24 ] || return 1
    printf '[plan]\ndefault = int8\ncalibration = %s\n' "$TMP/c.calib" >"$TMP/c.plan"
    "$MPDET" detect "$DOG" --plan "$TMP/c.plan"
}
check calibrate_writes_a_usable_file calibrate

# auto: one choice per convolution, each no worse than minmax and mse on
# the images it measured (it picks the least error among them), and the
# file works in a plan.
calibrate_auto() {
    printf '%s\n' /usr/share/doc/opencv-doc/examples/data/baboon.jpg \
        /usr/share/doc/opencv-doc/examples/data/fruits.jpg >"$TMP/list"
    "$MPDET" calibrate --images "$TMP/list" --method auto -o "$TMP/a.calib" || return 1
    cat "$TMP/a.calib"
    grep -q '^method = auto' "$TMP/a.calib" || return 1
    [ "$(grep -c '^#   conv ' "$TMP/a.calib")" = 13 ] || return 1
    awk '/^#   conv / { e = $(NF-4); m = $(NF-2); q = $NF; sub(/,/, "", e); sub(/,/, "", m);
                        sub(/\)/, "", q); if (e + 0 > m + 0 || e + 0 > q + 0) bad = 1 }
         END { exit bad }' "$TMP/a.calib" || return 1
    printf '[plan]\ndefault = int8\ncalibration = %s\n' "$TMP/a.calib" >"$TMP/a.plan"
    detects "$TMP/a.plan" dog bicycle
}
check calibrate_auto_chooses_per_convolution calibrate_auto

echo "[==========] cli tests done, $failed failed"
[ "$failed" -eq 0 ]
