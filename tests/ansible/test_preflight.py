"""The calico_node role's preflight of the managed host: Python 3.11+ with venv, a pinned
calico/node image, and the calico_net library on the host at the collection's version.

The role runs for real on localhost, but only the tasks of these checks (`--tags`), so
nothing is installed or started. Every refusal is paired with the same play passing.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from playbook_runner import COLLECTION, run_tasks

pytestmark = pytest.mark.slow

VENV = str(Path(sys.executable).parent.parent)


def role(tmp: Path, tags: str, *, extra: tuple[str, ...] = (), **role_vars) -> tuple[int, str]:
    return run_tasks(tmp, dict(os.environ), [], extra=("--tags", tags, *extra),
                     roles=[{"role": "calico.net.calico_node",
                             "calico_node_etcd_endpoints": ["https://198.18.214.9:2379"],
                             "calico_node_etcd_pki_ca_host": "localhost", **role_vars}])


def test_host_python_is_checked(tmp_path):
    rc, out = role(tmp_path, "calico_node_preflight_python")
    assert rc == 0, out
    assert "Python 3.11 or later with venv" in out and "ok: [localhost]" in out


@pytest.mark.parametrize("image", [
    "localhost/calico/node:latest",
    "registry.example:5000/calico/node",
])
def test_unpinned_image_from_a_registry_is_refused(tmp_path, image):
    rc, out = role(tmp_path, "calico_node_preflight_image", calico_node_image=image)
    assert rc != 0, out
    assert f"calico_node_image {image} is not pinned" in out, out


@pytest.mark.parametrize("image,extra", [
    ("localhost/calico/node:v0.1.0", {}),
    ("registry.example:5000/calico/node@sha256:" + "ab" * 32, {}),
    ("localhost/calico/node:latest", {"calico_node_image_archive": "/opt/calico/images/calico-node.tar"}),
    ("localhost/calico/node:latest", {"calico_node_image_allow_unpinned": True}),
])
def test_pinned_archived_or_accepted_image_passes(tmp_path, image, extra):
    rc, out = role(tmp_path, "calico_node_preflight_image", calico_node_image=image, **extra)
    assert rc == 0, out
    warned = "WARNING: calico_node_image" in out
    assert warned == bool(extra.get("calico_node_image_allow_unpinned")), out


def test_library_version_on_the_host_must_be_the_collections(tmp_path):
    # This venv holds the calico_net of this checkout: the collection's version.
    rc, out = role(tmp_path / "same", "calico_node_library_version", calico_node_venv=VENV)
    assert rc == 0, out
    assert "The library on the host is the collection's version" in out

    rc, out = role(tmp_path / "other", "calico_node_library_version", calico_node_venv=VENV,
                   extra=("-e", "_calico_node_collection_version=9.9.9"))
    assert rc != 0, out
    assert "is not calico.net 9.9.9" in out, out

    rc, out = role(tmp_path / "none", "calico_node_library_version", calico_node_venv=str(tmp_path / "no-venv"))
    assert rc != 0, out
    assert "has no usable calico_net" in out, out


def test_role_knows_the_collections_version():
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    role_vars = yaml.safe_load((COLLECTION / "roles" / "calico_node" / "vars" / "main.yml").read_text())
    assert role_vars["_calico_node_collection_version"] == galaxy["version"]
