# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What every calico.net module shares: the etcd connection options, the check that
`calico_net` is importable on the managed host, and the one place where exceptions
become `fail_json`.

A module's `main()` builds its own argument spec and hands a handler to `run_module`;
the handler returns the result dict or raises. Library errors keep their text (the
field path at fault, e.g. `IPPool "p": spec.cidr: ...`); `ModuleError` is for the
modules' own input checks.
"""

from __future__ import annotations

import os
import traceback
from typing import Any, Callable

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

try:
    from calico_net.datastore import Datastore, DatastoreError, EtcdClient, EtcdConfig
    from calico_net.datastore import transport as _transport
    from calico_net.errors import CalicoNetError, ValidationError
except ImportError:
    HAS_CALICO_NET = False
    CALICO_NET_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HAS_CALICO_NET = True
    CALICO_NET_IMPORT_ERROR = None


# Paired one-to-one with the `calico.net.etcd` doc fragment.
ETCD_ARGUMENT_SPEC: dict[str, dict[str, Any]] = dict(
    etcd_endpoints=dict(type="list", elements="str", fallback=(env_fallback, ["ETCD_ENDPOINTS"])),
    etcd_ca_cert_file=dict(type="path", fallback=(env_fallback, ["ETCD_CA_CERT_FILE"])),
    etcd_cert_file=dict(type="path", fallback=(env_fallback, ["ETCD_CERT_FILE"])),
    etcd_key_file=dict(type="path", fallback=(env_fallback, ["ETCD_KEY_FILE"])),
)

# Metadata options shared by the typed resource modules (documented in each module).
METADATA_ARGUMENT_SPEC: dict[str, dict[str, Any]] = dict(
    labels=dict(type="dict"),
    annotations=dict(type="dict"),
)


class ModuleError(Exception):
    """A problem with the module's input that the library does not check itself."""

    def __init__(self, msg: str, **extra: Any) -> None:
        super().__init__(msg)
        self.extra = extra


def etcd_config(params: dict[str, Any]) -> "EtcdConfig":
    """The datastore connection: module options, then ETCD_* environment, then calicoctl.cfg."""
    return EtcdConfig.from_sources(
        env=os.environ,
        endpoints=params.get("etcd_endpoints") or None,
        ca_cert_file=params.get("etcd_ca_cert_file"),
        cert_file=params.get("etcd_cert_file"),
        key_file=params.get("etcd_key_file"),
    )


def connect(params: dict[str, Any]) -> "EtcdClient":
    return EtcdClient(etcd_config(params))


def datastore(params: dict[str, Any]) -> "Datastore":
    return Datastore(connect(params))


def snake_option(path: str, option_paths: dict[str, str] | None) -> str | None:
    """The module option a Calico field path comes from: `spec.blockSize` -> `block_size`,
    `spec.ingress[2].protocol` -> `ingress[2].protocol`."""
    if not option_paths or not path:
        return None
    best = None
    for field, option in option_paths.items():
        if path == field or path.startswith(field + ".") or path.startswith(field + "["):
            if best is None or len(field) > len(best[0]):
                best = (field, option)
    if best is None:
        return None
    return best[1] + path[len(best[0]):]


def run_module(
    argument_spec: dict[str, Any],
    handler: Callable[[AnsibleModule], dict[str, Any]],
    *,
    option_paths: dict[str, str] | None = None,
    **module_kwargs: Any,
) -> None:
    """Build the AnsibleModule (with the connection options), run `handler`, exit.

    `option_paths` maps Calico field paths to module options so that a validation
    error also names the option to fix.
    """
    spec = dict(argument_spec)
    spec.update(ETCD_ARGUMENT_SPEC)
    module_kwargs.setdefault("supports_check_mode", True)
    module = AnsibleModule(argument_spec=spec, **module_kwargs)
    if not HAS_CALICO_NET:
        module.fail_json(msg=missing_required_lib("calico_net"), exception=CALICO_NET_IMPORT_ERROR)
    try:
        # An http:// endpoint, or TLS files an http:// endpoint ignores: the datastore
        # layer's warning (calico_net.datastore.transport) becomes the task's warning.
        with _transport.capture(module.warn):
            result = handler(module)
    except ValidationError as e:
        errors = []
        for path, message in e.errors:
            item = dict(path=path, message=message)
            option = snake_option(path, option_paths)
            if option:
                item["option"] = option
            errors.append(item)
        options = sorted({i["option"] for i in errors if "option" in i})
        hint = f" (module option{'s' if len(options) > 1 else ''}: {', '.join(options)})" if options else ""
        module.fail_json(msg=str(e) + hint, errors=errors, changed=False)
    except ModuleError as e:
        module.fail_json(msg=str(e), changed=False, **e.extra)
    except (CalicoNetError, DatastoreError) as e:
        # One-line reasons from the library: unknown kinds, conflicts, etcd unreachable.
        module.fail_json(msg=str(e), changed=False)
    except Exception as e:  # pylint: disable=broad-except
        module.fail_json(msg=f"unexpected error: {e.__class__.__name__}: {e}",
                         exception=traceback.format_exc(), changed=False)
    module.exit_json(**result)
