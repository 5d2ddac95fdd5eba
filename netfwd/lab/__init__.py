"""A rehearsal of the hybrid-cluster path (client -> relay -> on-prem API server) in network namespaces.

The same code serves `netfwd lab` and the pytest fixtures, so what the tests exercise is what an
engineer rehearses. Importing this package is cheap: pyroute2 and cryptography load only when a lab
is built.
"""

from netfwd.lab.core import ConnectResult, HttpsResult, Lab, LabCommandError
from netfwd.lab.topology import Addresses

__all__ = ["Addresses", "ConnectResult", "HttpsResult", "Lab", "LabCommandError"]
