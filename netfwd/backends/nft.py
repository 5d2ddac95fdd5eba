"""`nft` backend: netfwd's private table `inet netfwd`, replaced in ONE `nft -f` transaction.

The ruleset is the nft dialect's (netfwd.dialects.nft.ruleset) - one renderer for scripts and for
live applies. Read: ONE `nft list table inet netfwd`. The canonical form drops comments and prints
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

from netaddr import IPAddress, IPNetwork

from netfwd.backends import Context
from netfwd.backends.base import BaseBackend, Live, run
from netfwd.dialects import nft as dialect
from netfwd.safefiles import remove_file, write_atomic
from netfwd.errors import EnvironmentProblem
from netfwd.model import Essence, Spec

RESET = f"table {dialect.TABLE} {{}}\ndelete table {dialect.TABLE}\n"


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

    def read(self) -> Live:
        done = run(["nft", "list", "table", *dialect.TABLE.split()], check=False)
        if done.returncode != 0:
            if "No such file or directory" in done.stderr or "does not exist" in done.stderr:
                return Live("")
            run(["nft", "list", "table", *dialect.TABLE.split()])  # raise with nft's message
        return Live(canonical(done.stdout))

    def desired(self, spec: Spec, live: Live) -> str:
        text = dialect.ruleset(spec)
        return canonical(text.split(f"delete table {dialect.TABLE}\n", 1)[1])

    def forwards(self, text: str) -> list[Essence]:
        return dialect.parse_ruleset(text)

    def validate(self, target: str, live: Live) -> None:
        run(["nft", "-c", "-f", "-"], input=RESET + target, what="nft -c")

    def write(self, target: str, live: Live) -> int:
        """One `nft -f FILE`: from a file, so once started it completes even if netfwd is killed,
        holding netfwd's lock until it has."""
        fd, path = tempfile.mkstemp(prefix="ruleset.", suffix=".nft", dir=self.context.workdir)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(RESET + target)
            lock = () if self.context.lock_fd is None else (self.context.lock_fd,)
            run(["nft", "-f", path], pass_fds=lock, what="nft -f")
        finally:
            os.unlink(path)
        return 1

    def fingerprint(self) -> str | None:
        from netfwd.backends.nfgen import generation

        gen = generation()
        return None if gen is None else f"nft-gen:{gen}"

    def persisted_files(self) -> list[Path]:
        """What persist may write (the engine checks their directories before changing anything)."""
        root = self.context.root
        return [root / dialect.NFT_FILE, *(root / conf for conf in dialect.NFT_CONFS)]

    def persist(self, target: str) -> list[str]:
        """ROOT/etc/nftables.d/netfwd.nft, included once from the distro's nftables.conf."""
        root = self.context.root
        path = root / dialect.NFT_FILE
        if not target:
            remove_file(path)
        else:
            write_atomic(path, "#!/usr/sbin/nft -f\n# written by netfwd apply\n" + RESET + target)
        confs = [root / conf for conf in dialect.NFT_CONFS if (root / conf).is_file()]
        for conf in confs:
            lines = conf.read_text().splitlines()
            has = dialect.INCLUDE in lines
            if target and not has:
                write_atomic(conf, "\n".join([*lines, dialect.INCLUDE]) + "\n")
            elif not target and has:
                write_atomic(conf, "\n".join(l for l in lines if l != dialect.INCLUDE) + "\n")
        if not target:
            return [f"removed {path}"]
        if not confs:
            return [f"saved {path}; no nftables.conf found under {root}: load it at boot yourself (nft -f)"]
        return [f"saved {path}, included from {', '.join(str(c) for c in confs)}"]


def make(context: Context) -> NftBackend:
    return NftBackend(context)
