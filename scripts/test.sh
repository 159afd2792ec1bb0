#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite: the command CI runs (.ci/run) and the
# README's second command. Debian packages: docker.io + busybox-static + bubblewrap (a real Docker engine
# and a local image; the test fixture starts and stops dockerd itself).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker.io busybox-static bubblewrap)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "not root: cannot install ${missing[*]}; the tests that need them will say so" >&2
  fi
fi

python3 -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "Running pip as the 'root' user" || true
exec python3 -m pytest "$@"
