#!/usr/bin/env bash
# Starts the calico.net lab: N systemd-booted Debian 12 "hosts" (podman containers
# calico-lab-node-1..N) on the internal podman network calico-lab (198.18.0.0/24; the host
# is 198.18.0.1, node i is 198.18.0.(10+i)), reachable from the host over SSH as root with
# the lab's key, with the calico/node image archive at /opt/calico/images/calico-node.tar
# and the sample workload image archive beside it inside every node (and, unless
# --no-preload, both already loaded into each node's podman).
# Writes lab/.state/inventory.ini (groups etcd, calico_nodes, route_reflectors) and
# lab/.state/ssh_config. Any lab left by an earlier (possibly killed) run is removed first.
# Names, subnet and state directory change with CALICO_LAB_NAME / CALICO_LAB_SUBNET (see
# lab/lib.sh), for a second lab beside this one.
# CALICO_LAB_ENCAP picks the overlay of the default pool the inventory asks for: none
# (default: plain BGP routes), ipip (ipipMode Always) or vxlan (vxlanMode Always and
# calico_node_networking_backend=vxlan: no BIRD). The lab's nodes share one subnet, so
# CrossSubnet would look exactly like none here and is not offered.
# CALICO_LAB_IPV6=1 (default 0): the lab is dual-stack - the network also has the v6 subnet
# 2001:db8:18::/64 (node i at 2001:db8:18::(10+i), the host ::1), and the inventory asks
# for the v6 pool 2001:db8:19::/48, autodetected v6 node addresses and v6 workload
# addresses. 0 (the default): IPv4 only.
# CALICO_LAB_REFLECTORS=K (default 0): K more nodes, after the N calico nodes, in the
# inventory's [route_reflectors] only: site.yml runs the bird role there (standalone BIRD
# route reflectors, over IPv6 too when dual-stack) and turns the node-to-node mesh off.
# Usage: up.sh [N] [--no-preload] [--no-build]     (N defaults to $CALICO_LAB_NODES or 3)
set -euo pipefail
LOG_TAG=up
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
require_root
lab_lock

N=${CALICO_LAB_NODES:-3}
PRELOAD=1
BUILD=1
for a in "$@"; do
    case $a in
    --no-preload) PRELOAD=0 ;;
    --no-build) BUILD=0 ;;
    [0-9] | [0-9][0-9]) N=$a ;;
    *) die "usage: $0 [N] [--no-preload] [--no-build]" ;;
    esac
done
((N >= 1 && N <= 50)) || die "N must be 1..50"
ENCAP=${CALICO_LAB_ENCAP:-none}
case $ENCAP in
none | ipip | vxlan) ;;
*) die "CALICO_LAB_ENCAP=$ENCAP: use none, ipip or vxlan" ;;
esac
RR=${CALICO_LAB_REFLECTORS:-0}
[[ $RR =~ ^[0-9]$ ]] || die "CALICO_LAB_REFLECTORS=$RR: use 0..9"
TOTAL=$((N + RR))
# etcd members: 3 when there are 3 or more nodes, else 1 (an odd-sized cluster either way)
ETCD_COUNT=${CALICO_LAB_ETCD_COUNT:-$((N >= 3 ? 3 : 1))}

T0=$(date +%s)
mkdir -p "$STATE_DIR"

# --- host prerequisites and images -------------------------------------------------------
timed "up: bootstrap-host" bash "$LAB_DIR/bootstrap-host.sh"
if ((BUILD)); then
    timed "up: build-images" bash "$LAB_DIR/build-images.sh"
fi
for img in "$NODE_IMAGE" "$CALICO_NODE_IMAGE" "$WORKLOAD_IMAGE"; do
    podman image exists "$img" || die "$img missing (run lab/build-images.sh)"
done
# The nodes are containers on this kernel and cannot load modules: the tunnel device the
# overlay needs must be possible here, or calico/node would fail inside every node. Tried
# in a throw-away network namespace (gone with the command).
encap_probe() {
    case $ENCAP in
    ipip) unshare --net sh -c 'ip link show tunl0 >/dev/null 2>&1 || ip link add tunl0 type ipip' ;;
    vxlan) unshare --net ip link add vxlan.calico type vxlan id 4096 dstport 4789 nolearning ;;
    esac
}
if [[ $ENCAP != none ]]; then
    modprobe -q "$ENCAP" 2>/dev/null || true # built in on some kernels: no module to load
    encap_probe || die "CALICO_LAB_ENCAP=$ENCAP: this kernel cannot make the $ENCAP device"
    log "overlay: $ENCAP"
fi

