"""One relay, many clusters: each cluster's objects, state and files are its own.

On every live backend and every Linux dialect: two clusters' specs on one lab relay both carry
traffic through real DNAT; applying or removing one leaves the other live; a listen port another
cluster already takes is refused naming both; `status` groups by cluster. And relays set up by
versions with global names (NETFWD-PRE ..., `table inet netfwd`, 90-netfwd.conf) are taken over
by the next apply of the cluster their rule comments name, never by another cluster's; so are
firewalld ipsets named after their forward (before they were named after their contents).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from netfwd import owned, xtables
from netfwd.dialects import get_dialect
from netfwd.dialects.firewalld import forward_rule, ipset_name, legacy_ipset_name, masquerade_rule
from netfwd.dialects.nft import ruleset as nft_ruleset
from netfwd.spec import parse_spec
from tests.engine.test_apply_netns import BACKENDS, Relay
from tests.dialects.test_dialect_nft import ISOLATED

pytestmark = pytest.mark.netns

PORTS = {"blue": (16443, 6443), "green": (16444, 6444)}  # cluster: (listen port, on-prem port)


def spec_text(lab, cluster: str, listen: int | None = None) -> str:
    a = lab.addrs
    port, target = PORTS[cluster]
    return f"""version: 1
cluster: {cluster}
relay: {{os: linux, interface: {a.relay_outside_if}}}
forwards:
  - name: api-{cluster}
    listen: {{port: {listen or port}}}
    to: {{address: {a.onprem}, port: {target}}}
    allow: {{cidrs: [{a.allowed_cidr}]}}
