#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""calico.net.etcd_member: list, add and remove etcd cluster members (read the member
list, decide, call /v3/cluster/member/* unless in check mode)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: etcd_member
short_description: List, add and remove members of the etcd cluster behind Calico
version_added: 0.1.0
description:
  - Add a member to the etcd cluster (before the new etcd is started with
    C(--initial-cluster-state existing)), change its peer URLs, or remove it - the steps of
    C(etcdctl member add|update|remove). Without O(name) and O(peer_urls) it only lists the members.
  - A member is found by its peer URLs, or by its name once it has started (an added member has no
    name until its etcd starts).
  - Adding a voting member to a cluster changes its quorum at once - start the new etcd right after,
    or add it as a learner (O(learner)) first.
author:
  - calico.net maintainers (@calico-net)
extends_documentation_fragment:
  - calico.net.etcd
  - calico.net.attributes
options:
  name:
    description: The member's name (etcd's C(--name)).
    type: str
  peer_urls:
    description:
      - The member's peer URLs (etcd's C(--initial-advertise-peer-urls)), e.g. C(https://198.18.0.13:2380).
      - Required to add a member.
    type: list
    elements: str
  learner:
    description: Add the member as a non-voting learner (etcd 3.4 and later).
    type: bool
    default: false
  state:
    description:
      - V(present) adds the member, or updates its peer URLs when a started member of that name has others.
      - V(absent) removes the member found by O(name) or O(peer_urls).
    type: str
    choices: [present, absent]
    default: present
  retries:
    description:
      - >-
        How many times to retry an add, update or remove that etcd refuses with C(etcdserver: unhealthy cluster)
        or C(re-configuration failed due to not enough started members). etcd gives these answers while the
        change would leave too few started, connected members for quorum, and for 5 seconds after a member has
        joined or restarted, so they often pass by themselves (typically while nodes are added one after another).
      - After the last retry the module fails with etcd's answer, and nothing is changed. Other errors are never retried.
      - V(0) disables retrying.
    type: int
    default: 10
  retry_delay:
    description:
      - Seconds to wait before the first retry of O(retries). The wait doubles after each retry, up to
        10 seconds (or up to O(retry_delay) when that is longer). With the defaults the module gives up after
        about 75 seconds.
    type: float
    default: 1.0
notes:
  - The etcd connection options point at the existing cluster, not at the member being added.
seealso:
  - name: etcd runtime reconfiguration
    description: How members are added and removed safely.
    link: https://etcd.io/docs/v3.4/op-guide/runtime-configuration/
"""

EXAMPLES = r"""
- name: List the members
  calico.net.etcd_member:
    etcd_endpoints: https://198.18.0.11:2379
  register: etcd

- name: Add etcd3 before starting it
  calico.net.etcd_member:
    name: etcd3
    peer_urls: [https://198.18.0.13:2380]
    etcd_endpoints: https://198.18.0.11:2379
  register: added

- name: Start etcd3 with the cluster it joins
  ansible.builtin.debug:
    msg: "ETCD_INITIAL_CLUSTER={{ added.initial_cluster }} ETCD_INITIAL_CLUSTER_STATE=existing"

- name: Add etcd4 while another member may still be restarting (etcd refuses until it is back)
  calico.net.etcd_member:
    name: etcd4
    peer_urls: [https://198.18.0.14:2380]
    etcd_endpoints: https://198.18.0.11:2379
    retries: 20
    retry_delay: 2

- name: Remove a member that is being decommissioned
  calico.net.etcd_member:
    name: etcd3
    state: absent
"""

RETURN = r"""
member:
  description: The member that was added, changed or found (as it would be in check mode), or C(null).
  returned: success
  type: dict
  contains:
    id:
      description: The member ID in hex, as etcdctl shows it; null for a member that check mode would add.
      type: str
      returned: always
      sample: 8e9e05c52164694d
    name:
      description: The member's name; empty until it has started.
      type: str
      returned: always
      sample: etcd3
    peer_urls:
      description: Peer URLs.
      type: list
      elements: str
      returned: always
      sample: [https://198.18.0.13:2380]
    client_urls:
      description: Client URLs; empty until it has started.
      type: list
      elements: str
      returned: always
      sample: [https://198.18.0.13:2379]
    is_learner:
      description: Whether it is a non-voting learner.
      type: bool
      returned: always
      sample: false
    started:
      description: Whether its etcd has started and joined.
      type: bool
      returned: always
      sample: true
members:
  description: All members after the change (predicted in check mode), with the fields of RV(member).
  returned: success
  type: list
  elements: dict
retried:
  description:
    - How many times the change was retried after etcd refused it as unsafe for the cluster (see O(retries)).
  returned: success
  type: int
  sample: 0
initial_cluster:
  description:
    - For O(state=present) with O(name), the C(--initial-cluster) value the new member must start with -
      every started member and the new one.
  returned: when O(state=present) and O(name) is given
  type: str
  sample: etcd1=https://198.18.0.11:2380,etcd2=https://198.18.0.12:2380,etcd3=https://198.18.0.13:2380
diff:
  description: The member list before and after, as YAML text, in diff mode.
  returned: when diff mode is on
  type: dict
  contains:
    before: {description: Members before., type: str, returned: always}
    after: {description: Members after., type: str, returned: always}
"""

from ansible_collections.calico.net.plugins.module_utils.common import ModuleError, connect, run_module
from ansible_collections.calico.net.plugins.module_utils.etcd_cluster import (
    Retry, add_member, initial_cluster, list_members, remove_member, update_member,
)
from ansible_collections.calico.net.plugins.module_utils.manager import to_yaml


def find(members, name, peer_urls):
    urls = set(peer_urls or [])
    by_url = [m for m in members if urls & set(m["peer_urls"])]
    by_name = [m for m in members if name and m["name"] == name]
    return by_url, by_name


def handle(module):
    params = module.params
    name, urls, state = params.get("name"), params.get("peer_urls") or [], params["state"]
    retry = Retry(params["retries"], params["retry_delay"])
    client = connect(params)
    before = list_members(client)
    after = [dict(m) for m in before]
    member = None
    action = None
    if name or urls:
        by_url, by_name = find(before, name, urls)
        if state == "present":
            if by_url:
                member = by_url[0]
                if name and member["name"] and member["name"] != name:
                    raise ModuleError(f'peer URL {", ".join(sorted(set(urls) & set(member["peer_urls"])))} '
                                      f'belongs to member "{member["name"]}", not "{name}"')
                if by_name and by_name[0]["id"] != member["id"]:
                    raise ModuleError(f'a member named "{name}" exists with other peer URLs; remove one of them')
                if urls and sorted(urls) != member["peer_urls"]:
                    action = "update"
            elif by_name:
                member = by_name[0]
                if not urls:
                    pass  # found by name, nothing to change
                else:
                    action = "update"
            else:
                if not urls:
                    raise ModuleError("peer_urls is required to add a member")
                action = "add"
                member = dict(id=None, name="", peer_urls=sorted(urls), client_urls=[],
                              is_learner=params["learner"], started=False)
        else:
            found = by_name or by_url
            if found:
                member = found[0]
                action = "remove"
    if action == "update":
        member = dict(member, peer_urls=sorted(urls))
        after = [member if m["id"] == member["id"] else m for m in after]
    elif action == "add":
        after.append(member)
    elif action == "remove":
        after = [m for m in after if m["id"] != member["id"]]
    if action and not module.check_mode:
        if action == "add":
            member = add_member(client, urls, learner=params["learner"], retry=retry)
        elif action == "update":
            update_member(client, member["id"], urls, retry=retry)
        else:
            remove_member(client, member["id"], retry=retry)
        after = list_members(client)
    result = dict(changed=action is not None, member=None if action == "remove" else member, members=after,
                  retried=retry.retried)
    if state == "present" and name:
        result["initial_cluster"] = initial_cluster(after, name, urls or (member or {}).get("peer_urls", []))
    if module._diff:
        # IDs of members check mode would add are unknown: leave IDs out so that check
        # mode and the real run show the same diff.
        def show(ms):
            return to_yaml([{k: v for k, v in m.items() if k not in ("id", "client_urls", "started")} for m in ms])
        result["diff"] = dict(before=show(before), after=show(sorted(after, key=lambda m: (m["name"], m["peer_urls"]))))
    return result


def main():
    argument_spec = dict(
        name=dict(type="str"),
        peer_urls=dict(type="list", elements="str"),
        learner=dict(type="bool", default=False),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        retries=dict(type="int", default=10),
        retry_delay=dict(type="float", default=1.0),
    )
    run_module(argument_spec, handle)


if __name__ == "__main__":
    main()
