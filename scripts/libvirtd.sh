#!/usr/bin/env bash
# Start/stop virtlogd + libvirtd by hand (no systemd) for qemu:///system tests.
#
#   scripts/libvirtd.sh start  [STATE_DIR]   start both daemons (no-op if a libvirtd already answers)
#   scripts/libvirtd.sh stop   [STATE_DIR]   release this caller's lease; stop the daemons this
#                                            script started (by PID) once no other lease is alive
#   scripts/libvirtd.sh status [STATE_DIR]   exit 0 if qemu:///system answers, 3 if not
#
# There is one libvirtd per machine (fixed socket), so its bookkeeping is machine-wide, in
# /run/cloudctl-libvirtd: pid files, leases, lock, the original /dev/kvm mode. STATE_DIR (default
# that same directory, or $CLOUDCTL_LIBVIRTD_STATE) only says where the daemons' logs go when
# this call starts them. Installs nothing: needs the packages from scripts/debian-packages.txt
# (libvirt-daemon-system creates the libvirt-qemu user and the kvm group).
#
# One libvirtd serves the whole machine, so concurrent users (two test runs) share it: `start`
# records a lease for the calling process ($CLOUDCTL_LIBVIRTD_LEASE_PID, default: the parent
# of this script, e.g. pytest), and `stop` only stops the daemons when no other lease holder is
# still alive. CLOUDCTL_LIBVIRTD_FORCE=1 stops them regardless. A libvirtd that this script did
# not start (systemd on a normal host) is used as it is and never stopped.
#
# /dev/kvm: when it exists but the qemu user cannot open it, libvirt re-probes QEMU on every API
# call (~60 s each). `start` does what udev does on a normal host (chgrp kvm, chmod 0660) and
# the final `stop` restores the previous owner/mode. Guests must still use <domain type='qemu'>.
#
# The final `stop` also leaves the daemons running while any domain is still running (someone
# may be using it without a lease); CLOUDCTL_LIBVIRTD_DESTROY_DOMAINS=1 destroys those domains
# first, CLOUDCTL_LIBVIRTD_FORCE=1 stops the daemons anyway (the qemu processes outlive them).
set -euo pipefail

CMD=${1:-}
STATE=${CLOUDCTL_LIBVIRTD_RUNDIR:-/run/cloudctl-libvirtd}
LOGDIR=${2:-${CLOUDCTL_LIBVIRTD_STATE:-$STATE}}
URI=qemu:///system
SOCK=/run/libvirt/libvirt-sock
LOGSOCK=/run/libvirt/virtlogd-sock
LIBVIRTD=${LIBVIRTD:-/usr/sbin/libvirtd}
VIRTLOGD=${VIRTLOGD:-/usr/sbin/virtlogd}

LEASE=${CLOUDCTL_LIBVIRTD_LEASE_PID:-$PPID}

