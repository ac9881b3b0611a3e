"""calico-libnetwork without Docker: the HTTP dispatch on a real unix socket, the
pure helpers, and the IPAM and network drivers' etcd side against the session's
real etcd (no kernel: veth creation is covered by tests/fv/test_libnetwork.py)."""
from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import threading
from pathlib import Path

import pytest

from calico_net.libnetwork import network
from calico_net.libnetwork.ipam import POOL_ID_V4, IpamDriver
from calico_net.libnetwork.main import Context, build_routes
from calico_net.libnetwork.network import (
    Labeller,
    NetworkDriver,
    _option_problem,
    check_id,
    container_labels,
    profile_name,
    wep_name,
)
from calico_net.libnetwork.server import PluginError, make_server

NET_ID = "ab" * 32
EP_ID = "cd" * 32
POOL = "198.19.121.0/26"


def post(path: Path, method: str, body: bytes) -> tuple[int, dict]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(str(path))
    s.sendall(f"POST /{method} HTTP/1.0\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    resp = http.client.HTTPResponse(s)
    resp.begin()
    out = resp.status, json.loads(resp.read())
    s.close()
    return out


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(routes):
        path = tmp_path / "p.sock"
        srv = make_server(str(path), routes)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return path
    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_server_dispatch_and_errors(serve):
    def boom(req):
        raise PluginError("no such pool")

    def crash(req):
        raise KeyError("x")

    path = serve({"A.Echo": lambda req: {"Got": req}, "A.Refuse": boom, "A.Crash": crash})
    assert post(path, "A.Echo", b'{"k": 1}') == (200, {"Got": {"k": 1}})
    assert post(path, "A.Echo", b"") == (200, {"Got": {}})
    assert post(path, "A.Refuse", b"{}") == (500, {"Err": "no such pool"})
    status, body = post(path, "A.Crash", b"{}")
    assert status == 500 and "KeyError" in body["Err"]
    assert post(path, "A.Nope", b"{}")[0] == 404
    status, body = post(path, "A.Echo", b"[1]")
    assert status == 400 and "not a JSON object" in body["Err"]
    assert post(path, "A.Echo", b"{bad")[0] == 400


def test_names_and_ids():
    assert wep_name("node-1", EP_ID) == f"node--1-libnetwork-libnetwork-{EP_ID}"
    assert profile_name(NET_ID) == "libnetwork-" + NET_ID[:12]
    assert network.host_ifname(EP_ID) == "cali" + EP_ID[:11] and len(network.host_ifname(EP_ID)) == 15
    assert network.temp_ifname(EP_ID) == "tmp" + EP_ID[:11]
    assert check_id(EP_ID, "x") == EP_ID
    for bad in ("", "../etc", "AB" * 32, "a" * 65, None, 5, "abc"):
        with pytest.raises(PluginError):
            check_id(bad, "EndpointID")


def test_network_options_as_calico_refuses_them():
    assert _option_problem({}) is None
    assert _option_problem({"com.docker.network.enable_ipv6": True}) is None
    assert _option_problem({"com.docker.network.generic": {}}) is None
    assert _option_problem({"com.docker.network.internal": False}) is None
    assert _option_problem({"com.docker.network.internal": True}) == "Calico driver does not support the flag --internal."
    assert _option_problem({"com.docker.network.generic": {"b": "1", "a": "2"}}) == \
        "Calico driver does not support the flags a, b."
    assert "flag x (1)" in _option_problem({"x": 1})


def test_container_labels():
    got = container_labels({
        "org.projectcalico.label.role": "db", "role": "ignored-by-prefixed", "tier": "web",
        "com.example/ok": "v", "bad key!": "x", "long": "v" * 64, "projectcalico.org/namespace": "evil",
        "org.projectcalico.label.bad value": "x",
    })
    assert got == {"role": "db", "tier": "web", "com.example/ok": "v"}
    assert container_labels(None) == {} and container_labels({"a": 1}) == {}


@pytest.fixture
def ctx(datastore, etcd, tmp_path):
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "ln-unit"},
                      "spec": {"cidr": POOL, "blockSize": 28, "ipipMode": "Never", "vxlanMode": "Never"}})
    c = Context({"NODENAME": "ln-unit-node", "ETCD_ENDPOINTS": etcd.endpoints,
                 "CALICO_LIBNETWORK_LOCK_DIR": str(tmp_path / "lock")})
    yield c
    c.client.close()


