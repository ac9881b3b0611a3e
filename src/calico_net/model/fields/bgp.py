"""BGP values: AS numbers (plain or asdot), community values, and durations (Go's
"1m30s" form, which BGP timers and Felix's intervals share).
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Union

from pydantic import AfterValidator, PlainValidator

from calico_net.model.fields.checks import fail, refuse_problem, show

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
