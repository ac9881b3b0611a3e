"""The overlay's desired state (calico_net.agent.encap.state): pure logic, no kernel.

Addresses: underlay subnets 198.19.170.0/26 (nodes a, b) and 198.19.170.64/26
(node c); pools in 198.19.172.0/23; IPv6 fd00:198:19:170::/64 and
fd00:198:19:172::/64.
"""
from __future__ import annotations

import logging

from calico_net.agent.encap import types as t
from calico_net.agent.encap.state import EncapSettings, Problems, Underlay, desired

UNDERLAY = Underlay(iface="eth0", mtu=1500, iface_v6="eth0")
SETTINGS = EncapSettings()

BLOCK_A = "198.19.172.0/26"
BLOCK_B = "198.19.172.64/26"
BLOCK_C = "198.19.172.128/26"


def node(ip4: str | None, *, ipip: str | None = None, vx: str | None = None, mac: str | None = None,
         ip6: str | None = None, vx6: str | None = None, mac6: str | None = None) -> dict:
    bgp = {}
    if ip4:
        bgp["ipv4Address"] = ip4
    if ip6:
        bgp["ipv6Address"] = ip6
    if ipip:
        bgp["ipv4IPIPTunnelAddr"] = ipip
    spec: dict = {"bgp": bgp}
    for k, v in (("ipv4VXLANTunnelAddr", vx), ("vxlanTunnelMACAddr", mac),
                 ("ipv6VXLANTunnelAddr", vx6), ("vxlanTunnelMACAddrV6", mac6)):
        if v:
            spec[k] = v
    return spec


NODES = {
    "a": node("198.19.170.1/26", ipip="198.19.172.1", vx="198.19.172.2", mac="66:00:00:00:00:0a"),
    "b": node("198.19.170.2/26", ipip="198.19.172.65", vx="198.19.172.66", mac="66:00:00:00:00:0b"),
    "c": node("198.19.170.65/26", ipip="198.19.172.129", vx="198.19.172.130", mac="66:00:00:00:00:0c"),
}
AFF = {"a": {BLOCK_A}, "b": {BLOCK_B}, "c": {BLOCK_C}}


def pool(ipip: str = "Never", vxlan: str = "Never", cidr: str = "198.19.172.0/23", **extra) -> dict:
    return {"cidr": cidr, "ipipMode": ipip, "vxlanMode": vxlan, **extra}


def routes(d: t.Desired) -> dict[str, tuple[str, str, bool]]:
    return {r.dst: (r.gateway, r.dev, r.onlink) for r in d.routes}


def test_no_encapsulated_pool_is_empty():
    d = desired("a", {"p": pool()}, NODES, AFF, SETTINGS, UNDERLAY)
    assert d.devices == {} and d.routes == set() and d.neighbours == set() and d.fdb == set()
    assert d.ipip_sources is None and d.vxlan_sources is None
    assert d.workload_mtu == 1500
    assert desired("a", {}, NODES, AFF, SETTINGS, UNDERLAY) == d


def test_ipip_always():
    d = desired("a", {"p": pool(ipip="Always")}, NODES, AFF, SETTINGS, UNDERLAY)
    assert d.devices == {"tunl0": t.TunnelDevice("tunl0", "ipip", "198.19.172.1", 1480)}
    assert routes(d) == {BLOCK_B: ("198.19.170.2", "tunl0", True), BLOCK_C: ("198.19.170.65", "tunl0", True)}
    assert d.ipip_sources == frozenset({"198.19.170.1", "198.19.170.2", "198.19.170.65"})
    assert d.vxlan_sources is None and d.neighbours == set() and d.fdb == set()
    assert d.workload_mtu == 1480


def test_ipip_cross_subnet_same_subnet_is_plain():
    d = desired("a", {"p": pool(ipip="CrossSubnet")}, NODES, AFF, SETTINGS, UNDERLAY)
    assert routes(d) == {BLOCK_B: ("198.19.170.2", "eth0", False),     # same /26: not encapsulated
                         BLOCK_C: ("198.19.170.65", "tunl0", True)}    # across subnets: tunnel
    assert "tunl0" in d.devices


