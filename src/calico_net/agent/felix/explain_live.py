"""Live check of a policy explanation on this host: the rule the kernel used.

What it owns: tracing one flow through ``table inet calico`` with nftables' own
tracing, and saying which of the agent's rules decided it. The agent's rules
carry no counters (a counter on every rule would cost every packet), so instead
of counters the flow is marked for tracing in a table of its own
(``inet calico-explain``: a rule at raw priority minus 10 in prerouting and
output that sets ``meta nftrace`` for exactly this flow), ``nft monitor trace``
reports each rule the marked packets hit with its chain and handle, and the
handle's position in its chain (``nft -a list chain``) is compared with where
explain says the deciding rule sits (`explain` puts the chain and line
positions of each deciding rule in its steps). The table is removed afterwards,
also on failure. Nothing of the agent's table is touched.

The flow must pass this host (run it on the node of the endpoint) and traffic
must be sent while the trace runs: by the caller's `trigger`, or by whoever
connects during the wait.
"""
from __future__ import annotations

import ipaddress
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import nftstr
from .explain import Packet
from .nft import FAMILY, TABLE

__all__ = ["TRACE_TABLE", "Hit", "trace_script", "trace_flow", "rule_positions", "decisions", "compare"]

TRACE_TABLE = "calico-explain"

# "trace id 5a473a51 inet calico cali-pi-0123 rule <text> # handle 3 (verdict return)"
_RULE = re.compile(r"^trace id (\w+) (\w+) (\S+) (\S+) rule (.*?)(?: # handle (\d+))? \(verdict (\w+)")
# the chains a decision can be in (names the agent makes: a prefix and 16 hex digits)
_CHAIN = re.compile(r"^cali-(?:pi|po|pri|pro|tw|fw)-[0-9a-f]{16}$")
_HANDLE = re.compile(r"# handle (\d+)\s*$")


@dataclass(frozen=True)
class Hit:
    """One rule a traced packet hit: in `chain` of our table, with that verdict."""

    trace_id: str
    chain: str
    handle: int
    verdict: str
    text: str


def trace_script(pkt: Packet) -> str:
    """The tracing table for `pkt`'s flow (addresses and numbers checked, as every
    string that reaches nft)."""
    fam = "ip" if ipaddress.ip_address(pkt.src).version == 4 else "ip6"
    src = nftstr.cidr(ipaddress.ip_network(pkt.src))
    dst = nftstr.cidr(ipaddress.ip_network(pkt.dst))
    match = f"{fam} saddr {src} {fam} daddr {dst} meta l4proto {nftstr.number(pkt.protocol, 0, 255)}"
    if pkt.dport is not None:
        match += f" th dport {nftstr.number(pkt.dport, 0, 65535)}"
    t = f"inet {TRACE_TABLE}"
    lines = [f"add table {t}", f"flush table {t}"]
    for chain, hook in (("pre", "prerouting"), ("out", "output")):
        lines.append(f"add chain {t} {chain} {{ type filter hook {hook} priority raw - 10; policy accept; }}")
        lines.append(f"add rule {t} {chain} {match} meta nftrace set 1")
    return "\n".join(lines) + "\n"


def _run(prefix: Sequence[str], argv: list[str], stdin: str | None = None) -> str:
    p = subprocess.run([*prefix, *argv], input=stdin, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise OSError(f"{' '.join(argv[:3])} failed: {p.stderr.strip()[:400]}")
    return p.stdout


def trace_flow(pkt: Packet, trigger: Callable[[], Any] | None = None, wait: float = 10.0,
               prefix: Sequence[str] = ()) -> list[Hit]:
    """Trace `pkt`'s flow for up to `wait` seconds (ended early once `trigger`, run
    when the trace is listening, has returned and the hits stopped coming); the
    hits in our table, in order. `prefix`: argv before each nft command (``ip
    netns exec <ns>`` for a namespace)."""
    mon = subprocess.Popen([*prefix, "nft", "-a", "monitor", "trace"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(mon.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    try:
        time.sleep(0.3)              # the monitor subscribes before the flow is marked
        _run(prefix, ["nft", "-f", "-"], trace_script(pkt))
        end = time.monotonic() + wait
        if trigger is not None:
            trigger()
            # replies and retransmissions trace too: a short grace for the last lines
            end = min(end, time.monotonic() + 0.5)
        while time.monotonic() < end:
            time.sleep(0.05)
    finally:
        subprocess.run([*prefix, "nft", "delete", "table", "inet", TRACE_TABLE],
                       capture_output=True, timeout=30)
        mon.terminate()
        try:
            mon.wait(5)
        except subprocess.TimeoutExpired:
            mon.kill()
            mon.wait()
        reader.join(5)
    hits = []
    for line in lines:
        m = _RULE.match(line.strip())
        if m and m.group(2) == FAMILY and m.group(3) == TABLE and m.group(6):
            hits.append(Hit(m.group(1), m.group(4), int(m.group(6)), m.group(7), m.group(5)))
    return hits


def rule_positions(chain: str, prefix: Sequence[str] = ()) -> dict[int, int]:
    """{handle: position} of the rules of one chain of the agent's table."""
    if not _CHAIN.match(chain):
        raise ValueError(f"not a policy, profile or endpoint chain name: {chain[:80]!r}")
    out = _run(prefix, ["nft", "-a", "list", "chain", FAMILY, TABLE, chain])
    pos: dict[int, int] = {}
    for line in out.splitlines():
        s = line.strip()
        if not s or s.startswith(("chain ", "type ", "}", "table ", "comment ")):
            continue
        m = _HANDLE.search(s)
        if m:
            pos[int(m.group(1))] = len(pos)
    return pos


def decisions(hits: list[Hit]) -> list[Hit]:
    """The hits that ended a policy or profile chain (return or drop) or dropped in
    an endpoint chain, of the first traced packet (the connection's first one)."""
    if not hits:
        return []
    first = hits[0].trace_id
    # (an endpoint chain returns after every allowing policy or profile: only its
    # drops are decisions of its own)
    return [h for h in hits if h.trace_id == first and (
        (h.verdict in ("return", "drop") and h.chain.startswith(("cali-pi-", "cali-po-", "cali-pri-", "cali-pro-")))
        or (h.verdict == "drop" and h.chain.startswith(("cali-tw-", "cali-fw-"))))]


def compare(result: dict[str, Any], hits: list[Hit], prefix: Sequence[str] = ()) -> dict[str, Any]:
    """Whether the rule `result` (an `explain` answer) names as deciding, in its last
    step, is the rule the kernel's trace shows deciding: same chain, and the hit's
    position among the rules of that chain one of the rule's lines."""
    dec = decisions(hits)
    steps = [s for s in result.get("steps", ()) if "direction" in s]
    out: dict[str, Any] = {"traced": bool(hits), "kernel": None, "agrees": False}
    if not dec or not steps:
        return out
    step = steps[-1]
    # the last decision in the step's direction: Allow/Deny returns or drops there
    hit = dec[-1]
    positions = rule_positions(hit.chain, prefix)
    out["kernel"] = {"chain": hit.chain, "handle": hit.handle, "position": positions.get(hit.handle),
                     "verdict": hit.verdict, "rule": hit.text}
    want = step.get("rule")
    if want is None:
        # default deny: the endpoint chain's own drop
        out["agrees"] = hit.verdict == "drop" and hit.chain.startswith(("cali-tw-", "cali-fw-"))
    else:
        out["agrees"] = hit.chain == want["chain"] and positions.get(hit.handle) in want["positions"]
    out["explain"] = want
    return out
