"""What the agent needs from its kernel-facing backends, as `typing.Protocol`s.

The daemon, the cold start, the policy dataplane and the nft writer program the
host only through these: `RouteBackend` (links and routes: `rtnetlink.Netlink`),
`NftBackend` (nft transactions and read-back: `nft.NftRunner`) with its
`ElementWriter` (netlink element batches: `nft_netlink.NetlinkSetWriter`),
`SysctlBackend` (interface and host sysctls: `sysctl.Sysctls`) and
`PolicyBackend` (the policy dataplane as the daemon drives it:
`policy.PolicyDataplane`). A stand-in (the test fakes) implements the whole
Protocol; nothing probes an object for what it can do.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol

if TYPE_CHECKING:
    from .rtnetlink import Link, Route, RouteOp

__all__ = ["RouteBackend", "ElementWriter", "NftBackend", "PendingSysctls", "PendingLookups",
           "SysctlBackend", "PolicyBackend"]

#: (name, index, up) of an interface, as the sysctl helper looked it up
FoundLink = tuple[str, int, bool]
#: per interface name: (index found, errno, message) from the by-name sysctl helper
ByNameResult = dict[str, tuple[int, int, str]]


class RouteBackend(Protocol):
    """Links and routes of one network namespace."""

    def links(self) -> list["Link"]: ...
    def links_named(self, names: Iterable[str]) -> list["Link"]: ...
    def routes(self, protocol: int = ..., table: int = ...) -> dict["Route", int]: ...
    def write(self, ops: list["RouteOp"], protocol: int = ..., table: int = ...) -> None: ...


class ElementWriter(Protocol):
    """Element-only transactions as one netlink batch: ops are
    (verb, set, set declaration, key, value)."""

    def prepare(self, ops: Iterable[tuple[str, str, str, str, str | None]]) -> Any: ...
    def send(self, batch: Any) -> int: ...
    def write(self, ops: Iterable[tuple[str, str, str, str, str | None]]) -> int: ...


class NftBackend(Protocol):
    """nft transactions on table inet calico and reading it back."""

    def run(self, script: str, meanwhile: Callable[[], None] | None = None,
            on_spawn: Callable[[], None] | None = None) -> None: ...
    def list_table(self) -> dict[str, Any] | None: ...
    def table_exists(self) -> bool: ...
    def read_counts(self) -> tuple[dict[str, int], dict[str, int]] | None: ...
    def read_fingerprint(self) -> str | None: ...
    def element_writer(self) -> ElementWriter | None: ...


class PendingSysctls(Protocol):
    """Interfaces being configured; `wait()` returns the names that failed."""

    def wait(self) -> list[str]: ...


class PendingLookups(Protocol):
    """The sysctl helper started on interface names (`start_configure_names`)."""

    def links(self) -> list[FoundLink] | None: ...
    def wait(self) -> ByNameResult | None: ...


class SysctlBackend(Protocol):
    """Kernel settings of workload interfaces and of the host."""

    #: at least this many interfaces: a helper process (fewer: written inline)
    HELPER_MIN: int

    def configure_host(self) -> int: ...
    def configure_interfaces(self, items: Iterable[tuple["Link", bool]]) -> list[str]: ...
    def start_configure(self, items: Iterable[tuple["Link", bool]]) -> PendingSysctls: ...
    def start_configure_names(self, items: Iterable[tuple[str, bool]],
                              links: bool = False) -> PendingLookups: ...
    def finish_by_name(self, result: ByNameResult | None, items: Iterable[tuple["Link", bool]]
                       ) -> tuple[list[tuple["Link", bool]], list[str]]: ...


class PolicyBackend(Protocol):
    """The policy dataplane as the daemon drives it."""

    def update(self, kind: str, name: str, namespace: str | None,
               doc: Mapping[str, Any] | None) -> None: ...
    def update_member(self, member: Any) -> None: ...
    def set_settings(self, settings: Any) -> None: ...
    def apply(self, while_loading: Callable[[], None] | None = None) -> Any: ...
    def refresh(self) -> bool: ...
    def table_exists(self) -> bool: ...
    def load_placeholder(self) -> None: ...
    def set_encap_hosts(self, ipip: frozenset[str] | None, vxlan: frozenset[str] | None,
                        vxlan_port: int) -> None: ...
