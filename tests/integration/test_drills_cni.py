"""Drill: etcd lost between the IPAM assignment and the WorkloadEndpoint write of a
CNI ADD (issue 21).

The installed `calico` plugin runs as a runtime runs it (env CNI_*, network config
on stdin, a real network namespace ``cnt6-cni-0``) against the session's etcd. The
seam is etcd itself: the test watches the IPAM handle keys, and the moment the
plugin's assignment commits (block and handle are one transaction) it freezes etcd
with SIGSTOP, so every later request of the ADD - the profile read, the endpoint
write - meets a silent etcd. etcd is frozen for HOLD_S, more than twice the plugin's
request timeout (5 s), then thawed: the endpoint write and the undo's first try at
releasing the address both fail, and etcd returns while the undo is retrying.

What it proves: the ADD fails with CNI error JSON naming etcd, leaves no veth and no
endpoint, and its rollback releases the address once etcd answers again - the
handle is empty and `calicoctl ipam check` is clean - without a DEL from the runtime
(`plugin.UNDO_RETRY_S`: the undo retries while etcd cannot be reached).

A second drill loses the reply of the endpoint write itself (a proxy forwards the
write, drops everything that comes back after it and cuts the connection once etcd
shows the endpoint): the ADD fails, and the undo still removes the endpoint before it frees
the address - no endpoint is left for an address a later ADD could be given.
"""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from tcp_proxy import LostReplyProxy

pytestmark = pytest.mark.root

VENV_BIN = Path(sys.executable).parent
NS = "cnt6-cni-0"
NODE = "cnt6-cni-node"
CID = "cnt6cnidrill01"
POOL = "198.18.188.0/26"
# Longer than the plugin's 5 s request timeout twice over: the endpoint write fails,
# and so does the undo's first try at releasing the address; its retries carry it.
HOLD_S = 12.0


def _veth(cid: str) -> str:
    return "cali" + hashlib.sha1(f"default.{cid}".encode()).hexdigest()[:11]


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def _clean() -> None:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    if _link_exists(_veth(CID)):
        subprocess.run(["ip", "link", "del", _veth(CID)], capture_output=True)


@pytest.fixture
def netns() -> Iterator[str]:
    _clean()
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        yield NS
    finally:
        _clean()


def _cni(etcd, tmp: Path, command: str, endpoints: str | None = None) -> tuple[int, Any, str]:
    conf = {"cniVersion": "1.0.0", "name": "cnt6net", "type": "calico",
            "etcd_endpoints": endpoints or etcd.endpoints, "nodename": NODE,
            "log_level": "debug", "log_file_path": str(tmp / "cni.log"),
            "ipam": {"type": "calico-ipam"}}
    env = etcd.env()
    env.pop("ETCD_ENDPOINTS", None)
    env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": CID, "CNI_NETNS": f"/var/run/netns/{NS}",
                "CNI_IFNAME": "eth0", "CNI_ARGS": "", "CNI_PATH": "/usr/lib/cni"})
    p = subprocess.run([str(VENV_BIN / "calico")], input=json.dumps(conf), env=env,
                       capture_output=True, text=True, timeout=180)
    out = p.stdout.strip()
    try:
        doc = json.loads(out) if out else None
    except ValueError:
        doc = out
    return p.returncode, doc, p.stderr


class FreezeOnAssign:
    """Freezes etcd (SIGSTOP) on the first IPAM handle write, thaws it `hold` s later."""

    def __init__(self, etcd, client, hold: float) -> None:
        self.etcd = etcd
        self.hold = hold
        self.frozen_with: list[str] = []
        self.error: BaseException | None = None
        self._watch = client.watch_prefix("/calico/ipam/v2/handle/", client.revision() + 1)
        self._thawed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for events in self._watch:
                puts = [e for e in events if e.type == "PUT"]
                if not puts:
                    continue
                self.etcd.proc.send_signal(signal.SIGSTOP)
                self.frozen_with = [e.kv.key for e in puts]
                threading.Event().wait(self.hold)  # the outage's length is the drill
                self.etcd.proc.send_signal(signal.SIGCONT)
                self._thawed.set()
                return
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            self._thawed.set()

    def wait_thawed(self, timeout: float) -> bool:
        return self._thawed.wait(timeout)

    def close(self) -> None:
        self.etcd.proc.send_signal(signal.SIGCONT)  # never leave the session's etcd frozen
        self._watch.cancel()
        self._thread.join(10)


