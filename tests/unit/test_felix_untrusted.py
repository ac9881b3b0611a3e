"""Strings are data: what the policy dataplane does with hostile or unenforceable
input that got past validation (PolicyDataplane with a fake nft runner, the writer,
the netlink encoder)."""
from __future__ import annotations

import logging

import pytest

from calico_net.agent.felix import nft_netlink
from calico_net.agent.felix.index import PolicyIndex
from calico_net.agent.felix.nft_writer import NftWriter
from calico_net.agent.felix.ruleset import Ruleset
from calico_net.agent.felix.nftstr import NftStringError
from calico_net.agent.felix.policy import FelixSettings, PolicyDataplane, policy_chain, profile_chain
from fakes import FakeNftRunner

NODE = "node1"
INJECTION = '*" accept; iifname "cali'


def wep(name, iface, ips=("198.19.0.1/32",), labels=None, node=NODE, profiles=()):
    return {"kind": "WorkloadEndpoint", "metadata": {"name": name, "namespace": "ns1",
                                                      "labels": dict(labels or {})},
            "spec": {"node": node, "interfaceName": iface, "ipNetworks": list(ips),
                     "profiles": list(profiles)}}


def gnp(name, selector="all()", ingress=(), egress=(), order=None):
    spec = {"selector": selector, "ingress": list(ingress), "egress": list(egress)}
    if order is not None:
        spec["order"] = order
    return {"kind": "GlobalNetworkPolicy", "metadata": {"name": name}, "spec": spec}


def dp_(settings=None):
    fake = FakeNftRunner()
    return PolicyDataplane(NODE, settings=settings, nft=fake), fake


def map_keys(dp, name):
    return set(dp.rs.sets[name].elements)


# ------------------------------------------------------------------ interface prefixes


@pytest.mark.parametrize("prefixes", [INJECTION, ("cali", INJECTION), ("cali\n",), ("",), (), ("cali*",)])
def test_settings_refuse_bad_prefixes(prefixes):
    with pytest.raises(ValueError):
        FelixSettings(interface_prefixes=prefixes)


def test_settings_refuse_bad_log_prefix():
    with pytest.raises(ValueError):
        FelixSettings(log_prefix='x" accept; "')


def test_prefixes_reach_nft_only_quoted():
    dp, fake = dp_(FelixSettings(interface_prefixes=("cali", "tap")))
    dp.apply()
    fwd = dp.rs.chains["cali-forward"].rules
    assert 'iifname "cali*" jump cali-from-wl' in fwd and 'iifname "tap*" jump cali-from-wl' in fwd
    assert 'iifname "*"' not in fake.scripts[-1]
    dp.load_placeholder()
    assert 'iifname "tap*" drop' in fake.scripts[-1]


def test_endpoint_outside_the_prefixes_is_not_programmed(caplog):
    dp, fake = dp_()
    dp.update("WorkloadEndpoint", "good", "ns1", wep("good", "cali0000000000a"))
    dp.update("WorkloadEndpoint", "bad", "ns1", wep("bad", "eth0", ips=("198.19.0.2/32",)))
    dp.update("GlobalNetworkPolicy", "p", None, gnp("p", ingress=[{"action": "Allow"}]))
    with caplog.at_level(logging.ERROR):
        dp.apply()
        dp.update("GlobalNetworkPolicy", "q", None, gnp("q", ingress=[{"action": "Deny"}]))
        dp.apply()     # a second apply re-renders every endpoint: still one log line
    assert map_keys(dp, "cali-wl-from") == {'"cali0000000000a"'}
    assert map_keys(dp, "cali-wl-to") == {'"cali0000000000a"'}
    assert dp.endpoint_count() == 1
    assert all('"eth0"' not in s for s in fake.scripts)
    assert len([r for r in caplog.records if "eth0" in r.getMessage()]) == 1
    # a prefix change (before the first snapshot is in, the daemon allows it) re-decides
    dp.set_settings(FelixSettings(interface_prefixes=("cali", "eth")))
    dp.apply()
    assert '"eth0"' in map_keys(dp, "cali-wl-from")
    dp.set_settings(FelixSettings(interface_prefixes=("cali",)))
    dp.apply()
    assert map_keys(dp, "cali-wl-from") == {'"cali0000000000a"'}


