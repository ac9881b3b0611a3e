"""The fixed part of table inet calico: base chains, dispatch maps, failsafe and
pool sets, and the placeholder table a fresh host gets first.

Names are what ``nft list table inet calico`` shows: base chains
``cali-prerouting`` (strict reverse-path check on workload interfaces),
``cali-forward``, ``cali-input``, ``cali-output`` and ``cali-nat-postrouting``;
the dispatch chains ``cali-from-wl``/``cali-to-wl`` with their verdict maps
``cali-wl-from``/``cali-wl-to`` (and ``cali-hep-in``/``cali-hep-out`` for host
endpoints); the failsafe sets (and one rule per failsafe entry limited to a
network), checked before any host endpoint policy; the pool and masquerade sets
behind NAT outgoing. While host endpoints use them (`HepLayout`, from
`hostprotect`): forward dispatch for applyOnForward policy in ``cali-forward``,
``cali-mangle-prerouting`` (pre-DNAT policy, before the nat table's DNAT), untracked
policy in ``cali-prerouting`` and ``cali-raw-output`` (raw priority, before
conntrack), and the all-interfaces host endpoint's jumps. While an overlay is in
use (`EncapLayout`), its rules and host sets from `encap_rules`.
"""
from __future__ import annotations

from typing import NamedTuple

from . import nftstr
from .encap_rules import EncapLayout, from_workload_rules, input_rules, output_rules, render_sets
from .nft import FAMILY, TABLE
from .rules import MARK_ALLOW, MARK_CLEAR_MASK
from .ruleset import Ruleset
from .settings import FAILSAFE_PROTOS, FelixSettings

__all__ = ["WL_FROM", "WL_TO", "HEP_IN", "HEP_OUT", "HEP_IFACES", "HEP_FWD_IN", "HEP_FWD_OUT",
           "HEP_PRE", "HEP_RAW_IN", "HEP_RAW_OUT", "FAILSAFE_IN", "FAILSAFE_OUT", "POOLS", "MASQ",
           "HepLayout", "render_base", "render_pools", "placeholder_script"]

WL_FROM = "cali-wl-from"
WL_TO = "cali-wl-to"
HEP_IN = "cali-hep-in"
HEP_OUT = "cali-hep-out"
HEP_IFACES = "cali-hep-ifaces"
HEP_FWD_IN = "cali-hep-fwd-in"
HEP_FWD_OUT = "cali-hep-fwd-out"
HEP_PRE = "cali-hep-pre"
HEP_RAW_IN = "cali-hep-raw-in"
HEP_RAW_OUT = "cali-hep-raw-out"
FAILSAFE_IN = "cali-failsafe-in"
FAILSAFE_OUT = "cali-failsafe-out"
POOLS = {4: "cali-pools4", 6: "cali-pools6"}
MASQ = {4: "cali-masq4", 6: "cali-masq6"}
#: ICMPv6 a workload always may send its host, as type ranges (Felix's types 130-133:
#: MLD query, report, done and router solicitation; 135-136: neighbour solicitation
#: and advertisement)
WL_TO_HOST_ICMPV6 = ("130-133", "135-136")


def _failsafe_elem(proto: str, port: int) -> str:
    """``tcp . 22``: the protocol from our own table, the port a checked number."""
    return f"{FAILSAFE_PROTOS[proto]} . {nftstr.number(port, 1, 65535)}"


def render_pools(rs: Ruleset, cidrs: tuple[set[str], set[str], set[str], set[str]],
                 nat_outgoing: bool) -> None:
    """The pool sets and the NAT-outgoing sets from (all v4, all v6, nat v4, nat v6)."""
    all4, all6, nat4, nat6 = cidrs
    rs.replace_elements(POOLS[4], all4)
    rs.replace_elements(POOLS[6], all6)
    rs.replace_elements(MASQ[4], nat4 if nat_outgoing else ())
    rs.replace_elements(MASQ[6], nat6 if nat_outgoing else ())


