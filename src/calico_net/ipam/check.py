"""Consistency check of IPAM against the endpoints and nodes (`calicoctl ipam check`).

Reads everything once — blocks, affinity keys, handles, IPPools, Nodes and
WorkloadEndpoints — and cross-checks them in memory:

* allocations without endpoints: an allocated address no WorkloadEndpoint carries
  (leaked by a runtime that never called DEL). Tunnel addresses (`type` attribute
  `*TunnelAddress`) belong to their node, not to an endpoint: one is in use when its
  node exists and the Node's field for that type (`spec.bgp.ipv4IPIPTunnelAddr`,
  `spec.ipv4VXLANTunnelAddr`, ...) holds exactly that address, and leaked otherwise
  (the node is gone, or its Node no longer refers to it: calico/node assigned
  another), listed with its handle so `ipam release --from-report` frees it;
* endpoints without allocations: an endpoint address inside an IPPool that IPAM does
  not have allocated (addresses outside every pool came from another IPAM and are
  not ours to judge);
* addresses carried by two endpoints;
* blocks affine to nodes that no longer exist (no Node resource);
* affinity keys and block affinities that disagree (a key without its block, a block
  whose key is missing or names another node);
* handles whose per-block counts disagree with the blocks' attributes.

The check only reads; `calicoctl ipam release` and `release_host_affinities` fix.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from calico_net.datastore.etcd import show_key
from calico_net.ipam.block import ATTR_NODE, ATTR_TYPE, IPAddress, parse_ip
from calico_net.ipam.client import IPAM
from calico_net.ipam.pools import pool_for


@dataclass
class Leak:
    ip: str
    handle_id: str | None
    node: str | None
    block: str


@dataclass
class CheckReport:
    blocks: int = 0
    allocations: int = 0
    endpoints: int = 0
    nodes: int = 0
    allocations_without_endpoints: list[Leak] = field(default_factory=list)
    endpoints_without_allocations: list[dict[str, str]] = field(default_factory=list)
    duplicate_endpoint_ips: list[dict[str, Any]] = field(default_factory=list)
    blocks_of_missing_nodes: list[dict[str, str]] = field(default_factory=list)
    affinity_mismatches: list[str] = field(default_factory=list)
    handle_mismatches: list[str] = field(default_factory=list)
    unreadable_blocks: list[dict[str, str]] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return (len(self.allocations_without_endpoints) + len(self.endpoints_without_allocations)
                + len(self.duplicate_endpoint_ips) + len(self.blocks_of_missing_nodes)
                + len(self.affinity_mismatches) + len(self.handle_mismatches)
                + len(self.unreadable_blocks))

    @property
    def clean(self) -> bool:
        return self.problems == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": {"blocks": self.blocks, "allocations": self.allocations, "endpoints": self.endpoints,
                        "nodes": self.nodes, "problems": self.problems},
            "allocationsWithoutEndpoints": [vars(x) for x in self.allocations_without_endpoints],
            "endpointsWithoutAllocations": self.endpoints_without_allocations,
            "duplicateEndpointIPs": self.duplicate_endpoint_ips,
            "blocksOfMissingNodes": self.blocks_of_missing_nodes,
            "affinityMismatches": self.affinity_mismatches,
            "handleMismatches": self.handle_mismatches,
            "unreadableBlocks": self.unreadable_blocks,
        }


def _endpoint_ips(doc: dict[str, Any]) -> list[IPAddress]:
    out = []
    for text in (doc.get("spec") or {}).get("ipNetworks") or []:
        try:
            n = ipaddress.ip_network(str(text), strict=False)
        except ValueError:
            continue
        if n.num_addresses == 1:
            out.append(n.network_address)
    return out


def _wep_name(doc: dict[str, Any]) -> str:
    md = doc.get("metadata") or {}
    return f"{md.get('namespace', '')}/{md.get('name', '')}"


#: where a Node keeps each kind of tunnel address (Calico's `type` attribute values;
#: the path is under the Node's spec)
TUNNEL_FIELDS: dict[str, tuple[str, ...]] = {
    "ipipTunnelAddress": ("bgp", "ipv4IPIPTunnelAddr"),
    "vxlanTunnelAddress": ("ipv4VXLANTunnelAddr",),
    "vxlanV6TunnelAddress": ("ipv6VXLANTunnelAddr",),
    "wireguardTunnelAddress": ("wireguard", "interfaceIPv4Address"),
    "wireguardV6TunnelAddress": ("wireguard", "interfaceIPv6Address"),
}


def _tunnel_addresses(doc: dict[str, Any]) -> dict[str, IPAddress]:
    """`type` -> the address the Node's field for it holds (fields that do not parse
    as an address hold none)."""
    out: dict[str, IPAddress] = {}
    for attr_type, path in TUNNEL_FIELDS.items():
        value: Any = doc.get("spec") or {}
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and value:
            try:
                out[attr_type] = ipaddress.ip_address(value.strip())
            except ValueError:
                continue
    return out


def _tunnel_in_use(a: IPAddress, attr_type: str, holder: str | None,
                   node_docs: dict[str, dict[str, Any]]) -> bool:
    if holder not in node_docs:
        return False
    if attr_type not in TUNNEL_FIELDS:
        return True  # a kind we do not know the field of: its node's, while the node exists
    return _tunnel_addresses(node_docs[holder]).get(attr_type) == a


def check(ipam: IPAM) -> CheckReport:
    ds = ipam.datastore
    report = CheckReport()
    unreadable: list[tuple[str, str]] = []
    blocks = ipam.blocks(unreadable=unreadable)
    report.unreadable_blocks = [{"key": show_key(k), "reason": r} for k, r in unreadable]
    affinities = ipam.affinities()
    handles = ipam.handles()
    pools = ipam.pools()
    node_docs = {d["metadata"]["name"]: d for d in ds.list("Node")[0]}
    nodes = set(node_docs)
    weps, _ = ds.list("WorkloadEndpoint")
    report.blocks, report.endpoints, report.nodes = len(blocks), len(weps), len(nodes)

    # endpoints by address
    by_ip: dict[IPAddress, list[str]] = {}
    for doc in weps:
        for a in _endpoint_ips(doc):
            by_ip.setdefault(a, []).append(_wep_name(doc))
    for a, names in sorted(by_ip.items(), key=lambda kv: (kv[0].version, int(kv[0]))):
        if len(names) > 1:
            report.duplicate_endpoint_ips.append({"ip": str(a), "endpoints": sorted(names)})

    # allocations
    allocated: set[IPAddress] = set()
    counted: dict[str, dict[str, int]] = {}
    for blk in blocks:
        for a, attr in blk.allocated():
            report.allocations += 1
            allocated.add(a)
            hid = attr.get("handle_id")
            sec = attr.get("secondary") or {}
            if hid:
                per = counted.setdefault(hid, {})
                per[str(blk.cidr)] = per.get(str(blk.cidr), 0) + 1
            if a in by_ip:
                continue
            holder = sec.get(ATTR_NODE) or blk.host
            attr_type = str(sec.get(ATTR_TYPE, ""))
            if attr_type.endswith("TunnelAddress") and _tunnel_in_use(a, attr_type, holder, node_docs):
                continue
            report.allocations_without_endpoints.append(Leak(str(a), hid, holder, str(blk.cidr)))

    for a, names in by_ip.items():
        if a not in allocated and pool_for(pools, a) is not None:
            for name in names:
                report.endpoints_without_allocations.append({"endpoint": name, "ip": str(a)})

    # nodes and affinities
    for blk in blocks:
        if blk.host and blk.host not in nodes:
            report.blocks_of_missing_nodes.append({"block": str(blk.cidr), "node": blk.host,
                                                   "inUse": str(blk.in_use)})
    keyed = {(a.node, a.cidr) for a in affinities}
    block_hosts = {blk.cidr: blk.host for blk in blocks}
    for a in affinities:
        if a.cidr not in block_hosts:
            report.affinity_mismatches.append(f"affinity of {a.node} to {a.cidr} has no block")
        elif block_hosts[a.cidr] != a.node:
            report.affinity_mismatches.append(
                f"affinity of {a.node} to {a.cidr}, but the block says {block_hosts[a.cidr] or 'no node'}")
    for cidr, host in block_hosts.items():
        if host and (host, cidr) not in keyed:
            report.affinity_mismatches.append(f"block {cidr} is affine to {host} but {host} has no affinity key")

    # handles
    for hid in sorted(set(handles) | set(counted)):
        want = {k: v for k, v in (handles.get(hid) or {}).items() if v}
        have = counted.get(hid, {})
        if hid not in handles:
            report.handle_mismatches.append(f"handle {hid} holds {sum(have.values())} address(es) but has no handle record")
        elif want != have:
            report.handle_mismatches.append(f"handle {hid} records {want} but the blocks hold {have}")
    return report


def endpoints_using(ipam: IPAM, ips: list[str | IPAddress]) -> dict[str, list[str]]:
    """Which WorkloadEndpoints carry each of the addresses."""
    wanted = {parse_ip(i) for i in ips}
    out: dict[str, list[str]] = {}
    for doc in ipam.datastore.list("WorkloadEndpoint")[0]:
        for a in _endpoint_ips(doc):
            if a in wanted:
                out.setdefault(str(a), []).append(_wep_name(doc))
    return out


__all__ = ["CheckReport", "Leak", "check", "endpoints_using"]
