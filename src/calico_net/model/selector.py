"""Calico's label selector language: parser, canonical printer, evaluator and index.

Selectors choose endpoints (and other labelled resources) by their labels, e.g.
``role == "db" && env in {"prod", "stage"} && !has(quarantine)``.  This module is
the one implementation used by the resource validation, the agent and calicoctl.

How it is built:

* A hand-written scanner turns the text into tokens with character offsets.  It
  follows libcalico-go's tokenizer: label keys are runs of ``[A-Za-z0-9_./-]``,
  strings are ``"..."`` or ``'...'`` with *no* escape sequences (a string ends at
  the next quote of the kind that opened it, a backslash is an ordinary character),
  and the words ``in``, ``not in``, ``contains``, ``starts with`` and ``ends with``
  are operators only right after a label key (so a label may be called ``in``).
* A recursive-descent parser builds an immutable AST of frozen dataclasses
  (subclasses of :class:`Selector`).  Precedence: ``!`` binds tightest, then
  ``&&``, then ``||``.  Nested ``&&``/``||`` are flattened, so ``(a && b) && c``
  and ``a && (b && c)`` are the same selector, and parentheses leave no trace.
  Malformed text raises :class:`SelectorError` with the 0-based offset at fault.
  ``parse_selector`` is memoised: the same selector text recurs across policies.
* ``str(selector)`` prints a canonical form (double quotes unless the value holds
  a double quote, single spaces, set members sorted, the fewest parentheses that
  keep the meaning) which parses back to an equal selector.
* ``Selector.evaluate`` compiles each selector once into a generated Python
  function (a flat boolean expression over ``labels.get``), so evaluating is one
  call with no tree walk.
* :class:`LabelIndex` holds many label sets and answers "which ids match this
  selector" with set algebra over an inverted index (key -> value -> ids) instead
  of evaluating every label set; it agrees exactly with ``evaluate``.

Semantics follow Calico: ``k != "v"`` and ``k not in {...}`` also match when ``k``
is absent; ``contains``/``starts with``/``ends with`` need the label present;
the empty selector means ``all()``.  ``global()`` matches label sets without the
``projectcalico.org/namespace`` label, i.e. non-namespaced resources (Calico uses
it in namespace selectors to pick global resources).
"""
from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Hashable, Iterable, Iterator, Mapping

from calico_net.model.fields import show as _show