def placeholder_script(prefixes: tuple[str, ...]) -> str:
    """A minimal table that drops every new connection from or to a workload
    interface (established ones pass): the state of "no policy yet"."""
    T = f"{FAMILY} {TABLE}"
    lines = [
        f"add table {T}",
        f"add chain {T} cali-forward {{ type filter hook forward priority filter; policy accept; }}",
        f"add chain {T} cali-input {{ type filter hook input priority filter; policy accept; }}",
        f"add rule {T} cali-forward ct state established,related accept",
        f"add rule {T} cali-input ct state established,related accept",
    ]
    for p in prefixes:
        w = nftstr.ifname_prefix(p)
        lines += [f"add rule {T} cali-forward iifname {w} drop",
                  f"add rule {T} cali-forward oifname {w} drop",
                  f"add rule {T} cali-input iifname {w} drop"]
    return "\n".join(lines) + "\n"


class HepLayout(NamedTuple):
    """Which host-protection hooks are in use, from `hostprotect`: the base chains
    dispatch to them only then, so a host without such policy keeps the plain layout."""

    forward: bool = False     # maps HEP_FWD_IN/HEP_FWD_OUT exist (applyOnForward policy)
    pre: bool = False         # map HEP_PRE exists (preDNAT policy)
    raw: bool = False         # maps HEP_RAW_IN/HEP_RAW_OUT exist (doNotTrack policy)
    #: the all-interfaces ("*") host endpoint's chains by hook: in, out, fwd-in,
    #: fwd-out, pre, raw-in, raw-out (a hook without policy for it is left out)
    star: tuple[tuple[str, str], ...] = ()


def _failsafe_rules(s: FelixSettings, cond: str, entries: str, port: str,
                    addr: str) -> list[str]:
    """Accept rules for one failsafe list: the set of entries without a network, then
    one rule per entry limited to a network. `entries` is "in" or "out", `port` the
    port matched ("dport", or "sport" for replies), `addr` the address the network
    is matched against ("saddr"/"daddr")."""
    cond = cond + " " if cond else ""
    name, items = ((FAILSAFE_IN, s.failsafe_inbound) if entries == "in"
                   else (FAILSAFE_OUT, s.failsafe_outbound))
    out = [f"{cond}meta l4proto . th {port} @{name} accept"]
    for entry in items:
        if len(entry) > 2:
            proto, num, net = entry
            fam = "ip6" if ":" in net else "ip"
            out.append(f"{cond}{fam} {addr} {net} meta l4proto {FAILSAFE_PROTOS[proto]} "
                       f"th {port} {nftstr.number(num, 1, 65535)} accept")
    return out