def test_request_pool(ctx):
    ipam = IpamDriver(ctx)
    assert ipam.request_pool({"Pool": "", "V6": False}) == {
        "PoolID": POOL_ID_V4, "Pool": "0.0.0.0/0", "Data": {"com.docker.network.gateway": "0.0.0.0/0"}}
    assert ipam.request_pool({"Pool": "198.19.121.5/26"})["PoolID"] == "ln-unit"
    with pytest.raises(PluginError, match="must match the CIDR of a configured Calico IP Pool"):
        ipam.request_pool({"Pool": "198.19.121.0/25"})
    with pytest.raises(PluginError, match="sub pool"):
        ipam.request_pool({"Pool": POOL, "SubPool": "198.19.121.0/28"})
    with pytest.raises(PluginError, match="options"):
        ipam.request_pool({"Pool": POOL, "Options": {"a": "b"}})
    with pytest.raises(PluginError, match="Invalid CIDR"):
        ipam.request_pool({"Pool": "nonsense"})


def test_request_and_release_address(ctx):
    from calico_net.ipam.check import check

    ipam = IpamDriver(ctx)
    a = ipaddress.ip_interface(ipam.request_address({"PoolID": "ln-unit"})["Address"])
    b = ipaddress.ip_interface(ipam.request_address({"PoolID": POOL_ID_V4})["Address"])
    assert a.network.prefixlen == 32 and a.ip in ipaddress.ip_network(POOL) and b.ip != a.ip
    c = ipaddress.ip_interface(ipam.request_address({"PoolID": "ln-unit", "Address": "198.19.121.40"})["Address"])
    assert str(c) == "198.19.121.40/32"
    blocks = ctx.ipam().blocks()
    attrs = [attr for blk in blocks for _, attr in blk.allocated()]
    assert len(attrs) == 3 and all(x["handle_id"].startswith("libnetwork.") for x in attrs), attrs
    assert len({x["handle_id"] for x in attrs}) == 3
    with pytest.raises(PluginError, match="gateway"):
        ipam.request_address({"PoolID": "ln-unit", "Options": {"RequestAddressType": "com.docker.network.gateway"}})
    with pytest.raises(PluginError, match="no such IPPool"):
        ipam.request_address({"PoolID": "gone"})
    for ip in (a, b, c):
        assert ipam.release_address({"PoolID": "ln-unit", "Address": str(ip.ip)}) == {}
    assert ipam.release_address({"PoolID": "ln-unit", "Address": "0.0.0.0"}) == {}
    assert ipam.release_address({"PoolID": "ln-unit", "Address": str(a.ip)}) == {}   # twice: no error
    assert check(ctx.ipam()).allocations == 0


def test_network_profile_and_refusals(ctx, datastore):
    drv = NetworkDriver(ctx)
    with pytest.raises(PluginError, match="Non-Calico IPAM"):
        drv.create_network({"NetworkID": NET_ID, "IPv4Data": [{"Pool": POOL, "Gateway": "198.19.121.1/26"}]})
    with pytest.raises(PluginError, match="--internal"):
        drv.create_network({"NetworkID": NET_ID, "Options": {"com.docker.network.internal": True}})
    drv.create_network({"NetworkID": NET_ID, "IPv4Data": [{"Pool": POOL, "Gateway": "0.0.0.0/0"}]})
    drv.create_network({"NetworkID": NET_ID, "IPv4Data": [{"Pool": POOL, "Gateway": "0.0.0.0/0"}]})  # again: fine
    prof = datastore.get("Profile", profile_name(NET_ID))
    name = profile_name(NET_ID)
    assert prof["spec"]["labelsToApply"] == {name: ""}
    assert prof["spec"]["ingress"] == [{"action": "Allow", "source": {"selector": f"has({name})"}}]
    assert prof["metadata"]["annotations"]["org.projectcalico.label.network.ID"] == NET_ID
    drv.delete_network({"NetworkID": NET_ID})
    drv.delete_network({"NetworkID": NET_ID})
    assert datastore.list("Profile")[0] == []
    with pytest.raises(PluginError, match="No address"):
        drv.create_endpoint({"NetworkID": NET_ID, "EndpointID": EP_ID, "Interface": {}})
    with pytest.raises(PluginError, match="never created"):
        drv.join({"NetworkID": NET_ID, "EndpointID": EP_ID})


class FakeDocker:
    """The Docker API's two answers (a pure stand-in: no process boundary is tested here)."""

    def __init__(self, appear_after: int) -> None:
        self.calls = 0
        self.appear_after = appear_after

    def network(self, nid):
        self.calls += 1
        if self.calls < self.appear_after:
            return {"Containers": {}}
        return {"Containers": {"ep-x": {"EndpointID": EP_ID}, "f00d" * 16: {"EndpointID": EP_ID}}}

    def container(self, cid):
        return {"Name": "/web", "Config": {"Labels": {"org.projectcalico.label.role": "db"}}}


