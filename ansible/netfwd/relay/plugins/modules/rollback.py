#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netfwd maintainers
# Apache License 2.0 (see the netfwd repository's pyproject.toml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollback
short_description: Roll back a netfwd change at once
version_added: 0.1.0
description:
  - Puts back the netfwd-owned firewall state from before the change, in one transaction, as
    C(netfwd rollback).
  - With O(what=pending) (the default) only a change still waiting for confirmation is rolled back,
    so the module is idempotent - C(changed=false) when nothing is pending.
  - With O(what=last) the last change is undone whether or not it was confirmed (running it twice redoes it).
author:
  - netfwd maintainers (@netfwd)
requirements:
  - netfwd (Python 3.11 or newer) installed for the managed node's Python interpreter
  - root on the managed node
attributes:
  check_mode:
    support: full
    description: Reports whether there is something to roll back; changes nothing.
  diff_mode:
    support: full
    description: The rollback's + / - / ~ lines.
options:
  what:
    description:
      - V(pending) rolls back only a change waiting for confirmation; V(last) undoes the last change.
    type: str
    choices: [pending, last]
    default: pending
  state_dir:
    description:
      - netfwd's state directory; defaults to O(root)/var/lib/netfwd.
    type: path
  root:
    description:
      - Where persisted files go, as C(netfwd rollback --root).
    type: path
    default: /
  backend:
    description:
      - Accepted for symmetry with M(netfwd.relay.forward); the recorded backend is used.
    type: str
    choices: [auto, iptables, iptables-nft, iptables-legacy, libiptc, nft, firewalld]
    default: auto
  lock_timeout:
    description:
      - Seconds to wait for another netfwd on the relay to finish before failing.
    type: float
    default: 60.0
  cluster:
    description:
      - The cluster whose change to roll back. Defaults to the only cluster recorded on the relay;
        with several recorded it must be given (the module fails, naming them).
    type: str
seealso:
  - module: netfwd.relay.forward
  - module: netfwd.relay.confirm
"""

EXAMPLES = r"""
- name: Undo the pending change at once when the probe failed
  netfwd.relay.rollback:
  when: applied.pending_confirm and not probed.reachable
"""

RETURN = r"""
changed:
  description: Whether a change was rolled back (in check mode, would be).
  returned: always
  type: bool
  sample: true
rolled_back:
  description: The id of the change that was undone, or null.
  returned: always
  type: str
  sample: 20261206T031500-4242-123456
change_id:
  description: The id of the rollback (a rollback is a change too), or null.
  returned: always
  type: str
  sample: 20261206T031503-4250-654321
plan:
  description: What the rollback changed, as C(netfwd rollback -o json) prints it.
  returned: when a change was rolled back
  type: dict
  sample: {backend: nft, in_sync: false, lines_added: 0, lines_removed: 5, changes: []}
messages:
  description: netfwd's log lines.
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfwd.relay.plugins.module_utils.relay_api import (
    ENGINE_ARGS, engine, fail, pending_of, prepared_diff, require_netfwd, state_dir_of)


def main():
    module = AnsibleModule(
        argument_spec=dict(what=dict(type="str", default="pending", choices=["pending", "last"]), **ENGINE_ARGS),
        supports_check_mode=True,
    )
    require_netfwd(module)
    from netfwd.engine.core import NothingToDo
    from netfwd.engine.state import State
    from netfwd.errors import NetfwdError

    messages = []
    try:
        pending = pending_of(module.params)
        if module.params["what"] == "pending":
            undoes = pending and pending["id"]
        else:
            record = State.load(state_dir_of(module.params)).rollback
            undoes = record and record["id"]
        if module.check_mode or not undoes:
            module.exit_json(changed=bool(undoes), rolled_back=undoes or None, change_id=None, messages=messages)
        outcome = engine(module, messages).rollback(pending=undoes if module.params["what"] == "pending" else None)
    except NothingToDo:  # its timer rolled it back meanwhile
        module.exit_json(changed=False, rolled_back=None, change_id=None, messages=messages)
    except NetfwdError as problem:
        fail(module, problem, messages=messages)
    result = dict(changed=outcome.changed, rolled_back=undoes, change_id=outcome.change_id,
                  plan=outcome.plan.as_dict(), messages=messages)
    if module._diff and outcome.changed:
        result["diff"] = dict(prepared=prepared_diff(outcome.plan))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
