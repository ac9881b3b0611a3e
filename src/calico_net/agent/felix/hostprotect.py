"""Host endpoint protection beyond the plain ingress/egress chains: which policies
apply where (`HostProtect.split`), the per-endpoint chains for forwarded traffic
(applyOnForward), pre-DNAT and untracked (doNotTrack) policy, the verdict maps that
dispatch to them, and the all-interfaces (``interfaceName: "*"``) host endpoint.

Calico's rules, as Felix renders them: a doNotTrack policy applies only untracked
(raw hooks, before conntrack), a preDNAT policy only in prerouting before DNAT (its
ingress), any other policy to traffic to and from the host, and, with applyOnForward,
to traffic forwarded through the host endpoint's interface as well. Workload
endpoints never get preDNAT or doNotTrack policy. The forward, pre-DNAT and untracked
chains are tiered as the normal endpoint chains (`chains.hep_chain_body`: the tiers that
have such a policy for the endpoint and direction, in tier order; Pass skips the rest
of a tier) with Felix's differences: no profiles, and the untracked and pre-DNAT
chains have no end-of-tier drop (what no policy decides goes on to the normal
chains); the forward chains drop at the end of a tier what its policies leave
undecided (unless the tier's defaultAction is Pass; what every tier passed goes on),
and an endpoint without forward policy lets forwarded traffic pass.

The flags are read from the policy documents (`note_policy`), not from the policy
records, so a flag change is reported for the dataplane to re-dispatch the
endpoints of that policy. Host endpoints are few: their extra chains are rendered
without caches and deleted as soon as no endpoint uses them.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, NamedTuple

from .base_chains import (HEP_FWD_IN, HEP_FWD_OUT, HEP_IFACES, HEP_IN, HEP_PRE, HEP_RAW_IN,
                          HEP_RAW_OUT, HepLayout)
from .chains import TierGroup, hep_chain_body, policy_chain
from .ruleset import Ruleset

__all__ = ["STAR", "STAR_IFACE", "star_endpoint", "PRE_DNAT", "DO_NOT_TRACK", "APPLY_ON_FORWARD", "HepChains", "HostProtect",
           "policy_flags"]

#: the dispatch key of the all-interfaces host endpoint (never an nft map key)
STAR = "*"
#: the interface name the index is given for it: the index takes only names nft can
#: carry, and no kernel interface can have this one (the kernel refuses ':')
STAR_IFACE = ":all:"
PRE_DNAT, DO_NOT_TRACK, APPLY_ON_FORWARD = 1, 2, 4
_NOT_NORMAL = PRE_DNAT | DO_NOT_TRACK


class HepChains(NamedTuple):
    """A host endpoint's extra chains (None: no policy of that kind applies)."""

    fwd_in: str | None = None
    fwd_out: str | None = None
    pre: str | None = None
    raw_in: str | None = None
    raw_out: str | None = None


_NONE = HepChains()
#: (verdict map, hook name of the "*" endpoint in HepLayout.star) of each HepChains
#: field, in the tuple's order
_EXTRA = ((HEP_FWD_IN, "fwd-in"), (HEP_FWD_OUT, "fwd-out"), (HEP_PRE, "pre"),
          (HEP_RAW_IN, "raw-in"), (HEP_RAW_OUT, "raw-out"))
assert len(_EXTRA) == len(HepChains._fields)


