"""Reading manifests and validating resources, with errors an operator can act on.

`parse_documents(text)` turns a manifest (multi-document YAML, JSON, a JSON array, or
`kind: List` / `kind: <Kind>List` with `items`) into plain dicts; a syntax error names
the document and line. `parse_resource(doc)` checks apiVersion/kind/scope, validates
with the kind's pydantic model, then runs the cross-field checks, and raises one
`calico_net.errors.ValidationError` listing every (field path, message) it found.
pydantic's own messages are rewritten here into Calico-style ones
(`spec.ingres: unknown field (did you mean "ingress"?)`).
`check_pool_overlap(pools)` is the one check that needs other resources.
"""
from __future__ import annotations

import difflib
import json
import re
import typing
from typing import Any, Callable, Iterable

import yaml
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from calico_net.errors import ParseError, ValidationError
from calico_net.model.fields import name_problem, show
from calico_net.model.kinds import KINDS
from calico_net.model.resources import API_VERSION, IPPool, Resource, not_supported


class ManifestLoader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):  # type: ignore[misc]
    """YAML's safe loader (libyaml's when present) that refuses duplicate keys.

    PyYAML keeps the last of two equal keys silently; a manifest with two `spec:` or
    two `selector:` lines almost always hides a mistake, so it is a syntax error here.
    """


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable key: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {show(key)}", key_node.start_mark)
    return loader.construct_mapping(node)


ManifestLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# --- manifests -----------------------------------------------------------------------------

def parse_documents(text: str) -> list[dict[str, Any]]:
    """The resource documents of a manifest, in order, with List documents expanded."""
    docs = json_documents(text)
    if docs is not None:
        return docs
    numbered: list[tuple[int, Any]] = []
    try:
        for number, doc in enumerate(yaml.load_all(text, Loader=ManifestLoader), 1):
            numbered.append((number, doc))
    except yaml.YAMLError as exc:
        raise yaml_syntax_error(exc, len(numbered) + 1) from None
    return expand_lists([(n, d) for n, d in numbered if d is not None])


def json_documents(text: str, check: Callable[[Any], None] | None = None,
                   ) -> list[dict[str, Any]] | None:
    """The documents of a manifest written in JSON (an object or an array of them), or
    None when `text` is not JSON. `check(data)` sees the decoded data first."""
    if not text.lstrip().startswith(("{", "[")):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None  # maybe YAML flow style; the YAML parser reports the error if not
    if check is not None:
        check(data)
    docs = data if isinstance(data, list) else [data]
    return expand_lists(list(enumerate(docs, 1)))


def yaml_syntax_error(exc: yaml.YAMLError, document: int) -> ParseError:
    """The one-line error for a YAML syntax error in manifest document `document`."""
    mark, problem = None, None
    if isinstance(exc, yaml.MarkedYAMLError):   # the scanner's, parser's and composer's
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem
    problem = problem or str(exc).splitlines()[0]
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    return ParseError(f"YAML syntax error: {problem}", document=document, line=line, column=column)


def expand_lists(numbered: list[tuple[int, Any]]) -> list[dict[str, Any]]:
    """The resources of (document number, document) pairs, with the items of `List`
    and `<Kind>List` documents in their place; ParseError for anything else."""
    out: list[dict[str, Any]] = []
    for number, doc in numbered:
        if not isinstance(doc, dict):
            raise ParseError(f"expected a mapping with apiVersion, kind, metadata and spec, "
                             f"found {_type_name(doc)}", document=number)
        kind = doc.get("kind")
        if isinstance(kind, str) and (kind == "List" or (kind.endswith("List") and "items" in doc)):
            items = doc.get("items") or []
            if not isinstance(items, list):
                raise ParseError(f"{kind}: items must be a list", document=number)
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    raise ParseError(f"{kind}: items[{i}] is {_type_name(item)}, not a mapping",
                                     document=number)
                out.append(item)
        else:
            out.append(doc)
    return out


def _type_name(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", type(None): "nothing"}.get(type(value), type(value).__name__)


# --- one resource ------------------------------------------------------------------------------

def parse_resource(doc: Any) -> Resource:
    """Validate one document and return its resource object; raise ValidationError."""
    if not isinstance(doc, dict):
        raise ValidationError(None, None, [("", f"a resource must be a mapping, not {_type_name(doc)}")])
    kind = doc.get("kind")
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) and isinstance(meta.get("name"), str) else None
    name = _subject_text(name)
    errors: list[tuple[str, str]] = []

    api = doc.get("apiVersion")
    if api is None:
        errors.append(("apiVersion", f"required field is missing (use {API_VERSION})"))
    elif api != API_VERSION:
        errors.append(("apiVersion", f"{show(api)} is not supported (use {API_VERSION})"))

    info = KINDS.get(kind) if isinstance(kind, str) else None
    if kind is None:
        errors.append(("kind", "required field is missing (one of " + ", ".join(KINDS) + ")"))
    elif info is None:
        hint = ""
        if isinstance(kind, str):
            close = [k for k in KINDS if k.lower() == kind.lower()]
            close = close or difflib.get_close_matches(kind, list(KINDS), n=1, cutoff=0.75)
            if kind == "List" or kind.endswith("List"):
                hint = " - a list must be read with parse_documents"
            elif close:
                hint = f' - did you mean "{close[0]}"?'
        errors.append(("kind", f"{show(kind)} is not a Calico resource kind "
                               f"({', '.join(KINDS)}){hint}"))
    if info is None:
        raise ValidationError(_subject_text(kind) if isinstance(kind, str) else None, name, errors)

    if not info.namespaced and isinstance(meta, dict) and meta.get("namespace") is not None:
        errors.append(("metadata.namespace",
                       f"{info.kind} is not namespaced, remove metadata.namespace "
                       f"(found {show(meta.get('namespace'))})"))
        meta = {k: v for k, v in meta.items() if k != "namespace"}
        doc = {**doc, "metadata": meta}
    if api != API_VERSION:
        doc = {**doc, "apiVersion": API_VERSION}  # reported above; do not report twice

    try:
        res = info.model.model_validate(doc, by_alias=True, by_name=False)
    except PydanticValidationError as exc:
        errors.extend(pydantic_errors(exc, info.model))
        raise ValidationError(info.kind, name, errors) from None
    errors.extend(res.semantic_errors())
    if errors:
        raise ValidationError(info.kind, name, errors)
    return res


