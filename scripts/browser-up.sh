#!/usr/bin/env bash
# Make a real headless browser available for the dashboard tests: Debian's `chromium` (apt) and the PyPI
# `playwright` package (the driver only). Idempotent: a second run only checks.
# Never runs `playwright install`: browser builds cannot be downloaded here, so tests launch
# /usr/bin/chromium through executable_path.
# Last line on stdout: CHROMIUM=/usr/bin/chromium; everything else goes to stderr.
set -euo pipefail

log() { echo "browser-up: $*" >&2; }
die() { echo "browser-up: ERROR: $*" >&2; exit 1; }

PYTHON="${PYTHON:-python3}"
CHROMIUM=/usr/bin/chromium

# Serialise concurrent callers (parallel test workers): one apt, one pip at a time.
exec 9>/tmp/clowdr-browser-up.lock
flock -w 600 9 || die "timed out waiting for /tmp/clowdr-browser-up.lock"

if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        die "chromium is missing and installing it needs root (apt-get install chromium)"
    fi
    log "installing Debian chromium"
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    apt-get update >&2 || die "apt-get update failed"
    apt-get install -y --no-install-recommends chromium fonts-dejavu-core >&2 \
        || die "apt-get install chromium failed"
fi
[ -x "$CHROMIUM" ] || die "no $CHROMIUM after install"

if ! "$PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1; then
    log "installing the playwright package from PyPI (no browser download)"
    "$PYTHON" -m pip install --quiet "playwright>=1.40" >&2 || die "pip install playwright failed"
fi
"$PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1 || die "playwright does not import"

echo "CHROMIUM=$CHROMIUM"
