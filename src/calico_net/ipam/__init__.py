"""Calico-style block IPAM on etcd: pools cut into blocks, blocks affine to hosts,
handles that remember which addresses a workload holds. See docs/ipam.md."""
from __future__ import annotations

from calico_net.ipam import errors
from calico_net.ipam.block import AllocationBlock
from calico_net.ipam.client import IPAM, Affinity, Assignment, IPAMConfig
from calico_net.ipam.errors import *  # noqa: F403 - every IPAM error is public, listed in errors.__all__
from calico_net.ipam.pools import Pool

__all__ = ["IPAM", "Affinity", "AllocationBlock", "Assignment", "IPAMConfig", "Pool", *errors.__all__]
