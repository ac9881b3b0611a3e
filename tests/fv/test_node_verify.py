"""`calicoctl node verify` on the BGP fabric (tests/fv/bgp_util.py): three hosts, each
with its own confd and BIRD, a workload per host with its WorkloadEndpoint in etcd.

The command runs inside a host namespace with confd's environment, as on a node. It
passes on the healthy fabric; after each injected fault (BIRD killed on one node, a
block route deleted on a host, a block affinity moved to the wrong node, a workload
MTU above the underlay's) it exits 1 and names that fault; and it passes again once
the fault is repaired (each fault paired with a pass on the same hosts). The harness
runs no agent, so the readiness check is pointed at confd's own /readiness.
"""
from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import Any, Iterator

import pytest

import bgp_util as bu

pytestmark = [pytest.mark.root]

CONVERGE = 60


@pytest.fixture(scope="module")
def fabric(tmp_path_factory) -> Iterator[bu.Fabric]:
    f = bu.Fabric(tmp_path_factory.mktemp("verifyfv"), 3)
    try:
        f.setup()
        for h in f.hosts:
            w = f.add_workload(h)
            f.ds.apply({
                "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                "metadata": {"name": f"{h.name}-k8s-{w.name}-eth0", "namespace": "default",
                             "labels": {"projectcalico.org/namespace": "default",
                                        "projectcalico.org/orchestrator": "k8s"}},
                "spec": {"node": h.name, "orchestrator": "k8s", "workload": w.name,
                         "pod": w.name, "endpoint": "eth0", "interfaceName": w.iface,
                         "ipNetworks": [f"{w.ip}/32"]},
            })
        wait_healthy(f)
        yield f
    except BaseException:
        print(f.diag())
        raise
    finally:
        f.teardown()


def wait_healthy(f: bu.Fabric) -> None:
    def ok() -> bool:
        for h in f.hosts:
            others = set().union(*(f.blocks_of(o) for o in f.hosts if o is not h))
            names = {"Mesh_" + o.ip.replace(".", "_") for o in f.hosts if o is not h}
            if not names <= h.established() or not others <= set(h.routes()):
                return False
        return True

    bu.wait_for(ok, CONVERGE, "full mesh Established and every block routed", f.diag, interval=0.2)


def verify(f: bu.Fabric, h: bu.Host, mtu_file: str | None = None) -> tuple[int, dict[str, Any]]:
    env = dict(h.confd_env)
    env["FELIX_MTUFILEPATH"] = mtu_file or str(f.tmp / f"{h.name}-no-mtu-file")
    p = subprocess.run(
        ["ip", "netns", "exec", h.ns, str(bu.VENV_BIN / "calicoctl"), "node", "verify", "-o", "json",
         "--readiness-url", "http://127.0.0.1:9098/readiness"],
        env=env, capture_output=True, text=True, timeout=60)
    assert p.stdout, (p.returncode, p.stderr)
    return p.returncode, json.loads(p.stdout)


PLAYBOOK_SHIM = """#!/bin/sh
# Stands in for podman in verify.yml: `exec <container> calicoctl ...` runs the command
# in the host namespace named as the container, with that host's confd environment.
ns="$2"; node="${ns#%(prefix)s}"; shift 2
export NODENAME="$node" CALICO_BIRD_SOCKET="%(tmp)s/$node-bird.ctl" FELIX_MTUFILEPATH="%(tmp)s/no-mtu-file"
exec ip netns exec "$ns" "$@" --readiness-url http://127.0.0.1:9098/readiness
"""


def run_playbook(f: bu.Fabric) -> subprocess.CompletedProcess:
    """calico.net.verify (the collection's playbook) over the three hosts."""
    shim = f.tmp / "runtime-shim"
    shim.write_text(PLAYBOOK_SHIM % {"prefix": bu.PREFIX, "tmp": f.tmp})
    shim.chmod(0o755)
    inv = f.tmp / "verify-inventory.ini"
    inv.write_text("[calico_nodes]\n" + "".join(
        f"{h.name} ansible_connection=local calico_node_container_name={h.ns}\n" for h in f.hosts)
        + f"[all:vars]\ncalico_node_runtime={shim}\nansible_python_interpreter={bu.PYTHON}\n")
    env = dict(f.hosts[0].confd_env, ANSIBLE_COLLECTIONS_PATH=str(bu.REPO),
               ANSIBLE_LOCAL_TEMP=str(f.tmp / "ansible-tmp"), ANSIBLE_NOCOLOR="1")
    return subprocess.run([str(bu.VENV_BIN / "ansible-playbook"), "-i", str(inv), "calico.net.verify"],
                          env=env, capture_output=True, text=True, timeout=120)


def failures(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in report["checks"] if c["status"] == "fail"}


def assert_passes(f: bu.Fabric, h: bu.Host) -> dict[str, Any]:
    rc, report = verify(f, h)
    assert rc == 0 and report["ok"] and not failures(report), json.dumps(report, indent=1)
    return report


