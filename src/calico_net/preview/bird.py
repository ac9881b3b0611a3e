"""bird.cfg of one node as confd would render it, from a `Snapshot`.

confd's own path: its `BGPIndex` loads the node's resources and affinity keys
(parsed and validated as confd parses them) and `render_bird_config` prints them
with confd's `RenderOptions`. BGP passwords are not read from this machine:
a `secretKeyRef` renders as a placeholder naming the secret (the same before
and after, so a password change alone shows no difference, and no key is ever
printed); on a node, `calicoctl node verify` reads the real ones.
"""
from __future__ import annotations

from typing import Any, Mapping

from .snapshot import Snapshot

__all__ = ["render_node_bird", "placeholder_password"]


def placeholder_password(ref: Mapping[str, Any]) -> str:
    """What a secretKeyRef renders as in a preview."""
    name = "".join(c for c in f"{ref.get('name', '')}/{ref.get('key', '')}" if c.isalnum() or c in "._/-")
    return f"secret:{name}"[:80]


def render_node_bird(snap: Snapshot, node: str, options: Any = None, passwords: Any = None) -> str:
    """confd's bird.cfg for `node` (a RenderError's message, as confd would report
    it, when the node's own resources make no configuration)."""
    from calico_net.agent.confd.index import BGPIndex
    from calico_net.agent.confd.render import RenderError, render_bird_config

    index = BGPIndex(node)
    index.load(snap.confd_kvs(node), snap.revision or 1)
    inp = index.render_input()
    try:
        return render_bird_config(node, inp.nodes, inp.bgp_configs, inp.peers, inp.pools, inp.blocks,
                                  passwords=passwords or placeholder_password, options=options,
                                  filters=inp.filters)
    except RenderError as exc:
        return f"# confd refuses to render bird.cfg: {exc}\n"
