"""Value types of Calico's v3 API: names, labels, CIDRs, ports, protocols, AS numbers...

Each type is an `Annotated` pydantic type whose validator checks the user's value and
returns it *unchanged* (a CIDR keeps the user's text, a port stays an int or a string),
so a document read, stored and printed again is the document the user wrote. Code that
needs the meaning of a value calls the matching `parse_*` helper here
(`parse_port("1000:2000") == (1000, 2000)`, `parse_asn("64512.10") == 4194304010`).

Failures are raised as `PydanticCustomError("calico", ...)` carrying a finished,
human message (`"TCPX" is not a protocol (TCP, UDP, ...)`); `model.validation`
turns them into field-path errors.
"""
from __future__ import annotations

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

def show(value: Any) -> str:
    """A value as it appears in messages: strings quoted, numbers/bools as in JSON."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fail(message: str) -> PydanticCustomError:
    """An error whose message is final (the template only echoes it, so `{` is safe)."""
    return PydanticCustomError("calico", "{msg}", {"msg": message})


# --- names and labels ----------------------------------------------------------------

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_RE = re.compile(rf"^{_DNS1123_LABEL}$")
DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
_QUALIFIED_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@functools.lru_cache(maxsize=8192)
def name_problem(value: str, what: str = "name") -> str | None:
    """Why `value` is not a DNS-1123 subdomain (Calico's resource-name rule), or None."""
    if not value:
        return f"{what} must not be empty"
    if len(value) > 253:
        return f"{show(value)} is not a valid {what} (at most 253 characters)"
    if not DNS1123_SUBDOMAIN_RE.match(value):
        hint = ""
        if value.lower() != value and DNS1123_SUBDOMAIN_RE.match(value.lower()):
            hint = " - use lower case"
        elif "_" in value:
            hint = " - '_' is not allowed, use '-'"
        return (f"{show(value)} is not a valid {what} (lower-case letters, digits, '-' and '.', "
                f"starting and ending with a letter or digit){hint}")
    return None


def check_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise fail(problem)
    return value


def check_namespace(value: str) -> str:
    if not value or len(value) > 63 or not DNS1123_LABEL_RE.match(value):
        raise fail(f"{show(value)} is not a valid namespace (a DNS-1123 label: at most 63 "
                   "lower-case letters, digits and '-', starting and ending with a letter or digit)")
    return value


def label_key_problem(key: Any) -> str | None:
    """Why `key` is not a Kubernetes qualified name (`[prefix/]name`), or None."""
    if not isinstance(key, str):
        return f"label key {show(key)} is not a string"
    return _label_key_problem(key)


@functools.lru_cache(maxsize=8192)
def _label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN_RE.match(prefix)):
        return f"label key {show(key)} has an invalid prefix (must be a DNS-1123 subdomain)"
    if not name or len(name) > 63 or not _QUALIFIED_NAME_RE.match(name):
        return (f"label key {show(key)} is not valid (at most 63 letters, digits, '-', '_' and '.', "
                "starting and ending with a letter or digit, with an optional DNS prefix and '/')")
    return None


@functools.lru_cache(maxsize=8192)
def _label_value_ok(value: str) -> bool:
    return bool(_LABEL_VALUE_RE.match(value))


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
    return value


Name = Annotated[str, AfterValidator(check_name)]
Namespace = Annotated[str, AfterValidator(check_namespace)]
Labels = Annotated[dict[str, str], PlainValidator(_check_labels)]
Annotations = Annotated[dict[str, str], PlainValidator(_check_annotations)]


def _check_timestamp(value: Any) -> str:
    # YAML loaders turn an unquoted RFC 3339 time into a datetime; store the text form.
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if not isinstance(value, str):
        raise fail(f"{show(value)} is not a timestamp (RFC 3339, e.g. 2024-01-31T12:00:00Z)")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"{show(value)} is not a timestamp (RFC 3339, e.g. 2024-01-31T12:00:00Z)") from None
    return value


Timestamp = Annotated[str, PlainValidator(_check_timestamp)]


def _check_resource_version(value: Any) -> str:
    # etcd mod revisions are numbers; accept an int from hand-written JSON but store text.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise fail(f"{show(value)} is not a resource version (a string)")
    return str(value)


ResourceVersion = Annotated[str, PlainValidator(_check_resource_version)]


# --- addresses -----------------------------------------------------------------------

def parse_ip(value: str) -> IPAddress:
    return ipaddress.ip_address(value)


def parse_cidr(value: str) -> IPNetwork:
    """A CIDR (or bare IP, meaning /32 or /128) as a network; host bits are masked."""
    return ipaddress.ip_network(value, strict=False)


_V4_RE = re.compile(r"^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})"
                    r"(?:/(0|[1-9]\d?))?$")


def _fast_v4(value: str) -> tuple[int, int | None] | None:
    """(address as int, prefix length or None) for well-formed IPv4 text, else None.

    ipaddress is correct but slow (~50 us a parse); 10,000 endpoints are read at once.
    """
    m = _V4_RE.match(value)
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


@functools.lru_cache(maxsize=8192)
def _ip_problem(value: str, version: int | None, what: str) -> str | None:
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


@functools.lru_cache(maxsize=8192)
def _cidr_problem(value: str, version: int | None, allow_bare_ip: bool, host_bits: bool,
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

_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}$")


def _check_mac(value: str) -> str:
    if not _MAC_RE.match(value):
        raise fail(f"{show(value)} is not a MAC address (e.g. ee:ee:ee:ee:ee:ee)")
    return value


MAC = Annotated[str, AfterValidator(_check_mac)]


