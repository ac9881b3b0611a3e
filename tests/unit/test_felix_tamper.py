"""The tamper watch's reading of netlink notifications and its debounce
(calico_net.agent.felix.tamper), on hand-built messages; the kernel side is in
tests/fv/test_agent_tamper.py."""
from __future__ import annotations

import socket
import struct

from calico_net.agent.felix.netlink import attr, strz
from calico_net.agent.felix.nft_netlink import OwnGenerations
from calico_net.agent.felix.rtnetlink import RTM_DELROUTE, RTM_NEWROUTE, RouteOp, route_message
from calico_net.agent.felix.tamper import Tamper, TamperWatcher, parse_delroute

V4, V6 = socket.AF_INET, socket.AF_INET6
OWN_PORT = 4242


def msg(mtype: int, body: bytes, port: int) -> bytes:
    out = struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, port) + body
    return out + b"\0" * (-len(out) % 4)


def route_body(route, oif=7, protocol=80, table=254, gateway=False) -> bytes:
    _t, _f, body = route_message(RouteOp("replace", route, oif), protocol, table)
    if gateway:
        body += attr(5, socket.inet_pton(route[0], "198.18.88.1" if route[0] == V4 else "fd00::9"))
    return body


def nft_msg(msg_type: int, table: str | None, family: int = 1, port: int = 99) -> bytes:
    body = struct.pack("=BBH", family, 0, 0) + (attr(1, strz(table)) if table is not None else b"")
    return msg((10 << 8) | msg_type, body, port)


def newgen(gen: int, port: int = 99) -> bytes:
    return msg((10 << 8) | 15, struct.pack("=BBH", 0, 0, 0) + attr(1, struct.pack("!I", gen)), port)


class Reports(list):
    def __call__(self, t: Tamper) -> None:
        self.append(t)


def watcher(gens: OwnGenerations | None = None) -> tuple[TamperWatcher, Reports]:
    got = Reports()
    w = TamperWatcher(got, frozenset({OWN_PORT}), None)
    w.generations = gens     # the nft socket is not opened: the parsing is what is tested
    return w, got


def test_only_routes_shaped_like_ours_count():
    r = (V4, "198.19.88.1", 32)
    body = route_body(r)
    assert parse_delroute(body, 0, len(body)) == (r, 7)
    r6 = (V6, "fd00::1", 128)
    body = route_body(r6, oif=9)
    assert parse_delroute(body, 0, len(body)) == (r6, 9)
    for other in (route_body(r, protocol=12), route_body(r, table=100), route_body(r, gateway=True)):
        assert parse_delroute(other, 0, len(other)) is None


def test_route_deletes_by_others_reported_once_per_burst():
    w, got = watcher()
    try:
        a, b, c = ((V4, f"198.19.88.{i}", 32) for i in (1, 2, 3))
        w._routes(msg(RTM_DELROUTE, route_body(a), port=777)
                  + msg(RTM_DELROUTE, route_body(b), port=OWN_PORT)     # our own delete
                  + msg(RTM_DELROUTE, route_body(c), port=0)            # the kernel's (link gone)
                  + msg(RTM_NEWROUTE, route_body(c), port=777))         # an add is no tamper
        w._routes(msg(RTM_DELROUTE, route_body(c, oif=8), port=778))
        assert got == [] and w._first
        w._flush()
        assert got == [Tamper(routes={a: 7, c: 8})]
        w._flush()                     # nothing new: nothing reported
        assert len(got) == 1 and not w._first
    finally:
        w.stop()


def gens_with(*done: tuple[int | None, int | None], inflight: int | None = -1) -> OwnGenerations:
    g = OwnGenerations()
    g._done.extend(done)
    if inflight != -1:
        g._inflight[1] = inflight
    return g


def test_generations_are_told_apart():
    g = gens_with((10, 11), (20, 22))
    assert [g.classify(x) for x in (10, 11, 12, 21, 22, 23)] == [
        "foreign", "own", "foreign", "ambiguous", "ambiguous", "foreign"]
    assert g.classify(11) == "own"
    assert gens_with((10, 11), inflight=11).classify(12) == "pending"
    assert gens_with((10, 11), inflight=11).classify(11) == "own"
    assert gens_with((None, 5)).classify(3) == "ambiguous"
    # the kernel's 32-bit generation wraps
    assert gens_with((0xFFFFFFFF, 0)).classify(0) == "own"


def test_nft_transactions_on_our_table_by_others_are_reported():
    w, got = watcher(gens_with((10, 11)))
    try:
        # ours (generation 11: recorded), another table's (12), our table's by someone else (13)
        w._nft(nft_msg(12, "calico") * 3 + newgen(11)
               + nft_msg(8, "filter") + newgen(12)
               + nft_msg(8, "calico", family=2) + newgen(14))     # ip calico, not inet calico
        w._flush()
        assert got == []
        w._nft(nft_msg(0, "other") + nft_msg(8, "calico") + newgen(13))
        w._flush()
        assert got == [Tamper(nft="another process changed table inet calico (generation 13)")]
    finally:
        w.stop()


def test_a_generation_of_a_write_still_going_waits_for_it():
    g = gens_with(inflight=10)
    w, got = watcher(g)
    try:
        w._nft(nft_msg(6, "calico") + newgen(11))
        w._flush()
        assert got == [] and w._gens == [11] and w._first    # looked at again shortly
        del g._inflight[1]
        g._done.append((10, 11))
        w._flush()
        assert got == [] and w._gens == [] and not w._first
    finally:
        w.stop()
