"""Whole-agent FV: values written straight into etcd (no calicoctl, no validation on
the way in) can never widen what the dataplane allows — real calico-node, real etcd,
real nftables in network namespaces, real traffic.

* an nft injection through FelixConfiguration `interfacePrefix`: every policy stays
  enforced (each denied probe is paired with an allowed one to the same server),
  across a live change and a restart, and the agent reports the bad value;
* WorkloadEndpoints naming a host interface (eth0, a dummy) or claiming networks
  wider than a host address (0.0.0.0/0, a /24 that holds a denied workload):
  nothing changes on the host — routes, sysctls, nft — and the rest keeps working;
* the fields calico.net cannot enforce yet (a rule's http or services match, a
  HostEndpoint found by its expectedIPs alone): skipped and counted, and a later valid policy change is still enforced;
* a key that is not UTF-8 and a value that is not JSON, written with etcdctl while
  the agent runs: skipped (logged with the key escaped, counted), the watch goes on
  (no resync), later policy changes are enforced, and a restart with them in etcd
  starts and enforces the same.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.root

P = "/calico/resources/v3/projectcalico.org/"
INJECTION = '*" accept; iifname "cali'
DUMMY = "hostveth0"      # a host interface in the test's host namespace, not a workload one

L = None  # the FV helper module (tests/fv/conftest.py), bound below


@pytest.fixture(autouse=True, scope="module")
def _bind_helpers(fvlib):
    global L
    L = fvlib


def gnp(name, spec):
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": name}, "spec": spec}


EGRESS_ALL = gnp("egress-all", {"order": 5, "selector": "all()", "types": ["Egress"],
                                "egress": [{"action": "Allow"}]})
DB_FROM_WEB = gnp("db-from-web", {"order": 10, "selector": "role == 'db'", "types": ["Ingress"],
                                  "ingress": [{"action": "Allow", "protocol": "TCP",
                                               "source": {"selector": "role == 'web'"},
                                               "destination": {"ports": [8080]}}]})
ROLES = {"w1": {"role": "web"}, "w2": {"role": "web"}, "w3": {"role": "db"}, "w4": {"role": "other"}}


def put_raw(env, key: str, doc: dict) -> None:
    """Straight into etcd: no calicoctl, no model on the way in."""
    env.ds.client.put(key, json.dumps(doc).encode())


def setup_policy(env):
    env.ds.apply_all([EGRESS_ALL, DB_FROM_WEB] + [L.wep(w, ROLES[w.name]) for w in env.workloads])
    L.wait_for(lambda: all(w.ip in L.our_routes() for w in env.workloads), 10, "workload routes", env.agent)
    assert_enforced(env)


def reach(env, src: int, targets: list[tuple[str, int, int]]) -> dict[str, bool]:
    s = env.workloads[src]
    return L.probe(s, [(label, env.workloads[dst].ip, port) for label, dst, port in targets], timeout=2.0)


def enforced(env) -> dict[str, bool]:
    """The policy's verdicts on server w3, each denied probe beside an allowed one:
    web → db:8080 allowed; other → db:8080 and web → db:9090 denied."""
    out = reach(env, 0, [("web->db:8080", 2, 8080), ("web->db:9090", 2, 9090)])
    out.update(reach(env, 3, [("other->db:8080", 2, 8080)]))
    return out


EXPECTED = {"web->db:8080": True, "web->db:9090": False, "other->db:8080": False}


def assert_enforced(env, timeout: float = 5.0) -> None:
    last = {}

    def ok():
        nonlocal last
        last = enforced(env)
        return last == EXPECTED

    try:
        L.wait_for(ok, timeout, "policy enforced", env.agent, interval=0.1)
    except AssertionError:
        raise AssertionError(f"policy not enforced: {last}\n--- agent log ---\n{env.agent.log_tail()}") from None


def reported(env) -> float:
    """Everything the agent counts as refused: bad datastore objects (the model
    refused them), bad config values, refused endpoints."""
    return sum(env.agent.metric(m) for m in ("felix_skipped_bad_objects_total", "felix_config_errors_total",
                                             "felix_refused_endpoints_total"))


def log_text(env) -> str:
    return env.agent.log_path.read_text(errors="replace")


def sysctls(names: list[str]) -> dict[str, str]:
    out = {}
    for n in names:
        path = "/proc/sys/" + n.replace(".", "/")
        out[n] = L.sh("cat", path, ns=L.HOST_NS, check=False).strip()
    return out


def host_state(ifaces: list[str]) -> dict[str, object]:
    names = []
    for i in ifaces:
        names += [f"net.ipv4.conf.{i}.proxy_arp", f"net.ipv4.conf.{i}.route_localnet",
                  f"net.ipv4.conf.{i}.forwarding", f"net.ipv4.neigh.{i}.proxy_delay",
                  f"net.ipv6.conf.{i}.proxy_ndp", f"net.ipv6.conf.{i}.accept_ra", f"net.ipv6.conf.{i}.forwarding"]
    def routes(family: str) -> list[str]:
        # every route of the main table but the kernel's own (interface addresses,
        # link-local: those come and go with IPv6 address configuration)
        out = L.sh("ip", family, "route", "show", "table", "main", ns=L.HOST_NS)
        return sorted(line for line in out.splitlines() if "proto kernel" not in line)
    return {"routes4": routes("-4"), "routes6": routes("-6"), "sysctls": sysctls(names)}


# ---------------------------------------------------------------- interfacePrefix injection


def test_interface_prefix_injection_never_reaches_nft(clean):
    env = clean
    setup_policy(env)
    base = reported(env)
    put_raw(env, P + "felixconfigurations/default", {
        "apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration", "metadata": {"name": "default"},
        "spec": {"interfacePrefix": INJECTION}})
    # reported: a config error (the agent refused the value) or a skipped object
    # (the model refused the document)
    L.wait_for(lambda: reported(env) >= base + 1, 10, "the bad interfacePrefix reported", env.agent)
    assert "interfaceprefix" in log_text(env).lower()
    # a live policy change after it is written with the right prefixes
    env.ds.apply(L.wep(env.workloads[1], {"role": "other"}))     # w2 leaves "web"
    L.wait_for(lambda: not reach(env, 1, [("x", 2, 8080)])["x"], 5, "w2 -> db denied", env.agent)
    assert reach(env, 0, [("x", 2, 8080)])["x"]                   # ... while w1 -> db is allowed
    assert_enforced(env)
    ruleset = L.nft_ruleset()
    assert 'iifname "*"' not in ruleset and "accept; iifname" not in ruleset
    assert 'iifname "cali*" jump cali-from-wl' in ruleset
    # a cold start with the bad value already in etcd, and in the environment
    # (FELIX_INTERFACEPREFIX, the first source): the same
    env.agent.stop()
    L.sh("nft", "delete", "table", "inet", "calico", ns=L.HOST_NS)
    env.agent.env["FELIX_INTERFACEPREFIX"] = INJECTION
    try:
        env.agent.start()
        env.agent.wait_ready()
        L.wait_for(lambda: reported(env) >= 2, 10, "both bad values reported after a restart", env.agent)
        assert env.agent.metric("felix_config_errors_total") >= 1          # the environment's
        assert_enforced(env)
        ruleset = L.nft_ruleset()
        assert 'iifname "*"' not in ruleset and 'iifname "cali*" jump cali-from-wl' in ruleset
        assert "ignoring InterfacePrefix" in log_text(env)
    finally:
        env.agent.stop()
        env.agent.env.pop("FELIX_INTERFACEPREFIX", None)
        env.agent.start()
        env.agent.wait_ready()


# ---------------------------------------------------------------- endpoints on host interfaces


def test_endpoints_cannot_take_over_host_interfaces_or_routes(clean):
    env = clean
    # (a veth pair: this kernel may have no dummy driver)
    L.sh("ip", "link", "add", DUMMY, "type", "veth", "peer", "name", DUMMY + "p", ns=L.HOST_NS)
    try:
        L.sh("ip", "link", "set", DUMMY, "up", ns=L.HOST_NS)
        setup_policy(env)
        before = host_state(["eth0", DUMMY])
        assert any(r.startswith("default via") for r in before["routes4"])
        base = reported(env)

        def evil(name, iface, nets, labels):
            doc = L.wep(env.workloads[0], labels)
            doc["metadata"]["name"] = f"{L.NODE}-k8s-{name}-eth0"
            doc["spec"].update({"workload": name, "interfaceName": iface, "ipNetworks": nets})
            return doc

        bad = [
            evil("takeover", "eth0", ["0.0.0.0/0"], {"role": "web"}),
            evil("hosteth", "eth0", ["198.19.9.8/32"], {"role": "web"}),
            evil("hostif", DUMMY, ["198.19.9.9/32"], {"role": "web"}),
            # a cali-named interface, but a network holding w4 (role other): joined to
            # "web", it would let w4 reach the db
            evil("wide", "cali0wide00001", ["198.19.1.0/24"], {"role": "web"}),
            evil("default6", "cali0wide00002", ["::/0"], {"role": "web"}),
        ]
        for doc in bad:
            put_raw(env, P + f"workloadendpoints/default/{doc['metadata']['name']}", doc)
        L.wait_for(lambda: reported(env) >= base + len(bad), 10, "the bad endpoints reported", env.agent)
        # a later change is applied (so the bad endpoints have been through an apply)
        env.ds.apply(L.wep(env.workloads[1], {"role": "other"}))
        L.wait_for(lambda: not reach(env, 1, [("x", 2, 8080)])["x"], 5, "w2 -> db denied", env.agent)
        assert_enforced(env)
        after = host_state(["eth0", DUMMY])
        assert after == before
        routes = L.our_routes()
        assert set(routes) == {w.ip for w in env.workloads}
        assert set(routes.values()) == {w.iface for w in env.workloads}
        ruleset = L.nft_ruleset()
        for text in ('"eth0"', DUMMY, "cali0wide", "0.0.0.0/0", "198.19.1.0/24", "198.19.9.", "::/0"):
            assert text not in ruleset, text
        log = log_text(env)
        for doc in bad:
            assert doc["metadata"]["name"] in log
        # the rest keeps working: a new endpoint label takes effect
        env.ds.apply(L.wep(env.workloads[3], {"role": "web"}))
        L.wait_for(lambda: reach(env, 3, [("x", 2, 8080)])["x"], 5, "w4 -> db allowed as web", env.agent)
        assert not reach(env, 3, [("x", 2, 9090)])["x"]
    finally:
        L.sh("ip", "link", "del", DUMMY, ns=L.HOST_NS, check=False)   # its peer goes with it


# ---------------------------------------------------------------- fields not enforced yet


def test_unenforceable_fields_are_skipped_counted_and_later_changes_enforced(clean):
    env = clean
    setup_policy(env)
    base = reported(env)
    deny_db = {"order": 1, "selector": "role == 'db'", "types": ["Ingress"], "ingress": [{"action": "Deny"}]}
    bad = {
        P + "globalnetworkpolicies/http-rule": gnp("http-rule", {
            **deny_db, "ingress": [{"action": "Deny", "protocol": "TCP", "http": {"methods": ["GET"]}}]}),
        P + "globalnetworkpolicies/services-rule": gnp("services-rule", {
            **deny_db, "ingress": [{"action": "Deny",
                                    "source": {"services": {"name": "web", "namespace": "default"}}}]}),
        P + "hostendpoints/by-ip": {"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
                                    "metadata": {"name": "by-ip", "labels": {"hep": "all"}},
                                    "spec": {"node": L.NODE, "expectedIPs": ["198.18.0.11"]}},
    }
    for key, doc in bad.items():
        put_raw(env, key, doc)
    L.wait_for(lambda: reported(env) >= base + len(bad), 10, "every unenforceable document reported", env.agent)
    log = log_text(env)
    for key, doc in bad.items():
        assert doc["metadata"]["name"] in log, key
    ruleset = L.nft_ruleset()
    for name in ("http-rule", "services-rule"):
        assert f"GlobalNetworkPolicy {name}" not in ruleset, name
    assert_enforced(env)
    # a later valid change is still enforced: "other" may reach the db on 8080 now
    env.ds.apply(gnp("db-from-other", {"order": 20, "selector": "role == 'db'", "types": ["Ingress"],
                                       "ingress": [{"action": "Allow", "protocol": "TCP",
                                                    "source": {"selector": "role == 'other'"},
                                                    "destination": {"ports": [8080]}}]}))
    L.wait_for(lambda: reach(env, 3, [("x", 2, 8080)])["x"], 5, "w4 -> db:8080 allowed", env.agent)
    assert reach(env, 3, [("x", 2, 9090)]) == {"x": False}
    assert reach(env, 0, [("x", 2, 8080)]) == {"x": True}


# ---------------------------------------------------------------- undecodable keys and values

GNPS = P + "globalnetworkpolicies/"
# etcd keys are bytes: this one is not UTF-8. Its value is a valid policy that, were
# it applied, would let everything into the db (so a skip that leaked would show).
BAD_KEY = GNPS.encode() + b"allow-all-\xff"
BAD_KEY_SHOWN = GNPS + "allow-all-\\xff"       # as the agent logs it: the byte escaped
ALLOW_ALL = gnp("allow-all", {"order": 1, "selector": "all()", "types": ["Ingress"],
                              "ingress": [{"action": "Allow"}]})
# a UTF-8 key whose value is not JSON (a policy document cut short)
NOT_JSON_KEY = GNPS + "not-json"
NOT_JSON = b'{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", ' \
           b'"metadata": {"name": "not-json"}, "spec": {"order": 1, "ingress": [{"action": "Allow"'
DB_FROM_OTHER = gnp("db-from-other", {"order": 20, "selector": "role == 'db'", "types": ["Ingress"],
                                      "ingress": [{"action": "Allow", "protocol": "TCP",
                                                   "source": {"selector": "role == 'other'"},
                                                   "destination": {"ports": [8080]}}]})


def etcdctl(env, *args: str | bytes) -> bytes:
    """Debian's etcdctl (API v3) against the test etcd; arguments may be bytes."""
    proc = subprocess.run(["etcdctl", f"--endpoints={env.etcd.endpoints}", *args],
                          env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def gnp_keys(env) -> set[bytes]:
    return set(etcdctl(env, "get", "--prefix", "--keys-only", GNPS).split())


def test_undecodable_key_and_non_json_value_from_etcdctl_keep_the_agent_syncing(clean):
    env = clean
    setup_policy(env)
    skipped0 = env.agent.metric("felix_skipped_bad_objects_total")
    resyncs0 = env.agent.metric("felix_resyncs_total")
    log0 = len(log_text(env))
    try:
        etcdctl(env, "put", BAD_KEY, json.dumps(ALLOW_ALL).encode())
        etcdctl(env, "put", NOT_JSON_KEY, NOT_JSON)
        assert {BAD_KEY, NOT_JSON_KEY.encode()} <= gnp_keys(env)
        L.wait_for(lambda: env.agent.metric("felix_skipped_bad_objects_total") >= skipped0 + 2, 10,
                   "both bad keys counted", env.agent)
        assert env.agent.metric("felix_skipped_bad_objects") == 2
        # each logged once, with its key (the byte that is not UTF-8 escaped) and why
        lines = [ln for ln in log_text(env)[log0:].splitlines() if "skipping bad datastore object" in ln]
        assert sum(BAD_KEY_SHOWN in ln and "not valid UTF-8" in ln for ln in lines) == 1, lines
        assert sum(NOT_JSON_KEY in ln and "not JSON" in ln for ln in lines) == 1, lines
        # the allow-all under the bad key widened nothing
        assert_enforced(env)

        # later changes come through the same watch: "other" may reach the db on 8080 ...
        env.ds.apply(DB_FROM_OTHER)
        L.wait_for(lambda: reach(env, 3, [("x", 2, 8080)])["x"], 5, "w4 -> db:8080 allowed", env.agent)
        assert reach(env, 3, [("x", 2, 9090)]) == {"x": False}       # ... not on 9090
        assert reach(env, 0, [("x", 2, 8080)]) == {"x": True}
        assert reach(env, 0, [("x", 2, 9090)]) == {"x": False}
        # ... and no longer once that policy is deleted
        env.ds.delete("GlobalNetworkPolicy", "db-from-other")
        L.wait_for(lambda: not reach(env, 3, [("x", 2, 8080)])["x"], 5, "w4 -> db:8080 denied again", env.agent)
        assert_enforced(env)
        assert env.agent.readiness()[0] == 200
        assert env.agent.proc is not None and env.agent.proc.poll() is None
        # the watch never broke over them: no resync, no "datastore lost"
        assert env.agent.metric("felix_resyncs_total") == resyncs0
        assert "datastore lost" not in log_text(env)[log0:]
        # the bad values counted once each, not once per event after them
        assert env.agent.metric("felix_skipped_bad_objects_total") == skipped0 + 2

        # a cold start with both in etcd: the snapshot skips them, the agent gets ready
        # and enforces the policy
        env.agent.stop()
        log1 = len(log_text(env))
        env.agent.start()
        env.agent.wait_ready()
        assert env.agent.metric("felix_skipped_bad_objects_total") == 2
        assert env.agent.metric("felix_skipped_bad_objects") == 2
        assert BAD_KEY_SHOWN in log_text(env)[log1:]
        assert_enforced(env)
        env.ds.apply(DB_FROM_OTHER)
        L.wait_for(lambda: reach(env, 3, [("x", 2, 8080)])["x"], 5, "w4 -> db:8080 allowed", env.agent)
        assert reach(env, 3, [("x", 2, 9090)]) == {"x": False}

        # removed with etcdctl (the deletions come through the watch too): gone, the
        # gauge of keys skipped right now goes back to 0, and the agent goes on.
        etcdctl(env, "del", BAD_KEY)
        etcdctl(env, "del", NOT_JSON_KEY)
        assert not {BAD_KEY, NOT_JSON_KEY.encode()} & gnp_keys(env)
        L.wait_for(lambda: env.agent.metric("felix_skipped_bad_objects") == 0, 10,
                   "the skipped-objects gauge back to 0", env.agent)
        env.ds.delete("GlobalNetworkPolicy", "db-from-other")
        L.wait_for(lambda: not reach(env, 3, [("x", 2, 8080)])["x"], 5, "w4 -> db:8080 denied again", env.agent)
        assert_enforced(env)
        assert env.agent.readiness()[0] == 200
        assert env.agent.metric("felix_skipped_bad_objects_total") == 2
        assert env.agent.metric("felix_resyncs_total") == 0
    finally:
        for key in (BAD_KEY, NOT_JSON_KEY):
            subprocess.run(["etcdctl", f"--endpoints={env.etcd.endpoints}", "del", key],
                           env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, timeout=30)