def star_endpoint(doc: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A HostEndpoint document as the index takes it: ``interfaceName: "*"`` becomes
    STAR_IFACE."""
    spec = (doc or {}).get("spec")
    if not spec or spec.get("interfaceName") != STAR:
        return doc
    return {**doc, "spec": {**spec, "interfaceName": STAR_IFACE}}   # type: ignore[dict-item]


def policy_flags(doc: Mapping[str, Any] | None) -> int:
    """PRE_DNAT | DO_NOT_TRACK | APPLY_ON_FORWARD as a policy document sets them."""
    spec = (doc or {}).get("spec") or {}
    return ((PRE_DNAT if spec.get("preDNAT") is True else 0)
            | (DO_NOT_TRACK if spec.get("doNotTrack") is True else 0)
            | (APPLY_ON_FORWARD if spec.get("applyOnForward") is True else 0))


class HostProtect:
    """The extra host endpoint chains and maps of one `Ruleset`; see the module
    docstring. `tier_groups(pols, direction)` groups ordered policies by tier (as
    `PolicyDataplane.tier_groups`); `deny` is the filter table's deny verdict."""

    def __init__(self, rs: Ruleset, tier_groups: Callable[[list[Any], str], tuple[TierGroup, ...]],
                 deny: str = "drop") -> None:
        self.rs = rs
        self._tier_groups = tier_groups
        self._policy_chain = policy_chain      # names a policy's chain (key, direction)
        self.deny = deny
        self.flags: dict[Any, int] = {}          # policy key → flags (only non-zero)
        self.flag_changes: set[Any] = set()      # policies whose flags changed
        self.extra: dict[Any, HepChains] = {}    # host endpoint → its extra chains
        self._refs: dict[str, int] = {}
        self._owner: dict[str, Any] = {}         # interface key → endpoint owning it
        self._star: dict[str, str] = {}          # hook → chain of the "*" endpoint
        self.layout = HepLayout()

    # -- policies ----------------------------------------------------------------

    def note_policy(self, key: Any, doc: Mapping[str, Any] | None) -> None:
        """A GlobalNetworkPolicy's new version (None: deleted)."""
        flags = policy_flags(doc)
        if flags != self.flags.get(key, 0):
            if flags:
                self.flags[key] = flags
            else:
                self.flags.pop(key, None)
            self.flag_changes.add(key)

    def normal(self, pols: list[Any]) -> list[Any]:
        """The policies of `pols` for the normal (tracked, filter) chains."""
        if not self.flags:
            return pols
        flags = self.flags
        return [p for p in pols if not flags.get(p.key, 0) & _NOT_NORMAL]

    def split(self, pols: Iterable[Any]) -> tuple[list[Any], list[Any], list[Any]]:
        """(forward, pre-DNAT, untracked) policies of a host endpoint, in order."""
        fwd: list[Any] = []
        pre: list[Any] = []
        raw: list[Any] = []
        for p in pols:
            f = self.flags.get(p.key, 0)
            if f & DO_NOT_TRACK:
                raw.append(p)
            elif f & PRE_DNAT:
                pre.append(p)
            elif f & APPLY_ON_FORWARD:
                fwd.append(p)
        return fwd, pre, raw

    # -- chains ------------------------------------------------------------------

    def _chain(self, kind: str, direction: str, pols: list[Any]) -> str | None:
        groups = self._tier_groups(pols, direction)
        if not groups:
            return None
        name, body = hep_chain_body(kind, direction, groups, self.deny)
        if name not in self.rs.chains:
            self.rs.set_chain(name, body)
        return name

    def render_endpoint(self, ep: Any, pols: list[Any] | None) -> None:
        """Recompute host endpoint `ep`'s extra chains from its ordered policies
        (None: the endpoint is gone or not programmed)."""
        new = _NONE
        if pols is not None and self.flags:
            fwd, pre, raw = self.split(pols)
            new = HepChains(self._chain("fwd", "Ingress", fwd), self._chain("fwd", "Egress", fwd),
                            self._chain("pre", "Ingress", pre), self._chain("raw", "Ingress", raw),
                            self._chain("raw", "Egress", raw))
        old = self.extra.get(ep, _NONE)
        if new == old:
            return
        for c in new:
            if c:
                self._refs[c] = self._refs.get(c, 0) + 1
        if new == _NONE:
            self.extra.pop(ep, None)
        else:
            self.extra[ep] = new
        for iface, owner in list(self._owner.items()):
            if owner == ep:
                self._write_extra(iface, new)
        for c in old:
            if c:
                n = self._refs.get(c, 0) - 1
                if n <= 0:
                    self._refs.pop(c, None)
                    self.rs.delete_chain(c)
                else:
                    self._refs[c] = n

    # -- dispatch ----------------------------------------------------------------

    def write_slot(self, mapname: str, iface: str, owner: Any, chain: str | None) -> None:
        """Host endpoint map `mapname` (HEP_IN/HEP_OUT) for interface key `iface`:
        `owner`'s `chain`, or nothing (owner None). HEP_IN also carries the
        interface into HEP_IFACES and the owner's extra chains into their maps."""
        inbound = mapname == HEP_IN
        self._dispatch(mapname, iface, "in" if inbound else "out", chain)
        if not inbound:
            return
        if iface != STAR:
            if chain is None:
                self.rs.remove_element(HEP_IFACES, iface)
            else:
                self.rs.add_element(HEP_IFACES, iface)
        if owner is None:
            self._owner.pop(iface, None)
        else:
            self._owner[iface] = owner
        self._write_extra(iface, self.extra.get(owner, _NONE) if owner is not None else _NONE)

    def _write_extra(self, iface: str, chains: HepChains) -> None:
        for (mapname, hook), chain in zip(_EXTRA, chains):
            self._dispatch(mapname, iface, hook, chain)

    def _dispatch(self, mapname: str, iface: str, hook: str, chain: str | None) -> None:
        """Interface key `iface` to `chain` (None: nothing) in `mapname`; for the
        "*" endpoint, its chain for `hook` in the base chains instead."""
        if iface == STAR:
            if chain is None:
                self._star.pop(hook, None)
            else:
                self._star[hook] = chain
        elif chain is None:
            self.rs.remove_element(mapname, iface)
        else:
            if mapname not in self.rs.sets:
                self.rs.ensure_set(mapname, "type ifname : verdict", is_map=True)
            self.rs.add_element(mapname, iface, f"jump {chain}")

    def finish(self) -> bool:
        """After a render: keep the extra maps of the hooks in use (a pair for the
        forward and raw hooks: the base chains look up both), delete the others, and
        work out the layout; True if it changed (the base chains must follow)."""
        rs, star = self.rs, self._star

        def used(maps: tuple[str, ...], hooks: tuple[str, ...]) -> bool:
            return any(rs.sets.get(m) is not None and rs.sets[m].elements for m in maps) or \
                any(h in star for h in hooks)

        forward = used((HEP_FWD_IN, HEP_FWD_OUT), ("fwd-in", "fwd-out"))
        pre = used((HEP_PRE,), ("pre",))
        raw = used((HEP_RAW_IN, HEP_RAW_OUT), ("raw-in", "raw-out"))
        for on, maps in ((forward, (HEP_FWD_IN, HEP_FWD_OUT)), (pre, (HEP_PRE,)),
                         (raw, (HEP_RAW_IN, HEP_RAW_OUT))):
            for m in maps:
                if on:
                    rs.ensure_set(m, "type ifname : verdict", is_map=True)
                else:
                    rs.delete_set(m)
        layout = HepLayout(forward, pre, raw, tuple(sorted(star.items())))
        if layout == self.layout:
            return False
        self.layout = layout
        return True
