"""Boot persistence of one cluster's own rules: a oneshot systemd unit per cluster.

Why not the distro's firewall service: iptables-persistent / iptables-services restore one saved
snapshot of *everyone's* rules, and nftables.service runs /etc/nftables.conf, which starts with
`flush ruleset` - enabling it to load netfwd's file would flush every other table at boot. The unit
loads only the cluster's payload (`nft -f` of its own table, `iptables-restore --noflush` of its own
chains and jumps), after the distro's firewall service, so nothing of anyone else is flushed.

Enabling is the `multi-user.target.wants` symlink `systemctl enable` would make, created under the
root directly (no systemctl call when the root is not /). The unit records, in `# netfwd-made:`
lines, the directories apply had to create, so remove takes away exactly what apply made.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from netfwd import owned

UNIT_DIR = "etc/systemd/system"
WANTS_DIR = f"{UNIT_DIR}/multi-user.target.wants"
MADE = "# netfwd-made: "
# The distros' firewall services (each may flush at start): ours loads after whichever exists.
AFTER = "nftables.service netfilter-persistent.service iptables.service ip6tables.service firewalld.service"


def unit_name(cluster: str) -> str:
    return f"netfwd-{owned._safe(cluster)}.service"


def unit_file(cluster: str) -> str:
    """Relative to the root: etc/systemd/system/netfwd-<cluster>.service."""
    return f"{UNIT_DIR}/{unit_name(cluster)}"


def wants_link(cluster: str) -> str:
    return f"{WANTS_DIR}/{unit_name(cluster)}"


def dirs(payload: str) -> list[str]:
    """Every directory apply may have to create (outermost first), relative to the root."""
    found: list[str] = []
    for path in (payload, wants_link("x")):
        parts = Path(path).parent.parts
        for i in range(2, len(parts) + 1):  # never etc/ itself
            found.append("/".join(parts[:i]))
    return list(dict.fromkeys(found))


def unit_text(cluster: str, exec_start: list[str], made: list[str]) -> str:
    """The unit: oneshot, before the network is up, after the distro's firewall service."""
    return "\n".join([
        f"# written by netfwd for cluster {cluster}: loads only this cluster's own rules at boot",
        *(f"{MADE}{d}" for d in made),
        "[Unit]",
        f"Description=netfwd forwards of cluster {cluster}",
        "DefaultDependencies=no",
        "Wants=network-pre.target",
        "Before=network-pre.target shutdown.target",
        f"After={AFTER}",
        "Conflicts=shutdown.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart={shlex.join(exec_start)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def made_of(text: str) -> list[str]:
    return [line[len(MADE):] for line in text.splitlines() if line.startswith(MADE)]


# -- backends ----------------------------------------------------------------------------------

def install(root: Path, cluster: str, payload: str, text: str, exec_start: list[str], mode: int = 0o600) -> list[str]:
    """Write ROOT/<payload>, the unit and its wants link; returns what was done."""
    from netfwd.safefiles import write_atomic

    unit = root / unit_file(cluster)
    try:
        made = made_of(unit.read_text())
    except FileNotFoundError:
        made = []
    made += [d for d in dirs(payload) if not (root / d).is_dir() and d not in made]
    write_atomic(unit, unit_text(cluster, exec_start, made))
    _link(root / wants_link(cluster), f"/{unit_file(cluster)}")
    write_atomic(root / payload, text, mode=mode)  # last: earlier failures leave the previous payload
    if root == Path("/") and os.path.isdir("/run/systemd/system"):  # the real host: systemd reads the unit now
        import subprocess

        subprocess.run(["systemctl", "daemon-reload"], check=False, capture_output=True)
    return [f"saved {root / payload}; loaded at boot by {unit} (enabled)"]


def uninstall(root: Path, cluster: str, payload: str) -> list[str]:
    """Undo :func:`install`: the link, the unit, the payload, the directories it made (if empty)."""
    from netfwd.safefiles import remove_file

    unit = root / unit_file(cluster)
    try:
        made = made_of(unit.read_text())
    except FileNotFoundError:
        made = []
    link = root / wants_link(cluster)
    if link.is_symlink():
        if os.readlink(link) != f"/{unit_file(cluster)}":
            raise _foreign(link)
        link.unlink()
    gone = [p for p in (unit, root / payload) if remove_file(p)]
    for directory in sorted(made, key=len, reverse=True):
        try:
            (root / directory).rmdir()
        except OSError:
            pass  # not empty: someone else's files are in it now
    return [f"removed {', '.join(str(p) for p in gone)}"] if gone or made else []


def _foreign(path: Path):
    from netfwd.errors import EnvironmentProblem

    return EnvironmentProblem(f"refusing {path}: not netfwd's link; fix: see who made it, then remove it")


def _link(path: Path, target: str) -> None:
    """The wants symlink, made in a trusted directory; a foreign file there is refused."""
    from netfwd import trust
    from netfwd.errors import EnvironmentProblem

    directory = trust.open_dir(path.parent, create=0o755)
    try:
        try:
            if os.readlink(path.name, dir_fd=directory) == target:
                return
            raise _foreign(path)
        except FileNotFoundError:
            pass
        except OSError:
            raise _foreign(path) from None  # a regular file or directory where the link goes
        os.symlink(target, path.name, dir_fd=directory)
    except OSError as problem:
        raise EnvironmentProblem(f"cannot link {path}: {problem.strerror or problem}") from None
    finally:
        os.close(directory)


# -- scripts -------------------------------------------------------------------------------------

def script_probe(payload: str) -> list[str]:
    """Before anything is written: which directories apply will create (kept across re-applies)."""
    return [*script_check(), "made=()",
            *(f'[ -d "$ROOT"/{shlex.quote(d)} ] || made+=({shlex.quote(d)})' for d in dirs(payload))]


def script_check() -> list[str]:
    """The wants directory holds a symlink (check_targets refuses those): its directory is checked alone."""
    return [f'trusted_dir "$ROOT"/{shlex.quote(WANTS_DIR)}']


def script_install(cluster: str, exec_start: str) -> list[str]:
    """Write the unit (recording `made` plus what an earlier apply made) and its wants link.
    `exec_start` is bash words (expanded at run time: the tool's absolute path)."""
    unit, link = '"$ROOT"/' + shlex.quote(unit_file(cluster)), '"$ROOT"/' + shlex.quote(wants_link(cluster))
    header = shlex.quote(unit_text(cluster, ["X"], []).split("\n", 1)[0])
    body = unit_text(cluster, ["X"], []).split("\n", 1)[1].replace("ExecStart=X", "ExecStart=%s")
    return [
        "# Boot: this cluster's own oneshot unit loads only its payload (never a flush of others).",
        f'[ -f {unit} ] && while IFS= read -r line; do case $line in {shlex.quote(MADE)}*) '
        f'made+=("${{line#{shlex.quote(MADE)}}}") ;; esac; done <{unit}',
        f"exec_start={exec_start}",
        f"write_file_safely {unit} 644 printf '%s\\n' {header} "
        f'${{made[@]+"${{made[@]/#/{MADE}}}"}} "$(printf {shlex.quote(body)} "$exec_start")"',
        f'if [ -L {link} ]; then [ "$(readlink -- {link})" = {shlex.quote("/" + unit_file(cluster))} ] || '
        f'netfwd_refuse {shlex.quote(wants_link(cluster) + ": not netfwd" + chr(39) + "s link")}',
        f"else refuse_planted {link}; mkdir -p -- \"$(dirname -- {link})\"; "
        f"ln -s -- {shlex.quote('/' + unit_file(cluster))} {link}; fi",
        'if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || say "systemctl daemon-reload failed"; fi',
    ]


def script_uninstall(cluster: str, payload: str) -> list[str]:
    """Undo script_install: link, unit, payload, then the directories apply made (when empty)."""
    unit, link = '"$ROOT"/' + shlex.quote(unit_file(cluster)), '"$ROOT"/' + shlex.quote(wants_link(cluster))
    return [
        "# Boot: take away this cluster's unit, its link, its payload and the directories apply made.",
        "made=()",
        f'[ -f {unit} ] && ! [ -L {unit} ] && while IFS= read -r line; do case $line in {shlex.quote(MADE)}*) '
        f'made+=("${{line#{shlex.quote(MADE)}}}") ;; esac; done <{unit}',
        f'if [ -L {link} ] && [ "$(readlink -- {link})" = {shlex.quote("/" + unit_file(cluster))} ]; then '
        f"rm -f -- {link}; fi",
        f"remove_file_safely {unit}",
        f"remove_file_safely \"$ROOT\"/{shlex.quote(payload)}",
        'for ((i = ${#made[@]} - 1; i >= 0; i--)); do rmdir -- "$ROOT/${made[i]}" 2>/dev/null || true; done',
        'if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi',
    ]
