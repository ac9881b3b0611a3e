"""CNI errors: a code from the CNI spec (or 100+ for ours), a message and details.

Printed as the spec's error JSON on stdout with exit status 1:

    {"cniVersion": "1.0.0", "code": 11, "msg": "cannot reach etcd", "details": "..."}
"""
from __future__ import annotations

import json
from typing import Any

# Codes from the CNI specification (SPEC.md, "Error" section).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11

# Ours (the spec leaves 100 and up to plugins).
INTERNAL = 100            # anything unexpected; details carry the exception
NO_POOL = 101             # no enabled IPPool selects this node (or a requested pool is unusable)
POOL_EXHAUSTED = 102      # the pools have no free address left
DATAPLANE = 103           # netlink refused to make the veth, addresses or routes
CHECK_FAILED = 104        # CHECK found the container's networking not as ADD left it
DATASTORE = 105           # etcd answered but refused (not a connectivity problem)
IPAM_DELEGATE = 106       # a delegated IPAM plugin (e.g. host-local) failed


class CNIError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def dumps(self, cni_version: str) -> str:
        return json.dumps(self.to_json(cni_version))
