"""The field registry (calico_net.model.registry): every model field classified once,
the classification true to the code, the warnings, and the generated compatibility doc.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from calico_net.errors import ValidationError
from calico_net.model import parse_resource
from calico_net.model import registry
from calico_net.model.registry import ENFORCED, NO_EFFECT, REFUSED, REGISTRY

ROOT = Path(__file__).resolve().parents[2]


def test_every_model_field_has_exactly_one_entry() -> None:
    # A field added to a model (or an entry left behind) is named here: classify it in
    # src/calico_net/model/registry.py and regenerate docs/compatibility.md.
    problems = registry.coverage_problems()
    assert not problems, "\n".join(problems)


def test_coverage_check_names_an_unclassified_field() -> None:
    """The check can fail: a model with a field the registry does not know is named."""
    from typing import Optional

    from calico_net.model.resources import GlobalNetworkSetSpec, resource_kind

    class Spec(GlobalNetworkSetSpec):
        brand_new_field: Optional[bool] = None

    kind = resource_kind("GlobalNetworkSet", Spec, "test double")
    assert registry.coverage_problems([kind]) == [
        "GlobalNetworkSet: spec.brandNewField has no registry entry"]


def test_felix_enforced_fields_are_exactly_the_agents_params() -> None:
    """A FelixConfiguration field is enforced iff the agent's config reads it (PARAMS)."""
    from calico_net.agent.config import PARAMS
    from calico_net.model.resources import FelixConfiguration

    fields = {p.split(".", 1)[1] for p in registry.model_paths(FelixConfiguration)
              if p.startswith("spec.")}
    by_lower = {f.split("[")[0].lower(): f.split("[")[0] for f in fields}
    read = {by_lower[p.name.lower()] for p in PARAMS if p.name.lower() in by_lower}
    enforced = {p.split(".", 1)[1].split("[")[0] for p, e in REGISTRY["FelixConfiguration"].items()
                if p.startswith("spec.") and e.status == ENFORCED}
    assert read - enforced == set(), "read by agent/config.py but not marked enforced"
    assert enforced - read == set(), "marked enforced but agent/config.py does not read it"


def test_enforced_entries_point_at_code_that_exists() -> None:
    for kind, table in REGISTRY.items():
        for path, entry in table.items():
            if entry.status != ENFORCED:
                continue
            first = entry.where.split(" ")[0].rstrip(";")
            assert (ROOT / "src" / first).exists(), f"{kind} {path}: {entry.where}"


def test_refused_entries_are_refused_by_the_model() -> None:
    cases = {"spec.kubeVirtVMAddressPersistence": "Enabled", "spec.ipCooldownSeconds": 30}
    refused = {p for p, e in REGISTRY["IPAMConfiguration"].items() if e.status == REFUSED}
    assert refused == set(cases)
    for path, value in cases.items():
        doc = {"apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration",
               "metadata": {"name": "default"}, "spec": {path.split(".")[1]: value}}
        with pytest.raises(ValidationError) as info:
            parse_resource(doc)
        assert [p for p, _ in info.value.errors] == [path]
    for kind, table in registry.REFUSED_UNMODELLED.items():
        for path in table:
            assert registry.entry_for(kind, path) is None, path


def felix(spec: dict, name: str = "default", **meta) -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
            "metadata": {"name": name, **meta}, "spec": spec}


def test_no_effect_fields_name_each_set_field_with_its_reason() -> None:
    doc = felix({"wireguardEnabled": True, "bpfEnabled": False, "logSeverityScreen": "Info",
                 "interfaceExclude": "kube-ipvs0",
                 "routeTableRange": {"min": 1, "max": 250}},
                ownerReferences=[{"apiVersion": "v1", "kind": "Node", "name": "n",
                                  "uid": "u-1"}])
    parse_resource(doc)
    got = registry.no_effect_fields(doc)
    assert [p for p, _ in got] == ["metadata.ownerReferences", "spec.wireguardEnabled",
                                   "spec.interfaceExclude", "spec.routeTableRange"]
    assert dict(got)["spec.wireguardEnabled"] == registry.NO_WG
    # bpfEnabled: false is what calico.net does anyway (quiet); logSeverityScreen is read


def test_quiet_values_are_exact() -> None:
    assert registry.no_effect_fields(felix({"bpfEnabled": False})) == []
    assert [p for p, _ in registry.no_effect_fields(felix({"bpfEnabled": True}))] == ["spec.bpfEnabled"]
    assert registry.no_effect_fields(felix({"chainInsertMode": "Insert"})) == []
    assert [p for p, _ in registry.no_effect_fields(felix({"chainInsertMode": "append"}))] == [
        "spec.chainInsertMode"]


def test_rule_fields_are_shown_with_their_index() -> None:
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
           "metadata": {"name": "p"},
           "spec": {"ingress": [{"action": "Allow"},
                                {"action": "Deny", "metadata": {"annotations": {"a": "b"}}}]}}
    parse_resource(doc)
    assert [p for p, _ in registry.no_effect_fields(doc)] == ["spec.ingress[1].metadata.annotations"]


@pytest.mark.parametrize("kind", ["FelixConfiguration", "BGPConfiguration"])
def test_configuration_read_under_no_name_is_flagged_once(kind) -> None:
    for name in ("default", "node.node-1"):
        doc = {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name},
               "spec": {"logSeverityScreen": "Info"}}
        assert registry.no_effect_fields(doc) == []
    doc["metadata"]["name"] = "global"
    parse_resource(doc)
    (path, reason), = registry.no_effect_fields(doc)
    assert path == "metadata.name" and "stored without effect" in reason


def test_warning_lines_name_kind_name_path_and_reason() -> None:
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
           "metadata": {"name": "n1-k8s-web-eth0", "namespace": "web"},
           "spec": {"node": "n1", "interfaceName": "cali1", "ipNetworks": ["198.19.77.1/32"],
                    "allowSpoofedSourcePrefixes": ["198.19.78.0/24"]}}
    assert registry.warning_lines(doc) == [
        'Warning: WorkloadEndpoint "web/n1-k8s-web-eth0": spec.allowSpoofedSourcePrefixes: '
        "no effect in calico.net: " + REGISTRY["WorkloadEndpoint"]["spec.allowSpoofedSourcePrefixes"].where]


def test_compatibility_doc_is_generated_from_the_registry() -> None:
    committed = (ROOT / "docs" / "compatibility.md").read_text()
    assert committed == registry.compatibility_markdown(), (
        "docs/compatibility.md is stale: .venv/bin/python -m calico_net.model.registry "
        "> docs/compatibility.md")
    for status in ("enforced", "**no effect** (warned)", "**refused**"):
        assert f"| {status} |" in committed


def test_model_import_does_not_load_the_registry() -> None:
    code = ("import sys, calico_net.model; from calico_net.model import parse_resource; "
            "print('calico_net.model.registry' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_statuses_are_the_three_known() -> None:
    for table in REGISTRY.values():
        for entry in table.values():
            assert entry.status in (ENFORCED, NO_EFFECT, REFUSED)
            assert entry.where
