# shellcheck shell=bash
# Shared helpers for the lab scripts (sourced, not run): names, paths, logging, timing,
# recipe hashes and image labels. Every name the lab creates is defined here, so set-up
# and tear-down clear exactly what the lab made and nothing else.

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$LAB_DIR/.." && pwd)

# The lab's name and network. Defaults make the shared lab (`make lab`); a second lab on
# the same machine (a test scenario, say) sets CALICO_LAB_NAME and CALICO_LAB_SUBNET (a
# /24 inside 198.18.0.0/15) and gets its own containers, network and state directory.
LAB_NAME=${CALICO_LAB_NAME:-calico-lab}
[[ $LAB_NAME =~ ^[a-z][a-z0-9-]*$ ]] || { echo "bad CALICO_LAB_NAME: $LAB_NAME" >&2; exit 1; }
NET_SUBNET=${CALICO_LAB_SUBNET:-198.18.0.0/24}
[[ $NET_SUBNET =~ ^198\.1[89]\.[0-9]{1,3}\.0/24$ ]] ||
    { echo "CALICO_LAB_SUBNET must be a /24 in 198.18.0.0/15: $NET_SUBNET" >&2; exit 1; }
NET_PREFIX=${NET_SUBNET%.0/24} # node i gets $NET_PREFIX.(NODE_IP_BASE+i)
NET_NAME=$LAB_NAME
NET_GATEWAY=$NET_PREFIX.1
NODE_PREFIX=$LAB_NAME-node-
# IPv6 (dual-stack with CALICO_LAB_IPV6=1; 0, the default, for IPv4 only): documentation
# addresses only (2001:db8::/32, guarded like 198.18.0.0/15 by lab/hostnet.sh). The lab
# network's v6 subnet is 2001:db8:18:<n>::/64 beside its v4 198.18.<n>.0/24 (n in hex,
# 198.19.x counting on from 256): 2001:db8:18::/64 for the default lab. Node i gets
# ::(NODE_IP_BASE+i) in it, the host ::1; the inventory's v6 workload pool is
# 2001:db8:19::/48 (up.sh).
LAB_IPV6=${CALICO_LAB_IPV6:-0}
[[ $LAB_IPV6 == 0 || $LAB_IPV6 == 1 ]] || { echo "CALICO_LAB_IPV6 must be 0 or 1: $LAB_IPV6" >&2; exit 1; }
_o=${NET_PREFIX#198.}
NET6_PREFIX=2001:db8:18:$(printf '%x' $(((${_o%%.*} - 18) * 256 + ${_o#*.})))
NET6_PREFIX=${NET6_PREFIX%:0}: # 2001:db8:18::, 2001:db8:18:1:, ...
NET6_SUBNET=${NET6_PREFIX}:/64
NET6_GATEWAY=${NET6_PREFIX}:1
unset _o
NODE_IP_BASE=10
if [[ $LAB_NAME == calico-lab ]]; then
    STATE_DIR=${CALICO_LAB_STATE_DIR:-$LAB_DIR/.state}
else
    STATE_DIR=${CALICO_LAB_STATE_DIR:-$LAB_DIR/.state/$LAB_NAME}
fi
# Scratch space for builds (rootfs trees, wheels); wiped per build, outside the repo so a
# fresh clone (CI) reuses nothing by accident but the podman images themselves.
WORK_DIR=${CALICO_LAB_WORK_DIR:-/var/tmp/calico-lab}
# Package caches kept across builds so a rebuild does not download again.
CACHE_DIR=${CALICO_LAB_CACHE_DIR:-/var/cache/calico-lab}

BASE_IMAGE=localhost/calico-lab-base:latest
NODE_IMAGE=localhost/calico-lab-node:latest
CALICO_NODE_IMAGE=localhost/calico/node:latest
WORKLOAD_IMAGE=localhost/calico-lab-workload:latest
RECIPE_LABEL=net.calico.recipe

# Image builds are shared by every lab on the machine.
BUILD_CTR_PREFIX=calico-lab-build-

SSH_KEY=$STATE_DIR/id_ed25519
# The user Ansible logs in as on the nodes (plain user, passwordless sudo; the node image
# makes it). The lab's own scripts log in as root.
LAB_ANSIBLE_USER=calico-admin
INVENTORY=$STATE_DIR/inventory.ini
# Where each node finds the image archives (read-only bind mount of $STATE_DIR/images):
# calico/node for the calico_node role, the sample workload image for `make lab`.
NODE_IMAGES_DIR=/opt/calico/images
NODE_IMAGE_ARCHIVE=$NODE_IMAGES_DIR/calico-node.tar
WORKLOAD_IMAGE_ARCHIVE=$NODE_IMAGES_DIR/calico-lab-workload.tar

# How a node container runs (lab/up.sh; tests/fv/test_lab_crash_drill.py starts nodes
# with the same options). privileged: nested podman, network namespaces, nftables and BGP
# need it. --cgroupns=private: without it every nested container lands in one cgroup (the
# node's own, seen through the host's paths), and crun's kill of one container's cgroup -
# calico/node's, say - kills the node's workloads with it (measured: two sleep containers
# die together with --cgroupns=host, not with private). /var/lib/containers (the node's
# own podman storage) is a tmpfs: overlayfs cannot stack on the node's overlay root, and
# a tmpfs loads images 3x faster than a volume and goes away with the node at once.
NODE_RUN_OPTS=(--privileged --systemd=always --cgroupns=private
    --tmpfs /var/lib/containers:rw,mode=0700,size=8g)

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "${LOG_TAG:-lab}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# timed LABEL CMD... : run CMD, log and record how long it took in $STATE_DIR/timings.log
timed() {
    local label=$1; shift
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    "$@" || rc=$?
    t1=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
    mkdir -p "$STATE_DIR"
    printf '%s\t%s\t%ss\trc=%s\n' "$(date -Is)" "$label" "$secs" "$rc" >>"$STATE_DIR/timings.log"
    log "timing: $label took ${secs}s (rc=$rc)"
    return "$rc"
}

# hash_paths PATH... : one sha256 over the names and contents of the files under PATHs
# (sorted, so the hash is stable), ignoring caches and state.
hash_paths() {
    local p
    for p in "$@"; do
        if [[ -d $p ]]; then
            find "$p" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*/.state/*' \
                ! -name '*.tar' ! -path '*.egg-info/*' -print0
        elif [[ -e $p ]]; then
            printf '%s\0' "$p"
        fi
    done | LC_ALL=C sort -z | xargs -0r sha256sum | sed "s|  $REPO_DIR/|  |" | sha256sum | cut -c1-16
}

# image_recipe IMAGE : the recipe hash label of IMAGE, empty when IMAGE does not exist
image_recipe() {
    podman image inspect --format "{{index .Labels \"$RECIPE_LABEL\"}}" "$1" 2>/dev/null || true
}

# image_current IMAGE HASH : true when IMAGE exists and was built from recipe HASH
image_current() {
    [[ $(image_recipe "$1") == "$2" ]]
}

# rm_build_ctr NAME : remove a leftover build container of ours (also buildah's)
rm_build_ctr() {
    podman rm -f --ignore "$1" >/dev/null 2>&1 || true
    podman rm -f --storage "$1" >/dev/null 2>&1 || true
}

# lab_lock : one lab operation at a time on this machine (podman names are machine-wide,
# so a CI clone and a developer's checkout share them). Children of a locked script
# inherit the lock through CALICO_LAB_LOCKED.
lab_lock() {
    [[ ${CALICO_LAB_LOCKED:-} == 1 ]] && return 0
    local f=/run/lock/calico-lab.lock
    [[ -d /run/lock ]] || f=/tmp/calico-lab.lock
    exec 9>"$f"
    if ! flock -n 9; then
        log "waiting for another lab operation (lock $f)"
        flock 9
    fi
    export CALICO_LAB_LOCKED=1
}

# image_id IMAGE : the image's ID, empty when it does not exist
image_id() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# drop_replaced OLD-ID NEW-IMAGE : after NEW-IMAGE was (re)tagged, remove the image it
# replaced, unless a container (a running lab node, say) still uses it. Never forced:
# `podman rmi -f` would remove those containers too.
drop_replaced() {
    local old=$1 new
    new=$(image_id "$2")
    if [[ -n $old && $old != "$new" ]]; then
        podman rmi "$old" >/dev/null 2>&1 || log "kept the replaced image ${old:0:12} (still in use)"
    fi
}

# Every podman call closes the lock's fd 9: `podman run -d` leaves conmon running, which
# would otherwise inherit the fd and hold the lab lock for as long as the container lives.
podman() { command podman "$@" 9>&-; }

require_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }
