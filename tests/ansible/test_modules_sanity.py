"""`ansible-test sanity` for the whole calico.net collection, as the collection's
CI would run it: from the collection root, `--local` (no containers) with this venv's
Python 3.11.

ansible-test installs each sanity test's requirements (pylint, yamllint, voluptuous...)
into its own virtual environments under ~/.ansible/test/venv from PyPI - the first run
takes a few minutes, later runs reuse them. Its pip bootstrap script cannot be
downloaded here, so get_pip_offline.py stands in for it (see there).

The whole collection is checked - modules, module_utils, doc fragments, roles,
playbooks, molecule scenarios and tests - and no sanity test is skipped. The only
ignore entries (tests/sanity/ignore-*.txt) are validate-modules' GPLv3 header check
(the collection is Apache-2.0; a new module needs its line there) and the shebang of a
role template that renders a shell script.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from playbook_runner import COLLECTION, VENV_BIN

pytestmark = pytest.mark.slow

def pip_bootstrap_version() -> str:
    from ansible_test._internal import python_requirements

    source = Path(python_requirements.__file__).read_text()
    marker = "pip='"
    start = source.index(marker) + len(marker)
    return source[start:source.index("'", start)]


@pytest.fixture(scope="module")
def offline_pip_bootstrap():
    version = pip_bootstrap_version()
    cache = Path.home() / ".ansible" / "test" / "cache" / f"get_pip_{version.replace('.', '_')}.py"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(__file__).with_name("get_pip_offline.py"), cache)
    return cache


def test_ansible_test_sanity(offline_pip_bootstrap):
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-test"), "sanity", "--python", f"{sys.version_info[0]}.{sys.version_info[1]}",
         "--local", "--color", "no"],
        cwd=COLLECTION, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800,
    )
    errors = [line for line in proc.stdout.splitlines() if line.startswith(("ERROR", "FATAL"))]
    assert proc.returncode == 0, "ansible-test sanity failed:\n" + "\n".join(errors or proc.stdout.splitlines()[-60:])
