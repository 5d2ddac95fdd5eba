"""firewalld's D-Bus API in ONE process: read and converge netfwd's ipsets and rich rules.

Runs under the Python that runs firewall-cmd (it has python3-dbus, which netfwd's virtualenv does
not), so it imports nothing from netfwd, and it calls the D-Bus methods directly (no introspection,
no firewall.client): a whole read is ~20 D-Bus calls, where firewall-cmd costs a Python start-up
(~0.3-1 s) per call.

    <python> fwdbus.py read  <<< {"interfaces": ["eth0", ...]}
    <python> fwdbus.py write <<< {"current": STATE, "target": STATE}
    STATE = {"permanent"|"runtime": {"ipsets": {name: {"family", "entries"}}, "rules": {zone: [rule]}}}

Older firewalld (CentOS 7's 0.6.3) has no getZoneSettings2/update2/setZoneSettings2: its zone
settings are a fixed tuple and rich rules have their own calls (getRichRules, setRichRules, and at
runtime addRichRule/removeRichRule one by one). Which API is there is probed once, by introspection.

Owned = ipsets named ``netfwd-*`` and rich rules whose source is one, in any zone; nothing else is
written. Write order: permanent first (new ipsets — many of them as configuration files in one
step, see write_ipset_files; then each zone's rich rules in one update2; stale ipsets last). Then the runtime: a netfwd ipset that must appear or disappear there needs `reload`
(firewalld creates ipsets in the permanent configuration only; a reload rebuilds the runtime from it
in one firewalld transaction); otherwise ipset entries are set and each zone's rich rules replaced
with one setZoneSettings2 call (firewalld applies a zone's adds and removals in one transaction).
"""

import json
import sys
import time

STARTED = time.monotonic()
MARKS = []  # type: list[list[object]]
# (a type comment above, not an annotation: this file may run under an old system Python)


def mark(what):
    """Phase timings, returned with the answer (netfwd logs them under NETFWD_TIMING)."""
    MARKS.append([what, round(time.monotonic() - STARTED, 3)])

PREFIX = "netfwd-"  # replaced by the request's "prefix": the cluster's ipsets (netfwd.owned)
LEGACY: set = set()  # the request's "legacy": exact ipset names of earlier versions this cluster owns
NAME = "org.fedoraproject.FirewallD1"
PATH = "/org/fedoraproject/FirewallD1"
TIMEOUT = 900.0  # seconds per D-Bus call
# older firewalld: the zone settings tuple (firewall/core/io/zone.py in 0.6.3), in order
ZONE_TUPLE = ("version", "short", "description", "UNUSED", "target", "services", "ports", "icmp_blocks",
              "masquerade", "forward_ports", "interfaces", "sources", "rules_str", "protocols", "source_ports",
              "icmp_block_inversion")


class Firewalld:
    def __init__(self):
        import dbus

        self.dbus = dbus
        self.bus = dbus.SystemBus()
        self.fw = self.bus.get_object(NAME, PATH, introspect=False)
        self.cfg = self.bus.get_object(NAME, PATH + "/config", introspect=False)
        self._settings2 = None

    @property
    def settings2(self):
        """Does this firewalld have the dict-based zone settings API (0.6.3 has not)? Asked once."""
        if self._settings2 is None:
            xml = self.fw.Introspect(dbus_interface="org.freedesktop.DBus.Introspectable", timeout=TIMEOUT)
            self._settings2 = 'name="getZoneSettings2"' in str(xml)
        return self._settings2

    def zone_settings(self, zone, permanent):
        """A zone's settings as a dict (old firewalld's tuple, named)."""
        if self.settings2:
            if permanent:
                return self.call(self.config_object("Zone", zone), ".config.zone", "getSettings2")
            return self.call(self.fw, ".zone", "getZoneSettings2", zone)
        if permanent:
            values = self.call(self.config_object("Zone", zone), ".config.zone", "getSettings")
        else:
            values = self.call(self.fw, "", "getZoneSettings", zone)
        return dict(zip(ZONE_TUPLE, values))

    def zone_rules(self, zone, permanent):
        if self.settings2:
            return _rules(self.zone_settings(zone, permanent))
        if permanent:
            return [str(r) for r in self.call(self.config_object("Zone", zone), ".config.zone", "getRichRules")]
        return [str(r) for r in self.call(self.fw, ".zone", "getRichRules", zone)]

    def set_zone_rules(self, zone, rules, permanent):
        """Replace a zone's rich rules (one call; at runtime on old firewalld: adds, then removals)."""
        if self.settings2:
            if permanent:
                self.call(self.config_object("Zone", zone), ".config.zone", "update2", {"rules_str": self.strings(rules)})
            else:
                self.call(self.fw, ".zone", "setZoneSettings2", zone, {"rules_str": self.strings(rules)})
        elif permanent:
            self.call(self.config_object("Zone", zone), ".config.zone", "setRichRules", self.strings(rules))
        else:
            have = self.zone_rules(zone, False)
            for rule in rules:
                if rule not in have:
                    self.call(self.fw, ".zone", "addRichRule", zone, rule, 0)
            for rule in have:
                if rule not in rules:
                    self.call(self.fw, ".zone", "removeRichRule", zone, rule)

    def call(self, obj, interface, method, *args):
        # generous: a reload that builds thousands of ipsets takes minutes, not D-Bus's default 25 s
        return getattr(obj, method)(*args, dbus_interface=NAME + interface, timeout=TIMEOUT)

    def strings(self, items):
        return self.dbus.Array([str(i) for i in items], signature="s")

    def config_object(self, kind, name):
        path = self.call(self.cfg, ".config", f"get{kind}ByName", name)
        return self.bus.get_object(NAME, path, introspect=False)


