"""How a field check refuses a value: the message text and the check builders.

`show` renders a value for a message (bounded, escaped), `fail` makes the validation
error every field check raises, and the builders (`refuse_problem`, `pattern_problem`,
`pattern_type`, `bounded`, `enum_before`) turn a rule into a pydantic field type, so
each value type in this package states only its rule and its message.
"""
from __future__ import annotations

import json
import re
from typing import Annotated, Any, Callable, Iterable

from pydantic import AfterValidator, PlainValidator
from pydantic_core import PydanticCustomError

SHOW_MAX = 80


def show(value: Any) -> str:
    """A value as it appears in messages: strings quoted, numbers/bools as in JSON.

    Bounded and escaped, whatever the value: at most SHOW_MAX characters (longer text
    ends in "..."), and no control character, line break, ANSI escape or other
    unprintable character survives (they appear as JSON escapes such as \\n or
    \\u001b). Only the first characters of a long value are ever looked at, so a
    megabyte name or a huge list costs no more than a short one.
    """
    out: list[str] = []
    _render(value, out, [SHOW_MAX + 1], 0)
    text = _escape_unprintable("".join(out))
    return text if len(text) <= SHOW_MAX else text[:SHOW_MAX - 3] + "..."


def _render(value: Any, out: list[str], budget: list[int], depth: int) -> None:
    """Append JSON-like text for `value` to `out` until `budget[0]` characters are used."""
    if budget[0] <= 0:
        return
    if isinstance(value, str):
        piece = json.dumps(value[:budget[0]], ensure_ascii=False)
    elif value is None or isinstance(value, (bool, float)):
        piece = json.dumps(value)
    elif isinstance(value, int):
        piece = str(value) if value.bit_length() <= 256 else f"<an integer of {value.bit_length()} bits>"
    elif isinstance(value, (list, tuple, dict)):
        if depth > 20:
            piece = "..."
        else:
            is_dict = isinstance(value, dict)
            out.append("{" if is_dict else "[")
            budget[0] -= 1
            for i, item in enumerate(value.items() if is_dict else value):
                if budget[0] <= 0:
                    return
                if i:
                    out.append(", ")
                    budget[0] -= 2
                if is_dict:
                    _render(item[0] if isinstance(item[0], str) else str(item[0]), out, budget, depth + 1)
                    out.append(": ")
                    budget[0] -= 2
                    _render(item[1], out, budget, depth + 1)
                else:
                    _render(item, out, budget, depth + 1)
            piece = "}" if is_dict else "]"
    else:
        try:
            text = str(value)
        except Exception:  # noqa: BLE001 - a value that cannot even print itself
            text = f"<{type(value).__name__}>"
        piece = json.dumps(text[:budget[0]], ensure_ascii=False)
    out.append(piece)
    budget[0] -= len(piece)


def _escape_unprintable(text: str) -> str:
    """`text` with every character str.isprintable() refuses written as an escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else
                   (f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
                   for ch in text)


def fail(message: str) -> PydanticCustomError:
    """An error whose message is final (the template only echoes it, so `{` is safe)."""
    return PydanticCustomError("calico", "{msg}", {"msg": message})


def refuse_problem(problem: Callable[[str], str | None]) -> Callable[[str], str]:
    """A field check built from a `*_problem` function: the value when `problem` finds
    nothing, else the validation error with its message."""
    def check(value: str) -> str:
        message = problem(value)
        if message:
            raise fail(message)
        return value
    return check


def pattern_problem(pattern: str | re.Pattern[str], allowed: str, what: str, *,
                    max_len: int | None = None,
                    refused: Iterable[str] = ()) -> Callable[[Any], str | None]:
    """A `*_problem` function for a string that must fullmatch `pattern`: the message
    names the value, what it should be and what is allowed. `max_len` is checked before
    the pattern sees the value; `refused` lists texts the pattern takes but the rule
    does not."""
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
    longest = max_len if max_len is not None else float("inf")
    refused = frozenset(refused)

    def problem(value: Any) -> str | None:
        if (not isinstance(value, str) or len(value) > longest or not compiled.fullmatch(value)
                or value in refused):
            return f"{show(value)} is not a valid {what} ({allowed})"
        return None
    return problem


def pattern_type(pattern: str | re.Pattern[str], allowed: str, what: str, *, max_len: int,
                 extra: Callable[[str], str | None] | None = None) -> Any:
    """A string type whose value must fullmatch `pattern` and be at most `max_len` long.

    The message is `pattern_problem`'s. `extra(value)` may add a check of its own
    (None: fine). The check is written out, not built on `pattern_problem`, because it
    runs for every identifier of every endpoint a cold start reads.
    """
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern

    def check(value: str) -> str:
        if len(value) > max_len or not compiled.fullmatch(value):
            raise fail(f"{show(value)} is not a valid {what} ({allowed})")
        if extra is not None:
            problem = extra(value)
            if problem:
                raise fail(problem)
        return value

    return Annotated[str, AfterValidator(check)]


def regexp_problem(value: str, what: str) -> str | None:
    """Why `value` does not compile as a regular expression, or None."""
    try:
        re.compile(value)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"{show(value)} is not a valid {what} ({show(str(exc))[1:-1]})"
    return None


def int_range(lo: int, hi: int, what: str) -> Callable[[int], int]:
    def check(value: int) -> int:
        if not lo <= value <= hi:
            raise fail(f"{show(value)} is not a valid {what} ({lo}-{hi})")
        return value
    return check


def bounded(lo: int, hi: int, what: str) -> Any:
    return Annotated[int, AfterValidator(int_range(lo, hi, what))]


def enum_before(allowed: tuple[str, ...], what: str) -> Any:
    """A string field limited to `allowed`, with a message naming them all."""
    def check(value: Any) -> str:
        if isinstance(value, str) and value in allowed:
            return value
        hint = ""
        if isinstance(value, str):
            for a in allowed:
                if a.lower() == value.lower():
                    hint = f" - did you mean {a}?"
        raise fail(f"{show(value)} is not a valid {what} ({', '.join(allowed)}){hint}")
    return Annotated[str, PlainValidator(check)]


def enum_ci(allowed: tuple[str, ...], what: str) -> Any:
    """A string field limited to `allowed` in any case, kept as written: Calico's
    validator matches these with `(?i)` patterns and Felix reads them case-blind."""
    lowered = {a.lower() for a in allowed}

    def check(value: Any) -> str:
        if isinstance(value, str) and value.lower() in lowered:
            return value
        raise fail(f"{show(value)} is not a valid {what} ({', '.join(allowed)}) in any letter case")
    return Annotated[str, PlainValidator(check)]
