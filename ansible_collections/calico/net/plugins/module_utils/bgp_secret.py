# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""BGP passwords for the BGP modules (`bgp_peer`'s `password`, `bgp_configuration`'s
`node_mesh_password`): the secret file calico/node's confd reads and the
`secretKeyRef` the resource names it by.

confd looks a `secretKeyRef {name, key}` up as the file `<dir>/<name>/<key>`, where
`<dir>` is `CALICO_BGP_SECRETS_DIR` (`/etc/calico/bgp-secrets`, which the
`calico.net.calico_node` role mounts into calico/node). A module given the password
writes that file on the host it runs on (directory 0700, file 0600, replaced
atomically) before the resource that names it is stored, so confd never sees a
reference whose file is missing. The password is checked by the same rule confd
applies before it writes bird.cfg (`calico_net.agent.confd.birdtext.check_password`:
BIRD 2 strings have no escapes, so `"`, `\\` and control characters cannot be written
and are refused), and it never appears in a result, a diff or an error message.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any

from ansible_collections.calico.net.plugins.module_utils.common import ModuleError

try:
    from calico_net.agent.confd.birdtext import BirdTextError, check_password
except ImportError:  # reported by common.run_module
    pass

DEFAULT_SECRETS_DIR = "/etc/calico/bgp-secrets"
DEFAULT_SECRET_NAME = "bgp-secrets"
# What confd's SecretReader accepts as a file name (one path component, no "..").
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


def password_options(prefix: str) -> dict[str, dict[str, Any]]:
    """The three options of one password: `<prefix>` (the secret itself),
    `<prefix>_secret` (the secretKeyRef) and `<prefix>_secrets_dir`."""
    return {
        prefix: dict(type="str", no_log=True),
        f"{prefix}_secret": dict(type="dict", no_log=False, options=dict(
            name=dict(type="str", default=DEFAULT_SECRET_NAME),
            key=dict(type="str", no_log=False),
        )),
        f"{prefix}_secrets_dir": dict(type="path", default=DEFAULT_SECRETS_DIR),
    }


@dataclass
class PasswordPlan:
    """What a module does with one password field of its resource."""

    field: str  # spec field, "password" or "nodeMeshPassword"
    option: str  # module option, for messages
    mode: str  # "keep" (stored value), "remove", "ref" (set the reference)
    ref: dict[str, str] | None = None
    password: str | None = None  # set: the file <secrets_dir>/<name>/<key> holds it
    secrets_dir: str = DEFAULT_SECRETS_DIR
    changed: bool = False  # set by write()

    def apply(self, stored_spec: dict[str, Any] | None, spec: dict[str, Any]) -> None:
        """Put the password field into `spec` (the document being built)."""
        if self.mode == "keep":
            # Declaring a resource must not strip a password set another way
            # (calico.net.resource, calicoctl): the module then does not own it.
            value = (stored_spec or {}).get(self.field)
            if value is not None:
                spec[self.field] = value
        elif self.mode == "ref":
            spec[self.field] = {"secretKeyRef": dict(self.ref or {})}
        else:
            spec.pop(self.field, None)

    @property
    def path(self) -> str | None:
        if self.password is None or self.ref is None:
            return None
        return os.path.join(self.secrets_dir, self.ref["name"], self.ref["key"])

    def write(self, check_mode: bool) -> bool:
        """Make the secret file hold the password (0600 in a 0700 directory); True when
        it did not (or, in check mode, would change)."""
        path = self.path
        if path is None:
            return False
        directory = os.path.dirname(path)
        wanted = self.password.encode("utf-8")
        try:
            with open(path, "rb") as fh:
                same = fh.read() == wanted
            st = os.stat(path)
            same = same and (st.st_mode & 0o777) == 0o600
        except FileNotFoundError:
            same = False
        except OSError as exc:
            raise ModuleError(f"cannot read the BGP secret file {path}: {exc.strerror}") from None
        if same:
            return False
        self.changed = True
        if check_mode:
            return True
        try:
            # New directories are 0700; an existing secrets directory keeps its mode
            # (the operator's), the per-secret one is made private.
            os.makedirs(directory, mode=0o700, exist_ok=True)
            os.chmod(directory, 0o700)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(wanted)
                os.chmod(tmp, 0o600)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            raise ModuleError(f"cannot write the BGP secret file {path}: {exc.strerror}") from None
        return True


def password_plan(params: dict[str, Any], prefix: str, field: str, default_key: str) -> PasswordPlan:
    """The plan for options `<prefix>`, `<prefix>_secret`, `<prefix>_secrets_dir`:

    - neither given: the stored field is kept;
    - `<prefix>: ""`: the field is removed (the secret file is left alone);
    - `<prefix>_secret` only: the field names that secret, which must exist on every node;
    - `<prefix>` (with or without `<prefix>_secret`): the file is written, the field names it.
    """
    password = params.get(prefix)
    secret = params.get(f"{prefix}_secret")
    secrets_dir = params.get(f"{prefix}_secrets_dir") or DEFAULT_SECRETS_DIR
    if password is None and secret is None:
        return PasswordPlan(field, prefix, "keep")
    if password == "":
        if secret is not None:
            raise ModuleError(f'{prefix}: "" removes the password; do not give {prefix}_secret with it')
        return PasswordPlan(field, prefix, "remove")
    ref = {"name": (secret or {}).get("name") or DEFAULT_SECRET_NAME,
           "key": (secret or {}).get("key") or default_key}
    for part in ("name", "key"):
        if not _SAFE_NAME.fullmatch(ref[part]) or ".." in ref[part]:
            raise ModuleError(f"{prefix}_secret.{part} {ref[part]!r} is not a secret file name "
                              "(letters, digits, '.', '_', '-'; no '..')")
    if password is not None:
        try:
            check_password(password, prefix)
        except BirdTextError as exc:
            # The message names the option and the reason, never the value.
            raise ModuleError(f"{exc}; calico/node's confd would refuse it as well") from None
        if not os.path.isabs(secrets_dir):
            raise ModuleError(f"{prefix}_secrets_dir must be an absolute path")
    return PasswordPlan(field, prefix, "ref", ref, password, secrets_dir)