def test_vxlan_always_routes_neighbours_fdb():
    d = desired("a", {"p": pool(vxlan="Always")}, NODES, AFF, SETTINGS, UNDERLAY)
    dev = d.devices["vxlan.calico"]
    assert dev == t.TunnelDevice("vxlan.calico", "vxlan", "198.19.172.2", 1450, vni=4096, port=4789,
                                 local="198.19.170.1", parent="eth0", mac="66:00:00:00:00:0a")
    assert routes(d) == {BLOCK_B: ("198.19.172.66", "vxlan.calico", True),
                         BLOCK_C: ("198.19.172.130", "vxlan.calico", True)}
    assert d.neighbours == {t.Neighbour("vxlan.calico", "198.19.172.66", "66:00:00:00:00:0b"),
                            t.Neighbour("vxlan.calico", "198.19.172.130", "66:00:00:00:00:0c")}
    assert d.fdb == {t.FdbEntry("vxlan.calico", "66:00:00:00:00:0b", "198.19.170.2"),
                     t.FdbEntry("vxlan.calico", "66:00:00:00:00:0c", "198.19.170.65")}
    assert d.vxlan_sources == frozenset({"198.19.170.1", "198.19.170.2", "198.19.170.65"})
    assert d.ipip_sources is None and "tunl0" not in d.devices
    assert d.workload_mtu == 1450 and d.vxlan_port == 4789


def test_vxlan_cross_subnet_keeps_vteps_for_the_plain_neighbours():
    d = desired("a", {"p": pool(vxlan="CrossSubnet")}, NODES, AFF, SETTINGS, UNDERLAY)
    assert routes(d) == {BLOCK_B: ("198.19.170.2", "eth0", False),
                         BLOCK_C: ("198.19.172.130", "vxlan.calico", True)}
    assert len(d.neighbours) == 2 and len(d.fdb) == 2   # Felix programs every VTEP


def test_vxlan_remote_without_tunnel_address_gets_nothing_until_it_has_one():
    nodes = dict(NODES, c=node("198.19.170.65/26"))
    d = desired("a", {"p": pool(vxlan="Always")}, nodes, AFF, SETTINGS, UNDERLAY)
    assert set(routes(d)) == {BLOCK_B}
    assert {n.ip for n in d.neighbours} == {"198.19.172.66"}
    assert {f.dst for f in d.fdb} == {"198.19.170.2"}
    assert "198.19.170.65" not in d.vxlan_sources
    # the MAC alone is not enough either
    nodes = dict(NODES, c=node("198.19.170.65/26", vx="198.19.172.130"))
    assert set(routes(desired("a", {"p": pool(vxlan="Always")}, nodes, AFF, SETTINGS, UNDERLAY))) == {BLOCK_B}


def test_own_device_without_address_yet():
    nodes = dict(NODES, a=node("198.19.170.1/26"))
    d = desired("a", {"p": pool(vxlan="Always")}, nodes, AFF, SETTINGS, UNDERLAY)
    assert d.devices["vxlan.calico"].address is None and d.devices["vxlan.calico"].mac is None
    assert len(d.routes) == 2   # the others' blocks are routable all the same


def test_never_and_blocks_outside_pools_and_own_blocks():
    pools = {"enc": pool(ipip="Always", cidr="198.19.172.0/25"), "plain": pool(cidr="198.19.172.128/25")}
    aff = {"a": {BLOCK_A, "198.19.173.0/26"}, "b": {BLOCK_B, "198.19.173.64/26"}, "c": {BLOCK_C}}
    d = desired("a", pools, NODES, aff, SETTINGS, UNDERLAY)
    assert set(routes(d)) == {BLOCK_B}   # C is in a Never pool, 198.19.173.x in no pool, A is ours


def test_most_specific_pool_wins():
    pools = {"wide": pool(ipip="Always", cidr="198.19.172.0/23"),
             "narrow": pool(vxlan="Always", cidr="198.19.172.128/25")}
    d = desired("a", pools, NODES, AFF, SETTINGS, UNDERLAY)
    assert routes(d) == {BLOCK_B: ("198.19.170.2", "tunl0", True),
                         BLOCK_C: ("198.19.172.130", "vxlan.calico", True)}
    assert set(d.devices) == {"tunl0", "vxlan.calico"}
    assert d.workload_mtu == 1450   # the smallest of the encapsulations in use


