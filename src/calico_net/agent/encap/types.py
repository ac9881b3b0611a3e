"""The desired overlay state: what `state.desired()` computes and `kernel.EncapKernel`
writes. Plain frozen values, compared by equality, so the kernel layer can diff the
last applied state against the next one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: device names, Calico's
IPIP_DEVICE = "tunl0"
VXLAN_DEVICE = "vxlan.calico"
VXLAN_V6_DEVICE = "vxlan-v6.calico"
TUNNEL_DEVICES = (IPIP_DEVICE, VXLAN_DEVICE, VXLAN_V6_DEVICE)

#: Calico's defaults (FelixConfiguration vxlanVNI / vxlanPort)
DEFAULT_VXLAN_VNI = 4096
DEFAULT_VXLAN_PORT = 4789

#: bytes each encapsulation adds (Calico's figures)
IPIP_OVERHEAD = 20
VXLAN_OVERHEAD = 50
VXLAN_V6_OVERHEAD = 70

#: IPAM handles and `type` attributes of tunnel addresses (Calico's)
IPIP_HANDLE = "ipip-tunnel-addr-{node}"
VXLAN_HANDLE = "vxlan-tunnel-addr-{node}"
VXLAN_V6_HANDLE = "vxlan-v6-tunnel-addr-{node}"
IPIP_ATTR_TYPE = "ipipTunnelAddress"
VXLAN_ATTR_TYPE = "vxlanTunnelAddress"
VXLAN_V6_ATTR_TYPE = "vxlanV6TunnelAddress"


@dataclass(frozen=True)
class TunnelDevice:
    """One tunnel device. `kind` is "ipip" or "vxlan"; `address` the tunnel address
    (no prefix length; it is put on the device as a /32 or /128), None while the node
    has none yet. The vxlan fields are unused for ipip."""

    name: str
    kind: str
    address: str | None
    mtu: int
    vni: int = 0
    port: int = 0
    local: str | None = None      # underlay source address (the node's IP)
    parent: str | None = None     # underlay interface holding `local`
    mac: str | None = None        # the device's MAC (Node vxlanTunnelMACAddr[V6])


@dataclass(frozen=True)
class TunnelRoute:
    """A route to a remote node's block: `dst` a CIDR, via `gateway` out of `dev`;
    `onlink` for tunnel devices (the gateway is not on a connected subnet)."""

    dst: str
    gateway: str
    dev: str
    onlink: bool


@dataclass(frozen=True)
class Neighbour:
    """A permanent ARP/NDP entry on a VXLAN device: remote tunnel address -> its MAC."""

    dev: str
    ip: str
    mac: str


@dataclass(frozen=True)
class FdbEntry:
    """A permanent forwarding entry on a VXLAN device: remote tunnel MAC -> the
    remote node's underlay address."""

    dev: str
    mac: str
    dst: str


@dataclass
class Desired:
    """Everything the overlay needs on this host. Empty = no encapsulated pool: the
    kernel layer then removes whatever it made."""

    devices: dict[str, TunnelDevice] = field(default_factory=dict)
    routes: set[TunnelRoute] = field(default_factory=set)
    neighbours: set[Neighbour] = field(default_factory=set)
    fdb: set[FdbEntry] = field(default_factory=set)
    #: this node's own blocks in encapsulated pools, as blackhole routes, when no
    #: BIRD writes them (CALICO_NETWORKING_BACKEND vxlan or none): an address of
    #: the block with no workload behind it is dropped here, not sent back out
    blackholes: set[str] = field(default_factory=set)
    #: underlay addresses IP-in-IP may come from (None: no IPIP pool, no rule at all)
    ipip_sources: frozenset[str] | None = None
    #: underlay addresses VXLAN may come from (None: no VXLAN pool)
    vxlan_sources: frozenset[str] | None = None
    vxlan_port: int = DEFAULT_VXLAN_PORT
    #: the MTU workloads get (written to /var/lib/calico/mtu); 0 = not known
    workload_mtu: int = 0
