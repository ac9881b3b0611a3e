"""The Tier kind, spec.tier on policies, the staged kinds, KubeControllersConfiguration
and ClusterInformation in the model; the cross-resource tier rules (`model.tiers`)
and the calicoctl verbs that apply them (on the shared real etcd)."""
from __future__ import annotations

import argparse
import io
import types
from typing import Any

import pytest

from calico_net.errors import ValidationError
from calico_net.model import parse_resource, resolve_kind
from calico_net.model.registry import no_effect_fields
from calico_net.model.tiers import check_tier_references, policies_in_tier, tier_delete_problem

V3 = "projectcalico.org/v3"


def doc(kind: str, name: str, spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": V3, "kind": kind, "metadata": {"name": name, **meta}, "spec": spec or {}}


def errors(d: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        parse_resource(d)
    return info.value.errors


def test_tier_fields_and_defaults():
    t = parse_resource(doc("Tier", "security", {"order": 100, "defaultAction": "Pass"}))
    assert t.spec.order == 100 and t.spec.default_action == "Pass"
    assert t.to_dict()["spec"] == {"order": 100, "defaultAction": "Pass"}
    assert parse_resource(doc("Tier", "bare")).spec.order is None
    (path, msg), = errors(doc("Tier", "security", {"defaultAction": "Allow"}))
    assert path == "spec.defaultAction" and "Allow" in msg and "Deny" in msg and "Pass" in msg
    (path, msg), = errors(doc("Tier", "security", {"order": "first"}))
    assert path == "spec.order"


@pytest.mark.parametrize("name", ["a.b", "Upper", "-x", "x" * 64])
def test_tier_names_are_dns_labels_without_dots(name):
    assert [p for p, _ in errors(doc("Tier", name))] == ["metadata.name"]


def test_builtin_tiers_have_calicos_fixed_order_and_action():
    parse_resource(doc("Tier", "default", {"order": 1000000, "defaultAction": "Deny"}))
    parse_resource(doc("Tier", "kube-admin", {"order": 1000, "defaultAction": "Pass"}))
    assert [p for p, _ in errors(doc("Tier", "default", {"order": 5, "defaultAction": "Pass"}))] == [
        "spec.order", "spec.defaultAction"]
    assert [p for p, _ in errors(doc("Tier", "kube-baseline", {"defaultAction": "Deny"}))] == [
        "spec.defaultAction"]


def test_policies_take_any_tier_name_and_calicos_name_rule():
    p = parse_resource(doc("GlobalNetworkPolicy", "security.deny-db", {"tier": "security"}))
    assert p.spec.tier == "security"
    parse_resource(doc("GlobalNetworkPolicy", "deny-db", {"tier": "security"}))     # no prefix needed
    parse_resource(doc("NetworkPolicy", "knp.default.a.b.c", namespace="ns"))
    assert [p for p, _ in errors(doc("GlobalNetworkPolicy", "a.b.c"))] == ["metadata.name"]
    assert [p for p, _ in errors(doc("NetworkPolicy", "a.b.c", namespace="ns"))] == ["metadata.name"]
    assert [p for p, _ in errors(doc("GlobalNetworkPolicy", "p", {"tier": "Bad.Tier"}))] == ["spec.tier"]


def test_staged_kinds_are_stored_and_flagged_never_enforced():
    sgnp = doc("StagedGlobalNetworkPolicy", "sec.x", {"stagedAction": "Set", "tier": "sec",
                                                     "selector": "all()", "ingress": [{"action": "Deny"}]})
    parse_resource(sgnp)
    reasons = {r for _, r in no_effect_fields(sgnp)}
    assert reasons == {"staged policies are stored and shown, never enforced (as in Calico)"}
    # a staged Set is checked as the policy it would become
    bad = doc("StagedNetworkPolicy", "x", {"ingress": [{"action": "Allow", "destination": {"ports": [80]}}]},
              namespace="ns")
    assert [p for p, _ in errors(bad)] == ["spec.ingress[0].destination.ports"]
    # a staged Delete carries nothing but the tier
    parse_resource(doc("StagedNetworkPolicy", "x", {"stagedAction": "Delete", "tier": "sec"}, namespace="ns"))
    assert [p for p, _ in errors(doc("StagedNetworkPolicy", "x", {"stagedAction": "Delete", "order": 1},
                                     namespace="ns"))] == ["spec.stagedAction"]
    sknp = doc("StagedKubernetesNetworkPolicy", "k", {"stagedAction": "Set", "podSelector": {},
                                                      "policyTypes": ["Ingress"]}, namespace="ns")
    parse_resource(sknp)
    assert no_effect_fields(sknp)
    assert [p for p, _ in errors(doc("StagedKubernetesNetworkPolicy", "k", {"stagedAction": "Maybe"},
                                     namespace="ns"))] == ["spec.stagedAction"]


def test_kube_controllers_configuration_and_cluster_information():
    kcc = doc("KubeControllersConfiguration", "default", {"logSeverityScreen": "Info",
                                                         "etcdV3CompactionPeriod": "10m",
                                                         "controllers": {"node": {"syncLabels": "Enabled"}}})
    parse_resource(kcc)
    assert [p for p, _ in no_effect_fields(kcc)]
    assert [p for p, _ in errors(doc("KubeControllersConfiguration", "default",
                                     {"healthChecks": "Yes"}))] == ["spec.healthChecks"]
    ci = doc("ClusterInformation", "default", {"clusterGUID": "0f4e6a1c2b3d4e5f", "clusterType": "k8s,bgp",
                                               "calicoVersion": "v3.30.0", "datastoreReady": True})
    assert parse_resource(ci).to_dict()["spec"]["clusterGUID"] == "0f4e6a1c2b3d4e5f"
    assert [p for p, _ in errors(doc("ClusterInformation", "default", {"calicoVersion": "v3\n"}))] == [
        "spec.calicoVersion"]


@pytest.mark.parametrize("alias,kind,plural", [
    ("tiers", "Tier", "tiers"), ("sgnp", "StagedGlobalNetworkPolicy", "stagedglobalnetworkpolicies"),
    ("snp", "StagedNetworkPolicy", "stagednetworkpolicies"),
    ("sknp", "StagedKubernetesNetworkPolicy", "stagedkubernetesnetworkpolicies"),
    ("kubecontrollersconfig", "KubeControllersConfiguration", "kubecontrollersconfigurations"),
    ("clusterinfo", "ClusterInformation", "clusterinformations")])
def test_calicoctl_names_and_etcd_plural(alias, kind, plural):
    info = resolve_kind(alias)
    assert (info.kind, info.plural) == (kind, plural)


def test_tier_references_and_deletion_rules():
    pol = doc("GlobalNetworkPolicy", "p", {"tier": "sec"})
    with pytest.raises(ValidationError) as info:
        check_tier_references([pol], lambda name: False)
    (path, msg), = info.value.errors
    assert path == "spec.tier" and 'tier "sec" does not exist' in msg
    check_tier_references([pol], lambda name: name == "sec")
    check_tier_references([doc("Tier", "sec"), pol], lambda name: False)       # same manifest
    check_tier_references([doc("GlobalNetworkPolicy", "q"), doc("NetworkPolicy", "r", {"tier": "kube-admin"})],
                          lambda name: False)                                  # built in
    assert "built-in" in tier_delete_problem("default", [])
    in_sec = policies_in_tier("sec", {"GlobalNetworkPolicy": [pol, doc("GlobalNetworkPolicy", "q")]})
    assert in_sec == ["GlobalNetworkPolicy p"]
    assert "not empty (GlobalNetworkPolicy p)" in tier_delete_problem("sec", in_sec)
    assert tier_delete_problem("sec", []) is None


def _ctl(ds, verb: str, *argv: str, stdin_docs: list[dict[str, Any]] | None = None, tmp_path=None) -> str:
    from calico_net.cli.main import build_parser

    if stdin_docs is not None:
        import yaml

        f = tmp_path / f"{verb}.yaml"
        f.write_text(yaml.safe_dump_all(stdin_docs))
        argv = ("-f", str(f), *argv)
    args = build_parser().parse_args([verb, *argv])
    ctx = types.SimpleNamespace(datastore=ds, out=io.StringIO(), err=io.StringIO())
    assert args.func(args, ctx) == 0
    return ctx.out.getvalue()


def test_calicoctl_verbs_on_tiers(datastore, tmp_path):
    ds = datastore
    gnp = doc("GlobalNetworkPolicy", "cnt1-p", {"tier": "cnt1-sec", "selector": "all()"})
    with pytest.raises(ValidationError, match='spec.tier: tier "cnt1-sec" does not exist'):
        _ctl(ds, "apply", stdin_docs=[gnp], tmp_path=tmp_path)
    _ctl(ds, "apply", stdin_docs=[doc("Tier", "cnt1-sec", {"order": 100}), gnp], tmp_path=tmp_path)
    assert ds.client.get("/calico/resources/v3/projectcalico.org/tiers/cnt1-sec") is not None
    assert ds.get("Tier", "cnt1-sec")["spec"] == {"order": 100, "defaultAction": "Deny"}   # Calico's default
    _ctl(ds, "create", stdin_docs=[doc("Tier", "cnt1-bare")], tmp_path=tmp_path)
    assert ds.get("Tier", "cnt1-bare")["spec"] == {"order": 1000000, "defaultAction": "Deny"}
    out = _ctl(ds, "get", "tier", "cnt1-sec")
    assert out.split() == ["NAME", "ORDER", "cnt1-sec", "100"]
    assert "cnt1-sec" in _ctl(ds, "get", "gnp", "cnt1-p")
    with pytest.raises(ValueError, match="not empty"):
        _ctl(ds, "delete", "tier", "cnt1-sec")
    with pytest.raises(ValueError, match="built-in"):
        _ctl(ds, "delete", "tier", "default")
    _ctl(ds, "delete", "gnp", "cnt1-p")
    _ctl(ds, "delete", "tier", "cnt1-sec")
    with pytest.raises(ValueError, match="ClusterInformation"):
        _ctl(ds, "apply", stdin_docs=[doc("ClusterInformation", "default")], tmp_path=tmp_path)


def test_calicoctl_policy_explain_shows_the_tiers(datastore, tmp_path):
    ds = datastore
    weps = [{"apiVersion": V3, "kind": "WorkloadEndpoint",
             "metadata": {"name": n, "namespace": "ns1", "labels": {"app": n}},
             "spec": {"node": "node1", "interfaceName": f"cali0000000000{i}", "ipNetworks": [f"198.19.0.{i}/32"],
                      "profiles": ["open"]}} for i, n in ((1, "db"), (2, "web"))]
    prof = doc("Profile", "open", {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]})
    sec = doc("GlobalNetworkPolicy", "sec-db", {"tier": "sec", "selector": "app == 'db'",
                                                "ingress": [{"action": "Deny", "protocol": "TCP",
                                                             "destination": {"ports": [5432]}}]})
    _ctl(ds, "apply", stdin_docs=[prof, *weps, doc("Tier", "sec", {"order": 100, "defaultAction": "Pass"}), sec],
         tmp_path=tmp_path)
    denied = _ctl(ds, "policy", "explain", "--from", "198.19.0.2", "--to", "198.19.0.1", "--port", "5432")
    assert denied.startswith("Verdict:     Deny\n") and "(tier sec)" in denied
    assert "  sec order=100 defaultAction=Pass" in denied and "[sec] GlobalNetworkPolicy sec-db" in denied
    allowed = _ctl(ds, "policy", "explain", "--from", "198.19.0.2", "--to", "198.19.0.1", "--port", "80")
    assert allowed.startswith("Verdict:     Allow\n") and "tier sec: end of tier: Pass" in allowed
