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