__all__ = [
    "NAMESPACE_LABEL",
    "ORCHESTRATOR_LABEL",
    "MAX_NESTING",
    "SelectorError",
    "Selector",
    "All",
    "Global",
    "Has",
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

#: Implicit label carried by namespaced endpoints; ``global()`` tests its absence.
NAMESPACE_LABEL = "projectcalico.org/namespace"
#: Implicit label carried by workload endpoints (for completeness of the vocabulary).
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"

#: Deepest nesting of parentheses and ``!`` the parser accepts.  Real selectors
#: nest a handful of levels; the bound keeps recursion (parse, print, compile)
#: far from Python's stack limit.
MAX_NESTING = 100

_KEY_CHARS = "A-Za-z0-9_./-"
_KEY_RE = re.compile(f"[{_KEY_CHARS}]+")
_KEY_FULL_RE = re.compile(f"[{_KEY_CHARS}]+\\Z")
_WS = " \t\r\n"
# Operator words that may follow a label key.  Like libcalico-go, whitespace
# between "starts"/"with" etc. is optional; unlike it, the word must end there
# (so "a inx" is a label "inx" in the wrong place, not "in" + "x").
_OP_WORD_RE = re.compile(
    rf"(contains|starts[{_WS}]*with|ends[{_WS}]*with|not[{_WS}]*in|in)(?![{_KEY_CHARS}])"
)


# --------------------------------------------------------------------------- errors


class SelectorError(ValueError):
    """A selector could not be parsed.

    ``text`` is the whole selector, ``position`` the 0-based character offset of
    the fault (``len(text)`` when the input ended too early), ``reason`` the bare
    explanation without the location.
    """

    def __init__(self, text: str, position: int, reason: str) -> None:
        self.text = text
        self.position = position
        self.reason = reason
        super().__init__(self._format())

    def _format(self) -> str:
        rest = self.text[self.position:]
        if not rest.strip():
            where = "end of input"
        else:
            snippet = rest[:20] + ("..." if len(rest) > 20 else "")
            where = f"near {snippet!r}"
        # The text is the user's: printed as it is only while it is short and printable;
        # otherwise escaped and cut short, so a message never carries line breaks,
        # terminal escapes or megabytes.
        text = (f'"{self.text}"' if len(self.text) <= 256 and self.text.isprintable()
                else _show(self.text))
        return f"selector {text}: {self.reason} at position {self.position} ({where})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.text, self.position, self.reason))


# ------------------------------------------------------------------------------ AST


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
class _KeyValue(Selector):
    key: str
    value: str

    _op = ""

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_value(self.value)

    def _render(self) -> str:
        return f"{self.key} {self._op} {_quote(self.value)}"

    def _collect_keys(self, acc: set[str]) -> None:
        acc.add(self.key)


@dataclass(frozen=True)
class Equals(_KeyValue):
    """``key == "value"``: present with exactly that value."""

    _op = "=="

    def _code(self, ctx: _CodeGen) -> str:
        return f"get({ctx.const(self.key)}) == {ctx.const(self.value)}"

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        key, value = self.key, self.value
        return lambda labels: labels.get(key) == value


@dataclass(frozen=True)
class NotEquals(_KeyValue):
    """``key != "value"``: absent, or present with another value."""

    _op = "!="

    def _code(self, ctx: _CodeGen) -> str:
        return f"get({ctx.const(self.key)}) != {ctx.const(self.value)}"

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        key, value = self.key, self.value
        return lambda labels: labels.get(key) != value


@dataclass(frozen=True)
class Contains(_KeyValue):
    """``key contains "s"``: present and the value contains ``s``."""

    _op = "contains"

    def _code(self, ctx: _CodeGen) -> str:
        if not self.value:  # "" is in every string, but the label must exist
            return f"{ctx.const(self.key)} in labels"
        return f"{ctx.const(self.value)} in get({ctx.const(self.key)}, '')"

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        key, value = self.key, self.value
        return lambda labels: key in labels and value in labels[key]


@dataclass(frozen=True)
class StartsWith(_KeyValue):
    """``key starts with "s"``: present and the value starts with ``s``."""

    _op = "starts with"

    def _code(self, ctx: _CodeGen) -> str:
        if not self.value:
            return f"{ctx.const(self.key)} in labels"
        return f"get({ctx.const(self.key)}, '').startswith({ctx.const(self.value)})"

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        key, value = self.key, self.value
        return lambda labels: key in labels and labels[key].startswith(value)


@dataclass(frozen=True)
class EndsWith(_KeyValue):
    """``key ends with "s"``: present and the value ends with ``s``."""

    _op = "ends with"

    def _code(self, ctx: _CodeGen) -> str:
        if not self.value:
            return f"{ctx.const(self.key)} in labels"
        return f"get({ctx.const(self.key)}, '').endswith({ctx.const(self.value)})"

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        key, value = self.key, self.value
        return lambda labels: key in labels and labels[key].endswith(value)


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


@dataclass(frozen=True)
class In(_KeySet):
    """``key in {"a", "b"}``: present with one of the values."""

    _op = "in"

    def _code(self, ctx: _CodeGen) -> str:
        return f"get({ctx.const(self.key)}) in {ctx.const(self.values)}"

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        key, values = self.key, self.values
        return lambda labels: labels.get(key) in values


@dataclass(frozen=True)
class NotIn(_KeySet):
    """``key not in {"a", "b"}``: absent, or present with none of the values."""

    _op = "not in"

    def _code(self, ctx: _CodeGen) -> str:
        return f"get({ctx.const(self.key)}) not in {ctx.const(self.values)}"

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        key, values = self.key, self.values
        return lambda labels: labels.get(key) not in values


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

    _sep = ""

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


@dataclass(frozen=True)
class And(_BoolOp):
    """``a && b && ...``: every operand matches."""

    _sep = " && "
    _prec = _PREC_AND

    def _code(self, ctx: _CodeGen) -> str:
        return "(" + " and ".join(op._code(ctx) for op in self.operands) + ")"

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        fns = tuple(op._closure() for op in self.operands)

        def match_all(labels: Mapping[str, str]) -> bool:
            for fn in fns:  # a loop, not all(genexpr): one stack frame per level
                if not fn(labels):
                    return False
            return True

        return match_all


@dataclass(frozen=True)
class Or(_BoolOp):
    """``a || b || ...``: some operand matches."""

    _sep = " || "
    _prec = _PREC_OR

    def _code(self, ctx: _CodeGen) -> str:
        return "(" + " or ".join(op._code(ctx) for op in self.operands) + ")"

    def _closure(self) -> Callable[[Mapping[str, str]], bool]:
        fns = tuple(op._closure() for op in self.operands)

        def match_any(labels: Mapping[str, str]) -> bool:
            for fn in fns:
                if fn(labels):
                    return True
            return False

        return match_any


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


# --------------------------------------------------------------------------- lexing

# Token kinds
_LABEL, _STRING, _LBRACE, _RBRACE, _COMMA = "label", "string", "{", "}", ","
_EQ, _NE, _IN, _NOTIN = "==", "!=", "in", "not in"
_CONTAINS, _STARTS, _ENDS = "contains", "starts with", "ends with"
_NOT, _HAS, _ALL, _GLOBAL = "!", "has", "all", "global"
_LPAREN, _RPAREN, _AND, _OR, _EOF = "(", ")", "&&", "||", "eof"

# Keyed by first letter of the matched operator word.
_WORD_OPS = {"c": _CONTAINS, "s": _STARTS, "e": _ENDS, "n": _NOTIN, "i": _IN}
_STRING_OPS = {_EQ: Equals, _NE: NotEquals, _CONTAINS: Contains, _STARTS: StartsWith,
               _ENDS: EndsWith}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    value: str
    start: int
    end: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    n = len(text)
    i = 0
    prev = None
    while True:
        while i < n and text[i] in _WS:
            i += 1
        if i >= n:
            tokens.append(_Token(_EOF, "", n, n))
            return tokens
        c = text[i]
        start = i
        if c in "(){},":
            tok = _Token(c, c, i, i + 1)
        elif c == '"' or c == "'":
            close = text.find(c, i + 1)
            if close < 0:
                raise SelectorError(text, i, f"unterminated string (no closing {c!r})")
            tok = _Token(_STRING, text[i + 1:close], i, close + 1)
        elif c == "=":
            if text.startswith("==", i):
                tok = _Token(_EQ, "==", i, i + 2)
            else:
                raise SelectorError(text, i, "expected '==' (a single '=' is not an operator)")
        elif c == "!":
            if text.startswith("!=", i):
                tok = _Token(_NE, "!=", i, i + 2)
            else:
                tok = _Token(_NOT, "!", i, i + 1)
        elif c == "&":
            if not text.startswith("&&", i):
                raise SelectorError(text, i, "expected '&&'")
            tok = _Token(_AND, "&&", i, i + 2)
        elif c == "|":
            if not text.startswith("||", i):
                raise SelectorError(text, i, "expected '||'")
            tok = _Token(_OR, "||", i, i + 2)
        else:
            m = _OP_WORD_RE.match(text, i) if prev == _LABEL else None
            if m:
                tok = _Token(_WORD_OPS[m.group(1)[0]], m.group(1), i, m.end())
            else:
                m = _KEY_RE.match(text, i)
                if not m:
                    raise SelectorError(text, i, f"unexpected character {c!r}")
                word = m.group(0)
                if word in ("has", "all", "global") and text.startswith("(", m.end()):
                    tok = _function_token(text, word, start, m.end() + 1)
                else:
                    tok = _Token(_LABEL, word, i, m.end())
        tokens.append(tok)
        prev = tok.kind
        i = tok.end


def _function_token(text: str, name: str, start: int, i: int) -> _Token:
    """Lex the rest of ``has(key)``, ``all()`` or ``global()``; ``i`` is just past '('."""
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    key = ""
    if name == "has":
        m = _KEY_RE.match(text, i)
        if not m:
            raise SelectorError(text, i, "expected a label key inside has()")
        key = m.group(0)
        i = m.end()
        while i < n and text[i] in _WS:
            i += 1
    if i >= n or text[i] != ")":
        what = "the label key in has(" if name == "has" else f"'{name}('"
        raise SelectorError(text, i, f"expected ')' after {what}")
    return _Token(name, key, start, i + 1)


# -------------------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0

    def error(self, tok: _Token, reason: str) -> SelectorError:
        return SelectorError(self.text, tok.start, reason)

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def parse(self) -> Selector:
        if self.peek().kind == _EOF:
            return All()
        sel = self.parse_or()
        tok = self.peek()
        if tok.kind != _EOF:
            if tok.kind == _RPAREN:
                raise self.error(tok, "unexpected ')' with no matching '('")
            raise self.error(tok, "expected '&&', '||' or the end of the selector")
        return sel

    def parse_or(self) -> Selector:
        operands = [self.parse_and()]
        while self.peek().kind == _OR:
            self.take()
            operands.append(self.parse_and())
        return or_(*operands)

    def parse_and(self) -> Selector:
        operands = [self.parse_unary()]
        while self.peek().kind == _AND:
            self.take()
            operands.append(self.parse_unary())
        return and_(*operands)

    def enter(self, tok: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(tok, f"selector nested too deeply (more than {MAX_NESTING} levels)")

    def parse_unary(self) -> Selector:
        nots: list[_Token] = []
        while self.peek().kind == _NOT:
            tok = self.take()
            self.enter(tok)
            nots.append(tok)
        sel = self.parse_primary()
        for _ in nots:
            sel = Not(sel)
        self.depth -= len(nots)
        return sel

    def parse_primary(self) -> Selector:
        tok = self.take()
        kind = tok.kind
        if kind == _HAS:
            return Has(tok.value)
        if kind == _ALL:
            return All()
        if kind == _GLOBAL:
            return Global()
        if kind == _LPAREN:
            self.enter(tok)
            sel = self.parse_or()
            close = self.take()
            if close.kind != _RPAREN:
                raise self.error(close, f"expected ')' to close the '(' at position {tok.start}")
            self.depth -= 1
            return sel
        if kind == _LABEL:
            return self.parse_label_expression(tok)
        raise self.error(tok, "expected a label expression (a label key, has(), all(), "
                              "global(), '!' or '(')")

    def parse_label_expression(self, label: _Token) -> Selector:
        key = label.value
        op = self.take()
        if op.kind in _STRING_OPS:
            value = self.take()
            if value.kind != _STRING:
                raise self.error(value, f"expected a quoted string after '{op.kind}'")
            return _STRING_OPS[op.kind](key, value.value)
        if op.kind in (_IN, _NOTIN):
            brace = self.take()
            if brace.kind != _LBRACE:
                raise self.error(brace, f"expected '{{' after '{op.kind}'")
            values: list[str] = []
            while True:
                item = self.take()
                if item.kind == _RBRACE:
                    break  # also accepts a trailing comma, as Calico does
                if item.kind != _STRING:
                    raise self.error(item, "expected a quoted string or '}' in the set")
                values.append(item.value)
                sep = self.take()
                if sep.kind == _RBRACE:
                    break
                if sep.kind != _COMMA:
                    raise self.error(sep, "expected ',' or '}' after a set member")
            cls = In if op.kind == _IN else NotIn
            return cls(key, frozenset(values))
        shown = repr(key) if len(key) <= 40 else repr(key[:40]) + "..."  # a key is [A-Za-z0-9_./-]
        raise self.error(op, f"expected an operator after label {shown} (==, !=, in, not in, "
                             "contains, starts with, ends with)")


@lru_cache(maxsize=8192)
def parse_selector(text: str) -> Selector:
    """Parse Calico selector ``text``; raises :class:`SelectorError` if malformed.

    Results are cached by text (they are immutable, so sharing them is safe).
    """
    if not isinstance(text, str):
        raise TypeError(f"selector must be a string, not {type(text).__name__}")
    return _Parser(text).parse()


def validate_selector(text: str) -> None:
    """Raise :class:`SelectorError` if ``text`` is not a valid selector."""
    parse_selector(text)


# ---------------------------------------------------------------------- bulk index

_EMPTY: frozenset[Any] = frozenset()


class LabelIndex:
    """Many label sets by id, with an inverted index for bulk selector matching.

    ``add``/``remove`` are incremental (cost proportional to the labels of one
    id).  ``select(sel)`` returns the ids whose labels match, computed by set
    algebra: ``==``, ``in`` and ``has`` are index lookups; ``!``, ``!=`` and
    ``not in`` are complements against all ids (or, inside ``&&``, differences);
    ``contains``/``starts with``/``ends with`` scan only the distinct values of
    their key.  The result always equals ``{i for i in ids if sel.evaluate(labels[i])}``.
    """

    def __init__(self) -> None:
        self._labels: dict[Hashable, dict[str, str]] = {}
        self._ids: set[Hashable] = set()
        # key -> value -> ids having key=value
        self._by_value: dict[str, dict[str, set[Hashable]]] = {}
        # key -> ids having key (any value), for has()
        self._by_key: dict[str, set[Hashable]] = {}

    # -- maintenance -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._labels

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._labels)

    def labels(self, item_id: Hashable) -> Mapping[str, str]:
        """The label set stored for ``item_id`` (KeyError if unknown)."""
        return self._labels[item_id]

    def add(self, item_id: Hashable, labels: Mapping[str, str]) -> None:
        """Add ``item_id`` or replace its labels (only changed keys are re-indexed)."""
        new = dict(labels)
        old = self._labels.get(item_id)
        if old is None:
            self._ids.add(item_id)
            by_value, by_key = self._by_value, self._by_key
            for k, v in new.items():   # _index, inlined: a cold start adds ~60,000 pairs
                values = by_value.get(k)
                if values is None:
                    values = by_value[k] = {}
                    by_key[k] = set()
                ids = values.get(v)
                if ids is None:
                    values[v] = {item_id}
                else:
                    ids.add(item_id)
                by_key[k].add(item_id)
        else:
            for k, v in old.items():
                if k not in new or new[k] != v:
                    self._unindex(item_id, k, v)
            for k, v in new.items():
                if k not in old or old[k] != v:
                    self._index(item_id, k, v)
        self._labels[item_id] = new

    update = add

    def remove(self, item_id: Hashable) -> None:
        """Forget ``item_id``; unknown ids are ignored."""
        old = self._labels.pop(item_id, None)
        if old is None:
            return
        self._ids.discard(item_id)
        for k, v in old.items():
            self._unindex(item_id, k, v)

    discard = remove

    def _index(self, item_id: Hashable, key: str, value: str) -> None:
        self._by_value.setdefault(key, {}).setdefault(value, set()).add(item_id)
        self._by_key.setdefault(key, set()).add(item_id)

    def _unindex(self, item_id: Hashable, key: str, value: str) -> None:
        values = self._by_value[key]
        ids = values[value]
        ids.discard(item_id)
        if not ids:
            del values[value]
        holders = self._by_key[key]
        holders.discard(item_id)
        if not holders:
            del self._by_key[key]
            del self._by_value[key]

    # -- queries -----------------------------------------------------------------

    def select(self, sel: Selector | str) -> set[Hashable]:
        """Ids whose labels match ``sel`` (a Selector or selector text).  The
        returned set is the caller's to keep or modify."""
        if isinstance(sel, str):
            sel = parse_selector(sel)
        result, owned = self._eval(sel)
        return result if owned else set(result)

    def select_brute_force(self, sel: Selector | str) -> set[Hashable]:
        """Reference implementation: ``evaluate`` on every label set."""
        if isinstance(sel, str):
            sel = parse_selector(sel)
        ev = sel.evaluate
        return {i for i, labels in self._labels.items() if ev(labels)}

    # _eval returns (ids, owned): owned is False when ids is one of the index's
    # own sets, which must then be copied before being handed out or mutated.

    def _eval(self, sel: Selector) -> tuple[set[Hashable], bool]:
        t = type(sel)
        if t is Equals:
            return self._by_value.get(sel.key, {}).get(sel.value, _EMPTY), False  # type: ignore[attr-defined, return-value]
        if t is Has:
            return self._by_key.get(sel.key, _EMPTY), False  # type: ignore[attr-defined, return-value]
        if t is In:
            return self._in(sel.key, sel.values), True  # type: ignore[attr-defined]
        if t is All:
            return self._ids, False
        if t is And:
            return self._and(sel.operands), True  # type: ignore[attr-defined]
        if t is Or:
            out: set[Hashable] = set()
            for op in sel.operands:  # type: ignore[attr-defined]
                out |= self._eval(op)[0]
            return out, True
        if t in (Contains, StartsWith, EndsWith):
            return self._scan(sel), True
        excluded = self._excluded(sel)
        if excluded is not None:
            return self._ids - excluded, True
        raise TypeError(f"unknown selector node {sel!r}")  # pragma: no cover

    def _excluded(self, sel: Selector) -> set[Hashable] | None:
        """For a node that means "not X", the ids matching X; None otherwise."""
        t = type(sel)
        if t is Not:
            return self._eval(sel.operand)[0]  # type: ignore[attr-defined]
        if t is NotEquals:
            return self._by_value.get(sel.key, {}).get(sel.value, _EMPTY)  # type: ignore[attr-defined, return-value]
        if t is NotIn:
            return self._in(sel.key, sel.values)  # type: ignore[attr-defined]
        if t is Global:
            return self._by_key.get(NAMESPACE_LABEL, _EMPTY)  # type: ignore[return-value]
        return None

    def _in(self, key: str, values: frozenset[str]) -> set[Hashable]:
        by_value = self._by_value.get(key)
        out: set[Hashable] = set()
        if by_value:
            if len(values) > len(by_value):
                for v, ids in by_value.items():
                    if v in values:
                        out |= ids
            else:
                for v in values:
                    ids = by_value.get(v)
                    if ids:
                        out |= ids
        return out

    def _scan(self, sel: Selector) -> set[Hashable]:
        by_value = self._by_value.get(sel.key)  # type: ignore[attr-defined]
        out: set[Hashable] = set()
        if not by_value:
            return out
        needle: str = sel.value  # type: ignore[attr-defined]
        t = type(sel)
        for v, ids in by_value.items():
            if (needle in v if t is Contains
                    else v.startswith(needle) if t is StartsWith
                    else v.endswith(needle)):
                out |= ids
        return out

    def _and(self, operands: Iterable[Selector]) -> set[Hashable]:
        # Intersect the positive operands smallest first, then subtract what the
        # negative operands exclude: no complement against all ids is built.
        positives: list[set[Hashable]] = []
        negatives: list[Selector] = []
        for op in operands:
            if type(op) in _NEGATIVE_TYPES:
                negatives.append(op)
            elif type(op) is not All:
                ids = self._eval(op)[0]
                if not ids:
                    return set()
                positives.append(ids)
        if positives:
            positives.sort(key=len)
            result = positives[0] & positives[1] if len(positives) > 1 else set(positives[0])
            for ids in positives[2:]:
                if not result:
                    return result
                result &= ids
        else:
            result = set(self._ids)
        for neg in negatives:
            if not result:
                break
            result -= self._excluded(neg)  # type: ignore[operator]
        return result


_NEGATIVE_TYPES = (Not, NotEquals, NotIn, Global)
