"""Remove everything the datastore holds for a node that leaves the cluster.

What `calicoctl delete node NAME` does (as Calico's does for an etcd datastore), what
`calico.net.node state=absent` and playbooks/remove_node.yml do. In this order, so
nothing is left pointing at something already gone:

1. the node's WorkloadEndpoints (`spec.node`);
2. the IPAM addresses allocated on it, released by handle (so the handles go too),
   and those without a handle by address;
3. its block affinities (blocks it owned become free once empty);
4. the BGPPeers that name it (`spec.node`), its per-node FelixConfiguration
   `node.<name>` and BGPConfiguration `node.<name>`;
5. the Node itself.

`plan_node_cleanup` only reads and says what would happen (check mode); `clean_node`
does it and returns the same list of actions. Either is safe to repeat: a node that
is already gone yields no actions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from calico_net.datastore import Datastore, EtcdClient
from calico_net.datastore.errors import ResourceNotFound


@dataclass
class _Plan:
    weps: list[tuple[str, str | None]] = field(default_factory=list)
    handles: list[str] = field(default_factory=list)
    loose_ips: list[str] = field(default_factory=list)
    affinities: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    singles: list[tuple[str, str]] = field(default_factory=list)

    def actions(self) -> list[str]:
        out = [f"delete WorkloadEndpoint {ns}/{name}" for name, ns in self.weps]
        out += [f"release IPAM handle {h}" for h in self.handles]
        if self.loose_ips:
            out.append(f"release {len(self.loose_ips)} addresses without a handle: {', '.join(self.loose_ips)}")
        if self.affinities:
            out.append(f"release block affinities {', '.join(self.affinities)}")
        out += [f"delete BGPPeer {p}" for p in self.peers]
        out += [f"delete {kind} {name}" for kind, name in self.singles]
        return out


def _plan(name: str, ds: Datastore, ipam: Any, include_node: bool = True) -> _Plan:
    plan = _Plan()
    weps, _ = ds.list("WorkloadEndpoint")
    for wep in weps:
        if (wep.get("spec") or {}).get("node") == name:
            meta = wep["metadata"]
            plan.weps.append((meta["name"], meta.get("namespace")))
    handles: set[str] = set()
    blocks = ipam.blocks()
    for block in blocks:
        for ip, attr in block.allocated():
            if (attr.get("secondary") or {}).get("node") != name:
                continue
            if attr.get("handle_id"):
                handles.add(attr["handle_id"])
            else:
                plan.loose_ips.append(str(ip))
    plan.handles = sorted(handles)
    plan.affinities = sorted({str(a.cidr) for a in ipam.affinities(name)} |
                             {str(b.cidr) for b in blocks if b.host == name})
    peers, _ = ds.list("BGPPeer")
    plan.peers = sorted(p["metadata"]["name"] for p in peers if (p.get("spec") or {}).get("node") == name)
    singles = [("FelixConfiguration", f"node.{name}"), ("BGPConfiguration", f"node.{name}")]
    for kind, res in singles + ([("Node", name)] if include_node else []):
        try:
            ds.get(kind, res)
        except ResourceNotFound:
            continue
        plan.singles.append((kind, res))
    return plan


def _ipam(client: EtcdClient, ds: Datastore) -> Any:
    from calico_net.ipam import IPAM
    return IPAM(client, ds)


def plan_node_cleanup(name: str, client: EtcdClient, ds: Datastore | None = None, *,
                      include_node: bool = True) -> list[str]:
    """What `clean_node` would do, as one line per action; changes nothing."""
    ds = ds or Datastore(client)
    return _plan(name, ds, _ipam(client, ds), include_node).actions()


def clean_node(name: str, client: EtcdClient, ds: Datastore | None = None, *,
               include_node: bool = True) -> list[str]:
    """Remove the node and everything that belongs to it (the Node itself too unless
    `include_node` is false: the caller deletes it); returns what was done."""
    ds = ds or Datastore(client)
    ipam = _ipam(client, ds)
    plan = _plan(name, ds, ipam, include_node)
    for wep, ns in plan.weps:
        try:
            ds.delete("WorkloadEndpoint", wep, ns)
        except ResourceNotFound:
            pass
    for handle in plan.handles:
        ipam.release_by_handle(handle)
    if plan.loose_ips:
        ipam.release_ips(plan.loose_ips)
    if plan.affinities:
        ipam.release_host_affinities(name)
    for peer in plan.peers:
        try:
            ds.delete("BGPPeer", peer)
        except ResourceNotFound:
            pass
    for kind, res in plan.singles:
        try:
            ds.delete(kind, res)
        except ResourceNotFound:
            pass
    return plan.actions()
