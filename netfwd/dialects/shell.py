"""Pieces every Linux (bash) script shares: strict mode, the redirectable root, sysctl persistence.

Persistent files go under ``${NETFWD_ROOT:-}/etc/...`` so that tests and the lab, which run the
scripts inside network namespaces, never write the host's /etc.
"""

from __future__ import annotations

import shlex

from netfwd.model import Forward, Spec

SYSCTL_FILE = "etc/sysctl.d/90-netfwd.conf"


def prologue(header: list[str]) -> list[str]:
    return ["#!/usr/bin/env bash", *header, "set -euo pipefail", "umask 022",
            'ROOT="${NETFWD_ROOT:-}"', ""]


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
    """Turn forwarding on now and persist it in sysctl.d (atomically: write a temp file, then rename)."""
    keys = sysctl_keys(spec)
    lines = ["# Kernel forwarding: on now, and after a reboot (sysctl.d)."]
    ra = ""
    if "net.ipv6.conf.all.forwarding" in keys:
        lines += KEEP_RA
        ra = ' ${ra_lines[@]+"${ra_lines[@]}"}'  # bash < 4.4: an empty array is "unbound" under set -u
    lines += [f"sysctl -q -w {shlex.quote(key + '=1')}" for key in keys]
    body = " ".join(shlex.quote(f"{key} = 1") for key in keys)
    lines += [
        'mkdir -p "$ROOT/etc/sysctl.d"',
        f"printf '%s\\n' {shlex.quote(f'# written by netfwd for cluster {spec.cluster}')}{ra} {body} "
        f'> "$ROOT/{SYSCTL_FILE}.tmp"',
        f'mv -f "$ROOT/{SYSCTL_FILE}.tmp" "$ROOT/{SYSCTL_FILE}"',
        "",
    ]
    return lines


def forget_forwarding() -> list[str]:
    return ["# Forget the persisted sysctl; forwarding stays on until reboot (other services may rely on it).",
            f'rm -f "$ROOT/{SYSCTL_FILE}"', ""]


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
