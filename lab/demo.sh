#!/usr/bin/env bash
# The end of `make lab`: sample workloads on every node (podman containers on the
# `calico` CNI network inside the nodes), a sample policy, then `calicoctl node status`
# (or, with an overlay, its device and routes) and a connectivity matrix between all
# workloads: ping and TCP, over IPv4 and, in a dual-stack lab (the inventory has
# calico_ipv6_pool_cidr: CALICO_LAB_IPV6=1 make lab), over IPv6 too. Exits non-zero
# when a cell differs from what the policy says, or when a dual-stack lab's first node
# has a BGP session over IPv6 that is not Established (or none at all).
#
# Workloads: on node i, `demo-frontend-i` (role=frontend) and `demo-db-i` (role=db).
# The network's profile lets workloads of the network talk to each other; the sample
# GlobalNetworkPolicy `demo-db-ingress` selects role == "db" and allows ingress only
# from role == "frontend". So in the matrix every db is reachable from frontends only,
# and every frontend from everyone.
# TCP: every workload listens on port 7777 (netcat; dual-stack: one IPv6 socket for both);
# a probe is `nc -z` with a 2 s timeout, a ping waits 2 s, all of a row's in parallel.
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

# A dual-stack lab: the inventory asks for a v6 pool and v6 workload addresses.
V6=0
grep -q '^calico_ipv6_pool_cidr=.' "$INVENTORY" && V6=1
TCP_PORT=7777
# one listener for both families: an IPv6 socket takes IPv4 too (bindv6only is 0)
NC_FAMILY=
((V6)) && NC_FAMILY=-6

declare -A IP IP6 ROLE
log "starting sample workloads"
for i in "${!NODES[@]}"; do
    n=${NODES[$i]}
    on "$n" "podman image exists $WORKLOAD_IMAGE || podman load -q -i $WORKLOAD_IMAGE_ARCHIVE >/dev/null"
    for role in frontend db; do
        name=demo-$role-$((i + 1))
        on "$n" "podman container exists $name || podman run -d --name $name --network calico --cap-add NET_RAW $WORKLOAD_IMAGE >/dev/null
            podman exec $name ss -Hltn sport = :$TCP_PORT | grep -q . || podman exec -d $name nc -lk $NC_FAMILY $TCP_PORT >/dev/null"
        read -r ip ip6 < <(on "$n" "podman inspect -f '{{with (index .NetworkSettings.Networks \"calico\")}}{{.IPAddress}} {{.GlobalIPv6Address}}{{end}}' $name")
        [[ -n $ip ]] || die "$name on $n has no calico address"
        if ((V6)) && [[ -z ${ip6:-} ]]; then
            die "$name on $n has no IPv6 address, but the lab is dual-stack (calico_node_cni_assign_ipv6)"
        fi
        IP[$name]=$ip
        IP6[$name]=${ip6:-}
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
    # sessions still connecting (a node's BIRD just configured) get up to 90 s
    for _ in $(seq 45); do
        status=$(on "$FIRST" 'podman exec calico-node calicoctl node status' 2>&1 || true)
        rows=$(grep -E '^\| *[0-9a-fA-F]+[.:]' <<<"$status" || true)
        [[ -n $rows ]] && ! grep -v -q Established <<<"$rows" && break
        sleep 2
    done
    echo "== calicoctl node status ($FIRST)"
    printf '%s\n' "$status"
fi
if [[ $ENCAP != none ]]; then
    dev=tunl0
    [[ $ENCAP == vxlan ]] && dev=vxlan.calico
    echo
    echo "== overlay $ENCAP ($FIRST): $dev and the routes to other nodes' blocks"
    on "$FIRST" "ip -d link show $dev; ip route show proto 80 | grep ' via '" || true
fi

# BGP sessions over IPv6 on the first node: every one Established, and at least one.
V6_BGP_OK=1
if ((V6)) && [[ $ENCAP != vxlan ]]; then
    v6_rows=$(grep -E '^\| *[0-9a-fA-F]*:[0-9a-fA-F:]*:' <<<"$status" || true)
    if [[ -z $v6_rows ]] || grep -v -q Established <<<"$v6_rows"; then
        V6_BGP_OK=0
        echo "!! $FIRST: IPv6 BGP sessions not all Established:"
        printf '%s\n' "${v6_rows:-   (none)}"
    else
        echo "IPv6 BGP sessions of $FIRST: $(wc -l <<<"$v6_rows") Established"
    fi
fi

# probes SRC : one line per other workload, "NAME PING4 TCP4 [PING6 TCP6]" (ok / --),
# every probe of the row at once inside SRC (one SSH and one podman exec per row)
probes() {
    local s=$1 d script=""
    for d in "${NAMES[@]}"; do
        [[ $d == "$s" ]] && continue
        script+="( r=$d; for a in ${IP[$d]} ${IP6[$d]}; do
            ping -c 1 -W 2 \$a >/dev/null 2>&1 && r=\"\$r ok\" || r=\"\$r --\";
            nc -z -w 2 \$a $TCP_PORT >/dev/null 2>&1 && r=\"\$r ok\" || r=\"\$r --\"; done; echo \"\$r\" ) & "
    done
    script+="wait"
    on "${NODES[$((${s##*-} - 1))]}" "podman exec $s sh -c $(printf '%q' "$script")"
}

mapfile -t NAMES < <(printf '%s\n' "${!IP[@]}" | sort -t- -k3,3n -k2,2)
cell_what="ping4/tcp4"
((V6)) && cell_what="ping4/tcp4/ping6/tcp6"
echo
echo "== connectivity (rows = from, columns = to; each cell $cell_what: ok / -- denied)"
W=22
printf "%-${W}s" ""
for d in "${NAMES[@]}"; do printf "%-${W}s" "$d"; done
echo
BAD=0
for s in "${NAMES[@]}"; do
    declare -A CELL=()
    while read -r d res; do
        [[ -n $d ]] && CELL[$d]=${res// //}
    done < <(probes "$s" || true)
    printf "%-${W}s" "$s"
    for d in "${NAMES[@]}"; do
        if [[ $s == "$d" ]]; then printf "%-${W}s" "."; continue; fi
        got=${CELL[$d]:-?}
        # the policy: a db accepts only frontends; everyone else accepts everyone
        want=ok
        [[ ${ROLE[$d]} == db && ${ROLE[$s]} != frontend ]] && want=--
        want=$want/$want
        ((V6)) && want=$want/$want
        mark=""
        [[ $got == "$want" ]] || { mark=" !"; BAD=$((BAD + 1)); }
        printf "%-${W}s" "$got$mark"
    done
    echo
    unset CELL
done
echo
echo "expected: every column demo-db-* is ok only in rows demo-frontend-*; all else ok."
if ((BAD)); then
    echo "!! $BAD cell(s) differ from the expected (marked !)"
fi
((BAD == 0 && V6_BGP_OK)) || die "connectivity or IPv6 BGP not as expected"
