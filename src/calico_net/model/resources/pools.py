"""The IPPool spec: the pool's CIDR, block size, encapsulation and NAT, with Calico's
rules for block sizes, reserved ranges and encapsulation modes.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Iterator, Optional

from pydantic import Field

from calico_net.model.fields.checks import enum_before, show
from calico_net.model.fields.network import CIDR, parse_cidr
from calico_net.model.fields.text import Selector
from calico_net.model.resources.base import CalicoModel, CheckContext, Error, field_path

# --- IP pools ------------------------------------------------------------------------------

EncapMode = enum_before(("Never", "Always", "CrossSubnet"), "mode")

_RESERVED_NETS = [
    (ipaddress.ip_network("169.254.0.0/16"), "link-local"),
    (ipaddress.ip_network("fe80::/10"), "link-local"),
    (ipaddress.ip_network("127.0.0.0/8"), "loopback"),
    (ipaddress.ip_network("::1/128"), "loopback"),
    (ipaddress.ip_network("224.0.0.0/4"), "multicast"),
    (ipaddress.ip_network("ff00::/8"), "multicast"),
]

BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}


def _default_block_size(data: dict[str, Any]) -> int:
    return 122 if ":" in str(data.get("cidr", "")) else 26


class IPPoolSpec(CalicoModel):
    cidr: CIDR
    vxlan_mode: EncapMode = "Never"
    ipip_mode: EncapMode = "Never"
    nat_outgoing: bool = False
    disabled: bool = False
    disable_bgp_export: bool = Field(False, alias="disableBGPExport")
    block_size: int = Field(default_factory=_default_block_size)
    node_selector: Selector = "all()"
    allowed_uses: Optional[list[enum_before(("Workload", "Tunnel", "LoadBalancer"), "use")]] = None
    assignment_mode: Optional[enum_before(("Automatic", "Manual"), "assignment mode")] = None

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return parse_cidr(self.cidr)

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        net = self.network
        lo, hi = BLOCK_SIZE_RANGE[net.version]
        if not lo <= self.block_size <= hi:
            yield (field_path(path, "blockSize"),
                   f"{show(self.block_size)} is not a valid IPv{net.version} block size ({lo}-{hi})")
        elif net.prefixlen > self.block_size:
            yield (field_path(path, "cidr"),
                   f"{show(self.cidr)} is smaller than one block (blockSize {self.block_size}) - "
                   f"use a prefix of /{self.block_size} or shorter, or a larger blockSize")
        for reserved, what in _RESERVED_NETS:
            if reserved.version == net.version and net.overlaps(reserved):
                yield field_path(path, "cidr"), f"{show(self.cidr)} overlaps the {what} range {reserved}"
        if net.version == 6 and self.ipip_mode != "Never":
            yield field_path(path, "ipipMode"), "IPIP is only available for IPv4 pools (use Never or vxlanMode)"
        if self.ipip_mode != "Never" and self.vxlan_mode != "Never":
            yield (field_path(path, "vxlanMode"),
                   "ipipMode and vxlanMode cannot both be enabled on one pool")


