"""`calicoctl datastore migrate export|import`: every resource and all IPAM state as
one YAML stream, and back — a backup path that needs no etcd snapshot.

Export reads the v3 resources and the IPAM keys at one etcd revision. Resources are
written as stored (with their uid and creationTimestamp, without resourceVersion);
IPAM state follows as Calico's IPAM kinds (`crd.projectcalico.org/v1` `IPAMBlock`,
`BlockAffinity`, `IPAMHandle`; the IPAM configuration is the IPAMConfiguration resource
and travels with the resources), each carrying the stored value in
`spec` plus what its key names (the affinity's node and CIDR, the handle's id).

Import refuses a datastore that already holds resources or IPAM state, as Calico's
does, and checks the whole stream (every resource validated, every IPAM document
complete, no key twice) before writing anything. Each write is create-only (compare
mod revision 0), in transactions of at most MAX_TXN_OPS keys, the size etcd accepts
by default; if something else writes one of the keys meanwhile, the import stops
and names it.
"""
from __future__ import annotations

import argparse
from typing import Any, Iterator

import orjson
import yaml

from calico_net.cli.manifest import parse_manifest, read_manifest
from calico_net.cli.resources import YAML_DUMPER
from calico_net.errors import printable

IPAM_API = "crd.projectcalico.org/v1"
MAX_TXN_OPS = 100
# Spec fields that name the key rather than belong to the stored value.
IDENTITY_FIELDS = {"BlockAffinity": ("node", "cidr"), "IPAMHandle": ("handleID",)}


def _ipam_doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": IPAM_API, "kind": kind, "metadata": {"name": name}, "spec": spec}


def exported(kvs) -> Iterator[dict[str, Any]]:
    """The export's documents for the keys of one etcd read, resources first."""
    from calico_net.datastore.store import RESOURCE_PREFIX, decode
    from calico_net.ipam import keys
    from calico_net.ipam.block import cidr_key_part

    ipam = []
    for kv in kvs:
        if kv.key.startswith(RESOURCE_PREFIX):
            doc = decode(kv)  # BadStoredValue names the key: a backup must not skip one
            doc["metadata"].pop("resourceVersion", None)
            yield doc
            continue
        value = orjson.loads(kv.value)
        if (cidr := keys.parse_block_key(kv.key)) is not None:
            ipam.append((0, _ipam_doc("IPAMBlock", cidr_key_part(cidr), value)))
        elif (aff := keys.parse_affinity_key(kv.key)) is not None:
            node, cidr = aff
            ipam.append((1, _ipam_doc("BlockAffinity", f"{node}-{cidr_key_part(cidr)}",
                                      {"node": node, "cidr": str(cidr), **value})))
        elif (handle := keys.parse_handle_key(kv.key)) is not None:
            ipam.append((2, _ipam_doc("IPAMHandle", handle, {"handleID": handle, **value})))
        else:
            raise ValueError(f"{printable(kv.key, 200)}: not an IPAM key calico.net knows; export stopped")
    for _, doc in sorted(ipam, key=lambda t: t[0]):
        yield doc


def _prefixes() -> tuple[str, str]:
    from calico_net.datastore.store import RESOURCE_PREFIX
    from calico_net.ipam.keys import IPAM_PREFIX

    return RESOURCE_PREFIX, IPAM_PREFIX


def read_state(client) -> list:
    """The resource and IPAM keys, both read at the same etcd revision."""
    res_prefix, ipam_prefix = _prefixes()
    resources, rev = client.get_prefix(res_prefix)
    ipam, _ = client.get_prefix(ipam_prefix, revision=rev)
    return list(resources) + list(ipam)


def cmd_export(args: argparse.Namespace, ctx) -> int:
    out = ctx.out if args.output in (None, "-") else open(args.output, "w", encoding="utf-8")
    try:
        yaml.dump_all(exported(read_state(ctx.client)), out, Dumper=YAML_DUMPER,
                      default_flow_style=False, sort_keys=False)
    finally:
        if out is not ctx.out:
            out.close()
    return 0


