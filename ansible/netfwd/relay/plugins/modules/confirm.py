#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netfwd maintainers
# Apache License 2.0 (see the netfwd repository's pyproject.toml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: confirm
short_description: Keep a netfwd change that waits for confirmation (stop its rollback timer)
version_added: 0.1.0
description:
  - Keeps the change a M(netfwd.relay.forward) with O(netfwd.relay.forward#module:confirm_timeout)
    left pending, as C(netfwd confirm) - the rollback timer is stopped and the ruleset persisted.
  - C(changed) when a change was pending; nothing pending is not an error (C(changed=false)).
author:
  - netfwd maintainers (@netfwd)
requirements:
  - netfwd (Python 3.11 or newer) installed for the managed node's Python interpreter
  - root on the managed node
attributes:
  check_mode:
    support: full
    description: Reports whether a change is pending; keeps nothing.
  diff_mode:
    support: none
    description: Nothing to show a diff of.
options:
  state_dir:
    description:
      - netfwd's state directory; defaults to O(root)/var/lib/netfwd.
    type: path
  root:
    description:
      - Where persisted files go, as C(netfwd confirm --root).
    type: path
    default: /
  backend:
    description:
      - Accepted for symmetry with M(netfwd.relay.forward); the pending change's own backend is used.
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
      - The cluster whose pending change to keep. Defaults to the only cluster recorded on the
        relay; with several recorded it must be given (the module fails, naming them).
    type: str
seealso:
  - module: netfwd.relay.forward
  - module: netfwd.relay.rollback
"""

EXAMPLES = r"""
- name: Keep the change once the probe passed
  netfwd.relay.confirm:
    state_dir: /var/lib/netfwd
  when: applied.pending_confirm and probed.reachable
"""

RETURN = r"""
changed:
  description: Whether a pending change was kept (in check mode, would be).
  returned: always
  type: bool
  sample: true
confirmed:
  description: The id of the change that was kept, or null.
  returned: always
  type: str
  sample: 20261206T031500-4242-123456
message:
  description: netfwd's own words.
  returned: always
  type: str
  sample: confirmed change 20261206T031500-4242-123456
messages:
  description: netfwd's log lines (persistence).
  returned: always
  type: list
  elements: str
  sample: ["saved the ruleset to /etc/iptables/rules.v4"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfwd.relay.plugins.module_utils.relay_api import (
    ENGINE_ARGS, engine, fail, pending_of, require_netfwd)


def main():
    module = AnsibleModule(argument_spec=dict(**ENGINE_ARGS), supports_check_mode=True)
    require_netfwd(module)
    from netfwd.engine.core import NothingToDo
    from netfwd.errors import NetfwdError

    messages = []
    try:
        pending = pending_of(module.params)
        if module.check_mode or pending is None:
            module.exit_json(changed=pending is not None, confirmed=pending and pending["id"],
                             message="nothing waits for confirmation" if pending is None
                             else "would confirm change %s" % pending["id"], messages=messages)
        message = engine(module, messages).confirm()
    except NothingToDo as nothing:  # rolled back meanwhile (its timer fired)
        module.exit_json(changed=False, confirmed=None, message=str(nothing), messages=messages)
    except NetfwdError as problem:
        fail(module, problem, messages=messages)
    module.exit_json(changed=True, confirmed=pending["id"], message=message, messages=messages)


if __name__ == "__main__":
    main()
