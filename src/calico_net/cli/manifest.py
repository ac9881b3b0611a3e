"""calicoctl's input, read within bounds.

A manifest is text from whoever runs calicoctl, and YAML and JSON let a small text
cost a lot:

* aliases: nine anchors of nine aliases each ("billion laughs") is under 1 KB of
  YAML and expands to 9^9 values once constructed;
* nesting: a `[[[[...]]]]` 100,000 levels deep takes any recursive reader past
  Python's recursion limit;
* sheer size.

So a manifest is read like this:

* at most `MAX_MANIFEST_BYTES` are read (a larger input is refused unread);
* JSON (text starting with `{` or `[`) goes through `json.loads`; a document too deep
  for it is refused, not a traceback;
* YAML is composed first (libyaml; an alias is then one node reachable twice, not a
  copy) and the node graph is measured before anything is constructed: the values
  it expands to, aliases counted at their full size, at most `MAX_VALUES` for the
  whole manifest; nesting at most `MAX_DEPTH`; an alias inside its own anchor is
  refused. The measure walks each node once, so a bomb is refused in microseconds;
* composing needs memory in proportion to the values written out, so when a cheap
  count of YAML's indicator characters says the text could hold more than
  `MAX_VALUES`, libyaml's parser counts its events first (in C, nothing built), and
  a text with more than twice `MAX_VALUES` events is refused before composing.

Every refusal is one `ParseError` line naming the document. The documents that pass
are those of `calico_net.model.parse_documents` (List documents expanded), with its
loader (duplicate keys are an error) and its messages for syntax errors.
"""
from __future__ import annotations

import gc
import sys
from typing import Any

import yaml

from calico_net.errors import ParseError, printable

# etcd takes one manifest in one transaction, and the calico.net etcd role's request
# limit is 10 MiB (etcd's own default 1.5 MiB): a bigger manifest could not be applied.
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
# Values (scalars, lists and mappings, after alias expansion) in one manifest. A
# GlobalNetworkPolicy with two rules is ~50 values in ~440 bytes of YAML: 1,000,000
# values is ~8 MiB of such policies. Composing 1,000,000 values costs ~350 MB at most.
MAX_VALUES = 1_000_000
# Nesting of lists and mappings. Calico resources nest 6-8 deep (a List's items[i]
# .spec.ingress[j].destination.ports[k]); libyaml itself stops at 1,000.
MAX_DEPTH = 64

_MIB = 1024 * 1024


def read_manifest(path: str) -> str:
    """The manifest's text, from a file or "-" (stdin); refused unread past the cap."""
    limit = MAX_MANIFEST_BYTES
    if path == "-":
        stream = getattr(sys.stdin, "buffer", sys.stdin)
        data = stream.read(limit + 1)
    else:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    where = "standard input" if path == "-" else printable(path, 200)
    if len(data) > limit:
        raise ParseError(f"{where}: larger than {limit // _MIB} MiB, more than calicoctl reads "
                         "in one manifest; split it into several")
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParseError(f"{where}: not UTF-8 text (byte {e.start})") from None


def _too_many(document: int | None) -> ParseError:
    return ParseError(f"more than {MAX_VALUES:,} values (YAML aliases counted at their full "
                      "size); calicoctl reads at most that many in one manifest", document=document)


class _Budget:
    """Values still allowed in this manifest."""

    def __init__(self) -> None:
        self.left = MAX_VALUES

    def spend(self, n: int, document: int | None) -> None:
        self.left -= n
        if self.left < 0:
            raise _too_many(document)


def _too_deep(document: int | None, line: int | None = None, column: int | None = None) -> ParseError:
    return ParseError(f"nested deeper than {MAX_DEPTH} levels", document=document,
                      line=line, column=column)


