"""Network values: IP addresses, CIDRs, MACs, BGP peer addresses, interface names and
lists, ports and protocols.

Address text is checked for address characters before `ipaddress` sees it, and IPv4
text takes a fast path of its own, because a cold start reads every endpoint's
addresses at once.
"""
from __future__ import annotations

import functools
import ipaddress
import re
from typing import Annotated, Any, Union

from pydantic import AfterValidator, PlainValidator

from calico_net.model.fields.checks import (
    bounded, fail, pattern_problem, refuse_problem, regexp_problem, show,
)

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

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

    ipaddress is correct but slow, and a cold start reads every endpoint's addresses.
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


def cidr_problem(value: str, version: int | None, allow_bare_ip: bool, host_bits: bool,
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
    problem = cidr_problem(value, version, allow_bare_ip, host_bits, what)
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

MAC_RE = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}\Z")


def _check_mac(value: str) -> str:
    if not MAC_RE.fullmatch(value):
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


#: Why a value is not an interface name Calico accepts, or None.
interface_name_problem = pattern_problem(_INTERFACE_NAME_RE, INTERFACE_NAME_ALLOWED,
                                         "interface name", refused=(".", ".."))


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


#: Why a value is not a valid interface-prefix list (Felix's iface-list), or None.
iface_list_problem = pattern_problem(IFACE_LIST_RE, IFACE_LIST_ALLOWED, "interface prefix list")


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
            problem = regexp_problem(item[1:-1], "interface exclude pattern")
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


def check_port(value: Any) -> int | str:
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


Port = Annotated[Union[int, str], PlainValidator(check_port)]


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

