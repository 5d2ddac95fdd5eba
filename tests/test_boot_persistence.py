"""Boot persistence restores netfwd's own rules alone (netfwd/bootunit.py).

For each family, script and backend: apply in a lab relay under a scratch root; the files are the
cluster's payload, its oneshot unit and the unit's wants link - never a save of the host's whole
ruleset, never an include from nftables.conf. Then what the unit would run at boot (its ExecStart,
read from the unit file, paths under the scratch root) runs in a FRESH lab relay that already holds
foreign rules: netfwd's rules come back, the foreign ones are untouched. Remove leaves the scratch
root exactly as it was before apply.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from netfwd import bootunit, owned
from netfwd.dialects import get_dialect
from netfwd.spec import open_spec
from tests.engine.test_apply_netns import Relay
from tests.engine.test_clusters import spec_text
from tests.dialects.test_dialect_nft import ISOLATED

pytestmark = pytest.mark.netns

FOREIGN_NFT = "table ip other {\n\tchain c {\n\t\ttype filter hook input priority 0; policy accept;\n\t\ttcp dport 9 accept\n\t}\n}\n"
NFTABLES_CONF = "#!/usr/sbin/nft -f\nflush ruleset\n"


def tree(root: Path) -> dict[str, str]:
    """Every path under root: its kind, mode and content (link target), to compare before/after."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            if path.is_symlink():
                found[str(path.relative_to(root))] = f"link {os.readlink(path)}"
            elif path.is_dir():
                found[str(path.relative_to(root))] = f"dir {oct(info.st_mode)}"
            else:
                found[str(path.relative_to(root))] = f"file {oct(info.st_mode)} {path.read_text()}"
    return found


def boot_command(root: Path, cluster: str) -> list[str]:
    """The unit's ExecStart, with its /etc paths moved under the scratch root."""
    unit = (root / bootunit.unit_file(cluster)).read_text()
    words = shlex.split(next(l for l in unit.splitlines() if l.startswith("ExecStart="))[len("ExecStart="):])
    return [str(root) + w if w.startswith("/etc/") else w for w in words]


def nft_ruleset(lab) -> str:
    return lab.run("relay", ["nft", "list", "ruleset"]).stdout


def nft_table(lab, cluster: str) -> str:
    return lab.run("relay", ["nft", "list", "table", *owned.nft_table(cluster).split()]).stdout


@pytest.mark.parametrize("how", ["script", "backend"])
def test_nft_boot_unit_loads_only_the_clusters_table(make_lab, tmp_path, how):
    lab = make_lab()
    relay = Relay(lab, "nft", tmp_path)
    root = relay.root
    (root / "etc/sysctl.d").mkdir(parents=True)
    (root / "etc/nftables.conf").write_text(NFTABLES_CONF)
    before_tree = tree(root)
    spec_path = tmp_path / "blue.yaml"
    spec_path.write_text(spec_text(lab, "blue"))
    spec = open_spec(str(spec_path)).spec
    dialect = get_dialect("nft")

    def run(action: str) -> None:
        if how == "backend":
            relay.netfwd(action, str(spec_path), *(["--yes"] if action == "apply" else []))
        else:
            text = dialect.render(spec) if action == "apply" else dialect.render_remove(spec)
            lab.run("relay", [*ISOLATED, str(root)], input=text)

    run("apply")
    run("apply")  # re-apply keeps one unit, one link, and the record of what the first apply made
    applied = nft_table(lab, "blue")
    unit = (root / bootunit.unit_file("blue")).read_text()
    assert os.readlink(root / bootunit.wants_link("blue")) == f"/{bootunit.unit_file('blue')}"
    assert "WantedBy=multi-user.target" in unit and "Type=oneshot" in unit
    assert bootunit.made_of(unit) == ["etc/nftables.d", "etc/systemd", "etc/systemd/system",
                                      "etc/systemd/system/multi-user.target.wants"]
    assert (root / "etc/nftables.conf").read_text() == NFTABLES_CONF  # no include: its flush is not ours
    assert "flush" not in (root / owned.nft_file("blue")).read_text()
    command = boot_command(root, "blue")
    assert command[1:] == ["-f", str(root / owned.nft_file("blue"))] and command[0].startswith("/")

    boot = make_lab()  # a freshly booted relay with someone else's table
    boot.run("relay", ["nft", "-f", "-"], input=FOREIGN_NFT)
    foreign = nft_ruleset(boot)
    boot.run("relay", command)
    assert nft_table(boot, "blue") == applied  # netfwd's table is back, as apply left it
    assert nft_ruleset(boot) == foreign + applied  # the foreign table untouched, nothing else added

    run("remove")
    assert tree(root) == before_tree


