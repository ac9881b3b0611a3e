"""calicoctl verbs on resources: create, apply, replace, delete, get, label, validate.

Manifests are read whole and validated before anything is written. `create` and
`apply` of a multi-document manifest are one etcd transaction each (all or none);
`replace` and `delete` with -f go document by document, like Calico's, and stop at
the first failure.
"""
from __future__ import annotations

import argparse
from collections import Counter
from typing import Any, Iterable

import orjson
import yaml

from calico_net.cli.manifest import parse_manifest, read_manifest
from calico_net.errors import ValidationError, printable

API_VERSION = "projectcalico.org/v3"
# At most this many skipped keys are named one by one on stderr (then a count).
MAX_SKIPPED_SHOWN = 20


# --- reading manifests -----------------------------------------------------------


def load_documents(path: str, namespace: str | None) -> list[dict[str, Any]]:
    """Parse and validate every document in the file; all problems in one error.
    Reading is bounded (size, values after alias expansion, nesting: cli.manifest)."""
    from calico_net.model import parse_resource

    docs = parse_manifest(read_manifest(path))
    if not docs:
        raise ValueError(f"{printable(path, 200)}: no resources found")
    out, problems = [], []
    for doc in docs:
        if isinstance(doc, dict):
            _default_namespace(doc, namespace)
        try:
            out.append(parse_resource(doc).to_dict())
        except ValidationError as e:
            problems.append(str(e))
    if problems:
        raise _Many(problems)
    return out


class _Many(ValidationError):
    """Several invalid documents: one line each."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__(None, None, [("", line) for line in lines])

    def __str__(self) -> str:
        return "\n".join(self.lines) if len(self.lines) > 1 else self.lines[0]


def _default_namespace(doc: dict[str, Any], namespace: str | None) -> None:
    from calico_net.model import resolve_kind
    from calico_net.errors import UnknownKindError

    try:
        info = resolve_kind(str(doc.get("kind", "")))
    except UnknownKindError:
        return  # parse_resource reports it
    if not info.namespaced:
        return
    md = doc.setdefault("metadata", {}) if isinstance(doc.get("metadata", {}), dict) else None
    if md is None:
        return
    if namespace and md.get("namespace") and md["namespace"] != namespace:
        raise ValueError(
            f'{info.kind} {printable(md.get("name"), quote=True)}: metadata.namespace '
            f'{printable(md["namespace"], quote=True)} does not match --namespace {printable(namespace, quote=True)}'
        )
    md.setdefault("namespace", namespace or "default")


def _summary(verb: str, docs: Iterable[dict[str, Any]]) -> str:
    counts = Counter(d["kind"] for d in docs)
    kinds = ", ".join(f"{n} '{k}'" for k, n in counts.items())
    return f"Successfully {verb} {kinds} resource(s)"


def warn_no_effect(docs: Iterable[dict[str, Any]], err) -> None:
    """One stderr line per field a document sets that calico.net stores without effect
    (kind, name, field path, reason: `model.registry`). The documents are still
    written, as Calico writes them; the warning is so nothing is ignored silently."""
    from calico_net.model.registry import warning_lines

    for doc in docs:
        for line in warning_lines(doc):
            print(line, file=err)


def check_cross_resource(docs: list[dict[str, Any]], ctx, verb: str) -> None:
    """Calico's checks across resources before a write: ClusterInformation is not
    written by calicoctl, and a policy's tier must exist (`model.tiers`). A Tier is
    stored with Calico's defaults filled in (order 1000000, defaultAction Deny), as
    libcalico-go's client stores it."""
    from calico_net.datastore.errors import ResourceNotFound
    from calico_net.model.tiers import check_tier_references, default_tier_fields

    for doc in docs:
        if doc.get("kind") == "ClusterInformation":
            raise ValueError(f"operation {verb} is not supported on ClusterInformation "
                             "(it is written by the agent)")
        if doc.get("kind") == "Tier":
            default_tier_fields(doc)

    def tier_exists(name: str) -> bool:
        try:
            ctx.datastore.get("Tier", name)
        except ResourceNotFound:
            return False
        return True

    check_tier_references(docs, tier_exists)


def _check_tier_delete(ctx, name: str) -> None:
    """Calico refuses to delete a built-in tier or one that still has policies."""
    from calico_net.model.tiers import TIERED_KINDS, policies_in_tier, tier_delete_problem

    from calico_net.model.resources import BUILTIN_TIERS

    by_kind = {}
    if name not in BUILTIN_TIERS:
        by_kind = {k: ctx.datastore.list(k)[0] for k in TIERED_KINDS}
    problem = tier_delete_problem(name, policies_in_tier(name, by_kind))
    if problem:
        raise ValueError(problem)