# The archives every node sees at /opt/calico/images (read-only bind mount of
# $STATE_DIR/images). Each is re-saved only when its image changed (the image ID is kept
# beside the archive).
ARCHIVE_DIR=$STATE_DIR/images
save_archive() { # save_archive IMAGE ARCHIVE-PATH-IN-NODE
    local img=$1 archive id
    archive=$ARCHIVE_DIR/$(basename "$2")
    id=$(podman image inspect --format '{{.Id}}' "$img")
    if [[ -s $archive && $(cat "$archive.id" 2>/dev/null) == "$id" ]]; then
        log "archive of $img is current"
        return 0
    fi
    rm -f "$archive" "$archive.id" "$archive.tmp"
    mkdir -p "$ARCHIVE_DIR"
    timed "up: save $img" podman save --quiet -o "$archive.tmp" "$img"
    mv "$archive.tmp" "$archive"
    echo "$id" >"$archive.id"
}
save_archive "$CALICO_NODE_IMAGE" "$NODE_IMAGE_ARCHIVE"
save_archive "$WORKLOAD_IMAGE" "$WORKLOAD_IMAGE_ARCHIVE"

# --- clear leftovers (ours only, by name) ------------------------------------------------
timed "up: clear leftovers" bash "$LAB_DIR/down.sh" --quiet

# --- network -----------------------------------------------------------------------------
net6_opts=()
if ((LAB_IPV6)); then
    net6_opts=(--ipv6 --subnet "$NET6_SUBNET" --gateway "$NET6_GATEWAY")
fi
podman network create --internal --subnet "$NET_SUBNET" --gateway "$NET_GATEWAY" \
    "${net6_opts[@]}" --label net.calico.lab="$LAB_NAME" "$NET_NAME" >/dev/null
log "network $NET_NAME: $NET_SUBNET${net6_opts:+ and $NET6_SUBNET} (host $NET_GATEWAY${net6_opts:+, $NET6_GATEWAY}), internal"

# --- SSH key (kept across runs) ----------------------------------------------------------
if [[ ! -s $SSH_KEY ]]; then
    rm -f "$SSH_KEY" "$SSH_KEY.pub"
    ssh-keygen -q -t ed25519 -N '' -C "$LAB_NAME" -f "$SSH_KEY"
fi
chmod 0600 "$SSH_KEY"

node_name() { echo "${NODE_PREFIX}$1"; }
node_ip() { echo "$NET_PREFIX.$((NODE_IP_BASE + $1))"; }
node_ip6() { echo "${NET6_PREFIX}:$((NODE_IP_BASE + $1))"; }

# --- nodes -------------------------------------------------------------------------------
add_hosts=()
for i in $(seq 1 "$TOTAL"); do add_hosts+=(--add-host "$(node_name "$i"):$(node_ip "$i")"); done

start_nodes() {
    local i name
    for i in $(seq 1 "$TOTAL"); do
        name=$(node_name "$i")
        ip6_opts=()
        ((LAB_IPV6)) && ip6_opts=(--ip6 "$(node_ip6 "$i")")
        # NODE_RUN_OPTS (lib.sh says why each is there). A restarted node container
        # starts with no images (its podman storage is a tmpfs), as a fresh host would.
        podman run -d --name "$name" --hostname "$name" \
            --label net.calico.lab="$LAB_NAME" \
            --network "$NET_NAME" --ip "$(node_ip "$i")" "${ip6_opts[@]}" "${add_hosts[@]}" \
            "${NODE_RUN_OPTS[@]}" \
            -v "$ARCHIVE_DIR:$NODE_IMAGES_DIR:ro" \
            "$NODE_IMAGE" >/dev/null
        podman exec -i "$name" sh -c 'umask 077; cat > /root/.ssh/authorized_keys' <"$SSH_KEY.pub"
        podman exec -i "$name" sh -c "umask 077; cat > ~$LAB_ANSIBLE_USER/.ssh/authorized_keys &&
            chown $LAB_ANSIBLE_USER: ~$LAB_ANSIBLE_USER/.ssh/authorized_keys" <"$SSH_KEY.pub"
        log "started $name at $(node_ip "$i")${ip6_opts:+ and $(node_ip6 "$i")}"
    done
}
timed "up: start $TOTAL nodes" start_nodes

# The host's gateway address on the lab bridge (podman's CNI backend does not set it for
# an --internal network), then a check, before the first SSH, that the host reaches every
# node through that bridge: a miss stops here in seconds, naming the bridge and the fix.
bash "$LAB_DIR/hostnet.sh" bridge "$NET_NAME" "$NET_GATEWAY/24"
node_ips=()
for i in $(seq 1 "$TOTAL"); do node_ips+=("$(node_ip "$i")"); done
bash "$LAB_DIR/hostnet.sh" check "$NET_NAME" "$NET_GATEWAY/24" "${node_ips[@]}"
if ((LAB_IPV6)); then
    bash "$LAB_DIR/hostnet.sh" bridge "$NET_NAME" "$NET6_GATEWAY/64"
    node_ips=()
    for i in $(seq 1 "$TOTAL"); do node_ips+=("$(node_ip6 "$i")"); done
    bash "$LAB_DIR/hostnet.sh" check "$NET_NAME" "$NET6_GATEWAY/64" "${node_ips[@]}"
fi