def planned_writes(docs: list[Any]) -> list[tuple[str, bytes]]:
    """(key, value) for every document; ValueError listing every problem."""
    from calico_net.datastore.store import resource_key, stored_value
    from calico_net.errors import ValidationError
    from calico_net.ipam import keys
    from calico_net.ipam.block import parse_cidr
    from calico_net.model import parse_resource

    writes: list[tuple[str, bytes]] = []
    problems: list[str] = []
    for i, doc in enumerate(docs):
        where = f"document {i + 1}"
        try:
            if not isinstance(doc, dict):
                raise ValueError("not a mapping")
            if doc.get("apiVersion") == IPAM_API:
                writes.append(_ipam_write(doc, keys, parse_cidr))
                continue
            parse_resource(doc)
            md = doc["metadata"]
            clean = {**doc, "metadata": {k: v for k, v in md.items() if k != "resourceVersion"}}
            writes.append((resource_key(doc["kind"], md["name"], md.get("namespace")), stored_value(clean, None)))
        except (ValidationError, ValueError, KeyError, TypeError) as e:
            problems.append(f"{where}: {printable(str(e), 500)}")
    seen: set[str] = set()
    for key, _ in writes:
        if key in seen:
            problems.append(f"{printable(key, 200)} appears twice")
        seen.add(key)
    if problems:
        raise ValueError("nothing imported:\n" + "\n".join(problems))
    return writes


def _ipam_write(doc: dict[str, Any], keys, parse_cidr) -> tuple[str, bytes]:
    kind, spec = doc.get("kind"), doc.get("spec")
    if not isinstance(spec, dict):
        raise ValueError(f"{kind}: spec must be a mapping")
    value = {k: v for k, v in spec.items() if k not in IDENTITY_FIELDS.get(str(kind), ())}
    if kind == "IPAMBlock":
        key = keys.block_key(parse_cidr(spec["cidr"]))
    elif kind == "BlockAffinity":
        key = keys.affinity_key(keys.check_node_name(spec["node"]), parse_cidr(spec["cidr"]))
    elif kind == "IPAMHandle":
        key = keys.handle_key(keys.check_handle_id(spec["handleID"]))
    else:
        raise ValueError(f"{printable(kind, 100, quote=True)} is not an IPAM kind "
                         f"(IPAMBlock, BlockAffinity, IPAMHandle)")
    return key, orjson.dumps(value)


def cmd_import(args: argparse.Namespace, ctx) -> int:
    from calico_net.datastore.etcd import cmp_mod_revision, op_put

    writes = planned_writes(parse_manifest(read_manifest(args.filename)))
    for prefix in _prefixes():
        present, _ = ctx.client.get_prefix(prefix, keys_only=True)
        if present:
            raise ValueError(f"the datastore is not empty ({len(present)} key(s) under {prefix}); "
                             f"import only into an empty datastore")
    for start in range(0, len(writes), MAX_TXN_OPS):
        batch = writes[start:start + MAX_TXN_OPS]
        txn = ctx.client.txn([cmp_mod_revision(k, 0) for k, _ in batch], [op_put(k, v) for k, v in batch])
        if not txn.succeeded:
            raise ValueError(f"a key was written by someone else during the import; {start} of "
                             f"{len(writes)} key(s) imported before it (first of this batch: "
                             f"{printable(batch[0][0], 200)})")
    print(f"Successfully imported {len(writes)} resource(s) and IPAM record(s)", file=ctx.out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from calico_net.cli.main import add_noun

    dsub = add_noun(sub, "datastore", "export and import the whole datastore")
    msub = add_noun(dsub, "migrate", "export or import every resource and the IPAM state")
    ex = msub.add_parser("export", help="write every resource and the IPAM state as one YAML stream",
                         description="Write every v3 resource and the IPAM state (blocks, affinities, "
                                     "handles), read at one etcd revision, as YAML.")
    ex.add_argument("-o", "--output", default=None, help="file to write (default: stdout)")
    ex.set_defaults(func=cmd_export)
    im = msub.add_parser("import", help="load an export into an empty datastore",
                         description="Load a `datastore migrate export` stream; refused unless the "
                                     "datastore holds no resources and no IPAM state.")
    im.add_argument("-f", "--filename", required=True, help="export file, or - for stdin")
    im.set_defaults(func=cmd_import)
