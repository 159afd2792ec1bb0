# Shared by slurm-up.sh and sge-up.sh (sourced, not run): install Debian packages of daemons
# without letting their postinst start them. Needs log() and die().
# shellcheck shell=bash

# install_daemon_packages PKG...: apt-get install the PKGs not installed yet (nothing when all are).
# Preseed debconf before calling if the packages ask questions.
install_daemon_packages() {
    local missing=() p made_policy=0
    for p in "$@"; do
        [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    # postinst would start the packaged daemons (with pid files in /run that we do not
    # track); a policy-rc.d that says "no" prevents it, if none exists.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    # Lock::Timeout: wait for another apt/dpkg (a parallel set-up script) to finish.
    apt-get -o DPkg::Lock::Timeout=300 update >&2 || die "apt-get update failed"
    apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
}
