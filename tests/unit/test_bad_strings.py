"""Every string-typed field of every kind refuses bad strings, naming the field.

The fields are not listed here: they are found by walking the pydantic models of
every kind in `model.kinds.KINDS` (nested rules, entity rules, ports, metadata, label
and annotation keys and values...). For each string field the test

1. builds a document of that kind holding a valid sample value at the field (the
   first of SAMPLES that the model accepts there, or the field's entry in
   SAMPLE_FOR) and checks that `parse_resource` accepts it - so the test knows the
   document is refused for the value alone, not for something else;
2. replaces the sample with each bad string - a trailing "\\n", an embedded NUL, a
   double quote, ';', '}', an ANSI escape, 10,000 characters - and asserts that
   `parse_resource` refuses it with the field's path among the error paths, and that
   the message is one bounded line without raw control characters.

A field added later with no validation (`foo: Optional[str]`) is found by the walk,
takes the sample "web", and then fails step 2 for "web\\n". Exemptions are listed in
EXEMPT, each with why. Fields calico.net refuses outright (service accounts) cannot be
accepted in step 1; REFUSED names them, and the test checks their refusal instead.
"""
from __future__ import annotations

import base64
import copy
import re
import typing
from typing import Any, Iterator, Literal, Union

import pytest
from pydantic import AfterValidator, BaseModel

from calico_net.errors import ValidationError
from calico_net.model import KINDS, parse_resource
from calico_net.model import fields as f

NOT_YET = "not supported by calico.net yet"

# Documents every field is planted into: the fewest fields each kind needs.
BASE: dict[str, dict[str, Any]] = {
    "Node": {"metadata": {"name": "node-1"}, "spec": {}},
    "IPPool": {"metadata": {"name": "pool"}, "spec": {"cidr": "198.19.0.0/16"}},
    "BGPConfiguration": {"metadata": {"name": "default"}, "spec": {}},
    "BGPPeer": {"metadata": {"name": "peer"}, "spec": {"peerIP": "198.18.0.1", "asNumber": 64512}},
    "FelixConfiguration": {"metadata": {"name": "default"}, "spec": {}},
    "Profile": {"metadata": {"name": "profile"}, "spec": {}},
    "NetworkPolicy": {"metadata": {"name": "policy", "namespace": "web"}, "spec": {}},
    "GlobalNetworkPolicy": {"metadata": {"name": "policy"}, "spec": {}},
    "NetworkSet": {"metadata": {"name": "set", "namespace": "web"}, "spec": {}},
    "GlobalNetworkSet": {"metadata": {"name": "set"}, "spec": {}},
    "WorkloadEndpoint": {"metadata": {"name": "wep", "namespace": "web"},
                         "spec": {"node": "node-1", "interfaceName": "cali0123456789a",
                                  "ipNetworks": ["198.18.0.1/32"]}},
    "HostEndpoint": {"metadata": {"name": "hep"}, "spec": {"node": "node-1", "interfaceName": "eth0"}},
    "IPReservation": {"metadata": {"name": "reserved"}, "spec": {}},
    "IPAMConfiguration": {"metadata": {"name": "default"}, "spec": {}},
    "BGPFilter": {"metadata": {"name": "filter"}, "spec": {}},
    "Tier": {"metadata": {"name": "tier"}, "spec": {}},
    "StagedNetworkPolicy": {"metadata": {"name": "policy", "namespace": "web"}, "spec": {}},
    "StagedGlobalNetworkPolicy": {"metadata": {"name": "policy"}, "spec": {}},
    "StagedKubernetesNetworkPolicy": {"metadata": {"name": "policy", "namespace": "web"}, "spec": {}},
    "KubeControllersConfiguration": {"metadata": {"name": "default"}, "spec": {}},
    "ClusterInformation": {"metadata": {"name": "default"}, "spec": {}},
}

