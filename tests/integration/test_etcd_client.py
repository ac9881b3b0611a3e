"""The etcd client against a real etcd: ranges, transactions, watch, fail-over, config."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from etcd_server import start_etcd, stop_etcd

from calico_net.datastore import etcd as etcd_mod
from calico_net.datastore.errors import DatastoreError, DatastoreUnavailable
from calico_net.datastore.etcd import (
    EtcdClient,
    EtcdConfig,
    WatchCompacted,
    cmp_mod_revision,
    op_get,
    op_put,
    prefix_end,
)
from calico_net.datastore.etcdpb import rpc_pb2 as pb


def test_prefix_end():
    assert prefix_end("/calico/") == b"/calico0"
    assert prefix_end(b"a\xff") == b"b"


def test_put_get_prefix_and_revision(etcd_client):
    r1 = etcd_client.put("/calico/t/a", "1")
    etcd_client.put("/calico/t/b", "2")
    etcd_client.put("/calico/u/c", "3")
    kvs, rev = etcd_client.get_prefix("/calico/t/")
    assert [kv.key for kv in kvs] == ["/calico/t/a", "/calico/t/b"]
    assert [kv.value for kv in kvs] == [b"1", b"2"]
    assert rev >= r1 + 2
    assert etcd_client.get("/calico/t/a").mod_revision == r1
    assert etcd_client.get("/calico/missing") is None


def test_range_pages_and_read_prefix(etcd_client):
    # A paged reader asks for the next page from the last key of the one before; the
    # pages together are the whole prefix, for keys that are not ASCII and values
    # that look like JSON. read_prefix pages the same keys at one revision.
    keys = [f"/calico/rt/k{i:02d}-{chr(0xe9)}?>" for i in range(7)]
    for i, k in enumerate(keys):
        etcd_client.put(k, '{"key":"x","more":true}' * (i + 1))
    start, end = b"/calico/rt/", prefix_end("/calico/rt/")
    seen = []
    while True:
        kvs, rev, more = etcd_client.get_range(start, end, limit=3)
        seen += [kv.key for kv in kvs]
        if not more:
            break
        start = kvs[-1].key.encode() + b"\0"
    assert seen == keys
    rev, pages = etcd_client.read_prefix("/calico/rt/", 4)
    pages = list(pages)
    assert [kv.key for page in pages for kv in page] == keys and [len(p) for p in pages] == [1, 4, 2]
    assert rev == etcd_client.revision()
    assert etcd_client.get_range(b"/calico/rt-none/", prefix_end("/calico/rt-none/")) == ([], rev, False)
    assert etcd_client.read_prefix("/calico/rt-none/", 4) [0] == rev


def test_read_prefix_pages_grow(etcd_client, monkeypatch):
    # After the second page each page asks for twice the keys of the one before (etcd
    # counts the rest of the range on every page, so few pages cost it less), up to
    # what PAGE_BYTES holds at the size per key seen so far.
    for i in range(40):
        etcd_client.put(f"/calico/pg/k{i:02d}", "v" * 10)
    _, pages = etcd_client.read_prefix("/calico/pg/", 4)
    assert [len(p) for p in pages] == [1, 4, 8, 16, 11]
    # 14 bytes of key and 10 of value per key: 100 bytes hold 4 keys
    monkeypatch.setattr(etcd_mod, "PAGE_BYTES", 100)
    rev, pages = etcd_client.read_prefix("/calico/pg/", 4)
    pages = list(pages)
    assert [len(p) for p in pages] == [1] + [4] * 9 + [3]
    assert [kv.key for p in pages for kv in p] == [f"/calico/pg/k{i:02d}" for i in range(40)]


def test_range_pages_equal_one_read(etcd_client):
    # The snapshot's pages: the same keys, values, revisions as one read of the
    # whole prefix, page for page. Keys and values with bytes that are not ASCII,
    # a value that is empty, one that is long.
    keys = [f"/calico/gr/k{i:02d}-{chr(0xe9)}" for i in range(8)]
    for i, k in enumerate(keys):
        etcd_client.put(k, "" if i == 3 else "v" * (300 * i) + '{"json":true}')
    etcd_client.put(keys[0], "again")      # version 2, create != mod revision
    start, end = b"/calico/gr/", prefix_end("/calico/gr/")
    seen = []
    while True:
        kvs, _, more = etcd_client.get_range(start, end, limit=3)
        seen += kvs
        if not more:
            break
        start = kvs[-1].key.encode() + b"\0"
    assert (seen, etcd_client.revision()) == etcd_client.get_prefix("/calico/gr/")
    assert [kv.key for kv in seen] == keys
    assert seen[0].version == 2 and seen[0].create_revision < seen[0].mod_revision
    assert seen[3].value == b""
    rev = etcd_client.revision()
    assert etcd_client.get_range(b"/calico/gr-none/", prefix_end("/calico/gr-none/")) == ([], rev, False)


def test_range_at_a_revision_and_after_compaction(etcd_client):
    r1 = etcd_client.put("/calico/gc/k", "1")
    etcd_client.put("/calico/gc/k", "2")
    old = etcd_client.get_range("/calico/gc/", prefix_end("/calico/gc/"), revision=r1)
    assert [kv.value for kv in old[0]] == [b"1"]
    r3 = etcd_client.put("/calico/gc/k", "3")
    etcd_client.compact(r3)
    with pytest.raises(DatastoreError, match="compacted"):
        etcd_client.get_range("/calico/gc/", prefix_end("/calico/gc/"), revision=r1)


def test_range_fails_over_and_names_unreachable_endpoints(etcd):
    client = EtcdClient(EtcdConfig(endpoints=["http://127.0.0.1:1", etcd.endpoints], timeout=2))
    client.put("/calico/gf/k", "v")
    kvs, _, _ = client.get_range("/calico/gf/", prefix_end("/calico/gf/"))
    assert [kv.value for kv in kvs] == [b"v"]
    client.close()
    dead = EtcdClient(EtcdConfig(endpoints=["http://127.0.0.1:1", "http://127.0.0.1:2"], timeout=1))
    with pytest.raises(DatastoreUnavailable) as err:
        dead.get_range("/calico/", prefix_end("/calico/"))
    assert "127.0.0.1:1" in str(err.value) and "127.0.0.1:2" in str(err.value)
    dead.close()


def test_txn_compare_and_swap(etcd_client):
    key = "/calico/t/cas"
    ok = etcd_client.txn([cmp_mod_revision(key, 0)], [op_put(key, "v1")])
    assert ok.succeeded
    again = etcd_client.txn([cmp_mod_revision(key, 0)], [op_put(key, "v2")], [op_get(key)])
    assert not again.succeeded
    assert again.range_kvs(0)[0].value == b"v1"
    rev = etcd_client.get(key).mod_revision
    assert etcd_client.txn([cmp_mod_revision(key, rev)], [op_put(key, "v3")]).succeeded
    assert not etcd_client.txn([cmp_mod_revision(key, rev)], [op_put(key, "v4")]).succeeded
    assert etcd_client.get(key).value == b"v3"


def test_watch_sees_puts_and_deletes_from_revision(etcd_client):
    start = etcd_client.put("/calico/w/x", "1")
    etcd_client.put("/calico/w/y", "2")
    etcd_client.delete("/calico/w/x")
    watch = etcd_client.watch_prefix("/calico/w/", start)
    seen = []
    for batch in watch:
        seen.extend((e.type, e.kv.key) for e in batch)
        if len(seen) >= 3:
            watch.cancel()
            break
    assert seen == [("PUT", "/calico/w/x"), ("PUT", "/calico/w/y"), ("DELETE", "/calico/w/x")]


def test_watch_cancel_from_another_thread(etcd_client):
    watch = etcd_client.watch_prefix("/calico/quiet/", etcd_client.revision() + 1)
    done = threading.Event()

    def run():
        for _ in watch:
            pass
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    threading.Timer(0.3, watch.cancel).start()
    assert done.wait(5), "cancel() did not end the watch"


def test_watch_from_compacted_revision_raises(etcd_client):
    first = etcd_client.put("/calico/c/k", "1")
    last = etcd_client.put("/calico/c/k", "2")
    etcd_client.put("/calico/c/k", "3")
    etcd_client.compact(last)
    with pytest.raises(WatchCompacted) as err:
        for _ in etcd_client.watch_prefix("/calico/c/", first):
            pass
    assert err.value.compact_revision >= last


def test_failover_to_second_endpoint(etcd):
    cfg = EtcdConfig(endpoints=["http://127.0.0.1:1", etcd.endpoints], timeout=2)
    client = EtcdClient(cfg)
    client.put("/calico/f/k", "v")
    assert client.get("/calico/f/k").value == b"v"
    client.delete_prefix("/calico/f/")


def test_watch_fails_over_to_second_endpoint(etcd):
    client = EtcdClient(EtcdConfig(endpoints=["http://127.0.0.1:1", etcd.endpoints], timeout=2))
    start = client.put("/calico/fw/k", "v")
    watch = client.watch_prefix("/calico/fw/", start)
    for batch in watch:
        assert [(e.type, e.kv.key) for e in batch] == [("PUT", "/calico/fw/k")]
        watch.cancel()
    client.close()


def test_watch_read_timeout_ends_a_silent_watch(etcd_client):
    watch = etcd_client.watch_prefix("/calico/silent/", etcd_client.revision() + 1, read_timeout=0.5)
    with pytest.raises(DatastoreUnavailable, match="timed out"):
        for _ in watch:
            pass


def test_unreachable_names_every_endpoint():
    client = EtcdClient(EtcdConfig(endpoints=["http://127.0.0.1:1", "http://127.0.0.1:2"], timeout=1))
    with pytest.raises(DatastoreUnavailable) as err:
        client.get("/calico/x")
    assert "127.0.0.1:1" in str(err.value) and "127.0.0.1:2" in str(err.value)


def test_config_precedence(tmp_path):
    cfg_file = tmp_path / "calicoctl.cfg"
    cfg_file.write_text(
        "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\n"
        "spec:\n  datastoreType: etcdv3\n  etcdEndpoints: http://198.18.0.11:2379,http://198.18.0.12:2379\n"
    )
    cfg = EtcdConfig.from_sources(env={}, config_file=str(cfg_file))
    assert cfg.endpoints == ["http://198.18.0.11:2379", "http://198.18.0.12:2379"]
    cfg = EtcdConfig.from_sources(env={"ETCD_ENDPOINTS": "https://198.18.0.13:2379"}, config_file=str(cfg_file))
    assert cfg.endpoints == ["https://198.18.0.13:2379"]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"ETCD_ENDPOINTS": "198.18.0.1:2379"}, "is not a URL"),
        ({"ETCD_CERT_FILE": "/nonexistent.pem"}, "both a certificate and a key"),
        ({"ETCD_CA_CERT_FILE": "/nonexistent-ca.pem"}, "does not exist"),
        ({"DATASTORE_TYPE": "kubernetes"}, "not supported"),
    ],
)
def test_config_errors(env, message, tmp_path):
    with pytest.raises(DatastoreError, match=message):
        EtcdConfig.from_sources(env=env, config_file=_empty_cfg(tmp_path))


def _empty_cfg(tmp_path):
    p = tmp_path / "c.cfg"
    p.write_text("apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec: {}\n")
    return str(p)


# --- the keep-alive transport --------------------------------------------------


def test_threads_share_the_client(etcd_client):
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(30):
                key = f"/calico/th/{n}/{i}"
                etcd_client.put(key, f"{n}.{i}")
                assert etcd_client.get(key).value == f"{n}.{i}".encode()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    kvs, _ = etcd_client.get_prefix("/calico/th/")
    assert len(kvs) == 6 * 30


# The scenario runs in a process of its own: gRPC forbids a fork while another
# thread is inside a gRPC call (the child crashes or finds its calls "Closed on
# fork"), and the test process carries the threads of whatever tests ran before.
_FORK_SCENARIO = """
import os, sys, traceback
from urllib.parse import urlsplit
from calico_net.datastore.config import EtcdConfig
from calico_net.datastore.etcd import EtcdClient

