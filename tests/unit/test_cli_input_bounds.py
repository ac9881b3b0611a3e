"""calicoctl's input is bounded: an alias bomb, a document nested 100,000 deep, an
oversized or over-dense manifest are each refused with one line on stderr (no
traceback, no memory blow-up), and names in error messages are bounded and escaped.

The refusals run the real `calicoctl` entry point in a subprocess (`validate -f`,
which needs no etcd). Each has a hang guard of 10 s — a guard, not a timing
assertion; bench/bench_cli_input.py prints how long they take.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from calico_net.cli import manifest
from calico_net.cli.manifest import MAX_DEPTH, MAX_MANIFEST_BYTES, MAX_VALUES, parse_manifest
from calico_net.errors import ParseError, UnknownKindError, ValidationError, printable
from calico_net.model import parse_documents

CALICOCTL = str(Path(sys.executable).parent / "calicoctl")
DATA = Path(__file__).resolve().parent.parent / "data"

# Runs calicoctl as its only child, with its address space capped at 2 GiB (so a
# regression cannot take the machine's memory) and reports the child's peak RSS.
_WRAPPER = textwrap.dedent("""
    import resource, subprocess, sys
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    p = subprocess.run(sys.argv[1:], preexec_fn=cap, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=10)
    sys.stderr.buffer.write(p.stderr)
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    sys.exit(p.returncode)
""")


def calicoctl(*args: str) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in KiB) of one calicoctl run."""
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, CALICOCTL, *args],
                          capture_output=True, text=True, timeout=30)
    assert "TimeoutExpired" not in proc.stderr, "calicoctl did not finish within 10 s"
    return proc.returncode, proc.stderr, int(proc.stdout.strip() or 0)


def refused_in_one_line(path: Path) -> str:
    rc, err, rss_kib = calicoctl("validate", "-f", str(path))
    assert rc == 1, err
    assert err.count("\n") == 1 and err.startswith("calicoctl: "), err
    assert "Traceback" not in err and "internal error" not in err and "Error" not in err
    assert rss_kib < 400 * 1024, f"calicoctl peaked at {rss_kib // 1024} MiB"
    return err.strip()


def alias_bomb(levels: int = 9, fan: int = 9, name: str = "bomb") -> str:
    """Calico-shaped YAML whose `x` holds `levels` anchors, each a list of `fan`
    aliases of the one before: fan ** levels values once expanded."""
    lines = ["apiVersion: projectcalico.org/v3", "kind: GlobalNetworkPolicy", "x:",
             "  a: &a [" + ", ".join(['"lol"'] * fan) + "]"]
    prev = "a"
    for c in "bcdefghijklmnop"[:levels - 1]:
        lines.append(f"  {c}: &{c} [" + ", ".join([f"*{prev}"] * fan) + "]")
        prev = c
    lines.append(f"metadata:\n  name: {name}")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_quickly_in_one_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    err = refused_in_one_line(path)
    assert f"more than {MAX_VALUES:,} values" in err and "aliases" in err


def test_alias_bomb_as_a_value_the_model_would_show(tmp_path):
    # the expanded bomb as metadata.name: nothing may build or JSON-encode it
    path = tmp_path / "bomb-name.yaml"
    path.write_text(alias_bomb(name="*i"))
    assert f"more than {MAX_VALUES:,} values" in refused_in_one_line(path)


def test_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n"
                    "metadata: {name: loop}\nspec: &s {x: *s}\n")
    assert "refers to a node that contains it" in refused_in_one_line(path)


@pytest.mark.parametrize("flavour", ["json", "yaml-flow", "yaml-block"])
def test_100k_deep_document_is_refused_in_one_line(tmp_path, flavour):
    n = 100_000
    head = ('{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", '
            '"metadata": {"name": "deep"}, "spec": {"order": ')
    if flavour == "json":
        text = head + "[" * n + "]" * n + "}}"
    elif flavour == "yaml-flow":
        text = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nspec: " + "[" * n + "]" * n + "\n"
    else:
        text = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nspec:\n  x:\n  " + "- " * n + "a\n"
    path = tmp_path / f"deep-{flavour}.yaml"
    path.write_text(text)
    err = refused_in_one_line(path)
    assert f"nested deeper than {MAX_DEPTH} levels" in err
    assert "RecursionError" not in err


def test_oversized_manifest_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "w") as f:
        f.write("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: big}\n")
        f.write("# " + "x" * (MAX_MANIFEST_BYTES + 10) + "\n")
    err = refused_in_one_line(path)
    assert f"larger than {MAX_MANIFEST_BYTES // 2**20} MiB" in err


