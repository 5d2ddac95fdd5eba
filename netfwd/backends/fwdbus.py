"""firewalld's D-Bus API in ONE process: read and converge netfwd's ipsets and rich rules.

Runs under the Python that runs firewall-cmd (it has python3-dbus, which netfwd's virtualenv does
not), so it imports nothing from netfwd, and it calls the D-Bus methods directly (no introspection,
no firewall.client): a whole read is ~20 D-Bus calls, where firewall-cmd costs a Python start-up
(~0.3-1 s) per call.

    <python> fwdbus.py read  <<< {"interfaces": ["eth0", ...]}
    <python> fwdbus.py write <<< {"current": STATE, "target": STATE}
    STATE = {"permanent"|"runtime": {"ipsets": {name: {"family", "entries"}}, "rules": {zone: [rule]}}}

Owned = ipsets named ``netfwd-*`` and rich rules whose source is one, in any zone; nothing else is
written. Write order: permanent first (new ipsets; then each zone's rich rules in one update2; stale
ipsets last). Then the runtime: a netfwd ipset that must appear or disappear there needs `reload`
(firewalld creates ipsets in the permanent configuration only; a reload rebuilds the runtime from it
in one firewalld transaction); otherwise ipset entries are set and each zone's rich rules replaced
with one setZoneSettings2 call (firewalld applies a zone's adds and removals in one transaction).
"""

import json
import sys
import time

STARTED = time.monotonic()
MARKS = []


def mark(what):
    """Phase timings, returned with the answer (netfwd logs them under NETFWD_TIMING)."""
    MARKS.append([what, round(time.monotonic() - STARTED, 3)])

PREFIX = "netfwd-"
NAME = "org.fedoraproject.FirewallD1"
PATH = "/org/fedoraproject/FirewallD1"
TIMEOUT = 900.0  # seconds per D-Bus call


class Firewalld:
    def __init__(self):
        import dbus

        self.dbus = dbus
        self.bus = dbus.SystemBus()
        self.fw = self.bus.get_object(NAME, PATH, introspect=False)
        self.cfg = self.bus.get_object(NAME, PATH + "/config", introspect=False)

    def call(self, obj, interface, method, *args):
        # generous: a reload that builds thousands of ipsets takes minutes, not D-Bus's default 25 s
        return getattr(obj, method)(*args, dbus_interface=NAME + interface, timeout=TIMEOUT)

    def strings(self, items):
        return self.dbus.Array([str(i) for i in items], signature="s")

    def config_object(self, kind, name):
        path = self.call(self.cfg, ".config", f"get{kind}ByName", name)
        return self.bus.get_object(NAME, path, introspect=False)


def _ours(rule):
    return f'source ipset="{PREFIX}' in rule


def _rules(settings):
    return [str(r) for r in settings.get("rules_str", [])]


def read(fw, request):
    default = str(fw.call(fw.fw, "", "getDefaultZone"))
    zones_of = {}
    for iface in request.get("interfaces", []):
        zones_of[iface] = str(fw.call(fw.fw, ".zone", "getZoneOfInterface", iface) or "") or default
    state = {"runtime": {"ipsets": {}, "rules": {}}, "permanent": {"ipsets": {}, "rules": {}}}
    for name in fw.call(fw.fw, ".ipset", "getIPSets"):
        if str(name).startswith(PREFIX):
            settings = fw.call(fw.fw, ".ipset", "getIPSetSettings", name)
            state["runtime"]["ipsets"][str(name)] = {"family": str(settings[4].get("family", "inet")),
                                                     "entries": sorted(str(e) for e in settings[5])}
    for zone in fw.call(fw.fw, ".zone", "getZones"):
        rules = sorted(r for r in _rules(fw.call(fw.fw, ".zone", "getZoneSettings2", zone)) if _ours(r))
        if rules:
            state["runtime"]["rules"][str(zone)] = rules
    for name in fw.call(fw.cfg, ".config", "getIPSetNames"):
        if str(name).startswith(PREFIX):
            settings = fw.call(fw.config_object("IPSet", name), ".config.ipset", "getSettings")
            state["permanent"]["ipsets"][str(name)] = {"family": str(settings[4].get("family", "inet")),
                                                       "entries": sorted(str(e) for e in settings[5])}
    for zone in fw.call(fw.cfg, ".config", "getZoneNames"):
        settings = fw.call(fw.config_object("Zone", zone), ".config.zone", "getSettings2")
        rules = sorted(r for r in _rules(settings) if _ours(r))
        if rules:
            state["permanent"]["rules"][str(zone)] = rules
    mark("read")
    return {"default_zone": default, "zones_of": zones_of, **state}


