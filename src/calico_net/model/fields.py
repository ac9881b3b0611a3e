"""Value types of Calico's v3 API: names, labels, CIDRs, ports, protocols, AS numbers...

Each type is an `Annotated` pydantic type whose validator checks the user's value and
returns it *unchanged* (a CIDR keeps the user's text, a port stays an int or a string),
so a document read, stored and printed again is the document the user wrote. Code that
needs the meaning of a value calls the matching `parse_*` helper here
(`parse_port("1000:2000") == (1000, 2000)`, `parse_asn("64512.10") == 4194304010`).

Failures are raised as `PydanticCustomError("calico", ...)` carrying a finished,
human message (`"TCPX" is not a protocol (TCP, UDP, ...)`); `model.validation`
turns them into field-path errors. A message shows the value through `show`, so it is
one bounded line whatever the value held.

Every pattern is matched whole (`fullmatch`, or an end-of-text anchor), never with `$`, which also
matches before a trailing newline; length limits are checked before any pattern or
cache sees the value.
"""
from __future__ import annotations

import base64
import functools
import ipaddress
import json
import re
from datetime import date, datetime, timezone
from typing import Annotated, Any, Callable, Union

from pydantic import AfterValidator, PlainValidator
from pydantic_core import PydanticCustomError

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


# --- errors -------------------------------------------------------------------------

SHOW_MAX = 80


def show(value: Any) -> str:
    """A value as it appears in messages: strings quoted, numbers/bools as in JSON.

    Bounded and escaped, whatever the value: at most SHOW_MAX characters (longer text
    ends in "..."), and no control character, line break, ANSI escape or other
    unprintable character survives (they appear as JSON escapes such as \\n or
    \\u001b). Only the first characters of a long value are ever looked at, so a
    megabyte name or a huge list costs no more than a short one.
    """
    out: list[str] = []
    _render(value, out, [SHOW_MAX + 1], 0)
    text = _escape_unprintable("".join(out))
    return text if len(text) <= SHOW_MAX else text[:SHOW_MAX - 3] + "..."


def _render(value: Any, out: list[str], budget: list[int], depth: int) -> None:
    """Append JSON-like text for `value` to `out` until `budget[0]` characters are used."""
    if budget[0] <= 0:
        return
    if isinstance(value, str):
        piece = json.dumps(value[:budget[0]], ensure_ascii=False)
    elif value is None or isinstance(value, (bool, float)):
        piece = json.dumps(value)
    elif isinstance(value, int):
        piece = str(value) if value.bit_length() <= 256 else f"<an integer of {value.bit_length()} bits>"
    elif isinstance(value, (list, tuple, dict)):
        if depth > 20:
            piece = "..."
        else:
            is_dict = isinstance(value, dict)
            out.append("{" if is_dict else "[")
            budget[0] -= 1
            for i, item in enumerate(value.items() if is_dict else value):
                if budget[0] <= 0:
                    return
                if i:
                    out.append(", ")
                    budget[0] -= 2
                if is_dict:
                    _render(item[0] if isinstance(item[0], str) else str(item[0]), out, budget, depth + 1)
                    out.append(": ")
                    budget[0] -= 2
                    _render(item[1], out, budget, depth + 1)
                else:
                    _render(item, out, budget, depth + 1)
            piece = "}" if is_dict else "]"
    else:
        try:
            text = str(value)
        except Exception:  # noqa: BLE001 - a value that cannot even print itself
            text = f"<{type(value).__name__}>"
        piece = json.dumps(text[:budget[0]], ensure_ascii=False)
    out.append(piece)
    budget[0] -= len(piece)


