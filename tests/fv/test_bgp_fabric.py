"""BGP across hosts with real BIRD, real etcd and the real confd process per host.

One fabric per module (tests/fv/bgp_util.py): three host namespaces on a bridge in
198.18.0.0/24, each registered by the start-up code and running its own confd and
BIRD, a workload per host with an IPAM address from a block affine to that host, and
an external BIRD as a top-of-rack router (AS 65001). The tests run in file order and
each one puts the datastore back the way it found it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from typing import Iterator

import pytest

import bgp_util as bu

pytestmark = [pytest.mark.root]

CONVERGE = 60  # seconds: a generous deadline on a loaded 2-core CI machine


@pytest.fixture(scope="module")
def fabric(tmp_path_factory) -> Iterator[bu.Fabric]:
    f = bu.Fabric(tmp_path_factory.mktemp("bgpfv"), 3)
    try:
        f.setup()
        for h in f.hosts:
            f.add_workload(h)
        f.start_tor()
        yield f
    except BaseException:
        print(f.diag())
        raise
    finally:
        f.teardown()


def mesh_names(f: bu.Fabric, h: bu.Host) -> set[str]:
    return {"Mesh_" + o.ip.replace(".", "_") for o in f.hosts if o is not h}


def all_blocks(f: bu.Fabric) -> set[str]:
    return set().union(*(f.blocks_of(h) for h in f.hosts))


def wait_full_mesh(f: bu.Fabric) -> None:
    bu.wait_for(lambda: all(mesh_names(f, h) <= h.established() for h in f.hosts),
                CONVERGE, "every mesh session Established", f.diag)


def wait_routes(f: bu.Fabric) -> None:
    """Every host has every other host's blocks as BIRD routes in its kernel."""
    def ok() -> bool:
        for h in f.hosts:
            others = set().union(*(f.blocks_of(o) for o in f.hosts if o is not h))
            if not others <= set(h.routes()):
                return False
        return True

    bu.wait_for(ok, CONVERGE, "every block routed on every other host", f.diag)


def wait_connectivity(f: bu.Fabric) -> None:
    bu.wait_for(lambda: not f.ping_matrix(), CONVERGE, "workloads reach each other",
                lambda: f"unreachable: {sorted(f.ping_matrix())}\n{f.diag()}")


def calicoctl_status(h: bu.Host) -> tuple[str, list[dict]]:
    cmd = [str(bu.VENV_BIN / "calicoctl"), "node", "status", "--bird-socket", h.sock]
    table = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    js = subprocess.run(cmd + ["-o", "json"], capture_output=True, text=True, timeout=30,
                        check=True).stdout
    return table, json.loads(js)


# ----------------------------------------------------------------------- mesh


def test_mesh_routes_and_workload_connectivity(fabric: bu.Fabric) -> None:
    f = fabric
    wait_full_mesh(f)
    wait_routes(f)
    # Block routes, not /32s, point at the owning host over the fabric.
    for h in f.hosts:
        routes = h.routes()
        for o in f.hosts:
            if o is h:
                continue
            for block in f.blocks_of(o):
                assert block.endswith("/26")
                assert routes[block].get("gateway") == o.ip, routes[block]
        # Its own blocks are blackholed locally by BIRD (workload /32s win).
        for block in f.blocks_of(h):
            assert routes[block].get("type") == "blackhole", routes[block]
        assert not [d for d in routes if d.endswith("/32")]
    wait_connectivity(f)


def test_node_registration_by_startup(fabric: bu.Fabric) -> None:
    for h in fabric.hosts:
        node = fabric.ds.get("Node", h.name)
        assert node["spec"]["bgp"]["ipv4Address"] == f"{h.ip}/24"
        assert (fabric.tmp / f"{h.name}-nodename").read_text() == h.name


def test_calicoctl_node_status_shows_established_mesh(fabric: bu.Fabric) -> None:
    f = fabric
    wait_full_mesh(f)
    for h in f.hosts:
        table, rows = calicoctl_status(h)
        peers = {r["peer_address"]: r for r in rows}
        for o in f.hosts:
            if o is h:
                continue
            assert peers[o.ip]["peer_type"] == "mesh"
            assert peers[o.ip]["info"].startswith("Established")
            line = next(ln for ln in table.splitlines() if f" {o.ip} " in ln)
            assert "node-to-node mesh" in line and "Established" in line, table


def test_confd_health_and_status(fabric: bu.Fabric) -> None:
    h = fabric.hosts[0]
    bu.wait_for(lambda: h.status().get("ready"), CONVERGE, "h1 confd ready", fabric.diag)
    code, body = h.http("/readiness")
    assert code == 200, body
    code, metrics = h.http("/metrics")
    assert code == 200
    assert "calico_confd_last_render_ok 1" in metrics
    st = h.status()
    assert st["config_sha256"] == hashlib.sha256(h.bird_cfg.read_bytes()).hexdigest()
    assert (h.bird_cfg.stat().st_mode & 0o777) == 0o640