def test_disabled_pool_still_routes_its_blocks():
    d = desired("a", {"p": pool(ipip="Always", disabled=True)}, NODES, AFF, SETTINGS, UNDERLAY)
    assert set(routes(d)) == {BLOCK_B, BLOCK_C}


def test_vxlan_v6():
    p6 = "fd00:198:19:172::/64"
    b6 = "fd00:198:19:172::40/122"
    c6 = "fd00:198:19:172::80/122"
    nodes = {
        "a": node(None, ip6="fd00:198:19:170::1/64", vx6="fd00:198:19:172::1", mac6="66:00:00:00:06:0a"),
        "b": node(None, ip6="fd00:198:19:170::2/64", vx6="fd00:198:19:172::41", mac6="66:00:00:00:06:0b"),
        "c": node(None, ip6="fd00:198:19:171::1/64", vx6="fd00:198:19:172::81", mac6="66:00:00:00:06:0c"),
    }
    aff = {"a": {"fd00:198:19:172::/122"}, "b": {b6}, "c": {c6}}
    d = desired("a", {"p6": pool(vxlan="CrossSubnet", cidr=p6)}, nodes, aff, SETTINGS, UNDERLAY)
    dev = d.devices["vxlan-v6.calico"]
    assert (dev.address, dev.mac, dev.local, dev.parent, dev.mtu) == (
        "fd00:198:19:172::1", "66:00:00:00:06:0a", "fd00:198:19:170::1", "eth0", 1430)
    assert set(d.devices) == {"vxlan-v6.calico"}
    assert routes(d) == {b6: ("fd00:198:19:170::2", "eth0", False),
                         c6: ("fd00:198:19:172::81", "vxlan-v6.calico", True)}
    assert t.FdbEntry("vxlan-v6.calico", "66:00:00:00:06:0c", "fd00:198:19:171::1") in d.fdb
    assert d.vxlan_sources == frozenset({"fd00:198:19:170::1", "fd00:198:19:170::2", "fd00:198:19:171::1"})
    assert d.workload_mtu == 1430


def test_mtu_configured_overrides_and_unknown_underlay():
    s = EncapSettings(ipip_mtu=1400, vxlan_mtu=1380)
    pools = {"i": pool(ipip="Always", cidr="198.19.172.0/24"), "v": pool(vxlan="Always", cidr="198.19.173.0/24")}
    d = desired("a", pools, NODES, AFF, s, UNDERLAY)
    assert d.devices["tunl0"].mtu == 1400 and d.devices["vxlan.calico"].mtu == 1380
    assert d.workload_mtu == 1380
    d = desired("a", pools, NODES, AFF, EncapSettings(), Underlay(iface="eth0", mtu=9000))
    assert d.devices["tunl0"].mtu == 8980 and d.workload_mtu == 8950
    d = desired("a", pools, NODES, AFF, EncapSettings(), Underlay())
    assert d.devices["tunl0"].mtu == 1480   # unknown underlay: Felix's 1500 assumed
    assert desired("a", {}, NODES, AFF, EncapSettings(), Underlay()).workload_mtu == 0


def test_settings_reach_the_device():
    s = EncapSettings(vni=5000, port=8472)
    d = desired("a", {"p": pool(vxlan="Always")}, NODES, AFF, s, UNDERLAY)
    assert (d.devices["vxlan.calico"].vni, d.devices["vxlan.calico"].port, d.vxlan_port) == (5000, 8472, 8472)


def test_switching_modes():
    aff, n = AFF, NODES
    ipip = desired("a", {"p": pool(ipip="Always")}, n, aff, SETTINGS, UNDERLAY)
    vx = desired("a", {"p": pool(vxlan="Always")}, n, aff, SETTINGS, UNDERLAY)
    cross = desired("a", {"p": pool(vxlan="CrossSubnet")}, n, aff, SETTINGS, UNDERLAY)
    never = desired("a", {"p": pool()}, n, aff, SETTINGS, UNDERLAY)
    assert set(ipip.devices) == {"tunl0"} and set(vx.devices) == {"vxlan.calico"}
    assert {r.dev for r in ipip.routes} == {"tunl0"} and {r.dev for r in vx.routes} == {"vxlan.calico"}
    assert {r.dev for r in cross.routes} == {"eth0", "vxlan.calico"}
    assert never.routes == set() and never.devices == {}
    # every route carries a gateway: that is how they are told from workload routes
    assert all(r.gateway for d in (ipip, vx, cross) for r in d.routes)


