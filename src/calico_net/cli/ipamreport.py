"""`calicoctl ipam check -o FILE`, `ipam release --from-report` and `ipam split`.

The report follows Calico's: calicoctl's version, the cluster's GUID and type from
ClusterInformation "default", and every allocation by address with whether an
endpoint (or, for a tunnel address, its node) uses it. Calico guards a release from a
report with a datastore lock; calico.net has none, so the report also records
`ipamRevision`, a fingerprint of the IPAM keys and WorkloadEndpoints it was built
from (highest mod revision and count of each), and a release refuses when it no
longer matches: any allocation, release or endpoint change since invalidates the
report. Only addresses the report lists as not in use are released, and only while
they still belong to the handle the report names; a leaked handle (one no allocation
names) is deleted only while it is at the revision the report saw.

`split` divides an IPPool into a power-of-two number of equal pools named
`split-<name>-<i>`, as Calico's. Calico requires a locked datastore; here the pool
must be disabled (so nothing allocates from it meanwhile) and hold no allocations.
The old pool's deletion and the new pools' creation are one etcd transaction.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
from typing import Any

from calico_net import __version__
from calico_net.ipam.errors import IPAMError

REPORT_VERSION = f"v{__version__}"
# What a report is built from; a change under any of these makes it stale.
WEP_PREFIX = "/calico/resources/v3/projectcalico.org/workloadendpoints/"
MAX_REPORT_BYTES = 256 << 20


def ipam_revision(client) -> str:
    from calico_net.ipam.keys import IPAM_PREFIX

    parts = []
    for prefix in (IPAM_PREFIX, WEP_PREFIX):
        kvs, _ = client.get_prefix(prefix)
        parts.append(f"{max((kv.mod_revision for kv in kvs), default=0)}/{len(kvs)}")
    return ",".join(parts)


def build_report(ipam, report, client, cluster: dict[str, Any], revision_before: str) -> dict[str, Any]:
    """Calico's report document from a `calico_net.ipam.check` report; `revision_before`
    is `ipam_revision` taken before the check read anything. A handle no allocation
    names is leaked (Calico's `leakedHandles`), listed with its mod revision."""
    from calico_net.ipam import keys

    leaked = {x.ip for x in report.allocations_without_endpoints}
    allocations: dict[str, list[dict[str, Any]]] = {}
    for blk in ipam.blocks():
        for a, attr in blk.allocated():
            allocations.setdefault(str(a), []).append({
                "ip": str(a), "handle": attr.get("handle_id"), "block": str(blk.cidr),
                "node": (attr.get("secondary") or {}).get("node") or blk.host,
                "inUse": str(a) not in leaked})
    held = {e["handle"] for entries in allocations.values() for e in entries if e["handle"]}
    handle_kvs, _ = client.get_prefix(keys.HANDLE_PREFIX)
    leaked_handles = [{"id": hid, "revision": str(kv.mod_revision)} for kv in handle_kvs
                      if (hid := keys.parse_handle_key(kv.key)) is not None and hid not in held]
    revision = ipam_revision(client)
    if revision != revision_before:
        # The check's reads are not one snapshot; a report of a moving IPAM could
        # call an address leaked that was just allocated.
        raise IPAMError("IPAM or workload endpoints changed while the check ran; no report written, run it again")
    return {
        "version": REPORT_VERSION,
        "clusterGUID": str(cluster.get("clusterGUID") or ""),
        "clusterType": str(cluster.get("clusterType") or ""),
        "datastoreLocked": cluster.get("datastoreReady") is False,
        "ipamRevision": revision,
        "allocations": allocations,
        "leakedHandles": leaked_handles,
    }


def write_report(path: str, doc: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def read_report(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        raw = f.read(MAX_REPORT_BYTES + 1)
    if len(raw) > MAX_REPORT_BYTES:
        raise ValueError(f"{path}: report larger than {MAX_REPORT_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{path}: not an IPAM report (not JSON: {e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("allocations"), dict) or "ipamRevision" not in doc:
        raise ValueError(f"{path}: not an IPAM report from `calicoctl ipam check -o FILE`")
    return doc


def leaked_in(doc: dict[str, Any], path: str) -> dict[str, str | None]:
    """Address -> handle of every allocation the report lists as not in use."""
    out: dict[str, str | None] = {}
    for ip, entries in doc["allocations"].items():
        if not isinstance(entries, list):
            raise ValueError(f"{path}: allocations[{ip!r}] is not a list")
        for e in entries:
            if not isinstance(e, dict) or "inUse" not in e:
                raise ValueError(f"{path}: allocations[{ip!r}] has an entry without inUse")
            if e["inUse"] is False:
                ipaddress.ip_address(str(e.get("ip", ip)))  # ValueError names a bad address
                out[str(e.get("ip", ip))] = e.get("handle")
    return out


def release_from_report(args: argparse.Namespace, ctx, ipam) -> int:
    from calico_net.cli.main import cluster_information

    path = args.from_report
    doc = read_report(path)
    cluster = cluster_information(ctx)
    if str(cluster.get("clusterGUID") or "") != str(doc.get("clusterGUID") or ""):
        # As in Calico, --force does not override this one.
        raise IPAMError(f"cluster does not match the provided report ({path}): mismatched cluster GUID; "
                        f"refusing to release")
    if doc.get("version") != REPORT_VERSION:
        if not args.force:
            raise IPAMError(f"the provided report ({path}) was produced by a different calicoctl version "
                            f"({doc.get('version')}); refusing to release (--force overrides)")
        print("WARNING: report was produced by a different version of calicoctl; ignored due to --force",
              file=ctx.out)
    leaked = leaked_in(doc, path)
    now = ipam_revision(ctx.client)
    if now != doc["ipamRevision"]:
        raise IPAMError(f"IPAM or workload endpoints changed since the report ({path}) was made "
                        f"(revision {doc['ipamRevision']}, now {now}); generate a new report and retry")
    handles = leaked_handles_in(doc, path)
    if leaked:
        release_leaked_ips(leaked, ctx, ipam)
    else:
        print("Report didn't contain any leaked IPs to clean up.", file=ctx.out)
    if handles:
        delete_leaked_handles(handles, ctx)
    else:
        print("Report didn't contain any handles to clean up.", file=ctx.out)
    return 0


def leaked_handles_in(doc: dict[str, Any], path: str) -> list[tuple[str, int]]:
    out = []
    for h in doc.get("leakedHandles") or []:
        try:
            out.append((str(h["id"]), int(h["revision"])))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: a leakedHandles entry needs an id and a numeric revision") from None
    return out


def delete_leaked_handles(handles: list[tuple[str, int]], ctx) -> None:
    """Delete each handle only if it is still the version the report saw (a compare
    on its mod revision), as Calico skips a handle that changed or is gone."""
    from calico_net.datastore.etcd import cmp_mod_revision, op_delete
    from calico_net.ipam import keys

    print(f"Deleting {len(handles)} handles...", file=ctx.out)
    deleted = 0
    for hid, revision in handles:
        key = keys.handle_key(keys.check_handle_id(hid))
        if ctx.client.txn([cmp_mod_revision(key, revision)], [op_delete(key)]).succeeded:
            deleted += 1
    print(f"Released {deleted} handles; {len(handles) - deleted} skipped; 0 errors.", file=ctx.out)


def release_leaked_ips(leaked: dict[str, str | None], ctx, ipam) -> None:
    todo = []
    for ip, handle in sorted(leaked.items()):
        a = ipam.get_assignment(ip)
        if a is not None and a.handle_id == handle:
            todo.append(ip)
    print(f"Releasing {len(todo)} old IPs...", file=ctx.out)
    not_allocated = ipam.release_ips(todo)
    print(f"Released {len(todo) - len(not_allocated)} IPs successfully", file=ctx.out)
    gone = len(leaked) - len(todo) + len(not_allocated)
    if gone:
        print(f"{gone} addresses marked as leaked in the report had already been cleaned up.", file=ctx.out)


# --- split ---------------------------------------------------------------------------


def split_cidr(cidr: str, parts: int) -> list[str]:
    if parts < 2 or parts & (parts - 1):
        raise ValueError(f"number to split the pool into is not a power of 2 (2, 4, 8, ...): {parts}")
    net = ipaddress.ip_network(cidr)
    bits = parts.bit_length() - 1
    if net.prefixlen + bits > net.max_prefixlen:
        raise ValueError(f"the CIDR {cidr} is not large enough to be split into {parts} parts")
    return [str(n) for n in net.subnets(prefixlen_diff=bits)]


def cmd_split(args: argparse.Namespace, ctx) -> int:
    from calico_net.datastore.etcd import cmp_mod_revision, op_delete, op_put
    from calico_net.datastore.store import resource_key, stored_value
    from calico_net.ipam import IPAM
    from calico_net.model import check_pool_overlap, parse_resource

    if not args.cidr and not args.name:
        raise ValueError("no name or CIDR given: use --cidr=CIDR or --name=NAME to say which IPPool to split")
    pools, _ = ctx.datastore.list("IPPool")
    if args.name:
        old = next((p for p in pools if p["metadata"]["name"] == args.name), None)
    else:
        want = ipaddress.ip_network(args.cidr, strict=False)
        old = next((p for p in pools if ipaddress.ip_network(p["spec"]["cidr"], strict=False) == want), None)
    if old is None:
        raise ValueError(f"no IPPool {'named ' + repr(args.name) if args.name else 'with CIDR ' + args.cidr}")
    name, cidr = old["metadata"]["name"], old["spec"]["cidr"]
    children_cidrs = split_cidr(cidr, args.number)
    if not old["spec"].get("disabled"):
        raise IPAMError(f"IPPool {name} is not disabled: disable it first (calicoctl patch ippool {name} "
                        f"-p '{{\"spec\":{{\"disabled\":true}}}}') so nothing allocates from it while it is split")
    net = ipaddress.ip_network(cidr)
    used = [b for b in IPAM(ctx.client, ctx.datastore).blocks(net.version)
            if b.cidr.subnet_of(net) and b.in_use]  # type: ignore[arg-type]
    if used:
        raise IPAMError(f"IPPool {name} has {sum(b.in_use for b in used)} allocated address(es) in "
                        f"{len(used)} block(s); release them before splitting")
    children = []
    for i, c in enumerate(children_cidrs):
        md = {k: v for k, v in old["metadata"].items() if k in ("labels", "annotations")}
        md["name"] = f"split-{name[:245]}-{i}"
        spec = dict(old["spec"], cidr=c, disabled=False)
        children.append(parse_resource({"apiVersion": old["apiVersion"], "kind": "IPPool",
                                        "metadata": md, "spec": spec}).to_dict())
    others = [parse_resource(p) for p in pools if p["metadata"]["name"] != name]
    check_pool_overlap(others + [parse_resource(c) for c in children])
    old_key = resource_key("IPPool", name)
    keys = [resource_key("IPPool", c["metadata"]["name"]) for c in children]
    txn = ctx.client.txn(
        [cmp_mod_revision(old_key, int(old["metadata"]["resourceVersion"]))] + [cmp_mod_revision(k, 0) for k in keys],
        [op_delete(old_key)] + [op_put(k, stored_value(c, None)) for k, c in zip(keys, children)])
    if not txn.succeeded:
        raise IPAMError(f"IPPool {name} changed, or a pool named split-{name}-N appeared, meanwhile; nothing written")
    print(f"IP Pool {name} was successfully split into {args.number} smaller pools.", file=ctx.out)
    for c in children:
        print(f"Created {c['metadata']['name']} with CIDR {c['spec']['cidr']}.", file=ctx.out)
    return 0


def register_split(sub: Any) -> None:
    sp = sub.add_parser("split", help="split an unused, disabled IPPool into N equal pools",
                        description="Split an IPPool (disabled, with no allocations) into NUMBER equal "
                                    "pools named split-<name>-<i>; NUMBER is a power of 2.")
    sp.add_argument("number", type=int, metavar="NUMBER", help="how many pools (2, 4, 8, ...)")
    sp.add_argument("--cidr", help="CIDR of the IPPool to split")
    sp.add_argument("--name", help="name of the IPPool to split")
    sp.set_defaults(func=cmd_split)
