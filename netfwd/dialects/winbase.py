"""What the netsh and PowerShell dialects share: the per-forward plan, the Essence rules, and a
model of the Windows state their scripts change (used to read scripts back, since no Windows runs here).

How a Windows relay forwards (docs/facts.md#windows-portproxy): ``netsh interface portproxy`` keeps a table per address
family pair (``v4tov4`` ...) keyed by listen address and port, served by the IP Helper service, plus
an inbound Windows Firewall rule that admits the sources. Portproxy is a *proxy*: it accepts the
connection and opens a new one to the target. So, in an :class:`~netfwd.model.Essence`:

* ``masquerade`` is always true: the target always sees the relay as the source. A spec asking for
  ``masquerade: false`` is refused (the client address cannot be preserved).
* ``local`` is always true: the listener also accepts connections made on the relay itself, whatever
  the spec says (the spec's default ``local: false`` is accepted, and means nothing on Windows).
* ``listen_address`` is None for the wildcard (netsh ``listenaddress=*``), else the canonical address.
* ``sources`` are the inbound rule's remote addresses as a minimal sorted CIDR list, None for ``any``.
  A port proxy with no inbound rule at all reads back as ``()``: no remote source can reach it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from socket import inet_ntoa

from netaddr import IPNetwork, cidr_merge

from netfwd.dialects.base import BaseDialect, safe_comment
from netfwd.owned import rule_comment
from netfwd.model import Essence, Forward, Spec
from netfwd.windows import TABLES, WILDCARD, normalise_address


@dataclass(frozen=True, slots=True)
class WinForward:
    """One forward, spelled the way both Windows dialects write it."""

    name: str
    rule_name: str  # firewall rule name / DisplayName: "netfwd <cluster> <forward>"
    description: str  # "netfwd:<cluster>/<forward> to <target>": the tag netfwd finds its rules by
    table: str  # v4tov4 | v4tov6 | v6tov4 | v6tov6
    listen_address: str  # "*" or an address
    listen_port: int
    connect_address: str
    connect_port: int
    local_ip: str | None  # the firewall rule's local address (None: any local address)
    sources: tuple[str, ...] | None  # minimal CIDR list; None = any
    family: int  # of the listening side: 4 or 6

    @property
    def stale_tables(self) -> tuple[str, ...]:
        """Tables that may hold an older entry for the same listen socket (a target of another family)."""
        return _SAME_LISTEN_FAMILY[self.family]

    def listen_text(self) -> str:
        return f"[{self.listen_address}]:{self.listen_port}" if ":" in self.listen_address \
            else f"{self.listen_address}:{self.listen_port}"

    def target_text(self) -> str:
        return f"[{self.connect_address}]:{self.connect_port}" if ":" in self.connect_address \
            else f"{self.connect_address}:{self.connect_port}"


_SAME_LISTEN_FAMILY = {family: tuple(t for t in TABLES if t.startswith(f"v{family}to")) for family in (4, 6)}
_last_plan: tuple[Spec, list[WinForward]] | None = None


def plan(spec: Spec) -> list[WinForward]:
    """The per-forward plan; the last one is kept (with its spec) because `render --dialect all`
    renders apply and remove scripts of both Windows dialects from the same spec."""
    global _last_plan
    if _last_plan is not None and _last_plan[0] is spec:
        return _last_plan[1]
    planned = [_plan_forward(spec, forward) for forward in spec.forwards]
    _last_plan = (spec, planned)
    return planned


def _text(address) -> str:
    """str() of a netaddr address or network; IPv4 formatted directly (netaddr's str() is ~5 us)."""
    if address.version == 4:
        if isinstance(address, IPNetwork):
            return f"{inet_ntoa(address.value.to_bytes(4, 'big'))}/{address.prefixlen}"
        return inet_ntoa(address.value.to_bytes(4, "big"))
    return str(address)


def _plan_forward(spec: Spec, forward: Forward) -> WinForward:
    listen_ip, target_ip = forward.listen.address, forward.to.address
    family = 4 if listen_ip is None else listen_ip.version
    listen = WILDCARD if listen_ip is None else _text(listen_ip)
    target = _text(target_ip)
    target_text = f"[{target}]:{forward.to.port}" if forward.family == 6 else f"{target}:{forward.to.port}"
    sources = forward.sources
    return WinForward(
        name=forward.name,
        rule_name=f"netfwd {spec.cluster} {forward.name}",
        description=f"{rule_comment(spec, forward.name)} to {target_text}",
        table=f"v{family}tov{forward.family}",
        listen_address=listen, listen_port=forward.listen.port,
        connect_address=target, connect_port=forward.to.port,
        local_ip=None if listen_ip is None else listen,
        sources=None if sources is None else tuple(_text(n) for n in sources), family=family,
    )


class WindowsDialect(BaseDialect):
    """Capabilities of a Windows relay (portproxy: TCP only, always proxies) and the Essence rules."""

    relay_os = "windows"
    protocols = frozenset({"tcp"})
    supports_local = True  # accepted; portproxy serves local connections anyway (see module doc)
    supports_no_masquerade = False

    _spelled: tuple[Spec, list] | None = None

    def expected(self, spec: Spec) -> list[Essence]:
        return [expected_essence(f) for f in spec.forwards]

    def spelled(self, spec: Spec, spell) -> list[tuple[WinForward, dict[str, str]]]:
        """Each planned forward with its values escaped by `spell`; kept for the last spec, because
        the apply and the remove script of a dialect are rendered from the same spec."""
        if self._spelled is not None and self._spelled[0] is spec:
            return self._spelled[1]
        result = [(forward, spell(forward)) for forward in plan(spec)]
        self._spelled = (spec, result)
        return result

    def removal(self, spelled: list[tuple[WinForward, dict[str, str]]], remove: str, check: str,
                listing: list[str]) -> list[str]:
        """The body of both Windows remove scripts: each forward's `remove` template, then the
        `listing` of what is left and each forward's `check` template against it."""
        lead = self.comment_leader
        return [f"{lead} Removes only what the apply script made; the IP Helper service is left running",
                f"{lead} (other port proxies may need it).", "",
                *(remove.format_map(words) for _, words in spelled),
                f"{lead} Check that nothing is left.", *listing,
                *(check.format_map(words) for _, words in spelled)]


_COMMENT_SAFE = re.compile(r"[A-Za-z0-9._/+=:@,-]*\Z")  # what base.safe_comment() leaves unchanged


def describe(forward: WinForward) -> str:
    """A comment-safe description of the listen side (safe_comment() would turn '*' into '?')."""
    name = forward.name if _COMMENT_SAFE.match(forward.name) else safe_comment(forward.name)
    where = f"all IPv{forward.family} addresses" if forward.listen_address == WILDCARD \
        else safe_comment(forward.listen_address)
    return f"{name}: port {forward.listen_port} on {where}"


def finish(parts: list[str]) -> str:
    """The script from lines and blocks: each part ends in CRLF (added where missing; LFs inside a
    part become CRLF), no trailing blank lines; only ASCII (see cmdsyntax and pssyntax for why)."""
    while parts and parts[-1] in ("", "\r\n"):
        parts.pop()
    text = "".join(p if p.endswith("\r\n") else p.replace("\n", "\r\n") + "\r\n" for p in parts)
    if not text.isascii():
        raise ValueError("a Windows script must be ASCII: cmd and Windows PowerShell 5.1 read it in a "
                         "legacy code page")
    return text


def expected_essence(forward: Forward) -> Essence:
    """The Essence a Windows relay gives back for `forward` (see the module docstring)."""
    essence = forward.essence()
    return essence._replace(masquerade=True, local=True,
                            sources=None if essence.sources is None else _merged(essence.sources))


def _merged(cidrs) -> tuple[str, ...]:
    return tuple(str(n) for n in cidr_merge([IPNetwork(c) for c in cidrs]))


# -- the state a script changes ---------------------------------------------------------------


@dataclass
class FirewallRule:
    display_name: str
    rule_id: str | None  # PowerShell -Name; netsh-made rules get a GUID we never see
    local_port: int | None
    local_ip: str | None  # None: any
    remote: tuple[str, ...] | None  # None: any
    allows_inbound_tcp: bool = True
    service: str | None = None  # the service the rule is scoped to (None: any program)

    @property
    def admits_portproxy(self) -> bool:
        """An inbound TCP allow rule that applies to the IP Helper service, which serves portproxy."""
        return self.allows_inbound_tcp and (self.service is None or self.service.lower() == IPHLPSVC)


class ScriptError(ValueError):
    """A script line that the Windows state model cannot interpret."""


class ScriptExit(Exception):
    """The script stopped with a non-zero exit code (a refused precondition or a failed check)."""

    def __init__(self, code: int, messages: list[str]) -> None:
        super().__init__(f"exit code {code}: {' / '.join(messages) or 'no message'}")
        self.code, self.messages = code, messages


IPHLPSVC = "iphlpsvc"  # the IP Helper service: it runs portproxy, so netfwd's allow rules are scoped to it
PROFILES = ("Domain", "Private", "Public")
# Where Windows keeps each profile's on/off switch (value EnableFirewall, REG_DWORD): group policy
# wins where it sets the value, else the local store; see docs/facts.md#windows-firewall.
POLICY_KEY = "HKLM\\SOFTWARE\\Policies\\Microsoft\\WindowsFirewall\\{}Profile"
LOCAL_KEY = "HKLM\\SYSTEM\\CurrentControlSet\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\{}Profile"
LOCAL_NAMES = {"Domain": "Domain", "Private": "Standard", "Public": "Public"}  # the local store's key names


class WindowsState:
    """Port proxies and firewall rules, as changed by the netsh lines and cmdlets netfwd emits.

    Rules are indexed by display name and id, so a script of 10,000 forwards reads back in linear time.
    """

    def __init__(self, proxies: dict[tuple[str, str, int], tuple[str, int]] | None = None,
                 rules: list[FirewallRule] | tuple[FirewallRule, ...] = (),
                 local_firewall: dict[str, bool] | None = None, policy_firewall: dict[str, bool] | None = None,
                 unbound: set[int] | frozenset[int] = frozenset()) -> None:
        self.proxies: dict[tuple[str, str, int], tuple[str, int]] = dict(proxies or {})
        # EnableFirewall per profile in the local store and in group policy (a missing profile: not set)
        self.local_firewall = dict(local_firewall or {})
        self.policy_firewall = dict(policy_firewall or {})
        self.unbound = set(unbound)  # listen ports iphlpsvc cannot bind (taken by another program)
        self._rules: dict[int, FirewallRule] = {}  # insertion order = creation order
        self._by_display: dict[str, set[int]] = {}
        self._by_id: dict[str, int] = {}
        self._next = 0
        for rule in rules:
            self._add(rule)

    @property
    def rules(self) -> list[FirewallRule]:
        return list(self._rules.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WindowsState) and (self.proxies, self.rules) == (other.proxies, other.rules)

    def __repr__(self) -> str:
        return f"WindowsState(proxies={self.proxies!r}, rules={self.rules!r})"

    def _add(self, rule: FirewallRule) -> None:
        key, self._next = self._next, self._next + 1
        self._rules[key] = rule
        self._by_display.setdefault(rule.display_name.lower(), set()).add(key)
        if rule.rule_id is not None:
            self._by_id[rule.rule_id.lower()] = key

    def _drop(self, key: int) -> None:
        rule = self._rules.pop(key)
        self._by_display[rule.display_name.lower()].discard(key)
        if rule.rule_id is not None:
            self._by_id.pop(rule.rule_id.lower(), None)

    # -- what Windows reports ----------------------------------------------------------------
    def firewall_on(self, profile: str) -> bool:
        """The enforced state of a profile: group policy's value if set, else the local one (on by default)."""
        if profile in self.policy_firewall:
            return self.policy_firewall[profile]
        return self.local_firewall.get(profile, True)

    def registry_value(self, key: str, value: str) -> int | None:
        """EnableFirewall under a profile's policy or local key (None: not set); other values are unknown."""
        if value.lower() != "enablefirewall":
            return None
        for profile in PROFILES:
            for store, template, name in ((self.policy_firewall, POLICY_KEY, profile),
                                          (self.local_firewall, LOCAL_KEY, LOCAL_NAMES[profile])):
                if key.lower() == template.format(name).lower() and profile in store:
                    return int(store[profile])
        return None

    def listeners(self) -> list[tuple[str, int]]:
        """(address, port) of every socket iphlpsvc listens on: one per port proxy whose port it could bind;
        the wildcard listen address binds 0.0.0.0 (IPv4 tables) or :: (IPv6 tables)."""
        out = []
        for table, listen, port in self.proxies:
            if port in self.unbound:
                continue
            if listen == WILDCARD:
                listen = "0.0.0.0" if table.startswith("v4") else "::"
            out.append((listen, port))
        return out

    def command_output(self, argv: list[str]) -> str | None:
        """What a read-only command prints, in the English layout (None: the model does not know it)."""
        words = [w.lower() for w in argv]
        if words[:1] == ["reg"] and words[1:2] == ["query"] and len(argv) >= 5 and words[3] == "/v":
            found = self.registry_value(argv[2], argv[4])
            return "" if found is None else f"\r\n{argv[2]}\r\n    {argv[4]}    REG_DWORD    0x{found:x}\r\n\r\n"
        if words[:1] == ["netstat"]:
            rows = ["", "Active Connections", "", "  Proto  Local Address          Foreign Address        State"]
            for address, port in self.listeners():
                local, foreign = (f"{address}:{port}", "0.0.0.0:0") if ":" not in address \
                    else (f"[{address}]:{port}", "[::]:0")
                rows.append(f"  TCP    {local:<22} {foreign:<22} LISTENING")
            return "\r\n".join(rows) + "\r\n"
        if words[:4] == ["netsh", "interface", "portproxy", "show"] or words[:4] == ["netsh", "int", "portproxy", "show"]:
            return self.portproxy_show()
        return None

    def portproxy_show(self) -> str:
        """`netsh interface portproxy show all` as English Windows prints it."""
        out = []
        for table in TABLES:
            rows = [(listen, port, *self.proxies[(t, listen, port)]) for (t, listen, port) in self.proxies if t == table]
            if not rows:
                continue
            out += ["", f"Listen on ipv{table[1]}:             Connect to ipv{table[-1]}:", "",
                    "Address         Port        Address         Port",
                    "--------------- ----------  --------------- ----------"]
            out += [f"{listen:<15} {port:<11} {connect:<15} {connect_port}" for listen, port, connect, connect_port in rows]
        return "\r\n".join(out + [""]) + "\r\n"

    # -- netsh -----------------------------------------------------------------------------
    def netsh(self, argv: list[str]) -> None:
        """Apply one netsh invocation (argv without the program name); read-only commands are ignored."""
        words = [a for a in argv]
        lowered = [w.lower() for w in words]
        if lowered[:2] == ["interface", "portproxy"] or lowered[:2] == ["int", "portproxy"]:
            self._portproxy(lowered[2:3], words[3:])
        elif lowered[:3] == ["advfirewall", "firewall", "add"] and lowered[3:4] == ["rule"]:
            self._netsh_add_rule(_pairs(words[4:]))
        elif lowered[:3] == ["advfirewall", "firewall", "delete"] and lowered[3:4] == ["rule"]:
            pairs = _pairs(words[4:])
            if "name" not in pairs:
                raise ScriptError("netsh advfirewall firewall delete rule without name=")
            self.remove_rules(display_name=pairs["name"])

    def _portproxy(self, verb: list[str], rest: list[str]) -> None:
        if verb in (["show"], []):
            return
        if verb == ["reset"]:
            self.proxies.clear()
            return
        if not rest or rest[0].lower() not in TABLES:
            raise ScriptError(f"portproxy {verb[0]} needs a table ({', '.join(TABLES)})")
        table, pairs = rest[0].lower(), _pairs(rest[1:])
        if pairs.get("protocol", "tcp").lower() != "tcp":
            raise ScriptError("portproxy is TCP only")
        if "listenport" not in pairs:
            raise ScriptError("portproxy without listenport=")
        key = (table, normalise_address(pairs.get("listenaddress", WILDCARD)), _port(pairs["listenport"]))
        if verb == ["delete"]:
            self.proxies.pop(key, None)
        elif verb in (["add"], ["set"]):
            if verb == ["add"] and key in self.proxies:
                raise ScriptError(f"portproxy add {key}: the entry exists (netsh refuses a duplicate)")
            connect = normalise_address(pairs.get("connectaddress", "127.0.0.1"))
            self.proxies[key] = (connect, _port(pairs.get("connectport", pairs["listenport"])))
        else:
            raise ScriptError(f"unknown portproxy verb {verb[0]!r}")

    def _netsh_add_rule(self, pairs: dict[str, str]) -> None:
        for required in ("name", "dir", "action"):
            if required not in pairs:
                raise ScriptError(f"netsh add rule without {required}=")
        remote = pairs.get("remoteip", "any")
        local_ip = pairs.get("localip", "any")
        self._add(FirewallRule(
            display_name=pairs["name"], rule_id=None,
            local_port=_port(pairs["localport"]) if "localport" in pairs else None,
            local_ip=None if local_ip.lower() == "any" else normalise_address(local_ip),
            remote=_remote(remote.split(",")),
            allows_inbound_tcp=(pairs["dir"].lower(), pairs["action"].lower(), pairs.get("protocol", "").lower())
            == ("in", "allow", "tcp"), service=_service(pairs.get("service"))))

    # -- PowerShell NetSecurity cmdlets ----------------------------------------------------------
    def new_rule(self, params: dict) -> None:
        rule_id = _scalar(params.get("name"), "-Name")
        if rule_id.lower() in self._by_id:
            raise ScriptError(f"New-NetFirewallRule -Name {rule_id!r}: a rule with that name exists")
        remote = params.get("remoteaddress", "Any")
        local = params.get("localaddress", "Any")
        self._add(FirewallRule(
            display_name=_scalar(params.get("displayname", rule_id), "-DisplayName"), rule_id=rule_id,
            local_port=_port(_scalar(params["localport"], "-LocalPort")) if "localport" in params else None,
            local_ip=None if _scalar(local, "-LocalAddress").lower() == "any"
            else normalise_address(_scalar(local, "-LocalAddress")),
            remote=_remote(remote if isinstance(remote, list) else [_scalar(remote, "-RemoteAddress")]),
            allows_inbound_tcp=(str(params.get("direction", "")).lower(), str(params.get("action", "")).lower(),
                                str(params.get("protocol", "")).lower()) == ("inbound", "allow", "tcp"),
            service=_service(_scalar(params["service"], "-Service") if "service" in params else None)))

    def remove_rules(self, display_name: str | None = None, rule_id: str | None = None,
                     wildcards: bool = False) -> None:
        """Delete rules by display name and/or id: exact (netsh) or PowerShell wildcard patterns (cmdlets)."""
        from netfwd.dialects.pssyntax import wildcard_literal, wildcard_regex

        doomed: set[int] = set()
        for value, index in ((display_name, "display"), (rule_id, "id")):
            if value is None:
                continue
            literal = wildcard_literal(value) if wildcards else value
            if literal is None:  # a real pattern: test every rule
                pattern = wildcard_regex(value)
                doomed |= {key for key, rule in self._rules.items()
                           if (rule.display_name if index == "display" else rule.rule_id) is not None
                           and pattern.match(rule.display_name if index == "display" else rule.rule_id)}  # type: ignore[arg-type]
            elif index == "display":
                doomed |= self._by_display.get(literal.lower(), set())
            elif literal.lower() in self._by_id:
                doomed.add(self._by_id[literal.lower()])
        for key in sorted(doomed):
            self._drop(key)

    # -- reading back ----------------------------------------------------------------------
    def essences(self) -> list[Essence]:
        """The forwards this state carries out, in the order their port proxies were added."""
        by_port: dict[int | None, list[FirewallRule]] = {}
        for rule in self._rules.values():
            if rule.admits_portproxy:
                by_port.setdefault(rule.local_port, []).append(rule)
        out = []
        for (table, listen, port), (connect, connect_port) in self.proxies.items():
            rules = by_port.get(None, []) + by_port.get(port, [])
            out.append(Essence(None if listen == WILDCARD else listen, port, "tcp", connect, connect_port,
                               True, True, self.sources_for(listen, port, rules)))
        return out

    def sources_for(self, listen: str, port: int,
                    rules: list[FirewallRule] | None = None) -> tuple[str, ...] | None:
        """Who may reach listen:port: the union of the inbound allow rules that cover it."""
        union: list[IPNetwork] = []
        for rule in self.rules if rules is None else rules:
            if not rule.admits_portproxy or rule.local_port not in (None, port):
                continue
            if rule.local_ip is not None and rule.local_ip != listen:
                continue
            if rule.remote is None:
                return None
            union += [IPNetwork(c) for c in rule.remote]
        return tuple(str(n) for n in cidr_merge(union))


def _pairs(words: list[str]) -> dict[str, str]:
    pairs = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise ScriptError(f"{word!r} is not key=value")
        pairs[key.lower()] = value
    return pairs


def _port(text: object) -> int:
    if isinstance(text, int):
        return text
    if not isinstance(text, str) or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ScriptError(f"{text!r} is not a port")
    return int(text)


def _service(value: str | None) -> str | None:
    """A rule's service scope: None for every program (no service= / -Service, or `any`)."""
    return None if value is None or value.lower() == "any" else value.lower()


def _scalar(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ScriptError(f"{what} must be a literal string, not {value!r}")
    return value


def _remote(items: list) -> tuple[str, ...] | None:
    words = [_scalar(i, "remote address").strip() for i in items]
    if any(w.lower() == "any" for w in words):
        return None
    try:
        return tuple(str(n) for n in cidr_merge([IPNetwork(w) for w in words]))
    except Exception as problem:  # netaddr raises several types
        raise ScriptError(f"remote addresses {words!r}: {problem}") from None
