"""The Felix parameters the policy dataplane takes (`FelixSettings`), Calico's
failsafe port syntax, and what one apply did (`ApplyStats`)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from . import nftstr

__all__ = ["FelixSettings", "ApplyStats", "DEFAULT_FAILSAFE_INBOUND", "DEFAULT_FAILSAFE_OUTBOUND",
           "FAILSAFE_PROTOS", "Failsafe", "parse_failsafe_ports"]

DEFAULT_FAILSAFE_INBOUND: tuple[tuple[str, int], ...] = (
    ("tcp", 22), ("udp", 68), ("tcp", 179), ("tcp", 2379), ("tcp", 2380),
    ("tcp", 5473), ("tcp", 6443), ("tcp", 6666), ("tcp", 6667))
DEFAULT_FAILSAFE_OUTBOUND: tuple[tuple[str, int], ...] = (
    ("udp", 53), ("udp", 67), ("tcp", 179), ("tcp", 2379), ("tcp", 2380),
    ("tcp", 5473), ("tcp", 6443), ("tcp", 6666), ("tcp", 6667))

FAILSAFE_PROTOS = {"tcp": "tcp", "udp": "udp", "sctp": "sctp"}


#: a failsafe entry: (proto, port), or (proto, port, net) when limited to a network
Failsafe = tuple  # tuple[str, int] | tuple[str, int, str]


def _failsafe_net(net: Any) -> str | None:
    """A failsafe entry's network in canonical text (it becomes nft rule text, so
    only what ipaddress prints gets through); a bare address is a host network."""
    if net is None or net == "":
        return None
    try:
        return str(ipaddress.ip_network(str(net), strict=True))
    except ValueError:
        raise ValueError(f"bad failsafe net {net!r} (want a CIDR without host bits)") from None


def parse_failsafe_ports(value: str | Iterable[Any]) -> list[Failsafe]:
    """Calico's failsafe syntax: ``"tcp:22, udp:68, tcp:198.18.0.0/24:2379"`` or a
    list of such strings, of (proto, port[, net]) tuples or of ``{protocol, port,
    net}`` dicts (FelixConfiguration). An entry without a net is a (proto, port)
    pair; one limited to a network is (proto, port, net)."""
    items: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    out: list[Failsafe] = []
    for item in items:
        net: Any = None
        if isinstance(item, Mapping):
            proto, port, net = str(item.get("protocol", "tcp")), int(item["port"]), item.get("net")
        elif isinstance(item, (tuple, list)):
            proto, port = str(item[0]), int(item[1])
            net = item[2] if len(item) > 2 else None
        else:
            text = str(item).strip()
            if not text or text.lower() == "none":
                continue
            head, _, port_s = text.rpartition(":")
            proto, _, net = head.partition(":")
            proto = proto or "tcp"
            port = int(port_s)
        proto = proto.lower()
        if proto not in FAILSAFE_PROTOS or not 0 < port < 65536:
            raise ValueError(f"bad failsafe port {item!r} (want proto:port, proto tcp/udp/sctp)")
        cidr = _failsafe_net(net)
        out.append((proto, port, cidr) if cidr else (proto, port))
    return out


@dataclass
class FelixSettings:
    """The Felix parameters the policy dataplane uses (the runtime maps config onto it)."""

    failsafe_inbound: list[Failsafe] = field(
        default_factory=lambda: list(DEFAULT_FAILSAFE_INBOUND))
    failsafe_outbound: list[Failsafe] = field(
        default_factory=lambda: list(DEFAULT_FAILSAFE_OUTBOUND))
    #: what happens to workload → host traffic after the workload's egress policy:
    #: "Drop" (Calico's default), "Accept" or "Return" (leave it to other host rules)
    default_endpoint_to_host_action: str = "Drop"
    #: program NAT outgoing for IPPools with natOutgoing: true
    nat_outgoing: bool = True
    #: NATOutgoingAddress: SNAT IPv4 NAT-outgoing traffic to this address instead of
    #: masquerading to the outgoing interface's (None: masquerade)
    nat_outgoing_address: str | None = None
    #: NATPortRange: (min, max) source ports for NAT-outgoing TCP and UDP (None: the
    #: kernel's choice)
    nat_port_range: tuple[int, int] | None = None
    log_prefix: str = "calico-packet"
    #: workload interface name prefixes (FELIX_INTERFACEPREFIX, comma separated
    #: there; each one Felix's grammar, see `nftstr.ifname_prefix`). Only workload
    #: endpoints whose interface starts with one of them are programmed.
    interface_prefixes: tuple[str, ...] = ("cali",)
    #: DisableConntrackInvalidCheck: no `ct state invalid drop` in the base chains
    #: (Felix's default keeps the check)
    drop_invalid: bool = True
    #: strict reverse-path check on workload interfaces (anti-spoofing)
    anti_spoofing: bool = True
    #: while IP-in-IP (VXLAN) is in use, accept encapsulated packets workloads send
    #: (FelixConfiguration allowIPIPPacketsFromWorkloads / allowVXLANPacketsFromWorkloads;
    #: off: dropped before egress policy, a tunnel could carry traffic past it)
    allow_ipip_from_workloads: bool = False
    allow_vxlan_from_workloads: bool = False
    #: NftablesFilterDenyAction: what a Deny rule and the end-of-tier and no-profile
    #: drops of the endpoint chains do, "Drop" or "Reject" (nft ``reject``: ICMP port
    #: unreachable, as Felix's nftables mode)
    filter_deny_action: str = "Drop"

    def __post_init__(self) -> None:
        act = self.default_endpoint_to_host_action.capitalize()
        if act not in ("Drop", "Accept", "Return"):
            raise ValueError(f"defaultEndpointToHostAction {self.default_endpoint_to_host_action!r}"
                             " is not Drop, Accept or Return")
        self.default_endpoint_to_host_action = act
        deny = str(self.filter_deny_action).strip().capitalize()
        if deny not in ("Drop", "Reject"):
            raise ValueError(f"nftablesFilterDenyAction {self.filter_deny_action!r} is not Drop or Reject")
        self.filter_deny_action = deny
        self.failsafe_inbound = parse_failsafe_ports(self.failsafe_inbound)
        self.failsafe_outbound = parse_failsafe_ports(self.failsafe_outbound)
        if isinstance(self.interface_prefixes, str):
            self.interface_prefixes = tuple(self.interface_prefixes.split(","))
        self.interface_prefixes = tuple(self.interface_prefixes)
        if not self.interface_prefixes:
            raise ValueError("interface_prefixes is empty")
        for p in self.interface_prefixes:
            nftstr.ifname_prefix(p)          # NftStringError (a ValueError) if bad
        if self.nat_outgoing_address is not None:
            addr = ipaddress.ip_address(str(self.nat_outgoing_address))  # ValueError if bad
            if addr.version != 4:
                raise ValueError(f"natOutgoingAddress {self.nat_outgoing_address!r} is not IPv4")
            self.nat_outgoing_address = str(addr)
        if self.nat_port_range is not None:
            lo, hi = (int(x) for x in self.nat_port_range)
            if not 0 <= lo <= hi <= 65535 or hi == 0:
                raise ValueError(f"natPortRange {self.nat_port_range!r} is not min:max "
                                 "with 0 <= min <= max <= 65535, max > 0")
            self.nat_port_range = (lo, hi)
        # (rules append ": " to it; nft log prefixes are at most 127 bytes)
        nftstr.log_prefix(self.log_prefix + ": ")


@dataclass
class ApplyStats:
    full: bool = False            # whole table (re)loaded
    adopted: bool = False         # first apply found our exact table already loaded
    skipped: bool = False         # nothing to write
    netlink: bool = False         # element-only change sent as netlink messages, no nft run
    seconds: float = 0.0
    index_seconds: float = 0.0
    render_seconds: float = 0.0
    write_seconds: float = 0.0
    endpoints: int = 0
    policies: int = 0
    chains_written: int = 0
    chains_deleted: int = 0
    elements_added: int = 0
    elements_deleted: int = 0
    script_lines: int = 0

