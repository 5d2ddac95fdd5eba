#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netfwd maintainers
# Apache License 2.0 (see the netfwd repository's pyproject.toml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: forward
short_description: Apply a netfwd spec (port forwards and whitelists) to a Linux relay in one transaction
version_added: 0.1.0
description:
  - Makes the relay's netfwd-owned firewall state match O(spec), through netfwd's engine on the
    managed node (the same code as C(netfwd apply)) - one backend transaction, forwarding sysctls
    enabled and persisted, only netfwd's own objects touched.
  - With O(confirm_timeout) the change is live but pending; a detached timer on the relay rolls it
    back after that many seconds unless M(netfwd.relay.confirm) keeps it. The timer survives the SSH
    connection dropping.
  - Check mode is C(netfwd plan) (nothing is touched); diff mode shows the plan's + / - / ~ lines.
  - A second run with the same spec reports C(changed=false) (netfwd's no-change fast path).
author:
  - netfwd maintainers (@netfwd)
requirements:
  - netfwd (Python 3.11 or newer) installed for the managed node's Python interpreter
  - root on the managed node (use C(become) when connecting as another user)
attributes:
  check_mode:
    support: full
    description: Reports what C(netfwd plan) would change; nothing is touched.
  diff_mode:
    support: full
    description: The plan's + (add), - (remove) and ~ (replace) lines, forward by forward.
options:
  spec:
    description:
      - The netfwd spec (see netfwd's docs/spec.md) as a dict, or the path of a spec file on the
        managed node.
      - A dict is written as canonical JSON to O(state_dir)/ansible-spec.json, so the same dict is
        the same spec from one run to the next.
      - Required when O(state=present).
    type: raw
  state:
    description:
      - V(present) applies O(spec); V(absent) removes every object netfwd owns for the cluster (as
        C(netfwd remove)) - the spec's cluster, else O(cluster), else the relay's only one.
    type: str
    choices: [present, absent]
    default: present
  backend:
    description:
      - The firewall backend, as C(netfwd apply --backend). V(auto) keeps the backend of the last
        change, or picks the one the relay uses.
    type: str
    choices: [auto, iptables, iptables-nft, iptables-legacy, libiptc, nft, firewalld]
    default: auto
  confirm_timeout:
    description:
      - Seconds after which the change rolls back by itself unless M(netfwd.relay.confirm) runs.
      - Without it the change is kept (and persisted) at once.
    type: float
  catalog:
    description:
      - A region catalog file on the managed node to use instead of the one netfwd bundles.
    type: path
  state_dir:
    description:
      - netfwd's state directory (records, snapshots, the commit-confirm timer's log).
      - Defaults to O(root)/var/lib/netfwd. Give each relay its own when several share a filesystem.
    type: path
  root:
    description:
      - Where persisted files go (sysctl.d, saved rules), as C(netfwd apply --root).
    type: path
    default: /
  lock_timeout:
    description:
      - Seconds to wait for another netfwd on the relay to finish before failing.
    type: float
    default: 60.0
  cluster:
    description:
      - The cluster to act on when O(spec) does not say (O(state=absent) without a spec). On a relay
        that several clusters share, each cluster's objects, records and files are its own, and
        V(absent) removes only this cluster's.
      - Defaults to the spec's C(cluster), else the only cluster recorded on the relay; with several
        recorded and none named the module fails, naming them. A value other than the spec's own
        C(cluster) is refused.
    type: str
notes:
  - A change still waiting for confirmation makes this module fail until it is confirmed or rolled back.
seealso:
  - module: netfwd.relay.confirm
  - module: netfwd.relay.rollback
  - module: netfwd.relay.probe
"""

EXAMPLES = r"""
- name: Forward port 16443 to the on-prem API server, rolled back in 120 s unless confirmed
  netfwd.relay.forward:
    spec:
      version: 1
      cluster: prod-eu
      relay: {os: linux, interface: eth0}
      forwards:
        - name: apiserver
          listen: {port: 16443}
          to: {address: 192.168.10.5, port: 6443}
          allow: {regions: [cn-hangzhou]}
    confirm_timeout: 120
  register: applied

- name: Apply a spec file already on the relay with nftables, kept at once
  netfwd.relay.forward:
    spec: /etc/netfwd/relay.yaml
    backend: nft

- name: Remove everything netfwd owns (the relay holds one cluster)
  netfwd.relay.forward:
    state: absent

- name: On a relay shared by several clusters, remove only cluster prod-eu's forwards
  netfwd.relay.forward:
    state: absent
    cluster: prod-eu
"""

RETURN = r"""
changed:
  description: Whether the owned firewall state or the forwarding sysctls changed (in check mode, would change).
  returned: always
  type: bool
  sample: true
backend:
  description: The backend that was used.
  returned: always
  type: str
  sample: nft
plan:
  description:
    - The plan, as C(netfwd plan -o json) prints it; C(changes) lists each + / - / ~ with its forward.
  returned: always
  type: dict
  sample:
    backend: nft
    in_sync: false
    lines_added: 5
    lines_removed: 0
    changes:
      - {op: "+", kind: forward, key: "*:16443/tcp", old: null, new: "-> 192.168.10.5:6443 from 203.0.113.0/24"}
forwards:
  description: How many forwards the relay holds after the run (in check mode, would hold).
  returned: always
  type: int
  sample: 1
pending_confirm:
  description:
    - The change waiting for M(netfwd.relay.confirm), with its deadline (UNIX time), or null.
  returned: always
  type: dict
  sample: {id: 20261206T031500-4242-123456, deadline: 1796526900.5, seconds_left: 119.8, timer_pid: 4250}
change_id:
  description: The id of the change made, or null when nothing changed.
  returned: always
  type: str
  sample: 20261206T031500-4242-123456
fast_path:
  description: True when netfwd decided "no change" without parsing the spec (same spec, firewall unchanged).
  returned: always
  type: bool
  sample: true
notes:
  description: What netfwd did besides the transaction (persistence, the rollback deadline).
  returned: always
  type: list
  elements: str
  sample: ["rolls back at 03:17:00 unless you run `netfwd confirm` within 120 s"]
messages:
  description: netfwd's log lines (backend choice, recovery of an interrupted change).
  returned: always
  type: list
  elements: str
  sample: ["backend nft: nft is installed and no iptables rules are present"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfwd.relay.plugins.module_utils.relay_api import (
    ENGINE_ARGS, engine, fail, pending_of, prepared_diff, require_netfwd, spec_path, state_dir_of)


def _forward_count(module, outcome, path):
    """Forwards held after the run: the state's record, or (check mode, changes pending) the spec's."""
    from netfwd.engine.state import State

    if module.params["state"] == "absent":
        return 0
    if module.check_mode and not outcome.plan.in_sync:
        from netfwd.spec import open_spec

        return len(open_spec(path).spec.forwards)
    applied = State.load(state_dir_of(module.params)).applied or {}
    return int(applied.get("forwards") or 0)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            spec=dict(type="raw"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            confirm_timeout=dict(type="float"),
            catalog=dict(type="path"),
            **ENGINE_ARGS
        ),
        required_if=[("state", "present", ("spec",))],
        supports_check_mode=True,
    )
    require_netfwd(module)
    from netfwd.errors import NetfwdError

    params, messages = module.params, []
    timeout = params["confirm_timeout"]
    if timeout is not None and not 1 <= timeout <= 86400:
        module.fail_json(msg="confirm_timeout: give 1 to 86400 seconds")
    try:
        relay = engine(module, messages)
        with spec_path(module, params["spec"], keep=not module.check_mode) if params["state"] == "present" \
                else _no_spec() as path:
            if params["state"] == "absent":
                outcome = relay.plan_remove() if module.check_mode else relay.remove(confirm_timeout=timeout)
            elif module.check_mode:
                outcome = relay.plan(path, params["catalog"])
            else:
                outcome = relay.apply(path, catalog=params["catalog"], confirm_timeout=timeout)
            changed = (not outcome.plan.in_sync) if module.check_mode else outcome.changed
            count = _forward_count(module, outcome, path)
        result = dict(changed=changed, backend=outcome.backend, plan=outcome.plan.as_dict(), forwards=count,
                      pending_confirm=pending_of(params), change_id=outcome.change_id,
                      fast_path=outcome.fast, notes=outcome.notes, messages=messages)
        if module._diff and changed:
            result["diff"] = dict(prepared=prepared_diff(outcome.plan))
    except NetfwdError as problem:
        fail(module, problem, messages=messages)
    module.exit_json(**result)


class _no_spec:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
