"""The selector tree: one immutable node class per construct of Calico's selector
language, each printing its canonical text and compiling to a matcher.

Nodes are frozen dataclasses (subclasses of `Selector`), hashable and compared by
structure; nested ``&&``/``||`` are flattened on construction. ``str(node)`` prints
the canonical form (double quotes unless the value holds a double quote, single
spaces, set members sorted, the fewest parentheses that keep the meaning).
``Selector.evaluate`` compiles the tree once into a generated Python function (a flat
boolean expression over ``labels.get``), so evaluating is one call with no tree walk;
trees deeper than Python's compiler accepts fall back to nested closures.
"""
from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterator, Mapping

from calico_net.model.fields.checks import show as _show

#: Implicit label carried by namespaced endpoints; ``global()`` tests its absence.
NAMESPACE_LABEL = "projectcalico.org/namespace"
#: Implicit label carried by workload endpoints (for completeness of the vocabulary).
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"

#: Deepest nesting of parentheses and ``!`` the parser accepts.  Real selectors
#: nest a handful of levels; the bound keeps recursion (parse, print, compile)
#: far from Python's stack limit.
MAX_NESTING = 100

#: The characters of a label key (Calico's tokenizer alphabet), for a regex class.
KEY_CHARS = "A-Za-z0-9_./-"
_KEY_FULL_RE = re.compile(f"[{KEY_CHARS}]+\\Z")

def is_valid_label_key(key: str) -> bool:
    """True if ``key`` can be written in a selector (Calico's tokenizer alphabet)."""
    return bool(_KEY_FULL_RE.match(key))


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not _KEY_FULL_RE.match(key):
        raise ValueError(f"invalid label key for a selector: {_show(key)}")


def _check_value(value: object) -> None:
    # Selector strings have no escapes: a value holding both quote characters
    # cannot be written down, so it cannot be part of a selector either.
    if not isinstance(value, str):
        raise ValueError(f"selector values must be strings, not {type(value).__name__}")
    if '"' in value and "'" in value:
        raise ValueError(f"a selector value cannot contain both quote characters: {_show(value)}")


def _quote(value: str) -> str:
    return f"'{value}'" if '"' in value else f'"{value}"'


# Binding strength used by the printer: a child whose strength is lower than its
# context needs parentheses.
_PREC_OR, _PREC_AND, _PREC_UNARY = 1, 2, 3

_CACHE_ATTRS = ("evaluate", "_str", "_keys")


