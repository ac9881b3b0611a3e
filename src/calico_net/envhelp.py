"""The datastore part of every entry point's `--help`: the environment variables that
choose and reach etcd, read by `datastore.etcd.EtcdConfig` for all of them."""
from __future__ import annotations

_DATASTORE_VARS = (
    ("ETCD_ENDPOINTS", "etcd URLs, comma-separated (else /etc/calico/calicoctl.cfg,",
     "else http://127.0.0.1:2379)"),
    ("ETCD_CA_CERT_FILE", "CA bundle for etcd's TLS certificate"),
    ("ETCD_CERT_FILE", "client certificate for etcd"),
    ("ETCD_KEY_FILE", "client key for etcd"),
    ("DATASTORE_TYPE", "only etcdv3"),
)


def datastore_env_help(width: int) -> str:
    """The lines for the datastore variables, names padded to `width` columns (the
    caller's own column), each indented by two spaces."""
    lines = []
    for name, first, *more in _DATASTORE_VARS:
        lines.append(f"  {name:{width}}{first}")
        lines.extend(f"  {'':{width}}{text}" for text in more)
    return "\n".join(lines)
