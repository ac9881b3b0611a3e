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
    # all-kinds.yaml holds one document of every kind (calicoctl's round-trip test
    # applies it); ipam-kinds.yaml holds Calico's reference samples of the IPAM kinds.
    docs = parse_documents((DATA / "valid" / "all-kinds.yaml").read_text())
    ipam = parse_documents((DATA / "valid" / "ipam-kinds.yaml").read_text())
    assert {d["kind"] for d in docs} == set(KINDS)
    assert {d["kind"] for d in ipam} == {"IPReservation", "IPAMConfiguration"}


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
    ("ipreservation", "IPReservation"), ("IPReservations", "IPReservation"),
    ("reservations", "IPReservation"), ("ipamconfig", "IPAMConfiguration"),
    ("ipamconfigs", "IPAMConfiguration"), ("IPAMConfiguration", "IPAMConfiguration"),
    ("ipamconfigurations", "IPAMConfiguration"),
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
        "HostEndpoint": "hostendpoints", "IPReservation": "ipreservations",
        "IPAMConfiguration": "ipamconfigurations", "BGPFilter": "bgpfilters", "Tier": "tiers",
        "StagedNetworkPolicy": "stagednetworkpolicies",
        "StagedGlobalNetworkPolicy": "stagedglobalnetworkpolicies",
        "StagedKubernetesNetworkPolicy": "stagedkubernetesnetworkpolicies",
        "KubeControllersConfiguration": "kubecontrollersconfigurations",
        "ClusterInformation": "clusterinformations"}
    assert {k for k, v in KINDS.items() if v.namespaced} == {
        "NetworkPolicy", "NetworkSet", "WorkloadEndpoint", "StagedNetworkPolicy",
        "StagedKubernetesNetworkPolicy"}


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


# --- value validators ----------------------------------------------------------------------

from pydantic import TypeAdapter  # noqa: E402
from pydantic import ValidationError as PydanticValidationError  # noqa: E402

from calico_net.model import fields as f  # noqa: E402


def accepts(type_: object, value: object) -> bool:
    try:
        TypeAdapter(type_).validate_python(value, strict=True)
    except PydanticValidationError:
        return False
    return True


def message(type_: object, value: object) -> str:
    with pytest.raises(PydanticValidationError) as info:
        TypeAdapter(type_).validate_python(value, strict=True)
    return info.value.errors()[0]["ctx"]["msg"]


@pytest.mark.parametrize("value,ok", [
    ("a", True), ("web-1", True), ("kns.web", True), ("node.node-1", True), ("a" * 253, True),
    ("a" * 254, False), ("", False), ("Web", False), ("web_1", False), ("-web", False),
    ("web-", False), ("web..x", False), (".web", False), ("web 1", False),
])
def test_name(value: str, ok: bool) -> None:
    assert accepts(f.Name, value) is ok


@pytest.mark.parametrize("value,ok", [
    ("default", True), ("kube-system", True), ("a" * 63, True), ("a" * 64, False),
    ("web.prod", False), ("Web", False),
])
def test_namespace(value: str, ok: bool) -> None:
    assert accepts(f.Namespace, value) is ok


@pytest.mark.parametrize("labels,ok", [
    ({}, True), ({"app": "web"}, True), ({"projectcalico.org/namespace": "web"}, True),
    ({"example.com/x_y.z": ""}, True), ({"a": "x" * 63}, True), ({"a": "x" * 64}, False),
    ({"-a": "b"}, False), ({"a/": "b"}, False), ({"Bad_Prefix/a": "b"}, False),
    ({"a": "b c"}, False), ({"a": 1}, False), ({"a": True}, False), ({"a" * 64: "b"}, False),
    (["app"], False),
])
def test_labels(labels: object, ok: bool) -> None:
    assert accepts(f.Labels, labels) is ok


def test_annotations_allow_any_text_values() -> None:
    assert accepts(f.Annotations, {"example.com/note": "free text: with spaces & {braces}"})
    assert not accepts(f.Annotations, {"note": 5})
    assert not accepts(f.Annotations, {"bad key": "x"})


@pytest.mark.parametrize("value,ok", [
    ("198.18.0.0/15", True), ("198.18.0.7", True), ("fd00::/8", True), ("fd00::1", True),
    ("0.0.0.0/0", True), ("::/0", True), ("198.18.0.1/15", False), ("198.18.0.0/33", False),
    ("198.18.0.256", False), ("fd00::/129", False), ("lab", False), ("", False),
    ("010.1.1.0/24", False),
])
def test_net(value: str, ok: bool) -> None:
    assert accepts(f.Net, value) is ok


def test_cidr_requires_prefix_and_suggests_network() -> None:
    assert accepts(f.CIDR, "198.19.0.0/16")
    assert "expected address/prefix-length" in message(f.CIDR, "198.19.0.0")
    assert message(f.CIDR, "198.19.9.9/16") == '"198.19.9.9/16" has host bits set (did you mean 198.19.0.0/16?)'


