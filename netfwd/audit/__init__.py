"""The vendor guide's audit prerequisites for log-based threat detection (docs/facts.md#kubernetes-audit).

* :mod:`netfwd.audit.policy`: the guide's audit policy, with the apiVersion the cluster serves
  (the guide says ``audit.k8s.io/v1beta1``, which Kubernetes removed in 1.24);
* :mod:`netfwd.audit.manifest`: is a kube-apiserver static pod manifest complete (the five
  ``--audit-*`` flags, hostPath volumes and mounts for the policy and the log directory, the
  log agent's ``aliyun_logs_audit-<cluster id>`` env entries)? Each missing piece is a finding;
* :mod:`netfwd.audit.patch`: add what is missing by inserting lines, so every other line, comment
  and the order of the manifest stay exactly as they were; idempotent.
"""
