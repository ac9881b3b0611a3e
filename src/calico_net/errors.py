"""Errors about resources themselves: unreadable manifests, invalid documents, unknown kinds.

Every error here is a `ValueError` (the input was wrong, not the world) and a
`CalicoNetError`, and its str() is one line an operator can act on: which resource,
which field path, what value, what would have been allowed. `calicoctl` prints
str(err) to stderr as is. Errors of the datastore layer (etcd unreachable, conflicts)
live in `calico_net.datastore.errors`.
"""
from __future__ import annotations

from typing import Iterable


class CalicoNetError(Exception):
    """Base class of the errors calico_net raises on purpose."""


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
        if self.kind and self.name:
            return f'{self.kind} "{self.name}"'
        if self.kind:
            return self.kind
        if self.name:
            return f'resource "{self.name}"'
        return "document"

    def _render(self) -> str:
        parts = [f"{path}: {msg}" if path else msg for path, msg in self.errors]
        return f"{self.subject}: " + "; ".join(parts or ["invalid"])

    def __str__(self) -> str:
        return self._render()


class UnknownKindError(CalicoNetError, ValueError):
    """A kind name (or calicoctl alias) that is not one of the resource kinds we know."""

    def __init__(self, name: str, valid: Iterable[str]) -> None:
        self.name = name
        self.valid = list(valid)
        super().__init__(
            f'unknown resource type "{name}"; valid types are: ' + ", ".join(self.valid))


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
        super().__init__(f"{prefix}: {message}" if prefix else message)
