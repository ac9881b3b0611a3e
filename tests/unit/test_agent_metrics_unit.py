"""The agent's metrics on prometheus_client (calico_net.agent.metrics): Felix's names,
types and values after the daemon's calls, the summary's quantiles, the cluster counts
and local policies read from the daemon per scrape, and the disabled path (no import).
"""
from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from fakes import FakeNftRunner
from prometheus_client.parser import text_string_to_metric_families

from calico_net.agent import metrics
from calico_net.agent.felix.policy import PolicyDataplane
from calico_net.agent.syncer import Resource


def scrape(m: metrics.Metrics) -> tuple[dict[str, str], dict[tuple[str, tuple], float]]:
    """(type of each sample name's family, value of each (sample name, labels))."""
    types: dict[str, str] = {}
    values: dict[tuple[str, tuple], float] = {}
    for fam in text_string_to_metric_families(m.render()):
        for s in fam.samples:
            types.setdefault(s.name, fam.type)
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, values


def test_felix_names_types_and_values_after_the_daemons_calls():
    m = metrics.Metrics()
    m.active_local_endpoints.set(7)
    m.active_policies.set(3)
    m.apply_duration.observe(0.02)
    m.apply_duration.observe(0.04)
    m.resyncs.inc()
    m.errors.inc()
    m.skipped_total.inc(2)
    m.skipped.set(1)
    m.config_errors.inc(4)
    m.refused_endpoints_total.inc()
    m.refused_endpoints.set(1)
    m.datastore_connected.set(1)
    m.route_repairs.inc(5)
    m.nft_repairs.inc()
    types, v = scrape(m)
    assert v[("felix_active_local_endpoints", ())] == 7 and types["felix_active_local_endpoints"] == "gauge"
    assert types["felix_int_dataplane_apply_time_seconds_count"] == "summary"
    assert v[("felix_int_dataplane_apply_time_seconds_count", ())] == 2
    assert v[("felix_int_dataplane_apply_time_seconds_sum", ())] == pytest.approx(0.06)
    assert v[("felix_int_dataplane_apply_time_seconds", (("quantile", "0.99"),))] == pytest.approx(0.04)
    assert v[("felix_apply_duration_seconds_count", ())] == 2        # the histogram too
    assert v[("felix_apply_duration_seconds_bucket", (("le", "0.025"),))] == 1
    own = {"felix_resyncs_total": 1, "felix_errors_total": 1, "felix_skipped_bad_objects_total": 2,
           "felix_config_errors_total": 4, "felix_refused_endpoints_total": 1,
           "felix_route_repairs_total": 5, "felix_nft_repairs_total": 1}
    for name, want in own.items():
        assert v[(name, ())] == want and types[name] == "counter", name
    for name, want in {"felix_skipped_bad_objects": 1, "felix_refused_endpoints": 1,
                       "felix_datastore_connected": 1}.items():
        assert v[(name, ())] == want and types[name] == "gauge", name
    # the daemon's all-policies count is Felix's cluster figure (from DaemonCollector),
    # not a second series, and the retired name is gone
    assert ("felix_cluster_num_policies", ()) not in v and ("felix_active_policies", ()) not in v
    # no _created series: the holders are families, not client metrics
    assert not [k for k in v if k[0].endswith("_created")]
    # process metrics from prometheus_client's ProcessCollector on our registry
    assert v[("process_resident_memory_bytes", ())] > 1e6
    assert ("process_cpu_seconds_total", ()) in v and ("process_open_fds", ()) in v


def test_each_metrics_has_its_own_registry():
    a, b = metrics.Metrics(), metrics.Metrics()
    a.errors.inc(3)
    assert scrape(a)[1][("felix_errors_total", ())] == 3
    assert scrape(b)[1][("felix_errors_total", ())] == 0
    from prometheus_client import REGISTRY
    assert "felix_errors_total" not in {s.name for f in REGISTRY.collect() for s in f.samples}


def test_summary_quantiles_and_window():
    s = metrics.Summary("x_seconds", "x", max_age=0.2)
    assert all(math.isnan(q) for _, q in s.quantiles())      # Go reports NaN with no data
    for i in range(1, 101):
        s.observe(float(i))
    assert dict(s.quantiles()) == {0.5: 50.0, 0.9: 90.0, 0.99: 99.0}
    time.sleep(0.3)
    s.observe(7.0)
    assert dict(s.quantiles()) == {0.5: 7.0, 0.9: 7.0, 0.99: 7.0}   # old ones aged out
    assert s.count == 101 and s.sum == 5057.0                      # all-time


def test_counter_without_total_keeps_felixs_exact_name():
    c = metrics.Counter("felix_some_started", "x")
    c.inc(2)
    fam = metrics._family(c)
    assert fam.type == "unknown" and [(x.name, x.value) for x in fam.samples] == [("felix_some_started", 2)]


