"""The Felix parameters the policy dataplane takes (`FelixSettings`), Calico's
failsafe port syntax, and what one apply did (`ApplyStats`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from . import nftstr

__all__ = ["FelixSettings", "ApplyStats", "DEFAULT_FAILSAFE_INBOUND", "DEFAULT_FAILSAFE_OUTBOUND",
           "FAILSAFE_PROTOS", "parse_failsafe_ports"]

DEFAULT_FAILSAFE_INBOUND: tuple[tuple[str, int], ...] = (
    ("tcp", 22), ("udp", 68), ("tcp", 179), ("tcp", 2379), ("tcp", 2380),
    ("tcp", 5473), ("tcp", 6443), ("tcp", 6666), ("tcp", 6667))
DEFAULT_FAILSAFE_OUTBOUND: tuple[tuple[str, int], ...] = (
    ("udp", 53), ("udp", 67), ("tcp", 179), ("tcp", 2379), ("tcp", 2380),
    ("tcp", 5473), ("tcp", 6443), ("tcp", 6666), ("tcp", 6667))

FAILSAFE_PROTOS = {"tcp": "tcp", "udp": "udp", "sctp": "sctp"}


def parse_failsafe_ports(value: str | Iterable[Any]) -> list[tuple[str, int]]:
    """Calico's failsafe syntax: ``"tcp:22, udp:68"`` or a list of such strings,
    of (proto, port) pairs or of ``{protocol, port}`` dicts (FelixConfiguration)."""
    items: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    out: list[tuple[str, int]] = []
    for item in items:
        if isinstance(item, Mapping):
            proto, port = str(item.get("protocol", "tcp")), int(item["port"])
        elif isinstance(item, (tuple, list)):
            proto, port = str(item[0]), int(item[1])
        else:
            text = str(item).strip()
            if not text or text.lower() == "none":
                continue
            proto, _, port_s = text.rpartition(":")
            proto = proto or "tcp"
            port = int(port_s)
        proto = proto.lower()
        if proto not in FAILSAFE_PROTOS or not 0 < port < 65536:
            raise ValueError(f"bad failsafe port {item!r} (want proto:port, proto tcp/udp/sctp)")
        out.append((proto, port))
    return out


@dataclass
class FelixSettings:
    """The Felix parameters the policy dataplane uses (the runtime maps config onto it)."""

    failsafe_inbound: list[tuple[str, int]] = field(
        default_factory=lambda: list(DEFAULT_FAILSAFE_INBOUND))
    failsafe_outbound: list[tuple[str, int]] = field(
        default_factory=lambda: list(DEFAULT_FAILSAFE_OUTBOUND))
    #: what happens to workload → host traffic after the workload's egress policy:
    #: "Drop" (Calico's default), "Accept" or "Return" (leave it to other host rules)
    default_endpoint_to_host_action: str = "Drop"
    #: program NAT outgoing for IPPools with natOutgoing: true
    nat_outgoing: bool = True
    log_prefix: str = "calico-packet"
    #: workload interface name prefixes (FELIX_INTERFACEPREFIX, comma separated
    #: there; each one Felix's grammar, see `nftstr.ifname_prefix`). Only workload
    #: endpoints whose interface starts with one of them are programmed.
    interface_prefixes: tuple[str, ...] = ("cali",)
    #: strict reverse-path check on workload interfaces (anti-spoofing)
    anti_spoofing: bool = True

    def __post_init__(self) -> None:
        act = self.default_endpoint_to_host_action.capitalize()
        if act not in ("Drop", "Accept", "Return"):
            raise ValueError(f"defaultEndpointToHostAction {self.default_endpoint_to_host_action!r}"
                             " is not Drop, Accept or Return")
        self.default_endpoint_to_host_action = act
        self.failsafe_inbound = parse_failsafe_ports(self.failsafe_inbound)
        self.failsafe_outbound = parse_failsafe_ports(self.failsafe_outbound)
        if isinstance(self.interface_prefixes, str):
            self.interface_prefixes = tuple(self.interface_prefixes.split(","))
        self.interface_prefixes = tuple(self.interface_prefixes)
        if not self.interface_prefixes:
            raise ValueError("interface_prefixes is empty")
        for p in self.interface_prefixes:
            nftstr.ifname_prefix(p)          # NftStringError (a ValueError) if bad
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

