"""The one way a value becomes BIRD 2 configuration text.

Everything confd writes into ``bird.cfg`` that did not come from the template's own
literal text passes through one function here, chosen by what the value is:

=====================  ================================================  ==============
function               accepts                                           prints
=====================  ================================================  ==============
:func:`bird_str`       text without ``"``, ``\\``, control/format        ``"text"``
                       characters, at most 1024 UTF-8 bytes
:func:`bird_password`  the same, 1..80 bytes (TCP-MD5 key)               ``"key"``
:func:`bird_ident`     ``[A-Za-z_][A-Za-z0-9_]*``, at most 64 chars      ``Mesh_198_18_0_12``
:func:`bird_int`       an int (never a bool or a string), in a range     ``64512``
:func:`bird_ip`        an IPv4/IPv6 address (object or text)             canonical form
:func:`bird_prefix`    an IPv4/IPv6 network (object or text)             canonical form
:func:`bird_prefix_pattern` ``<network>{lo,hi}`` with sane lengths        canonical form
:func:`bird_iface_pattern`  ``-?"glob"`` / ``-?glob`` (interface names)   ``-"cali*"``
:func:`bird_log_target`  ``stderr``, ``syslog`` or an absolute file name  keyword or ``"file"``
:func:`bird_comment`   anything                                          one inert line
:func:`bird_keyword`   one of a fixed set of the caller's own literals   itself
=====================  ================================================  ==============

Each returns a :class:`BirdText`. The Jinja2 environment in :mod:`.render` prints
only ``BirdText`` and plain ints (its ``finalize`` refuses any other value, a raw
``str`` included), so a value that skipped these functions cannot reach the file at
all, and a value that got past the resource model's validation still cannot become
BIRD syntax: it is refused with :class:`BirdTextError` (a ``ValueError`` naming the
value's role), and the caller skips the object that carried it.

BIRD 2 (2.0.12, Debian 12) has no escape sequences in strings: ``"`` always ends
one and a backslash is kept as it is (later BIRD versions may read it as an escape),
so both are refused rather than escaped. Strings of 4096 bytes or more crash its
parser (``bird -p`` aborts in realloc), hence the 1024-byte cap.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

#: Longest quoted string confd writes (UTF-8 bytes). BIRD 2.0.12 aborts at 4096.
MAX_STRING_BYTES = 1024
#: TCP-MD5 keys are at most 80 bytes (RFC 2385 / Linux TCP_MD5SIG_MAXKEYLEN).
MAX_PASSWORD_BYTES = 80
#: BIRD's SYM_MAX_LEN: a longer symbol is "Symbol too long".
MAX_IDENT_CHARS = 64
#: Comments are cut to this many characters (they are for people).
MAX_COMMENT_CHARS = 400

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_PATTERN_RE = re.compile(r"(?P<net>[^{}]+)\{(?P<lo>[0-9]{1,3}),(?P<hi>[0-9]{1,3})\}", re.ASCII)


class BirdTextError(ValueError):
    """A value cannot be written into bird.cfg as what it is meant to be."""


class BirdText(str):
    """A piece of BIRD syntax made by this module. The template prints nothing else
    (apart from ints); never construct one outside this module."""

    __slots__ = ()


def _show(value: object, limit: int = 60) -> str:
    """A short, escaped rendering of a refused value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _bad_char(ch: str) -> bool:
    # Control (Cc: NUL, newline, CR, tab, DEL, C1), format (Cf: bidi overrides,
    # zero-width), surrogates (Cs: undecodable bytes), private use and unassigned,
    # and the Unicode line/paragraph separators.
    return unicodedata.category(ch)[0] == "C" or ch in "\u2028\u2029"


def check_bird_string(value: object, what: str, max_bytes: int = MAX_STRING_BYTES,
                      *, secret: bool = False) -> str:
    """``value`` when it can stand between double quotes in bird.cfg; else
    :class:`BirdTextError` saying why (``what`` names the value's role; a ``secret``
    value is never shown in the message)."""
    if not isinstance(value, str):
        raise BirdTextError(f"{what} must be a string, not {type(value).__name__}")
    shown = what if secret else f"{what} {_show(value)}"
    for ch in value:
        if ch in '"\\':
            raise BirdTextError(f"{shown} contains {ch!r}, which a BIRD string cannot hold")
        if _bad_char(ch):
            raise BirdTextError(f"{shown} contains the control or format character U+{ord(ch):04X}")
    size = len(value.encode("utf-8"))
    if size > max_bytes:
        raise BirdTextError(f"{what} is {size} bytes long; at most {max_bytes} fit in bird.cfg")
    return value


def bird_str(value: object, what: str = "string") -> BirdText:
    """A BIRD string literal, quotes included."""
    return BirdText('"' + check_bird_string(value, what) + '"')


def check_password(value: object, what: str = "password") -> str:
    """A TCP-MD5 key that fits bird.cfg; errors never show the key."""
    text = check_bird_string(value, what, MAX_PASSWORD_BYTES, secret=True)
    if not text:
        raise BirdTextError(f"{what} is empty")
    return text


def bird_password(value: object, what: str = "password") -> BirdText:
    """A TCP-MD5 key as a BIRD string literal (1-80 bytes)."""
    return BirdText('"' + check_password(value, what) + '"')


