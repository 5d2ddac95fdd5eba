"""netfwd: complete, verifiable port forwarding from a relay VM into hybrid Kubernetes clusters."""

__version__ = "0.1.0"
