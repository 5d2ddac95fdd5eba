"""`libiptc` backend: the same owned chains through python-iptables, for legacy-iptables hosts.

python-iptables drives libiptc, which reads and writes the *legacy* tables only: on a host whose
firewall lives in nf_tables (iptables-nft, nftables, firewalld), its rules would be invisible to
`iptables` and evaluated alongside - so this backend refuses such a host and says why (docs/facts.md#iptables-backends).

It shares netfwd.netfilter.xstate with the `iptables` backend: the same canonical text (rules read
back through python-iptables are printed the way iptables-save prints them) and the same
transaction, executed line by line on libiptc handles and committed table by table. The commits run
in a forked child that holds netfwd's lock: if netfwd is killed meanwhile, the child still commits
every table, so the owned state is never half old, half new.
"""

from __future__ import annotations

import os
import sys
import shutil
from pathlib import Path
from typing import Any

from netfwd import xtables
from netfwd.backends import Context
from netfwd.netfilter import xstate
from netfwd.backends.base import BaseBackend, Live, TransactionError, run
from netfwd.owned import comment_prefix
from netfwd.dialects.iptables_restore import DIALECT
from netfwd.errors import EnvironmentProblem
from netfwd.model import Essence, Spec

TABLES_LOADED = Path("/proc/net/ip_tables_names")
FLAGS = (("src", "-s"), ("dst", "-d"), ("in-interface", "-i"), ("out-interface", "-o"), ("protocol", "-p"))
ATTRIBUTES = {"-s": "src", "-d": "dst", "-i": "in_interface", "-o": "out_interface", "-p": "protocol"}


XTABLES_DIRS = ("/usr/lib/x86_64-linux-gnu/xtables", "/usr/lib/aarch64-linux-gnu/xtables", "/usr/lib64/xtables",
                "/usr/lib/xtables", "/usr/libexec/xtables")


def _iptc():
    # Importing python-iptables costs ~2 s here, nearly all avoidable: it imports distutils (which
    # setuptools' shim turns into an import of setuptools) and runs `ldconfig -v` to find the
    # extension directory. Point both at what they look for; explicit settings win.
    if "distutils" not in sys.modules:
        try:
            import _distutils_hack  # setuptools' redirect of `import distutils`: ~1 s per process

            _distutils_hack.remove_shim()
        except ImportError:
            pass
    if "XTABLES_LIBDIR" not in os.environ:
        for directory in XTABLES_DIRS:
            if os.path.isdir(directory):
                os.environ["XTABLES_LIBDIR"] = directory
                break
    try:
        import iptc
        import iptc.easy
    except Exception as problem:  # noqa: BLE001 - it raises XTablesError, OSError, ImportError...
        raise EnvironmentProblem(f"python-iptables cannot load ({problem}): it needs the iptables shared "
                                 "libraries (libxtables, libip4tc); or use --backend iptables-legacy") from None
    return iptc


def nf_tables_in_use() -> list[str]:
    """What of the host's firewall lives in nf_tables (empty: nothing, or no way to tell)."""
    if shutil.which("nft"):
        done = run(["nft", "list", "tables"], check=False)
        return [line[len("table "):] for line in done.stdout.splitlines() if line.startswith("table ")]
    if shutil.which("iptables-nft-save"):
        done = run(["iptables-nft-save"], check=False)
        if any(line.startswith("-A ") for line in done.stdout.splitlines()):
            return ["iptables-nft rules"]
    return []


def render(chain: str, rule: dict[str, Any]) -> str:
    """A decoded python-iptables rule as `iptables-save` prints it."""
    words = ["-A", chain]
    for key, flag in FLAGS:
        value = rule.get(key)
        if value:
            words += ["!", flag, value[1:]] if value.startswith("!") else [flag, value]
    for key, params in rule.items():
        if key in ("target", "counters", "fragment") or key in dict(FLAGS):
            continue
        words += ["-m", key]
        for name, value in (params or {}).items():
            words += [f"--{name}", f'"{value}"' if name == "comment" else str(value)]
    target = rule.get("target")
    if isinstance(target, str) and target:
        words += ["-j", target]
    elif isinstance(target, dict):
        for name, params in target.items():
            words += ["-j", name]
            for param, value in (params or {}).items():
                words += [f"--{param}", str(value)]
    return " ".join(words)


def build(iptc, args: list[str]):
    """`iptables` arguments (as in a save line) -> an iptc.Rule."""
    rule = iptc.Rule()
    current = None
    negate = False
    index = 0
    while index < len(args):
        word = args[index]
        if word == "!":
            negate, index = True, index + 1
            continue
        value = args[index + 1] if index + 1 < len(args) else ""
        if word in ATTRIBUTES:
            setattr(rule, ATTRIBUTES[word], ("!" if negate else "") + value)
        elif word == "-m":
            current = rule.create_match(value)
        elif word == "-j":
            current = rule.create_target(value)
        elif word.startswith("--") and current is not None:
            current.set_parameter(word[2:], ("!" if negate else "") + value)
        else:
            raise TransactionError(f"python-iptables backend cannot express {word!r} in {' '.join(args)}")
        negate, index = False, index + 2
    return rule