def test_cni_add_with_etcd_cut_after_ipam_rolls_back_the_address(etcd, datastore, netns, tmp_path):
    from calico_net.ipam import IPAM

    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "cnt6-pool"},
                      "spec": {"cidr": POOL, "blockSize": 28, "natOutgoing": False}})
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": NODE},
                      "spec": {}})
    client = etcd.client()
    freezer = FreezeOnAssign(etcd, client, HOLD_S)
    try:
        rc, out, err = _cni(etcd, tmp_path, "ADD")
        assert freezer.wait_thawed(60), "etcd was never thawed"
    finally:
        freezer.close()
    log = (tmp_path / "cni.log").read_text() if (tmp_path / "cni.log").exists() else ""
    assert freezer.error is None, freezer.error
    assert freezer.frozen_with, f"the ADD never assigned an address (rc {rc}: {out})\n{log[-3000:]}"
    print(f"etcd frozen on {freezer.frozen_with}; ADD rc {rc}: {out}")
    # the ADD failed, clearly, with CNI error JSON about etcd
    assert rc != 0 and isinstance(out, dict), f"ADD did not fail with CNI error JSON: rc {rc}, {out!r}, {err}"
    text = (out.get("msg", "") + " " + str(out.get("details", ""))).lower()
    assert out.get("code") == 11 and "etcd" in text, out
    # nothing half-made is left: no veth, no endpoint ...
    assert not _link_exists(_veth(CID)), "the failed ADD left its veth"
    weps, _ = datastore.list("WorkloadEndpoint")
    assert weps == [], f"the failed ADD left an endpoint: {weps}"
    # ... and the rollback released the address once etcd was back, with no DEL
    ipam = IPAM(client, datastore)
    handles = [k.rsplit("/", 1)[-1] for k in freezer.frozen_with]
    held = {h: ipam.ips_by_handle(h) for h in handles}
    assert all(not ips for ips in held.values()), f"the address is still held after the rollback: {held}\n{log[-3000:]}"
    p = subprocess.run([str(VENV_BIN / "calicoctl"), "ipam", "check"], env=etcd.env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "IPAM is consistent." in p.stdout, p.stdout + p.stderr
    # the runtime's DEL afterwards finds nothing left and succeeds
    rc, out, _ = _cni(etcd, tmp_path, "DEL")
    assert rc == 0, out
    client.close()


# the endpoint write: `"interfaceName"` is in no other request of an ADD
ENDPOINT_MARK = b'"interfaceName"'


def test_cni_add_whose_endpoint_write_reply_is_lost_leaves_no_endpoint(etcd, datastore, netns, tmp_path):
    """The endpoint write commits, its reply is lost: the ADD fails (code 11), and the
    undo removes the endpoint it cannot know it made before it frees the address -
    no endpoint for a released address (which a later ADD could get: two endpoints,
    one address)."""
    from calico_net.ipam import IPAM

    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "cnt6-pool"},
                      "spec": {"cidr": POOL, "blockSize": 28, "natOutgoing": False}})
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": NODE},
                      "spec": {}})
    host, port = etcd.endpoints.rsplit("//", 1)[1].rsplit(":", 1)

    def committed() -> bool:
        weps, _ = datastore.list("WorkloadEndpoint")
        return bool(weps)

    proxy = LostReplyProxy((host, int(port)), ENDPOINT_MARK, committed)
    try:
        rc, out, err = _cni(etcd, tmp_path, "ADD", endpoints=proxy.url)
    finally:
        proxy.close()
    log = (tmp_path / "cni.log").read_text() if (tmp_path / "cni.log").exists() else ""
    assert proxy.fired.is_set() and proxy.cut.is_set(), f"the endpoint write never went through the proxy: {out}"
    print(f"endpoint write committed, reply lost; ADD rc {rc}: {out}")
    assert rc != 0 and isinstance(out, dict) and out.get("code") == 11, (rc, out, err)
    assert not _link_exists(_veth(CID)), "the failed ADD left its veth"
    weps, _ = datastore.list("WorkloadEndpoint")
    assert weps == [], f"the failed ADD left its endpoint (for an address it released): {weps}\n{log[-3000:]}"
    client = etcd.client()
    try:
        held = IPAM(client, datastore).ips_by_handle(f"cnt6net.{CID}")
    finally:
        client.close()
    assert held == [], f"the address is still held: {held}"
    p = subprocess.run([str(VENV_BIN / "calicoctl"), "ipam", "check"], env=etcd.env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "IPAM is consistent." in p.stdout, p.stdout + p.stderr