def _ours(rule):
    at = rule.find('source ipset="')
    return at >= 0 and _owned(rule[at + 14:rule.find('"', at + 14)])


def _owned(name):
    return str(name).startswith(PREFIX) or str(name) in LEGACY


def _rules(settings):
    return [str(r) for r in settings.get("rules_str", [])]


def read(fw, request):
    default = str(fw.call(fw.fw, "", "getDefaultZone"))
    zones_of = {}
    for iface in request.get("interfaces", []):
        zones_of[iface] = str(fw.call(fw.fw, ".zone", "getZoneOfInterface", iface) or "") or default
    state = {"runtime": {"ipsets": {}, "rules": {}}, "permanent": {"ipsets": {}, "rules": {}}}
    # (configuration, its ipset names, one ipset's settings, its zones): the same read of both
    configurations = (
        ("runtime", lambda: fw.call(fw.fw, ".ipset", "getIPSets"),
         lambda name: fw.call(fw.fw, ".ipset", "getIPSetSettings", name),
         lambda: fw.call(fw.fw, ".zone", "getZones")),
        ("permanent", lambda: fw.call(fw.cfg, ".config", "getIPSetNames"),
         lambda name: fw.call(fw.config_object("IPSet", name), ".config.ipset", "getSettings"),
         lambda: fw.call(fw.cfg, ".config", "getZoneNames")),
    )
    for where, ipset_names, settings_of, zone_names in configurations:
        for name in ipset_names():
            if _owned(name):
                settings = settings_of(name)
                state[where]["ipsets"][str(name)] = {"family": str(settings[4].get("family", "inet")),
                                                     "entries": sorted(str(e) for e in settings[5])}
        for zone in zone_names():
            rules = sorted(r for r in fw.zone_rules(zone, where == "permanent") if _ours(r))
            if rules:
                state[where]["rules"][str(zone)] = rules
    mark("read")
    return {"default_zone": default, "zones_of": zones_of, **state}


# Zone settings a reload keeps (interface bindings are restored) or that only describe the zone
KEPT_BY_RELOAD = {"version", "short", "description", "UNUSED", "interfaces"}
ANY_NETFWD = "netfwd-"  # every cluster's (and earlier versions') objects: in step by netfwd's own writes


def _items(value):
    """A zone setting as comparable strings (ports and forward-ports are D-Bus structs)."""
    if isinstance(value, (list, tuple)) and not isinstance(value, str):
        return {"/".join(str(p) for p in v) if isinstance(v, (list, tuple)) else str(v) for v in value}
    return {str(value)}


