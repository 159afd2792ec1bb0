#!/usr/bin/env bash
# Stop the test dockerd started by scripts/docker-up.sh. Only the pid recorded
# in its pidfile is ever signalled; exits 0 if nothing is running.
set -euo pipefail

PIDFILE=/run/clowdr-test-docker.pid

log() { echo "docker-down: $*" >&2; }

if [ ! -s "$PIDFILE" ]; then
    log "no pidfile ($PIDFILE): nothing to stop"
    rm -f "$PIDFILE"
    exit 0
fi
pid=$(cat "$PIDFILE")
if ! [[ "$pid" =~ ^[0-9]+$ ]] || [ "$pid" -le 1 ]; then
    log "pidfile holds no usable pid ('$pid'); removing it"
    rm -f "$PIDFILE"
    exit 0
fi
# Guard against a recycled pid: only signal it if it is really a dockerd.
if ! kill -0 "$pid" 2>/dev/null; then
    log "dockerd (pid $pid) is not running"
    rm -f "$PIDFILE"
    exit 0
fi
comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
if [ "$comm" != dockerd ]; then
    log "pid $pid is '$comm', not dockerd; leaving it alone"
    rm -f "$PIDFILE"
    exit 0
fi

# Alive = exists and is not a zombie waiting for its (foreign) parent to reap it.
alive() {
    local state
    state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$state" ] && [ "$state" != Z ]
}

log "stopping dockerd (pid $pid)"
kill -TERM "$pid" 2>/dev/null || true
# dockerd stops its containers and its containerd child on TERM; give it time.
for _ in $(seq 1 40); do
    alive || break
    sleep 0.5
done
if alive; then
    log "dockerd did not exit within 20 s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 10); do
        alive || break
        sleep 0.2
    done
fi
rm -f "$PIDFILE"
log "stopped"
