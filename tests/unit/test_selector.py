"""Tests for calico_net.model.selector: parser, printer, evaluator and LabelIndex.

Table tests pin down each construct, Calico's semantics, quoting and the error
positions; hypothesis checks the round trip parse(print(x)) == x over generated
ASTs, the parser against noisy-but-equivalent renderings, the compiled evaluator
against an independent interpreter, and LabelIndex.select against brute force.
"""
from __future__ import annotations

import pickle
from types import MappingProxyType
from typing import Any, Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calico_net.model.selector import (  # noqa: I001
    MAX_NESTING,
    NAMESPACE_LABEL,
    All,
    And,
    Contains,
    EndsWith,
    Equals,
    Global,
    Has,
    In,
    LabelIndex,
    Not,
    NotEquals,
    NotIn,
    Or,
    Selector,
    SelectorError,
    StartsWith,
    and_,
    is_valid_label_key,
    or_,
    parse_selector,
    validate_selector,
)
from calico_net.model.selector.nodes import _CodeGen

# ------------------------------------------------------------------ parse: constructs

PARSE_CASES: list[tuple[str, Selector]] = [
    ("", All()),
    ("   \t ", All()),
    ("all()", All()),
    ("all( )", All()),
    ("global()", Global()),
    ("global(  )", Global()),
    ('a == "b"', Equals("a", "b")),
    ("a == 'b'", Equals("a", "b")),
    ('a=="b"', Equals("a", "b")),
    ('a != "b"', NotEquals("a", "b")),
    ("has(a)", Has("a")),
    ("has( a )", Has("a")),
    ("!has(a)", Not(Has("a"))),
    ("! has(a)", Not(Has("a"))),
    ('a in {"x", "y"}', In("a", frozenset({"x", "y"}))),
    ("a in {'y','x'}", In("a", frozenset({"x", "y"}))),
    ('a in {"x", "x"}', In("a", frozenset({"x"}))),
    ('a in {"x",}', In("a", frozenset({"x"}))),  # trailing comma, as Calico
    ("a in {}", In("a", frozenset())),
    ("a in{'x'}", In("a", frozenset({"x"}))),
    ('a not in {"x"}', NotIn("a", frozenset({"x"}))),
    ('a notin {"x"}', NotIn("a", frozenset({"x"}))),  # Calico tolerates this
    ('a contains "s"', Contains("a", "s")),
    ('a starts with "s"', StartsWith("a", "s")),
    ('a startswith "s"', StartsWith("a", "s")),
    ('a ends with "s"', EndsWith("a", "s")),
    ('a ends  with "s"', EndsWith("a", "s")),
    ('a contains"s"', Contains("a", "s")),
    ('!a == "b"', Not(Equals("a", "b"))),
    ('!(a == "b")', Not(Equals("a", "b"))),
    ("!!has(a)", Not(Not(Has("a")))),
    ('(a == "b")', Equals("a", "b")),
    ('((a == "b"))', Equals("a", "b")),
    ("has(a) && has(b)", And((Has("a"), Has("b")))),
    ("has(a) || has(b)", Or((Has("a"), Has("b")))),
    ("has(a) && has(b) && has(c)", And((Has("a"), Has("b"), Has("c")))),
    ("(has(a) && has(b)) && has(c)", And((Has("a"), Has("b"), Has("c")))),
    ("has(a) && (has(b) && has(c))", And((Has("a"), Has("b"), Has("c")))),
    ("(has(a) || has(b)) || has(c)", Or((Has("a"), Has("b"), Has("c")))),
    # label keys: Calico's alphabet, including prefixes and keyword-like names
    ('projectcalico.org/namespace == "default"', Equals(NAMESPACE_LABEL, "default")),
    ('k8s.io/x-y_z.w == "v"', Equals("k8s.io/x-y_z.w", "v")),
    ('1 == "2"', Equals("1", "2")),
    ('-a == "b"', Equals("-a", "b")),
    ('in == "x"', Equals("in", "x")),
    ('not == "x"', Equals("not", "x")),
    ('contains contains "x"', Contains("contains", "x")),
    ('has == "x"', Equals("has", "x")),
    ('all in {"x"}', In("all", frozenset({"x"}))),
    ('global != "x"', NotEquals("global", "x")),
    ("has(projectcalico.org/orchestrator)", Has("projectcalico.org/orchestrator")),
    # whitespace of all kinds between tokens
    ('a\t==\n"b"\r\n&&\thas(c)', And((Equals("a", "b"), Has("c")))),
]


