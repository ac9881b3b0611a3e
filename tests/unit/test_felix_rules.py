"""Unit tests of Calico rule → nft rendering (calico_net.agent.felix.rules)."""
from __future__ import annotations

import pytest

from calico_net.agent.felix.records import effective_types
from calico_net.agent.felix.rules import (
    compile_rule,
    named_port_hash,
    policy_applies_selector,
    render_rule,
    selector_hash,
)
from calico_net.model.selector import parse_selector

ALLOW = "meta mark set meta mark | 0x10000 return"
PASS = "meta mark set meta mark | 0x20000 return"


class Ctx:
    log_prefix = "calico-packet"

    def __init__(self, nets=(), v6=True):
        # (selector, family) pairs that have a CIDR set; v6: IPv6 sets exist
        self.extra = {f"c{f}_{selector_hash(parse_selector(s))}" for s, f in nets}
        self.v6 = v6

    def has_set(self, name):
        if name[0] in "sn":
            return name[1] == "4" or self.v6
        return name in self.extra

    def literal_set(self, decl, elements):
        self.literals = getattr(self, "literals", {})
        name = f"r_{len(self.literals)}"
        self.literals[name] = (decl, list(elements))
        return name


def h(text):
    return selector_hash(parse_selector(text))


def r(rule, ns=None, ctx=None, in_profile=False):
    return render_rule(compile_rule(rule, ns), ctx or Ctx(), in_profile)


def test_actions():
    assert r({"action": "Allow"}) == [ALLOW]
    assert r({"action": "Deny"}) == ["drop"]
    assert r({"action": "Pass"}) == [PASS]
    assert r({"action": "Pass"}, in_profile=True) == ["return"]
    assert r({"action": "Log"}) == ['log prefix "calico-packet: " level info']


def test_protocol_and_ports():
    # short lists inline (one line per positive member, != chains for negatives):
    # no anonymous sets, see INLINE_LIST_MAX
    assert r({"action": "Allow", "protocol": "TCP", "destination": {"ports": [80, "8000:8080"]}}) == \
        [f"meta l4proto 6 tcp dport 80 {ALLOW}", f"meta l4proto 6 tcp dport 8000-8080 {ALLOW}"]
    assert r({"action": "Deny", "protocol": "UDP", "source": {"ports": [53]}, "destination": {"notPorts": [1, 2]}}) == \
        ["meta l4proto 17 udp sport 53 udp dport != 1-2 drop"]     # adjacent ports merged
    assert r({"action": "Deny", "protocol": "UDP", "destination": {"notPorts": [1, 3]}}) == \
        ["meta l4proto 17 udp dport != 1 udp dport != 3 drop"]
    assert r({"action": "Deny", "notProtocol": "TCP"}) == ["meta l4proto != 6 drop"]
    assert r({"action": "Allow", "protocol": 132, "destination": {"ports": [9]}}) == \
        [f"meta l4proto 132 sctp dport 9 {ALLOW}"]


def test_long_lists_become_named_literal_sets():
    ctx = Ctx()
    ports = [10, 20, 30, 40, 50, "60:70", 65]
    lines = r({"action": "Allow", "protocol": "TCP", "destination": {"ports": ports,
               "notNets": [f"198.18.{2 * i}.0/24" for i in range(5)] + ["198.18.0.0/25"]}}, ctx=ctx)
    # v4: both lists as sets; v6: the v4 notNets do not restrict it (as Calico)
    assert lines == [f"meta l4proto 6 ip daddr != @r_0 tcp dport @r_1 {ALLOW}",
                     f"meta nfproto ipv6 meta l4proto 6 tcp dport @r_2 {ALLOW}"]
    assert ctx.literals["r_0"] == ("type ipv4_addr; flags interval",   # collapsed, no overlap
                                   [f"198.18.{2 * i}.0/24" for i in range(5)])
    assert ctx.literals["r_1"] == ("type inet_service; flags interval",
                                   ["10", "20", "30", "40", "50", "60-70"])