def _escape_unprintable(text: str) -> str:
    """`text` with every character str.isprintable() refuses written as an escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else
                   (f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
                   for ch in text)


def fail(message: str) -> PydanticCustomError:
    """An error whose message is final (the template only echoes it, so `{` is safe)."""
    return PydanticCustomError("calico", "{msg}", {"msg": message})


def refuse_problem(problem: Callable[[str], str | None]) -> Callable[[str], str]:
    """A field check built from a `*_problem` function: the value when `problem` finds
    nothing, else the validation error with its message."""
    def check(value: str) -> str:
        message = problem(value)
        if message:
            raise fail(message)
        return value
    return check


# --- names and labels ----------------------------------------------------------------
#
# Every pattern here is matched with `fullmatch` (or ends in \Z): Python's `$` also
# matches before a trailing "\n", and a value with a newline must never pass as a name.
# Digits are spelled [0-9]: `\d` also matches other scripts' digits, which int() reads.

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_RE = re.compile(rf"{_DNS1123_LABEL}\Z")
DNS1123_SUBDOMAIN_RE = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*\Z")
_QUALIFIED_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_LABEL_VALUE_RE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
_NAME_ALLOWED = "lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"


def name_problem(value: Any, what: str = "name") -> str | None:
    """Why `value` is not a DNS-1123 subdomain (Calico's resource-name rule), or None."""
    if not isinstance(value, str):
        return f"{show(value)} is not a valid {what} (a string of {_NAME_ALLOWED})"
    if not value:
        return f"{what} must not be empty"
    if len(value) > 253:
        return f"{show(value)} is not a valid {what} (at most 253 characters)"
    return _name_problem(value, what)


@functools.lru_cache(maxsize=8192)
def _name_problem(value: str, what: str) -> str | None:
    if not DNS1123_SUBDOMAIN_RE.fullmatch(value):
        hint = ""
        if value.lower() != value and DNS1123_SUBDOMAIN_RE.fullmatch(value.lower()):
            hint = " - use lower case"
        elif "_" in value:
            hint = " - '_' is not allowed, use '-'"
        return f"{show(value)} is not a valid {what} ({_NAME_ALLOWED}){hint}"
    return None


check_name = refuse_problem(name_problem)


def check_namespace(value: str) -> str:
    if not value or len(value) > 63 or not DNS1123_LABEL_RE.fullmatch(value):
        raise fail(f"{show(value)} is not a valid namespace (a DNS-1123 label: at most 63 "
                   "lower-case letters, digits and '-', starting and ending with a letter or digit)")
    return value


def label_key_problem(key: Any) -> str | None:
    """Why `key` is not a Kubernetes qualified name (`[prefix/]name`), or None."""
    if not isinstance(key, str):
        return f"label key {show(key)} is not a string"
    if len(key) > 253 + 1 + 63:
        return f"label key {show(key)} is too long (a prefix of at most 253 and a name of at most 63 characters)"
    return _label_key_problem(key)


@functools.lru_cache(maxsize=8192)
def _label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN_RE.fullmatch(prefix)):
        return f"label key {show(key)} has an invalid prefix (must be a DNS-1123 subdomain)"
    if not name or len(name) > 63 or not _QUALIFIED_NAME_RE.fullmatch(name):
        return (f"label key {show(key)} is not valid (at most 63 letters, digits, '-', '_' and '.', "
                "starting and ending with a letter or digit, with an optional DNS prefix and '/')")
    return None


@functools.lru_cache(maxsize=8192)
def _label_value_ok(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE_RE.fullmatch(value))


def _check_labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise fail(f"{show(value)} is not a mapping of label keys to values")
    for key, val in value.items():
        problem = label_key_problem(key)
        if problem:
            raise fail(problem)
        if not isinstance(val, str):
            raise fail(f"label {show(key)}: value {show(val)} is not a string (quote it)")
        if len(val) > 63 or not _label_value_ok(val):
            raise fail(f"label {show(key)}: value {show(val)} is not valid (at most 63 letters, "
                       "digits, '-', '_' and '.', starting and ending with a letter or digit)")
    return value


