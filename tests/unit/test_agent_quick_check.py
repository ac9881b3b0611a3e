"""`model.quick.quick_valid` (the agent's fast path for bulk documents) never accepts a
document `parse_resource` rejects, and accepts the common endpoint shapes.

Compared on the invalid corpus (tests/data/invalid), on every valid sample document,
and on many single-field mutations of valid endpoints and network sets.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from calico_net.errors import ValidationError
from calico_net.model import parse_documents, parse_resource
from calico_net.model.quick import quick_valid

DATA = Path(__file__).resolve().parent.parent / "data"


def full_valid(doc: object) -> bool:
    try:
        parse_resource(doc)
    except ValidationError:
        return False
    return True


def wep() -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": {"name": "node1-k8s-pod1-eth0", "namespace": "ns1",
                         "labels": {"app": "web", "projectcalico.org/namespace": "ns1"},
                         "resourceVersion": "12", "uid": "abc",
                         "creationTimestamp": "2026-01-31T12:00:00Z"},
            "spec": {"node": "node1", "orchestrator": "k8s", "workload": "pod1", "pod": "pod1",
                     "endpoint": "eth0", "containerID": "c1", "serviceAccountName": "sa",
                     "interfaceName": "cali0123456789a", "ipNetworks": ["198.19.0.1/32", "fd00::1/128"],
                     "profiles": ["kns.ns1"], "mac": "ee:ee:ee:ee:ee:ee"}}


def netset(kind: str = "GlobalNetworkSet") -> dict:
    md = {"name": "ext", "labels": {"role": "ext"}}
    if kind == "NetworkSet":
        md["namespace"] = "ns1"
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": md,
            "spec": {"nets": ["198.18.0.0/24", "198.19.1.5"]}}


def gnp() -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "allow-web", "labels": {"a": "b"}},
            "spec": {"order": 10, "selector": "app == 'web'", "types": ["Ingress", "Egress"],
                     "namespaceSelector": "all()",
                     "ingress": [{"action": "Allow", "protocol": "TCP",
                                  "source": {"selector": "role == 'fe'", "nets": ["198.18.0.0/24"],
                                             "namespaceSelector": "global()"},
                                  "destination": {"ports": [80, "1000:2000", "http"], "notPorts": [81],
                                                  "nets": ["198.19.0.0/16"]}},
                                 {"action": "Deny", "notProtocol": 17,
                                  "source": {"notSelector": "x == 'y'", "notNets": ["198.18.1.0/24"]}}],
                     "egress": [{"action": "Pass"}, {"action": "Log", "protocol": "UDP",
                                                     "destination": {"ports": [53]}}]}}


def netpol() -> dict:
    doc = gnp()
    doc["kind"] = "NetworkPolicy"
    doc["metadata"]["namespace"] = "ns1"
    del doc["spec"]["namespaceSelector"]
    return doc


def profile() -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "Profile",
            "metadata": {"name": "kns.ns1"},
            "spec": {"ingress": [{"action": "Allow", "source": {"selector": "ns == 'ns1'"}}],
                     "egress": [{"action": "Allow"}], "labelsToApply": {"ns": "ns1"}}}


def test_common_shapes_are_decided_quickly() -> None:
    for doc in (gnp(), netpol(), profile()):
        assert full_valid(doc), doc
        assert quick_valid(doc), doc
    for doc in (wep(), netset(), netset("NetworkSet")):
        assert full_valid(doc)
        assert quick_valid(doc)
    minimal = {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
               "metadata": {"name": "a"}, "spec": {}}
    assert quick_valid(minimal) and full_valid(minimal)


def test_other_kinds_and_fields_are_left_to_the_model() -> None:
    pool = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "p"}, "spec": {"cidr": "198.19.0.0/16"}}
    assert not quick_valid(pool)
    doc = gnp()
    doc["spec"]["ingress"][0]["icmp"] = {"type": 8}
    assert not quick_valid(doc)


@pytest.mark.parametrize("path", sorted((DATA / "invalid").glob("*.yaml")), ids=lambda p: p.stem)
def test_invalid_corpus_is_never_accepted(path: Path) -> None:
    for doc in parse_documents(path.read_text()):
        assert not quick_valid(doc)


def test_valid_samples_agree() -> None:
    """Every sample document the quick path accepts is accepted by the model too; and
    the comparison compares something: the samples are valid, and the quick path
    decides the kinds it is for (profiles, network sets) on them."""
    n = 0
    accepted_kinds = set()
    for path in sorted(DATA.rglob("*.yaml")):
        if "invalid" in path.parts:
            continue
        try:
            docs = parse_documents(path.read_text())
        except Exception:  # noqa: BLE001 - not a resource file
            continue
        for doc in docs:
            assert full_valid(doc), (path, doc.get("kind"))
            if quick_valid(doc):
                n += 1
                accepted_kinds.add(doc["kind"])
    assert n > 0, "no sample document took the quick path: nothing was compared"
    assert accepted_kinds >= {"Profile", "NetworkSet", "GlobalNetworkSet"}, accepted_kinds


BAD_VALUES = [None, "", 0, 1, True, 1.5, [], {}, ["x"], {"a": 1}, "UPPER", "has space", "a/b",
              "x" * 64, "x" * 254, "198.19.0.1/33", "198.19.0.1/24", "::1/129", "not-an-ip",
              "cali0123456789abcdef", "-lead", "trail-", "a..b", "ee:ee:ee:ee:ee", "ee:ee:ee:ee:ee:ee\n",
              "2026-13-01T00:00:00Z", "yesterday", ".", "..", "01.2.3.4/32", "1.2.3.4/32\n", "256.1.1.1/32",
              " 1.2.3.4/32", "1.2.3/32", "1.2.3.4.5/32", "::ffff:1.2.3.4/32", "0.0.0.0/32", ["01.2.3.4/32"],
              ["1.2.3.4/32\n"], "eth0\n", "a" * 16, "*",
              "Allow", "allow", "Ingress", ["Ingress", "Ingress"], ["Egress"], ["Ingress"], "TCP", "tcp",
              256, 6,
              "ICMP", "UDPLite", "SCTP", "all()", "global()", "has(x", "x == 'y'", "!has(a)", 65536, "0",
              "2000:1000", "http-", [80, "x"], {"selector": "global()"}, {"ports": [80]},
              {"nets": ["fd00::/64"]}, [{"action": "Allow"}],
              [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [1]}}],
              ["198.19.0.1/24"], ["UPPER"], [None], [1], "a\n", "ns_1", "k8s_default"]


def _mutations(doc: dict):
    """Every single-field change of `doc` to each bad value, plus deletions and extras."""
    def walk(node, path):
        if isinstance(node, dict):
            for k in list(node):
                yield path + (k,)
                yield from walk(node[k], path + (k,))
        elif isinstance(node, list):
            for i in range(len(node)):
                yield path + (i,)
                yield from walk(node[i], path + (i,))

    for path in list(walk(doc, ())):
        for value in BAD_VALUES + ["__delete__"]:
            d = copy.deepcopy(doc)
            parent = d
            for p in path[:-1]:
                parent = parent[p]
            if value == "__delete__":
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
            yield d
    for where in ((), ("metadata",), ("spec",)):
        for extra in ("extra", "ports", "ipNATs", "annotations", "ip_networks", "interface_name",
                      "namespace", "creationTimestamp", "doNotTrack", "namespaceSelector", "types",
                      "ingress", "labelsToApply", "icmp"):
            d = copy.deepcopy(doc)
            parent = d
            for p in where:
                parent = parent[p]
            parent[extra] = "x"
            yield d
    d = copy.deepcopy(doc)
    d["metadata"]["labels"] = {"bad key!": "v"}
    yield d
    d = copy.deepcopy(doc)
    d["metadata"]["labels"] = {"k": "bad value!"}
    yield d


@pytest.mark.parametrize("make", [wep, netset, lambda: netset("NetworkSet"), gnp, netpol, profile],
                         ids=["wep", "globalnetworkset", "networkset", "gnp", "networkpolicy", "profile"])
def test_mutations_never_accepted_when_invalid(make) -> None:
    checked = accepted = 0
    for doc in _mutations(make()):
        checked += 1
        if quick_valid(doc):
            accepted += 1
            assert full_valid(doc), doc
    assert checked > 200 and accepted > 0
