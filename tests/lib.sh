# tests/lib.sh - shared by the shell test scripts: cmocka-style result
# lines, so tests/run counts them. Needs $TMP; counts failures in $failed.
failed=${failed:-0}

check() { # name, then a command that must succeed
    local name=$1
    shift
    echo "[ RUN      ] $name"
    if "$@" >"$TMP/out" 2>&1; then
        echo "[       OK ] $name"
    else
        sed 's/^/    /' "$TMP/out" | tail -30
        echo "[  FAILED  ] $name"
        failed=$((failed + 1))
    fi
}
