"""The etcd client against a real etcd: ranges, transactions, watch, fail-over, config."""
from __future__ import annotations

import threading

import pytest

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