def write(fw, request):
    current, target = request["current"], request["target"]
    done = []
    # -- permanent -------------------------------------------------------------------------
    want, have = target["permanent"]["ipsets"], current["permanent"]["ipsets"]
    mark("start")
    for name, spec in want.items():
        if name not in have:
            settings = ("", "", "", "hash:net", fw.dbus.Dictionary({"family": spec["family"]}, signature="ss"),
                        fw.strings(spec["entries"]))
            fw.call(fw.cfg, ".config", "addIPSet", name, settings)
            done.append(f"permanent: new ipset {name}")
        elif have[name] != spec:
            if have[name]["family"] != spec["family"]:
                raise SystemExit(f"ipset {name} changed address family; run netfwd remove first")
            fw.call(fw.config_object("IPSet", name), ".config.ipset", "setEntries", fw.strings(spec["entries"]))
            done.append(f"permanent: entries of {name}")
    want_rules, have_rules = target["permanent"]["rules"], current["permanent"]["rules"]
    mark("permanent ipsets")
    for zone in sorted(set(want_rules) | set(have_rules)):
        if sorted(want_rules.get(zone, [])) == sorted(have_rules.get(zone, [])):
            continue
        handle = fw.config_object("Zone", zone)
        others = [r for r in _rules(fw.call(handle, ".config.zone", "getSettings2")) if not _ours(r)]
        fw.call(handle, ".config.zone", "update2", {"rules_str": fw.strings(others + want_rules.get(zone, []))})
        done.append(f"permanent: rich rules of zone {zone}")
    for name in have:
        if name not in want:
            fw.call(fw.config_object("IPSet", name), ".config.ipset", "remove")
            done.append(f"permanent: removed ipset {name}")
    mark("permanent rules, stale ipsets")
    # -- runtime ---------------------------------------------------------------------------
    want, have = target["runtime"]["ipsets"], current["runtime"]["ipsets"]
    if set(want) != set(have):
        fw.call(fw.fw, "", "reload")
        done.append("reload (netfwd ipsets appear or disappear)")
        mark("reload")
        return {"done": done, "commits": 1}
    for name, spec in want.items():
        if have[name]["entries"] != spec["entries"]:
            fw.call(fw.fw, ".ipset", "setEntries", name, fw.strings(spec["entries"]))
            done.append(f"runtime: entries of {name}")
    want_rules, have_rules = target["runtime"]["rules"], current["runtime"]["rules"]
    for zone in sorted(set(want_rules) | set(have_rules)):
        if sorted(want_rules.get(zone, [])) == sorted(have_rules.get(zone, [])):
            continue
        others = [r for r in _rules(fw.call(fw.fw, ".zone", "getZoneSettings2", zone)) if not _ours(r)]
        fw.call(fw.fw, ".zone", "setZoneSettings2", zone, {"rules_str": fw.strings(others + want_rules.get(zone, []))})
        done.append(f"runtime: rich rules of zone {zone}")
    mark("runtime")
    return {"done": done, "commits": None}


def main():
    request = json.loads(sys.stdin.read() or "{}")
    try:
        fw = Firewalld()
        fw.call(fw.fw, "", "getDefaultZone")
    except ImportError as problem:
        print(json.dumps({"error": f"python3-dbus is missing: {problem}"}))
        return 3
    except Exception as problem:  # noqa: BLE001 - no bus, or firewalld not on it
        name = getattr(problem, "get_dbus_name", lambda: "")() or ""
        if name.endswith(("ServiceUnknown", "NameHasNoOwner", "FileNotFound", "NoServer")):
            print(json.dumps({"error": f"firewalld is not running (D-Bus: {problem})"}))
            return 3
        print(json.dumps({"error": f"firewalld did not answer on D-Bus: {problem}"}))
        return 1
    try:
        result = read(fw, request) if sys.argv[1] == "read" else write(fw, request)
    except SystemExit as problem:
        print(json.dumps({"error": str(problem)}))
        return 1
    except Exception as problem:  # noqa: BLE001 - firewalld's refusals arrive as D-Bus exceptions
        print(json.dumps({"error": f"{type(problem).__name__}: {problem}"}))
        return 1
    mark("end")
    print(json.dumps({**result, "timings": MARKS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
