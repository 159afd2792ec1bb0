#!/usr/bin/env bash
# Make a real single-node Son of Grid Engine (Debian's gridengine packages: sge_qmaster +
# sge_execd on this host, reached through 127.0.0.1) available for tests, on Debian as
# root, without systemd. Idempotent: daemons whose pid files (in $STATE/pid) name live
# processes are left alone, so a second run only checks. Queue all.q has SGE_SLOTS
# (default 4) slots; root may submit. Clients (qsub, qstat, qacct, dask-jobqueue's
# SGECluster) need no environment: Debian's wrappers default SGE_ROOT=/var/lib/gridengine
# and SGE_CELL=default.
# Last line on stdout: SGE_READY=1; everything else goes to stderr.
# Stop with scripts/sge-down.sh.
set -euo pipefail
exec </dev/null

. "$(dirname "$0")/sge-common.sh"   # STATE, SGE_ROOT/SGE_CELL, pid file variables, alive, stop
. "$(dirname "$0")/daemon-packages.sh"   # install_daemon_packages
COMMON=$SGE_ROOT/$SGE_CELL/common
QSPOOL=/var/spool/gridengine/qmaster
ESPOOL=/var/spool/gridengine/execd
SLOTS=${SGE_SLOTS:-4}
TIMEOUT=60
H=$(hostname)