def parse_peer_ip(value: str) -> tuple[str, int | None]:
    """BGPPeer.peerIP: "198.18.0.1", "198.18.0.1:1790", "fd00::1" or "[fd00::1]:1790"."""
    m = re.match(r"^\[([^\]]+)\](?::(\d+))?$", value)
    if m:
        ipaddress.IPv6Address(m.group(1))
        return m.group(1), int(m.group(2)) if m.group(2) else None
    if value.count(":") == 1:
        host, port = value.split(":")
        ipaddress.IPv4Address(host)
        if not port.isdigit():
            raise ValueError(value)
        return host, int(port)
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


def _check_interface_name(value: str, allow_star: bool = False) -> str:
    if allow_star and value == "*":
        return value
    if not value or len(value) > 15 or not re.match(r"^[A-Za-z0-9_.@:+-]+$", value) or value in (".", ".."):
        raise fail(f"{show(value)} is not a valid interface name "
                   "(1-15 characters, no '/' or whitespace)" + (" or \"*\"" if allow_star else ""))
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
_NAMED_PORT_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def named_port_problem(value: str) -> str | None:
    """Why `value` is not a port name (IANA service name rules, as Kubernetes), or None."""
    if (len(value) > 15 or not _NAMED_PORT_RE.match(value) or "--" in value
            or not re.search(r"[a-z]", value)):
        return (f"{show(value)} is not a valid port name (at most 15 lower-case letters, digits "
                "and '-', with at least one letter)")
    return None


def parse_port(value: int | str) -> tuple[int, int] | str:
    """A rule port as (lo, hi) for numbers and ranges, or the name of a named port."""
    if isinstance(value, int):
        return (value, value)
    if re.fullmatch(r"\d+", value):
        return (int(value), int(value))
    m = re.fullmatch(r"(\d+):(\d+)", value)
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
    if re.fullmatch(r"\d+", value):
        if 1 <= int(value) <= 65535:
            return value
        raise fail(f"{show(value)} is not a port ({_PORT_ALLOWED})")
    m = re.fullmatch(r"(\d+):(\d+)", value)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
            raise fail(f"{show(value)} is not a port range (both ends must be 1-65535)")
        if lo > hi:
            raise fail(f"{show(value)} is not a port range (the first port must not be "
                       "greater than the second)")
        return value
    if re.fullmatch(r"\d+\s*[-,]\s*\d+", value):
        raise fail(f"{show(value)} is not a port ({_PORT_ALLOWED}) - ranges are written lo:hi")
    problem = named_port_problem(value)
    if problem:
        raise fail(f"{show(value)} is not a port ({_PORT_ALLOWED})")
    return value


Port = Annotated[Union[int, str], PlainValidator(_check_port)]


def _check_port_name(value: str) -> str:
    problem = named_port_problem(value)
    if problem:
        raise fail(problem)
    return value


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
        m = re.fullmatch(r"(\d+)\.(\d+)", value)
        if m:
            hi, lo = int(m.group(1)), int(m.group(2))
            if hi > 65535 or lo > 65535 or hi * 65536 + lo == 0:
                raise fail(f"{show(value)} is not an AS number ({_ASN_ALLOWED})")
            return value
        if not re.fullmatch(r"\d+", value):
            raise fail(f"{show(value)} is not an AS number ({_ASN_ALLOWED})")
    if not 1 <= int(value) <= 4294967295:
        raise fail(f"{show(value)} is not an AS number ({_ASN_ALLOWED})")
    return value


ASNumber = Annotated[Union[int, str], PlainValidator(_check_asn)]


# --- durations -----------------------------------------------------------------------

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def parse_duration(value: str) -> float:
    """A Go duration ("90s", "1m30s", "500ms", "0") in seconds."""
    if value == "0":
        return 0.0
    return sum(float(num) * _DURATION_UNITS[unit]
               for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", value))


def _check_duration(value: Any) -> str:
    if not isinstance(value, str) or not (value == "0" or _DURATION_RE.match(value)):
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


def _check_selector(value: str) -> str:
    problem = selector_problem(value)
    if problem:
        raise fail(problem)
    return value


Selector = Annotated[str, AfterValidator(_check_selector)]


# --- BGP communities ----------------------------------------------------------------------

def community_problem(value: str) -> str | None:
    """Why `value` is not a BGP community value (aa:nn or large aa:nn:mm), or None."""
    m2 = re.fullmatch(r"(\d+):(\d+)", value)
    m3 = re.fullmatch(r"(\d+):(\d+):(\d+)", value)
    if m2 and all(int(x) <= 65535 for x in m2.groups()):
        return None
    if m3 and all(int(x) <= 4294967295 for x in m3.groups()):
        return None
    return (f"{show(value)} is not a BGP community (aa:nn with 16-bit numbers, or aa:nn:mm "
            "with 32-bit numbers)")


def _check_community_value(value: str) -> str:
    problem = community_problem(value)
    if problem:
        raise fail(problem)
    return value


CommunityValue = Annotated[str, AfterValidator(_check_community_value)]


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
    "ASNumber", "Annotations", "CIDR", "CommunityValue", "Duration", "HostInterfaceName", "IP",
    "IPv4", "IPv4Interface", "IPv6", "IPv6Interface", "InterfaceName", "Labels", "MAC", "Name",
    "Namespace", "Net", "PeerIP", "Port", "PortName", "PortNumber", "PortRange", "Protocol",
    "ResourceVersion", "Selector", "Timestamp", "bounded", "enum_before", "fail", "name_problem",
    "parse_asn", "parse_cidr", "parse_duration", "parse_ip", "parse_peer_ip", "parse_port",
    "parse_protocol", "selector_problem", "show", "community_problem", "ip_version",
]
