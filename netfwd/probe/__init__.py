"""`netfwd probe`: reachability of an API server through the relay hop, stage by stage, with a diagnosis.

    from netfwd.probe import Endpoint, Options, probe_all
    results = probe_all([Endpoint("10.200.1.1", 16443, target=("10.200.2.2", 6443))], Options(timeout=1))
    results[0].verdict, [f.code for f in results[0].findings]

Importing this package is cheap: scapy (only for --trace), pyroute2 (the route, with --trace) and
cryptography (certificate details) load inside the stages that need them.
"""

from netfwd.probe.model import Endpoint, Finding, Options, ProbeResult, Stage
from netfwd.probe.runner import probe_all, probe_endpoint

__all__ = ["Endpoint", "Finding", "Options", "ProbeResult", "Stage", "probe_all", "probe_endpoint"]