def test_interface_addresses_keep_host_bits() -> None:
    assert accepts(f.IPv4Interface, "198.18.0.11/24")
    assert accepts(f.IPv4Interface, "198.18.0.11")
    assert not accepts(f.IPv4Interface, "fd00::1/64")
    assert accepts(f.IPv6Interface, "fd00::11/64")
    assert not accepts(f.IPv6Interface, "198.18.0.11/24")


@pytest.mark.parametrize("type_,value,ok", [
    (f.IP, "198.18.0.1", True), (f.IP, "fd00::1", True), (f.IP, "198.18.0.0/24", False),
    (f.IPv4, "198.18.0.1", True), (f.IPv4, "fd00::1", False), (f.IPv6, "fd00::1", True),
    (f.IPv6, "198.18.0.1", False), (f.MAC, "ee:ee:ee:ee:ee:ee", True),
    (f.MAC, "EE-EE-EE-EE-EE-EE", True), (f.MAC, "ee:ee:ee:ee:ee", False),
    (f.MAC, "ee:ee:ee-ee:ee:ee", False), (f.InterfaceName, "cali0123456789a", True),
    (f.InterfaceName, "cali0123456789ab", False), (f.InterfaceName, "eth 0", False),
    (f.InterfaceName, "*", False), (f.HostInterfaceName, "*", True),
    (f.HostInterfaceName, "eth0", True),
])
def test_addresses_and_interfaces(type_: object, value: str, ok: bool) -> None:
    assert accepts(type_, value) is ok


@pytest.mark.parametrize("value,ok", [
    ("198.18.0.1", True), ("198.18.0.1:179", True), ("198.18.0.1:65535", True),
    ("fd00::1", True), ("[fd00::1]:1790", True), ("[fd00::1]", True),
    ("198.18.0.1:0", False), ("198.18.0.1:65536", False), ("198.18.0.1:x", False),
    ("fd00::1:179:", False), ("[198.18.0.1]:179", False), ("peer.example", False),
])
def test_peer_ip(value: str, ok: bool) -> None:
    assert accepts(f.PeerIP, value) is ok


@pytest.mark.parametrize("value,ok", [
    (1, True), (65535, True), ("80", True), ("1000:2000", True), ("5:5", True), ("http", True),
    ("http-alt", True), ("h2c", True), (0, False), (65536, False), (-1, False), ("0", False),
    ("2000:1000", False), ("0:10", False), ("1000-2000", False), ("HTTP", False),
    ("http_alt", False), ("a--b", False), ("-http", False), ("abcdefghijklmnop", False),
    ("123", True), (True, False), (8.0, False), (None, False), ("1000:", False),
])
def test_port(value: object, ok: bool) -> None:
    assert accepts(f.Port, value) is ok


@pytest.mark.parametrize("value,ok", [
    ("TCP", True), ("UDP", True), ("ICMP", True), ("ICMPv6", True), ("SCTP", True),
    ("UDPLite", True), (1, True), (255, True), (0, False), (256, False), ("tcp", False),
    ("6", False), ("GRE", False), (True, False), (None, False),
])
def test_protocol(value: object, ok: bool) -> None:
    assert accepts(f.Protocol, value) is ok


def test_protocol_hints() -> None:
    assert message(f.Protocol, "udp").endswith("did you mean UDP?")
    assert message(f.Protocol, "17").endswith("write the number without quotes: 17")


@pytest.mark.parametrize("value,ok", [
    (1, True), (64512, True), (4294967295, True), ("64512", True), ("64512.10", True),
    ("0.1", True), ("65535.65535", True), (0, False), (4294967296, False), (-5, False),
    ("0.0", False), ("65536.0", False), ("1.65536", False), ("AS64512", False),
    ("1.2.3", False), (True, False), (64512.5, False),
])
def test_as_number(value: object, ok: bool) -> None:
    assert accepts(f.ASNumber, value) is ok


@pytest.mark.parametrize("value,ok", [
    ("90s", True), ("1m30s", True), ("500ms", True), ("1.5h", True), ("0", True),
    ("10us", True), ("90", False), (90, False), ("1 m", False), ("5d", False), ("", False),
])
def test_duration(value: object, ok: bool) -> None:
    assert accepts(f.Duration, value) is ok


@pytest.mark.parametrize("value,ok", [
    ("64512:100", True), ("65535:65535", True), ("4200000000:1:2", True), ("65536:1", False),
    ("1:2:4294967296", False), ("64512", False), ("a:b", False),
])
def test_community(value: str, ok: bool) -> None:
    assert accepts(f.CommunityValue, value) is ok


@pytest.mark.parametrize("value,ok", [
    ("all()", True), ("has(a) && b == 'c'", True), ("a in {'x', 'y'}", True), ("", True),
    ("a == ", False), ("a = 'b'", False), ("has(", False), ("a == 'b' &&", False),
])
def test_selector(value: str, ok: bool) -> None:
    assert accepts(f.Selector, value) is ok


@pytest.mark.parametrize("value,ok", [
    ("2024-05-01T10:00:00Z", True), ("2024-05-01T10:00:00.123456+02:00", True),
    ("yesterday", False), (5, False),
])
def test_timestamp(value: object, ok: bool) -> None:
    assert accepts(f.Timestamp, value) is ok