"""


def write(lab, folder: Path, cluster: str, listen: int | None = None) -> str:
    path = folder / f"{cluster}-{listen or 'spec'}.yaml"
    path.write_text(spec_text(lab, cluster, listen))
    return str(path)


def reaches(lab, cluster: str) -> bool:
    a = lab.addrs
    return lab.connect("client", a.relay_outside, PORTS[cluster][0], source=a.client_allowed, timeout=2).ok


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_clusters_share_a_relay(relay_for, tmp_path, backend):
    relay: Relay = relay_for(backend)
    lab = relay.lab
    for _, target in PORTS.values():
        lab.start_server("onprem", target)
    blue, green = write(lab, tmp_path, "blue"), write(lab, tmp_path, "green")

    relay.netfwd("apply", blue, "--yes")
    relay.netfwd("apply", green, "--yes")
    assert reaches(lab, "blue") and reaches(lab, "green")
    assert "no changes" in relay.netfwd("apply", blue, "--yes").stdout  # the other cluster is no drift
    # blue's record now vouches for the firewall as green left it: blue's next change still sees green
    taken = relay.netfwd("apply", write(lab, tmp_path, "blue", listen=PORTS["green"][0]), "--yes", expect=3)
    assert "'green'" in taken.stderr and "'blue'" in taken.stderr and f":{PORTS['green'][0]}/tcp" in taken.stderr
    assert reaches(lab, "blue") and reaches(lab, "green")

    status = json.loads(relay.netfwd("status", "--output", "json").stdout)
    by_cluster = {r["cluster"]: [(f["listen_port"], f["to_port"]) for f in r["forwards"]] for r in status["clusters"]}
    assert by_cluster == {name: [ports] for name, ports in PORTS.items()}
    assert all(r["drift"] is None for r in status["clusters"])
    text = relay.netfwd("status").stdout
    assert "cluster:  blue" in text and "cluster:  green" in text

    # a third cluster asking for blue's listen port: refused, both named, nothing applied
    before = relay.owned() if not relay.fw else None
    clash = relay.netfwd("apply", write(lab, tmp_path, "green", listen=PORTS["blue"][0]), "--yes", expect=3)
    assert "'green'" in clash.stderr and "'blue'" in clash.stderr and "api-green" in clash.stderr
    if not relay.fw:
        assert relay.owned() == before and "api-blue" in clash.stderr

    relay.netfwd("remove", green)  # removes green's only
    assert reaches(lab, "blue") and not reaches(lab, "green")
    assert (relay.root / owned.sysctl_file("blue")).exists() and not (relay.root / owned.sysctl_file("green")).exists()
    refused = relay.netfwd("remove", expect=2)  # one cluster left recorded, but green was too: say which
    assert "--cluster" in refused.stderr
    relay.netfwd("remove", "--cluster", "blue")
    assert not reaches(lab, "blue")


def run_script(lab, text: str, root: Path) -> None:
    lab.run("relay", [*ISOLATED, str(root)], input=text)


@pytest.mark.parametrize("dialect_name", ["iptables", "iptables-restore", "nft"])
def test_two_clusters_scripts_share_a_relay(lab, tmp_path, dialect_name):
    """(The firewalld dialect's two-cluster run is in tests/dialects/test_dialect_firewalld.py.)"""
    dialect = get_dialect(dialect_name)
    for _, target in PORTS.values():
        lab.start_server("onprem", target)
    specs = {name: parse_spec(spec_text(lab, name), f"{name}.yaml") for name in PORTS}
    lab.enable_forwarding()
    for spec in specs.values():
        run_script(lab, dialect.render(spec), tmp_path)
    assert reaches(lab, "blue") and reaches(lab, "green")
    run_script(lab, dialect.render(specs["blue"]), tmp_path)  # re-applying one keeps the other
    assert reaches(lab, "green")
    run_script(lab, dialect.render_remove(specs["green"]), tmp_path)
    assert reaches(lab, "blue") and not reaches(lab, "green")
    assert (tmp_path / owned.sysctl_file("blue")).exists() and not (tmp_path / owned.sysctl_file("green")).exists()
    run_script(lab, dialect.render_remove(specs["blue"]), tmp_path)
    assert not reaches(lab, "blue")
    dump = lab.run("relay", ["nft", "list", "ruleset"]).stdout + lab.run("relay", ["iptables-save"]).stdout
    assert "netfwd" not in dump and "NETFWD" not in dump


# -- relays set up by versions with global names --------------------------------------------------

def legacy_iptables(spec) -> str:
    """What an earlier version applied: the same rules in the global chains, and the jumps to them."""
    lines = []
    for line in xtables.restore_payload(spec).splitlines():
        if line == "COMMIT":
            table = lines[0][1:] if not any(l == "COMMIT" for l in lines) else "filter"
            lines += [f"-I {b} 1 -j {owned.chain(spec.cluster, k)}" for k, b in xtables.BUILTIN_OF.items()
                      if xtables.TABLE_OF[k] == table]
        lines.append(line)
    text = "\n".join(lines) + "\n"
    for kind, old in owned.LEGACY_CHAINS.items():
        text = text.replace(owned.chain(spec.cluster, kind), old)
    return text


def legacy_nft(spec) -> str:
    return nft_ruleset(spec).replace(owned.nft_table(spec.cluster), owned.LEGACY_NFT_TABLE)


@pytest.mark.parametrize("backend", ["iptables", "nft"])
def test_global_objects_of_earlier_versions_are_taken_over_by_their_cluster_only(relay_for, tmp_path, backend):
    relay: Relay = relay_for(backend)
    lab = relay.lab
    for _, target in PORTS.values():
        lab.start_server("onprem", target)
    blue = parse_spec(spec_text(lab, "blue"), "blue.yaml")
    if backend == "nft":
        relay.relay(["nft", "-f", "-"], input=legacy_nft(blue))
    else:
        relay.relay(["iptables-nft-restore", "--noflush"], input=legacy_iptables(blue))
    lab.enable_forwarding()
    (relay.root / owned.LEGACY_SYSCTL_FILE).parent.mkdir(parents=True, exist_ok=True)
    (relay.root / owned.LEGACY_SYSCTL_FILE).write_text("# written by netfwd for cluster blue\nnet.ipv4.ip_forward = 1\n")
    assert reaches(lab, "blue")

    relay.netfwd("apply", write(lab, tmp_path, "green"), "--yes")  # another cluster: blue's global objects stay
    assert reaches(lab, "blue") and reaches(lab, "green")
    assert (relay.root / owned.LEGACY_SYSCTL_FILE).exists()
    legacy = relay.dump()
    assert ("table inet netfwd {" in legacy) if backend == "nft" else (":NETFWD-PRE" in legacy)

    relay.netfwd("apply", write(lab, tmp_path, "blue"), "--yes")  # blue's own apply migrates them
    assert reaches(lab, "blue") and reaches(lab, "green")
    migrated = relay.dump()
    assert "table inet netfwd {" not in migrated and ":NETFWD-PRE " not in migrated and "-j NETFWD-PRE" not in migrated
    assert not (relay.root / owned.LEGACY_SYSCTL_FILE).exists() and (relay.root / owned.sysctl_file("blue")).exists()
    for cluster in PORTS:
        relay.netfwd("remove", "--cluster", cluster)
    leftover = relay.dump()
    assert "table inet netfwd" not in leftover and "NETFWD" not in leftover


def per_forward_ipset_name(cluster: str, forward) -> str:
    """The name the versions between global and content names gave each forward's own ipset."""
    return owned.ipset_prefix(cluster) + hashlib.sha256(f"{forward.name}/{forward.family}".encode()).hexdigest()[:10]


@pytest.mark.parametrize("userland", ["modern", "centos7"])
@pytest.mark.parametrize("engine", ["apply", "script"])
def test_firewalld_ipsets_of_earlier_names_are_taken_over(relay_for, tmp_path, engine, userland):
    """A relay set up by earlier versions: one ipset per forward, named after the forward (with the
    cluster's tag, or before that without). The cluster's next apply (backend or script) moves its
    rules to the shared, content-named ipsets and deletes the old ones, runtime and permanent; another
    cluster's ipsets stay."""
    relay: Relay = relay_for("firewalld", userland)
    lab, a = relay.lab, relay.lab.addrs
    for _, target in PORTS.values():
        lab.start_server("onprem", target)
    text = spec_text(lab, "blue") + f"""  - name: second
    listen: {{port: 16445}}
    to: {{address: {a.onprem}, port: {PORTS["blue"][1]}}}
    allow: {{cidrs: [{a.allowed_cidr}]}}
"""
    blue = parse_spec(text, "blue.yaml")
    (tmp_path / "blue.yaml").write_text(text)
    fw = get_dialect("firewalld")
    old = {forward.name: name for forward, name in zip(
        blue.forwards, (per_forward_ipset_name("blue", blue.forwards[0]), legacy_ipset_name(blue.forwards[1])))}
    for forward in blue.forwards:
        name = old[forward.name]
        lab.firewall_cmd("--permanent", f"--new-ipset={name}", "--type=hash:net")
        lab.firewall_cmd("--permanent", f"--ipset={name}", f"--add-entry={a.allowed_cidr}")
        for rule in (forward_rule(forward, name), masquerade_rule(forward, name)):
            lab.firewall_cmd("--permanent", f"--add-rich-rule={rule}")
    lab.firewall_cmd("--reload")
    lab.enable_forwarding()
    assert reaches(lab, "blue")
    relay.netfwd("apply", write(lab, tmp_path, "green"), "--yes")  # another cluster's apply leaves them
    green_sets = set(netfwd_ipsets(lab)) - set(old.values())
    assert set(old.values()) <= set(netfwd_ipsets(lab))

    if engine == "apply":
        relay.netfwd("apply", str(tmp_path / "blue.yaml"), "--yes")
    else:
        lab.relay_exec_fw(["env", f"NETFWD_ROOT={relay.root}", "bash", "-s"], input=fw.render(blue), timeout=300)
    shared = ipset_name("blue", blue.forwards[0])
    assert shared == ipset_name("blue", blue.forwards[1])
    for permanent in (False, True):
        assert sorted(netfwd_ipsets(lab, permanent)) == sorted(green_sets | {shared})
        rules = lab.firewall_cmd(*(("--permanent",) if permanent else ()), "--list-rich-rules").stdout
        assert not any(name in rules for name in old.values())
        blue_rules = sorted(e for e in fw.parse(rules) if e.listen_port != PORTS["green"][0])  # sources: "@ipset"
        assert blue_rules == sorted(e._replace(sources=(f"@{shared}",)) for e in fw.expected(blue))
    assert not any(name in relay.kernel() for name in old.values())  # 0.6.3 keeps kernel sets: destroyed too
    assert reaches(lab, "blue") and reaches(lab, "green")
    assert lab.whoami("client", a.relay_outside, 16445, source=a.client_allowed) == a.relay_inside
    if engine == "apply":
        relay.netfwd("plan", str(tmp_path / "blue.yaml"))  # exit 0: in sync


def netfwd_ipsets(lab, permanent: bool = True) -> list[str]:
    conf = ("--permanent",) if permanent else ()
    return [n for n in lab.firewall_cmd(*conf, "--get-ipsets").stdout.split() if n.startswith("netfwd-")]
