#!/usr/bin/env bash
# Host prerequisites for the calico.net lab: the packages podman and debootstrap need, and
# the two quirks of these machines without which podman cannot start a container here.
# Also installs the guard that keeps lab traffic on this machine (lab/hostnet.sh).
# Idempotent and guarded: every step checks first and does nothing when already done.
# Run as root. Touches nothing global beyond what is listed here.
set -euo pipefail

log() { printf '[bootstrap-host] %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root"; exit 1
fi

# --- 1. packages -------------------------------------------------------------------------
# podman runs the lab nodes, debootstrap makes the Debian 12 rootfs the images start from,
# uidmap/fuse-overlayfs/slirp4netns are podman's usual companions, openssh-client is how
# the host (and Ansible) reaches the nodes.
PKGS=(podman debootstrap uidmap fuse-overlayfs slirp4netns openssh-client crun)
missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "packages present"
fi

# --- 2. quirk: cgroup hugetlb controller -------------------------------------------------
# These machines run a hybrid cgroup layout (v1 controllers under /sys/fs/cgroup/*, plus a
# cgroup2 mount at /sys/fs/cgroup/unified) in which cgroup2 still holds the hugetlb
# controller. crun then refuses to start any container ("cgroups in hybrid mode").
# Mounting a v1 hierarchy for hugetlb moves the controller off cgroup2 and fixes that.
hugetlb_ok() {
    # already mounted as v1, or the cgroup2 mount does not hold hugetlb
    if mountpoint -q /sys/fs/cgroup/hugetlb 2>/dev/null; then return 0; fi
    if [[ -r /sys/fs/cgroup/unified/cgroup.controllers ]] &&
        grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers; then
        return 1
    fi
    return 0
}
if hugetlb_ok; then
    log "hugetlb cgroup quirk: nothing to do"
else
    log "mounting a cgroup v1 hierarchy for hugetlb (crun hybrid-mode quirk)"
    # /sys/fs/cgroup is a tmpfs on these machines; it may be read-only on others.
    mkdir -p /sys/fs/cgroup/hugetlb
    mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
fi

# --- 3. quirk: podman default ulimits ----------------------------------------------------
# podman's default ulimits for containers exceed what this sandbox allows, so every
# `podman run` fails to set rlimits. Pin them to values the sandbox accepts.
# The same setting is baked into the lab node image for nested podman.
CONF=/etc/containers/containers.conf
ULIMITS='default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]'
mkdir -p /etc/containers
if [[ -f $CONF ]] && grep -qE '^[[:space:]]*default_ulimits[[:space:]]*=' "$CONF"; then
    log "containers.conf default_ulimits already set: $(grep -E '^[[:space:]]*default_ulimits' "$CONF")"
elif [[ -f $CONF ]] && grep -qE '^\[containers\]' "$CONF"; then
    log "adding default_ulimits under [containers] in $CONF"
    sed -i "/^\[containers\]/a # calico.net lab: podman's default ulimits exceed what this sandbox allows\n$ULIMITS" "$CONF"
else
    log "writing [containers] default_ulimits to $CONF"
    {
        [[ -s $CONF ]] && printf '\n'
        printf '[containers]\n'
        printf "# calico.net lab: podman's default ulimits exceed what this sandbox allows\n"
        printf '%s\n' "$ULIMITS"
    } >>"$CONF"
fi

# --- 4. the guard: lab packets never leave this machine ----------------------------------
# Unreachable routes for 198.18.0.0/15 and 2001:db8::/32 (lab bridges' connected routes are more specific
# and win) and an nft forward guard; see lab/hostnet.sh for why.
bash "$(dirname "$0")/hostnet.sh" guard
log "guard routes and forward guard for 198.18.0.0/15 and 2001:db8::/32 in place"

log "done"