# Free text (annotation values) may hold any printable text, line breaks and tabs
# included, as Kubernetes allows; never NUL or other control characters (terminal
# escapes, text that ends early in C).
_FREE_TEXT_BAD_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def free_text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as free text (a control character), or None."""
    bad = _FREE_TEXT_BAD_RE.search(value)
    if bad:
        return (f"{show(value)} holds the control character {show(bad.group())} at position "
                f"{bad.start()} (text may hold line breaks and tabs, no other control characters)")
    return None


def _check_annotations(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise fail(f"{show(value)} is not a mapping of annotation keys to values")
    total = 0
    for key, val in value.items():
        problem = label_key_problem(key)
        if problem:
            raise fail(problem.replace("label key", "annotation key"))
        if not isinstance(val, str):
            raise fail(f"annotation {show(key)}: value {show(val)} is not a string (quote it)")
        total += len(key) + len(val)
        if total > 256 * 1024:
            raise fail("annotations are larger than 256 KiB in total")
        problem = free_text_problem(val)
        if problem:
            raise fail(f"annotation {show(key)}: value {problem}")
    return value


Name = Annotated[str, AfterValidator(check_name)]
Namespace = Annotated[str, AfterValidator(check_namespace)]
Labels = Annotated[dict[str, str], PlainValidator(_check_labels)]
Annotations = Annotated[dict[str, str], PlainValidator(_check_annotations)]


def pattern_type(pattern: str | re.Pattern[str], allowed: str, what: str, *, max_len: int,
                 extra: Callable[[str], str | None] | None = None) -> Any:
    """A string type whose value must fullmatch `pattern` and be at most `max_len` long.

    The message names the value (escaped and bounded by `show`), what it should be and
    what is allowed. `extra(value)` may add a check of its own (None: fine).
    """
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern

    def check(value: str) -> str:
        if len(value) > max_len or not compiled.fullmatch(value):
            raise fail(f"{show(value)} is not a valid {what} ({allowed})")
        if extra is not None:
            problem = extra(value)
            if problem:
                raise fail(problem)
        return value

    return Annotated[str, AfterValidator(check)]


# A WorkloadEndpoint's identifiers (containerID, workload, pod, endpoint, orchestrator):
# libcni's container-ID rule, which Calico's own (containerID: letters, digits and '-';
# the others: resource names) would narrow too far for the CNI plugin, whose workload
# is podman's container name ("web_1"). Plain characters only, whatever the field.
CONTAINER_ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
CONTAINER_ID_MAX = 256
ContainerID = pattern_type(CONTAINER_ID_RE, "at most 256 letters, digits, '_', '.' and '-', "
                           "starting with a letter or digit", "workload identifier",
                           max_len=CONTAINER_ID_MAX)
# Kubernetes gives object UIDs as UUIDs; calicoctl writes uuid4 text.
UID_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.:]*[A-Za-z0-9])?\Z")
UID_MAX = 128
UID = pattern_type(UID_RE, "at most 128 letters, digits, '-', '_', '.' and ':', e.g. a UUID", "uid",
                   max_len=UID_MAX)


_RFC3339_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
                         r"([Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})?)?")
_TIMESTAMP_ALLOWED = "RFC 3339, e.g. 2024-01-31T12:00:00Z"


def _check_timestamp(value: Any) -> str:
    # YAML loaders turn an unquoted RFC 3339 time into a datetime; store the text form.
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if not isinstance(value, str) or len(value) > 40 or not _RFC3339_RE.fullmatch(value):
        raise fail(f"{show(value)} is not a timestamp ({_TIMESTAMP_ALLOWED})")
    text = value.upper().replace("Z", "+00:00")
    frac = re.search(r"\.([0-9]+)", text)
    if frac and len(frac.group(1)) > 6:  # nanoseconds: Python's datetime stops at micro
        text = text[:frac.start()] + text[frac.start():frac.start() + 7] + text[frac.end():]
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"{show(value)} is not a timestamp ({_TIMESTAMP_ALLOWED})") from None
    return value


Timestamp = Annotated[str, PlainValidator(_check_timestamp)]

RESOURCE_VERSION_RE = re.compile(r"[0-9]{1,20}")


def _check_resource_version(value: Any) -> str:
    # etcd mod revisions are numbers; accept an int from hand-written JSON but store text.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise fail(f"{show(value)} is not a resource version (a string)")
    if isinstance(value, int):
        value = str(value) if 0 <= value < 10**20 else "-"
    if not RESOURCE_VERSION_RE.fullmatch(value):
        raise fail(f"{show(value)} is not a resource version (the etcd revision: digits only)")
    return value


ResourceVersion = Annotated[str, PlainValidator(_check_resource_version)]


# --- addresses -----------------------------------------------------------------------

def parse_ip(value: str) -> IPAddress:
    return ipaddress.ip_address(value)


def parse_cidr(value: str) -> IPNetwork:
    """A CIDR (or bare IP, meaning /32 or /128) as a network; host bits are masked."""
    return ipaddress.ip_network(value, strict=False)


_V4_RE = re.compile(r"(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})"
                    r"(?:/(0|[1-9][0-9]?))?\Z")
# What address text may contain before ipaddress sees it: hex digits, ':', '.' and one
# prefix length. ipaddress alone would also take an IPv6 zone ("fd00::1%<anything>"),
# whose text would reach nft and BIRD as it is.
_ADDR_TEXT_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}(/(0|[1-9][0-9]{0,2}))?")


def _fast_v4(value: str) -> tuple[int, int | None] | None:
    """(address as int, prefix length or None) for well-formed IPv4 text, else None.

    ipaddress is correct but slow (~50 us a parse); 10,000 endpoints are read at once.
    """
    m = _V4_RE.match(value)  # \Z-anchored: no trailing newline
    if m is None:
        return None
    a, b, c, d = int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4))
    if a > 255 or b > 255 or c > 255 or d > 255:
        return None
    plen = m.group(5)
    if plen is not None and int(plen) > 32:
        return None
    return (a << 24) | (b << 16) | (c << 8) | d, (int(plen) if plen is not None else None)


def ip_version(value: str) -> int:
    """4 or 6 for an address or CIDR that has already been validated."""
    return 6 if ":" in value else 4


def _ip_problem(value: str, version: int | None, what: str) -> str | None:
    if len(value) > 49 or not _ADDR_TEXT_RE.fullmatch(value):
        fam = {4: "IPv4 ", 6: "IPv6 "}.get(version or 0, "")
        if version and what == "IP address":
            what = "address"
        return f"{show(value)} is not a valid {fam}{what}"
    return _ip_problem_cached(value, version, what)


@functools.lru_cache(maxsize=8192)
def _ip_problem_cached(value: str, version: int | None, what: str) -> str | None:
    fam = {4: "IPv4 ", 6: "IPv6 "}.get(version or 0, "")
    if version and what == "IP address":
        what = "address"
    fast = _fast_v4(value)
    if fast is not None and fast[1] is None:
        addr_version = 4
    else:
        try:
            addr_version = ipaddress.ip_address(value).version
        except ValueError:
            return f"{show(value)} is not a valid {fam}{what}"
    if version and addr_version != version:
        return f"{show(value)} is not an {fam}{what}"
    return None


def _ip(value: str, version: int | None = None, what: str = "IP address") -> str:
    problem = _ip_problem(value, version, what)
    if problem:
        raise fail(problem)
    return value


def _cidr_problem(value: str, version: int | None, allow_bare_ip: bool, host_bits: bool,
                  what: str) -> str | None:
    if len(value) > 49 or not _ADDR_TEXT_RE.fullmatch(value):
        fam = {4: "IPv4 ", 6: "IPv6 "}.get(version or 0, "")
        if "/" not in value:
            if allow_bare_ip:
                return _ip_problem(value, version, "IP address or CIDR")
            return (f"{show(value)} is not a valid {fam}{what} (expected address/prefix-length, "
                    "e.g. 198.19.0.0/16)")
        return f"{show(value)} is not a valid {fam}{what}"
    return _cidr_problem_cached(value, version, allow_bare_ip, host_bits, what)


@functools.lru_cache(maxsize=8192)
def _cidr_problem_cached(value: str, version: int | None, allow_bare_ip: bool, host_bits: bool,
                         what: str) -> str | None:
    fam = {4: "IPv4 ", 6: "IPv6 "}.get(version or 0, "")
    if "/" not in value:
        if not allow_bare_ip:
            return (f"{show(value)} is not a valid {fam}{what} (expected address/prefix-length, "
                    "e.g. 198.19.0.0/16)")
        return _ip_problem(value, version, "IP address or CIDR")
    fast = _fast_v4(value)
    if fast is not None:
        addr, plen = fast
        assert plen is not None
        if version == 6:
            return f"{show(value)} is not an {fam}{what}"
        if host_bits or not addr & ((1 << (32 - plen)) - 1):
            return None
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        return f"{show(value)} is not a valid {fam}{what}"
    net = iface.network
    if version and net.version != version:
        return f"{show(value)} is not an {fam}{what}"
    if not host_bits and iface.ip != net.network_address:
        return f"{show(value)} has host bits set (did you mean {net}?)"
    return None


def is_host_network(net: str) -> bool:
    """True if `net` (text a Net accepts) is one address: bare, /32 or /128."""
    if "/" not in net:
        return True
    return parse_cidr(net).num_addresses == 1


def _cidr(value: str, *, version: int | None = None, allow_bare_ip: bool = True,
          host_bits: bool = False, what: str = "CIDR") -> str:
    problem = _cidr_problem(value, version, allow_bare_ip, host_bits, what)
    if problem:
        raise fail(problem)
    return value


def check_ip(value: str) -> str:
    return _ip(value)


IP = Annotated[str, AfterValidator(check_ip)]
IPv4 = Annotated[str, AfterValidator(lambda v: _ip(v, 4))]
IPv6 = Annotated[str, AfterValidator(lambda v: _ip(v, 6))]
# A network: "198.19.0.0/16" (or a bare address, as Calico's `nets` allow). Host bits
# set are rejected rather than silently masked (see calico_net.model's docstring).
Net = Annotated[str, AfterValidator(lambda v: _cidr(v))]
# A network that must be written as a CIDR (IPPool.cidr, service CIDRs).
CIDR = Annotated[str, AfterValidator(lambda v: _cidr(v, allow_bare_ip=False))]
# An interface address with its prefix length ("198.18.0.5/24"): host bits are the point.
IPv4Interface = Annotated[str, AfterValidator(
    lambda v: _cidr(v, version=4, host_bits=True, what="address (address/prefix-length)"))]
IPv6Interface = Annotated[str, AfterValidator(
    lambda v: _cidr(v, version=6, host_bits=True, what="address (address/prefix-length)"))]

_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}\Z")


def _check_mac(value: str) -> str:
    if not _MAC_RE.fullmatch(value):
        raise fail(f"{show(value)} is not a MAC address (e.g. ee:ee:ee:ee:ee:ee)")
    return value


MAC = Annotated[str, AfterValidator(_check_mac)]

_PEER_V6_PORT_RE = re.compile(r"\[([0-9A-Fa-f:.]{2,45})\](?::([0-9]{1,5}))?")
_PEER_V4_PORT_RE = re.compile(r"([0-9.]{7,15}):([0-9]{1,5})")


def parse_peer_ip(value: str) -> tuple[str, int | None]:
    """BGPPeer.peerIP: "198.18.0.1", "198.18.0.1:1790", "fd00::1" or "[fd00::1]:1790"."""
    m = _PEER_V6_PORT_RE.fullmatch(value)
    if m:
        ipaddress.IPv6Address(m.group(1))
        return m.group(1), int(m.group(2)) if m.group(2) else None
    m = _PEER_V4_PORT_RE.fullmatch(value)
    if m:
        ipaddress.IPv4Address(m.group(1))
        return m.group(1), int(m.group(2))
    if len(value) > 45 or not _ADDR_TEXT_RE.fullmatch(value) or "/" in value:
        raise ValueError(value)
    ipaddress.ip_address(value)
    return value, None


def _check_peer_ip(value: str) -> str:
    try:
        _, port = parse_peer_ip(value)
    except ValueError:
        raise fail(f"{show(value)} is not a peer address (an IP, IPv4:port or [IPv6]:port)") from None
    if port is not None and not 1 <= port <= 65535:
        raise fail(f"{show(value)}: port {port} is out of range (1-65535)")
    return value


PeerIP = Annotated[str, AfterValidator(_check_peer_ip)]

# Calico's interface-name rule (its `interface` validator): what a Linux interface may
# be called, without the characters ('@', ':', '+', whitespace) that mean something
# to ip, nft or BIRD.
_INTERFACE_NAME_RE = re.compile(r"[a-zA-Z0-9_.-]{1,15}")
INTERFACE_NAME_ALLOWED = "1-15 letters, digits, '_', '.' or '-'"


def interface_name_problem(value: Any) -> str | None:
    """Why `value` is not an interface name Calico accepts, or None."""
    if (not isinstance(value, str) or not _INTERFACE_NAME_RE.fullmatch(value)
            or value in (".", "..")):
        return f"{show(value)} is not a valid interface name ({INTERFACE_NAME_ALLOWED})"
    return None


def _check_interface_name(value: str, allow_star: bool = False) -> str:
    if allow_star and value == "*":
        return value
    if interface_name_problem(value):
        star = ' or "*"' if allow_star else ""
        raise fail(f"{show(value)} is not a valid interface name ({INTERFACE_NAME_ALLOWED}{star})")
    return value


InterfaceName = Annotated[str, AfterValidator(_check_interface_name)]

# Felix's grammar for InterfacePrefix (and its other interface lists): comma-separated
# names of 1-15 characters from [a-zA-Z0-9_-]. Anything else is refused, because the
# prefixes reach nft text (`iifname "<prefix>*"`) and interface matching.
IFACE_LIST_RE = re.compile(r"[a-zA-Z0-9_-]{1,15}(,[a-zA-Z0-9_-]{1,15})*")
IFACE_LIST_ALLOWED = "comma-separated interface name prefixes of 1-15 characters a-z, A-Z, 0-9, '_' or '-'"


def iface_list_problem(value: Any) -> str | None:
    """Why `value` is not a valid interface-prefix list (Felix's iface-list), or None."""
    if not isinstance(value, str) or not IFACE_LIST_RE.fullmatch(value):
        return f"{show(value)} is not a valid interface prefix list ({IFACE_LIST_ALLOWED})"
    return None


def parse_iface_list(value: str) -> tuple[str, ...]:
    """The prefixes of a valid interface-prefix list; ValueError naming the problem otherwise."""
    problem = iface_list_problem(value)
    if problem:
        raise ValueError(problem)
    return tuple(value.split(","))


HostInterfaceName = Annotated[str, AfterValidator(lambda v: _check_interface_name(v, True))]


_check_iface_list = refuse_problem(iface_list_problem)


# FelixConfiguration.interfacePrefix
InterfacePrefixList = Annotated[str, AfterValidator(_check_iface_list)]


def _regexp_problem(value: str, what: str) -> str | None:
    """Why `value` does not compile as a regular expression, or None."""
    try:
        re.compile(value)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"{show(value)} is not a valid {what} ({show(str(exc))[1:-1]})"
    return None


_IFACE_EXCLUDE_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,15}")
# A regex element of interfaceExclude: "/.../" without whitespace, quotes or ';'.
_IFACE_EXCLUDE_REGEX_RE = re.compile(r"/[^\s\"';]+/")
IFACE_EXCLUDE_ALLOWED = ("comma-separated interface names (1-15 letters, digits, '_' or '-') "
                         "or regular expressions written /.../ (at most 256 characters each, "
                         "no whitespace, quotes or ';')")


