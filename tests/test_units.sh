#!/usr/bin/env bash
# test_units.sh - the systemd integration and scripts/install: an install into
# a temporary DESTDIR puts every file in place, a second one changes nothing
# and keeps a modified config; the installed units pass systemd-analyze
# verify; the sysusers.d and tmpfiles.d snippets do what they say; the
# service keeps the GPU device nodes reachable. Prints cmocka-style lines so
# tests/run counts them.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
MODEL_DIR=${MPDET_MODEL_DIR:-models}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
ROOT=$TMP/root # the DESTDIR of the install tests
failed=0

source "$(dirname "$0")/lib.sh"

skip() { # name, reason
    echo "[ RUN      ] $1"
    echo "skipped: $2"
    echo "[  SKIPPED ] $1"
}

# Why the install tests cannot run here, or nothing when they can.
install_blocker() {
    if [ ! -x "$BUILD/mpdetd" ]; then
        echo "$BUILD/mpdetd not built yet"
    elif [ ! -x "$BUILD/mpdet" ]; then
        echo "$BUILD/mpdet not built yet"
    elif [ ! -f config/mpdetd.conf ]; then
        echo "config/mpdetd.conf not written yet"
    elif [ ! -s "$MODEL_DIR/yolov3-tiny.weights" ]; then
        echo "no model in $MODEL_DIR (run scripts/bootstrap)"
    fi
}

# path:mode of every file under a tree, with its checksum: equal listings mean
# nothing was written differently.
snapshot() {
    (cd "$1" && find . -type f -printf '%p %m\n' | sort | while read -r f m; do
        echo "$f $m $(sha256sum <"$f" | cut -c1-16)"
    done)
}

UNITDIR=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null) || UNITDIR=
UNITDIR=${UNITDIR:-/lib/systemd/system}
SYSUSERSDIR=$(pkg-config --variable=sysusersdir systemd 2>/dev/null) || SYSUSERSDIR=
SYSUSERSDIR=${SYSUSERSDIR:-/usr/lib/sysusers.d}
TMPFILESDIR=$(pkg-config --variable=tmpfilesdir systemd 2>/dev/null) || TMPFILESDIR=
TMPFILESDIR=${TMPFILESDIR:-/usr/lib/tmpfiles.d}
PLANS=$(cd config && ls -- *.plan *.calib 2>/dev/null)

# --- scripts/install ---------------------------------------------------------

install_into_destdir() {
    scripts/install --destdir "$ROOT" --prefix /usr || return 1
    local f missing=0
    for f in /usr/sbin/mpdetd /usr/bin/mpdet /etc/mpdet/mpdetd.conf \
             "$UNITDIR/mpdetd.service" "$UNITDIR/mpdetd.socket" \
             "$SYSUSERSDIR/mpdetd.conf" "$TMPFILESDIR/mpdetd.conf" \
             /usr/share/mpdet/models/yolov3-tiny.cfg /usr/share/mpdet/models/coco.names \
             /usr/share/mpdet/models/yolov3-tiny.weights; do
        [ -s "$ROOT$f" ] || { echo "not installed: $f"; missing=1; }
    done
    for f in $PLANS; do
        cmp "config/$f" "$ROOT/usr/share/mpdet/plans/$f" || missing=1
    done
    [ "$missing" = 0 ] || return 1
    [ "$(stat -c %a "$ROOT/usr/sbin/mpdetd")" = 755 ] || { echo "mpdetd is not 0755"; return 1; }
    cmp "$BUILD/mpdetd" "$ROOT/usr/sbin/mpdetd" || return 1
    cmp "$MODEL_DIR/yolov3-tiny.weights" "$ROOT/usr/share/mpdet/models/yolov3-tiny.weights" || return 1
    # Prefix /usr: the config is installed as shipped.
    cmp config/mpdetd.conf "$ROOT/etc/mpdet/mpdetd.conf" || return 1
    # The units name the installed daemon and config, with no placeholder left.
    if grep -n '@[A-Z_]*@' "$ROOT$UNITDIR"/mpdetd.*; then return 1; fi
    grep -qx 'ExecStart=/usr/sbin/mpdetd -c /etc/mpdet/mpdetd.conf' \
        "$ROOT$UNITDIR/mpdetd.service" || { echo "unexpected ExecStart="; return 1; }
}

