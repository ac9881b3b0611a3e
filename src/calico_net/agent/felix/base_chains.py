"""The fixed part of table inet calico: base chains, dispatch maps, failsafe and
pool sets, and the placeholder table a fresh host gets first.

Names are what ``nft list table inet calico`` shows: base chains
``cali-prerouting`` (strict reverse-path check on workload interfaces),
``cali-forward``, ``cali-input``, ``cali-output`` and ``cali-nat-postrouting``;
the dispatch chains ``cali-from-wl``/``cali-to-wl`` with their verdict maps
``cali-wl-from``/``cali-wl-to`` (and ``cali-hep-in``/``cali-hep-out`` for host
endpoints); the failsafe sets, checked before any host endpoint policy; the pool
and masquerade sets behind NAT outgoing.
"""
from __future__ import annotations

from . import nftstr
from .nft import FAMILY, TABLE
from .rules import MARK_ALLOW, MARK_CLEAR_MASK
from .ruleset import Ruleset
from .settings import FAILSAFE_PROTOS, FelixSettings

__all__ = ["WL_FROM", "WL_TO", "HEP_IN", "HEP_OUT", "HEP_IFACES", "FAILSAFE_IN", "FAILSAFE_OUT",
           "POOLS", "MASQ", "render_base", "render_pools", "placeholder_script"]

WL_FROM = "cali-wl-from"
WL_TO = "cali-wl-to"
HEP_IN = "cali-hep-in"
HEP_OUT = "cali-hep-out"
HEP_IFACES = "cali-hep-ifaces"
FAILSAFE_IN = "cali-failsafe-in"
FAILSAFE_OUT = "cali-failsafe-out"
POOLS = {4: "cali-pools4", 6: "cali-pools6"}
MASQ = {4: "cali-masq4", 6: "cali-masq6"}


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


def render_base(rs: Ruleset, s: FelixSettings) -> None:
    """The base chains, dispatch chains and fixed sets for settings `s`."""
    rs.ensure_set(WL_FROM, "type ifname : verdict", is_map=True)
    rs.ensure_set(WL_TO, "type ifname : verdict", is_map=True)
    rs.ensure_set(HEP_IN, "type ifname : verdict", is_map=True)
    rs.ensure_set(HEP_OUT, "type ifname : verdict", is_map=True)
    rs.ensure_set(HEP_IFACES, "type ifname")
    rs.ensure_set(FAILSAFE_IN, "type inet_proto . inet_service")
    rs.ensure_set(FAILSAFE_OUT, "type inet_proto . inet_service")
    rs.replace_elements(FAILSAFE_IN, {_failsafe_elem(p, n) for p, n in s.failsafe_inbound})
    rs.replace_elements(FAILSAFE_OUT, {_failsafe_elem(p, n) for p, n in s.failsafe_outbound})
    for fam in (4, 6):
        addr = "ipv4_addr" if fam == 4 else "ipv6_addr"
        rs.ensure_set(POOLS[fam], f"type {addr}; flags interval")
        rs.ensure_set(MASQ[fam], f"type {addr}; flags interval")
    wl = [nftstr.ifname_prefix(p) for p in s.interface_prefixes]
    allow = f"{MARK_ALLOW:#x}"
    clear = f"meta mark set meta mark & {MARK_CLEAR_MASK:#010x}"
    rs.set_chain("cali-from-wl", [
        clear,
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
    rs.set_chain("cali-prerouting", pre,
                 hook="type filter hook prerouting priority raw; policy accept;")
    fwd = ["ct state established,related accept", "ct state invalid drop"]
    fwd += [f"iifname {w} jump cali-from-wl" for w in wl]
    fwd += [f"oifname {w} jump cali-to-wl" for w in wl]
    fwd += [f"iifname {w} accept" for w in wl]
    fwd += [f"oifname {w} accept" for w in wl]
    rs.set_chain("cali-forward", fwd,
                 hook="type filter hook forward priority filter; policy accept;")
    to_host = {"Drop": "drop", "Accept": "accept", "Return": None}[
        s.default_endpoint_to_host_action]
    inp = ["ct state established,related accept", "ct state invalid drop"]
    for w in wl:
        inp.append(f"iifname {w} jump cali-from-wl")
        if to_host:
            inp.append(f"iifname {w} {to_host}")
    inp.append(f"iifname @{HEP_IFACES} meta l4proto . th dport @{FAILSAFE_IN} accept")
    inp.append(f"iifname vmap @{HEP_IN}")
    rs.set_chain("cali-input", inp,
                 hook="type filter hook input priority filter; policy accept;")
    out = ["ct state established,related accept", "ct state invalid drop"]
    out += [f"oifname {w} accept" for w in wl]   # host → local workloads (as Calico)
    out.append(f"oifname @{HEP_IFACES} meta l4proto . th dport @{FAILSAFE_OUT} accept")
    out.append(f"oifname vmap @{HEP_OUT}")
    rs.set_chain("cali-output", out,
                 hook="type filter hook output priority filter; policy accept;")
    rs.set_chain("cali-nat-postrouting", [
        f"ip saddr @{MASQ[4]} ip daddr != @{POOLS[4]} masquerade",
        f"ip6 saddr @{MASQ[6]} ip6 daddr != @{POOLS[6]} masquerade",
    ], hook="type nat hook postrouting priority srcnat; policy accept;")