def test_bad_data_is_skipped_and_logged_once(caplog):
    nodes = dict(NODES)
    nodes["b"] = node("not-an-ip", ipip="198.19.172.65")                  # bad address: no route
    nodes["c"] = node("198.19.170.65/26", vx="198.19.172.130", mac="zz:00:00:00:00:0c")  # bad MAC
    nodes["d"] = {"bgp": "garbage"}
    nodes["e"] = node("198.19.170.66/26", vx="fd00::1", mac="66:00:00:00:00:0e")        # wrong family
    aff = dict(AFF, d={"198.19.172.192/26"}, e={"198.19.173.0/26", "garbage", "198.19.173.65/26"},
               ghost={"198.19.173.128/26"})
    pools = {"p": pool(vxlan="Always"), "bad": {"cidr": "nonsense", "vxlanMode": "Always"},
             "both": pool(ipip="Always", vxlan="Always", cidr="198.19.180.0/24"),
             "ipip6": pool(ipip="Always", cidr="fd00:198:19:174::/64")}
    problems = Problems()
    with caplog.at_level(logging.ERROR):
        d = desired("a", pools, nodes, aff, SETTINGS, UNDERLAY, problems)
        first = len(caplog.records)
        d2 = desired("a", pools, nodes, aff, SETTINGS, UNDERLAY, problems)
    assert d == d2
    assert len(caplog.records) == first and first == problems.total >= 8
    # nothing for the broken nodes; the good parts are all there
    assert routes(d) == {}   # b: no address; c: bad MAC; d: no address; e: no v4 tunnel addr
    assert d.devices["vxlan.calico"].address == "198.19.172.2"
    assert d.vxlan_sources == frozenset({"198.19.170.1"})
    # fixed data is computed, and forgotten as a problem
    nodes["c"] = node("198.19.170.65/26", vx="198.19.172.130", mac="66-00-00-00-00-0C")
    d3 = desired("a", pools, nodes, aff, SETTINGS, UNDERLAY, problems)
    assert routes(d3) == {BLOCK_C: ("198.19.172.130", "vxlan.calico", True)}
    assert t.Neighbour("vxlan.calico", "198.19.172.130", "66:00:00:00:00:0c") in d3.neighbours
    assert not any(k == "Node c" for k, _ in problems.current)


def test_cross_subnet_without_underlay_interface_is_reported_not_routed(caplog):
    problems = Problems()
    with caplog.at_level(logging.ERROR):
        d = desired("a", {"p": pool(ipip="CrossSubnet")}, NODES, AFF, SETTINGS, Underlay(mtu=1500), problems)
    assert routes(d) == {BLOCK_C: ("198.19.170.65", "tunl0", True)}
    assert any("underlay" in k for k, _ in problems.current)


def test_own_blocks_are_blackholed_only_without_bird():
    pools = {"p": pool(vxlan="Always")}
    aff = dict(AFF, a={BLOCK_A, "198.19.180.0/26", "not-a-cidr"})   # one outside every pool
    with_bird = desired("a", pools, NODES, aff, SETTINGS, UNDERLAY)
    assert with_bird.blackholes == set()          # BIRD writes them (protocol bird)
    alone = desired("a", pools, NODES, aff, EncapSettings(own_blackholes=True), UNDERLAY)
    assert alone.blackholes == {BLOCK_A}
    assert BLOCK_A not in routes(alone) and routes(alone).keys() == {BLOCK_B, BLOCK_C}
    # no encapsulated pool: nothing of the overlay's, blackholes included
    assert desired("a", {"p": pool()}, NODES, aff, EncapSettings(own_blackholes=True), UNDERLAY).blackholes == set()


# --- borrowed addresses (Felix's route resolver) ---

def ep(node_name: str, *addrs: str) -> tuple:
    import ipaddress
    return (node_name, tuple(str(ipaddress.ip_address(a)) for a in addrs))


