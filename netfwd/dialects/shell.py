"""Pieces every Linux (bash) script shares: strict mode, the redirectable root, sysctl persistence.

Persistent files go under ``${NETFWD_ROOT:-}/etc/...`` so that tests and the lab, which run the
scripts inside network namespaces, never write the host's /etc.
"""

from __future__ import annotations

import shlex

from netfwd import owned, xtables
from netfwd.model import Forward, Spec


def prologue(header: list[str], files: tuple[str, ...] = (), cluster: str = "") -> list[str]:
    """Strict mode, $ROOT, and the safe-file helpers; then, before anything changes, the check of
    every file the script may write or remove (the cluster's sysctl.d file, the global one of earlier
    versions, and `files` under $ROOT)."""
    paths = (owned.sysctl_file(cluster), owned.LEGACY_SYSCTL_FILE, *files) if cluster else files
    targets = " ".join(rooted(path) for path in paths)
    return ["#!/usr/bin/env bash", *header, "set -euo pipefail", "umask 022",
            'ROOT="${NETFWD_ROOT:-}"', *SAFE_FILES, f"check_targets {targets}", ""]


# IPv6 forwarding makes the kernel ignore router advertisements where accept_ra is 1, and a default
# route learned from them expires: such interfaces get 2 first, now and persisted (docs/apply.md).
# Same keys as netfwd.engine.sysctl.ra_keys; the '/' form because interface names may hold dots.
KEEP_RA = [
    "ra_lines=()",
    "for conf in /proc/sys/net/ipv6/conf/*/; do",
    '  name=${conf%/}; name=${name##*/}',
    '  case $name in all|default|lo) continue ;; esac',
    '  case $(cat "${conf}accept_ra" 2>/dev/null || true) in 1|2) ;; *) continue ;; esac',
    '  sysctl -q -w "net/ipv6/conf/$name/accept_ra=2"',
    '  ra_lines+=("net/ipv6/conf/$name/accept_ra = 2")',
    "done",
]


def sysctl_keys(spec: Spec) -> list[str]:
    keys = ["net.ipv4.ip_forward"]
    if any(f.family == 6 for f in spec.forwards):
        keys.append("net.ipv6.conf.all.forwarding")
    return keys


def enable_forwarding(spec: Spec) -> list[str]:
    """Turn forwarding on now and persist it in the cluster's sysctl.d file (atomically: temp file, rename)."""
    keys = sysctl_keys(spec)
    path = owned.sysctl_file(spec.cluster)
    lines = ["# Kernel forwarding: on now, and after a reboot (sysctl.d)."]
    ra = ""
    if "net.ipv6.conf.all.forwarding" in keys:
        lines += KEEP_RA
        ra = ' ${ra_lines[@]+"${ra_lines[@]}"}'  # bash < 4.4: an empty array is "unbound" under set -u
    lines += [f"sysctl -q -w {shlex.quote(key + '=1')}" for key in keys]
    body = " ".join(shlex.quote(f"{key} = 1") for key in keys)
    lines += [
        f"write_file_safely {rooted(path)} 644 "
        f"printf '%s\\n' {shlex.quote(sysctl_header(spec.cluster))}{ra} {body}",
        *forget_legacy_sysctl(spec),
        "",
    ]
    return lines


def forget_forwarding(spec: Spec) -> list[str]:
    """Only this cluster's file goes: forwarding stays persisted while another cluster's file asks for it."""
    return ["# Forget this cluster's persisted sysctl; forwarding stays on until reboot (other clusters and",
            "# services may rely on it).",
            f"remove_file_safely {rooted(owned.sysctl_file(spec.cluster))}", *forget_legacy_sysctl(spec), ""]


def rooted(path: str) -> str:
    """A path under $ROOT for bash: the cluster name in it is validated, and quoted all the same."""
    return '"$ROOT"/' + shlex.quote(path)


def sysctl_header(cluster: str) -> str:
    """The first line of a sysctl file netfwd wrote for `cluster` (also in the global file of earlier versions)."""
    return f"# written by netfwd for cluster {cluster}"


