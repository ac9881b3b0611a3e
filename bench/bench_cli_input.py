"""How long calicoctl takes to refuse input beyond its bounds (cli/manifest.py):

* a 9x9 YAML alias bomb (~0.5 KB, 9^9 values once expanded);
* a document nested 100,000 deep, as JSON and as YAML flow;
* 8 MiB of the densest YAML (empty lists: millions of values);
* a manifest over the size cap;

each as an operator meets it (`calicoctl validate -f`, a subprocess: start-up
included, shown on its own line) and in-process (`read_manifest` + `parse_manifest`
alone), with the child's peak RSS. For comparison, a valid manifest of 1,000 GlobalNetworkPolicies.

Prints figures; asserts nothing about time.
Run: .venv/bin/python bench/bench_cli_input.py
"""
from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from bench_calicoctl import gnps  # noqa: E402

from calico_net.cli.manifest import MAX_MANIFEST_BYTES, parse_manifest, read_manifest  # noqa: E402
from calico_net.errors import ParseError  # noqa: E402

CALICOCTL = str(Path(sys.executable).parent / "calicoctl")
RUNS = 3

# calicoctl as the only child of a small wrapper, which reports the child's peak RSS
_WRAPPER = textwrap.dedent("""
    import resource, subprocess, sys
    p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sys.stderr.buffer.write(p.stderr)
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
""")


def alias_bomb(levels: int = 9, fan: int = 9) -> str:
    lines = ["apiVersion: projectcalico.org/v3", "kind: GlobalNetworkPolicy",
             "metadata: {name: bomb}", "spec:", "  a: &a [" + ", ".join(['"lol"'] * fan) + "]"]
    prev = "a"
    for c in "bcdefghi"[:levels - 1]:
        lines.append(f"  {c}: &{c} [" + ", ".join([f"*{prev}"] * fan) + "]")
        prev = c
    return "\n".join(lines) + "\n"


def inputs() -> list[tuple[str, str]]:
    n = 100_000
    gnp = ('{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", '
           '"metadata": {"name": "deep"}, "spec": {"order": ')
    return [
        ("9x9 alias bomb", alias_bomb()),
        ("100k-deep JSON", gnp + "[" * n + "]" * n + "}}"),
        ("100k-deep YAML flow", "kind: GlobalNetworkPolicy\nspec: " + "[" * n + "]" * n + "\n"),
        ("8 MiB of empty YAML lists", "a: [" + "[]," * ((MAX_MANIFEST_BYTES - 100) // 3) + "]\n"),
        ("over the size cap", "# " + "x" * (MAX_MANIFEST_BYTES + 1) + "\n"),
        ("valid: 1,000 GNPs", gnps(1000)),
    ]


def run_cli(path: str) -> tuple[float, int, str]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, CALICOCTL, "validate", "-f", path],
                          capture_output=True, text=True)
    took = time.perf_counter() - t
    return took, int(proc.stdout.strip() or 0), proc.stderr.strip()


def in_process(path: str) -> float:
    t = time.perf_counter()
    try:
        parse_manifest(read_manifest(path))
    except ParseError:
        pass
    return time.perf_counter() - t


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        took, rss, _ = run_cli(os.devnull)
        print(f"calicoctl start-up (validate of an empty file): {took:.2f} s, peak RSS {rss // 1024} MiB")
        for name, text in inputs():
            path = os.path.join(d, "input.yaml")
            Path(path).write_text(text)
            cli = [run_cli(path) for _ in range(RUNS)]
            inner = [in_process(path) for _ in range(RUNS)]
            message = cli[-1][2].splitlines()[-1] if cli[-1][2] else "(accepted)"
            print(f"{name} ({len(text.encode()):,} bytes): calicoctl median "
                  f"{statistics.median(t for t, _, _ in cli):.2f} s, peak RSS "
                  f"{max(r for _, r, _ in cli) // 1024} MiB; in-process read+parse median "
                  f"{statistics.median(inner) * 1000:.1f} ms")
            print(f"    {message[:160]}")
    print(f"(this process peaked at {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB; "
          f"load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
