"""IPPools as IPAM sees them: CIDR, block size, disabled flag, node selector and the
uses the pool allows; and which pools an allocation may use.

Pools are the v3 `IPPool` resources read through `Datastore.list("IPPool")` (or the
IPAM's own transaction); this module turns each document into a small `Pool` value
and picks the pools an allocation may use: enabled, of the wanted IP version, whose
`nodeSelector` selects the node (evaluated with `calico_net.model.selector` against
the Node's labels; a node without a Node resource has no labels), that allow the
allocation's intended use (Calico's `IntendedUse`: `Workload` or `Tunnel`, against
the pool's `allowedUses`), optionally narrowed to the pools the caller named (by name
or by CIDR, as Calico's CNI `ipv4_pools` allows both).

A document that is not a usable pool (no `spec.cidr`, a spec that is not an object,
a field of the wrong type, a selector that does not parse; or a value that is not
JSON at all) is skipped — logged once per key and reason — and remembered in
`PoolList.skipped`, so one bad IPPool never breaks the assignments the other pools
can serve, and a request naming it is told why it cannot be used.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from calico_net.ipam.block import DEFAULT_BLOCK_SIZE, IPAddress, IPNetwork, parse_cidr
from calico_net.ipam.errors import NoPoolsError

log = logging.getLogger(__name__)

ALL_SELECTOR = "all()"

#: Calico's IntendedUse values an IPAM assignment can have
WORKLOAD = "Workload"
TUNNEL = "Tunnel"
INTENDED_USES = (WORKLOAD, TUNNEL)
#: allowedUses when a pool does not set it (Calico's defaulting)
DEFAULT_USES = frozenset(INTENDED_USES)

# The etcd prefix of IPPool keys (the datastore's kind_prefix("IPPool"); written out
# so that this module does not import the datastore layer for one string).
POOL_KEY_PREFIX = "/calico/resources/v3/projectcalico.org/ippools/"
# blockSize bounds per IP version (the model's BLOCK_SIZE_RANGE, Calico's too)
BLOCK_SIZES = {4: range(20, 33), 6: range(116, 129)}


def check_use(use: str) -> str:
    if use not in INTENDED_USES:
        raise ValueError(f"intended use must be one of {', '.join(INTENDED_USES)}, not {use!r}")
    return use


@dataclass(frozen=True)
class Pool:
    name: str
    cidr: IPNetwork
    block_size: int
    disabled: bool = False
    node_selector: str = ALL_SELECTOR
    # Calico's allowedUses (unset: Workload and Tunnel)
    allowed_uses: frozenset[str] = DEFAULT_USES
    # assignmentMode Manual: never picked automatically (an explicit assign_ip may
    # still use it)
    manual: bool = False

    @property
    def version(self) -> int:
        return self.cidr.version

    def allows(self, use: str) -> bool:
        """Automatic assignment for `use` (Workload / Tunnel) may take from this pool."""
        return not self.manual and use in self.allowed_uses

    @property
    def uses_text(self) -> str:
        return "[" + ", ".join(sorted(self.allowed_uses)) + "]"

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> "Pool":
        """The pool of an IPPool document; ValueError (saying what is wrong) when the
        document is not a usable pool. Types are checked here because the document
        may come from etcd as anybody wrote it, not through the model's validation."""
        if not isinstance(doc, Mapping):
            raise ValueError("the IPPool is not a JSON object")
        meta = doc.get("metadata")
        if not isinstance(meta, Mapping):
            raise ValueError("metadata is not an object")
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("metadata.name is missing or not a string")
        spec = doc.get("spec")
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            raise ValueError("spec is not an object")
        cidr_text = spec.get("cidr")
        if cidr_text is None:
            raise ValueError("it has no spec.cidr")
        if not isinstance(cidr_text, str):
            raise ValueError("spec.cidr is not a string")
        cidr = parse_cidr(cidr_text)
        block_size = spec.get("blockSize") or DEFAULT_BLOCK_SIZE[cidr.version]
        if not isinstance(block_size, int) or isinstance(block_size, bool) \
                or block_size not in BLOCK_SIZES[cidr.version]:
            raise ValueError(f"spec.blockSize {_show(block_size)} is not an IPv{cidr.version} block size")
        disabled = spec.get("disabled", False)
        if not isinstance(disabled, bool):
            raise ValueError("spec.disabled is not a boolean")
        selector = spec.get("nodeSelector") or ""
        if not isinstance(selector, str):
            raise ValueError("spec.nodeSelector is not a string")
        selector = selector.strip() or ALL_SELECTOR
        if selector.replace(" ", "") != ALL_SELECTOR:
            from calico_net.model.selector import parse_selector

            try:
                parse_selector(selector)  # parsed once here: selects() can then not fail
            except ValueError as e:
                raise ValueError(f"spec.nodeSelector does not parse: {e}") from None
        uses = spec.get("allowedUses")
        if uses is not None and (not isinstance(uses, list) or not all(isinstance(u, str) for u in uses)):
            raise ValueError("spec.allowedUses is not a list of strings")
        mode = spec.get("assignmentMode")
        if mode is not None and not isinstance(mode, str):
            raise ValueError("spec.assignmentMode is not a string")
        return cls(
            name=name,
            cidr=cidr,
            block_size=block_size,
            disabled=disabled,
            node_selector=selector,
            allowed_uses=frozenset(uses) if uses else DEFAULT_USES,
            manual=mode == "Manual",
        )

    @property
    def selects_all(self) -> bool:
        return self.node_selector.replace(" ", "") in ("", ALL_SELECTOR)

    def selects(self, labels: Mapping[str, str]) -> bool:
        if self.selects_all:
            return True
        from calico_net.model.selector import parse_selector

        return bool(parse_selector(self.node_selector).evaluate(labels))

    def contains(self, net_or_ip: IPNetwork | IPAddress) -> bool:
        """The address, or the whole network, lies inside the pool. (Integer arithmetic:
        IPAM asks this for every affine block on every assignment, and ipaddress's
        subnet_of is slow.)"""
        cidr = self.cidr
        if net_or_ip.version != cidr.version:
            return False
        if isinstance(net_or_ip, type(cidr)):
            if net_or_ip.prefixlen < cidr.prefixlen:  # type: ignore[union-attr]
                return False
            addr = int(net_or_ip.network_address)  # type: ignore[union-attr]
        else:
            addr = int(net_or_ip)  # type: ignore[arg-type]
        shift = cidr.max_prefixlen - cidr.prefixlen
        return (addr >> shift) == (int(cidr.network_address) >> shift)


