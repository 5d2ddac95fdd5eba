"""The safety frame of both iptables scripts: probe what the installed iptables accepts, check the whole
payload, and only then write; undo on a later failure; read live state (never guess from an error).

Capabilities, not distribution names (docs/compat.md): CentOS 7's iptables 1.4.21 takes `-w` without
seconds (``Bad argument `5'``), and its `iptables-restore` has no `-w` at all - it prints
"invalid option" and carries on with exit status 0, so a probe must read what it prints, not only its
status. Everything is probed once, up front, with the payload itself checked by `iptables-restore --test`
(which also proves every match and target the rules use - conntrack, comment, addrtype, DNAT,
MASQUERADE - loads), before the first write. After the first write, an EXIT trap puts back what the
script changed (owned chains' old rules, jumps, the sysctl file, ip_forward) and says what it did.
"""

from __future__ import annotations

import shlex

from netfwd import owned, xtables

DELIMITER = "NETFWD_RULES"
TABLES = ("nat", "filter")


def probe() -> list[str]:
    """Root, the three tools, the `-w` spelling of each, `-C`: once, before anything is written."""
    return [
        "# What this iptables accepts, probed once before any change (docs/compat.md).",
        '[ "$(id -u)" -eq 0 ] || die 3 "must run as root (it changes the firewall and sysctls)"',
        'for tool in "$IPTABLES" "$IPTABLES-save" "$IPTABLES-restore"; do',
        '  command -v "$tool" >/dev/null 2>&1 || die 3 "$tool not found: install iptables"',
        "done",
        'if "$IPTABLES" -w 5 -t nat -S >/dev/null 2>&1; then WAIT=(-w 5)   # iptables >= 1.6: bounded wait',
        'elif "$IPTABLES" -w -t nat -S >/dev/null 2>&1; then WAIT=(-w)    # 1.4.20-1.4.21: -w takes no seconds',
        'elif out=$("$IPTABLES" -t nat -S 2>&1); then WAIT=()',
        'else die 3 "$IPTABLES cannot read the nat table: $out"; fi',
        "RWAIT=()  # iptables-restore's wait flag; 1.4.21 has none and only *warns* about unknown options",
        '# shellcheck disable=SC2034,SC2086  # (the remove script needs no RWAIT; $flag splits on purpose)',
        'for flag in "-w 5" "-w"; do',
        '  if out=$("$IPTABLES-restore" --test --noflush $flag </dev/null 2>&1) && [ -z "$out" ]; then',
        '    read -r -a RWAIT <<<"$flag"; break',
        "  fi",
        "done",
        'rc=0; out=$("$IPTABLES" ${WAIT[@]+"${WAIT[@]}"} -t nat -C PREROUTING -p tcp --dport 1 -j RETURN 2>&1) || rc=$?',
        '[ "$rc" -le 1 ] || die 3 "$IPTABLES has no usable -C (check rule; see docs/compat.md): $out"',
        "",
    ]


def payload_test(payload: str) -> list[str]:
    """`iptables-restore --test` of the owned chains' whole payload, before the first write."""
    return ["# Every rule checked by the kernel's own parser before anything changes.",
            f'if ! out=$("$IPTABLES-restore" --test --noflush ${{RWAIT[@]+"${{RWAIT[@]}}"}} 2>&1 <<\'{DELIMITER}\'',
            payload + f"{DELIMITER}", '); then',
            '  die 3 "iptables-restore --test rejected the rules (nothing was changed): $out"',
            "fi", ""]


