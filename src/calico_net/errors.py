"""Errors about resources themselves: unreadable manifests, invalid documents, unknown kinds.

Every error here is a `ValueError` (the input was wrong, not the world) and a
`CalicoNetError`, and its str() is one line an operator can act on: which resource,
which field path, what value, what would have been allowed. `calicoctl` prints
str(err) to stderr as is. Errors of the datastore layer (etcd unreachable, conflicts)
live in `calico_net.datastore.errors`.
"""
from __future__ import annotations

from typing import Any, Iterable

# How much of a name, kind or key an error message shows (more is cut, with a count).
SHOW_NAME_MAX = 120


def _escape_char(c: str) -> str:
    n = ord(c)
    if c == "\n":
        return "\\n"
    if c == "\t":
        return "\\t"
    if c == "\r":
        return "\\r"
    if 0xDC80 <= n <= 0xDCFF:      # a byte that was not UTF-8 (decoded with surrogateescape)
        return f"\\x{n - 0xDC00:02x}"
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def printable(text: Any, limit: int = SHOW_NAME_MAX, *, quote: bool = False) -> str:
    """`text` as a message or log line may show it: bounded and escaped.

    Only the first `limit` characters are looked at (a 50 MB name costs what a short
    one does); a longer text is cut there and ends in "... (N characters)". Every
    character that is not printable (line breaks, ANSI escape sequences, other control
    characters, lone surrogates) appears as a backslash escape; a byte that was not
    UTF-8 (a key decoded with `surrogateescape`) appears as `\\xNN`. With `quote`,
    the result is in double quotes and a quote or backslash inside is escaped too, so
    the quoted text is unambiguous. Text that is printable and short comes back as it
    is (without `quote`)."""
    if isinstance(text, (list, tuple, dict, set)):   # never render a whole container
        text = f"<{type(text).__name__} of {len(text)} items>"
    elif not isinstance(text, str):
        text = str(text)
    n = len(text)
    head = text if n <= limit else text[:limit]
    if quote:
        if head.isprintable() and '"' not in head and "\\" not in head:
            body = head
        else:
            body = "".join(c if c.isprintable() and c not in '"\\' else
                           ("\\" + c if c in '"\\' else _escape_char(c)) for c in head)
        body = f'"{body}"'
    elif head.isprintable():
        body = head
    else:
        body = "".join(c if c.isprintable() else _escape_char(c) for c in head)
    if n > limit:
        body += f"... ({n} characters)"
    return body


class CalicoNetError(Exception):
    """Base class of the errors calico_net raises on purpose."""


# A document with thousands of problems (a huge list of bad entries) still gets one
# line of a readable length.
MAX_ERRORS_SHOWN = 50


class ValidationError(CalicoNetError, ValueError):
    """A resource document failed validation.

    `kind` and `name` identify the document as far as it could be read (either may be
    None), `errors` lists (field path, message) pairs, e.g.
    ``("spec.ingress[0].protocol", '"TCPX" is not a protocol (...)')``. A path of ""
    means the document as a whole.
    """

    def __init__(self, kind: str | None, name: str | None,
                 errors: Iterable[tuple[str, str]]) -> None:
        self.kind = kind
        self.name = name
        self.errors: list[tuple[str, str]] = list(errors)
        super().__init__(self._render())

    @property
    def subject(self) -> str:
        """How the message names the document: `IPPool "pool-a"`, `IPPool`, `document`."""
        kind = printable(self.kind) if self.kind else None
        name = printable(self.name) if self.name else None
        if kind and name:
            return f'{kind} "{name}"'
        if kind:
            return kind
        if name:
            return f'resource "{name}"'
        return "document"

    def _render(self) -> str:
        # The kind and name come from the document: bounded and escaped (a name of
        # megabytes or with ANSI escapes must not reach the terminal as it is). Paths
        # and messages are bounded too; the model already shows values bounded.
        parts = [f"{printable(path, 300)}: {printable(msg, 2000)}" if path else printable(msg, 2000)
                 for path, msg in self.errors[:MAX_ERRORS_SHOWN]]
        if len(self.errors) > MAX_ERRORS_SHOWN:
            parts.append(f"and {len(self.errors) - MAX_ERRORS_SHOWN} more problems")
        return f"{self.subject}: " + "; ".join(parts or ["invalid"])

    def __str__(self) -> str:
        return self._render()


class UnknownKindError(CalicoNetError, ValueError):
    """A kind name (or calicoctl alias) that is not one of the resource kinds we know."""

    def __init__(self, name: str, valid: Iterable[str]) -> None:
        self.name = name
        self.valid = list(valid)
        super().__init__(
            f'unknown resource type {printable(name, quote=True)}; valid types are: ' + ", ".join(self.valid))


class ParseError(CalicoNetError, ValueError):
    """A manifest (YAML or JSON, possibly several documents) could not be read.

    `document` is the 1-based number of the document at fault, `line`/`column` are
    1-based positions in the whole text when known.
    """

    def __init__(self, message: str, document: int | None = None,
                 line: int | None = None, column: int | None = None) -> None:
        self.message = message
        self.document = document
        self.line = line
        self.column = column
        where = []
        if document is not None:
            where.append(f"document {document}")
        if line is not None:
            where.append(f"line {line}" + (f", column {column}" if column else ""))
        prefix = " (".join([where[0], where[1] + ")"]) if len(where) == 2 else (where[0] if where else "")
        message = printable(message, 1000)
        super().__init__(f"{prefix}: {message}" if prefix else message)