# --- verbs ------------------------------------------------------------------------


def cmd_create(args: argparse.Namespace, ctx) -> int:
    docs = load_documents(args.filename, args.namespace)
    warn_no_effect(docs, ctx.err)
    check_cross_resource(docs, ctx, "create")
    ctx.datastore.create_all(docs, skip_exists=args.skip_exists)
    print(_summary("created", docs), file=ctx.out)
    return 0


def cmd_apply(args: argparse.Namespace, ctx) -> int:
    docs = load_documents(args.filename, args.namespace)
    warn_no_effect(docs, ctx.err)
    check_cross_resource(docs, ctx, "apply")
    ctx.datastore.apply_all(docs, validated=True)
    print(_summary("applied", docs), file=ctx.out)
    return 0


def cmd_replace(args: argparse.Namespace, ctx) -> int:
    docs = load_documents(args.filename, args.namespace)
    warn_no_effect(docs, ctx.err)
    check_cross_resource(docs, ctx, "replace")
    for doc in docs:
        ctx.datastore.replace(doc)
    print(_summary("replaced", docs), file=ctx.out)
    return 0


def cmd_validate(args: argparse.Namespace, ctx) -> int:
    docs = load_documents(args.filename, args.namespace)
    warn_no_effect(docs, ctx.err)
    from calico_net.model import check_pool_overlap, parse_resource

    pools = [parse_resource(d) for d in docs if d["kind"] == "IPPool"]
    if len(pools) > 1:
        check_pool_overlap(pools)
    print(f"{len(docs)} resource(s) valid", file=ctx.out)
    return 0


def cmd_delete(args: argparse.Namespace, ctx) -> int:
    from calico_net.datastore.errors import ResourceNotFound
    from calico_net.model import resolve_kind

    targets: list[tuple[str, str, str | None, str | None]] = []
    if args.filename:
        if args.kind:
            raise ValueError("give either -f FILE or KIND NAME, not both")
        for doc in load_documents(args.filename, args.namespace):
            md = doc["metadata"]
            targets.append((doc["kind"], md["name"], md.get("namespace"), md.get("resourceVersion")))
    else:
        if not args.kind or not args.names:
            raise ValueError("delete needs -f FILE or KIND NAME [NAME...]")
        info = resolve_kind(args.kind)
        ns = (args.namespace or "default") if info.namespaced else None
        targets = [(info.kind, n, ns, None) for n in args.names]
    deleted = []
    for kind, name, ns, rv in targets:
        try:
            if kind == "ClusterInformation":
                raise ValueError("operation delete is not supported on ClusterInformation")
            if kind == "Tier":
                _check_tier_delete(ctx, name)
            if kind == "Node":
                _delete_node(ctx, name, rv)
            else:
                ctx.datastore.delete(kind, name, ns, resource_version=rv)
            deleted.append({"kind": kind})
        except ResourceNotFound:
            if not args.skip_not_exists:
                raise
    print(_summary("deleted", deleted) if deleted else "No resources deleted", file=ctx.out)
    return 0


def _delete_node(ctx, name: str, rv: str | None) -> None:
    """Deleting a Node takes what belongs to it along, as Calico's calicoctl does: its
    workload endpoints, IPAM addresses and block affinities, the BGPPeers naming it and
    its per-node configuration (calico_net.nodecleanup). Each is printed as it goes."""
    from calico_net.datastore.errors import ResourceConflict
    from calico_net.nodecleanup import clean_node

    node = ctx.datastore.get("Node", name)  # ResourceNotFound when there is none
    if rv is not None and str(node["metadata"].get("resourceVersion")) != str(rv):
        raise ResourceConflict(f"Node {name}: resourceVersion {rv} is not the stored "
                               f"{node['metadata'].get('resourceVersion')}")
    for action in clean_node(name, ctx.client, ctx.datastore):
        if action != f"delete Node {name}":
            print(f"node {name}: {action}", file=ctx.out)