def test_resource_version_accepts_numbers_but_stores_text() -> None:
    assert TypeAdapter(f.ResourceVersion).validate_python(42) == "42"
    assert not accepts(f.ResourceVersion, True)


# --- cross-field rules not in the invalid corpus -------------------------------------------

def gnp(*rules: dict, direction: str = "ingress", **spec: object) -> dict:
    return doc("GlobalNetworkPolicy", {direction: list(rules), **spec}, name="p")


def test_icmpv6_needs_ipv6() -> None:
    assert errors_of(gnp({"action": "Allow", "ipVersion": 4, "protocol": 58})) == [
        ("spec.ingress[0].protocol", "protocol ICMPv6 requires ipVersion 6 (use ICMP for IPv4)")]


def test_icmp_by_number_is_accepted() -> None:
    parse_resource(gnp({"action": "Allow", "protocol": 1, "icmp": {"type": 0}}))
    parse_resource(gnp({"action": "Allow", "protocol": "ICMPv6", "notICMP": {"type": 1, "code": 4}}))


def test_ports_accept_all_port_protocols_by_name_and_number() -> None:
    for proto in ("TCP", "UDP", "SCTP", "UDPLite", 6, 17, 132, 136):
        parse_resource(gnp({"action": "Allow", "protocol": proto, "destination": {"ports": [53]}}))
    assert errors_of(gnp({"action": "Allow", "protocol": 47, "source": {"notPorts": [1]}})) == [
        ("spec.ingress[0].source.notPorts",
         "ports require protocol TCP, UDP, SCTP or UDPLite (protocol is 47)")]


def test_not_selector_global_is_rejected_but_namespace_selector_allows_it() -> None:
    parse_resource(gnp({"action": "Allow", "source": {"namespaceSelector": "global()"}}))
    paths = [p for p, _ in errors_of(gnp({"action": "Allow",
                                          "destination": {"notSelector": "global()"}}))]
    assert paths == ["spec.ingress[0].destination.notSelector"]


def test_types_cover_rules() -> None:
    assert errors_of(gnp({"action": "Deny"}, types=["Egress"])) == [
        ("spec.ingress", "ingress rules are present but types does not include Ingress")]
    parse_resource(gnp({"action": "Deny"}, direction="egress", types=["Egress"]))
    res = parse_resource(gnp({"action": "Deny"}, direction="egress"))
    assert res.spec.effective_types() == ["Egress"]  # Calico: egress rules only → Egress only


def test_prednat_rules_are_checked() -> None:
    assert errors_of(doc("GlobalNetworkPolicy", {"preDNAT": True, "applyOnForward": True,
                                                 "types": ["Egress"]})) == [
        ("spec.types", "preDNAT policy cannot have type Egress")]
    assert errors_of(doc("GlobalNetworkPolicy", {"preDNAT": True})) == [
        ("spec.applyOnForward", "must be true when preDNAT is true")]
    assert errors_of(doc("GlobalNetworkPolicy", {"doNotTrack": True})) == [
        ("spec.applyOnForward", "must be true when doNotTrack is true")]
    assert errors_of(doc("GlobalNetworkPolicy", {"preDNAT": True, "doNotTrack": True,
                                                 "applyOnForward": True})) == [
        ("spec.preDNAT", "preDNAT and doNotTrack cannot both be true")]


def test_networkpolicy_has_no_global_only_fields() -> None:
    for field in ("doNotTrack", "applyOnForward", "namespaceSelector"):
        d = doc("NetworkPolicy", {field: True}, namespace="web")
        assert [p for p, _ in errors_of(d)] == [f"spec.{field}"]


def test_services_match_is_reported_as_unsupported() -> None:
    d = gnp({"action": "Allow", "destination": {"services": {"name": "kubernetes"}}})
    assert errors_of(d) == [("spec.ingress[0].destination.services",
                             "not supported by calico.net yet (Kubernetes Service matches need "
                             "a Kubernetes datastore)")]


def test_bgp_peer_rules() -> None:
    peer = lambda **spec: doc("BGPPeer", spec, name="p")  # noqa: E731
    parse_resource(peer(peerIP="198.18.0.1", asNumber=64512))
    parse_resource(peer(peerSelector="has(rr)", nodeSelector="!has(rr)"))
    assert [p for p, _ in errors_of(peer(peerSelector="has(rr)", asNumber=64512))] == ["spec.asNumber"]
    assert [p for p, _ in errors_of(peer(asNumber=64512))] == ["spec.peerIP"]
    assert [p for p, _ in errors_of(peer(peerIP="198.18.0.1", asNumber=1, keepOriginalNextHop=True,
                                         nextHopMode="Self"))] == ["spec.nextHopMode"]


def test_felix_rules() -> None:
    felix = lambda name="default", **spec: doc("FelixConfiguration", spec, name=name)  # noqa: E731
    parse_resource(felix(name="node.node-1"))
    # Calico stores a FelixConfiguration of any valid name (only default and
    # node.<name> have an effect: the field registry warns about the others).
    for stored in ("defaults", "node-1"):
        parse_resource(felix(name=stored))
    for bad in ("node.", "node.Node_1"):
        assert [p for p, _ in errors_of(felix(name=bad))] == ["metadata.name"]
    assert errors_of(felix(routeTableRange={"min": 10, "max": 5})) == [
        ("spec.routeTableRange.min", "10 is greater than max 5")]


