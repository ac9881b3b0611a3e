"""The datastore values confd turns into numbers and addresses for bird.cfg. AS numbers,
durations and peer addresses are read by the model's rules (:mod:`calico_net.model.fields`:
the ``ASNumber`` and ``Duration`` checks, ``parse_asn``, ``parse_duration``,
``parse_peer_ip``), so confd accepts exactly what ``calicoctl apply`` accepts; the rest
are what only BIRD needs (ports, bounded integers, a Node's host address, a route
reflector cluster id, an on/off annotation). Every function raises ValueError with a
message fit for a note in bird.cfg.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# The model's field checks, built on first use: pydantic is a heavy import that a
# render of plain dicts (tests, bench) and the start-up helper may never need.
_checks: dict[str, Any] = {}


def _model_check(kind: str, value: object) -> Any:
    """``value`` as the model's field type ``kind`` accepts it; ValueError with the
    model's own message when it does not."""
    if not _checks:
        from pydantic import TypeAdapter, ValidationError

        from calico_net.model.fields import ASNumber, Duration

        _checks.update(asn=TypeAdapter(ASNumber), duration=TypeAdapter(Duration),
                       error=ValidationError)
    try:
        return _checks[kind].validate_python(value)
    except _checks["error"] as exc:
        raise ValueError(exc.errors()[0]["msg"]) from None


def as_number(value: object) -> int:
    """An AS number (int, "65000" or asdot "1.10") as the model reads it."""
    from calico_net.model.fields import parse_asn

    return parse_asn(_model_check("asn", value))


def duration_seconds(value: object) -> float:
    """Seconds of a Go ``time.Duration`` string ("120s", "1m30s", "500ms", "0"), as
    the model reads it: a bare number or a non-string is not a duration."""
    from calico_net.model.fields import parse_duration

    return parse_duration(_model_check("duration", value))


def restart_time(value: object, what: str) -> int:
    """A graceful-restart time for BIRD: whole seconds 0-65535 of a duration."""
    try:
        seconds = duration_seconds(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return small_int(int(seconds), what, 0, 65535)


def peer_address(text: str) -> tuple[IPAddress, int | None]:
    """A BGPPeer ``peerIP`` ("198.18.0.5", "198.18.0.5:1790", "2001:db8::1",
    "[2001:db8::1]:1790") as (address, port or None), by the model's grammar; only
    the parsed address reaches bird.cfg, so surrounding whitespace is dropped."""
    from calico_net.model.fields import parse_peer_ip

    try:
        host, port = parse_peer_ip(text.strip())
    except ValueError:
        raise ValueError(f"peerIP {text!r} is not an IP, IPv4:port or [IPv6]:port") from None
    return ipaddress.ip_address(host), None if port is None else tcp_port(port)


def tcp_port(value: object) -> int:
    """A TCP port 1-65535 from an int or decimal text."""
    if isinstance(value, bool):
        raise ValueError(f"invalid port {value!r}")
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,5}", value.strip()):
        value = int(value)
    if not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"invalid port {value!r} (1-65535)")
    return value


def small_int(value: object, what: str, lo: int, hi: int) -> int:
    """An int in lo..hi from an int or decimal text (no bools, no floats)."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,10}", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"invalid {what} {value!r} ({lo}-{hi})")
    return value


def switch(value: object) -> bool | None:
    """An on/off annotation: True, False, or None when unset or not understood."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    return None


def host_address(value: object, family: int) -> IPAddress | None:
    """Address of a ``"198.18.0.11/24"``-style interface string (None when unset)."""
    if not value:
        return None
    # Not ip_interface(): it builds the network too, which dominates large renders.
    addr_text, _, plen = str(value).partition("/")
    addr = ipaddress.ip_address(addr_text)
    if addr.version != family:
        raise ValueError(f"{value!r} is not an IPv{family} address")
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        raise ValueError(f"{value!r} carries a scope id")
    if plen and not (re.fullmatch(r"[0-9]{1,3}", plen) and int(plen) <= addr.max_prefixlen):
        raise ValueError(f"{value!r} has an invalid prefix length")
    return addr


def rr_cluster_id(value: object) -> str:
    """A routeReflectorClusterID (dotted quad or integer) as BIRD writes it; "" when
    unset."""
    if value in (None, ""):
        return ""
    text = str(value).strip()
    if re.fullmatch(r"[0-9]{1,10}", text):
        return str(ipaddress.IPv4Address(int(text)))
    return str(ipaddress.IPv4Address(text))


#: An IPPool's ipipMode / vxlanMode values, Calico's names (as ``calicoctl apply``
#: accepts them: exact case).
ENCAP_MODES = ("Never", "Always", "CrossSubnet")


def pool_encapsulated(ipip_mode: object, vxlan_mode: object) -> bool:
    """Whether an IPPool's routes are encapsulated (ipipMode or vxlanMode not Never);
    a missing mode is Never. Any other value raises: a pool whose mode is not known
    cannot be routed correctly by BIRD or by the agent, so it is skipped whole."""
    encap = False
    for what, mode in (("ipipMode", ipip_mode), ("vxlanMode", vxlan_mode)):
        if mode is None:
            continue
        if not isinstance(mode, str) or mode not in ENCAP_MODES:
            raise ValueError(f"{what} {mode!r} is not one of {', '.join(ENCAP_MODES)}")
        encap = encap or mode != "Never"
    return encap
