#!/usr/bin/env bash
# Make a real Docker engine (plus a tiny local image and a rootfs for the fake
# singularity) available for tests. Idempotent: a second run only checks.
# Last line on stdout: DOCKER_HOST=...; everything else goes to stderr.
set -euo pipefail

SOCK=/run/clowdr-test-docker.sock
PIDFILE=/run/clowdr-test-docker.pid
DATA_ROOT=/var/lib/clowdr-test-docker
EXEC_ROOT=/run/clowdr-test-docker-exec
LOG=/tmp/clowdr-test-dockerd.log
IMAGE=localhost/bbox:latest
ROOTFS=/var/lib/clowdr-test-rootfs
export DOCKER_HOST="unix://$SOCK"

log() { echo "docker-up: $*" >&2; }
die() { echo "docker-up: ERROR: $*" >&2; exit 1; }

# Serialise concurrent callers (e.g. parallel test workers): one dockerd, one import.
exec 9>/run/clowdr-test-docker.lock
flock -w 300 9 || die "timed out waiting for /run/clowdr-test-docker.lock"

# --- packages: only touch apt when something is actually missing -----------
deb_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
# The static busybox is copied into an otherwise empty rootfs, so the dynamic
# `busybox` package would not do.
deb_installed busybox-static || missing+=(busybox-static)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    # noninteractive: no debconf prompts; NEEDRESTART_SUSPEND: skip the
    # needrestart hook (it probes services and is slow/noisy here).
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    apt-get update >&2 || die "apt-get update failed"
    apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
fi
command -v docker >/dev/null 2>&1 || die "no docker client on PATH"

# --- engine -------------------------------------------------------------------
# True if the pidfile names a live (non-zombie) dockerd; a recycled pid or a
# leftover pidfile counts as stale.
pid_alive() {
    local pid
    [ -s "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || return 1
    [ "$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" != Z ]
}

if pid_alive; then
    log "dockerd already running (pid $(cat "$PIDFILE"))"
else
    # A stale pidfile makes dockerd refuse to start.
    rm -f "$PIDFILE"
    mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
    log "starting dockerd (log: $LOG)"
    # setsid + nohup: detach so the engine outlives this script and its shell;
    # 9>&- so the daemon does not keep holding our lock.
    setsid nohup dockerd -H "unix://$SOCK" --pidfile "$PIDFILE" \
        --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" \
        --bridge=none --iptables=false --ip6tables=false \
        >"$LOG" 2>&1 </dev/null 9>&- &
    dpid=$!
fi

# Wait until the API answers (dockerd writes its pidfile before it is ready).
ready=0 why="did not become ready within 60 s"
for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then ready=1; break; fi
    # Fail fast if the daemon we just launched already died.
    if [ -n "${dpid:-}" ] && ! kill -0 "$dpid" 2>/dev/null; then
        why="exited during startup"; break
    fi
    sleep 0.5
done
if [ "$ready" != 1 ]; then
    tail -n 20 "$LOG" >&2 2>/dev/null || true
    die "Docker engine on $SOCK $why (log: $LOG)"
fi

# --- rootfs + image -----------------------------------------------------------
build_rootfs() {
    local dir=$1 applet
    mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc" "$dir/proc" "$dir/sys" "$dir/dev" \
             "$dir/usr/bin" "$dir/sbin"
    chmod 1777 "$dir/tmp"
    cp /bin/busybox "$dir/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] && continue
        ln -sf busybox "$dir/bin/$applet"
    done
    # Minimal passwd/group so `id` and `-u uid:gid` resolve names.
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$dir/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
}

# The fake singularity needs the unpacked rootfs; (re)build it if incomplete.
if [ ! -x "$ROOTFS/bin/sh" ]; then
    log "building rootfs at $ROOTFS"
    tmp_rootfs=$(mktemp -d /var/lib/clowdr-test-rootfs.XXXXXX)
    build_rootfs "$tmp_rootfs"
    chmod 755 "$tmp_rootfs"
    rm -rf "$ROOTFS"
    mv "$tmp_rootfs" "$ROOTFS"   # atomic-ish: never leave a half-built rootfs
fi

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image $IMAGE present"
else
    log "importing $IMAGE"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    tar -C "$ROOTFS" -cf "$work/rootfs.tar" .
    # Without the PATH line the imported image has no PATH and finds no `echo`.
    docker import --change 'ENV PATH=/bin:/usr/bin:/sbin' "$work/rootfs.tar" "$IMAGE" >&2 \
        || die "docker import of $IMAGE failed"
fi

echo "DOCKER_HOST=unix://$SOCK"
