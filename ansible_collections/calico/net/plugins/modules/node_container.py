#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.node_container: run the calico/node container with podman or docker.

Built on the container runtime's CLI alone (no SDK on the managed host): read the
container and the image (`inspect`), compute the wanted configuration, compare, then
load/pull, (re)create, start, stop or restart - unless in check mode. The wanted
configuration is stored on the container as a JSON label, which is what makes the
comparison exact (and gives the diff its "before") without parsing the runtime's own
inspect output, whose shape differs between podman and docker.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: node_container
short_description: Run the calico/node container with podman or docker, idempotently
version_added: 0.1.0
description:
  - Runs one long-lived container - the C(calico/node) container of a host - through the
    podman or docker command line, the way C(calico/node) runs outside Kubernetes.
  - The container is recreated only when its image (by image ID) or its configuration
    (command, environment, mounts, network, privileges, labels, restart policy) differs
    from what is declared. The declared configuration is kept in the container label
    C(net.calico.node-container.spec), so a container made outside this module, or by an
    older declaration, is replaced once and then left alone.
  - With O(image_archive) the image is loaded from an archive on the host (air-gapped
    hosts; C(podman save) / C(docker save) format) when the runtime does not hold the
    image ID the archive carries. Otherwise O(pull) decides whether to pull.
author:
  - calico.net maintainers (@calico-net)
attributes:
  check_mode:
    description: Reports what it would load, pull, create, start, stop or remove, and changes nothing.
    support: full
  diff_mode:
    description: Returns the container's declared configuration before and after (with the image ID).
    support: full
  idempotent:
    description: A second run with the same arguments (and the same image) reports no change.
    support: full
options:
  name:
    description: Name of the container.
    type: str
    required: true
  image:
    description:
      - Image reference, for example C(localhost/calico/node:latest).
      - Required unless O(state=absent).
    type: str
  state:
    description:
      - C(started) - the container exists with the declared configuration and runs.
      - C(present) - it exists with the declared configuration (it is created, not started, when missing).
      - C(stopped) - it exists with the declared configuration and does not run.
      - C(absent) - it does not exist.
    type: str
    choices: [started, present, stopped, absent]
    default: started
  runtime:
    description:
      - The container runtime's command. C(auto) uses podman when it is installed, else docker.
    type: str
    choices: [auto, podman, docker]
    default: auto
  image_archive:
    description:
      - Path on the managed host of an image archive (C(podman save) or C(docker save), docker-archive format)
        that holds O(image). It is loaded when the runtime lacks the image ID the archive carries.
    type: path
  pull:
    description:
      - When to pull O(image) if no O(image_archive) is given. C(missing) pulls only when the image is not present.
    type: str
    choices: [never, missing, always]
    default: missing
  command:
    description: Command (arguments after the image). Omitted means the image's own.
    type: list
    elements: str
  env:
    description: Environment variables. Values are turned into strings.
    type: dict
    default: {}
  volumes:
    description: Bind mounts as C(SOURCE:DESTINATION[:OPTIONS]).
    type: list
    elements: str
    default: []
  network:
    description: Network mode, C(host) for calico/node.
    type: str
    default: host
  pid:
    description: PID namespace mode (for example C(host)). Omitted means the container's own.
    type: str
  privileged:
    description:
      - Run privileged (calico/node programs routes, nftables and sysctls of the host).
      - Under docker on a host whose capability bounding set lacks one that docker grants a
        privileged container (for example C(CAP_SYS_RESOURCE) inside another container),
        the container does not start (C(unable to apply caps)); give O(capabilities) and
        O(security_opts) instead.
    type: bool
    default: false
  capabilities:
    description:
      - Capabilities added to the container's default set (C(--cap-add)), with or without the
        C(CAP_) prefix, in any case; for calico/node without O(privileged) typically
        C(NET_ADMIN), C(NET_RAW), C(SYS_ADMIN) and C(SYS_MODULE).
      - Part of the declared configuration, so a change recreates the container.
    type: list
    elements: str
    default: []
  security_opts:
    description:
      - Security options (C(--security-opt)), for example C(systempaths=unconfined) so the
        agent may write the host's C(/proc/sys) without O(privileged), C(apparmor=unconfined),
        C(seccomp=unconfined).
      - Part of the declared configuration, so a change recreates the container.
    type: list
    elements: str
    default: []
  labels:
    description: Labels for the container.
    type: dict
    default: {}
  restart_policy:
    description: The runtime's restart policy (C(always), C(unless-stopped), C(on-failure), C(no)).
    type: str
    default: always
  stop_timeout:
    description: Seconds between the stop signal and SIGKILL when the container is stopped.
    type: int
    default: 10
  restart:
    description:
      - Restart the container even when nothing changed (for handlers, after a file it reads changed).
        Ignored when the container is (re)created by this run anyway.
    type: bool
    default: false
  recreate:
    description: Remove and create the container even when nothing changed.
    type: bool
    default: false
