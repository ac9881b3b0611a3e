"""Every document in tests/data/invalid/ is rejected, with the message its first line names.

Each file holds ONE mistake in an otherwise realistic document (see
test_invalid_document_has_exactly_one_mistake for the refusals that may come with it)
and starts with `# expect: <text>`; the text (field path included) must occur in str() of the
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


NOT_YET = "not supported by calico.net yet"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_invalid_document_has_exactly_one_mistake(path: Path) -> None:
    """One mistake per file. Refusals of Calico fields calico.net cannot enforce come on
    top: a file about Calico's own preDNAT rules is also refused for using preDNAT, and
    a file about such a refusal may carry the refusals its field needs (preDNAT needs
    applyOnForward: true, itself refused), but nothing else."""
    docs = parse_documents(path.read_text())
    with pytest.raises(ValidationError) as info:
        parse_resource(docs[0])
    mistakes = [(p, m) for p, m in info.value.errors if NOT_YET not in m]
    if NOT_YET in expectation(path):
        assert mistakes == [], str(info.value)
    else:
        assert len(mistakes) == 1, str(info.value)
