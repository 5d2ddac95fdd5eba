"""`nft` dialect: the cluster's private table `inet netfwd-<cluster>`, replaced in one atomic `nft -f`.

The rendered file is a bash script, not a bare `.nft` file, because a complete apply also needs what
nft cannot do: turn forwarding on (sysctl), persist it and the ruleset, clear conntrack entries that
still point at an old target, and refuse to run under firewalld. The nft ruleset itself is one
quoted here-document (no shell expansion inside), spelled exactly as `nft list table` prints it, so
live state and rendered text read back through the same parser. One table per cluster keeps each
cluster's transaction atomic and its removal a single `delete table` (netfwd.owned names them).

The table is IPv4 and IPv6 at once (family inet). Rules carry `comment "netfwd:<cluster>/<name>"`;
whitelists are interval sets named by a hash of the forward name (any name is a safe identifier).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from typing import NamedTuple

from netaddr import AddrFormatError, IPNetwork, IPRange, cidr_merge

from netfwd import bootunit, owned
from netfwd.dialects import shell
from netfwd.dialects.base import BaseDialect
from netfwd.model import Essence, Forward, Spec

DELIMITER = "NETFWD_NFT"
NFT_CONFS = ("etc/nftables.conf", "etc/sysconfig/nftables.conf")  # Debian/Ubuntu, RHEL/Fedora
CONF_WORDS = " ".join(f'"$ROOT/{conf}"' for conf in NFT_CONFS)
REPLIES_COMMENT = "netfwd: replies"  # the unscoped replies rule of older versions: read, never written
COMMENT_MAX = 128  # nftables refuses longer comments

# (chain, type, hook, priority): the base chains of the private table
CHAINS = (
    ("prerouting", "nat", "prerouting", "dstnat"),
    ("output", "nat", "output", "-100"),
    ("postrouting", "nat", "postrouting", "srcnat"),
    ("forward", "filter", "forward", "filter"),
)


def set_name(forward: Forward) -> str:
    """The whitelist set of a forward: a hash, so names with '-' or '.' stay valid nft identifiers."""
    return "allow_" + hashlib.sha256(forward.name.encode()).hexdigest()[:12]


def comment(spec: Spec, forward: Forward) -> str:
    """netfwd's tag; over nft's 128-byte limit it is shortened but stays unique (hash of the full tag)."""
    tag = owned.rule_comment(spec, forward.name)
    if len(tag) <= COMMENT_MAX:
        return tag
    digest = hashlib.sha256(tag.encode()).hexdigest()[:12]
    return f"{tag[:COMMENT_MAX - 13]}~{digest}"


class _Parts(NamedTuple):
    """A forward's words, computed once (address formatting dominates the cost of big specs)."""

    ip: str  # "ip" or "ip6"
    listen: str | None  # listen address
    to: str  # target address
    target: str  # B:P or [B]:P, as `dnat ... to` takes it
    dnat: str  # "tcp dport A dnat ip to B:P"
    tag: str  # comment "netfwd:..."
    source_set: str | None  # the whitelist set's name


def _parts(spec: Spec, forward: Forward) -> _Parts:
    version = forward.family
    ip, to = ("ip", str(forward.to.address)) if version == 4 else ("ip6", str(forward.to.address))
    target = f"{to}:{forward.to.port}" if version == 4 else f"[{to}]:{forward.to.port}"
    return _Parts(ip, None if forward.listen.address is None else str(forward.listen.address), to, target,
                  f"{forward.protocol} dport {forward.listen.port} dnat {ip} to {target}",
                  f'comment "{comment(spec, forward)}"',
                  None if forward.allow is None else set_name(forward))


def prerouting_rule(spec: Spec, forward: Forward, p: _Parts | None = None) -> str:
    p = p or _parts(spec, forward)
    words = [] if spec.relay.interface is None else [f'iifname "{spec.relay.interface}"']
    if p.source_set is not None:
        words.append(f"{p.ip} saddr @{p.source_set}")
    if p.listen is not None:
        words.append(f"{p.ip} daddr {p.listen}")
    else:  # a wildcard listen captures only packets addressed to the relay, never routed-through ones
        words.append("fib daddr type local")
    return " ".join([*words, p.dnat, p.tag])


