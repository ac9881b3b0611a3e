"""Remove what the datastore holds for a node that is leaving the cluster.

    calico-node-cleanup.py NODENAME [--check]

Run with the Python of the calico_net venv on a host that reaches etcd (the etcd
connection comes from ETCD_* or /etc/calico/calicoctl.cfg). The work is
`calico_net.nodecleanup` (what `calicoctl delete node` does too): the node's workload
endpoints, its IPAM addresses (by handle) and block affinities, the BGPPeers naming
it, its per-node FelixConfiguration/BGPConfiguration and its Node. Prints one JSON
object: {"changed": bool, "actions": [...]}. With --check it only reports what it
would do. Used by playbooks/remove_node.yml.
"""
from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    from calico_net.datastore import EtcdClient, EtcdConfig
    from calico_net.nodecleanup import clean_node, plan_node_cleanup

    if not argv or argv[0].startswith("-"):
        print("usage: calico-node-cleanup.py NODENAME [--check]", file=sys.stderr)
        return 2
    name, check = argv[0], "--check" in argv[1:]
    client = EtcdClient(EtcdConfig.from_sources())
    try:
        actions = plan_node_cleanup(name, client) if check else clean_node(name, client)
    finally:
        client.close()
    print(json.dumps({"changed": bool(actions), "actions": actions}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