def test_dense_manifest_is_refused_before_it_is_built(tmp_path):
    # ~8 MiB of empty lists: millions of values in few bytes each
    path = tmp_path / "dense.yaml"
    path.write_text("a: [" + "[]," * ((MAX_MANIFEST_BYTES - 100) // 3) + "]\n")
    assert f"more than {MAX_VALUES:,} values" in refused_in_one_line(path)


def test_long_and_unprintable_names_are_bounded_and_escaped_in_errors(tmp_path):
    name = "\x1b[31m" + "n" * 5_000_000 + "\x1b[0m\r\n"
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
           "metadata": {"name": name}, "spec": {"order": "high"}}
    path = tmp_path / "name.json"
    path.write_text(json.dumps(doc))
    err = refused_in_one_line(path)
    assert len(err) < 2000 and "\x1b" not in err and "\r" not in err
    assert err.startswith('calicoctl: GlobalNetworkPolicy "')
    # a kind that is not a kind, given on the command line
    rc, err, _ = calicoctl("get", "\x1b[2J" + "k" * 100_000)
    assert rc == 1 and err.count("\n") == 1 and "\x1b" not in err and len(err) < 2000
    assert "unknown resource type" in err and "\\x1b[2J" in err


def test_errors_do_not_render_a_whole_huge_name():
    name = "\x1b]0;owned\x07" + "x" * 50_000_000
    e = ValidationError("GlobalNetworkPolicy", name, [("spec.order", "bad"), ("x" * 10_000, "y\x1b")])
    text = str(e)
    assert len(text) < 1000 and text.isprintable()
    assert text.startswith('GlobalNetworkPolicy "\\x1b]0;owned\\x07xxx')
    assert f"... ({len(name)} characters)" in text
    e = UnknownKindError("k\n" * 25_000_000, ["IPPool"])
    assert len(str(e)) < 500 and str(e).isprintable()
    many = ValidationError("IPPool", "p", [(f"spec.x[{i}]", "bad") for i in range(10_000)])
    assert len(str(many)) < 5000 and "and 9950 more problems" in str(many)


def test_printable():
    assert printable("plain-name.1") == "plain-name.1"
    assert printable('a"b\\c', quote=True) == '"a\\"b\\\\c"'
    assert printable("bad\udcff\x00\u200b") == "bad\\xff\\x00\\u200b"
    assert printable("x" * 10, 4) == "xxxx... (10 characters)"
    assert printable(list(range(10**6))) == "<list of 1000000 items>"


# --- the reader itself ----------------------------------------------------------------


def test_manifests_read_as_the_models_reader_reads_them():
    """Within the bounds nothing changes: the same documents as parse_documents."""
    texts = [p.read_text() for p in sorted((DATA / "valid").glob("*.yaml"))]
    texts += [json.dumps({"kind": "List", "items": [{"kind": "IPPool"}]}),
              "a: &x {b: 1}\nc: *x\nd:\n  <<: *x\n  e: 2\n", "", "---\n---\nkind: A\n"]
    for text in texts:
        assert parse_manifest(text) == parse_documents(text)


def test_yaml_errors_name_document_and_line():
    with pytest.raises(ParseError, match=r"document 2 \(line \d+, column \d+\): YAML syntax error"):
        parse_manifest("kind: A\n---\nkind: [\n")
    with pytest.raises(ParseError, match="duplicate key"):
        parse_manifest("kind: A\nkind: B\n")


def test_a_legitimate_manifest_with_many_aliases_passes():
    rule = "  - &r {action: Allow, protocol: TCP, destination: {ports: [80, 443]}}\n"
    text = ("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\n"
            "spec:\n  ingress:\n" + rule + "  - *r\n" * 500)
    (doc,) = parse_manifest(text)
    assert len(doc["spec"]["ingress"]) == 501


@pytest.mark.parametrize("text", [
    "a\n...\n---\nb\n...\n---\nc\n", "{a, b, c}", "[a: b, c: d]", "- - - - a", "? a\n? b\n", "a: b",
    "[[[]]]", "- \n- \n-\n", "a: &x [1, 2]\nb: *x\n", "!!str a", "|\n  x\n  y\n",
    "{? a : b, c}", "a:\n  b:\n    c: [1, {d: e}]\n",
])
def test_the_values_bound_is_an_upper_bound(text):
    composed = 0
    for root in yaml.compose_all(text, Loader=yaml.CSafeLoader):
        stack = [root]
        while stack:
            node = stack.pop()
            composed += 1
            if isinstance(node, yaml.MappingNode):
                stack.extend(n for pair in node.value for n in pair)
            elif isinstance(node, yaml.SequenceNode):
                stack.extend(node.value)
    assert composed <= manifest._values_bound(text)


def test_stdin_is_bounded_too():
    big = "# " + "x" * (MAX_MANIFEST_BYTES + 1)
    proc = subprocess.run([CALICOCTL, "validate", "-f", "-"], input=big, capture_output=True,
                          text=True, timeout=10)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "standard input: larger than" in proc.stderr


def test_not_utf8_manifest_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"kind: GlobalNetworkPolicy\nmetadata: {name: caf\xe9}\n")
    assert "not UTF-8 text (byte" in refused_in_one_line(path)
