"""calico.net: Calico-style container networking in Python.

One distribution holds everything that runs on a host or an operator's machine:
the Calico v3 resource model and its validation (`model`), the etcd datastore layer
(`datastore`), block IPAM (`ipam`), the per-host agent (`agent`), the CNI plugin
(`cni`) and `calicoctl` (`cli`).
"""
from __future__ import annotations

__version__ = "0.1.0"
