"""The one path from data to nft text: every string that came from etcd, a config
source or a user goes through one of these functions before it is part of an nft
script (or of the netlink element batch, which is encoded from the same text).

The contract, for every function here:

* the value is checked against a strict grammar for its *role* (an interface name,
  an interface-name prefix, a chain or set name, a comment, a log prefix, an
  address, a number) — with `fullmatch`, so a trailing newline is not "valid";
* what is returned is the nft text for it: quoted where nft wants a quoted string,
  with nothing left that nft would read as syntax (no quote, backslash, wildcard,
  `;`, brace, `#`, newline, NUL or other control character can get through);
* anything else raises `NftStringError` (a ValueError) naming the role and the
  value (shown escaped and cut short): never a best-effort "cleaned" version that
  could mean something else.

Validation further up (the model, `agent.config`) should already have refused bad
values, with a better message; these checks are the last barrier, so a value that
slipped past validation still cannot become syntax.

The writer (`nft_writer.NftWriter`) additionally checks the assembled pieces it pastes
together — each rule line and each element list — with `check_rule_line` and
`check_element_list`: one C-level scan per chain or set, no per-element regex.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any

__all__ = [
    "NftStringError",
    "IFNAME_MAX",
    "COMMENT_MAX",
    "show",
    "ifname",
    "ifname_text",
    "ifname_prefix",
    "unquote_ifname",
    "ident",
    "comment",
    "log_prefix",
    "ipv4",
    "addr",
    "cidr",
    "number",
    "check_rule_line",
    "check_element_list",
]

#: an interface name is at most 15 bytes (IFNAMSIZ 16 with its NUL)
IFNAME_MAX = 15
#: nft refuses comments longer than 128 bytes (NFTNL_UDATA_COMMENT_MAXLEN)
COMMENT_MAX = 128
#: nft log prefixes are at most 127 bytes (NF_LOG_PREFIXLEN 128 with its NUL)
LOG_PREFIX_MAX = 127


class NftStringError(ValueError):
    """A value that must not be pasted into nft text."""


def show(value: Any, limit: int = 60) -> str:
    """`value` for a message: repr (escapes control characters), cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _fail(role: str, value: Any, why: str) -> NftStringError:
    return NftStringError(f"{show(value)} is not a valid {role} for nft: {why}")


# The characters the model allows in an interface name (fields._check_interface_name);
# none of them is special inside an nft quoted string (no '"', '\\' or '*').
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.@:+-]{1,15}")
# Felix's iface-list element grammar (InterfacePrefix): model.fields.IFACE_LIST_RE.
_PREFIX_RE = re.compile(r"[A-Za-z0-9_-]{1,15}")
# Our chain, set and map names: cali-…, s4_<hash>, r_<hash>, …
_IDENT_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
# Comments (resource names and our own words): letters, digits, space and
# . _ : / @ + = , ( ) - — no quote, backslash, brace, ';' or '#'.
_COMMENT_RE = re.compile(r"[A-Za-z0-9 ._:/@+=,()-]*")
# Log prefixes: Felix's LogPrefix grammar plus '.', without '%' (nft has no
# placeholders; a '%' in a kernel log prefix is only confusing).
_LOG_PREFIX_RE = re.compile(r"[A-Za-z0-9: /_.-]*")


# Names we have checked, quoted (an endpoint's interface is written to two maps,
# and again on every change of its chains): a dict hit instead of a regex.
_QUOTED: dict[str, str] = {}
_UNQUOTED: dict[str, bytes] = {}
_CACHE_MAX = 1 << 17
_ifname_fm = _IFNAME_RE.fullmatch


def ifname(name: Any) -> str:
    """An interface name as an nft quoted string: ``"cali1234"``."""
    q = _QUOTED.get(name) if type(name) is str else None
    if q is None:
        q = '"' + ifname_text(name) + '"'
        if len(_QUOTED) >= _CACHE_MAX:
            _QUOTED.clear()
        _QUOTED[name] = q
    return q


def ifname_text(name: Any) -> str:
    """An interface name checked for nft (and the kernel), unquoted."""
    if type(name) is not str or not _ifname_fm(name):
        raise _fail("interface name", name,
                    "1-15 characters from A-Z a-z 0-9 _ . @ : + -")
    if name == "." or name == "..":
        raise _fail("interface name", name, "'.' and '..' are not interface names")
    return name


def ifname_prefix(prefix: Any) -> str:
    """A workload interface prefix as an nft wildcard match: ``"cali*"``.
    Felix's grammar: 1-15 characters from A-Z a-z 0-9 _ -."""
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise _fail("interface prefix", prefix, "1-15 characters from A-Z a-z 0-9 _ -")
    return '"' + prefix + '*"'