def check_ident(value: object, what: str = "identifier") -> str:
    if not isinstance(value, str) or not _IDENT_RE.fullmatch(value):
        raise BirdTextError(f"{what} {_show(value)} is not a BIRD symbol ([A-Za-z_][A-Za-z0-9_]*)")
    if len(value) > MAX_IDENT_CHARS:
        raise BirdTextError(f"{what} {_show(value)} is longer than {MAX_IDENT_CHARS} characters")
    return value


def bird_ident(value: object, what: str = "identifier") -> BirdText:
    """A BIRD symbol (protocol, filter or template name)."""
    return BirdText(check_ident(value, what))


def bird_int(value: object, what: str = "number", lo: int = 0, hi: int = 0xFFFFFFFF) -> BirdText:
    """A decimal number from an int in ``[lo, hi]`` (no bools, no strings)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BirdTextError(f"{what} must be an integer, not {_show(value)}")
    if not lo <= value <= hi:
        raise BirdTextError(f"{what} {value} is outside {lo}..{hi}")
    return BirdText(str(int(value)))


def _address(value: object, what: str, family: int | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        addr = value
    elif isinstance(value, str):
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            raise BirdTextError(f"{what} {_show(value)} is not an IP address") from None
    else:
        raise BirdTextError(f"{what} must be an IP address, not {type(value).__name__}")
    if family is not None and addr.version != family:
        raise BirdTextError(f"{what} {addr} is not an IPv{family} address")
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        raise BirdTextError(f"{what} {_show(value)} carries a scope id")
    return addr


def bird_ip(value: object, what: str = "address", family: int | None = None) -> BirdText:
    """An IPv4 or IPv6 address in its canonical text form."""
    return BirdText(str(_address(value, what, family)))


def _network(value: object, what: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if isinstance(value, str):
        try:
            return ipaddress.ip_network(value, strict=True)
        except ValueError:
            raise BirdTextError(f"{what} {_show(value)} is not a network (CIDR without host bits)") from None
    raise BirdTextError(f"{what} must be a network, not {type(value).__name__}")


def bird_prefix(value: object, what: str = "prefix") -> BirdText:
    """An IPv4 or IPv6 network (``198.19.0.0/16``) in canonical form."""
    return BirdText(str(_network(value, what)))


def bird_prefix_pattern(value: object, what: str = "prefix pattern") -> BirdText:
    """``<network>{lo,hi}``: the network's prefixes of length lo..hi."""
    m = _PATTERN_RE.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise BirdTextError(f"{what} {_show(value)} is not <network>{{lo,hi}}")
    net = _network(m.group("net"), what)
    lo, hi = int(m.group("lo")), int(m.group("hi"))
    if not net.prefixlen <= lo <= hi <= net.max_prefixlen:
        raise BirdTextError(f"{what} {_show(value)} has lengths outside {net.prefixlen}..{net.max_prefixlen}")
    return BirdText(f"{net}{{{lo},{hi}}}")


def parse_iface_pattern(value: object, what: str = "interface pattern") -> tuple[bool, str]:
    """``-"cali*"`` / ``"*"`` / ``-cali*`` → (excluded, glob). The glob is an interface
    name pattern: no whitespace, ``/`` or ``:`` (Linux forbids them in names)."""
    if not isinstance(value, str):
        raise BirdTextError(f"{what} must be a string, not {type(value).__name__}")
    negate = value.startswith("-")
    glob = value[1:] if negate else value
    if len(glob) >= 2 and glob.startswith('"') and glob.endswith('"'):
        glob = glob[1:-1]
    check_bird_string(glob, what, 64)
    if not glob or any(ch.isspace() or ch in "/:" for ch in glob):
        raise BirdTextError(f"{what} {_show(value)} is not an interface name pattern")
    return negate, glob


def bird_iface_pattern(value: Any, what: str = "interface pattern") -> BirdText:
    """One entry of an ``interface`` list: ``"glob"`` or ``-"glob"``. Takes the
    (excluded, glob) pair of :func:`parse_iface_pattern` or its text."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool):
        negate, glob = value
        glob = parse_iface_pattern(glob, what)[1]
    else:
        negate, glob = parse_iface_pattern(value, what)
    return BirdText(("-" if negate else "") + '"' + glob + '"')


def bird_log_target(value: object, what: str = "log target") -> BirdText:
    """``stderr``/``syslog`` as keywords; anything else must be an absolute file name
    and is quoted."""
    if value in ("stderr", "syslog"):
        return BirdText(str(value))
    text = check_bird_string(value, what, 4095)
    if not text.startswith("/"):
        raise BirdTextError(f"{what} {_show(value)} is neither stderr, syslog nor an absolute file name")
    return BirdText('"' + text + '"')


def bird_comment(value: object) -> BirdText:
    """Text for after a ``#``: always one line, however hostile the input. Control,
    format and separator characters become ``?``, long text is cut."""
    text = "".join("?" if _bad_char(ch) else ch for ch in str(value))
    if len(text) > MAX_COMMENT_CHARS:
        text = text[:MAX_COMMENT_CHARS] + "…"
    return BirdText(text)


def bird_keyword(value: object, allowed: Iterable[str], what: str = "keyword") -> BirdText:
    """One of the caller's own fixed snippets (e.g. a log class set)."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise BirdTextError(f"{what} {_show(value)} is not one of the known values")
    return BirdText(value)


def finalize(value: object) -> str:
    """Jinja2 ``finalize``: the only values the BIRD template may print."""
    if isinstance(value, BirdText):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BirdTextError(
        f"the BIRD template tried to print a raw {type(value).__name__} ({_show(value)}); "
        "every value must pass through one of the birdtext filters")
