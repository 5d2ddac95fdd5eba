"""`nft` backend: the cluster's private table `inet netfwd-<cluster>`, replaced in ONE `nft -f` transaction.

The ruleset is the nft dialect's (netfwd.dialects.nft.ruleset) - one renderer for scripts and for
live applies. Read: the table names (one netlink dump, netfwd.netfilter.nfgen; `nft list tables`
if that fails), then the tables netfwd owns (the cluster's; the global
`inet netfwd` of earlier versions while no other cluster's rule is in it, so the next transaction
deletes it; other clusters' tables only to find listen-port clashes). The canonical form drops comments and prints
set elements on one line, sorted, hosts without /32 - the only ways the dialect's text and nft's
listing differ - and it is itself loadable by `nft -f`, so a snapshot is written back as is.
`nft -f` is all-or-nothing, so apply needs no separate `nft -c` run (plan does one).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from netaddr import IPAddress, IPNetwork

from netfwd import bootunit, owned
from netfwd.backends import Context
from netfwd.backends.base import BaseBackend, Live, failure, run, run_meanwhile
from netfwd.dialects import nft as dialect
from netfwd.safefiles import remove_file, write_atomic
from netfwd.errors import EnvironmentProblem
from netfwd.model import Essence, Spec

_TABLE_LINE = re.compile(r"^table (\S+ \S+) \{", re.M)


def reset(*texts: str, table: str = "") -> str:
    """Create-if-missing then delete every table named in `texts` (and `table`): the start of a
    transaction that replaces them, valid whether or not they exist."""
    tables = dict.fromkeys([*([table] if table else []), *(m for t in texts for m in _TABLE_LINE.findall(t))])
    return "".join(f"table {t} {{}}\ndelete table {t}\n" for t in tables)


def canonical(text: str) -> str:
    """nft listing or dialect ruleset -> one canonical text (re-indented, comments dropped)."""
    out: list[str] = []
    depth = 0
    lines = iter(text.splitlines())
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("elements = {"):
            while "}" not in line:
                line += " " + next(lines, "}").strip()
            body = line[len("elements = {"):line.rindex("}")]
            items = sorted((_element(e) for e in re.split(r"[\s,]+", body) if e), key=_order)
            out.append("\t" * depth + "elements = { " + ", ".join(items) + " }")
            continue
        if line.startswith("}"):
            depth = max(0, depth - 1)
        out.append("\t" * depth + line)
        if line.endswith("{"):
            depth += 1
    return "\n".join(out) + "\n" if out else ""


def _element(item: str) -> str:
    if "/" in item:  # nft lists a /32 (/128) element as the bare address
        net = IPNetwork(item)
        return str(net.ip) if net.prefixlen == (32 if net.version == 4 else 128) else str(net)
    return item


def _order(item: str) -> tuple[int, int, str]:
    first = item.split("-", 1)[0].split("/", 1)[0]
    try:
        address = IPAddress(first)
    except Exception:
        return (9, 0, item)
    return (address.version, int(address), item)


class NftBackend(BaseBackend):
    name = "nft"

    def __init__(self, context: Context) -> None:
        self.context = context
        if shutil.which("nft") is None:
            raise EnvironmentProblem(f"nft not found: install nftables >= {'.'.join(map(str, dialect.NFT_MIN))}, "
                                     "or choose another --backend")
        problem = dialect.requirements_problem(run(["nft", "-v"], check=False).stdout, os.uname().release)
        if problem:
            raise EnvironmentProblem(problem.replace("use the iptables dialect", "use --backend iptables-legacy"))

    def check(self, spec: Spec) -> None:
        dialect.DIALECT.check(spec)

    @property
    def table(self) -> str:
        return owned.nft_table(self.context.cluster)

    def read(self) -> Live:
        from netfwd.netfilter.nfgen import tables as netlink_tables

        tables = netlink_tables()
        if tables is None:
            tables = [line[6:].strip() for line in run(["nft", "list", "tables"], what="nft list tables").stdout.splitlines()
                      if line.startswith("table ")]
        netfwd = [t for t in tables if t == owned.LEGACY_NFT_TABLE or t.startswith(f"inet {owned.NFT_TABLE_PREFIX}")]
        if not netfwd:
            return Live("", None, {"claims": []})
        listing = run(["nft", "list", "ruleset"], what="nft list ruleset").stdout if len(netfwd) > 1 else \
            run(["nft", "list", "table", *netfwd[0].split()], what="nft list table").stdout
        blocks = _tables(listing)
        mine, claims = [], []
        prefix = owned.comment_prefix(self.context.cluster)
        for name in netfwd:
            text = blocks.get(name, "")
            clusters = {owned.cluster_of_comment(c) for c in _COMMENT.findall(text)} - {None}
            if name == self.table or (name == owned.LEGACY_NFT_TABLE and clusters <= {self.context.cluster}):
                mine.append(text)
            else:
                claims += _claims(text, prefix)
        return Live("".join(canonical(text) for text in mine), None, {"claims": claims})

    def desired(self, spec: Spec, live: Live) -> str:
        text = dialect.ruleset(spec)
        return canonical(text.split(f"delete table {owned.nft_table(spec.cluster)}\n", 1)[1])

    def forwards(self, text: str) -> list[Essence]:
        return dialect.parse_ruleset(text)

    def validate(self, target: str, live: Live) -> None:
        run(["nft", "-c", "-f", "-"], input=reset(live.text, target, table=self.table) + target, what="nft -c")

    def write(self, target: str, live: Live) -> int:
        """One `nft -f FILE`: from a file, so once started it completes even if netfwd is killed,
        holding netfwd's lock until it has."""
        return self.write_meanwhile(target, live, lambda: None)

    def write_meanwhile(self, target: str, live: Live, meanwhile: Callable[[], object],
                        before_commit: Callable[[], object] | None = None) -> int:
        """:meth:`write`, with `meanwhile()` while `nft -f` runs (`before_commit()` first: `nft -f`
        reads and commits in one go)."""
        if before_commit is not None:
            before_commit()
        fd, path = tempfile.mkstemp(prefix="ruleset.", suffix=".nft", dir=self.context.workdir)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(reset(live.text, target, table=self.table) + target)
            lock = () if self.context.lock_fd is None else (self.context.lock_fd,)
            done = run_meanwhile(["nft", "-f", path], meanwhile, pass_fds=lock, what="nft -f")
            if done.returncode != 0:
                raise failure(done, "nft -f")
        finally:
            os.unlink(path)
        return 1

    def fingerprint(self) -> str | None:
        from netfwd.netfilter.nfgen import generation

        gen = generation()
        return None if gen is None else f"nft-gen:{gen}"

    def persisted_files(self) -> list[Path]:
        """What persist may write (the engine checks their directories before changing anything)."""
        root, cluster = self.context.root, self.context.cluster
        return [root / owned.nft_file(cluster), root / bootunit.unit_file(cluster),
                *(root / conf for conf in dialect.NFT_CONFS)]

    def persist(self, target: str) -> list[str]:
        """ROOT/etc/nftables.d/netfwd-<cluster>.nft, loaded at boot by the cluster's own unit
        (netfwd.bootunit) - never from nftables.conf, whose `flush ruleset` would flush others."""
        root, cluster = self.context.root, self.context.cluster
        nft_file = owned.nft_file(cluster)
        if target:
            text = "#!/usr/sbin/nft -f\n# written by netfwd apply\n" + reset(target, table=self.table) + target
            nft = shutil.which("nft") or "/usr/sbin/nft"
            notes = bootunit.install(root, cluster, nft_file, text, [nft, "-f", f"/{nft_file}"], mode=0o644)
        else:
            notes = bootunit.uninstall(root, cluster, nft_file)
        if f"table {owned.LEGACY_NFT_TABLE} {{" not in target:  # earlier versions' boot file, migrated
            self._forget_legacy(root)
        _drop_include(root, dialect.include_line(nft_file))  # earlier versions' include: netfwd's own line
        return notes

    def _forget_legacy(self, root) -> None:
        """The global boot file of earlier versions goes when its table was this cluster's (or nobody's)."""
        legacy = root / owned.LEGACY_NFT_FILE
        try:
            text = legacy.read_text()
        except OSError:
            return
        if {owned.cluster_of_comment(c) for c in _COMMENT.findall(text)} - {None} <= {self.context.cluster}:
            remove_file(legacy)
            _drop_include(root, owned.LEGACY_NFT_INCLUDE)


