"""Stand-ins for the agent's kernel-facing backends, for unit tests and benches.

Each implements the whole Protocol it stands in for (calico_net.agent.felix.backends):
`FakeNftRunner` (NftBackend and its ElementWriter), `FakeKernel` (RouteBackend),
`FakeSysctls` (SysctlBackend, in memory).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from calico_net.agent.felix.nft import NftError, counts_from_json
from calico_net.agent.felix.rtnetlink import RT_TABLE_MAIN, RTPROT_FELIX, Link, Route, RouteOp


class FakeNftRunner:
    """Records scripts instead of running them (unit tests); `fail_next` makes the
    next run raise; `table` is what `list_table` returns."""

    def __init__(self, fast_elements: bool = False) -> None:
        self.scripts: list[str] = []
        self.fail_next = 0
        self.table: dict[str, Any] | None = None
        self.fingerprint: str | None = None
        self.netns = None
        self.calls = 0
        self.fast_elements = fast_elements
        #: element batches sent on the fast path: lists of (verb, set, decl, key, value)
        self.batches: list[list[tuple[str, str, str, str, str | None]]] = []
        self.fail_fast_next = 0

    def element_writer(self) -> "FakeNftRunner | None":
        return self if self.fast_elements else None

    # the element writer (ElementWriter), when fast_elements

    def write(self, ops: Any) -> int:
        return self.send(self.prepare(ops))

    def prepare(self, ops: Any) -> list[tuple[str, str, str, str, str | None]]:
        return list(ops)

    def send(self, ops: list[tuple[str, str, str, str, str | None]]) -> int:
        if self.fail_fast_next:
            self.fail_fast_next -= 1
            raise NftError("fake netlink failure")
        self.batches.append(ops)
        return len(ops)

    def run(self, script: str, meanwhile: Callable[[], None] | None = None,
            on_spawn: Callable[[], None] | None = None) -> None:
        # no nft process is started: `on_spawn` is never called (as NftRunner's
        # in-process path)
        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            raise NftError("fake failure")
        self.scripts.append(script)
        if meanwhile is not None:
            meanwhile()

    def list_table(self) -> dict[str, Any] | None:
        return self.table

    def read_counts(self) -> tuple[dict[str, int], dict[str, int]] | None:
        return counts_from_json(self.table)

    def table_exists(self) -> bool:
        return self.table is not None or self.fingerprint is not None

    def read_fingerprint(self) -> str | None:
        return self.fingerprint



@dataclass
class FakeKernel:
    """An in-memory stand-in for `Netlink`: links and a route table."""

    link_list: list[Link] = field(default_factory=list)
    table: dict[Route, int] = field(default_factory=dict)
    writes: list[RouteOp] = field(default_factory=list)

    def links(self) -> list[Link]:
        return list(self.link_list)

    def links_named(self, names: Iterable[str]) -> list[Link]:
        want = set(names)
        return [Link(l.index, l.name, l.up) for l in self.link_list if l.name in want]

    def routes(self, protocol: int = RTPROT_FELIX, table: int = RT_TABLE_MAIN) -> dict[Route, int]:
        return dict(self.table)

    def write(self, ops: list[RouteOp], protocol: int = RTPROT_FELIX, table: int = RT_TABLE_MAIN) -> None:
        up = {l.index for l in self.link_list if l.up}
        for op in ops:
            self.writes.append(op)
            if op.op == "replace":
                if op.oif not in up:
                    op.error = errno.ENETDOWN
                else:
                    self.table[op.route] = op.oif
            elif op.route in self.table:
                del self.table[op.route]
            else:
                op.error = errno.ESRCH


class _Done:
    """Work already done: `wait()` returns `value`; no interface lookups."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def links(self) -> None:
        return None

    def wait(self) -> Any:
        return self.value


class FakeSysctls:
    """Records the workload interfaces it is asked to configure (`ifaces`), always
    inline; the by-name start reports that no helper ran (as `Sysctls` does when
    it cannot start one), so `finish_by_name` configures everything inline."""

    HELPER_MIN = 256

    def __init__(self) -> None:
        self.ifaces: list[str] = []

    def configure_host(self) -> int:
        return 0

    def configure_interfaces(self, items: Iterable[tuple[Any, bool]]) -> list[str]:
        self.ifaces += [link.name for link, _ in items]
        return []

    def start_configure(self, items: Iterable[tuple[Any, bool]]) -> _Done:
        return _Done(self.configure_interfaces(items))

    def start_configure_names(self, items: Iterable[tuple[str, bool]], links: bool = False) -> _Done:
        return _Done(None)

    def finish_by_name(self, result: Any, items: Iterable[tuple[Any, bool]]
                       ) -> tuple[list[tuple[Any, bool]], list[str]]:
        items = list(items)
        if result is None:
            return [], self.configure_interfaces(items)
        rest = [(link, v6) for link, v6 in items
                if result.get(link.name, (0,))[0] != link.index]
        return rest, [link.name for link, _ in items
                      if link.name in result and result[link.name][0] == link.index
                      and result[link.name][1]]


def sys_class_net(path: Any, indexes: dict[str, int]) -> str:
    """A directory laid out as /sys/class/net (for `Sysctls(sys_class_net=...)`)
    holding the interfaces of `indexes` (name → index), each up."""
    for name, index in indexes.items():
        d = path / name
        d.mkdir(parents=True)
        (d / "ifindex").write_text(f"{index}\n")
        (d / "flags").write_text("0x1003\n")
    return str(path)