def _show(value: Any) -> str:
    from calico_net.errors import printable

    return printable(value, 80, quote=True)


@dataclass(frozen=True)
class SkippedPool:
    """An IPPool key that is not a usable pool, and why."""

    key: str      # the etcd key (as read: show it with `shown_key`); "" when unknown
    reason: str

    @property
    def name(self) -> str:
        """The pool name the key gives ("" for a key outside the IPPool prefix)."""
        return self.key[len(POOL_KEY_PREFIX):] if self.key.startswith(POOL_KEY_PREFIX) else ""

    @property
    def shown_key(self) -> str:
        from calico_net.datastore.etcd import show_key

        return show_key(self.key)

    def describe(self) -> str:
        where = f"key {self.shown_key}" if self.key else "(without a metadata.name)"
        return f"IPPool {where} is not a usable pool: {self.reason}"


class PoolList(list):  # list[Pool]
    """The usable pools, in the order read, and `skipped`: {pool name: SkippedPool}
    for each IPPool key that was not usable (so a request naming one is told why)."""

    def __init__(self, pools: Iterable[Pool] = (), skipped: Iterable[SkippedPool] = ()) -> None:
        super().__init__(pools)
        self.skipped: dict[str, SkippedPool] = {s.name: s for s in skipped}


# (key, reason) of every skipped pool already logged: a bad key is re-read on every
# fresh view and every tunnel address pass, and must not fill the log. Bounded: a
# datastore that keeps producing new bad keys is logged again after a reset.
_REPORTED: set[tuple[str, str]] = set()
_REPORTED_MAX = 1024


def report_skipped(skipped: SkippedPool) -> None:
    """Log a skipped IPPool, once per key and reason in this process."""
    mark = (skipped.key, skipped.reason)
    if mark in _REPORTED:
        return
    if len(_REPORTED) >= _REPORTED_MAX:
        _REPORTED.clear()
    _REPORTED.add(mark)
    log.warning("skipping %s", skipped.describe())


def skipped_value(key: str, reason: str) -> SkippedPool:
    """A key whose value does not decode (the datastore's BadStoredValue), logged once."""
    s = SkippedPool(key, reason)
    report_skipped(s)
    return s


