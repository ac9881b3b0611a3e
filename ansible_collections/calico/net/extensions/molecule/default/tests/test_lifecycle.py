"""Day-2 checks on the converged stack, after test_default.py (file order matters here).

1. `site.yml --check --diff` on the converged cluster reports no change.
2. playbooks/etcd_backup.yml saves a snapshot and copies it to the controller.
3. playbooks/remove_node.yml takes the last node out: calico/node gone from it, its Node,
   IPAM affinities and endpoints gone from etcd, and (it is an etcd member) the etcd
   cluster down to the other members.
4. playbooks/add_node.yml --limit that node brings it back: etcd `member add` flow, the
   cluster healthy with every member, calico/node ready, BGP with the others again.
5. playbooks/etcd_restore.yml restores the snapshot of step 2 into the whole cluster:
   healthy again, the data of before the removal back: the node's Node resource, and a
   GlobalNetworkPolicy and an IPPool that were made before the backup and deleted after
   it (nothing else makes them again), with the resourceVersion they had (etcd's
   snapshot keeps each key's mod revision); every calico node ready afterwards.
6. playbooks/gc.yml: a WorkloadEndpoint of a node that does not exist is reported by the
   dry run (and kept), and deleted with calico_gc_apply=true.
"""

from __future__ import annotations

import json
import os
import re
import shlex
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
COLLECTION = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]).resolve()
SCENARIO = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]).resolve()
CLIENT = "--cacert /etc/calico/pki/etcd-ca.crt --cert /etc/calico/pki/etcd-client.crt --key /etc/calico/pki/etcd-client.key"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

FIRST, LEAVING = NODES[0], NODES[-1]


def node(name: str):
    # Ansible logs in as a plain user; the checks read root-only state through sudo
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}", sudo=True)


def address(name: str) -> str:
    return RUNNER.get_variables(name)["ansible_host"]


def run_ok(host, cmd: str) -> str:
    r = host.run(cmd)
    assert r.rc == 0, f"{cmd!r} on {host.backend.hostname} failed ({r.rc}): {r.stdout}{r.stderr}"
    return r.stdout