def test_felix_accepts_calico_field_names() -> None:
    spec = {
        "logSeverityScreen": "Warning", "failsafeInboundHostPorts": [{"protocol": "tcp", "port": 22}],
        "failsafeOutboundHostPorts": [{"protocol": "UDP", "port": 53}],
        "routeRefreshInterval": "90s", "iptablesRefreshInterval": "90s",
        "defaultEndpointToHostAction": "Accept", "healthEnabled": True, "healthPort": 9099,
        "prometheusMetricsEnabled": True, "prometheusMetricsPort": 9091, "ipipMTU": 1440,
        "vxlanMTUV6": 1430, "genericXDPEnabled": False, "deviceRouteSourceAddressIPv6": "fd00::1",
        "wireguardEnabledV6": False, "prometheusWireGuardMetricsEnabled": False,
        "allowVXLANPacketsFromWorkloads": False, "iptablesNATOutgoingInterfaceFilter": "eth+",
        "reportingTTL": "90s", "floatingIPs": "Disabled", "bpfLogLevel": "Off",
        "serviceLoopPrevention": "Drop", "routeSource": "CalicoIPAM", "iptablesBackend": "Auto",
    }
    res = parse_resource(doc("FelixConfiguration", spec, name="default"))
    assert res.to_dict()["spec"] == spec
    assert res.spec.health_port == 9099 and res.spec.failsafe_inbound_host_ports[0].port == 22


def test_pool_reserved_ranges() -> None:
    for cidr in ("127.0.0.0/8", "224.0.0.0/4", "fe80::/64", "ff00::/8"):
        assert [p for p, _ in errors_of(doc("IPPool", {"cidr": cidr}))] == ["spec.cidr"]


def test_workload_endpoint_checks() -> None:
    wep = lambda **spec: doc("WorkloadEndpoint", spec, namespace="web")  # noqa: E731
    parse_resource(wep(ipNetworks=["198.19.0.2/32"], ipNATs=[{"internalIP": "198.19.0.2",
                                                              "externalIP": "198.18.0.2"}]))
    assert errors_of(wep(ipNetworks=["198.19.0.2/32"], ipNATs=[{"internalIP": "198.19.0.3",
                                                               "externalIP": "198.18.0.2"}])) == [
        ("spec.ipNATs[0].internalIP", '"198.19.0.3" is not in the endpoint\'s ipNetworks')]
    # the CNI plugin's identifiers: podman container names ("web_1") and libcni container IDs
    parse_resource(wep(orchestrator="cni", workload="web_1", containerID="cnfv.cni_01",
                       endpoint="eth0", pod="web_1"))
    for field in ("workload", "containerID", "pod", "endpoint", "orchestrator"):
        assert [p for p, _ in errors_of(wep(**{field: "web 1"}))] == [f"spec.{field}"]
    assert [p for p, _ in errors_of(wep(ports=[{"name": "p", "protocol": "TCP", "port": 1,
                                                "hostIP": "nope"}]))] == ["spec.ports[0].hostIP"]


def test_parse_resource_rejects_list_and_non_mapping() -> None:
    assert "parse_documents" in error_text({"apiVersion": "projectcalico.org/v3", "kind": "List",
                                            "items": []})
    with pytest.raises(ValidationError, match="must be a mapping, not a list"):
        parse_resource([1])


def test_unknown_field_hint_is_case_insensitive() -> None:
    assert errors_of(doc("IPPool", {"cidr": "198.19.0.0/16", "ipipmode": "Always"})) == [
        ("spec.ipipmode", 'unknown field (did you mean "ipipMode"?)')]


def test_python_code_can_build_resources_by_field_name() -> None:
    from calico_net.model.resources import IPPoolSpec, Metadata
    res = IPPool(metadata=Metadata(name="p"), spec=IPPoolSpec(cidr="198.19.0.0/16", block_size=24))
    assert res.to_dict() == doc("IPPool", {"cidr": "198.19.0.0/16", "blockSize": 24}, name="p")
    assert parse_resource(res.to_dict()).spec.block_size == 24


def test_user_input_must_use_calico_names() -> None:
    assert [p for p, _ in errors_of(doc("IPPool", {"cidr": "198.19.0.0/16", "block_size": 24}))] == [
        "spec.block_size"]


def test_parse_documents_rejects_duplicate_keys() -> None:
    text = ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: a\nspec:\n"
            "  cidr: 198.19.0.0/16\n  cidr: 198.19.0.0/17\n")
    with pytest.raises(ParseError) as info:
        parse_documents("kind: Profile\n---\n" + text)
    assert str(info.value) == 'document 2 (line 9, column 3): YAML syntax error: duplicate key "cidr"'


def test_parse_documents_keeps_yaml_merge_keys_working() -> None:
    text = "base: &b {a: 1}\nother:\n  <<: *b\n  c: 2\n"
    assert parse_documents(text) == [{"base": {"a": 1}, "other": {"a": 1, "c": 2}}]


