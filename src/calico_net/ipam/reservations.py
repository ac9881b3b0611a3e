"""The IPReservations as IPAM uses them: which addresses of a block automatic
assignment must skip, and which blocks are reserved whole (never claimed or used).

Read from the IPReservation resource keys together with the view an assignment
decides on, and kept with the etcd revision they were read at: every write of an
assignment requires that no reservation was created or changed since (see
`records.View.guards`), so an address a reservation covers when the write commits is
never handed out, even by an allocation that raced with the reservation's creation.
Explicit `assign_ip` ignores reservations, as Calico's AssignIP does.
"""
from __future__ import annotations

import ipaddress
import logging

import orjson

from calico_net.datastore.etcd import KV
from calico_net.datastore.store import RESOURCE_PREFIX
from calico_net.ipam.block import IPNetwork

log = logging.getLogger(__name__)

RESERVATION_PREFIX = RESOURCE_PREFIX + "ipreservations/"


class Reservations:
    """The reserved networks, read at etcd revision `revision`."""

    def __init__(self, nets: list[IPNetwork], revision: int) -> None:
        self.nets = nets
        self.revision = revision
        self._ordinals: dict[IPNetwork, frozenset[int]] = {}

    @classmethod
    def from_kvs(cls, kvs: list[KV], revision: int) -> "Reservations":
        nets: list[IPNetwork] = []
        for kv in kvs:
            try:
                cidrs = ((orjson.loads(kv.value) or {}).get("spec") or {}).get("reservedCIDRs") or []
                nets.extend(ipaddress.ip_network(str(c).strip(), strict=False) for c in cidrs)
            except (ValueError, AttributeError, TypeError):
                # a reservation that does not parse reserves nothing (Calico logs and skips it)
                log.warning("ignoring IPReservation %s: its reservedCIDRs do not parse", kv.key)
        return cls(nets, revision)

    def skipped(self, block: IPNetwork) -> frozenset[int]:
        """The ordinals of `block` that a reservation covers."""
        found = self._ordinals.get(block)
        if found is None:
            out: set[int] = set()
            base = int(block.network_address)
            for net in self.nets:
                if net.version != block.version or not net.overlaps(block):
                    continue
                if net.prefixlen <= block.prefixlen:  # the whole block
                    out.update(range(block.num_addresses))
                    break
                start = int(net.network_address) - base
                out.update(range(start, start + net.num_addresses))
            found = self._ordinals[block] = frozenset(out)
        return found

    def covers(self, block: IPNetwork) -> bool:
        """True when every address of `block` is reserved."""
        return len(self.skipped(block)) == block.num_addresses
