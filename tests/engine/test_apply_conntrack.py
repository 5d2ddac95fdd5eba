"""After `netfwd apply` changes a forward's target, connections tracked for the old target are
forgotten (a steady UDP flow would otherwise keep its old DNAT mapping forever); unchanged
forwards keep theirs."""

from __future__ import annotations

import pytest

from tests.engine.test_apply_netns import A, B, Relay

pytestmark = pytest.mark.netns


def udp_spec(lab, path, port):
    a = lab.addrs
    path.write_text(f"""version: 1
cluster: lab-conntrack
relay: {{os: linux, interface: {a.relay_outside_if}}}
forwards:
  - name: dns-like
    listen: {{port: {A}}}
    to: {{address: {a.onprem}, port: {port}}}
    protocol: udp
    allow: {{cidrs: [{a.allowed_cidr}]}}
""")
    return str(path)


def tracked(lab, port):
    return f"dport={A}" in lab.run("relay", ["conntrack", "-L", "-p", "udp", "--reply-port-src", str(port)]).stdout


@pytest.mark.parametrize("backend", ["iptables", "nft"])
def test_a_changed_target_forgets_the_old_mapping_only(lab, tmp_path, backend):
    a, relay = lab.addrs, Relay(lab, backend, tmp_path)
    old, new = B, B + 1
    for port in (old, new):
        lab.start_server("onprem", port, kind="whoami", udp=True)
    relay.netfwd("apply", udp_spec(lab, tmp_path / "old.yaml", old), "--yes")
    assert lab.connect("client", a.relay_outside, A, source=a.client_allowed, udp=True).ok
    assert tracked(lab, old)

    done = relay.netfwd("apply", udp_spec(lab, tmp_path / "new.yaml", new), "--yes")
    assert not tracked(lab, old), "the old target's mapping survived the change"
    assert "old target" in done.stderr + done.stdout
    assert lab.connect("client", a.relay_outside, A, source=a.client_allowed, udp=True).ok
    assert tracked(lab, new)

    relay.netfwd("apply", str(tmp_path / "new.yaml"), "--yes")  # nothing changed: mappings stay
    assert tracked(lab, new)


@pytest.mark.parametrize("dialect", ["iptables", "iptables-restore", "firewalld"])
def test_every_dialects_script_forgets_the_old_mapping_too(make_lab, tmp_path, dialect):
    """The rendered scripts do what apply does (the nft script's case is in tests/dialects/test_dialect_nft.py)."""
    from netfwd.dialects import get_dialect
    from netfwd.spec import load_spec

    fw = dialect == "firewalld"
    lab = make_lab(firewalld=fw)
    a, root = lab.addrs, tmp_path / "root"
    root.mkdir()
    render = get_dialect(dialect)
    argv = ["env", f"NETFWD_ROOT={root}", "bash", "-s"]

    def run(text: str) -> None:
        if fw:
            lab.relay_exec_fw(argv, input=text, timeout=300)
        else:
            lab.run("relay", argv, input=text)

    old, new = B, B + 1
    for port in (old, new):
        lab.start_server("onprem", port, kind="whoami", udp=True)
    run(render.render(load_spec(udp_spec(lab, tmp_path / "old.yaml", old))))
    assert lab.connect("client", a.relay_outside, A, source=a.client_allowed, udp=True).ok
    assert tracked(lab, old)

    new_spec = load_spec(udp_spec(lab, tmp_path / "new.yaml", new))
    run(render.render(new_spec))
    assert not tracked(lab, old), "the old target's mapping survived the change"
    assert lab.connect("client", a.relay_outside, A, source=a.client_allowed, udp=True).ok
    assert tracked(lab, new)
    run(render.render(new_spec))  # nothing changed: mappings stay
    assert tracked(lab, new)
    run(render.render_remove(new_spec))
    assert not tracked(lab, new)