log() { echo "sge-up: $*" >&2; }
die() {
    echo "sge-up: ERROR: $*" >&2
    # sge_execd's spool dir may be named after 127.0.0.1's name (localhost), not $H.
    for f in "$QSPOOL/messages" "$ESPOOL"/*/messages; do
        [ -f "$f" ] && { echo "--- tail $f" >&2; tail -n 15 "$f" >&2; }
    done
    exit 1
}
[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, starts daemons)"
[[ "$SLOTS" =~ ^[1-9][0-9]*$ ]] || die "SGE_SLOTS must be a positive integer, not '$SLOTS'"

mkdir -p "$STATE"/conf
# Serialise concurrent callers (parallel test workers): one set of daemons.
exec 9>"$STATE/lock"
flock -w 300 9 || die "timed out waiting for $STATE/lock"

# --- the host name -----------------------------------------------------------------
# SGE names hosts by the canonical name their address resolves to; make ours resolve.
getent hosts "$H" >/dev/null || { log "adding $H to /etc/hosts"; echo "127.0.0.1 $H" >>/etc/hosts; }
H=$(getent hosts "$H" | awk '{print $2; exit}')

# --- packages: only touch apt when something is actually missing ------------------
# Let the packages create the cell (spool, default configuration, complexes) for this
# host, without asking.
debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string $SGE_CELL
gridengine-common shared/gridenginemaster string $H
EOF
install_daemon_packages gridengine-master gridengine-exec gridengine-client
# Packages installed earlier without debconf's "configure automatically": do what their
# postinst would have done (init_cluster skips a spool that exists).
if [ ! -s "$COMMON/bootstrap" ]; then
    log "creating cell $SGE_CELL in $SGE_ROOT"
    install -d -o sgeadmin -g sgeadmin -m 0755 "$SGE_ROOT" "$SGE_ROOT/$SGE_CELL" "$COMMON"
    install -m 0644 -o sgeadmin -g sgeadmin /usr/share/gridengine/default-bootstrap "$COMMON/bootstrap"
fi
if [ ! -e /var/spool/gridengine/spooldb/sge ]; then
    install -d -o sgeadmin -g sgeadmin -m 0755 "$QSPOOL" "$QSPOOL/job_scripts" /var/spool/gridengine/spooldb "$ESPOOL"
    runuser -u sgeadmin -- /usr/share/gridengine/scripts/init_cluster \
        "$SGE_ROOT" "$SGE_CELL" /var/spool/gridengine/spooldb sgeadmin >&2 || die "init_cluster failed"
fi

# --- helpers -----------------------------------------------------------------------
wait_for() {  # wait_for SECONDS CMD...: poll every 0.1 s
    local n=$(($1 * 10)); shift
    until "$@" >/dev/null 2>&1; do n=$((n - 1)); [ "$n" -gt 0 ] || return 1; sleep 0.1; done
}
foreign() {  # foreign NAME: pids running NAME's binary other than the one we recorded
    local p mine=""
    alive "$1" && mine=$(head -n 1 "$STATE/pid/$1.pid")
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" != "$mine" ] && is_daemon "$p" "$1" && echo "$p"
    done
    return 0
}
# changed FILE TEXT SEDSCRIPT: write TEXT edited by sed to FILE; true if that changed it.
changed() {
    printf '%s\n' "$2" | sed -e "$3" >"$1"
    [ "$(cat "$1")" != "$2" ]
}
attr() {  # attr NAME VALUE: sed command setting NAME to VALUE in qconf's "name   value" text
    printf 's|^\\(%s[[:space:]]\\{1,\\}\\).*$|\\1%s|\n' "$1" "$2"
}

# --- the cell: which host is the master, and how 127.0.0.1 is named ----------------
# Never take over a real cluster's cell: act_qmaster must name this host, or be one this
# script wrote (the host name may change between boots of a test machine).
cur=$(cat "$COMMON/act_qmaster" 2>/dev/null || true)
if [ "$cur" != "$H" ]; then
    [ -z "$cur" ] || [ -e "$STATE/cell-is-ours" ] \
        || die "$COMMON/act_qmaster names '$cur', not this host '$H': refusing to take over that cell"
    echo "$H" >"$COMMON/act_qmaster"; chown sgeadmin:sgeadmin "$COMMON/act_qmaster"
    log "act_qmaster: $H"
fi
touch "$STATE/cell-is-ours"
# Connections over loopback come from 127.0.0.1, which resolves back to "localhost"
# (not $H), and commlib refuses such clients ("client IP resolved to host name localhost.
# This is not identical to clients host name"): alias those names to $H.
aliases=$(for a in 127.0.0.1 $(getent ahostsv4 "$H" | awk '{print $1}' | sort -u); do
    getent hosts "$a" | awk '{print $2}'
done | sort -u | grep -vx -- "$H" | tr '\n' ' ' || true)
want=""; [ -n "${aliases// /}" ] && want="$H ${aliases% }"
if [ "$want" != "$(cat "$COMMON/host_aliases" 2>/dev/null || true)" ]; then
    # Daemons of ours running with other aliases: restart them with these.
    if alive sge_execd || alive sge_qmaster; then log "host_aliases changed: restarting sge_execd/sge_qmaster"; fi
    stop sge_execd; stop sge_qmaster
    if [ -n "$want" ]; then
        echo "$want" >"$COMMON/host_aliases"; chown sgeadmin:sgeadmin "$COMMON/host_aliases"
    else
        rm -f "$COMMON/host_aliases"
    fi
    log "host_aliases: '$want'"
fi

# --- sge_qmaster -------------------------------------------------------------------
# Pid files go to $STATE/pid (SGE_*_PIDFILE in sge-common.sh); the daemons write them
# as the admin user sgeadmin.
install -d -o sgeadmin -g sgeadmin -m 0755 "$STATE/pid"
# Exec /usr/sbin/sge_* (Debian's wrappers: they exec /usr/lib/gridengine/sge_*). Both
# daemonize. Output to /dev/null and 9>&- so they keep neither a caller's stdout pipe nor
# our lock open. A clean environment: sge_execd passes its own to every job, so jobs
# would otherwise see whatever the caller of this script had exported.
daemon_env=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    SGE_ROOT="$SGE_ROOT" SGE_CELL="$SGE_CELL")
if ! alive sge_qmaster; then
    others=$(foreign sge_qmaster)
    [ -z "$others" ] || die "an sge_qmaster this script did not start runs (pid $others); stop it first"
    rm -f "$SGE_QMASTER_PIDFILE"
    "${daemon_env[@]}" SGE_QMASTER_PIDFILE="$SGE_QMASTER_PIDFILE" /usr/sbin/sge_qmaster \
        >/dev/null 2>&1 9>&- || die "sge_qmaster failed to start"
    wait_for 30 qconf -sconf global || die "sge_qmaster does not answer"
    wait_for 10 alive sge_qmaster || die "sge_qmaster wrote no pid file $SGE_QMASTER_PIDFILE"
    log "sge_qmaster started (pid $(head -n 1 "$SGE_QMASTER_PIDFILE"))"
    # Start clean: jobs left in the spool by an earlier run would take the slots.
    if [ -n "$(qstat -u '*' 2>/dev/null)" ]; then
        log "deleting jobs left from an earlier run"
        qdel -f -u '*' >&2 || true
    fi
fi

# --- configuration (each object rewritten only if it differs) ----------------------
qconf -sh 2>/dev/null | grep -qx "$H" || qconf -ah "$H" >&2
qconf -ss 2>/dev/null | grep -qx "$H" || qconf -as "$H" >&2
# Global: root's jobs allowed (min_uid/min_gid default to 1000); accounting written
# every second (default 15 s), so qacct sees a job about a second after it ended.
cur=$(qconf -sconf global) || die "qconf -sconf global failed"
if changed "$STATE/conf/global" "$cur" "$(attr min_uid 0; attr min_gid 0)
s/accounting=[a-z]*/accounting=true/
s/flush_time=[0-9:]*/flush_time=00:00:01/"; then
    (cd "$STATE/conf" && qconf -Mconf global) >&2   # the file's name is the config's name
fi
# Scheduler: run every second and right after each submit/finish (default every 15 s);
# no load adjustment for just-started jobs (it can hold back the next ones for minutes).
cur=$(qconf -ssconf) || die "qconf -ssconf failed"
if changed "$STATE/conf/sched" "$cur" "$(attr schedule_interval 0:0:1; attr flush_submit_sec 1
    attr flush_finish_sec 1; attr job_load_adjustments NONE)"; then
    qconf -Msconf "$STATE/conf/sched" >&2
