"""Start and stop a real etcd for tests and benches (Debian's etcd-server).

Importable as `etcd_server` from anywhere under tests/ (tests/ is on sys.path through
its conftest), and from bench scripts that put tests/ on sys.path. Not named
conftest: with several conftest.py files, `from conftest import` is ambiguous.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ssl
import urllib.error
import urllib.request

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EtcdServer:
    endpoints: str
    data_dir: str
    proc: subprocess.Popen

    def client(self):
        from calico_net.datastore.etcd import EtcdConfig, EtcdClient

        return EtcdClient(EtcdConfig(endpoints=[self.endpoints]))

    def stop(self) -> None:
        stop_etcd(self)

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (calicoctl, agent, CNI) using this etcd."""
        env = dict(os.environ)
        env["ETCD_ENDPOINTS"] = self.endpoints
        env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
        for k in ("ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE"):
            env.pop(k, None)
        return env


def start_etcd(listen_host: str = "127.0.0.1", extra_args: list[str] | None = None,
               tls: dict[str, str] | None = None, name: str = "test",
               data_parent: str | None = None) -> EtcdServer:
    """Start an etcd; with `tls` ({"ca", "cert", "key"} server files, client certs
    required) it serves https only. Its data goes in a new directory under
    `data_parent` (default: the system's temporary directory)."""
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    if not os.path.exists(etcd):
        raise RuntimeError("etcd is not installed (make test installs Debian's etcd-server)")
    data_dir = tempfile.mkdtemp(prefix="calico-test-etcd-", dir=data_parent)
    cport, pport = free_port(), free_port()
    client_url = f"{'https' if tls else 'http'}://{listen_host}:{cport}"
    tls_args = []
    if tls:
        tls_args = ["--cert-file", tls["cert"], "--key-file", tls["key"],
                    "--trusted-ca-file", tls["ca"], "--client-cert-auth"]
    peer_url = f"http://127.0.0.1:{pport}"
    log = open(os.path.join(data_dir, "etcd.log"), "w")
    proc = subprocess.Popen(
        [
            etcd, "--name", name, "--data-dir", os.path.join(data_dir, "data"),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{name}={peer_url}",
            "--max-txn-ops", "20000", "--max-request-bytes", str(32 * 1024 * 1024),
            "--quota-backend-bytes", str(4 * 1024**3),
            "--log-level", "warn", "--logger", "zap",
            *tls_args, *(extra_args or []),
        ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    server = EtcdServer(client_url, data_dir, proc)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {open(os.path.join(data_dir, 'etcd.log')).read()[-2000:]}")
            if _healthy(client_url, tls):
                return server
            time.sleep(0.1)
        raise RuntimeError("etcd did not become healthy in 30 s")
    except BaseException:
        stop_etcd(server)     # also when interrupted while waiting: never left running
        raise


def _healthy(client_url: str, tls: dict[str, str] | None) -> bool:
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if tls:
        context = ssl.create_default_context(cafile=tls["ca"])
        context.load_cert_chain(tls["client_cert"], tls["client_key"])
        handlers.append(urllib.request.HTTPSHandler(context=context))
    try:
        with urllib.request.build_opener(*handlers).open(client_url + "/health", timeout=1) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s; a process that has ended is left alone."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_etcd(server: EtcdServer) -> None:
    stop_process(server.proc)
    shutil.rmtree(server.data_dir, ignore_errors=True)