# ------------------------------------------------------------- external peers


def tor_peer() -> dict:
    return {
        "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
        "metadata": {"name": "tor"},
        "spec": {"peerIP": bu.TOR_IP, "asNumber": bu.TOR_AS},
    }


def ensure_tor_peer(f: bu.Fabric) -> None:
    f.apply(tor_peer())
    glob = "Global_" + bu.TOR_IP.replace(".", "_")
    bu.wait_for(lambda: all(glob in h.established() for h in f.hosts), CONVERGE,
                "every host's session to the ToR Established", f.diag)


def test_external_tor_learns_every_block(fabric: bu.Fabric) -> None:
    f = fabric
    ensure_tor_peer(f)
    tor_sessions = bu.sessions(f.tor_sock)
    for h in f.hosts:
        assert tor_sessions[f"host_{h.name}"].info.startswith("Established")
    blocks = all_blocks(f)
    bu.wait_for(lambda: blocks <= set(f.tor_routes()), CONVERGE, "the ToR routes every block",
                lambda: f"ToR routes {sorted(f.tor_routes())}, blocks {sorted(blocks)}")
    routes = f.tor_routes()
    for h in f.hosts:
        for block in f.blocks_of(h):
            # The owner's own advertisement is preferred (shortest AS path, eBGP).
            hops = routes[block].get("nexthops") or [routes[block]]
            assert any(n.get("gateway") == h.ip for n in hops), routes[block]
    # Nothing but pool blocks: no /32s, no underlay.
    assert all(d.startswith("198.19.") and d.endswith("/26") for d in routes), sorted(routes)
    # A block claimed now reaches the ToR too.
    w = f.add_workload(f.hosts[1])
    new = {b for b in f.blocks_of(f.hosts[1]) if _contains(b, w.ip)}
    bu.wait_for(lambda: new <= set(f.tor_routes()), CONVERGE, "the ToR routes the new block")


