"""IPPools as IPAM sees them: CIDR, block size, disabled flag and node selector.

Pools are the v3 `IPPool` resources read through `Datastore.list("IPPool")`; this
module turns each document into a small `Pool` value and picks the pools an
allocation may use: enabled, of the wanted IP version, whose `nodeSelector` selects
the node (evaluated with `calico_net.model.selector` against the Node's labels; a
node without a Node resource has no labels), optionally narrowed to the pools the
caller named (by name or by CIDR, as Calico's CNI `ipv4_pools` allows both).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from calico_net.ipam.block import DEFAULT_BLOCK_SIZE, IPAddress, IPNetwork, parse_cidr
from calico_net.ipam.errors import NoPoolsError

ALL_SELECTOR = "all()"


@dataclass(frozen=True)
class Pool:
    name: str
    cidr: IPNetwork
    block_size: int
    disabled: bool = False
    node_selector: str = ALL_SELECTOR
    # Calico's allowedUses / assignmentMode: a pool that is not for workloads or is
    # "Manual" is never picked automatically (an explicit assign_ip may still use it).
    auto_assign: bool = True

    @property
    def version(self) -> int:
        return self.cidr.version

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> "Pool":
        spec = doc.get("spec") or {}
        name = (doc.get("metadata") or {}).get("name", "")
        if "cidr" not in spec:
            raise ValueError(f'IPPool "{name}" has no spec.cidr')
        cidr = parse_cidr(spec["cidr"])
        block_size = int(spec.get("blockSize") or DEFAULT_BLOCK_SIZE[cidr.version])
        return cls(
            name=name,
            cidr=cidr,
            block_size=block_size,
            disabled=bool(spec.get("disabled", False)),
            node_selector=(spec.get("nodeSelector") or "").strip() or ALL_SELECTOR,
            auto_assign=("Workload" in (spec.get("allowedUses") or ["Workload"]))
            and spec.get("assignmentMode", "Automatic") != "Manual",
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


def pools_from_documents(docs: Iterable[Mapping[str, Any]]) -> list[Pool]:
    return [Pool.from_document(d) for d in docs]


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
) -> list[Pool]:
    """The pools an auto-assignment for `node` may use, in order.

    Without `requested`: every enabled pool of the version whose nodeSelector selects
    the node, in name order. With `requested` (names or CIDRs): exactly those, in the
    order given; naming a pool that does not exist, is disabled, is of the other IP
    version or does not select the node is an error, so a misconfigured network fails
    loudly instead of silently using another pool.
    """
    labels = labels or {}
    if requested:
        out: list[Pool] = []
        for want in requested:
            pool = _find_pool(pools, want)
            if pool is None:
                raise NoPoolsError(f'the requested pool "{want}" does not exist')
            if pool.version != version:
                raise NoPoolsError(f'the requested IPv{version} pool "{want}" is an IPv{pool.version} pool')
            if pool.disabled:
                raise NoPoolsError(f'the requested pool "{want}" ({pool.cidr}) is disabled')
            if not pool.auto_assign:
                raise NoPoolsError(f'the requested pool "{want}" is not for automatic workload assignment '
                                   "(allowedUses / assignmentMode)")
            if not pool.selects(labels):
                raise NoPoolsError(
                    f'the requested pool "{want}" does not select node "{node}" '
                    f"(nodeSelector {pool.node_selector})"
                )
            if pool not in out:
                out.append(pool)
        return out
    return sorted(
        (p for p in pools if p.version == version and not p.disabled and p.auto_assign and p.selects(labels)),
        key=lambda p: p.name,
    )


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
