"""A node's tunnel addresses: which it needs, getting them from IPAM, and keeping them
in its Node resource — what calico/node's tunnel address allocator does
(node/pkg/allocateip in Calico).

Three addresses, each with Calico's IPAM handle, `type` attribute and Node field:

* IP-in-IP (IPv4): `spec.bgp.ipv4IPIPTunnelAddr`;
* VXLAN (IPv4): `spec.ipv4VXLANTunnelAddr`, with the device MAC `spec.vxlanTunnelMACAddr`;
* VXLAN (IPv6): `spec.ipv6VXLANTunnelAddr`, with `spec.vxlanTunnelMACAddrV6`.

An address is needed when an IPPool of its IP version is enabled (not `disabled`, not
being deleted), has that encapsulation (`ipipMode`/`vxlanMode` Always or
CrossSubnet), selects this node with its `nodeSelector` and, when `allowedUses` is
set, lists `Tunnel`. A needed address the Node already has is kept when IPAM holds
it for the node's handle with the right `type` and it lies in one of those pools;
otherwise the handle is released and one address auto-assigned from those pools.
Not needed: the handle is released and the fields (MAC too) cleared.

`reconcile` does one pass and writes the Node once, as a compare-and-swap on its
resourceVersion (a concurrent change re-reads and decides again); with nothing to
change it writes nothing. `TunnelAddrAllocator` runs it in the agent: `poke()` when
pools or this Node change, debounced, retried with a capped backoff.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from calico_net.agent.encap.types import (
    IPIP_ATTR_TYPE,
    IPIP_HANDLE,
    VXLAN_ATTR_TYPE,
    VXLAN_HANDLE,
    VXLAN_V6_ATTR_TYPE,
    VXLAN_V6_HANDLE,
)

log = logging.getLogger(__name__)

ENCAP_ON = ("Always", "CrossSubnet")

#: how often one `reconcile` re-reads the Node after losing its compare-and-swap
CAS_ATTEMPTS = 10


@dataclass(frozen=True)
class TunnelKind:
    """One kind of tunnel address: where its pools say so and where the Node keeps it."""

    attr_type: str          # IPAM `type` attribute
    handle_fmt: str         # IPAM handle, formatted with node=
    version: int
    mode_field: str         # the IPPool spec field that turns it on
    field: str              # the Node spec field (under spec.bgp when in_bgp)
    in_bgp: bool = False
    mac_field: str | None = None

    def handle(self, node: str) -> str:
        return self.handle_fmt.format(node=node)


IPIP = TunnelKind(IPIP_ATTR_TYPE, IPIP_HANDLE, 4, "ipipMode", "ipv4IPIPTunnelAddr", in_bgp=True)
VXLAN = TunnelKind(VXLAN_ATTR_TYPE, VXLAN_HANDLE, 4, "vxlanMode", "ipv4VXLANTunnelAddr",
                   mac_field="vxlanTunnelMACAddr")
VXLAN_V6 = TunnelKind(VXLAN_V6_ATTR_TYPE, VXLAN_V6_HANDLE, 6, "vxlanMode", "ipv6VXLANTunnelAddr",
                      mac_field="vxlanTunnelMACAddrV6")
KINDS = (IPIP, VXLAN, VXLAN_V6)

#: the keys of `reconcile`'s result
RESULT_FIELDS = ("ipv4IPIPTunnelAddr", "ipv4VXLANTunnelAddr", "vxlanTunnelMACAddr",
                 "ipv6VXLANTunnelAddr", "vxlanTunnelMACAddrV6")


class TunnelAddrError(RuntimeError):
    """One reconcile pass could not finish; str() says why. The allocator retries."""


# ---------------------------------------------------------------------------- pure


def random_mac() -> str:
    """A random unicast, locally administered MAC (as the kernel's eth_random_addr and
    Calico's VXLAN device MACs): bit 0 of the first byte clear, bit 1 set."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def _valid_mac(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    parts = text.split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p)
                                   for p in parts)


def tunnel_pools(pool_docs: Sequence[Mapping[str, Any]], labels: Mapping[str, str],
                 kind: TunnelKind) -> list[Any]:
    """The IPPools (as `calico_net.ipam.Pool`) a `kind` address may come from, by name.
    A pool document that is not a usable pool (`Pool.from_document` says why) is
    logged once and skipped: one bad pool must not cost the node its other tunnel
    addresses."""
    from calico_net.ipam.pools import TUNNEL, Pool, pool_or_skip

    out = []
    for doc in pool_docs:
        spec = doc.get("spec")
        if not isinstance(spec, dict) or spec.get(kind.mode_field) not in ENCAP_ON:
            continue  # (a spec of the wrong shape is reported by pool_or_skip below when it matters)
        pool = pool_or_skip(doc)
        if not isinstance(pool, Pool):
            continue
        if pool.version != kind.version or pool.disabled or not pool.allows(TUNNEL):
            continue
        if doc["metadata"].get("deletionTimestamp"):
            continue  # being deleted counts as disabled, as in Calico
        if pool.selects(labels):  # (the selector was parsed by from_document)
            out.append(pool)
    return sorted(out, key=lambda p: p.name)


