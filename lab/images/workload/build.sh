#!/usr/bin/env bash
# Builds localhost/calico-lab-workload:latest, the image of the lab's sample workloads:
# the Debian 12 base plus ping, netcat and iproute2, idling by default (`sleep infinity`),
# so a connectivity matrix can ping and `nc` between workloads on different nodes.
# `podman run --network host` + apt-get + `podman commit`, like the node image.
# Usage: build.sh HASH   (called by lab/build-images.sh, which decides whether to build)
set -euo pipefail
LOG_TAG=workload
# shellcheck source=../../lib.sh
source "$(dirname "$0")/../../lib.sh"
require_root

HASH=${1:?recipe hash}
CTR=${BUILD_CTR_PREFIX}workload

rm_build_ctr "$CTR"
mkdir -p "$CACHE_DIR/apt/partial"
timed "workload: apt-get install" podman run --name "$CTR" --network host \
    -v "$CACHE_DIR/apt:/var/cache/apt/archives" "$BASE_IMAGE" bash -c '
        set -e; export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends iputils-ping netcat-openbsd iproute2 procps >/dev/null
        apt-get clean; rm -rf /var/lib/apt/lists/*'
old_id=$(image_id "$WORKLOAD_IMAGE")
podman commit --quiet \
    --change "LABEL $RECIPE_LABEL=$HASH" \
    --change 'CMD ["sleep", "infinity"]' \
    --change 'STOPSIGNAL SIGKILL' \
    "$CTR" "$WORKLOAD_IMAGE" >/dev/null
rm_build_ctr "$CTR"
drop_replaced "$old_id" "$WORKLOAD_IMAGE"
log "built $WORKLOAD_IMAGE ($HASH)"
