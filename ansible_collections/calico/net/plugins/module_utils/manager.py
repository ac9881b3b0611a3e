# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Read -> compare -> apply for Calico v3 resources, the way every resource module
of calico.net works.

A module describes what it wants as `Want` items: kind, name, namespace, state and,
for `present`, a function that builds the desired document from the stored one (the
typed modules that own the whole resource ignore the stored document; `node`,
`felix_configuration` and `bgp_configuration` merge into it). `ResourceManager.run`

1. reads every stored document (with its resourceVersion);
2. builds and validates every desired document before anything is written, so a bad
   input changes nothing (a policy's tier must exist or be written in the same run,
   as calicoctl checks it);
3. compares stored and desired by meaning (`meaning.canonical`), not text;
4. unless in check mode, writes all changed documents in ONE etcd transaction,
   each a compare-and-swap on the resourceVersion it read (a concurrent change
   fails the task instead of being overwritten), then deletes what is `absent`;
5. returns `changed`, the documents, and `diff: {before, after}` as YAML text. The
   diff is computed from what was read and what would be written, so check mode and
   the real run report the same diff.

With `--diff`, a change also gets its preview (`calico_net.preview`, computed
before anything is written): per calico Node whose table inet calico or bird.cfg
the change alters, the unified diffs as the agent and confd would render them from
the datastore plus the planned change. They go into the diff's `prepared` text
(Ansible prints it after the resource diff) and, structured, into `preview`.
CALICO_NET_PREVIEW=0 in the controller's environment turns it off.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable

from ansible_collections.calico.net.plugins.module_utils.common import ModuleError, datastore
from ansible_collections.calico.net.plugins.module_utils.meaning import canonical, strip_server_metadata

try:
    import yaml
    from calico_net.datastore import ResourceNotFound
    from calico_net.errors import ValidationError
    from calico_net.model import parse_resource, resolve_kind
    from calico_net.model.registry import warning_lines
    from calico_net.model.tiers import check_tier_references
except ImportError:  # reported by common.run_module
    pass

API_VERSION = "projectcalico.org/v3"


@dataclass
class Want:
    """One resource the module wants present (built by `build`) or absent."""

    kind: str
    name: str
    namespace: str | None = None
    state: str = "present"
    # build(stored document without server metadata, or None) -> desired document
    build: Callable[[dict[str, Any] | None], dict[str, Any]] | None = None


@dataclass
class _Plan:
    want: Want
    key: str
    before: dict[str, Any] | None  # stored document, server metadata stripped
    revision: str | None  # resourceVersion of the stored document
    after: dict[str, Any] | None  # document to write (None: delete / stays absent)
    changed: bool
    stored: dict[str, Any] | None = None  # as read, with server metadata


def new_document(kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name}
    if namespace:
        md["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": md}


def to_yaml(doc: Any) -> str:
    if doc is None:
        return ""
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True)


def describe(kind: str, name: str, namespace: str | None) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def same_meaning(stored: dict[str, Any], desired: dict[str, Any]) -> bool:
    try:
        return canonical(stored) == canonical(desired)
    except ValidationError:
        return False  # a stored document that no longer validates is rewritten


