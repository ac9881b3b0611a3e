"""How calico_net talks to etcd, said out loud when it is not safe.

etcd holds the cluster's network policy: whoever can read or rewrite that traffic
can widen what is allowed. An `http://` endpoint is plaintext (no encryption, no
server authentication, no client certificate), and CA/certificate/key files given
with an `http://` endpoint are not used for it at all. Neither is an error — Calico
accepts both, and a throw-away test cluster may want them — but neither may be
silent.

`check_transport()` is the one place that decides this. `EtcdClient` calls it when it
takes its configuration, so calicoctl, the agent, confd, the CNI plugin, start-up
and the Ansible modules all say it the same way. Each line is said once per process
(the same endpoints and files give the same lines): a long-running agent that builds
a client again, or a calicoctl command that builds two, does not repeat it.

Where the lines go: the `calico_net.datastore.transport` logger at WARNING (calicoctl,
the agent and the CNI plugin print that on stderr), or, inside `capture(sink)`, to the
sink instead — the Ansible modules pass `module.warn` there, so the warning is in the
task result rather than on the module's stderr.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Callable, Iterator, Sequence
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from calico_net.datastore.config import EtcdConfig

log = logging.getLogger(__name__)

# Longest endpoint or file name quoted in a warning (the rest is cut with "...").
MAX_SHOWN = 200

_lock = threading.Lock()
_said: set[str] = set()
_sinks: list[Callable[[str], None]] = []


def _shown(text: str) -> str:
    """`text` for a log line: control characters escaped, length bounded."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return out if len(out) <= MAX_SHOWN else out[:MAX_SHOWN] + "..."


def is_plaintext(endpoint: str) -> bool:
    return urlsplit(endpoint.strip()).scheme.lower() == "http"


def transport_warnings(
    endpoints: Sequence[str],
    ca_cert_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> list[str]:
    """The warning lines for this connection configuration ([] when it is all TLS).

    One line naming every `http://` endpoint; one more when TLS files were given,
    naming the files and saying that those endpoints do not use them.
    """
    plain = [ep for ep in endpoints if is_plaintext(ep)]
    if not plain:
        return []
    names = ", ".join(_shown(ep) for ep in plain)
    lines = [
        f"INSECURE: etcd endpoint{'s' if len(plain) > 1 else ''} {names} "
        f"{'are' if len(plain) > 1 else 'is'} plaintext: no encryption, no server "
        "or client authentication; anyone on the path can read and rewrite the cluster's "
        "network policy. Use https:// endpoints with a CA and a client certificate."
    ]
    files = [(what, path) for what, path in
             (("CA", ca_cert_file), ("certificate", cert_file), ("key", key_file)) if path]
    if files:
        given = ", ".join(f"{what} {_shown(path)}" for what, path in files)
        lines.append(
            f"INSECURE: etcd TLS files ({given}) are IGNORED for the http:// "
            f"endpoint{'s' if len(plain) > 1 else ''} {names}: TLS is used only with https:// "
            "endpoints."
        )
    return lines


def check_transport(
    endpoints: Sequence[str],
    ca_cert_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> list[str]:
    """Say `transport_warnings()` — each line once per process — and return them all."""
    lines = transport_warnings(endpoints, ca_cert_file, cert_file, key_file)
    if not lines:
        return lines
    with _lock:
        new = [line for line in lines if line not in _said]
        _said.update(new)
        sinks = list(_sinks)
    for line in new:
        if sinks:
            for sink in sinks:
                sink(line)
        else:
            log.warning("%s", line)
    return lines


def check_config(config: "EtcdConfig") -> list[str]:
    """`check_transport()` for an `EtcdConfig`."""
    return check_transport(list(config.endpoints or []), config.ca_cert_file, config.cert_file,
                           config.key_file)


@contextlib.contextmanager
def capture(sink: Callable[[str], None]) -> Iterator[None]:
    """While inside, warning lines go to `sink` instead of the log."""
    with _lock:
        _sinks.append(sink)
    try:
        yield
    finally:
        with _lock:
            _sinks.remove(sink)


def reset() -> None:
    """Forget what was said (tests)."""
    with _lock:
        _said.clear()