def forget_legacy_sysctl(spec: Spec) -> list[str]:
    """The global sysctl file of earlier versions goes when it was this cluster's (its first line says so)."""
    legacy = rooted(owned.LEGACY_SYSCTL_FILE)
    return [f"if [ -f {legacy} ] && [ \"$(head -n 1 {legacy})\" = "
            f"{shlex.quote(sysctl_header(spec.cluster))} ]; then remove_file_safely {legacy}; fi"]


def refuse_under_firewalld(use_instead: str = "firewalld") -> list[str]:
    """Raw iptables/nft rules on a firewalld host are wiped by its next reload: refuse and say what to use."""
    return [
        "if command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1; then",
        f"  echo 'netfwd: firewalld is running; its reload would drop these rules. "
        f"Use: netfwd render SPEC --dialect {use_instead}' >&2",
        "  exit 3",
        "fi",
        "",
    ]


# -- stale NAT mappings: every dialect's script forgets them as `netfwd apply` does -------------------
# Each dialect defines `old_dnat` (print '<listen|*> <proto> <port> <target>' per live DNAT rule of
# netfwd's) and runs `before=$(old_dnat)` before it changes anything.

FORGET_MAPPING = [
    "# forget_mapping LISTEN PROTO PORT TARGET: drop conntrack entries still NATed to TARGET, so an old",
    "# mapping (a long-lived UDP flow above all) does not outlive its rule",
    "forget_mapping() {",
    '  local family=ipv4 host=${4%:*} port=${4##*:}',
    '  case $4 in "["*) family=ipv6; host=${host#[}; host=${host%]} ;; esac',
    '  local args=(-D -f "$family" -p "$2" --orig-port-dst "$3" --reply-src "$host" --reply-port-src "$port")',
    '  [ "$1" = "*" ] || args+=(--orig-dst "$1")',
    '  conntrack "${args[@]}" >/dev/null 2>&1 || true',
    "}",
]


def mapping_key(forward: Forward) -> str:
    """'<listen|*> <proto> <port> <target>', as old_dnat prints a forward's DNAT rule."""
    to = forward.to.address
    target = f"{to}:{forward.to.port}" if forward.family == 4 else f"[{to}]:{forward.to.port}"
    listen = "*" if forward.listen.address is None else str(forward.listen.address)
    return f"{listen} {forward.protocol} {forward.listen.port} {target}"


@xtables.per_spec
def forget_stale_of(spec: Spec) -> list[str]:
    """`forget_stale` keeping every forward of `spec` (the iptables and firewalld scripts' step)."""
    return forget_stale([mapping_key(f) for f in spec.forwards])


def forget_stale(keep: list[str]) -> list[str]:
    """After the change: forget the mappings of every DNAT that was live before and is not in `keep`."""
    return [
        "# Existing connections keep their old NAT mapping: forget those whose target changed or went away.",
        "declare -A keep=()",
        *(f"keep[{shlex.quote(line)}]=1" for line in keep),
        'if [ -n "$before" ]; then',
        "  if command -v conntrack >/dev/null 2>&1; then",
        "    while read -r listen proto port target; do",
        '      [ -n "${keep["$listen $proto $port $target"]:-}" ] && continue',
        '      forget_mapping "$listen" "$proto" "$port" "$target"',
        '    done <<<"$before"',
        "  else",
        "    echo 'netfwd: conntrack not found: connections opened before this change keep their old target "
        "until they end' >&2",
        "  fi",
        "fi",
        "",
    ]


def forget_all() -> list[str]:
    """After removal: forget the mappings of every DNAT that was live before."""
    return [
        "if [ -n \"$before\" ] && command -v conntrack >/dev/null 2>&1; then",
        '  while read -r listen proto port target; do forget_mapping "$listen" "$proto" "$port" "$target"; '
        'done <<<"$before"',
        "fi",
        "",
    ]


