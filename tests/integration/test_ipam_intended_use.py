"""IPAM's intended use (Calico's IntendedUse: Workload / Tunnel against a pool's
`allowedUses`) and unusable IPPools, against the session's real etcd.

* A Tunnel-only pool gives a node its tunnel addresses (through `addrs.reconcile`,
  as the agent does) and never a workload address; a Workload-only pool the reverse;
  a pool without `allowedUses` gives both. The CNI IPAM plugin, run as a runtime
  runs it, assigns for Workload.
* An IPPool key holding garbage (bytes that are not JSON, a pool without
  `spec.cidr`, a spec that is not an object) beside a good pool: workload assignment
  and the tunnel address pass still work from the good one; a request naming only
  the bad pool fails with an error naming it; the bad key is logged once.

Addresses: pools in 198.19.208.0/21, nodes at 198.19.215.x.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from calico_net.agent.encap.addrs import reconcile
from calico_net.ipam import IPAM
from calico_net.ipam.errors import NoPoolsError

net = ipaddress.ip_network
ip = ipaddress.ip_address

POOL_PREFIX = "/calico/resources/v3/projectcalico.org/ippools/"
TUNNEL_NET, WORKLOAD_NET, BOTH_NET, BAD_NET = (net("198.19.208.0/24"), net("198.19.209.0/24"),
                                              net("198.19.210.0/24"), net("198.19.211.0/24"))
VENV_BIN = Path(sys.executable).parent


def pool(name, cidr, **spec):
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"cidr": str(cidr), "blockSize": 28, **spec}}


def node(name, addr="198.19.215.1/24"):
    return {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": name},
            "spec": {"bgp": {"ipv4Address": addr}}}


@pytest.fixture
def ipam(etcd_client, datastore):
    return IPAM(etcd_client, datastore)


def workload_ips(ipam, n, node_name="n1", **kw):
    return [ipam.auto_assign(f"wl-{uuid.uuid4().hex[:8]}", node_name, **kw)[0][0] for _ in range(n)]


def test_tunnel_only_pool_gives_tunnel_addresses_and_no_workload_address(datastore, ipam):
    datastore.create(node("n1"))
    datastore.create(pool("tunnel-only", TUNNEL_NET, ipipMode="Always", vxlanMode="Never",
                          allowedUses=["Tunnel"]))
    out = reconcile(datastore, ipam, "n1")
    assert ip(out["ipv4IPIPTunnelAddr"]) in TUNNEL_NET
    a = ipam.get_assignment(out["ipv4IPIPTunnelAddr"])
    assert a.handle_id == "ipip-tunnel-addr-n1" and a.attributes["type"] == "ipipTunnelAddress"

    # denied: a workload has no pool (by default, and naming the pool)
    with pytest.raises(NoPoolsError, match="no enabled IPv4 IPPool allows automatic Workload assignment"):
        ipam.auto_assign("wl-denied", "n1")
    with pytest.raises(NoPoolsError, match=r'"198.19.208.0/24" \(IPPool "tunnel-only"\) is not for automatic '
                                           r"Workload assignment \(allowedUses \[Tunnel\]\)"):
        ipam.auto_assign("wl-denied", "n1", pools_v4=[str(TUNNEL_NET)])
    with pytest.raises(NoPoolsError, match=r'"tunnel-only" \(198.19.208.0/24\) is not for automatic '
                                           r"Workload assignment \(allowedUses \[Tunnel\]\)"):
        ipam.auto_assign("wl-denied", "n1", pools_v4=["tunnel-only"])
    assert ipam.ips_by_handle("wl-denied") == []

    # allowed, beside it: a Workload-only pool serves workloads; the tunnel address stays
    datastore.create(pool("workload-only", WORKLOAD_NET, allowedUses=["Workload"]))
    got = workload_ips(ipam, 20)  # more than one /28 block: claims go to the right pool too
    assert all(a in WORKLOAD_NET for a in got), got
    assert reconcile(datastore, ipam, "n1")["ipv4IPIPTunnelAddr"] == out["ipv4IPIPTunnelAddr"]
    assert all(b.cidr.subnet_of(WORKLOAD_NET) for b in ipam.blocks() if b.in_use > 1)


def test_workload_only_pool_gives_workload_addresses_and_no_tunnel_address(datastore, ipam):
    datastore.create(node("n1"))
    datastore.create(pool("workload-only", WORKLOAD_NET, vxlanMode="Always", allowedUses=["Workload"]))
    out = reconcile(datastore, ipam, "n1")
    assert out["ipv4VXLANTunnelAddr"] is None and out["vxlanTunnelMACAddr"] is None
    assert ipam.ips_by_handle("vxlan-tunnel-addr-n1") == []
    assert all(a in WORKLOAD_NET for a in workload_ips(ipam, 3))
    # the tunnel use, asked of IPAM directly and naming the pool, is refused with its reason
    with pytest.raises(NoPoolsError, match=r'"workload-only" \(198.19.209.0/24\) is not for automatic Tunnel '
                                           r"assignment \(allowedUses \[Workload\]\)"):
        ipam.auto_assign("t", "n1", pools_v4=["workload-only"], intended_use="Tunnel")
    with pytest.raises(NoPoolsError, match="allows automatic Tunnel assignment"):
        ipam.auto_assign("t", "n1", intended_use="Tunnel")

    # allowed: a Tunnel pool with VXLAN appears -> the node gets its VXLAN address there
    datastore.create(pool("tunnel-only", TUNNEL_NET, vxlanMode="Always", allowedUses=["Tunnel"]))
    out = reconcile(datastore, ipam, "n1")
    assert ip(out["ipv4VXLANTunnelAddr"]) in TUNNEL_NET and out["vxlanTunnelMACAddr"]


def test_unset_allowed_uses_gives_both(datastore, ipam):
    datastore.create(node("n1"))
    datastore.create(pool("both", BOTH_NET, ipipMode="CrossSubnet"))
    out = reconcile(datastore, ipam, "n1")
    assert ip(out["ipv4IPIPTunnelAddr"]) in BOTH_NET
    got = workload_ips(ipam, 3)
    assert all(a in BOTH_NET for a in got) and ip(out["ipv4IPIPTunnelAddr"]) not in got
    # listing both uses explicitly is the same
    datastore.delete("IPPool", "both")
    reconcile(datastore, ipam, "n1")
    datastore.create(pool("both-listed", WORKLOAD_NET, ipipMode="Always", allowedUses=["Workload", "Tunnel"]))
    assert ip(reconcile(datastore, ipam, "n1")["ipv4IPIPTunnelAddr"]) in WORKLOAD_NET
    assert all(a in WORKLOAD_NET for a in workload_ips(ipam, 2))


def test_the_cni_ipam_plugin_assigns_for_workloads(etcd, datastore, ipam, tmp_path):
    """The plugin as a runtime runs it: only the pool that allows Workload is used."""
    datastore.create(pool("a-tunnel-only", TUNNEL_NET, allowedUses=["Tunnel"]))  # first by name
    datastore.create(pool("b-workload", WORKLOAD_NET, allowedUses=["Workload"]))
    conf = {"cniVersion": "1.0.0", "name": "calico", "type": "calico",
            "etcd_endpoints": etcd.endpoints, "nodename": "cni-use-node",
            "log_file_path": str(tmp_path / "cni.log"), "ipam": {"type": "calico-ipam"}}

    def run(command, conf):
        env = etcd.env()
        env.pop("ETCD_ENDPOINTS", None)
        env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": "intendeduse01", "CNI_NETNS": "/dev/null",
                    "CNI_IFNAME": "eth0", "CNI_ARGS": "", "CNI_PATH": "/usr/lib/cni"})
        p = subprocess.run([str(VENV_BIN / "calico-ipam")], input=json.dumps(conf), env=env,
                           capture_output=True, text=True, timeout=120)
        return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None, p.stderr

    try:
        rc, res, err = run("ADD", conf)
        assert rc == 0, (res, err)
        [addr] = res["ips"]
        assert ip(addr["address"].split("/")[0]) in WORKLOAD_NET
        # naming the Tunnel-only pool is refused, with the pool and its allowedUses
        named = dict(conf, ipam={"type": "calico-ipam", "ipv4_pools": ["a-tunnel-only"]})
        assert run("DEL", conf)[0] == 0
        rc, res, _ = run("ADD", named)
        assert rc != 0 and "a-tunnel-only" in res["msg"] and "allowedUses [Tunnel]" in res["msg"], res
    finally:
        run("DEL", conf)
    assert sum(b.in_use for b in ipam.blocks()) == 0


GARBAGE = {
    "not-json": b"\xff{this is not json",
    "no-cidr": json.dumps(pool("x", BAD_NET) | {"spec": {"ipipMode": "Always", "vxlanMode": "Always"}}).encode(),
    "spec-not-object": json.dumps(pool("x", BAD_NET) | {"spec": ["198.19.211.0/24"]}).encode(),
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_a_garbage_pool_beside_a_good_one_breaks_nothing(kind, etcd_client, datastore, caplog):
    name = f"bad-{kind}-{uuid.uuid4().hex[:6]}"  # (unique: the log-once memory is per process)
    datastore.create(node("n1"))
    datastore.create(pool("good", BOTH_NET, vxlanMode="Always"))
    warm = IPAM(etcd_client, datastore)
    first = workload_ips(warm, 1)[0]  # a view cached before the garbage appears
    etcd_client.put(POOL_PREFIX + name, GARBAGE[kind])

    with caplog.at_level(logging.WARNING):
        # a client that already had a view, and new ones (each reads the pools afresh)
        got = workload_ips(warm, 2) + workload_ips(IPAM(etcd_client, datastore), 2)
        got += workload_ips(IPAM(etcd_client, datastore), 1, node_name="n2")
        out = reconcile(datastore, IPAM(etcd_client, datastore), "n1")
        again = reconcile(datastore, IPAM(etcd_client, datastore), "n1")
        with pytest.raises(NoPoolsError, match=f'requested pool "{name}" cannot be used: IPPool key '
                                               f"{POOL_PREFIX}{name} is not a usable pool"):
            IPAM(etcd_client, datastore).auto_assign("named-bad", "n1", pools_v4=[name])
    assert all(a in BOTH_NET for a in [first, *got])
    assert len(set(got)) == 5 and first not in got
    assert ip(out["ipv4VXLANTunnelAddr"]) in BOTH_NET and again == out
    assert IPAM(etcd_client, datastore).ips_by_handle("named-bad") == []
    # the good pool alone, named, still works; every-pool listing skips the bad one
    assert workload_ips(IPAM(etcd_client, datastore), 1, pools_v4=["good"])[0] in BOTH_NET
    assert [p.name for p in IPAM(etcd_client, datastore).pools()] == ["good"]
    warnings = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert len(warnings) == 1, warnings


def test_only_garbage_pools_say_so(etcd_client, datastore):
    name = f"bad-only-{uuid.uuid4().hex[:6]}"
    etcd_client.put(POOL_PREFIX + name, b"[1, 2]")
    with pytest.raises(NoPoolsError, match=f"no IPv4 IPPool is configured .1 IPPool.s. skipped as invalid: "
                                           f"IPPool key {POOL_PREFIX}{name} is not a usable pool"):
        IPAM(etcd_client, datastore).auto_assign("h", "n1")
    # allowed: the same request once a good pool exists
    datastore.create(pool("good", BOTH_NET))
    assert IPAM(etcd_client, datastore).auto_assign("h", "n1")[0][0] in BOTH_NET