class ResourceManager:
    def __init__(self, datastore: Any, *, check_mode: bool, diff: bool) -> None:
        self.datastore = datastore
        self.check_mode = check_mode
        self.diff = diff

    def _read(self, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        try:
            return self.datastore.get(kind, name, namespace)
        except ResourceNotFound:
            return None

    def plan(self, wants: list[Want]) -> list[_Plan]:
        plans: list[_Plan] = []
        seen: set[str] = set()
        for want in wants:
            info = resolve_kind(want.kind)
            want.kind = info.kind
            if info.namespaced and not want.namespace:
                raise ModuleError(f'{describe(info.kind, want.name, None)}: a namespace is required '
                                  f'({info.kind} is namespaced)')
            ns = want.namespace if info.namespaced else None
            want.namespace = ns
            key = describe(info.kind, want.name, ns)
            if key in seen:
                raise ModuleError(f"{key} appears twice in the input")
            seen.add(key)
            stored = self._read(info.kind, want.name, ns)
            before = strip_server_metadata(stored)
            revision = (stored or {}).get("metadata", {}).get("resourceVersion")
            if want.state == "absent":
                plans.append(_Plan(want, key, before, revision, None, stored is not None, stored))
                continue
            if want.build is None:
                raise ModuleError(f"{key}: nothing to build the document from")
            desired = want.build(strip_server_metadata(stored))
            # Validate (raises ValidationError with field paths) and normalise to the
            # document as the datastore will store it.
            desired = strip_server_metadata(parse_resource(desired).to_dict())
            md = desired.get("metadata") or {}
            if md.get("name") != want.name or (ns and md.get("namespace") != ns):
                raise ModuleError(f"{key}: the document names a different resource "
                                  f"({describe(info.kind, md.get('name'), md.get('namespace'))})")
            if stored is not None and same_meaning(stored, desired):
                plans.append(_Plan(want, key, before, revision, before, False, stored))
            else:
                plans.append(_Plan(want, key, before, revision, desired, True, stored))
        self._check_tiers(plans)
        return plans

    def _check_tiers(self, plans: list[_Plan]) -> None:
        """As calicoctl: a policy to be written must name a tier that is built in,
        stored, or written in this run (`model.tiers.check_tier_references`, which
        raises ValidationError on spec.tier); a Tier deleted in this run is gone."""
        written = [p.after for p in plans if p.changed and p.after is not None]
        if not written:
            return
        kept_tiers = [p.after for p in plans
                      if p.want.kind == "Tier" and p.after is not None and not p.changed]
        deleted = {p.want.name for p in plans if p.want.kind == "Tier" and p.after is None}

        def tier_exists(name: str) -> bool:
            return name not in deleted and self._read("Tier", name, None) is not None

        check_tier_references(written + kept_tiers, tier_exists)

    def run(self, wants: list[Want], before_write: Callable[[bool], bool] | None = None) -> dict[str, Any]:
        """`before_write(check_mode)` runs after every document validated and before
        etcd is written (a BGP secret file the documents name); True means it changed
        something on the host, which makes the task changed."""
        plans = self.plan(wants)
        previews = self._preview(plans) if self.diff else None
        host_changed = before_write(self.check_mode) if before_write else False
        written: dict[str, dict[str, Any]] = {}
        if not self.check_mode:
            to_write = []
            for p in plans:
                if p.changed and p.after is not None:
                    doc = dict(p.after, metadata=dict(p.after["metadata"]))
                    # CAS on what we compared against ("0"-less create when absent).
                    if p.revision:
                        doc["metadata"]["resourceVersion"] = p.revision
                    to_write.append((p, doc))
            if to_write:
                # Overlapping pools and the like are checked by the datastore first.
                results = self.datastore.apply_all([doc for _plan, doc in to_write])
                for (p, _doc), stored in zip(to_write, results):
                    written[p.key] = stored
            for p in plans:
                if p.changed and p.after is None:
                    self.datastore.delete(p.want.kind, p.want.name, p.want.namespace,
                                          resource_version=p.revision)
        result = self._result(plans, written)
        if previews is not None:
            result["preview"] = previews["nodes"]
            if previews.get("warning"):
                result.setdefault("warnings", []).append(previews["warning"])
            if previews["text"] and isinstance(result.get("diff"), dict):
                result["diff"]["prepared"] = previews["text"]
        if host_changed:
            result["changed"] = True
        return result

    def _preview(self, plans: list[_Plan]) -> dict[str, Any] | None:
        """Per node, what the changed documents do to its ruleset and bird.cfg (see
        the module docstring); a failure to compute it is a warning, not an error."""
        if os.environ.get("CALICO_NET_PREVIEW", "1") in ("0", "false", "no"):
            return None
        changes = [p for p in plans if p.changed]
        if not changes:
            return {"nodes": [], "text": ""}
        try:
            from calico_net.preview import Change, preview_datastore, text_report

            planned = [Change.put(p.after) if p.after is not None
                       else Change.delete(p.want.kind, p.want.name, p.want.namespace) for p in changes]
            nodes = preview_datastore(self.datastore, planned,
                                      form=os.environ.get("CALICO_NET_PREVIEW_FORM", "auto"))
        except Exception as e:  # pylint: disable=broad-except
            return {"nodes": [], "text": "", "warning": f"no per-node preview: {e.__class__.__name__}: {e}"}
        return {"nodes": [n.to_json() for n in nodes], "text": text_report(nodes) if nodes else ""}

    def _result(self, plans: list[_Plan], written: dict[str, dict[str, Any]]) -> dict[str, Any]:
        resources = []
        for p in plans:
            if p.key in written:
                resources.append(written[p.key])
            elif not p.changed and p.after is not None:
                resources.append(p.stored)  # unchanged: the stored document, with its resourceVersion
            elif p.after is not None:
                resources.append(p.after)
            else:
                resources.append(None)
        result: dict[str, Any] = dict(
            changed=any(p.changed for p in plans),
            resources=resources,
        )
        # Fields calico.net stores without effect: named, as calicoctl names them on
        # stderr, so nothing a task sets is ignored silently.
        warnings = [line[len("Warning: "):] for p in plans if p.after is not None
                    for line in warning_lines(p.after)]
        if warnings:
            result["warnings"] = warnings
        if self.diff:
            if len(plans) == 1:
                p = plans[0]
                result["diff"] = dict(
                    before=to_yaml(p.before), after=to_yaml(p.after),
                    before_header=p.key, after_header=p.key,
                )
            else:
                result["diff"] = dict(
                    before="".join(f"# {p.key}\n{to_yaml(p.before)}" for p in plans if p.before or p.after),
                    after="".join(f"# {p.key}\n{to_yaml(p.after)}" for p in plans if p.before or p.after),
                )
        return result


def run_wants(module: Any, datastore: Any, wants: list[Want],
              before_write: Callable[[bool], bool] | None = None) -> dict[str, Any]:
    """For modules about one resource: the result with `resource` (None when absent)."""
    manager = ResourceManager(datastore, check_mode=module.check_mode, diff=module._diff)
    result = manager.run(wants, before_write)
    if len(wants) == 1:
        result["resource"] = result.pop("resources")[0]
    return result


def camel_spec(params: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    """Calico spec fields from module options that are set: {option: calicoField}."""
    return {field: params[option] for option, field in fields.items() if params.get(option) is not None}


def metadata_from(params: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    md = doc["metadata"]
    if params.get("labels"):
        md["labels"] = {str(k): _label_value(v) for k, v in params["labels"].items()}
    if params.get("annotations"):
        md["annotations"] = {str(k): _label_value(v) for k, v in params["annotations"].items()}
    return doc


def _label_value(value: Any) -> Any:
    # YAML `env: prod` is a string, but `tier: 1` or `enabled: true` are not: Calico
    # labels are strings, so give them the text the user typed.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


# --- value conversions from Ansible options to Calico fields ----------------------------


def as_number(value: Any) -> Any:
    """"64512" (Ansible gives str options as text) -> 64512; asdot "64512.10" stays text."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def number(value: Any) -> Any:
    """Policy order 100.0 -> 100 (Calico's order is a float; integers read better)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def cidr_blocks(values: list[str]) -> list[dict[str, str]]:
    """["198.18.96.0/20"] -> [{"cidr": "198.18.96.0/20"}] (BGPConfiguration service IPs)."""
    return [{"cidr": v} for v in values]


def spec_from(params: dict[str, Any], fields: dict[str, str],
              converters: dict[str, Callable[[Any], Any]] | None) -> dict[str, Any]:
    spec = camel_spec(params, fields)
    for field, convert in (converters or {}).items():
        if field in spec:
            spec[field] = convert(spec[field])
    return spec


def option_paths(fields: dict[str, str], **extra: str) -> dict[str, str]:
    """Calico field path -> module option, for error messages."""
    paths = {f"spec.{field}": option for option, field in fields.items()}
    paths.update({"metadata.labels": "labels", "metadata.annotations": "annotations",
                  "metadata.name": "name", "metadata.namespace": "namespace"})
    paths.update(extra)
    return paths


def declared_handler(kind: str, fields: dict[str, str], *, namespaced: bool = False,
                     converters: dict[str, Callable[[Any], Any]] | None = None) -> Callable[[Any], dict[str, Any]]:
    """Handler for a module that declares the whole resource: options left out take
    Calico's defaults, whatever else is stored is replaced."""

    def handle(module: Any) -> dict[str, Any]:
        params = module.params
        ns = params.get("namespace") if namespaced else None

        def build(stored: dict[str, Any] | None) -> dict[str, Any]:
            doc = new_document(kind, params["name"], ns)
            doc["spec"] = spec_from(params, fields, converters)
            return metadata_from(params, doc)

        want = Want(kind, params["name"], ns, params["state"], build)
        return run_wants(module, datastore(params), [want])

    return handle


def merged_handler(kind: str, fields: dict[str, str], *,
                   converters: dict[str, Callable[[Any], Any]] | None = None,
                   nested: dict[str, str] | None = None) -> Callable[[Any], dict[str, Any]]:
    """Handler for a module that sets only the settings it is given (FelixConfiguration,
    BGPConfiguration, Node): options left out keep their stored value.

    Module options understood here when the module has them: `settings` (more spec
    fields by their Calico names; null removes one), `purge` (drop every spec field not
    given), `labels`/`annotations` merged into the stored ones unless `purge_labels`.
    `nested` puts fields under a sub-mapping of the spec ({"bgp": "bgp"} for Node);
    there an empty string removes the field.
    """

    def handle(module: Any) -> dict[str, Any]:
        params = module.params
        build = merged_build(kind, params, fields, converters=converters, nested=nested)
        want = Want(kind, params["name"], None, params["state"], build)
        return run_wants(module, datastore(params), [want])

    return handle


def merged_build(kind: str, params: dict[str, Any], fields: dict[str, str], *,
                 converters: dict[str, Callable[[Any], Any]] | None = None,
                 nested: dict[str, str] | None = None) -> Callable[[dict[str, Any] | None], dict[str, Any]]:
    """The document builder of `merged_handler` (for a module that adds to it)."""

    def build(stored: dict[str, Any] | None) -> dict[str, Any]:
        doc = stored if stored is not None else new_document(kind, params["name"])
        doc = json_copy(doc)
        doc.setdefault("metadata", {})
        spec = {} if params.get("purge") else dict(doc.get("spec") or {})
        given = spec_from(params, fields, converters)
        for field, value in given.items():
            section = (nested or {}).get(field)
            if section:
                sub = dict(spec.get(section) or {})
                if value == "":
                    sub.pop(field, None)
                else:
                    sub[field] = value
                if sub:
                    spec[section] = sub
                else:
                    spec.pop(section, None)
            else:
                spec[field] = value
        for field, value in (params.get("settings") or {}).items():
            if value is None:
                spec.pop(field, None)
            else:
                spec[field] = value
        doc["spec"] = spec
        md = doc["metadata"]
        for what in ("labels", "annotations"):
            if params.get(what) is None:
                continue
            new = {str(k): _label_value(v) for k, v in params[what].items()}
            merged = new if params.get("purge_labels") and what == "labels" else dict(md.get(what) or {}, **new)
            md[what] = {k: v for k, v in merged.items() if v is not None}
        return doc

    return build


def json_copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def label_values(labels: dict[str, Any]) -> dict[str, Any]:
    """Label mappings from Ansible: keys and values as the strings Calico requires."""
    return {str(k): _label_value(v) for k, v in labels.items()}
