"""The nftables side of the policy dataplane: desired table model, transaction writer, runner.

What it is for: the agent owns one table, ``inet calico``.  `Ruleset` is the desired
content of that table (chains as tuples of rule lines, sets and verdict maps with
their elements) with dirty tracking; `NftWriter` turns the dirty parts into ONE
``nft -f -`` script per apply (one atomic transaction) and remembers what it wrote;
`NftRunner` runs nft (optionally inside a network namespace; small transactions
through libnftables in-process, see `libnft`) and reads the table back.

How it is built:

* Incremental scripts only touch what changed: new sets/chains are declared first,
  map/set elements are deleted, changed chains are ``flush chain`` + ``add rule``,
  elements are added, then dropped chains are flushed and deleted, dropped sets
  deleted last — an order in which every reference in the transaction resolves.
* A full load (first apply, after drift or after a failed incremental transaction)
  is ``add table; delete table; table inet calico { ... }`` in one script, so the
  old table is replaced atomically (no window without policy).
* Every object and element contributes a 64-bit hash to an order-independent sum
  (`Ruleset.fingerprint`); the writer stores it as the single element of set
  ``cali-meta``.  A restarted agent whose desired table hashes to what the kernel
  already holds (and whose chains/sets have the right rule/element counts) adopts
  the table instead of rewriting it.
* `NftWriter.check(counts)` compares rule counts per chain and element counts per
  set/map, read back with netlink dumps (`nft_netlink.NetlinkReader`, falling back
  to ``nft -j list table``), with what was written: the cheap drift check behind
  ``PolicyDataplane.refresh``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import struct
import subprocess
import time
from dataclasses import dataclass, field
import re
from typing import Any, Callable, Iterable, Mapping

from . import nftstr
from .nftstr import check_element_list, check_rule_line, ident

log = logging.getLogger(__name__)

__all__ = [
    "FAMILY",
    "TABLE",
    "META_SET",
    "NftError",
    "NftRunner",
    "FakeNftRunner",
    "ChainDef",
    "SetDef",
    "Ruleset",
    "NftWriter",
]

FAMILY = "inet"
TABLE = "calico"
#: set holding the fingerprint of the table's content (one ifname-typed element)
META_SET = "cali-meta"
#: bump when the way objects are written changes without changing their text
LAYOUT_VERSION = 1
_MASK64 = (1 << 64) - 1
_ELEMENT_CHUNK = 2000


class NftError(RuntimeError):
    """nft rejected a script or could not be run."""


# ----------------------------------------------------------------- runner


class NftRunner:
    """Runs the nft CLI, in the current network namespace or inside `netns`."""

    #: scripts up to this size go through libnftables in-process (see libnft); a
    #: full load of a big table goes to the CLI so its parser's memory is not ours
    LIB_MAX_BYTES = 256 * 1024

    def __init__(self, netns: str | None = None, nft: str = "nft",
                 fast_elements: bool = True, use_lib: bool = True) -> None:
        self.netns = netns
        self.nft = nft
        self.calls = 0
        self.lib_calls = 0
        #: send element-only transactions as netlink messages instead of via nft
        self.fast_elements = fast_elements
        #: run small transactions through libnftables (no fork/exec, see libnft)
        self.use_lib = use_lib
        self._lib: Any = None
        #: called (once, then cleared) when an nft process has been started for a
        #: transaction and is loading it: the caller may use the other CPU meanwhile
        self.on_spawn: Callable[[], None] | None = None

    def _argv(self, *args: str) -> list[str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*prefix, self.nft, *args]

    def _libnft(self) -> Any:
        if self._lib is None and self.use_lib:
            from .libnft import LibNft
            try:
                self._lib = LibNft(self.netns)
            except OSError as exc:
                log.info("libnftables not usable (%s); using the nft CLI", exc)
                self.use_lib = False
        return self._lib

    def run(self, script: str, meanwhile: Callable[[], None] | None = None) -> None:
        """Run `script` as one nft transaction (``nft -f -``; small scripts through
        libnftables in this process, the same transaction without a new process).
        `meanwhile` is called once while an nft process loads the script (after
        `on_spawn`), or after the transaction when there is no such process."""
        self.calls += 1
        if len(script) <= self.LIB_MAX_BYTES and self._libnft() is not None:
            self.lib_calls += 1
            err = self._lib.run(script)
            if err is not None:
                raise NftError(_summarise_error(err, script))
            if meanwhile is not None:
                meanwhile()
            return
        with subprocess.Popen(self._argv("-f", "-"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as proc:
            hook, self.on_spawn = self.on_spawn, None
            if hook is not None:
                hook()
            if meanwhile is None:
                _, stderr = proc.communicate(script)
            else:
                # nft reads all of its input before it starts: hand it over, work
                # beside it, then wait (its stderr is only written after the read)
                stdin, proc.stdin = proc.stdin, None   # communicate() below only reads
                assert stdin is not None
                try:
                    stdin.write(script)
                    stdin.close()
                except BrokenPipeError:
                    pass
                meanwhile()
                _, stderr = proc.communicate()
        if proc.returncode != 0:
            raise NftError(_summarise_error(stderr, script))

    def list_table(self) -> dict[str, Any] | None:
        """``nft -j list table inet calico`` parsed, or None if the table is absent."""
        proc = subprocess.run(self._argv("-j", "list", "table", FAMILY, TABLE),
                              text=True, capture_output=True)
        if proc.returncode != 0:
            if "No such file" in proc.stderr or "does not exist" in proc.stderr:
                return None
            raise NftError(proc.stderr.strip())
        return json.loads(proc.stdout)

    def element_writer(self) -> Any:
        """A netlink writer for element-only transactions (see nft_netlink), or None."""
        if not self.fast_elements:
            return None
        from .nft_netlink import NetlinkSetWriter
        return NetlinkSetWriter(self.netns)

    def read_counts(self) -> tuple[dict[str, int], dict[str, int]] | None:
        """({chain: rules}, {set: elements}) of the live table, None if it is absent.
        Netlink dumps; ``nft -j list table`` if those fail."""
        try:
            from .nft_netlink import NetlinkReader
            return NetlinkReader(self.netns).counts()
        except (OSError, NftError, struct.error) as exc:
            log.info("netlink read-back failed (%s); using nft -j list", exc)
            return counts_from_json(self.list_table())

    def table_exists(self) -> bool:
        """Whether table inet calico exists (whatever it holds)."""
        try:
            from .nft_netlink import NetlinkReader
            return NetlinkReader(self.netns).exists()
        except (OSError, NftError, struct.error):
            proc = subprocess.run(self._argv("list", "table", FAMILY, TABLE, "-t"),
                                  capture_output=True, text=True)
            return proc.returncode == 0

    def read_fingerprint(self) -> str | None:
        """The element of ``cali-meta`` (our fingerprint), None if absent."""
        try:
            from .nft_netlink import NetlinkReader
            elems = NetlinkReader(self.netns).string_elements(META_SET)
            return elems[0] if elems else None
        except (OSError, NftError, struct.error):
            pass
        proc = subprocess.run(self._argv("-j", "list", "set", FAMILY, TABLE, META_SET),
                              text=True, capture_output=True)
        if proc.returncode != 0:
            return None
        for obj in json.loads(proc.stdout).get("nftables", []):
            s = obj.get("set")
            if s and s.get("elem"):
                return str(s["elem"][0])
        return None


def counts_from_json(live: dict[str, Any] | None) -> tuple[dict[str, int], dict[str, int]] | None:
    """({chain: rules}, {set: elements}) from ``nft -j list table`` output."""
    if live is None:
        return None
    chains: dict[str, int] = {}
    sets: dict[str, int] = {}
    for obj in live.get("nftables", []):
        if "chain" in obj:
            chains.setdefault(obj["chain"]["name"], 0)
        elif "rule" in obj:
            name = obj["rule"]["chain"]
            chains[name] = chains.get(name, 0) + 1
        elif "set" in obj or "map" in obj:
            s = obj.get("set") or obj.get("map")
            sets[s["name"]] = len(s.get("elem", ()))
    return chains, sets


def _summarise_error(stderr: str, script: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    head = "\n".join(lines[:6])
    return f"nft -f failed ({len(script.splitlines())} script lines): {head}"


class FakeNftRunner:
    """Records scripts instead of running them (unit tests); `fail_next` makes the
    next run raise; `table` is what `list_table` returns."""

    def __init__(self, fast_elements: bool = False) -> None:
        self.scripts: list[str] = []
        self.fail_next = 0
        self.table: dict[str, Any] | None = None
        self.fingerprint: str | None = None
        self.netns = None
        self.calls = 0
        self.fast_elements = fast_elements
        #: element batches sent on the fast path: lists of (verb, set, decl, key, value)
        self.batches: list[list[tuple[str, str, str, str, str | None]]] = []
        self.fail_fast_next = 0

    def element_writer(self) -> Any:
        return self if self.fast_elements else None

    def write(self, ops: Any) -> int:
        """The fast path's element writer interface."""
        return self.send(self.prepare(ops))

    def prepare(self, ops: Any) -> list[tuple[str, str, str, str, str | None]]:
        return list(ops)

    def send(self, ops: list[tuple[str, str, str, str, str | None]]) -> int:
        if self.fail_fast_next:
            self.fail_fast_next -= 1
            raise NftError("fake netlink failure")
        self.batches.append(ops)
        return len(ops)

    def run(self, script: str, meanwhile: Callable[[], None] | None = None) -> None:
        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            raise NftError("fake failure")
        self.scripts.append(script)
        if meanwhile is not None:
            meanwhile()

    def list_table(self) -> dict[str, Any] | None:
        return self.table

    def read_counts(self) -> tuple[dict[str, int], dict[str, int]] | None:
        return counts_from_json(self.table)

    def table_exists(self) -> bool:
        return self.table is not None or self.fingerprint is not None

    def read_fingerprint(self) -> str | None:
        return self.fingerprint


