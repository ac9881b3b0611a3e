"""Lifecycle garbage collection (`calicoctl ipam gc`): what is left behind when
containers die without a CNI DEL or nodes vanish without `calicoctl delete node`.

What is collected, in this order (each kind frees the next: an endpoint's deletion
leaks its addresses, releasing addresses empties blocks):

* WorkloadEndpoints whose node no longer exists (no Node resource), and, with
  `node_local`, endpoints of this host whose host-side interface is not present
  (the container's network namespace is gone, which takes its veth pair with it);
* allocations no endpoint uses, as `calico_net.ipam.check` finds them (the one leak
  detector): ordinary addresses whose handle no endpoint carries, and tunnel
  addresses whose node is gone or whose Node field no longer holds them;
* handles no allocation names (as `ipam check -o FILE` reports `leakedHandles`);
* block affinities of nodes that do not exist: the affinity key goes, an empty block
  is deleted, a block still holding addresses loses its affinity.

Safety against races with CNI ADD and everything else:

* everything is read at one etcd revision R, and every deletion is one transaction
  that compares each key it touches against its mod revision at R (a block, its
  handles, the endpoint, the affinity); an allocation's release also requires that
  no WorkloadEndpoint was created or changed since R (a CNI ADD that allocated before
  R and writes its endpoint now wins), and what depends on a node being gone requires
  that its Node key is still absent. A failed compare skips the item; the next pass
  re-reads and decides again (bounded passes), so a live object is never removed;
* an allocation (the CNI plugin's `timestamp` attribute) or endpoint
  (`creationTimestamp`) younger than the grace period is never collected, which
  covers a CNI ADD between its allocation and its endpoint write. Objects that carry
  no time (handles, affinities, allocations made without one) are judged by the
  compare-and-swap alone and reported with age unknown.

`collect` with `apply=False` only reads and returns the plan.
"""
from __future__ import annotations

import datetime as _dt
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from calico_net.datastore.etcd import (EtcdClient, cmp_absent, cmp_mod_revision, cmp_prefix_unchanged_since,
                                       op_delete, op_put)
from calico_net.datastore.store import kind_prefix, resource_key
from calico_net.ipam import keys
from calico_net.ipam.block import ATTR_TYPE, AllocationBlock, parse_cidr, parse_ip
from calico_net.ipam.check import check
from calico_net.ipam.client import IPAM
from calico_net.ipam.records import Handle, dumps, handle_blocks

log = logging.getLogger(__name__)

WEP_PREFIX = kind_prefix("WorkloadEndpoint")
MAX_PASSES = 100
MAX_STALLED = 3
# addresses released per block transaction: with their handles it stays under etcd's
# default --max-txn-ops (128) on both compares and operations
MAX_PER_TXN = 60
DEFAULT_GRACE = 600.0


@dataclass
class Finding:
    """One object gc would delete (or change), why, and how old it is."""

    kind: str  # WorkloadEndpoint | Allocation | Handle | BlockAffinity
    name: str
    reason: str
    age: float | None  # seconds; None when the object carries no time
    protected: bool = False  # younger than the grace period: reported, never collected
    detail: dict[str, Any] = field(default_factory=dict)
    compares: list[dict[str, Any]] = field(default_factory=list, repr=False)
    ops: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "name": self.name, "reason": self.reason,
                               "age": None if self.age is None else int(self.age)}
        if self.protected:
            out["protected"] = "younger than the grace period"
        out.update(self.detail)
        return out


@dataclass
class GCResult:
    dry_run: bool
    grace: float
    findings: list[Finding] = field(default_factory=list)  # the first pass's plan
    applied: list[Finding] = field(default_factory=list)
    skipped: list[Finding] = field(default_factory=list)  # changed under gc: left alone

    def to_json(self) -> dict[str, Any]:
        return {"dryRun": self.dry_run, "graceSeconds": int(self.grace),
                "findings": [f.to_json() for f in self.findings],
                "applied": [f.to_json() for f in self.applied],
                "skipped": [f.to_json() for f in self.skipped]}


# --- ages ------------------------------------------------------------------------