def output_rule(spec: Spec, forward: Forward, p: _Parts | None = None) -> str:
    """Connections made on the relay itself skip prerouting: DNAT them in output, to local addresses only."""
    p = p or _parts(spec, forward)
    match = "fib daddr type local" if p.listen is None else f"{p.ip} daddr {p.listen}"
    return f"{match} {p.dnat} {p.tag}"


def own_flows(forward: Forward, p: _Parts) -> str:
    """This forward's DNATed connections only, both directions (as `nft list` prints the match)."""
    orig_dst = "" if p.listen is None else f"ct original {p.ip} daddr {p.listen} "
    return (f"meta l4proto {forward.protocol} ct status dnat {orig_dst}ct original proto-dst {forward.listen.port} "
            f"ct reply {p.ip} saddr {p.to} ct reply proto-src {forward.to.port}")


def ruleset(spec: Spec, parts: list[_Parts] | None = None) -> str:
    """The nft -f payload: create-if-missing, delete, recreate — one transaction, so re-runs converge."""
    parts = parts or [_parts(spec, forward) for forward in spec.forwards]
    prerouting, output, postrouting = [], [], []
    forward_chain = []
    sets: list[str] = []
    for forward, p in zip(spec.forwards, parts):
        if p.source_set is not None:
            sets += [f"\t# sources of {forward.name}", f"\tset {p.source_set} {{",
                     "\t\ttype ipv4_addr" if p.ip == "ip" else "\t\ttype ipv6_addr",
                     "\t\tflags interval", "\t\telements = {",
                     *(f"\t\t\t{net}," for net in forward.sources or ()), "\t\t}", "\t}", ""]
        prerouting.append(prerouting_rule(spec, forward, p))
        if forward.local:
            output.append(output_rule(spec, forward, p))
        to_match = f"ct status dnat {p.ip} daddr {p.to} {forward.protocol} dport {forward.to.port}"
        if forward.masquerade:
            postrouting.append(f"{to_match} masquerade {p.tag}")
        forward_chain.append(f"{own_flows(forward, p)} accept {p.tag}")
    rules = {"prerouting": prerouting, "output": output, "postrouting": postrouting, "forward": forward_chain}
    table = owned.nft_table(spec.cluster)
    body = [f"table {table} {{}}", f"delete table {table}", f"table {table} {{", *sets]
    for index, (chain, kind, hook, priority) in enumerate(CHAINS):
        body += [f"\tchain {chain} {{", f"\t\ttype {kind} hook {hook} priority {priority}; policy accept;"]
        body += [f"\t\t{rule}" for rule in rules[chain]]
        body += ["\t}", "" if index < len(CHAINS) - 1 else "}"]
    return "\n".join(body) + "\n"


def _keep_lines(spec: Spec, parts: list[_Parts]) -> list[str]:
    """`<listen> <proto> <port> <target>` per forward, as the conntrack helper compares them."""
    return [f"{p.listen or '*'} {f.protocol} {f.listen.port} {p.target}" for f, p in zip(spec.forwards, parts)]


# inet-family NAT: in the kernel since Linux 5.2, in nft since nftables 0.9.1 (docs/compat.md)
NFT_MIN, KERNEL_MIN = (0, 9, 1), (5, 2)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text.split("-")[0])[:3])


def requirements_problem(nft_version: str, kernel_release: str) -> str | None:
    """Why this nft (`nft -v` output) or kernel (`uname -r`) cannot run netfwd's table, or None."""
    found = re.search(r"v?(\d+\.\d+(?:\.\d+)?)", nft_version)
    if found is None or _version(found[1]) < NFT_MIN:
        return (f"nft {found[1] if found else 'of unknown version'} is too old: the nft dialect needs nftables >= "
                f"{'.'.join(map(str, NFT_MIN))}; use the iptables dialect")
    if _version(kernel_release) < KERNEL_MIN:
        return (f"kernel {kernel_release} is too old: inet-family NAT needs Linux >= "
                f"{'.'.join(map(str, KERNEL_MIN))}; use the iptables dialect")
    return None


