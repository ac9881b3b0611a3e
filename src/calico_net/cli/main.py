"""`calicoctl`: the operator's command line, mirroring Calico's verbs.

One module per noun (`resources` for create/apply/replace/delete/get/label/validate,
`node`, `ipam`), all sharing one datastore connection built lazily from
`--config`/environment. Every error becomes one line on stderr and a non-zero exit
here, in one place.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from calico_net import __version__
from calico_net.envhelp import datastore_env_help

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


@dataclass
class Context:
    """What every subcommand handler gets: the parsed config and a lazy datastore."""

    config_file: str | None
    _client: Any = None
    _datastore: Any = None
    out: Any = field(default_factory=lambda: sys.stdout)
    err: Any = field(default_factory=lambda: sys.stderr)

    @property
    def client(self):
        if self._client is None:
            from calico_net.datastore.etcd import EtcdClient, EtcdConfig

            self._client = EtcdClient(EtcdConfig.from_sources(config_file=self.config_file))
        return self._client

    @property
    def datastore(self):
        if self._datastore is None:
            from calico_net.datastore.store import Datastore

            self._datastore = Datastore(self.client)
        return self._datastore


def add_noun(sub: argparse._SubParsersAction, name: str, help_: str, **kw: Any) -> argparse._SubParsersAction:
    """A command that only groups subcommands (`ipam`, `node`, `datastore migrate`):
    its parser, with a subcommand required."""
    p = sub.add_parser(name, help=help_, **kw)
    nested = p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")
    nested.required = True
    return nested


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calicoctl",
        description="Manage calico.net resources (Calico v3 API on etcd).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="environment (wins over the config file):\n" + datastore_env_help(20),
    )
    parser.add_argument("--version", action="version", version=f"calicoctl v{__version__}")
    parser.add_argument("-c", "--config", default=None,
                        help="calicoctl config file (default /etc/calico/calicoctl.cfg when present)")
    parser.add_argument("-l", "--log-level", default="warning",
                        help="log level for diagnostics on stderr (default warning)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    from calico_net.cli import explain, ipam, migrate, node, patch, resources

    for module in (resources, patch, node, ipam, migrate, explain):
        module.register(sub)

    v = sub.add_parser("version", help="print the client version and the cluster's",
                       description="Print calicoctl's version, then the cluster's as recorded in "
                                   "ClusterInformation \"default\" (\"unknown\" when it is not there).")
    v.add_argument("--client", action="store_true", help="only the client version; do not read the datastore")
    v.set_defaults(func=_version)
    return parser


# Where Calico keeps ClusterInformation "default"; read as stored, never written here.
CLUSTER_INFO_KEY = "/calico/resources/v3/projectcalico.org/clusterinformations/default"


def cluster_information(ctx: Context) -> dict[str, Any]:
    """The spec of ClusterInformation "default", or {} when there is none."""
    import orjson

    kv = ctx.client.get(CLUSTER_INFO_KEY)
    if kv is None:
        return {}
    try:
        doc = orjson.loads(kv.value)
    except orjson.JSONDecodeError:
        raise ValueError(f"{CLUSTER_INFO_KEY} does not hold JSON") from None
    spec = doc.get("spec") if isinstance(doc, dict) else None
    return spec if isinstance(spec, dict) else {}


def _version(args: argparse.Namespace, ctx: Context) -> int:
    print(f"Client Version:    v{__version__}", file=ctx.out)
    if args.client:
        return EXIT_OK
    spec = cluster_information(ctx)

    def field_(name: str) -> str:
        value = spec.get(name)
        return "unknown" if value in (None, "") else error_lines(str(value))

    print(f"Cluster Version:   {field_('calicoVersion')}", file=ctx.out)
    print(f"Cluster Type:      {field_('clusterType')}", file=ctx.out)
    print(f"Cluster GUID:      {field_('clusterGUID')}", file=ctx.out)
    print("Datastore:         etcdv3", file=ctx.out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.getLevelNamesMapping().get(str(args.log_level).upper(), logging.WARNING),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx = Context(config_file=args.config)
    func: Callable[[argparse.Namespace, Context], int] = args.func
    try:
        return int(func(args, ctx) or EXIT_OK)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 - the one place errors become exit codes
        from calico_net.datastore.errors import DatastoreError
        from calico_net.errors import CalicoNetError

        if isinstance(e, (DatastoreError, CalicoNetError, OSError, ValueError)):
            print(error_lines(f"calicoctl: {e}"), file=sys.stderr)
            return EXIT_ERROR
        if isinstance(e, (RecursionError, MemoryError)):
            # input beyond what the readers bound: still one line, no traceback
            print(error_lines(f"calicoctl: input too large or too deeply nested "
                              f"({e.__class__.__name__})"), file=sys.stderr)
            return EXIT_ERROR
        logging.getLogger("calicoctl").exception("unexpected error")
        print(error_lines(f"calicoctl: internal error: {e.__class__.__name__}: {e}"), file=sys.stderr)
        return EXIT_ERROR


# One error line is at most this long; an error of several documents has one line each.
MAX_ERROR_LINE = 4000


def error_lines(text: str) -> str:
    """An error as it reaches the terminal: each line bounded, anything unprintable
    (ANSI escapes, control characters) escaped, whatever the message was built from."""
    from calico_net.errors import printable

    return "\n".join(printable(line, MAX_ERROR_LINE) for line in text.split("\n"))


if __name__ == "__main__":
    sys.exit(main())