def _drop_include(root: Path, include: str) -> None:
    """Take netfwd's include line out of the distro's nftables.conf (whichever exist), keeping its mode."""
    for conf in (root / c for c in dialect.NFT_CONFS):
        if conf.is_file() and include in conf.read_text().splitlines():
            lines = conf.read_text().splitlines()
            write_atomic(conf, "\n".join(l for l in lines if l != include) + "\n", mode=conf.stat().st_mode & 0o7777)


_COMMENT = re.compile(r'comment "([^"]*)"')


def _tables(listing: str) -> dict[str, str]:
    """`nft list ruleset` -> {"inet netfwd-x": "table inet netfwd-x {...}\n"} (tables start and end at column 0)."""
    found: dict[str, str] = {}
    name, lines = None, []
    for line in listing.splitlines():
        if name is None:
            match = _TABLE_LINE.match(line)
            if match:
                name, lines = match[1], [line]
            continue
        lines.append(line)
        if line == "}":
            found[name] = "\n".join(lines) + "\n"
            name = None
    return found


def _claims(text: str, mine: str) -> list:
    """Listen sockets another cluster's DNAT rules take (netfwd.netfilter.xstate.Claim)."""
    from netfwd.netfilter.xstate import Claim

    found = []
    for line in text.splitlines():
        tag = _COMMENT.search(line)
        if tag is None or " dnat " not in line or "dport" not in line or tag[1].startswith(mine):
            continue
        cluster = owned.cluster_of_comment(tag[1])
        words = line.split()
        if cluster is None or "dport" not in words:
            continue
        at = words.index("dport")
        listen = next((words[i + 1] for i in range(len(words) - 1)
                       if words[i] == "daddr" and words[i - 1] in ("ip", "ip6")), None)
        if words[at + 1].isdigit():
            found.append(Claim(cluster, tag[1].split("/", 1)[1], listen, int(words[at + 1]), words[at - 1]))
    return found


def make(context: Context) -> NftBackend:
    return NftBackend(context)