def runtime_differences(fw):
    """What a reload would lose or add outside netfwd's objects: every item of a zone, or ipset,
    whose runtime and permanent configuration differ ("zone: key item (runtime only)")."""
    found = []
    runtime_zones = {str(z) for z in fw.call(fw.fw, ".zone", "getZones")}
    permanent_zones = {str(z) for z in fw.call(fw.cfg, ".config", "getZoneNames")}
    for zone in sorted(runtime_zones ^ permanent_zones):
        found.append(f"zone {zone} ({'runtime' if zone in runtime_zones else 'permanent'} only)")
    for zone in sorted(runtime_zones & permanent_zones):
        live, saved = fw.zone_settings(zone, False), fw.zone_settings(zone, True)
        for key in sorted((set(live) | set(saved)) - KEPT_BY_RELOAD):
            have = _items(live.get(key, []))
            want = _items(saved.get(key, []))
            if key == "rules_str":
                have = {r for r in have if ANY_NETFWD not in r}
                want = {r for r in want if ANY_NETFWD not in r}
            name = {"rules_str": "rich rule", "services": "service", "ports": "port", "sources": "source",
                    "forward_ports": "forward-port", "icmp_blocks": "icmp-block", "protocols": "protocol",
                    "source_ports": "source-port"}.get(key, key)
            if not isinstance(live.get(key, saved.get(key)), (list, tuple)):
                if have != want and key in live and key in saved:
                    found.append(f"{zone}: {name} {sorted(have)[0]} (runtime; permanent {sorted(want)[0]})")
                continue
            found += [f"{zone}: {name} {item} (runtime only)" for item in sorted(have - want)]
            found += [f"{zone}: {name} {item} (permanent only)" for item in sorted(want - have)]
    live_sets = {str(n) for n in fw.call(fw.fw, ".ipset", "getIPSets") if not str(n).startswith(ANY_NETFWD)}
    saved_sets = {str(n) for n in fw.call(fw.cfg, ".config", "getIPSetNames") if not str(n).startswith(ANY_NETFWD)}
    found += [f"ipset {n} (runtime only)" for n in sorted(live_sets - saved_sets)]
    found += [f"ipset {n} (permanent only)" for n in sorted(saved_sets - live_sets)]
    for name in sorted(live_sets & saved_sets):
        have = {str(e) for e in fw.call(fw.fw, ".ipset", "getIPSetSettings", name)[5]}
        want = {str(e) for e in fw.call(fw.config_object("IPSet", name), ".config.ipset", "getSettings")[5]}
        found += [f"ipset {name}: entry {e} (runtime only)" for e in sorted(have - want)]
        found += [f"ipset {name}: entry {e} (permanent only)" for e in sorted(want - have)]
    mark("runtime differences")
    return found


def needs_reload(fw, current, target):
    """Whether write() will reload: the same tests it makes, asked before anything changes."""
    new = [name for name in target["permanent"]["ipsets"] if name not in current["permanent"]["ipsets"]]
    as_files = fw.settings2 and len(new) >= FILES_FROM and _has_ipset_writer()
    stale = any(set(rules) - set(target["runtime"]["rules"].get(zone, []))
                for zone, rules in current["runtime"]["rules"].items())
    return (set(target["runtime"]["ipsets"]) != set(current["runtime"]["ipsets"])
            or (stale and not fw.settings2) or as_files)


def write(fw, request):
    current, target = request["current"], request["target"]
    if not request.get("allow_runtime_loss") and needs_reload(fw, current, target):
        lost = runtime_differences(fw)
        if lost:
            return {"refused": "this change needs a firewalld reload, which would drop (or load) configuration "
                               "whose runtime and permanent versions differ: " + "; ".join(lost) +
                               ". Nothing was changed: make those changes permanent (firewall-cmd "
                               "--runtime-to-permanent) or drop them, or pass --allow-runtime-loss"}
    done = []
    # -- permanent -------------------------------------------------------------------------
    want, have = target["permanent"]["ipsets"], current["permanent"]["ipsets"]
    mark("start")
    new = {name: spec for name, spec in want.items() if name not in have}
    as_files = fw.settings2 and len(new) >= FILES_FROM and _has_ipset_writer()
    if as_files:
        write_ipset_files(new)
        done.append(f"permanent: {len(new)} new ipset(s) written as configuration files")
    for name, spec in want.items():
        if name not in have and not as_files:
            settings = ("", "", "", "hash:net", fw.dbus.Dictionary({"family": spec["family"]}, signature="ss"),
                        fw.strings(spec["entries"]))
            fw.call(fw.cfg, ".config", "addIPSet", name, settings)
            done.append(f"permanent: new ipset {name}")
        elif name not in have:
            continue
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
        others = [r for r in fw.zone_rules(zone, True) if not _ours(r)]
        fw.set_zone_rules(zone, others + want_rules.get(zone, []), True)
        done.append(f"permanent: rich rules of zone {zone}")
    for name in have:
        if name not in want:
            fw.call(fw.config_object("IPSet", name), ".config.ipset", "remove")
            done.append(f"permanent: removed ipset {name}")
    mark("permanent rules, stale ipsets")
    # -- runtime ---------------------------------------------------------------------------
    want, have = target["runtime"]["ipsets"], current["runtime"]["ipsets"]
    stale = any(set(rules) - set(target["runtime"]["rules"].get(zone, []))
                for zone, rules in current["runtime"]["rules"].items())
    # firewalld 0.6.3 cannot remove at runtime a forward-port rich rule that it loaded itself (it
    # never records that rule's mark and fails on "%x" % None): there, a reload does the removal
    if set(want) != set(have) or (stale and not fw.settings2) or as_files:
        fw.call(fw.fw, "", "reload")  # also loads the ipset files written above into the permanent config
        done.append("reload (netfwd ipsets appear or disappear)" if set(want) != set(have) or as_files else
                    "reload (this firewalld removes loaded forward-port rules only that way)")
        done += drop_orphan_ipsets(fw)
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
        others = [r for r in fw.zone_rules(zone, False) if not _ours(r)]
        fw.set_zone_rules(zone, others + want_rules.get(zone, []), False)
        done.append(f"runtime: rich rules of zone {zone}")
    mark("runtime")
    return {"done": done, "commits": None}


