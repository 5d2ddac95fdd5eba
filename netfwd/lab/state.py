"""What a lab created, written down *before* creating it, so `lab down` works after a crash.

One JSON file per lab under ``$NETFWD_LAB_DIR`` (default ``/run/netfwd/lab``): the namespaces,
the processes (PID plus start time, so a recycled PID is never killed) and the work directory.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from netfwd import trust
from netfwd.safefiles import write_atomic
from netfwd.host import proc_start

LAB_NAME_RE = re.compile(r"^[a-z0-9]{1,12}$")
NS_PREFIX = "nf-"


DIR_MODE = 0o700  # the lab directory, when netfwd makes it: root's alone


def lab_dir() -> Path:
    return Path(os.environ.get("NETFWD_LAB_DIR", "/run/netfwd/lab"))


def trusted_lab_dir() -> Path:
    """The lab directory, refused (exit 3) when someone other than root could plant files in it
    or in a parent: lab up/down act as root on what its records name."""
    directory = lab_dir()
    trust.check_dir(directory)
    return directory


def ns_name(lab: str, node: str) -> str:
    return f"{NS_PREFIX}{lab}-{node}"




@dataclass
class Process:
    pid: int
    starttime: int | None
    node: str
    kind: str
    argv: list[str]
    port: int | None = None
    log: str | None = None

    def alive(self) -> bool:
        """Still the same process we started (not a recycled PID), and not a zombie."""
        return self.starttime is not None and proc_start(self.pid) == self.starttime


@dataclass
class LabState:
    name: str
    router: bool = False
    onprem_route_back: bool = False
    userland: str = "modern"  # or "centos7" (netfwd.lab.userland)
    namespaces: list[str] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    addrs: dict[str, Any] = field(default_factory=dict)
    workdir: str = ""
    created: float = field(default_factory=time.time)
    complete: bool = False
    kind: str = "single"  # or "fleet" (netfwd.lab.fleet)
    owner_pid: int = field(default_factory=os.getpid)
    owner_starttime: int | None = field(default_factory=lambda: proc_start(os.getpid()))

    def owner_alive(self) -> bool:
        """Is the process that built this lab still running (a hint for spotting abandoned labs)?"""
        return proc_start(self.owner_pid) == self.owner_starttime

    @property
    def path(self) -> Path:
        return state_path(self.name)

    def save(self) -> None:
        """Atomic write: a crash leaves either the old or the new record, never half a file."""
        write_atomic(self.path, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", dir_mode=DIR_MODE)

    @classmethod
    def load(cls, name: str) -> "LabState":
        data = json.loads(trust.read_text(state_path(name)))
        data["processes"] = [Process(**p) for p in data.get("processes", [])]
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)


def state_path(name: str) -> Path:
    return lab_dir() / f"{name}.json"


def recorded_labs() -> list[str]:
    """Names of every lab with a state file (complete or not)."""
    directory = trusted_lab_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.json") if LAB_NAME_RE.match(p.stem))
