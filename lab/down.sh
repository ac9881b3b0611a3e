#!/usr/bin/env bash
# Removes the calico.net lab: every container named calico-lab-node-<n> (and build
# containers calico-lab-build-*), storage volumes of earlier versions of the lab, the
# calico-lab network, and the
# generated inventory. Only names the lab itself uses are touched, so it is safe to run at
# any time, also to clear what a killed run left behind (lab/up.sh calls it first).
#   down.sh              containers, volumes, network, inventory
#   down.sh --images     also the lab's four images, the image archive, the SSH key and the
#                        build scratch space (the next up.sh rebuilds from debootstrap)
#   down.sh --quiet      log less (used by up.sh)
set -euo pipefail
LOG_TAG=down
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
require_root
lab_lock

IMAGES=0
QUIET=0
for a in "$@"; do
    case $a in
    --images) IMAGES=1 ;;
    --quiet) QUIET=1 ;;
    *) die "usage: $0 [--images] [--quiet]" ;;
    esac
done
say() { ((QUIET)) || log "$@"; }
T0=$(date +%s)

# Containers: nodes and build leftovers, matched by exact name pattern.
mapfile -t ctrs < <(podman ps -a --format '{{.Names}}' |
    grep -E "^(${NODE_PREFIX}[0-9]+|${BUILD_CTR_PREFIX}[a-z0-9-]+)\$" || true)
if ((${#ctrs[@]})); then
    # -t 0: the nodes hold nothing worth a clean shutdown; kill at once.
    podman rm -f -t 0 "${ctrs[@]}" >/dev/null
    say "removed containers: ${ctrs[*]}"
fi

mapfile -t vols < <(podman volume ls --format '{{.Name}}' |
    grep -E "^${NODE_PREFIX}[0-9]+-containers\$" || true)
if ((${#vols[@]})); then
    podman volume rm -f "${vols[@]}" >/dev/null
    say "removed volumes: ${vols[*]}"
fi

if podman network exists "$NET_NAME" 2>/dev/null; then
    # the network and its bridge (podman's CNI backend leaves the bridge behind)
    bash "$LAB_DIR/hostnet.sh" remove "$NET_NAME" 2>/dev/null
    say "removed network $NET_NAME"
fi

rm -f "$INVENTORY" "$INVENTORY.tmp" "$STATE_DIR/ssh_config"

if ((IMAGES)); then
    for img in "$WORKLOAD_IMAGE" "$CALICO_NODE_IMAGE" "$NODE_IMAGE" "$BASE_IMAGE"; do
        if podman image exists "$img"; then
            # not forced: an image still used by a container (another lab's node, a test)
            # stays, rather than taking that container with it
            if podman rmi "$img" >/dev/null 2>&1; then
                say "removed image $img"
            else
                log "kept image $img: still used by a container"
            fi
        fi
    done
    rm_build_ctr calico-lab-base-working-container
    rm -rf "$STATE_DIR/images" "$WORK_DIR"
    rm -f "$SSH_KEY" "$SSH_KEY.pub"
    say "removed archive, SSH key and $WORK_DIR (package caches in $CACHE_DIR are kept)"
fi
say "lab down in $(($(date +%s) - T0))s"
