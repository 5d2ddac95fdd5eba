"""The names of everything netfwd owns on a relay, per cluster: one relay can serve many clusters.

Every object, file and state directory carries its cluster, so applying or removing one cluster's
spec never touches another's. Names must be deterministic (scripts and backends compute them from
the spec alone) and short: an iptables chain name is at most 28 characters and an ipset name at
most 31, so objects with such limits carry a short hash of the cluster name (``tag``) while the
full name stays in every rule comment (``netfwd:<cluster>/<forward>``). Files and the nft table
use the full name: cluster names are restricted to ``[A-Za-z0-9._-]`` (netfwd.model.NAME_RE).

    iptables chains   NETFWD-<tag>-PRE / -OUT / -POST / -FWD   (nat; FWD in filter)
    nft table         inet netfwd-<cluster>
    firewalld ipsets  netfwd-<tag>-<hash of its CIDRs/regions>    (one per source list; rich rules name theirs)
    sysctl.d file     etc/sysctl.d/90-netfwd-<cluster>.conf
    nft boot file     etc/nftables.d/netfwd-<cluster>.nft
    iptables boot     etc/netfwd/iptables-<cluster>.rules         (iptables-restore --noflush payload)
    boot unit         etc/systemd/system/netfwd-<cluster>.service (netfwd.bootunit)
    state directory   <state dir>/clusters/<cluster>/

Versions before per-cluster names owned global objects (``LEGACY_*`` below). The next apply or
remove of the cluster their rule comments name takes them over and removes them in the same
transaction (docs/apply.md, "Upgrading from global names").
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netfwd.model import Spec

CLUSTER_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")  # = netfwd.model.NAME_RE
KINDS = ("PRE", "OUT", "POST", "FWD")
CHAIN_PREFIX = "NETFWD-"
CHAIN_MAX = 28  # iptables: XT_EXTENSION_MAXNAMELEN 29 including the terminating NUL
IPSET_PREFIX = "netfwd-"
NFT_TABLE_PREFIX = "netfwd-"

LEGACY_CHAINS = {kind: f"NETFWD-{kind}" for kind in KINDS}
LEGACY_NFT_TABLE = "inet netfwd"
LEGACY_SYSCTL_FILE = "etc/sysctl.d/90-netfwd.conf"
LEGACY_NFT_FILE = "etc/nftables.d/netfwd.nft"
LEGACY_NFT_INCLUDE = 'include "/etc/nftables.d/netfwd.nft"'
LEGACY_IPSET_RE = re.compile(r"netfwd-[0-9a-f]{12}")


@lru_cache(maxsize=64)
def tag(cluster: str) -> str:
    """8 hex digits of sha256(cluster): fixed for a cluster's life, the same in scripts and backends."""
    return hashlib.sha256(cluster.encode()).hexdigest()[:8]


def chain(cluster: str, kind: str) -> str:
    """NETFWD-<tag>-<KIND>, e.g. NETFWD-1a2b3c4d-PRE (at most 20 characters)."""
    return f"{CHAIN_PREFIX}{tag(cluster)}-{kind}"


def chain_prefix(cluster: str) -> str:
    return f"{CHAIN_PREFIX}{tag(cluster)}-"


def _safe(cluster: str) -> str:
    """The name itself for every valid cluster name; were one ever not validated, still one plain word."""
    return _UNSAFE.sub("_", cluster)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def nft_table(cluster: str) -> str:
    """`inet netfwd-<cluster>`: family and name, as `nft list table` takes them."""
    return f"inet {NFT_TABLE_PREFIX}{_safe(cluster)}"


def ipset_prefix(cluster: str) -> str:
    return f"{IPSET_PREFIX}{tag(cluster)}-"


def sysctl_file(cluster: str) -> str:
    """Relative to the root: the cluster's sysctl.d file (forwarding stays on while any file asks for it)."""
    return f"etc/sysctl.d/90-netfwd-{_safe(cluster)}.conf"


def nft_file(cluster: str) -> str:
    return f"etc/nftables.d/netfwd-{_safe(cluster)}.nft"


def xtables_file(cluster: str) -> str:
    """The cluster's `iptables-restore --noflush` boot payload (its chains and jumps, nobody else's)."""
    return f"etc/netfwd/iptables-{_safe(cluster)}.rules"


def rule_comment(spec: Spec, forward_name: str) -> str:
    """The tag netfwd writes on every rule it owns, so it finds its own and nothing else."""
    return f"netfwd:{spec.cluster}/{forward_name}"


def comment_prefix(cluster: str) -> str:
    """The start of every rule comment of the cluster (:func:`rule_comment`)."""
    return f"netfwd:{cluster}/"


def cluster_of_comment(comment: str) -> str | None:
    """`netfwd:<cluster>/<forward>` -> cluster (None for anything else, e.g. "netfwd: replies")."""
    if not comment.startswith("netfwd:") or "/" not in comment:
        return None
    name = comment[7:].split("/", 1)[0]
    return name or None


_CLUSTER_LINE = re.compile(r"""^cluster:[ \t]*(["']?)([^"'\s#]+)\1[ \t]*(?:#.*)?$""", re.M)


def cluster_of_spec(path: str) -> str:
    """The cluster a spec file names, without the cost of loading it: its one top-level `cluster:`
    line; anything less plain (or a bad name) is read by the spec loader, whose errors then say why."""
    try:
        with open(path, "rb") as source:
            head = source.read(1 << 26).decode("utf-8", errors="replace")
    except OSError:
        head = ""
    found = _CLUSTER_LINE.findall(head)
    if len(found) == 1 and CLUSTER_RE.match(found[0][1]) and "\n..." not in head and "\n---" not in head[3:]:
        return found[0][1]
    from netfwd.spec import open_spec

    return open_spec(path).spec.cluster