def pool_or_skip(doc: Mapping[str, Any], key: str | None = None) -> Pool | SkippedPool:
    """The pool of one IPPool document, or (logged once) why it is skipped. `key` is
    the etcd key, when known; else it is made from metadata.name."""
    try:
        return Pool.from_document(doc)
    except (ValueError, TypeError) as e:
        if key is None:
            meta = doc.get("metadata") if isinstance(doc, Mapping) else None
            name = meta.get("name") if isinstance(meta, Mapping) else None
            key = POOL_KEY_PREFIX + name if isinstance(name, str) and name else ""
        s = SkippedPool(key, str(e))
        report_skipped(s)
        return s


def pools_from_documents(docs: Iterable[Mapping[str, Any]], skipped: Iterable[SkippedPool] = (),
                         keys: Sequence[str] | None = None) -> PoolList:
    """The usable pools of `docs`; each unusable one is logged (once) and skipped.
    `skipped`: keys already found unusable (values that did not decode). `keys`: the
    etcd key of each document, when known (a document's name may not match it)."""
    good: list[Pool] = []
    bad = list(skipped)
    for i, d in enumerate(docs):
        got = pool_or_skip(d, keys[i] if keys is not None else None)
        if isinstance(got, Pool):
            good.append(got)
        else:
            bad.append(got)
    return PoolList(good, bad)


def skipped_pools(pools: Sequence[Pool]) -> Mapping[str, SkippedPool]:
    """The skipped pools a pool list carries (none for a plain list)."""
    return pools.skipped if isinstance(pools, PoolList) else {}


def pool_for(pools: Sequence[Pool], net_or_ip: IPNetwork | IPAddress, *, enabled_only: bool = False) -> Pool | None:
    """The pool holding an address or block (the most specific one if pools nest)."""
    best: Pool | None = None
    for p in pools:
        if enabled_only and p.disabled:
            continue
        if p.contains(net_or_ip) and (best is None or p.cidr.prefixlen > best.cidr.prefixlen):
            best = p
    return best


def select_pools(
    pools: Sequence[Pool],
    version: int,
    node: str,
    labels: Mapping[str, str] | None,
    requested: Sequence[str] | None = None,
    use: str = WORKLOAD,
) -> list[Pool]:
    """The pools an auto-assignment for `use` (Workload / Tunnel) on `node` may use,
    in order.

    Without `requested`: every enabled pool of the version that allows the use and
    whose nodeSelector selects the node, in name order. With `requested` (names or
    CIDRs): exactly those, in the order given; naming a pool that does not exist (or
    was skipped as invalid), is disabled, is of the other IP version, does not allow
    the use or does not select the node is an error, so a misconfigured network fails
    loudly instead of silently using another pool.
    """
    check_use(use)
    labels = labels or {}
    if requested:
        out: list[Pool] = []
        for want in requested:
            pool = _find_pool(pools, want)
            if pool is None:
                bad = skipped_pools(pools).get(want)
                if bad is not None:
                    raise NoPoolsError(f'the requested pool "{want}" cannot be used: {bad.describe()}')
                raise NoPoolsError(f'the requested pool "{want}" does not exist')
            if pool.version != version:
                raise NoPoolsError(f'the requested IPv{version} pool "{want}" is an IPv{pool.version} pool')
            if pool.disabled:
                raise NoPoolsError(f"the requested pool {_named(want, pool)} is disabled")
            if pool.manual:
                raise NoPoolsError(f"the requested pool {_named(want, pool)} is not for automatic "
                                   "assignment (assignmentMode Manual)")
            if not pool.allows(use):
                raise NoPoolsError(f"the requested pool {_named(want, pool)} is not for automatic {use} "
                                   f"assignment (allowedUses {pool.uses_text})")
            if not pool.selects(labels):
                raise NoPoolsError(
                    f'the requested pool "{want}" does not select node "{node}" '
                    f"(nodeSelector {pool.node_selector})"
                )
            if pool not in out:
                out.append(pool)
        return out
    return sorted(
        (p for p in pools if p.version == version and not p.disabled and p.allows(use) and p.selects(labels)),
        key=lambda p: p.name,
    )


def _named(want: str, pool: Pool) -> str:
    """A requested pool as an error names it: as asked, and the pool's name or CIDR."""
    return f'"{want}" ({pool.cidr})' if want == pool.name else f'"{want}" (IPPool "{pool.name}")'


def _find_pool(pools: Sequence[Pool], want: str) -> Pool | None:
    for p in pools:
        if p.name == want:
            return p
    try:
        net = parse_cidr(want)
    except ValueError:
        return None
    for p in pools:
        if p.cidr == net:
            return p
    return None


def needs_node_labels(pools: Iterable[Pool]) -> bool:
    return any(not p.selects_all for p in pools)