def test_to_dict_returns_a_copy() -> None:
    res = parse_resource(doc("GlobalNetworkSet", {"nets": ["198.18.0.0/24"]}, labels={"a": "b"}))
    out = res.to_dict()
    out["metadata"]["labels"]["c"] = "d"
    out["spec"]["nets"].append("198.18.1.0/24")
    assert res.metadata.labels == {"a": "b"} and res.spec.nets == ["198.18.0.0/24"]


# --- strings are data: anchoring, escaping, bounds -------------------------------------------

def test_show_is_bounded_and_escaped() -> None:
    assert f.show("web") == '"web"' and f.show(5) == "5" and f.show(None) == "null"
    shown = f.show("a\n\x00\x1b[31m\u202e" + "x" * 10_000_000)
    assert len(shown) <= 80 and shown.endswith("...") and shown.isprintable()
    assert shown.startswith('"a\\n\\u0000\\u001b[31m\\u202e')
    assert f.show(float("nan")) == "NaN" and f.show(float("-inf")) == "-Infinity"
    assert f.show(10**100_000).startswith("<an integer of")     # no int-to-text blow-up
    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    assert len(f.show(nested)) <= 80                               # no recursion error
    assert len(f.show({"k" * 1000: list(range(10**6))})) <= 80


def test_deny_rule_net_with_trailing_newline_is_refused() -> None:
    d = gnp({"action": "Deny", "source": {"nets": ["198.18.0.0/24\n"]}})
    assert errors_of(d) == [("spec.ingress[0].source.nets[0]",
                             '"198.18.0.0/24\\n" is not a valid CIDR')]
    parse_resource(gnp({"action": "Deny", "source": {"nets": ["198.18.0.0/24"]}}))


@pytest.mark.parametrize("type_,good", [
    (f.Name, "web"), (f.Namespace, "web"), (f.MAC, "ee:ee:ee:ee:ee:ee"), (f.InterfaceName, "eth0"),
    (f.HostInterfaceName, "eth0"), (f.Duration, "90s"), (f.Port, "http"), (f.Port, "80"),
    (f.Port, "80:90"), (f.PortName, "http"), (f.PortRange, "80:90"), (f.PeerIP, "198.18.0.1"),
    (f.PeerIP, "198.18.0.1:179"), (f.PeerIP, "[fd00::1]:179"), (f.CommunityValue, "64512:100"),
    (f.ASNumber, "64512"), (f.ASNumber, "1.10"), (f.IP, "198.18.0.1"), (f.IP, "fd00::1"),
    (f.Net, "198.18.0.0/24"), (f.Net, "fd00::/64"), (f.CIDR, "198.18.0.0/24"),
    (f.IPv4Interface, "198.18.0.11/24"), (f.Timestamp, "2024-05-01T10:00:00Z"),
    (f.ResourceVersion, "42"), (f.Protocol, "TCP"), (f.Selector, "all()"),
    (f.InterfacePrefixList, "cali,tap"), (f.ContainerID, "3f1b2c4d5e6f"), (f.UID, "5e5a1c2e-0000"),
])
def test_every_pattern_refuses_a_trailing_newline_and_other_digits(type_: object, good: str) -> None:
    assert accepts(type_, good)
    if type_ is not f.Selector:   # whitespace between selector tokens is Calico's grammar
        assert not accepts(type_, good + "\n"), "trailing newline"
        assert not accepts(type_, good + "\r\n"), "trailing CRLF"
    assert not accepts(type_, good + "\x00"), "NUL"
    assert not accepts(type_, " " + good) or type_ is f.Selector, "leading space"
    arabic = good.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    if arabic != good:
        assert not accepts(type_, arabic), "digits of another script"


@pytest.mark.parametrize("value", ["fd00::1%eth0", "fd00::1%a\";}", "fe80::1%1/64", "198.18.0.1 ",
                                   "198.18.0.0/024", "[fd00::1%eth0]:179"])
def test_address_text_is_only_address_characters(value: str) -> None:
    for type_ in (f.IP, f.Net, f.IPv6Interface, f.PeerIP):
        assert not accepts(type_, value)


@pytest.mark.parametrize("value,ok", [
    ("cali", True), ("cali,tap", True), ("tap-1_x", True), ("a" * 15, True),
    ('*" accept; iifname "cali', False), ("cali,", False), (",cali", False),
    ("cali*", False), ("a" * 16, False), ("cali\n", False), (" cali", False), ("cali, tap", False),
    ("cali.1", False), ('cali"', False), (5, False),
])
def test_interface_prefix_is_felix_iface_list(value: object, ok: bool) -> None:
    felix = doc("FelixConfiguration", {"interfacePrefix": value}, name="default")
    if ok:
        parse_resource(felix)
        assert f.iface_list_problem(value) is None
    else:
        errors = errors_of(felix)
        assert [p for p, _ in errors] == ["spec.interfacePrefix"]
        assert "is not a valid interface prefix list" in errors[0][1] or "not a string" in errors[0][1]


