"""`ansible-galaxy collection build` of calico.net, install of the artifact, and a run of
the installed copy.

The artifact is built from the checkout and installed into an empty collections path
(no Galaxy server is reachable here; the collection has no dependencies, so the install
needs none). Then, with only that path on ANSIBLE_COLLECTIONS_PATH: the roles, the
playbooks and node_container are in it; ansible-doc reads the modules' and roles'
documentation (meta/argument_specs.yml); every playbook in playbooks/ (found by listing
the directory, so a new one is covered) has an identifier for a file name and passes
--syntax-check through its FQCN `calico.net.<name>`, run from outside the checkout; and a
module of the installed copy (ip_pool) runs against the test session's etcd, twice,
changed and then unchanged.
"""
from __future__ import annotations

import keyword
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from playbook_runner import COLLECTION, VENV_BIN

pytestmark = pytest.mark.slow

PLAYBOOK_SUFFIXES = (".yml", ".yaml")
PLAYBOOKS = sorted(p.name for p in (COLLECTION / "playbooks").iterdir()
                   if p.is_file() and p.suffix in PLAYBOOK_SUFFIXES)
# Extra variables a playbook's header says to pass, where its plays' `hosts` need them.
PLAYBOOK_EXTRA_VARS = {"remove_node": ["-e", "calico_remove_node=n1"]}


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the collection, install the artifact; returns (artifact, collections path)."""
    tmp = tmp_path_factory.mktemp("collection")
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", str(COLLECTION), "--output-path", str(tmp),
         "--force"])
    artifact = tmp / f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"
    assert artifact.exists(), sorted(p.name for p in tmp.iterdir())
    path = tmp / "collections"
    run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--offline", "-p", str(path), str(artifact)])
    return artifact, path


def ansible_env(path: Path, tmp: Path) -> dict[str, str]:
    (tmp / "ansible.cfg").write_text("[defaults]\n")
    return {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp),
        "ANSIBLE_CONFIG": str(tmp / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(path),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp / "remote"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }


def test_artifact_carries_roles_playbooks_and_modules(installed):
    artifact, path = installed
    with tarfile.open(artifact) as tar:
        names = set(tar.getnames())
    for role in ("etcd", "calico_node", "bird"):
        assert f"roles/{role}/tasks/main.yml" in names
        assert f"roles/{role}/meta/argument_specs.yml" in names
    assert "playbooks/site.yml" in names
    assert "plugins/modules/node_container.py" in names
    assert "MANIFEST.json" in names and "FILES.json" in names
    root = path / "ansible_collections" / "calico" / "net"
    assert (root / "MANIFEST.json").exists()
    assert (root / "roles" / "etcd" / "templates" / "usr" / "local" / "sbin" / "calico-etcd-pki.j2").exists()


def test_installed_docs_and_argument_specs(installed, tmp_path):
    _, path = installed
    env = ansible_env(path, tmp_path)
    listing = run([str(VENV_BIN / "ansible-doc"), "-l", "calico.net"], env=env)
    for module in ("calico.net.node_container", "calico.net.ip_pool", "calico.net.bgp_configuration"):
        assert module in listing
    doc = run([str(VENV_BIN / "ansible-doc"), "calico.net.node_container"], env=env)
    assert "image_archive" in doc
    for role in ("etcd", "calico_node", "bird"):
        role_doc = run([str(VENV_BIN / "ansible-doc"), "-t", "role", f"calico.net.{role}"], env=env)
        assert "ENTRY POINT: main" in role_doc


def test_installed_site_playbook_passes_syntax_check(installed, tmp_path):
    _, path = installed
    env = ansible_env(path, tmp_path)
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[etcd]\nn1\n[calico_nodes]\nn1\n[route_reflectors]\nrr1\n")
    play = tmp_path / "play.yml"
    play.write_text("- ansible.builtin.import_playbook: calico.net.site\n")
    run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "--syntax-check", str(play)], env=env)


def test_playbook_file_names_are_identifiers():
    """`ansible-playbook ns.coll.<name>` only finds playbooks/<name>.yml when <name> is a
    Python identifier (not a keyword): `calico.net.remove-node` is "could not be found"."""
    from ansible.utils.collection_loader import AnsibleCollectionRef

    assert "site.yml" in PLAYBOOKS, PLAYBOOKS
    bad = [name for name in PLAYBOOKS
           if not (Path(name).stem.isidentifier() and not keyword.iskeyword(Path(name).stem)
                   and AnsibleCollectionRef.is_valid_fqcr(f"calico.net.{Path(name).stem}", "playbook"))]
    assert not bad, f"playbook file names that cannot be run by FQCN: {bad}"


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_installed_playbook_passes_syntax_check_by_fqcn(installed, tmp_path, playbook):
    _, path = installed
    assert (path / "ansible_collections" / "calico" / "net" / "playbooks" / playbook).exists()
    env = ansible_env(path, tmp_path)
    inventory = tmp_path / "inventory.ini"
    # two calico nodes: remove_node cleans the datastore from one that stays
    inventory.write_text("[etcd]\nn1\n[calico_nodes]\nn1\nn2\n[route_reflectors]\nrr1\n")
    name = Path(playbook).stem
    out = run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "--syntax-check",
               *PLAYBOOK_EXTRA_VARS.get(name, []), f"calico.net.{name}"], env=env, cwd=tmp_path)
    assert "could not be found" not in out, out


def test_installed_module_runs(installed, etcd, tmp_path):
    _, path = installed
    client = etcd.client()
    client.delete_prefix("/calico/")
    try:
        env = ansible_env(path, tmp_path)
        env["ETCD_ENDPOINTS"] = etcd.endpoints
        play = tmp_path / "pool.yml"
        play.write_text(yaml.safe_dump([{
            "hosts": "localhost", "gather_facts": False,
            "tasks": [
                {"calico.net.ip_pool": {"name": "collection-build-pool", "cidr": "198.19.200.0/24"}, "register": "first"},
                {"calico.net.ip_pool": {"name": "collection-build-pool", "cidr": "198.19.200.0/24"}, "register": "second"},
                {"ansible.builtin.assert": {"that": ["first is changed", "second is not changed"]}},
            ],
        }]))
        inventory = tmp_path / "local.ini"
        inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
        run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(play)], env=env)
    finally:
        client.delete_prefix("/calico/")
        client.close()
