#!/usr/bin/env bash
# The host side of the lab's networks: the guard that keeps every lab packet on this
# machine, the gateway address on a lab bridge, and the check that the host reaches the
# nodes through that bridge. Used by lab/up.sh, molecule's create.yml, scripts/install-deps.sh
# and the test suite, so there is one rule in one place. Run as root; idempotent.
#
#   hostnet.sh guard                        install the guard (routes + nft forward guard)
#   hostnet.sh bridge NETWORK GATEWAY/LEN   give the host GATEWAY (IPv4 or IPv6) on NETWORK's bridge
#   hostnet.sh remove NETWORK               remove a podman network and its bridge (the CNI
#                                           backend leaves the bridge, with our address on it)
#   hostnet.sh check NETWORK|dev:IFACE GATEWAY/LEN IP...
#                                           the host reaches each IP through that bridge,
#                                           or stop at once naming the bridge, the missing
#                                           address and the fix
#
# Why the guard: podman's CNI backend (Debian's podman without netavark) writes
# "isGateway": false for an --internal network, so the host bridge gets no address and
# `ip route get <node>` follows the default route out of eth0. The guard route makes
# 198.18.0.0/15 unreachable unless a more specific route (a lab bridge's connected /24, a
# test's veth) says otherwise, so a missing address gives "no route to host" at once
# instead of a packet off the machine. The nft table drops anything the host would forward
# between 198.18.0.0/15 and other addresses (the lab's `--internal`: nothing leaves, nothing
# comes in), whatever ip_forward says.
# IPv6 the same way: the lab's v6 range is the documentation prefix 2001:db8::/32 (nodes on
# 2001:db8:18::/64, the v6 workload pool 2001:db8:19::/48), with its own unreachable route
# and the same two forward rules (link-scope partners excepted, for neighbour discovery).
set -euo pipefail

LAB_RANGE=198.18.0.0/15
LAB_RANGE6=2001:db8::/32
# Link-local unicast and link-scope multicast: never routed off a link, but bridged
# frames pass the forward hook too (br_netfilter), and IPv6 neighbour discovery between
# the nodes (solicited-node multicast, link-local sources) must cross the lab bridge.
LINK_SCOPE6="fe80::/10, ff02::/16"
GUARD_METRIC=4242
GUARD_TABLE=calico_lab_guard

