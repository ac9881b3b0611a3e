"""Errors IPAM raises on purpose; each str() is one line an operator (or a CNI
runtime's log) can act on."""
from __future__ import annotations

from calico_net.errors import CalicoNetError

__all__ = [
    "AddressInUseError", "AffinityMismatchError", "BlockLimitError", "BlockNotEmptyError",
    "IPAMConflictError", "IPAMError", "NoPoolsError", "NotInPoolError", "PoolExhaustedError",
]


class IPAMError(CalicoNetError):
    """Base class for IPAM errors."""


class NoPoolsError(IPAMError):
    """No enabled IPPool of the wanted IP version selects this node (or the requested
    pools do not exist / are disabled / do not select the node)."""


class PoolExhaustedError(IPAMError):
    """The pools have no free address left for this node."""


class BlockLimitError(PoolExhaustedError):
    """The node's affine blocks are full and it holds the IPAMConfiguration's
    maxBlocksPerHost blocks already: no block is claimed and none borrowed (as Calico)."""


class AffinityMismatchError(IPAMError):
    """Strict affinity is on and a specific address lies in another node's block."""


class AddressInUseError(IPAMError):
    """A specific address was asked for and someone already holds it."""


class NotInPoolError(IPAMError):
    """An address or CIDR that no configured IPPool contains."""


class BlockNotEmptyError(IPAMError):
    """An affinity release that required an empty block found addresses in use."""


class IPAMConflictError(IPAMError):
    """Gave up after too many compare-and-swap conflicts: try again later."""
