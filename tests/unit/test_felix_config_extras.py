"""FelixConfiguration logPrefix, nftablesRefreshInterval and
prometheusProcessMetricsEnabled as the agent reads and applies them."""
from __future__ import annotations

import pytest

from calico_net.agent.daemon import felix_settings
from calico_net.agent.felix.settings import FelixSettings
from calico_net.agent.config import Config
from calico_net.agent.felix.policy import PolicyDataplane
from calico_net.agent.metrics import Metrics
from fakes import FakeNftRunner


def cfg(env=None, spec=None) -> Config:
    c = Config("n1", env=env or {}, config_file="")
    if spec is not None:
        c.set_felix_configuration("default", spec)
    return c


def _log_rules(settings) -> list[str]:
    dp = PolicyDataplane("n1", settings, nft=FakeNftRunner())
    dp.update("Profile", "p", None, {"kind": "Profile", "metadata": {"name": "p"},
                                     "spec": {"ingress": [{"action": "Log"}, {"action": "Allow"}]}})
    dp.update("WorkloadEndpoint", "n1-k8s-a-eth0", "ns1", {
        "kind": "WorkloadEndpoint", "metadata": {"name": "n1-k8s-a-eth0", "namespace": "ns1"},
        "spec": {"node": "n1", "interfaceName": "cali1", "ipNetworks": ["198.19.0.1/32"], "profiles": ["p"]}})
    dp.apply()
    return [r for ch in dp.rs.chains.values() for r in ch.rules if r.startswith("log ")]


def test_log_prefix_reaches_the_log_rules_and_follows_a_change() -> None:
    c = cfg()
    assert _log_rules(felix_settings(c, FelixSettings, ("cali",))) == ['log prefix "calico-packet: " level info']
    assert c.set_felix_configuration("default", {"logPrefix": "edge-drop"}) == ["LogPrefix"]
    assert _log_rules(felix_settings(c, FelixSettings, ("cali",))) == ['log prefix "edge-drop: " level info']


@pytest.mark.parametrize("raw", ["calico %n", 'x" accept', "a" * 126, ""])
def test_log_prefix_the_agent_cannot_render_is_ignored_with_its_value(raw, caplog) -> None:
    c = cfg(spec={"logPrefix": raw})
    assert c.values["LogPrefix"] == "calico-packet"
    if raw:
        assert "LogPrefix" in caplog.text and c.bad_total == 1


def test_nftables_refresh_interval_sets_the_refresh() -> None:
    c = cfg()
    assert c.values["IptablesRefreshInterval"] == 90
    assert c.set_felix_configuration("default", {"nftablesRefreshInterval": "30s"}) == [
        "NftablesRefreshInterval", "IptablesRefreshInterval"]
    assert c.values["IptablesRefreshInterval"] == 30
    # same source: nftables wins (Felix's nftables mode); a higher source's iptables value wins
    c.set_felix_configuration("default", {"nftablesRefreshInterval": "30s", "iptablesRefreshInterval": "45s"})
    assert c.values["IptablesRefreshInterval"] == 30
    c = cfg(env={"FELIX_IPTABLESREFRESHINTERVAL": "2"}, spec={"nftablesRefreshInterval": "30s"})
    assert c.values["IptablesRefreshInterval"] == 2
    c = cfg(env={"FELIX_NFTABLESREFRESHINTERVAL": "7"}, spec={"iptablesRefreshInterval": "30s"})
    assert c.values["IptablesRefreshInterval"] == 7
    assert "NftablesRefreshInterval" in c.sources["IptablesRefreshInterval"]


def test_process_metrics_follow_prometheus_process_metrics_enabled() -> None:
    assert cfg().values["PrometheusProcessMetricsEnabled"] is True
    assert cfg(spec={"prometheusProcessMetricsEnabled": False}).values["PrometheusProcessMetricsEnabled"] is False
    on = Metrics()
    assert "process_cpu_seconds_total" in on.render()
    off = Metrics()
    off.process_metrics = False
    text = off.render()
    assert "process_cpu_seconds_total" not in text and "felix_active_local_endpoints" in text


def test_disable_conntrack_invalid_check_removes_the_invalid_drops() -> None:
    from calico_net.agent.felix.base_chains import render_base
    from calico_net.agent.felix.ruleset import Ruleset

    def invalid_rules(spec) -> list[str]:
        rs = Ruleset()
        render_base(rs, felix_settings(cfg(spec=spec), FelixSettings, ("cali",)))
        return [f"{name}: {r}" for name, ch in rs.chains.items() for r in ch.rules if "invalid" in r]

    assert invalid_rules({}) == ["cali-forward: ct state invalid drop", "cali-input: ct state invalid drop",
                                 "cali-output: ct state invalid drop"]
    assert invalid_rules({"disableConntrackInvalidCheck": True}) == []


def test_runtime_metrics_follow_prometheus_go_metrics_enabled() -> None:
    assert cfg().values["PrometheusGoMetricsEnabled"] is True
    assert "python_gc_objects_collected_total" in Metrics().render()
    off = Metrics()
    off.runtime_metrics = False
    text = off.render()
    assert "python_gc_" not in text and "python_info" not in text and "process_cpu_seconds_total" in text


def test_health_timeout_overrides_set_the_main_loop_liveness(caplog) -> None:
    import time

    from calico_net.agent.__main__ import HealthOverrides
    from calico_net.agent.health import HealthState

    c = cfg()
    state = HealthState()
    ov = HealthOverrides(c, state)
    ov.apply()
    c.listeners.append(ov.apply)
    state.last_tick = time.monotonic() - 100       # the loop stalled for 100 s
    assert state.live()[0] is False                # Felix-style default here: 90 s
    c.set_felix_configuration("default", {"healthTimeoutOverrides": [
        {"name": "InternalDataplaneMainLoop", "timeout": "2m"}, {"name": "CalculationGraph", "timeout": "5s"}]})
    assert state.live()[0] is True
    assert "CalculationGraph" in caplog.text
    c.set_felix_configuration("default", {"healthTimeoutOverrides": [
        {"name": "InternalDataplaneMainLoop", "timeout": "0s"}]})   # 0: never times out
    state.last_tick = time.monotonic() - 10 ** 6
    assert state.live()[0] is True
    c.set_felix_configuration("default", {})
    assert state.live()[0] is False


@pytest.mark.parametrize("raw,want", [
    ("InternalDataplaneMainLoop=120s,CalculationGraph=30", (("CalculationGraph", 30.0),
                                                          ("InternalDataplaneMainLoop", 120.0))),
    ("", ()),
])
def test_health_timeout_overrides_environment_format(raw, want) -> None:
    assert cfg(env={"FELIX_HEALTHTIMEOUTOVERRIDES": raw}).values["HealthTimeoutOverrides"] == want


@pytest.mark.parametrize("raw", ["InternalDataplaneMainLoop", "bad/name=1s", "x=forever"])
def test_bad_health_timeout_overrides_are_ignored(raw, caplog) -> None:
    c = cfg(env={"FELIX_HEALTHTIMEOUTOVERRIDES": raw})
    assert c.values["HealthTimeoutOverrides"] == () and "HealthTimeoutOverrides" in caplog.text
