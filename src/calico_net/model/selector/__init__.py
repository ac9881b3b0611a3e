"""Calico's label selector language: parser, canonical printer, evaluator and index.

Selectors choose endpoints (and other labelled resources) by their labels, e.g.
``role == "db" && env in {"prod", "stage"} && !has(quarantine)``.  This package is
the one implementation used by the resource validation, the agent and calicoctl:
`nodes` holds the tree (one immutable node class per construct, its printer and its
compiler), `parse` reads text into a tree (`parse_selector`, `SelectorError` with the
0-based offset at fault), and `index` holds `LabelIndex` for bulk matching.

Semantics follow Calico: ``k != "v"`` and ``k not in {...}`` also match when ``k``
is absent; ``contains``/``starts with``/``ends with`` need the label present;
the empty selector means ``all()``.  ``global()`` matches label sets without the
``projectcalico.org/namespace`` label, i.e. non-namespaced resources (Calico uses
it in namespace selectors to pick global resources).
"""
from __future__ import annotations

from calico_net.model.selector.index import LabelIndex
from calico_net.model.selector.nodes import (
    MAX_NESTING, NAMESPACE_LABEL, ORCHESTRATOR_LABEL, All, And, Contains, EndsWith, Equals,
    Global, Has, In, KeyValue, Not, NotEquals, NotIn, Or, Selector, StartsWith, and_,
    is_valid_label_key, or_,
)
from calico_net.model.selector.parse import SelectorError, parse_selector, validate_selector

__all__ = [
    "NAMESPACE_LABEL",
    "ORCHESTRATOR_LABEL",
    "MAX_NESTING",
    "SelectorError",
    "Selector",
    "All",
    "Global",
    "Has",
    "KeyValue",
    "Equals",
    "NotEquals",
    "In",
    "NotIn",
    "Contains",
    "StartsWith",
    "EndsWith",
    "Not",
    "And",
    "Or",
    "and_",
    "or_",
    "parse_selector",
    "validate_selector",
    "is_valid_label_key",
    "LabelIndex",
]
