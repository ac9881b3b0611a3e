"""Calico's own example manifests (tests/data/calico_corpus, see its README): each one
validates, is stored as written, and every field it sets is enforced or warned about
by the field registry; nothing is silently dropped. The documents in `invalid/` are
refused with the field path and reason their `# expect-refused:` line names.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from calico_net.errors import ValidationError
from calico_net.model import parse_resource, resolve_kind
from calico_net.model import registry
from calico_net.model.registry import ENFORCED, NO_EFFECT

CORPUS = Path(__file__).resolve().parent.parent / "data" / "calico_corpus"
VALID = sorted(CORPUS.glob("*.yaml"))
REFUSED = sorted((CORPUS / "invalid").glob("*.yaml"))


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    # calicoctl puts a namespaced document without a namespace in "default"
    if resolve_kind(doc["kind"]).namespaced:
        doc.setdefault("metadata", {}).setdefault("namespace", "default")
    return doc


def test_the_corpus_is_there() -> None:
    assert len(VALID) >= 80 and len(REFUSED) >= 5
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in VALID + REFUSED}
    assert {"FelixConfiguration", "BGPConfiguration", "BGPPeer", "IPPool", "GlobalNetworkPolicy",
            "NetworkPolicy", "HostEndpoint", "WorkloadEndpoint", "Node", "IPReservation",
            "IPAMConfiguration", "GlobalNetworkSet", "NetworkSet", "Profile"} <= kinds


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_calico_example_validates_and_nothing_is_dropped(path: Path) -> None:
    doc = load(path)
    stored = parse_resource(copy.deepcopy(doc)).to_dict()
    assert stored == doc  # stored exactly as written, as Calico stores it
    warned = {p for p, _ in registry.no_effect_fields(doc)}
    if "metadata.name" in warned:
        return  # a configuration nothing reads: the whole document is flagged
    silent = []
    for shown, where, entry in registry.field_statuses(doc):
        assert entry is not None, f"{shown}: set by the document, unknown to the registry"
        if entry.status == ENFORCED:
            continue
        assert entry.status == NO_EFFECT, f"{shown}: {entry.status} yet the document validated"
        covered = any(shown == w or shown.startswith(w + ".") or shown.startswith(w + "[")
                      for w in warned)
        if not covered and not registry.is_quiet(entry, _value_at(doc, shown)):
            silent.append(shown)
    assert not silent, f"stored with no effect and no warning: {silent}"


def _value_at(doc: dict, shown: str):
    import re

    node = doc
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", shown):
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    return node


@pytest.mark.parametrize("path", REFUSED, ids=lambda p: p.stem)
def test_calico_example_refused_names_field_and_reason(path: Path) -> None:
    expect = next(line for line in path.read_text().splitlines()
                  if line.startswith("# expect-refused: "))[len("# expect-refused: "):]
    field, _, reason = expect.partition(": ")
    with pytest.raises(ValidationError) as info:
        parse_resource(load(path))
    messages = dict(info.value.errors)
    assert field in messages, info.value.errors
    assert reason in messages[field]


def test_warnings_over_the_corpus() -> None:
    """What an operator applying all of Calico's examples is told: a count per reason,
    and that the FelixConfiguration example's fields are each accounted for."""
    warned = [w for p in VALID for w in registry.no_effect_fields(load(p))]
    assert warned  # Calico's examples do set fields calico.net cannot act on
    felix = load(CORPUS / "felixconfig--felixconfiguration-default.yaml")
    got = dict(registry.no_effect_fields(felix))
    assert "spec.chainInsertMode" in got and "spec.ipv6Support" in got
    assert "spec.ipipMTU" not in got  # enforced by the overlay
