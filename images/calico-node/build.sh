#!/usr/bin/env bash
# Builds the calico/node image (localhost/calico/node:latest) and saves it to an archive.
#   build.sh [build] [HASH]      build the image (HASH: recipe label; lab/build-images.sh
#                                passes it and skips the build when it is current)
#   build.sh save [FILE]         podman save the image to FILE (default ./calico-node.tar),
#                                for hosts without a registry: `podman load -i FILE`
# The image starts FROM localhost/calico-lab-base:latest (lab/build-images.sh base makes
# it). calico_net is built into a wheel from this checkout and its dependencies are
# downloaded on this host with this host's pip settings; the image build itself then
# needs Debian's mirror only (--network host), never a registry (--pull=never).
set -euo pipefail
LOG_TAG=calico-node
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../lab/lib.sh
source "$HERE/../../lab/lib.sh"
require_root
lab_lock

cmd=${1:-build}
case $cmd in
save)
    out=${2:-calico-node.tar}
    mkdir -p "$(dirname "$out")"
    podman image exists "$CALICO_NODE_IMAGE" || die "$CALICO_NODE_IMAGE not built"
    rm -f "$out.tmp"
    timed "calico-node: podman save" podman save --quiet -o "$out.tmp" "$CALICO_NODE_IMAGE"
    mv "$out.tmp" "$out"
    log "saved $CALICO_NODE_IMAGE to $out ($(du -h "$out" | cut -f1))"
    exit 0
    ;;
build) HASH=${2:-manual} ;;
*) die "usage: $0 [build [HASH] | save [FILE]]" ;;
esac

podman image exists "$BASE_IMAGE" || die "$BASE_IMAGE missing: run lab/build-images.sh base"

CTX=$WORK_DIR/calico-node-context
rm -rf "$CTX"
mkdir -p "$CTX/wheels"
cp "$HERE/Containerfile" "$HERE/supervisor.py" "$CTX/"

# pip from the repo's venv when there is one (it carries this host's index settings),
# else the host's python3.
PIP=("$REPO_DIR/.venv/bin/python" -m pip)
[[ -x ${PIP[0]} ]] || PIP=(python3 -m pip)
wheels() {
    # calico_net from this checkout, always fresh; its dependencies as wheels (sdists get
    # built here), cached per pyproject.toml so a src/ change does not fetch them again.
    # pip's output goes to a log, shown on failure (it warns about every local index it
    # skips on these machines).
    local plog=$WORK_DIR/pip-wheel.log deps
    deps=$CACHE_DIR/wheels/$(sha256sum "$REPO_DIR/pyproject.toml" | cut -c1-16)
    "${PIP[@]}" wheel -q --disable-pip-version-check --no-deps -w "$CTX/wheels" "$REPO_DIR" \
        >"$plog" 2>&1 || { tail -30 "$plog" >&2; return 1; }
    if [[ ! -e $deps/.complete ]]; then
        rm -rf "$deps"
        local whl=("$CTX"/wheels/calico_net-*.whl)
        # the agent's and the CNI plugin's extras too: calico/node runs the one and
        # hosts install the other from these wheels
        "${PIP[@]}" wheel -q --disable-pip-version-check -w "$deps" "${whl[0]}[agent,cni]" \
            >"$plog" 2>&1 || { tail -30 "$plog" >&2; return 1; }
        rm -f "$deps"/calico_net-*.whl
        touch "$deps/.complete"
    fi
    cp "$deps"/*.whl "$CTX/wheels/"
}
timed "calico-node: wheels" wheels

# A build killed half-way leaves a buildah working container of this name.
rm_build_ctr calico-lab-base-working-container
# --layers: the apt step is cached as an intermediate image, so a change to src/ only
# redoes the pip install. The image replaced here becomes dangling and is removed after.
old_id=$(image_id "$CALICO_NODE_IMAGE")
timed "calico-node: podman build" podman build --quiet --pull=never --network host \
    --layers --label "$RECIPE_LABEL=$HASH" \
    --build-arg "BASE=$BASE_IMAGE" -t "$CALICO_NODE_IMAGE" -f "$CTX/Containerfile" "$CTX" >/dev/null
drop_replaced "$old_id" "$CALICO_NODE_IMAGE"
rm -rf "$CTX"
log "built $CALICO_NODE_IMAGE ($HASH)"