# Required fields of nested records, filled in when a field inside one is planted.
FILL: dict[str, dict[str, Any]] = {
    "Rule": {"action": "Allow"},
    "BGPFilterRuleV4": {"action": "Accept"},
    "BGPFilterRuleV6": {"action": "Accept"},
    "EndpointPort": {"name": "web", "protocol": "TCP", "port": 80},
    "WorkloadEndpointPort": {"name": "web", "protocol": "TCP", "port": 80},
    "IPNAT": {"internalIP": "198.18.0.1", "externalIP": "198.18.0.2"},
    "SecretKeyRef": {"name": "bgp-secrets", "key": "password"},
    "BGPPassword": {"secretKeyRef": {"name": "bgp-secrets", "key": "password"}},
    "Community": {"name": "web", "value": "64512:100"},
    "PrefixAdvertisement": {"cidr": "198.18.0.0/24", "communities": ["64512:100"]},
    "ServiceIPBlock": {"cidr": "198.18.0.0/24"},
    "OrchRef": {"orchestrator": "k8s"},
    "NodeAddress": {"address": "198.18.0.11"},
    "NodeBGPSpec": {"ipv4Address": "198.18.0.11/24"},
    "ProtoPort": {"protocol": "TCP", "port": 22},
    "HealthTimeoutOverride": {"name": "InternalDataplaneMainLoop", "timeout": "90s"},
    "RouteTableRange": {"min": 1, "max": 250},
}

# Valid values to try, in order, until the model accepts one at the field.
SAMPLES = [
    "web", "projectcalico.org/v3", "default", "198.18.0.1", "198.18.0.0/24", "198.18.0.1/32", "fd00::1", "fd00::1/64",
    "198.18.0.11/24", "all()", "TCP", "Allow", "Ingress", "90s", "64512", "64512:100",
    "1000:2000", "eth0", "ee:ee:ee:ee:ee:ee", "2024-05-01T10:00:00Z", "42", "Info", "Never",
    "Enabled", "Auto", "Drop", "Accept", "Insert", "Legacy", "Off", "Tunnel", "None", "NodeIP",
    "UseNodeIP", "Self", "Automatic", "Workload", "CalicoNodeIP", "CalicoIPAM", "DoNothing",
    "AssumeNeededOnEveryNode", "kube-ipvs0", "/var/log/calico/felix.log", "calico-packet",
    "^eth[0-9]+$", "Disabled", "Manual", "Any", "Deny", "Set",
    base64.b64encode(bytes(range(32))).decode(),
]
# Fields whose sample must be a particular value (the generic ones do not fit).
SAMPLE_FOR = {
    "spec.ingress[0].source.serviceAccounts.names[0]": "builder",
    "spec.ingress[0].source.serviceAccounts.selector": "all()",
    "spec.ingress[0].destination.serviceAccounts.names[0]": "builder",
    "spec.ingress[0].destination.serviceAccounts.selector": "all()",
    "spec.egress[0].source.serviceAccounts.names[0]": "builder",
    "spec.egress[0].source.serviceAccounts.selector": "all()",
    "spec.egress[0].destination.serviceAccounts.names[0]": "builder",
    "spec.egress[0].destination.serviceAccounts.selector": "all()",
    "spec.serviceAccountSelector": "all()",
}
# Fields calico.net refuses whatever their value (the dataplane cannot enforce them):
# a valid sample is refused with NOT_YET at the path given.
REFUSED = {
    r"spec\.kubeVirtVMAddressPersistence": r"\g<0>",
}
SAMPLE_FOR.update({"spec.failsafeInboundHostPorts[0].net": "198.18.0.0/24",
                   "spec.failsafeOutboundHostPorts[0].net": "198.18.0.0/24",
                   "spec.kubeVirtVMAddressPersistence": "Enabled"})
for _rules in ("exportV4", "importV4", "exportV6", "importV6"):
    SAMPLE_FOR[f"spec.{_rules}[0].source"] = "RemotePeers"
    SAMPLE_FOR[f"spec.{_rules}[0].matchOperator"] = "Equal"
    SAMPLE_FOR[f"spec.{_rules}[0].cidr"] = "198.18.0.0/24" if _rules.endswith("4") else "fd00:198:18::/64"
