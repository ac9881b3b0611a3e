"""IPAM's etcd keys, in libcalico-go's layout (lib/backend/model), and their parsers.

    /calico/ipam/v2/assignment/ipv4/block/198.19.0.0-26       AllocationBlock JSON
    /calico/ipam/v2/host/<node>/ipv4/block/198.19.0.0-26      {"state": "confirmed", "deleted": false}
    /calico/ipam/v2/handle/<handle id>                        {"block": {"198.19.0.0/26": 2}, "deleted": false}

A block's CIDR is written with its "/" replaced by "-", as Calico does.

The IPAM configuration is the IPAMConfiguration resource "default" at its resource
key (`CONFIG_KEY`), not libcalico-go's separate `/calico/ipam/v2/config`: on etcd,
Calico keeps the two apart (calicoctl apply writes the resource, IPAM reads the
other), here one key is both.
"""
from __future__ import annotations

import json
import re

from calico_net.datastore.store import RESOURCE_PREFIX
from calico_net.ipam.block import IPNetwork, cidr_from_key_part, cidr_key_part

IPAM_PREFIX = "/calico/ipam/v2/"
BLOCK_PREFIX = IPAM_PREFIX + "assignment/"
HOST_PREFIX = IPAM_PREFIX + "host/"
HANDLE_PREFIX = IPAM_PREFIX + "handle/"
CONFIG_KEY = RESOURCE_PREFIX + "ipamconfigurations/default"

AFFINITY_CONFIRMED = "confirmed"
AFFINITY_PENDING = "pending"
AFFINITY_PENDING_DELETION = "pendingDeletion"

# Matched with fullmatch: a key ending in a newline is not the key without it.
_BLOCK_RE = re.compile(r"/calico/ipam/v2/assignment/ipv[46]/block/([^/]+)")
_AFFINITY_RE = re.compile(r"/calico/ipam/v2/host/([^/]+)/ipv[46]/block/([^/]+)")
_HANDLE_RE = re.compile(r"/calico/ipam/v2/handle/([^/]+)")


def block_prefix(version: int | None = None) -> str:
    return f"{BLOCK_PREFIX}ipv{version}/block/" if version else BLOCK_PREFIX


def block_key(cidr: IPNetwork) -> str:
    return f"{BLOCK_PREFIX}ipv{cidr.version}/block/{cidr_key_part(cidr)}"


def host_prefix(node: str | None = None, version: int | None = None) -> str:
    if node is None:
        return HOST_PREFIX
    if version is None:
        return f"{HOST_PREFIX}{node}/"
    return f"{HOST_PREFIX}{node}/ipv{version}/block/"


def affinity_key(node: str, cidr: IPNetwork) -> str:
    return f"{HOST_PREFIX}{node}/ipv{cidr.version}/block/{cidr_key_part(cidr)}"


def handle_key(handle_id: str) -> str:
    return HANDLE_PREFIX + handle_id


def parse_block_key(key: str) -> IPNetwork | None:
    m = _BLOCK_RE.fullmatch(key)
    if not m:
        return None
    try:
        return cidr_from_key_part(m.group(1))
    except ValueError:
        return None


def parse_affinity_key(key: str) -> tuple[str, IPNetwork] | None:
    m = _AFFINITY_RE.fullmatch(key)
    if not m:
        return None
    try:
        return m.group(1), cidr_from_key_part(m.group(2))
    except ValueError:
        return None


def live_affinity(key: str, value: bytes | None) -> tuple[str, IPNetwork] | None:
    """(node, block) of an affinity key that holds the block (confirmed, or pending as
    Calico writes it first); None when the affinity is on its way out (pending
    deletion, deleted). Raises ValueError for a key or value that is not an affinity."""
    parsed = parse_affinity_key(key)
    if parsed is None:
        raise ValueError("not an affinity key")
    try:
        doc = json.loads(value or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"value is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("value is not a JSON object")
    state = doc.get("state", AFFINITY_CONFIRMED)
    if state == AFFINITY_PENDING_DELETION or doc.get("deleted") is True:
        return None
    return parsed


def parse_handle_key(key: str) -> str | None:
    m = _HANDLE_RE.fullmatch(key)
    return m.group(1) if m else None


def _control_char(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in text)


def check_handle_id(handle_id: str) -> str:
    """A handle id is one etcd key component: 1-512 characters, no "/", no control
    character (a newline or NUL would make a key that reads back as another)."""
    if (not isinstance(handle_id, str) or not handle_id or "/" in handle_id
            or len(handle_id) > 512 or _control_char(handle_id)):
        raise ValueError(f"handle id {handle_id!r:.80} must be 1-512 characters without \"/\" "
                         "or control characters")
    return handle_id


def check_node_name(node: str) -> str:
    """A node name is one etcd key component and one file name component (the host
    lock): non-empty, no "/", not "." or "..", no control character."""
    if (not isinstance(node, str) or not node or "/" in node or node in (".", "..")
            or _control_char(node)):
        raise ValueError(f"node name {node!r:.80} must be non-empty, without \"/\" or control "
                         "characters, and not \".\" or \"..\"")
    return node