def test_labeller_writes_labels_and_container_id_and_resumes(ctx, datastore):
    drv = NetworkDriver(ctx)
    wep = drv._endpoint(NET_ID, EP_ID, [ipaddress.ip_address("198.19.121.9")], "02:00:00:00:00:01")
    datastore.create(wep)
    lab = Labeller(ctx, FakeDocker(appear_after=3), timeout=5, interval=0.01)
    assert lab.resume() == 1   # the endpoint has no containerID yet: it is labelled again
    name = wep_name(ctx.node, EP_ID)

    def done():
        got = datastore.get("WorkloadEndpoint", name, "libnetwork")
        return got["spec"].get("containerID") == "f00d" * 16 and got

    import time
    deadline = time.monotonic() + 5
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)
    got = done()
    assert got, "labels never written"
    assert got["metadata"]["labels"]["role"] == "db"
    assert got["metadata"]["labels"]["projectcalico.org/orchestrator"] == "libnetwork"
    assert lab.resume() == 0
    # never named by Docker: gives up after its timeout, writes nothing
    datastore.delete("WorkloadEndpoint", name, "libnetwork")
    assert Labeller(ctx, FakeDocker(appear_after=10**6), timeout=0.2, interval=0.01).run(NET_ID, EP_ID) is False


def test_unreachable_etcd_is_a_clear_error(tmp_path):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    addr = port.getsockname()
    port.close()   # nothing listens there
    c = Context({"NODENAME": "n1", "ETCD_ENDPOINTS": f"http://{addr[0]}:{addr[1]}", "ETCD_TIMEOUT": "1",
                 "CALICO_LIBNETWORK_LOCK_DIR": str(tmp_path)})
    routes = build_routes(c)
    with pytest.raises(PluginError, match="etcd is unreachable"):
        routes["IpamDriver.RequestAddress"]({"PoolID": POOL_ID_V4})
    with pytest.raises(PluginError, match="etcd is unreachable"):
        routes["NetworkDriver.CreateNetwork"]({"NetworkID": NET_ID, "IPv4Data": [{"Gateway": "0.0.0.0/0"}]})
    assert routes["Plugin.Activate"]({}) == {"Implements": ["NetworkDriver", "IpamDriver"]}
    assert routes["NetworkDriver.GetCapabilities"]({})["Scope"] == "local"
    c.client.close()


def test_create_endpoint_undoes_the_veth_when_etcd_fails(ctx, datastore, monkeypatch):
    """The order of CreateEndpoint's steps and its undo (the kernel side is the FV
    test's): a failed endpoint write removes the pair it made, nothing is left."""
    from calico_net.datastore.errors import DatastoreUnavailable

    made, removed = [], []
    monkeypatch.setattr(network, "make_pair", lambda ep, mtu, mac: made.append(ep) or "02:00:00:00:00:02")
    monkeypatch.setattr(network, "remove_pair", lambda ep: removed.append(ep) or True)
    real_create = ctx.datastore.create

    def create(doc):
        if doc["kind"] == "WorkloadEndpoint":
            raise DatastoreUnavailable("cannot reach etcd: test")
        return real_create(doc)

    monkeypatch.setattr(ctx.datastore, "create", create)
    routes = build_routes(ctx)
    ctx.labeller = None
    req = {"NetworkID": NET_ID, "EndpointID": EP_ID, "Interface": {"Address": "198.19.121.7/26"}}
    with pytest.raises(PluginError, match="etcd is unreachable"):
        routes["NetworkDriver.CreateEndpoint"](req)
    assert made == [EP_ID] and removed == [EP_ID]
    assert datastore.list("WorkloadEndpoint")[0] == []
    monkeypatch.setattr(ctx.datastore, "create", real_create)
    resp = routes["NetworkDriver.CreateEndpoint"](req)
    assert resp == {"Interface": {"MacAddress": "02:00:00:00:00:02"}}
    wep = datastore.get("WorkloadEndpoint", wep_name(ctx.node, EP_ID), "libnetwork")
    assert wep["spec"]["ipNetworks"] == ["198.19.121.7/32"] and wep["spec"]["mac"] == "02:00:00:00:00:02"
    assert wep["spec"]["profiles"] == [profile_name(NET_ID)]
    # a Docker-chosen MAC is not answered back (Docker refuses a changed MAC)
    routes["NetworkDriver.DeleteEndpoint"]({"NetworkID": NET_ID, "EndpointID": EP_ID})
    req["Interface"]["MacAddress"] = "02:00:00:00:00:09"
    assert routes["NetworkDriver.CreateEndpoint"](req) == {"Interface": {}}
    routes["NetworkDriver.DeleteEndpoint"]({"NetworkID": NET_ID, "EndpointID": EP_ID})
    routes["NetworkDriver.DeleteEndpoint"]({"NetworkID": NET_ID, "EndpointID": EP_ID})   # twice: no error
    assert datastore.list("WorkloadEndpoint")[0] == []
