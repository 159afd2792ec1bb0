#!/usr/bin/env bash
# Stop the Grid Engine daemons that scripts/sge-up.sh started, and only those: they are
# found by the pid files in its state dir, and a pid is signalled only if it still runs
# that daemon's binary (a pid may have been reused). Jobs are deleted first: sge_execd
# leaves running jobs alive when it stops. Exits 0 once none of ours runs; safe to repeat.
set -euo pipefail
exec </dev/null

. "$(dirname "$0")/sge-common.sh"   # STATE, SGE_ROOT/SGE_CELL, alive, stop

log() { echo "sge-down: $*" >&2; }

[ -d "$STATE/pid" ] || exit 0
# Hold sge-up.sh's lock so that we do not race a concurrent start.
exec 9>"$STATE/lock"
flock -w 300 9 || { log "timed out waiting for $STATE/lock"; exit 1; }

jobs_left() { [ -n "$(qstat -u '*' 2>/dev/null)" ]; }
wait_jobs() {  # wait_jobs SECONDS: until qstat lists no job
    for _ in $(seq $(($1 * 10))); do jobs_left || return 0; sleep 0.1; done
    ! jobs_left
}
# Delete every job while our qmaster still answers, and let our execd kill the running
# ones; force (qdel -f) whatever is still listed after 30 s.
if alive sge_qmaster && jobs_left; then
    log "deleting jobs: $(qstat -u '*' | awk 'NR > 2 {print $1}' | sort -u | tr '\n' ' ')"
    qdel -u '*' >/dev/null 2>&1 || true
    if ! wait_jobs 30; then
        log "jobs still listed after 30 s: qdel -f"
        qdel -f -u '*' >/dev/null 2>&1 || true
        wait_jobs 10 || log "jobs still listed: $(qstat -u '*' | awk 'NR > 2 {print $1}' | tr '\n' ' ')"
    fi
fi

rc=0
stop sge_execd || rc=1
stop sge_qmaster || rc=1
exit "$rc"