class LibiptcBackend(BaseBackend):
    name = "libiptc"

    def __init__(self, context: Context) -> None:
        self.context = context
        found = nf_tables_in_use()
        if found:
            raise EnvironmentProblem(
                f"this host's firewall lives in nf_tables ({', '.join(found[:4])}); python-iptables (libiptc) "
                "reads and writes only the legacy tables, so its rules would be invisible to `iptables` "
                "and evaluated alongside: use --backend iptables (or nft / firewalld)")
        self.iptc = _iptc()
        self._keep_tables_unloaded()

    def _keep_tables_unloaded(self) -> None:
        """python-iptables probes every table (loading mangle, raw, security) to decide whether a
        `-j NAME` is a chain; tell it the tables not loaded yet are absent, so netfwd loads nothing
        but the nat and filter tables it writes."""
        try:
            loaded = set(TABLES_LOADED.read_text().split())
        except OSError:
            return
        known = getattr(self.iptc.Table, "existing_table_names", None)
        if isinstance(known, dict):
            for name in self.iptc.Table.ALL:
                if name not in loaded and name not in xstate.TABLES:
                    known.setdefault(name, False)

    def check(self, spec: Spec) -> None:
        DIALECT.check(spec)

    def read(self) -> Live:
        iptc, decode = self.iptc, self.iptc.easy.decode_iptc_rule
        try:
            loaded = TABLES_LOADED.read_text().split()
        except OSError:
            loaded = []
        owned: xstate.Owned = {}
        counters: dict[str, tuple[int, int]] = {}
        for name in xstate.TABLES:
            if name not in loaded:
                continue
            table = iptc.Table(name)
            table.autocommit = False
            table.refresh()
            part = owned.setdefault(name, xstate.Table())
            for chain in table.chains:
                owned_chain = chain.name.startswith(xstate.PREFIX)
                if owned_chain:
                    part.chains.append(chain.name)
                    part.rules[chain.name] = []
                for rule in chain.rules:
                    decoded = decode(rule)
                    line = render(chain.name, decoded)
                    if owned_chain:
                        part.rules[chain.name].append(line)
                        tag = (decoded.get("comment") or {}).get("comment")
                        if tag and chain.name.endswith("-PRE"):
                            old, (packets, octets) = counters.get(tag, (0, 0)), decoded.get("counters", (0, 0))
                            counters[tag] = (old[0] + packets, old[1] + octets)
                    elif xstate._JUMP_RE.match(line):
                        part.jumps.append(line)
        owned, claims = xstate.split(owned, self.context.cluster)
        prefix = comment_prefix(self.context.cluster)
        counters = {tag: value for tag, value in counters.items() if tag.startswith(prefix)}
        return Live(xstate.canonical(owned), counters, {"owned": owned, "claims": claims})

    def desired(self, spec: Spec, live: Live) -> str:
        return xstate.canonical(xstate.desired(spec))

    def forwards(self, text: str) -> list[Essence]:
        return xtables.parse_save(text)

    def tags(self, line: str) -> str | None:
        return xstate.tag(line)

    def focus(self, text: str, tags: set[str]) -> str:
        return xstate.focus(text, tags)

    def validate(self, target: str, live: Live) -> None:
        """Build every rule in memory (python-iptables checks each against its extension)."""
        for _, lines in xstate.transaction(live.extra.get("owned") or xstate.parse(live.text)[0],
                                           xstate.parse(target)[0]):
            for line in lines:
                if line.startswith("-A "):
                    build(self.iptc, xstate.args_of(line)[1])

    def write(self, target: str, live: Live) -> int:
        parts = xstate.transaction(live.extra.get("owned") or xstate.parse(live.text)[0], xstate.parse(target)[0])
        if not parts:
            return 0
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: prepare every table, then commit them back to back
            os.close(read_end)
            code = 0
            try:
                tables = [self._prepare(name, lines) for name, lines in parts]
                for table in tables:
                    table.commit()
            except BaseException as problem:  # noqa: BLE001 - reported to the parent
                os.write(write_end, str(problem).encode()[:4000] or b"failed")
                code = 1
            os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as errors:
            message = errors.read().decode(errors="replace")
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise TransactionError(f"python-iptables commit failed: {message or f'status {status}'}")
        return len(parts)

    def _prepare(self, name: str, lines: list[str]):
        iptc = self.iptc
        table = iptc.Table(name)
        table.autocommit = False
        table.refresh()
        for line in lines:
            if line.startswith(":"):
                chain = line[1:].split(" ", 1)[0]
                if table.is_chain(chain):
                    table.flush_entries(chain)
                else:
                    table.create_chain(chain)
            elif line.startswith("-D "):
                builtin, wanted = line.split()[1], line.split()[3]
                chain = iptc.Chain(table, builtin)
                for rule in chain.rules:
                    if rule.target.name == wanted and \
                            render(builtin, iptc.easy.decode_iptc_rule(rule)) == line.replace("-D ", "-A ", 1):
                        chain.delete_rule(rule)
                        break
            elif line.startswith("-I "):
                words = line.split()
                iptc.Chain(table, words[1]).insert_rule(build(iptc, words[3:]))
            elif line.startswith("-A "):
                chain, args = xstate.args_of(line)
                iptc.Chain(table, chain).append_rule(build(iptc, args))
            elif line.startswith("-X "):
                table.delete_chain(line.split()[1])
        return table

    def fingerprint(self) -> str | None:
        return None

    def persisted_files(self) -> list[Path]:
        from netfwd.backends.iptables import IptablesBackend

        return IptablesBackend(self.context, "legacy").persisted_files()

    def persist(self, target: str) -> list[str]:
        if shutil.which("iptables-legacy-save") is None and shutil.which("iptables-save") is None:
            return ["no iptables-save to persist with: the rules last until reboot"]
        from netfwd.backends.iptables import IptablesBackend

        return IptablesBackend(self.context, "legacy").persist(target)


def make(context: Context) -> LibiptcBackend:
    return LibiptcBackend(context)


__all__ = ["LibiptcBackend", "build", "make", "render"]