# metadata.namespace exists on every kind's metadata but a kind that is not namespaced
# refuses any namespace (with this message at metadata.namespace).
NOT_NAMESPACED = "is not namespaced"

BAD = {
    "trailing newline": lambda s: s + "\n",
    "NUL": lambda s: s[:1] + "\x00" + s[1:],
    "double quote": lambda s: s + '"',
    "semicolon": lambda s: s + ";",
    "closing brace": lambda s: s + "}",
    "ANSI escape": lambda s: s + "\x1b[31m",
    "10,000 characters": lambda s: "a" * 10_000,
}


def _free_text(mutation: str) -> bool:
    return mutation in ("trailing newline", "double quote", "semicolon", "closing brace",
                        "10,000 characters")


# (field path pattern or "selector", mutation) -> why it may be accepted.
EXEMPT: list[tuple[str, Any, str]] = [
    # Kubernetes annotation values are free text (kubectl stores JSON in them), kept in
    # etcd and printed back; they never reach nft, BIRD, a file name or a command. So
    # line breaks, quotes and any length up to the 256 KiB total are theirs; NUL and
    # terminal escapes are still refused.
    (r"(.*\.)?metadata\.annotations\{value\}", _free_text, "annotation values are free text"),
    # Whitespace between tokens is insignificant in Calico's selector grammar, so a
    # selector written as a YAML block scalar ends in "\n" and means what it says; the
    # text is parsed into a tree and hashed into set names, never pasted anywhere.
    ("selector", lambda m: m == "trailing newline", "selector whitespace"),
    # Regular expressions: '{m,n}' is repetition syntax, so a '}' is part of the grammar.
    # These patterns are only ever compiled (interface and log-file matching), never
    # pasted into nft or BIRD text; quotes, ';', whitespace and control characters are
    # refused all the same.
    (r"spec\.(logDebugFilenameRegex|bpfDataIfacePattern|mtuIfacePattern)",
     lambda m: m == "closing brace", "regular expression syntax"),
]


# --- walking the models ----------------------------------------------------------------------

def _parts(ann: Any) -> tuple[Any, list[Any]]:
    """(annotation without Annotated/Optional, metadata of the Annotated layers)."""
    meta: list[Any] = []
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            args = typing.get_args(ann)
            ann, meta = args[0], meta + list(args[1:])
        elif origin is Union:
            members = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(members) == 1:
                ann = members[0]
            else:
                return ann, meta
        else:
            return ann, meta


def _is_str(ann: Any) -> bool:
    if ann is str:
        return True
    origin = typing.get_origin(ann)
    if origin is Literal:
        return all(isinstance(a, str) for a in typing.get_args(ann))
    if origin is Union:
        return any(_is_str(_parts(a)[0]) for a in typing.get_args(ann))
    return False


def _is_selector(meta: list[Any]) -> bool:
    return any(isinstance(m, AfterValidator) and m.func is f.check_selector for m in meta)


Leaf = tuple[tuple[Any, ...], bool]   # (path, is it a selector)


def string_leaves(model: type[BaseModel], path: tuple[Any, ...] = ()) -> Iterator[Leaf]:
    """Paths of every string position in `model`: field aliases, 0 for a list element,
    ("{key}",) / ("{value}",) for a mapping's keys and values; models as path parts
    ("<Model>") mark where a nested record starts."""
    for name, info in model.model_fields.items():
        alias = info.alias or name
        ann, meta = _parts(info.annotation)
        yield from _leaves_of(ann, meta + list(info.metadata), path + (alias,))


def _leaves_of(ann: Any, meta: list[Any], path: tuple[Any, ...]) -> Iterator[Leaf]:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        yield from string_leaves(ann, path + (f"<{ann.__name__}>",))
        return
    origin = typing.get_origin(ann)
    if origin is list:
        elem, emeta = _parts(typing.get_args(ann)[0])
        yield from _leaves_of(elem, emeta, path + (0,))
        return
    if origin is dict:
        key, value = typing.get_args(ann)
        if _is_str(_parts(key)[0]):
            yield path + ("{key}",), False
        if _is_str(_parts(value)[0]):
            yield path + ("{value}",), False
        return
    if _is_str(ann):
        yield path, _is_selector(meta)