def parse_time(text: Any) -> _dt.datetime | None:
    """The CNI plugin's `timestamp` ("2026-01-02 03:04:05 UTC", Calico's Go form with
    fractions and "+0000 UTC") or a `creationTimestamp` ("2026-01-02T03:04:05Z"): the
    first 19 characters are the UTC time in both. Anything else: no time."""
    if not isinstance(text, str) or len(text) < 19:
        return None
    try:
        return _dt.datetime.strptime(text[:19].replace("T", " "), "%Y-%m-%d %H:%M:%S").replace(
            tzinfo=_dt.timezone.utc)
    except ValueError:
        return None


def _age(text: Any, now: _dt.datetime) -> float | None:
    t = parse_time(text)
    return None if t is None else max(0.0, (now - t).total_seconds())


def valid_interface_name(name: Any) -> bool:
    return (isinstance(name, str) and 0 < len(name) <= 15 and name not in (".", "..")
            and not any(c in "/\0" or c.isspace() for c in name))


def interface_present(name: str) -> bool:
    """Whether this network namespace has an interface `name` (if_nametoindex asks the
    kernel of the caller's namespace; /sys/class/net would answer for the namespace
    sysfs was mounted in)."""
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


# --- planning --------------------------------------------------------------------


@dataclass
class _Snapshot:
    rev: int
    kvs: dict[str, Any]  # IPAM key -> KV at rev
    nodes: dict[str, int]  # node name -> Node key mod revision at rev


def _snapshot(client: EtcdClient) -> _Snapshot:
    ipam_kvs, rev = client.get_prefix(keys.IPAM_PREFIX)
    node_kvs, _ = client.get_prefix(kind_prefix("Node"), revision=rev)
    nodes = {kv.key.rsplit("/", 1)[-1]: kv.mod_revision for kv in node_kvs}
    return _Snapshot(rev, {kv.key: kv for kv in ipam_kvs}, nodes)


def _node_cmp(node: str | None, snap: _Snapshot) -> dict[str, Any] | None:
    if not node:
        return None
    try:
        return cmp_mod_revision(resource_key("Node", keys.check_node_name(node)), snap.nodes.get(node, 0))
    except ValueError:
        return None


def _plan_endpoints(ipam: IPAM, snap: _Snapshot, now: _dt.datetime, local_node: str | None,
                    grace: float) -> list[Finding]:
    out = []
    weps, _ = ipam.datastore.list("WorkloadEndpoint")
    for doc in weps:
        md, spec = doc.get("metadata") or {}, doc.get("spec") or {}
        node = spec.get("node")
        iface = spec.get("interfaceName")
        if not isinstance(node, str) or not node:
            continue
        if node not in snap.nodes:
            reason = f"node {node} does not exist"
        elif local_node and node == local_node and iface is not None and not valid_interface_name(iface):
            # bad data is not proof of a dead container: leave the endpoint alone
            log.warning("WorkloadEndpoint %s/%s: interfaceName %r is not an interface name; not judged",
                        md.get("namespace"), md.get("name"), iface)
            continue
        elif local_node and node == local_node and iface is not None and not interface_present(iface):
            reason = f"interface {iface} is not on this host (its container is gone)"
        else:
            continue
        try:
            key = resource_key("WorkloadEndpoint", md["name"], md["namespace"])
            rev = int(md["resourceVersion"])
        except (KeyError, TypeError, ValueError):
            log.warning("skipping a WorkloadEndpoint without name, namespace or version: %r", md)
            continue
        compares = [cmp_mod_revision(key, rev)]
        # the endpoint of a missing node is only deleted while the node is still missing
        # (the Node key was absent at the revision read, or holds what was read)
        node_cmp = _node_cmp(node, snap)
        if node_cmp is not None:
            compares.append(node_cmp)
        f = Finding("WorkloadEndpoint", f"{md['namespace']}/{md['name']}", reason,
                    _age(md.get("creationTimestamp"), now),
                    detail={"node": node, "ipNetworks": [str(n) for n in spec.get("ipNetworks") or []
                                                         if isinstance(n, str)]},
                    compares=compares, ops=[op_delete(key)])
        _protect(f, grace)
        out.append(f)
    return out


def _block_at(snap: _Snapshot, cidr: Any) -> tuple[AllocationBlock | None, int]:
    kv = snap.kvs.get(keys.block_key(cidr))
    if kv is None:
        return None, 0
    try:
        return AllocationBlock.from_json(orjson.loads(kv.value)), kv.mod_revision
    except (ValueError, KeyError, TypeError) as e:
        log.warning("skipping block %s that does not decode: %s", cidr, e)
        return None, 0


