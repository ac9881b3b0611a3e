"""PolicyDataplane: Calico policy for this host's endpoints, enforced in ``table inet calico``.

What it is for: the agent's runtime feeds it validated Calico v3 documents
(`update`), calls `apply` after each batch and `refresh` periodically.  Policy
semantics are Calico's, tiers included: per endpoint and direction the tiers that
have a policy applying to it, in tier order (``order``, then name; see
`PolicyIndex.tier_groups`), and within each its applicable policies in order: Allow
accepts, Deny drops, Pass skips the rest of the tier to the next one; if no policy
of the tier decided, the tier's defaultAction (Deny: drop, "end of tier drop";
Pass: on to the next tier).  After the tiers (none applied, or every one passed)
the endpoint's profiles in order (Pass or no match: next profile), and an endpoint
with neither is denied.  With FelixConfiguration nftablesFilterDenyAction Reject,
those drops (Deny rules, end of tier, no profile) are ``reject`` instead.

How it is built (layering as in Felix): `PolicyIndex` (pure model) →
this module renders what the index reports as changed into a `Ruleset` (desired
table) → `NftWriter` writes the dirty part as one ``nft -f`` transaction.

Table layout (names are what you see in ``nft list table inet calico``):

* base chains, dispatch chains, failsafe and pool sets: see `base_chains`; the
  overlay's host sets and rules (`set_encap_hosts`): see `encap_rules`.
* dispatch by verdict maps, so an endpoint coming or going is element changes:
  ``cali-wl-from`` (iifname → egress chain of the workload), ``cali-wl-to`` (oifname
  → its ingress chain), ``cali-hep-in``/``cali-hep-out`` for host endpoint interfaces
  (forward, pre-DNAT and untracked host policy and the all-interfaces host endpoint:
  `hostprotect`).  Workload-to-workload traffic on one host runs the source's egress
  and then the destination's ingress.  Traffic from an unknown ``cali*`` interface
  is dropped.  Host-to-workload traffic is allowed (as Calico).
* endpoint chains ``cali-fw-<h>`` (egress) / ``cali-tw-<h>`` (ingress): per tier the
  policy chains in order and the end-of-tier drop (a tier whose defaultAction is
  Deny), the pass bit cleared at the start of each further tier, then the profile
  chains (`chains.endpoint_chain_body`); named by a hash of their content, so
  endpoints with the same policies and profiles share one chain, and one endpoint
  added is two map elements plus set elements (no chain unless its combination is new).
* policy chains ``cali-pi-<h>``/``cali-po-<h>`` and profile chains
  ``cali-pri-<h>``/``cali-pro-<h>`` (ingress/egress, comment = the resource name).
* selector sets ``s4_/s6_<h>`` (+ ``c4_/c6_`` CIDRs, ``n4_/n6_`` named ports), see
  `rules`; failsafe sets ``cali-failsafe-in``/``-out`` (``inet_proto . inet_service``),
  checked before any host endpoint policy.

Writing: an apply whose changes are only set/map elements (endpoint added, removed,
relabelled within known policy combinations) goes out as one nfnetlink batch
(`nft_netlink`), everything else as one ``nft -f`` transaction (small ones through
libnftables in-process, see `libnft`); endpoint chains no longer used are deleted
with the next nft transaction (or when many piled up), so endpoint removal stays
element-only.  `refresh` and the restart check read the table back over netlink
(rule and element counts, and the fingerprint in ``cali-meta``), not ``nft -j list``.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NamedTuple

from . import nftstr
from .chains import (DENY_VERDICTS, MARK_CLEAR_PASS, TierGroup, _short, endpoint_chain_body, policy_chain,
                     profile_chain)
from .base_chains import HEP_IN, HEP_OUT, WL_FROM, WL_TO, placeholder_script, render_base, render_pools
from .encap_rules import EncapHosts
from .gcpause import GcPause
from .hostprotect import STAR, STAR_IFACE, HostProtect, star_endpoint
from .index import IndexChanges, Key, Member, PolicyIndex
from .nft import NftError, NftRunner
from .nft_writer import NftWriter
from .nftstr import NftStringError
from .rules import render_rule
from .ruleset import Ruleset
from .settings import (DEFAULT_FAILSAFE_INBOUND, DEFAULT_FAILSAFE_OUTBOUND, ApplyStats, FelixSettings,
                       parse_failsafe_ports)

if TYPE_CHECKING:
    from .backends import NftBackend

log = logging.getLogger(__name__)

__all__ = ["FelixSettings", "ApplyStats", "PolicyDataplane", "DEFAULT_FAILSAFE_INBOUND",
           "DEFAULT_FAILSAFE_OUTBOUND", "parse_failsafe_ports", "policy_chain", "profile_chain",
           "MARK_CLEAR_PASS"]


class _EpProgram(NamedTuple):      # a tuple: one per endpoint
    kind: str
    iface: str      # as an nft map key: quoted by nftstr.ifname
    ingress: str    # chain name
    egress: str


def _chain_comment(text: str) -> str | None:
    """A chain comment naming a resource, cut to what nft takes (128 characters); None
    if it cannot be one (it is only for people: the chain is written without one)."""
    if len(text) > nftstr.COMMENT_MAX:
        text = text[:nftstr.COMMENT_MAX - 3] + "..."
    try:
        nftstr.comment(text)
    except NftStringError as exc:
        log.warning("chain comment left out: %s", exc)
        return None
    return text


class _Ctx:
    """What `rules.render_rule` needs: CIDR-set existence from the index, and named
    sets for long literal lists (collected per rendered chain)."""

    def __init__(self, index: PolicyIndex, log_prefix: str, deny: str = "drop") -> None:
        self.index = index
        self.log_prefix = log_prefix
        self.deny = deny
        self.literals: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.collected: set[str] = set()

    def has_set(self, name: str) -> bool:
        return self.index.set_exists(name)

    def literal_set(self, decl: str, elements: list[str]) -> str:
        elems = tuple(sorted(elements))
        name = "r_" + _short(decl, *elems)
        self.literals[name] = (decl, elems)
        self.collected.add(name)
        return name


class PolicyDataplane:
    """Calico policy for one host in nftables; see the module docstring."""

    def __init__(self, node_name: str, settings: FelixSettings | None = None,
                 nft: "NftBackend | None" = None) -> None:
        self.node_name = node_name
        self.settings = settings or FelixSettings()
        self.runner = nft if nft is not None else NftRunner()
        self.index = PolicyIndex(node_name)
        self.rs = Ruleset()
        self.writer = NftWriter(self.runner)
        self._deny = DENY_VERDICTS[self.settings.filter_deny_action]
        self._ctx = _Ctx(self.index, self.settings.log_prefix, self._deny)
        self.hp = HostProtect(self.rs, self.tier_groups, self._deny)
        self.encap = EncapHosts()
        self._programs: dict[Key, _EpProgram] = {}
        self._iface_claims: dict[tuple[str, str], set[Key]] = {}   # (map, iface) → endpoints
        self._chain_refs: dict[str, int] = {}                      # endpoint chain → users
        # endpoint chain bodies by (direction, policies, profiles): most endpoints
        # share a combination, so this saves re-rendering and re-hashing
        self._ep_chain_cache: dict[tuple[Any, ...], tuple[str, list[str]]] = {}
        # (policies matching an endpoint, its existing profiles) → its (ingress, egress)
        # chains with bodies: thousands of endpoints share a few hundred combinations, so
        # ordering and lookup happen once per combination; cleared when a policy changes.
        self._combo_cache: dict[tuple[frozenset[Key], tuple[str, ...]],
                                tuple[str, list[str], str, list[str]]] = {}
        self._chain_literals: dict[str, set[str]] = {}             # policy chain → literal sets
        self._literal_refs: dict[str, int] = {}
        self._unused_chains: set[str] = set()      # endpoint chains no endpoint uses
        self._base_dirty = True
        self._first = True
        self._rerender_all = False
        #: workload interfaces we program start with one of these (as Felix)
        self._wl_prefixes = tuple(self.settings.interface_prefixes)
        self._rerender_endpoints = False
        self._refused: dict[Key, str] = {}         # endpoint → interface not programmed
        #: the live table is our placeholder (load_placeholder) until the next write
        self._over_placeholder = False
        self.last_stats: ApplyStats | None = None

    # -- API -------------------------------------------------------------------

    def update(self, kind: str, name: str, namespace: str | None,
               doc: Mapping[str, Any] | None) -> None:
        """Record one resource's new version (None: deleted).  Bookkeeping only."""
        if kind == "GlobalNetworkPolicy":
            self.hp.note_policy((kind, None, name), doc)
        elif kind in ("StagedNetworkPolicy", "StagedGlobalNetworkPolicy",
                      "StagedKubernetesNetworkPolicy"):
            return      # staged policy is never enforced (as in Calico)
        elif kind == "HostEndpoint":
            doc = star_endpoint(doc)
        self.index.update(kind, name, namespace, doc)

    def update_member(self, member: Member) -> None:
        """A WorkloadEndpoint's new version given as its record (`records.workload_member`)
        rather than its document; the same as `update` with the document."""
        self.index.update_member(member)

    def set_settings(self, settings: FelixSettings) -> None:
        if settings != self.settings:
            self.settings = settings
            self._ctx.log_prefix = settings.log_prefix
            self._base_dirty = True
            # the log prefix and the deny verdict are inside policy/profile chains
            self._rerender_all = True
            deny = DENY_VERDICTS[settings.filter_deny_action]
            if deny != self._deny:
                # ... and the deny verdict in endpoint and host endpoint chains
                self._deny = self._ctx.deny = self.hp.deny = deny
                self._ep_chain_cache.clear()
                self._combo_cache.clear()
                self._rerender_endpoints = True
            prefixes = tuple(settings.interface_prefixes)
            if prefixes != self._wl_prefixes:
                self._wl_prefixes = prefixes
                self._rerender_endpoints = True

    def set_encap_hosts(self, ipip: frozenset[str] | None, vxlan: frozenset[str] | None,
                        vxlan_port: int) -> None:
        """Hosts IP-in-IP / VXLAN may come from (None: not in use, no rules); written with
        the next apply, as set elements unless an encapsulation starts, stops or changes port."""
        if self.encap.set(ipip, vxlan, vxlan_port):
            self._base_dirty = True

    def endpoint_count(self) -> int:
        return len(self._programs)

    def policy_count(self) -> int:
        return len(self.index.policies)

    def apply(self, while_loading: Callable[[], None] | None = None) -> ApplyStats:
        """Write everything that changed since the last apply in one nft transaction.

        `while_loading` is called exactly once: as soon as an nft process is loading
        the transaction (a full load: the caller can use the other CPU meanwhile),
        or else when this returns."""
        if while_loading is None:
            with GcPause():
                return self._apply()
        called: list[bool] = []

        def on_spawn() -> None:
            called.append(True)
            while_loading()

        try:
            with GcPause():
                return self._apply(on_spawn)
        finally:
            if not called:
                while_loading()

    def _apply(self, on_spawn: Callable[[], None] | None = None) -> ApplyStats:
        t0 = time.perf_counter()
        stats = ApplyStats()
        changes = self.index.recompute()
        if self.hp.flag_changes:
            # the policy records do not carry these flags: the index saw no change
            for key in self.hp.flag_changes:
                changes.endpoints |= self.index.policy_matcher.members_of(key)
            self.hp.flag_changes.clear()
            self._combo_cache.clear()
        t1 = time.perf_counter()
        if self._rerender_all:
            changes.policies |= set(self.index.policies)
            changes.profiles |= set(self.index.profiles)
            self._rerender_all = False
        if self._rerender_endpoints:
            changes.endpoints |= {k for k, m in self.index.members.items()
                                  if m.is_endpoint and m.node == self.node_name}
            changes.endpoints |= set(self._programs)
            self._rerender_endpoints = False
        if not self.writer.loaded or len(changes.endpoints) > 1000 or len(changes.sets) > 1000:
            self.rs.invalidate_fingerprint()     # recomputed once, when written
        self._render(changes)
        t2 = time.perf_counter()
        if self._first:
            self._first = False
            if self._try_adopt():
                stats.adopted = stats.skipped = True
        if not stats.adopted:
            ws = self.writer.write(self.rs, over_placeholder=self._over_placeholder,
                                   split_sets=self._late_sets() if self._over_placeholder else (),
                                   on_spawn=on_spawn)
            self._over_placeholder = False
            stats.full = ws.full
            stats.skipped = ws.skipped
            stats.netlink = ws.netlink
            stats.chains_written = ws.chains_written
            stats.chains_deleted = ws.chains_deleted
            stats.elements_added = ws.elements_added
            stats.elements_deleted = ws.elements_deleted
            stats.script_lines = ws.script_lines
        t3 = time.perf_counter()
        stats.index_seconds = t1 - t0
        stats.render_seconds = t2 - t1
        stats.write_seconds = t3 - t2
        stats.seconds = t3 - t0
        stats.endpoints = self.endpoint_count()
        stats.policies = self.policy_count()
        self.last_stats = stats
        return stats

    def table_exists(self) -> bool:
        """Whether table inet calico exists at all (ours, a placeholder or drifted)."""
        return self.runner.table_exists()

    def _late_sets(self) -> list[str]:
        """Over the placeholder: the selector address sets, whose elements may
        follow the table with the verdict maps' (see `NftWriter._write_full`) —
        only while no host endpoint is programmed. Their rules are reached only
        through an endpoint chain, and until the maps are filled no workload
        interface has one; a host endpoint's chains would be live at once."""
        if self.hp.layout.star or any(self.rs.sets[m].elements for m in (HEP_IN, HEP_OUT)
                                      if m in self.rs.sets):
            return []
        return [n for n in self.rs.sets if n.startswith(("s4_", "s6_"))]

    def load_placeholder(self) -> None:
        """For a host without our table: a minimal table that drops every new
        connection from or to a workload interface (established ones pass), the
        state of "no policy yet". The agent loads it so that it can program routes
        while the real table is still being built; the first full load replaces it
        atomically (its content never matches our fingerprint, so it is not adopted)."""
        self.runner.run(placeholder_script(self.settings.interface_prefixes))
        self._over_placeholder = True

    def refresh(self) -> bool:
        """Read the live table back; if it drifted from what we wrote, rewrite it
        whole.  True if a repair was made."""
        if not self.writer.loaded:
            return False
        problems = self.writer.check(self.runner.read_counts())
        if not problems:
            return False
        log.warning("table inet calico drifted (%d differences, e.g. %s); rewriting",
                    len(problems), "; ".join(problems[:3]))
        self.writer.write(self.rs, full=True)
        return True

    def ruleset_text(self) -> str:
        """The full ``nft -f`` script for the current desired table (bench, debugging)."""
        return self.writer.full_script(self.rs)

    # -- adoption --------------------------------------------------------------

    def _try_adopt(self) -> bool:
        try:
            fp = self.runner.read_fingerprint()
        except (NftError, OSError, ValueError):
            return False
        if fp is None or fp != self.rs.fingerprint():
            return False
        self.writer.adopt(self.rs)
        try:
            problems = self.writer.check(self.runner.read_counts())
        except (NftError, OSError, ValueError) as exc:
            problems = [str(exc)]
        if problems:
            log.info("live table has our fingerprint but differs (%s); reloading", problems[:3])
            self.writer.loaded = False
            return False
        log.info("table inet calico already holds the desired policy; not rewriting it")
        return True

    # -- rendering -------------------------------------------------------------

    def _render(self, ch: IndexChanges) -> None:
        rs, index = self.rs, self.index
        if self._base_dirty:
            render_base(self.rs, self.settings, self.hp.layout, self.encap.layout)
            ch.pools = True
            self._base_dirty = False
        self.encap.render(self.rs)
        if ch.pools:
            render_pools(self.rs, self.index.pool_cidrs(), self.settings.nat_outgoing)
        if ch.policies or index.tiers_changed:
            self._combo_cache.clear()
            index.tiers_changed = False
        for name in ch.sets:
            self._render_set(name)
        for name, elems in ch.elements.items():
            if name not in rs.sets or name in ch.sets:
                continue
            for e in elems:
                if index.element_present(name, e):
                    rs.add_element(name, e)
                else:
                    rs.remove_element(name, e)
        for name in ch.cidr_sets:
            if name not in ch.sets:
                self._render_set(name)
        for key in ch.policies:
            pol = index.policies.get(key)
            for direction, rules in (("Ingress", pol.ingress if pol else ()),
                                     ("Egress", pol.egress if pol else ())):
                chain = policy_chain(key, direction)
                if pol is None or direction not in pol.types:
                    self._delete_rule_chain(chain)
                    continue
                lines = self._render_rules(chain, rules, in_profile=False)
                kind, ns, name = key
                rs.set_chain(chain, lines,
                             comment=_chain_comment(f"{kind} {ns + '/' if ns else ''}{name}"))
        for name in ch.profiles:
            prof = index.profiles.get(name)
            for direction, rules in (("Ingress", prof.ingress if prof else ()),
                                     ("Egress", prof.egress if prof else ())):
                chain = profile_chain(name, direction)
                if prof is None:
                    self._delete_rule_chain(chain)
                    continue
                lines = self._render_rules(chain, rules, in_profile=True)
                rs.set_chain(chain, lines, comment=_chain_comment(f"Profile {name}"))
        for ep in ch.endpoints:
            self._render_endpoint(ep)
        if self.hp.finish():
            render_base(self.rs, self.settings, self.hp.layout, self.encap.layout)
        self._collect_garbage()

    def _render_set(self, name: str) -> None:
        """A selector or CIDR set whole, as the index has it (gone: deleted)."""
        index = self.index
        if index.set_exists(name):
            self.rs.ensure_set(name, index.set_type(name))
            self.rs.replace_elements(name, index.set_elements(name))
        else:
            self.rs.delete_set(name)

    #: unused endpoint chains tolerated before they are deleted on their own
    GARBAGE_MAX = 256

    def _collect_garbage(self) -> None:
        """Delete unused endpoint chains when nft runs anyway, or when many piled up.
        (Deleting a chain needs an nft transaction; the elements that referenced it
        are already gone, so keeping it a while is harmless.)"""
        if not self._unused_chains:
            return
        if (not self.writer.loaded or len(self._unused_chains) > self.GARBAGE_MAX
                or not self.writer.fast_possible(self.rs)):
            for c in self._unused_chains:
                self.rs.delete_chain(c)
            self._unused_chains.clear()

    def _render_rules(self, chain: str, rules: Iterable[Any], in_profile: bool) -> list[str]:
        """Render a policy/profile chain's rules; keep its literal sets referenced."""
        ctx = self._ctx
        ctx.collected = set()
        try:
            lines = [line for r in rules for line in render_rule(r, ctx, in_profile=in_profile)]
        except NftStringError as exc:
            # never fail open: a policy or profile we cannot write drops what it sees
            log.error("%s: a rule cannot be written (%s); the chain drops every packet "
                      "that reaches it instead", chain, exc)
            ctx.collected = set()
            lines = ["drop"]
        self._set_chain_literals(chain, ctx.collected)
        return lines

    def _delete_rule_chain(self, chain: str) -> None:
        self.rs.delete_chain(chain)
        self._set_chain_literals(chain, set())

    def _set_chain_literals(self, chain: str, names: set[str]) -> None:
        old = self._chain_literals.get(chain, set())
        if old == names:
            return
        for n in names - old:
            refs = self._literal_refs.get(n, 0)
            if refs == 0:
                decl, elems = self._ctx.literals[n]
                self.rs.ensure_set(n, decl)
                self.rs.replace_elements(n, elems)
            self._literal_refs[n] = refs + 1
        for n in old - names:
            refs = self._literal_refs.get(n, 0) - 1
            if refs <= 0:
                self._literal_refs.pop(n, None)
                self._ctx.literals.pop(n, None)
                self.rs.delete_set(n)
            else:
                self._literal_refs[n] = refs
        if names:
            self._chain_literals[chain] = set(names)
        else:
            self._chain_literals.pop(chain, None)

    def _endpoint_chain(self, direction: str, groups: tuple[TierGroup, ...],
                        prof_names: tuple[str, ...]) -> str:
        ck = (direction, groups, prof_names)
        hit = self._ep_chain_cache.get(ck)
        if hit is None:
            hit = self._ep_chain_cache[ck] = self._endpoint_chain_body(direction, groups, prof_names,
                                                                       self._deny)
            if len(self._ep_chain_cache) > 100_000:
                self._ep_chain_cache.clear()
        name, body = hit
        if name not in self.rs.chains:
            self.rs.set_chain(name, body)
        return name

    _endpoint_chain_body = staticmethod(endpoint_chain_body)

    def _render_endpoint(self, ep: Key) -> None:
        member = self.index.members.get(ep)
        new: _EpProgram | None = None
        if (member is not None and member.iface and member.node == self.node_name
                and not self._refuse_iface(member)):
            index = self.index
            known = index.profiles
            profs = tuple([p for p in member.profiles if p in known])
            ck = (frozenset(index.policy_matcher.matches_of(ep)), profs)
            combo = self._combo_cache.get(ck)
            if combo is None:
                pols = self.hp.normal(index.ordered_policies(ep))
                ing = self._endpoint_chain("Ingress", self.tier_groups(pols, "Ingress"), profs)
                eg = self._endpoint_chain("Egress", self.tier_groups(pols, "Egress"), profs)
                combo = (ing, self.rs.chains[ing].rules, eg, self.rs.chains[eg].rules)
                if len(self._combo_cache) > 100_000:
                    self._combo_cache.clear()
                self._combo_cache[ck] = combo
            else:
                chains = self.rs.chains
                if combo[0] not in chains:      # collected as garbage since
                    self.rs.set_chain(combo[0], combo[1])
                if combo[2] not in chains:
                    self.rs.set_chain(combo[2], combo[3])
            new = _EpProgram(member.key[0], STAR if member.iface == STAR_IFACE else nftstr.ifname(member.iface),
                             combo[0], combo[2])
        if ep[0] == "HostEndpoint":
            self.hp.render_endpoint(ep, self.index.ordered_policies(ep) if new else None)
        old = self._programs.get(ep)
        if old == new:
            return
        if new is not None:
            self._programs[ep] = new
            for c in (new.ingress, new.egress):
                self._chain_refs[c] = self._chain_refs.get(c, 0) + 1
                self._unused_chains.discard(c)
        else:
            self._programs.pop(ep, None)
        slots: set[tuple[str, str]] = set()
        if old is not None:
            for slot in self._slots(old):
                self._iface_claims.get(slot, set()).discard(ep)
                slots.add(slot)
        if new is not None:
            for slot in self._slots(new):
                self._iface_claims.setdefault(slot, set()).add(ep)
                slots.add(slot)
        for slot in slots:
            self._write_slot(slot)
        if old is not None:
            for c in (old.ingress, old.egress):
                n = self._chain_refs.get(c, 0) - 1
                if n <= 0:
                    # deleted lazily (see _collect_garbage): an endpoint going away
                    # then stays an element-only change
                    self._chain_refs.pop(c, None)
                    self._unused_chains.add(c)
                else:
                    self._chain_refs[c] = n

    def tier_groups(self, pols: list[Any], direction: str) -> tuple[TierGroup, ...]:
        """The tiers that apply in `direction` (a policy of theirs governs it) with
        their policies there, in order (`PolicyIndex.tier_groups`)."""
        out = []
        for tier, _order, action, members in self.index.tier_groups(pols):
            keys = tuple(p.key for p in members if direction in p.types)
            if keys:
                out.append((tier, action, keys))
        return tuple(out)

    def _refuse_iface(self, member: Any) -> bool:
        """True (and logged once) if `member` is a workload endpoint whose interface
        does not start with a workload interface prefix: such an interface (eth0,
        say) is the host's, and no endpoint may put it in our maps."""
        if member.key[0] != "WorkloadEndpoint" or member.iface.startswith(self._wl_prefixes):
            if self._refused:
                self._refused.pop(member.key, None)
            return False
        if self._refused.get(member.key) != member.iface:
            self._refused[member.key] = member.iface
            log.error("%s %s: interface %r does not start with an interface prefix (%s); "
                      "not programmed", member.key[0], member.key[2], member.iface,
                      ",".join(self._wl_prefixes))
        return True

    @staticmethod
    def _slots(p: _EpProgram) -> list[tuple[str, str]]:
        if p.kind == "HostEndpoint":
            return [(HEP_IN, p.iface), (HEP_OUT, p.iface)]
        return [(WL_FROM, p.iface), (WL_TO, p.iface)]

    def _write_slot(self, slot: tuple[str, str]) -> None:
        mapname, key = slot     # the interface as _render_endpoint quoted it
        claims = self._iface_claims.get(slot)
        owner = None
        if not claims:
            self._iface_claims.pop(slot, None)
        elif len(claims) > 1:
            log.warning("interface %s is claimed by several endpoints: %s", key, sorted(
                claims, key=lambda k: (k[0], k[1] or "", k[2])))
            owner = min(claims, key=lambda k: (k[0], k[1] or "", k[2]))
        else:
            (owner,) = claims
        prog = self._programs[owner] if owner is not None else None
        # workloads: traffic from the interface is the endpoint's egress;
        # host endpoints: traffic from the interface is the endpoint's ingress
        chain = None if prog is None else (
            prog.egress if mapname == WL_FROM or mapname == HEP_OUT else prog.ingress)
        if mapname == HEP_IN or mapname == HEP_OUT:
            self.hp.write_slot(mapname, key, owner, chain)
        elif chain is None:
            self.rs.remove_element(mapname, key)
        else:
            self.rs.add_element(mapname, key, f"jump {chain}")