PREAMBLE = [
    "say() { printf 'netfwd: %s\\n' \"$*\" >&2; }",
    'die() { local status=$1; shift; say "$*"; exit "$status"; }',
    '[ "$(id -u)" -eq 0 ] || die 3 "must run as root (it changes the firewall and sysctls)"',
    f"command -v nft >/dev/null 2>&1 || die 3 'nft not found: install nftables >= {'.'.join(map(str, NFT_MIN))}'",
    "# What the table needs, checked before any change (docs/compat.md): inet-family NAT in nft and the kernel.",
    'version_at_least() { [ "$(printf \'%s\\n%s\\n\' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }',
    'NFT_VERSION=$(nft -v | awk \'{ sub(/^v/, "", $2); print $2 }\')',
    f'version_at_least "$NFT_VERSION" {".".join(map(str, NFT_MIN))} || die 3 "nft $NFT_VERSION is too old: '
    f'the nft dialect needs nftables >= {".".join(map(str, NFT_MIN))}; use the iptables dialect"',
    'KERNEL=$(uname -r)',
    f'version_at_least "${{KERNEL%%-*}}" {".".join(map(str, KERNEL_MIN))} || die 3 "kernel $KERNEL is too old: '
    f'inet-family NAT needs Linux >= {".".join(map(str, KERNEL_MIN))}; use the iptables dialect"',
]
HELPERS = [
    "# conf_with / conf_without LINE FILE: FILE's lines plus / minus LINE (for write_file_safely)",
    'conf_with() { cat -- "$2"; printf \'%s\\n\' "$1"; }',
    'conf_without() { grep -vxF -- "$1" "$2" || true; }',
    "# old_dnat FAMILY TABLE: '<listen> <proto> <port> <target>' for every DNAT rule in the live table (if any)",
    "old_dnat() {",
    "  { nft list chain \"$1\" \"$2\" prerouting 2>/dev/null || true; } | awk '",
    '    / dnat (ip|ip6) to / { a = "*"; p = ""; n = ""; t = ""',
    "      for (i = 2; i <= NF; i++) {",
    '        if ($i == "daddr" && ($(i-1) == "ip" || $(i-1) == "ip6")) a = $(i+1)',
    '        if ($i == "dport") { p = $(i-1); n = $(i+1) }',
    '        if ($i == "to" && $(i-2) == "dnat") t = $(i+1)',
    "      }",
    '      if (t != "") print a, p, n, t }\'',
    "}",
    *shell.FORGET_MAPPING,
    "",
]


def boot_files(cluster: str) -> tuple[str, ...]:
    """Every file an nft script may write or remove (checked before anything changes)."""
    return (owned.nft_file(cluster), bootunit.unit_file(cluster), owned.LEGACY_NFT_FILE, *NFT_CONFS)


def boot_command(nft_file: str) -> str:
    """The unit's ExecStart, as bash words: nft's absolute path (systemd < 239 wants one), the file."""
    return f'"$(command -v nft) -f /{nft_file}"'


def include_line(path: str) -> str:
    """The nftables.conf line that loads a file under /etc at boot."""
    return f'include "/{path}"'


def _drop_include(include: str) -> list[str]:
    """Take one include line out of the distro's nftables.conf (whichever exist)."""
    return [f"for conf in {CONF_WORDS}; do",
            '  [ -f "$conf" ] || continue',
            f"  if grep -qxF {shlex.quote(include)} \"$conf\"; then",
            f'    write_file_safely "$conf" "$(stat -c %a -- "$conf")" conf_without {shlex.quote(include)} "$conf"',
            "  fi",
            "done"]


def _drop_legacy(spec: Spec) -> list[str]:
    """Earlier versions' global table goes when its rules are this cluster's (or nobody's), with its
    boot file and include line; another cluster's rules in it keep it."""
    legacy = owned.LEGACY_NFT_TABLE
    mine = shlex.quote('comment "' + owned.comment_prefix(spec.cluster))
    return [
        "# Earlier netfwd versions used one global table (inet netfwd): take it away when it holds",
        "# this cluster's rules (or none), never another cluster's.",
        f"if nft list table {legacy} >/dev/null 2>&1; then",
        f"  others=$(nft list table {legacy} | grep -o 'comment \"netfwd:[^\"]*' | grep -vF 'comment \"netfwd: replies'"
        f" | grep -vF {mine} || true)",
        '  if [ -z "$others" ]; then',
        f"    nft delete table {legacy}",
        f"    remove_file_safely {shell.rooted(owned.LEGACY_NFT_FILE)}",
        *(f"    {line}" for line in _drop_include(owned.LEGACY_NFT_INCLUDE)),
        "  fi",
        "fi",
    ]


