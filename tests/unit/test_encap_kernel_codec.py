"""The overlay's rtnetlink messages (calico_net.agent.encap.kernel_codec): what it
builds parses back to the same route, and the parser claims only protocol-80
main-table routes with a gateway (a workload route never has one)."""
from __future__ import annotations

import socket
import struct

from calico_net.agent.encap import kernel_codec as kc
from calico_net.agent.felix.netlink import NLM_F_CREATE, NLM_F_REPLACE, attr, attrs
from calico_net.agent.felix.rtnetlink import RTA_DST, RTA_GATEWAY, RTA_MULTIPATH, RTA_OIF, RTA_TABLE

V4 = socket.AF_INET
KEY = (V4, socket.inet_aton("198.19.147.64"), 26)
GW = socket.inet_aton("198.18.147.2")


def as_dump(body: bytes, proto: int | None = None, table: int | None = None) -> bytes:
    """A dumped route as the kernel would report `body` (optionally re-stamped)."""
    fields = list(kc.RTMSG.unpack_from(body, 0))
    if proto is not None:
        fields[5] = proto
    if table is not None:
        fields[4] = table if table < 256 else 252
    rest = body[kc.RTMSG.size:]
    if table is not None:
        a = attrs(rest, 0, len(rest))
        a[RTA_TABLE] = struct.pack("=I", table)
        rest = b"".join(attr(k, v) for k, v in a.items())
    return kc.RTMSG.pack(*fields) + rest


def test_replace_parses_back_as_ours():
    mtype, flags, body = kc.route_replace(KEY, GW, 7, True)
    assert flags == NLM_F_REPLACE | NLM_F_CREATE
    r = kc.parse_route(body, 0, len(body))
    assert r == kc.KernelRoute(KEY, GW, 7, True, 0)
    _m, _f, plain = kc.route_replace(KEY, GW, 3, False)
    assert kc.parse_route(plain, 0, len(plain)).onlink is False


def test_parser_skips_workload_routes_other_protocols_and_tables():
    _m, _f, body = kc.route_replace(KEY, GW, 7, True)
    assert kc.parse_route(as_dump(body, proto=4), 0, len(body)) is None          # BIRD's
    other = as_dump(body, table=1000)
    assert kc.parse_route(other, 0, len(other)) is None
    # a workload route: protocol 80, no gateway
    fields = kc.RTMSG.pack(V4, 32, 0, 0, 254, 80, 253, 1, 0)
    workload = fields + attr(RTA_DST, socket.inet_aton("198.19.147.5")) + attr(RTA_OIF, struct.pack("=i", 9))
    assert kc.parse_route(workload, 0, len(workload)) is None
    # next hops instead of a gateway: ours, with no single gateway
    multi = kc.RTMSG.pack(V4, 26, 0, 0, 254, 80, 0, 1, 0) + attr(RTA_DST, KEY[1]) + attr(RTA_MULTIPATH, b"\0" * 8)
    r = kc.parse_route(multi, 0, len(multi))
    assert r is not None and r.gateway is None


def test_delete_pins_the_dumped_route():
    _m, _f, body = kc.route_delete(kc.KernelRoute(KEY, GW, 7, True, 20))
    fam, plen, _s, _t, table, proto, scope, _type, _fl = kc.RTMSG.unpack_from(body, 0)
    assert (fam, plen, table, proto, scope) == (V4, 26, 254, 80, kc.RT_SCOPE_NOWHERE)
    a = attrs(body, kc.RTMSG.size, len(body))
    assert a[RTA_DST] == KEY[1] and a[RTA_GATEWAY] == GW
    assert struct.unpack("=i", a[RTA_OIF])[0] == 7
    assert struct.unpack("=I", a[kc.RTA_PRIORITY])[0] == 20


def test_neighbour_and_fdb_messages():
    mac = kc.mac("66:CB:00:00:00:02")
    assert mac == bytes.fromhex("66cb00000002")
    _m, flags, body = kc.neigh_msg(kc.RTM_NEWNEIGH, V4, 5, socket.inet_aton("198.19.147.66"), mac)
    assert flags == NLM_F_REPLACE | NLM_F_CREATE
    assert kc.parse_neigh(body, 0, len(body)) == (V4, 5, socket.inet_aton("198.19.147.66"), mac, kc.NUD_PERMANENT)
    _m, flags, body = kc.fdb_msg(kc.RTM_NEWNEIGH, 5, mac, GW)
    fam, index, dst, lladdr, state = kc.parse_neigh(body, 0, len(body))
    assert (fam, index, dst, lladdr, state) == (kc.AF_BRIDGE, 5, GW, mac, kc.NUD_PERMANENT)
    assert kc.NDMSG.unpack_from(body, 0)[3] == kc.NTF_SELF
    assert kc.fdb_msg(kc.RTM_DELNEIGH, 5, mac, GW)[1] == 0


def test_address_and_mac_validation():
    assert kc.ip("198.19.147.1", V4) == socket.inet_aton("198.19.147.1")
    assert kc.ip("198.19.147.1", socket.AF_INET6) is None
    for bad in ("198.19.147.1/32", "nope", "", None, "198.19.147.1; reboot"):
        assert kc.ip(bad, V4) is None
    for bad in ("66:cb:00:00:00", "66-cb-00-00-00-02", "66:cb:00:00:00:02:03", None, "zz:cb:00:00:00:02"):
        assert kc.mac(bad) is None
    assert kc.is_default_priority(V4, 0) and not kc.is_default_priority(V4, 1024)
    assert kc.is_default_priority(socket.AF_INET6, 1024)
