"""Runs nft for the policy dataplane and reads table inet calico back.

`NftRunner` runs one ``nft -f`` transaction (small ones through libnftables
in-process, see `libnft`; optionally inside a network namespace) and reads the
live table back (rule and element counts, the fingerprint in ``cali-meta``) with
netlink dumps (`nft_netlink.NetlinkReader`), falling back to ``nft -j list
table``. `FAMILY` and `META_SET` live here, for the ruleset model and the writer;
`TABLE` and `NftError` come from `nft_netlink`, so every nft path raises the one
error class the fallbacks catch. With an `OwnGenerations` every transaction it
runs (and every element batch of its element writer) is recorded as the agent's
own, so the tamper watch does not take it for another process's change.
"""
from __future__ import annotations

import json
import logging
import struct
import subprocess
from typing import Any, Callable

from .nft_netlink import TABLE, NetlinkReader, NetlinkSetWriter, NftError, OwnGenerations

log = logging.getLogger(__name__)

__all__ = ["FAMILY", "TABLE", "META_SET", "NftError", "NftRunner", "counts_from_json"]

FAMILY = "inet"
#: set holding the fingerprint of the table's content (one ifname-typed element)
META_SET = "cali-meta"


# ----------------------------------------------------------------- runner


class NftRunner:
    """Runs the nft CLI, in the current network namespace or inside `netns`."""

    #: scripts up to this size go through libnftables in-process (see libnft); a
    #: full load of a big table goes to the CLI so its parser's memory is not ours
    LIB_MAX_BYTES = 256 * 1024

    def __init__(self, netns: str | None = None, nft: str = "nft",
                 fast_elements: bool = True, use_lib: bool = True,
                 generations: OwnGenerations | None = None) -> None:
        self.netns = netns
        #: records the generations our transactions commit (None: not tracked)
        self.generations = generations
        self.nft = nft
        self.calls = 0
        self.lib_calls = 0
        #: send element-only transactions as netlink messages instead of via nft
        self.fast_elements = fast_elements
        #: run small transactions through libnftables (no fork/exec, see libnft)
        self.use_lib = use_lib
        self._lib: Any = None

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

    def run(self, script: str, meanwhile: Callable[[], None] | None = None,
            on_spawn: Callable[[], None] | None = None) -> None:
        """Run `script` as one nft transaction (``nft -f -``; small scripts through
        libnftables in this process, the same transaction without a new process).
        `on_spawn` is called once an nft process has been started and is loading
        the script (not at all without such a process): the caller may use the
        other CPU meanwhile. `meanwhile` is called once while an nft process
        loads the script (after `on_spawn`), or after the transaction when there
        is no such process."""
        self.calls += 1
        if self.generations is None:
            self._run(script, meanwhile, on_spawn)
            return
        with self.generations.transaction():
            self._run(script, meanwhile, on_spawn)

    def _run(self, script: str, meanwhile: Callable[[], None] | None,
             on_spawn: Callable[[], None] | None) -> None:
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
            if on_spawn is not None:
                on_spawn()
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
        return NetlinkSetWriter(self.netns, self.generations)

    def read_counts(self) -> tuple[dict[str, int], dict[str, int]] | None:
        """({chain: rules}, {set: elements}) of the live table, None if it is absent.
        Netlink dumps; ``nft -j list table`` if those fail."""
        try:
            return NetlinkReader(self.netns).counts()
        except (OSError, NftError, struct.error) as exc:
            log.info("netlink read-back failed (%s); using nft -j list", exc)
            return counts_from_json(self.list_table())

    def table_exists(self) -> bool:
        """Whether table inet calico exists (whatever it holds)."""
        try:
            return NetlinkReader(self.netns).exists()
        except (OSError, NftError, struct.error):
            proc = subprocess.run(self._argv("list", "table", FAMILY, TABLE, "-t"),
                                  capture_output=True, text=True)
            return proc.returncode == 0

    def read_fingerprint(self) -> str | None:
        """The element of ``cali-meta`` (our fingerprint), None if absent."""
        try:
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