def test_nets_split_by_family():
    lines = r({"action": "Allow", "source": {"nets": ["198.18.0.0/24", "2001:db8::/64"]},
               "destination": {"notNets": ["198.19.0.0/16"]}})
    assert lines == [f"ip saddr 198.18.0.0/24 ip daddr != 198.19.0.0/16 {ALLOW}",
                     f"ip6 saddr 2001:db8::/64 {ALLOW}"]
    assert r({"action": "Deny", "source": {"nets": ["198.18.0.0/24", "198.18.9.0/24"]}}) == [
        "ip saddr 198.18.0.0/24 drop", "ip saddr 198.18.9.0/24 drop"]
    # ipVersion restricts; a v6-only nets list can never match v4
    assert r({"action": "Allow", "ipVersion": 4}) == [f"meta nfproto ipv4 {ALLOW}"]
    assert r({"action": "Allow", "ipVersion": 4, "source": {"nets": ["2001:db8::/64"]}}) == []


def test_selectors_become_shared_sets():
    hs = h("role == 'fe'")
    lines = r({"action": "Allow", "source": {"selector": "role == 'fe'"}})
    assert lines == [f"ip saddr @s4_{hs} {ALLOW}", f"ip6 saddr @s6_{hs} {ALLOW}"]
    # same selector written differently → same set
    assert r({"action": "Allow", "source": {"selector": "role=='fe'"}}) == lines
    # with a CIDR companion set: OR as two lines
    ctx = Ctx(nets=[("role == 'fe'", 4)])
    assert r({"action": "Deny", "source": {"selector": "role == 'fe'"}}, ctx=ctx) == [
        f"ip saddr @s4_{hs} drop", f"ip saddr @c4_{hs} drop", f"ip6 saddr @s6_{hs} drop"]
    # notSelector: AND of both negations
    assert r({"action": "Deny", "destination": {"notSelector": "role == 'fe'"}}, ctx=ctx)[0] == \
        f"ip daddr != @s4_{hs} ip daddr != @c4_{hs} drop"


def test_namespaced_rule_selector_is_scoped():
    sel = "role == 'fe' && projectcalico.org/namespace == 'ns1'"
    assert r({"action": "Allow", "source": {"selector": "role == 'fe'"}}, ns="ns1")[0] == \
        f"ip saddr @s4_{h(sel)} {ALLOW}"
    rule = compile_rule({"action": "Allow", "source": {"namespaceSelector": "team == 'a'"}}, "ns1")
    assert str(rule.src.selector) == 'pcns.team == "a"'
    # a notSelector alone: the side is the policy's namespace minus the notSelector's
    # endpoints, as Calico builds it (not "everything but those in ns1", which would
    # let in other namespaces and addresses that are no endpoint)
    rule = compile_rule({"action": "Allow", "source": {"notSelector": "x == '1'"}}, "ns1")
    assert str(rule.src.selector) == 'projectcalico.org/namespace == "ns1"'
    assert str(rule.src.not_selector) == 'x == "1"'
    with_ns = compile_rule({"action": "Allow", "source": {"namespaceSelector": "team == 'a'",
                                                          "notSelector": "x == '1'"}}, "ns1")
    assert str(with_ns.src.selector) == 'pcns.team == "a"' and str(with_ns.src.not_selector) == 'x == "1"'
    glob = compile_rule({"action": "Allow", "source": {"notSelector": "x == '1'"}}, None)
    assert glob.src.selector is None and str(glob.src.not_selector) == 'x == "1"'


def test_absent_ipv6_sets_drop_the_ipv6_variants():
    hs = h("role == 'fe'")
    ctx = Ctx(v6=False)
    assert r({"action": "Allow", "source": {"selector": "role == 'fe'"}}, ctx=ctx) == \
        [f"ip saddr @s4_{hs} {ALLOW}"]
    # a notSelector with no IPv6 members excludes nobody in IPv6
    assert r({"action": "Deny", "source": {"notSelector": "role == 'fe'"}}, ctx=ctx) == \
        [f"ip saddr != @s4_{hs} drop", "meta nfproto ipv6 drop"]