def test_felix_configuration_empty_strings_are_unset() -> None:
    """FelixConfiguration's fields are `omitempty` in Calico: "" means not set (several
    of Felix's defaults are ""), so a stored "" must not make the whole object invalid
    (the agent would then drop every setting in it, failsafe ports included)."""
    spec = {"interfacePrefix": "", "prometheusMetricsHost": "", "interfaceExclude": "",
            "logFilePath": "", "failsafeInboundHostPorts": []}
    stored = parse_resource(doc("FelixConfiguration", spec, name="default")).to_dict()["spec"]
    assert stored == {"failsafeInboundHostPorts": []}
    # a non-empty bad value is still refused with its path
    errors = errors_of(doc("FelixConfiguration", {"prometheusMetricsHost": "a b"}, name="default"))
    assert [p for p, _ in errors] == ["spec.prometheusMetricsHost"]


@pytest.mark.parametrize("field,good,bad", [
    ("interfaceExclude", "kube-ipvs0,/^veth.*$/", ["kube ipvs0", "/(/", '/a"b/', "/a;b/", "eth0\n"]),
    ("logPrefix", "calico-packet %t", ['calico" drop', "a" * 128, "x\ny", "x;y"]),
    ("healthHost", "127.0.0.1", ["localhost\n", "a b", "x" * 65]),
    ("prometheusMetricsHost", "fd00::1", ["0.0.0.0;", "[::]"]),
    ("metadataAddr", "metadata.lab", ["meta data", "meta\n"]),
    ("openstackRegion", "region-1", ["Region1", "a" * 47]),
    ("featureGates", "BPFConnectTimeLB=Enabled,X=1", ["a=b\nc=d", "a-b=c", 'a="b"']),
    ("logFilePath", "/var/log/calico/felix.log", ["/var/log/x y", "/var/log/x\n", "/x;rm"]),
    ("iptablesNATOutgoingInterfaceFilter", "eth+", ["eth+\n", "a" * 16, "eth*"]),
    ("mtuIfacePattern", "^(en|eth).*", ["(", "a b", '"x"']),
    ("chainInsertMode", "Append", ["Append\n", "append;"]),
])
def test_felix_text_settings_follow_calicos_grammar(field: str, good: str, bad: list[str]) -> None:
    parse_resource(doc("FelixConfiguration", {field: good}, name="default"))
    for value in bad:
        errors = errors_of(doc("FelixConfiguration", {field: value}, name="default"))
        assert [p for p, _ in errors] == [f"spec.{field}"], value


def test_unknown_field_names_in_paths_are_shown_escaped() -> None:
    errors = errors_of(doc("GlobalNetworkPolicy", {"\x1b[31mevil\n" + "x" * 5000: 1}))
    assert len(errors) == 1
    path, message = errors[0]
    assert path.startswith('spec."\\u001b[31mevil\\n') and len(path) < 100
    assert message == "unknown field"


def test_error_header_shows_a_bad_name_escaped_and_short() -> None:
    text = error_text(doc("Profile", {}, name="web\x1b[31m\n" + "x" * 1_000_000))
    assert len(text) < 600 and text.isprintable()
    assert text.startswith('Profile "web\\u001b[31m\\nxxx')


def test_uid_and_resource_version_are_plain_tokens() -> None:
    parse_resource(doc("Profile", {}, uid="5e5a1c2e-0000-4000-8000-000000000001",
                       resourceVersion="42"))
    assert [p for p, _ in errors_of(doc("Profile", {}, uid="a b"))] == ["metadata.uid"]
    assert [p for p, _ in errors_of(doc("Profile", {}, resourceVersion=" 42\n"))] == [
        "metadata.resourceVersion"]
    assert [p for p, _ in errors_of(doc("Profile", {}, resourceVersion=-1))] == [
        "metadata.resourceVersion"]


def test_annotations_refuse_control_characters_but_keep_free_text() -> None:
    assert accepts(f.Annotations, {"note": 'line one\nline two\t"quoted"; {x}'})
    for bad in ("a\x00b", "a\x1b[31m", "a\x7f"):
        assert "control character" in message(f.Annotations, {"note": bad})


# --- never fail open -----------------------------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 10**400])
def test_order_must_be_finite(value: object) -> None:
    for d in (doc("GlobalNetworkPolicy", {"order": value}),
              doc("NetworkPolicy", {"order": value}, namespace="web")):
        errors = errors_of(d)
        assert [p for p, _ in errors] == ["spec.order"]
        assert "is not a finite number" in errors[0][1]


def test_yaml_nan_and_inf_orders_are_refused_not_stored_as_null() -> None:
    for word, shown in ((".nan", "NaN"), (".inf", "Infinity"), ("-.Inf", "-Infinity")):
        text = f"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: p\nspec:\n  order: {word}\n"
        assert errors_of(parse_documents(text)[0]) == [
            ("spec.order", f"{shown} is not a finite number (policy order: lower numbers apply first)")]
    parse_resource(doc("GlobalNetworkPolicy", {"order": 1e300}))