SSH_OPTS=(-i "$SSH_KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    -o LogLevel=ERROR -o BatchMode=yes -o ConnectTimeout=3)
lab_ssh() { local ip=$1; shift; ssh "${SSH_OPTS[@]}" "root@$ip" "$@"; }

wait_ssh() {
    local i ip deadline
    for i in $(seq 1 "$TOTAL"); do
        ip=$(node_ip "$i")
        deadline=$(($(date +%s) + 120))
        until lab_ssh "$ip" true 2>/dev/null; do
            if (($(date +%s) > deadline)); then
                podman logs --tail 30 "$(node_name "$i")" >&2 || true
                die "no SSH to $(node_name "$i") ($ip) after 120s"
            fi
            sleep 1
        done
        # systemd has finished booting (or says why not) before anyone uses the node
        lab_ssh "$ip" 'timeout 120 systemctl is-system-running --wait >/dev/null 2>&1 ||
            systemctl --failed --no-legend >&2' || true
    done
}
timed "up: wait for SSH" wait_ssh

# --- inventory and ssh_config ------------------------------------------------------------
{
    echo "# calico.net lab inventory, written by lab/up.sh ($N nodes). Do not edit: rerun up.sh."
    echo "[etcd]"
    for i in $(seq 1 "$ETCD_COUNT"); do echo "$(node_name "$i") ansible_host=$(node_ip "$i")"; done
    echo
    echo "[calico_nodes]"
    for i in $(seq 1 "$N"); do echo "$(node_name "$i") ansible_host=$(node_ip "$i")"; done
    echo
    echo "[route_reflectors]"
    for i in $(seq $((N + 1)) "$TOTAL"); do echo "$(node_name "$i") ansible_host=$(node_ip "$i")"; done
    echo
    echo "[all:vars]"
    echo "ansible_user=$LAB_ANSIBLE_USER"
    echo "ansible_ssh_private_key_file=$SSH_KEY"
    echo "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'"
    echo "ansible_python_interpreter=/usr/bin/python3"
    echo "ansible_host_key_checking=false"
    echo "calico_node_image_archive=$NODE_IMAGE_ARCHIVE"
    echo "calico_lab_workload_image=$WORKLOAD_IMAGE"
    echo "calico_lab_workload_image_archive=$WORKLOAD_IMAGE_ARCHIVE"
    # Lab addresses only: workloads in 198.19.0.0/16 (inside 198.18.0.0/15), and no NAT
    # out of the lab (site.yml's product defaults are Calico's own pool, with NAT).
    echo "calico_ipv4_pool_cidr=198.19.0.0/16"
    echo "calico_ipv4_pool_nat_outgoing=false"
    # CALICO_LAB_IPV6: dual-stack, with documentation addresses (2001:db8::/32). The nodes'
    # v6 BGP addresses are autodetected on the lab network's v6 subnet.
    if ((LAB_IPV6)); then
        echo "calico_ipv6_pool_cidr=2001:db8:19::/48"
        echo "calico_node_ip6=autodetect"
        echo "calico_node_ip6_autodetection_method=cidr=$NET6_SUBNET"
        echo "calico_node_cni_assign_ipv6=true"
    fi
    # CALICO_LAB_ENCAP: the default pool's overlay (and, for vxlan, no BIRD at all).
    case $ENCAP in
    ipip) echo "calico_ipv4_pool_ipip_mode=Always" ;;
    vxlan)
        echo "calico_ipv4_pool_vxlan_mode=Always"
        ((LAB_IPV6)) && echo "calico_ipv6_pool_vxlan_mode=Always"
        echo "calico_node_networking_backend=vxlan"
        ;;
    esac
} >"$INVENTORY.tmp"
mv "$INVENTORY.tmp" "$INVENTORY"
{
    echo "# ssh -F $STATE_DIR/ssh_config $(node_name 1)"
    for i in $(seq 1 "$TOTAL"); do
        printf 'Host %s\n  HostName %s\n' "$(node_name "$i")" "$(node_ip "$i")"
    done
    printf 'Host %s*\n  User root\n  IdentityFile %s\n  IdentitiesOnly yes\n' "$NODE_PREFIX" "$SSH_KEY"
    printf '  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n'
} >"$STATE_DIR/ssh_config"

# --- calico/node image inside the nodes --------------------------------------------------
preload() {
    local i pids=() rc=0
    for i in $(seq 1 "$N"); do
        lab_ssh "$(node_ip "$i")" "podman load -q -i $NODE_IMAGE_ARCHIVE >/dev/null &&
            podman load -q -i $WORKLOAD_IMAGE_ARCHIVE >/dev/null" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || rc=1; done
    return "$rc"
}
if ((PRELOAD)); then
    timed "up: load images into $N nodes" preload
fi

# Nested podman works: calico/node's BIRD runs inside node 1 with host networking.
if ((PRELOAD)); then
    out=$(lab_ssh "$(node_ip 1)" "podman run --rm --network host $CALICO_NODE_IMAGE bird --version" 2>&1) ||
        die "nested podman check failed in $(node_name 1): $out"
    log "nested podman in $(node_name 1): $out"
fi

log "lab up: $N nodes in $(($(date +%s) - T0))s; inventory $INVENTORY"
log "ssh: ssh -F $STATE_DIR/ssh_config $(node_name 1)"
printf '%s\n' "$INVENTORY"
