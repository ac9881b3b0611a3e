"""Verify the converged calico.net stack on the molecule lab nodes (testinfra).

Run by `molecule verify` with the scenario's inventory: per host, etcd answers over TLS
with a client certificate and refuses clients without one; calico/node runs and is ready
and its Node is registered; BGP sessions to every other node are Established. Across
hosts: workloads (podman containers on the `calico` CNI network inside the nodes) on
different nodes reach each other, and the collection's sample policy
(playbooks/policy_example.yml, in the `default` namespace because podman passes no pod
namespace to CNI) allows frontend→backend:8080 and backend→database:5432 and denies the
rest. The top-of-rack peer (calico.net.bird) has a session with every node and installs
their workload blocks. Workloads and the policy are removed again by fixture finalizers.
test_lifecycle.py (day-2 playbooks) runs after this file.

The only skips are per host: a check that is about etcd members runs on the etcd hosts
(the ToR peer is not one). A component that does not run fails its check.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import testinfra
import testinfra.utils.ansible_runner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
NODES = sorted(RUNNER.get_hosts("calico_nodes"))
ETCD = sorted(RUNNER.get_hosts("etcd"))
TORS = sorted(RUNNER.get_hosts("route_reflectors"))
testinfra_hosts = NODES

COLLECTION = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]).resolve()
WORKLOAD_IMAGE = "localhost/calico-lab-workload:latest"
ETCD_PKI = "/etc/etcd/pki"
CLIENT_PKI = "/etc/calico/pki"


def node(name: str):
    # Ansible logs in as a plain user; the checks read root-only state through sudo
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}", sudo=True)


def address(name: str) -> str:
    return RUNNER.get_variables(name)["ansible_host"]


def run_ok(host, cmd: str) -> str:
    r = host.run(cmd)
    assert r.rc == 0, f"{cmd!r} on {host.backend.hostname} failed ({r.rc}): {r.stdout}{r.stderr}"
    return r.stdout


def bird_running(host) -> bool:
    return host.file("/var/run/calico/bird.ctl").exists


def require_bgp() -> None:
    """Fail (with the reason) when calico/node runs no BIRD; cross-node routes need it."""
    missing = [n for n in NODES if not bird_running(node(n))]
    if missing:
        pytest.fail(f"BIRD is not running in calico/node on {', '.join(missing)} (no "
                    "/var/run/calico/bird.ctl: the image's supervisor starts BIRD only once "
                    "confd has written bird.cfg): no BGP routes between nodes")


# --- etcd -----------------------------------------------------------------------------------


def test_etcd_healthy_over_tls(host):
    if host.backend.hostname not in ETCD:
        pytest.skip("not an etcd member")
    ip = address(host.backend.hostname)
    out = run_ok(host, f"etcdctl --endpoints https://{ip}:2379 --cacert {CLIENT_PKI}/etcd-ca.crt "
                       f"--cert {CLIENT_PKI}/etcd-client.crt --key {CLIENT_PKI}/etcd-client.key "
                       "endpoint health --cluster -w json")
    health = json.loads(out)
    assert len(health) == len(ETCD)
    assert all(h["health"] for h in health), health


def test_etcd_refuses_plaintext_and_anonymous_clients(host):
    if host.backend.hostname not in ETCD:
        pytest.skip("not an etcd member")
    ip = address(host.backend.hostname)
    # plain HTTP on the client port: no health answer (Go answers 400 to HTTP on a TLS port)
    plain = host.run(f"curl -s -m 5 http://{ip}:2379/health")
    assert '"health":"true"' not in plain.stdout
    # TLS without a client certificate: the handshake is refused
    anonymous = host.run(f"curl -s -m 5 --cacert {ETCD_PKI}/ca.crt https://{ip}:2379/health")
    assert anonymous.rc != 0 and '"health"' not in anonymous.stdout, anonymous.stdout
    # and the peer port speaks TLS only too
    peer = host.run(f"curl -s -m 5 http://{ip}:2380/members")
    assert "peerURLs" not in peer.stdout


def test_etcd_peer_port_refuses_client_certificates(host):
    """Peers are trusted through their own CA: a node's client certificate is no peer."""
    if host.backend.hostname not in ETCD:
        pytest.skip("not an etcd member")
    ip = address(host.backend.hostname)
    tls = f"--http1.1 --cacert {ETCD_PKI}/peer-ca.crt"
    client = host.run(f"curl -s -m 5 {tls} --cert {CLIENT_PKI}/etcd-client.crt "
                      f"--key {CLIENT_PKI}/etcd-client.key https://{ip}:2380/members")
    assert client.rc != 0 and "peerURLs" not in client.stdout, client.stdout
    # the same request with this member's own peer certificate is answered: the refusal
    # above is about the certificate, not about the port
    peer = run_ok(host, f"curl -s -m 5 {tls} --cert {ETCD_PKI}/peer.crt --key {ETCD_PKI}/peer.key "
                        f"https://{ip}:2380/members")
    assert "peerURLs" in peer, peer