@pytest.mark.parametrize("iface", ["cali1\n", 'cali1"', "cali1;", "cali*", "cali{", "cali1\x00"])
def test_hostile_interface_names_are_not_programmed(iface):
    dp, fake = dp_()
    dp.update("WorkloadEndpoint", "a", "ns1", wep("a", iface))
    dp.apply()
    assert map_keys(dp, "cali-wl-from") == set() and dp.endpoint_count() == 0
    assert f'"{iface}" :' not in fake.scripts[-1]


# ------------------------------------------------------------------ endpoint addresses


def test_endpoint_wider_than_a_host_address_is_absent_from_selector_sets():
    dp, fake = dp_()
    dp.update("WorkloadEndpoint", "a", "ns1", wep("a", "cali0000000000a", labels={"r": "web"}))
    dp.update("WorkloadEndpoint", "wide", "ns1",
              wep("wide", "cali0000000000b", ips=("0.0.0.0/0",), labels={"r": "web"}))
    dp.update("WorkloadEndpoint", "remote", "ns1",
              wep("remote", "cali0000000000c", ips=("198.19.7.0/24",), labels={"r": "web"}, node="other"))
    dp.update("GlobalNetworkPolicy", "p", None,
              gnp("p", ingress=[{"action": "Allow", "source": {"selector": "r == 'web'"}}]))
    dp.apply()
    sets = {n: set(s.elements) for n, s in dp.rs.sets.items() if n[:3] in ("s4_", "c4_")}
    assert sets and all(els <= {"198.19.0.1"} for els in sets.values()), sets
    assert "0.0.0.0/0" not in fake.scripts[-1] and "198.19.7.0/24" not in fake.scripts[-1]
    assert map_keys(dp, "cali-wl-from") == {'"cali0000000000a"'}


def test_network_set_entries_that_are_not_cidrs_are_left_out():
    idx = PolicyIndex(NODE)
    idx.update("GlobalNetworkSet", "n", None, {
        "kind": "GlobalNetworkSet", "metadata": {"name": "n", "labels": {"k": "v"}},
        "spec": {"nets": ["198.18.0.0/24\n", "198.18.1.0/24", "198.18.2.1/32 } ; x", "198.18.3.0/24, 0.0.0.0/0"]}})
    idx.update("GlobalNetworkPolicy", "p", None,
               gnp("p", ingress=[{"action": "Deny", "source": {"selector": "k == 'v'"}}]))
    idx.recompute()
    elems = set().union(*(idx.set_elements(n) for n in idx.all_set_names()))
    assert elems == {"198.18.1.0/24"}


# ------------------------------------------------------------------ comments and rendering


def test_long_resource_names_fit_nft_comments():
    name = "p" + "x" * 240
    dp, fake = dp_()
    dp.update("GlobalNetworkPolicy", name, None, gnp(name, ingress=[{"action": "Allow"}]))
    dp.apply()
    comment = dp.rs.chains[policy_chain(("GlobalNetworkPolicy", None, name), "Ingress")].comment
    assert comment.startswith("GlobalNetworkPolicy pxx") and len(comment) == 128


def test_rule_that_cannot_be_written_makes_the_chain_drop(caplog):
    dp, _ = dp_()
    # an ICMP type that is not a number got past validation
    bad = gnp("p", ingress=[{"action": "Allow", "protocol": "ICMP", "icmp": {"type": "8 accept; x"}}])
    with caplog.at_level(logging.ERROR):
        dp.update("GlobalNetworkPolicy", "p", None, bad)
        dp.apply()
    assert dp.rs.chains[policy_chain(("GlobalNetworkPolicy", None, "p"), "Ingress")].rules == ("drop",)
    assert any("drops every packet" in r.getMessage() for r in caplog.records)


