"""`calicoctl patch`: merge a patch into one stored resource, as Calico's calicoctl does.

The patch (JSON or YAML) is merged into the resource as read (RFC 7386 merge patch:
mappings merge key by key, `null` removes a key, anything else, lists included,
replaces). Calico's default patch type, `strategic`, behaves the same on Calico's
types, which carry no list-merge strategies. The result is validated like `apply`
and written with a compare-and-swap on the revision that was read, so a concurrent
change fails the patch instead of being overwritten; on any error nothing is written.
"""
from __future__ import annotations

import argparse
from typing import Any

import yaml

from calico_net.errors import ValidationError, printable

# Fields that name the resource: a patch that changes them would write a different one.
IDENTITY = (("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace"))
# Server-set metadata a patch may not change (the stored values are kept).
SERVER_METADATA = ("uid", "creationTimestamp", "resourceVersion")
MAX_PATCH_BYTES = 1 << 20


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: the merge of `patch` into `target` (neither is modified)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def parse_patch(text: str) -> dict[str, Any]:
    if len(text.encode()) > MAX_PATCH_BYTES:
        raise ValueError(f"patch is larger than {MAX_PATCH_BYTES} bytes")
    try:
        patch = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"patch is not valid JSON or YAML: {printable(str(e).splitlines()[0], 300)}") from None
    if not isinstance(patch, dict):
        raise ValueError("patch must be a JSON/YAML mapping, e.g. '{\"spec\":{\"disabled\":true}}'")
    return patch


def _lookup(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def patched(doc: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The stored document `doc` with `patch` merged in, validated; ValidationError
    (with field paths) when the result is not a valid resource or renames it."""
    from calico_net.model import parse_resource

    merged = merge_patch(doc, patch)
    md = merged.get("metadata")
    problems = [(".".join(p), f"a patch cannot change it (stored {printable(_lookup(doc, p), quote=True)})")
                for p in IDENTITY if _lookup(merged, p) != _lookup(doc, p)]
    if isinstance(md, dict):
        problems += [(f"metadata.{k}", "set by the datastore; a patch cannot change it")
                     for k in SERVER_METADATA if md.get(k) != doc["metadata"].get(k)]
    if problems:
        raise ValidationError(doc.get("kind"), doc["metadata"].get("name"), problems)
    result = parse_resource(merged).to_dict()
    result.setdefault("metadata", {})["resourceVersion"] = doc["metadata"]["resourceVersion"]
    return result


def cmd_patch(args: argparse.Namespace, ctx) -> int:
    from calico_net.model import resolve_kind

    if args.type == "json":
        raise ValueError("--type json (RFC 6902 JSON patch) is not supported; use strategic or merge")
    info = resolve_kind(args.kind)
    ns = (args.namespace or "default") if info.namespaced else None
    patch = parse_patch(args.patch)
    doc = ctx.datastore.get(info.kind, args.name, ns)
    # replace() compares against the resourceVersion read above: a change made
    # meanwhile fails the patch rather than being silently overwritten.
    ctx.datastore.replace(patched(doc, patch))
    print(f"Successfully patched 1 '{info.kind}' resource", file=ctx.out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "patch", help="merge a patch into one resource",
        description="Merge a JSON/YAML patch into a stored resource (validated like apply, "
                    "written only if nobody changed it meanwhile).",
        epilog="example: calicoctl patch ippool pool-a -p '{\"spec\":{\"disabled\":true}}'")
    p.add_argument("kind", help="resource kind (e.g. ippool, gnp, node)")
    p.add_argument("name", help="resource name")
    p.add_argument("-p", "--patch", required=True, help="the patch, JSON or YAML")
    p.add_argument("-t", "--type", default="strategic", choices=("strategic", "merge", "json"),
                   help="patch type (default strategic, which is a merge patch on Calico's types)")
    p.add_argument("-n", "--namespace", default=None, help="namespace of a namespaced resource (default: default)")
    p.set_defaults(func=cmd_patch)