notes:
  - With podman, a restart policy only brings containers back after a reboot when the
    C(podman-restart.service) unit is enabled (the C(calico.net.calico_node) role enables it).
requirements:
  - podman or docker on the managed host
seealso:
  - name: Calico - run calico/node outside Kubernetes
    description: How calico/node runs as a plain container on a host.
    link: https://docs.tigera.io/calico/latest/getting-started/bare-metal/installation/container
"""

EXAMPLES = r"""
- name: Run calico/node from an image archive shipped to the host
  calico.net.node_container:
    name: calico-node
    image: localhost/calico/node:latest
    image_archive: /opt/calico/images/calico-node.tar
    privileged: true
    network: host
    env:
      NODENAME: "{{ inventory_hostname }}"
      ETCD_ENDPOINTS: https://198.18.0.11:2379
      ETCD_CA_CERT_FILE: /etc/calico/pki/etcd-ca.crt
      ETCD_CERT_FILE: /etc/calico/pki/etcd-client.crt
      ETCD_KEY_FILE: /etc/calico/pki/etcd-client.key
    volumes:
      - /var/run/calico:/var/run/calico
      - /var/lib/calico:/var/lib/calico
      - /etc/calico:/etc/calico:ro

- name: Run calico/node under docker with an explicit capability set instead of --privileged
  calico.net.node_container:
    name: calico-node
    image: localhost/calico/node:latest
    runtime: docker
    pull: never
    network: host
    capabilities: [NET_ADMIN, NET_RAW, SYS_ADMIN, SYS_MODULE]
    security_opts: [systempaths=unconfined, apparmor=unconfined, seccomp=unconfined]
    env:
      NODENAME: "{{ inventory_hostname }}"
      ETCD_ENDPOINTS: https://198.18.0.11:2379
    volumes:
      - /var/run/calico:/var/run/calico
      - /var/lib/calico:/var/lib/calico
      - /run/docker/plugins:/run/docker/plugins
      - /var/run/docker.sock:/var/run/docker.sock

- name: Restart it after a certificate it reads changed (handler)
  calico.net.node_container:
    name: calico-node
    image: localhost/calico/node:latest
    restart: true

- name: Remove it
  calico.net.node_container:
    name: calico-node
    state: absent
"""

RETURN = r"""
actions:
  description: What was done (or, in check mode, would be done), in order.
  returned: always
  type: list
  elements: str
  sample: ["load /opt/calico/images/calico-node.tar", "remove calico-node", "create calico-node", "start calico-node"]
image_id:
  description: ID of the image the container runs (or would run).
  returned: when O(state) is not C(absent)
  type: str
  sample: d7a346ab2858c1d5f1f5e2c4a1f0b6e1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7
container:
  description: The container after the run (C(null) when absent, or in check mode when it would be created).
  returned: always
  type: dict
  contains:
    id:
      description: Container ID.
      type: str
    name:
      description: Container name.
      type: str
    running:
      description: Whether it runs.
      type: bool
    image_id:
      description: ID of its image.
      type: str
runtime:
  description: The container runtime command used.
  returned: always
  type: str
  sample: podman