fi
if ! qconf -se "$H" >/dev/null 2>&1; then
    printf '%s\n' "hostname $H" "load_scaling NONE" "complex_values NONE" "user_lists NONE" \
        "xuser_lists NONE" "projects NONE" "xprojects NONE" "usage_scaling NONE" \
        "report_variables NONE" >"$STATE/conf/exechost"
    qconf -Ae "$STATE/conf/exechost" >&2
fi
if ! cur=$(qconf -shgrp @allhosts 2>/dev/null); then
    printf '%s\n' "group_name @allhosts" "hostlist $H" >"$STATE/conf/allhosts"
    qconf -Ahgrp "$STATE/conf/allhosts" >&2
elif changed "$STATE/conf/allhosts" "$cur" "$(attr hostlist "$H")"; then
    qconf -Mhgrp "$STATE/conf/allhosts" >&2
fi
# all.q: SLOTS slots whatever the core count (several 1-slot worker jobs on a small
# machine); jobs started by their #! line; no parallel environments (the template names
# some that do not exist); no load thresholds (a busy test machine would put the queue
# in alarm state and stop dispatching).
if cur=$(qconf -sq all.q 2>/dev/null); then new=-Mq; else cur=$(qconf -sq); new=-Aq; fi
if changed "$STATE/conf/all.q" "$cur" "$(attr qname all.q; attr hostlist @allhosts; attr slots "$SLOTS"
    attr shell_start_mode unix_behavior; attr pe_list NONE; attr load_thresholds NONE)" \
    || [ "$new" = -Aq ]; then
    qconf "$new" "$STATE/conf/all.q" >&2
fi

# --- sge_execd ---------------------------------------------------------------------
if ! alive sge_execd; then
    others=$(foreign sge_execd)
    [ -z "$others" ] || die "an sge_execd this script did not start runs (pid $others); stop it first"
    rm -f "$SGE_EXECD_PIDFILE"
    "${daemon_env[@]}" SGE_EXECD_PIDFILE="$SGE_EXECD_PIDFILE" /usr/sbin/sge_execd \
        >/dev/null 2>&1 9>&- || die "sge_execd failed to start"
    wait_for 10 alive sge_execd || die "sge_execd did not stay up"
    log "sge_execd started (pid $(head -n 1 "$SGE_EXECD_PIDFILE"))"
fi

# --- wait until the host reports load and all.q@$H takes jobs -----------------------
n=$((TIMEOUT * 10))
while :; do
    load=$(qhost -h "$H" 2>/dev/null | awk -v h="$H" '$1 == h {print $7}')
    state=$(qstat -f -q "all.q@$H" 2>/dev/null | awk -v q="all.q@$H" '$1 == q {print $6; exit}')
    if [[ "$load" =~ ^[0-9.]+$ ]]; then
        case "$state" in
            *u*) ;;   # execd not heard from yet
            *E* | *d*) # error or disabled state left by an earlier run: clear it
                qmod -c "all.q@$H" >/dev/null 2>&1 || true
                qmod -e "all.q@$H" >/dev/null 2>&1 || true ;;
            *) break ;;
        esac
    fi
    n=$((n - 1)); [ "$n" -gt 0 ] || die "host $H not ready after ${TIMEOUT}s (load '$load', all.q state '$state')"
    sleep 0.1
done
log "ready: host $H, queue all.q with $SLOTS slots (SGE_ROOT=$SGE_ROOT SGE_CELL=$SGE_CELL; state $STATE)"
echo "SGE_READY=1"
