"""The field registry: what calico.net does with every field of every kind the model
accepts — enforced (and by which code), refused (and why), or stored with no effect
(and why) — and the warnings for documents that set a no-effect field.

Why it exists: "existing Calico YAML works unchanged" is only honest if a field that
validates and is then ignored says so. Calico stores such fields; so does calico.net,
but `calicoctl apply/create/replace/validate` (and the Ansible modules, through
`no_effect_fields`) name each one a document sets, with the reason.

Paths are Calico's JSON names from the document root, `[]` standing for any list
index: `spec.ingress[].source.nets`. An entry may cover a whole subtree
(`metadata.ownerReferences` covers its items' fields). Rule fields are declared once
(`tables._RULE`) and mounted under each policy kind's `ingress[]` / `egress[]`; BGP kinds are
listed by path here, so their model module (`resources/bgp.py`) need not know of this.
The table itself is `registry.tables`; this module walks the models and documents.

`model_paths(cls)` walks a kind's pydantic models by alias, recursively; the unit test
(tests/unit/test_field_registry.py) fails naming any model field without an entry, so
a field added to the model must be classified here. `docs/compatibility.md` is
generated from this table (`python -m calico_net.model.registry > docs/compatibility.md`).

An "enforced" pointer names the module that acts on the field; only fields found read
by code are enforced. `quiet` values of a no-effect field are those where calico.net
already behaves as the value asks (`bpfEnabled: false`): no warning for them.

Not imported by `calico_net.model` itself: the agent does not pay for it at start.
"""
from __future__ import annotations

import re
import typing
from typing import Any, Iterator

from pydantic import BaseModel

from calico_net.model.registry.tables import (
    EFFECTIVE_NAMES, ENFORCED, NO_EFFECT, NO_WG, REFUSED, REFUSED_UNMODELLED, REGISTRY, Entry,
)

__all__ = [
    "ENFORCED", "NO_EFFECT", "NO_WG", "REFUSED", "REFUSED_UNMODELLED", "REGISTRY", "Entry",
    "compatibility_markdown", "coverage_problems", "entry_for", "field_statuses", "is_quiet",
    "model_paths", "no_effect_fields", "warning_lines",
]

# --- walking the models -----------------------------------------------------------------------


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    return any(_is_list(a) for a in typing.get_args(annotation)
               if typing.get_origin(a) is not None and typing.get_origin(a) is not dict)


def _walk(model: type[BaseModel], prefix: str) -> Iterator[str]:
    model.model_rebuild()  # models defer their build; field annotations need resolving
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        sub = _model_in(info.annotation)
        if sub is None:
            yield path
        else:
            yield from _walk(sub, path + ("[]." if _is_list(info.annotation) else "."))


def model_paths(cls: type[BaseModel]) -> list[str]:
    """Every leaf field path of a kind's model, by Calico's JSON names."""
    return list(_walk(cls, ""))


def entry_for(kind: str, path: str) -> tuple[str, Entry] | None:
    """The entry covering `path` (itself or its nearest registered ancestor)."""
    table = REGISTRY.get(kind, {})
    probe = path
    while True:
        if probe in table:
            return probe, table[probe]
        cut = max(probe.rfind("."), probe.rfind("[]"))
        if cut <= 0:
            return None
        probe = probe[:cut]


def coverage_problems(classes: Any = None) -> list[str]:
    """Model fields without an entry, fields covered twice, entries naming no field."""
    from calico_net.model.resources import RESOURCE_CLASSES

    problems = []
    for cls in classes or RESOURCE_CLASSES:
        table = REGISTRY.get(cls.KIND)
        if table is None:
            problems.append(f"{cls.KIND}: the kind has no registry table")
            continue
        used = set()
        for path in model_paths(cls):
            found = entry_for(cls.KIND, path)
            if found is None:
                problems.append(f"{cls.KIND}: {path} has no registry entry")
            else:
                used.add(found[0])
            if found and found[0] != path and path in table:
                problems.append(f"{cls.KIND}: {path} has two entries")
        for path in sorted(set(table) - used):
            problems.append(f"{cls.KIND}: registry entry {path} names no model field")
    return problems


# --- what a document sets ------------------------------------------------------------------


def _set_leaves(value: Any, path: str, shown: str) -> Iterator[tuple[str, str, Any]]:
    """(registry path, shown path, value) of every field a document sets."""
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _set_leaves(sub, f"{path}.{key}" if path else str(key),
                                   f"{shown}.{key}" if shown else str(key))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            yield from _set_leaves(item, path + "[]", f"{shown}[{i}]")
    if path:
        yield path, shown, value


