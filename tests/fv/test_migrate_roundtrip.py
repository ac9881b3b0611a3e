"""FV: `calicoctl datastore migrate export` → wipe etcd → `import`, with the real agent
running: it takes the dataplane down with the wipe and converges back to the same
table inet calico and the same routes as before.

The shared FV topology (tests/fv/conftest.py): four workloads, policy and a
natOutgoing pool, a FelixConfiguration (natPortRange) and ClusterInformation.
The ruleset is compared normalised (`normalised_ruleset`): objects sorted (the
listing is in creation order, which a rewrite changes), set elements sorted, counters
dropped; the routes as `ip route` of the agent's namespace prints them.
"""
from __future__ import annotations

import difflib
import os
import re
import subprocess

import pytest

pytestmark = pytest.mark.root

L = None
CONVERGE = 60
V3 = "projectcalico.org/v3"


@pytest.fixture(autouse=True, scope="module")
def _bind_helpers(fvlib):
    global L
    L = fvlib


def calicoctl(env, *args: str) -> str:
    penv = {"ETCD_ENDPOINTS": env.etcd.endpoints, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    p = subprocess.run([str(L.VENV_BIN / "calicoctl"), *args], env=penv, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, f"calicoctl {' '.join(args)}: {p.stderr}"
    return p.stdout


def _sorted_elements(block: str) -> str:
    def sort(m: re.Match) -> str:
        items = sorted(x.strip() for x in m.group(1).replace("\n", " ").split(",") if x.strip())
        return "elements = { " + ", ".join(items) + " }"

    return re.sub(r"elements = \{(.*?)\}", sort, block, flags=re.S)


def normalised_ruleset() -> list[str]:
    text = L.sh("nft", "list", "table", "inet", "calico", ns=L.HOST_NS, check=False)
    text = re.sub(r" counter packets \d+ bytes \d+", " counter", text)
    text = re.sub(r" # handle \d+", "", text)
    blocks, cur = [], []
    for line in text.splitlines():
        if re.match(r"^\t(set|map|chain) ", line) and cur:
            blocks.append("\n".join(cur))
            cur = []
        if line.strip() and line != "}":
            cur.append(line)
    blocks.append("\n".join(cur))
    return sorted(_sorted_elements(b) for b in blocks)


def routes() -> list[str]:
    return sorted(L.sh("ip", "route", "show", ns=L.HOST_NS).splitlines())


def resources(env) -> list[dict]:
    ws = env.workloads
    return [
        {"apiVersion": V3, "kind": "IPPool", "metadata": {"name": "wl-pool"},
         "spec": {"cidr": "198.19.1.0/24", "natOutgoing": True}},
        {"apiVersion": V3, "kind": "FelixConfiguration", "metadata": {"name": "default"},
         "spec": {"natPortRange": "40000:40999"}},
        {"apiVersion": V3, "kind": "Profile", "metadata": {"name": "open"},
         "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}},
        {"apiVersion": V3, "kind": "GlobalNetworkSet", "metadata": {"name": "ext", "labels": {"zone": "ext"}},
         "spec": {"nets": ["198.18.99.0/24", "198.18.98.7/32"]}},
        {"apiVersion": V3, "kind": "GlobalNetworkPolicy", "metadata": {"name": "db"},
         "spec": {"order": 10, "selector": "role == 'db'", "types": ["Ingress", "Egress"],
                  "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'web'"},
                               "destination": {"ports": [8080]}}],
                  "egress": [{"action": "Deny", "destination": {"selector": "zone == 'ext'"}},
                             {"action": "Allow"}]}},
        {"apiVersion": V3, "kind": "NetworkPolicy", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"selector": "role == 'web'", "ingress": [{"action": "Allow", "protocol": "TCP",
                                                            "destination": {"ports": [9090]}}]}},
        *[L.wep(w, {"role": r}, ["open"]) for w, r in zip(ws, ("web", "web", "db", "other"))],
    ]


def test_export_wipe_import_converges_to_the_same_dataplane(clean):
    env = clean
    env.ds.apply_all(resources(env))
    L.wait_for(lambda: all(w.ip in L.our_routes() for w in env.workloads), CONVERGE, "workload routes",
               env.agent)
    L.wait_for(lambda: "masquerade to :40000-40999" in "\n".join(normalised_ruleset())
               and "198.18.98.7" in "\n".join(normalised_ruleset()), CONVERGE, "policy and NAT programmed",
               env.agent)
    nft_before, routes_before = normalised_ruleset(), routes()
    dump = env.tmp / "backup.yaml"
    dump.write_text(calicoctl(env, "datastore", "migrate", "export"))

    env.ds.client.delete_prefix("/calico/")
    # the agent follows the wipe: workload routes and policy go
    L.wait_for(lambda: not L.our_routes() and normalised_ruleset() != nft_before, CONVERGE,
               "the dataplane emptied after the wipe", env.agent)
    assert routes() != routes_before

    assert "Successfully imported" in calicoctl(env, "datastore", "migrate", "import", "-f", str(dump))

    def same() -> bool:
        return normalised_ruleset() == nft_before and routes() == routes_before

    try:
        L.wait_for(same, CONVERGE, "the same ruleset and routes after the import", env.agent)
    except AssertionError:
        diff = "\n".join(difflib.unified_diff("\n".join(nft_before).splitlines(),
                                              "\n".join(normalised_ruleset()).splitlines(), lineterm=""))
        raise AssertionError(f"ruleset diff:\n{diff}\nroutes before {routes_before}\nafter {routes()}") from None
    # and etcd holds what was exported
    assert calicoctl(env, "datastore", "migrate", "export") == dump.read_text()