install_is_idempotent_and_keeps_config() {
    local out
    snapshot "$ROOT" >"$TMP/before"
    out=$(scripts/install --destdir "$ROOT" --prefix /usr) || return 1
    echo "$out"
    if grep -E '^  (installed|kept) ' <<<"$out"; then
        echo "a second install wrote files"
        return 1
    fi
    snapshot "$ROOT" >"$TMP/after"
    diff "$TMP/before" "$TMP/after" || return 1

    # The administrator's config survives; the shipped one lands beside it.
    echo "threads = 1 # mine" >>"$ROOT/etc/mpdet/mpdetd.conf"
    cp "$ROOT/etc/mpdet/mpdetd.conf" "$TMP/mine"
    scripts/install --destdir "$ROOT" --prefix /usr || return 1
    cmp "$TMP/mine" "$ROOT/etc/mpdet/mpdetd.conf" || { echo "config overwritten"; return 1; }
    cmp config/mpdetd.conf "$ROOT/etc/mpdet/mpdetd.conf.dist" || return 1
    out=$(scripts/install --destdir "$ROOT" --prefix /usr) || return 1
    echo "$out"
    if grep -E '^  installed ' <<<"$out"; then
        echo "a repeated install (with a kept config) wrote files"
        return 1
    fi
    cmp "$TMP/mine" "$ROOT/etc/mpdet/mpdetd.conf"
}

install_under_another_prefix() {
    local r=$TMP/opt
    PREFIX=/opt/mpdet DESTDIR=$r scripts/install || return 1
    [ -x "$r/opt/mpdet/sbin/mpdetd" ] && [ -x "$r/opt/mpdet/bin/mpdet" ] || return 1
    [ -s "$r/opt/mpdet/share/mpdet/models/yolov3-tiny.weights" ] || return 1
    grep -qx 'ExecStart=/opt/mpdet/sbin/mpdetd -c /etc/mpdet/mpdetd.conf' \
        "$r$UNITDIR/mpdetd.service" || { echo "ExecStart= not substituted"; return 1; }
    grep -qx 'ExecReload=/opt/mpdet/sbin/mpdetd --check-config -c /etc/mpdet/mpdetd.conf' \
        "$r$UNITDIR/mpdetd.service" || { echo "ExecReload= not substituted"; return 1; }
    # Data paths in the config follow the prefix.
    if grep -n '/usr/share/mpdet/' "$r/etc/mpdet/mpdetd.conf"; then
        echo "the config still names /usr/share/mpdet"
        return 1
    fi
}

# A real (not staged) install under a temporary prefix, without activation:
# the installed daemon must accept the installed config, which means it finds
# the model where the install put it.
install_config_passes_check_config() {
    local p=$TMP/prefix
    SYSTEMDSYSTEMUNITDIR=$p/units SYSUSERSDIR=$p/sysusers.d TMPFILESDIR=$p/tmpfiles.d \
        scripts/install --no-activate --prefix "$p" --sysconfdir "$p/etc" || return 1
    grep -E "^(cfg|weights|names) = " "$p/etc/mpdet/mpdetd.conf"
    "$p/sbin/mpdetd" --check-config -c "$p/etc/mpdet/mpdetd.conf"
}

install_refuses_what_is_missing() {
    local out
    if out=$(BUILD=$TMP/nobuild scripts/install --destdir "$TMP/x" 2>&1); then
        echo "installed without a build"
        return 1
    fi
    echo "$out"
    grep -q 'run make first' <<<"$out" || return 1
    if out=$(MPDET_MODEL_DIR=$TMP/nomodel scripts/install --destdir "$TMP/x" 2>&1); then
        echo "installed without a model"
        return 1
    fi
    echo "$out"
    grep -q 'run scripts/bootstrap' <<<"$out" || return 1
    mkdir -p "$TMP/badmodel"
    cp "$MODEL_DIR"/yolov3-tiny.cfg "$MODEL_DIR"/coco.names "$TMP/badmodel/"
    head -c 35434956 /dev/zero >"$TMP/badmodel/yolov3-tiny.weights"
    if out=$(MPDET_MODEL_DIR=$TMP/badmodel scripts/install --destdir "$TMP/x" 2>&1); then
        echo "installed wrong weights"
        return 1
    fi
    echo "$out"
    grep -q 'not the official' <<<"$out" || return 1
    # Nothing was written by the refused installs.
    [ ! -e "$TMP/x" ]
}

# --- systemd-analyze verify -------------------------------------------------

# A root holding the installed units and daemon (from the DESTDIR install)
# plus the standard targets they hook into, which verify must be able to load.
VROOT=$TMP/vroot
make_verify_root() {
    mkdir -p "$VROOT$UNITDIR" "$VROOT/usr/sbin"
    cp "$ROOT$UNITDIR"/mpdetd.service "$ROOT$UNITDIR"/mpdetd.socket "$VROOT$UNITDIR/"
    cp -p "$ROOT/usr/sbin/mpdetd" "$VROOT/usr/sbin/"
    local t d
    for t in sysinit.target basic.target sockets.target multi-user.target shutdown.target; do
        for d in "$UNITDIR" /lib/systemd/system /usr/lib/systemd/system; do
            [ -f "$d/$t" ] && { cp "$d/$t" "$VROOT$UNITDIR/"; break; }
        done
    done
}

