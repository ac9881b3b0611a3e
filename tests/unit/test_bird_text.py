"""Strings are data, never BIRD syntax (issue 14): hostile values in every string
input of confd's renderer are refused with a clear error or written as inert quoted
data, and every accepted rendering still passes the real ``bird -p -c``.

The hostile values carry the marker ``injected`` in what would be a new statement
(``protocol device injected { }``): a rendering is safe when that marker appears
only in comments or inside a well-formed ``description "...";`` string, the
configuration has exactly the protocols of the benign rendering (or fewer, when the
carrying object was skipped), and BIRD accepts it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from calico_net.agent.confd import birdctl, birdtext
from calico_net.agent.confd.birdtext import BirdText, BirdTextError
from calico_net.agent.confd.render import (
    RenderError,
    RenderOptions,
    build_bird_model,
    render_bird_config,
    render_model,
    validate_bird_config,
)
from calico_net.agent.confd.runner import Confd, ConfdSettings, SecretReader
from calico_net.datastore.etcd import KV
from calico_net.datastore.store import RESOURCE_PREFIX

BIRD = "/usr/sbin/bird"

HOSTILE: dict[str, str] = {
    "quote": 'evil"; protocol device injected { }; description "',
    "semicolon": "evil; protocol device injected { }",
    "brace": "evil } protocol device injected {",
    "hash": "evil # protocol device injected { }",
    "newline": "evil\nprotocol device injected { }",
    "cr": "evil\rprotocol device injected { }",
    "nul": "evil\x00protocol device injected { }",
    "tab": "evil\tinjected",
    "backslash": "evil\\injected",
    "bidi-override": "evil\u202einjected",
    "line-separator": "evil\u2028injected",
    "surrogate": "evil\udcffinjected",
    "long": "injected" + "e" * 5000,
    "long-semicolons": "injected" + ";" * 300,
}
#: The hostile values a BIRD string can hold as they are (inert between quotes).
QUOTABLE = {"semicolon", "brace", "hash"}


# ------------------------------------------------------------------ the cluster


def node(name: str, ipv4: str, **bgp: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "Node",
            "metadata": {"name": name, "labels": {"rack": "r1"}},
            "spec": {"bgp": {"ipv4Address": f"{ipv4}/24", **bgp}}}


def peer(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": meta, "spec": spec}


def baseline() -> dict[str, Any]:
    """Keyword arguments of render_bird_config for node-b: a 3-node mesh with a
    reflector, an MD5 mesh, a global eBGP peer with every option, a node-specific
    peer, a selector peer, two pools and two blocks."""
    return {
        "node_name": "node-b",
        "nodes": [
            node("node-a", "198.18.0.11"),
            node("node-b", "198.18.0.12", asNumber="64512"),
            node("node-c", "198.18.0.13"),
            node("rr-1", "198.18.0.2", routeReflectorClusterID="244.0.0.1"),
        ],
        "bgp_configs": [
            {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
             "metadata": {"name": "default", "annotations": {"calico-net.io/bfd": "true"}},
             "spec": {"asNumber": "64512", "listenPort": 179, "logSeverityScreen": "Info",
                      "nodeMeshMaxRestartTime": "120s",
                      "nodeMeshPassword": {"secretKeyRef": {"name": "bgp", "key": "mesh"}}}},
            {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
             "metadata": {"name": "node.node-c"}, "spec": {"listenPort": 1790}},
        ],
        "peers": [
            peer("tor", {"calico-net.io/bfd": "true"}, peerIP="198.18.2.1", asNumber="65001",
                 password={"secretKeyRef": {"name": "bgp", "key": "tor"}},
                 maxRestartTime="90s", ttlSecurity=2, numAllowedLocalASNumbers=1,
                 keepOriginalNextHop=True, sourceAddress="UseNodeIP"),
            peer("rack", node="node-b", peerIP="198.18.3.1:1790", asNumber="65002"),
            peer("by-label", nodeSelector="rack == 'r1'", peerSelector="has(nothing)",
                 asNumber="64512"),
        ],
        "pools": [
            {"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
             "metadata": {"name": "pool-a"}, "spec": {"cidr": "198.19.0.0/17"}},
            {"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
             "metadata": {"name": "pool-b"},
             "spec": {"cidr": "198.19.128.0/17", "disableBGPExport": True}},
        ],
        "affine_blocks": ["198.19.1.0/26", "198.19.1.64/26"],
        "passwords": {"bgp/mesh": "mesh-key", "bgp/tor": "tor-key"},
        "options": RenderOptions(),
    }


def _set(path: str) -> Callable[[dict[str, Any], Any], None]:
    """A setter for ``path`` in the baseline: ``peers[0].metadata.name``."""

    def setter(kw: dict[str, Any], value: Any) -> None:
        parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
        obj: Any = kw
        for part in parts[:-1]:
            obj = obj[int(part[1:-1])] if part.startswith("[") else obj[part]
        last = parts[-1]
        if last.startswith("["):
            obj[int(last[1:-1])] = value
        else:
            obj[last] = value

    return setter


def _set_option(name: str) -> Callable[[dict[str, Any], Any], None]:
    def setter(kw: dict[str, Any], value: Any) -> None:
        if name == "direct_interfaces":
            value = ('-"cali*"', value)
        kw["options"] = dataclasses.replace(kw["options"], **{name: value})

    return setter


def _set_password(key: str) -> Callable[[dict[str, Any], Any], None]:
    def setter(kw: dict[str, Any], value: Any) -> None:
        kw["passwords"] = dict(kw["passwords"], **{key: value})

    return setter


def _set_secret_ref_name(kw: dict[str, Any], value: Any) -> None:
    kw["peers"][0]["spec"]["password"]["secretKeyRef"]["name"] = value
    kw["passwords"] = dict(kw["passwords"], **{f"{value}/tor": "tor-key"})


def _set_annotation(which: str) -> Callable[[dict[str, Any], Any], None]:
    def setter(kw: dict[str, Any], value: Any) -> None:
        res = kw["bgp_configs"][0] if which == "config" else kw["peers"][0]
        res["metadata"]["annotations"]["calico-net.io/bfd"] = value

    return setter


def _set_own_name(kw: dict[str, Any], value: Any) -> None:
    kw["node_name"] = value
    kw["nodes"][1]["metadata"]["name"] = value


#: Every string input of the renderer: (field, setter).
FIELDS: dict[str, Callable[[dict[str, Any], Any], None]] = {
    "own node name": _set_own_name,
    "other Node metadata.name": _set("nodes[0].metadata.name"),
    "reflector Node metadata.name": _set("nodes[3].metadata.name"),
    "Node labels value": _set("nodes[1].metadata.labels.rack"),
    "Node spec.bgp.ipv4Address": _set("nodes[0].spec.bgp.ipv4Address"),
    "own Node spec.bgp.ipv4Address": _set("nodes[1].spec.bgp.ipv4Address"),
    "Node spec.bgp.ipv6Address": _set("nodes[0].spec.bgp.ipv6Address"),
    "Node spec.bgp.asNumber": _set("nodes[0].spec.bgp.asNumber"),
    "Node spec.bgp.routeReflectorClusterID": _set("nodes[3].spec.bgp.routeReflectorClusterID"),
    "BGPConfiguration spec.asNumber": _set("bgp_configs[0].spec.asNumber"),
    "BGPConfiguration spec.listenPort": _set("bgp_configs[0].spec.listenPort"),
    "node BGPConfiguration spec.listenPort": _set("bgp_configs[1].spec.listenPort"),
    "BGPConfiguration spec.logSeverityScreen": _set("bgp_configs[0].spec.logSeverityScreen"),
    "BGPConfiguration spec.nodeMeshMaxRestartTime":
        _set("bgp_configs[0].spec.nodeMeshMaxRestartTime"),
    "BGPConfiguration BFD annotation": _set_annotation("config"),
    "BGPConfiguration metadata.name": _set("bgp_configs[1].metadata.name"),
    "nodeMeshPassword secret": _set_password("bgp/mesh"),
    "BGPPeer metadata.name": _set("peers[0].metadata.name"),
    "node-specific BGPPeer metadata.name": _set("peers[1].metadata.name"),
    "BGPPeer spec.peerIP": _set("peers[0].spec.peerIP"),
    "BGPPeer spec.asNumber": _set("peers[0].spec.asNumber"),
    "BGPPeer spec.node": _set("peers[1].spec.node"),
    "BGPPeer spec.nodeSelector": _set("peers[2].spec.nodeSelector"),
    "BGPPeer spec.peerSelector": _set("peers[2].spec.peerSelector"),
    "BGPPeer spec.sourceAddress": _set("peers[0].spec.sourceAddress"),
    "BGPPeer spec.maxRestartTime": _set("peers[0].spec.maxRestartTime"),
    "BGPPeer spec.ttlSecurity": _set("peers[0].spec.ttlSecurity"),
    "BGPPeer spec.numAllowedLocalASNumbers": _set("peers[0].spec.numAllowedLocalASNumbers"),
    "BGPPeer password secretKeyRef.name": _set_secret_ref_name,
    "BGPPeer password secret": _set_password("bgp/tor"),
    "BGPPeer BFD annotation": _set_annotation("peer"),
    "IPPool metadata.name": _set("pools[0].metadata.name"),
    "IPPool spec.cidr": _set("pools[0].spec.cidr"),
    "affine block": _set("affine_blocks[0]"),
    "option router_id": _set_option("router_id"),
    "option log_target": _set_option("log_target"),
    "option direct_interfaces": _set_option("direct_interfaces"),
}


# ------------------------------------------------------------------ checks

_DESCRIPTION_RE = re.compile(r'  description "[^"\\\n]*";')
_PASSWORD_RE = re.compile(r'  password "[^"\\\n]*";')
_PROTOCOL_RE = re.compile(r"protocol (?:device|direct) \{|protocol (?:static|kernel|bfd) [a-z0-9_]+ \{"
                          r"|protocol bgp [A-Za-z0-9_]+ from calico_bgp_v[46] \{")


def _statements(text: str) -> list[str]:
    """The configuration without comments and without description strings."""
    out = []
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if _DESCRIPTION_RE.fullmatch(line):
            line = '  description "…";'
        if _PASSWORD_RE.fullmatch(line):
            line = '  password "…";'
        out.append(line)
    return out


def _protocols(text: str) -> list[str]:
    return [ln for ln in _statements(text) if ln.startswith("protocol ")]


def assert_inert(text: str, base_text: str) -> None:
    """``text`` is a configuration in which no hostile value became syntax."""
    text.encode("utf-8")  # no surrogate reached the text (write_if_changed encodes it)
    for ch in text:
        assert ch == "\n" or not unicodedata.category(ch).startswith("C"), (
            f"control/format character U+{ord(ch):04X} in bird.cfg")
        assert ch not in "\u2028\u2029"
    for line in _statements(text):
        assert "injected" not in line and "evil" not in line, f"hostile text became syntax: {line!r}"
    protocols = _protocols(text)
    for line in protocols:
        assert _PROTOCOL_RE.fullmatch(line), f"unexpected protocol statement {line!r}"
    assert len(protocols) <= len(_protocols(base_text)), "more protocols than the benign rendering"
    assert len(_statements(text)) <= len(_statements(base_text)) + 5  # no new blocks
    validate_bird_config(text, bird_binary=BIRD)  # the real parser agrees


@pytest.fixture(scope="module")
def base_text() -> str:
    text = render_bird_config(**baseline())
    validate_bird_config(text, bird_binary=BIRD)
    # The baseline really has what the hostile cases attack.
    for needle in ('password "tor-key";', 'password "mesh-key";', "protocol bgp Global_198_18_2_1",
                   "protocol bgp Node_198_18_3_1_port_1790", "RR_198_18_0_2", "Mesh_198_18_0_13",
                   "port 1790", "bfd on;", "multihop 2;", "route 198.19.1.0/26 blackhole;"):
        assert needle in text, needle
    return text


# ------------------------------------------------------------------ every field


@pytest.mark.parametrize("value_name", sorted(HOSTILE))
@pytest.mark.parametrize("field", sorted(FIELDS))
def test_hostile_value_is_refused_or_inert(field: str, value_name: str, base_text: str) -> None:
    kw = copy.deepcopy(baseline())
    FIELDS[field](kw, HOSTILE[value_name])
    try:
        text = render_bird_config(**kw)
    except RenderError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\x00" not in message, repr(message)
        return
    assert_inert(text, base_text)


@pytest.mark.parametrize("value_name", sorted(HOSTILE))
def test_hostile_peer_name_adds_no_protocol_or_statement(value_name: str, base_text: str) -> None:
    kw = baseline()
    value = HOSTILE[value_name]
    kw["peers"][0]["metadata"]["name"] = value
    rejected: list[str] = []
    text = render_bird_config(**kw, rejected=rejected)
    assert_inert(text, base_text)
    if value_name in QUOTABLE:
        # Inert data: the name is inside the description string, nothing else changed.
        assert f'  description "BGPPeer {value} (198.18.2.1)";' in text.splitlines()
        assert _statements(text) == _statements(base_text)
        assert rejected == []
    else:
        # Refused: that peer's session is gone, every other one is still there.
        assert "protocol bgp Global_198_18_2_1 " not in text
        assert set(_protocols(base_text)) - set(_protocols(text)) == {
            "protocol bgp Global_198_18_2_1 from calico_bgp_v4 {"}
        assert len(rejected) == 1 and rejected[0].startswith("BGPPeer "), rejected
        assert "BGPPeer name" in rejected[0]
        note_lines = [ln for ln in text.splitlines() if ln.startswith("#   - BGPPeer ")]
        assert len(note_lines) == 1  # the note is one comment line, however hostile


@pytest.mark.parametrize("value_name", sorted(set(HOSTILE) - QUOTABLE))
def test_hostile_own_node_name_is_a_clear_render_error(value_name: str) -> None:
    kw = baseline()
    _set_own_name(kw, HOSTILE[value_name])
    with pytest.raises(RenderError, match="this node's name") as err:
        render_bird_config(**kw)
    assert "\n" not in str(err.value)


def test_quotable_own_node_name_is_inert_in_the_header(base_text: str) -> None:
    kw = baseline()
    _set_own_name(kw, HOSTILE["semicolon"])
    text = render_bird_config(**kw)
    assert_inert(text, base_text)
    assert text.splitlines()[0].startswith(f"# Generated by calico.net confd for node {HOSTILE['semicolon']}")


def test_bad_password_is_refused_without_showing_it() -> None:
    kw = baseline()
    kw["passwords"]["bgp/tor"] = 'sec"ret\nmore'
    rejected: list[str] = []
    text = render_bird_config(**kw, rejected=rejected)
    assert "sec" not in "".join(rejected) and "sec" not in text
    assert any("its password" in r for r in rejected)
    kw["passwords"]["bgp/mesh"] = "q" * 81
    with pytest.raises(RenderError, match="nodeMeshPassword") as err:
        render_bird_config(**kw)
    assert "qqq" not in str(err.value)


@pytest.mark.parametrize("peer_ip", ["198.18.2.1:0", "198.18.2.1:65536", "198.18.2.1:99999",
                                     "[2001:db8::1]:70000", "198.18.2.1:١٢", "fe80::1%eth0",
                                     "198.18.2.1\n", "198.18.2.1 ; }"])
def test_bad_peer_ip_skips_only_that_peer(peer_ip: str, base_text: str) -> None:
    kw = baseline()
    kw["peers"][0]["spec"]["peerIP"] = peer_ip
    rejected: list[str] = []
    text = render_bird_config(**kw, rejected=rejected)
    if peer_ip == "198.18.2.1\n":
        # Parsed to the canonical address: only the parsed value reaches the file.
        assert "protocol bgp Global_198_18_2_1 " in text and rejected == []
    else:
        assert any(r.startswith("BGPPeer tor skipped") for r in rejected), rejected
    assert_inert(text, base_text)


@pytest.mark.parametrize("value", [0, 256, -1, "2; }", True, 2.5])
def test_bad_ttl_security_is_refused(value: Any) -> None:
    kw = baseline()
    kw["peers"][0]["spec"]["ttlSecurity"] = value
    rejected: list[str] = []
    text = render_bird_config(**kw, rejected=rejected)
    if value == 0:  # unset
        assert rejected == []
    else:
        assert any("ttlSecurity" in r for r in rejected), rejected
    validate_bird_config(text, bird_binary=BIRD)


# ------------------------------------------------------------------ the template's last line


def _model() -> Any:
    kw = baseline()
    return build_bird_model(
        kw["node_name"], kw["nodes"], kw["bgp_configs"], kw["peers"], kw["pools"],
        kw["affine_blocks"], passwords=kw["passwords"], options=kw["options"])


SLIPPED: dict[str, Callable[[Any], None]] = {
    "description": lambda m: setattr(m.families[0].sessions[0], "description", HOSTILE["quote"]),
    "description newline": lambda m: setattr(m.families[0].sessions[0], "description",
                                             HOSTILE["newline"]),
    "protocol name": lambda m: setattr(m.families[0].sessions[0], "name",
                                       "Evil { } protocol device injected"),
    "long protocol name": lambda m: setattr(m.families[0].sessions[0], "name", "P" * 65),
    "neighbor": lambda m: setattr(m.families[0].sessions[0], "neighbor", "198.18.2.1 as 1; }"),
    "source address": lambda m: setattr(m.families[0].sessions[0], "source_address", "x;"),
    "password": lambda m: setattr(m.families[0].sessions[0], "password", 'k"; injected'),
    "as number as text": lambda m: setattr(m.families[0].sessions[0], "as_number", "1; injected"),
    "port as bool": lambda m: setattr(m.families[0].sessions[0], "port", True),
    "rr cluster id": lambda m: setattr(m.families[0].sessions[0], "rr_client", True)
    or setattr(m.families[0].sessions[0], "rr_cluster_id", "1.2.3.4; injected"),
    "router id": lambda m: setattr(m, "router_id", "198.18.0.12; protocol device injected {}"),
    "block": lambda m: m.families[0].blocks.append("198.19.9.0/24 blackhole; injected"),
    "block with host bits": lambda m: m.families[0].blocks.append("198.19.9.1/24"),
    "pool": lambda m: m.families[0].export_pools.append("198.19.0.0/16+ ]; injected"),
    "block subnet pattern": lambda m: m.families[0].block_subnets.append("198.19.1.0/26{27,40}"),
    "log target": lambda m: setattr(m, "log_target", 'x"; injected'),
    "log classes": lambda m: setattr(m, "log_classes", "all; injected"),
    "debug": lambda m: setattr(m, "debug_protocols", "all; injected"),
    "direct interface": lambda m: m.direct_interfaces.append((False, 'eth0" ; injected')),
}


@pytest.mark.parametrize("slip", sorted(SLIPPED))
def test_value_that_slipped_past_the_builder_is_refused_by_the_template(slip: str) -> None:
    m = _model()
    SLIPPED[slip](m)
    with pytest.raises(BirdTextError):
        render_model(m)


@pytest.mark.parametrize("slip", ["node name", "note", "kind"])
def test_comments_stay_comments(slip: str, base_text: str) -> None:
    m = _model()
    payload = HOSTILE["newline"] + "\r\x00\u2028" + HOSTILE["surrogate"]
    if slip == "node name":
        m.node_name = payload
    elif slip == "note":
        m.notes.append(payload)
    else:
        m.families[0].sessions[0].kind = payload
    assert_inert(render_model(m), base_text)


def test_template_refuses_a_raw_string() -> None:
    """finalize is on: printing any value that skipped the birdtext filters fails."""
    from calico_net.agent.confd.render import _environment

    env = _environment()
    assert env.from_string("{{ n }} {{ t }}").render(n=5, t=birdtext.bird_ident("ok")) == "5 ok"
    for raw in ("plain", 1.5, True, None, ["a"]):
        with pytest.raises(BirdTextError, match="birdtext filters"):
            env.from_string("{{ v }}").render(v=raw)
    with pytest.raises(BirdTextError):
        env.from_string('{{ "literal" }}').render()


# ------------------------------------------------------------------ birdtext itself


@pytest.mark.parametrize("value,ok", [
    ("node-a.example", True), ("a;b}c#d{e'f", True), ("ünïcode", True), ("", True),
    ('a"b', False), ("a\\b", False), ("a\nb", False), ("a\rb", False), ("a\x00b", False),
    ("a\tb", False), ("a\x7fb", False), ("a\x85b", False), ("a\u202eb", False),
    ("a\u200bb", False), ("a\u2028b", False), ("a\udcffb", False), ("x" * 1024, True),
    ("x" * 1025, False), ("é" * 512, True), ("é" * 513, False), (5, False), (None, False),
])
def test_bird_str(value: Any, ok: bool) -> None:
    if ok:
        out = birdtext.bird_str(value)
        assert isinstance(out, BirdText) and out == f'"{value}"'
    else:
        with pytest.raises(BirdTextError, match="string"):
            birdtext.bird_str(value, "test string")


def test_bird_str_at_the_limit_passes_bird() -> None:
    text = ("router id 198.18.0.1;\nprotocol device {\n  description "
            + birdtext.bird_str("é" * 512) + ";\n}\n")
    validate_bird_config(text, bird_binary=BIRD)


def test_password_errors_never_show_it() -> None:
    for bad in ('zq"zq', "zq\nzq", "zq\\zq", "q" * 81, ""):
        with pytest.raises(BirdTextError) as err:
            birdtext.bird_password(bad)
        assert "zq" not in str(err.value) and "qqq" not in str(err.value)
    assert birdtext.bird_password("q" * 80) == '"' + "q" * 80 + '"'


@pytest.mark.parametrize("value,ok", [
    ("Mesh_198_18_0_12", True), ("_x", True), ("P" * 64, True), ("P" * 65, False),
    ("1abc", False), ("a-b", False), ("a b", False), ("a\n", False), ("", False),
    ("Mesh_١", False), (7, False),
])
def test_bird_ident(value: Any, ok: bool) -> None:
    if ok:
        assert birdtext.bird_ident(value) == value
    else:
        with pytest.raises(BirdTextError):
            birdtext.bird_ident(value)


@pytest.mark.parametrize("value,ok", [
    (0, True), (4294967295, True), (4294967296, False), (-1, False), (True, False),
    ("5", False), (5.0, False),
])
def test_bird_int(value: Any, ok: bool) -> None:
    if ok:
        assert birdtext.bird_int(value) == str(value)
    else:
        with pytest.raises(BirdTextError):
            birdtext.bird_int(value)


@pytest.mark.parametrize("value,out", [
    ("198.18.0.1", "198.18.0.1"), ("2001:DB8::0:1", "2001:db8::1"), ("198.18.0.1\n", None),
    (" 198.18.0.1", None), ("198.18.0.1;", None), ("fe80::1%eth0", None), ("", None),
])
def test_bird_ip(value: str, out: str | None) -> None:
    if out:
        assert birdtext.bird_ip(value) == out
    else:
        with pytest.raises(BirdTextError):
            birdtext.bird_ip(value)
    with pytest.raises(BirdTextError, match="IPv4"):
        birdtext.bird_ip("2001:db8::1", family=4)


@pytest.mark.parametrize("value,out", [
    ("198.19.0.0/16", "198.19.0.0/16"), ("2001:db8::/64", "2001:db8::/64"),
    ("198.19.0.1/16", None), ("198.19.0.0/16\n", None), ("198.19.0.0/16+", None),
    ("198.19.0.0/33", None),
])
def test_bird_prefix(value: str, out: str | None) -> None:
    if out:
        assert birdtext.bird_prefix(value) == out
    else:
        with pytest.raises(BirdTextError):
            birdtext.bird_prefix(value)


@pytest.mark.parametrize("value,out", [
    ("198.19.1.0/26{27,32}", "198.19.1.0/26{27,32}"), ("198.19.1.0/26{25,32}", None),
    ("198.19.1.0/26{27,33}", None), ("198.19.1.0/26{27,32}\n", None), ("x{1,2}", None),
])
def test_bird_prefix_pattern(value: str, out: str | None) -> None:
    if out:
        assert birdtext.bird_prefix_pattern(value) == out
    else:
        with pytest.raises(BirdTextError):
            birdtext.bird_prefix_pattern(value)


@pytest.mark.parametrize("value,out", [
    ('-"cali*"', '-"cali*"'), ('"*"', '"*"'), ("-kube-ipvs*", '-"kube-ipvs*"'),
    ("eth0", '"eth0"'), ('"eth 0"', None), ("a/b", None), ("a:b", None), ('"a"b"', None),
    ("", None), ('""', None), ("x" * 65, None),
])
def test_bird_iface_pattern(value: str, out: str | None) -> None:
    if out:
        assert birdtext.bird_iface_pattern(value) == out
    else:
        with pytest.raises(BirdTextError):
            birdtext.bird_iface_pattern(value)


def test_bird_log_target_and_comment() -> None:
    assert birdtext.bird_log_target("stderr") == "stderr"
    assert birdtext.bird_log_target("/var/log/bird.log") == '"/var/log/bird.log"'
    for bad in ("relative.log", '/x"y', "/x\ny", "stderr;"):
        with pytest.raises(BirdTextError):
            birdtext.bird_log_target(bad)
    assert birdtext.bird_comment("a\nb\rc\x00d\u2028e") == "a?b?c?d?e"
    assert len(birdtext.bird_comment("x" * 10000)) == birdtext.MAX_COMMENT_CHARS + 1


# ------------------------------------------------------------------ the control socket


@pytest.mark.parametrize("bad", ['a"b', "a\nconfigure", "a\\b", "a\x00b"])
def test_birdctl_quoting_goes_through_birdtext(bad: str) -> None:
    with pytest.raises(ValueError):
        birdctl._quote(bad)
    assert birdctl._quote("Mesh_*") == '"Mesh_*"'


def test_birdctl_parsers_are_anchored() -> None:
    assert birdctl.address_from_name("Mesh_198_18_0_12_port_1790") == "198.18.0.12"
    assert birdctl.address_from_name("Mesh_198_18_0_12_port_1790\n") is None


# ------------------------------------------------------------------ confd keeps going


def test_secret_reader_refuses_names_with_a_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "bgp").mkdir()
    (tmp_path / "bgp" / "tor").write_text("tor-key\n")
    reader = SecretReader(str(tmp_path), env={})
    assert reader({"name": "bgp", "key": "tor"}) == "tor-key"
    assert reader({"name": "bgp\n", "key": "tor"}) is None
    assert reader({"name": "bgp", "key": "tor\n"}) is None
    assert reader({"name": "..", "key": "tor"}) is None


def _kv(key: str, doc: dict[str, Any], rev: int) -> KV:
    return KV(key, json.dumps(doc).encode(), rev, rev, 1)


def test_confd_skips_a_bad_object_logs_counts_and_renders_the_rest(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A BGPPeer whose name BIRD cannot quote got into the index (the validator is
    switched off here to stand for one that let it through): confd renders and installs
    everything else — checked by the real bird -p — logs the skip once and counts it."""
    reloads: list[int] = []
    settings = ConfdSettings(node_name="node-b", bird_config=str(tmp_path / "bird.cfg"),
                             status_file=None, health_enabled=False, bird_binary=BIRD)
    confd = Confd(settings, client=None, reload=lambda: reloads.append(1),
                  passwords=lambda ref: None)
    confd.index.validate = lambda doc: doc
    kw = baseline()
    evil = peer(HOSTILE["quote"], peerIP="198.18.2.9", asNumber="65009")
    good = peer("good", peerIP="198.18.2.8", asNumber="65008")
    res = "/calico/resources/v3/projectcalico.org/"
    kvs = [_kv(f"{res}nodes/{n['metadata']['name']}", n, 2) for n in kw["nodes"]]
    kvs += [_kv(f"{res}ippools/{p['metadata']['name']}", p, 3) for p in kw["pools"]]
    kvs += [_kv(f"{res}bgppeers/{evil['metadata']['name']}", evil, 4),
            _kv(f"{res}bgppeers/good", good, 5)]
    assert all(k.key.startswith(RESOURCE_PREFIX) for k in kvs)
    confd.index.load(kvs, 5)
    with caplog.at_level(logging.WARNING, logger="calico_net.agent.confd.runner"):
        confd.step()
        confd.step()  # the same skip again: not logged or counted twice
    text = (tmp_path / "bird.cfg").read_text()
    assert confd.status.state == "ok", confd.status.error
    assert "protocol bgp Global_198_18_2_8 " in text
    assert "Global_198_18_2_9" not in text
    assert "Mesh_198_18_0_11" in text
    assert_inert(text, render_bird_config(**dict(kw, peers=[good], bgp_configs=[], passwords={})))
    skips = [r for r in caplog.records if "without a bad object" in r.getMessage()]
    assert len(skips) == 1 and "BGPPeer" in skips[0].getMessage()
    assert "\n" not in skips[0].getMessage()
    assert confd.metrics.skipped.value == 1
    assert reloads == [1]