def _measure(root: yaml.Node, budget: _Budget, document: int) -> None:
    """Refuse a composed document that expands to too many values, nests too deep or
    holds an alias inside its own anchor. Each node is visited once: a node reachable
    through aliases is measured once and counted at its full size every time."""
    scalar = yaml.ScalarNode
    mapping = yaml.MappingNode
    if isinstance(root, scalar):
        budget.spend(1, document)
        return
    sizes: dict[int, int] = {}
    heights: dict[int, int] = {}
    open_: set[int] = set()             # entered, not finished: the path from the root
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finish = stack.pop()
        nid = id(node)
        if isinstance(node, mapping):
            children = [n for pair in node.value for n in pair]
        else:
            children = node.value
        if finish:
            size, height = 1, 0
            for c in children:
                if isinstance(c, scalar):
                    size += 1
                else:
                    cid = id(c)
                    size += sizes[cid]
                    if heights[cid] > height:
                        height = heights[cid]
            height += 1
            if height > MAX_DEPTH:
                mark = node.start_mark
                raise _too_deep(document, mark.line + 1 if mark else None,
                                mark.column + 1 if mark else None)
            if size > budget.left:
                raise _too_many(document)
            sizes[nid] = size
            heights[nid] = height
            open_.discard(nid)
            continue
        if nid in sizes:
            continue
        if nid in open_:
            raise ParseError("a YAML alias refers to a node that contains it (a recursive "
                             "structure cannot be a resource)", document=document)
        open_.add(nid)
        stack.append((node, True))
        for c in children:
            if not isinstance(c, scalar) and id(c) not in sizes:
                stack.append((c, False))
    budget.spend(sizes[id(root)], document)


def _measure_data(data: Any, budget: _Budget) -> None:
    """The same bounds for JSON's data (no aliases there): values and nesting."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            raise _too_deep(None)
        for c in children:
            if isinstance(c, (dict, list)):
                stack.append((c, depth + 1))
            else:
                count += 1
    budget.spend(count, None)


def _values_bound(text: str) -> int:
    """More than the values a YAML text can hold (C-speed counts): every value but a
    document's root is an entry of a collection, introduced by one of `- : ? , [ {`
    (a mapping entry is two values: key and value), and a collection is opened by an
    entry or a bracket; a document starts with `---`, or after a `...`, or is the first."""
    n = sum(text.count(c) for c in "-:?,[{") + text.count("...")
    return 3 * n + 2


def _count_events(text: str, loader_cls: type) -> None:
    """Refuse a YAML text with more than MAX_VALUES values before composing it.

    With libyaml, its parser counts the events in C (`raw_parse`: nothing is built, so
    the count costs a small part of composing). A value is one event, a
    list or mapping two (start, end): a manifest of resources has ~1.3 events a value,
    and more than 2 * MAX_VALUES events are more values than calicoctl reads — only a
    text of nearly nothing but empty lists could be refused with fewer. Without
    libyaml, the values themselves are counted from the event stream."""
    raw_parse = getattr(loader_cls, "raw_parse", None)
    if raw_parse is not None:
        loader = loader_cls(text)
        try:
            events = raw_parse(loader)
        finally:
            loader.dispose()
        if events > 2 * MAX_VALUES:
            raise _too_many(None)
        return
    count = 0
    nodes = (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent, yaml.AliasEvent)
    document = 1
    for event in yaml.parse(text, Loader=loader_cls):
        if isinstance(event, nodes):
            count += 1
            if count > MAX_VALUES:
                raise _too_many(document)
        elif isinstance(event, yaml.DocumentEndEvent):
            document += 1


def parse_manifest(text: str) -> list[dict[str, Any]]:
    """The resource documents of a manifest, in order, with List documents expanded —
    `calico_net.model.parse_documents` within this module's bounds."""
    from calico_net.model.validation import (
        ManifestLoader, expand_lists, json_documents, yaml_syntax_error,
    )

    budget = _Budget()
    try:
        docs = json_documents(text, lambda data: _measure_data(data, budget))
    except RecursionError:
        raise _too_deep(1) from None
    if docs is not None:
        return docs

    class Loader(ManifestLoader):  # type: ignore[misc, valid-type]
        """The model's loader, measuring each composed document before constructing it."""

        document = 0

        def get_node(self) -> Any:
            node = super().get_node()
            Loader.document += 1
            if node is not None:
                _measure(node, budget, Loader.document)
            return node

    numbered: list[tuple[int, Any]] = []
    # Loading makes a great many objects and no cycles (a recursive alias is refused
    # before construction): the cyclic collector would only walk them again and again
    # (it more than doubles the time of a big manifest).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if _values_bound(text) > MAX_VALUES:
            _count_events(text, ManifestLoader)
        for number, doc in enumerate(yaml.load_all(text, Loader=Loader), 1):
            numbered.append((number, doc))
    except yaml.YAMLError as exc:
        error = yaml_syntax_error(exc, len(numbered) + 1)
        if "maximum nesting depth" in error.message:    # libyaml's own limit (1,000)
            raise _too_deep(error.document, error.line, error.column) from None
        raise error from None
    except RecursionError:  # a pure-Python YAML parser (no libyaml): deep nesting
        raise _too_deep(len(numbered) + 1) from None
    finally:
        if gc_was_enabled:
            gc.enable()
    return expand_lists([(n, d) for n, d in numbered if d is not None])
