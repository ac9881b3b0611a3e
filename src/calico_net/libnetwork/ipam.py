"""`calico-ipam`: Docker's IPAM driver on Calico's IPPools and calico_net.ipam.

As Calico's libnetwork-plugin:

* RequestPool: without `--subnet` the fixed pool ids `CalicoPoolIPv4` /
  `CalicoPoolIPv6` (addresses then come from any pool this node may use); with
  `--subnet` the CIDR must be exactly that of an IPPool, whose name becomes the pool
  id. Sub-pools (`--ip-range`) and IPAM options are refused: pools are configured in
  Calico, not in Docker. The answer carries the dummy gateway `0.0.0.0/0` so Docker
  never asks for a gateway address (the network driver's gateway is 169.254.1.1) and
  so the network driver can tell that calico-ipam made the network.
* RequestAddress: one address, from the pool id's IPPool, or the one Docker asks
  for (`--ip`; it must be in some IPPool), returned as a /32 (/128).
* ReleaseAddress: frees the address; nothing to free is not an error.

Calico's plugin assigned without a handle; this IPAM needs one, so each address gets
its own handle `libnetwork.<random>` (released with the address) and the
attributes `node` and `timestamp`. Nothing is kept in memory.
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import logging
import secrets
from typing import Any

from calico_net.libnetwork.server import PluginError

log = logging.getLogger(__name__)

POOL_ID_V4 = "CalicoPoolIPv4"
POOL_ID_V6 = "CalicoPoolIPv6"
LOCAL_ADDRESS_SPACE = "CalicoLocalAddressSpace"
GLOBAL_ADDRESS_SPACE = "CalicoGlobalAddressSpace"
GATEWAY_KEY = "com.docker.network.gateway"
REQUEST_ADDRESS_TYPE = "RequestAddressType"
HANDLE_PREFIX = "libnetwork."


def _text(req: dict[str, Any], key: str) -> str:
    value = req.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PluginError(f"{key} must be a string")
    return value


class IpamDriver:
    def __init__(self, ctx) -> None:
        self.ctx = ctx   # main.Context: node name, IPAM and datastore

    def routes(self) -> dict[str, Any]:
        return {
            "IpamDriver.GetCapabilities": lambda req: {"RequiresMACAddress": False},
            "IpamDriver.GetDefaultAddressSpaces": lambda req: {
                "LocalDefaultAddressSpace": LOCAL_ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": GLOBAL_ADDRESS_SPACE},
            "IpamDriver.RequestPool": self.request_pool,
            "IpamDriver.ReleasePool": lambda req: {},
            "IpamDriver.RequestAddress": self.request_address,
            "IpamDriver.ReleaseAddress": self.release_address,
        }

    def request_pool(self, req: dict[str, Any]) -> dict[str, Any]:
        if _text(req, "SubPool"):
            raise PluginError("Calico IPAM does not support sub pool configuration on 'docker network create'. "
                              "Calico IP Pools should be configured first and IP assignment is from those "
                              "pre-configured pools.")
        if req.get("Options"):
            raise PluginError("Arbitrary options are not supported")
        v6 = bool(req.get("V6"))
        pool_id, cidr, gateway = (POOL_ID_V6, "::/0", "::/0") if v6 else (POOL_ID_V4, "0.0.0.0/0", "0.0.0.0/0")
        wanted = _text(req, "Pool")
        if wanted:
            try:
                net = ipaddress.ip_network(wanted, strict=False)
            except ValueError:
                raise PluginError(f"Invalid CIDR {wanted[:80]!r}") from None
            match = next((p for p in self.ctx.ipam().pools() if p.cidr == net), None)
            if match is None:
                raise PluginError(f"The requested subnet {net} must match the CIDR of a configured Calico IP Pool.")
            pool_id, cidr = match.name, str(match.cidr)
        log.info("RequestPool %s -> pool %s (%s)", wanted or "(default)", pool_id, cidr)
        return {"PoolID": pool_id, "Pool": cidr, "Data": {GATEWAY_KEY: gateway}}

    def _attrs(self) -> dict[str, str]:
        return {"node": self.ctx.node,
                "timestamp": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}

    def request_address(self, req: dict[str, Any]) -> dict[str, Any]:
        opts = req.get("Options") or {}
        if isinstance(opts, dict) and opts.get(REQUEST_ADDRESS_TYPE) == GATEWAY_KEY:
            raise PluginError("Calico IPAM does not support specifying a gateway.")
        pool_id = _text(req, "PoolID")
        wanted = _text(req, "Address")
        ipam = self.ctx.ipam()
        handle = HANDLE_PREFIX + secrets.token_hex(16)
        if wanted:
            try:
                addr = ipaddress.ip_address(wanted.split("/")[0])
            except ValueError:
                raise PluginError(f"Invalid address {wanted[:80]!r}") from None
            ips = [ipam.assign_ip(addr, handle, self.ctx.node, self._attrs())]
        else:
            num4, num6, pools4, pools6 = 1, 0, None, None
            if pool_id == POOL_ID_V6:
                num4, num6 = 0, 1
            elif pool_id != POOL_ID_V4:
                pool = next((p for p in ipam.pools() if p.name == pool_id), None)
                if pool is None:
                    raise PluginError(f"Invalid Pool - {pool_id[:80]!r}: no such IPPool")
                if pool.version == 6:
                    num4, num6, pools6 = 0, 1, [pool.name]
                else:
                    pools4 = [pool.name]
            v4, v6 = ipam.auto_assign(handle, self.ctx.node, num_v4=num4, num_v6=num6,
                                      pools_v4=pools4, pools_v6=pools6, attrs=self._attrs())
            ips = v4 + v6
        if len(ips) != 1:
            ipam.release_ips(ips)
            raise PluginError(f"Unexpected number of assigned IP addresses: {[str(a) for a in ips]}")
        ip = ips[0]
        log.info("RequestAddress (pool %s) -> %s, handle %s", pool_id, ip, handle)
        return {"Address": f"{ip}/{32 if ip.version == 4 else 128}", "Data": {}}

    def release_address(self, req: dict[str, Any]) -> dict[str, Any]:
        text = _text(req, "Address")
        try:
            addr = ipaddress.ip_address(text.split("/")[0])
        except ValueError:
            log.warning("ReleaseAddress of %r: not an address; nothing released", text[:80])
            return {}
        if addr.is_unspecified:
            return {}   # Docker releasing the dummy gateway 0.0.0.0 of RequestPool's answer
        not_allocated = self.ctx.ipam().release_ips([addr])
        log.info("ReleaseAddress %s: %s", addr, "was not assigned" if not_allocated else "released")
        return {}
