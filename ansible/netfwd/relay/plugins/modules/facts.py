#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netfwd maintainers
# Apache License 2.0 (see the netfwd repository's pyproject.toml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: facts
short_description: Gather netfwd's status and doctor results of a relay as facts
version_added: 0.1.0
description:
  - Sets C(ansible_facts.netfwd) with C(status) (as C(netfwd status -o json) - what netfwd owns live,
    a pending confirm, drift since the last change, the forwards with their counters) and C(doctor)
    (as C(netfwd doctor -o json) - the relay's pre-flight checks).
  - Reads only.
author:
  - netfwd maintainers (@netfwd)
requirements:
  - netfwd (Python 3.11 or newer) installed for the managed node's Python interpreter
  - root on the managed node
attributes:
  check_mode:
    support: full
    description: Reads only, in check mode too.
  diff_mode:
    support: none
    description: Nothing to show a diff of.
  facts:
    support: full
    description: Sets C(ansible_facts.netfwd).
options:
  gather:
    description:
      - Which results to gather.
    type: list
    elements: str
    choices: [status, doctor]
    default: [status, doctor]
  spec:
    description:
      - A spec (dict, or a path on the managed node) for the doctor to check the relay against.
    type: raw
  state_dir:
    description:
      - netfwd's state directory; defaults to O(root)/var/lib/netfwd.
    type: path
  root:
    description:
      - Where netfwd's persisted files are (sysctl.d), as C(netfwd status --root).
    type: path
    default: /
  backend:
    description:
      - The backend to read (V(auto) = the recorded one).
    type: str
    choices: [auto, iptables, iptables-nft, iptables-legacy, libiptc, nft, firewalld]
    default: auto
  lock_timeout:
    description:
      - Accepted for symmetry with M(netfwd.relay.forward) (reading takes no lock).
    type: float
    default: 60.0
  cluster:
    description:
      - Gather the status of this cluster only (default - every cluster recorded on the relay).
    type: str
seealso:
  - module: netfwd.relay.forward
"""

EXAMPLES = r"""
- name: What does netfwd own on each relay, and is there drift?
  netfwd.relay.facts:
    gather: [status]

- name: Fail relays whose live rules drifted from the last change
  ansible.builtin.assert:
    that: ansible_facts.netfwd.status.drift is none
"""

RETURN = r"""
ansible_facts:
  description: Facts set on the host.
  returned: always
  type: complex
  contains:
    netfwd:
      description: C(status) and C(doctor), as gathered.
      returned: always
      type: dict
      sample:
        status: {backend: nft, drift: null, pending: null, forwards: [{listen_port: 16443, to_address: 192.168.10.5}]}
        doctor: {verdict: pass, exit_code: 0, counts: {ok: 12, warning: 1, error: 0, skipped: 3}, checks: []}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfwd.relay.plugins.module_utils.relay_api import (
    ENGINE_ARGS, fail, require_netfwd, spec_path, status)


def _plain(value):
    """JSON-safe (status holds paths and tuples)."""
    import json

    return json.loads(json.dumps(value, default=str))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            gather=dict(type="list", elements="str", default=["status", "doctor"], choices=["status", "doctor"]),
            spec=dict(type="raw"),
            **ENGINE_ARGS
        ),
        supports_check_mode=True,
    )
    require_netfwd(module)
    from netfwd.errors import NetfwdError

    facts, messages = {}, []
    try:
        if "status" in module.params["gather"]:
            facts["status"] = _plain(status(module, messages))
        if "doctor" in module.params["gather"]:
            from netfwd.doctor import doctor
            from netfwd.doctor.output import to_dict

            spec = None
            if module.params["spec"] is not None:
                from netfwd.spec import open_spec

                with spec_path(module, module.params["spec"], keep=False) as path:
                    spec = open_spec(path).spec
            facts["doctor"] = _plain(to_dict(doctor(spec, root=module.params["root"])))
    except NetfwdError as problem:
        fail(module, problem, messages=messages)
    module.exit_json(changed=False, ansible_facts=dict(netfwd=facts))


if __name__ == "__main__":
    main()
