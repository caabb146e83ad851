#!/usr/bin/env bash
# tests/mutants.sh - the mutation check of issue 11: introduces five
# deliberate bugs, one at a time, into a scratch copy of the working tree,
# builds it and runs the tests that should notice, and reports which test
# caught each bug. A bug no listed test catches is a gap in the suite: the
# script then exits 1.
#
#   tests/mutants.sh [mutant...]        (all five by default)
#
# Mutants (sed edits, checked to have changed the file):
#   im2row   off by one in the CPU int8 im2row (patches start a pixel right)
#   dp4a     the GPU's int8 im2col packs its four bytes in reverse order
#            (the words __dp4a and the plain kernel read)
#   zero     the affine zero point with the wrong sign (host/quant.h)
#   wscale   the CPU int8 weight scale kept for the epilogue off by 2x
#   leaky    leaky slope 0.2 instead of 0.1 in the CPU int8 epilogues
#
# Each mutant runs its tests in order and stops at the first that fails;
# the CUDA ones run on the emulated device (test_backend_parity_emu,
# filtered with PARITY_ONLY). Environment: MUTANTS_DIR (scratch, default a
# new temporary directory, removed at the end unless MUTANTS_KEEP=1),
# MPDET_MODEL_DIR (default: this tree's models/, fetched by
# scripts/bootstrap). Takes about 10 minutes on 2 cores.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
ALL=(im2row dp4a zero wscale leaky)
WANT=("$@")
[ ${#WANT[@]} -gt 0 ] || WANT=("${ALL[@]}")
export MPDET_MODEL_DIR=${MPDET_MODEL_DIR:-$ROOT/models}
[ -f "$MPDET_MODEL_DIR/yolov3-tiny.weights" ] || scripts/bootstrap >/dev/null ||
    { echo "mutants: no model in $MPDET_MODEL_DIR" >&2; exit 1; }

SCRATCH=${MUTANTS_DIR:-$(mktemp -d)}
mkdir -p "$SCRATCH/src"
cleanup() { [ "${MUTANTS_KEEP:-0}" = 1 ] || [ -n "${MUTANTS_DIR:-}" ] || rm -rf "$SCRATCH"; }
trap cleanup EXIT
# The working tree as it is (tracked and new files, not ignored ones).
git ls-files -co --exclude-standard -z | (cd "$ROOT" && xargs -0 cp --parents -t "$SCRATCH/src")
cd "$SCRATCH/src" || exit 1
B=build-mut
JOBS=$(nproc 2>/dev/null || echo 2)

# $1 file, $2... sed expressions: applies them, fails when nothing changed.
mutate() {
    local f=$1 args=()
    shift
    for x in "$@"; do args+=(-e "$x"); done
    cp "$f" "$f.orig"
    sed -i "${args[@]}" "$f"
    if cmp -s "$f" "$f.orig"; then
        echo "mutants: the edit of $f changed nothing (the code moved?)" >&2
        mv "$f.orig" "$f"
        return 1
    fi
}
# Back as it was, with a new time stamp: what was built from the mutant
# is rebuilt.
restore() { mv "$1.orig" "$1" && touch "$1"; }

# $@: tests, each "program" or "program:PARITY_ONLY-filter". Prints the
# first that fails, or nothing.
first_failing() {
    for t in "$@"; do
        prog=${t%%:*} filter=
        [[ $t == *:* ]] && filter=${t#*:}
        if ! make -s -j"$JOBS" BUILD=$B "$B/tests/$prog" >"$SCRATCH/build.log" 2>&1; then
            echo "$prog (did not build: $(tail -1 "$SCRATCH/build.log"))"
            return
        fi
        if ! PARITY_ONLY=$filter timeout 900 "$B/tests/$prog" >"$SCRATCH/$prog.log" 2>&1; then
            what=$(grep -m1 -E '^\[  (FAILED|ERROR) +\]' "$SCRATCH/$prog.log" | head -1)
            echo "$prog${filter:+ ($filter)}: ${what:-exit status $?}"
            return
        fi
    done
}

caught=0 survived=()
for m in "${WANT[@]}"; do
    case $m in
    im2row)
        f=host/cpu/conv_i8.c
        e=('s/int y0 = oy \* stride - pad, x0 = ox \* stride - pad;/int y0 = oy * stride - pad, x0 = ox * stride - pad + 1;/')
        tests=(test_gemm_i8 test_layers test_mixed "test_backend_parity_emu:test_int8_layers_exact_on_photos")
        ;;
    dp4a)
        f=cuda/im2col.cu
        e=('s/packed |= (uint32_t)(uint8_t)v << (8 \* j);/packed |= (uint32_t)(uint8_t)v << (8 * (3 - j));/')
        tests=("test_backend_parity_emu:test_int8_layers_exact_on_photos")
        ;;
    zero)
        f=host/quant.h
        e=('s/p.zero = mpd_q_clamp(mpd_q_round((float)MPD_QMIN - min \/ p.scale));/p.zero = -mpd_q_clamp(mpd_q_round((float)MPD_QMIN - min \/ p.scale));/')
        tests=(test_quant test_mixed)
        ;;
    wscale)
        f=host/cpu/conv_i8.c
        e=('s/q->w_scale\[o\] = p.scale;/q->w_scale[o] = 2 * p.scale;/')
        tests=(test_quant test_gemm_i8 test_layers test_mixed)
        ;;
    leaky)
        f=host/cpu/conv_i8.c
        e=('s/mpd_q_leaky(mpd_q_epilogue(/MUT_LEAKY(mpd_q_epilogue(/g'
            '1i #define MUT_LEAKY(v) ((v) > 0 ? (v) : .2f * (v))')
        tests=(test_layers test_mixed "test_backend_parity_emu:test_int8_layers_exact_on_photos")
        ;;
    *)
        echo "mutants: unknown mutant '$m' (mutants: ${ALL[*]})" >&2
        exit 2
        ;;
    esac
    mutate "$f" "${e[@]}" || { survived+=("$m (not applied)"); continue; }
    t0=$(date +%s)
    by=$(first_failing "${tests[@]}")
    restore "$f"
    if [ -n "$by" ]; then
        echo "mutant $m ($f): caught by $by [$(($(date +%s) - t0)) s]"
        caught=$((caught + 1))
    else
        echo "mutant $m ($f): SURVIVED ${tests[*]} [$(($(date +%s) - t0)) s]"
        survived+=("$m")
    fi
done
echo "mutants: ${#WANT[@]} introduced, $caught caught${survived:+, survived: ${survived[*]}}"
[ ${#survived[@]} -eq 0 ]