def _contains(block: str, ip: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(ip) in ipaddress.ip_network(block)


def test_bad_peers_break_no_other_session(fabric: bu.Fabric) -> None:
    f = fabric
    ensure_tor_peer(f)
    wait_full_mesh(f)
    before = {h.name: {n: s.since for n, s in h.sessions().items()
                       if s.info.startswith("Established")} for h in f.hosts}
    f.start_ext2()  # AS 65002 at .253, ready to peer with h1
    unreachable = "Global_198_18_0_250"
    wrong_as = "Node_" + bu.EXT2_IP.replace(".", "_")
    f.apply({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
             "metadata": {"name": "unreachable"},
             "spec": {"peerIP": f"{bu.FABRIC}.250", "asNumber": bu.TOR_AS}})
    f.apply({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
             "metadata": {"name": "wrong-as"},
             "spec": {"node": "h1", "peerIP": bu.EXT2_IP, "asNumber": 65099}})
    try:
        h1 = f.hosts[0]
        bu.wait_for(lambda: all(unreachable in h.sessions() for h in f.hosts), CONVERGE,
                    "every host has the unreachable peer's session", f.diag)

        from calico_net.agent.confd.birdctl import show_protocols

        def wrong_as_refused() -> bool:
            # h1 refuses the OPEN (AS 65002, not the 65099 it was told): the other
            # side records h1's notification, h1's may already show its next attempt.
            mine = {x.name: x for x in show_protocols(h1.sock)}.get(wrong_as)
            tor = {x.name: x for x in show_protocols(f.ext2_sock)}.get("host_h1")
            errors = [p.details.get("Last error", "") for p in (mine, tor) if p is not None]
            return mine is not None and any("bad peer as" in e.lower() for e in errors)

        bu.wait_for(wrong_as_refused, CONVERGE, "h1 refuses the peer claiming a wrong AS",
                    lambda: f"{[(p.name, p.info, p.details) for p in show_protocols(h1.sock)]}"
                            f"\n{f.diag()}")
        for h in f.hosts:
            now = h.sessions()
            assert not now[unreachable].info.startswith("Established")
            # Every session that was up is still up, and never flapped.
            for name, since in before[h.name].items():
                assert now[name].info.startswith("Established"), (h.name, name, now[name])
                assert now[name].since == since, (h.name, name, since, now[name].since)
        assert not h1.sessions()[wrong_as].info.startswith("Established")
        wait_connectivity(f)
        assert all_blocks(f) <= set(f.tor_routes())
    finally:
        f.delete("BGPPeer", "unreachable")
        f.delete("BGPPeer", "wrong-as")
    bu.wait_for(lambda: not any(unreachable in h.sessions() for h in f.hosts)
                and wrong_as not in f.hosts[0].sessions(), CONVERGE, "bad peers removed", f.diag)


# ------------------------------------------------------- validation failures


def test_render_rejected_by_bird_keeps_running_config(fabric: bu.Fabric) -> None:
    """A link-local IPv6 peer without an interface passes the resource model but
    BIRD refuses it ("Link-local addresses require defined interface"): h1's confd must
    keep the running config and say so; h2/h3 skip the peer (no IPv6) and stay fine."""
    f = fabric
    h1 = f.hosts[0]
    wait_full_mesh(f)
    f.apply({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
             "metadata": {"name": "fv-pool-v6"}, "spec": {"cidr": "2001:db8:19::/48"}})
    f.update_node(h1, lambda d: d["spec"]["bgp"].update(ipv6Address="2001:db8:18::11/64"))
    try:
        bu.wait_for(lambda: "ipv6 {" in h1.bird_cfg.read_text() and h1.status().get("ready"),
                    CONVERGE, "h1 renders its IPv6 family", f.diag)
        good = h1.bird_cfg.read_bytes()
        good_mtime = h1.bird_cfg.stat().st_mtime_ns
        before = {n: s.since for n, s in h1.sessions().items()}
        f.apply({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
                 "metadata": {"name": "link-local"},
                 "spec": {"peerIP": "fe80::1", "asNumber": bu.TOR_AS}})
        bu.wait_for(lambda: h1.status().get("state") == "rejected", CONVERGE,
                    "h1 confd reports the rejected render", f.diag)
        st = h1.status()
        assert "Link-local" in st["error"]
        assert st["ready"] is False
        assert h1.bird_cfg.read_bytes() == good
        assert h1.bird_cfg.stat().st_mtime_ns == good_mtime
        assert st["config_sha256"] == hashlib.sha256(good).hexdigest()
        code, body = h1.http("/readiness")
        assert code == 503 and "rejected" in body
        code, metrics = h1.http("/metrics")
        assert "calico_confd_last_render_ok 0" in metrics
        assert _metric(metrics, "calico_confd_validation_failures_total") >= 1
        # BIRD still runs the old config: same sessions, none restarted.
        now = h1.sessions()
        assert {n: s.since for n, s in now.items()} == before
        # The other hosts skipped the peer (they have no IPv6) and are fine.
        for h in f.hosts[1:]:
            bu.wait_for(lambda h=h: "fe80::1" in h.bird_cfg.read_text(), CONVERGE,
                        f"{h.name} notes the skipped peer")
            assert h.status()["state"] == "ok"
        # Logged once, however often it re-renders.
        log = h1.confd_log.read_text()
        assert log.count("bird -p rejected the rendered config") == 1
    finally:
        f.delete("BGPPeer", "link-local")
    bu.wait_for(lambda: h1.status().get("state") == "ok", CONVERGE, "h1 good again", f.diag)
    f.update_node(h1, lambda d: d["spec"]["bgp"].pop("ipv6Address", None))
    f.delete("IPPool", "fv-pool-v6")
    bu.wait_for(lambda: "ipv6 {" not in h1.bird_cfg.read_text(), CONVERGE, "h1 IPv4 only again")
    wait_full_mesh(f)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def test_bad_datastore_value_is_skipped(fabric: bu.Fabric) -> None:
    f = fabric
    h1 = f.hosts[0]
    key = "/calico/resources/v3/projectcalico.org/bgppeers/garbage"
    f.client.put(key, b"{not json")
    try:
        bu.wait_for(lambda: "skipping bad datastore value " + key in h1.confd_log.read_text(),
                    CONVERGE, "confd logs the bad value")
        code, metrics = h1.http("/metrics")
        assert _metric(metrics, "calico_confd_skipped_bad_objects_total") >= 1
        assert h1.status()["ready"] is True
    finally:
        f.client.delete(key)
    wait_full_mesh(f)


# ----------------------------------------------------------- route reflector


def test_route_reflector_with_mesh_off(fabric: bu.Fabric) -> None:
    f = fabric
    h1, h2, h3 = f.hosts
    ensure_tor_peer(f)
    f.apply({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
             "metadata": {"name": "default"},
             "spec": {"nodeToNodeMeshEnabled": False, "asNumber": bu.CLUSTER_AS}})
    f.update_node(h1, lambda d: d["spec"]["bgp"].update(routeReflectorClusterID="198.18.255.1"))
    try:
        rr = "RR_" + h1.ip.replace(".", "_")
        clients = {"RRClient_" + h.ip.replace(".", "_") for h in (h2, h3)}

        def rr_topology() -> bool:
            if not clients <= h1.established():
                return False
            for h in (h2, h3):
                names = set(h.sessions())
                if rr not in h.established() or any(n.startswith("Mesh_") for n in names):
                    return False
            return not any(n.startswith("Mesh_") for n in h1.sessions())

        bu.wait_for(rr_topology, CONVERGE, "reflector sessions up, no mesh", f.diag)
        table, _ = calicoctl_status(h2)
        assert "route reflector" in table and "Established" in table
        wait_routes(f)
        # h2 learns h3's blocks through the reflector, next hop still h3.
        for block in f.blocks_of(h3):
            assert h2.routes()[block]["gateway"] == h3.ip
        wait_connectivity(f)
        assert all_blocks(f) <= set(f.tor_routes())
    finally:
        f.update_node(h1, lambda d: d["spec"]["bgp"].pop("routeReflectorClusterID", None))
        f.apply({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
                 "metadata": {"name": "default"},
                 "spec": {"nodeToNodeMeshEnabled": True, "asNumber": bu.CLUSTER_AS}})
    wait_full_mesh(f)
    wait_connectivity(f)


# -------------------------------------------------------------- MD5 passwords


def test_mesh_password_from_secret_file(fabric: bu.Fabric) -> None:
    f = fabric
    secret = f.tmp / "secrets" / "bgp-secrets" / "mesh"
    secret.parent.mkdir(parents=True, exist_ok=True)
    password = "fv-Secret-4711"
    secret.write_text(password + "\n")
    wait_full_mesh(f)
    before = {h.name: {n: s.since for n, s in h.sessions().items() if n.startswith("Mesh_")}
              for h in f.hosts}
    # BIRD's "since" has one-second resolution here: a session that came up in the same
    # second as its restart would look unchanged. Restart it in a later second: the
    # condition is the clock's second moving past the one `before` was read in.
    taken = int(time.time())
    bu.wait_for(lambda: int(time.time()) > taken, CONVERGE, "the next clock second")
    f.apply({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
             "metadata": {"name": "default"},
             "spec": {"nodeToNodeMeshEnabled": True, "asNumber": bu.CLUSTER_AS,
                      "nodeMeshPassword": {"secretKeyRef": {"name": "bgp-secrets",
                                                            "key": "mesh"}}}})
    try:
        bu.wait_for(lambda: all(f'password "{password}"' in h.bird_cfg.read_text()
                                for h in f.hosts), CONVERGE, "every host renders the password")
        # BIRD restarts each mesh session with TCP-MD5; they come back on both ends.
        def restarted_with_password() -> bool:
            for h in f.hosts:
                now = h.sessions()
                for name, since in before[h.name].items():
                    s = now.get(name)
                    if s is None or not s.info.startswith("Established") or s.since == since:
                        return False
            return True

        bu.wait_for(restarted_with_password, CONVERGE, "mesh sessions re-established with MD5",
                    f.diag)
        wait_connectivity(f)
        for h in f.hosts:
            assert password not in h.confd_log.read_text()
            assert password not in h.status_file.read_text()
    finally:
        f.apply({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
                 "metadata": {"name": "default"},
                 "spec": {"nodeToNodeMeshEnabled": True, "asNumber": bu.CLUSTER_AS}})
    bu.wait_for(lambda: all("password" not in h.bird_cfg.read_text() for h in f.hosts),
                CONVERGE, "passwords gone")
    wait_full_mesh(f)


# ------------------------------------------------------------- confd restart


def test_confd_restart_leaves_bird_alone(fabric: bu.Fabric) -> None:
    """A restarted confd renders the same bytes: no file write, and the one configure
    it sends at start-up restarts no session."""
    f = fabric
    h2 = f.hosts[1]
    wait_full_mesh(f)
    bu.wait_for(lambda: h2.status().get("ready"), CONVERGE, "h2 confd ready", f.diag)
    mtime = h2.bird_cfg.stat().st_mtime_ns
    before = {n: s.since for n, s in h2.sessions().items()}
    old_pid = h2.confd.pid
    bu.stop_process(h2.confd)
    h2.status_file.unlink()
    f.start_confd(h2)
    assert h2.confd.pid != old_pid
    bu.wait_for(lambda: h2.status().get("ready"), CONVERGE, "restarted confd ready", f.diag)
    assert h2.bird_cfg.stat().st_mtime_ns == mtime
    assert {n: s.since for n, s in h2.sessions().items()} == before
    code, metrics = h2.http("/metrics")
    assert "calico_confd_config_writes_total 0" in metrics
    assert "calico_confd_bird_reloads_total 1" in metrics
