"""Every third-party module calico_net imports is declared in pyproject.toml.

The calico/node image installs `calico-net[agent,cni]` from wheels and nothing else, so
an import that only works because the development venv happens to have the package
(through ansible-core, say) breaks inside the image — `calicoctl node verify` once did
exactly that with `cryptography`. This reads every import in src/calico_net and maps
it to the distribution that provides it.
"""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# import name -> distribution name, where they differ (or come with another one)
DISTRIBUTION = {
    "yaml": "pyyaml",
    "google": "protobuf",
    "grpc": "grpcio",
    "jinja2": "jinja2",
    "pydantic_core": "pydantic",
}
# what the image installs: the base dependencies and these extras
IMAGE_EXTRAS = ("agent", "cni")


def third_party_imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (REPO / "src" / "calico_net").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top != "calico_net" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in IMAGE_EXTRAS:
        reqs += project["optional-dependencies"][extra]
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].strip().lower().replace("_", "-") for r in reqs}


def test_every_third_party_import_is_declared_for_the_image():
    have = declared()
    imports = third_party_imports()
    assert "yaml" in imports and "pyroute2" in imports, "the import scan found nothing: it is broken"
    missing = {name: sorted(files)[:3] for name, files in imports.items()
               if DISTRIBUTION.get(name, name).lower().replace("_", "-") not in have}
    assert not missing, f"imported but not declared in pyproject.toml (dependencies or {IMAGE_EXTRAS}): {missing}"