def snapshot_and_undo(cluster: str) -> list[str]:
    """Remember the cluster's owned state, then arm an EXIT trap that restores it if the script fails later."""
    lines = ["# The owned state before this run: put back if a later step fails.",
             'declare -A BEFORE=()']
    for table in TABLES:
        lines.append(f'BEFORE[{table}]=$("$IPTABLES-save" -t {table}) || die 3 "cannot read the {table} table"')
    lines += [
        f"SYSCTL_FILE={shlex.quote(owned.sysctl_file(cluster))}",
        'SYSCTL_BEFORE=""; [ -e "$ROOT/$SYSCTL_FILE" ] && SYSCTL_BEFORE=$(cat "$ROOT/$SYSCTL_FILE")',
        "FORWARD_BEFORE=$(sysctl -n net.ipv4.ip_forward)",
        "DONE=()",
        "undo() {",
        "  local rc=$?",
        '  { [ "$rc" -eq 0 ] || [ ${#DONE[@]} -eq 0 ]; } && return 0',
        "  set +e",
        '  say "failed (exit $rc) after: ${DONE[*]}; undoing that"',
    ]
    for table, builtin, chain in xtables.jumps(cluster):
        lines.append(f'  grep -qxF -- "-A {builtin} -j {chain}" <<<"${{BEFORE[{table}]}}" || '
                     f'while ipt -t {table} -C {builtin} -j {chain} 2>/dev/null; do ipt -t {table} -D {builtin} -j {chain}; done')
    for table, chains in xtables.chains(cluster).items():
        pattern = "|".join(chains)
        lines.append(f'  {{ echo "*{table}"; grep -E "^:({pattern}) " <<<"${{BEFORE[{table}]}}" | '
                     f"sed 's/ .*/ - [0:0]/'; grep -E '^-A ({pattern}) ' <<<\"${{BEFORE[{table}]}}\"; "
                     f'echo COMMIT; }} | "$IPTABLES-restore" --noflush ${{RWAIT[@]+"${{RWAIT[@]}}"}}')
        for chain in chains:
            lines.append(f'  grep -q "^:{chain} " <<<"${{BEFORE[{table}]}}" || '
                         f'{{ ipt -t {table} -F {chain}; ipt -t {table} -X {chain}; }} 2>/dev/null')
    lines += [
        '  if [ -n "$SYSCTL_BEFORE" ]; then printf \'%s\\n\' "$SYSCTL_BEFORE" >"$ROOT/$SYSCTL_FILE"; '
        'else rm -f "$ROOT/$SYSCTL_FILE"; fi',
        '  sysctl -q -w "net.ipv4.ip_forward=$FORWARD_BEFORE"',
        '  say "undone: the owned chains, jumps and sysctl file are as before this run"',
        "}",
        "trap undo EXIT",
        "",
    ]
    return lines


def read_now() -> list[str]:
    """NOW[table]: the live tables, read from `iptables-save` (an error is an error, never "absent"),
    and `step`, which runs one removal or exits 1 naming what was already removed."""
    lines = ["# What is there, read (not inferred from a failing command).", "declare -A NOW=()", "REMOVED=()"]
    for table in TABLES:
        lines.append(f'NOW[{table}]=$("$IPTABLES-save" -t {table}) || die 1 "cannot read the {table} table; nothing removed"')
    lines += ["step() {  # step WHAT COMMAND...: run it, or stop saying what was already removed",
              '  local what=$1 out; shift',
              '  if ! out=$("$@" 2>&1); then',
              '    die 1 "removing $what failed: $out (already removed: ${REMOVED[*]:-nothing})"',
              "  fi",
              '  REMOVED+=("$what")',
              "}"]
    return lines


def remove_steps(jumps: tuple[tuple[str, str, str], ...]) -> list[str]:
    """Remove these jumps (every copy), then the chains they lead to: only what NOW shows."""
    lines = []
    for table, builtin, chain in jumps:
        lines.append(f'n=$(grep -cxF -- "-A {builtin} -j {chain}" <<<"${{NOW[{table}]}}" || true); '
                     f'for ((i = 0; i < n; i++)); do '
                     f'step "jump {table}/{builtin}->{chain}" ipt -t {table} -D {builtin} -j {chain}; done')
    for table, _, chain in jumps:
        lines.append(f'if grep -q "^:{chain} " <<<"${{NOW[{table}]}}"; then '
                     f'step "chain {table}/{chain}" ipt -t {table} -F {chain}; '
                     f'step "chain {table}/{chain}" ipt -t {table} -X {chain}; fi')
    return lines


def remove_body(cluster: str) -> list[str]:
    """Remove the cluster's jumps and chains; exit 1 naming what was already removed if a step fails."""
    return [*read_now(), "# Jumps first, then the owned chains (this cluster's only).",
            *remove_steps(xtables.jumps(cluster)), ""]