def render_base(rs: Ruleset, s: FelixSettings, hep: HepLayout = HepLayout(),
                encap: EncapLayout = EncapLayout()) -> None:
    """The base chains, dispatch chains and fixed sets for settings `s`, the
    host-protection hooks and the encapsulations in use."""
    render_sets(rs, encap)
    rs.ensure_set(WL_FROM, "type ifname : verdict", is_map=True)
    rs.ensure_set(WL_TO, "type ifname : verdict", is_map=True)
    rs.ensure_set(HEP_IN, "type ifname : verdict", is_map=True)
    rs.ensure_set(HEP_OUT, "type ifname : verdict", is_map=True)
    rs.ensure_set(HEP_IFACES, "type ifname")
    rs.ensure_set(FAILSAFE_IN, "type inet_proto . inet_service")
    rs.ensure_set(FAILSAFE_OUT, "type inet_proto . inet_service")
    rs.replace_elements(FAILSAFE_IN, {_failsafe_elem(*e) for e in s.failsafe_inbound if len(e) == 2})
    rs.replace_elements(FAILSAFE_OUT, {_failsafe_elem(*e) for e in s.failsafe_outbound if len(e) == 2})
    for fam in (4, 6):
        addr = "ipv4_addr" if fam == 4 else "ipv6_addr"
        rs.ensure_set(POOLS[fam], f"type {addr}; flags interval")
        rs.ensure_set(MASQ[fam], f"type {addr}; flags interval")
    wl = [nftstr.ifname_prefix(p) for p in s.interface_prefixes]
    allow = f"{MARK_ALLOW:#x}"
    clear = f"meta mark set meta mark & {MARK_CLEAR_MASK:#010x}"
    star = dict(hep.star)
    # the "*" endpoint covers every interface that is neither a named host
    # endpoint's nor a workload's
    not_wl_in = " ".join(f"iifname != {w}" for w in wl)
    not_wl_out = " ".join(f"oifname != {w}" for w in wl)
    star_in = f"iifname != @{HEP_IFACES} {not_wl_in}"
    star_out = f"oifname != @{HEP_IFACES} {not_wl_out}"
    # failsafe traffic: on named host endpoint interfaces, or with a "*" endpoint
    # on every interface but the workloads'
    fs_in = not_wl_in if star else f"iifname @{HEP_IFACES}"
    fs_out = not_wl_out if star else f"oifname @{HEP_IFACES}"

    def dispatch(key: str, mapname: str, hook: str, cond: str = "") -> list[str]:
        """`key` ("iifname"/"oifname") looked up in `mapname`; then the "*" endpoint's
        chain for `hook` for the interfaces not in it."""
        lines = [f"{cond}{key} vmap @{mapname}"]
        if hook in star:
            lines.append(f"{cond}{star_in if key == 'iifname' else star_out} jump {star[hook]}")
        return lines

    rs.set_chain("cali-from-wl", [
        clear,
        *from_workload_rules(encap, s.allow_ipip_from_workloads, s.allow_vxlan_from_workloads),
        f"iifname vmap @{WL_FROM}",
        f"meta mark & {allow} == 0 drop",   # unknown workload interface
    ], comment="workload egress dispatch")
    rs.set_chain("cali-to-wl", [
        clear,
        f"oifname vmap @{WL_TO}",
        f"meta mark & {allow} == 0 drop",
    ], comment="workload ingress dispatch")
    pre: list[str] = []
    if s.anti_spoofing:
        for w in wl:
            pre.append(f"iifname {w} ip saddr != 0.0.0.0 fib saddr . iif oif missing drop")
            pre.append(f"iifname {w} ip6 saddr != :: ip6 saddr != fe80::/10 "
                       "fib saddr . iif oif missing drop")
    if hep.pre or hep.raw:
        pre.append(clear)      # the accept bit carries the raw/pre-DNAT verdict onwards
    if hep.raw:
        # untracked policy: failsafe traffic and its replies go on to conntrack first
        pre += _failsafe_rules(s, fs_in, "in", "dport", "saddr")
        pre += _failsafe_rules(s, fs_in, "out", "sport", "saddr")
        pre += dispatch("iifname", HEP_RAW_IN, "raw-in")
    rs.set_chain("cali-prerouting", pre,
                 hook="type filter hook prerouting priority raw; policy accept;")
    if hep.raw:
        rs.set_chain("cali-raw-output", [
            clear,
            *_failsafe_rules(s, fs_out, "out", "dport", "daddr"),
            *_failsafe_rules(s, fs_out, "in", "sport", "daddr"),
            *dispatch("oifname", HEP_RAW_OUT, "raw-out"),
        ], hook="type filter hook output priority raw; policy accept;")
    else:
        rs.delete_chain("cali-raw-output")
    accepted = [f"meta mark & {allow} == {allow} accept"] if hep.pre or hep.raw else []
    if hep.pre:
        # before the nat table's DNAT (priority dstnat), as Felix's mangle PREROUTING
        rs.set_chain("cali-mangle-prerouting", [
            "ct state established,related accept",
            *accepted,
            *_failsafe_rules(s, fs_in, "in", "dport", "saddr"),
            *dispatch("iifname", HEP_PRE, "pre"),
        ], hook="type filter hook prerouting priority mangle; policy accept;")
    else:
        rs.delete_chain("cali-mangle-prerouting")
    invalid = ["ct state invalid drop"] if s.drop_invalid else []
    fwd = ["ct state established,related accept", *invalid]
    if hep.forward:
        # host endpoint ingress for forwarded traffic first (unless pre-DNAT or
        # untracked policy accepted it), workload egress and ingress next, then the
        # outgoing host endpoint's forward egress
        skip = f"meta mark & {allow} == 0 " if accepted else ""
        fwd += dispatch("iifname", HEP_FWD_IN, "fwd-in", skip)
    fwd += [f"iifname {w} jump cali-from-wl" for w in wl]
    fwd += [f"oifname {w} jump cali-to-wl" for w in wl]
    if hep.forward:
        fwd += dispatch("oifname", HEP_FWD_OUT, "fwd-out")
    fwd += [f"iifname {w} accept" for w in wl]
    fwd += [f"oifname {w} accept" for w in wl]
    rs.set_chain("cali-forward", fwd,
                 hook="type filter hook forward priority filter; policy accept;")
    to_host = {"Drop": "drop", "Accept": "accept", "Return": None}[
        s.default_endpoint_to_host_action]
    # the overlay's rules first: nothing else may accept tunnel packets from
    # hosts that are not ours (conntrack would, for IP-in-IP a host once answered)
    inp = [*input_rules(encap)]
    # IPv6 neighbour discovery and MLD between a workload and its host, before conntrack
    # and any policy (as Felix's cali-wl-to-host): without them a workload never
    # resolves its default gateway, whatever the endpoint-to-host action.
    inp += [f"iifname {w} icmpv6 type {t} accept" for w in wl for t in WL_TO_HOST_ICMPV6]
    inp += ["ct state established,related accept", *invalid]
    for w in wl:
        inp.append(f"iifname {w} jump cali-from-wl")
        if to_host:
            inp.append(f"iifname {w} {to_host}")
    inp += accepted
    inp += _failsafe_rules(s, fs_in, "in", "dport", "saddr")
    inp += dispatch("iifname", HEP_IN, "in")
    rs.set_chain("cali-input", inp,
                 hook="type filter hook input priority filter; policy accept;")
    out = ["ct state established,related accept", *invalid]
    out += accepted
    out += [f"oifname {w} accept" for w in wl]   # host → local workloads (as Calico)
    out += output_rules(encap)
    out += _failsafe_rules(s, fs_out, "out", "dport", "daddr")
    out += dispatch("oifname", HEP_OUT, "out")
    rs.set_chain("cali-output", out,
                 hook="type filter hook output priority filter; policy accept;")
    rs.set_chain("cali-nat-postrouting", nat_outgoing_rules(s),
                 hook="type nat hook postrouting priority srcnat; policy accept;")


