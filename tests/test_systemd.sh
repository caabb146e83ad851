#!/usr/bin/env bash
# test_systemd.sh - the systemd units under a real systemd as PID 1: a
# container (systemd-nspawn, booting this machine's own /usr with a
# throw-away /etc) gets what scripts/install writes, and
# tests/systemd/inside.sh drives it with systemctl: sysusers, socket
# activation, detection, reload, the watchdog killing a hung daemon and
# restarting it, stop. Skips (and says why) without root or systemd-nspawn
# (Debian package systemd-container, optional in scripts/bootstrap).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
name=units_under_systemd_as_pid_1
skip() {
    echo "[ RUN      ] $name"
    echo "[  SKIPPED ] $name: $1"
    exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root (systemd-nspawn)"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn not installed (apt-get install systemd-container)"
[ -x /lib/systemd/systemd ] || skip "systemd not installed"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
STAGE=$TMP/stage
mkdir -p "$TMP/out"
if ! SYSTEMDSYSTEMUNITDIR=/etc/systemd/system SYSUSERSDIR=/etc/sysusers.d \
    TMPFILESDIR=/etc/tmpfiles.d BUILD=$BUILD \
    scripts/install --prefix /opt/mpdet --destdir "$STAGE" >"$TMP/install.log" 2>&1; then
    echo "[ RUN      ] $name"
    sed 's/^/    /' "$TMP/install.log"
    echo "[  FAILED  ] $name: scripts/install"
    exit 1
fi
cat >"$TMP/mpdet-systest.service" <<'UNIT'
[Unit]
Description=mpdet: the units under test
After=basic.target
[Service]
Type=oneshot
ExecStart=/bin/bash /systest/systemd/inside.sh
ExecStopPost=/bin/systemctl poweroff --no-block
TimeoutStartSec=400
UNIT
E=$STAGE/etc
# --volatile=yes: /usr is this machine's (read-only), / and /etc are a
# tmpfs. The first-boot wizard would wait for a key: masked. Debian's
# library symlinks (libopenblas.so.0) point into /etc/alternatives.
binds=(
    --bind-ro=/etc/alternatives
    --bind-ro=/etc/ld.so.cache
    --bind-ro="$STAGE/opt/mpdet:/opt/mpdet"
    --bind-ro="$E/mpdet:/etc/mpdet"
    --bind-ro="$E/systemd/system/mpdetd.service:/etc/systemd/system/mpdetd.service"
    --bind-ro="$E/systemd/system/mpdetd.socket:/etc/systemd/system/mpdetd.socket"
    --bind-ro="$E/sysusers.d/mpdetd.conf:/etc/sysusers.d/mpdetd.conf"
    --bind-ro="$E/tmpfiles.d/mpdetd.conf:/etc/tmpfiles.d/mpdetd.conf"
    --bind-ro="$TMP/mpdet-systest.service:/etc/systemd/system/mpdet-systest.service"
    --bind-ro=/dev/null:/etc/systemd/system/systemd-firstboot.service
    --bind-ro="$PWD/tests:/systest"
    --bind="$TMP/out:/out"
)
t0=$SECONDS
timeout 480 systemd-nspawn -q --register=no --keep-unit -D / --volatile=yes \
    --machine=mpdet-systest "${binds[@]}" -b -- --unit=mpdet-systest.service \
    >"$TMP/boot.log" 2>&1
rc=$?
if [ ! -s "$TMP/out/results" ]; then
    echo "[ RUN      ] $name"
    sed 's/\x1b\[[0-9;]*m//g; s/^/    /' "$TMP/boot.log" | tail -40
    echo "[  FAILED  ] $name: the container gave no results (systemd-nspawn exit $rc)"
    exit 1
fi
cat "$TMP/out/results"
cat "$TMP"/out/*.txt 2>/dev/null | sed 's/^/    /'
echo "    (container booted, tested and powered off in $((SECONDS - t0)) s)"
grep -q '^\[==========\] systemd tests done, 0 failed' "$TMP/out/results"