@pytest.mark.parametrize("text,expected", PARSE_CASES)
def test_parse(text: str, expected: Selector) -> None:
    assert parse_selector(text) == expected


# ------------------------------------------------------------------ precedence


@pytest.mark.parametrize(
    "text,expected",
    [
        ("has(a) || has(b) && has(c)", Or((Has("a"), And((Has("b"), Has("c")))))),
        ("has(a) && has(b) || has(c)", Or((And((Has("a"), Has("b"))), Has("c")))),
        ("(has(a) || has(b)) && has(c)", And((Or((Has("a"), Has("b"))), Has("c")))),
        ("!has(a) && has(b)", And((Not(Has("a")), Has("b")))),
        ("!has(a) || has(b)", Or((Not(Has("a")), Has("b")))),
        ("!(has(a) && has(b))", Not(And((Has("a"), Has("b"))))),
        ("!(has(a) || has(b)) && has(c)", And((Not(Or((Has("a"), Has("b")))), Has("c")))),
        ('!a == "x" || b != "y"', Or((Not(Equals("a", "x")), NotEquals("b", "y")))),
        (
            "has(a) || has(b) && !has(c) || has(d)",
            Or((Has("a"), And((Has("b"), Not(Has("c")))), Has("d"))),
        ),
    ],
)
def test_precedence(text: str, expected: Selector) -> None:
    assert parse_selector(text) == expected


def test_precedence_changes_meaning() -> None:
    # With && above ||, a || (b && c) matches {a}; (a || b) && c does not.
    labels = {"a": "1"}
    assert parse_selector("has(a) || has(b) && has(c)").evaluate(labels)
    assert not parse_selector("(has(a) || has(b)) && has(c)").evaluate(labels)


# ------------------------------------------------------------------ printing


@pytest.mark.parametrize(
    "text,canonical",
    [
        ("", "all()"),
        ("all( )", "all()"),
        ("global()", "global()"),
        ("a=='b'", 'a == "b"'),
        ("a !=   'b'", 'a != "b"'),
        ("has( a )", "has(a)"),
        ("a in {'z','y', 'z'}", 'a in {"y", "z"}'),
        ("a in {}", "a in {}"),
        ("a notin {'x'}", 'a not in {"x"}'),
        ("a startswith 'x'", 'a starts with "x"'),
        ("a ends   with 'x'", 'a ends with "x"'),
        ("a contains 'x'", 'a contains "x"'),
        ("((has(a)))", "has(a)"),
        ("(has(a) && has(b)) && has(c)", "has(a) && has(b) && has(c)"),
        ("(has(a) && has(b)) || has(c)", "has(a) && has(b) || has(c)"),
        ("has(a) || (has(b) && has(c))", "has(a) || has(b) && has(c)"),
        ("(has(a) || has(b)) && has(c)", "(has(a) || has(b)) && has(c)"),
        ("!(has(a))", "!has(a)"),
        ("!(has(a) && has(b))", "!(has(a) && has(b))"),
        ("!(has(a) || has(b))", "!(has(a) || has(b))"),
        ("! ! has(a)", "!!has(a)"),
        ("!(a == 'x')", '!a == "x"'),
        ("has(a) && !(has(b) || !has(c))", "has(a) && !(has(b) || !has(c))"),
        # quoting: double quotes unless the value holds a double quote
        ("a == \"it's\"", "a == \"it's\""),
        ("a == 'say \"hi\"'", "a == 'say \"hi\"'"),
        ("a in {'\"', \"'\"}", "a in {'\"', \"'\"}"),
        ("a == ''", 'a == ""'),
    ],
)
def test_canonical_print(text: str, canonical: str) -> None:
    sel = parse_selector(text)
    assert str(sel) == canonical
    assert parse_selector(canonical) == sel
    assert str(parse_selector(canonical)) == canonical  # idempotent


