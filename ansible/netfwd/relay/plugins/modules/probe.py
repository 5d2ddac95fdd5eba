#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netfwd maintainers
# Apache License 2.0 (see the netfwd repository's pyproject.toml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: probe
short_description: Probe an API server through a relay from the host the module runs on (a vantage host)
version_added: 0.1.0
description:
  - Runs netfwd's probe (the same code as C(netfwd probe)) from the managed node - usually a vantage
    host outside the relay, reached with C(delegate_to) - through the relay at O(via) to the target
    behind it, stage by stage (TCP, TLS, HTTP), and returns the verdict and the finding codes.
  - Fails the host when an endpoint is not reachable, unless O(fail_when_unreachable=false).
  - Reads only; nothing changes, so C(changed) is always false.
author:
  - netfwd maintainers (@netfwd)
requirements:
  - netfwd (Python 3.11 or newer) installed for the managed node's Python interpreter
  - root only with O(netns)
attributes:
  check_mode:
    support: full
    description: The probe runs in check mode too (it only sends a few requests).
  diff_mode:
    support: none
    description: Nothing to show a diff of.
options:
  via:
    description:
      - The relay to dial, V(HOST:PORT) (port A). With O(spec), V(HOST) alone dials every TCP
        forward's listen port there (V(HOST:PORT) picks one forward).
    type: str
    required: true
  target:
    description:
      - The API server behind the relay, V(HOST:PORT) (port B), for the diagnosis. Not with O(spec).
    type: str
  spec:
    description:
      - A netfwd spec (dict, or a path on the managed node) whose forwards say the ports and targets.
    type: raw
  forwards:
    description:
      - Only these forwards of O(spec) (by name).
    type: list
    elements: str
    default: []
  server_name:
    description:
      - TLS server name to send and check (like tls-server-name in a kubeconfig).
    type: str
  ca:
    description:
      - CA bundle (PEM) on the managed node to verify the API server's chain with.
    type: path
  timeout:
    description:
      - Seconds to wait for any one answer.
    type: float
    default: 3.0
  until:
    description:
      - The last stage to run.
    type: str
    choices: [tcp, tls, http]
    default: http
  netns:
    description:
      - Probe from inside this network namespace of the managed node (needs root).
    type: str
  fail_when_unreachable:
    description:
      - Fail the host when an endpoint is not reachable.
    type: bool
    default: true
seealso:
  - module: netfwd.relay.forward
"""

EXAMPLES = r"""
- name: Probe the new forward from outside, through this relay
  netfwd.relay.probe:
    via: "{{ ansible_host }}:16443"
    target: 192.168.10.5:6443
    server_name: kubernetes
    ca: /etc/netfwd/cluster-ca.pem
    fail_when_unreachable: false
  delegate_to: vantage
  register: probed

- name: Probe every forward of a spec through this relay
  netfwd.relay.probe:
    via: "{{ ansible_host }}"
    spec: "{{ netfwd_spec }}"
    until: tcp
  delegate_to: vantage
"""

RETURN = r"""
reachable:
  description: True when every endpoint probed is reachable.
  returned: always
  type: bool
  sample: true
verdict:
  description: The overall verdict (reachable, impaired, unreachable).
  returned: always
  type: str
  sample: reachable
codes:
  description: The finding codes of every endpoint (stable; see netfwd's docs/probe.md).
  returned: always
  type: list
  elements: str
  sample: [relay-no-masquerade]
endpoints:
  description: One entry per endpoint, as C(netfwd probe -o json) reports it (stages, findings).
  returned: always
  type: list
  elements: dict
  sample: [{dial: "10.0.0.1:16443", target: "192.168.10.5:6443", verdict: reachable, stages: [], findings: []}]
messages:
  description: netfwd's log lines (e.g. UDP forwards of the spec that were not probed).
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netfwd.relay.plugins.module_utils.relay_api import fail, require_netfwd, spec_path


def _endpoints(module, messages):
    from netfwd.probe.targets import collect

    params, loaded = module.params, None
    if params["spec"] is not None:
        if params["target"]:
            module.fail_json(msg="target: the spec already names the targets; give target or spec, not both")
        from netfwd.spec import open_spec

        with spec_path(module, params["spec"], keep=False) as path:
            loaded = open_spec(path)
    targets = (params["target"],) if params["target"] else ()
    return collect(loaded, params["via"], targets, None, params["forwards"], False, messages.append)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            via=dict(type="str", required=True),
            target=dict(type="str"),
            spec=dict(type="raw"),
            forwards=dict(type="list", elements="str", default=[]),
            server_name=dict(type="str"),
            ca=dict(type="path"),
            timeout=dict(type="float", default=3.0),
            until=dict(type="str", default="http", choices=["tcp", "tls", "http"]),
            netns=dict(type="str"),
            fail_when_unreachable=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    require_netfwd(module, root_needed=bool(params["netns"]))
    from netfwd.errors import NetfwdError

    messages = []
    try:
        if params["netns"]:
            from netfwd import host

            host.enter(params["netns"])  # before any thread starts: the probe's threads inherit it
        from netfwd.probe import Options, probe_all
        from netfwd.probe.report import overall

        endpoints = _endpoints(module, messages)
        options = Options(timeout=params["timeout"], until=params["until"], ca=params["ca"],
                          server_name=params["server_name"])
        results = probe_all(endpoints, options)
    except NetfwdError as problem:
        fail(module, problem, messages=messages)
    reachable = all(r.ok(options.strict) for r in results)
    codes = sorted({f.code for r in results for f in r.findings})
    result = dict(changed=False, reachable=reachable, verdict=overall(results), codes=codes,
                  endpoints=[r.as_dict() for r in results], messages=messages)
    if not reachable and params["fail_when_unreachable"]:
        bad = [r for r in results if not r.ok(options.strict)]
        module.fail_json(msg="%s not reachable through the relay: %s" % (
            ", ".join(r.endpoint.dial for r in bad), ", ".join(codes) or bad[0].verdict), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