def cmd_get(args: argparse.Namespace, ctx) -> int:
    from calico_net.model import resolve_kind

    if args.all_namespaces and args.namespace:
        raise ValueError("give either -n NAMESPACE or -A, not both")
    columns = output_columns(args.output)
    if args.filename:
        if args.kind or args.selector:
            raise ValueError("give either -f FILE or KIND [NAME...] [-l SELECTOR], not both")
        docs = [ctx.datastore.get(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"))
                for d in load_documents(args.filename, args.namespace)]
        groups: dict[str, list[dict[str, Any]]] = {}
        for d in docs:
            groups.setdefault(d["kind"], []).append(d)
        kinds = [resolve_kind(k) for k in groups]
        single, revision = len(docs) == 1, None
    else:
        if not args.kind:
            raise ValueError("get needs KIND [NAME...] or -f FILE")
        info = resolve_kind(args.kind)
        ns = None
        if info.namespaced and not args.all_namespaces:
            ns = args.namespace or "default"
        if args.names:
            docs = [ctx.datastore.get(info.kind, n, ns) for n in args.names]
            revision = None
        else:
            # Keys that do not decode (not UTF-8, not JSON, not an object) are skipped
            # and named on stderr; the listing of the rest succeeds (exit 0), as
            # Calico's etcd backend lists what parses.
            skipped: list[Any] = []
            docs, revision = ctx.datastore.list(info.kind, ns, on_bad=skipped.append)
            warn_skipped(skipped, info.kind, ctx.err)
        if args.selector:
            from calico_net.model.selector import parse_selector

            sel = parse_selector(args.selector)
            docs = [d for d in docs if sel.evaluate((d.get("metadata") or {}).get("labels") or {})]
        kinds, groups, single = [info], {info.kind: docs}, bool(args.names) and len(docs) == 1
    fmt = args.output
    if fmt in ("yaml", "yml", "json"):
        if single:
            body: Any = docs[0]
        else:
            body = {
                "apiVersion": API_VERSION,
                "kind": f"{kinds[0].kind}List" if len(kinds) == 1 else "List",
                "metadata": {"resourceVersion": str(revision)} if revision else {},
                "items": docs,
            }
        if fmt == "json":
            ctx.out.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            ctx.out.write(yaml.dump(body, Dumper=YAML_DUMPER, default_flow_style=False, sort_keys=False))
        return 0
    for i, info in enumerate(kinds):
        if i:
            ctx.out.write("\n")
        show_ns = info.namespaced and (args.all_namespaces or bool(args.filename))
        print_table(info, groups[info.kind], wide=(fmt == "wide"), show_ns=show_ns, out=ctx.out, columns=columns)
    return 0


def output_columns(fmt: str) -> list[str] | None:
    """The columns `-o custom-columns=...` asks for (None for the other formats);
    ValueError for a format calicoctl does not know or calico.net does not do."""
    if fmt in ("yaml", "yml", "json", "ps", "wide"):
        return None
    key, _, value = fmt.partition("=")
    if key == "custom-columns":
        cols = [c for c in value.split(",") if c]
        if not cols:
            raise ValueError("need to specify at least one column")
        return cols
    if key in ("go-template", "go-template-file"):
        raise ValueError(f"-o {key} is not supported by calico.net yet (Calico's templates address "
                         f"its Go types); use -o json or -o custom-columns=...")
    raise ValueError(f"unrecognized output format '{printable(fmt, 200)}' "
                     f"(yaml, json, ps, wide, custom-columns=...)")


def warn_skipped(skipped: list[Any], kind: str, err: Any) -> None:
    """One stderr line per skipped key (each named, escaped and bounded), at most
    MAX_SKIPPED_SHOWN of them, then how many there were in all."""
    for e in skipped[:MAX_SKIPPED_SHOWN]:
        print(f"calicoctl: warning: skipped {e}", file=err)
    if len(skipped) > MAX_SKIPPED_SHOWN:
        print(f"calicoctl: warning: ... and {len(skipped) - MAX_SKIPPED_SHOWN} more", file=err)
    if len(skipped) > 1:
        print(f"calicoctl: warning: {len(skipped)} {kind} keys in etcd skipped", file=err)


try:  # libyaml's C emitter: big lists are dumped in C, not Python
    YAML_DUMPER = yaml.CSafeDumper  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover
    YAML_DUMPER = yaml.SafeDumper


def cmd_label(args: argparse.Namespace, ctx) -> int:
    from calico_net.datastore.errors import ResourceConflict
    from calico_net.model import resolve_kind

    info = resolve_kind(args.kind)
    ns = (args.namespace or "default") if info.namespaced else None
    if args.remove:
        key, value = args.label, None
        if "=" in key:
            raise ValueError(f'--remove takes a label key, not "{key}"')
    else:
        if "=" not in args.label:
            raise ValueError(f'label "{args.label}" must be key=value (or use --remove key)')
        key, value = args.label.split("=", 1)
    from calico_net.model.selector import is_valid_label_key

    if not is_valid_label_key(key):
        raise ValueError(f'"{key}" is not a valid label key')
    for _ in range(5):
        doc = ctx.datastore.get(info.kind, args.name, ns)
        labels = dict((doc.get("metadata") or {}).get("labels") or {})
        if value is None:
            if key not in labels:
                raise ValueError(f'{info.kind} "{args.name}" has no label "{key}"')
            labels.pop(key)
        else:
            if key in labels and labels[key] != value and not args.overwrite:
                raise ValueError(
                    f'{info.kind} "{args.name}" already has label {key}={labels[key]}; use --overwrite'
                )
            labels[key] = value
        doc["metadata"]["labels"] = labels
        if not labels:
            doc["metadata"].pop("labels")
        try:
            ctx.datastore.replace(doc)
        except ResourceConflict:
            continue
        verb = "removed from" if value is None else "set on"
        print(f'Successfully {verb} {info.kind.lower()} "{args.name}": {key}', file=ctx.out)
        return 0
    raise ResourceConflict(f'{info.kind} "{args.name}" kept changing; label not applied')


# --- tables -------------------------------------------------------------------


def _get(doc: dict[str, Any], path: str, default: Any = "") -> Any:
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur


def _join(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)


# Per kind: (header, path) columns for the default table, then extra ones for -o wide.
COLUMNS: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {
    "Node": ([("NAME", "metadata.name")],
             [("ASN", "spec.bgp.asNumber"), ("IPV4", "spec.bgp.ipv4Address"), ("IPV6", "spec.bgp.ipv6Address")]),
    "IPPool": ([("NAME", "metadata.name"), ("CIDR", "spec.cidr"), ("SELECTOR", "spec.nodeSelector")],
               [("NAT", "spec.natOutgoing"), ("IPIPMODE", "spec.ipipMode"), ("VXLANMODE", "spec.vxlanMode"),
                ("DISABLED", "spec.disabled"), ("BLOCKSIZE", "spec.blockSize")]),
    "BGPPeer": ([("NAME", "metadata.name"), ("PEERIP", "spec.peerIP"), ("NODE", "spec.node"),
                 ("ASN", "spec.asNumber")],
                [("NODESELECTOR", "spec.nodeSelector"), ("PEERSELECTOR", "spec.peerSelector")]),
    "WorkloadEndpoint": ([("WORKLOAD", "spec.workload"), ("NODE", "spec.node"), ("NETWORKS", "spec.ipNetworks"),
                          ("INTERFACE", "spec.interfaceName")],
                         [("NAME", "metadata.name"), ("PROFILES", "spec.profiles"), ("NATS", "spec.ipNATs")]),
    "HostEndpoint": ([("NAME", "metadata.name"), ("NODE", "spec.node")],
                     [("INTERFACE", "spec.interfaceName"), ("IPS", "spec.expectedIPs"),
                      ("PROFILES", "spec.profiles")]),
    "GlobalNetworkPolicy": ([("NAME", "metadata.name"), ("TIER", "spec.tier")],
                            [("ORDER", "spec.order"), ("SELECTOR", "spec.selector")]),
    "NetworkPolicy": ([("NAME", "metadata.name"), ("TIER", "spec.tier")],
                      [("ORDER", "spec.order"), ("SELECTOR", "spec.selector")]),
    "StagedGlobalNetworkPolicy": ([("NAME", "metadata.name"), ("TIER", "spec.tier")],
                                  [("ORDER", "spec.order"), ("SELECTOR", "spec.selector")]),
    "StagedNetworkPolicy": ([("NAME", "metadata.name"), ("TIER", "spec.tier")],
                            [("ORDER", "spec.order"), ("SELECTOR", "spec.selector")]),
    "StagedKubernetesNetworkPolicy": ([("NAME", "metadata.name")], [("PODSELECTOR", "spec.podSelector")]),
    "Tier": ([("NAME", "metadata.name"), ("ORDER", "spec.order")], []),
    "ClusterInformation": ([("NAME", "metadata.name")],
                           [("CLUSTERGUID", "spec.clusterGUID"), ("CLUSTERTYPE", "spec.clusterType"),
                            ("CALICOVERSION", "spec.calicoVersion"), ("DATASTOREREADY", "spec.datastoreReady")]),
    "GlobalNetworkSet": ([("NAME", "metadata.name")], [("NETS", "spec.nets")]),
    "NetworkSet": ([("NAME", "metadata.name")], [("NETS", "spec.nets")]),
}


def _cell(text: str) -> str:
    """A table cell: whatever etcd held, never a control character or an ANSI escape
    on the terminal (escaped; not cut short)."""
    return text if text.isprintable() else printable(text, len(text))


def table_columns(info, wide: bool, show_ns: bool, custom: list[str] | None) -> list[tuple[str, str]]:
    """(heading, path) per column. A custom column is a heading of the kind's table
    (as Calico's custom-columns) or HEADING:.path (as kubectl's, simple paths only)."""
    base, extra = COLUMNS.get(info.kind, ([("NAME", "metadata.name")], []))
    if custom is None:
        cols = list(base) + (list(extra) if wide else [])
        if show_ns:
            cols.insert(0, ("NAMESPACE", "metadata.namespace"))
        return cols
    known = dict([("NAMESPACE", "metadata.namespace"), ("NAME", "metadata.name")] + list(base) + list(extra))
    cols = []
    for spec in custom:
        heading, sep, path = spec.partition(":")
        if sep:
            path = path.strip()
            if path.startswith("{") and path.endswith("}"):
                path = path[1:-1]
            path = path[1:] if path.startswith(".") else path
            if not path or not all(p and p.replace("-", "").replace("_", "").isalnum() for p in path.split(".")):
                raise ValueError(f'custom column "{printable(spec, 200)}": only simple paths like '
                                 f'.metadata.name or .spec.cidr are supported')
            cols.append((heading, path))
        elif heading.upper() in known:
            cols.append((heading.upper(), known[heading.upper()]))
        else:
            raise ValueError(f'{info.kind} has no column "{printable(heading, 100)}" '
                             f'({", ".join(known)}; or HEADING:.path)')
    return cols


def print_table(info, docs: list[dict[str, Any]], *, wide: bool, show_ns: bool, out,
                columns: list[str] | None = None) -> None:
    cols = table_columns(info, wide, show_ns, columns)
    rows = [[h for h, _ in cols]]
    missing = "<none>" if columns else ""
    for d in docs:
        rows.append([_cell(_join(_get(d, p, missing))) for _, p in cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    for r in rows:
        out.write("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")


# --- argument parsing --------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    def file_cmd(name: str, func, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("-f", "--filename", required=True, help="manifest file (YAML or JSON), or - for stdin")
        p.add_argument("-n", "--namespace", default=None, help="namespace for namespaced resources without one")
        p.set_defaults(func=func)
        return p

    p = file_cmd("create", cmd_create, "create resources (all or none; fails if one exists)")
    p.add_argument("--skip-exists", action="store_true", help="leave existing resources alone")
    file_cmd("apply", cmd_apply, "create or update resources in one transaction (all or none)")
    file_cmd("replace", cmd_replace, "update existing resources (compare-and-swap on resourceVersion)")
    file_cmd("validate", cmd_validate, "check a manifest offline; writes nothing")

    p = sub.add_parser("delete", help="delete resources by file or by kind and name")
    p.add_argument("kind", nargs="?", help="resource kind (e.g. gnp, ippool, wep)")
    p.add_argument("names", nargs="*", help="resource names")
    p.add_argument("-f", "--filename", default=None)
    p.add_argument("-n", "--namespace", default=None)
    p.add_argument("--skip-not-exists", action="store_true", help="do not fail on missing resources")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("get", help="show resources")
    p.add_argument("kind", nargs="?", help="resource kind (e.g. gnp, ippools, workloadendpoints)")
    p.add_argument("names", nargs="*")
    p.add_argument("-f", "--filename", default=None,
                   help="show the resources a manifest names (YAML or JSON file, or - for stdin)")
    p.add_argument("-o", "--output", default="ps",
                   help="yaml, json, ps (default: a table), wide, or custom-columns=COL,... where COL "
                        "is a heading of the table (NAME, CIDR, ...) or HEADING:.path (e.g. NAME:.metadata.name)")
    p.add_argument("-n", "--namespace", default=None)
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-l", "--selector", default=None, help="only resources whose labels match this selector")
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("label", help="add, overwrite or remove a label")
    p.add_argument("kind")
    p.add_argument("name")
    p.add_argument("label", help="key=value, or key with --remove")
    p.add_argument("-n", "--namespace", default=None)
    p.add_argument("--overwrite", action="store_true", help="replace an existing value")
    p.add_argument("--remove", action="store_true", help="remove the label")
    p.set_defaults(func=cmd_label)
