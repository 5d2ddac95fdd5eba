"""`iptables` dialect: a bash script using `iptables -w`, one command per rule, into netfwd-owned chains.

Idempotent by construction: owned chains are created when missing and flushed before refilling,
jumps from the built-in chains are check-then-insert. (For a single atomic transaction use the
`iptables-restore` dialect; both produce the same ruleset, see netfwd/xtables.py.)
"""

from __future__ import annotations

import shlex

from netfwd import bootunit, owned, xtables
from netfwd.dialects import shell, xtguard
from netfwd.dialects.base import BaseDialect
from netfwd.model import Essence, Spec
from netfwd.netfilter import xstate

HELPERS = [
    "say() { printf 'netfwd: %s\\n' \"$*\" >&2; }",
    'die() { local status=$1; shift; say "$*"; exit "$status"; }',
    'ipt() { "$IPTABLES" ${WAIT[@]+"${WAIT[@]}"} "$@"; }',
    'chain_exists() { ipt -t "$1" -n -L "$2" >/dev/null 2>&1; }',
    "ensure_jump() {  # table builtin-chain owned-chain: insert at the top unless already there",
    '  local rc=0 out',
    '  out=$(ipt -t "$1" -C "$2" -j "$3" 2>&1) || rc=$?',
    '  case $rc in 0) ;; 1) ipt -t "$1" -I "$2" 1 -j "$3" ;; *) die 1 "checking the jump $1/$2 -> $3 failed: $out" ;; esac',
    "}",
    "",
]


def old_dnat(cluster: str) -> list[str]:
    """`old_dnat`: '<listen|*> <proto> <port> <target>' per DNAT rule in the cluster's PREROUTING chain now."""
    return [
        "old_dnat() {",
        f'  {{ "$IPTABLES-save" -t nat 2>/dev/null || true; }} | awk \'$1 == "-A" && $2 == "{owned.chain(cluster, "PRE")}" {{',
        '    a = "*"; p = ""; n = ""; t = ""',
        "    for (i = 3; i < NF; i++) {",
        r'      if ($i == "-d") { a = $(i+1); sub(/\/32$/, "", a) }',
        '      if ($i == "-p") p = $(i+1)',
        '      if ($i == "--dport") n = $(i+1)',
        '      if ($i == "--to-destination") t = $(i+1)',
        "    }",
        "    if (t != \"\") print a, p, n, t }' | sort -u",
        "}",
        *shell.FORGET_MAPPING,
        "",
    ]


def boot_files(cluster: str) -> tuple[str, ...]:
    """What the scripts may write or remove for boot (= the iptables backends' persisted_files()).
    Never the distro's rules.v4 / sysconfig/iptables: those hold everyone's rules (docs/apply.md)."""
    return (owned.xtables_file(cluster), bootunit.unit_file(cluster))


BOOT_DELIMITER = "NETFWD_BOOT"


def persist(spec: Spec) -> list[str]:
    """The cluster's boot payload and its own unit (netfwd.bootunit); NETFWD_PERSIST=no skips them."""
    path = owned.xtables_file(spec.cluster)
    payload = xstate.spec_boot_payload(spec)
    return ['if [ "${NETFWD_PERSIST:-auto}" != no ]; then',
            *(f"  {line}" for line in bootunit.script_install(
                spec.cluster, f'"$(command -v "$IPTABLES-restore") --noflush /{path}"')),
            "  # The payload last: a failure before it leaves the previous payload, matching the undone rules.",
            f"  write_file_safely {shell.rooted(path)} 600 cat <<'{BOOT_DELIMITER}'",
            payload + BOOT_DELIMITER,
            "fi"]


def tool_check() -> list[str]:
    return [
        'IPTABLES="${NETFWD_IPTABLES:-iptables}"  # or iptables-legacy / iptables-nft',
        'command -v "$IPTABLES" >/dev/null 2>&1 || { echo "netfwd: $IPTABLES not found" >&2; exit 3; }',
        "",
    ]


LEGACY_JUMPS = tuple((xtables.TABLE_OF[k], xtables.BUILTIN_OF[k], c) for k, c in owned.LEGACY_CHAINS.items())


