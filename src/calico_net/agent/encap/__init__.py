"""IP-in-IP and VXLAN overlays, as Felix and calico/node build them.

The agent programs every route to another node's block in an encapsulated pool
itself, from the datastore (pools, Nodes, block affinities), as Felix does with
`programClusterRoutes` and its VXLAN manager; BIRD does not write those routes into
the kernel (confd's kernel filter rejects them). See docs/encapsulation.md.

Pieces, each with one job:

* `types`   — the desired overlay state (`Desired`) every other piece passes around.
* `state`   — pure: pools + Nodes + affinities + FelixConfiguration -> `Desired`.
* `kernel`  — writes a `Desired` into the kernel (devices, routes, ARP, FDB) and
              removes what it made that is no longer desired; nothing else.
* `addrs`   — a node's tunnel addresses through IPAM, stored in its Node resource.
* `watch`   — the block affinities of every node, from etcd.
* `mtu`     — the workload MTU from the underlay MTU and the encapsulation.
"""
