"""Writes a `Ruleset` to the kernel as nft transactions: `NftWriter`.

One ``nft -f -`` script per apply (one atomic transaction), remembering what was
written:

* Incremental scripts only touch what changed: new sets/chains are declared first,
  map/set elements are deleted, changed chains are ``flush chain`` + ``add rule``,
  elements are added, then dropped chains are flushed and deleted, dropped sets
  deleted last, an order in which every reference in the transaction resolves.
* An apply whose changes are only elements of existing sets goes out as one
  netlink element batch (the runner's `element_writer`), no nft run.
* A full load (first apply, after drift or after a failed incremental transaction)
  is ``add table; delete table; table inet calico { ... }`` in one script, so the
  old table is replaced atomically (no window without policy).
* `check(counts)` compares rule counts per chain and element counts per set/map
  read back from the kernel with what was written: the cheap drift check behind
  ``PolicyDataplane.refresh``.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from . import nftstr
from .nft import FAMILY, META_SET, TABLE, NftError
from .nftstr import check_element_list, check_rule_line, ident
from .ruleset import ChainDef, Ruleset, SetDef

if TYPE_CHECKING:
    from .backends import NftBackend

log = logging.getLogger(__name__)

__all__ = ["NftWriter", "WriteStats"]

_ELEMENT_CHUNK = 2000


@dataclass
class WriteStats:
    full: bool = False
    script_lines: int = 0
    chains_written: int = 0
    chains_deleted: int = 0
    elements_added: int = 0
    elements_deleted: int = 0
    skipped: bool = False          # nothing to write / adopted the live table
    netlink: bool = False          # sent as netlink element messages (no nft run)
    seconds: float = 0.0


def _fp_elem(fp: str) -> str:
    """The fingerprint (15 hex characters) as the element of set ``cali-meta``."""
    return nftstr.ifname(fp)


def _elem_text(key: str, value: str | None) -> str:
    return key if value is None else f"{key} : {value}"


def _elements(items: Iterable[tuple[str, str | None]]) -> str:
    """Elements as nft writes them inside ``{ }``, checked as one list (see
    `nftstr.check_element_list`): nothing in a key or value can end the list or
    add an element. (The keys are made by the renderers from checked parts; this
    is the last look, one scan per list.)"""
    texts = [_elem_text(k, v) for k, v in items]
    return check_element_list(", ".join(texts), len(texts))


# What base chains are hooked with (policy.py's constants): nothing else is written.
_HOOK_RE = re.compile(r"type (?:filter|nat|route) hook (?:prerouting|input|forward|output|postrouting)"
                      r" priority [a-z]+(?: ?[+-] ?[0-9]+)?; policy (?:accept|drop);?")
# Set declarations (the renderers' constants): types, flags, no quotes or braces.
_DECL_RE = re.compile(r"[a-z0-9_ .:;]+")


def _hook(hook: str) -> str:
    if not _HOOK_RE.fullmatch(hook):
        raise nftstr.NftStringError(f"{nftstr.show(hook)} is not a base chain hook we write")
    return hook.rstrip(";") + ";"


def _decl(decl: str) -> str:
    if not _DECL_RE.fullmatch(decl):
        raise nftstr.NftStringError(f"{nftstr.show(decl)} is not a set declaration we write")
    return "; ".join(p.strip() for p in decl.split(";") if p.strip())


def _rules(rules: Iterable[str]) -> Iterable[str]:
    for r in rules:
        yield check_rule_line(r)


def _chain_decl(name: str, c: ChainDef) -> str:
    inner = []
    if c.hook:
        inner.append(_hook(c.hook))
    if c.comment:
        inner.append(f"comment {nftstr.comment(c.comment)};")
    return f"add chain {FAMILY} {TABLE} {ident(name)}" + (" { " + " ".join(inner) + " }" if inner else "")


class NftWriter:
    """Writes a `Ruleset` to the kernel: incremental transactions, full loads, checks."""

    def __init__(self, runner: "NftBackend") -> None:
        self.runner = runner
        self.fast = runner.element_writer()
        self.written_chains: dict[str, ChainDef] = {}
        self.written_sets: dict[str, tuple[str, bool]] = {}
        self.written_elems: dict[str, dict[str, str | None]] = {}
        self.written_fp: str | None = None
        self.loaded = False

    # public -----------------------------------------------------------------

    def write(self, rs: Ruleset, full: bool = False, over_placeholder: bool = False,
              split_sets: Iterable[str] = (), on_spawn: Callable[[], None] | None = None) -> WriteStats:
        """Write what is dirty in `rs` (everything if `full` or nothing was loaded yet).

        `over_placeholder`: the live table is the placeholder (new connections of
        workload interfaces dropped), so a full load may fill the big verdict maps
        in a second transaction — see `_write_full`; the elements of the sets
        named in `split_sets` then go with them (the caller vouches that only
        traffic those maps dispatch can reach a rule that uses them).
        `on_spawn`: see `NftRunner.run`, for a full load."""
        t0 = time.perf_counter()
        if full or not self.loaded:
            stats = self._write_full(rs, split_maps=over_placeholder, split_sets=split_sets,
                                     on_spawn=on_spawn)
        elif not rs.dirty:
            stats = WriteStats(skipped=True)
        elif self.fast is not None and self._fast_possible(rs) and self._write_fast(rs):
            stats = self._fast_stats
        else:
            script, stats = self._incremental_script(rs)
            try:
                self.runner.run(script)
            except NftError as exc:
                log.warning("incremental nft transaction failed, reloading the table: %s", exc)
                stats = self._write_full(rs)
            else:
                if stats.full:
                    self._remember_all(rs)
                else:
                    self._commit_incremental(rs)
        rs.clear_dirty()
        stats.seconds = time.perf_counter() - t0
        return stats

    def adopt(self, rs: Ruleset) -> None:
        """Take the live table as written (it matched `rs`)."""
        self._remember_all(rs)
        rs.clear_dirty()

    def check(self, live: tuple[dict[str, int], dict[str, int]] | None) -> list[str]:
        """Differences between the live table's counts (`NftRunner.read_counts`:
        rules per chain, elements per set) and what we wrote."""
        if not self.loaded:
            return []
        if live is None:
            return ["table inet calico is missing"]
        chains, sets = live
        problems: list[str] = []
        for name, c in self.written_chains.items():
            if name not in chains:
                problems.append(f"chain {name} missing")
            elif chains[name] != len(c.rules):
                problems.append(f"chain {name}: {chains[name]} rules, wrote {len(c.rules)}")
        for name in chains:
            if name not in self.written_chains:
                problems.append(f"unexpected chain {name}")
        for name, (decl, _is_map) in self.written_sets.items():
            if name not in sets:
                problems.append(f"set {name} missing")
                continue
            want = len(self.written_elems.get(name, {}))
            if "interval" in decl:
                # nft may print adjacent intervals merged: only emptiness is comparable
                if bool(sets[name]) != bool(want):
                    problems.append(f"set {name}: {sets[name]} elements, wrote {want}")
            elif sets[name] != want:
                problems.append(f"set {name}: {sets[name]} elements, wrote {want}")
        return problems

    # full -------------------------------------------------------------------

    def full_script(self, rs: Ruleset, without_elements: frozenset[str] | set[str] = frozenset()) -> str:
        """The whole table as one ``nft -f`` script; sets and maps named in
        `without_elements` are declared empty (the fingerprint set too, if named)."""
        out = [f"add table {FAMILY} {TABLE}", f"delete table {FAMILY} {TABLE}",
               f"table {FAMILY} {TABLE} {{"]
        if META_SET in without_elements:
            out.append(f"  set {META_SET} {{ type ifname; }}")
        else:
            out.append(f"  set {META_SET} {{ type ifname; elements = {{ {_fp_elem(rs.fingerprint())} }} }}")
        # plain sets first, then chains (nft resolves forward jumps inside one
        # block), verdict maps, base chains last
        for name, s in sorted(rs.sets.items()):
            if s.is_map:
                continue
            out.append(self._set_block(name, s, name in without_elements))
        base = []
        for name, c in sorted(rs.chains.items()):
            if c.hook:
                base.append((name, c))
                continue
            out.append(self._chain_block(name, c))
        for name, s in sorted(rs.sets.items()):
            if s.is_map:
                out.append(self._set_block(name, s, name in without_elements))
        for name, c in base:
            out.append(self._chain_block(name, c))
        out.append("}")
        return "\n".join(out) + "\n"

    def _set_block(self, name: str, s: SetDef, empty: bool = False) -> str:
        kind = "map" if s.is_map else "set"
        text = f"  {kind} {ident(name)} {{ {_decl(s.decl)};"
        if s.elements and not empty:
            text += " elements = { " + _elements(s.elements.items()) + " };"
        return text + " }"

    def _chain_block(self, name: str, c: ChainDef) -> str:
        lines = [f"  chain {ident(name)} {{"]
        if c.hook:
            lines.append("    " + _hook(c.hook))
        if c.comment:
            lines.append(f"    comment {nftstr.comment(c.comment)}")
        lines.extend("    " + r for r in _rules(c.rules))
        lines.append("  }")
        return "\n".join(lines)

    #: a full load over the placeholder sends verdict maps with at least this many
    #: elements in a second transaction (see _write_full)
    SPLIT_MAP_MIN = 1000

    def _write_full(self, rs: Ruleset, split_maps: bool = False, split_sets: Iterable[str] = (),
                    on_spawn: Callable[[], None] | None = None) -> WriteStats:
        """Load the whole table in one transaction.

        With `split_maps` (the live table is the placeholder: a fresh host's first
        load) the big verdict maps that send each workload interface to its
        endpoint chain are loaded empty, and their elements (with the fingerprint)
        follow as one netlink element batch, encoded while nft loads the rest
        (nft's parser and evaluator are slow on many elements; the kernel takes
        them over netlink much faster). In between, an interface not yet
        in its map finds no chain, and the dispatch chains drop new connections
        without one — what the placeholder did — so nothing is let through early.
        The sets named in `split_sets` (selector address sets, about as many
        elements as the maps) are loaded empty too and
        filled by the same batch, when the maps are split: the batch is one
        transaction, so their rules go from "no traffic reaches them" to complete.
        If the batch fails, the elements go through nft instead."""
        split: dict[str, SetDef] = {}
        if split_maps and self.fast is not None:
            from .nft_netlink import encodable
            split = {name: s for name, s in rs.sets.items()
                     if s.is_map and len(s.elements) >= self.SPLIT_MAP_MIN and encodable(s.decl)}
            if split:
                for name in split_sets:
                    s = rs.sets.get(name)
                    if s is not None and s.elements and not s.is_map and encodable(s.decl):
                        split[name] = s
        if self.fast is not None:
            # the fingerprint (a hash of every chain and element: 0.3 s for a
            # table of 100k elements) is computed while nft loads and added after
            # it over netlink, with the maps' elements when they are split; until
            # then the table has none, which only means a restart in between
            # reloads the table instead of adopting it
            split[META_SET] = SetDef("type ifname")
        script = self.full_script(rs, without_elements=set(split))
        prepared: list[Any] = []

        def encode() -> None:
            try:
                split[META_SET].elements[_fp_elem(rs.fingerprint())] = None
                prepared.append(self.fast.prepare(
                    ("add", name, s.decl, k, v) for name, s in split.items() for k, v in s.elements.items()))
            except Exception as exc:  # noqa: BLE001 - the elements then go through nft
                prepared.append(NftError(f"cannot encode the elements: {exc}"))

        self.runner.run(script, meanwhile=encode if split else None, on_spawn=on_spawn)
        if split:
            if not split[META_SET].elements:
                split[META_SET].elements[_fp_elem(rs.fingerprint())] = None
            self._fill_split(split, prepared[0] if prepared else NftError("not encoded"))
        self._remember_all(rs)
        return WriteStats(full=True, script_lines=script.count("\n"),
                          chains_written=len(rs.chains),
                          elements_added=sum(len(s.elements) for s in rs.sets.values()))

    def _fill_split(self, split: dict[str, SetDef], batch: Any) -> None:
        """Send the split maps' elements (a prepared batch, or the error that kept
        it from being encoded); through nft if netlink fails."""
        if not isinstance(batch, Exception):
            try:
                self.fast.send(batch)
                return
            except NftError as exc:
                batch = exc
        log.warning("elements of %s over netlink failed (%s); adding them with nft",
                    ", ".join(sorted(split))[:300], batch)
        lines = [cmd for name, s in split.items() for cmd in self._elem_cmds("add", name, s.elements.items())]
        self.runner.run("\n".join(lines) + "\n")

    def _remember_all(self, rs: Ruleset) -> None:
        self.written_chains = dict(rs.chains)
        self.written_sets = {n: (s.decl, s.is_map) for n, s in rs.sets.items()}
        self.written_sets[META_SET] = ("type ifname", False)
        self.written_elems = {n: dict(s.elements) for n, s in rs.sets.items()}
        self.written_fp = rs.fingerprint()
        self.written_elems[META_SET] = {_fp_elem(self.written_fp): None}
        self.loaded = True

    # incremental ------------------------------------------------------------

    def _incremental_script(self, rs: Ruleset) -> tuple[str, WriteStats]:
        st = WriteStats()
        T = f"{FAMILY} {TABLE}"
        declare: list[str] = []
        elem_del: list[str] = []
        rules: list[str] = []
        elem_add: list[str] = []
        chain_flush: list[str] = []
        chain_del: list[str] = []
        set_del: list[str] = []
        # sets: creation / deletion / redeclaration
        handled: set[str] = set()
        for name in sorted(rs.dirty_sets):
            new = rs.sets.get(name)
            old = self.written_sets.get(name)
            if new is not None and old == (new.decl, new.is_map):
                # deleted and re-made within one apply: write the element difference
                written = self.written_elems.get(name, {})
                dels = [(k, None) for k, v in written.items()
                        if new.elements.get(k, _MISSING) != v]
                adds = [(k, v) for k, v in new.elements.items()
                        if written.get(k, _MISSING) != v]
                elem_del.extend(self._elem_cmds("delete", name, dels))
                elem_add.extend(self._elem_cmds("add", name, adds))
                st.elements_added += len(adds)
                st.elements_deleted += len(dels)
                handled.add(name)
                continue
            if old is not None:
                if old[1] and self.written_elems.get(name):
                    # its verdicts may name chains deleted in this transaction: they
                    # must be gone before those chains are
                    elem_del.append(f"flush map {T} {ident(name)}")
                set_del.append(f"delete {'map' if old[1] else 'set'} {T} {ident(name)}")
            if new is not None:
                if old is not None:
                    # same name, new type: must go before it is re-added; rare
                    return self._fallback_script(rs)
                declare.append(f"add {'map' if new.is_map else 'set'} {T} {ident(name)} {{ {_decl(new.decl)}; }}")
                if new.elements:
                    elem_add.extend(self._elem_cmds("add", name, new.elements.items()))
                    st.elements_added += len(new.elements)
        # elements of surviving sets
        for name, keys in rs.dirty_elems.items():
            new_s = rs.sets.get(name)
            if new_s is None or name not in self.written_sets or name in handled:
                continue   # a set created in this transaction is declared with its elements
            dels, adds = _key_diff(self.written_elems.get(name, {}), new_s.elements, keys)
            elem_del.extend(self._elem_cmds("delete", name, dels))
            elem_add.extend(self._elem_cmds("add", name, adds))
            st.elements_added += len(adds)
            st.elements_deleted += len(dels)
        # chains
        for name in sorted(rs.dirty_chains):
            new_c = rs.chains.get(name)
            old_c = self.written_chains.get(name)
            if new_c == old_c:
                continue
            if new_c is None:
                chain_flush.append(f"flush chain {T} {ident(name)}")
                chain_del.append(f"delete chain {T} {ident(name)}")
                st.chains_deleted += 1
                continue
            if old_c is None:
                declare.append(_chain_decl(name, new_c))
            elif old_c.hook != new_c.hook:
                return self._fallback_script(rs)
            else:
                rules.append(f"flush chain {T} {ident(name)}")
            rules.extend(f"add rule {T} {ident(name)} {r}" for r in _rules(new_c.rules))
            st.chains_written += 1
        fp = rs.fingerprint()
        if fp != self.written_fp:
            if self.written_fp is not None:
                elem_del.append(f"delete element {T} {META_SET} {{ {_fp_elem(self.written_fp)} }}")
            elem_add.append(f"add element {T} {META_SET} {{ {_fp_elem(fp)} }}")
        script = "\n".join(declare + elem_del + rules + elem_add + chain_flush + chain_del
                           + set_del) + "\n"
        st.script_lines = script.count("\n")
        return script, st

    # fast path -------------------------------------------------------------

    def fast_possible(self, rs: Ruleset) -> bool:
        """Would the dirty part of `rs` go on the netlink fast path (no nft run)?"""
        return self.fast is not None and self.loaded and self._fast_possible(rs)

    def _fast_possible(self, rs: Ruleset) -> bool:
        """Only element changes, all in existing sets of fast-path types?"""
        from .nft_netlink import encodable
        for name in rs.dirty_chains:
            if rs.chains.get(name) != self.written_chains.get(name):
                return False
        for name in rs.dirty_sets:
            new = rs.sets.get(name)
            if new is None or self.written_sets.get(name) != (new.decl, new.is_map):
                return False
        for name in rs.dirty_elems:
            s = rs.sets.get(name)
            if s is None or name not in self.written_sets or not encodable(s.decl):
                return False
        return True

    def _element_diff(self, rs: Ruleset, names: Iterable[str]) -> tuple[
            list[tuple[str, str, str | None]], list[tuple[str, str, str | None]]]:
        dels: list[tuple[str, str, str | None]] = []
        adds: list[tuple[str, str, str | None]] = []
        for name in names:
            new_s = rs.sets[name]
            written = self.written_elems.get(name, {})
            keys = rs.dirty_elems.get(name)
            if keys is None or name in rs.dirty_sets:   # re-made within this apply
                keys = set(written) | set(new_s.elements)
            d, a = _key_diff(written, new_s.elements, keys)
            dels += [(name, k, None) for k, _ in d]
            adds += [(name, k, v) for k, v in a]
        return dels, adds

    def _write_fast(self, rs: Ruleset) -> bool:
        names = set(rs.dirty_elems) | {n for n in rs.dirty_sets if n in rs.sets}
        dels, adds = self._element_diff(rs, names)
        ops = [("delete", n, rs.sets[n].decl, k, None) for n, k, _ in dels]
        ops += [("add", n, rs.sets[n].decl, k, v) for n, k, v in adds]
        fp = rs.fingerprint()
        if fp != self.written_fp:
            if self.written_fp is not None:
                ops.insert(0, ("delete", META_SET, "type ifname", _fp_elem(self.written_fp), None))
            ops.append(("add", META_SET, "type ifname", _fp_elem(fp), None))
        try:
            self.fast.write(ops)
        except (NftError, OSError, ValueError) as exc:
            log.info("netlink element batch failed, using nft: %s", exc)
            return False
        self._commit_incremental(rs)
        self._fast_stats = WriteStats(elements_added=len(adds), elements_deleted=len(dels),
                                      netlink=True)
        return True

    def _fallback_script(self, rs: Ruleset) -> tuple[str, WriteStats]:
        script = self.full_script(rs)
        return script, WriteStats(full=True, script_lines=script.count("\n"),
                                  chains_written=len(rs.chains))

    def _elem_cmds(self, verb: str, name: str,
                   items: Iterable[tuple[str, str | None]]) -> list[str]:
        items = list(items)
        out = []
        for i in range(0, len(items), _ELEMENT_CHUNK):
            chunk = items[i:i + _ELEMENT_CHUNK]
            out.append(f"{verb} element {FAMILY} {TABLE} {ident(name)} {{ {_elements(chunk)} }}")
        return out

    def _commit_incremental(self, rs: Ruleset) -> None:
        for name in rs.dirty_sets:
            new = rs.sets.get(name)
            if new is None:
                self.written_sets.pop(name, None)
                self.written_elems.pop(name, None)
            else:
                self.written_sets[name] = (new.decl, new.is_map)
                self.written_elems[name] = dict(new.elements)
        for name, keys in rs.dirty_elems.items():
            new_s = rs.sets.get(name)
            if new_s is None:
                continue
            written = self.written_elems.setdefault(name, {})
            for k in keys:
                if k in new_s.elements:
                    written[k] = new_s.elements[k]
                else:
                    written.pop(k, None)
        for name in rs.dirty_chains:
            c = rs.chains.get(name)
            if c is None:
                self.written_chains.pop(name, None)
            else:
                self.written_chains[name] = c
        self.written_fp = rs.fingerprint()
        self.written_elems[META_SET] = {_fp_elem(self.written_fp): None}


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _key_diff(written: dict[str, str | None], want: dict[str, str | None], keys: Iterable[str]
              ) -> tuple[list[tuple[str, None]], list[tuple[str, str | None]]]:
    """For `keys`: the elements to delete (written, and now gone or different) and
    to add (wanted, and not written so)."""
    dels: list[tuple[str, None]] = []
    adds: list[tuple[str, str | None]] = []
    for k in keys:
        w = want.get(k, _MISSING)
        have = written.get(k, _MISSING)
        if w == have:
            continue
        if have is not _MISSING:
            dels.append((k, None))
        if w is not _MISSING:
            adds.append((k, w))
    return dels, adds