def test_named_ports():
    rule = {"action": "Allow", "protocol": "TCP",
            "destination": {"selector": "app == 'db'", "ports": ["pg", 80]}}
    c = compile_rule(rule)
    (key,) = list(c.named_port_keys())
    assert key == ('app == "db"', 6, "pg")
    nh = named_port_hash(key)
    lines = r(rule)
    hs = h("app == 'db'")
    assert f"meta l4proto 6 ip daddr @s4_{hs} tcp dport 80 {ALLOW}" in lines
    assert f"meta l4proto 6 ip daddr @s4_{hs} ip daddr . tcp dport @n4_{nh} {ALLOW}" in lines
    assert f"meta l4proto 6 ip6 daddr @s6_{hs} ip6 daddr . tcp dport @n6_{nh} {ALLOW}" in lines
    # without a selector, named ports resolve against all endpoints (namespace-scoped in NPs)
    c = compile_rule({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["web"]}}, "ns1")
    assert list(c.named_port_keys()) == [('projectcalico.org/namespace == "ns1"', 6, "web")]


def test_icmp():
    assert r({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}}) == \
        [f"meta l4proto 1 icmp type 8 icmp code 0 {ALLOW}"]
    assert r({"action": "Allow", "protocol": "ICMPv6", "icmp": {"type": 128}}) == \
        [f"meta l4proto 58 icmpv6 type 128 {ALLOW}"]
    assert r({"action": "Deny", "protocol": "ICMP", "notICMP": {"type": 3, "code": 1}}) == \
        ["meta l4proto 1 icmp type != 3 drop", "meta l4proto 1 icmp type 3 icmp code != 1 drop"]
    # protocol ICMP without a type is family-agnostic
    assert r({"action": "Deny", "protocol": "ICMP"}) == ["meta l4proto 1 drop"]


def test_unsupported_matches_never_widen_allow():
    rule = {"action": "Allow", "http": {"methods": ["GET"]}}
    assert r(rule) == []
    assert r({"action": "Deny", "source": {"services": {"name": "x", "namespace": "y"}}}) == ["drop"]


def sa_side(ent, ns=None):
    sel = compile_rule({"action": "Allow", "source": ent}, ns).src.selector
    return None if sel is None else str(sel)


def canon(text):
    return str(parse_selector(text))


def test_rule_service_accounts_become_selectors_as_calico_builds_them():
    sa = "projectcalico.org/serviceaccount"
    # names: the implicit service-account label; selector: the pcsa.-prefixed labels
    assert sa_side({"serviceAccounts": {"names": ["a", "b"]}}) == canon(f"{sa} in {{'a', 'b'}}")
    assert sa_side({"serviceAccounts": {"selector": "team == 'ci' || !has(x)"}}) == \
        canon("pcsa.team == 'ci' || !has(pcsa.x)")
    # both: ANDed, then ANDed with the rule's selector and scoped to the policy's namespace
    assert sa_side({"serviceAccounts": {"names": ["a"], "selector": "team == 'ci'"},
                    "selector": "app == 'w'"}, "ns1") == \
        canon(f"pcsa.team == 'ci' && {sa} in {{'a'}} && app == 'w' && projectcalico.org/namespace == 'ns1'")
    # a namespaceSelector replaces the namespace scoping, as for a plain selector
    assert sa_side({"serviceAccounts": {"names": ["a"]},
                    "namespaceSelector": "projectcalico.org/name == 'ns2'"}, "ns1") == \
        canon(f"{sa} in {{'a'}} && pcns.projectcalico.org/name == 'ns2'")
    # selector all(): every endpoint (Calico's prefixing keeps all()), in the namespace
    assert sa_side({"serviceAccounts": {"selector": "all()"}}) == "all()"
    assert sa_side({"serviceAccounts": {"selector": "all()"}}, "ns1") == \
        canon("projectcalico.org/namespace == 'ns1'")
    # an empty match adds nothing (Calico's empty selector)
    assert sa_side({"serviceAccounts": {}}) is None
    assert sa_side({"serviceAccounts": {}, "nets": ["198.18.0.0/16"]}, "ns1") is None
    # rendered as any selector: the addresses of the matching endpoints, per family
    rule = {"action": "Allow", "source": {"serviceAccounts": {"names": ["a"]}}}
    h_sa = h(f"{sa} in {{'a'}}")
    assert r(rule) == [f"ip saddr @s4_{h_sa} {ALLOW}", f"ip6 saddr @s6_{h_sa} {ALLOW}"]
    # named ports resolve against the side's whole selector, service accounts included
    rule = {"action": "Allow", "protocol": "TCP",
            "destination": {"serviceAccounts": {"names": ["a"]}, "ports": ["http"]}}
    assert str(compile_rule(rule).dst.port_selector) == canon(f"{sa} in {{'a'}}")