# ------------------------------------------------------------------ quoting edge cases


@pytest.mark.parametrize(
    "text,value",
    [
        ('a == "it\'s"', "it's"),
        ("a == 'say \"hi\"'", 'say "hi"'),
        ('a == "back\\\\slash"', "back\\\\slash"),  # no escapes: backslashes are literal
        ('a == "ends with \\"', "ends with \\"),  # a trailing backslash does not escape the quote
        ('a == ""', ""),
        ("a == ''", ""),
        ('a == "  spaced  "', "  spaced  "),
        ('a == "&& || ! ( ) { } , == !="', "&& || ! ( ) { } , == !="),
        ('a == "has(b)"', "has(b)"),
        ('a == "ünïcødé ✓"', "ünïcødé ✓"),
        ('a == "line\nbreak"', "line\nbreak"),
    ],
)
def test_string_literals(text: str, value: str) -> None:
    sel = parse_selector(text)
    assert sel == Equals("a", value)
    assert parse_selector(str(sel)) == sel


def test_value_with_both_quotes_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="both quote"):
        Equals("a", "it's \"x\"")
    with pytest.raises(ValueError, match="both quote"):
        In("a", {"ok", "it's \"x\""})


@pytest.mark.parametrize("bad_key", ["", "a b", "a=b", "é", "a(b)", "a'b"])
def test_invalid_keys_rejected_by_constructors(bad_key: str) -> None:
    assert not is_valid_label_key(bad_key)
    with pytest.raises(ValueError):
        Has(bad_key)
    with pytest.raises(ValueError):
        Equals(bad_key, "v")


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        And((Has("a"),))
    with pytest.raises(ValueError):
        Or(())
    with pytest.raises(ValueError):
        And((Has("a"), "has(b)"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Not("has(a)")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        In("a", "xy")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Equals("a", 1)  # type: ignore[arg-type]
    assert and_() == All()
    assert and_(Has("a")) == Has("a")
    assert or_(Has("a")) == Has("a")
    assert and_(Has("a"), And((Has("b"), Has("c")))) == And((Has("a"), Has("b"), Has("c")))
    with pytest.raises(ValueError):
        or_()


# ------------------------------------------------------------------ evaluation

NS = NAMESPACE_LABEL
EVAL_CASES: list[tuple[str, dict[str, str], bool]] = [
    ("", {}, True),
    ("all()", {"a": "b"}, True),
    ("global()", {}, True),
    ("global()", {"a": "b"}, True),
    ("global()", {NS: "default"}, False),
    ("!global()", {NS: "default"}, True),
    ('a == "b"', {"a": "b"}, True),
    ('a == "b"', {"a": "c"}, False),
    ('a == "b"', {}, False),
    ('a == ""', {"a": ""}, True),
    ('a == ""', {}, False),
    ('a != "b"', {"a": "b"}, False),
    ('a != "b"', {"a": "c"}, True),
    ('a != "b"', {}, True),  # Calico: absent label is "not equal"
    ("has(a)", {"a": ""}, True),
    ("has(a)", {"b": "a"}, False),
    ("!has(a)", {}, True),
    ('a in {"x", "y"}', {"a": "y"}, True),
    ('a in {"x", "y"}', {"a": "z"}, False),
    ('a in {"x", "y"}', {}, False),
    ("a in {}", {"a": ""}, False),
    ('a not in {"x", "y"}', {"a": "z"}, True),
    ('a not in {"x", "y"}', {"a": "x"}, False),
    ('a not in {"x", "y"}', {}, True),  # Calico: absent label is "not in"
    ("a not in {}", {}, True),
    ('a contains "ell"', {"a": "hello"}, True),
    ('a contains "ell"', {"a": "help"}, False),
    ('a contains "ell"', {}, False),
    ('a contains ""', {"a": ""}, True),
    ('a contains ""', {}, False),  # the label must be present
    ('a starts with "he"', {"a": "hello"}, True),
    ('a starts with "lo"', {"a": "hello"}, False),
    ('a starts with ""', {}, False),
    ('a starts with ""', {"a": "x"}, True),
    ('a ends with "lo"', {"a": "hello"}, True),
    ('a ends with "he"', {"a": "hello"}, False),
    ('a ends with ""', {}, False),
    ('!a == "b"', {}, True),
    ('!a == "b"', {"a": "b"}, False),
    ("!!has(a)", {"a": "1"}, True),
    ("has(a) && has(b)", {"a": "1"}, False),
    ("has(a) && has(b)", {"a": "1", "b": "2"}, True),
    ("has(a) || has(b)", {"b": "2"}, True),
    ("has(a) || has(b)", {"c": "2"}, False),
    ("!(has(a) || has(b))", {"c": "2"}, True),
    ('projectcalico.org/namespace == "prod" && role in {"db", "web"}', {NS: "prod", "role": "db"}, True),
    ('projectcalico.org/namespace == "prod" && role in {"db", "web"}', {NS: "dev", "role": "db"}, False),
]


@pytest.mark.parametrize("text,labels,expected", EVAL_CASES)
def test_evaluate(text: str, labels: dict[str, str], expected: bool) -> None:
    sel = parse_selector(text)
    assert sel.evaluate(labels) is expected
    assert sel.evaluate(labels) is expected  # second call goes through the compiled fn
    assert sel.evaluate(MappingProxyType(labels)) is expected  # any Mapping
    assert reference_eval(sel, labels) is expected
    index = LabelIndex()
    index.add("x", labels)
    assert index.select(sel) == ({"x"} if expected else set())


def test_label_keys() -> None:
    sel = parse_selector('a == "1" && (has(b) || !c in {"x"}) && d contains "q" || global()')
    assert sel.label_keys() == frozenset({"a", "b", "c", "d", NAMESPACE_LABEL})
    assert parse_selector("all()").label_keys() == frozenset()
    assert parse_selector("").label_keys() == frozenset()


# ------------------------------------------------------------------ errors

ERROR_CASES: list[tuple[str, int, str]] = [
    ("a == 'x' &&", 11, "expected a label expression"),
    ("a = 'x'", 2, "expected '=='"),
    ("a == x", 5, "expected a quoted string after '=='"),
    ("a != has(b)", 5, "expected a quoted string after '!='"),
    ("(a == 'x'", 9, "expected ')' to close the '(' at position 0"),
    ("has(a) && (b == 'x' || c == 'y'", 31, "expected ')' to close the '(' at position 10"),
    ("a == 'x')", 8, "unexpected ')'"),
    ("has()", 4, "expected a label key inside has()"),
    ("has(a", 5, "expected ')'"),
    ("has(a b)", 6, "expected ')'"),
    ("has (a)", 4, "expected an operator after label 'has'"),
    ("a in 'x'", 5, "expected '{' after 'in'"),
    ("a not in ('x')", 9, "expected '{' after 'not in'"),
    ("a in {'x' 'y'}", 10, "expected ',' or '}'"),
    ("a in {'x',, 'y'}", 10, "expected a quoted string or '}'"),
    ("a in {'x'", 9, "expected ',' or '}'"),
    ("a in {x}", 6, "expected a quoted string or '}'"),
    ("&& a == 'x'", 0, "expected a label expression"),
    ("a == 'x' & b == 'y'", 9, "expected '&&'"),
    ("a == 'x' | b == 'y'", 9, "expected '||'"),
    ("a == 'x", 5, "unterminated string"),
    ('a == "x\'', 5, "unterminated string"),
    ("all(x)", 4, "expected ')' after 'all('"),
    ("global(1)", 7, "expected ')' after 'global('"),
    ("a @ 'x'", 2, "unexpected character '@'"),
    ("a", 1, "expected an operator after label 'a'"),
    ("a b == 'x'", 2, "expected an operator after label 'a'"),
    ("a starts 'x'", 2, "expected an operator after label 'a'"),
    ("a inx {'x'}", 2, "expected an operator after label 'a'"),
    ("a contains", 10, "expected a quoted string after 'contains'"),
    ("!", 1, "expected a label expression"),
    ("()", 1, "expected a label expression"),
    ("!= 'x'", 0, "expected a label expression"),
    ("a == 'x' b == 'y'", 9, "expected '&&', '||' or the end of the selector"),
    ("a == 'x' || (b == 'y' && )", 25, "expected a label expression"),
    ("'x' == a", 0, "expected a label expression"),
    ("a == 'x' && é == 'y'", 12, "unexpected character 'é'"),
    ("(" * (MAX_NESTING + 1) + "all()" + ")" * (MAX_NESTING + 1), MAX_NESTING, "nested too deeply"),
    ("!" * (MAX_NESTING + 1) + "all()", MAX_NESTING, "nested too deeply"),
]


@pytest.mark.parametrize("text,position,reason", ERROR_CASES)
def test_errors(text: str, position: int, reason: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.text == text
    assert err.position == position, str(err)
    assert reason in err.reason
    assert str(err).startswith(f'selector "{text}": ')
    assert f"at position {position} (" in str(err)


def test_error_message_format() -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector("a == 'x' &&")
    assert str(info.value) == (
        "selector \"a == 'x' &&\": expected a label expression (a label key, has(), all(), "
        "global(), '!' or '(') at position 11 (end of input)"
    )
    with pytest.raises(SelectorError) as info:
        parse_selector("a = 'x' && has(b)")
    assert str(info.value).endswith("at position 2 (near \"= 'x' && has(b)\")")


def test_error_is_picklable_and_validate_raises() -> None:
    with pytest.raises(SelectorError) as info:
        validate_selector("a ==")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.text, copy.position, copy.reason) == (info.value.text, info.value.position, info.value.reason)
    assert str(copy) == str(info.value)
    validate_selector("has(a)")


def test_non_string_rejected() -> None:
    with pytest.raises(TypeError):
        parse_selector(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------ object behaviour


def test_parse_is_cached_and_selectors_hashable() -> None:
    assert parse_selector("has(a) && b == 'c'") is parse_selector("has(a) && b == 'c'")
    a = parse_selector("b == 'c' && has(a)")
    b = parse_selector('(b == "c") && (has(a))')
    assert a == b and hash(a) == hash(b) and a is not b
    assert len({a, b, parse_selector("has(a)")}) == 2
    assert a.unique_id() == b.unique_id() != parse_selector("has(a)").unique_id()
    assert a.unique_id().startswith("s:")
    assert Equals("a", "b") != NotEquals("a", "b")
    assert In("a", {"x"}) != NotIn("a", {"x"})


def test_immutable() -> None:
    sel = parse_selector("a == 'b'")
    with pytest.raises(AttributeError):
        sel.key = "c"  # type: ignore[misc]


def test_pickle_after_compile() -> None:
    sel = parse_selector("a in {'x'} && !has(b) || c starts with 'q'")
    assert sel.evaluate({"a": "x"})  # compiled function now cached on the instance
    str(sel)
    copy = pickle.loads(pickle.dumps(sel))
    assert copy == sel
    assert copy.evaluate({"a": "x"}) and not copy.evaluate({"a": "x", "b": ""})


def test_evaluate_compiles_once_even_through_a_bound_method() -> None:
    sel = parse_selector("app == 'web' && tier in {'a', 'b'}")
    ev = sel.evaluate  # bound method captured before the first call
    assert ev({"app": "web", "tier": "a"}) and not ev({"app": "web"})
    fn = sel.compiled()
    assert sel.evaluate is fn  # the instance now carries the compiled function
    assert ev({"app": "web", "tier": "b"}) and sel.compiled() is fn
    # equal selectors written differently share one compiled function
    other = parse_selector('tier in {"b", "a"} && app == "web"')
    same = parse_selector("(app == \"web\") && tier in {'b','a'}")
    assert same == sel and same is not sel and same.compiled() is fn
    assert other != sel  # operand order is part of the structure


def test_walk() -> None:
    sel = parse_selector("has(a) && !(b == 'c' || has(d))")
    kinds = [type(n).__name__ for n in sel.walk()]
    assert kinds == ["And", "Has", "Not", "Or", "Equals", "Has"]


def test_deep_hand_built_tree_falls_back_to_closures() -> None:
    # Deeper than Python's compiler accepts in one expression: evaluate must still
    # work (via nested closures) and agree with the reference interpreter.
    sel: Selector = Has("a")
    for i in range(250):
        sel = Not(And((sel, Has("b")))) if i % 2 else Or((sel, Has("c")))
    with pytest.raises(SyntaxError):
        compile(sel._code(_CodeGen()), "<deep>", "eval")
    for labels in ({}, {"a": "1"}, {"b": "1"}, {"a": "1", "b": "1"}, {"c": "1"}):
        assert sel.evaluate(labels) is reference_eval(sel, labels)
    assert sel.evaluate.__name__ != "_selector"  # closures, not generated code


def test_deepest_parsable_selector_compiles_and_prints() -> None:
    text = "(" * (MAX_NESTING - 1) + "has(a) || !has(b)" + ")" * (MAX_NESTING - 1)
    sel = parse_selector(text)
    assert str(sel) == "has(a) || !has(b)"
    text = "(has(a) && " * 40 + "has(z)" + " || has(b))" * 40
    sel = parse_selector(text)
    assert parse_selector(str(sel)) == sel
    assert sel.evaluate({"a": "1", "b": ""}) is reference_eval(sel, {"a": "1", "b": ""})


# ------------------------------------------------------------------ LabelIndex


def test_label_index_incremental() -> None:
    idx = LabelIndex()
    idx.add(1, {"app": "web", "env": "prod"})
    idx.add(2, {"app": "db", "env": "prod"})
    idx.add(3, {"app": "web", "env": "dev", NS: "team-a"})
    assert len(idx) == 3 and 2 in idx and list(idx) == [1, 2, 3]
    assert idx.select("app == 'web'") == {1, 3}
    assert idx.select("env != 'prod'") == {3}
    assert idx.select("global()") == {1, 2}
    assert idx.select("app == 'web' && !env in {'dev'}") == {1}
    idx.add(3, {"app": "db", "env": "dev"})  # replace: app changes, NS label goes
    assert idx.labels(3) == {"app": "db", "env": "dev"}
    assert idx.select("app == 'web'") == {1}
    assert idx.select("has(projectcalico.org/namespace)") == set()
    assert idx.select("app == 'db'") == {2, 3}
    idx.remove(2)
    idx.remove(2)  # unknown ids are ignored
    assert idx.select("app == 'db'") == {3}
    assert idx.select("all()") == {1, 3}
    idx.remove(1)
    idx.remove(3)
    assert len(idx) == 0 and idx.select("all()") == set() and idx.select("!has(x)") == set()
    # no empty buckets are left behind
    assert idx._by_value == {} and idx._by_key == {}


def test_label_index_results_are_private_copies() -> None:
    idx = LabelIndex()
    idx.add("a", {"k": "v"})
    idx.add("b", {"k": "w"})
    for text in ("k == 'v'", "has(k)", "all()", "k in {'v'}", "k == 'v' && all()"):
        got = idx.select(text)
        got.add("intruder")
        got.discard("a")
    assert idx.select("k == 'v'") == {"a"}
    assert idx.select("has(k)") == {"a", "b"}
    assert idx.select("all()") == {"a", "b"}


def test_label_index_input_mapping_is_copied() -> None:
    idx = LabelIndex()
    labels = {"k": "v"}
    idx.add("a", labels)
    labels["k"] = "w"
    assert idx.select("k == 'v'") == {"a"}


# ------------------------------------------------------------------ reference interpreter


def reference_eval(sel: Selector, labels: Mapping[str, str]) -> bool:
    """Straightforward tree-walking interpreter of Calico's semantics."""
    if isinstance(sel, All):
        return True
    if isinstance(sel, Global):
        return NAMESPACE_LABEL not in labels
    if isinstance(sel, Has):
        return sel.key in labels
    if isinstance(sel, Not):
        return not reference_eval(sel.operand, labels)
    if isinstance(sel, (And, Or)):
        # Loops rather than all()/any() over generators: half the stack depth,
        # which the deep-tree test needs.
        want = isinstance(sel, Or)
        for op in sel.operands:
            if reference_eval(op, labels) is want:
                return want
        return not want
    present = sel.key in labels  # type: ignore[attr-defined]
    value = labels.get(sel.key)  # type: ignore[attr-defined]
    if isinstance(sel, Equals):
        return present and value == sel.value
    if isinstance(sel, NotEquals):
        return not present or value != sel.value
    if isinstance(sel, In):
        return present and value in sel.values
    if isinstance(sel, NotIn):
        return not present or value not in sel.values
    if isinstance(sel, Contains):
        return present and sel.value in value  # type: ignore[operator]
    if isinstance(sel, StartsWith):
        return present and value.startswith(sel.value)  # type: ignore[union-attr]
    if isinstance(sel, EndsWith):
        return present and value.endswith(sel.value)  # type: ignore[union-attr]
    raise AssertionError(sel)


# ------------------------------------------------------------------ strategies

# A small shared vocabulary makes selectors and label sets actually meet.
KEYS = ["a", "b", "app", NAMESPACE_LABEL, "k8s.io/x-y_z", "in", "has", "not", "contains", "1"]
VALUES = ["", "x", "xy", "yx", "prod", "a b", "it's", 'say "hi"', "\\", "&&", "{}", "é"]

any_key = st.from_regex(r"[A-Za-z0-9_./-]{1,12}", fullmatch=True)
any_value = st.text(max_size=8).filter(lambda v: not ('"' in v and "'" in v))
keys = st.one_of(st.sampled_from(KEYS), any_key)
values = st.one_of(st.sampled_from(VALUES), any_value)
shared_keys = st.sampled_from(KEYS)
shared_values = st.sampled_from(VALUES)


def leaves(k: st.SearchStrategy[str], v: st.SearchStrategy[str]) -> st.SearchStrategy[Selector]:
    value_sets = st.frozensets(v, max_size=4)
    return st.one_of(
        st.just(All()),
        st.just(Global()),
        st.builds(Has, k),
        st.builds(Equals, k, v),
        st.builds(NotEquals, k, v),
        st.builds(In, k, value_sets),
        st.builds(NotIn, k, value_sets),
        st.builds(Contains, k, v),
        st.builds(StartsWith, k, v),
        st.builds(EndsWith, k, v),
    )


def trees(k: st.SearchStrategy[str], v: st.SearchStrategy[str]) -> st.SearchStrategy[Selector]:
    return st.recursive(
        leaves(k, v),
        lambda children: st.one_of(
            st.builds(Not, children),
            st.lists(children, min_size=2, max_size=4).map(lambda ops: And(tuple(ops))),
            st.lists(children, min_size=2, max_size=4).map(lambda ops: Or(tuple(ops))),
        ),
        max_leaves=12,
    )


selectors = trees(keys, values)
shared_selectors = trees(shared_keys, shared_values)
label_sets = st.dictionaries(shared_keys, shared_values, max_size=6)


def noisy_render(sel: Selector, draw: Any) -> str:
    """Render ``sel`` in a random but equivalent spelling: other quotes where the
    value allows, extra whitespace, redundant parentheses, operator variants."""

    def ws() -> str:
        return draw(st.sampled_from(["", " ", "  ", "\t", "\n"]))

    def sp() -> str:  # at least one space where words would otherwise merge
        return draw(st.sampled_from([" ", "  ", "\t"]))

    def q(value: str) -> str:
        options = []
        if '"' not in value:
            options.append(f'"{value}"')
        if "'" not in value:
            options.append(f"'{value}'")
        return draw(st.sampled_from(options))

    def r(node: Selector) -> str:
        if isinstance(node, All):
            text = draw(st.sampled_from(["all()", "all( )"]))
        elif isinstance(node, Global):
            text = "global(" + ws() + ")"
        elif isinstance(node, Has):
            text = "has(" + ws() + node.key + ws() + ")"
        elif isinstance(node, (Equals, NotEquals)):
            op = "==" if isinstance(node, Equals) else "!="
            text = node.key + ws() + op + ws() + q(node.value)
        elif isinstance(node, (Contains, StartsWith, EndsWith)):
            op = {Contains: "contains", StartsWith: draw(st.sampled_from(["starts with", "startswith"])),
                  EndsWith: draw(st.sampled_from(["ends with", "ends  with"]))}[type(node)]
            text = node.key + sp() + op + ws() + q(node.value)
        elif isinstance(node, (In, NotIn)):
            op = "in" if isinstance(node, In) else draw(st.sampled_from(["not in", "notin"]))
            members = list(node.values)
            if members:
                members = draw(st.permutations(members))
                members += draw(st.lists(st.sampled_from(members), max_size=2))  # duplicates
            body = ("," + ws()).join(q(m) for m in members)
            if members and draw(st.booleans()):
                body += ","  # trailing comma
            text = node.key + sp() + op + ws() + "{" + ws() + body + ws() + "}"
        elif isinstance(node, Not):
            text = "!" + ws() + "(" + ws() + r(node.operand) + ws() + ")"
        elif isinstance(node, (And, Or)):
            sep = "&&" if isinstance(node, And) else "||"
            text = (ws() + sep + ws()).join("(" + r(op) + ")" for op in node.operands)
        else:  # pragma: no cover
            raise AssertionError(node)
        if draw(st.integers(0, 4)) == 0:
            text = "(" + ws() + text + ws() + ")"
        return text

    return ws() + r(sel) + ws()


# ------------------------------------------------------------------ properties

# No wall-clock limits in tests (CI machines are shared and loaded): neither
# hypothesis's per-example deadline nor its data-generation speed health check.
NO_TIMING: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


@given(selectors)
@settings(max_examples=300, **NO_TIMING)
def test_roundtrip_print_parse(sel: Selector) -> None:
    text = str(sel)
    again = parse_selector(text)
    assert again == sel
    assert str(again) == text


@given(st.data(), selectors)
@settings(max_examples=200, **NO_TIMING)
def test_noisy_spellings_parse_to_the_same_ast(data: st.DataObject, sel: Selector) -> None:
    # Redundant parentheses around a Not's operand or And/Or operands never change
    # the AST, because parentheses leave no trace and And/Or are flattened.
    text = noisy_render(sel, data.draw)
    assert parse_selector(text) == sel, text


@given(shared_selectors, label_sets)
@settings(max_examples=400, **NO_TIMING)
def test_compiled_evaluate_matches_reference(sel: Selector, labels: dict[str, str]) -> None:
    assert sel.evaluate(labels) is reference_eval(sel, labels)
    assert sel._closure()(labels) is reference_eval(sel, labels)


@given(st.text(alphabet="ab =!&|()'\"{},hasinotcl_/.-\t", max_size=30))
@settings(max_examples=500, **NO_TIMING)
def test_arbitrary_text_parses_or_raises_selector_error(text: str) -> None:
    try:
        sel = parse_selector(text)
    except SelectorError as err:
        assert 0 <= err.position <= len(text)
        assert err.text == text
    else:
        assert parse_selector(str(sel)) == sel


@given(st.lists(shared_selectors, min_size=1, max_size=5), st.lists(label_sets, max_size=25))
@settings(max_examples=200, **NO_TIMING)
def test_label_index_select_matches_brute_force(sels: list[Selector], sets: list[dict[str, str]]) -> None:
    idx = LabelIndex()
    for i, labels in enumerate(sets):
        idx.add(i, labels)
    for sel in sels:
        expected = {i for i, labels in enumerate(sets) if reference_eval(sel, labels)}
        assert idx.select(sel) == expected
        assert idx.select_brute_force(sel) == expected


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 15), label_sets),
        st.tuples(st.just("remove"), st.integers(0, 15), st.just({})),
    ),
    max_size=40,
)


@given(ops, st.lists(shared_selectors, min_size=1, max_size=4))
@settings(max_examples=200, **NO_TIMING)
def test_label_index_incremental_updates_match_brute_force(
    operations: list[tuple[str, int, dict[str, str]]], sels: list[Selector]
) -> None:
    idx = LabelIndex()
    model: dict[int, dict[str, str]] = {}
    for op, item_id, labels in operations:
        if op == "add":
            idx.add(item_id, labels)
            model[item_id] = dict(labels)
        else:
            idx.remove(item_id)
            model.pop(item_id, None)
    assert len(idx) == len(model)
    for sel in sels:
        expected = {i for i, labels in model.items() if reference_eval(sel, labels)}
        assert idx.select(sel) == expected
