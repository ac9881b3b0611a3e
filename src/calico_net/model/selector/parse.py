"""Reading selector text: the scanner, the recursive-descent parser and
`parse_selector`, with `SelectorError` naming the offset at fault.

The scanner follows libcalico-go's tokenizer: label keys are runs of
``[A-Za-z0-9_./-]``, strings are ``"..."`` or ``'...'`` with *no* escape sequences (a
string ends at the next quote of the kind that opened it, a backslash is an ordinary
character), and the words ``in``, ``not in``, ``contains``, ``starts with`` and
``ends with`` are operators only right after a label key (so a label may be called
``in``). Precedence: ``!`` binds tightest, then ``&&``, then ``||``; parentheses leave
no trace in the tree. ``parse_selector`` is memoised: the same selector text recurs
across policies.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from calico_net.model.fields.checks import show as _show
from calico_net.model.selector.nodes import (
    KEY_CHARS, MAX_NESTING, All, Contains, EndsWith, Equals, Global, Has, In, Not, NotEquals,
    NotIn, Selector, StartsWith, and_, or_,
)

_KEY_RE = re.compile(f"[{KEY_CHARS}]+")
_WS = " \t\r\n"
# Operator words that may follow a label key.  Like libcalico-go, whitespace
# between "starts"/"with" etc. is optional; unlike it, the word must end there
# (so "a inx" is a label "inx" in the wrong place, not "in" + "x").
_OP_WORD_RE = re.compile(
    rf"(contains|starts[{_WS}]*with|ends[{_WS}]*with|not[{_WS}]*in|in)(?![{KEY_CHARS}])"
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

