"""What the entry points' `--help` and `--version` share: the datastore variables
(read by `datastore.etcd.EtcdConfig` for all of them), and the parser of a program
that is configured by its environment only."""
from __future__ import annotations

import argparse

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


def environment_only_parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """The parser of calico-node, calico-confd and calico-node-startup: `--help` prints
    `description` and `epilog` (the environment variables), `--version` the package
    version, any other argument is a usage error (exit 2)."""
    from calico_net import __version__

    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"{prog} (calico.net) {__version__}")
    return parser
