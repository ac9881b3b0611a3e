"""The names of the agent's policy, profile and endpoint chains, and the body of an
endpoint chain: the tiers that apply, each with its policies and its end, then the
profiles, as Felix lays out its endpoint chains (felix/rules/endpoints.go).

Chains are named by a hash of what defines them (a policy's key, a profile's name,
an endpoint chain's body), so equal content is one chain. `PolicyDataplane` writes
these chains; `explain` computes the same body to say which line of it decided.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

from .records import Key
from .rules import MARK_ALLOW, MARK_CLEAR_MASK, MARK_PASS

__all__ = ["MARK_CLEAR_PASS", "TierGroup", "endpoint_chain_body", "policy_chain", "profile_chain"]

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


def endpoint_chain_body(direction: str, groups: tuple[TierGroup, ...],
                        prof_names: tuple[str, ...]) -> tuple[str, list[str]]:
    """(name, rules) of the endpoint chain for `direction`: the verdict marks cleared;
    per tier its policies in order (Allow returns, Pass skips the rest of the tier)
    and, unless its defaultAction is Pass, the end-of-tier drop of what no policy of
    it allowed or passed; the pass bit cleared at the start of each further tier;
    then the profiles in order; then drop."""
    profs = [profile_chain(p, direction) for p in prof_names]
    body = [f"meta mark set meta mark & {MARK_CLEAR_MASK:#010x}"]
    for t, (_tier, action, keys) in enumerate(groups):
        if t:
            # start of a further tier: an earlier tier's Pass no longer counts
            body.append(f"meta mark set meta mark & {MARK_CLEAR_PASS:#010x}")
        for i, k in enumerate(keys):
            pc = policy_chain(k, direction)
            body.append(f"jump {pc}" if i == 0 else f"meta mark & {MARK_PASS:#x} == 0 jump {pc}")
            body.append(f"meta mark & {MARK_ALLOW:#x} == {MARK_ALLOW:#x} return")
        if action != "Pass":
            # end of tier: some policy of it applied and none allowed or passed
            body.append(f"meta mark & {MARK_PASS:#x} == 0 drop")
    for pc in profs:
        body.append(f"jump {pc}")
        body.append(f"meta mark & {MARK_ALLOW:#x} == {MARK_ALLOW:#x} return")
    body.append("drop")
    prefix = "cali-tw-" if direction == "Ingress" else "cali-fw-"
    return prefix + _short(*body), body
