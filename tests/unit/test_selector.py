"""Tests for calico_net.model.selector (smoke set; the full suite follows)."""
from __future__ import annotations

import pytest

from calico_net.model.selector import SelectorError, parse_selector


def test_parse_print_evaluate_smoke() -> None:
    sel = parse_selector("role == 'db' && env in {'prod', 'stage'} && !has(quarantine)")
    assert str(sel) == 'role == "db" && env in {"prod", "stage"} && !has(quarantine)'
    assert parse_selector(str(sel)) == sel
    assert sel.evaluate({"role": "db", "env": "prod"})
    assert not sel.evaluate({"role": "db", "env": "prod", "quarantine": ""})


def test_error_position_smoke() -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector("a == 'x' &&")
    assert info.value.position == 11
    assert "end of input" in str(info.value)