# ----------------------------------------------------------------- desired model


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


# ----------------------------------------------------------------- writer


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

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.fast = runner.element_writer() if hasattr(runner, "element_writer") else None
        self.written_chains: dict[str, ChainDef] = {}
        self.written_sets: dict[str, tuple[str, bool]] = {}
        self.written_elems: dict[str, dict[str, str | None]] = {}
        self.written_fp: str | None = None
        self.loaded = False

    # public -----------------------------------------------------------------

    def write(self, rs: Ruleset, full: bool = False, over_placeholder: bool = False,
              split_sets: Iterable[str] = ()) -> WriteStats:
        """Write what is dirty in `rs` (everything if `full` or nothing was loaded yet).

        `over_placeholder`: the live table is the placeholder (new connections of
        workload interfaces dropped), so a full load may fill the big verdict maps
        in a second transaction — see `_write_full`; the elements of the sets
        named in `split_sets` then go with them (the caller vouches that only
        traffic those maps dispatch can reach a rule that uses them)."""
        t0 = time.perf_counter()
        if full or not self.loaded:
            stats = self._write_full(rs, split_maps=over_placeholder, split_sets=split_sets)
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

    def _write_full(self, rs: Ruleset, split_maps: bool = False, split_sets: Iterable[str] = ()) -> WriteStats:
        """Load the whole table in one transaction.

        With `split_maps` (the live table is the placeholder: a fresh host's first
        load) the big verdict maps that send each workload interface to its
        endpoint chain are loaded empty, and their elements (with the fingerprint)
        follow as one netlink element batch, encoded while nft loads the rest
        (nft's parser and evaluator spend about half of a 10,000-endpoint load on
        those ~20,000 elements; the kernel takes them over netlink in ~0.09 s). In between, an interface not yet
        in its map finds no chain, and the dispatch chains drop new connections
        without one — what the placeholder did — so nothing is let through early.
        The sets named in `split_sets` (selector address sets: another ~20,000
        elements at 10,000 endpoints, ~0.1 s of nft) are loaded empty too and
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
        if split:
            # the fingerprint (a hash of every chain and element, ~0.07 s at 10,000
            # endpoints) goes with the maps' elements, computed while nft loads
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

        self.runner.run(script, meanwhile=encode if split else None)
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
        log.warning("verdict map elements over netlink failed (%s); adding them with nft", batch)
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
            written = self.written_elems.get(name, {})
            dels = []
            adds = []
            for k in keys:
                want = new_s.elements.get(k, _MISSING)
                have = written.get(k, _MISSING)
                if want == have:
                    continue
                if have is not _MISSING:
                    dels.append((k, None))
                if want is not _MISSING:
                    adds.append((k, want))
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
            for k in keys:
                want = new_s.elements.get(k, _MISSING)
                have = written.get(k, _MISSING)
                if want == have:
                    continue
                if have is not _MISSING:
                    dels.append((name, k, None))
                if want is not _MISSING:
                    adds.append((name, k, want))
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
