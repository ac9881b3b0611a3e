"""`LabelIndex`: many label sets by id, answering "which ids match this selector" with
set algebra over an inverted index (key -> value -> ids) instead of evaluating every
label set; it agrees exactly with `Selector.evaluate`.
"""
from __future__ import annotations

from typing import Any, Hashable, Iterable, Iterator, Mapping

from calico_net.model.selector.nodes import (
    NAMESPACE_LABEL, All, And, Contains, EndsWith, Equals, Global, Has, In, Not, NotEquals, NotIn,
    Or, Selector, StartsWith,
)
from calico_net.model.selector.parse import parse_selector

_EMPTY: frozenset[Any] = frozenset()


class LabelIndex:
    """Many label sets by id, with an inverted index for bulk selector matching.

    ``add``/``remove`` are incremental (cost proportional to the labels of one
    id).  ``select(sel)`` returns the ids whose labels match, computed by set
    algebra: ``==``, ``in`` and ``has`` are index lookups; ``!``, ``!=`` and
    ``not in`` are complements against all ids (or, inside ``&&``, differences);
    ``contains``/``starts with``/``ends with`` scan only the distinct values of
    their key.  The result always equals ``{i for i in ids if sel.evaluate(labels[i])}``.
    """

    def __init__(self) -> None:
        self._labels: dict[Hashable, dict[str, str]] = {}
        self._ids: set[Hashable] = set()
        # key -> value -> ids having key=value
        self._by_value: dict[str, dict[str, set[Hashable]]] = {}
        # key -> ids having key (any value), for has()
        self._by_key: dict[str, set[Hashable]] = {}

    # -- maintenance -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._labels

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._labels)

    def labels(self, item_id: Hashable) -> Mapping[str, str]:
        """The label set stored for ``item_id`` (KeyError if unknown)."""
        return self._labels[item_id]

    def add(self, item_id: Hashable, labels: Mapping[str, str]) -> None:
        """Add ``item_id`` or replace its labels (only changed keys are re-indexed)."""
        new = dict(labels)
        old = self._labels.get(item_id)
        if old is None:
            self._ids.add(item_id)
            by_value, by_key = self._by_value, self._by_key
            for k, v in new.items():   # _index, inlined: a cold start adds every endpoint's labels here
                values = by_value.get(k)
                if values is None:
                    values = by_value[k] = {}
                    by_key[k] = set()
                ids = values.get(v)
                if ids is None:
                    values[v] = {item_id}
                else:
                    ids.add(item_id)
                by_key[k].add(item_id)
        else:
            for k, v in old.items():
                if k not in new or new[k] != v:
                    self._unindex(item_id, k, v)
            for k, v in new.items():
                if k not in old or old[k] != v:
                    self._index(item_id, k, v)
        self._labels[item_id] = new

    update = add

    def remove(self, item_id: Hashable) -> None:
        """Forget ``item_id``; unknown ids are ignored."""
        old = self._labels.pop(item_id, None)
        if old is None:
            return
        self._ids.discard(item_id)
        for k, v in old.items():
            self._unindex(item_id, k, v)

    discard = remove

    def _index(self, item_id: Hashable, key: str, value: str) -> None:
        self._by_value.setdefault(key, {}).setdefault(value, set()).add(item_id)
        self._by_key.setdefault(key, set()).add(item_id)

    def _unindex(self, item_id: Hashable, key: str, value: str) -> None:
        values = self._by_value[key]
        ids = values[value]
        ids.discard(item_id)
        if not ids:
            del values[value]
        holders = self._by_key[key]
        holders.discard(item_id)
        if not holders:
            del self._by_key[key]
            del self._by_value[key]

    # -- queries -----------------------------------------------------------------

    def select(self, sel: Selector | str) -> set[Hashable]:
        """Ids whose labels match ``sel`` (a Selector or selector text).  The
        returned set is the caller's to keep or modify."""
        if isinstance(sel, str):
            sel = parse_selector(sel)
        result, owned = self._eval(sel)
        return result if owned else set(result)

    def select_brute_force(self, sel: Selector | str) -> set[Hashable]:
        """Reference implementation: ``evaluate`` on every label set."""
        if isinstance(sel, str):
            sel = parse_selector(sel)
        ev = sel.evaluate
        return {i for i, labels in self._labels.items() if ev(labels)}

    # _eval returns (ids, owned): owned is False when ids is one of the index's
    # own sets, which must then be copied before being handed out or mutated.

    def _eval(self, sel: Selector) -> tuple[set[Hashable], bool]:
        t = type(sel)
        if t is Equals:
            return self._by_value.get(sel.key, {}).get(sel.value, _EMPTY), False  # type: ignore[attr-defined, return-value]
        if t is Has:
            return self._by_key.get(sel.key, _EMPTY), False  # type: ignore[attr-defined, return-value]
        if t is In:
            return self._in(sel.key, sel.values), True  # type: ignore[attr-defined]
        if t is All:
            return self._ids, False
        if t is And:
            return self._and(sel.operands), True  # type: ignore[attr-defined]
        if t is Or:
            out: set[Hashable] = set()
            for op in sel.operands:  # type: ignore[attr-defined]
                out |= self._eval(op)[0]
            return out, True
        if t in (Contains, StartsWith, EndsWith):
            return self._scan(sel), True
        excluded = self._excluded(sel)
        if excluded is not None:
            return self._ids - excluded, True
        raise TypeError(f"unknown selector node {sel!r}")  # pragma: no cover

    def _excluded(self, sel: Selector) -> set[Hashable] | None:
        """For a node that means "not X", the ids matching X; None otherwise."""
        t = type(sel)
        if t is Not:
            return self._eval(sel.operand)[0]  # type: ignore[attr-defined]
        if t is NotEquals:
            return self._by_value.get(sel.key, {}).get(sel.value, _EMPTY)  # type: ignore[attr-defined, return-value]
        if t is NotIn:
            return self._in(sel.key, sel.values)  # type: ignore[attr-defined]
        if t is Global:
            return self._by_key.get(NAMESPACE_LABEL, _EMPTY)  # type: ignore[return-value]
        return None

    def _in(self, key: str, values: frozenset[str]) -> set[Hashable]:
        by_value = self._by_value.get(key)
        out: set[Hashable] = set()
        if by_value:
            if len(values) > len(by_value):
                for v, ids in by_value.items():
                    if v in values:
                        out |= ids
            else:
                for v in values:
                    ids = by_value.get(v)
                    if ids:
                        out |= ids
        return out

    def _scan(self, sel: Selector) -> set[Hashable]:
        by_value = self._by_value.get(sel.key)  # type: ignore[attr-defined]
        out: set[Hashable] = set()
        if not by_value:
            return out
        needle: str = sel.value  # type: ignore[attr-defined]
        t = type(sel)
        for v, ids in by_value.items():
            if (needle in v if t is Contains
                    else v.startswith(needle) if t is StartsWith
                    else v.endswith(needle)):
                out |= ids
        return out

    def _and(self, operands: Iterable[Selector]) -> set[Hashable]:
        # Intersect the positive operands smallest first, then subtract what the
        # negative operands exclude: no complement against all ids is built.
        positives: list[set[Hashable]] = []
        negatives: list[Selector] = []
        for op in operands:
            if type(op) in _NEGATIVE_TYPES:
                negatives.append(op)
            elif type(op) is not All:
                ids = self._eval(op)[0]
                if not ids:
                    return set()
                positives.append(ids)
        if positives:
            positives.sort(key=len)
            result = positives[0] & positives[1] if len(positives) > 1 else set(positives[0])
            for ids in positives[2:]:
                if not result:
                    return result
                result &= ids
        else:
            result = set(self._ids)
        for neg in negatives:
            if not result:
                break
            result -= self._excluded(neg)  # type: ignore[operator]
        return result


_NEGATIVE_TYPES = (Not, NotEquals, NotIn, Global)
