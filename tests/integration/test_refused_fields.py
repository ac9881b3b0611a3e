"""Calico fields calico.net cannot enforce are refused before anything is stored.

A rule's `http` match, `services` in a rule's source or destination, a HostEndpoint
found by its `expectedIPs` alone and IPAMConfiguration's KubeVirt and cool-down
settings would otherwise be accepted and then not enforced (a policy that fails open).
Here each one goes through what an operator uses, against the session's real etcd:

* `calicoctl validate -f` and `calicoctl apply -f` (subprocesses, as run by hand) exit
  non-zero with the field path and "not supported by calico.net yet" on one line, and
  the etcd keyspace is byte for byte what it was;
* the Ansible modules (`calico.net.global_network_policy`, `network_policy`, `profile`,
  `host_endpoint`, `resource`, through ansible-playbook) fail with the field path among
  their `errors`, and write nothing.

Fields Calico accepts and calico.net stores without effect go the other way: calicoctl
`validate`, `apply` and `replace` name each one on stderr (kind, name, path, reason from
`model.registry`), exit 0, and the documents are stored with them, as Calico stores them.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

NOT_YET = "not supported by calico.net yet"
TESTS = Path(__file__).resolve().parent.parent

# (case, manifest, field path of the refusal)
REFUSED = [
    ("gnp-rule-http", """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web-get-only}
spec:
  selector: app == 'web'
  ingress:
    - action: Allow
      protocol: TCP
      http: {methods: [GET]}
""", "spec.ingress[0].http"),
    ("np-rule-destination-services", """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: to-dns, namespace: web}
spec:
  selector: app == 'db'
  egress:
    - action: Allow
      destination: {services: {name: kube-dns, namespace: kube-system}}
""", "spec.egress[0].destination.services"),
    ("profile-rule-source-services", """
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: from-frontend}
spec:
  ingress:
    - action: Allow
      source: {services: {name: frontend, namespace: web}}
""", "spec.ingress[0].source.services"),
    ("hep-expected-ips-only", """
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node-1-by-ip, labels: {host-endpoint: "true"}}
spec:
  node: node-1
  expectedIPs: [198.18.0.11]
""", "spec.interfaceName"),
    ("ipamconfig-kubevirt", """
apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata: {name: default}
spec:
  strictAffinity: false
  kubeVirtVMAddressPersistence: Enabled
""", "spec.kubeVirtVMAddressPersistence"),
    ("ipamconfig-cooldown", """
apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata: {name: default}
spec:
  ipCooldownSeconds: 30
""", "spec.ipCooldownSeconds"),
]
IDS = [case for case, _, _ in REFUSED]

# A valid document that goes into the same manifests: apply is all-or-nothing.
VALID = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: lab-fabric}
spec: {nets: [198.18.0.0/24]}
"""


@pytest.fixture
def ctl(etcd, etcd_client):
    env = etcd.env()
    calicoctl = str(Path(sys.executable).parent / "calicoctl")

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([calicoctl, *args], input=stdin, capture_output=True, text=True,
                              env=env, timeout=60)

    return run


def keyspace(client) -> list[tuple[str, bytes, int]]:
    kvs, _ = client.get_prefix("/")
    return [(kv.key, kv.value, kv.mod_revision) for kv in kvs]