@pytest.mark.parametrize("kind", ["GlobalNetworkPolicy", "NetworkPolicy"])
def test_service_account_selector_is_accepted(kind: str) -> None:
    meta = {"namespace": "web"} if kind == "NetworkPolicy" else {}
    d = doc(kind, {"selector": "all()", "serviceAccountSelector": "role == 'admin'"}, **meta)
    parsed = parse_resource(d).to_dict()
    assert parsed["spec"]["serviceAccountSelector"] == "role == 'admin'"
    bad = doc(kind, {"serviceAccountSelector": "role == "}, **meta)
    assert [p for p, _ in errors_of(bad)] == ["spec.serviceAccountSelector"]
    # as Calico: global() only in a rule's namespaceSelector
    assert errors_of(doc(kind, {"serviceAccountSelector": "global()"}, **meta)) == [
        ("spec.serviceAccountSelector", '"global()": global() may only be used in a namespaceSelector')]


@pytest.mark.parametrize("kind", ["GlobalNetworkPolicy", "NetworkPolicy", "Profile"])
@pytest.mark.parametrize("direction", ["ingress", "egress"])
@pytest.mark.parametrize("side", ["source", "destination"])
@pytest.mark.parametrize("match", [{"names": ["builder"]}, {"selector": "team == 'ci'"}, {}])
def test_rule_service_accounts_are_accepted(kind: str, direction: str, side: str, match: dict) -> None:
    spec = {direction: [{"action": "Deny"}, {"action": "Allow", side: {"serviceAccounts": match}}]}
    d = doc(kind, spec, namespace="web") if kind == "NetworkPolicy" else doc(kind, spec)
    parsed = parse_resource(d).to_dict()
    assert parsed["spec"][direction][1][side]["serviceAccounts"] == match


@pytest.mark.parametrize("flag", ["preDNAT", "doNotTrack", "applyOnForward"])
def test_host_endpoint_policy_flags_are_accepted(flag: str) -> None:
    res = parse_resource(doc("GlobalNetworkPolicy", {flag: True, "applyOnForward": True}))
    assert res.to_dict()["spec"][flag] is True
    parse_resource(doc("GlobalNetworkPolicy", {flag: False}))


def test_host_endpoint_for_all_interfaces_is_accepted_by_address_only_refused() -> None:
    hep = lambda **spec: doc("HostEndpoint", {"node": "node-1", **spec})  # noqa: E731
    assert parse_resource(hep(interfaceName="*")).spec.interface_name == "*"
    assert errors_of(hep(expectedIPs=["198.18.0.11"])) == [
        ("spec.interfaceName", "not supported by calico.net yet (a host endpoint found by its "
                               "expectedIPs alone; name its interface)")]
    parse_resource(hep(interfaceName="eth0", expectedIPs=["198.18.0.11"]))


def test_failsafe_port_limited_to_a_network_is_accepted() -> None:
    spec = {"failsafeOutboundHostPorts": [{"protocol": "TCP", "port": 2379, "net": "198.18.0.0/24"}]}
    res = parse_resource(doc("FelixConfiguration", spec, name="default"))
    assert res.spec.failsafe_outbound_host_ports[0].net == "198.18.0.0/24"
    bad = {"failsafeInboundHostPorts": [{"protocol": "TCP", "port": 22, "net": "198.18.0.5/24"}]}
    assert [p for p, _ in errors_of(doc("FelixConfiguration", bad, name="default"))] == [
        "spec.failsafeInboundHostPorts[0].net"]


@pytest.mark.parametrize("nets,ok", [
    (["198.19.0.5/32"], True), (["198.19.0.5"], True), (["fd00::5/128", "fd00::6"], True),
    (["198.19.0.4/31"], False), (["0.0.0.0/0"], False), (["::/0"], False), (["fd00::/127"], False),
])
def test_workload_networks_are_single_addresses(nets: list[str], ok: bool) -> None:
    d = doc("WorkloadEndpoint", {"node": "node-1", "interfaceName": "cali0123456789a",
                                 "ipNetworks": nets}, namespace="web")
    if ok:
        parse_resource(d)
    else:
        errors = errors_of(d)
        assert [p for p, _ in errors] == ["spec.ipNetworks[0]"]
        assert "holds more than one address" in errors[0][1]


def test_quick_check_never_accepts_a_refused_document() -> None:
    from calico_net.model.quick import quick_valid
    refused = [
        gnp({"action": "Allow"}, serviceAccountSelector="role == "),
        gnp({"action": "Allow", "source": {"serviceAccounts": {"names": ["Not_A_Name"]}}}),
        gnp({"action": "Deny"}, preDNAT=True),
        gnp({"action": "Deny"}, doNotTrack=True),
        gnp({"action": "Deny"}, preDNAT=True, doNotTrack=True, applyOnForward=True),
        gnp({"action": "Deny", "source": {"nets": ["198.18.0.0/24\n"]}}),
        gnp({"action": "Deny"}, order=float("nan")),
        gnp({"action": "Deny"}, order=float("inf")),
        doc("WorkloadEndpoint", {"node": "n", "interfaceName": "eth0@x", "ipNetworks": []}, namespace="w"),
        doc("WorkloadEndpoint", {"node": "n", "ipNetworks": ["0.0.0.0/0"]}, namespace="w"),
        doc("WorkloadEndpoint", {"node": "n", "workload": "pod 1"}, namespace="w"),
        doc("WorkloadEndpoint", {"node": "n", "serviceAccountName": "Pod_1"}, namespace="w"),
        doc("WorkloadEndpoint", {"node": "n", "containerID": "abc\n"}, namespace="w"),
        doc("GlobalNetworkSet", {"nets": ["fd00::1%eth0"]}),
        doc("GlobalNetworkSet", {"nets": []}, uid="a\nb"),
        doc("GlobalNetworkSet", {"nets": []}, resourceVersion="1\n"),
        doc("NetworkSet", {"nets": []}, namespace="web\n"),
    ]
    for d in refused:
        assert not quick_valid(d), d
        with pytest.raises(ValidationError):
            parse_resource(d)


