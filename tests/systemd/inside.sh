#!/bin/bash
# tests/systemd/inside.sh - run by tests/test_systemd.sh inside a container
# booted with systemd as PID 1 (systemd-nspawn), as the unit
# mpdet-systest.service. The units and programs are those scripts/install
# wrote; this drives them with systemctl as an administrator would and
# writes cmocka-style lines to /out/results.
set -u
TMP=$(mktemp -d)
failed=0
exec >/out/results 2>&1
# shellcheck source=tests/lib.sh
source /systest/lib.sh
# A failed check shows the daemon's state (check prints a check's output).
journal() {
    systemctl status mpdetd.service --no-pager | head -8
    journalctl -u mpdetd.service --no-pager | tail -15
    return 1
}
SOCK=/run/mpdetd/mpdetd.sock
DOG=/usr/share/darknet/data/dog.jpg

get() { curl -sS --unix-socket "$SOCK" --max-time 60 "http://localhost$1"; }
code() { curl -s -o /dev/null -w '%{http_code}' --unix-socket "$SOCK" --max-time 60 "http://localhost$1"; }
until_true() { # seconds, command...: retries every 0.2 s
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.2
    done
}
healthy() { [ "$(code /v1/health)" = 200 ]; }
prop() { systemctl show -p "$1" --value mpdetd.service; }
generation() { get /v1/plan | sed -n 's/.*"generation": *\([0-9]*\).*/\1/p'; }

pid1() {
    [ "$(cat /proc/1/comm)" = systemd ] && systemctl --version | head -1
}
check systemd_is_pid_1 pid1

# systemd-sysusers and systemd-tmpfiles ran at boot from the installed files.
boot_files() {
    id mpdetd && id -nG mpdetd | grep -qw video
}
check sysusers_created_the_user boot_files

# Socket activation: the socket unit listens; the first request starts the
# daemon, which takes the socket from systemd and is ready (Type=notify).
activation() {
    systemctl start mpdetd.socket || return 1
    systemctl is-active mpdetd.socket || return 1
    [ "$(stat -c '%U:%G %a' "$SOCK")" = "mpdetd:mpdetd 660" ] || return 1
    ! systemctl -q is-active mpdetd.service || return 1
    until_true 120 healthy || journal || return 1
    systemctl is-active mpdetd.service || return 1
    [ "$(prop Type)" = notify ] || return 1
    journalctl -u mpdetd.service --no-pager | grep -i "socket" | head -3
    [ "$(ps -o user= -p "$(prop MainPID)")" = mpdetd ]
}
check socket_activation_starts_the_daemon activation

detect() {
    curl -sS --unix-socket "$SOCK" --max-time 60 --data-binary @"$DOG" \
        http://localhost/v1/detect >"$TMP/dog.json" || return 1
    grep -o '"label": *"[a-z]*"' "$TMP/dog.json" | sort -u
    grep -q '"dog"' "$TMP/dog.json" && grep -q '"bicycle"' "$TMP/dog.json"
}
check detect_through_the_activated_socket detect

# systemctl reload = --check-config, then SIGHUP: a new plan generation,
# the same process.
reload() {
    local g pid
    g=$(generation) pid=$(prop MainPID)
    [ -n "$g" ] || return 1
    systemctl reload mpdetd.service || return 1
    until_true 30 eval '[ "$(generation)" -gt "$g" ]' || journal || return 1
    echo "generation $g -> $(generation)" | tee /out/reload.txt
    [ "$(prop MainPID)" = "$pid" ] && systemctl -q is-active mpdetd.service
}
check reload_applies_a_new_generation reload

# The watchdog: a worker that hangs (injected) stops the watchdog pings, and
# systemd kills and restarts the daemon (WatchdogSec shortened for the test).
watchdog() {
    local pid
    mkdir -p /run/systemd/system/mpdetd.service.d
    printf '[Service]\nEnvironment=MPDETD_FAULT=stall:0\nWatchdogSec=4\n' \
        >/run/systemd/system/mpdetd.service.d/fault.conf
    systemctl daemon-reload && systemctl restart mpdetd.service || return 1
    until_true 60 healthy || return 1
    pid=$(prop MainPID)
    curl -s --unix-socket "$SOCK" --max-time 30 --data-binary @"$DOG" \
        http://localhost/v1/detect >/dev/null &
    until_true 40 eval '[ "$(prop NRestarts)" -ge 1 ]' || journal || return 1
    # What systemd and the daemon said, for the record (printed by the caller).
    journalctl -u mpdetd.service --no-pager | grep -iE "watchdog|stuck|hangs" | tail -4 |
        tee /out/watchdog.txt
    rm -r /run/systemd/system/mpdetd.service.d
    systemctl daemon-reload
    until_true 60 healthy || return 1
    [ "$(prop MainPID)" != "$pid" ]
}
check watchdog_kills_and_restarts_a_hung_daemon watchdog

# stop: SIGTERM drains and exits 0; the socket stays, and the next request
# starts the daemon again.
stop() {
    systemctl stop mpdetd.service 2>&1 || return 1
    ! systemctl -q is-active mpdetd.service || return 1
    [ "$(prop ExecMainStatus)" = 0 ] || return 1
    systemctl -q is-active mpdetd.socket || return 1
    until_true 120 healthy && systemctl -q is-active mpdetd.service
}
check stop_exits_0_and_the_socket_restarts_it stop

systemctl stop mpdetd.service mpdetd.socket
echo "[==========] systemd tests done, $failed failed"
