"""firewalld's D-Bus API in ONE process: read and converge netfwd's ipsets and rich rules.

Runs under the Python that runs firewall-cmd (it needs firewalld's own `firewall.client` and
python3-dbus, which netfwd's virtualenv does not have), so it imports nothing from netfwd:

    <firewalld's python> fwdbus.py read  <<< {"interfaces": ["eth0", ...]}
    <firewalld's python> fwdbus.py write <<< {"target": {"permanent": {...}, "runtime": {...}}}

A firewall-cmd call costs a Python start-up (~0.3 s) each; one helper reads both configurations
and makes every change over one D-Bus connection. Owned = ipsets named ``netfwd-*`` and rich rules
that use one as their source, in any zone; nothing else is read or written.

Write order: permanent first (new ipsets, each zone's rich-rule list in one update, stale ipsets
last), then the runtime. A netfwd ipset that must appear or disappear at runtime needs `reload`
(firewalld creates ipsets in the permanent configuration only); reload makes the runtime equal the
permanent configuration in one firewalld transaction. Otherwise runtime rules are added before
stale ones are removed, so a replaced forward never has a gap.
"""

import json
import sys

PREFIX = "netfwd-"


def _ours(rule):
    return f'source ipset="{PREFIX}' in rule


def read(fw, request):
    cfg = fw.config()
    default = str(fw.getDefaultZone())
    zones_of = {}
    for iface in request.get("interfaces", []):
        zone = str(fw.getZoneOfInterface(iface) or "")
        zones_of[iface] = zone or default
    runtime_sets = {}
    for name in fw.getIPSets():
        if str(name).startswith(PREFIX):
            settings = fw.getIPSetSettings(name)
            runtime_sets[str(name)] = {"family": settings.getOptions().get("family", "inet"),
                                       "entries": sorted(str(e) for e in fw.getEntries(name))}
    runtime_rules = {}
    for zone in fw.getZones():
        rules = sorted(str(r) for r in fw.getRichRules(zone) if _ours(str(r)))
        if rules:
            runtime_rules[str(zone)] = rules
    permanent_sets = {}
    for name in cfg.getIPSetNames():
        if str(name).startswith(PREFIX):
            settings = cfg.getIPSetByName(name).getSettings()
            permanent_sets[str(name)] = {"family": settings.getOptions().get("family", "inet"),
                                         "entries": sorted(str(e) for e in settings.getEntries())}
    permanent_rules = {}
    for zone in cfg.getZoneNames():
        rules = sorted(str(r) for r in cfg.getZoneByName(zone).getSettings().getRichRules() if _ours(str(r)))
        if rules:
            permanent_rules[str(zone)] = rules
    return {"default_zone": default, "zones_of": zones_of,
            "runtime": {"ipsets": runtime_sets, "rules": runtime_rules},
            "permanent": {"ipsets": permanent_sets, "rules": permanent_rules}}


def write(fw, request):
    from firewall.client import FirewallClientIPSetSettings

    target = request["target"]
    current = read(fw, {})
    cfg = fw.config()
    done = []
    # -- permanent ---------------------------------------------------------------------------
    want_sets, have_sets = target["permanent"]["ipsets"], current["permanent"]["ipsets"]
    for name, spec in want_sets.items():
        if name not in have_sets:
            settings = FirewallClientIPSetSettings()
            settings.setType("hash:net")
            settings.setOptions({"family": spec["family"]})
            settings.setEntries(spec["entries"])
            cfg.addIPSet(name, settings)
            done.append(f"permanent: new ipset {name}")
        elif have_sets[name] != spec:
            if have_sets[name]["family"] != spec["family"]:
                raise SystemExit(f"ipset {name} changed family; remove netfwd's objects first")
            ipset = cfg.getIPSetByName(name)
            settings = ipset.getSettings()
            settings.setEntries(spec["entries"])
            ipset.update(settings)
            done.append(f"permanent: entries of {name}")
    want_rules, have_rules = target["permanent"]["rules"], current["permanent"]["rules"]
    for zone in sorted(set(want_rules) | set(have_rules)):
        if sorted(want_rules.get(zone, [])) == have_rules.get(zone, []):
            continue
        handle = cfg.getZoneByName(zone)
        settings = handle.getSettings()
        others = [r for r in settings.getRichRules() if not _ours(str(r))]
        settings.setRichRules(others + list(want_rules.get(zone, [])))
        handle.update(settings)
        done.append(f"permanent: rich rules of zone {zone}")
    for name in have_sets:
        if name not in want_sets:
            cfg.getIPSetByName(name).remove()
            done.append(f"permanent: removed ipset {name}")
    # -- runtime -----------------------------------------------------------------------------
    want_sets, have_sets = target["runtime"]["ipsets"], current["runtime"]["ipsets"]
    if set(want_sets) != set(have_sets):
        fw.reload()
        done.append("reload (netfwd ipsets appear or disappear)")
        return {"done": done, "commits": 1}
    for name, spec in want_sets.items():
        if have_sets[name]["entries"] != spec["entries"]:
            fw.setEntries(name, spec["entries"])
            done.append(f"runtime: entries of {name}")
    want_rules, have_rules = target["runtime"]["rules"], current["runtime"]["rules"]
    removals = []
    for zone in sorted(set(want_rules) | set(have_rules)):
        want, have = set(want_rules.get(zone, [])), set(have_rules.get(zone, []))
        for rule in sorted(want - have):
            fw.addRichRule(zone, rule)
            done.append(f"runtime: + {zone} {rule}")
        removals += [(zone, rule) for rule in sorted(have - want)]
    for zone, rule in removals:
        fw.removeRichRule(zone, rule)
        done.append(f"runtime: - {zone} {rule}")
    return {"done": done, "commits": None}


def main():
    try:
        from firewall.client import FirewallClient
    except ImportError as problem:
        print(json.dumps({"error": f"firewalld's Python module is missing: {problem}"}))
        return 3
    request = json.loads(sys.stdin.read() or "{}")
    try:
        fw = FirewallClient()
        if not fw.connected:
            print(json.dumps({"error": "firewalld is not running (no answer on D-Bus)"}))
            return 3
        result = read(fw, request) if sys.argv[1] == "read" else write(fw, request)
    except SystemExit as problem:
        print(json.dumps({"error": str(problem)}))
        return 1
    except Exception as problem:  # noqa: BLE001 - firewalld's errors arrive as D-Bus exceptions
        print(json.dumps({"error": f"{type(problem).__name__}: {problem}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