def test_borrowed_address_gets_a_host_route_to_the_endpoints_node():
    # b's workload holds .10 from a's block (borrowed) and .70 from its own block
    eps = {"wep-b": ep("b", "198.19.172.10", "198.19.172.70"),
           "wep-c": ep("c", "198.19.172.140")}     # inside c's own block: nothing extra
    d = desired("c", {"p": pool(vxlan="Always")}, NODES, AFF, SETTINGS, UNDERLAY, endpoints=eps)
    assert routes(d) == {BLOCK_A: ("198.19.172.2", "vxlan.calico", True),
                         BLOCK_B: ("198.19.172.66", "vxlan.calico", True),
                         "198.19.172.10/32": ("198.19.172.66", "vxlan.calico", True)}
    # the block's owner routes it onward the same way; CrossSubnet on the same subnet: plain
    d = desired("a", {"p": pool(vxlan="CrossSubnet")}, NODES, AFF, SETTINGS, UNDERLAY, endpoints=eps)
    assert routes(d)["198.19.172.10/32"] == ("198.19.170.2", "eth0", False)
    d = desired("a", {"p": pool(ipip="Always")}, NODES, AFF, SETTINGS, UNDERLAY, endpoints=eps)
    assert routes(d)["198.19.172.10/32"] == ("198.19.170.2", "tunl0", True)
    # the hosting node itself: its workload route, nothing from the overlay
    d = desired("b", {"p": pool(vxlan="Always")}, NODES, AFF, SETTINGS, UNDERLAY, endpoints=eps)
    assert "198.19.172.10/32" not in routes(d)


def test_borrowed_from_an_unaffine_block_and_outside_pools():
    eps = {"w1": ep("b", "198.19.173.5"),        # a block nobody claims (released affinity)
           "w2": ep("b", "198.19.180.5"),        # in no pool
           "w3": ep("b", "198.19.172.200")}
    plain_inside = {"p": pool(vxlan="Always"), "q": pool(cidr="198.19.172.192/26")}
    d = desired("a", plain_inside, NODES, AFF, SETTINGS, UNDERLAY, endpoints=eps)
    r = routes(d)
    assert r["198.19.173.5/32"] == ("198.19.172.66", "vxlan.calico", True)
    assert "198.19.180.5/32" not in r
    # .200 is in the /23 VXLAN pool (the plain /26 pool is not encapsulated: not a pool here)
    assert r["198.19.172.200/32"] == ("198.19.172.66", "vxlan.calico", True)
    # no encapsulated pool: no route at all
    assert desired("a", {"p": pool()}, NODES, AFF, SETTINGS, UNDERLAY, endpoints=eps).routes == set()


def test_borrowed_v6_and_unknown_node(caplog):
    nodes = dict(NODES, b=node("198.19.170.2/26", ip6="fd00:198:19:170::2/64", vx6="fd00:198:19:172::66",
                               mac6="66:00:00:00:01:0b"))
    nodes["a"] = node("198.19.170.1/26", ip6="fd00:198:19:170::1/64", vx6="fd00:198:19:172::2",
                      mac6="66:00:00:00:01:0a")
    aff = {"a": {"fd00:198:19:172::/122"}, "b": {"fd00:198:19:172::40/122"}}
    eps = {"w6": ep("b", "fd00:198:19:172::5"), "ghost": ep("zz", "fd00:198:19:172::6")}
    problems = Problems()
    with caplog.at_level(logging.ERROR):
        d = desired("a", {"p": pool(vxlan="Always", cidr="fd00:198:19:172::/64")}, nodes, aff, SETTINGS,
                    UNDERLAY, problems, endpoints=eps)
    r = routes(d)
    assert r["fd00:198:19:172::5/128"] == ("fd00:198:19:172::66", "vxlan-v6.calico", True)
    assert "fd00:198:19:172::6/128" not in r
    assert any("ghost" in k for k, _ in problems.current)
    assert len(r) == 2   # b's block and the borrowed /128


def test_borrowed_routes_at_10k_endpoints():
    import time
    eps = {f"wep-{i}": ep("b", f"198.19.{172 + (i >> 8) % 2}.{i % 256}") for i in range(10_000)}
    start = time.perf_counter()
    d = desired("c", {"p": pool(vxlan="Always")}, NODES, AFF, SETTINGS, UNDERLAY, endpoints=eps)
    took = time.perf_counter() - start
    print(f"desired() with 10,000 remote endpoints: {took * 1000:.1f} ms")
    # 512 distinct addresses; those in b's own block (64) are covered by its block route
    assert len(d.routes) == 2 + 512 - 64