def _skip_bad_pool(err: Any) -> None:
    """An IPPool key whose value does not decode: logged once (not on every pass)."""
    from calico_net.ipam.pools import skipped_value

    skipped_value(err.key, err.reason)


def _get_field(spec: Mapping[str, Any], kind: TunnelKind) -> Any:
    holder = (spec.get("bgp") or {}) if kind.in_bgp else spec
    return holder.get(kind.field)


def _set_field(spec: dict[str, Any], kind: TunnelKind, value: str | None) -> None:
    if kind.in_bgp:
        bgp = dict(spec.get("bgp") or {})
        if value:
            bgp[kind.field] = value
        else:
            bgp.pop(kind.field, None)
        if bgp:
            spec["bgp"] = bgp
        else:
            spec.pop("bgp", None)  # an empty bgp section is invalid (as in Calico)
    elif value:
        spec[kind.field] = value
    else:
        spec.pop(kind.field, None)


def _parse_ip(text: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(text, str):
        return None
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def result_of(spec: Mapping[str, Any]) -> dict[str, str | None]:
    """The tunnel fields of a Node spec, as `reconcile` returns them."""
    out: dict[str, str | None] = {}
    for kind in KINDS:
        out[kind.field] = _get_field(spec, kind) or None
        if kind.mac_field:
            out[kind.mac_field] = spec.get(kind.mac_field) or None
    return out


# ------------------------------------------------------------------------ reconcile


def _holds(ipam: Any, ip: Any, kind: TunnelKind, node: str, pools: Sequence[Any]) -> bool:
    """IPAM holds `ip` for this node's `kind` handle, and it is in one of `pools`."""
    if ip is None or not any(p.contains(ip) for p in pools):
        return False
    a = ipam.get_assignment(ip)
    return (a is not None and a.handle_id == kind.handle(node)
            and a.attributes.get("type") == kind.attr_type and a.attributes.get("node") == node)


def _ensure(ipam: Any, spec: dict[str, Any], kind: TunnelKind, node: str, pools: Sequence[Any],
            assigned: dict[str, str]) -> None:
    """Give `spec` a valid `kind` address (and MAC), assigning one when needed.
    `assigned` remembers what this reconcile assigned, so a retry after a lost
    compare-and-swap keeps it instead of assigning another."""
    current = _parse_ip(_get_field(spec, kind))
    if current is None and kind.attr_type in assigned:
        current = _parse_ip(assigned[kind.attr_type])
    if not _holds(ipam, current, kind, node, pools):
        handle = kind.handle(node)
        released = ipam.release_by_handle(handle)
        if released:
            log.info("released %s tunnel address(es) %s of handle %s",
                     kind.attr_type, [str(i) for i in released], handle)
        assigned.pop(kind.attr_type, None)
        names = [p.name for p in pools]
        v4, v6 = ipam.auto_assign(handle, node, 1 if kind.version == 4 else 0, 1 if kind.version == 6 else 0,
                                  pools_v4=names if kind.version == 4 else None,
                                  pools_v6=names if kind.version == 6 else None,
                                  attrs={"node": node, "type": kind.attr_type}, intended_use="Tunnel")
        current = (v4 or v6)[0]
        assigned[kind.attr_type] = str(current)
        log.info("node %s: %s tunnel address %s (pools %s)", node, kind.attr_type, current, ", ".join(names))
    _set_field(spec, kind, str(current))
    if kind.mac_field and not _valid_mac(spec.get(kind.mac_field)):
        spec[kind.mac_field] = random_mac()


def _remove(ipam: Any, spec: dict[str, Any], kind: TunnelKind, node: str) -> None:
    """Release the `kind` handle and clear the fields."""
    handle = kind.handle(node)
    old = _parse_ip(_get_field(spec, kind))
    released = ipam.release_by_handle(handle)
    if old is not None and old not in released:
        # the handle record may be gone while the block still names it (edited by
        # hand): free the address by itself, but only if it is really ours
        a = ipam.get_assignment(old)
        if a is not None and a.handle_id == handle:
            released += ipam.release_ips([old])
    if released:
        log.info("node %s: released %s tunnel address(es) %s", node, kind.attr_type, [str(i) for i in released])
    _set_field(spec, kind, None)
    if kind.mac_field:
        spec.pop(kind.mac_field, None)


def reconcile(datastore: Any, ipam: Any, node_name: str) -> dict[str, str | None]:
    """One pass: assign, keep or release each tunnel address of `node_name` and store
    the result in its Node (one compare-and-swap write, none when nothing changed).
    Returns the tunnel fields as stored. Raises `TunnelAddrError` or the IPAM /
    datastore error when it cannot finish; addresses assigned in this pass are then
    released again, as Calico does."""
    from calico_net.datastore.errors import ResourceConflict, ResourceNotFound

    assigned: dict[str, str] = {}
    ok = False
    try:
        for _ in range(CAS_ATTEMPTS):
            try:
                node = datastore.get("Node", node_name)
            except ResourceNotFound:
                raise TunnelAddrError(f"Node {node_name} does not exist (yet)") from None
            pool_docs, _ = datastore.list("IPPool", on_bad=_skip_bad_pool)
            meta = node.get("metadata") or {}
            old_spec = node.get("spec") or {}
            labels = meta.get("labels") or {} if isinstance(meta, dict) else {}
            if not isinstance(old_spec, dict) or not isinstance(labels, dict):
                raise TunnelAddrError(f"Node {node_name}: spec or labels are not objects")
            labels = {str(k): str(v) for k, v in labels.items()}
            spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in old_spec.items()}
            for kind in KINDS:
                pools = tunnel_pools(pool_docs, labels, kind)
                if pools and kind.in_bgp and not ((spec.get("bgp") or {}).get("ipv4Address")
                                                  or (spec.get("bgp") or {}).get("ipv6Address")):
                    # IP-in-IP goes to the node's BGP address; without one there is no
                    # tunnel to have an address for (and a bgp section needs one).
                    log.warning("node %s has no BGP address: no IP-in-IP tunnel address", node_name)
                    pools = []
                if pools:
                    _ensure(ipam, spec, kind, node_name, pools, assigned)
                else:
                    _remove(ipam, spec, kind, node_name)
            if spec == old_spec:
                ok = True
                return result_of(spec)
            doc = dict(node)
            doc["spec"] = spec
            try:
                stored = datastore.replace(doc)  # CAS on metadata.resourceVersion
            except (ResourceConflict, ResourceNotFound):
                log.debug("Node %s changed while its tunnel addresses were reconciled; again", node_name)
                time.sleep(0.02)
                continue
            ok = True
            return result_of(stored.get("spec") or {})
        raise TunnelAddrError(f"Node {node_name} kept changing; tunnel addresses not stored "
                              f"after {CAS_ATTEMPTS} attempts")
    finally:
        if not ok:
            for kind in KINDS:
                if kind.attr_type in assigned:
                    try:
                        ipam.release_by_handle(kind.handle(node_name))
                    except Exception:  # noqa: BLE001 - the caller reports the original error
                        log.exception("could not release %s after a failed reconcile", assigned[kind.attr_type])


