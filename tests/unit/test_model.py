"""Unit tests for calico_net.model: round trips, defaults, kinds, value validators."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from calico_net.errors import ParseError, UnknownKindError, ValidationError
from calico_net.model import (
    KINDS, IPPool, check_pool_overlap, parse_asn, parse_documents, parse_duration,
    parse_peer_ip, parse_port, parse_protocol, parse_resource, resolve_kind,
)

DATA = Path(__file__).resolve().parent.parent / "data"
VALID_FILES = sorted((DATA / "valid").glob("*.yaml"))


def doc(kind: str, spec: dict | None = None, name: str = "x", **meta) -> dict:
    d = {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name, **meta}}
    if spec is not None:
        d["spec"] = spec
    return d


def errors_of(d: dict) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        parse_resource(d)
    return info.value.errors


def error_text(d: dict) -> str:
    with pytest.raises(ValidationError) as info:
        parse_resource(d)
    return str(info.value)


# --- round trips ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: p.name)
def test_valid_files_round_trip_yaml_object_json_yaml(path: Path) -> None:
    docs = parse_documents(path.read_text())
    assert docs
    for d in docs:
        res = parse_resource(d)
        # object -> JSON (what the datastore stores) -> object -> YAML -> dict
        stored = json.dumps(res.to_dict())
        again = parse_resource(json.loads(stored))
        printed = yaml.safe_dump(again.to_dict(), sort_keys=False)
        assert yaml.safe_load(printed) == d


def test_all_kinds_manifest_has_every_kind() -> None:
    docs = parse_documents((DATA / "valid" / "all-kinds.yaml").read_text())
    assert {d["kind"] for d in docs} == set(KINDS)


def test_store_metadata_is_added_and_kept() -> None:
    d = doc("GlobalNetworkSet", {"nets": ["198.18.0.0/24"]}, name="set")
    res = parse_resource(d)
    res.metadata.uid = "5e5a1c2e-0000-4000-8000-000000000001"
    res.metadata.creation_timestamp = "2024-05-01T10:00:00Z"
    res.metadata.resource_version = "42"
    out = res.to_dict()
    assert out["metadata"] == {"name": "set", "uid": "5e5a1c2e-0000-4000-8000-000000000001",
                               "creationTimestamp": "2024-05-01T10:00:00Z", "resourceVersion": "42"}
    assert out["spec"] == d["spec"]
    assert parse_resource(out).to_dict() == out


def test_labels_changed_in_place_are_written() -> None:
    res = parse_resource(doc("GlobalNetworkSet", {"nets": []}))
    assert res.metadata.labels == {}
    res.metadata.labels["zone"] = "a"
    assert res.to_dict()["metadata"]["labels"] == {"zone": "a"}


def test_yaml_timestamp_is_kept_as_text() -> None:
    text = ("apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata:\n  name: p\n"
            "  creationTimestamp: 2024-05-01T10:00:00Z\n")
    res = parse_resource(parse_documents(text)[0])
    assert res.to_dict()["metadata"]["creationTimestamp"] == "2024-05-01T10:00:00Z"


def test_values_are_kept_as_written() -> None:
    d = doc("GlobalNetworkPolicy", {"order": 100, "ingress": [
        {"action": "Allow", "protocol": 6, "destination": {"ports": [80, "1000:2000", "http"]}}]})
    res = parse_resource(d)
    assert res.to_dict()["spec"] == d["spec"]
    assert isinstance(res.to_dict()["spec"]["order"], int)


# --- defaults ------------------------------------------------------------------------------

def test_ippool_defaults() -> None:
    v4 = parse_resource(doc("IPPool", {"cidr": "198.19.0.0/16"}))
    assert v4.spec.block_size == 26
    assert v4.spec.ipip_mode == "Never" and v4.spec.vxlan_mode == "Never"
    assert v4.spec.node_selector == "all()"
    assert v4.spec.disabled is False and v4.spec.nat_outgoing is False
    assert v4.to_dict()["spec"] == {"cidr": "198.19.0.0/16"}
    v6 = parse_resource(doc("IPPool", {"cidr": "fd00:198:19::/48"}))
    assert v6.spec.block_size == 122


def test_policy_defaults() -> None:
    res = parse_resource(doc("GlobalNetworkPolicy", {}))
    assert res.spec.order is None
    assert res.spec.selector == "all()"
    assert res.spec.ingress == [] and res.spec.egress == []
    assert res.spec.effective_types() == ["Ingress"]
    assert res.metadata.labels == {}
    assert res.to_dict() == doc("GlobalNetworkPolicy", {})


# --- kinds ---------------------------------------------------------------------------------

@pytest.mark.parametrize("alias,kind", [
    ("gnp", "GlobalNetworkPolicy"), ("GNPS", "GlobalNetworkPolicy"),
    ("globalnetworkpolicies", "GlobalNetworkPolicy"), ("GlobalNetworkPolicy", "GlobalNetworkPolicy"),
    ("np", "NetworkPolicy"), ("policy", "NetworkPolicy"), ("pols", "NetworkPolicy"),
    ("wep", "WorkloadEndpoint"), ("weps", "WorkloadEndpoint"), ("hep", "HostEndpoint"),
    ("ippool", "IPPool"), ("pools", "IPPool"), ("ipp", "IPPool"), ("bgpconfig", "BGPConfiguration"),
    ("bgpconfigs", "BGPConfiguration"), ("felixconfig", "FelixConfiguration"),
    ("felixconfigurations", "FelixConfiguration"), ("bgpp", "BGPPeer"), ("bp", "BGPPeer"),
    ("node", "Node"), ("no", "Node"), ("pro", "Profile"), ("netsets", "NetworkSet"),
    ("globalnetworksets", "GlobalNetworkSet"),
])
def test_resolve_kind_aliases(alias: str, kind: str) -> None:
    assert resolve_kind(alias).kind == kind


def test_resolve_unknown_kind_lists_valid_ones() -> None:
    with pytest.raises(UnknownKindError) as info:
        resolve_kind("frobnicator")
    assert "frobnicator" in str(info.value) and "globalnetworkpolicy" in str(info.value)


def test_kind_plurals_and_scope() -> None:
    plurals = {k: v.plural for k, v in KINDS.items()}
    assert plurals == {
        "Node": "nodes", "IPPool": "ippools", "BGPConfiguration": "bgpconfigurations",
        "BGPPeer": "bgppeers", "FelixConfiguration": "felixconfigurations",
        "Profile": "profiles", "NetworkPolicy": "networkpolicies",
        "GlobalNetworkPolicy": "globalnetworkpolicies", "NetworkSet": "networksets",
        "GlobalNetworkSet": "globalnetworksets", "WorkloadEndpoint": "workloadendpoints",
        "HostEndpoint": "hostendpoints"}
    assert {k for k, v in KINDS.items() if v.namespaced} == {
        "NetworkPolicy", "NetworkSet", "WorkloadEndpoint"}


# --- error messages ------------------------------------------------------------------------

def test_message_format_matches_calicoctl_style() -> None:
    d = doc("GlobalNetworkPolicy", {"ingress": [{"action": "Allow", "protocol": "TCPX"}]},
            name="deny-all")
    assert error_text(d) == ('GlobalNetworkPolicy "deny-all": spec.ingress[0].protocol: "TCPX" is '
                             'not a protocol (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255)')


def test_several_errors_are_joined() -> None:
    d = doc("IPPool", {"cidr": "198.19.0.0/16", "ipipMode": "Sometimes", "natOutgoing": "yes"})
    with pytest.raises(ValidationError) as info:
        parse_resource(d)
    paths = [p for p, _ in info.value.errors]
    assert paths == ["spec.ipipMode", "spec.natOutgoing"]
    assert "; spec.natOutgoing: " in str(info.value)
    assert info.value.kind == "IPPool" and info.value.name == "x"


def test_validation_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        parse_resource({"kind": "IPPool"})


# --- manifests -----------------------------------------------------------------------------

def test_parse_documents_multi_yaml_json_and_lists() -> None:
    one = doc("GlobalNetworkSet", {"nets": ["198.18.0.0/24"]}, name="a")
    two = doc("GlobalNetworkSet", {"nets": []}, name="b")
    assert parse_documents(yaml.safe_dump_all([one, None, two])) == [one, two]
    assert parse_documents(json.dumps(one)) == [one]
    assert parse_documents(json.dumps([one, two])) == [one, two]
    lst = {"apiVersion": "projectcalico.org/v3", "kind": "List", "items": [one, two]}
    assert parse_documents(yaml.safe_dump(lst)) == [one, two]
    lst2 = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSetList", "items": [one]}
    assert parse_documents(json.dumps(lst2)) == [one]
    assert parse_documents("") == []


def test_parse_documents_syntax_error_names_document_and_line() -> None:
    text = ("kind: IPPool\n---\nkind: IPPool\nmetadata:\n  name: a\n   bad: [\n")
    with pytest.raises(ParseError) as info:
        parse_documents(text)
    assert info.value.document == 2
    assert info.value.line is not None and info.value.line >= 5
    assert str(info.value).startswith("document 2 (line ")


def test_parse_documents_rejects_non_mapping() -> None:
    with pytest.raises(ParseError, match="document 2"):
        parse_documents("kind: IPPool\n---\n- a\n- b\n")


# --- pool overlap --------------------------------------------------------------------------

def pool(name: str, cidr: str, disabled: bool = False) -> IPPool:
    return parse_resource(doc("IPPool", {"cidr": cidr, "disabled": disabled}, name=name))


def test_pool_overlap() -> None:
    check_pool_overlap([pool("a", "198.19.0.0/17"), pool("b", "198.19.128.0/17")])
    with pytest.raises(ValidationError) as info:
        check_pool_overlap([pool("a", "198.19.0.0/16"), pool("b", "198.19.4.0/24")])
    assert str(info.value) == ('IPPool "b": spec.cidr: "198.19.4.0/24" overlaps enabled IPPool '
                               '"a" (198.19.0.0/16)')
    # disabled pools may overlap; an update of the same pool replaces it
    check_pool_overlap([pool("a", "198.19.0.0/16"), pool("b", "198.19.4.0/24", disabled=True)])
    check_pool_overlap([pool("a", "198.19.0.0/16"), pool("a", "198.19.0.0/17")])
    check_pool_overlap([pool("a", "198.19.0.0/16"), pool("b", "fd00:198:19::/48")])


# --- value helpers -------------------------------------------------------------------------

def test_value_helpers() -> None:
    assert parse_port(80) == (80, 80) and parse_port("1000:2000") == (1000, 2000)
    assert parse_port("http") == "http"
    assert parse_protocol("TCP") == 6 and parse_protocol(132) == 132
    assert parse_asn("64512.10") == 64512 * 65536 + 10 and parse_asn(64512) == 64512
    assert parse_asn("4200000000") == 4200000000
    assert parse_duration("1m30s") == 90 and parse_duration("500ms") == 0.5
    assert parse_peer_ip("198.18.0.1:1790") == ("198.18.0.1", 1790)
    assert parse_peer_ip("[fd00::1]:179") == ("fd00::1", 179)
    assert parse_peer_ip("fd00::1") == ("fd00::1", None)


def test_parse_resource_does_not_modify_input() -> None:
    d = doc("IPPool", {"cidr": "198.19.0.0/16"})
    before = copy.deepcopy(d)
    parse_resource(d).to_dict()
    assert d == before