# From this many new ipsets on, they are written as configuration files (one step) instead of one
# addIPSet call each: firewalld re-checks its whole configuration on every addIPSet, so N of them
# cost O(N^2) (2.8 s for 100, most of a minute for 1,000).
FILES_FROM = 20


def _has_ipset_writer():
    try:  # firewalld's own modules, beside this Python
        from firewall import config
        from firewall.core.io.ipset import IPSet, ipset_writer
    except ImportError:
        return False
    return bool(getattr(config, "ETC_FIREWALLD_IPSETS", None)) and callable(ipset_writer) and callable(IPSet)


def write_ipset_files(ipsets):
    """Each new ipset as firewalld's own writer spells it, renamed into firewalld's ipset directory
    (whole files only: firewalld watches it). The reload that follows loads them, runtime and
    permanent alike, which is how firewalld takes configuration files (`firewall-cmd --reload`)."""
    import os
    import tempfile

    from firewall import config
    from firewall.core.io.ipset import IPSet, ipset_writer

    folder = config.ETC_FIREWALLD_IPSETS
    os.makedirs(folder, mode=0o750, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".netfwd-", dir=os.path.dirname(folder))  # same file system
    try:
        for name, spec in sorted(ipsets.items()):
            ipset = IPSet()
            ipset.check_name(name)
            ipset.name, ipset.filename, ipset.type = name, f"{name}.xml", "hash:net"
            ipset.options = {"family": spec["family"]}
            for entry in spec["entries"]:
                IPSet.check_entry(entry, ipset.options, ipset.type)
            ipset.entries = list(spec["entries"])
            if os.path.exists(os.path.join(folder, ipset.filename)):
                raise SystemExit(f"{folder}/{ipset.filename} exists but firewalld does not know ipset {name}: "
                                 "reload firewalld, or remove the file")
            ipset_writer(ipset, scratch)
            os.rename(os.path.join(scratch, ipset.filename), os.path.join(folder, ipset.filename))
    finally:
        for leftover in os.listdir(scratch):
            os.unlink(os.path.join(scratch, leftover))
        os.rmdir(scratch)
    mark("ipset files")


def drop_orphan_ipsets(fw):
    """firewalld 0.6.3 (iptables backend: kernel ipsets) never destroys a kernel set whose configuration
    was deleted, not even on reload: destroy the sets of this cluster (earlier names too) it no longer knows."""
    import shutil
    import subprocess

    if shutil.which("ipset") is None:
        return []
    listed = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        raise SystemExit(f"ipset list -n failed: {listed.stderr.strip()}")
    known = {str(name) for name in fw.call(fw.fw, ".ipset", "getIPSets")}
    done = []
    for name in listed.stdout.split():
        if _owned(name) and name not in known:
            gone = subprocess.run(["ipset", "destroy", name], capture_output=True, text=True, check=False)
            if gone.returncode != 0:
                raise SystemExit(f"cannot destroy the kernel ipset {name} firewalld left behind: {gone.stderr.strip()}")
            done.append(f"destroyed the kernel ipset {name} firewalld left behind")
    return done


def main():
    global PREFIX, LEGACY
    request = json.loads(sys.stdin.read() or "{}")
    PREFIX, LEGACY = request.get("prefix", PREFIX), set(request.get("legacy", ()))
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