def iface_exclude_problem(value: Any) -> str | None:
    """Why `value` is not Felix's interfaceExclude list (names or /regex/), or None."""
    if not isinstance(value, str) or not value or len(value) > 4096:
        return f"{show(value)} is not a valid interface exclude list ({IFACE_EXCLUDE_ALLOWED})"
    for item in value.split(","):
        if _IFACE_EXCLUDE_NAME_RE.fullmatch(item):
            continue
        if len(item) <= 258 and _IFACE_EXCLUDE_REGEX_RE.fullmatch(item):
            problem = _regexp_problem(item[1:-1], "interface exclude pattern")
            if problem:
                return problem
            continue
        return (f"{show(value)} is not a valid interface exclude list: {show(item)} is neither "
                f"an interface name nor /regex/ ({IFACE_EXCLUDE_ALLOWED})")
    return None


_check_iface_exclude = refuse_problem(iface_exclude_problem)


# FelixConfiguration.interfaceExclude
InterfaceExcludeList = Annotated[str, AfterValidator(_check_iface_exclude)]


# --- numbers, ports, protocols -----------------------------------------------------------

def int_range(lo: int, hi: int, what: str) -> Callable[[int], int]:
    def check(value: int) -> int:
        if not lo <= value <= hi:
            raise fail(f"{show(value)} is not a valid {what} ({lo}-{hi})")
        return value
    return check


