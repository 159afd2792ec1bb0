#!/usr/bin/env bash
# Stop the SLURM daemons that scripts/slurm-up.sh started, and only those: they are
# found by the pid files in its state dir, and a pid is signalled only if it still
# runs that daemon's binary (a pid may have been reused). Jobs are cancelled first
# so no job processes outlive slurmd. Exits 0 once none of ours runs; safe to repeat.
set -euo pipefail
exec </dev/null

. "$(dirname "$0")/slurm-common.sh"   # STATE, alive

log() { echo "slurm-down: $*" >&2; }

stop() {  # stop NAME: TERM, wait up to 20 s, then KILL
    local pf="$STATE/pid/$1.pid" pid
    [ -e "$pf" ] || return 0   # not started by slurm-up.sh: leave it alone
    if alive "$1"; then
        pid=$(cat "$pf")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 200); do alive "$1" || break; sleep 0.1; done
        if alive "$1"; then
            log "$1 (pid $pid) ignored SIGTERM for 20 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for _ in $(seq 50); do alive "$1" || break; sleep 0.1; done
        fi
        log "stopped $1 (pid $pid)"
    fi
    rm -f "$pf"
}

[ -d "$STATE/pid" ] || exit 0
# Hold slurm-up.sh's lock so that we do not race a concurrent start.
exec 9>"$STATE/lock"
flock -w 300 9 || { log "timed out waiting for $STATE/lock"; exit 1; }

# Cancel every job (and all its steps: --full) while our controller still answers,
# then give slurmd a moment (KillWait=5) to kill them before it goes itself.
if alive slurmctld && alive slurmd; then
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [ -n "${jobs// /}" ]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        scancel --full $jobs 2>/dev/null || true
        for _ in $(seq 150); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.1; done
    fi
fi

stop slurmd
stop slurmctld
stop munged
# The cgroups slurmd made for jobs (recorded by slurm-up.sh), deepest first: empty once
# the jobs are gone.
if [ -s "$STATE/cgroups" ]; then
    sort -u "$STATE/cgroups" | while read -r d; do
        if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
        if [ -d "$d" ]; then log "could not remove cgroup $d"; fi
    done
    rm -f "$STATE/cgroups"
fi
exit 0
