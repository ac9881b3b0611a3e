"""confd's settings: what it takes from its environment (:class:`ConfdSettings`,
documented in docs/bgp.md) and where BGP passwords come from (:class:`SecretReader`:
files ``$CALICO_BGP_SECRETS_DIR/<name>/<key>`` or the environment
``CALICO_BGP_PASSWORD_<NAME>_<KEY>``). A password is never logged.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from calico_net.agent.confd import birdctl
from calico_net.agent.confd.render import RenderOptions
from calico_net.ipam import keys as ipam_keys

log = logging.getLogger(__name__)

DEFAULT_BIRD_CONFIG = "/etc/calico/confd/config/bird.cfg"
DEFAULT_BIRD_SOCKET = birdctl.DEFAULT_SOCKET
DEFAULT_SECRETS_DIR = "/etc/calico/bgp-secrets"
DEFAULT_STATUS_FILE = "/var/run/calico/confd-status.json"
DEFAULT_HEALTH_PORT = 9098


def _env_bool(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    try:
        return float(raw) if raw.strip() else default
    except ValueError:
        log.warning("ignoring %s=%r: not a number", name, raw)
        return default


@dataclass
class ConfdSettings:
    """Everything confd takes from its environment (see docs/bgp.md)."""

    node_name: str
    bird_config: str = DEFAULT_BIRD_CONFIG
    bird_socket: str = DEFAULT_BIRD_SOCKET
    bird_binary: str = "bird"
    secrets_dir: str = DEFAULT_SECRETS_DIR
    status_file: str | None = DEFAULT_STATUS_FILE
    health_enabled: bool = True
    health_host: str = "127.0.0.1"
    health_port: int = DEFAULT_HEALTH_PORT
    coalesce: float = 0.05  # seconds of quiet before rendering
    coalesce_max: float = 0.5  # but never wait longer than this after the first change
    refresh_interval: float = 30.0  # re-render anyway (secrets may have rotated)
    reload_retry: float = 2.0  # retry a failed BIRD configure after this long
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    probe_interval: float = 5.0
    options: RenderOptions = field(default_factory=RenderOptions)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConfdSettings:
        import socket

        env = os.environ if env is None else env
        router_id = env.get("CALICO_ROUTER_ID") or None
        options = RenderOptions(router_id=router_id)
        status = env.get("CALICO_CONFD_STATUS_FILE", DEFAULT_STATUS_FILE)
        return cls(
            # The name is an etcd key component (this node's IPAM affinities): refuse
            # "/", NUL, newline and the like here (ValueError: exit 2).
            node_name=ipam_keys.check_node_name(env.get("NODENAME") or socket.gethostname()),
            bird_config=env.get("CALICO_BIRD_CONFIG") or DEFAULT_BIRD_CONFIG,
            bird_socket=env.get("CALICO_BIRD_SOCKET") or DEFAULT_BIRD_SOCKET,
            bird_binary=env.get("CALICO_BIRD_BINARY") or "bird",
            secrets_dir=env.get("CALICO_BGP_SECRETS_DIR") or DEFAULT_SECRETS_DIR,
            status_file=status or None,
            health_enabled=_env_bool(env.get("CALICO_CONFD_HEALTHENABLED"), True),
            health_host=env.get("CALICO_CONFD_HEALTHHOST") or "127.0.0.1",
            health_port=int(env.get("CALICO_CONFD_HEALTHPORT") or DEFAULT_HEALTH_PORT),
            coalesce=_env_float(env, "CALICO_CONFD_COALESCE", 0.05),
            refresh_interval=_env_float(env, "CALICO_CONFD_REFRESH_INTERVAL", 30.0),
            options=options,
        )


class SecretReader:
    """Looks up a ``secretKeyRef`` ``{name, key}``: first the file
    ``<secrets_dir>/<name>/<key>`` (one trailing newline dropped), then the environment
    variable ``CALICO_BGP_PASSWORD_<NAME>_<KEY>`` (upper case, other characters as
    ``_``). Returns None when neither exists. The value is never logged."""

    _SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # fullmatch: no trailing newline

    def __init__(self, secrets_dir: str, env: Mapping[str, str] | None = None) -> None:
        self.secrets_dir = secrets_dir
        self.env = os.environ if env is None else env

    @staticmethod
    def env_name(name: str, key: str) -> str:
        def norm(s: str) -> str:
            return re.sub(r"[^A-Za-z0-9]", "_", s).upper()

        return f"CALICO_BGP_PASSWORD_{norm(name)}_{norm(key)}"

    def __call__(self, ref: Mapping[str, Any]) -> str | None:
        name, key = str(ref.get("name") or ""), str(ref.get("key") or "")
        if not (self._SAFE.fullmatch(name) and self._SAFE.fullmatch(key)) or ".." in name + key:
            log.warning("secretKeyRef %r/%r is not a safe file name; ignored", name, key)
            return None
        path = os.path.join(self.secrets_dir, name, key)
        try:
            with open(path, encoding="utf-8") as fh:
                value = fh.read()
            return value[:-1] if value.endswith("\n") else value
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read BGP secret %s: %s", path, exc.__class__.__name__)
        return self.env.get(self.env_name(name, key))
