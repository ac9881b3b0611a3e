"""Policy explain: the verdict for one concrete flow, and the exact path to it.

What it owns: given Calico v3 documents (what the agent's syncer would feed the
policy dataplane), a source and a destination (an endpoint or a bare IP), a
protocol and a port, it answers "allowed or denied, and why" the way the agent's
nft ruleset decides it.

How it stays the agent's answer, not a second opinion: it builds the agent's own
`PolicyIndex` (one per node the flow touches, that node's endpoints local), so the
policies that apply to an endpoint and their order come from the agent's policy
selector matcher, and the set contents rule selectors compile to (``s4_``/``c4_``/
``n4_`` sets) from the agent's `SelectorSets`. Rules are the agent's `CompiledRule`
records (`records.policy_from_doc`/`profile_from_doc`, so an uncompilable policy
denies here too) and are rendered with `rules.render_rule` (a rule the agent writes
no nft line for never matches here either; the lines are reported). What the agent
has no function for is evaluating a compiled rule against one concrete packet:
`rule_matches` does that, term by term as `render_rule` emits the nft match, with
set membership read from the index. The walk over an endpoint chain
(`_endpoint_chain`) follows `chains.endpoint_chain_body`, tier by tier as
`PolicyDataplane.tier_groups` groups them: within a tier the policies in order
(Allow returns allowed, Deny drops, Pass skips to the next tier, no match goes on;
no policy of the tier decided: its defaultAction, Deny being the end-of-tier drop),
then the profiles in order (Pass or no match: next), then drop.

The flow's path follows the base chains (`base_chains.render_base`): a workload's
egress on its node, then the destination workload's ingress on its node; traffic
to a host endpoint's address is checked against the failsafe inbound ports and
then the host endpoint's ingress (from a local workload: the endpoint-to-host
action first); traffic from a host endpoint's address the same way outbound.
Tiers are reported as the agent orders them (``tiers`` of the answer; each step
names the tier of every policy evaluated and how each tier ended).
Not modelled: pre-DNAT, untracked and apply-on-forward host endpoint policy (named
in the result when one selects an endpoint of the flow), Felix configuration
set on the host itself (environment, felix.cfg: the settings come from the
FelixConfigurations as the agent resolves them), conntrack (the first packet of a
connection is explained).
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from . import hostprotect
from .index import PolicyIndex
from .nftstr import NftStringError
from .chains import DENY_VERDICTS, endpoint_chain_body, policy_chain, profile_chain
from .records import DENY_ALL, ENDPOINT_KINDS, Key, Member, policy_sort_key
from .rules import (
    _PORT_HEADERS,
    CompiledRule,
    SideMatch,
    _rule_families,
    named_port_hash,
    render_rule,
    selector_hash,
)
from .settings import FelixSettings

log = logging.getLogger(__name__)

__all__ = ["Packet", "Cluster", "rule_matches", "explain", "find_endpoints", "endpoint_summary",
           "policy_selection", "tier_order", "PROTOCOLS", "TIER"]

#: Calico's name for the tier of untiered policy
TIER = "default"
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "sctp": 132, "icmpv6": 58}
_ICMP = {4: 1, 6: 58}


@dataclass(frozen=True)
class Packet:
    """The first packet of a flow. `sport` None: an ephemeral source port (a rule
    naming source ports does not match it, one excluding source ports does)."""

    src: str
    dst: str
    protocol: int
    dport: int | None = None
    sport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.src).version


class _RenderCtx:
    """What `render_rule` asks of its context, answered from the index (as the
    dataplane's own context does); long literal lists get a placeholder name."""

    def __init__(self, index: PolicyIndex, log_prefix: str, deny: str = "drop") -> None:
        self.index = index
        self.log_prefix = log_prefix
        self.deny = deny        # the Deny verdict the node writes (nftablesFilterDenyAction)

    def has_set(self, name: str) -> bool:
        return self.index.set_exists(name)

    def literal_set(self, decl: str, elements: list[str]) -> str:
        return "r_literal"


# ---------------------------------------------------------------- one rule


def _in_set(index: PolicyIndex, name: str, addr: str) -> bool:
    if name[0] == "c":
        ip = ipaddress.ip_address(addr)
        return any(ip in ipaddress.ip_network(n) for n in index.set_elements(name))
    return index.element_present(name, addr)


def _existing(index: PolicyIndex, sel: Any, fam: int) -> list[str]:
    h = selector_hash(sel)
    return [n for n in (f"s{fam}_{h}", f"c{fam}_{h}") if index.set_exists(n)]


def _side_matches(rule: CompiledRule, side: SideMatch, which: str, fam: int | None,
                  pkt: Packet, index: PolicyIndex) -> bool:
    """One side's terms, each as `rules._side_alternatives` renders it for family
    `fam` (None: a family-agnostic rule, whose sides only carry ports)."""
    addr = str(ipaddress.ip_address(pkt.src if which == "src" else pkt.dst))
    ip = ipaddress.ip_address(addr)
    if fam is not None:
        if side.nets:
            nets = [n for n in side.nets if n.version == fam]
            if not nets or not any(ip in n for n in nets):
                return False
        if any(ip in n for n in side.not_nets if n.version == fam):
            return False
        if side.selector is not None:
            names = _existing(index, side.selector, fam)
            if not names or not any(_in_set(index, n, addr) for n in names):
                return False
        if side.not_selector is not None:
            if any(_in_set(index, n, addr) for n in _existing(index, side.not_selector, fam)):
                return False
    if _PORT_HEADERS.get(rule.protocol or 0) is None:
        return True          # ports are only matched under a protocol with ports
    port = pkt.sport if which == "src" else pkt.dport
    if side.ports or side.named_ports:
        named = [f"n{fam}_{named_port_hash((str(side.port_selector), rule.protocol, n))}"
                 for n in side.named_ports] if fam is not None else []
        named = [n for n in named if index.set_exists(n)]
        if not side.ports and not named:
            return False     # only named ports, none resolves in this family
        if port is None:
            return False
        if not (any(lo <= port <= hi for lo, hi in side.ports)
                or any(index.element_present(n, f"{addr} . {port}") for n in named)):
            return False
    if port is not None:
        if any(lo <= port <= hi for lo, hi in side.not_ports):
            return False
        if fam is not None:
            for name in side.not_named_ports:
                n = f"n{fam}_{named_port_hash((str(side.port_selector), rule.protocol, name))}"
                if index.set_exists(n) and index.element_present(n, f"{addr} . {port}"):
                    return False
    return True


def _icmp_matches(rule: CompiledRule, fam: int | None, pkt: Packet) -> bool:
    """`rules._icmp_groups`' terms: an ``icmp``/``icmpv6`` header match (which nft
    only applies to packets of that protocol, for ``!=`` too)."""
    if rule.icmp is None and rule.not_icmp is None:
        return True
    want = 58 if (fam == 6 or rule.protocol == 58) else 1
    if pkt.protocol != want:
        return False
    if rule.icmp is not None:
        t, c = rule.icmp
        if pkt.icmp_type != t or (c is not None and pkt.icmp_code != c):
            return False
    if rule.not_icmp is not None:
        t, c = rule.not_icmp
        if c is None and pkt.icmp_type == t:
            return False
        if c is not None and pkt.icmp_type == t and pkt.icmp_code == c:
            return False
    return True


def rule_matches(rule: CompiledRule, pkt: Packet, index: PolicyIndex) -> bool:
    """Whether `rule`'s nft lines (as `render_rule` writes them against `index`)
    match `pkt`. A rule the agent writes no line for (an Allow/Pass with fields it
    cannot enforce, an unknown action, a side with no member) matches nothing."""
    fam = pkt.family
    fams = _rule_families(rule)
    if fams != [None] and fam not in fams:
        return False
    rfam = None if fams == [None] else fam
    if rule.protocol is not None and pkt.protocol != rule.protocol:
        return False
    if rule.not_protocol is not None and pkt.protocol == rule.not_protocol:
        return False
    if not _icmp_matches(rule, rfam, pkt):
        return False
    for which, side in (("src", rule.src), ("dst", rule.dst)):
        if not _side_matches(rule, side, which, rfam, pkt, index):
            return False
    return True


# ---------------------------------------------------------------- one endpoint chain


def _rule_entries(rules: tuple[CompiledRule, ...], raw: list[Any] | None, pkt: Packet,
                  ctx: _RenderCtx, in_profile: bool) -> tuple[list[dict[str, Any]], str | None]:
    """Each rule with its nft lines and whether it matched, up to the first that
    decides; and that decision (Allow, Deny, Pass; None: no rule decided). A chain
    the agent cannot write drops everything (`PolicyDataplane._render_rules`)."""
    try:
        rendered = [render_rule(r, ctx, in_profile=in_profile) for r in rules]
    except NftStringError as exc:
        return [{"index": None, "rule": None, "nft": [ctx.deny], "position": 0, "matched": True,
                 "action": "Deny", "note": f"a rule cannot be written ({exc}): the chain drops"}], "Deny"
    same = raw is not None and len(raw) == len(rules) and rules is not DENY_ALL
    out: list[dict[str, Any]] = []
    position = 0        # of the rule's first line in the chain (the chain is all lines in order)
    for i, (r, lines) in enumerate(zip(rules, rendered)):
        matched = bool(lines) and rule_matches(r, pkt, ctx.index)
        ent: dict[str, Any] = {"index": i, "rule": raw[i] if same else {"action": r.action},
                               "nft": lines, "position": position, "matched": matched,
                               "action": r.action}
        position += len(lines)
        if not same:
            ent["note"] = "the rules cannot be compiled: the agent denies instead"
        if not lines:
            ent["note"] = "not programmed (no nft line): never matches"
        out.append(ent)
        if matched and r.action in ("Allow", "Deny", "Pass"):
            return out, r.action
    return out, None


def _where(chain: str, ent: dict[str, Any]) -> dict[str, Any]:
    """Where the deciding rule sits in the ruleset: its chain and the positions of its
    lines there (one rule may be several nft lines; any of them can decide)."""
    return {"chain": chain, "positions": list(range(ent["position"], ent["position"] + len(ent["nft"])))}


def _raw_rules(doc: Mapping[str, Any] | None, direction: str) -> list[Any] | None:
    spec = (doc or {}).get("spec") or {}
    rules = spec.get("ingress" if direction == "Ingress" else "egress")
    return list(rules) if isinstance(rules, list) else []


def _key_text(key: Key) -> str:
    kind, ns, name = key
    return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"


class Cluster:
    """The documents the agent would be fed, and one `PolicyIndex` per node asked for."""

    def __init__(self, docs: Iterable[Mapping[str, Any]], settings: FelixSettings | None = None) -> None:
        self.docs: dict[tuple[str, str | None, str], Mapping[str, Any]] = {}
        for d in docs:
            meta = d.get("metadata") if isinstance(d, Mapping) else None
            kind, name = (d.get("kind"), meta.get("name")) if isinstance(meta, Mapping) else (None, None)
            if not isinstance(kind, str) or not isinstance(name, str):
                log.warning("skipping a document without kind or name")
                continue
            ns = None if kind in ("GlobalNetworkPolicy", "HostEndpoint", "GlobalNetworkSet",
                                  "Profile", "IPPool", "FelixConfiguration", "Tier") else (meta.get("namespace") or "default")
            self.docs[(kind, ns, name)] = d
        self._settings = settings
        self._node_settings: dict[str, FelixSettings] = {}
        self._indexes: dict[str, PolicyIndex] = {}

    def settings(self, node: str | None) -> FelixSettings:
        """The Felix settings of `node`: those given, else its FelixConfigurations
        (``node.<name>`` over ``default``) as the agent resolves them; the host's
        environment and config file cannot be seen from here."""
        if self._settings is not None:
            return self._settings
        node = node or ""
        s = self._node_settings.get(node)
        if s is None:
            from calico_net.agent.config import Config
            from calico_net.agent.daemon import felix_settings

            cfg = Config(node, env={}, config_file="")
            for name in ("default", f"node.{node}"):
                doc = self.docs.get(("FelixConfiguration", None, name))
                if doc is not None:
                    cfg.set_felix_configuration(name, doc.get("spec") or {})
            try:
                s = felix_settings(cfg, FelixSettings)
            except ValueError as exc:
                log.error("Felix settings of node %s: %s; the defaults are used", node, exc)
                s = FelixSettings()
            self._node_settings[node] = s
        return s

    def index(self, node: str) -> PolicyIndex:
        idx = self._indexes.get(node)
        if idx is None:
            idx = self._indexes[node] = PolicyIndex(node)
            for (kind, ns, name), doc in self.docs.items():
                if kind == "HostEndpoint":
                    doc = hostprotect.star_endpoint(doc)
                try:
                    idx.update(kind, name, ns, doc)
                except ValueError:
                    continue        # a kind the policy index does not take
            idx.recompute()
        return idx

    def members(self) -> dict[Key, Member]:
        """Every endpoint as the agent parses it (any node's index holds them all)."""
        return self.index("").members

    def flags(self, key: Key) -> int:
        return hostprotect.policy_flags(self.docs.get(key))

    def policy_doc(self, key: Key) -> Mapping[str, Any] | None:
        return self.docs.get(key)

    def profile_doc(self, name: str) -> Mapping[str, Any] | None:
        return self.docs.get(("Profile", None, name))


def policy_selection(cl: Cluster, src: Member | None, dst: Member | None) -> list[dict[str, Any]]:
    """Every policy in Calico's order, and whether its selector picks the source
    and the destination (by the agent's policy selector matcher on each one's node)."""
    def picked(m: Member | None) -> set[Any]:
        if m is None:
            return set()
        return set(cl.index(m.node or "").policy_matcher.matches_of(m.key))

    on_src, on_dst = picked(src), picked(dst)
    out = []
    index = cl.index("")
    ordered = [(tier, p) for tier, _order, _action, pols in index.tier_groups(
        sorted(index.policies.values(), key=policy_sort_key)) for p in pols]
    for tier, p in ordered:
        kind, ns, name = p.key
        out.append({"kind": kind, "namespace": ns, "name": name, "tier": tier, "order": p.order,
                    "selector": str(p.applies), "types": list(p.types),
                    "selectsSource": p.key in on_src, "selectsDestination": p.key in on_dst})
    return out


def tier_order(cl: Cluster) -> list[dict[str, Any]]:
    """Every tier with a policy or a Tier document, in the agent's order."""
    index = cl.index("")
    names = set(index.tiers) | set(index.policy_tiers.values())
    out = []
    for name in sorted(names, key=lambda n: index.tier_info(n)[0]):
        _sort, order, action = index.tier_info(name)
        out.append({"name": name, "order": order, "defaultAction": action,
                    "exists": name in index.tiers or order is not None})
    return out


def _endpoint_chain(cl: Cluster, member: Member, direction: str, pkt: Packet) -> dict[str, Any]:
    """The walk through one endpoint chain (see the module docstring)."""
    index = cl.index(member.node or "")
    step0: dict[str, Any] = {"endpoint": _key_text(member.key), "node": member.node,
                             "direction": direction, "tiers": [], "policies": [], "profiles": []}
    prefixes = cl.settings(member.node).interface_prefixes
    if member.iface is None or (member.kind == "WorkloadEndpoint" and not member.iface.startswith(prefixes)):
        # `PolicyDataplane._render_endpoint` leaves such an endpoint out of the maps:
        # a workload's interface is then unknown (dropped), a host endpoint has no policy
        if member.kind == "WorkloadEndpoint":
            step0.update(verdict="Deny", by="the endpoint is not programmed (no interface name, or one "
                                            "outside the interface prefixes): its traffic is dropped")
        else:
            step0.update(verdict="Allow", by="the host endpoint is not programmed (no usable interface "
                                             "name): no host endpoint policy applies")
        return step0
    settings = cl.settings(member.node)
    deny = DENY_VERDICTS[settings.filter_deny_action]
    ctx = _RenderCtx(index, settings.log_prefix, deny)
    ordered = index.ordered_policies(member.key)
    skipped = [_key_text(p.key) for p in ordered if cl.flags(p.key) & (hostprotect.PRE_DNAT
                                                                       | hostprotect.DO_NOT_TRACK)]
    pols = [p for p in ordered if not cl.flags(p.key) & (hostprotect.PRE_DNAT | hostprotect.DO_NOT_TRACK)]
    step = step0
    if skipped:
        step["notEvaluated"] = skipped
    # the endpoint chain as the dataplane writes it: its name and where its own drops
    # sit (the end of each Deny tier, the last line), for the live comparison
    groups = tuple((t, a, tuple(p.key for p in ms if direction in p.types))
                   for t, _o, a, ms in index.tier_groups(pols))
    groups = tuple(g for g in groups if g[2])
    ep_chain, body = endpoint_chain_body(direction, groups, tuple(index.profiles_for(member.key)), deny)
    tier_drops = iter([i for i, line in enumerate(body) if line.endswith(f"== 0 {deny}")])
    step["chain"] = ep_chain
    decided: dict[str, Any] | None = None
    for tier, order, action, members in index.tier_groups(pols):
        members = [p for p in members if direction in p.types]
        if not members:
            continue        # the tier does not apply in this direction
        drop_at = next(tier_drops, None) if action != "Pass" else None
        tstep: dict[str, Any] = {"name": tier, "order": order, "defaultAction": action}
        step["tiers"].append(tstep)
        passed = False
        for p in members:
            entries, act = _rule_entries(p.ingress if direction == "Ingress" else p.egress,
                                         _raw_rules(cl.policy_doc(p.key), direction), pkt, ctx, False)
            kind, ns, name = p.key
            chain = policy_chain(p.key, direction)
            step["policies"].append({"kind": kind, "namespace": ns, "name": name, "tier": tier,
                                     "order": p.order, "chain": chain, "rules": entries,
                                     "result": act or "no match"})
            if act in ("Allow", "Deny"):
                where = "" if tier == TIER else f" (tier {tier})"
                decided = {"verdict": act, "by": f"{_key_text(p.key)} rule {entries[-1]['index']}{where}",
                           "rule": _where(chain, entries[-1])}
                tstep["result"] = act
                break
            if act == "Pass":
                passed = True
                step["pass"] = _key_text(p.key)
                tstep["result"] = f"Pass ({_key_text(p.key)})"
                break
        if decided is not None:
            break
        if not passed:
            tstep["result"] = f"end of tier: {action}"
            if action != "Pass":
                decided = {"verdict": "Deny", "by": f"end of tier {tier}: its policies applied, none "
                                                    "allowed or passed (defaultAction Deny)",
                           "rule": {"chain": ep_chain, "positions": [drop_at]}}
                break
    if decided is None:
        for name in index.profiles_for(member.key):
            prof = index.profiles[name]
            entries, act = _rule_entries(prof.ingress if direction == "Ingress" else prof.egress,
                                         _raw_rules(cl.profile_doc(name), direction), pkt, ctx, True)
            chain = profile_chain(name, direction)
            step["profiles"].append({"name": name, "chain": chain, "rules": entries,
                                     "result": act or "no match"})
            if act in ("Allow", "Deny"):
                decided = {"verdict": act, "by": f"Profile {name} rule {entries[-1]['index']}",
                           "rule": _where(chain, entries[-1])}
                break
    if decided is None:
        decided = {"verdict": "Deny", "by": "no policy or profile allowed it (default deny)",
                   "rule": {"chain": ep_chain, "positions": [len(body) - 1]}}
    step.update(decided)
    return step


# ---------------------------------------------------------------- the flow


def _failsafe(entries: list[Any], pkt: Packet, addr: str) -> bool:
    """Whether (protocol, port[, net]) failsafe entries let `pkt` through (the
    port is the destination port of the first packet)."""
    names = {6: "tcp", 17: "udp", 132: "sctp"}
    proto = names.get(pkt.protocol)
    for e in entries:
        if proto == e[0] and pkt.dport == e[1]:
            if len(e) < 3 or ipaddress.ip_address(addr) in ipaddress.ip_network(e[2]):
                return True
    return False


def explain(cl: Cluster, src: Member | None, dst: Member | None, pkt: Packet) -> dict[str, Any]:
    """The verdict for `pkt` from `src` to `dst` (None: an address no endpoint
    has) and each step of the path that decided it."""
    steps: list[dict[str, Any]] = []

    def done(verdict: str, by: str) -> dict[str, Any]:
        # "tier": the tier of untiered policy, kept for callers that read one tier
        return {"verdict": verdict, "decidedBy": by, "tier": TIER, "tiers": tier_order(cl),
                "policies": policy_selection(cl, src, dst), "steps": steps}

    if src is not None and src.kind == "WorkloadEndpoint":
        step = _endpoint_chain(cl, src, "Egress", pkt)
        steps.append(step)
        if step["verdict"] != "Allow":
            return done("Deny", f"egress of {step['endpoint']}: {step['by']}")
        if dst is not None and dst.kind == "HostEndpoint" and dst.node == src.node:
            act = cl.settings(src.node).default_endpoint_to_host_action
            steps.append({"endpointToHost": act})
            if act == "Drop":
                return done("Deny", "workload to its own host: defaultEndpointToHostAction Drop")
            if act == "Accept":
                return done("Allow", "workload to its own host: defaultEndpointToHostAction Accept")
    elif src is not None and src.kind == "HostEndpoint":
        if _failsafe(cl.settings(src.node).failsafe_outbound, pkt, pkt.dst):
            steps.append({"failsafe": "outbound"})
        else:
            step = _endpoint_chain(cl, src, "Egress", pkt)
            steps.append(step)
            if step["verdict"] != "Allow":
                return done("Deny", f"egress of {step['endpoint']}: {step['by']}")
    if dst is not None and dst.kind == "WorkloadEndpoint":
        step = _endpoint_chain(cl, dst, "Ingress", pkt)
        steps.append(step)
        if step["verdict"] != "Allow":
            return done("Deny", f"ingress of {step['endpoint']}: {step['by']}")
        return done("Allow", f"ingress of {step['endpoint']}: {step['by']}")
    if dst is not None and dst.kind == "HostEndpoint":
        if _failsafe(cl.settings(dst.node).failsafe_inbound, pkt, pkt.src):
            steps.append({"failsafe": "inbound"})
            return done("Allow", "failsafe inbound port")
        step = _endpoint_chain(cl, dst, "Ingress", pkt)
        steps.append(step)
        return done(step["verdict"], f"ingress of {step['endpoint']}: {step['by']}")
    if steps:
        last = steps[-1]
        return done("Allow", f"egress of {last['endpoint']}: {last['by']}" if "endpoint" in last
                    else "no policy on the destination")
    return done("Allow", "neither side is an endpoint: no Calico policy applies")


def find_endpoints(cl: Cluster, ref: str, namespace: str | None = None) -> list[Member]:
    """Endpoints `ref` names: a WorkloadEndpoint (in `namespace`, or any), a
    HostEndpoint, or an IP address an endpoint has."""
    members = [m for m in cl.members().values() if m.kind in ENDPOINT_KINDS]
    try:
        addr = str(ipaddress.ip_address(ref))
    except ValueError:
        addr = None
    if addr is not None:
        found = [m for m in members if addr in m.addrs4 or addr in m.addrs6]
        # a workload owns its address; a host endpoint's expectedIPs are the host's
        wl = [m for m in found if m.kind == "WorkloadEndpoint"]
        return wl or found
    found = [m for m in members if m.name == ref and (
        m.kind == "HostEndpoint" or namespace is None or m.namespace == namespace)]
    return sorted(found, key=lambda m: (m.kind != "WorkloadEndpoint", m.namespace or "", m.name))


def endpoint_summary(m: Member | None, ip: str) -> dict[str, Any]:
    if m is None:
        return {"ip": ip}
    return {"kind": m.kind, "namespace": m.namespace, "name": m.name, "node": m.node, "ip": ip,
            "profiles": list(m.profiles)}