def playbook(path: Path | str, *args: str) -> str:
    """Run a playbook file, or one of the collection's by its FQCN (calico.net.<name>), as
    an operator runs it; the collection resolves from this checkout."""
    env = dict(os.environ)
    env.setdefault("ANSIBLE_CONFIG", str(Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible.cfg"))
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION.parents[2]))
    proc = subprocess.run(["ansible-playbook", "-i", INVENTORY, str(path), *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:]
    return proc.stdout


def etcd_members() -> list[dict]:
    out = run_ok(node(FIRST), f"etcdctl --endpoints https://{address(FIRST)}:2379 {CLIENT} member list -w json")
    return json.loads(out)["members"]


def bgp_running() -> bool:
    return all(node(n).file("/var/run/calico/bird.ctl").exists for n in NODES)


@pytest.fixture(scope="module")
def snapshot_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("etcd-backups")


def test_check_mode_on_the_converged_cluster_reports_no_change():
    out = playbook(SCENARIO / "converge.yml", "--check", "--diff")
    recap = RECAP.findall(out)
    assert recap, out[-3000:]
    changed = {r[0]: int(r[1]) for r in recap if int(r[1])}
    # each task that reported a change, with its host lines (the whole output is long)
    tasks = re.findall(r"^TASK \[(.*?)\].*?\n((?:(?!^TASK ).*\n)*?^changed: .*$)", out, re.M)
    assert not changed, f"--check reports changes on {changed}: {tasks}\n{out[-3000:]}"


# Made before the backup and deleted after it: only the restore can bring them back.
# The policy selects nothing and the pool is disabled, so neither changes the dataplane.
DRILL = [
    {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
     "metadata": {"name": "restore-drill"},
     "spec": {"selector": "restore-drill == 'yes'", "types": ["Ingress"],
              "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [7]}}]}},
    {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "restore-drill"},
     "spec": {"cidr": "198.18.250.0/24", "disabled": True, "ipipMode": "Never", "vxlanMode": "Never",
              "natOutgoing": False}},
]


def calicoctl_create(host, doc: dict) -> None:
    path = f"/tmp/{doc['kind'].lower()}-{doc['metadata']['name']}.json"
    run_ok(host, f"printf '%s' {shlex.quote(json.dumps(doc))} > {path} && calicoctl create -f {path}")


def resource_version(host, kind: str, name: str) -> str | None:
    r = host.run(f"calicoctl get {kind} {name} -o json")
    return json.loads(r.stdout)["metadata"]["resourceVersion"] if r.rc == 0 else None


@pytest.fixture(scope="module")
def drill_versions():
    return {}


def test_etcd_backup_saves_and_fetches_a_snapshot(snapshot_dir, drill_versions):
    first = node(FIRST)
    for doc in DRILL:
        calicoctl_create(first, doc)
        drill_versions[doc["kind"]] = resource_version(first, doc["kind"], doc["metadata"]["name"])
        assert drill_versions[doc["kind"]], doc["kind"]
    playbook("calico.net.etcd_backup", "-e", f"etcd_backup_fetch_dir={snapshot_dir}")
    snaps = sorted(snapshot_dir.glob("etcd-snapshot-*.db"))
    assert len(snaps) == 1 and snaps[0].stat().st_size > 0, snaps
    assert run_ok(node(ETCD[0]), "ls /var/backups/etcd").count("etcd-snapshot-") == 1
    for doc in DRILL:
        run_ok(first, f"calicoctl delete {doc['kind']} {doc['metadata']['name']}")
        assert resource_version(first, doc["kind"], doc["metadata"]["name"]) is None


def test_remove_node_cleans_host_and_datastore():
    out = playbook("calico.net.remove_node", "-e", f"calico_remove_node={LEAVING}")
    # the node module lists what it cleaned besides the Node (whose absence is checked
    # through calicoctl below): the leaving node ran workloads, so it held blocks
    assert "release block affinities" in out, out[-4000:]
    leaving = node(LEAVING)
    assert leaving.run("podman container exists calico-node").rc != 0
    assert not leaving.file("/etc/cni/net.d/10-calico.conflist").exists
    first = node(FIRST)
    assert first.run(f"calicoctl get node {LEAVING}").rc != 0
    affinities = run_ok(first, f"etcdctl --endpoints https://{address(FIRST)}:2379 {CLIENT} get --prefix "
                               f"--keys-only /calico/ipam/v2/host/{LEAVING}/")
    assert affinities.strip() == "", affinities
    weps = json.loads(run_ok(first, "calicoctl get workloadendpoints -A -o json"))
    assert all(w["spec"]["node"] != LEAVING for w in weps.get("items", [])), weps
    if LEAVING in ETCD:
        assert sorted(m["name"] for m in etcd_members()) == sorted(set(ETCD) - {LEAVING})
        assert not leaving.service("etcd").is_running


def test_add_node_brings_it_back_through_member_add():
    playbook("calico.net.add_node", "--limit", LEAVING)
    if LEAVING in ETCD:
        members = etcd_members()
        assert sorted(m.get("name") for m in members) == sorted(ETCD), members
        bootstrap = node(LEAVING).file("/etc/etcd/bootstrap.env").content_string
        assert "ETCD_INITIAL_CLUSTER_STATE=existing" in bootstrap, bootstrap
        run_ok(node(FIRST), f"etcdctl --endpoints https://{address(FIRST)}:2379 {CLIENT} endpoint health --cluster")
    back = node(LEAVING)
    assert run_ok(back, "curl -s -m 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:9099/readiness") == "200"
    assert run_ok(node(FIRST), f"calicoctl get node {LEAVING} -o json")
    assert bgp_running(), "calico/node runs no BIRD here: the BGP half of this check cannot run"
    deadline = time.monotonic() + 90
    while True:
        sessions = json.loads(run_ok(node(FIRST), "podman exec calico-node calicoctl node status -o json"))
        peer = [s for s in sessions if s["peer_address"] == address(LEAVING)]
        if (peer and peer[0]["info"].startswith("Established")) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert peer and peer[0]["info"].startswith("Established"), sessions


def test_etcd_restore_brings_back_the_snapshot(snapshot_dir, drill_versions):
    snaps = sorted(snapshot_dir.glob("etcd-snapshot-*.db"))
    assert snaps, "no snapshot (the backup check failed)"
    assert len(drill_versions) == len(DRILL), "the backup check did not make the drill's resources"
    playbook("calico.net.etcd_restore", "-e", f"etcd_restore_snapshot_src={snaps[-1]}")
    assert sorted(m["name"] for m in etcd_members()) == sorted(ETCD)
    first = node(FIRST)
    run_ok(first, f"etcdctl --endpoints https://{address(FIRST)}:2379 {CLIENT} endpoint health --cluster")
    # the snapshot predates the removal: the node's Node resource is there as it was then
    assert run_ok(first, f"calicoctl get node {LEAVING} -o json")
    # deleted after the backup, back from the snapshot with the revision they had
    for doc in DRILL:
        assert resource_version(first, doc["kind"], doc["metadata"]["name"]) == drill_versions[doc["kind"]], doc
    # every agent resyncs from the restored datastore and is ready again
    for name in NODES:
        deadline = time.monotonic() + 120
        while True:
            code = node(name).run("curl -s -m 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:9099/readiness").stdout
            if code == "200" or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert code == "200", f"calico/node on {name} not ready after the restore ({code})"
    for doc in DRILL:
        run_ok(first, f"calicoctl delete {doc['kind']} {doc['metadata']['name']}")


def test_gc_reports_then_deletes_an_endpoint_of_a_gone_node():
    first = node(FIRST)
    wep = {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
           "metadata": {"name": "gc-drill", "namespace": "default"},
           "spec": {"node": "gc-drill-gone-node", "orchestrator": "cni", "workload": "gc-drill",
                    "containerID": "gc-drill", "endpoint": "eth0", "interfaceName": "caligcdrill0",
                    "ipNetworks": ["198.18.251.1/32"], "profiles": ["kns.default"]}}
    calicoctl_create(first, wep)
    # the yaml callback folds long messages: compare with the whitespace collapsed
    out = " ".join(playbook("calico.net.gc", "-e", "calico_gc_grace=0").split())
    assert "WorkloadEndpoint default/gc-drill (node gc-drill-gone-node does not exist)" in out, out[-4000:]
    assert resource_version(first, "workloadendpoint", "gc-drill -n default"), "the dry run deleted it"
    out = " ".join(playbook("calico.net.gc", "-e", "calico_gc_grace=0", "-e", "calico_gc_apply=true").split())
    assert "deleted 1," in out and "WorkloadEndpoint default/gc-drill" in out, out[-4000:]
    assert resource_version(first, "workloadendpoint", "gc-drill -n default") is None