XT_FLAVOURS = {"iptables": "iptables-nft", "iptables-legacy": "iptables-legacy", "libiptc": "iptables-legacy"}
FOREIGN_XT = "*filter\n:FOREIGN - [0:0]\n-A INPUT -p tcp --dport 9 -j FOREIGN\n-A FOREIGN -j ACCEPT\nCOMMIT\n" \
             "*nat\n-A PREROUTING -p tcp --dport 7 -j REDIRECT --to-ports 9\nCOMMIT\n"


def xt_save(lab, iptables: str) -> str:
    """The host's tables, counters and comments of the save tool stripped (comparable across runs)."""
    text = lab.run("relay", [f"{iptables}-save"]).stdout
    return "\n".join(l.split(" [", 1)[0] if l.startswith(":") else l
                     for l in text.splitlines() if not l.startswith("#"))


@pytest.mark.parametrize("how", ["iptables-script", "iptables-restore-script", "iptables", "iptables-legacy", "libiptc"])
def test_iptables_boot_unit_restores_only_the_clusters_chains(make_lab, tmp_path, how):
    lab = make_lab()
    backend = how if not how.endswith("-script") else "iptables"
    relay = Relay(lab, backend, tmp_path)
    iptables = XT_FLAVOURS[backend]
    lab.run("relay", [f"{iptables}-restore"], input=FOREIGN_XT)  # the same foreign rules as at boot below
    root = relay.root
    (root / "etc/sysctl.d").mkdir(parents=True)
    (root / "etc/iptables").mkdir()
    (root / "etc/iptables/rules.v4").write_text("# the admin's own save\n*filter\nCOMMIT\n")
    before_tree = tree(root)
    spec_path = tmp_path / "blue.yaml"
    spec_path.write_text(spec_text(lab, "blue"))
    spec = open_spec(str(spec_path)).spec

    def run(action: str) -> None:
        if not how.endswith("-script"):
            relay.netfwd(action, str(spec_path), *(["--yes"] if action == "apply" else []))
            return
        dialect = get_dialect(how.removesuffix("-script"))
        text = dialect.render(spec) if action == "apply" else dialect.render_remove(spec)
        lab.run("relay", ["env", f"NETFWD_ROOT={root}", f"NETFWD_IPTABLES={iptables}", "bash", "-s"], input=text)

    run("apply")
    run("apply")
    applied = xt_save(lab, iptables)
    unit = (root / bootunit.unit_file("blue")).read_text()
    assert os.readlink(root / bootunit.wants_link("blue")) == f"/{bootunit.unit_file('blue')}"
    assert bootunit.made_of(unit) == ["etc/netfwd", "etc/systemd", "etc/systemd/system",
                                      "etc/systemd/system/multi-user.target.wants"]
    assert tree(root)["etc/iptables/rules.v4"] == before_tree["etc/iptables/rules.v4"]  # the host's save untouched
    command = boot_command(root, "blue")
    assert command[1:] == ["--noflush", str(root / owned.xtables_file("blue"))]
    assert command[0].startswith("/") and command[0].endswith("-restore")
    payload = (root / owned.xtables_file("blue")).read_text()
    assert all(owned.chain_prefix("blue") in l for l in payload.splitlines() if l[0] in "-:")  # only its own

    boot = make_lab()  # a freshly booted relay with someone else's rules
    boot.run("relay", [f"{iptables}-restore"], input=FOREIGN_XT)
    foreign = xt_save(boot, iptables)
    boot.run("relay", command)
    assert xt_save(boot, iptables) == applied  # netfwd's chains and jumps back, as apply left them
    assert foreign != applied and [l for l in applied.splitlines() if owned.chain_prefix("blue") not in l] == \
        foreign.splitlines()  # the foreign rules untouched, in their order; nothing flushed

    run("remove")
    assert tree(root) == before_tree