"""

import hashlib
import json
import os
import re
import tarfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

SPEC_LABEL = "net.calico.node-container.spec"
CAPABILITY_RE = re.compile(r"[A-Z][A-Z0-9_]{0,40}\Z")
HASH_LABEL = "net.calico.node-container.hash"


class ContainerError(Exception):
    """A runtime command failed; carries its output for fail_json."""

    def __init__(self, msg: str, **extra: Any) -> None:
        super().__init__(msg)
        self.extra = extra


def _strip_digest(image_id: str | None) -> str | None:
    if not image_id:
        return None
    return image_id.split(":", 1)[1] if image_id.startswith("sha256:") else image_id


def capability_names(values: list[str]) -> list[str]:
    """Upper case without CAP_, sorted and once each: how docker and podman take them,
    and one spelling per set, so `cap_net_admin` and `NET_ADMIN` compare equal."""
    out = set()
    for v in values:
        name = str(v).strip().upper()
        name = name[4:] if name.startswith("CAP_") else name
        if not CAPABILITY_RE.match(name):
            raise ContainerError(f"capability {str(v)[:60]!r} is not a capability name like NET_ADMIN")
        out.add(name)
    return sorted(out)


def archive_image_id(path: str) -> str:
    """The image ID inside a docker-archive (or OCI archive with a docker manifest)."""
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile("manifest.json")
            if member is None:
                raise ContainerError(f"{path}: manifest.json is not a file")
            manifest = json.load(member)
    except (OSError, tarfile.TarError, KeyError, ValueError) as e:
        raise ContainerError(f"{path}: not a readable image archive ({e})") from e
    if not manifest or "Config" not in manifest[0]:
        raise ContainerError(f"{path}: manifest.json names no image config")
    config = os.path.basename(manifest[0]["Config"])
    return config[:-5] if config.endswith(".json") else config


class Runtime:
    """podman or docker through its CLI."""

    def __init__(self, module: AnsibleModule, command: str) -> None:
        self.module = module
        self.command = command
        self.path = module.get_bin_path(command, required=True)

    def run(self, *args: str, check: bool = True) -> tuple[int, str, str]:
        rc, out, err = self.module.run_command([self.path, *args])
        if check and rc != 0:
            raise ContainerError(f"{self.command} {' '.join(args[:2])} failed: {err.strip() or out.strip()}",
                                 rc=rc, stdout=out, stderr=err, cmd=[self.command, *args])
        return rc, out, err

    def image_id(self, image: str) -> str | None:
        rc, out, dummy = self.run("image", "inspect", "--format", "{{.Id}}", image, check=False)
        return _strip_digest(out.strip()) if rc == 0 and out.strip() else None

    def container(self, name: str) -> dict[str, Any] | None:
        rc, out, dummy = self.run("container", "inspect", name, check=False)
        if rc != 0:
            return None
        data = json.loads(out)
        if not data:
            return None
        c = data[0]
        labels = (c.get("Config") or {}).get("Labels") or {}
        spec = None
        if labels.get(SPEC_LABEL):
            try:
                spec = json.loads(labels[SPEC_LABEL])
            except ValueError:
                spec = None
        return dict(
            id=c.get("Id"),
            name=(c.get("Name") or name).lstrip("/"),
            running=bool((c.get("State") or {}).get("Running")),
            image_id=_strip_digest(c.get("Image")),
            hash=labels.get(HASH_LABEL),
            spec=spec,
        )


class NodeContainer:
    """Read what exists, compute the difference, apply it (unless in check mode)."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.p = module.params
        command = self.p["runtime"]
        if command == "auto":
            command = "podman" if module.get_bin_path("podman") else "docker"
        self.rt = Runtime(module, command)
        self.actions: list[str] = []

    def do(self, action: str, *args: str) -> None:
        self.actions.append(action)
        if not self.module.check_mode:
            self.rt.run(*args)

    # --- the declared configuration -------------------------------------------------------
    def wanted_spec(self, image_id: str | None) -> dict[str, Any]:
        p = self.p
        spec = dict(
            image=p["image"],
            image_id=image_id,
            command=p["command"],
            env={k: str(v) for k, v in sorted((p["env"] or {}).items())},
            volumes=list(p["volumes"] or []),
            network=p["network"],
            pid=p["pid"],
            privileged=p["privileged"],
            labels={k: str(v) for k, v in sorted((p["labels"] or {}).items())},
            restart_policy=p["restart_policy"],
            stop_timeout=p["stop_timeout"],
        )
        # Only when given: containers declared before these options existed keep their
        # configuration hash, so an upgrade of the collection does not recreate them.
        caps = capability_names(p["capabilities"] or [])
        if caps:
            spec["capabilities"] = caps
        if p["security_opts"]:
            spec["security_opts"] = [str(o) for o in p["security_opts"]]
        return spec

    @staticmethod
    def spec_hash(spec: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def create_args(self, spec: dict[str, Any], digest: str) -> list[str]:
        args = ["create", "--name", self.p["name"], "--network", spec["network"],
                "--restart", spec["restart_policy"], "--stop-timeout", str(spec["stop_timeout"])]
        if spec["privileged"]:
            args.append("--privileged")
        if spec["pid"]:
            args += ["--pid", spec["pid"]]
        for cap in spec.get("capabilities", []):
            args += ["--cap-add", cap]
        for opt in spec.get("security_opts", []):
            args += ["--security-opt", opt]
        for k, v in spec["env"].items():
            args += ["--env", f"{k}={v}"]
        for v in spec["volumes"]:
            args += ["--volume", v]
        for k, v in spec["labels"].items():
            args += ["--label", f"{k}={v}"]
        stored = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        args += ["--label", f"{SPEC_LABEL}={stored}", "--label", f"{HASH_LABEL}={digest}"]
        args.append(spec["image"])
        args += spec["command"] or []
        return args

    # --- image -------------------------------------------------------------------------------
    def ensure_image(self) -> str | None:
        image = self.p["image"]
        current = self.rt.image_id(image)
        archive = self.p["image_archive"]
        if archive:
            if not os.path.exists(archive):
                raise ContainerError(f"image_archive {archive} does not exist")
            wanted = archive_image_id(archive)
            if current != wanted:
                self.do(f"load {archive}", "load", "-i", archive)
                current = wanted if self.module.check_mode else self.rt.image_id(image)
                if not self.module.check_mode and current != wanted:
                    raise ContainerError(f"{archive} was loaded but {image} is {current}, not {wanted}: "
                                         f"does the archive hold {image}?")
            return current
        pull = self.p["pull"]
        if pull == "always" or (pull == "missing" and current is None):
            self.do(f"pull {image}", "pull", image)
            if not self.module.check_mode:
                current = self.rt.image_id(image)
        if current is None and not self.module.check_mode:
            raise ContainerError(f"image {image} is not present (pull={pull})")
        return current

    # --- the whole run --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        p = self.p
        name = p["name"]
        existing = self.rt.container(name)
        before = existing["spec"] if existing and existing["spec"] else (
            {"image_id": existing["image_id"]} if existing else None)
        if p["state"] == "absent":
            if existing:
                self.remove(existing)
            # Gone after the run (as documented), in check mode too.
            return self.result(None, None, before, None)
        if not p["image"]:
            raise ContainerError("image is required unless state=absent")
        capability_names(p["capabilities"] or [])   # refused before any image is loaded or pulled

        image_id = self.ensure_image()
        spec = self.wanted_spec(image_id)
        digest = self.spec_hash(spec)
        fresh = False
        if existing and (existing["hash"] != digest or existing["image_id"] != image_id or p["recreate"]):
            self.remove(existing)
            existing = None
        if existing is None:
            self.do(f"create {name}", *self.create_args(spec, digest))
            fresh = True
        running = bool(existing and existing["running"])
        if p["state"] == "started":
            if not running:
                self.do(f"start {name}", "start", name)
            elif p["restart"] and not fresh:
                self.do(f"restart {name}", "restart", "-t", str(p["stop_timeout"]), name)
        elif p["state"] == "stopped" and running:
            self.do(f"stop {name}", "stop", "-t", str(p["stop_timeout"]), name)
        after_container = existing if self.module.check_mode else self.rt.container(name)
        return self.result(after_container, image_id, before, spec)

    def remove(self, existing: dict[str, Any]) -> None:
        # stop first: `docker rm` has no stop timeout, and the agent deserves its grace period
        name = existing["name"]
        if existing["running"]:
            self.do(f"stop {name}", "stop", "-t", str(self.p["stop_timeout"]), name)
        self.do(f"remove {name}", "rm", "-f", name)

    def result(self, container: dict[str, Any] | None, image_id: str | None,
               before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
        shown = None
        if container:
            shown = {k: container[k] for k in ("id", "name", "running", "image_id")}
        res: dict[str, Any] = dict(changed=bool(self.actions), actions=self.actions, container=shown,
                                   runtime=self.rt.command)
        if image_id is not None:
            res["image_id"] = image_id
        if self.module._diff:
            res["diff"] = dict(
                before=json.dumps(before, indent=2, sort_keys=True) + "\n" if before else "",
                after=json.dumps(after, indent=2, sort_keys=True) + "\n" if after else "",
            )
        return res


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            image=dict(type="str"),
            state=dict(type="str", default="started", choices=["started", "present", "stopped", "absent"]),
            runtime=dict(type="str", default="auto", choices=["auto", "podman", "docker"]),
            image_archive=dict(type="path"),
            pull=dict(type="str", default="missing", choices=["never", "missing", "always"]),
            command=dict(type="list", elements="str"),
            env=dict(type="dict", default={}),
            volumes=dict(type="list", elements="str", default=[]),
            network=dict(type="str", default="host"),
            pid=dict(type="str"),
            privileged=dict(type="bool", default=False),
            capabilities=dict(type="list", elements="str", default=[]),
            security_opts=dict(type="list", elements="str", default=[]),
            labels=dict(type="dict", default={}),
            restart_policy=dict(type="str", default="always"),
            stop_timeout=dict(type="int", default=10),
            restart=dict(type="bool", default=False),
            recreate=dict(type="bool", default=False),
        ),
        required_if=[("state", "started", ["image"]), ("state", "present", ["image"]),
                     ("state", "stopped", ["image"])],
        supports_check_mode=True,
    )
    try:
        result = NodeContainer(module).run()
    except ContainerError as e:
        module.fail_json(msg=str(e), changed=False, **e.extra)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
