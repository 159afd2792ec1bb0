# Shared by slurm-up.sh and slurm-down.sh (sourced, not run).
# shellcheck shell=bash
STATE=/var/lib/clowdr-test-slurm

# alive NAME: $STATE/pid/NAME.pid names a live, non-zombie process running that
# daemon's binary (a recycled pid or leftover file after a reboot counts as dead;
# a zombie, exited but not yet reaped by its parent, counts as gone).
alive() {
    local pf="$STATE/pid/$1.pid" pid
    [ -s "$pf" ] || return 1
    pid=$(cat "$pf")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "/usr/sbin/$1")" ] || return 1
    [ "$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" != Z ]
}
