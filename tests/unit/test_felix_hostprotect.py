"""Host protection in the rendered table: failsafe entries limited to a network,
forwarded traffic through host endpoints (applyOnForward), the all-interfaces host
endpoint, pre-DNAT and untracked (doNotTrack) policy."""
from __future__ import annotations

from fakes import FakeNftRunner
from test_felix_index import NODE, gnp, hep, wep

from calico_net.agent.felix.policy import FelixSettings, PolicyDataplane


def _dp(settings=None):
    fake = FakeNftRunner()
    return PolicyDataplane(NODE, settings=settings, nft=fake), fake


def test_failsafe_entries_limited_to_a_network():
    st = FelixSettings(failsafe_inbound="tcp:22, tcp:198.18.0.0/24:2222, tcp:fd00::/64:2223",
                       failsafe_outbound=[("udp", 53), ("tcp", 2379, "198.18.0.1")])
    assert st.failsafe_outbound == [("udp", 53), ("tcp", 2379, "198.18.0.1/32")]
    dp, _ = _dp(st)
    dp.apply()
    # entries without a network stay in the sets; the others become rules
    assert set(dp.rs.sets["cali-failsafe-in"].elements) == {"tcp . 22"}
    assert set(dp.rs.sets["cali-failsafe-out"].elements) == {"udp . 53"}
    inp = dp.rs.chains["cali-input"].rules
    assert "iifname @cali-hep-ifaces ip saddr 198.18.0.0/24 meta l4proto tcp th dport 2222 accept" in inp
    assert "iifname @cali-hep-ifaces ip6 saddr fd00::/64 meta l4proto tcp th dport 2223 accept" in inp
    out = dp.rs.chains["cali-output"].rules
    assert "oifname @cali-hep-ifaces ip daddr 198.18.0.1/32 meta l4proto tcp th dport 2379 accept" in out
    # all before the host endpoint dispatch
    assert out.index("oifname vmap @cali-hep-out") > out.index(
        "oifname @cali-hep-ifaces ip daddr 198.18.0.1/32 meta l4proto tcp th dport 2379 accept")


def test_failsafe_settings_refuse_a_bad_network():
    import pytest
    for bad in ("tcp:198.18.0.5/24:22", "tcp:x:22", [("tcp", 22, "198.18.0.0/33")]):
        with pytest.raises(ValueError):
            FelixSettings(failsafe_inbound=bad)


HEP = ("HostEndpoint", None, "h1")


def _host(dp, *policies, iface="eth0"):
    dp.update("HostEndpoint", "h1", None, hep("h1", iface=iface, labels={"h": "1"}))
    for p in policies:
        dp.update("GlobalNetworkPolicy", p["metadata"]["name"], None, p)
    dp.apply()


def test_plain_host_keeps_the_plain_layout():
    dp, _ = _dp()
    _host(dp, gnp("in", "has(h)", ingress=[{"action": "Allow"}]))
    assert "cali-raw-output" not in dp.rs.chains and "cali-mangle-prerouting" not in dp.rs.chains
    assert not any(n.startswith(("cali-hep-fwd", "cali-hep-pre", "cali-hep-raw")) for n in dp.rs.sets)
    assert not any("0x10000 == 0x10000 accept" in r for r in dp.rs.chains["cali-input"].rules)
    assert dp.hp.extra == {}


def test_apply_on_forward_in_calicos_order_with_workload_policy():
    dp, _ = _dp()
    fwd = gnp("fwd", "has(h)", types=["Ingress", "Egress"], applyOnForward=True,
              ingress=[{"action": "Deny", "source": {"nets": ["198.18.5.0/24"]}}], egress=[{"action": "Allow"}])
    _host(dp, fwd)
    chains = dp.hp.extra[HEP]
    assert dp.rs.sets["cali-hep-fwd-in"].elements == {'"eth0"': f"jump {chains.fwd_in}"}
    assert dp.rs.sets["cali-hep-fwd-out"].elements == {'"eth0"': f"jump {chains.fwd_out}"}
    fw = list(dp.rs.chains["cali-forward"].rules)
    # host endpoint forward ingress, workload egress, workload ingress, host endpoint forward egress
    order = ["iifname vmap @cali-hep-fwd-in", 'iifname "cali*" jump cali-from-wl',
             'oifname "cali*" jump cali-to-wl', "oifname vmap @cali-hep-fwd-out", 'iifname "cali*" accept']
    assert [fw.index(r) for r in order] == sorted(fw.index(r) for r in order)
    body = dp.rs.chains[chains.fwd_in].rules
    assert body[-1] == "meta mark & 0x20000 == 0 drop" and not any("cali-pri" in r for r in body)
    # the policy applies to traffic to and from the host as well
    assert any("jump cali-pi-" in r for r in dp.rs.chains[dp._programs[HEP].ingress].rules)
    # dropping the flag: the forward hooks go, the endpoint keeps its normal chains
    dp.update("GlobalNetworkPolicy", "fwd", None, {**fwd, "spec": {**fwd["spec"], "applyOnForward": False}})
    dp.apply()
    assert "cali-hep-fwd-in" not in dp.rs.sets and chains.fwd_in not in dp.rs.chains
    assert "iifname vmap @cali-hep-fwd-in" not in dp.rs.chains["cali-forward"].rules