verify() { # unit files (paths inside VROOT); any message is a failure
    local out rc
    out=$(systemd-analyze verify --root="$VROOT" "$@" 2>&1)
    rc=$?
    echo "$out"
    [ "$rc" -eq 0 ] && [ -z "$out" ]
}

units_pass_systemd_analyze_verify() {
    make_verify_root || return 1
    verify "$UNITDIR/mpdetd.service" "$UNITDIR/mpdetd.socket" || return 1
    # The check itself works: a broken key and a missing daemon are reported.
    sed -e 's/^Type=notify$/Type=notifyish/' "$VROOT$UNITDIR/mpdetd.service" \
        >"$VROOT$UNITDIR/mpdetd-broken.service"
    if verify "$UNITDIR/mpdetd-broken.service" >/dev/null; then
        echo "verify did not report Type=notifyish"
        return 1
    fi
    rm "$VROOT$UNITDIR/mpdetd-broken.service"
    mv "$VROOT/usr/sbin/mpdetd" "$VROOT/usr/sbin/mpdetd.away"
    if verify "$UNITDIR/mpdetd.service" >/dev/null; then
        echo "verify did not report a missing ExecStart= binary"
        return 1
    fi
    mv "$VROOT/usr/sbin/mpdetd.away" "$VROOT/usr/sbin/mpdetd"
}

# --- What the units promise (read from the sources, no build needed) -------

unit_settings() {
    local svc=systemd/mpdetd.service sock=systemd/mpdetd.socket k
    for k in 'Type=notify' 'User=mpdetd' 'Group=mpdetd' 'SupplementaryGroups=video' \
             'WatchdogSec=30' 'Restart=on-failure' 'RuntimeDirectory=mpdetd' \
             'RuntimeDirectoryPreserve=yes' 'DevicePolicy=closed' \
             'DeviceAllow=char-nvidia-frontend rw' 'DeviceAllow=char-nvidia rw' \
             'DeviceAllow=char-nvidia-uvm rw' 'DeviceAllow=/dev/nvmap rw' \
             'ProtectSystem=strict' 'NoNewPrivileges=yes' 'CapabilityBoundingSet=' \
             'ExecStart=@SBINDIR@/mpdetd -c @SYSCONFDIR@/mpdet/mpdetd.conf'; do
        grep -qxF "$k" "$svc" || { echo "$svc lacks: $k"; return 1; }
    done
    # PrivateDevices= would hide /dev/nvidia*; MemoryDenyWriteExecute= breaks
    # the CUDA and oneDNN JITs.
    if grep -nE '^(PrivateDevices|MemoryDenyWriteExecute)=(yes|true|1|on)' "$svc"; then
        return 1
    fi
    # Reload validates first, then signals.
    grep '^ExecReload=' "$svc" >"$TMP/reload"
    # shellcheck disable=SC2016 # $MAINPID is systemd's, not ours
    printf '%s\n' 'ExecReload=@SBINDIR@/mpdetd --check-config -c @SYSCONFDIR@/mpdet/mpdetd.conf' \
        'ExecReload=/bin/kill -HUP $MAINPID' | diff - "$TMP/reload" || return 1
    for k in 'ListenStream=/run/mpdetd/mpdetd.sock' 'SocketUser=mpdetd' 'SocketGroup=mpdetd' \
             'SocketMode=0660' 'Service=mpdetd.service' 'WantedBy=sockets.target'; do
        grep -qxF "$k" "$sock" || { echo "$sock lacks: $k"; return 1; }
    done
    grep -qx 'd /run/mpdetd 0755 mpdetd mpdetd -' systemd/mpdetd.tmpfiles || return 1
    # The daemon's own socket path (used when it is not socket-activated) is
    # the socket unit's.
    if [ -f config/mpdetd.conf ]; then
        local p
        while read -r p; do
            [ "$p" = /run/mpdetd/mpdetd.sock ] ||
                { echo "config/mpdetd.conf names $p, the socket unit /run/mpdetd/mpdetd.sock"; return 1; }
        done < <(grep -oE '/run/[^[:space:]"#]*' config/mpdetd.conf)
    fi
}

# --- sysusers.d / tmpfiles.d --------------------------------------------------