def path_text(path: tuple[Any, ...]) -> str:
    """The field path as parse_resource reports it (a mapping's keys and values: the
    mapping's own path, the messages name the key)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("{key}", "{value}") or part.startswith("<"):
            continue
        else:
            out += f".{part}" if out else part
    return out


def leaf_name(path: tuple[Any, ...]) -> str:
    text = path_text(path)
    if path[-1] in ("{key}", "{value}"):
        text += path[-1]
    return text


# --- documents -----------------------------------------------------------------------------

def plant(kind: str, path: tuple[Any, ...], value: str) -> dict[str, Any]:
    """A document of `kind` with `value` at `path`, nested records filled in (FILL)."""
    doc = {"apiVersion": "projectcalico.org/v3", "kind": kind, "spec": {},
           **copy.deepcopy(BASE[kind])}
    node: Any = doc
    for i, part in enumerate(path):
        if isinstance(part, str) and part.startswith("<"):     # entering a record
            for k, v in FILL.get(part[1:-1], {}).items():
                node.setdefault(k, copy.deepcopy(v))
            continue
        if part in ("{key}", "{value}"):
            node.clear()
            node.update({value: "web"} if part == "{key}" else {"app": value})
            break
        if i == len(path) - 1:
            if isinstance(part, int):
                node[:1] = [value]
            else:
                node[part] = value
            break
        want: type = list if isinstance(path[i + 1], int) else dict
        if isinstance(part, int):
            if not node or not isinstance(node[0], want):
                node[:1] = [want()]
            node = node[0]
        else:
            if not isinstance(node.get(part), want):
                node[part] = want()
            node = node[part]
    _context(doc, path_text(path))
    return doc


def _context(doc: dict[str, Any], path: str) -> None:
    """Siblings a field needs to be valid at all."""
    m = re.match(r"spec\.(ingress|egress)\[0\]\.(source|destination)\.(ports|notPorts)", path)
    if m:
        doc["spec"][m.group(1)][0]["protocol"] = "TCP"
    if doc["kind"] == "BGPPeer" and path == "spec.peerSelector":
        del doc["spec"]["peerIP"], doc["spec"]["asNumber"]
    m = re.match(r"spec\.((?:ex|im)portV([46]))\[0\]\.(cidr|matchOperator)$", path)
    if doc["kind"] == "BGPFilter" and m:
        # a BGPFilter rule takes cidr and matchOperator together, of the rule's family
        rule = doc["spec"][m.group(1)][0]
        rule.setdefault("matchOperator", "Equal")
        rule.setdefault("cidr", "198.18.0.0/24" if m.group(2) == "4" else "fd00:198:18::/64")


def refusal_path(path: str) -> str | None:
    for pattern, where in REFUSED.items():
        m = re.fullmatch(pattern, path)
        if m:
            return m.expand(where)
    return None


def errors(doc: dict[str, Any]) -> ValidationError | None:
    try:
        parse_resource(doc)
    except ValidationError as exc:
        return exc
    return None


def sample_for(kind: str, path: tuple[Any, ...]) -> str:
    text = leaf_name(path)
    if text in SAMPLE_FOR:
        return SAMPLE_FOR[text]
    if text == "kind":
        return kind
    for sample in SAMPLES:
        if errors(plant(kind, path, sample)) is None:
            return sample
    raise AssertionError(f"{kind} {text}: no value in SAMPLES is accepted there - add one to "
                         "SAMPLES or SAMPLE_FOR (or FILL/BASE/_context if the document misses "
                         "something the field needs)")


def exempt(path: tuple[Any, ...], is_selector: bool, mutation: str) -> bool:
    text = leaf_name(path)
    for where, applies, _why in EXEMPT:
        matches = is_selector if where == "selector" else re.fullmatch(where, text)
        if matches and applies(mutation):
            return True
    return False


CASES = [(kind, leaf) for kind, info in KINDS.items() for leaf in string_leaves(info.model)]


def test_the_walk_finds_the_string_fields() -> None:
    names = {(kind, leaf_name(path)) for kind, (path, _) in CASES}
    # a sample of what must be there, from the top level to the deepest rule field
    for expected in [
        ("GlobalNetworkPolicy", "metadata.name"), ("NetworkPolicy", "metadata.namespace"),
        ("Profile", "metadata.labels{key}"), ("Profile", "metadata.labels{value}"),
        ("Profile", "metadata.annotations{value}"), ("Profile", "spec.labelsToApply{value}"),
        ("GlobalNetworkPolicy", "spec.egress[0].destination.nets[0]"),
        ("NetworkPolicy", "spec.ingress[0].source.serviceAccounts.names[0]"),
        ("NetworkPolicy", "spec.ingress[0].metadata.annotations{value}"),
        ("GlobalNetworkPolicy", "spec.ingress[0].destination.ports[0]"),
        ("FelixConfiguration", "spec.interfacePrefix"),
        ("FelixConfiguration", "spec.failsafeInboundHostPorts[0].net"),
        ("BGPConfiguration", "spec.nodeMeshPassword.secretKeyRef.key"),
        ("HostEndpoint", "spec.interfaceName"), ("WorkloadEndpoint", "spec.ipNATs[0].externalIP"),
        ("Node", "status.wireguardPublicKey"), ("BGPPeer", "spec.peerIP"),
    ]:
        assert expected in names, expected
    assert len(CASES) > 300
    assert {kind for kind, _ in CASES} == set(KINDS)


@pytest.mark.parametrize("kind,leaf", CASES, ids=[f"{k}:{leaf_name(p)}" for k, (p, _) in CASES])
def test_bad_strings_are_refused_with_the_field_path(kind: str, leaf: Leaf) -> None:
    path, is_selector = leaf
    field = path_text(path)
    refused_at = refusal_path(leaf_name(path))
    if field == "metadata.namespace" and not KINDS[kind].namespaced:
        sample, refused_at = "web", field
        control = errors(plant(kind, path, sample))
        assert control is not None and NOT_NAMESPACED in str(control), control
    else:
        sample = sample_for(kind, path)
        control = errors(plant(kind, path, sample))
        if refused_at is None:
            assert control is None, f"the valid sample {sample!r} was refused: {control}"
        else:
            assert control is not None, f"{sample!r} at {field} was accepted"
            assert any(p == refused_at and NOT_YET in m for p, m in control.errors), control
    for mutation, make in BAD.items():
        value = make(sample)
        exc = errors(plant(kind, path, value))
        if exc is None:
            assert exempt(path, is_selector, mutation), (
                f"{kind} {leaf_name(path)} accepted {value[:40]!r}... ({mutation})")
            continue
        message = str(exc)
        paths = [p for p, _ in exc.errors]
        if exempt(path, is_selector, mutation):   # refused for being there at all
            assert field in paths or refused_at in paths, f"{mutation}: {message[:300]}"
        else:
            assert field in paths, f"{mutation}: {message[:300]}"
        if path[-1] == "{key}":
            assert f.show(value)[:40] in message, message[:300]
        assert len(message) < 2000, f"{mutation}: message of {len(message)} characters"
        assert message.isprintable(), f"{mutation}: unprintable characters in {message[:300]!r}"


def test_free_text_still_refuses_nul_and_escapes() -> None:
    for mutation in ("NUL", "ANSI escape"):
        assert not _free_text(mutation)
    doc = plant("Profile", ("metadata", "<Metadata>", "annotations", "{value}"), "a\x00b")
    exc = errors(doc)
    assert exc is not None and exc.errors[0][0] == "metadata.annotations"
    assert '"a\\u0000b"' in str(exc)
