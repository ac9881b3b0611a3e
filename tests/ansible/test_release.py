"""Release hygiene of the calico.net collection: what the built tarball carries, and the
changelog.

- The tarball: `ansible-galaxy collection build` of a copy of the collection in which
  the caches and state files tools leave behind are planted (ansible-test's
  tests/output, pytest's and molecule's caches in the molecule scenario under
  extensions/molecule/, byte code, antsibull-changelog's plugin cache...). None of
  them may be in the artifact (galaxy.yml's build_ignore), while the molecule scenario,
  CHANGELOG.rst and changelogs/changelog.yaml ship.
- The changelog (antsibull-changelog): the fragments and changelogs/changelog.yaml
  pass its linters, and CHANGELOG.rst is exactly what `antsibull-changelog generate`
  renders from changelog.yaml, so the rendered file cannot go stale.
"""
from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from playbook_runner import COLLECTION, VENV_BIN

pytestmark = pytest.mark.slow

# Directory names and file patterns of tool caches and state, wherever they are.
CACHE_DIRS = {"__pycache__", ".cache", ".pytest_cache", ".ansible", ".mypy_cache", ".tox"}
CACHE_SUFFIXES = (".pyc", ".pyo")
CACHE_FILES = {".plugin-cache.yaml"}
# What the planted copy gets, relative to the collection root.
PLANTED = [
    "tests/output/.tmp/sanity/result.json",
    "tests/output/junit/python3.11-modules.xml",
    ".pytest_cache/v/cache/lastfailed",
    ".cache/something",
    ".ansible/collections/ansible_collections/x/y/galaxy.yml",
    "extensions/molecule/default/.cache/molecule/state.yml",
    "extensions/molecule/default/.pytest_cache/v/cache/nodeids",
    "extensions/molecule/default/.ansible/tmp/x",
    "extensions/molecule/default/tests/__pycache__/test_default.cpython-311-pytest-8.0.pyc",
    "extensions/molecule/default/tests/stray.pyc",
    "plugins/modules/__pycache__/ip_pool.cpython-311.pyc",
    "plugins/module_utils/stray.pyc",
    "roles/calico_node/files/.cache/x",
    "changelogs/.plugin-cache.yaml",
]


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", ANSIBLE_NOCOLOR="1")
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)


def check(cmd: list[str], cwd: Path | None = None) -> str:
    proc = run(cmd, cwd)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}"
    return proc.stdout


def is_cache(rel: str) -> bool:
    parts = rel.split("/")
    return (any(p in CACHE_DIRS for p in parts) or rel.endswith(CACHE_SUFFIXES) or parts[-1] in CACHE_FILES
            or rel == "tests/output" or rel.startswith("tests/output/"))


def copy_collection(dest_root: Path) -> Path:
    """The collection copied to dest_root/ansible_collections/calico/net (caches included)."""
    dest = dest_root / "ansible_collections" / "calico" / "net"
    shutil.copytree(COLLECTION, dest, symlinks=True)
    return dest


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("release")
    copy = copy_collection(tmp / "src")
    for rel in PLANTED:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_text("cache\n")
    out = tmp / "out"
    out.mkdir()
    check([VENV_BIN / "ansible-galaxy", "collection", "build", copy, "--output-path", out, "--force"])
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    path = out / f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"
    assert path.exists(), sorted(p.name for p in out.iterdir())
    return path


@pytest.fixture(scope="module")
def names(artifact) -> set[str]:
    with tarfile.open(artifact) as tar:
        return {n.removeprefix("./").rstrip("/") for n in tar.getnames()}


def test_planted_paths_are_caches():
    """Guard for the test itself: every planted path is one is_cache() recognises."""
    assert all(is_cache(rel) for rel in PLANTED), [rel for rel in PLANTED if not is_cache(rel)]


def test_tarball_has_no_cache_or_state_files(names):
    shipped = sorted(n for n in names if is_cache(n))
    assert not shipped, f"tool caches or state in the artifact: {shipped}"
    for rel in PLANTED:
        assert rel not in names


def test_tarball_ships_the_molecule_scenario(names):
    scenario = COLLECTION / "extensions" / "molecule" / "default"
    for name in ("molecule.yml", "create.yml", "prepare.yml", "converge.yml", "destroy.yml"):
        assert (scenario / name).exists(), name
    expected = {
        p.relative_to(COLLECTION).as_posix()
        for p in scenario.rglob("*")
        if p.is_file() and not is_cache(p.relative_to(COLLECTION).as_posix())
    }
    assert expected, "no molecule scenario files found"
    missing = sorted(expected - names)
    assert not missing, f"molecule scenario files missing from the artifact: {missing}"


def test_tarball_ships_the_changelog_and_docs(names):
    for rel in ("README.md", "CHANGELOG.rst", "changelogs/changelog.yaml", "changelogs/config.yaml",
                "meta/runtime.yml", "plugins/modules/node_container.py"):
        assert rel in names, rel


def test_changelog_fragments_lint():
    out = check([VENV_BIN / "antsibull-changelog", "lint"], cwd=COLLECTION)
    assert out.strip() == "", out


def test_changelog_yaml_lints():
    out = check([VENV_BIN / "antsibull-changelog", "lint-changelog-yaml", "--strict",
                 COLLECTION / "changelogs" / "changelog.yaml"])
    assert out.strip() == "", out


def test_changelog_yaml_releases_the_galaxy_version():
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    changes = yaml.safe_load((COLLECTION / "changelogs" / "changelog.yaml").read_text())
    assert galaxy["version"] in changes["releases"], (galaxy["version"], sorted(changes["releases"]))


def test_changelog_rst_is_what_generate_renders(tmp_path):
    copy = copy_collection(tmp_path)
    check([VENV_BIN / "antsibull-changelog", "generate"], cwd=copy)
    rendered, committed = copy / "CHANGELOG.rst", COLLECTION / "CHANGELOG.rst"
    assert committed.exists(), "CHANGELOG.rst is missing: run `antsibull-changelog generate` in the collection"
    assert filecmp.cmp(rendered, committed, shallow=False), (
        "CHANGELOG.rst is stale: run `antsibull-changelog generate` in ansible_collections/calico/net")
    # generate normalises changelog.yaml too: the committed one must already be in that form
    assert filecmp.cmp(copy / "changelogs" / "changelog.yaml", COLLECTION / "changelogs" / "changelog.yaml",
                       shallow=False), "changelogs/changelog.yaml is not in antsibull-changelog's normal form"


def test_readme_lists_every_module_role_and_playbook():
    readme = (COLLECTION / "README.md").read_text()
    modules = [p.stem for p in (COLLECTION / "plugins" / "modules").glob("*.py") if p.stem != "__init__"]
    roles = [p.name for p in (COLLECTION / "roles").iterdir() if (p / "tasks" / "main.yml").exists()]
    playbooks = [p.stem for p in (COLLECTION / "playbooks").glob("*.yml")]
    assert modules and roles and playbooks
    missing = ([m for m in modules if f"| `{m}` |" not in readme]
               + [r for r in roles if f"| `calico.net.{r}` |" not in readme]
               + [p for p in playbooks if f"| `calico.net.{p}` |" not in readme])
    assert not missing, f"README.md's tables lack {missing}"
