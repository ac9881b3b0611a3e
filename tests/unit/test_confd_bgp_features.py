"""confd's rendering of Calico's BGP features beyond the mesh and peers: borrowed
addresses, service CIDRs, communities (and, below, the BGPPeer fields and BGPFilter),
each render checked with the real ``bird -p -c``.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from calico_net.agent.confd.advertise import advertisements, parse_community
from calico_net.agent.confd.render import (
    BirdConfigError,
    build_bird_model,
    render_bird_config,
    validate_bird_config,
)

BIRD = shutil.which("bird") or "/usr/sbin/bird"
needs_bird = pytest.mark.usefixtures("bird_binary")


def node(name: str, ip: str, **bgp: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "Node",
            "metadata": {"name": name, "labels": {}},
            "spec": {"bgp": {"ipv4Address": f"{ip}/24", **bgp}}}


def cfg(name: str = "default", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
            "metadata": {"name": name}, "spec": spec}


def peer(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
            "metadata": {"name": name}, "spec": spec}


POOLS = [{"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
          "metadata": {"name": "p"}, "spec": {"cidr": "198.19.0.0/16"}}]
NODES = [node("node-a", "198.18.0.11"), node("node-b", "198.18.0.12")]
BLOCKS = ["198.19.1.0/26"]


def render(configs: list[dict[str, Any]] | None = None, peers: list[dict[str, Any]] | None = None,
           rejected: list[str] | None = None, **kw: Any) -> str:
    return render_bird_config("node-a", NODES, configs or [cfg()], peers or [], POOLS, BLOCKS,
                              rejected=rejected, **kw)


def model(configs: list[dict[str, Any]] | None = None, peers: list[dict[str, Any]] | None = None):
    return build_bird_model("node-a", NODES, configs or [cfg()], peers or [], POOLS, BLOCKS)


def section(text: str, start: str) -> str:
    """The block of bird.cfg starting at the line beginning with ``start``."""
    i = text.index(start)
    return text[i:text.index("\n}\n", i) + 2]


# ------------------------------------------------------------------ borrowed addresses


@needs_bird
def test_borrowed_addresses_learned_from_workload_routes_outside_own_blocks() -> None:
    text = render()
    imp = section(text, "filter calico_kernel_import_v4")
    # Inside a pool only host routes through a workload interface, never our own
    # blocks' workloads (those stay aggregated in the block route).
    assert ('if net.len = 32 && ifname ~ "cali*" && !(net ~ [ 198.19.1.0/26{27,32} ]) '
            'then accept;') in imp
    exp = section(text, "function calico_export_v4()")
    lines = [ln.strip() for ln in exp.splitlines()]
    # The own-block reject comes before the kernel accept: own /32s never leave.
    assert lines.index("if net ~ [ 198.19.1.0/26{27,32} ] then reject;") < lines.index(
        'if proto = "kernel_v4" then accept;')
    assert lines.index("if !calico_exportable_v4() then reject;") < lines.index(
        'if proto = "kernel_v4" then accept;')
    validate_bird_config(text, bird_binary=BIRD)


@needs_bird
def test_workload_interface_glob_is_an_option_and_quoted() -> None:
    from calico_net.agent.confd.render import RenderOptions, RenderError

    text = render(options=RenderOptions(workload_interfaces="tap*"))
    assert 'ifname ~ "tap*"' in text
    validate_bird_config(text, bird_binary=BIRD)
    with pytest.raises(RenderError):
        render(options=RenderOptions(workload_interfaces='x" ; reject; "'))


# ------------------------------------------------------------------ services


@needs_bird
def test_service_cidrs_every_kind_and_lb_aggregation() -> None:
    spec = dict(serviceClusterIPs=[{"cidr": "198.18.200.0/24"}, {"cidr": "2001:db8:5::/112"}],
                serviceExternalIPs=[{"cidr": "198.18.201.0/24"}],
                serviceLoadBalancerIPs=[{"cidr": "198.18.202.0/24"}])
    text = render([cfg(**spec)])
    static = section(text, "protocol static calico_services_v4")
    for c in ("198.18.200.0/24", "198.18.201.0/24", "198.18.202.0/24"):
        assert f"route {c} blackhole;" in static
    assert "2001:db8" not in static  # the v6 CIDR is in the v6 family only
    exp = section(text, "function calico_export_v4()")
    assert 'if proto = "calico_services_v4" then accept;' in exp
    # Never into the kernel: the kernel export accepts only blocks and BGP pool routes.
    assert "calico_services" not in section(text, "filter calico_kernel_export_v4")
    validate_bird_config(text, bird_binary=BIRD)

    text = render([cfg(serviceLoadBalancerAggregation="Disabled", **spec)])
    static = section(text, "protocol static calico_services_v4")
    assert "198.18.202.0/24" not in static and "198.18.200.0/24" in static


def test_services_only_from_the_default_configuration_and_bad_cidrs_skipped() -> None:
    m = model([cfg("node.node-a", serviceClusterIPs=[{"cidr": "198.18.200.0/24"}])])
    assert m.families[0].services == []
    notes: list[str] = []
    adv = advertisements({"serviceClusterIPs": [{"cidr": "nope"}, {"cidr": "198.18.200.0/24"}]},
                         notes.append)
    assert adv.services[4] == ["198.18.200.0/24"]
    assert notes and "serviceClusterIPs[0]" in notes[0]


# ------------------------------------------------------------------ communities


def test_parse_community() -> None:
    assert parse_community("65001:100") == (65001, 100)
    assert parse_community("4200000000:1:2") == (4200000000, 1, 2)
    for bad in ("65536:1", "1:2:3:4", "a:b", "", "4294967296:1:1", '1:1"'):
        with pytest.raises(ValueError):
            parse_community(bad)


@needs_bird
def test_prefix_advertisements_attach_standard_and_large_communities() -> None:
    spec = dict(
        communities=[{"name": "lb", "value": "65001:100"}, {"name": "big", "value": "64512:300:7"}],
        prefixAdvertisements=[
            {"cidr": "198.18.202.0/24", "communities": ["lb", "big", "65001:5"]},
            {"cidr": "198.19.0.0/16", "communities": ["65001:200"]},
        ],
        serviceLoadBalancerIPs=[{"cidr": "198.18.202.0/24"}],
    )
    rejected: list[str] = []
    text = render([cfg(**spec)], rejected=rejected)
    fn = section(text, "function calico_communities_v4()")
    assert ("if net ~ 198.18.202.0/24 then {\n"
            "    bgp_community.add((65001, 100));\n"
            "    bgp_community.add((65001, 5));\n"
            "    bgp_large_community.add((64512, 300, 7));\n  }") in fn
    assert "if net ~ 198.19.0.0/16 then {\n    bgp_community.add((65001, 200));" in fn
    assert section(text, "function calico_export_v4()").splitlines()[2].strip() == \
        "calico_communities_v4();"
    assert rejected == []
    validate_bird_config(text, bird_binary=BIRD)


def test_bad_community_entries_are_skipped_with_a_note() -> None:
    rejected: list[str] = []
    text = render([cfg(communities=[{"name": "x", "value": "99999:1"}],
                       prefixAdvertisements=[{"cidr": "198.19.0.0/16", "communities": ["x"]},
                                             {"cidr": "198.18.202.0/24",
                                              "communities": ["65001:1"]}])],
                  rejected=rejected)
    assert any("communities[0]" in r for r in rejected)
    assert any("prefixAdvertisements[0]" in r for r in rejected)
    assert "bgp_community.add((65001, 1));" in text


# ------------------------------------------------------------------ BGPPeer fields


def tor(**spec: Any) -> dict[str, Any]:
    return peer("tor", peerIP="198.18.0.254", asNumber=65001, **spec)


def session_block(text: str, name: str) -> str:
    return section(text, f"protocol bgp {name} ")


@needs_bird
def test_every_peer_field_renders_with_calicos_meaning() -> None:
    rejected: list[str] = []
    text = render([cfg(bindMode="NodeIP")], [tor(
        keepaliveTime="20s", nextHopMode="Self", localASNumber=65010, ttlSecurity=2,
        numAllowedLocalASNumbers=3, maxRestartTime="300s")], rejected=rejected)
    assert rejected == []
    s = session_block(text, "Global_198_18_0_254")
    for line in ("neighbor 198.18.0.254 as 65001;", "keepalive time 20;", "next hop self;",
                 "local as 65010;", "ttl security on;", "multihop 2;", "allow local as 3;",
                 "graceful restart time 300;", "strict bind on;",
                 "source address 198.18.0.11;"):
        assert line in s, (line, s)
    validate_bird_config(text, bird_binary=BIRD)

    s = session_block(render(peers=[tor(nextHopMode="Keep", sourceAddress="None")]),
                      "Global_198_18_0_254")
    assert "next hop keep;" in s and "source address" not in s and "strict bind" not in s
    # keepOriginalNextHop: Keep towards eBGP only; towards iBGP BIRD keeps it anyway.
    assert "next hop keep;" in session_block(render(peers=[tor(keepOriginalNextHop=True)]),
                                             "Global_198_18_0_254")
    ibgp = peer("ibgp", peerIP="198.18.0.250", asNumber=64512, keepOriginalNextHop=True)
    assert "next hop keep" not in session_block(render(peers=[ibgp]), "Global_198_18_0_250")
    # A local AS per peer makes even a same-AS peer eBGP for keepOriginalNextHop.
    ebgp = peer("ibgp", peerIP="198.18.0.250", asNumber=64512, keepOriginalNextHop=True,
                localASNumber=65010)
    assert "next hop keep;" in session_block(render(peers=[ebgp]), "Global_198_18_0_250")


def test_bad_peer_values_skip_only_that_peer() -> None:
    for bad in (dict(keepaliveTime="soon"), dict(keepaliveTime="10m"), dict(nextHopMode="Off"),
                dict(localASNumber="x"), dict(filters=["missing"])):
        rejected: list[str] = []
        text = render(peers=[tor(**bad), peer("ok", peerIP="198.18.0.250", asNumber=65001)],
                      rejected=rejected)
        assert "Global_198_18_0_254" not in text.split("# ----")[-1], bad
        assert "protocol bgp Global_198_18_0_250" in text
        assert len(rejected) == 1 and "BGPPeer tor skipped" in rejected[0], (bad, rejected)


@needs_bird
def test_ignored_interfaces_excluded_from_direct() -> None:
    text = render([cfg(ignoredInterfaces=["eth9", "vxlan*"])])
    assert 'interface -"eth9", -"vxlan*", -"cali*", -"kube-ipvs*", "*";' in text
    validate_bird_config(text, bird_binary=BIRD)


def test_listen_port_per_node_over_default() -> None:
    m = model([cfg(listenPort=1790), cfg("node.node-a", listenPort=1791)])
    assert m.listen_port == 1791
    assert {s.port for s in m.families[0].sessions} == {1790}  # node-b's port


def _labelled(name: str, ip: str, role: str) -> dict[str, Any]:
    n = node(name, ip)
    n["metadata"]["labels"] = {"role": role}
    return n


def test_reverse_peering_auto_and_manual() -> None:
    nodes = [_labelled("node-a", "198.18.0.11", "edge"), _labelled("node-b", "198.18.0.12", "core")]
    p = peer("edge-core", nodeSelector="role == 'edge'", peerSelector="role == 'core'")
    m_b = build_bird_model("node-b", nodes, [cfg(nodeToNodeMeshEnabled=False)], [p], POOLS, [])
    assert [s.name for s in m_b.families[0].sessions] == ["Node_198_18_0_11"]
    p["spec"]["reversePeering"] = "Manual"
    m_b = build_bird_model("node-b", nodes, [cfg(nodeToNodeMeshEnabled=False)], [p], POOLS, [])
    assert m_b.families[0].sessions == []
    m_a = build_bird_model("node-a", nodes, [cfg(nodeToNodeMeshEnabled=False)], [p], POOLS, [])
    assert [s.name for s in m_a.families[0].sessions] == ["Node_198_18_0_12"]


# ------------------------------------------------------------------ BGPFilter


def bgp_filter(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPFilter",
            "metadata": {"name": name}, "spec": spec}


FILTERS = [
    bgp_filter("no-lb", exportV4=[
        {"cidr": "198.18.202.0/24", "matchOperator": "Equal", "action": "Reject"},
        {"cidr": "198.19.0.0/16", "matchOperator": "In", "prefixLength": {"min": 32},
         "action": "Reject"},
        {"cidr": "198.18.200.0/24", "matchOperator": "NotIn", "source": "RemotePeers",
         "action": "Reject"},
        {"interface": "eth*", "action": "Accept"},
    ], importV4=[{"cidr": "198.19.9.0/24", "matchOperator": "NotEqual", "action": "Accept"}]),
    bgp_filter("v6.only", importV6=[{"cidr": "2001:db8::/32", "matchOperator": "In",
                                     "action": "Reject"}]),
]


@needs_bird
def test_bgp_filter_functions_and_per_peer_use() -> None:
    from calico_net.agent.confd.peers import function_name

    exp, imp = function_name("no-lb", "export", 4), function_name("no-lb", "import", 4)
    assert exp.startswith("bgp_no_lb_") and exp.endswith("_exportFilterV4")
    assert function_name("no.lb", "export", 4) != exp  # names that differ stay apart
    assert function_name("nolb", "export", 4) == "bgp_nolb_exportFilterV4"
    rejected: list[str] = []
    text = render_bird_config("node-a", NODES, [cfg()], [tor(filters=["no-lb", "v6.only"]),
                              peer("other", peerIP="198.18.0.250", asNumber=65001)],
                              POOLS, BLOCKS, rejected=rejected, filters=FILTERS)
    assert rejected == []
    fn = section(text, f"function {exp}()")
    assert "  if (net = 198.18.202.0/24) then reject;" in fn
    assert "  if (net ~ [ 198.19.0.0/16{32,32} ]) then reject;" in fn
    assert "  if (net !~ 198.18.200.0/24) && (source = RTS_BGP) then reject;" in fn
    assert '  if (ifname ~ "eth*") then accept;' in fn
    assert "if (net != 198.19.9.0/24) then accept;" in section(text, f"function {imp}()")
    s = session_block(text, "Global_198_18_0_254")
    # The v6 filter has nothing to do on a v4 session.
    assert f"export filter {{ {exp}(); calico_export_v4(); }};" in s
    assert f"import filter {{ {imp}(); calico_import_v4(); }};" in s
    assert "filter {" not in session_block(text, "Global_198_18_0_250")
    validate_bird_config(text, bird_binary=BIRD)


def test_bad_filter_is_skipped_and_its_peers_with_it() -> None:
    bad = bgp_filter("bad", exportV4=[{"cidr": "2001:db8::/32", "matchOperator": "In",
                                       "action": "Reject"}])
    rejected: list[str] = []
    text = render_bird_config("node-a", NODES, [cfg()], [tor(filters=["bad"])], POOLS, BLOCKS,
                              rejected=rejected, filters=[bad, *FILTERS])
    assert any("BGPFilter bad skipped" in r for r in rejected)
    assert any("BGPPeer tor skipped" in r for r in rejected)
    assert "_exportFilterV4()" in text


@needs_bird
def test_bird_parse_rejects_a_bad_render_without_touching_the_running_config(tmp_path) -> None:
    """A filter whose text slips past the builder but not BIRD's parser: bird -p
    refuses it and write-if-valid leaves the file as it was."""
    from calico_net.agent.confd.peers import Condition, FilterFunc, FilterRule

    m = model(peers=[tor()])
    # A rule BIRD cannot parse: a prefix pattern longer than the family allows.
    m.families[0].filter_funcs = [FilterFunc("bgp_x_exportFilterV4", "x", "export", 4, (
        FilterRule((Condition("net", "In", "198.19.0.0/16{16,24}", pattern=True),), False),))]
    m.families[0].sessions[0].export_filters = ["bgp_x_exportFilterV4", "bgp_missing"]
    from calico_net.agent.confd.render import render_model

    from calico_net.agent.confd.render import write_if_changed

    good = render(peers=[tor()])
    validate_bird_config(good, bird_binary=BIRD)
    running = tmp_path / "bird.cfg"
    write_if_changed(running, good)
    text = render_model(m)
    # confd's order (runner.step): bird -p first, the file only when BIRD accepts it.
    with pytest.raises(BirdConfigError) as err:
        validate_bird_config(text, bird_binary=BIRD)
        write_if_changed(running, text)
    assert "bgp_missing" in str(err.value) or "line" in str(err.value)
    assert running.read_text() == good


def test_node_prefix_advertisements_replace_the_defaults() -> None:
    m = model([cfg(communities=[{"name": "a", "value": "65001:1"}],
                   prefixAdvertisements=[{"cidr": "198.19.0.0/16", "communities": ["a"]}]),
               cfg("node.node-a", prefixAdvertisements=[
                   {"cidr": "198.19.1.0/24", "communities": ["a", "65001:2"]}])])
    (rule,) = m.families[0].communities
    assert (rule.prefix, rule.standard) == ("198.19.1.0/24", ((65001, 1), (65001, 2)))
    other = build_bird_model("node-b", NODES, [cfg(prefixAdvertisements=[
        {"cidr": "198.19.0.0/16", "communities": ["65001:9"]}]), cfg("node.node-a")], [],
        POOLS, [])
    assert [r.prefix for r in other.families[0].communities] == ["198.19.0.0/16"]


@needs_bird
def test_confd_keeps_the_running_config_when_a_filter_renders_invalid(tmp_path, monkeypatch) -> None:
    """The real render loop with the real ``bird -p``: a BGPFilter whose function name
    collides with one of the template's own (as a naming bug would make it) is refused
    by BIRD, and bird.cfg stays the last good one until a good render comes."""
    import json
    from pathlib import Path

    from calico_net.agent.confd import peers as peers_mod
    from calico_net.agent.confd.runner import Confd
    from calico_net.agent.confd.settings import ConfdSettings
    from calico_net.datastore.etcd import KV
    from calico_net.datastore.store import RESOURCE_PREFIX

    settings = ConfdSettings(
        node_name="node-a", bird_config=str(tmp_path / "bird.cfg"),
        bird_socket=str(tmp_path / "bird.ctl"), secrets_dir=str(tmp_path / "secrets"),
        status_file=str(tmp_path / "status.json"), health_enabled=False, bird_binary=BIRD)
    reloads: list[int] = []
    confd = Confd(settings, None, reload=lambda: reloads.append(1))
    docs = [("nodes", n) for n in NODES] + [("ippools", POOLS[0]), ("bgppeers", tor(filters=["f"])),
            ("bgpfilters", bgp_filter("f", exportV4=[{"cidr": "198.18.202.0/24",
                                                     "matchOperator": "Equal",
                                                     "action": "Reject"}]))]
    confd.index.load([KV(f"{RESOURCE_PREFIX}{plural}/{d['metadata']['name']}",
                         json.dumps(d).encode(), 5, 5, 1) for plural, d in docs], 5)
    confd.step()
    good = Path(settings.bird_config).read_text()
    assert "function bgp_f_exportFilterV4()" in good and confd.status.state == "ok"

    monkeypatch.setattr(peers_mod, "function_name", lambda *a: "calico_export_v4")
    confd.step()
    assert confd.status.state == "rejected", confd.status.error
    assert "calico_export_v4" in (confd.status.error or "") or "defined" in (confd.status.error or ""), \
        confd.status.error
    assert Path(settings.bird_config).read_text() == good
    assert reloads == [1]

    monkeypatch.undo()
    confd.step()
    assert confd.status.state == "ok" and Path(settings.bird_config).read_text() == good


def test_keepalive_time_bounds_in_the_model_and_in_confd() -> None:
    from calico_net import model
    from calico_net.errors import ValidationError

    def apply(value: str) -> None:
        model.parse_resource(peer("p", peerIP="198.18.0.254", asNumber=65001, keepaliveTime=value))

    apply("240s")
    apply("1m")
    for bad in ("241s", "500ms", "0"):
        with pytest.raises(ValidationError) as err:
            apply(bad)
        assert "spec.keepaliveTime" in str(err.value)
    assert "keepalive time 240;" in render(peers=[tor(keepaliveTime="4m")])