def drop_legacy(spec: Spec) -> list[str]:
    """The global chains of earlier versions go when no other cluster's rule is in them (after
    `xtguard.read_now`: NOW holds the tables)."""
    others = (f"printf '%s\\n' \"${{NOW[nat]}}\" \"${{NOW[filter]}}\" | grep -E '^-A NETFWD-(PRE|OUT|POST|FWD) ' "
              f"| grep -F '\"netfwd:' | grep -vF '\"netfwd: replies\"' "
              f"| grep -vF {shlex.quote(chr(34) + owned.comment_prefix(spec.cluster))} || true")
    return ["# Earlier netfwd versions used global chains (NETFWD-PRE ...): take them away when they",
            "# hold this cluster's rules (or none), never another cluster's.",
            f'if [ -z "$({others})" ]; then',
            *(f"  {line}" for line in xtguard.remove_steps(LEGACY_JUMPS)),
            "fi", ""]


def remove_body(spec: Spec) -> list[str]:
    """Remove every netfwd-owned jump and chain, nothing else (shared by both iptables dialects).

    Exit 0 with "removed" or "nothing to remove"; exit 1 naming what was removed when a step fails."""
    return [*xtguard.probe(), "before=$(old_dnat)", *xtguard.remove_body(spec.cluster), *drop_legacy(spec),
            *shell.forget_all(), *shell.forget_forwarding(spec),
            *bootunit.script_uninstall(spec.cluster, owned.xtables_file(spec.cluster)),
            'if [ ${#REMOVED[@]} -gt 0 ]; then say "removed (${#REMOVED[@]} step(s))"; '
            "else say 'nothing to remove: no netfwd chain or jump is present'; fi"]


class IptablesDialect(BaseDialect):
    name = "iptables"
    extension = "sh"
    families = frozenset({4})

    def render(self, spec: Spec) -> str:
        self.check(spec)
        lines = shell.prologue(self.header(spec, "apply"), boot_files(spec.cluster), spec.cluster)
        lines += bootunit.script_probe(owned.xtables_file(spec.cluster))
        lines += tool_check() + shell.refuse_under_firewalld() + HELPERS + old_dnat(spec.cluster)
        lines += xtguard.probe() + xtguard.payload_test(xtables.restore_payload(spec))
        lines += xtguard.snapshot_and_undo(spec.cluster)
        lines += ['DONE+=("ip_forward and the sysctl file")', *shell.enable_forwarding(spec)]
        lines += ["before=$(old_dnat)", 'DONE+=("the owned chains")', *self.install(spec)]
        lines += ["", "# Jumps from the built-in chains, check-then-insert, last: traffic only ever sees complete chains.",
                  'DONE+=("the jumps")']
        lines += [f"ensure_jump {t} {b} {o}" for t, b, o in xtables.jumps(spec.cluster)]
        lines += ["", *xtguard.read_now(), *drop_legacy(spec)]
        lines += ["", *shell.forget_stale_of(spec)]
        lines += [*persist(spec), "trap - EXIT",
                  f"echo {shlex.quote(f'netfwd: applied {len(spec.forwards)} forward(s)')} >&2", ""]
        return "\n".join(lines)

    def install(self, spec: Spec) -> list[str]:
        """Fill the owned chains: one `iptables` call per rule."""
        lines = ["# This cluster's chains: create when missing, flush, refill."]
        for table, chains in xtables.chains(spec.cluster).items():
            for chain in chains:
                lines.append(f"chain_exists {table} {chain} || ipt -t {table} -N {chain}")
                lines.append(f"ipt -t {table} -F {chain}")
        lines += ["", "# Rules (whitelisted sources DNAT; scoped masquerade; FORWARD accept)."]
        lines += xtables.shell_lines(spec)
        return lines

    def render_remove(self, spec: Spec) -> str:
        self.check(spec)
        lines = shell.prologue(self.header(spec, "remove"), boot_files(spec.cluster), spec.cluster)
        lines += bootunit.script_check() + tool_check() + HELPERS
        lines += old_dnat(spec.cluster) + remove_body(spec)
        return "\n".join(lines) + "\n"

    def parse(self, text: str) -> list[Essence]:
        """Accepts this dialect's script (its checked payload) or `iptables-save` output."""
        if f"<<'{xtguard.DELIMITER}'\n" in text:  # the script: read the payload it checks first
            text = text.split(f"<<'{xtguard.DELIMITER}'\n", 1)[1].split(f"{xtguard.DELIMITER}\n", 1)[0]
        save_lines = []
        for line in text.splitlines():
            if line.startswith("ipt -t ") and " -A " in line:
                words = shlex.split(line)[3:]  # drop `ipt -t TABLE`
                save_lines.append(" ".join(shlex.quote(w) if " " in w else w for w in words))
            elif line.startswith("-A "):
                save_lines.append(line)
        return xtables.parse_save("\n".join(save_lines))


DIALECT = IptablesDialect()