def nat_outgoing_rules(s: FelixSettings) -> list[str]:
    """NAT outgoing as Felix's NATOutgoingChain (felix/rules/nat.go): traffic from a
    natOutgoing pool to anywhere outside the pools is masqueraded, or with
    natOutgoingAddress SNATed to that address (IPv4; Felix's parameter is IPv4 only);
    with natPortRange, TCP and UDP get source ports from that range first, and other
    protocols the plain rule. (NAT statements end the chain in nftables, so Felix's
    RETURN rules after the port-range ones are not needed.)"""
    out = []
    for fam, ip in ((4, "ip"), (6, "ip6")):
        match = f"{ip} saddr @{MASQ[fam]} {ip} daddr != @{POOLS[fam]}"
        addr = s.nat_outgoing_address if fam == 4 else None
        if addr is not None:
            addr = nftstr.ipv4(addr)
        if s.nat_port_range is not None:
            lo, hi = (nftstr.number(p, 0, 65535) for p in s.nat_port_range)
            ports = f"{lo}-{hi}"
            action = f"snat ip to {addr}:{ports}" if addr else f"masquerade to :{ports}"
            out += [f"{match} meta l4proto tcp {action}", f"{match} meta l4proto udp {action}"]
        out.append(f"{match} snat ip to {addr}" if addr else f"{match} masquerade")
    return out