def assert_refused(proc: subprocess.CompletedProcess, path: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert f"{path}: {NOT_YET}" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("case,manifest,path", REFUSED, ids=IDS)
def test_calicoctl_validate_refuses(ctl, tmp_path, case, manifest, path):
    f = tmp_path / f"{case}.yaml"
    f.write_text(manifest)
    assert_refused(ctl("validate", "-f", str(f)), path)


@pytest.mark.parametrize("case,manifest,path", REFUSED, ids=IDS)
def test_calicoctl_apply_refuses_and_writes_nothing(ctl, etcd_client, tmp_path, case, manifest, path):
    # something stored already, so "nothing written" is a comparison, not an empty read
    existing = ctl("apply", "-f", "-", stdin=VALID)
    assert existing.returncode == 0, existing.stderr
    before = keyspace(etcd_client)
    f = tmp_path / f"{case}.yaml"
    f.write_text(manifest)
    assert_refused(ctl("apply", "-f", str(f)), path)
    assert keyspace(etcd_client) == before
    # with a valid document in the same manifest, neither is written
    both = tmp_path / f"{case}-and-valid.yaml"
    both.write_text(VALID.replace("lab-fabric", "second-set") + "---" + manifest)
    assert_refused(ctl("apply", "-f", str(both)), path)
    assert keyspace(etcd_client) == before
    stored = yaml.safe_load(ctl("get", "globalnetworksets", "-o", "yaml").stdout)
    names = [d["metadata"]["name"] for d in stored.get("items", [stored])]
    assert names == ["lab-fabric"]


# --- the Ansible modules ---------------------------------------------------------------------

def _playbook_runner():
    spec = importlib.util.spec_from_file_location("_refused_fields_playbook_runner",
                                                  TESTS / "ansible" / "playbook_runner.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# (register name, module, options, field path of the refusal)
MODULE_CASES = [
    ("gnp_rule_http", "calico.net.global_network_policy",
     {"name": "web-get-only", "selector": "app == 'web'",
      "ingress": [{"action": "Allow", "protocol": "TCP", "http": {"methods": ["GET"]}}]},
     "spec.ingress[0].http"),
    ("np_rule_services", "calico.net.network_policy",
     {"name": "to-dns", "namespace": "web", "selector": "app == 'db'",
      "egress": [{"action": "Allow", "destination": {"services": {"name": "kube-dns", "namespace": "kube-system"}}}]},
     "spec.egress[0].destination.services"),
    ("profile_rule_services", "calico.net.profile",
     {"name": "from-frontend", "ingress": [{"action": "Allow", "source": {"services": {"name": "frontend", "namespace": "web"}}}]},
     "spec.ingress[0].source.services"),
    ("hep_expected_ips_only", "calico.net.host_endpoint",
     {"name": "node-1-by-ip", "node": "node-1", "expected_ips": ["198.18.0.11"]},
     "spec.interfaceName"),
    ("ipamconfig_cooldown", "calico.net.resource",
     {"definition": {"apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration",
                     "metadata": {"name": "default"}, "spec": {"ipCooldownSeconds": 30}}},
     "spec.ipCooldownSeconds"),
]


@pytest.mark.slow
def test_modules_refuse_and_write_nothing(etcd, etcd_client, tmp_path):
    runner = _playbook_runner()
    before = keyspace(etcd_client)
    out = tmp_path / "results.json"
    tasks = []
    for register, module, options, _ in MODULE_CASES:
        tasks.append({"name": f"refused: {register}", module: options,
                      "register": register, "ignore_errors": True})
    results = {register: f"{{{{ {register} }}}}" for register, *_ in MODULE_CASES}
    tasks.append({"name": "write the results", "ansible.builtin.copy": {
        "content": "{{ results | to_json }}", "dest": str(out)}, "vars": {"results": results}})
    playbook = tmp_path / "refused.yml"
    playbook.write_text(yaml.safe_dump([{"name": "fields calico.net cannot enforce",
                                         "hosts": "localhost", "gather_facts": False,
                                         "tasks": tasks}], sort_keys=False))
    run = runner.run_playbook(playbook, etcd.env(), tmp_path / "ansible")
    assert run.returncode == 0, run.tail()
    got = json.loads(out.read_text())
    for register, module, _, path in MODULE_CASES:
        result = got[register]
        assert result.get("failed") is True, (register, result)
        assert result.get("changed") is False, (register, result)
        paths = [e["path"] for e in result.get("errors", [])]
        assert path in paths, (register, result.get("msg"))
        assert f"{path}: {NOT_YET}" in result["msg"], (register, result["msg"])
    assert keyspace(etcd_client) == before


# --- fields stored without effect: warned about, still stored --------------------------------

NO_EFFECT_MANIFEST = """
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  ipipMTU: 1440
  bpfEnabled: false
  wireguardEnabled: true
  deviceRouteProtocol: 3
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: global}
spec: {logSeverityScreen: Debug}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: annotated
  finalizers: [example.com/keep]
spec:
  selector: app == 'web'
  ingress:
    - action: Allow
      source: {nets: [198.19.213.0/24]}
      metadata: {annotations: {why: ticket-1}}
"""
NO_EFFECT_WARNINGS = [
    # in the model's field order: the order calicoctl stores the document in
    'Warning: FelixConfiguration "default": spec.deviceRouteProtocol: no effect in calico.net: ',
    'Warning: FelixConfiguration "default": spec.wireguardEnabled: no effect in calico.net: ',
    'Warning: FelixConfiguration "global": metadata.name: no effect in calico.net: ',
    'Warning: GlobalNetworkPolicy "annotated": metadata.finalizers: no effect in calico.net: ',
    'Warning: GlobalNetworkPolicy "annotated": spec.ingress[0].metadata.annotations: no effect in calico.net: ',
]


def assert_warned(stderr: str) -> None:
    # (the etcd transport's own notice about a plaintext endpoint is another line)
    lines = [line for line in stderr.splitlines() if line.startswith("Warning: ")]
    assert len(lines) == len(NO_EFFECT_WARNINGS), stderr
    for line, start in zip(lines, NO_EFFECT_WARNINGS):
        assert line.startswith(start) and len(line) > len(start), (line, start)


def test_no_effect_fields_are_warned_about_and_stored(ctl, etcd_client, tmp_path):
    f = tmp_path / "no-effect.yaml"
    f.write_text(NO_EFFECT_MANIFEST)
    before = keyspace(etcd_client)
    checked = ctl("validate", "-f", str(f))
    assert checked.returncode == 0, checked.stderr
    assert_warned(checked.stderr)
    assert keyspace(etcd_client) == before  # validate writes nothing
    try:
        applied = ctl("apply", "-f", str(f))
        assert applied.returncode == 0, applied.stderr
        assert_warned(applied.stderr)
        felix = yaml.safe_load(ctl("get", "felixconfiguration", "default", "-o", "yaml").stdout)
        assert felix["spec"]["wireguardEnabled"] is True  # stored, as Calico stores it
        assert felix["spec"]["deviceRouteProtocol"] == 3
        other = yaml.safe_load(ctl("get", "felixconfiguration", "global", "-o", "yaml").stdout)
        assert other["spec"] == {"logSeverityScreen": "Debug"}
        gnp = yaml.safe_load(ctl("get", "globalnetworkpolicy", "annotated", "-o", "yaml").stdout)
        assert gnp["metadata"]["finalizers"] == ["example.com/keep"]
        assert gnp["spec"]["ingress"][0]["metadata"] == {"annotations": {"why": "ticket-1"}}
        # replace warns the same way; a document without such fields warns about nothing
        replaced = ctl("replace", "-f", str(f))
        assert replaced.returncode == 0, replaced.stderr
        assert_warned(replaced.stderr)
        quiet = ctl("apply", "-f", "-", stdin=VALID)
        assert quiet.returncode == 0 and "Warning: " not in quiet.stderr, quiet.stderr
    finally:
        ctl("delete", "-f", str(f))
