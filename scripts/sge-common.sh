# Shared by sge-up.sh and sge-down.sh (sourced, not run).
# shellcheck shell=bash
STATE=/var/lib/clowdr-test-sge
# Debian's layout (gridengine-common): clients and daemons find the cell through these.
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
# The daemons write their pid files where these say (Debian's init script sets another
# variable that sge_qmaster does not read); only sge-up.sh starts daemons, with these.
export SGE_QMASTER_PIDFILE=$STATE/pid/sge_qmaster.pid SGE_EXECD_PIDFILE=$STATE/pid/sge_execd.pid
# /usr/sbin/sge_* are wrapper scripts that exec these binaries.
SGE_BIN=/usr/lib/gridengine

# is_daemon PID NAME: PID is a live, non-zombie process running the binary of NAME.
is_daemon() {
    local exe
    [[ "$1" =~ ^[0-9]+$ ]] || return 1
    exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
    # " (deleted)": the package was upgraded under a running daemon; still the same one.
    [ "${exe% (deleted)}" = "$SGE_BIN/$2" ] || return 1
    [ "$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null)" != Z ]
}

# alive NAME (sge_qmaster or sge_execd): $STATE/pid/NAME.pid names a live, non-zombie
# process running that daemon's binary (a recycled pid or a leftover file after a reboot
# counts as dead; a zombie, exited but not yet reaped by its parent, counts as gone).
alive() {
    local pf="$STATE/pid/$1.pid"
    [ -s "$pf" ] && is_daemon "$(head -n 1 "$pf")" "$1"
}

# stop NAME: TERM the daemon whose pid sge-up.sh recorded, if that pid still runs it;
# SIGKILL after 20 s; then forget the pid file (the daemons leave theirs behind). On
# SIGTERM sge_execd exits in about 1 s, sge_qmaster in about 8 s; sge_execd leaves
# running jobs alive. Fails only if the daemon survives SIGKILL. Needs log().
stop() {
    local pf="$STATE/pid/$1.pid" pid
    if alive "$1"; then
        pid=$(head -n 1 "$pf")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 200); do is_daemon "$pid" "$1" || break; sleep 0.1; done
        if is_daemon "$pid" "$1"; then
            log "$1 (pid $pid) ignored SIGTERM for 20 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for _ in $(seq 50); do is_daemon "$pid" "$1" || break; sleep 0.1; done
            if is_daemon "$pid" "$1"; then log "$1 (pid $pid) survives SIGKILL"; return 1; fi
        fi
        log "stopped $1 (pid $pid)"
    fi
    rm -f "$pf"
}
