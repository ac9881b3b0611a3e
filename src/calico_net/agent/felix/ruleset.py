"""The desired content of table inet calico: `Ruleset`.

Chains as tuples of rule lines, sets and verdict maps with their elements, with
dirty tracking (what changed since the last write) and a fingerprint: every
object and element contributes a 64-bit hash to an order-independent sum, kept
up to date as things change (or recomputed once after a bulk load). The writer
stores the fingerprint in set ``cali-meta``; a restarted agent whose desired
table hashes to what the kernel holds adopts the table instead of rewriting it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Mapping

__all__ = ["ChainDef", "SetDef", "Ruleset", "LAYOUT_VERSION"]

#: bump when the way objects are written changes without changing their text
LAYOUT_VERSION = 1
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class ChainDef:
    rules: tuple[str, ...]
    hook: str | None = None       # "type filter hook forward priority filter; policy accept;"
    comment: str | None = None


@dataclass
class SetDef:
    decl: str                     # "type ipv4_addr" / "type ifname : verdict" ...
    is_map: bool = False
    elements: dict[str, str | None] = field(default_factory=dict)


def _h(*parts: object) -> int:
    d = hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(d, "big")


def _elem_hash(name: str, key: str, value: str | None) -> int:
    d = hashlib.blake2b(f"elem\0{name}\0{key}\0{value}".encode(), digest_size=8).digest()
    return int.from_bytes(d, "big")


def _chain_hash(name: str, c: ChainDef) -> int:
    return _h("chain", name, c.hook, c.comment, "\n".join(c.rules))


class Ruleset:
    """Desired content of table inet calico, with dirty tracking and a fingerprint."""

    def __init__(self) -> None:
        self.chains: dict[str, ChainDef] = {}
        self.sets: dict[str, SetDef] = {}
        self.dirty_chains: set[str] = set()
        self.dirty_sets: set[str] = set()
        self.dirty_elems: dict[str, set[str]] = {}
        self._sum: int | None = 0

    # fingerprint ------------------------------------------------------------

    def fingerprint(self) -> str:
        if self._sum is None:
            self._sum = self._full_sum()
        return f"{(self._sum + LAYOUT_VERSION) & _MASK64:016x}"[:15]

    def _full_sum(self) -> int:
        total = 0
        for name, c in self.chains.items():
            total += _chain_hash(name, c)
        b2b, from_bytes = hashlib.blake2b, int.from_bytes
        for name, st in self.sets.items():
            total += _h("set", name, st.decl, st.is_map)
            # _elem_hash inlined (tens of thousands of elements on a cold start)
            for k, v in st.elements.items():
                total += from_bytes(b2b(f"elem\0{name}\0{k}\0{v}".encode(),
                                        digest_size=8).digest(), "big")
        return total & _MASK64

    def invalidate_fingerprint(self) -> None:
        """Stop maintaining the fingerprint incrementally until it is next asked for
        (bulk loads: one pass at the end is cheaper than one hash per change)."""
        self._sum = None

    def _add_hash(self, v: int, sign: int) -> None:
        if self._sum is not None:
            self._sum = (self._sum + sign * v) & _MASK64

    # chains -----------------------------------------------------------------

    def set_chain(self, name: str, rules: Iterable[str], hook: str | None = None,
                  comment: str | None = None) -> None:
        new = ChainDef(tuple(rules), hook, comment)
        old = self.chains.get(name)
        if old == new:
            return
        if old is not None:
            self._add_hash(_chain_hash(name, old), -1)
        self._add_hash(_chain_hash(name, new), +1)
        self.chains[name] = new
        self.dirty_chains.add(name)

    def delete_chain(self, name: str) -> None:
        old = self.chains.pop(name, None)
        if old is not None:
            self._add_hash(_chain_hash(name, old), -1)
            self.dirty_chains.add(name)

    # sets -------------------------------------------------------------------

    def ensure_set(self, name: str, decl: str, is_map: bool = False) -> None:
        old = self.sets.get(name)
        if old is not None and old.decl == decl and old.is_map == is_map:
            return
        if old is not None:
            self.delete_set(name)
        self.sets[name] = SetDef(decl, is_map)
        self._add_hash(_h("set", name, decl, is_map), +1)
        self.dirty_sets.add(name)

    def delete_set(self, name: str) -> None:
        old = self.sets.pop(name, None)
        if old is None:
            return
        self._add_hash(_h("set", name, old.decl, old.is_map), -1)
        if self._sum is not None:
            for k, v in old.elements.items():
                self._add_hash(_elem_hash(name, k, v), -1)
        self.dirty_sets.add(name)
        self.dirty_elems.pop(name, None)

    def add_element(self, name: str, key: str, value: str | None = None) -> None:
        s = self.sets[name]
        els = s.elements
        if key in els:
            old = els[key]
            if old == value:
                return
            if self._sum is not None:
                self._add_hash(_elem_hash(name, key, old), -1)
        els[key] = value
        if self._sum is not None:
            self._add_hash(_elem_hash(name, key, value), +1)
        d = self.dirty_elems.get(name)
        if d is None:
            self.dirty_elems[name] = {key}
        else:
            d.add(key)

    def remove_element(self, name: str, key: str) -> None:
        s = self.sets.get(name)
        if s is None or key not in s.elements:
            return
        old = s.elements.pop(key)
        if self._sum is not None:
            self._add_hash(_elem_hash(name, key, old), -1)
        self.dirty_elems.setdefault(name, set()).add(key)

    def replace_elements(self, name: str, elements: Mapping[str, str | None] | Iterable[str]) -> None:
        new: dict[str, str | None] = (dict(elements) if isinstance(elements, Mapping)
                                      else dict.fromkeys(elements))
        s = self.sets[name]
        if self._sum is None:
            # no fingerprint to maintain (bulk load): plain dict operations, same result
            els = s.elements
            touched = [k for k in els if k not in new]
            for k in touched:
                del els[k]
            for k, v in new.items():
                if k not in els or els[k] != v:
                    els[k] = v
                    touched.append(k)
            if touched:
                d = self.dirty_elems.get(name)
                if d is None:
                    self.dirty_elems[name] = set(touched)
                else:
                    d.update(touched)
            return
        for k in [k for k in s.elements if k not in new]:
            self.remove_element(name, k)
        for k, v in new.items():
            self.add_element(name, k, v)

    def clear_dirty(self) -> None:
        self.dirty_chains.clear()
        self.dirty_sets.clear()
        self.dirty_elems.clear()

    @property
    def dirty(self) -> bool:
        return bool(self.dirty_chains or self.dirty_sets or self.dirty_elems)

