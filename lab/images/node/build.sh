#!/usr/bin/env bash
# Builds localhost/calico-lab-node:latest from localhost/calico-lab-base:latest:
# `podman run --network host` the base with this directory mounted, run setup.sh inside
# (apt-get install of everything a node needs), then `podman commit` with /sbin/init as
# the command so the node boots systemd. Restartable: a build container left by a killed
# run is removed first (it has a fixed name of ours).
# Usage: build.sh HASH   (called by lab/build-images.sh, which decides whether to build)
set -euo pipefail
LOG_TAG=node
# shellcheck source=../../lib.sh
source "$(dirname "$0")/../../lib.sh"
require_root

HASH=${1:?recipe hash}
CTR=${BUILD_CTR_PREFIX}node
HERE=$(cd "$(dirname "$0")" && pwd)

rm_build_ctr "$CTR"
mkdir -p "$CACHE_DIR/apt/partial"

# Downloaded .debs are kept in $CACHE_DIR/apt so a rebuild does not fetch them again.
timed "node: apt-get install" podman run --name "$CTR" --network host \
    -v "$HERE:/build:ro" -v "$CACHE_DIR/apt:/var/cache/apt/archives" \
    "$BASE_IMAGE" bash /build/setup.sh

old_id=$(image_id "$NODE_IMAGE")
timed "node: podman commit" podman commit --quiet \
    --change "LABEL $RECIPE_LABEL=$HASH" \
    --change 'CMD ["/sbin/init"]' \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    --change 'ENV container=podman' \
    "$CTR" "$NODE_IMAGE" >/dev/null
rm_build_ctr "$CTR"
drop_replaced "$old_id" "$NODE_IMAGE"
log "built $NODE_IMAGE ($HASH)"
