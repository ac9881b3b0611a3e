"""The overlay's rules as PolicyDataplane renders and writes them (through
FakeNftRunner): no rules while no encapsulation is in use, Felix's host-set rules
while one is, host changes as set elements only, and the drop of encapsulated
packets from workloads (allow_ipip/vxlan_from_workloads)."""
from __future__ import annotations

import logging

from fakes import FakeNftRunner
from test_felix_index import NODE

from calico_net.agent.felix.encap_rules import ENCAP_SETS
from calico_net.agent.felix.policy import FelixSettings, PolicyDataplane

H1, H2, H3 = "198.19.176.1", "198.19.176.2", "198.19.176.3"
H6 = "fd00:198:19:176::6"
IPIP_ACCEPT4 = "meta l4proto 4 ip saddr @cali-ipip-hosts4 fib daddr type local accept"
IPIP_ACCEPT6 = "meta l4proto 4 ip6 saddr @cali-ipip-hosts6 fib daddr type local accept"
VXLAN_ACCEPT4 = "udp dport 4789 ip saddr @cali-vxlan-hosts4 fib daddr type local accept"
VXLAN_ACCEPT6 = "udp dport 4789 ip6 saddr @cali-vxlan-hosts6 fib daddr type local accept"


def _dp(settings=None, fast=False):
    fake = FakeNftRunner(fast_elements=fast)
    return PolicyDataplane(NODE, settings=settings, nft=fake), fake


def _rules(dp, chain):
    return list(dp.rs.chains[chain].rules)


def _elements(dp, name):
    return set(dp.rs.sets[name].elements)


def _all_rule_text(dp):
    return "\n".join(r for c in dp.rs.chains.values() for r in c.rules)


def test_no_encapsulation_no_rules_and_no_sets():
    dp, fake = _dp()
    dp.set_encap_hosts(None, None, 4789)
    dp.apply()
    text = _all_rule_text(dp)
    assert "l4proto 4" not in text and "4789" not in text
    assert not set(ENCAP_SETS) & set(dp.rs.sets)
    assert "cali-ipip" not in fake.scripts[-1] and "cali-vxlan" not in fake.scripts[-1]
    # the same as a dataplane never told about encapsulation
    plain, _ = _dp()
    plain.apply()
    assert plain.rs.fingerprint() == dp.rs.fingerprint()


def test_ipip_rules_first_in_input_and_hosts_split_by_family():
    dp, fake = _dp()
    dp.set_encap_hosts(frozenset({H1, H2, H6}), None, 4789)
    dp.apply()
    inp = _rules(dp, "cali-input")
    # before the conntrack accept: a host that left the set must not keep a path in
    assert inp[:3] == [IPIP_ACCEPT4, IPIP_ACCEPT6, "meta l4proto 4 drop"]
    assert _elements(dp, "cali-ipip-hosts4") == {H1, H2}
    assert _elements(dp, "cali-ipip-hosts6") == {H6}
    assert "4789" not in _all_rule_text(dp)
    assert not {"cali-vxlan-hosts4", "cali-vxlan-hosts6"} & set(dp.rs.sets)
    script = fake.scripts[-1]
    assert "set cali-ipip-hosts4 { type ipv4_addr; elements = { " in script
    assert IPIP_ACCEPT4 in script
    # this host's own tunnel traffic to the hosts passes host endpoint policy
    out = _rules(dp, "cali-output")
    assert out.index("meta l4proto 4 ip daddr @cali-ipip-hosts4 accept") < out.index(
        "oifname vmap @cali-hep-out")
    # workloads: IP-in-IP dropped before their egress policy (the dispatch map)
    wl = _rules(dp, "cali-from-wl")
    assert wl.index("meta l4proto 4 drop") < wl.index("iifname vmap @cali-wl-from")


def test_vxlan_rules_use_the_port():
    dp, _ = _dp()
    dp.set_encap_hosts(None, frozenset({H3}), 4789)
    dp.apply()
    inp = _rules(dp, "cali-input")
    assert inp[:3] == [VXLAN_ACCEPT4, VXLAN_ACCEPT6, "udp dport 4789 drop"]
    assert _elements(dp, "cali-vxlan-hosts4") == {H3}
    assert "udp dport 4789 drop" in _rules(dp, "cali-from-wl")
    assert "l4proto 4" not in _all_rule_text(dp)
    # another port: the rules change (a rule rewrite, not elements)
    dp.set_encap_hosts(None, frozenset({H3}), 8472)
    dp.apply()
    inp = _rules(dp, "cali-input")
    assert inp[2] == "udp dport 8472 drop" and "4789" not in _all_rule_text(dp)
    assert _elements(dp, "cali-vxlan-hosts4") == {H3}


def test_both_and_then_none():
    dp, fake = _dp()
    dp.set_encap_hosts(frozenset({H1}), frozenset({H1, H2}), 4789)
    dp.apply()
    assert _rules(dp, "cali-input")[:6] == [
        IPIP_ACCEPT4, IPIP_ACCEPT6, "meta l4proto 4 drop",
        VXLAN_ACCEPT4, VXLAN_ACCEPT6, "udp dport 4789 drop"]
    dp.set_encap_hosts(None, None, 4789)
    dp.apply()
    assert not set(ENCAP_SETS) & set(dp.rs.sets)
    text = _all_rule_text(dp)
    assert "l4proto 4" not in text and "4789" not in text
    # the incremental transaction rewrites the chains and deletes the sets
    script = fake.scripts[-1]
    for name in ENCAP_SETS:
        assert f"delete set inet calico {name}" in script
    assert script.index("flush chain inet calico cali-input") < script.index(
        "delete set inet calico cali-ipip-hosts4")