def _subject_text(text: str | None) -> str | None:
    """A name or kind as the header of an error message may print it: a valid one as it
    is, anything else escaped and cut short (`show` without its quotes)."""
    if text is None or name_problem(text) is None or text in KINDS:
        return text
    shown = show(text)
    return shown[1:-1] if shown.endswith('"') else shown[1:]


def validate_resource(res: Resource) -> None:
    """Re-check a resource built or changed in code (e.g. after `calicoctl label`)."""
    parse_resource(res.to_dict())


# --- pydantic errors -> (path, message) ------------------------------------------------------

_PATH_PART_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def format_loc(loc: Iterable[Any]) -> str:
    """A pydantic location as a field path (`spec.ingress[0].protocol`). A part that is
    not a plain field name (an unknown key the user wrote) is shown escaped and bounded."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and _INDEX_RE.fullmatch(part):
            path += part
        else:
            text = part if isinstance(part, str) and _PATH_PART_RE.fullmatch(part) else show(part)
            path += f".{text}" if path else text
    return path


_INDEX_RE = re.compile(r"\[[0-9]{1,10}\]")


def pydantic_errors(exc: PydanticValidationError, model: type[BaseModel]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        if err["type"] == "default_factory_not_called":
            continue  # a default computed from a field that already failed: not news
        loc = tuple(err["loc"])
        out.append((format_loc(loc), _message(err, model, loc)))
    return out


# Calico fields we knowingly leave out, with the reason given to the operator.
UNSUPPORTED_FIELDS = {
    "http": "HTTP matches need Calico's application-layer policy",
    "services": "Kubernetes Service matches need a Kubernetes datastore",
}


def _message(err: dict[str, Any], model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    etype = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if etype == "calico":
        return str(ctx.get("msg", err["msg"]))
    if etype == "missing":
        return "required field is missing"
    if etype == "extra_forbidden":
        known = _aliases_at(model, loc[:-1])
        field = str(loc[-1])
        if field in UNSUPPORTED_FIELDS:
            return not_supported(UNSUPPORTED_FIELDS[field])
        if len(field) > 64:  # no field is called that; no hint worth the work
            return "unknown field"
        close = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
        for k in known:
            if k.lower() == field.lower():
                close = [k]
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        return f"unknown field{hint}"
    if etype in ("string_type", "str_type"):
        return f"{show(value)} is not a string" + (" (quote it)" if isinstance(value, (bool, int, float)) else "")
    if etype in ("int_type", "int_parsing", "int_from_float"):
        return f"{show(value)} is not an integer"
    if etype in ("float_type", "float_parsing"):
        return f"{show(value)} is not a number"
    if etype in ("bool_type", "bool_parsing"):
        return f"{show(value)} is not a boolean (true or false, without quotes)"
    if etype in ("list_type", "tuple_type", "set_type"):
        return f"{show(value)} is not a list"
    if etype in ("dict_type", "model_type", "model_attributes_type", "dataclass_type"):
        return f"{show(value)} is not a mapping (expected key: value pairs)"
    if etype == "literal_error":
        return f"{show(value)} is not allowed (expected {ctx.get('expected', '')})"
    if etype in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{show(value)} is out of range ({err['msg'].lower()})"
    return f"{show(value)}: {err['msg']}"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside Optional[...] / list[...] / Annotated[...], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _aliases_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names (aliases) allowed at `loc` within `model`, for did-you-mean hints."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return []
        if isinstance(part, int):
            continue
        found = None
        for fname, finfo in current.model_fields.items():
            if (finfo.alias or fname) == part:
                found = _model_in(finfo.annotation)
                break
        current = found
    if current is None:
        return []
    return [finfo.alias or fname for fname, finfo in current.model_fields.items()]


# --- checks across resources -------------------------------------------------------------------

def check_pool_overlap(pools: Iterable[Resource]) -> None:
    """Raise ValidationError if two enabled IPPools overlap.

    Pass the existing pools followed by the new ones; a later pool with the same name
    replaces an earlier one (an update), so a pool never overlaps itself.
    """
    latest: dict[str, IPPool] = {}
    for pool in pools:
        if not isinstance(pool, IPPool):
            raise TypeError(f"check_pool_overlap takes IPPools, not {pool!r}")
        latest.pop(pool.metadata.name, None)
        latest[pool.metadata.name] = pool
    enabled = [p for p in latest.values() if not p.spec.disabled]
    for i, pool in enumerate(enabled):
        for other in enabled[:i]:
            if pool.spec.network.overlaps(other.spec.network):
                raise ValidationError(
                    "IPPool", pool.metadata.name,
                    [("spec.cidr", f'{show(pool.spec.cidr)} overlaps enabled IPPool '
                                   f'"{other.metadata.name}" ({other.spec.cidr})')])