def field_statuses(doc: dict[str, Any]) -> list[tuple[str, str, Entry | None]]:
    """(field path, registry path, entry) for every field `doc` sets, innermost
    first; entry None for a path the registry does not know."""
    kind = str(doc.get("kind", ""))
    table = REGISTRY.get(kind, {})
    out = []
    for path, shown, value in _set_leaves(doc, "", ""):
        if path not in table and _is_container(value):
            continue  # its fields are listed themselves
        found = entry_for(kind, path)
        out.append((shown, found[0] if found else path, found[1] if found else None))
    return out


def no_effect_fields(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, reason) for each field a valid document sets that calico.net stores
    without effect; a configuration named so that nothing reads it is one entry for
    `metadata.name`. For calicoctl and the Ansible modules (their `warnings`)."""
    kind = str(doc.get("kind", ""))
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    effective = EFFECTIVE_NAMES.get(kind)
    if effective is not None and isinstance(name, str) and not effective.fullmatch(name):
        return [("metadata.name", f"only {kind}s named \"default\" or \"node.<nodename>\" are "
                                  "read; this one is stored without effect")]
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    table = REGISTRY.get(kind, {})
    for path, shown, value in _set_leaves(doc, "", ""):
        if path not in table:
            continue  # an ancestor's entry speaks for the subtree once, below
        entry = table[path]
        if entry.status != NO_EFFECT or shown in seen:
            continue
        if is_quiet(entry, value):
            continue
        seen.add(shown)
        out.append((shown, entry.where))
    # Parents were yielded after their children; show fields in document order.
    return sorted(out, key=lambda item: _order_key(doc, item[0]))


def _is_container(value: Any) -> bool:
    return (isinstance(value, dict) and bool(value)) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value))


def is_quiet(entry: Entry, value: Any) -> bool:
    return any(type(q) is type(value) and q == value for q in entry.quiet)


def _order_key(doc: dict[str, Any], shown: str) -> list[int]:
    """The position of `shown` in the document, so warnings read top to bottom."""
    key: list[int] = []
    node: Any = doc
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", shown):
        if part.startswith("["):
            idx = int(part[1:-1])
            key.append(idx)
            node = node[idx] if isinstance(node, list) and idx < len(node) else None
        elif isinstance(node, dict):
            keys = list(node)
            key.append(keys.index(part) if part in keys else len(keys))
            node = node.get(part)
    return key


def warning_lines(doc: dict[str, Any]) -> list[str]:
    """calicoctl's stderr lines for `doc`'s no-effect fields."""
    from calico_net.errors import printable

    kind = str(doc.get("kind", ""))
    md = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    where = f'{printable(md.get("namespace"), 100)}/' if md.get("namespace") else ""
    label = f'{kind} "{where}{printable(md.get("name"), 200)}"'
    return [f"Warning: {label}: {path}: no effect in calico.net: {reason}"
            for path, reason in no_effect_fields(doc)]


# --- the compatibility document --------------------------------------------------------------

_STATUS_TEXT = {ENFORCED: "enforced", NO_EFFECT: "**no effect** (warned)", REFUSED: "**refused**"}


def compatibility_markdown() -> str:
    """docs/compatibility.md, generated from the registry."""
    from calico_net.model.resources import RESOURCE_CLASSES

    lines = [
        "<!-- Generated from src/calico_net/model/registry.py; do not edit. Regenerate with:",
        "     .venv/bin/python -m calico_net.model.registry > docs/compatibility.md -->",
        "# Calico field compatibility",
        "",
        "Every field of every kind calico.net accepts, and what calico.net does with it:",
        "",
        "- **enforced**: read by the code named (a module under `src/`);",
        "- **no effect** (warned): validated and stored, as Calico stores it, but nothing in "
        "calico.net acts on it; `calicoctl apply`/`create`/`replace`/`validate` print a "
        "warning naming the field and this reason (not for the values listed as quiet, which "
        "are what calico.net does anyway);",
        "- **refused**: the document is refused with the field path and this reason.",
        "",
        "`[]` stands for any list index. A FelixConfiguration or BGPConfiguration named other "
        "than `default` or `node.<nodename>` is stored and has no effect (warned).",
        "",
    ]
    for cls in RESOURCE_CLASSES:
        kind = cls.KIND
        lines += [f"## {kind}", "", "| Field | Status | Where / why |", "|---|---|---|"]
        rows: dict[str, Entry] = {}
        for path in model_paths(cls):
            found = entry_for(kind, path)
            if found is not None:
                rows.setdefault(found[0], found[1])
        for path, entry in rows.items():
            where = entry.where
            if entry.quiet:
                where += " (quiet for: " + ", ".join(f"`{_yaml(q)}`" for q in entry.quiet) + ")"
            lines.append(f"| `{path}` | {_STATUS_TEXT[entry.status]} | {where} |")
        for path, reason in REFUSED_UNMODELLED.get(kind, {}).items():
            lines.append(f"| `{path}` | {_STATUS_TEXT[REFUSED]} | {reason} |")
        lines.append("")
    return "\n".join(lines)


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