say() { printf '[hostnet] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root"

guard() {
    # `replace` is idempotent; a connected /24 of a lab bridge is more specific and wins.
    ip route replace unreachable "$LAB_RANGE" metric "$GUARD_METRIC"
    # IPv6 may be off on a host (disable_ipv6, no ipv6 module): then nothing can leak by it
    if [[ -e /proc/net/if_inet6 ]]; then
        ip -6 route replace unreachable "$LAB_RANGE6" metric "$GUARD_METRIC"
    fi
    if command -v nft >/dev/null; then
        # the whole table in one transaction: create (if absent), flush, fill
        nft -f - <<EOF
table inet $GUARD_TABLE
delete table inet $GUARD_TABLE
table inet $GUARD_TABLE {
    chain forward {
        type filter hook forward priority -10; policy accept;
        ip saddr $LAB_RANGE ip daddr != $LAB_RANGE counter drop
        ip daddr $LAB_RANGE ip saddr != $LAB_RANGE counter drop
        ip6 saddr $LAB_RANGE6 ip6 daddr != { $LAB_RANGE6, $LINK_SCOPE6 } counter drop
        ip6 daddr $LAB_RANGE6 ip6 saddr != { $LAB_RANGE6, $LINK_SCOPE6, ::/128 } counter drop
    }
}
EOF
    fi
}

guard_present() {
    ip route show table main type unreachable "$LAB_RANGE" | grep -q . || return 1
    [[ ! -e /proc/net/if_inet6 ]] || ip -6 route show table main type unreachable "$LAB_RANGE6" | grep -q .
}

# bridge_of NETWORK : the host-side bridge of a podman network (both backends report it)
bridge_of() {
    local br
    br=$(podman network inspect --format '{{.NetworkInterface}}' "$1" 2>/dev/null) ||
        die "podman network $1 does not exist"
    [[ -n $br ]] || die "podman network $1 has no bridge interface"
    printf '%s\n' "$br"
}

bridge() {
    local net=$1 addr=$2 br
    local fam=-4 word=inet opts=()
    if [[ $addr =~ ^198\.1[89]\.[0-9]{1,3}\.[0-9]{1,3}/[0-9]{1,2}$ ]]; then
        :
    elif [[ ${addr,,} =~ ^2001:db8:[0-9a-f:]+/[0-9]{1,3}$ ]]; then
        # no duplicate address detection: the lab's addresses are handed out by one script
        fam=-6 word=inet6 opts=(nodad)
    else
        die "gateway $addr is not an address/prefix in $LAB_RANGE or $LAB_RANGE6"
    fi
    br=$(bridge_of "$net")
    ip link show dev "$br" >/dev/null 2>&1 ||
        die "bridge $br of network $net does not exist (no node attached yet?)"
    if ! ip "$fam" -o addr show dev "$br" | grep -qw "$word ${addr,,}"; then
        # The CNI backend leaves an --internal bridge without an address; netavark sets it.
        ip addr replace "$addr" dev "$br" "${opts[@]}"
        say "host address $addr on $br (network $net)"
    fi
    ip link set dev "$br" up
}

remove() {
    local net=$1 br=""
    podman network exists "$net" 2>/dev/null || return 0
    br=$(podman network inspect --format '{{.NetworkInterface}}' "$net" 2>/dev/null || true)
    podman network rm -f "$net" >/dev/null
    # a leftover bridge keeps a connected route for the lab's subnet, which would shadow the
    # bridge of the next network made with that subnet
    if [[ -n $br ]] && ip link show dev "$br" >/dev/null 2>&1; then
        ip link del dev "$br"
    fi
    say "removed network $net${br:+ and bridge $br}"
}

check() {
    local target=$1 addr=$2 br ip route dev have
    shift 2
    if [[ $target == dev:* ]]; then br=${target#dev:}; else br=$(bridge_of "$target"); fi
    guard_present || die "the guard route 'unreachable $LAB_RANGE' or 'unreachable $LAB_RANGE6' is missing: run lab/hostnet.sh guard"
    for ip in "$@"; do
        route=$(ip -o route get "$ip" 2>&1) || route="unreachable ($route)"
        dev=$(sed -n 's/.* dev \([^ ]*\).*/\1/p' <<<"$route")
        if [[ $dev != "$br" ]]; then
            have=$(ip -o addr show dev "$br" scope global 2>/dev/null | awk '{print $4}' | paste -sd, -)
            die "the host does not reach $ip through the lab bridge $br: 'ip route get $ip' says: ${route}
  The bridge $br lacks the lab gateway address $addr (it has: ${have:-no $([[ $addr == *:* ]] && echo IPv6 || echo IPv4) address}; podman's CNI
  backend leaves an --internal network's bridge without one).
  Fix: ip addr add $addr dev $br    (lab/hostnet.sh bridge <network> $addr does it)"
        fi
    done
}

case ${1:-} in
guard) guard ;;
bridge) (($# == 3)) || die "usage: $0 bridge NETWORK GATEWAY/LEN"; bridge "$2" "$3" ;;
remove) (($# == 2)) || die "usage: $0 remove NETWORK"; remove "$2" ;;
check) (($# >= 4)) || die "usage: $0 check NETWORK|dev:IFACE GATEWAY/LEN IP..."; shift; check "$@" ;;
*) die "usage: $0 guard | bridge NETWORK GATEWAY/LEN | remove NETWORK | check NETWORK|dev:IFACE GATEWAY/LEN IP..." ;;
esac