def _protect(f: Finding, grace: float) -> None:
    if f.age is not None and f.age < grace:
        f.protected, f.compares, f.ops = True, [], []


def _plan_allocations(ipam: IPAM, snap: _Snapshot, now: _dt.datetime, grace: float) -> list[Finding]:
    """One finding per leaked address (`check`'s `allocations_without_endpoints`); the
    transaction of each block's first finding releases all of that block's
    non-protected leaks, with their handles, at once."""
    report = check(ipam)
    by_block: dict[str, list[Finding]] = {}
    for leak in report.allocations_without_endpoints:
        cidr = parse_cidr(leak.block)
        blk, _ = _block_at(snap, cidr)
        attr = blk.attribute_of(parse_ip(leak.ip)) if blk else None
        if attr is None:
            continue  # allocated after the revision read (or gone): not ours to judge now
        sec = attr.get("secondary") or {}
        attr_type = str(sec.get(ATTR_TYPE, ""))
        if attr_type.endswith("TunnelAddress"):
            why = (f"{attr_type} of node {leak.node}, which does not exist" if leak.node not in snap.nodes
                   else f"{attr_type} that Node {leak.node} no longer refers to")
        else:
            why = f"no WorkloadEndpoint carries it (handle {leak.handle_id})"
        f = Finding("Allocation", leak.ip, why, _age(sec.get("timestamp"), now),
                    detail={"handle": leak.handle_id, "node": leak.node, "block": leak.block})
        if attr_type.endswith("TunnelAddress"):
            node_cmp = _node_cmp(leak.node, snap)
            if node_cmp is not None:
                f.compares.append(node_cmp)
        _protect(f, grace)
        by_block.setdefault(leak.block, []).append(f)
    return _block_releases(snap, by_block)


def _block_releases(snap: _Snapshot, by_block: dict[str, list[Finding]]) -> list[Finding]:
    out: list[Finding] = []
    for block_text, findings in by_block.items():
        cidr = parse_cidr(block_text)
        blk, brev = _block_at(snap, cidr)
        live = [f for f in findings if not f.protected]
        out += findings
        for f in live[MAX_PER_TXN:]:
            f.detail["deferred"] = True  # released by a later pass
        live = live[:MAX_PER_TXN]
        if blk is None or not live:
            continue
        freed, _ = blk.release([parse_ip(f.name) for f in live])
        bkey = keys.block_key(cidr)
        compares = [cmp_mod_revision(bkey, brev), cmp_prefix_unchanged_since(WEP_PREFIX, snap.rev)]
        # an emptied block nobody is affine to is deleted, as Calico's release does
        ops = [op_delete(bkey) if blk.empty and not blk.host else op_put(bkey, dumps(blk.to_json()))]
        for hid, count in freed.items():
            hkv = snap.kvs.get(keys.handle_key(hid))
            h = Handle(hid, handle_blocks(hkv.value) if hkv else {}, hkv.mod_revision if hkv else 0)
            left = h.blocks.get(str(cidr), 0) - count
            if left > 0:
                h.blocks[str(cidr)] = left
            else:
                h.blocks.pop(str(cidr), None)
            compares.append(cmp_mod_revision(h.key, h.rev))
            ops += h.write_ops()
        for f in live:
            compares += f.compares
        # the whole block's release rides on its first finding; the others are done by it
        live[0].compares, live[0].ops = compares, ops
        for f in live[1:]:
            f.compares, f.ops = [], []
            f.detail["releasedWith"] = live[0].name
    return out


def _plan_handles(snap: _Snapshot) -> list[Finding]:
    named: set[str] = set()
    handles: list[tuple[str, Any]] = []
    for key, kv in snap.kvs.items():
        if keys.parse_block_key(key) is not None:
            try:
                blk = AllocationBlock.from_json(orjson.loads(kv.value))
            except (ValueError, KeyError, TypeError):
                # a block that does not decode may name any handle: keep every handle
                log.warning("block %s does not decode; no handle is collected this pass", key)
                return []
            named.update(a.get("handle_id") for _, a in blk.allocated() if a.get("handle_id"))
        elif (hid := keys.parse_handle_key(key)) is not None:
            handles.append((hid, kv))
    return [Finding("Handle", hid, "no allocation names it", None,
                    compares=[cmp_mod_revision(kv.key, kv.mod_revision)], ops=[op_delete(kv.key)])
            for hid, kv in sorted(handles, key=lambda x: x[0]) if hid not in named]


