"""What a sysctl will be after a reboot: the sysctl.d files under a root, read in systemd's order.

`echo 1 > /proc/sys/net/ipv4/ip_forward` lasts until the next boot; only a sysctl.d (or
/etc/sysctl.conf) entry survives. Files with the same name: the first directory wins (/etc over
/run over /usr/lib); all files are then applied sorted by name, /etc/sysctl.conf last (procps);
the last assignment of a key wins. Keys may be spelled with '/' instead of '.'.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

DIRECTORIES = ("etc/sysctl.d", "run/sysctl.d", "usr/local/lib/sysctl.d", "usr/lib/sysctl.d", "lib/sysctl.d")
SYSCTL_CONF = "etc/sysctl.conf"


class Setting(NamedTuple):
    value: str
    file: str  # as it would be on the host: /etc/sysctl.d/90-netfwd.conf
    line: int


def config_files(root: Path) -> list[Path]:
    chosen: dict[str, Path] = {}
    for directory in DIRECTORIES:
        folder = root / directory
        if not folder.is_dir():
            continue
        for path in folder.glob("*.conf"):
            chosen.setdefault(path.name, path)
    files = [chosen[name] for name in sorted(chosen)]
    conf = root / SYSCTL_CONF
    if conf.is_file() and not any(_same(conf, f) for f in files):
        files.append(conf)
    return files


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def persisted(root: Path, keys: tuple[str, ...]) -> Setting | None:
    """The value the boot will give the first of `keys` (aliases of one setting), or None if unset."""
    wanted = {k.replace("/", ".") for k in keys}
    last: Setting | None = None
    for path in config_files(root):
        try:
            text = _read(root, path)
        except OSError:
            continue
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            key, sep, value = line.partition("=")
            if not sep:
                continue
            key = key.strip().lstrip("-").replace("/", ".")
            if key in wanted:
                last = Setting(value.strip(), "/" + str(path.relative_to(root)), number)
    return last


def _read(root: Path, path: Path) -> str:
    """Read a config file; an absolute symlink is followed *inside* the root, never to the host."""
    if path.is_symlink():
        target = Path(path.readlink()) if hasattr(path, "readlink") else Path(path.resolve())
        if target.is_absolute():
            return (root / str(target).lstrip("/")).read_text(errors="replace")
    return path.read_text(errors="replace")
