# shellcheck shell=bash
# Shared helpers for the lab scripts (sourced, not run): names, paths, logging, timing,
# recipe hashes and image labels. Every name the lab creates is defined here, so set-up
# and tear-down clear exactly what the lab made and nothing else.

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$LAB_DIR/.." && pwd)
STATE_DIR=${CALICO_LAB_STATE_DIR:-$LAB_DIR/.state}
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

NET_NAME=calico-lab
NET_SUBNET=198.18.0.0/24
NET_GATEWAY=198.18.0.1
NODE_PREFIX=calico-lab-node-
NODE_IP_BASE=10 # node i gets 198.18.0.(NODE_IP_BASE+i)
BUILD_CTR_PREFIX=calico-lab-build-

SSH_KEY=$STATE_DIR/id_ed25519
INVENTORY=$STATE_DIR/inventory.ini
# Where each node finds the image archives (read-only bind mount of $STATE_DIR/images):
# calico/node for the calico_node role, the sample workload image for `make lab`.
NODE_IMAGES_DIR=/opt/calico/images
NODE_IMAGE_ARCHIVE=$NODE_IMAGES_DIR/calico-node.tar
WORKLOAD_IMAGE_ARCHIVE=$NODE_IMAGES_DIR/calico-lab-workload.tar

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

require_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }
