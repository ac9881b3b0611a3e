#!/usr/bin/env bash
# The end of `make lab`: sample workloads on every node (podman containers on the
# `calico` CNI network inside the nodes), a sample policy, then `calicoctl node status`
# (or, with an overlay, its device and routes) and a connectivity matrix between all
# workloads.
#
# Workloads: on node i, `demo-frontend-i` (role=frontend) and `demo-db-i` (role=db).
# The network's profile lets workloads of the network talk to each other; the sample
# GlobalNetworkPolicy `demo-db-ingress` selects role == "db" and allows ingress only
# from role == "frontend". So in the matrix every db is reachable from frontends only,
# and every frontend from everyone.
# Usage: demo.sh [--clean]   (--clean removes the demo workloads and policy)
set -euo pipefail
LOG_TAG=demo
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

[[ -f $INVENTORY ]] || die "no lab inventory at $INVENTORY: run lab/up.sh first"
SSH=(ssh -F "$STATE_DIR/ssh_config" -o BatchMode=yes -o ConnectTimeout=10)
mapfile -t NODES < <(awk '/^\[calico_nodes\]/{f=1;next} /^\[/{f=0} f && NF {print $1}' "$INVENTORY")
((${#NODES[@]})) || die "no [calico_nodes] in $INVENTORY"
FIRST=${NODES[0]}

on() { local node=$1; shift; "${SSH[@]}" "$node" "$@"; }

# calicoctl on a node: the one the calico_node role installed, else the one inside the
# calico/node container (same datastore settings either way).
ctl() {
    local q
    q=$(printf '%q ' "$@")
    on "$FIRST" "if command -v calicoctl >/dev/null; then calicoctl $q; else podman exec -i calico-node calicoctl $q; fi"
}

if [[ ${1:-} == --clean ]]; then
    for n in "${NODES[@]}"; do
        on "$n" 'for c in $(podman ps -a --format "{{.Names}}" | grep "^demo-"); do podman rm -f -t 0 "$c" >/dev/null; done' || true
    done
    ctl delete globalnetworkpolicy demo-db-ingress --skip-not-exists >/dev/null || true
    log "demo workloads and policy removed"
    exit 0
fi

declare -A IP ROLE
log "starting sample workloads"
for i in "${!NODES[@]}"; do
    n=${NODES[$i]}
    on "$n" "podman image exists $WORKLOAD_IMAGE || podman load -q -i $WORKLOAD_IMAGE_ARCHIVE >/dev/null"
    for role in frontend db; do
        name=demo-$role-$((i + 1))
        on "$n" "podman container exists $name || podman run -d --name $name --network calico --cap-add NET_RAW $WORKLOAD_IMAGE >/dev/null"
        ip=$(on "$n" "podman inspect -f '{{(index .NetworkSettings.Networks \"calico\").IPAddress}}' $name")
        [[ -n $ip ]] || die "$name on $n has no calico address"
        IP[$name]=$ip
        ROLE[$name]=$role
        # Label the workload's endpoint (found by its address) with its role.
        wep=$(ctl get workloadendpoints -A -o json | python3 -c '
import json, sys
ip = sys.argv[1]
for w in json.load(sys.stdin)["items"]:
    if any(n.split("/")[0] == ip for n in w["spec"].get("ipNetworks", [])):
        print(w["metadata"]["namespace"], w["metadata"]["name"]); break' "$ip")
        [[ -n $wep ]] || die "no WorkloadEndpoint for $name ($ip)"
        read -r wns wname <<<"$wep"
        ctl label workloadendpoint "$wname" -n "$wns" "role=$role" --overwrite >/dev/null
    done
done

log "applying the sample policy (db accepts only frontends)"
ctl apply -f - >/dev/null <<'EOF'
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: demo-db-ingress
spec:
  order: 100
  selector: role == "db"
  types: [Ingress]
  ingress:
  - action: Allow
    source:
      selector: role == "frontend"
EOF
sleep 2

# The overlay up.sh wrote into the inventory (CALICO_LAB_ENCAP): its device and the
# routes calico/node programs through it (protocol 80, the ones with a gateway).
ENCAP=none
grep -q '^calico_ipv4_pool_ipip_mode=Always' "$INVENTORY" && ENCAP=ipip
grep -q '^calico_ipv4_pool_vxlan_mode=Always' "$INVENTORY" && ENCAP=vxlan

echo
if [[ $ENCAP == vxlan ]]; then
    echo "== calicoctl node status ($FIRST): skipped, the vxlan backend runs no BIRD"
else
    echo "== calicoctl node status ($FIRST)"
    on "$FIRST" 'podman exec calico-node calicoctl node status' || true
fi
if [[ $ENCAP != none ]]; then
    dev=tunl0
    [[ $ENCAP == vxlan ]] && dev=vxlan.calico
    echo
    echo "== overlay $ENCAP ($FIRST): $dev and the routes to other nodes' blocks"
    on "$FIRST" "ip -d link show $dev; ip route show proto 80 | grep ' via '" || true
fi

mapfile -t NAMES < <(printf '%s\n' "${!IP[@]}" | sort -t- -k3,3n -k2,2)
echo
echo "== connectivity (ping; rows = from, columns = to; ok / -- denied)"
printf '%-16s' ""
for d in "${NAMES[@]}"; do printf '%-16s' "$d"; done
echo
for s in "${NAMES[@]}"; do
    node=${NODES[$((${s##*-} - 1))]}
    printf '%-16s' "$s"
    for d in "${NAMES[@]}"; do
        if [[ $s == "$d" ]]; then printf '%-16s' "."; continue; fi
        if on "$node" "podman exec $s ping -c 1 -W 1 ${IP[$d]}" >/dev/null 2>&1; then
            printf '%-16s' "ok"
        else
            printf '%-16s' "--"
        fi
    done
    echo
done
echo
echo "expected: every column demo-db-* is ok only in rows demo-frontend-*; all else ok."
