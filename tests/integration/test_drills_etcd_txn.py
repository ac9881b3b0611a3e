"""Drill: an etcd transaction that committed but whose reply never reached the client.

A small TCP proxy (`tcp_proxy.LostReplyProxy`, on 127.0.0.1) sits between
the client and the session's etcd. It forwards every byte, until the client sends
a request carrying a marker string (a value only the drilled write holds): from then
on it forwards that request to etcd but drops whatever etcd sends back, waits until
etcd's revision shows the write committed, and cuts the connection. The client sees
a failed call for a write that did happen.

The client is given two endpoints, the proxy first and etcd itself second, as a
client of a multi-member cluster is: the transport (`etcd_grpc.Channels.call`)
fails over and sends the same request again to the other endpoint. These tests
show that the re-send neither gives an IPAM handle a second address
(`IPAM.auto_assign`) nor makes `Datastore.create` report its own resource as
already existing, and what a caller with one endpoint sees.

Every test asserts the proxy really dropped a reply after etcd committed, so none
can pass because the drill did not happen.
"""
from __future__ import annotations

import ipaddress
import uuid

import pytest
from tcp_proxy import LostReplyProxy

from calico_net.datastore import Datastore
from calico_net.datastore.errors import DatastoreUnavailable, ResourceAlreadyExists
from calico_net.datastore.etcd import EtcdClient, EtcdConfig
from calico_net.ipam import IPAM
from calico_net.ipam.check import check as ipam_check


# This module's addresses: 198.18.186.0/24 (a pool only in etcd, nothing is routed).
POOL = "198.18.186.0/24"
NODE = "drl-txn-node"
# The client's per-call deadline: a reply that never comes costs at most this much.
CALL_TIMEOUT = 5.0


def _upstream(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def drill(etcd, etcd_client, datastore):
    """(make_proxy, direct datastore): proxies are closed, the keyspace emptied."""
    made: list[LostReplyProxy] = []
    clients: list[EtcdClient] = []
    start = {"rev": 0}

    def make(marker: str, failover: bool = True) -> tuple[LostReplyProxy, EtcdClient]:
        start["rev"] = etcd_client.revision()
        proxy = LostReplyProxy(_upstream(etcd.endpoints), marker.encode(),
                               lambda: etcd_client.revision() > start["rev"])
        made.append(proxy)
        endpoints = [proxy.url, etcd.endpoints] if failover else [proxy.url]
        client = EtcdClient(EtcdConfig(endpoints=endpoints, timeout=CALL_TIMEOUT))
        clients.append(client)
        return proxy, client

    try:
        yield make, datastore
    finally:
        for c in clients:
            c.close()
        for p in made:
            p.close()
        etcd_client.delete_prefix("/calico/")


def _pool() -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "drl-txn"},
            "spec": {"cidr": POOL, "blockSize": 26, "ipipMode": "Never", "vxlanMode": "Never",
                     "natOutgoing": False}}


def _node() -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": NODE}, "spec": {}}


def _wep(ip: str) -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": {"name": f"{NODE}-k8s-drill-eth0", "namespace": "default",
                         "labels": {"projectcalico.org/namespace": "default",
                                    "projectcalico.org/orchestrator": "k8s"}},
            "spec": {"node": NODE, "orchestrator": "k8s", "workload": "drill", "endpoint": "eth0",
                     "interfaceName": "cali0drill000", "ipNetworks": [f"{ip}/32"], "profiles": []}}


def _netset(marker: str) -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
            "metadata": {"name": "drl-txn-set", "labels": {"drill": marker}},
            "spec": {"nets": ["198.18.186.128/25"]}}


def _assert_drilled(proxy: LostReplyProxy) -> None:
    assert proxy.fired.is_set(), "the marked request never went through the proxy: no drill happened"
    assert proxy.cut.is_set() and proxy.dropped_bytes > 0, "no reply was dropped after the commit"


def test_assign_whose_reply_is_lost_allocates_one_address(drill):
    """The re-sent block transaction fails its compare; IPAM recognises its own
    committed write (the block and handle hold exactly what it wrote) instead of
    taking it for a conflict and assigning the handle a second address."""
    make, direct = drill
    direct.create(_pool())
    direct.create(_node())
    marker = "drl-" + uuid.uuid4().hex
    proxy, client = make(marker)
    ipam = IPAM(client, Datastore(client))
    handle = "k8s-pod-network.drill-" + uuid.uuid4().hex[:12]
    v4, v6 = ipam.auto_assign(handle, NODE, num_v4=1, attrs={"drill": marker})
    _assert_drilled(proxy)
    assert v6 == [] and len(v4) == 1 and ipaddress.ip_address(str(v4[0])) in ipaddress.ip_network(POOL)
    # read back over a connection of its own, not the drilled client
    check_ipam = IPAM(direct.client, direct)
    held = check_ipam.ips_by_handle(handle)
    print(f"handle {handle}: returned {v4}, etcd holds {held}, handle record {check_ipam.get_handle(handle)}")
    assert held == v4, f"the handle holds {held}, the caller was given {v4}"
    direct.create(_wep(str(v4[0])))
    report = ipam_check(check_ipam)
    assert report.clean, report.to_json()


def test_create_whose_reply_is_lost_succeeds_once(drill):
    """The re-sent create fails its "does not exist" compare; the key holds exactly
    the value this create wrote (its own fresh uid), so create succeeds instead of
    reporting its own resource as already existing."""
    make, direct = drill
    marker = "drl-" + uuid.uuid4().hex
    proxy, client = make(marker)
    try:
        created = Datastore(client).create(_netset(marker))
        outcome = "returned"
    except ResourceAlreadyExists as e:
        created, outcome = None, f"raised ResourceAlreadyExists: {e}"
    _assert_drilled(proxy)
    print(f"Datastore.create with a lost reply {outcome}")
    docs, _ = direct.list("GlobalNetworkSet")
    assert [d["metadata"]["name"] for d in docs] == ["drl-txn-set"]
    assert docs[0]["metadata"]["labels"] == {"drill": marker}
    assert created is not None, f"create of a resource it did create {outcome}"
    assert created["metadata"]["uid"] == docs[0]["metadata"]["uid"]


def test_one_endpoint_reports_the_lost_reply_as_unavailable_and_the_handle_cleans_up(drill):
    """With a single endpoint there is no re-send: the caller gets DatastoreUnavailable
    (the outcome is unknown), never a false "already exists" or a second address; the
    committed address is found and freed through its handle, as the CNI plugin does
    after a failed ADD, and `ipam check` is clean afterwards."""
    make, direct = drill
    direct.create(_pool())
    direct.create(_node())
    marker = "drl-" + uuid.uuid4().hex
    proxy, client = make(marker, failover=False)
    ipam = IPAM(client, Datastore(client))
    handle = "k8s-pod-network.drill-" + uuid.uuid4().hex[:12]
    with pytest.raises(DatastoreUnavailable) as err:
        ipam.auto_assign(handle, NODE, num_v4=1, attrs={"drill": marker})
    _assert_drilled(proxy)
    print(f"auto_assign with one endpoint and a lost reply: {err.value}")
    check_ipam = IPAM(direct.client, direct)
    held = check_ipam.ips_by_handle(handle)
    assert len(held) == 1, f"the committed assignment should hold one address, holds {held}"
    report = ipam_check(check_ipam)
    assert [leak.ip for leak in report.allocations_without_endpoints] == [str(held[0])]
    freed = check_ipam.release_by_handle(handle)
    assert freed == held
    assert check_ipam.ips_by_handle(handle) == []
    assert ipam_check(check_ipam).clean
