"""What a doctor run knows: the spec (what should be there), and where to look (relay, report, cluster)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from netaddr import IPSet

from netfwd.doctor.framework import Skip
from netfwd.model import Forward, Spec


@dataclass
class ClusterOptions:
    """How to reach the API server for the cluster checks, and the audit files to check."""

    via: str | None = None  # HOST:PORT to dial (default: each forward's listen address/port)
    ca: str | None = None
    timeout: float = 3.0
    manifest: str | None = None  # kube-apiserver.yaml to audit
    cluster_id: str | None = None
    audit_policy: str | None = None  # audit-policy.yaml to check against the cluster version
    k8s_version: tuple[int, int] | None = None  # when known without probing (--k8s-version)


@dataclass
class DoctorContext:
    spec: Spec | None = None
    relay: Any = None  # netfwd.relayfacts.LinuxRelay
    windows: Any = None  # netfwd.doctor.winreport.WindowsReport
    cluster: ClusterOptions | None = None
    cache: dict = field(default_factory=dict)  # facts checks share (e.g. the probe's results)

    def need_spec(self) -> Spec:
        if self.spec is None:
            raise Skip("needs SPEC (what the relay should forward)")
        return self.spec

    def need_relay(self):
        if self.relay is None:
            raise Skip("needs a Linux relay to look at")
        return self.relay

    @cached_property
    def firewall(self):
        from netfwd.doctor.firewall import read_firewall

        return read_firewall(self.need_relay())

    @cached_property
    def relay_addresses(self) -> IPSet:
        from netfwd.doctor.firewall import addresses_set

        return addresses_set(self.need_relay().local_addresses)

    def ingress(self, forward: Forward | None = None) -> str | None:
        """The interface a client's connection arrives on: the spec's, the listen address's, or the
        default route's (clients come from elsewhere, so replies leave by the default route)."""
        relay = self.need_relay()
        if self.spec is not None and self.spec.relay.interface:
            return self.spec.relay.interface
        if forward is not None and forward.listen.address is not None:
            named = relay.interface_of(forward.listen.address)
            if named:
                return named
        return relay.default_interface

    def egress(self, forward: Forward) -> str | None:
        route = self.need_relay().route(forward.to.address)
        return route.interface if not route.problem else None