def test_etcd_runs_with_calicos_transaction_limit(host):
    if host.backend.hostname not in ETCD:
        pytest.skip("not an etcd member")
    assert "ETCD_MAX_TXN_OPS=20000" in host.file("/etc/etcd/etcd.env").content_string
    assert host.service("etcd").is_running and host.service("etcd").is_enabled


# --- calico/node ----------------------------------------------------------------------------


def test_calico_node_running_and_ready(host):
    state = json.loads(run_ok(host, "podman container inspect calico-node"))[0]
    assert state["State"]["Running"], state["State"]
    assert state["HostConfig"]["Privileged"] is True
    assert state["HostConfig"]["NetworkMode"] == "host"
    out = run_ok(host, "curl -s -m 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:9099/readiness")
    assert out == "200"


def test_node_registered_with_its_address(host):
    name = host.backend.hostname
    doc = json.loads(run_ok(host, f"calicoctl get node {name} -o json"))
    assert doc["spec"]["bgp"]["ipv4Address"].split("/")[0] == address(name)
    assert host.file("/var/lib/calico/nodename").content_string.strip() == name


def test_calicoctl_and_cni_installed(host):
    assert host.file("/etc/calico/calicoctl.cfg").contains("etcdv3")
    conflist = json.loads(host.file("/etc/cni/net.d/10-calico.conflist").content_string)
    assert conflist["plugins"][0]["type"] == "calico"
    assert conflist["plugins"][0]["nodename"] == host.backend.hostname
    for plugin in ("calico", "calico-ipam"):
        assert host.file(f"/opt/cni/bin/{plugin}").exists
    assert "calico" in run_ok(host, "podman network ls --format '{{.Name}}'").split()


def test_bgp_full_mesh_established(host):
    if not bird_running(host):
        require_bgp()
    sessions = json.loads(run_ok(host, "podman exec calico-node calicoctl node status -o json"))
    peers = {s["peer_address"]: s for s in sessions}
    others = {address(n) for n in NODES if n != host.backend.hostname}
    assert others <= set(peers), f"missing mesh peers: {others - set(peers)}"
    for ip in others:
        assert peers[ip]["peer_type"] == "mesh"
        assert peers[ip]["info"].startswith("Established"), peers[ip]


# --- workloads across nodes -----------------------------------------------------------------


