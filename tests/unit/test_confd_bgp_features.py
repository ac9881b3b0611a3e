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
    exp = section(text, "filter calico_export_bgp_v4")
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
    exp = section(text, "filter calico_export_bgp_v4")
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
    assert section(text, "filter calico_export_bgp_v4").splitlines()[2].strip() == \
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