# --- IPAM kinds ----------------------------------------------------------------------------

def test_ipam_configuration_defaults_and_name() -> None:
    res = parse_resource(doc("IPAMConfiguration", {}, name="default"))
    assert res.spec.strict_affinity is False and res.spec.auto_allocate_blocks is True
    assert res.spec.max_blocks_per_host == 0
    assert res.to_dict()["spec"] == {}
    assert error_text(doc("IPAMConfiguration", {}, name="cluster")) == (
        'IPAMConfiguration "cluster": metadata.name: "cluster" is not an IPAMConfiguration name '
        '(it must be "default")')


@pytest.mark.parametrize("spec,path,message", [
    ({"maxBlocksPerHost": -1}, "spec.maxBlocksPerHost", "-1 must be between 0 and 1000000"),
    ({"maxBlocksPerHost": 1000001}, "spec.maxBlocksPerHost", "1000001 must be between 0 and 1000000"),
    ({"ipCooldownSeconds": 30}, "spec.ipCooldownSeconds", "not supported by calico.net yet"),
    ({"ipCooldownSeconds": 1201}, "spec.ipCooldownSeconds", "1201 must be between 0 and 1200"),
    ({"kubeVirtVMAddressPersistence": "Enabled"}, "spec.kubeVirtVMAddressPersistence",
     "not supported by calico.net yet"),
    ({"strictAffinity": "true"}, "spec.strictAffinity", ""),
    ({"maxBlocksPerHost": 4.5}, "spec.maxBlocksPerHost", ""),
])
def test_ipam_configuration_refusals_name_the_field(spec: dict, path: str, message: str) -> None:
    text = error_text(doc("IPAMConfiguration", spec, name="default"))
    assert f"{path}: " in text and message in text


def test_ip_reservation_cidrs() -> None:
    res = parse_resource(doc("IPReservation", {"reservedCIDRs": ["198.19.0.5", "198.19.1.0/30", "fd00::/126"]}))
    assert res.spec.reserved_cidrs == ["198.19.0.5", "198.19.1.0/30", "fd00::/126"]
    assert res.to_dict()["spec"] == {"reservedCIDRs": ["198.19.0.5", "198.19.1.0/30", "fd00::/126"]}
    text = error_text(doc("IPReservation", {"reservedCIDRs": ["198.19.0.0/33"]}))
    assert "spec.reservedCIDRs[0]: " in text
    assert "spec.reservedCIDRs" in error_text(doc("IPReservation", {"reservedCIDRs": "198.19.0.5"}))


def test_felix_enums_are_case_blind_as_calico() -> None:
    """Calico's validator matches these FelixConfiguration enums with (?i) patterns."""
    spec = {"chainInsertMode": "append", "defaultEndpointToHostAction": "ACCEPT",
            "logSeverityScreen": "debug", "iptablesBackend": "nft", "routeSource": "workloadips"}
    res = parse_resource(doc("FelixConfiguration", spec, name="default"))
    assert res.to_dict()["spec"] == spec  # kept as written
    assert [p for p, _ in errors_of(doc("FelixConfiguration", {"chainInsertMode": "appendx"},
                                        name="default"))] == ["spec.chainInsertMode"]


def test_standard_object_metadata_is_accepted() -> None:
    md = {"name": "p1", "generateName": "p-", "deletionTimestamp": "2024-01-02T03:04:05Z",
          "deletionGracePeriodSeconds": 30, "selfLink": "/apis/projectcalico.org/v3/ippools/p1",
          "generation": 3, "finalizers": ["example.com/cleanup"], "clusterName": "c1",
          "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                               "uid": "0b3c6f1e-1111-2222-3333-444455556666", "controller": True,
                               "blockOwnerDeletion": True}]}
    d = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet", "metadata": md,
         "spec": {"nets": ["198.18.250.0/24"]}}
    assert parse_resource(d).to_dict()["metadata"] == md
    for field, bad in (("generation", -1), ("finalizers", ["a b"]), ("selfLink", "x\n"),
                       ("ownerReferences", [{"kind": "X Y"}]), ("ownerReferences", [{"size": 1}])):
        wrong = dict(d, metadata={"name": "p1", field: bad})
        assert all(p.startswith(f"metadata.{field}") for p, _ in errors_of(wrong)), field
