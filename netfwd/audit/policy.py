"""The vendor guide's audit policy, emitted with an apiVersion the target cluster serves.

`audit.k8s.io/v1` exists since Kubernetes 1.12; `v1beta1` was served from 1.8 and removed in 1.24,
so the guide's template (v1beta1) stops kube-apiserver from starting on a current cluster. The rules
are the guide's, unchanged (comments included, one typo fixed).
"""

from __future__ import annotations

import re

from netfwd.errors import InputError

DEFAULT_POLICY_FILE = "/etc/kubernetes/audit-policy.yaml"
MIN_THREAT_DETECTION = (1, 16)  # log-based threat detection in the vendor guide
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+].*)?$")

RULES = """kind: Policy
# Don't generate audit events for all requests in RequestReceived stage.
omitStages:
  - "RequestReceived"
rules:
  # The following requests were manually identified as high-volume and low-risk,
  # so drop them.
  - level: None
    users: ["system:kube-proxy"]
    verbs: ["watch"]
    resources:
      - group: "" # core
        resources: ["endpoints", "services"]
  - level: None
    users: ["system:unsecured"]
    namespaces: ["kube-system"]
    verbs: ["get"]
    resources:
      - group: "" # core
        resources: ["configmaps"]
  - level: None
    users: ["kubelet"] # legacy kubelet identity
    verbs: ["get"]
    resources:
      - group: "" # core
        resources: ["nodes"]
  - level: None
    userGroups: ["system:nodes"]
    verbs: ["get"]
    resources:
      - group: "" # core
        resources: ["nodes"]
  - level: None
    users:
      - system:kube-controller-manager
      - system:kube-scheduler
      - system:serviceaccount:kube-system:endpoint-controller
    verbs: ["get", "update"]
    namespaces: ["kube-system"]
    resources:
      - group: "" # core
        resources: ["endpoints"]
  - level: None
    users: ["system:apiserver"]
    verbs: ["get"]
    resources:
      - group: "" # core
        resources: ["namespaces"]
  # Don't log these read-only URLs.
  - level: None
    nonResourceURLs:
      - /healthz*
      - /version
      - /swagger*
  # Don't log events requests.
  - level: None
    resources:
      - group: "" # core
        resources: ["events"]
  # Secrets, ConfigMaps, and TokenReviews can contain sensitive & binary data,
  # so only log at the Metadata level.
  - level: Metadata
    resources:
      - group: "" # core
        resources: ["secrets", "configmaps"]
      - group: authentication.k8s.io
        resources: ["tokenreviews"]
  # Get responses can be large; skip them.
  - level: Request
    verbs: ["get", "list", "watch"]
    resources:
{groups}
  # Default level for known APIs
  - level: RequestResponse
    resources:
{groups}
  # Default level for all other requests.
  - level: Metadata
"""
GROUPS = ("", "admissionregistration.k8s.io", "apps", "authentication.k8s.io", "authorization.k8s.io",
          "autoscaling", "batch", "certificates.k8s.io", "extensions", "networking.k8s.io", "policy",
          "rbac.authorization.k8s.io", "settings.k8s.io", "storage.k8s.io")


def parse_version(text: str, field: str = "--k8s-version") -> tuple[int, int]:
    """'1.24', 'v1.20.4', 'v1.20.4-aliyun.1' -> (1, 24); anything else is bad input."""
    match = _VERSION.match(text.strip())
    if not match or match.group(1) != "1":
        raise InputError(f"{text!r} is not a Kubernetes version (like 1.28 or v1.20.4)", field=field)
    return int(match.group(1)), int(match.group(2))


def api_version(k8s_version: tuple[int, int] | None) -> str:
    """The audit.k8s.io version to write for a cluster (None: a current cluster)."""
    if k8s_version is None or k8s_version >= (1, 12):
        return "audit.k8s.io/v1"
    if k8s_version >= (1, 8):
        return "audit.k8s.io/v1beta1"
    raise InputError(f"Kubernetes {k8s_version[0]}.{k8s_version[1]} has no audit policy file with omitStages "
                     "(audit.k8s.io/v1beta1 needs 1.8 or later; the vendor's log-based detection needs 1.16)",
                     field="--k8s-version")


def served(api: str, k8s_version: tuple[int, int]) -> bool:
    """Does a kube-apiserver of this version read a policy with this apiVersion?"""
    if api == "audit.k8s.io/v1":
        return k8s_version >= (1, 12)
    if api == "audit.k8s.io/v1beta1":
        return (1, 8) <= k8s_version < (1, 24)
    if api == "audit.k8s.io/v1alpha1":
        return (1, 7) <= k8s_version < (1, 24)
    return False


def policy_text(k8s_version: tuple[int, int] | None = None) -> str:
    api = api_version(k8s_version)
    why = "for Kubernetes {}.{}".format(*k8s_version) if k8s_version else "for Kubernetes 1.12 and later"
    groups = "\n".join(f'      - group: "{g}"' + (" # core" if not g else "") for g in GROUPS)
    return (f"apiVersion: {api} # {why} (the guide's v1beta1 was removed in 1.24)\n"
            + RULES.format(groups=groups))


def check_policy(text: str, file: str, k8s_version: tuple[int, int] | None) -> list:
    """Findings (netfwd.audit.manifest.Item) for an audit policy file; `k8s_version` None = assume current."""
    from netfwd.audit.manifest import Item
    from netfwd.yamlsource import load_text

    # netfwd's safe loader: an alias bomb (which safe_load builds, and str() then expands) is refused
    doc = load_text(text, file).data
    if not isinstance(doc, dict) or doc.get("kind") != "Policy":
        return [Item("policy kind", False, f"{file} is not an audit Policy (kind: {doc.get('kind') if isinstance(doc, dict) else None})",
                     "netfwd audit policy > " + DEFAULT_POLICY_FILE)]
    items = []
    api = str(doc.get("apiVersion"))
    target = k8s_version or (1, 24)
    fix = f"netfwd audit policy --k8s-version {target[0]}.{target[1]} > {DEFAULT_POLICY_FILE}"
    if served(api, target):
        items.append(Item("policy apiVersion", True, f"{api} (served by Kubernetes {target[0]}.{target[1]})"))
    else:
        what = "any supported Kubernetes" if k8s_version is None else f"Kubernetes {target[0]}.{target[1]}"
        items.append(Item("policy apiVersion", False, f"apiVersion {api} is not served by {what}: kube-apiserver "
                                                      "refuses the policy and does not start", fix))
    if not isinstance(doc.get("rules"), list) or not doc["rules"]:
        items.append(Item("policy rules", False, "the policy has no rules: nothing is audited", fix))
    else:
        items.append(Item("policy rules", True, f"{len(doc['rules'])} rules"))
    return items