def test_policy_whose_rules_cannot_be_compiled_denies_instead_of_vanishing():
    dp, _ = dp_()
    dp.update("WorkloadEndpoint", "a", "ns1", wep("a", "cali0000000000a", labels={"r": "x"}))
    dp.update("GlobalNetworkPolicy", "p", None,
              gnp("p", "r == 'x'", ingress=[{"action": "Allow", "source": {"nets": ["not a CIDR"]}}]))
    dp.apply()
    chain = policy_chain(("GlobalNetworkPolicy", None, "p"), "Ingress")
    assert dp.rs.chains[chain].rules == ("drop",)
    to = dp.rs.sets["cali-wl-to"].elements['"cali0000000000a"'].split()[-1]
    assert f"jump {chain}" in dp.rs.chains[to].rules


def test_profile_whose_rules_cannot_be_compiled_denies():
    dp, _ = dp_()
    dp.update("Profile", "pr", None, {"kind": "Profile", "metadata": {"name": "pr"},
                                      "spec": {"ingress": [{"action": "Allow",
                                                            "source": {"nets": ["198.18.0.0/24\n"]}}]}})
    dp.apply()
    assert dp.rs.chains[profile_chain("pr", "Ingress")].rules == ("drop",)


# ------------------------------------------------------------------ the writer's last look


def _write(rs):
    fake = FakeNftRunner()
    NftWriter(fake).write(rs)
    return fake


@pytest.mark.parametrize("name", ["x; y", "x\nadd rule", 'x"', "x{", "1x"])
def test_writer_refuses_names_that_are_syntax(name):
    rs = Ruleset()
    rs.set_chain(name, ["accept"])
    with pytest.raises(NftStringError):
        _write(rs)
    rs = Ruleset()
    rs.ensure_set(name, "type ipv4_addr")
    with pytest.raises(NftStringError):
        _write(rs)


@pytest.mark.parametrize("rule", ['iifname "*" accept; iifname "cali*" drop', "accept\nadd rule inet calico x accept",
                                  "accept }", "accept # rest"])
def test_writer_refuses_rule_lines_that_are_more_than_one_rule(rule):
    rs = Ruleset()
    rs.set_chain("c", [rule])
    with pytest.raises(NftStringError):
        _write(rs)


@pytest.mark.parametrize("key", ['"a" : accept, "b"', '"cali*"', "1.2.3.4 }; add rule x", "1.2.3.4\n"])
def test_writer_refuses_elements_that_are_syntax(key):
    rs = Ruleset()
    rs.ensure_set("m", "type ifname : verdict", is_map=True)
    rs.add_element("m", key, "accept")
    with pytest.raises(NftStringError):
        _write(rs)


def test_writer_refuses_hooks_and_decls_it_does_not_write():
    rs = Ruleset()
    rs.set_chain("c", [], hook="type filter hook input priority 0; policy accept; }; chain x {")
    with pytest.raises(NftStringError):
        _write(rs)
    rs = Ruleset()
    rs.ensure_set("s", 'type ifname; elements = { "eth0" }')
    with pytest.raises(NftStringError):
        _write(rs)


def test_netlink_encoder_checks_interface_names_and_verdicts():
    assert nft_netlink.encode_key("type ifname", '"cali1"') == b"cali1".ljust(16, b"\0")
    for key in ['"cali*"', '"eth0\x00x"', '"' + "c" * 16 + '"', '"a;b"']:
        with pytest.raises(ValueError):
            nft_netlink.encode_key("type ifname", key)
    enc = nft_netlink._encoder("add", "type ifname : verdict")
    assert enc('"cali1"', "jump cali-fw-0123")
    for value in ["jump x y", "jump x;", "accept now", "jump 1x"]:
        with pytest.raises((ValueError, KeyError)):
            enc('"cali1"', value)