class Workloads:
    """Containers on calico networks inside the nodes; removed at the end."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str]] = []

    def start(self, on: str, name: str, network: str, listen: list[int] = ()) -> str:
        host = node(on)
        host.run(f"podman rm -f -t 0 {name}")
        listeners = " & ".join(f"nc -lk {p} >/dev/null" for p in listen) or "true"
        # NET_RAW: ping needs a raw socket (podman drops the capability by default)
        run_ok(host, f"podman run -d --name {name} --network {network} --cap-add NET_RAW {WORKLOAD_IMAGE} "
                     f"sh -c '{listeners}; sleep infinity'")
        self.made.append((on, name))
        ip = run_ok(host, f"podman exec {name} ip -4 -o addr show dev eth0").split()[3].split("/")[0]
        return ip

    def remove(self) -> None:
        for on, name in self.made:
            node(on).run(f"podman rm -f -t 0 {name}")


@pytest.fixture(scope="module")
def workloads():
    w = Workloads()
    yield w
    w.remove()


def reaches(src_node: str, src: str, ip: str, port: int | None = None) -> bool:
    host = node(src_node)
    cmd = (f"podman exec {src} nc -z -w 2 {ip} {port}" if port
           else f"podman exec {src} ping -c 1 -W 2 {ip}")
    # a fresh route or endpoint may take a moment to be programmed: retry a few times
    for dummy in range(5):
        if host.run(cmd).rc == 0:
            return True
        time.sleep(1)
    return False


def never_reaches(src_node: str, src: str, ip: str, port: int | None = None) -> bool:
    host = node(src_node)
    cmd = (f"podman exec {src} nc -z -w 2 {ip} {port}" if port
           else f"podman exec {src} ping -c 1 -W 2 {ip}")
    return host.run(cmd).rc != 0


def test_workloads_on_different_nodes_reach_each_other(workloads):
    ips = {n: workloads.start(n, f"molecule-wl-{i}", "calico", listen=[7000])
           for i, n in enumerate(NODES, 1)}
    neighbour = workloads.start(NODES[0], "molecule-wl-1b", "calico", listen=[7000])
    assert len(set(ips.values()) | {neighbour}) == len(NODES) + 1, ips
    # the same node first: endpoints, routes, proxy ARP and the network's profile work
    # without BGP
    assert reaches(NODES[0], "molecule-wl-1", neighbour), "no ping to a workload on the same node"
    assert reaches(NODES[0], "molecule-wl-1", neighbour, 7000), "no TCP to a workload on the same node"
    require_bgp()
    for i, src in enumerate(NODES, 1):
        for dst in NODES:
            if dst != src:
                assert reaches(src, f"molecule-wl-{i}", ips[dst]), f"{src} -> {dst} ({ips[dst]}): no ping"
                assert reaches(src, f"molecule-wl-{i}", ips[dst], 7000), f"{src} -> {dst}:7000 refused"


def test_workloads_survive_calico_node_being_killed(workloads):
    """calico/node's main process SIGKILLed on a node: its workloads keep running (each nested container
    has a cgroup of its own), calico/node comes back by itself and the node's workload is
    reachable from another node again."""
    victim, victim_wl, src_wl = NODES[1 % len(NODES)], "molecule-wl-2", "molecule-wl-1"
    host = node(victim)
    fmt = "'{{.State.Pid}} {{.State.StartedAt}}'"
    before_wl = run_ok(host, f"podman inspect --format {fmt} {victim_wl}").strip()
    before_node = run_ok(host, f"podman inspect --format {fmt} calico-node").strip()
    wl_ip = run_ok(host, f"podman exec {victim_wl} ip -4 -o addr show dev eth0").split()[3].split("/")[0]
    # a crash, not an operator's stop: SIGKILL to the container's main process (podman
    # restarts it under its restart policy; `podman kill` would count as a stop)
    pid = run_ok(host, "podman inspect --format '{{.State.Pid}}' calico-node").strip()
    run_ok(host, f"kill -9 {pid}")
    deadline = time.monotonic() + 120  # hang guard
    while True:
        now_node = host.run(f"podman inspect --format {fmt} calico-node").stdout.strip()
        ready = host.run("curl -s -m 2 -o /dev/null -w '%{http_code}' http://127.0.0.1:9099/readiness").stdout
        if now_node and now_node != before_node and ready == "200":
            break
        assert time.monotonic() < deadline, f"calico-node did not come back ready: {now_node!r} {ready!r}"
        time.sleep(1)
    # the same workload process, never restarted
    assert run_ok(host, f"podman inspect --format {fmt} {victim_wl}").strip() == before_wl
    assert run_ok(host, f"podman inspect --format '{{{{.State.Running}}}}' {victim_wl}").strip() == "true"
    if victim != NODES[0]:
        require_bgp()
    assert reaches(NODES[0], src_wl, wl_ip), f"{src_wl} -> {victim_wl} ({wl_ip}) after the kill"
    assert reaches(NODES[0], src_wl, wl_ip, 7000), f"{src_wl} -> {victim_wl}:7000 after the kill"


def test_tor_peer_learns_the_workload_blocks(workloads):
    """The calico.net.bird peer: a session with every node, their blocks in its kernel."""
    assert TORS, "the scenario's inventory has a route_reflectors host (calico-molecule-tor)"
    tor = node(TORS[0])
    assert tor.service("bird").is_running and tor.service("bird").is_enabled
    protocols = run_ok(tor, "birdc show protocols")
    for n in NODES:
        assert f"Peer_{address(n).replace('.', '_')}" in protocols, protocols
    require_bgp()
    deadline = time.monotonic() + 60
    while True:
        protocols = run_ok(tor, "birdc show protocols")
        routes = run_ok(tor, "ip -4 route show proto bird")
        up = all(re.search(rf"Peer_{address(n).replace('.', '_')}\s+BGP\s+---\s+up\s+\S+\s+Established", protocols)
                 for n in NODES)
        # every node's block (the workloads test made one on each) via that node
        via = all(f"via {address(n)}" in routes for n in NODES)
        if (up and via) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert up, protocols
    assert via, routes


# --- the sample policy ------------------------------------------------------------------------


def ansible_playbook(playbook: Path | str, *extra: str) -> None:
    env = dict(os.environ)
    env.setdefault("ANSIBLE_CONFIG", str(Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible.cfg"))
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION.parents[2]))
    cmd = ["ansible-playbook", "-i", INVENTORY, str(playbook),
           "-e", f"policy_example_hosts={NODES[0]}", "-e", "policy_example_namespace=default",
           # the node's etcd client key is root's; Ansible logs in as a plain user
           "-e", "policy_example_become=true",
           "-e", "ansible_python_interpreter=/opt/calico/venv/bin/python", *extra]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]


@pytest.fixture(scope="module")
def sample_policy(workloads):
    assert (COLLECTION / "playbooks" / "policy_example.yml").exists()
    playbook = "calico.net.policy_example"  # by its FQCN, as an operator runs it
    # tiers on different nodes (frontend on the first, backend on the second, database on
    # the last): the policy is checked across BGP-carried routes
    require_bgp()
    tiers = {
        "frontend": (NODES[0], [80, 5432]),
        "backend": (NODES[1 % len(NODES)], [8080, 80]),
        "database": (NODES[-1], [5432, 8080]),
    }
    ips = {tier: workloads.start(on, f"molecule-{tier}", f"shop-{tier}", listen=ports)
           for tier, (on, ports) in tiers.items()}
    ansible_playbook(playbook)
    yield {tier: (tiers[tier][0], f"molecule-{tier}", ips[tier]) for tier in tiers}
    ansible_playbook(playbook, "-e", "policy_example_state=absent")


def test_sample_policy_allows_the_application_paths(sample_policy):
    fe_node, fe, dummy = sample_policy["frontend"]
    be_node, be, be_ip = sample_policy["backend"]
    db_ip = sample_policy["database"][2]
    assert reaches(fe_node, fe, be_ip, 8080), "frontend -> backend:8080 should be allowed"
    assert reaches(be_node, be, db_ip, 5432), "backend -> database:5432 should be allowed"


def test_sample_policy_denies_everything_else(sample_policy):
    fe_node, fe, fe_ip = sample_policy["frontend"]
    be_node, be, be_ip = sample_policy["backend"]
    db_node, db, db_ip = sample_policy["database"]
    assert never_reaches(fe_node, fe, db_ip, 5432), "frontend -> database:5432 must be denied"
    assert never_reaches(fe_node, fe, be_ip), "frontend -> backend ping must be denied"
    assert never_reaches(be_node, be, fe_ip, 80), "backend -> frontend:80 must be denied (egress)"
    assert never_reaches(db_node, db, be_ip, 8080), "database -> backend:8080 must be denied (egress)"
    assert never_reaches(db_node, db, fe_ip, 80), "database -> frontend:80 must be denied"


# --- etcd from a release tarball ---------------------------------------------------------------


def test_etcd_release_tarball_install(tmp_path):
    """etcd_install_method=tarball from a controller-side tarball: checksum checked,
    binaries installed, a second run changes nothing, a wrong checksum is refused.
    The tarball is laid out like an official release, made from this host's etcd."""
    import hashlib
    import shutil
    import tarfile

    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    etcdctl = shutil.which("etcdctl") or "/usr/bin/etcdctl"
    version = subprocess.run([etcd, "--version"], stdout=subprocess.PIPE, text=True, check=True).stdout
    version = re.search(r"etcd Version: (\S+)", version).group(1)
    tarball = tmp_path / f"etcd-v{version}-linux-amd64.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for binary in (etcd, etcdctl):
            tar.add(binary, arcname=f"etcd-v{version}-linux-amd64/{Path(binary).name}")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    play = tmp_path / "tarball.yml"
    bin_dir = "/opt/calico-molecule-etcd-tarball"
    play.write_text(
        f"- hosts: {NODES[0]}\n  become: true\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_role:\n        name: calico.net.etcd\n        tasks_from: install_tarball\n"
        f"      vars:\n        etcd_install_method: tarball\n        etcd_version: '{version}'\n"
        f"        etcd_tarball_src: {tarball}\n        etcd_tarball_checksum: \"{{{{ checksum }}}}\"\n"
        f"        etcd_tarball_bin_dir: {bin_dir}\n")
    host = node(NODES[0])
    try:
        host.run(f"mkdir -p {bin_dir}")
        first = run_playbook(play, "-e", f"checksum=sha256:{digest}")
        assert "changed: [" in first, first[-3000:]
        assert version in run_ok(host, f"{bin_dir}/etcd --version")
        assert host.file(f"{bin_dir}/etcdctl").mode == 0o755
        second = run_playbook(play, "-e", f"checksum=sha256:{digest}")
        assert re.search(r"changed=0\s", second), second[-3000:]
        host.run(f"rm -f {bin_dir}/etcd")
        bad = run_playbook(play, "-e", "checksum=sha256:" + "0" * 64, check=False)
        assert "does not match etcd_tarball_checksum" in bad, bad[-3000:]
        assert not host.file(f"{bin_dir}/etcd").exists
    finally:
        host.run(f"rm -rf {bin_dir}")


def run_playbook(playbook: Path, *extra: str, check: bool = True) -> str:
    env = dict(os.environ)
    env.setdefault("ANSIBLE_CONFIG", str(Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible.cfg"))
    proc = subprocess.run(["ansible-playbook", "-i", INVENTORY, str(playbook), *extra], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout
