"""Where etcd is and how to authenticate, as Calico's tools read it: explicit
settings, then the ETCD_* environment, then calicoctl.cfg."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

import yaml

from calico_net.datastore.errors import DatastoreError

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"
DEFAULT_CONFIG_FILE = "/etc/calico/calicoctl.cfg"
DEFAULT_TIMEOUT = 10.0


@dataclass
class EtcdConfig:
    """Where etcd is and how to authenticate, as Calico's tools read it."""

    endpoints: list[str] = field(default_factory=lambda: [DEFAULT_ENDPOINTS])
    ca_cert_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_sources(
        cls,
        env: Mapping[str, str] | None = None,
        config_file: str | None = None,
        **overrides: Any,
    ) -> "EtcdConfig":
        """Calico's precedence: explicit overrides, then environment, then the file.

        `config_file` defaults to /etc/calico/calicoctl.cfg when that exists; a file
        named explicitly must exist.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = config_file
        if path is None and os.path.exists(DEFAULT_CONFIG_FILE):
            path = DEFAULT_CONFIG_FILE
        if path:
            values.update(_read_calicoctl_cfg(path))
        env_map = {
            "ETCD_ENDPOINTS": "endpoints",
            "ETCD_CA_CERT_FILE": "ca_cert_file",
            "ETCD_CERT_FILE": "cert_file",
            "ETCD_KEY_FILE": "key_file",
        }
        for var, attr in env_map.items():
            if env.get(var):
                values[attr] = env[var]
        dstype = env.get("DATASTORE_TYPE")
        if dstype and dstype != "etcdv3":
            raise DatastoreError(f'DATASTORE_TYPE "{dstype}" is not supported (only etcdv3)')
        values.update({k: v for k, v in overrides.items() if v is not None})
        eps = values.get("endpoints", DEFAULT_ENDPOINTS)
        if isinstance(eps, str):
            eps = [e.strip() for e in eps.split(",") if e.strip()]
        values["endpoints"] = list(eps)
        cfg = cls(**values)
        cfg.check()
        return cfg

    def check(self) -> None:
        if not self.endpoints:
            raise DatastoreError("no etcd endpoints configured (ETCD_ENDPOINTS)")
        for ep in self.endpoints:
            parts = urlsplit(ep)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise DatastoreError(
                    f'etcd endpoint "{ep}" is not a URL like https://198.18.0.11:2379'
                )
        if bool(self.cert_file) != bool(self.key_file):
            raise DatastoreError("etcd client TLS needs both a certificate and a key file")
        for what, path in (("ca cert file", self.ca_cert_file), ("cert file", self.cert_file),
                           ("key file", self.key_file)):
            if path and not os.path.isfile(path):
                raise DatastoreError(f'{what} "{path}" does not exist')


def _read_calicoctl_cfg(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except OSError as e:
        raise DatastoreError(f"cannot read config file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise DatastoreError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(doc, dict) or doc.get("kind") != "CalicoAPIConfig":
        raise DatastoreError(f"config file {path}: kind must be CalicoAPIConfig")
    spec = doc.get("spec") or {}
    dstype = spec.get("datastoreType", "etcdv3")
    if dstype != "etcdv3":
        raise DatastoreError(f'config file {path}: spec.datastoreType "{dstype}" is not supported (only etcdv3)')
    mapping = {
        "etcdEndpoints": "endpoints",
        "etcdCACertFile": "ca_cert_file",
        "etcdCertFile": "cert_file",
        "etcdKeyFile": "key_file",
    }
    return {attr: spec[k] for k, attr in mapping.items() if spec.get(k)}