PORT = urlsplit(sys.argv[1]).port

def etcd_connections():
    # this process's open TCP sockets that are established to etcd's port
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "01" and int(cols[2].split(":")[1], 16) == PORT and cols[9] in inodes:
                    found.add(cols[9])
    return found

client = EtcdClient(EtcdConfig(endpoints=[sys.argv[1]]))
client.put("/calico/fork/parent", "p")
parents = etcd_connections()
pid = os.fork()
if pid == 0:  # the child: its own connection
    code = 1
    try:
        client.put("/calico/fork/child", "c")
        value = client.get("/calico/fork/parent").value
        own = etcd_connections() - parents
        print("child", value.decode(), "own connections", len(own), flush=True)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status))
# the parent's channel still works
print("parent reads", client.get("/calico/fork/child").value.decode(), "connections", len(parents))
"""


def test_forked_child_does_not_share_the_parents_channel(etcd, etcd_client):
    run = subprocess.run([sys.executable, "-c", _FORK_SCENARIO, etcd.endpoints],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["child p own connections 1", "child exit 0",
                                       "parent reads c connections 1"], run.stdout + run.stderr


def test_proxy_variables_are_ignored(etcd, monkeypatch):
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:1")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = EtcdClient(EtcdConfig(endpoints=[etcd.endpoints], timeout=3))
    client.put("/calico/proxy/k", "v")
    assert client.get("/calico/proxy/k").value == b"v"
    client.close()


def test_error_status_is_a_datastore_error(etcd_client):
    with pytest.raises(DatastoreError, match="etcd rejected the request"):
        etcd_client._post("kv/range", pb.RangeRequest(key=b""))     # etcd needs a key


def test_close_then_use_again(etcd_client):
    etcd_client.put("/calico/cl/k", "v")
    etcd_client.close()
    assert etcd_client.get("/calico/cl/k").value == b"v"


def test_timeout_on_a_silent_endpoint_fails_over():
    # A listener that accepts and never answers: the request times out and the error
    # names the endpoint.
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        ep = f"http://127.0.0.1:{srv.getsockname()[1]}"
        client = EtcdClient(EtcdConfig(endpoints=[ep], timeout=0.5))
        with pytest.raises(DatastoreUnavailable, match="timed out") as err:
            client.get("/calico/x")
        assert ep in str(err.value)


# --- cluster membership ---------------------------------------------------------


@pytest.fixture
def own_etcd():
    """A private single-member etcd: membership changes must not touch the shared one."""
    server = start_etcd()
    try:
        yield server
    finally:
        stop_etcd(server)


def test_member_add_list_update_remove(own_etcd):
    client = own_etcd.client()
    before = client.member_list()
    assert len(before) == 1 and before[0]["name"] == "test"
    # a learner does not count towards quorum, so the single member keeps working
    added = client.member_add(["http://127.0.0.1:1"], learner=True)["member"]
    assert added["peerURLs"] == ["http://127.0.0.1:1"] and added.get("isLearner")
    ids = {m["ID"] for m in client.member_list()}
    assert added["ID"] in ids and len(ids) == 2
    client.member_update(added["ID"], ["http://127.0.0.1:2"])
    urls = {m["ID"]: m["peerURLs"] for m in client.member_list()}
    assert urls[added["ID"]] == ["http://127.0.0.1:2"]
    client.member_remove(int(added["ID"]))
    assert [m["ID"] for m in client.member_list()] == [before[0]["ID"]]
    with pytest.raises(DatastoreError, match="member not found"):
        client.member_remove(added["ID"])
    client.put("/calico/m/k", "still writable")
    client.close()


def test_a_key_that_is_not_utf8_round_trips_through_every_read(etcd_client):
    """etcd keys are bytes. One that is not UTF-8 (written here as
    its raw bytes) reads back from get, get_prefix, the paged ranges
    and the watch without an error, with its exact bytes, and can be deleted."""
    from calico_net.datastore.etcd import key_bytes, key_problem

    raw = b"/calico/nu/bad\xff\xfe"
    key = raw.decode("utf-8", "surrogateescape")
    start = etcd_client.put("/calico/nu/a", "1")
    etcd_client.put(key, "2")
    etcd_client.put("/calico/nu/z", "3")
    assert key_bytes(etcd_client.get(key).key) == raw
    kvs, _ = etcd_client.get_prefix("/calico/nu/")
    assert [key_bytes(kv.key) for kv in kvs] == [b"/calico/nu/a", raw, b"/calico/nu/z"]
    assert key_problem(kvs[1].key) == "key is not valid UTF-8" and key_problem(kvs[0].key) is None
    page, _, more = etcd_client.get_range("/calico/nu/", prefix_end("/calico/nu/"), limit=2)
    assert more and [key_bytes(kv.key) for kv in page] == [b"/calico/nu/a", raw]
    _, pages = etcd_client.read_prefix("/calico/nu/", 4)
    assert [key_bytes(kv.key) for page in pages for kv in page] == [b"/calico/nu/a", raw, b"/calico/nu/z"]
    watch = etcd_client.watch_prefix("/calico/nu/", start)
    seen = []
    for batch in watch:
        seen.extend(key_bytes(e.kv.key) for e in batch)
        if len(seen) >= 3:
            watch.cancel()
            break
    assert seen == [b"/calico/nu/a", raw, b"/calico/nu/z"]
    assert etcd_client.delete(key) and etcd_client.get(key) is None


def test_datastore_skips_and_names_values_that_do_not_decode(etcd_client, caplog):
    from calico_net.datastore import BadStoredValue, Datastore

    ds = Datastore(etcd_client)
    gnps = "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/"
    ds.apply({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
              "metadata": {"name": "good"}, "spec": {"order": 1, "selector": "all()"}})
    etcd_client.put(gnps + "not-json", "{")
    etcd_client.put(gnps + "array", "[]")
    etcd_client.put(gnps + "\x1b[2J", "{\"metadata\": 1}")
    etcd_client.put((gnps.encode() + b"raw\xff").decode("utf-8", "surrogateescape"), "{}")
    bad: list[BadStoredValue] = []
    docs, _ = ds.list("GlobalNetworkPolicy", on_bad=bad.append)
    assert [d["metadata"]["name"] for d in docs] == ["good"]
    assert sorted(str(e) for e in bad) == sorted([
        f"etcd key {gnps}\\x1b[2J: metadata is not a JSON object",
        f"etcd key {gnps}array: value is not a JSON object",
        next(str(e) for e in bad if "not-json" in str(e)),
        f"etcd key {gnps}raw\\xff: key is not valid UTF-8"])
    assert any(str(e).startswith(f"etcd key {gnps}not-json: value is not JSON (") for e in bad)
    # without on_bad: a warning each, and the rest all the same
    docs, _ = ds.list("GlobalNetworkPolicy")
    assert len(docs) == 1 and len([r for r in caplog.records if "skipping etcd key" in r.getMessage()]) == 4
    with pytest.raises(BadStoredValue, match="not-json: value is not JSON"):
        ds.get("GlobalNetworkPolicy", "not-json")
    # a write puts it right
    ds.apply({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
              "metadata": {"name": "not-json"}, "spec": {"order": 2, "selector": "all()"}})
    assert ds.get("GlobalNetworkPolicy", "not-json")["spec"]["order"] == 2
    assert ds.delete("GlobalNetworkPolicy", "array")["metadata"]["name"] == "array"
    assert etcd_client.get(gnps + "array") is None