class Selector:
    """Base class of every selector node.  Instances are immutable and hashable;
    ``==`` compares structure.  Use :func:`parse_selector` to make one."""

    __slots__ = ()
    _prec = _PREC_UNARY

    # -- public API --------------------------------------------------------------

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        """True if ``labels`` match.

        The first call compiles the selector and stores the compiled function on
        the instance under this same name, so later ``sel.evaluate(labels)`` calls
        go straight to it (no method dispatch, no tree walk)."""
        return self.compiled()(labels)

    def compiled(self) -> Callable[[Mapping[str, str]], bool]:
        """The compiled matcher, ``labels -> bool`` (what ``evaluate`` calls).
        Equal selectors share one compiled function."""
        fn = self.__dict__.get("evaluate")
        if fn is None:
            fn = _compile_cached(self)
            object.__setattr__(self, "evaluate", fn)
        return fn  # type: ignore[no-any-return]

    def label_keys(self) -> frozenset[str]:
        """The label keys this selector reads."""
        keys = self.__dict__.get("_keys")
        if keys is None:
            acc: set[str] = set()
            self._collect_keys(acc)
            keys = frozenset(acc)
            object.__setattr__(self, "_keys", keys)
        return keys

    def __str__(self) -> str:
        s = self.__dict__.get("_str")
        if s is None:
            s = self._render()
            object.__setattr__(self, "_str", s)
        return s

    def unique_id(self) -> str:
        """A short stable id for this selector (``s:`` + url-safe SHA-224 of the
        canonical text): equal selectors get equal ids, usable in set names."""
        digest = hashlib.sha224(str(self).encode()).digest()
        return "s:" + base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def walk(self) -> Iterator[Selector]:
        """This node and all nodes below it, depth first."""
        yield self

    # -- internals ---------------------------------------------------------------

    def _render(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def _render_in(self, prec: int) -> str:
        text = str(self)
        return f"({text})" if self._prec < prec else text

    def _collect_keys(self, acc: set[str]) -> None:
        pass

    def _code(self, ctx: _CodeGen) -> str:  # pragma: no cover
        raise NotImplementedError

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:  # pragma: no cover
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        # Drop per-instance caches (the compiled function does not pickle).
        return {k: v for k, v in self.__dict__.items() if k not in _CACHE_ATTRS}


@dataclass(frozen=True)
class All(Selector):
    """``all()`` (also the empty selector): matches everything."""

    def _render(self) -> str:
        return "all()"

    def _code(self, ctx: _CodeGen) -> str:
        return "True"

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        return lambda labels: True


@dataclass(frozen=True)
class Global(Selector):
    """``global()``: matches label sets of non-namespaced resources, i.e. those
    without the ``projectcalico.org/namespace`` label."""

    def _render(self) -> str:
        return "global()"

    def _collect_keys(self, acc: set[str]) -> None:
        acc.add(NAMESPACE_LABEL)

    def _code(self, ctx: _CodeGen) -> str:
        return f"{ctx.const(NAMESPACE_LABEL)} not in labels"

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        return lambda labels: NAMESPACE_LABEL not in labels


@dataclass(frozen=True)
class Has(Selector):
    """``has(key)``: the label is present, whatever its value."""

    key: str

    def __post_init__(self) -> None:
        _check_key(self.key)

    def _render(self) -> str:
        return f"has({self.key})"

    def _collect_keys(self, acc: set[str]) -> None:
        acc.add(self.key)

    def _code(self, ctx: _CodeGen) -> str:
        return f"{ctx.const(self.key)} in labels"

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        key = self.key
        return lambda labels: key in labels


@dataclass(frozen=True)
class KeyValue(Selector):
    """A test of one label's value against a string; `_key_value_kind` makes the
    operators (``==``, ``!=``, ``contains``, ``starts with``, ``ends with``)."""

    key: str
    value: str

    _op = ""
    # The generated test, with {k} and {v} for the key's and the value's constants.
    _expr = ""
    # Whether the label must be present: then an empty value only tests presence
    # ("" is in every string, but the label must exist).
    _needs_label = False

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_value(self.value)

    def _render(self) -> str:
        return f"{self.key} {self._op} {_quote(self.value)}"

    def _collect_keys(self, acc: set[str]) -> None:
        acc.add(self.key)

    def _code(self, ctx: _CodeGen) -> str:
        key = ctx.const(self.key)
        if self._needs_label and not self.value:
            return f"{key} in labels"
        return self._expr.format(k=key, v=ctx.const(self.value))

    @staticmethod
    def _test(labels: Mapping[str, str], key: str, value: str) -> bool:  # pragma: no cover
        raise NotImplementedError

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        key, value, test = self.key, self.value, self._test
        return lambda labels: test(labels, key, value)


def _key_value_kind(name: str, op: str, expr: str,
                    test: Callable[[Mapping[str, str], str, str], bool], doc: str, *,
                    needs_label: bool = False) -> type[KeyValue]:
    """The `KeyValue` node for operator `op`: `expr` is its generated test and `test`
    the same test as a function of (labels, key, value)."""
    cls = type(name, (KeyValue,), {
        "__module__": __name__, "__qualname__": name, "__doc__": doc, "_op": op,
        "_expr": expr, "_needs_label": needs_label, "_test": staticmethod(test),
    })
    return dataclass(frozen=True)(cls)


Equals = _key_value_kind(
    "Equals", "==", "get({k}) == {v}", lambda labels, k, v: labels.get(k) == v,
    '``key == "value"``: present with exactly that value.')
NotEquals = _key_value_kind(
    "NotEquals", "!=", "get({k}) != {v}", lambda labels, k, v: labels.get(k) != v,
    '``key != "value"``: absent, or present with another value.')
Contains = _key_value_kind(
    "Contains", "contains", "{v} in get({k}, '')", lambda labels, k, v: k in labels and v in labels[k],
    '``key contains "s"``: present and the value contains ``s``.', needs_label=True)
StartsWith = _key_value_kind(
    "StartsWith", "starts with", "get({k}, '').startswith({v})",
    lambda labels, k, v: k in labels and labels[k].startswith(v),
    '``key starts with "s"``: present and the value starts with ``s``.', needs_label=True)
EndsWith = _key_value_kind(
    "EndsWith", "ends with", "get({k}, '').endswith({v})",
    lambda labels, k, v: k in labels and labels[k].endswith(v),
    '``key ends with "s"``: present and the value ends with ``s``.', needs_label=True)


@dataclass(frozen=True)
class _KeySet(Selector):
    key: str
    values: frozenset[str]

    _op = ""

    def __post_init__(self) -> None:
        _check_key(self.key)
        if isinstance(self.values, str):
            raise ValueError("set values must be an iterable of strings, not a string")
        values = frozenset(self.values)
        for v in values:
            _check_value(v)
        object.__setattr__(self, "values", values)

    def _render(self) -> str:
        members = ", ".join(_quote(v) for v in sorted(self.values))
        return f"{self.key} {self._op} {{{members}}}"

    def _collect_keys(self, acc: set[str]) -> None:
        acc.add(self.key)



    def _code(self, ctx: _CodeGen) -> str:
        # The printed operator ("in", "not in") is Python's own.
        return f"get({ctx.const(self.key)}) {self._op} {ctx.const(self.values)}"

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        key, values = self.key, self.values
        if self._op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values


@dataclass(frozen=True)
class In(_KeySet):
    """``key in {"a", "b"}``: present with one of the values."""

    _op = "in"


@dataclass(frozen=True)
class NotIn(_KeySet):
    """``key not in {"a", "b"}``: absent, or present with none of the values."""

    _op = "not in"


@dataclass(frozen=True)
class Not(Selector):
    """``!x``: negation of a term or of a parenthesised expression."""

    operand: Selector

    def __post_init__(self) -> None:
        if not isinstance(self.operand, Selector):
            raise ValueError(f"Not() needs a Selector, not {type(self.operand).__name__}")

    def _render(self) -> str:
        return "!" + self.operand._render_in(_PREC_UNARY)

    def _collect_keys(self, acc: set[str]) -> None:
        self.operand._collect_keys(acc)

    def walk(self) -> Iterator[Selector]:
        yield self
        yield from self.operand.walk()

    def _code(self, ctx: _CodeGen) -> str:
        # `not` binds looser than the comparisons the leaves generate and tighter
        # than and/or, which always come parenthesised.
        return f"not {self.operand._code(ctx)}"

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        inner = self.operand._closure()
        return lambda labels: not inner(labels)


@dataclass(frozen=True)
class _BoolOp(Selector):
    operands: tuple[Selector, ...]

    _sep = ""       # printed between operands
    _py_sep = ""    # generated between operands
    _decisive = False

    def __post_init__(self) -> None:
        flat: list[Selector] = []
        for op in self.operands:
            if not isinstance(op, Selector):
                raise ValueError(f"operands must be Selectors, not {type(op).__name__}")
            # Flatten: (a && b) && c is a && b && c.  This keeps one structure per
            # meaning-as-written, which is what makes printing round-trip.
            if type(op) is type(self):
                flat.extend(op.operands)  # type: ignore[attr-defined]
            else:
                flat.append(op)
        if len(flat) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two operands; use and_()/or_()")
        object.__setattr__(self, "operands", tuple(flat))

    def _render(self) -> str:
        return self._sep.join(op._render_in(self._prec + 1 if isinstance(op, _BoolOp) else self._prec)
                              for op in self.operands)

    def _collect_keys(self, acc: set[str]) -> None:
        for op in self.operands:
            op._collect_keys(acc)

    def walk(self) -> Iterator[Selector]:
        yield self
        for op in self.operands:
            yield from op.walk()



    def _code(self, ctx: _CodeGen) -> str:
        return "(" + self._py_sep.join(op._code(ctx) for op in self.operands) + ")"

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        fns = tuple(op._closure() for op in self.operands)
        decisive = self._decisive

        def match(labels: Mapping[str, str]) -> bool:
            for fn in fns:  # a loop, not all()/any(genexpr): one stack frame per level
                if bool(fn(labels)) is decisive:
                    return decisive
            return not decisive

        return match


@dataclass(frozen=True)
class And(_BoolOp):
    """``a && b && ...``: every operand matches."""

    _sep, _py_sep, _prec = " && ", " and ", _PREC_AND
    _decisive = False   # one operand that does not match decides


@dataclass(frozen=True)
class Or(_BoolOp):
    """``a || b || ...``: some operand matches."""

    _sep, _py_sep, _prec = " || ", " or ", _PREC_OR
    _decisive = True    # one operand that matches decides


def and_(*operands: Selector) -> Selector:
    """Conjunction of any number of selectors (``all()`` for none)."""
    if not operands:
        return All()
    return operands[0] if len(operands) == 1 else And(operands)


def or_(*operands: Selector) -> Selector:
    """Disjunction of one or more selectors."""
    if not operands:
        raise ValueError("or_() needs at least one operand")
    return operands[0] if len(operands) == 1 else Or(operands)


# ------------------------------------------------------------------------ compiling


class _CodeGen:
    """Collects the constants a generated evaluator refers to by name."""

    def __init__(self) -> None:
        self.consts: dict[str, Any] = {}
        self._names: dict[tuple[type, Any], str] = {}

    def const(self, value: Any) -> str:
        k = (type(value), value)
        name = self._names.get(k)
        if name is None:
            name = f"c{len(self._names)}"
            self._names[k] = name
            self.consts[name] = value
        return name


@lru_cache(maxsize=8192)
def _compile_cached(sel: Selector) -> Callable[[Mapping[str, str]], bool]:
    # Keyed by structure: different texts of one selector compile once.
    return _compile(sel)


def _compile(sel: Selector) -> Callable[[Mapping[str, str]], bool]:
    """Compile ``sel`` to ``def f(labels): get = labels.get; return <expr>``."""
    ctx = _CodeGen()
    try:
        expr = sel._code(ctx)
        src = f"def _selector(labels):\n    get = labels.get\n    return {expr}\n"
        namespace: dict[str, Any] = dict(ctx.consts)
        exec(compile(src, "<selector>", "exec"), namespace)  # noqa: S102 - our own code
        return namespace["_selector"]  # type: ignore[no-any-return]
    except (SyntaxError, RecursionError, MemoryError):
        # Hand-built trees deeper than Python's compiler allows: nested closures.
        return sel._closure()

