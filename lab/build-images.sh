#!/usr/bin/env bash
# Builds the lab's three images, each only when missing or when its recipe changed:
#   localhost/calico-lab-base:latest  debootstrap'd Debian 12 (lab/images/base)
#   localhost/calico-lab-node:latest  systemd node for Ansible (lab/images/node)
#   localhost/calico/node:latest      the product image (images/calico-node)
#   localhost/calico-lab-workload:latest  sample workloads (lab/images/workload)
# Each image carries a label (net.calico.recipe) with a hash of its recipe files; the
# hashes chain (node and calico/node include the base hash), and calico/node's includes
# the Python sources, so editing src/ rebuilds only calico/node, never the slow base.
# Restartable: each step first clears what a killed run of itself may have left behind.
# Usage: build-images.sh [--force] [base|node|calico-node|workload]...   (default: all)
set -euo pipefail
LOG_TAG=build
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
require_root
lab_lock

FORCE=0
targets=()
for a in "$@"; do
    case $a in
    --force) FORCE=1 ;;
    base | node | calico-node | workload) targets+=("$a") ;;
    *) die "unknown argument: $a" ;;
    esac
done
((${#targets[@]})) || targets=(base node calico-node workload)

BASE_HASH=$(hash_paths "$LAB_DIR/images/base" | { cat; printf '%s' "${CALICO_LAB_MIRROR:-}"; } | sha256sum | cut -c1-16)
NODE_HASH=$( { echo "$BASE_HASH"; hash_paths "$LAB_DIR/images/node"; } | sha256sum | cut -c1-16)
WL_HASH=$( { echo "$BASE_HASH"; hash_paths "$LAB_DIR/images/workload"; } | sha256sum | cut -c1-16)
CN_HASH=$( { echo "$BASE_HASH"; hash_paths "$REPO_DIR/images/calico-node" "$REPO_DIR/src" "$REPO_DIR/pyproject.toml"; } | sha256sum | cut -c1-16)

# Build containers a killed run left behind (we hold the lab lock: no build is running).
mapfile -t leftovers < <(podman ps -a --format '{{.Names}}' | grep -E "^${BUILD_CTR_PREFIX}[a-z0-9-]+\$" || true)
for c in "${leftovers[@]}" calico-lab-base-working-container; do rm_build_ctr "$c"; done
((${#leftovers[@]} == 0)) || log "removed leftover build containers: ${leftovers[*]}"

want() { local t; for t in "${targets[@]}"; do [[ $t == "$1" ]] && return 0; done; return 1; }

ensure() { # ensure NAME IMAGE HASH BUILD-CMD...
    local name=$1 image=$2 hash=$3; shift 3
    if ((FORCE == 0)) && image_current "$image" "$hash"; then
        log "$image is current ($hash)"
        return 0
    fi
    log "building $image (recipe $hash, was: $(image_recipe "$image" || true))"
    timed "image $name" "$@" "$hash"
}

# Every image starts from base: build it whenever it is stale, whatever the targets.
if want base || ! image_current "$BASE_IMAGE" "$BASE_HASH"; then
    ensure base "$BASE_IMAGE" "$BASE_HASH" bash "$LAB_DIR/images/base/build.sh"
fi
if want node; then
    ensure node "$NODE_IMAGE" "$NODE_HASH" bash "$LAB_DIR/images/node/build.sh"
fi
if want calico-node; then
    ensure calico-node "$CALICO_NODE_IMAGE" "$CN_HASH" bash "$REPO_DIR/images/calico-node/build.sh" build
fi
if want workload; then
    ensure workload "$WORKLOAD_IMAGE" "$WL_HASH" bash "$LAB_DIR/images/workload/build.sh"
fi
