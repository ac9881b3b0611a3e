"""Client for BIRD 2's control socket (what ``birdc`` speaks), without ``birdc``.

Used by confd to reload BIRD after a new configuration is in place (:func:`configure`)
and by ``calicoctl node status`` to list BGP sessions (:func:`show_protocols`,
:func:`bgp_sessions`).

How it is built: one Unix stream socket per call (:class:`BirdControl`). BIRD greets
with ``0001 BIRD <version> ready.``; every command is one line, and every reply is a
series of lines ``NNNN-text`` (more follows), `` text`` (continuation of the previous
code) and a final ``NNNN text``. Codes 0xxx mean success, 1xxx table rows, 2xxx table
headings, 8xxx run-time errors and 9xxx parse errors (BIRD's ``doc/reply_codes``).
Lines starting with ``+`` are asynchronous messages and are ignored.

Protocol names encode the session type the way confd names them (``Mesh_``,
``Global_``, ``Node_``, ``RR_``, ``RRClient_``), see :func:`peer_type`.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from calico_net.agent.confd import birdtext

DEFAULT_SOCKET = "/var/run/calico/bird.ctl"
DEFAULT_TIMEOUT = 10.0


class BirdError(RuntimeError):
    """BIRD said no, or could not be asked; ``number`` is what BIRD's answer points at
    (a reply code, a line of the configuration), when it has one."""

    def __init__(self, message: str, number: int | None = None) -> None:
        super().__init__(message)
        self.number = number


class BirdCtlError(BirdError):
    """BIRD answered with an error (``code``: its reply code), or the socket failed."""

    @property
    def code(self) -> int | None:
        return self.number


@dataclass(frozen=True)
class ReplyLine:
    code: int
    text: str


@dataclass
class Protocol:
    """One row of ``show protocols`` (plus, with ``all``, its detail section)."""

    name: str
    proto: str
    table: str
    state: str  # BIRD's protocol state: up, start, down, flush, ...
    since: str
    info: str  # e.g. "Established", "Active        Socket: Connection refused"
    #: "key: value" lines of ``show protocols all`` outside channel sections
    #: ("Description", "BGP state", "Neighbor address", "Neighbor AS", "Last error"...).
    details: dict[str, str] = field(default_factory=dict)
    #: per channel ("ipv4", "ipv6"): its "key: value" lines ("State", "Routes", ...).
    channels: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def bgp_state(self) -> str | None:
        return self.details.get("BGP state")

    @property
    def neighbor_address(self) -> str | None:
        return self.details.get("Neighbor address") or address_from_name(self.name)

    @property
    def neighbor_as(self) -> int | None:
        value = self.details.get("Neighbor AS")
        return int(value) if value and value.isdigit() else None

    @property
    def local_as(self) -> int | None:
        value = self.details.get("Local AS")
        return int(value) if value and value.isdigit() else None

    @property
    def description(self) -> str | None:
        return self.details.get("Description")

    @property
    def peer_type(self) -> str | None:
        return peer_type(self.name)


@dataclass(frozen=True)
class BGPSession:
    """What ``calicoctl node status`` prints for one BGP session."""

    name: str
    peer_address: str | None
    peer_type: str  # mesh | global | node | reflector | reflector-client | other
    state: str  # protocol state (up/start/...)
    since: str
    info: str  # BGP state and last error, e.g. "Established" or "Active Socket: ..."
    neighbor_as: int | None


_PREFIX_TYPES = (
    ("Mesh_", "mesh"),
    ("Global_", "global"),
    ("Node_", "node"),
    ("RRClient_", "reflector-client"),
    ("RR_", "reflector"),
)


def peer_type(name: str) -> str | None:
    """Session type from a confd protocol name; None for protocols confd did not name."""
    for prefix, kind in _PREFIX_TYPES:
        if name.startswith(prefix):
            return kind
    return None


def address_from_name(name: str) -> str | None:
    """Peer address encoded in a confd protocol name (``Mesh_198_18_0_12_port_1790``
    → ``198.18.0.12``; ``Node_2001_db8__1`` → ``2001:db8::1``)."""
    for prefix, _ in _PREFIX_TYPES:
        if name.startswith(prefix):
            rest = re.sub(r"_port_[0-9]+\Z", "", name[len(prefix):])
            if re.fullmatch(r"[0-9]+_[0-9]+_[0-9]+_[0-9]+", rest):
                return rest.replace("_", ".")
            if re.fullmatch(r"[0-9A-Fa-f_]+", rest):
                return rest.replace("_", ":")
    return None


class BirdControl:
    """A connection to BIRD's control socket; use as a context manager."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = DEFAULT_TIMEOUT):
        self.socket_path = socket_path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""
        self.version: str | None = None

    def __enter__(self) -> BirdControl:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise BirdCtlError(f"cannot connect to BIRD at {self.socket_path}: {exc}") from exc
        self._sock = sock
        greeting = self._read_reply()
        if not greeting or greeting[-1].code != 1:
            self.close()
            raise BirdCtlError(f"unexpected greeting from BIRD: {greeting!r}")
        m = re.match(r"BIRD (\S+)", greeting[-1].text)
        self.version = m.group(1) if m else None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _read_line(self) -> str:
        assert self._sock is not None
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except OSError as exc:
                raise BirdCtlError(f"reading from BIRD: {exc}") from exc
            if not chunk:
                raise BirdCtlError("BIRD closed the control connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def _read_reply(self) -> list[ReplyLine]:
        lines: list[ReplyLine] = []
        code = 0
        while True:
            raw = self._read_line()
            if raw.startswith("+"):
                continue  # spontaneous printout, not part of this reply
            if len(raw) >= 5 and raw[:4].isdigit() and raw[4] in "- ":
                code = int(raw[:4])
                lines.append(ReplyLine(code, raw[5:]))
                if raw[4] == " ":
                    return lines
            elif raw.startswith(" "):
                lines.append(ReplyLine(code, raw[1:]))
            else:
                raise BirdCtlError(f"malformed reply line from BIRD: {raw!r}")

    def command(self, cmd: str) -> list[ReplyLine]:
        """Send one command; return its reply lines. 8xxx/9xxx raise BirdCtlError."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        if "\n" in cmd:
            raise ValueError("a BIRD command is one line")
        try:
            self._sock.sendall(cmd.encode() + b"\n")
        except OSError as exc:
            raise BirdCtlError(f"writing to BIRD: {exc}") from exc
        reply = self._read_reply()
        last = reply[-1]
        if last.code >= 8000:
            raise BirdCtlError(last.text, last.code)
        return reply


def _quote(pattern: str) -> str:
    """A protocol name pattern or file name as a BIRD string on the control socket:
    through birdtext's one quoting rule (no ``"``, backslash or control character —
    a newline would end the command and start another)."""
    try:
        return str(birdtext.bird_str(pattern, "protocol name pattern or file name"))
    except birdtext.BirdTextError as exc:
        raise ValueError(f"invalid protocol name pattern or file name: {exc}") from None


_SINCE_RE = re.compile(
    r"(\d{4}-\d\d-\d\d(?: \d\d:\d\d:\d\d(?:\.\d+)?)?|\d\d:\d\d:\d\d(?:\.\d+)?|\S+)\s*(.*)\Z"
)
# BIRD works "since" out again on every show, from its monotonic clock and the wall
# clock read a moment apart, so a fraction of a second (BIRD 2's default time format
# has milliseconds) differs between two reads of the same state: kept to seconds
_SINCE_FRACTION_RE = re.compile(r"(\d\d:\d\d:\d\d)\.\d+\Z")


def _parse_row(text: str) -> Protocol:
    parts = text.split(None, 4)
    if len(parts) < 4:
        raise BirdCtlError(f"unexpected protocol row: {text!r}")
    name, proto, table, state = parts[:4]
    since, info = "", ""
    if len(parts) == 5:
        m = _SINCE_RE.match(parts[4])
        if m:
            since, info = _SINCE_FRACTION_RE.sub(r"\1", m.group(1)), m.group(2).strip()
    return Protocol(name=name, proto=proto, table=table, state=state, since=since, info=info)


def _parse_protocols(reply: Iterable[ReplyLine]) -> list[Protocol]:
    protocols: list[Protocol] = []
    channel: dict[str, str] | None = None
    for line in reply:
        if line.code == 1002:
            protocols.append(_parse_row(line.text))
            channel = None
        elif line.code == 1006 and protocols:
            text = line.text.rstrip()
            if not text.strip():
                continue
            indent = len(text) - len(text.lstrip())
            body = text.strip()
            m = re.fullmatch(r"Channel (\S+)", body)
            if m:
                channel = protocols[-1].channels.setdefault(m.group(1), {})
                continue
            if indent <= 2:
                channel = None  # a new top-level item ends the channel section
            key, sep, value = body.partition(":")
            if not sep:
                continue
            target = channel if channel is not None else protocols[-1].details
            target[key.strip()] = value.strip()
    return protocols


def show_protocols(
    socket_path: str = DEFAULT_SOCKET,
    *,
    detail: bool = True,
    pattern: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Protocol]:
    """``show protocols [all] ["pattern"]``: every protocol BIRD runs.

    With ``detail`` (the default) each :class:`Protocol` also carries the ``all``
    section (neighbor address, AS, BGP state, last error, channels).
    """
    cmd = "show protocols all" if detail else "show protocols"
    if pattern is not None:
        cmd += " " + _quote(pattern)
    with BirdControl(socket_path, timeout) as ctl:
        try:
            reply = ctl.command(cmd)
        except BirdCtlError as exc:
            if exc.code == 8003:  # "No protocols match"
                return []
            raise
    return _parse_protocols(reply)


def bgp_sessions(
    socket_path: str = DEFAULT_SOCKET, *, timeout: float = DEFAULT_TIMEOUT
) -> list[BGPSession]:
    """The BGP protocols, as ``calicoctl node status`` shows them."""
    out = []
    for p in show_protocols(socket_path, detail=True, timeout=timeout):
        if p.proto != "BGP":
            continue
        out.append(
            BGPSession(
                name=p.name,
                peer_address=p.neighbor_address,
                peer_type=p.peer_type or "other",
                state=p.state,
                since=p.since,
                info=re.sub(r"\s{2,}", " ", p.info),
                neighbor_as=p.neighbor_as,
            )
        )
    return out


@dataclass(frozen=True)
class ConfigureResult:
    code: int
    message: str  # "Reconfigured", "Reconfiguration in progress", ...

    @property
    def in_progress(self) -> bool:
        return self.code in (4, 5)


#: Replies of ``configure`` that mean the new configuration was taken.
_CONFIGURE_OK = {3, 4, 5, 18, 19, 20}


def configure(
    socket_path: str = DEFAULT_SOCKET,
    config_path: str | None = None,
    *,
    check_only: bool = False,
    timeout: float = 30.0,
) -> ConfigureResult:
    """``configure ["file"]`` (or ``configure check``): make BIRD read its
    configuration. Returns the outcome ("Reconfigured" — code 3, or "Reconfiguration in
    progress" — code 4 while protocols restart); raises :class:`BirdCtlError` with
    BIRD's message when the file does not parse or BIRD refuses (e.g. shutting down)."""
    cmd = "configure check" if check_only else "configure"
    if config_path is not None:
        cmd += " " + _quote(config_path)
    with BirdControl(socket_path, timeout) as ctl:
        reply = ctl.command(cmd)
    last = reply[-1]
    if last.code not in _CONFIGURE_OK:
        raise BirdCtlError(f"BIRD did not reconfigure: {last.text}", last.code)
    return ConfigureResult(last.code, last.text)


def iter_reply_text(reply: Iterable[ReplyLine]) -> Iterator[str]:
    """The text of a reply, line by line (for printing raw command output)."""
    for line in reply:
        yield line.text
