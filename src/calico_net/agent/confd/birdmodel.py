"""What :func:`~.builder.build_bird_model` decides, as plain data: the render
options (:class:`RenderOptions`), the model the template prints (:class:`BirdModel`,
:class:`FamilyModel`, :class:`Session`, :class:`NodeInfo`), the cluster defaults, and
the small readers both the builder and the template side share (resource metadata,
protocol names, log classes, names that can stand in bird.cfg).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from calico_net.agent.confd import values
from calico_net.agent.confd.birdtext import BirdTextError, bird_comment, check_bird_string

DEFAULT_AS_NUMBER = 64512
DEFAULT_RESTART_TIME = 120  # seconds, BIRD's and Calico's default

#: Annotation (on BGPConfiguration ``default`` or ``node.<name>``, and on a BGPPeer to
#: override for that peer) that switches BFD on ("true") or off ("false").
BFD_ANNOTATION = "calico-net.io/bfd"

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: ``passwords`` argument: a mapping from ``"<secret name>/<key>"`` to the password, or
#: a callable given the BGPPeer's ``secretKeyRef`` dict returning the password or None.
PasswordSource = Union[Mapping[str, str], Callable[[Mapping[str, Any]], "str | None"]]


class RenderError(ValueError):
    """The resources cannot be rendered into a configuration for this node."""


@dataclass(frozen=True)
class RenderOptions:
    """Agent-side switches that are not (or not only) in the datastore."""

    #: BFD on/off. None: take it from the ``calico-net.io/bfd`` annotation of the
    #: BGPConfiguration ``node.<name>`` or ``default`` (off when absent).
    bfd: bool | None = None
    bfd_interval_ms: int = 300
    bfd_multiplier: int = 5
    #: BGP graceful restart on every session (and in the kernel protocol).
    graceful_restart: bool = True
    #: Router id: an IPv4 address, "hash" (derived from the node name, as Calico's
    #: CALICO_ROUTER_ID=hash) or None (the node's IPv4 address).
    router_id: str | None = None
    #: Seconds between kernel table scans (netlink events are seen immediately).
    kernel_scan_time: int = 10
    #: Metric BIRD gives the routes it programs (None: BIRD's default, 32).
    kernel_metric: int | None = None
    #: Where BIRD logs; "stderr" when it runs in the foreground in calico/node.
    log_target: str = "stderr"
    #: Interfaces whose connected networks BIRD learns (protocol direct): interface
    #: name globs, ``-`` in front to exclude (``-"cali*"`` or ``-cali*``), in order.
    direct_interfaces: tuple[str, ...] = ('-"cali*"', '-"kube-ipvs*"', '"*"')
    #: Advertise blocks of IPPools with ``disabled: true`` (Calico does: a disabled
    #: pool gives out no new addresses, but its existing workloads stay reachable).
    #: ``disableBGPExport: true`` always stops advertisement.
    export_disabled_pools: bool = True
    #: Parser for label selectors; None imports calico_net.model.selector.parse_selector.
    selector_parser: Callable[[str], Any] | None = None
    #: Glob of the host side of workload interfaces (Felix's InterfacePrefix + "*"): a
    #: kernel route through one to an address outside this node's blocks is a borrowed
    #: address, which BIRD learns and advertises as a /32 (/128).
    workload_interfaces: str = "cali*"


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: Mapping[str, str]
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None
    as_number: int | None  # None: the cluster default
    rr_cluster_id: str  # "" when not a route reflector

    def ip(self, family: int) -> IPAddress | None:
        return self.ipv4 if family == 4 else self.ipv6


@dataclass
class Session:
    """One ``protocol bgp`` block."""

    name: str
    kind: str  # mesh | reflector | reflector-client | global | node
    family: int  # 4 or 6: the session's transport and its one channel
    neighbor: str
    port: int | None
    as_number: int
    description: str
    source_address: str | None = None
    passive: bool = False
    rr_client: bool = False
    rr_cluster_id: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    next_hop_keep: bool = False
    restart_time: int | None = None
    ttl_security_hops: int | None = None
    allow_local_as: int | None = None
    bfd: bool = False
    next_hop_self: bool = False
    keepalive_time: int | None = None
    local_as: int | None = None  # BGPPeer localASNumber: this session's own AS
    strict_bind: bool = False
    #: BGPFilter functions (.peers.FilterFunc names of this family), in order
    import_filters: list[str] = field(default_factory=list)
    export_filters: list[str] = field(default_factory=list)


@dataclass
class FamilyModel:
    family: int
    enabled: bool
    source_address: str | None
    export_pools: list[str]  # pools whose routes may be advertised
    accept_pools: list[str]  # every pool: what peers may send us
    skipped_pools: list[str]  # disableBGPExport pools, for the comment
    blocks: list[str]
    block_subnets: list[str]  # "<block>{len+1,max}": prefixes below a block
    #: IP-in-IP / VXLAN pools: the agent programs their routes, BIRD writes none of
    #: the routes it learns inside them into the kernel
    encap_pools: list[str] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    #: service CIDRs every node advertises (BGPConfiguration service*IPs)
    services: list[str] = field(default_factory=list)
    #: prefixAdvertisements: .advertise.CommunityRule, in order
    communities: list[Any] = field(default_factory=list)
    #: .peers.FilterFunc of every valid BGPFilter in this family
    filter_funcs: list[Any] = field(default_factory=list)


@dataclass
class BirdModel:
    node_name: str
    router_id: str
    as_number: int
    mesh_enabled: bool
    rr_cluster_id: str
    listen_port: int | None
    log_target: str
    log_classes: str
    debug_protocols: str
    graceful_restart: bool
    default_restart_time: int
    bfd: bool
    bfd_interval_ms: int
    bfd_multiplier: int
    kernel_scan_time: int
    kernel_metric: int | None
    direct_interfaces: list[tuple[bool, str]]  # (excluded, glob), in order
    families: list[FamilyModel]
    notes: list[str]  # comments on what was skipped and why
    #: The notes about objects skipped because a value in them is invalid (a subset
    #: of ``notes``); confd logs and counts these.
    rejected: list[str] = field(default_factory=list)
    workload_interfaces: str = "cali*"


def meta_of(res: Mapping[str, Any]) -> Mapping[str, Any]:
    return res.get("metadata") or {}


def spec_of(res: Mapping[str, Any]) -> Mapping[str, Any]:
    return res.get("spec") or {}


def one_line(text: object) -> str:
    """Text safe to put in a BIRD comment (one line, however hostile the input)."""
    return str(bird_comment(text))


def protocol_name(prefix: str, ip: IPAddress, port: int | None = None) -> str:
    """BIRD protocol name for a session, as Calico spells it: ``Mesh_198_18_0_12``,
    ``Global_2001_db8__5``, ``Node_198_18_0_9_port_1790``."""
    name = f"{prefix}_{str(ip).replace('.', '_').replace(':', '_')}"
    if port is not None:
        name += f"_port_{port}"
    return name


def resolve_password(
    ref: Mapping[str, Any], passwords: PasswordSource | None
) -> str | None:
    if passwords is None:
        return None
    if callable(passwords):
        return passwords(ref)
    return passwords.get(f"{ref.get('name', '')}/{ref.get('key', '')}")


def hash_router_id(node_name: str) -> str:
    digest = hashlib.sha256(node_name.encode()).digest()
    n = int.from_bytes(digest[:4], "big") or 1
    return str(ipaddress.IPv4Address(n))


def subnets_pattern(net: IPNetwork) -> str | None:
    """BIRD prefix pattern for everything strictly more specific than ``net``."""
    if net.prefixlen >= net.max_prefixlen:
        return None
    return f"{net}{{{net.prefixlen + 1},{net.max_prefixlen}}}"


LOG_CLASSES = {
    "debug": "all",
    "info": "{ info, remote, warning, error, auth, fatal, bug }",
    "warning": "{ warning, error, auth, fatal, bug }",
    "error": "{ error, auth, fatal, bug }",
    "fatal": "{ fatal, bug }",
    "none": "{ fatal, bug }",
}


MAX_NAME_BYTES = 253


def short_name(name: object, limit: int = 80) -> str:
    """A name for a note or log line: cut, so the reason after it stays visible."""
    text = str(name)
    return text if len(text) <= limit else text[:limit] + "…"


def check_name(name: object, what: str) -> str:
    """A resource name that can stand in a BIRD string (descriptions)."""
    text = check_bird_string(name, what, MAX_NAME_BYTES)
    if not text:
        raise BirdTextError(f"{what} is empty")
    return text


def node_info(res: Mapping[str, Any]) -> NodeInfo:
    meta, spec = meta_of(res), spec_of(res)
    bgp = spec.get("bgp") or {}
    asn = bgp.get("asNumber")
    return NodeInfo(
        name=check_name(meta.get("name", ""), "Node name"),
        labels=dict(meta.get("labels") or {}),
        ipv4=values.host_address(bgp.get("ipv4Address"), 4),  # type: ignore[arg-type]
        ipv6=values.host_address(bgp.get("ipv6Address"), 6),  # type: ignore[arg-type]
        as_number=values.as_number(asn) if asn not in (None, "") else None,
        rr_cluster_id=values.rr_cluster_id(bgp.get("routeReflectorClusterID")),
    )


def sort_ip(ip: IPAddress | None) -> tuple[int, int]:
    return (0, 0) if ip is None else (ip.version, int(ip))


KIND_ORDER = {"node": 0, "global": 1, "reflector": 2, "reflector-client": 2, "mesh": 3}