def bounded(lo: int, hi: int, what: str) -> Any:
    return Annotated[int, AfterValidator(int_range(lo, hi, what))]


PortNumber = bounded(1, 65535, "port")

PROTOCOL_NAMES = ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")
PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136}
PORT_PROTOCOLS = {6, 17, 132, 136}  # protocols with ports: TCP, UDP, SCTP, UDPLite
_PROTOCOL_ALLOWED = "TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255"


def parse_protocol(value: int | str) -> int:
    """A protocol name or number as its IP protocol number."""
    return value if isinstance(value, int) else PROTOCOL_NUMBERS[value]


def _check_protocol(value: Any) -> int | str:
    if isinstance(value, bool):
        raise fail(f"{show(value)} is not a protocol ({_PROTOCOL_ALLOWED})")
    if isinstance(value, int):
        if 1 <= value <= 255:
            return value
        raise fail(f"{show(value)} is not a protocol ({_PROTOCOL_ALLOWED})")
    if isinstance(value, str):
        if value in PROTOCOL_NAMES:
            return value
        hint = ""
        for name in PROTOCOL_NAMES:
            if name.lower() == value.lower():
                hint = f" - did you mean {name}?"
        if value.isdigit():
            hint = f" - write the number without quotes: {int(value)}"
        raise fail(f"{show(value)} is not a protocol ({_PROTOCOL_ALLOWED}){hint}")
    raise fail(f"{show(value)} is not a protocol ({_PROTOCOL_ALLOWED})")