# Files the scripts write as root: only in directories nobody else can change (each one above them
# too; a sticky parent like /tmp is fine), never through a symlink, through a temp file that
# mktemp makes (O_EXCL, unpredictable name) next to the target and renames over it. The same rule
# as netfwd's own writes (netfwd/trust.py; docs/security.md, "Local users").
SAFE_FILES = [
    "# Files written as root only where nobody else can plant or swap them (see docs/security.md).",
    "netfwd_refuse() { echo \"netfwd: refusing $1\" >&2; exit 3; }",
    "trusted_dir() {  # DIR: exit 3 unless DIR and every directory above are root's and not group/other-writable",
    '  local want="$1" path="" part real uid mode',
    "  local -a parts",
    '  case "$want" in /*) ;; *) want="$PWD/$want" ;; esac',
    '  IFS=/ read -r -a parts <<<"$want"',
    '  for part in ${parts[@]+"${parts[@]}"}; do  # a symlink on the way: only its owner could repoint it',
    '    [ -n "$part" ] || continue',
    '    path="$path/$part"',
    '    [ -L "$path" ] || continue',
    '    uid=$(stat -c %u -- "$path")',
    '    [ "$uid" = 0 ] || [ "$uid" = "$EUID" ] || netfwd_refuse "$path: a symlink owned by uid $uid; fix: use the directory it names"',
    "  done",
    '  real=$(readlink -m -- "$want")',
    '  IFS=/ read -r -a parts <<<"$real"',
    '  path=""',
    '  for part in "" ${parts[@]+"${parts[@]}"}; do',
    '    [ -n "$part" ] || [ -z "$path" ] || continue',
    '    path="${path%/}/$part"',
    '    [ -e "$path" ] || break  # made later by mkdir -p (umask 022) in a directory checked here',
    '    read -r uid mode <<<"$(stat -c \'%u %a\' -- "$path")"',
    '    [ "$uid" = 0 ] || [ "$uid" = "$EUID" ] ||',
    '      netfwd_refuse "$path: owned by uid $uid, who could plant files written here as root; fix: chown root $path"',
    '    if (( 8#$mode & 8#022 )) && { [ "$path" = "$real" ] || (( (8#$mode & 8#1000) == 0 )); }; then',
    '      netfwd_refuse "$path: writable by group or others (mode $mode); fix: chmod go-w $path"',
    "    fi",
    "  done",
    "}",
    "refuse_planted() {  # FILE: a symlink or a non-regular file where netfwd keeps its own file",
    '  if [ -L "$1" ] || { [ -e "$1" ] && [ ! -f "$1" ]; }; then',
    '    netfwd_refuse "$1: a symlink or not a regular file where netfwd keeps its own file; fix: see who made it, then remove it"',
    "  fi",
    "}",
    "check_targets() {  # FILE...: before any change, every file this script may write or remove",
    '  local file',
    '  for file in "$@"; do trusted_dir "$(dirname -- "$file")"; refuse_planted "$file"; done',
    "}",
    "safe_temp() {  # TARGET: a new temp file next to TARGET (mktemp: O_EXCL, unpredictable name)",
    '  local dir',
    '  dir=$(dirname -- "$1")',
    '  trusted_dir "$dir"',
    '  refuse_planted "$1"',
    '  mkdir -p -- "$dir"',
    '  mktemp -- "$dir/.${1##*/}.XXXXXXXXXX"',
    "}",
    "write_file_safely() {  # TARGET MODE COMMAND...: the output of COMMAND becomes TARGET, atomically",
    '  local target="$1" mode="$2" tmp',
    "  shift 2",
    '  tmp=$(safe_temp "$target") || exit "$?"',
    '  if "$@" >"$tmp" && chmod "$mode" -- "$tmp" && mv -fT -- "$tmp" "$target"; then return 0; fi',
    '  rm -f -- "$tmp"',
    "  return 1",
    "}",
    "remove_file_safely() {  # TARGET: delete netfwd's own file, never a planted one",
    '  trusted_dir "$(dirname -- "$1")"',
    '  refuse_planted "$1"',
    '  rm -f -- "$1"',
    "}",
]