# ------------------------------------------------------------------------ the agent's


class TunnelAddrAllocator:
    """Keeps this node's tunnel addresses right while the agent runs: `poke()` when
    the IPPools or this Node change; a reconcile follows ~0.2 s after the first poke
    (later pokes in that window ride along) in this object's daemon thread. A failure
    is logged and retried after 0.5 s, doubling up to 30 s, until one succeeds."""

    DEBOUNCE = 0.2
    BACKOFF_MIN = 0.5
    BACKOFF_MAX = 30.0

    def __init__(self, client: Any, node_name: str) -> None:
        from calico_net.datastore.store import Datastore
        from calico_net.ipam.client import IPAM

        self.node_name = node_name
        self._datastore = Datastore(client)
        self._ipam = IPAM(client, self._datastore)
        self._cond = threading.Condition()
        self._dirty = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: the fields of the last successful reconcile (None before the first)
        self.last: dict[str, str | None] | None = None
        self.runs = 0
        self.failures = 0

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._dirty = True  # one pass at start: the state may have changed while down
            self._thread = threading.Thread(target=self._loop, name="tunnel-addrs", daemon=True)
            self._thread.start()

    def poke(self) -> None:
        with self._cond:
            self._dirty = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def _wait(self, timeout: float | None) -> bool:
        """Wait for a stop (True) for up to `timeout`, or for a poke when None."""
        with self._cond:
            if timeout is None:
                self._cond.wait_for(lambda: self._dirty or self._stopping)
            else:
                self._cond.wait_for(lambda: self._stopping, timeout=timeout)
            return self._stopping

    def _loop(self) -> None:
        delay = 0.0
        while True:
            if self._wait(None) or self._wait(self.DEBOUNCE):
                return
            with self._cond:
                self._dirty = False
            try:
                self.last = reconcile(self._datastore, self._ipam, self.node_name)
                self.runs += 1
                delay = 0.0
            except Exception as exc:  # noqa: BLE001 - the agent keeps running; retried below
                self.failures += 1
                delay = min(max(delay * 2, self.BACKOFF_MIN), self.BACKOFF_MAX)
                log.error("node %s: tunnel addresses not reconciled (%s); retrying in %.1f s",
                          self.node_name, exc, delay)
                with self._cond:
                    self._dirty = True
                if self._wait(delay):
                    return


__all__ = ["KINDS", "RESULT_FIELDS", "TunnelAddrAllocator", "TunnelAddrError", "TunnelKind",
           "random_mac", "reconcile", "result_of", "tunnel_pools"]
