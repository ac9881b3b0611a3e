"""The overlay's rules in table inet calico: which hosts may send IP-in-IP and VXLAN
to this one, as Felix's ``all-hosts-net`` / ``all-vxlan-net`` rules (felix/rules
static.go), and the drop of encapsulated packets that workloads send.

Owns the named sets ``cali-ipip-hosts4``/``6`` and ``cali-vxlan-hosts4``/``6`` (the
underlay addresses of the other nodes), the rule lines that use them (placed by
`base_chains.render_base`), and `EncapHosts`, the state `PolicyDataplane` keeps
between `set_encap_hosts` and the next apply.

The rules depend only on which encapsulations are in use and the VXLAN port
(`EncapLayout`); the hosts are set elements, so a node joining or leaving is an
element change (the netlink fast path), never a rule rewrite.
"""
from __future__ import annotations

import logging
from typing import Iterable, NamedTuple

from ..encap.types import DEFAULT_VXLAN_PORT
from . import nftstr
from .ruleset import Ruleset

log = logging.getLogger(__name__)

__all__ = ["IPIP_HOSTS", "VXLAN_HOSTS", "ENCAP_SETS", "EncapLayout", "EncapHosts",
           "input_rules", "output_rules", "from_workload_rules", "render_sets"]

IPIP_HOSTS = {4: "cali-ipip-hosts4", 6: "cali-ipip-hosts6"}
VXLAN_HOSTS = {4: "cali-vxlan-hosts4", 6: "cali-vxlan-hosts6"}
ENCAP_SETS = (*IPIP_HOSTS.values(), *VXLAN_HOSTS.values())
#: IP-in-IP by number: the name ("ipencap") depends on /etc/protocols
_IPIP = "meta l4proto 4"


class EncapLayout(NamedTuple):
    """Which encapsulations are in use: the only thing the rules depend on."""

    ipip: bool = False
    vxlan: bool = False
    vxlan_port: int = DEFAULT_VXLAN_PORT


def _vxlan(lay: EncapLayout) -> str:
    return f"udp dport {nftstr.number(lay.vxlan_port, 1, 65535)}"


def input_rules(lay: EncapLayout) -> list[str]:
    """First in cali-input (before the conntrack accept and everything else that
    could accept): encapsulated packets to a local address from a known host are
    accepted, all others dropped. Felix drops every IP-in-IP that is not from a
    host; so do we (and VXLAN to our port likewise)."""
    out: list[str] = []
    if lay.ipip:
        out += [f"{_IPIP} ip saddr @{IPIP_HOSTS[4]} fib daddr type local accept",
                f"{_IPIP} ip6 saddr @{IPIP_HOSTS[6]} fib daddr type local accept",
                f"{_IPIP} drop"]
    if lay.vxlan:
        v = _vxlan(lay)
        out += [f"{v} ip saddr @{VXLAN_HOSTS[4]} fib daddr type local accept",
                f"{v} ip6 saddr @{VXLAN_HOSTS[6]} fib daddr type local accept",
                f"{v} drop"]
    return out


def output_rules(lay: EncapLayout) -> list[str]:
    """In cali-output before host endpoint policy: this host's own tunnel traffic to
    the other hosts is accepted, so a host policy cannot cut the overlay by mistake
    (Felix: "Allow IPIP packets to other Calico hosts")."""
    out: list[str] = []
    if lay.ipip:
        out += [f"{_IPIP} ip daddr @{IPIP_HOSTS[4]} accept",
                f"{_IPIP} ip6 daddr @{IPIP_HOSTS[6]} accept"]
    if lay.vxlan:
        v = _vxlan(lay)
        out += [f"{v} ip daddr @{VXLAN_HOSTS[4]} accept",
                f"{v} ip6 daddr @{VXLAN_HOSTS[6]} accept"]
    return out


def from_workload_rules(lay: EncapLayout, allow_ipip: bool, allow_vxlan: bool) -> list[str]:
    """In cali-from-wl before the endpoint's egress policy: a workload could tunnel
    past its egress policy, so its encapsulated packets are dropped unless allowed
    (FelixConfiguration allowIPIPPacketsFromWorkloads / allowVXLANPacketsFromWorkloads)."""
    out: list[str] = []
    if lay.ipip and not allow_ipip:
        out.append(f"{_IPIP} drop")
    if lay.vxlan and not allow_vxlan:
        out.append(f"{_vxlan(lay)} drop")
    return out


def render_sets(rs: Ruleset, lay: EncapLayout) -> None:
    """The host sets of the encapsulations in use; the others deleted (with their
    rules gone in the same transaction)."""
    for on, names in ((lay.ipip, IPIP_HOSTS), (lay.vxlan, VXLAN_HOSTS)):
        for fam, name in names.items():
            if on:
                rs.ensure_set(name, "type ipv4_addr" if fam == 4 else "type ipv6_addr")
            else:
                rs.delete_set(name)


def _split(kind: str, addrs: Iterable[str]) -> tuple[set[str], set[str]]:
    """Addresses by family, canonical; one that is not an address is logged and left
    out (the rest stay correct)."""
    v4: set[str] = set()
    v6: set[str] = set()
    for a in addrs:
        try:
            text = nftstr.addr(a)
        except nftstr.NftStringError as exc:
            log.error("%s host address left out: %s", kind, exc)
            continue
        (v6 if ":" in text else v4).add(text)
    return v4, v6


class EncapHosts:
    """What `set_encap_hosts` last said, until the next apply renders it."""

    def __init__(self) -> None:
        self.layout = EncapLayout()
        self._hosts: tuple[frozenset[str] | None, frozenset[str] | None] = (None, None)
        self._dirty = False

    def set(self, ipip: frozenset[str] | None, vxlan: frozenset[str] | None,
            vxlan_port: int) -> bool:
        """Record the hosts; True if the rules change (the base chains must be
        rendered again), False if at most set elements do."""
        if type(vxlan_port) is not int or not 0 < vxlan_port < 65536:
            log.error("VXLAN port %s is not a port; using %d", nftstr.show(vxlan_port),
                      DEFAULT_VXLAN_PORT)
            vxlan_port = DEFAULT_VXLAN_PORT
        lay = EncapLayout(ipip is not None, vxlan is not None,
                          vxlan_port if vxlan is not None else DEFAULT_VXLAN_PORT)
        hosts = (ipip, vxlan)
        changed = lay != self.layout
        if changed or hosts != self._hosts:
            self.layout, self._hosts, self._dirty = lay, hosts, True
        return changed

    def render(self, rs: Ruleset) -> None:
        """The sets' elements (after `render_sets` made the sets of the layout)."""
        if not self._dirty:
            return
        for addrs, names, kind in ((self._hosts[0], IPIP_HOSTS, "IP-in-IP"),
                                   (self._hosts[1], VXLAN_HOSTS, "VXLAN")):
            if addrs is None:
                continue
            v4, v6 = _split(kind, addrs)
            rs.replace_elements(names[4], v4)
            rs.replace_elements(names[6], v6)
        self._dirty = False
