"""What a node advertises beyond its own blocks, decided from the BGPConfiguration
``default``: the service ranges (``serviceClusterIPs``, ``serviceExternalIPs``,
``serviceLoadBalancerIPs`` with ``serviceLoadBalancerAggregation``) and the BGP
communities (``communities`` and ``prefixAdvertisements``) attached to exported routes.
Pure: plain dicts in, :class:`Advertisements` out; a bad entry is skipped and reported
through ``reject`` while the rest still applies.

Calico's semantics, and where calico.net differs (there is no Kubernetes here):

* ``serviceClusterIPs``: every node advertises each CIDR, as in Calico.
* ``serviceExternalIPs`` / ``serviceLoadBalancerIPs``: Calico advertises the CIDRs from
  every node and, for Services with ``externalTrafficPolicy: Local``, a /32 from the
  nodes hosting an endpoint. Without Services only the first part exists: every node
  advertises the configured CIDRs.
* ``serviceLoadBalancerAggregation: Disabled``: Calico then advertises one /32 per
  LoadBalancer Service IP instead of the CIDRs; with no Services that is nothing, so
  the LoadBalancer CIDRs are not advertised at all.
* ``prefixAdvertisements``: a route inside ``cidr`` (or equal to it) leaves with the
  listed communities — each a name from ``communities`` or a literal ``aa:nn``
  (standard) / ``aa:nn:mm`` (large) value — as Calico's ``apply_communities`` does.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from calico_net.agent.confd.birdmodel import short_name

_STD = re.compile(r"([0-9]{1,5}):([0-9]{1,5})")
_LARGE = re.compile(r"([0-9]{1,10}):([0-9]{1,10}):([0-9]{1,10})")


@dataclass(frozen=True)
class CommunityRule:
    """Routes inside ``prefix`` get these communities."""

    prefix: str
    standard: tuple[tuple[int, int], ...] = ()
    large: tuple[tuple[int, int, int], ...] = ()


@dataclass
class Advertisements:
    #: family -> service prefixes (blackholed in BIRD, advertised, never in the kernel)
    services: dict[int, list[str]] = field(default_factory=lambda: {4: [], 6: []})
    #: family -> community rules, in the order written
    communities: dict[int, list[CommunityRule]] = field(default_factory=lambda: {4: [], 6: []})


def parse_community(value: object) -> tuple[int, ...]:
    """``aa:nn`` (16-bit parts) or ``aa:nn:mm`` (32-bit parts) as a tuple; ValueError
    otherwise (the model's rule, :func:`calico_net.model.fields.bgp.community_problem`)."""
    text = str(value).strip()
    m = _STD.fullmatch(text)
    if m and all(int(x) <= 0xFFFF for x in m.groups()):
        return (int(m.group(1)), int(m.group(2)))
    m = _LARGE.fullmatch(text)
    if m and all(int(x) <= 0xFFFFFFFF for x in m.groups()):
        return (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    raise ValueError(f"{short_name(repr(value))} is not a community (aa:nn or aa:nn:mm)")


def _cidrs(items: object, what: str, reject: Callable[[str], None]) -> list[ipaddress._BaseNetwork]:
    out: list[ipaddress._BaseNetwork] = []
    if items is None:
        return out
    if not isinstance(items, list):
        reject(f"BGPConfiguration default {what} ignored: not a list")
        return out
    for i, item in enumerate(items):
        raw = item.get("cidr") if isinstance(item, Mapping) else None
        try:
            out.append(ipaddress.ip_network(str(raw).strip(), strict=False))
        except ValueError:
            reject(f"BGPConfiguration default {what}[{i}] skipped: "
                   f"{short_name(repr(raw))} is not a CIDR")
    return out


def advertisements(dspec: Mapping[str, Any], reject: Callable[[str], None],
                   nspec: Mapping[str, Any] | None = None) -> Advertisements:
    """What the BGPConfiguration ``default`` spec ``dspec`` adds to every node's exports;
    ``nspec``, this node's ``node.<name>`` spec, replaces the default's
    prefixAdvertisements when it has some (as Calico's confd prefers the node's), its
    communities naming values beside the default's."""
    nspec = nspec or {}
    adv = Advertisements()
    nets = _cidrs(dspec.get("serviceClusterIPs"), "serviceClusterIPs", reject)
    nets += _cidrs(dspec.get("serviceExternalIPs"), "serviceExternalIPs", reject)
    lb = _cidrs(dspec.get("serviceLoadBalancerIPs"), "serviceLoadBalancerIPs", reject)
    if dspec.get("serviceLoadBalancerAggregation", "Enabled") != "Disabled":
        nets += lb
    for net in sorted(set(nets), key=lambda n: (n.version, n.network_address, n.prefixlen)):
        adv.services[net.version].append(str(net))

    named: dict[str, tuple[int, ...]] = {}
    own = bool(nspec.get("prefixAdvertisements"))
    defined = list(dspec.get("communities") or ()) + list((nspec if own else {}).get("communities") or ())
    for i, c in enumerate(defined):
        try:
            if not isinstance(c, Mapping) or not isinstance(c.get("name"), str):
                raise ValueError("not a {name, value} mapping")
            named[c["name"]] = parse_community(c.get("value"))
        except ValueError as exc:
            reject(f"BGPConfiguration default communities[{i}] skipped: {exc}")
    for i, pa in enumerate((nspec if own else dspec).get("prefixAdvertisements") or ()):
        try:
            if not isinstance(pa, Mapping):
                raise ValueError("not a mapping")
            net = ipaddress.ip_network(str(pa.get("cidr")).strip(), strict=False)
            values = []
            for comm in pa.get("communities") or ():
                values.append(named[comm] if comm in named else parse_community(comm))
        except ValueError as exc:
            reject(f"BGPConfiguration default prefixAdvertisements[{i}] skipped: {exc}")
            continue
        adv.communities[net.version].append(CommunityRule(
            prefix=str(net),
            standard=tuple(dict.fromkeys(v for v in values if len(v) == 2)),  # type: ignore[misc]
            large=tuple(dict.fromkeys(v for v in values if len(v) == 3)),  # type: ignore[misc]
        ))
    return adv