def _plan_affinities(snap: _Snapshot) -> list[Finding]:
    pairs: dict[tuple[str, Any], None] = {}
    for key in snap.kvs:
        if (parsed := keys.parse_affinity_key(key)) is not None and parsed[0] not in snap.nodes:
            pairs[parsed] = None
        elif (cidr := keys.parse_block_key(key)) is not None:
            blk, _ = _block_at(snap, cidr)
            if blk is not None and blk.host and blk.host not in snap.nodes:
                pairs[(blk.host, cidr)] = None
    out = []
    for node, cidr in sorted(pairs, key=lambda p: (p[0], p[1].version, int(p[1].network_address))):
        try:
            akey, node_key = keys.affinity_key(keys.check_node_name(node), cidr), resource_key("Node", node)
        except ValueError:
            log.warning("skipping an affinity of a node name that is not valid: %r", node)
            continue
        akv = snap.kvs.get(akey)
        blk, brev = _block_at(snap, cidr)
        bkey = keys.block_key(cidr)
        compares = [cmp_mod_revision(akey, akv.mod_revision if akv else 0), cmp_absent(node_key),
                    cmp_mod_revision(bkey, brev)]
        ops = [op_delete(akey)] if akv else []
        detail: dict[str, Any] = {"node": node, "block": str(cidr)}
        if blk is not None and blk.host == node:
            detail["inUse"] = blk.in_use
            if blk.empty:
                ops.append(op_delete(bkey))
                detail["blockDeleted"] = True
            else:
                blk.affinity = None
                ops.append(op_put(bkey, dumps(blk.to_json())))
        out.append(Finding("BlockAffinity", f"{node}/{cidr}", f"node {node} does not exist", None,
                           detail=detail, compares=compares, ops=ops))
    return out


def plan(ipam: IPAM, *, grace: float = DEFAULT_GRACE, local_node: str | None = None,
         now: _dt.datetime | None = None) -> list[Finding]:
    """What gc would collect now, decided on one etcd revision; only reads. Findings
    younger than `grace` seconds are marked protected and carry no operations."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    snap = _snapshot(ipam.client)
    findings = _plan_endpoints(ipam, snap, now, local_node, grace)
    findings += _plan_allocations(ipam, snap, now, grace)
    return findings + _plan_handles(snap) + _plan_affinities(snap)


def collect(client: EtcdClient, datastore: Any, *, apply: bool = False, grace: float = DEFAULT_GRACE,
            local_node: str | None = None, now: _dt.datetime | None = None) -> GCResult:
    """Plan, and with `apply` carry the plan out in passes: each pass re-reads and
    deletes what is still garbage at its revision (an endpoint's deletion leaks its
    addresses for the next pass, a release empties a block for the next; a failed
    compare means something moved, so the next pass decides again from fresh reads).
    Ends when nothing is left, or after `MAX_STALLED` passes in a row that deleted
    nothing; what the last pass could not do is reported as skipped."""
    result = GCResult(dry_run=not apply, grace=grace)
    stalled = 0
    for n in range(MAX_PASSES if apply else 1):
        findings = plan(IPAM(client, datastore), grace=grace, local_node=local_node, now=now)
        if n == 0:
            result.findings = findings
        if not apply:
            break
        todo = [f for f in findings if not f.protected]
        if not todo:
            result.skipped = []
            break
        failed: list[Finding] = []
        outcome: dict[str, bool] = {}
        progress = False
        for f in todo:
            if f.ops:
                ok = client.txn(f.compares, f.ops).succeeded
                outcome[f.name] = ok
            elif "releasedWith" in f.detail:
                ok = outcome.get(str(f.detail["releasedWith"]), False)
            else:
                continue  # deferred to a later pass (too many for one transaction)
            progress = progress or ok
            (result.applied if ok else failed).append(f)
        result.skipped = failed
        # a failed compare means something moved under gc: decide again from fresh
        # reads, and give up after a few passes in a row that achieved nothing
        stalled = 0 if progress else stalled + 1
        if stalled >= MAX_STALLED:
            break
        if stalled:
            time.sleep(0.1 * stalled)
    return result