def test_pre_dnat_and_untracked_policy_chains():
    dp, _ = _dp()
    pre = gnp("pre", "has(h)", types=["Ingress"], applyOnForward=True, preDNAT=True,
              ingress=[{"action": "Deny", "source": {"nets": ["198.18.6.0/24"]}}])
    dnt = gnp("dnt", "has(h)", types=["Ingress", "Egress"], applyOnForward=True, doNotTrack=True,
              ingress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": [7000]}}],
              egress=[{"action": "Allow", "protocol": "TCP", "source": {"ports": [7000]}}])
    dp.update("WorkloadEndpoint", "a", "ns1", wep("a", iface="cali0000000000a", labels={"h": "w"}))
    _host(dp, pre, dnt)
    ch = dp.hp.extra[HEP]
    assert ch.fwd_in is None and ch.pre and ch.raw_in and ch.raw_out
    mangle = dp.rs.chains["cali-mangle-prerouting"]
    assert mangle.hook == "type filter hook prerouting priority mangle; policy accept;"
    assert mangle.rules[-1] == "iifname vmap @cali-hep-pre"
    assert dp.rs.chains["cali-raw-output"].hook == "type filter hook output priority raw; policy accept;"
    assert dp.rs.chains["cali-prerouting"].rules[-1] == "iifname vmap @cali-hep-raw-in"
    raw_in = dp.rs.chains[ch.raw_in].rules
    assert "meta mark & 0x10000 == 0x10000 notrack" in raw_in and "drop" not in " ".join(raw_in)
    assert "drop" not in " ".join(dp.rs.chains[ch.pre].rules)
    # what pre-DNAT or untracked policy accepted skips the filter chains' host policy
    assert "meta mark & 0x10000 == 0x10000 accept" in dp.rs.chains["cali-input"].rules
    # neither applies to the normal chains, nor to a workload the selector matches
    normal = " ".join(dp.rs.chains[dp._programs[HEP].ingress].rules)
    wl = " ".join(dp.rs.chains[dp._programs[("WorkloadEndpoint", "ns1", "a")].ingress].rules)
    for key in (("GlobalNetworkPolicy", None, "pre"), ("GlobalNetworkPolicy", None, "dnt")):
        chain = dp.hp._policy_chain(key, "Ingress")
        assert chain not in normal and chain not in wl
    for name in ("pre", "dnt"):
        dp.update("GlobalNetworkPolicy", name, None, None)
    dp.apply()
    assert "cali-raw-output" not in dp.rs.chains and "cali-mangle-prerouting" not in dp.rs.chains
    assert dp.hp.extra == {} and not any(n.startswith("cali-hep-raw") for n in dp.rs.sets)


def test_all_interfaces_host_endpoint():
    dp, _ = _dp(FelixSettings(failsafe_inbound="tcp:22,tcp:198.18.0.0/24:2222"))
    _host(dp, gnp("deny", "has(h)", types=["Ingress"], ingress=[{"action": "Deny"}]), iface="*")
    prog = dp._programs[HEP]
    assert dp.rs.sets["cali-hep-in"].elements == {} and dp.rs.sets["cali-hep-ifaces"].elements == {}
    inp = list(dp.rs.chains["cali-input"].rules)
    star = f'iifname != @cali-hep-ifaces iifname != "cali*" jump {prog.ingress}'
    # failsafe first, on every interface but the workloads'
    assert inp[-4:] == ['iifname != "cali*" meta l4proto . th dport @cali-failsafe-in accept',
                        'iifname != "cali*" ip saddr 198.18.0.0/24 meta l4proto tcp th dport 2222 accept',
                        "iifname vmap @cali-hep-in", star]
    assert f'oifname != @cali-hep-ifaces oifname != "cali*" jump {prog.egress}' in dp.rs.chains["cali-output"].rules
    # a named host endpoint takes its interface from the "*" one
    dp.update("HostEndpoint", "h2", None, hep("h2", iface="eth1", labels={"h": "2"}))
    dp.apply()
    assert set(dp.rs.sets["cali-hep-ifaces"].elements) == {'"eth1"'}
    dp.update("HostEndpoint", "h1", None, None)
    dp.apply()
    assert not any("!= @cali-hep-ifaces" in r for r in dp.rs.chains["cali-input"].rules)
    assert "iifname @cali-hep-ifaces meta l4proto . th dport @cali-failsafe-in accept" in dp.rs.chains["cali-input"].rules
