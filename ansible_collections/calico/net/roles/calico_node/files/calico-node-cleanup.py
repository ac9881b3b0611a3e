"""Remove what the datastore holds for a node that is leaving the cluster.

    calico-node-cleanup.py NODENAME [--check]

Run with the Python of the calico_net venv on a host that reaches etcd (the etcd
connection comes from ETCD_* or /etc/calico/calicoctl.cfg). In this order, so nothing
is left pointing at something already gone: the node's workload endpoints, the IPAM
addresses allocated on it (released by handle, so the handles go too), its block
affinities, the BGPPeers that name it (spec.node), its FelixConfiguration
`node.<name>`, and its Node. Prints one JSON object: {"changed": bool, "actions": [...]}.
With --check it only reports what it would do. Used by playbooks/remove-node.yml.
"""
from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    from calico_net.datastore import Datastore, EtcdClient, EtcdConfig
    from calico_net.datastore.errors import ResourceNotFound
    from calico_net.ipam import IPAM

    if not argv or argv[0].startswith("-"):
        print("usage: calico-node-cleanup.py NODENAME [--check]", file=sys.stderr)
        return 2
    name, check = argv[0], "--check" in argv[1:]
    client = EtcdClient(EtcdConfig.from_sources())
    ds = Datastore(client)
    ipam = IPAM(client, ds)
    actions: list[str] = []
    try:
        weps, dummy = ds.list("WorkloadEndpoint")
        for wep in weps:
            if (wep.get("spec") or {}).get("node") == name:
                meta = wep["metadata"]
                actions.append(f"delete WorkloadEndpoint {meta.get('namespace')}/{meta['name']}")
                if not check:
                    ds.delete("WorkloadEndpoint", meta["name"], meta.get("namespace"))
        handles: set[str] = set()
        loose: list[str] = []
        for block in ipam.blocks():
            for ip, attr in block.allocated():
                if ((attr.get("secondary") or {}).get("node")) != name:
                    continue
                if attr.get("handle_id"):
                    handles.add(attr["handle_id"])
                else:
                    loose.append(str(ip))
        for handle in sorted(handles):
            actions.append(f"release IPAM handle {handle}")
            if not check:
                ipam.release_by_handle(handle)
        if loose:
            actions.append(f"release {len(loose)} addresses without a handle")
            if not check:
                ipam.release_ips(loose)
        affine = sorted({str(a.cidr) for a in ipam.affinities(name)} |
                        {str(b.cidr) for b in ipam.blocks() if b.host == name})
        if affine:
            actions.append(f"release block affinities {', '.join(affine)}")
            if not check:
                ipam.release_host_affinities(name)
        peers, dummy = ds.list("BGPPeer")
        for peer in peers:
            if (peer.get("spec") or {}).get("node") == name:
                actions.append(f"delete BGPPeer {peer['metadata']['name']}")
                if not check:
                    ds.delete("BGPPeer", peer["metadata"]["name"])
        for kind, res in (("FelixConfiguration", f"node.{name}"), ("Node", name)):
            try:
                ds.get(kind, res)
            except ResourceNotFound:
                continue
            actions.append(f"delete {kind} {res}")
            if not check:
                ds.delete(kind, res)
    finally:
        client.close()
    print(json.dumps({"changed": bool(actions), "actions": actions}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