SROOT=$TMP/sroot
# Messages that point at a snippet ("file:line: ...") are parse errors.
no_snippet_messages() { ! grep -F "$1:" "$2"; }

sysusers_creates_user() {
    local f=$PWD/systemd/mpdetd.sysusers
    mkdir -p "$SROOT/etc"
    systemd-sysusers --root="$SROOT" --dry-run "$f" >"$TMP/su" 2>&1 || { cat "$TMP/su"; return 1; }
    cat "$TMP/su"
    no_snippet_messages "$f" "$TMP/su" || return 1
    systemd-sysusers --root="$SROOT" "$f" >"$TMP/su" 2>&1 || { cat "$TMP/su"; return 1; }
    no_snippet_messages "$f" "$TMP/su" || return 1
    cat "$SROOT/etc/passwd" "$SROOT/etc/group"
    grep -qE '^mpdetd:x:[0-9]+:[0-9]+:mpdet detection daemon:/:/(usr/)?s?bin/(nologin|false)$' \
        "$SROOT/etc/passwd" || { echo "no system user mpdetd without a shell"; return 1; }
    grep -qE '^mpdetd:x:[0-9]+:' "$SROOT/etc/group" || return 1
    grep -qE '^video:x:[0-9]+:(.*,)?mpdetd(,.*)?$' "$SROOT/etc/group" ||
        { echo "mpdetd is not in group video"; return 1; }
}

tmpfiles_creates_run_dir() {
    local f=$PWD/systemd/mpdetd.tmpfiles rc=0
    # systemd 252's tmpfiles has no --dry-run: create for real in a root whose
    # /etc/passwd has mpdetd (made by the sysusers test, or here).
    if ! grep -q '^mpdetd:' "$SROOT/etc/passwd" 2>/dev/null; then
        mkdir -p "$SROOT/etc"
        systemd-sysusers --root="$SROOT" "$PWD/systemd/mpdetd.sysusers" || return 1
    fi
    systemd-tmpfiles --root="$SROOT" --create "$f" >"$TMP/tf" 2>&1 || rc=$?
    cat "$TMP/tf"
    no_snippet_messages "$f" "$TMP/tf" || return 1
    if [ "$rc" -ne 0 ]; then
        # Without root only the chown to mpdetd may fail.
        [ "$(id -u)" -ne 0 ] && ! grep -v 'fchownat().*Operation not permitted' "$TMP/tf" ||
            return 1
    fi
    [ -d "$SROOT/run/mpdetd" ] || { echo "no /run/mpdetd"; return 1; }
    [ "$(stat -c %a "$SROOT/run/mpdetd")" = 755 ] || { echo "/run/mpdetd is not 0755"; return 1; }
    if [ "$(id -u)" -eq 0 ]; then
        local uid
        uid=$(awk -F: '$1 == "mpdetd" {print $3}' "$SROOT/etc/passwd")
        [ "$(stat -c %u "$SROOT/run/mpdetd")" = "$uid" ] || { echo "/run/mpdetd not owned by mpdetd"; return 1; }
    fi
}

# --- Run ----------------------------------------------------------------------

check unit_settings unit_settings

blocker=$(install_blocker)
for t in install_into_destdir install_is_idempotent_and_keeps_config \
         install_under_another_prefix install_config_passes_check_config \
         install_refuses_what_is_missing; do
    if [ -n "$blocker" ]; then
        skip "$t" "$blocker"
    elif [ "$t" != install_into_destdir ] && [ ! -f "$ROOT/usr/sbin/mpdetd" ]; then
        skip "$t" "install_into_destdir failed"
    else
        check "$t" "$t"
    fi
done

if ! command -v systemd-analyze >/dev/null; then
    skip units_pass_systemd_analyze_verify "systemd-analyze not installed (Debian package systemd)"
elif [ -n "$blocker" ]; then
    skip units_pass_systemd_analyze_verify "needs the installed tree: $blocker"
elif [ ! -f "$ROOT/usr/sbin/mpdetd" ]; then
    skip units_pass_systemd_analyze_verify "install_into_destdir failed"
else
    check units_pass_systemd_analyze_verify units_pass_systemd_analyze_verify
fi

if ! command -v systemd-sysusers >/dev/null; then
    skip sysusers_creates_user "systemd-sysusers not installed (Debian package systemd)"
else
    check sysusers_creates_user sysusers_creates_user
fi
if ! command -v systemd-tmpfiles >/dev/null; then
    skip tmpfiles_creates_run_dir "systemd-tmpfiles not installed (Debian package systemd)"
else
    check tmpfiles_creates_run_dir tmpfiles_creates_run_dir
fi

echo "[==========] unit tests done, $failed failed"
[ "$failed" -eq 0 ]