log() { echo "libvirtd.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }

# pid from a pid file, only if that process is alive and is the expected program
pid_of() {  # NAME PIDFILE
    local pid comm
    [ -s "$2" ] || return 1
    pid=$(tr -dc 0-9 < "$2")
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [ "$comm" = "$1" ] || return 1
    echo "$pid"
}

virsh_ok() {  # TIMEOUT
    timeout "$1" virsh -q -c "$URI" version >/dev/null 2>&1
}

fix_kvm() {  # RECORD: 1 = remember the old mode so that `stop` restores it (only for daemons we start)
    local record=${1:-1}
    [ -e /dev/kvm ] || return 0
    getent group kvm >/dev/null || { log "warning: no 'kvm' group; /dev/kvm left as is"; return 0; }
    local cur
    cur=$(stat -c '%U:%G %a' /dev/kvm)
    if [ "$cur" != "root:kvm 660" ]; then
        if [ "$record" = 1 ] && [ ! -f "$STATE/kvm.orig" ]; then echo "$cur" > "$STATE/kvm.orig"; fi
        chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
        log "/dev/kvm: $cur -> root:kvm 660 (guests still run under TCG)"
    fi
}

restore_kvm() {
    [ -f "$STATE/kvm.orig" ] || return 0
    if [ -e /dev/kvm ]; then
        local owner mode
        read -r owner mode < "$STATE/kvm.orig"
        chown "$owner" /dev/kvm && chmod "$mode" /dev/kvm && log "/dev/kvm restored to $owner $mode"
    fi
    rm -f "$STATE/kvm.orig"
}

wait_for() {  # SECONDS TEST...
    local deadline=$(( $(date +%s) + $1 )); shift
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

start() {
    [ "$(id -u)" = 0 ] || die "must run as root (qemu:///system)"
    [ -x "$LIBVIRTD" ] || die "$LIBVIRTD not found: apt-get install --no-install-recommends \$(cat scripts/debian-packages.txt)"
    [ -x "$VIRTLOGD" ] || die "$VIRTLOGD not found"
    command -v virsh >/dev/null || die "virsh not found (libvirt-clients)"
    getent passwd libvirt-qemu >/dev/null || die "user libvirt-qemu missing (install libvirt-daemon-system)"
    local t0 pid
    t0=$(now)
    lock
    mkdir -p "$STATE/leases" "$LOGDIR"
    echo "$LEASE" > "$STATE/leases/$LEASE"
    adopt_legacy

    if pid=$(pid_of libvirtd "$STATE/libvirtd.pid") && virsh_ok 120; then
        fix_kvm
        log "already running (libvirtd pid $pid)"
        return 0
    fi
    if [ -S "$SOCK" ] && virsh_ok 120; then
        fix_kvm 0  # not ours: never restore /dev/kvm under a running libvirtd
        log "a libvirtd not started by this script already answers on $SOCK; using it"
        return 0
    fi

    fix_kvm
    mkdir -p /run/libvirt

    if ! pid_of virtlogd "$STATE/virtlogd.pid" >/dev/null; then
        rm -f "$STATE/virtlogd.pid"
        LIBVIRT_LOG_OUTPUTS="3:file:$LOGDIR/virtlogd.log" \
            "$VIRTLOGD" --daemon --pid-file "$STATE/virtlogd.pid" 8>&- \
            || die "virtlogd failed to start (see $LOGDIR/virtlogd.log)"
        wait_for 10 test -S "$LOGSOCK" || die "virtlogd socket $LOGSOCK did not appear"
    fi

    rm -f "$STATE/libvirtd.pid"
    # --daemon: the parent exits only after the daemon initialised (non-zero if that failed)
    LIBVIRT_LOG_OUTPUTS="3:file:$LOGDIR/libvirtd.log" \
        "$LIBVIRTD" --daemon --pid-file "$STATE/libvirtd.pid" 8>&- \
        || die "libvirtd failed to start; last log lines:
$(tail -n 20 "$LOGDIR/libvirtd.log" 2>/dev/null)"
    wait_for 10 test -S "$SOCK" || die "libvirtd socket $SOCK did not appear"
    local t_sock
    t_sock=$(elapsed "$t0")
    # First call pays QEMU's capability probe (~4 s cold); 60 s+ means the /dev/kvm trap.
    virsh_ok 180 || die "virsh -c $URI version failed; see $LOGDIR/libvirtd.log"
    log "started virtlogd pid $(cat "$STATE/virtlogd.pid"), libvirtd pid $(cat "$STATE/libvirtd.pid"): socket after ${t_sock} s, $URI answering after $(elapsed "$t0") s"
}

stop_pid() {  # NAME PIDFILE
    local pid
    if pid=$(pid_of "$1" "$2"); then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
        if [ -d "/proc/$pid" ]; then
            log "$1 (pid $pid) ignored SIGTERM for 10 s; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped $1 (pid $pid)"
    fi
    rm -f "$2"
}

# Serialise start/stop machine-wide.
lock() {
    mkdir -p "$STATE"
    chmod 0755 "$STATE"
    exec 8>"$STATE/lock"
    flock -w 300 8 || die "timed out waiting for $STATE/lock"
}

# Daemons started by an older version of this script kept their pid files in STATE_DIR.
adopt_legacy() {
    local n
    [ "$LOGDIR" != "$STATE" ] || return 0
    for n in libvirtd virtlogd; do
        if ! pid_of "$n" "$STATE/$n.pid" >/dev/null && pid_of "$n" "$LOGDIR/$n.pid" >/dev/null; then
            cp "$LOGDIR/$n.pid" "$STATE/$n.pid"
        fi
    done
}

live_leases() {  # other holders whose process is still alive (dead ones are removed)
    local f p
    for f in "$STATE"/leases/*; do
        [ -e "$f" ] || continue
        p=${f##*/}
        if [ -d "/proc/$p" ]; then echo "$p"; else rm -f "$f"; fi
    done
}

stop() {
    lock
    adopt_legacy
    rm -f "$STATE/leases/$LEASE"
    local others
    others=$(live_leases | tr '\n' ' ')
    if [ -n "${others// /}" ] && [ "${CLOUDCTL_LIBVIRTD_FORCE:-0}" != 1 ]; then
        if pid_of libvirtd "$STATE/libvirtd.pid" >/dev/null; then
            log "still leased by pid(s) ${others% }; leaving libvirtd running (CLOUDCTL_LIBVIRTD_FORCE=1 stops it)"
        fi
        return 0
    fi
    if pid_of libvirtd "$STATE/libvirtd.pid" >/dev/null; then
        local doms
        doms=$(timeout 30 virsh -q -c "$URI" list --name 2>/dev/null | sed '/^$/d' || true)
        if [ -n "$doms" ]; then
            if [ "${CLOUDCTL_LIBVIRTD_DESTROY_DOMAINS:-0}" = 1 ]; then
                for d in $doms; do timeout 30 virsh -q -c "$URI" destroy "$d" >/dev/null 2>&1 || true; done
                log "destroyed running domains: ${doms//$'\n'/ }"
            elif [ "${CLOUDCTL_LIBVIRTD_FORCE:-0}" = 1 ]; then
                log "warning: domains still running (their qemu processes outlive libvirtd): ${doms//$'\n'/ }"
            else
                # someone (maybe without a lease) still has guests here: do not pull libvirtd from under them
                log "domains still running (${doms//$'\n'/ }); leaving libvirtd running" \
                    "(CLOUDCTL_LIBVIRTD_DESTROY_DOMAINS=1 or CLOUDCTL_LIBVIRTD_FORCE=1 to stop anyway)"
                return 0
            fi
        fi
    fi
    rm -f "$STATE"/leases/*
    stop_pid libvirtd "$STATE/libvirtd.pid"
    stop_pid virtlogd "$STATE/virtlogd.pid"
    restore_kvm
}

status() {
    local rc=0 pid
    if pid=$(pid_of virtlogd "$STATE/virtlogd.pid"); then echo "virtlogd: running (pid $pid)"; else echo "virtlogd: not started by this script"; fi
    if pid=$(pid_of libvirtd "$STATE/libvirtd.pid"); then echo "libvirtd: running (pid $pid)"; else echo "libvirtd: not started by this script"; fi
    if [ -S "$SOCK" ] && virsh_ok 30; then echo "$URI: answering"; else echo "$URI: not answering"; rc=3; fi
    [ -d "$STATE/leases" ] && echo "leases: $(live_leases | tr '\n' ' ')"
    [ -e /dev/kvm ] && echo "/dev/kvm: $(stat -c '%U:%G %a' /dev/kvm)"
    return $rc
}

case $CMD in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status [STATE_DIR]" >&2; exit 2 ;;
esac
