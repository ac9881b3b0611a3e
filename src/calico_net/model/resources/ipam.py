"""The IPAM resource specs: `IPReservation` (addresses IPAM must not hand out) and
`IPAMConfiguration` (the cluster's one IPAM configuration, named "default"), with
Calico's rules for both. The IPAM reads them from their resource keys.
"""
from __future__ import annotations

from typing import Iterator, Optional

from pydantic import Field

from calico_net.model.fields.checks import enum_before, show
from calico_net.model.fields.network import Net
from calico_net.model.resources.base import CalicoModel, CheckContext, Error, field_path, not_supported

# The only name Calico's client accepts for an IPAMConfiguration.
IPAM_CONFIG_NAME = "default"
# Calico's CRD bounds for maxBlocksPerHost.
MAX_BLOCKS_PER_HOST = 1_000_000


class IPReservationSpec(CalicoModel):
    reserved_cidrs: list[Net] = Field(default_factory=list, alias="reservedCIDRs")


class IPAMConfigurationSpec(CalicoModel):
    strict_affinity: bool = False
    max_blocks_per_host: int = 0
    auto_allocate_blocks: bool = True
    kube_virt_vm_address_persistence: Optional[enum_before(("Enabled", "Disabled"), "value")] = Field(
        None, alias="kubeVirtVMAddressPersistence")
    ip_cooldown_seconds: int = Field(0, alias="ipCooldownSeconds")

    def semantic_errors(self, path: str, ctx: CheckContext) -> Iterator[Error]:
        if not 0 <= self.max_blocks_per_host <= MAX_BLOCKS_PER_HOST:
            yield (field_path(path, "maxBlocksPerHost"),
                   f"{show(self.max_blocks_per_host)} must be between 0 and {MAX_BLOCKS_PER_HOST}")
        if self.kube_virt_vm_address_persistence is not None:
            yield (field_path(path, "kubeVirtVMAddressPersistence"),
                   not_supported("calico.net runs no KubeVirt workloads"))
        if self.ip_cooldown_seconds < 0 or self.ip_cooldown_seconds > 1200:
            yield (field_path(path, "ipCooldownSeconds"),
                   f"{show(self.ip_cooldown_seconds)} must be between 0 and 1200")
        elif self.ip_cooldown_seconds:
            # IPAM reuses a released address only after every other free one, but keeps
            # no release time to wait on.
            yield (field_path(path, "ipCooldownSeconds"),
                   not_supported("released addresses are reused in FIFO order, without a cool-down"))
