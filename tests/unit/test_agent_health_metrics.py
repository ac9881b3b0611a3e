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
    m = metrics.Metrics()
    m.skipped_total.inc(3)
    m.active_local_endpoints.set(4)
    m.apply_duration.observe(0.003)
    m.apply_duration.observe(2)
    srv = metrics.serve(m, "127.0.0.1", 0)
    try:
        text = requests.get(f"http://127.0.0.1:{srv.server_address[1]}/metrics", timeout=5).text
    finally:
        srv.shutdown()
    lines = set(text.splitlines())
    assert "felix_skipped_bad_objects_total 3" in lines
    assert "felix_active_local_endpoints 4" in lines
    assert 'felix_apply_duration_seconds_bucket{le="0.005"} 1' in lines
    assert 'felix_apply_duration_seconds_bucket{le="+Inf"} 2' in lines
    assert "felix_apply_duration_seconds_count 2" in lines
    assert "# TYPE felix_resyncs_total counter" in lines
    for name in ("felix_active_policies", "felix_errors_total", "felix_datastore_connected"):
        assert any(l.startswith(name + " ") for l in lines)