@dataclass
class FakeDaemon:
    """What DaemonCollector reads: the resource cache, the policy dataplane, synced."""
    cache: dict[str, Resource] = field(default_factory=dict)
    policy: Any = None
    synced: bool = False


def res(kind: str, name: str, ns: str | None = None, **spec: Any) -> Resource:
    meta: dict[str, Any] = {"name": name} | ({"namespace": ns} if ns else {})
    return Resource(kind, name, ns, {"kind": kind, "metadata": meta, "spec": spec}, 1)


def test_daemon_collector_cluster_counts_local_policies_and_resync_state():
    m = metrics.Metrics()
    policy = PolicyDataplane("n1", nft=FakeNftRunner())   # only its index is read
    d = FakeDaemon(policy=policy)
    m.add_collector(metrics.DaemonCollector(d, m))   # before the registry exists
    objs = [res("Node", "n1"), res("Node", "n2"), res("Node", "n3"),
            res("WorkloadEndpoint", "w1", "ns1", node="n1", interfaceName="cali1", ipNetworks=["198.19.90.1/32"]),
            res("WorkloadEndpoint", "w2", "ns1", node="n2", interfaceName="cali2", ipNetworks=["198.19.90.2/32"]),
            res("HostEndpoint", "h1", node="n1", interfaceName="eth0"),
            res("Profile", "p1"), res("Profile", "p2"),
            res("NetworkPolicy", "np1", "ns1", selector="all()"),
            res("GlobalNetworkPolicy", "gnp1", selector="app == 'none'"),
            res("IPPool", "pool1", cidr="198.19.90.0/24")]
    for r in objs:
        d.cache[f"{r.kind}/{r.namespace}/{r.name}"] = r
        if r.kind != "Node":
            policy.index.update(r.kind, r.name, r.namespace, r.doc)
    policy.index.recompute()
    types, v = scrape(m)
    want = {"felix_cluster_num_hosts": 3, "felix_cluster_num_workload_endpoints": 2,
            "felix_cluster_num_host_endpoints": 1, "felix_cluster_num_policies": 2,
            "felix_cluster_num_profiles": 2,
            # np1 selects w1 (local) - gnp1 selects nothing; w2 is on n2
            "felix_active_local_policies": 1,
            "felix_resync_state": metrics.WAIT_FOR_DATASTORE, "felix_resyncs_started": 0}
    for name, val in want.items():
        assert v[(name, ())] == val, name
    assert types["felix_resyncs_started"] == "unknown" and types["felix_cluster_num_hosts"] == "gauge"
    m.datastore_connected.set(1)
    assert scrape(m)[1][("felix_resync_state", ())] == metrics.RESYNC_IN_PROGRESS
    d.synced = True
    m.resyncs.inc()
    v = scrape(m)[1]
    assert v[("felix_resync_state", ())] == metrics.IN_SYNC
    assert v[("felix_resyncs_started", ())] == 2          # the first sync and one resync, as Felix
    assert v[("felix_resyncs_total", ())] == 1
    # changes follow at the next scrape
    del d.cache["Node/None/n3"]
    policy.index.update("GlobalNetworkPolicy", "gnp1", None, res("GlobalNetworkPolicy", "gnp1", selector="all()").doc)
    policy.index.recompute()
    v = scrape(m)[1]
    assert v[("felix_cluster_num_hosts", ())] == 2 and v[("felix_active_local_policies", ())] == 2


def test_daemon_collector_survives_a_cache_changing_under_it():
    """A dict that changes size during every read: the figure is left out, the scrape
    still answers with everything else."""
    class Racing(dict):
        def values(self):  # type: ignore[override]
            raise RuntimeError("dictionary changed size during iteration")
    m = metrics.Metrics()
    m.add_collector(metrics.DaemonCollector(FakeDaemon(cache=Racing()), m))  # type: ignore[arg-type]
    v = scrape(m)[1]
    assert ("felix_cluster_num_hosts", ()) not in v
    assert ("felix_resync_state", ()) in v and ("felix_errors_total", ()) in v


def test_disabled_metrics_do_not_import_prometheus_client():
    """With PrometheusMetricsEnabled false the agent never builds a registry: every call
    the daemon makes still works and prometheus_client is not imported."""
    code = textwrap.dedent("""
        import sys, time
        from calico_net.agent.metrics import Metrics
        m = Metrics()
        t = time.perf_counter()
        for _ in range(10000):
            m.errors.inc(); m.skipped.set(1); m.apply_duration.observe(0.01)
            m.active_local_endpoints.set(3); m.active_policies.set(2); m.resyncs.inc()
        per_call = (time.perf_counter() - t) / 60000
        assert m.errors.value == 10000 and m.apply_duration.count == 10000
        print("prometheus_client" in sys.modules, per_call)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    imported, per_call = out.stdout.split()
    assert imported == "False"
    assert float(per_call) < 50e-6          # a lock and an addition, not a registry
