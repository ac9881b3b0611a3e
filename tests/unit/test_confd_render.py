"""Tests for confd's BIRD 2 rendering (calico_net.agent.confd.render).

Golden files live in tests/data/confd/<case>.cfg; every one is also checked with the
real ``bird -p -c``. Regenerate them after an intended change with
``UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/unit/test_confd_render.py``
and review the diff.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from calico_net.agent.confd.render import (
    BFD_ANNOTATION,
    BirdConfigError,
    RenderError,
    RenderOptions,
    build_bird_model,
    protocol_name,
    render_bird_config,
    validate_bird_config,
    write_if_changed,
)

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "data" / "confd"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
BIRD = shutil.which("bird") or "/usr/sbin/bird"
needs_bird = pytest.mark.usefixtures("bird_binary")

BIRD_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# ------------------------------------------------------------------ resource builders


def node(
    name: str,
    ipv4: str | None,
    *,
    ipv6: str | None = None,
    asn: int | None = None,
    rr: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    bgp: dict[str, Any] = {}
    if ipv4:
        bgp["ipv4Address"] = f"{ipv4}/24"
    if ipv6:
        bgp["ipv6Address"] = f"{ipv6}/64"
    if asn is not None:
        bgp["asNumber"] = asn
    if rr:
        bgp["routeReflectorClusterID"] = rr
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"bgp": bgp},
    }


def bgp_config(
    name: str = "default", annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "BGPConfiguration",
        "metadata": meta,
        "spec": spec,
    }


def peer(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": meta, "spec": spec}


def pool(name: str, cidr: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, **spec},
    }


POOLS = [pool("default-ipv4-ippool", "198.19.0.0/16")]


def three_nodes() -> list[dict[str, Any]]:
    return [node(f"node-{c}", f"198.18.0.{11 + i}") for i, c in enumerate("abc")]


def sessions(model: Any, family: int = 4) -> dict[str, Any]:
    fam = next(f for f in model.families if f.family == family)
    return {s.name: s for s in fam.sessions}


# ------------------------------------------------------------------ golden cases


def case_mesh_3node() -> str:
    return render_bird_config(
        "node-b", three_nodes(), [], [], POOLS, ["198.19.1.0/26", "198.19.1.64/26"]
    )


def case_mesh_100node() -> str:
    nodes = [node(f"node-{i:03d}", f"198.18.0.{10 + i}") for i in range(1, 101)]
    return render_bird_config(
        "node-001",
        nodes,
        [bgp_config(asNumber=64512, nodeToNodeMeshEnabled=True)],
        [],
        POOLS,
        ["198.19.0.0/26"],
    )


def rr_topology() -> list[dict[str, Any]]:
    nodes = [
        node("rr-1", "198.18.0.2", rr="244.0.0.1", labels={"route-reflector": "true"}),
        node("rr-2", "198.18.0.3", rr="244.0.0.1", labels={"route-reflector": "true"}),
    ]
    nodes += [node(f"client-{i}", f"198.18.0.{20 + i}") for i in range(1, 5)]
    return nodes


def case_rr_client() -> str:
    return render_bird_config(
        "client-2",
        rr_topology(),
        [bgp_config(nodeToNodeMeshEnabled=False)],
        [],
        POOLS,
        ["198.19.22.0/26"],
    )


def case_rr_reflector() -> str:
    return render_bird_config(
        "rr-1",
        rr_topology(),
        [bgp_config(nodeToNodeMeshEnabled=False)],
        [],
        POOLS,
        [],
    )


def case_global_peers_50() -> str:
    peers = [
        peer(f"tor-{i:02d}", peerIP=f"198.18.1.{i}", asNumber=65000 + i) for i in range(1, 51)
    ]
    return render_bird_config(
        "node-a", three_nodes(), [bgp_config()], peers, POOLS, ["198.19.1.0/26"]
    )


def selector_nodes() -> list[dict[str, Any]]:
    return [
        node("node-a", "198.18.0.11", labels={"rack": "r1"}),
        node("node-b", "198.18.0.12", labels={"rack": "r1"}),
        node("node-c", "198.18.0.13", labels={"rack": "r2"}),
        node("edge-1", "198.18.0.40", asn=65100, labels={"edge": "true"}),
    ]


def selector_peers() -> list[dict[str, Any]]:
    return [
        # The ToR of rack r1, for every node labelled rack == 'r1'.
        peer("rack-r1-tor", nodeSelector="rack == 'r1'", peerIP="198.18.2.1", asNumber=65001),
        # The ToR of rack r2: does not apply to node-a.
        peer("rack-r2-tor", nodeSelector="rack == 'r2'", peerIP="198.18.2.2", asNumber=65002),
        # Nodes of rack r1 peer with every edge node, whatever its AS.
        peer("r1-to-edge", nodeSelector="rack == 'r1'", peerSelector="has(edge)"),
        # A peer pinned to node-a by name, on a non-standard port.
        peer("node-a-lab", node="node-a", peerIP="198.18.3.1:1790", asNumber=65003,
             keepOriginalNextHop=True, ttlSecurity=1),
        # Pinned to another node: not rendered for node-a.
        peer("node-c-lab", node="node-c", peerIP="198.18.3.2", asNumber=65003),
    ]


def case_node_peers_selectors() -> str:
    return render_bird_config(
        "node-a", selector_nodes(), [bgp_config()], selector_peers(), POOLS, ["198.19.1.0/26"]
    )


SECRETS = {"bgp-secrets/tor-a": "s3cret-Pa55", "bgp-secrets/mesh": "meshKey-42"}


def case_md5_password() -> str:
    peers = [
        peer("tor-a", peerIP="198.18.2.1", asNumber=65001,
             password={"secretKeyRef": {"name": "bgp-secrets", "key": "tor-a"}}),
    ]
    return render_bird_config(
        "node-a", three_nodes(), [bgp_config()], peers, POOLS, ["198.19.1.0/26"],
        passwords=SECRETS,
    )


def case_per_node_as() -> str:
    nodes = [
        node("node-a", "198.18.0.11", asn=65010),
        node("node-b", "198.18.0.12"),
        node("node-c", "198.18.0.13", asn=65030),
    ]
    peers = [peer("tor", peerIP="198.18.2.1", asNumber=65001, keepOriginalNextHop=True,
                  maxRestartTime="5m", numAllowedLocalASNumbers=1)]
    return render_bird_config(
        "node-a", nodes, [bgp_config(asNumber=64600)], peers, POOLS, ["198.19.1.0/26"]
    )


def case_ipv6() -> str:
    nodes = [
        node("node-a", "198.18.0.11", ipv6="2001:db8:18::11"),
        node("node-b", "198.18.0.12", ipv6="2001:db8:18::12"),
        node("node-c", "198.18.0.13"),  # IPv4-only node: no IPv6 session to it
    ]
    pools = POOLS + [
        pool("default-ipv6-ippool", "2001:db8:19::/48"),
        pool("v6-no-export", "2001:db8:1a::/48", disableBGPExport=True),
    ]
    peers = [peer("tor-v6", peerIP="[2001:db8:18::1]:179", asNumber=65001)]
    return render_bird_config(
        "node-a", nodes, [bgp_config()], peers, pools,
        ["198.19.1.0/26", "2001:db8:19:0:1::/122"],
    )


def case_bfd_on() -> str:
    peers = [
        peer("tor", peerIP="198.18.2.1", asNumber=65001),
        # A ToR without BFD: the annotation switches it off for this peer only.
        peer("tor-nobfd", peerIP="198.18.2.2", asNumber=65001,
             annotations={BFD_ANNOTATION: "false"}),
    ]
    return render_bird_config(
        "node-a", three_nodes(), [bgp_config(annotations={BFD_ANNOTATION: "true"})],
        peers, POOLS, ["198.19.1.0/26"],
    )


def encap_pools() -> list[dict[str, Any]]:
    """One pool of every encapsulation mode, both families."""
    return [
        pool("ipip-always", "198.19.0.0/18", ipipMode="Always"),
        pool("ipip-cross", "198.19.64.0/18", ipipMode="CrossSubnet", vxlanMode="Never"),
        pool("vxlan-always", "198.19.128.0/18", vxlanMode="Always"),
        pool("vxlan-cross", "198.19.192.0/19", vxlanMode="CrossSubnet"),
        pool("plain", "198.19.224.0/19", ipipMode="Never", vxlanMode="Never"),
        pool("plain-default", "198.19.255.0/24"),  # no mode fields: Never
        pool("v6-vxlan", "2001:db8:19::/48", vxlanMode="Always"),
        pool("v6-plain", "2001:db8:1a::/48"),
    ]


def case_encap_modes() -> str:
    nodes = [node("node-a", "198.18.0.11", ipv6="2001:db8:18::11"),
             node("node-b", "198.18.0.12", ipv6="2001:db8:18::12")]
    return render_bird_config(
        "node-a", nodes, [bgp_config()], [peer("tor", peerIP="198.18.2.1", asNumber=65001)],
        encap_pools(), ["198.19.0.0/26", "198.19.128.0/26", "2001:db8:19::/122"],
    )


GOLDEN_CASES = {
    "encap_modes": case_encap_modes,
    "mesh_3node": case_mesh_3node,
    "mesh_100node": case_mesh_100node,
    "rr_client": case_rr_client,
    "rr_reflector": case_rr_reflector,
    "global_peers_50": case_global_peers_50,
    "node_peers_selectors": case_node_peers_selectors,
    "md5_password": case_md5_password,
    "per_node_as": case_per_node_as,
    "ipv6": case_ipv6,
    "bfd_on": case_bfd_on,
}


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden(case: str) -> None:
    text = GOLDEN_CASES[case]()
    path = GOLDEN_DIR / f"{case}.cfg"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing; run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"render differs from {path} (UPDATE_GOLDEN=1 to accept)"


@needs_bird
@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden_passes_bird_parse(case: str) -> None:
    validate_bird_config(GOLDEN_CASES[case](), bird_binary=BIRD)


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_protocol_names_are_bird_identifiers_and_unique(case: str) -> None:
    names = re.findall(r"^protocol \w+ (?!\{)(\S+)", GOLDEN_CASES[case](), re.M)
    assert names
    assert all(BIRD_IDENT.match(n) for n in names), names
    assert len(names) == len(set(names))


def test_render_is_deterministic_and_order_independent() -> None:
    nodes = three_nodes()
    a = render_bird_config("node-b", nodes, [], [], POOLS, ["198.19.1.64/26", "198.19.1.0/26"])
    b = render_bird_config("node-b", nodes[::-1], [], [], POOLS, ["198.19.1.0/26", "198.19.1.64/26"])
    assert a == b


# ------------------------------------------------------------------ semantics


def test_mesh_peers_every_other_node_once_and_one_directional() -> None:
    m = build_bird_model("node-b", three_nodes(), [], [], POOLS, [])
    s = sessions(m)
    assert set(s) == {"Mesh_198_18_0_11", "Mesh_198_18_0_13"}
    # The node with the lower address waits; the higher one connects.
    assert not s["Mesh_198_18_0_11"].passive
    assert s["Mesh_198_18_0_13"].passive
    assert all(x.source_address == "198.18.0.12" and x.as_number == 64512 for x in s.values())
    assert m.router_id == "198.18.0.12"


def test_mesh_off_without_reflectors_has_no_node_sessions() -> None:
    m = build_bird_model(
        "node-b", three_nodes(), [bgp_config(nodeToNodeMeshEnabled=False)], [], POOLS, []
    )
    assert sessions(m) == {}
    assert "No BGP sessions for IPv4" in render_bird_config(
        "node-b", three_nodes(), [bgp_config(nodeToNodeMeshEnabled=False)], [], POOLS, []
    )


def test_default_and_per_node_as() -> None:
    nodes = three_nodes() + [node("node-d", "198.18.0.14", asn=65099)]
    m = build_bird_model("node-a", nodes, [bgp_config(asNumber=64700)], [], POOLS, [])
    s = sessions(m)
    assert m.as_number == 64700
    assert s["Mesh_198_18_0_12"].as_number == 64700
    assert s["Mesh_198_18_0_14"].as_number == 65099
    m2 = build_bird_model("node-d", nodes, [bgp_config(asNumber=64700)], [], POOLS, [])
    assert m2.as_number == 65099


def test_route_reflector_topology_mesh_off() -> None:
    cfgs = [bgp_config(nodeToNodeMeshEnabled=False)]
    client = sessions(build_bird_model("client-1", rr_topology(), cfgs, [], POOLS, []))
    assert set(client) == {"RR_198_18_0_2", "RR_198_18_0_3"}
    assert not any(s.rr_client for s in client.values())

    rr = sessions(build_bird_model("rr-1", rr_topology(), cfgs, [], POOLS, []))
    assert set(rr) == {"RR_198_18_0_3"} | {f"RRClient_198_18_0_{20 + i}" for i in range(1, 5)}
    # Same cluster: the other reflector is a plain iBGP peer, the clients are clients.
    assert not rr["RR_198_18_0_3"].rr_client
    assert all(
        s.rr_client and s.rr_cluster_id == "244.0.0.1"
        for n, s in rr.items() if n.startswith("RRClient_")
    )


def test_route_reflector_with_mesh_on_keeps_mesh_between_clients() -> None:
    client = sessions(build_bird_model("client-1", rr_topology(), [], [], POOLS, []))
    assert {n for n in client if n.startswith("Mesh_")} == {
        f"Mesh_198_18_0_{20 + i}" for i in range(2, 5)
    }
    assert {n for n in client if n.startswith("RR_")} == {"RR_198_18_0_2", "RR_198_18_0_3"}
    rr = sessions(build_bird_model("rr-1", rr_topology(), [], [], POOLS, []))
    assert not any(n.startswith("Mesh_") for n in rr)


def test_reflectors_of_different_clusters_treat_each_other_as_clients() -> None:
    nodes = [node("rr-1", "198.18.0.2", rr="244.0.0.1"), node("rr-2", "198.18.0.3", rr="244.0.0.2")]
    s = sessions(build_bird_model("rr-1", nodes, [], [], POOLS, []))
    assert s["RR_198_18_0_3"].rr_client and s["RR_198_18_0_3"].rr_cluster_id == "244.0.0.1"


def test_global_and_node_specific_peers() -> None:
    m = build_bird_model(
        "node-a", selector_nodes(), [bgp_config()], selector_peers(), POOLS, []
    )
    s = sessions(m)
    assert s["Node_198_18_2_1"].as_number == 65001  # nodeSelector matched
    assert "Node_198_18_2_2" not in s  # other rack
    assert "Node_198_18_3_2" not in s  # pinned to node-c
    lab = s["Node_198_18_3_1_port_1790"]
    assert lab.port == 1790 and lab.ttl_security_hops == 1 and lab.next_hop_keep
    # peerSelector picks edge-1 with its own AS; it replaces the mesh session to it.
    edge = s["Node_198_18_0_40"]
    assert edge.as_number == 65100 and edge.kind == "node"
    assert "Mesh_198_18_0_40" not in s
    assert any("Mesh_198_18_0_40" in n and "already peered" in n for n in m.notes)
    # The rest of the mesh is there.
    assert {"Mesh_198_18_0_12", "Mesh_198_18_0_13"} <= set(s)

    c = sessions(build_bird_model("node-c", selector_nodes(), [], selector_peers(), POOLS, []))
    assert "Node_198_18_2_2" in c and "Node_198_18_3_2" in c and "Node_198_18_2_1" not in c


def test_global_peer_applies_to_every_node_and_skips_own_address() -> None:
    peers = [
        peer("tor", peerIP="198.18.2.1", asNumber=65001),
        peer("self", peerIP="198.18.0.12", asNumber=64512),
    ]
    for name in ("node-a", "node-b", "node-c"):
        m = build_bird_model(name, three_nodes(), [], peers, POOLS, [])
        s = sessions(m)
        assert "Global_198_18_2_1" in s
    m = build_bird_model("node-b", three_nodes(), [], peers, POOLS, [])
    assert "Global_198_18_0_12" not in sessions(m)
    assert any("own address" in n for n in m.notes)
    # On other nodes the BGPPeer at node-b's address wins over the mesh session.
    s = sessions(build_bird_model("node-a", three_nodes(), [], peers, POOLS, []))
    assert "Global_198_18_0_12" in s and "Mesh_198_18_0_12" not in s


def test_node_specific_peer_beats_global_for_same_address() -> None:
    peers = [
        peer("g", peerIP="198.18.2.1", asNumber=65001),
        peer("n", node="node-a", peerIP="198.18.2.1", asNumber=65002),
    ]
    s = sessions(build_bird_model("node-a", three_nodes(), [], peers, POOLS, []))
    assert s["Node_198_18_2_1"].as_number == 65002
    assert "Global_198_18_2_1" not in s


def test_broken_peer_breaks_no_other_session() -> None:
    peers = [
        peer("no-as", peerIP="198.18.2.1"),
        peer("bad-as", peerIP="198.18.2.2", asNumber="sixty-five"),
        peer("bad-ip", peerIP="198.18.2.300", asNumber=65001),
        peer("bad-selector", nodeSelector="rack ==", peerIP="198.18.2.4", asNumber=65001),
        peer("no-secret", peerIP="198.18.2.5", asNumber=65001,
             password={"secretKeyRef": {"name": "missing", "key": "k"}}),
        peer("good", peerIP="198.18.2.6", asNumber=65001),
    ]
    m = build_bird_model("node-a", three_nodes(), [], peers, POOLS, [], passwords={})
    s = sessions(m)
    assert set(s) == {"Global_198_18_2_6", "Mesh_198_18_0_12", "Mesh_198_18_0_13"}
    skipped = " ".join(m.notes)
    for name in ("no-as", "bad-as", "bad-ip", "bad-selector", "no-secret"):
        assert f"BGPPeer {name} skipped" in skipped
    text = render_bird_config("node-a", three_nodes(), [], peers, POOLS, [], passwords={})
    assert "BGPPeer no-secret skipped" in text


def test_md5_password_only_in_password_statement() -> None:
    text = case_md5_password()
    lines = [ln for ln in text.splitlines() if "s3cret-Pa55" in ln]
    assert lines == ['  password "s3cret-Pa55";']


def test_password_resolver_callable_and_unquotable_password() -> None:
    seen: list[dict[str, Any]] = []

    def resolver(ref: dict[str, Any]) -> str | None:
        seen.append(dict(ref))
        return 'bad"quote' if ref["key"] == "bad" else "good-one"

    peers = [
        peer("ok", peerIP="198.18.2.1", asNumber=65001,
             password={"secretKeyRef": {"name": "s", "key": "ok"}}),
        peer("quoted", peerIP="198.18.2.2", asNumber=65001,
             password={"secretKeyRef": {"name": "s", "key": "bad"}}),
    ]
    text = render_bird_config("node-a", three_nodes(), [], peers, POOLS, [], passwords=resolver)
    assert {"name": "s", "key": "ok"} in seen
    assert 'password "good-one";' in text
    assert "Global_198_18_2_2" not in text and "bad\"quote" not in text
    assert "BGPPeer quoted skipped" in text


def test_node_mesh_password() -> None:
    cfg = bgp_config(nodeMeshPassword={"secretKeyRef": {"name": "bgp-secrets", "key": "mesh"}})
    s = sessions(build_bird_model("node-a", three_nodes(), [cfg], [], POOLS, [], passwords=SECRETS))
    assert {x.password for x in s.values()} == {"meshKey-42"}
    assert "meshKey-42" not in repr(s)
    # A mesh password that cannot be read fails the render (the last good config stays).
    with pytest.raises(RenderError, match="nodeMeshPassword"):
        build_bird_model("node-a", three_nodes(), [cfg], [], POOLS, [], passwords={})


def test_node_mesh_restart_time_and_duplicate_address_note() -> None:
    nodes = three_nodes() + [node("node-dup", "198.18.0.11")]
    cfg = bgp_config(nodeMeshMaxRestartTime="1m30s")
    m = build_bird_model("node-a", nodes, [cfg], [], POOLS, [])
    assert {s.restart_time for s in sessions(m).values()} == {90}
    assert m.notes == ["Node node-dup skipped: it has this node's address"]


def test_keep_original_next_hop_only_towards_ebgp() -> None:
    peers = [
        peer("ebgp", peerIP="198.18.2.1", asNumber=65001, keepOriginalNextHop=True),
        peer("ibgp", peerIP="198.18.2.2", asNumber=64512, keepOriginalNextHop=True),
    ]
    s = sessions(build_bird_model("node-a", three_nodes(), [], peers, POOLS, []))
    assert s["Global_198_18_2_1"].next_hop_keep
    assert not s["Global_198_18_2_2"].next_hop_keep


def test_source_address_none() -> None:
    peers = [peer("p", peerIP="198.18.2.1", asNumber=65001, sourceAddress="None")]
    s = sessions(build_bird_model("node-a", three_nodes(), [], peers, POOLS, []))
    assert s["Global_198_18_2_1"].source_address is None


def test_pools_and_blocks_in_filters() -> None:
    pools = POOLS + [
        pool("noexport", "198.19.128.0/17", disableBGPExport=True),
        pool("bad", "not-a-cidr"),
    ]
    m = build_bird_model("node-a", three_nodes(), [], [], pools, ["198.19.1.0/26", "198.19.2.0/32"])
    f4 = m.families[0]
    assert f4.export_pools == ["198.19.0.0/16"]
    assert f4.accept_pools == ["198.19.0.0/16", "198.19.128.0/17"]
    # A /32 block has nothing below it.
    assert f4.block_subnets == ["198.19.1.0/26{27,32}"]
    text = render_bird_config("node-a", three_nodes(), [], [], pools, ["198.19.1.0/26"])
    assert "route 198.19.1.0/26 blackhole;" in text
    assert "return net ~ [ 198.19.0.0/16+ ];" in text
    assert "Not advertised (IPPool disableBGPExport or disabled): 198.19.128.0/17" in text
    assert "IPPool bad skipped: bad cidr" in text


def test_no_pools_exports_and_accepts_nothing() -> None:
    text = render_bird_config("node-a", three_nodes(), [], [], [], [])
    assert "return false;  # no IP pool with BGP export enabled" in text
    assert "return false;  # no IP pools" in text


def test_ipv6_only_with_node_address_and_v6_pools() -> None:
    nodes = [node("node-a", "198.18.0.11", ipv6="2001:db8:18::11"),
             node("node-b", "198.18.0.12", ipv6="2001:db8:18::12")]
    m = build_bird_model("node-a", nodes, [], [], POOLS, [])
    assert not m.families[1].enabled  # no IPv6 pool
    v6pools = POOLS + [pool("v6", "2001:db8:19::/48")]
    m = build_bird_model("node-a", nodes, [], [], v6pools, [])
    assert m.families[1].enabled
    assert set(sessions(m, 6)) == {"Mesh_2001_db8_18__12"}
    m = build_bird_model("node-a", [node("node-a", "198.18.0.11")] + nodes[1:], [], [], v6pools, [])
    assert not m.families[1].enabled  # this node has no IPv6 address


def test_bfd_switch_sources() -> None:
    on = bgp_config(annotations={BFD_ANNOTATION: "true"})
    assert not build_bird_model("node-a", three_nodes(), [], [], POOLS, []).bfd
    assert build_bird_model("node-a", three_nodes(), [on], [], POOLS, []).bfd
    # node.<name> overrides default; the agent option overrides both.
    off_here = bgp_config("node.node-a", annotations={BFD_ANNOTATION: "false"})
    assert not build_bird_model("node-a", three_nodes(), [on, off_here], [], POOLS, []).bfd
    opt = RenderOptions(bfd=True)
    m = build_bird_model("node-a", three_nodes(), [], [], POOLS, [], options=opt)
    assert m.bfd and all(s.bfd for s in sessions(m).values())
    text = render_bird_config("node-a", three_nodes(), [], [], POOLS, [], options=opt)
    assert "protocol bfd calico_bfd" in text and "bfd on;" in text


def test_router_id_options() -> None:
    m = build_bird_model("node-a", three_nodes(), [], [], POOLS, [],
                         options=RenderOptions(router_id="198.18.9.9"))
    assert m.router_id == "198.18.9.9"
    h1 = build_bird_model("node-a", three_nodes(), [], [], POOLS, [],
                          options=RenderOptions(router_id="hash")).router_id
    h2 = build_bird_model("node-a", three_nodes(), [], [], POOLS, [],
                          options=RenderOptions(router_id="hash")).router_id
    assert h1 == h2 and h1 != "0.0.0.0"
    v6only = [node("node-a", None, ipv6="2001:db8:18::11")]
    with pytest.raises(RenderError, match="router id"):
        build_bird_model("node-a", v6only, [], [], POOLS, [])


def test_listen_port_and_log_severity() -> None:
    cfgs = [bgp_config(listenPort=1790, logSeverityScreen="Debug")]
    text = render_bird_config("node-a", three_nodes(), cfgs, [], POOLS, [])
    assert "local port 1790;" in text
    assert "neighbor 198.18.0.12 port 1790 as 64512;" in text
    assert "Mesh_198_18_0_12_port_1790" in text
    assert "log stderr all;" in text and "debug all;" in text


def test_unknown_node_and_bad_own_node_raise() -> None:
    with pytest.raises(RenderError, match="not found"):
        render_bird_config("nope", three_nodes(), [], [], POOLS, [])
    bad = three_nodes()
    bad[0]["spec"]["bgp"]["ipv4Address"] = "198.18.0.300/24"
    with pytest.raises(RenderError):
        render_bird_config("node-a", bad, [], [], POOLS, [])
    # ...but a bad *other* node only drops that node.
    m = build_bird_model("node-b", bad, [], [], POOLS, [])
    assert set(sessions(m)) == {"Mesh_198_18_0_13"}


def test_protocol_name() -> None:
    import ipaddress

    assert protocol_name("Mesh", ipaddress.ip_address("198.18.0.12")) == "Mesh_198_18_0_12"
    assert protocol_name("Node", ipaddress.ip_address("2001:db8::1"), 1790) == (
        "Node_2001_db8__1_port_1790"
    )


# ------------------------------------------------------------------ validate / write


@needs_bird
def test_invalid_config_raises_bird_config_error() -> None:
    text = case_mesh_3node().replace("neighbor 198.18.0.11 as 64512;", "neighbor 198.18.0.11;")
    with pytest.raises(BirdConfigError) as exc:
        validate_bird_config(text, bird_binary=BIRD)
    assert "bird.cfg" in str(exc.value) and "/tmp/" not in str(exc.value)

    with pytest.raises(BirdConfigError) as exc:
        validate_bird_config(case_mesh_3node() + "\nprotocol bgp Broken {\n", bird_binary=BIRD)
    assert exc.value.line is not None


@needs_bird
def test_bird_config_error_does_not_quote_password_line() -> None:
    text = case_md5_password().replace('password "s3cret-Pa55";', 'password "s3cret-Pa55" x;')
    with pytest.raises(BirdConfigError) as exc:
        validate_bird_config(text, bird_binary=BIRD)
    assert "s3cret-Pa55" not in str(exc.value)


def test_missing_bird_binary() -> None:
    with pytest.raises(BirdConfigError, match="not found"):
        validate_bird_config("", bird_binary="no-such-bird-binary")


def test_write_if_changed(tmp_path: Path) -> None:
    target = tmp_path / "confd" / "config" / "bird.cfg"
    assert write_if_changed(target, "a\n")
    assert target.read_text() == "a\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    mtime = target.stat().st_mtime_ns
    assert not write_if_changed(target, "a\n")
    assert target.stat().st_mtime_ns == mtime
    assert write_if_changed(target, "b\n", mode=0o600)
    assert target.read_text() == "b\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["bird.cfg"]


def test_disabled_pool_still_exported_unless_option_says_otherwise() -> None:
    pools = [pool("old", "198.19.0.0/17", disabled=True), pool("new", "198.19.128.0/17")]
    m = build_bird_model("node-a", three_nodes(), [], [], pools, [])
    assert m.families[0].export_pools == ["198.19.0.0/17", "198.19.128.0/17"]
    m = build_bird_model("node-a", three_nodes(), [], [], pools, [],
                         options=RenderOptions(export_disabled_pools=False))
    assert m.families[0].export_pools == ["198.19.128.0/17"]
    assert m.families[0].accept_pools == ["198.19.0.0/17", "198.19.128.0/17"]


@needs_bird
def test_ipv6_only_node_with_hashed_router_id_is_valid() -> None:
    nodes = [node("node-a", None, ipv6="2001:db8:18::11"),
             node("node-b", None, ipv6="2001:db8:18::12")]
    text = render_bird_config(
        "node-a", nodes, [], [], [pool("v6", "2001:db8:19::/48")], ["2001:db8:19::/122"],
        options=RenderOptions(router_id="hash"),
    )
    assert "protocol bgp Mesh_2001_db8_18__12" in text
    assert "ipv4" not in text
    validate_bird_config(text, bird_binary=BIRD)


# ------------------------------------------- values read as the model reads them

# (value, what the model's rule makes of it: seconds, or None when it refuses it).
# The first eight are where confd's own duration parser used to disagree with the
# model's: a bare number, a non-string, the ns/us/µs units, surrounding whitespace,
# a value over 64 characters.
DURATIONS = [
    ("120", None), (120, None), (120.5, None), ("5ns", 0), ("1500us", 0), ("2µs", 0),
    (" 2m ", None), ("1s" * 33, None),
    ("1m30s", 90), ("0s", 0), ("500ms", 0), ("1.5h", 5400), ("1h1h", 7200), ("garbage", None),
    ("-1s", None),
]


def _model_accepts(doc: dict[str, Any]) -> bool:
    from calico_net import model
    from calico_net.errors import ValidationError

    try:
        model.parse_resource(doc)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("value,seconds", DURATIONS)
def test_restart_times_agree_with_the_model(value: Any, seconds: int | None) -> None:
    from calico_net.model.fields import parse_duration

    tor = peer("tor", peerIP="198.18.2.1", asNumber=65001, maxRestartTime=value)
    assert _model_accepts(tor) is (seconds is not None)
    m = build_bird_model("node-a", three_nodes(), [], [tor], POOLS, [])
    cfg = bgp_config(nodeMeshMaxRestartTime=value)
    assert _model_accepts(cfg) is (seconds is not None)
    if seconds is None:
        assert "Global_198_18_2_1" not in sessions(m)
        assert any(r.startswith("BGPPeer tor skipped") for r in m.rejected), m.rejected
        with pytest.raises(RenderError, match="nodeMeshMaxRestartTime"):
            build_bird_model("node-a", three_nodes(), [cfg], [], POOLS, [])
    else:
        assert int(parse_duration(value)) == seconds
        assert sessions(m)["Global_198_18_2_1"].restart_time == seconds
        mesh = build_bird_model("node-a", three_nodes(), [cfg], [], POOLS, [])
        assert {s.restart_time for s in sessions(mesh).values()} == {seconds}


# (value, the AS number, or None when the model refuses it).
AS_NUMBERS = [
    (65000, 65000), ("65000", 65000), ("1.10", 65546), ("0.5", 5), ("00065000", 65000),
    ("4294967295", 4294967295), ("0", None), ("0.0", None), ("4294967296", None),
    (True, None), ("sixty-five", None), ("65536.0", None), (" 65000", None), (-1, None),
    (65000.0, None),
]


@pytest.mark.parametrize("value,asn", AS_NUMBERS)
def test_as_numbers_agree_with_the_model(value: Any, asn: int | None) -> None:
    from calico_net.model.fields import parse_asn

    tor = peer("tor", peerIP="198.18.2.1", asNumber=value)
    assert _model_accepts(tor) is (asn is not None)
    m = build_bird_model("node-a", three_nodes(), [], [tor], POOLS, [])
    if asn is None:
        assert "Global_198_18_2_1" not in sessions(m)
    else:
        assert parse_asn(value) == asn
        assert sessions(m)["Global_198_18_2_1"].as_number == asn


# ------------------------------------------------------------------ IP-in-IP / VXLAN pools


def _kernel_filter(text: str, family: int) -> str:
    m = re.search(rf"^filter calico_kernel_export_v{family}\n\{{\n(.*?)^\}}", text, re.M | re.S)
    assert m, text
    return m.group(1)


def test_encapsulated_pools_are_not_written_into_the_kernel() -> None:
    nodes = [node("node-a", "198.18.0.11", ipv6="2001:db8:18::11"),
             node("node-b", "198.18.0.12", ipv6="2001:db8:18::12")]
    m = build_bird_model("node-a", nodes, [], [], encap_pools(), [])
    f4, f6 = m.families
    # Always and CrossSubnet alike, IPIP and VXLAN alike; Never and unset are not.
    assert f4.encap_pools == ["198.19.0.0/18", "198.19.64.0/18", "198.19.128.0/18",
                              "198.19.192.0/19"]
    assert f6.encap_pools == ["2001:db8:19::/48"]
    # Advertised and accepted exactly as before: BGP still carries every block.
    assert f4.export_pools == f4.accept_pools == [
        "198.19.0.0/18", "198.19.64.0/18", "198.19.128.0/18", "198.19.192.0/19",
        "198.19.224.0/19", "198.19.255.0/24"]
    assert f6.export_pools == ["2001:db8:19::/48", "2001:db8:1a::/48"]
    text = render_bird_config("node-a", nodes, [], [], encap_pools(), [])
    k4, k6 = _kernel_filter(text, 4), _kernel_filter(text, 6)
    reject4 = ("if net ~ [ 198.19.0.0/18+, 198.19.64.0/18+, 198.19.128.0/18+, "
               "198.19.192.0/19+ ] then reject;")
    assert reject4 in k4
    assert "if net ~ [ 2001:db8:19::/48+ ] then reject;" in k6
    # Own blocks' blackholes are still written (the agent programs only remote
    # blocks, always with a gateway); the rejection comes after them and before the
    # accept of BGP routes, or it would not stop anything.
    own = k4.index('if proto = "calico_blocks_v4" then accept;')
    learned = k4.index("if source = RTS_BGP && calico_in_pool_v4() then accept;")
    assert own < k4.index(reject4) < learned
    # The BGP export filter has no such rejection.
    bgp = re.search(r"^filter calico_export_bgp_v4\n\{\n(.*?)^\}", text, re.M | re.S)
    assert bgp and "198.19.0.0/18" not in bgp.group(1)


def test_no_encapsulated_pool_leaves_the_kernel_filter_as_it_was() -> None:
    text = render_bird_config("node-a", three_nodes(), [], [], POOLS, ["198.19.1.0/26"])
    assert _kernel_filter(text, 4) == (
        '  if proto = "calico_blocks_v4" then accept;\n'
        "  if source = RTS_BGP && calico_in_pool_v4() then accept;\n"
        "  reject;\n")


@pytest.mark.parametrize("spec", [
    {"ipipMode": "always"},          # calicoctl refuses the wrong case too
    {"vxlanMode": "Sometimes"},
    {"vxlanMode": 1},
    {"ipipMode": ""},
    {"ipipMode": "Never", "vxlanMode": ["Always"]},
])
def test_pool_with_unknown_mode_is_skipped_and_the_rest_renders(spec: dict[str, Any]) -> None:
    pools = [pool("bad-mode", "198.19.0.0/17", **spec),
             pool("good", "198.19.128.0/17", vxlanMode="Always")]
    m = build_bird_model("node-a", three_nodes(), [], [], pools, [])
    f4 = m.families[0]
    assert f4.accept_pools == f4.export_pools == f4.encap_pools == ["198.19.128.0/17"]
    assert len(m.rejected) == 1 and m.rejected[0].startswith("IPPool bad-mode skipped: ")
    text = render_bird_config("node-a", three_nodes(), [], [], pools, [])
    assert "IPPool bad-mode skipped: " in text


@needs_bird
def test_encap_filter_with_hostile_pool_name_parses() -> None:
    # The pool's name reaches bird.cfg only inside a comment (the skip note).
    pools = [pool('x"; reject; }\nprotocol', "198.19.0.0/17", ipipMode="Nope"),
             pool("good", "198.19.128.0/17", ipipMode="CrossSubnet")]
    text = render_bird_config("node-a", three_nodes(), [], [], pools, ["198.19.128.0/26"])
    validate_bird_config(text, bird_binary=BIRD)