def wait_passes(f: bu.Fabric, h: bu.Host) -> None:
    last: list[Any] = []

    def ok() -> bool:
        rc, report = verify(f, h)
        last[:] = [report]
        return rc == 0

    bu.wait_for(ok, CONVERGE, f"verify passes on {h.name}", lambda: json.dumps(last, indent=1), interval=1)


def test_healthy_fabric_passes(fabric: bu.Fabric) -> None:
    for h in fabric.hosts:
        report = assert_passes(fabric, h)
        by = {c["check"]: c for c in report["checks"]}
        assert report["node"] == h.name
        assert by["bgp-sessions"]["status"] == "ok" and "2 session(s)" in by["bgp-sessions"]["detail"]
        assert by["block-routes"]["status"] == "ok"
        assert by["workload-routes"]["detail"].startswith("1 local endpoint")
        assert by["ipam"]["status"] == "ok" and by["etcd-members"]["status"] == "ok"
    p = run_playbook(fabric)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "ok=3" in p.stdout and "failed=0" in p.stdout


def test_table_output_and_exit_code(fabric: bu.Fabric) -> None:
    h = fabric.hosts[0]
    p = subprocess.run(["ip", "netns", "exec", h.ns, str(bu.VENV_BIN / "calicoctl"), "node", "verify",
                        "--readiness-url", "http://127.0.0.1:1/readiness"],
                       env=h.confd_env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    rows = {line.split()[0]: line.split()[1] for line in p.stdout.splitlines()[1:8] if line.strip()}
    assert rows["agent-readiness"] == "FAIL" and rows["bgp-sessions"] == "OK", p.stdout
    assert "FIX agent-readiness:" in p.stdout and "FAILED: 1 failed check(s) on h1" in p.stdout


def test_bird_stopped_on_one_node(fabric: bu.Fabric) -> None:
    h1, h2 = fabric.hosts[0], fabric.hosts[1]
    assert_passes(fabric, h1)
    fabric.kill_bird(h2)
    try:
        rc, report = verify(fabric, h2)
        assert rc == 1
        assert "BIRD is not answering" in failures(report)["bgp-sessions"]["detail"]
        mesh_h2 = "Mesh_" + h2.ip.replace(".", "_")
        bu.wait_for(lambda: mesh_h2 not in h1.established(), 30, "h1 sees h2's session down")
        rc, report = verify(fabric, h1)
        assert rc == 1
        bad = failures(report)["bgp-sessions"]
        assert mesh_h2 in bad["detail"] and bad["fix"]
        p = run_playbook(fabric)
        assert p.returncode != 0
        failed = [line for line in p.stdout.splitlines() if line.startswith("fatal:")]
        assert failed and all("[bgp-sessions]" in line and "fix:" in line for line in failed), p.stdout[-4000:]
        assert {line.split("[")[1].split("]")[0] for line in failed} == {"h1", "h2", "h3"}, failed
    finally:
        fabric.start_bird(h2)
    wait_healthy(fabric)
    assert_passes(fabric, h1)
    assert_passes(fabric, h2)


def test_block_route_deleted(fabric: bu.Fabric) -> None:
    h1, h3 = fabric.hosts[0], fabric.hosts[2]
    assert_passes(fabric, h1)
    block = sorted(fabric.blocks_of(h3))[0]
    # BIRD's periodic kernel scan puts the route back; a scan that falls inside the
    # verify run makes the round prove nothing, so the deletion is made again
    for _ in range(5):
        bu.wait_for(lambda: block in h1.routes(), 30, "BIRD's route to the block", fabric.diag)
        bu.sh("ip", "route", "del", block, "proto", "bird", ns=h1.ns)
        rc, report = verify(fabric, h1)
        if block not in h1.routes():
            break
    else:
        pytest.fail("BIRD restored the route during every one of 5 verify runs")
    assert rc == 1
    bad = failures(report)
    assert set(bad) == {"block-routes"}, bad
    assert block in bad["block-routes"]["detail"] and "h3" in bad["block-routes"]["detail"]
    # BIRD's kernel scan puts it back; verify passes again
    bu.wait_for(lambda: block in h1.routes(), 30, "BIRD restores the deleted route", fabric.diag)
    assert_passes(fabric, h1)


def test_block_affinity_corrupted(fabric: bu.Fabric) -> None:
    from calico_net.ipam import keys as ipam_keys

    h1, h2, h3 = fabric.hosts
    assert_passes(fabric, h1)
    block = sorted(fabric.blocks_of(h2))[0]
    net = ipaddress.ip_network(block)
    good_key = ipam_keys.affinity_key(h2.name, net)
    bad_key = ipam_keys.affinity_key(h3.name, net)
    kv = fabric.client.get(good_key)
    assert kv is not None
    # The corruption: the affinity key moved to h3 while the block says h2.
    fabric.client.delete(good_key)
    fabric.client.put(bad_key, kv.value)
    try:
        rc, report = verify(fabric, h1)
        assert rc == 1
        bad = failures(report)
        assert "ipam" in bad, report
        assert block in bad["ipam"]["detail"] and "affinit" in bad["ipam"]["detail"]
    finally:
        fabric.client.delete(bad_key)
        fabric.client.put(good_key, kv.value)
    wait_healthy(fabric)
    wait_passes(fabric, h1)


def test_mtu_above_underlay(fabric: bu.Fabric) -> None:
    h1 = fabric.hosts[0]
    path = fabric.tmp / "h1-mtu"
    path.write_text("1500\n")
    rc, report = verify(fabric, h1, str(path))
    assert rc == 0, report
    path.write_text("9000\n")
    rc, report = verify(fabric, h1, str(path))
    assert rc == 1
    bad = failures(report)
    assert set(bad) == {"mtu"} and "9000" in bad["mtu"]["detail"] and "1500" in bad["mtu"]["detail"]


def test_etcd_member_down(fabric: bu.Fabric) -> None:
    """A member in the cluster's list that does not answer (added as a learner, so the
    one-member cluster keeps its quorum, and never started) fails etcd-members."""
    h1 = fabric.hosts[0]
    added = fabric.client.member_add(["http://198.18.224.1:1"], learner=True)
    member_id = added["member"]["ID"]
    try:
        rc, report = verify(fabric, h1)
        assert rc == 1
        bad = failures(report)
        assert set(bad) == {"etcd-members"}, bad
        assert "1 of 2 member(s) unhealthy" in bad["etcd-members"]["detail"]
        assert "not started" in bad["etcd-members"]["detail"] and "member remove" in bad["etcd-members"]["fix"]
    finally:
        fabric.client.member_remove(member_id)
    assert_passes(fabric, h1)


def test_dataplane_fingerprints(tmp_path) -> None:
    """The dataplane check on a host running the agent (test_preview_diff's harness: its
    own namespace, etcd and agent, not the BGP fabric): it passes when the live table
    and workload routes are what etcd says; with the agent paused, a policy added in
    etcd and a workload route deleted by hand, it fails naming the policy's chain and
    the route; once the agent runs again it passes."""
    import os
    import signal

    import test_preview_diff as pd
    from calico_net.agent.felix.policy import policy_chain

    def run_verify(node: Any) -> tuple[int, dict[str, dict[str, Any]]]:
        skip = [a for c in ("etcd", "bgp", "block-routes", "workload-routes", "readiness", "mtu", "ipam")
                for a in ("--skip", c)]
        p = subprocess.run(["ip", "netns", "exec", pd.NS, str(bu.VENV_BIN / "calicoctl"), "node", "verify",
                            "-o", "json", *skip], env=node.env, capture_output=True, text=True, timeout=60)
        assert p.stdout, (p.returncode, p.stderr)
        return p.returncode, {c["check"]: c for c in json.loads(p.stdout)["checks"]}

    links = ("cali3db000001", "cali3web00002")
    with pd.agent_node(tmp_path, pd.base_docs(), links=links) as node:
        pd.wait_for(lambda: "198.19.184.1" in pd.sh("ip", "route", "show", "proto", "80", ns=pd.NS), 30,
                    "the agent's workload routes")
        rc, by = run_verify(node)
        assert rc == 0, by
        assert by["ruleset-fingerprint"]["status"] == "ok" and by["route-fingerprint"]["status"] == "ok", by
        assert "2 workload route(s)" in by["route-fingerprint"]["detail"]
        os.kill(node.proc.pid, signal.SIGSTOP)
        try:
            node.ds.apply({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                           "metadata": {"name": "cnt3-late"},
                           "spec": {"selector": "role == 'web'", "types": ["Ingress"],
                                    "ingress": [{"action": "Deny", "protocol": "TCP"}]}})
            pd.sh("ip", "route", "del", "198.19.184.1/32", "dev", "cali3db000001", "proto", "80", ns=pd.NS)
            rc, by = run_verify(node)
            assert rc == 1
            rs, rt = by["ruleset-fingerprint"], by["route-fingerprint"]
            chain = policy_chain(("GlobalNetworkPolicy", None, "cnt3-late"), "Ingress")
            assert rs["status"] == "fail" and f"missing: chain {chain}" in rs["detail"], rs
            assert "differ: " in rs["detail"] and "map cali-wl-to" in rs["detail"] and rs["fix"], rs
            assert rt["status"] == "fail" and "missing: 198.19.184.1/32 dev cali3db000001" in rt["detail"], rt
            assert "unexpected" not in rt["detail"] and rt["fix"], rt
        finally:
            os.kill(node.proc.pid, signal.SIGCONT)
        last: list[Any] = []

        def passes() -> bool:
            rc, by = run_verify(node)
            last[:] = [by]
            return rc == 0

        bu.wait_for(passes, CONVERGE, "verify passes once the agent caught up", lambda: json.dumps(last, indent=1),
                    interval=0.5)