def unquote_ifname(text: Any) -> bytes:
    """The interface-name bytes of a quoted (or bare) name as written by `ifname`
    (the netlink element encoder's input). Raises like `ifname` for anything else."""
    raw = _UNQUOTED.get(text) if type(text) is str else None
    if raw is not None:
        return raw
    if not isinstance(text, str):
        raise _fail("interface name", text, "not a string")
    s = text.strip()
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        s = s[1:-1]
    raw = ifname_text(s).encode("ascii")
    if len(_UNQUOTED) >= _CACHE_MAX:
        _UNQUOTED.clear()
    _UNQUOTED[text] = raw
    return raw


def ident(name: Any) -> str:
    """A chain, set or map name (ours: a letter, then letters, digits, '_' or '-',
    at most 64), unquoted."""
    if not isinstance(name, str) or not _IDENT_RE.fullmatch(name):
        raise _fail("chain or set name", name,
                    "a letter, then up to 63 of A-Z a-z 0-9 _ -")
    return name


def comment(text: Any) -> str:
    """A comment as an nft quoted string (letters, digits, space and
    . _ : / @ + = , ( ) -, at most 128 characters)."""
    if not isinstance(text, str) or not _COMMENT_RE.fullmatch(text):
        raise _fail("comment", text, "holds characters other than A-Z a-z 0-9 space . _ : / @ + = , ( ) -")
    if len(text) > COMMENT_MAX:
        raise _fail("comment", text, f"longer than {COMMENT_MAX} characters")
    return '"' + text + '"'


def log_prefix(text: Any) -> str:
    """A log prefix as an nft quoted string (A-Z a-z 0-9 : / _ . - and space, at most
    127 bytes)."""
    if not isinstance(text, str) or not _LOG_PREFIX_RE.fullmatch(text):
        raise _fail("log prefix", text, "characters from A-Z a-z 0-9 : / _ . - and space")
    if len(text) > LOG_PREFIX_MAX:
        raise _fail("log prefix", text, f"longer than {LOG_PREFIX_MAX} characters")
    return '"' + text + '"'


_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6
_pton, _ntop = socket.inet_pton, socket.inet_ntop


def ipv4(text: Any) -> str:
    """An IPv4 address in dotted-quad form, returned as is. (The hot path of set
    elements: one inet_pton/inet_ntop round trip, ~0.3 µs, no regex.)"""
    try:
        if _ntop(_AF_INET, _pton(_AF_INET, text)) == text:
            return text
    except (OSError, TypeError, ValueError):
        pass
    raise _fail("IPv4 address", text, "not a dotted-quad address")


def addr(text: Any) -> str:
    """An IPv4 or IPv6 address, returned in its canonical form."""
    if isinstance(text, str):
        fam = _AF_INET6 if ":" in text else _AF_INET
        try:
            return _ntop(fam, _pton(fam, text))
        except (OSError, ValueError):
            pass
    raise _fail("IP address", text, "not an IPv4 or IPv6 address")


def cidr(text: Any) -> str:
    """An IPv4 or IPv6 network (address/length; host bits are cleared), returned in
    its canonical form."""
    if isinstance(text, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return str(text)
    if isinstance(text, str) and text.isascii() and text.strip() == text:
        try:
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            pass
    raise _fail("CIDR", text, "not an IPv4 or IPv6 network")


def number(value: Any, lo: int, hi: int) -> str:
    """An integer in [lo, hi] as decimal text (bools and strings are refused)."""
    if type(value) is not int or not lo <= value <= hi:
        raise _fail("number", value, f"not an integer in {lo}-{hi}")
    return str(value)


# --- structural checks of assembled text (the writer's last look) ---------------------

# In a rule line: no statement separator, block brace, comment, line break,
# backslash, NUL or other control character.
_RULE_BAD = re.compile(r"[;{}#\\\x00-\x1f\x7f]")
# In an element list: the characters of quoted interface names, addresses,
# CIDRs, services, protocol names, ' . ' concatenations, ' : ' verdicts and the
# ', ' separators — nothing else. (Checked with bytes.translate, which is several
# times cheaper than a regex scan over a big element list.)
_ELEM_CHARS = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
               b' ._:/@+",-')


def check_rule_line(line: str) -> str:
    """`line` if it can only be one nft rule's statements; NftStringError if it
    holds a character that would end the rule or the chain (``;``, braces, ``#``,
    a newline, a backslash, a control character)."""
    if _RULE_BAD.search(line) is not None:
        raise _fail("rule", line, "holds ';', a brace, '#', '\\' or a control character")
    return line


def check_element_list(body: str, count: int) -> str:
    """`body` (elements joined with ", ") if it is exactly `count` elements made of
    element characters; NftStringError otherwise (a stray ',' would add elements)."""
    try:
        stray = body.encode("ascii").translate(None, _ELEM_CHARS)
    except UnicodeEncodeError:
        stray = b"?"
    if stray:
        raise _fail("element list", body, "holds a character no element has")
    if body.count(",") != count - 1:
        raise _fail("element list", body, f"does not hold exactly {count} elements")
    return body