def test_host_changes_are_element_changes_only():
    dp, fake = _dp(fast=True)
    dp.set_encap_hosts(frozenset({H1, H2}), frozenset({H1}), 4789)
    dp.apply()
    scripts = len(fake.scripts)
    chains = dict(dp.rs.chains)
    dp.set_encap_hosts(frozenset({H1, H3}), frozenset({H1, H6}), 4789)
    stats = dp.apply()
    assert stats.netlink and len(fake.scripts) == scripts, "no nft run for a host change"
    assert dp.rs.chains == chains
    ops = {(verb, name, key) for verb, name, _decl, key, _v in fake.batches[-1]
           if name != "cali-meta"}
    assert ops == {("delete", "cali-ipip-hosts4", H2), ("add", "cali-ipip-hosts4", H3),
                   ("add", "cali-vxlan-hosts6", H6)}
    # the same hosts again: nothing to write
    dp.set_encap_hosts(frozenset({H1, H3}), frozenset({H1, H6}), 4789)
    assert dp.apply().skipped


def test_host_change_without_the_fast_path_touches_no_chain():
    dp, fake = _dp()
    dp.set_encap_hosts(frozenset({H1}), None, 4789)
    dp.apply()
    dp.set_encap_hosts(frozenset({H2}), None, 4789)
    dp.apply()
    script = fake.scripts[-1]
    assert "chain" not in script
    assert f"delete element inet calico cali-ipip-hosts4 {{ {H1} }}" in script
    assert f"add element inet calico cali-ipip-hosts4 {{ {H2} }}" in script


def test_an_empty_host_set_still_drops():
    """In use but no other host known yet: every tunnel packet is dropped."""
    dp, _ = _dp()
    dp.set_encap_hosts(frozenset(), frozenset(), 4789)
    dp.apply()
    assert _rules(dp, "cali-input")[:6] == [
        IPIP_ACCEPT4, IPIP_ACCEPT6, "meta l4proto 4 drop",
        VXLAN_ACCEPT4, VXLAN_ACCEPT6, "udp dport 4789 drop"]
    assert _elements(dp, "cali-ipip-hosts4") == set()


def test_bad_addresses_are_left_out_and_the_rest_kept(caplog):
    dp, fake = _dp()
    bad = {"198.19.176.300", "x\n} flush ruleset", "", "198.19.176.0/24"}
    with caplog.at_level(logging.ERROR):
        dp.set_encap_hosts(frozenset({H1, *bad}), frozenset({H2, "fd00::zz"}), 4789)
        dp.apply()
    assert _elements(dp, "cali-ipip-hosts4") == {H1}
    assert _elements(dp, "cali-vxlan-hosts4") == {H2}
    assert "flush ruleset" not in fake.scripts[-1]
    assert sum("host address left out" in r.getMessage() for r in caplog.records) == len(bad) + 1


def test_non_canonical_addresses_are_written_canonical():
    dp, _ = _dp()
    dp.set_encap_hosts(frozenset({"FD00:198:19:176:0:0:0:6"}), None, 4789)
    dp.apply()
    assert _elements(dp, "cali-ipip-hosts6") == {H6}


def test_a_bad_port_falls_back_to_calicos_default(caplog):
    dp, _ = _dp()
    for port in (0, 70000, "4789; flush ruleset", True):
        with caplog.at_level(logging.ERROR):
            dp.set_encap_hosts(None, frozenset({H1}), port)
        dp.apply()
        assert _rules(dp, "cali-input")[2] == "udp dport 4789 drop", port
    assert sum("is not a port" in r.getMessage() for r in caplog.records) == 4


def test_workload_flags():
    both = (frozenset({H1}), frozenset({H1}), 4789)
    for ipip_ok, vxlan_ok in ((False, False), (True, False), (False, True), (True, True)):
        dp, _ = _dp(FelixSettings(allow_ipip_from_workloads=ipip_ok,
                                  allow_vxlan_from_workloads=vxlan_ok))
        dp.set_encap_hosts(*both)
        dp.apply()
        wl = _rules(dp, "cali-from-wl")
        assert ("meta l4proto 4 drop" in wl) is not ipip_ok
        assert ("udp dport 4789 drop" in wl) is not vxlan_ok
        # the flags only concern workloads: the host rules stay
        assert _rules(dp, "cali-input")[2] == "meta l4proto 4 drop"
        assert _rules(dp, "cali-input")[5] == "udp dport 4789 drop"
    # flags off but no encapsulation in use: nothing dropped (as the brief of issue 17)
    dp, _ = _dp()
    dp.apply()
    assert _rules(dp, "cali-from-wl") == [
        "meta mark set meta mark & 0xfffcffff", "iifname vmap @cali-wl-from",
        "meta mark & 0x10000 == 0 drop"]


def test_flag_change_rewrites_the_dispatch_chain():
    dp, fake = _dp()
    dp.set_encap_hosts(frozenset({H1}), None, 4789)
    dp.apply()
    assert "meta l4proto 4 drop" in _rules(dp, "cali-from-wl")
    dp.set_settings(FelixSettings(allow_ipip_from_workloads=True))
    dp.apply()
    assert "meta l4proto 4 drop" not in _rules(dp, "cali-from-wl")
    assert "flush chain inet calico cali-from-wl" in fake.scripts[-1]
    assert _elements(dp, "cali-ipip-hosts4") == {H1}


def test_fingerprint_follows_the_hosts():
    """A restarted agent adopts the live table only if it hashes the same: the hosts
    are part of the fingerprint."""
    fps = []
    for ipip in ({H1}, {H1}, {H1, H3}):
        dp, _ = _dp()
        dp.set_encap_hosts(frozenset(ipip), frozenset({H2}), 4789)
        dp.apply()
        fps.append(dp.rs.fingerprint())
    assert fps[0] == fps[1] != fps[2]