def _forward_drop_warning() -> list[str]:
    """An accept in our table cannot overrule a drop in someone else's: say so instead of failing silently."""
    return [
        "# nftables: a packet dropped by ANY table's forward hook is dropped; our accept cannot overrule it.",
        "others=$({ nft list chains 2>/dev/null || true; } | awk '/^table /{t=$2\" \"$3} "
        "/hook forward/ && /policy drop/ && t !~ /^inet netfwd(-|$)/ {print t}' | sort -u | tr '\\n' ' ')",
        'if [ -n "$others" ]; then',
        '  say "warning: forward chains with policy drop in: $others- accept the forwarded traffic there too' 
        ' (e.g. DOCKER-USER), or use the iptables dialect"',
        "fi",
        "",
    ]


class NftDialect(BaseDialect):
    name = "nft"
    extension = "sh"
    families = frozenset({4, 6})
    protocols = frozenset({"tcp", "udp"})
    supports_local = True

    def render(self, spec: Spec) -> str:
        self.check(spec)
        parts = [_parts(spec, forward) for forward in spec.forwards]
        table, nft_file = owned.nft_table(spec.cluster), owned.nft_file(spec.cluster)
        include = include_line(nft_file)
        lines = shell.prologue(self.header(spec, "apply"), boot_files(spec.cluster), spec.cluster)
        lines += [*bootunit.script_probe(nft_file),
            *PREAMBLE,
            *shell.refuse_under_firewalld(),
            "if nft list tables 2>/dev/null | grep -qx 'table inet firewalld'; then",
            "  die 3 'firewalld owns this firewall (table inet firewalld): use --dialect firewalld'",
            "fi",
            "",
            *HELPERS,
            *shell.enable_forwarding(spec),
            "# The ruleset, written to its persistent place first (atomically), then loaded from there.",
            f'NFT_FILE={shell.rooted(nft_file)}',
            'tmp=$(safe_temp "$NFT_FILE")',
            "trap 'rm -f \"$tmp\"' EXIT",
            f"cat >\"$tmp\" <<'{DELIMITER}'",
            "#!/usr/sbin/nft -f",
            *self.header(spec, "ruleset"),
            ruleset(spec, parts) + DELIMITER,
            f'before=$(old_dnat {shlex.join(table.split())})',
            "# One transaction: nothing is changed unless the whole ruleset is valid.",
            'nft -f "$tmp"',
            'chmod 644 "$tmp"',
            'mv -fT -- "$tmp" "$NFT_FILE"',
            "",
            *shell.forget_stale(_keep_lines(spec, parts)),
            *bootunit.script_install(spec.cluster, boot_command(nft_file)),
            "# Earlier versions included the file from the distro's nftables.conf, whose `flush ruleset`",
            "# would flush every other table at boot: that line of netfwd's goes.",
            *_drop_include(include),
            "",
            *_drop_legacy(spec),
            "",
            *_forward_drop_warning(),
            f"say {shlex.quote(f'applied {len(spec.forwards)} forward(s) in table {table}')}",
        ]
        return "\n".join(lines) + "\n"

    def render_remove(self, spec: Spec) -> str:
        self.check(spec)
        table, nft_file = owned.nft_table(spec.cluster), owned.nft_file(spec.cluster)
        lines = shell.prologue(self.header(spec, "remove"), boot_files(spec.cluster), spec.cluster)
        lines += [*bootunit.script_check(),
            *PREAMBLE,
            "",
            *HELPERS,
            f'before=$(old_dnat {shlex.join(table.split())})',
            "# Create-if-missing then delete: one transaction that succeeds whether or not the table exists.",
            f"nft -f - <<'{DELIMITER}'",
            f"table {table} {{}}",
            f"delete table {table}",
            DELIMITER,
            *shell.forget_all(),
            *bootunit.script_uninstall(spec.cluster, nft_file),
            *_drop_include(include_line(nft_file)),
            "",
            *_drop_legacy(spec),
            "",
            *shell.forget_forwarding(spec),
            f"say {shlex.quote(f'removed table {table}')}",
        ]
        return "\n".join(lines) + "\n"

    def parse(self, text: str) -> list[Essence]:
        """Accepts the rendered script, the bare ruleset, or `nft list table inet netfwd` / `list ruleset`."""
        return parse_ruleset(text)


DIALECT = NftDialect()


# -- reading a ruleset back ---------------------------------------------------------------------------