def test_service_account_selector_narrows_the_policy_as_calico_does():
    sa = "projectcalico.org/serviceaccount"
    gnp = "GlobalNetworkPolicy"
    # global: ANDed over pcsa. labels, and every all() becomes "has a service account"
    assert str(policy_applies_selector(gnp, None, {"serviceAccountSelector": "role == 'x'"})) == \
        canon("pcsa.role == 'x'")
    assert str(policy_applies_selector(gnp, None, {"selector": "all()",
                                                   "serviceAccountSelector": "role == 'x'"})) == \
        canon(f"has({sa}) && pcsa.role == 'x'")
    assert str(policy_applies_selector(gnp, None, {"serviceAccountSelector": "all()"})) == \
        canon(f"has({sa})")
    assert str(policy_applies_selector(gnp, None, {
        "selector": "app == 'w'", "namespaceSelector": "all()",
        "serviceAccountSelector": "!has(role)"})) == \
        canon("app == 'w' && has(projectcalico.org/namespace) && !has(pcsa.role)")
    # namespaced: the namespace, then the prefixed selector; all() stays all()
    assert str(policy_applies_selector("NetworkPolicy", "ns1", {
        "selector": "app == 'w'", "serviceAccountSelector": "role in {'a', 'b'}"})) == \
        canon("app == 'w' && projectcalico.org/namespace == 'ns1' && pcsa.role in {'a', 'b'}")
    assert str(policy_applies_selector("NetworkPolicy", "ns1", {"serviceAccountSelector": "all()"})) == \
        canon("projectcalico.org/namespace == 'ns1'")
    # without one, nothing changes
    assert str(policy_applies_selector(gnp, None, {"selector": "all()"})) == "all()"


def test_effective_types():
    assert effective_types({}) == ("Ingress",)
    assert effective_types({"ingress": [{}]}) == ("Ingress",)
    assert effective_types({"egress": [{}]}) == ("Egress",)
    assert effective_types({"ingress": [{}], "egress": [{}]}) == ("Ingress", "Egress")
    assert effective_types({"types": ["Egress"], "ingress": []}) == ("Egress",)


@pytest.mark.parametrize("kind,ns,spec,want", [
    ("GlobalNetworkPolicy", None, {}, "all()"),
    ("GlobalNetworkPolicy", None, {"selector": "a == 'b'"}, 'a == "b"'),
    ("NetworkPolicy", "ns1", {}, 'projectcalico.org/namespace == "ns1"'),
    ("NetworkPolicy", "ns1", {"selector": "a == 'b'"},
     'a == "b" && projectcalico.org/namespace == "ns1"'),
    ("GlobalNetworkPolicy", None, {"namespaceSelector": "t == 'x'"}, 'pcns.t == "x"'),
])
def test_policy_applies_selector(kind, ns, spec, want):
    assert str(policy_applies_selector(kind, ns, spec)) == want


def test_netlink_key_encoding():
    from calico_net.agent.felix.nft_netlink import encodable, encode_key
    assert encode_key("type ipv4_addr", "198.19.0.1") == bytes([198, 19, 0, 1])
    assert encode_key("type ipv4_addr . inet_service", "198.19.0.1 . 8080") == \
        bytes([198, 19, 0, 1, 0x1f, 0x90, 0, 0])
    assert encode_key("type inet_proto . inet_service", "tcp . 22") == bytes([6, 0, 0, 0, 0, 22, 0, 0])
    assert encode_key("type ifname : verdict", '"cali0"') == b"cali0" + b"\0" * 11
    assert len(encode_key("type ipv6_addr . inet_service", "2001:db8::1 . 80")) == 20
    assert not encodable("type ipv4_addr; flags interval")
    assert encodable("type ifname : verdict")
