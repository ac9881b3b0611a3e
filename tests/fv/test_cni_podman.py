"""`podman run --network calico` attaches a container through the plugin, and
`podman rm` detaches it — with the network installed by `calico_net.cni.install`.

The host's podman uses netavark; this test points podman at its own containers.conf
(CONTAINERS_CONF: the host's [containers] settings plus `network_backend = "cni"`,
a private CNI config dir and the plugin wrappers' dir), so nothing on the host
changes. The image is a 2 MB busybox image built locally from Debian's busybox-static
(`localhost/calico-cni-test-busybox`, kept between runs); no registry is needed.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest

from calico_net.cni import install
from calico_net.ipam import IPAM

pytestmark = [pytest.mark.root, pytest.mark.slow]

IMAGE = "localhost/calico-cni-test-busybox:latest"
FALLBACK_IMAGE = "localhost/calico-lab-base:latest"
CONTAINER = "cnfv-cni-podman"
NODE = "cnfv-cni-podman-node"
BUSYBOX_APPLETS = ("sh", "ip", "sleep", "cat", "ls", "ping", "nc", "wget")


def podman(env: dict[str, str], *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    p = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def containers_conf(path: Path, bin_dir: Path, conf_dir: Path) -> None:
    """The host's containers.conf (its quirk settings matter here too) with the
    network section replaced by one that selects CNI and our directories."""
    host = Path("/etc/containers/containers.conf")
    doc = tomllib.loads(host.read_text()) if host.exists() else {}
    doc["network"] = {
        "network_backend": "cni",
        "cni_plugin_dirs": [str(bin_dir), "/usr/lib/cni", "/usr/libexec/cni", "/opt/cni/bin"],
        "network_config_dir": str(conf_dir),
    }
    lines = []
    for section, table in doc.items():
        if not isinstance(table, dict):
            continue
        lines.append(f"[{section}]")
        for k, v in table.items():
            try:
                lines.append(f"{k} = {_toml_value(v)}")
            except TypeError:
                continue  # nested tables: not needed for this test
        lines.append("")
    path.write_text("\n".join(lines))


def ensure_image(env: dict[str, str], tmp: Path) -> str:
    if podman(env, "image", "exists", IMAGE, check=False).returncode == 0:
        return IMAGE
    busybox = shutil.which("busybox")
    if busybox:
        tar = tmp / "rootfs.tar"
        with tarfile.open(tar, "w") as t:
            for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            t.add(busybox, arcname="bin/busybox")
            for applet in BUSYBOX_APPLETS:
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                t.addfile(info)
        podman(env, "import", "--change", 'CMD ["/bin/sh"]', str(tar), IMAGE)
        return IMAGE
    if podman(env, "image", "exists", FALLBACK_IMAGE, check=False).returncode == 0:
        return FALLBACK_IMAGE
    pytest.fail("no local image: install busybox-static (scripts/install-deps.sh)")


@pytest.fixture
def podman_env(tmp_path) -> Iterator[dict[str, str]]:
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    install.install_plugins(bin_dir)
    conf_dir.mkdir()
    containers_conf(tmp_path / "containers.conf", bin_dir, conf_dir)
    env = dict(os.environ, CONTAINERS_CONF=str(tmp_path / "containers.conf"))
    podman(env, "rm", "-f", "-t", "0", CONTAINER, check=False)  # left over by a killed run
    try:
        yield env
    finally:
        podman(env, "rm", "-f", "-t", "0", CONTAINER, check=False)


def test_podman_run_attaches_and_rm_detaches(podman_env, datastore, etcd, tmp_path):
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                      "metadata": {"name": "podman-pool"}, "spec": {"cidr": "198.19.70.0/24"}})
    conflist = install.render_conflist(etcd.endpoints, nodename=NODE, log_level="debug",
                                       log_file_path=str(tmp_path / "cni.log"))
    install.install_conflist(tmp_path / "net.d", conflist)
    assert podman(podman_env, "info", "--format", "{{.Host.NetworkBackend}}").stdout.strip() == "cni"
    assert "calico" in podman(podman_env, "network", "ls", "--format", "{{.Name}}").stdout.split()
    image = ensure_image(podman_env, tmp_path)

    cid = podman(podman_env, "run", "-d", "--name", CONTAINER, "--network", "calico", image,
                 "sleep", "600").stdout.strip()
    try:
        nets = json.loads(podman(podman_env, "inspect", "--format", "{{json .NetworkSettings.Networks}}",
                                 CONTAINER).stdout)
        addr = ipaddress.ip_address(nets["calico"]["IPAddress"])
        assert addr in ipaddress.ip_network("198.19.70.0/24")
        inside = podman(podman_env, "exec", CONTAINER, "ip", "route").stdout
        assert "default via 169.254.1.1 dev eth0" in inside
        assert f"inet {addr}/32" in podman(podman_env, "exec", CONTAINER, "ip", "addr", "show", "eth0").stdout

        [wep] = datastore.list("WorkloadEndpoint")[0]
        spec = wep["spec"]
        assert spec["containerID"] == cid and spec["workload"] == CONTAINER and spec["node"] == NODE
        assert spec["ipNetworks"] == [f"{addr}/32"] and spec["profiles"] == ["calico"]
        assert wep["metadata"]["name"] == f"cnfv--cni--podman--node-cni-{cid}-eth0"
        host_if = spec["interfaceName"]
        assert subprocess.run(["ip", "link", "show", host_if], capture_output=True).returncode == 0
        assert IPAM(datastore.client, datastore).get_assignment(addr).handle_id == f"calico.{cid}"
    finally:
        (tmp_path / "cni.log").exists() and print((tmp_path / "cni.log").read_text()[-3000:])
        podman(podman_env, "rm", "-f", "-t", "0", CONTAINER)

    assert datastore.list("WorkloadEndpoint")[0] == []
    assert sum(b.in_use for b in IPAM(datastore.client, datastore).blocks()) == 0
    assert subprocess.run(["ip", "link", "show", host_if], capture_output=True).returncode != 0
