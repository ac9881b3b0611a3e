"""The calico_node role's preflight of the managed host: Python 3.11+ with venv, a pinned
calico/node image, and the calico_net library on the host at the collection's version.

The role runs for real on localhost, but only the tasks of these checks (`--tags`), so
nothing is installed or started. Every refusal is paired with the same play passing.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from playbook_runner import COLLECTION, VENV_BIN, ansible_env, run_tasks

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


# --- dual-stack settings -----------------------------------------------------------------


def node_env(tmp: Path, **role_vars) -> tuple[int, str]:
    """The role's settings check, then the container environment it would give calico/node."""
    return run_tasks(tmp, dict(os.environ),
                     [{"name": "env", "ansible.builtin.debug": {"var": "_calico_node_env"}, "tags": ["always"]}],
                     extra=("--tags", "calico_node_preflight_settings"), gather_facts=True,
                     # play vars, not role parameters: the task after the role sees them too
                     vars={"calico_node_etcd_endpoints": ["https://198.18.214.9:2379"],
                           "calico_node_etcd_pki_ca_host": "localhost", **role_vars},
                     roles=["calico.net.calico_node"])


def test_ip6_settings_reach_calico_node(tmp_path):
    rc, out = node_env(tmp_path / "v6", calico_node_ip6="autodetect",
                       calico_node_ip6_autodetection_method="cidr=fd00:198:214::/64")
    assert rc == 0, out
    assert '"IP6": "autodetect"' in out and '"IP6_AUTODETECTION_METHOD": "cidr=fd00:198:214::/64"' in out, out

    rc, out = node_env(tmp_path / "v4-only")
    assert rc == 0, out
    assert '"IP": "autodetect"' in out and '"IP6"' not in out, out

    rc, out = node_env(tmp_path / "bad", calico_node_ip6="198.18.214.1")
    assert rc != 0, out
    assert "IP6 empty|autodetect|none|an IPv6 address" in out, out


def test_site_declares_the_ipv6_pool(datastore, etcd, tmp_path):
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[etcd]\n[calico_nodes]\n"
                         f"localhost ansible_connection=local ansible_become=false calico_node_venv={VENV}\n")
    env = ansible_env(etcd.env(), tmp_path)
    # Only the cluster-resources play from its IPv6 pool task on (the roles are tested
    # elsewhere); its venv check is what the skipped stat task would have found.
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(COLLECTION / "playbooks" / "site.yml"),
         "--start-at-task", "The default IPv6 pool (dual-stack)", "-e", '{"_venv": {"stat": {"exists": true}}}',
         "-e", "calico_ipv6_pool_cidr=fd00:198:214::/48"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    pool = datastore.get("IPPool", "default-ipv6-ippool")
    assert pool["spec"]["cidr"] == "fd00:198:214::/48" and pool["spec"]["blockSize"] == 122
