"""Per-peer options of a BGPPeer (everything but who the peer is) and the BGPFilter
kind, read from plain dicts into what the template prints: :func:`peer_options` gives
a :class:`PeerOptions`, :func:`bgp_filters` the :class:`FilterFunc` list (one BIRD
function per BGPFilter and direction/family). Pure; a bad value raises ValueError
(the builder skips that peer or filter with a note).

Calico's meanings, in BIRD 2 terms:

* ``keepaliveTime`` → ``keepalive time`` (seconds); ``maxRestartTime`` → the peer's
  ``graceful restart time``; ``localASNumber`` → ``local as`` for that session only.
* ``nextHopMode``: ``Self`` → ``next hop self``, ``Keep`` → ``next hop keep``, ``Auto``
  (default) → BIRD's own choice. ``keepOriginalNextHop: true`` is ``Keep`` towards eBGP
  peers (iBGP keeps it anyway).
* ``ttlSecurity: N`` → ``ttl security on`` + ``multihop N``;
  ``numAllowedLocalASNumbers`` → ``allow local as N``; ``sourceAddress: None`` → no
  ``source address``.
* ``filters``: the named BGPFilters' rules run first, in order; the first rule that
  matches accepts or rejects; a route no rule matches gets Calico's default handling.
  A rule matches on ``cidr`` with ``matchOperator`` (``Equal`` ``net =``, ``NotEqual``
  ``net !=``, ``In`` ``net ~``, ``NotIn`` ``net !~``; ``prefixLength`` min/max narrow
  ``In``/``NotIn`` to those lengths), ``source: RemotePeers`` (learned over BGP) and
  ``interface`` (the route's outgoing interface, a glob).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from calico_net.agent.confd import birdtext, values
from calico_net.agent.confd.birdmodel import check_name

class Selectors:
    """Parses each selector text once."""

    def __init__(self, parser: Callable[[str], Any] | None) -> None:
        self._parser = parser
        self._cache: dict[str, Any] = {}

    def matches(self, text: str, labels: Mapping[str, str]) -> bool:
        sel = self._cache.get(text)
        if sel is None:
            if self._parser is None:
                from calico_net.model.selector import parse_selector

                self._parser = parse_selector
            sel = self._cache[text] = self._parser(text)
        return bool(sel.evaluate(dict(labels)))


NEXT_HOP_MODES = ("Auto", "Self", "Keep")
MATCH_OPERATORS = {"Equal": "=", "NotEqual": "!=", "In": "~", "NotIn": "!~"}
DIRECTIONS = (("importV4", "import", 4), ("exportV4", "export", 4),
              ("importV6", "import", 6), ("exportV6", "export", 6))


@dataclass
class PeerOptions:
    password: str | None = field(default=None, repr=False)
    restart_time: int | None = None
    ttl_hops: int | None = None
    allow_local_as: int | None = None
    use_node_ip: bool = True
    keepalive: int | None = None
    next_hop_mode: str = "Auto"
    keep_original: bool = False
    local_as: int | None = None
    filters: list[str] = field(default_factory=list)


def peer_options(spec: Mapping[str, Any], password: str | None) -> PeerOptions:
    """The options of one BGPPeer spec (``password`` already resolved)."""
    opts = PeerOptions(password=password)
    if spec.get("maxRestartTime"):
        opts.restart_time = values.restart_time(spec["maxRestartTime"], "maxRestartTime")
    if spec.get("ttlSecurity"):
        opts.ttl_hops = values.small_int(spec["ttlSecurity"], "ttlSecurity", 1, 255)
    if spec.get("numAllowedLocalASNumbers"):
        opts.allow_local_as = values.small_int(
            spec["numAllowedLocalASNumbers"], "numAllowedLocalASNumbers", 1, 10)
    opts.use_node_ip = str(spec.get("sourceAddress") or "UseNodeIP") != "None"
    if spec.get("keepaliveTime"):
        try:
            secs = values.duration_seconds(spec["keepaliveTime"])
        except ValueError as exc:
            raise ValueError(f"keepaliveTime: {exc}") from None
        # BIRD's keepalive is whole seconds, 1 up to its hold time (240 s).
        opts.keepalive = values.small_int(int(secs), "keepaliveTime (seconds)", 1, 240)
    mode = spec.get("nextHopMode") or "Auto"
    if mode not in NEXT_HOP_MODES:
        raise ValueError(f"nextHopMode {birdtext.bird_comment(mode)!r} is not one of "
                         + ", ".join(NEXT_HOP_MODES))
    opts.next_hop_mode = mode
    opts.keep_original = spec.get("keepOriginalNextHop") is True
    if spec.get("localASNumber") not in (None, ""):
        opts.local_as = values.as_number(spec["localASNumber"])
    names = spec.get("filters") or []
    if not isinstance(names, list):
        raise ValueError("filters is not a list")
    opts.filters = [check_name(n, "filter name") for n in names]
    return opts


# ------------------------------------------------------------------ BGPFilter


@dataclass(frozen=True)
class Condition:
    """One test of a rule: ``kind`` net (``op`` one of MATCH_OPERATORS' keys, ``value``
    a prefix, or a prefix pattern when ``pattern``), source, or iface (``value`` a glob).
    The template prints each value through its birdtext filter."""

    kind: str
    op: str = ""
    value: str = ""
    pattern: bool = False


@dataclass(frozen=True)
class FilterRule:
    conditions: tuple[Condition, ...]
    accept: bool


@dataclass(frozen=True)
class FilterFunc:
    """``function <name>()`` for one BGPFilter, direction and family."""

    name: str  # a BIRD identifier
    filter_name: str  # the BGPFilter's name, for the comment
    direction: str  # import | export
    family: int
    rules: tuple[FilterRule, ...]


def function_name(filter_name: str, direction: str, family: int) -> str:
    """``bgp_<name>_<direction>FilterV<family>``, Calico's spelling, made an identifier
    (a name's ``-`` and ``.`` become ``_``; a hash keeps distinct names apart)."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", filter_name)
    if safe != filter_name or len(safe) > 40:
        import hashlib

        safe = safe[:32] + "_" + hashlib.sha256(filter_name.encode()).hexdigest()[:6]
    return f"bgp_{safe}_{direction}FilterV{family}"


def _rule(rule: Mapping[str, Any], family: int, where: str) -> FilterRule:
    if not isinstance(rule, Mapping):
        raise ValueError(f"{where} is not a mapping")
    action = rule.get("action")
    if action not in ("Accept", "Reject"):
        raise ValueError(f"{where}.action must be Accept or Reject")
    conds: list[Condition] = []
    cidr, op = rule.get("cidr"), rule.get("matchOperator")
    if bool(cidr) != bool(op):
        raise ValueError(f"{where}: cidr and matchOperator go together")
    plen = rule.get("prefixLength") or {}
    if cidr:
        net = ipaddress.ip_network(str(cidr).strip(), strict=False)
        if net.version != family:
            raise ValueError(f"{where}.cidr {net} is not IPv{family}")
        if op not in MATCH_OPERATORS:
            raise ValueError(f"{where}.matchOperator must be one of " + ", ".join(MATCH_OPERATORS))
        if plen and op in ("In", "NotIn"):
            lo = values.small_int(plen.get("min", net.prefixlen), "prefixLength.min",
                                  net.prefixlen, net.max_prefixlen)
            hi = values.small_int(plen.get("max", net.max_prefixlen), "prefixLength.max",
                                  lo, net.max_prefixlen)
            pattern = f"{net}{{{lo},{hi}}}"
            birdtext.bird_prefix_pattern(pattern)  # refuse here what the template would
            conds.append(Condition("net", op, pattern, pattern=True))
        elif plen:
            raise ValueError(f"{where}.prefixLength needs matchOperator In or NotIn")
        else:
            conds.append(Condition("net", op, str(net)))
    if rule.get("source") not in (None, ""):
        if rule["source"] != "RemotePeers":
            raise ValueError(f"{where}.source must be RemotePeers")
        conds.append(Condition("source"))
    if rule.get("interface"):
        birdtext.bird_str(rule["interface"], f"{where}.interface")
        conds.append(Condition("iface", value=str(rule["interface"])))
    return FilterRule(tuple(conds), action == "Accept")


def bgp_filters(docs: list[Mapping[str, Any]]) -> tuple[dict[str, list[FilterFunc]], list[str]]:
    """{BGPFilter name: its functions} and notes on filters skipped whole."""
    out: dict[str, list[FilterFunc]] = {}
    notes: list[str] = []
    for doc in sorted(docs, key=lambda d: str((d.get("metadata") or {}).get("name", ""))):
        name = str((doc.get("metadata") or {}).get("name", ""))
        spec = doc.get("spec") or {}
        try:
            check_name(name, "BGPFilter name")
            funcs = []
            for key, direction, fam in DIRECTIONS:
                rules = spec.get(key) or []
                if not isinstance(rules, list):
                    raise ValueError(f"{key} is not a list")
                if not rules:
                    continue  # nothing to run for this direction and family
                funcs.append(FilterFunc(
                    name=function_name(name, direction, fam), filter_name=name,
                    direction=direction, family=fam,
                    rules=tuple(_rule(r, fam, f"{key}[{i}]") for i, r in enumerate(rules))))
            out[name] = funcs
        except ValueError as exc:
            notes.append(f"BGPFilter {birdtext.bird_comment(name)} skipped: {exc}")
    return out, notes
