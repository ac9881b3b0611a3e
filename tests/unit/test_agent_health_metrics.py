"""Health and metrics HTTP endpoints (calico_net.agent.health / metrics)."""
from __future__ import annotations

import requests

from calico_net.agent import health, metrics


def test_health_endpoints():
    st = health.HealthState(liveness_timeout=60)
    srv = health.serve(st, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        assert requests.get(base + "/liveness", timeout=5).status_code == 200
        r = requests.get(base + "/readiness", timeout=5)
        assert r.status_code == 503 and "datastore" in r.text
        st.set_datastore(True, "ok")
        r = requests.get(base + "/readiness", timeout=5)
        assert r.status_code == 503 and "first apply" in r.text
        st.set_applied()
        assert requests.get(base + "/readiness", timeout=5).status_code == 200
        st.set_datastore(False, "cannot reach etcd")
        r = requests.get(base + "/readiness", timeout=5)
        assert r.status_code == 503 and "cannot reach etcd" in r.text
        st.last_tick -= 120
        assert requests.get(base + "/liveness", timeout=5).status_code == 503
        assert requests.get(base + "/other", timeout=5).status_code == 404
    finally:
        srv.shutdown()


def test_metrics_exposition():
    """Served through prometheus_client: parsed back by its own text parser."""
    from prometheus_client.parser import text_string_to_metric_families

    m = metrics.Metrics()
    m.skipped_total.inc(3)
    m.active_local_endpoints.set(4)
    m.apply_duration.observe(0.003)
    m.apply_duration.observe(2)
    srv = metrics.serve(m, "127.0.0.1", 0)
    try:
        r = requests.get(f"http://127.0.0.1:{srv.server_address[1]}/metrics", timeout=5)
    finally:
        srv.shutdown()
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    parsed = list(text_string_to_metric_families(r.text))
    # felix_skipped_bad_objects is both a gauge and (with _total) a counter: keyed by sample
    fams = {f.name: f for f in parsed if f.type != "counter"} | {f.name + "_total": f for f in parsed
                                                                 if f.type == "counter"}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in parsed for s in f.samples}
    assert samples[("felix_skipped_bad_objects_total", ())] == 3
    assert samples[("felix_active_local_endpoints", ())] == 4
    assert samples[("felix_apply_duration_seconds_bucket", (("le", "0.005"),))] == 1
    assert samples[("felix_apply_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert samples[("felix_int_dataplane_apply_time_seconds_count", ())] == 2
    assert fams["felix_int_dataplane_apply_time_seconds"].type == "summary"
    assert fams["felix_resyncs_total"].type == "counter"
    for name in ("felix_errors_total", "felix_datastore_connected", "process_cpu_seconds_total",
                 "process_resident_memory_bytes"):
        assert (name, ()) in samples
