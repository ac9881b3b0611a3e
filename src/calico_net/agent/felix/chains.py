"""The names of the agent's policy, profile and endpoint chains, and the body of an
endpoint chain: the tiers that apply, each with its policies and its end, then the
profiles, as Felix lays out its endpoint chains (felix/rules/endpoints.go). A host
endpoint's forward, pre-DNAT and untracked chains are the same tier layout
(`hep_chain_body`), with Felix's differences: no profiles in any of them, no
end-of-tier drop in the pre-DNAT and untracked ones, an untracked Allow also
``notrack``.

The deny verdict (``drop``, or ``reject`` with FelixConfiguration
nftablesFilterDenyAction Reject) is what end-of-tier and no-profile drops do.

Chains are named by a hash of what defines them (a policy's key, a profile's name,
an endpoint chain's body), so equal content is one chain. `PolicyDataplane` writes
these chains; `explain` computes the same body to say which line of it decided.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

from .records import Key
from .rules import MARK_ALLOW, MARK_CLEAR_MASK, MARK_PASS

__all__ = ["MARK_CLEAR_PASS", "TierGroup", "DENY_VERDICTS", "HEP_PREFIX", "endpoint_chain_body", "hep_chain_body",
           "policy_chain", "profile_chain"]

#: nftablesFilterDenyAction → the nft verdict of a Deny rule and of the end-of-tier
#: and no-profile drops (Felix's nftables RejectAction is a plain ``reject``: ICMP
#: port unreachable, an ICMPv6 one for IPv6)
DENY_VERDICTS = {"Drop": "drop", "Reject": "reject"}

#: clears only the pass bit (the start of each tier after the first)
MARK_CLEAR_PASS = 0xFFFFFFFF & ~MARK_PASS

#: per tier that applies to an endpoint in a direction: (tier name, defaultAction,
#: the keys of its policies there, in order)
TierGroup = tuple[str, str, tuple[Key, ...]]


def _short(*parts: object) -> str:
    return hashlib.sha224("\0".join(map(str, parts)).encode()).hexdigest()[:16]


@lru_cache(maxsize=65536)
def policy_chain(key: Key, direction: str) -> str:
    return f"cali-p{'i' if direction == 'Ingress' else 'o'}-{_short(*key)}"


@lru_cache(maxsize=65536)
def profile_chain(name: str, direction: str) -> str:
    return f"cali-pr{'i' if direction == 'Ingress' else 'o'}-{_short(name)}"


def _tier_rules(kind: str, direction: str, groups: tuple[TierGroup, ...], deny: str) -> list[str]:
    """The verdict marks cleared, then per tier its policies in order (Allow returns,
    Pass skips the rest of the tier) and, for "normal" and "fwd" unless its
    defaultAction is Pass, the end-of-tier `deny` of what no policy of it allowed or
    passed; the pass bit cleared at the start of each further tier. "raw": an Allow
    also untracks."""
    body = [f"meta mark set meta mark & {MARK_CLEAR_MASK:#010x}"]
    allowed = f"meta mark & {MARK_ALLOW:#x} == {MARK_ALLOW:#x}"
    end_of_tier = kind in ("normal", "fwd")
    for t, (_tier, action, keys) in enumerate(groups):
        if t:
            # start of a further tier: an earlier tier's Pass no longer counts
            body.append(f"meta mark set meta mark & {MARK_CLEAR_PASS:#010x}")
        for i, k in enumerate(keys):
            pc = policy_chain(k, direction)
            body.append(f"jump {pc}" if i == 0 else f"meta mark & {MARK_PASS:#x} == 0 jump {pc}")
            if kind == "raw":
                body.append(f"{allowed} notrack")
            body.append(f"{allowed} return")
        if end_of_tier and action != "Pass":
            # end of tier: some policy of it applied and none allowed or passed
            body.append(f"meta mark & {MARK_PASS:#x} == 0 {deny}")
    return body


def endpoint_chain_body(direction: str, groups: tuple[TierGroup, ...],
                        prof_names: tuple[str, ...], deny: str = "drop") -> tuple[str, list[str]]:
    """(name, rules) of the endpoint chain for `direction`: the tiers
    (`_tier_rules`, end-of-tier `deny` included), then the profiles in order, then
    `deny`."""
    body = _tier_rules("normal", direction, groups, deny)
    for p in prof_names:
        body.append(f"jump {profile_chain(p, direction)}")
        body.append(f"meta mark & {MARK_ALLOW:#x} == {MARK_ALLOW:#x} return")
    body.append(deny)
    prefix = "cali-tw-" if direction == "Ingress" else "cali-fw-"
    return prefix + _short(*body), body


#: chain name prefixes of a host endpoint's extra chains by (kind, direction)
HEP_PREFIX = {("fwd", "Ingress"): "cali-fhf-", ("fwd", "Egress"): "cali-thf-",
              ("pre", "Ingress"): "cali-pre-", ("raw", "Ingress"): "cali-rfh-",
              ("raw", "Egress"): "cali-rth-"}


def hep_chain_body(kind: str, direction: str, groups: tuple[TierGroup, ...],
                   deny: str = "drop") -> tuple[str, list[str]]:
    """(name, rules) of a host endpoint's extra chain, `kind` "fwd" (applyOnForward
    policy on forwarded traffic: end-of-tier `deny`; what every tier passed goes on),
    "pre" (preDNAT) or "raw" (doNotTrack): the tiers only, no end-of-tier drop (what
    no policy decided goes on to the normal chains), as Felix's chainTypeForward,
    chainTypePreDNAT and chainTypeUntracked."""
    if kind not in ("fwd", "pre", "raw"):
        raise ValueError(f"host endpoint chain kind {kind!r} is not fwd, pre or raw")
    body = _tier_rules(kind, direction, groups, deny)
    return HEP_PREFIX[(kind, direction)] + _short(*body), body