Protocol = Annotated[Union[int, str], PlainValidator(_check_protocol)]

_PORT_ALLOWED = "1-65535, a range \"lo:hi\" or a named port"
_DIGITS_RE = re.compile(r"[0-9]{1,10}")
_PORT_RANGE_RE = re.compile(r"([0-9]{1,10}):([0-9]{1,10})")
_NAMED_PORT_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")


def named_port_problem(value: str) -> str | None:
    """Why `value` is not a port name (IANA service name rules, as Kubernetes), or None."""
    if (not isinstance(value, str) or len(value) > 15 or not _NAMED_PORT_RE.fullmatch(value)
            or "--" in value
            or not re.search(r"[a-z]", value)):
        return (f"{show(value)} is not a valid port name (at most 15 lower-case letters, digits "
                "and '-', with at least one letter)")
    return None


def parse_port(value: int | str) -> tuple[int, int] | str:
    """A rule port as (lo, hi) for numbers and ranges, or the name of a named port."""
    if isinstance(value, int):
        return (value, value)
    if _DIGITS_RE.fullmatch(value):
        return (int(value), int(value))
    m = _PORT_RANGE_RE.fullmatch(value)
    if m:
        return (int(m.group(1)), int(m.group(2)))
    return value


def _check_port(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise fail(f"{show(value)} is not a port ({_PORT_ALLOWED})")
    if isinstance(value, int):
        if 1 <= value <= 65535:
            return value
        raise fail(f"{show(value)} is not a port ({_PORT_ALLOWED})")
    if len(value) > 15:
        raise fail(f"{show(value)} is not a port ({_PORT_ALLOWED})")
    if _DIGITS_RE.fullmatch(value):
        if 1 <= int(value) <= 65535:
            return value
        raise fail(f"{show(value)} is not a port ({_PORT_ALLOWED})")
    m = _PORT_RANGE_RE.fullmatch(value)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
            raise fail(f"{show(value)} is not a port range (both ends must be 1-65535)")
        if lo > hi:
            raise fail(f"{show(value)} is not a port range (the first port must not be "
                       "greater than the second)")
        return value
    if re.fullmatch(r"[0-9]+ *[-,] *[0-9]+", value):
        raise fail(f"{show(value)} is not a port ({_PORT_ALLOWED}) - ranges are written lo:hi")
    problem = named_port_problem(value)
    if problem:
        raise fail(f"{show(value)} is not a port ({_PORT_ALLOWED})")
    return value


Port = Annotated[Union[int, str], PlainValidator(_check_port)]


_check_port_name = refuse_problem(named_port_problem)


PortName = Annotated[str, AfterValidator(_check_port_name)]


def _check_port_range(value: Any) -> int | str:
    """FelixConfiguration natPortRange / kubeNodePortRanges: a port or "lo:hi"."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise fail(f"{show(value)} is not a port range (\"lo:hi\" or a port 1-65535)")
    parsed = parse_port(value)
    if isinstance(parsed, str) or not (1 <= parsed[0] <= parsed[1] <= 65535):
        raise fail(f"{show(value)} is not a port range (\"lo:hi\" with 1 <= lo <= hi <= 65535)")
    return value


PortRange = Annotated[Union[int, str], PlainValidator(_check_port_range)]


# --- AS numbers ----------------------------------------------------------------------

_ASN_ALLOWED = "1-4294967295 or dotted 1-65535.0-65535"


def parse_asn(value: int | str) -> int:
    """An AS number (plain or asdot "64512.10") as an integer."""
    if isinstance(value, int):
        return value
    if "." in value:
        hi, lo = value.split(".")
        return int(hi) * 65536 + int(lo)
    return int(value)


def _check_asn(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise fail(f"{show(value)} is not an AS number ({_ASN_ALLOWED})")
    if isinstance(value, str):
        m = re.fullmatch(r"([0-9]{1,5})\.([0-9]{1,5})", value)
        if m:
            hi, lo = int(m.group(1)), int(m.group(2))
            if hi > 65535 or lo > 65535 or hi * 65536 + lo == 0:
                raise fail(f"{show(value)} is not an AS number ({_ASN_ALLOWED})")
            return value
        if not re.fullmatch(r"[0-9]{1,10}", value):
            raise fail(f"{show(value)} is not an AS number ({_ASN_ALLOWED})")
    if not 1 <= int(value) <= 4294967295:
        raise fail(f"{show(value)} is not an AS number ({_ASN_ALLOWED})")
    return value


ASNumber = Annotated[Union[int, str], PlainValidator(_check_asn)]


# --- durations -----------------------------------------------------------------------

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+\Z")


def parse_duration(value: str) -> float:
    """A Go duration ("90s", "1m30s", "500ms", "0") in seconds."""
    if value == "0":
        return 0.0
    return sum(float(num) * _DURATION_UNITS[unit]
               for num, unit in re.findall(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)", value))


def _check_duration(value: Any) -> str:
    if (not isinstance(value, str) or len(value) > 64
            or not (value == "0" or _DURATION_RE.fullmatch(value))):
        raise fail(f"{show(value)} is not a duration (a number with a unit: ns, us, ms, s, m, h; "
                   "e.g. 90s or 1m30s)")
    return value


Duration = Annotated[str, PlainValidator(_check_duration)]


# --- selectors -------------------------------------------------------------------------

def selector_problem(text: str) -> str | None:
    """Why `text` is not a valid Calico selector, or None."""
    try:
        from calico_net.model.selector import SelectorError, parse_selector
    except ImportError:  # the selector module is written in parallel; accept until it lands
        return None
    try:
        parse_selector(text)
    except SelectorError as exc:
        reason = getattr(exc, "reason", None)
        if reason is None:
            return f"{show(text)} is not a valid selector: {exc}"
        return f"{show(text)} is not a valid selector: {reason} at position {exc.position}"
    return None


_check_selector = refuse_problem(selector_problem)


Selector = Annotated[str, AfterValidator(_check_selector)]


# --- BGP communities ----------------------------------------------------------------------

def community_problem(value: str) -> str | None:
    """Why `value` is not a BGP community value (aa:nn or large aa:nn:mm), or None."""
    m2 = re.fullmatch(r"([0-9]{1,10}):([0-9]{1,10})", value)
    m3 = re.fullmatch(r"([0-9]{1,10}):([0-9]{1,10}):([0-9]{1,10})", value)
    if m2 and all(int(x) <= 65535 for x in m2.groups()):
        return None
    if m3 and all(int(x) <= 4294967295 for x in m3.groups()):
        return None
    return (f"{show(value)} is not a BGP community (aa:nn with 16-bit numbers, or aa:nn:mm "
            "with 32-bit numbers)")


_check_community_value = refuse_problem(community_problem)


CommunityValue = Annotated[str, AfterValidator(_check_community_value)]


# --- other settings that reach the dataplane, files or BIRD as text ----------------------
#
# Each follows the grammar Calico (Felix's config parameters, libcalico-go's validator)
# gives the field, never wider; where Calico takes any text the grammar here is the
# plain characters such values are made of, so no value can become syntax elsewhere.

# Felix's iface-param (iptablesNATOutgoingInterfaceFilter): a name, '+' as a wildcard.
InterfaceFilter = pattern_type(r"[a-zA-Z0-9:._+-]{1,15}", "1-15 letters, digits, ':', '.', '_', "
                               "'+' or '-'", "interface filter", max_len=15)
# BGPConfiguration.ignoredInterfaces: a name, '*' as a wildcard (never "*" alone).
IgnoredInterface = pattern_type(r"(?!\*\Z)[a-zA-Z0-9_.*-]{1,15}", "1-15 letters, digits, '_', '.', "
                                "'-' or '*', not \"*\" alone", "ignored interface", max_len=15)
# Felix's host-address (healthHost, prometheusMetricsHost): an address or host name.
HostAddress = pattern_type(r"[a-zA-Z0-9:._+-]{1,64}", "an IP address or host name of at most 64 "
                           "letters, digits, ':', '.', '_', '+' or '-'", "host address", max_len=64)
# Felix's hostname (metadataAddr).
Hostname = pattern_type(r"[a-zA-Z0-9_.-]{1,253}", "a host name or IP address of letters, digits, "
                        "'_', '.' and '-'", "host name", max_len=253)
# Felix's region (openstackRegion): a DNS-1123 label short enough for a namespace name.
Region = pattern_type(_DNS1123_LABEL, "a DNS-1123 label of at most 46 characters", "region",
                      max_len=46)
# Felix's keyvaluelist (featureGates, featureDetectOverride): "key=value,key=value".
KeyValueList = pattern_type(r"( *[A-Za-z0-9_]+=[A-Za-z0-9_.:/+ -]*)?(,( *[A-Za-z0-9_]+=[A-Za-z0-9_.:/+ -]*)?)*",
                            "comma-separated key=value pairs: keys of letters, digits and '_', "
                            "values of letters, digits, spaces and '_.:/+-'", "key=value list",
                            max_len=1024)
# Paths (logFilePath, iptablesLockFilePath, policySyncPathPrefix, dataplaneDriver, ...).
FilePath = pattern_type(r"[A-Za-z0-9_./@+=,~-]{1,4096}", "a file name of letters, digits and "
                        "'_./@+=,~-', no whitespace or quotes", "file path", max_len=4096)
# Felix's LogPrefix: the text of nft's `log prefix "..."` (at most 127 bytes there);
# Calico's specifiers %t %k %n %p are kept as written.
LogPrefix = pattern_type(r"[A-Za-z0-9 _.:/%@#=+,-]{0,127}", "at most 127 letters, digits, spaces "
                         "and '_.:/%@#=+,-'", "log prefix", max_len=127)
# Calico's HealthTimeoutOverride name rule.
HealthTimeoutName = pattern_type(r"[a-zA-Z0-9_ -]{1,128}", "1-128 letters, digits, spaces, '_' "
                                 "or '-'", "health reporter name", max_len=128)
# A Kubernetes Secret data key (BGP passwords' secretKeyRef.key).
SecretKey = pattern_type(r"[-._a-zA-Z0-9]{1,253}", "1-253 letters, digits, '-', '_' or '.'",
                         "secret key", max_len=253)


def regexp_type(what: str) -> Any:
    """A regular expression setting (mtuIfacePattern, bpfDataIfacePattern, ...): it must
    compile, and it is a pattern only: no whitespace, quotes, ';' or control characters."""
    return pattern_type(r"[^\s\"';\x00-\x1f\x7f]{1,256}", "a regular expression of at most 256 "
                        "characters without whitespace, quotes or ';'", what, max_len=256,
                        extra=lambda v: _regexp_problem(v, what))


def _wireguard_key_problem(value: str) -> str | None:
    try:
        ok = len(base64.b64decode(value, validate=True)) == 32
    except (ValueError, TypeError):
        ok = False
    return None if ok else f"{show(value)} is not a WireGuard public key (32 bytes in base64)"


WireguardPublicKey = pattern_type(r"[A-Za-z0-9+/]{43}=", "32 bytes in base64 (44 characters)",
                                  "WireGuard public key", max_len=44, extra=_wireguard_key_problem)


def enum_before(allowed: tuple[str, ...], what: str) -> Any:
    """A string field limited to `allowed`, with a message naming them all."""
    def check(value: Any) -> str:
        if isinstance(value, str) and value in allowed:
            return value
        hint = ""
        if isinstance(value, str):
            for a in allowed:
                if a.lower() == value.lower():
                    hint = f" - did you mean {a}?"
        raise fail(f"{show(value)} is not a valid {what} ({', '.join(allowed)}){hint}")
    return Annotated[str, PlainValidator(check)]


__all__ = [
    "ASNumber", "Annotations", "CIDR", "CommunityValue", "ContainerID", "Duration", "FilePath",
    "HealthTimeoutName", "HostAddress", "HostInterfaceName", "Hostname", "IP", "IPv4",
    "IPv4Interface", "IPv6", "IPv6Interface", "IgnoredInterface", "InterfaceExcludeList",
    "InterfaceFilter", "InterfaceName", "InterfacePrefixList", "KeyValueList", "Labels",
    "LogPrefix", "MAC", "Name", "Namespace", "Net", "PeerIP", "Port", "PortName", "PortNumber",
    "PortRange", "Protocol", "Region", "ResourceVersion", "SecretKey", "Selector", "Timestamp",
    "UID", "WireguardPublicKey", "bounded", "community_problem", "enum_before", "fail",
    "free_text_problem", "iface_exclude_problem", "iface_list_problem", "interface_name_problem",
    "ip_version", "is_host_network", "name_problem", "parse_asn", "parse_cidr", "parse_duration", "parse_iface_list",
    "parse_ip", "parse_peer_ip", "parse_port", "parse_protocol", "pattern_type", "regexp_type",
    "selector_problem", "show",
]
