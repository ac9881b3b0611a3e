"""Every document in tests/data/invalid/ is rejected, with the message its first line names.

Each file holds ONE mistake in an otherwise realistic document and starts with
`# expect: <text>`; the text (field path included) must occur in str() of the
ValidationError that parse_resource raises. The same corpus is fed to `calicoctl`
by the integration tests.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from calico_net.errors import ValidationError
from calico_net.model import parse_documents, parse_resource

INVALID = Path(__file__).resolve().parent.parent / "data" / "invalid"
FILES = sorted(INVALID.glob("*.yaml"))


def expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: ...'"
    return first[len("# expect: "):].strip()


def test_corpus_is_big_enough_and_distinct() -> None:
    assert len(FILES) >= 55
    expectations = [expectation(p) for p in FILES]
    assert len(set(expectations)) == len(expectations), "two files expect the same message"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_invalid_document_is_rejected_with_field_path(path: Path) -> None:
    expected = expectation(path)
    docs = parse_documents(path.read_text())
    assert len(docs) == 1, "one document per file"
    with pytest.raises(ValidationError) as info:
        parse_resource(docs[0])
    message = str(info.value)
    assert expected in message
    # the path named in the expectation is one of the structured error paths
    expected_path = expected.split(": ", 1)[0]
    assert expected_path in [p for p, _ in info.value.errors], message
    assert "\n" not in message


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_invalid_document_has_exactly_one_mistake(path: Path) -> None:
    docs = parse_documents(path.read_text())
    with pytest.raises(ValidationError) as info:
        parse_resource(docs[0])
    assert len(info.value.errors) == 1, str(info.value)