_TABLE_RE = re.compile(r"^\s*table\s+(\S+)\s+(\S+)\s*\{\s*$")
_BLOCK_RE = re.compile(r"^\s*(\S+)\s+(\S+)\s*\{\s*$")  # chain X {, set X {, map X {, ...
_COMMENT_RE = re.compile(r'\bcomment\s+"([^"]*)"')
_DNAT_RE = re.compile(r"\b(tcp|udp) dport (\d+) dnat (ip6?) to (\S+)")


def parse_ruleset(text: str) -> list[Essence]:
    """Forwards found in netfwd's table: rules tagged `netfwd:` grouped by tag, sets resolved."""
    sets: dict[tuple[str, str], list[str]] = {}
    found: dict[str, dict] = {}
    table = block = None
    depth = 0
    elements: list[str] | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if depth == 0:
            match = _TABLE_RE.match(line)
            if match:
                table, depth = f"{match[1]} {match[2]}", 1
            continue
        if elements is not None:  # inside `elements = { ... }`, possibly over several lines
            elements += [e for e in re.split(r"[\s,]+", line.replace("}", " ")) if e]
            if "}" in line:
                sets[(table, block)] = elements  # type: ignore[index]
                elements = None
            continue
        if line == "}":
            depth -= 1
            block = None if depth <= 1 else block
            continue
        if line.startswith("elements = {") and table is not None and _ours(table) and block is not None:
            elements = []
            rest = line[len("elements = {"):]
            elements += [e for e in re.split(r"[\s,]+", rest.replace("}", " ")) if e]
            if "}" in rest:
                sets[(table, block)] = elements
                elements = None
            continue
        match = _BLOCK_RE.match(line)
        if match:
            depth += 1
            if depth == 2:
                block = match[2] if match[1] in ("chain", "set") else None
            continue
        if table is None or not _ours(table) or block is None:
            continue
        _read_rule(table, block, line, found)
    result = []
    for entry in found.values():
        if "to_address" not in entry:
            continue
        source_set = entry.get("set")
        sources = None if source_set is None else _cidrs(sets.get(source_set, []))
        result.append(Essence(entry["listen_address"], entry["listen_port"], entry["protocol"],
                              entry["to_address"], entry["to_port"], entry["masquerade"], entry["local"],
                              sources))
    return result


def _ours(table: str) -> bool:
    """A table netfwd owns: any cluster's `inet netfwd-<cluster>`, or the global one of earlier versions."""
    return table == owned.LEGACY_NFT_TABLE or table.startswith(f"inet {owned.NFT_TABLE_PREFIX}")


def _read_rule(table: str, chain: str, line: str, found: dict[str, dict]) -> None:
    tag = _COMMENT_RE.search(line)
    if tag is None or not tag[1].startswith("netfwd:") or tag[1] == REPLIES_COMMENT:
        return
    entry = found.setdefault(tag[1], {"masquerade": False, "local": False})
    words = line.split()
    dnat = _DNAT_RE.search(line)
    if chain == "prerouting" and dnat:
        host, _, port = dnat[4].rpartition(":")
        entry.update(listen_address=_after(words, "daddr"), listen_port=int(dnat[2]), protocol=dnat[1],
                     to_address=host.strip("[]"), to_port=int(port))
        saddr = _after(words, "saddr")
        entry["set"] = (table, saddr[1:]) if saddr and saddr.startswith("@") else None
    elif chain == "output" and dnat:
        entry["local"] = True
    elif chain == "postrouting" and " masquerade" in line.split(" comment ")[0]:
        entry["masquerade"] = True


def _after(words: list[str], key: str) -> str | None:
    for index, word in enumerate(words[:-1]):
        if word == key and index > 0 and words[index - 1] in ("ip", "ip6"):
            return words[index + 1]
    return None


def _cidrs(elements: list[str]) -> tuple[str, ...]:
    """Set elements as nft prints them (hosts without /32, maybe ranges) -> the minimal CIDR list.

    An element that is no address is kept verbatim (after the CIDRs), so a comparison shows it.
    """
    nets: list[IPNetwork] = []
    odd: list[str] = []
    for element in elements:
        try:
            if "-" in element:
                first, last = element.split("-", 1)
                nets.extend(IPRange(first, last).cidrs())
            else:
                nets.append(IPNetwork(element))
        except (AddrFormatError, ValueError, TypeError):
            odd.append(element)
    return tuple([str(net) for net in cidr_merge(nets)] + odd)
