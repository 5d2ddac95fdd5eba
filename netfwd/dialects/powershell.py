"""The `powershell` dialect: the netsh dialect's job as a `.ps1` script.

Same steps and checks as :mod:`netfwd.dialects.netsh` (elevation, IP Helper service, reserved port
ranges, replace each port proxy, replace each inbound rule, verify), with the NetSecurity cmdlets
for the firewall. There is no portproxy cmdlet, so port proxies still go through netsh, whose
failures show only in ``$LASTEXITCODE``. Every value from the spec is a single-quoted string
(fully literal in PowerShell). Firewall rules carry ``-Name`` and ``-DisplayName``
"netfwd <cluster> <forward>" (what the netsh dialect names its rules, so the two dialects replace
each other's rules) and ``-Group netfwd``.
"""

from __future__ import annotations

from netfwd.dialects import pssyntax as ps
from netfwd.dialects.winbase import (IPHLPSVC, PROFILES, ScriptError, ScriptExit, WindowsDialect, WindowsState,
                                      WinForward, describe, finish, plan)
from netfwd.model import Essence, Spec

q = ps.quote

# Helper functions written into every script; they take values only as parameters.
GET_PORTPROXIES = r"""function Get-NetfwdPortProxies {
    # Every port proxy, keyed 'listenaddress listenport' and 'listenaddress listenport connectaddress
    # connectport', from one `netsh interface portproxy show all` (asking per forward reads them all N times).
    $found = @{}
    foreach ($line in @(& netsh.exe interface portproxy show all)) {
        $f = @(-split [string] $line)
        if ($f.Count -eq 4 -and $f[1] -match '^\d+$' -and $f[3] -match '^\d+$') {
            $found[('{0} {1}' -f $f[0], $f[1]).ToLowerInvariant()] = $true
            $found[($f -join ' ').ToLowerInvariant()] = $true
        }
    }
    return $found
}"""

EXCLUDED_RANGES = r"""function Get-NetfwdExcludedRanges {
    # Windows reserves TCP port ranges (Hyper-V, WinNAT): portproxy cannot listen inside them and says nothing.
    param([string] $Family)
    $lines = @(& netsh.exe interface $Family show excludedportrange protocol=tcp)
    if ($LASTEXITCODE -ne 0) { throw ('netfwd: cannot list the excluded TCP port ranges ({0})' -f $Family) }
    foreach ($line in $lines) {
        if ([string] $line -match '^\s*(\d+)\s+(\d+)') { , @([int] $Matches[1], [int] $Matches[2]) }
    }
}

function Assert-NetfwdPortFree {
    param([int] $Port, [object[]] $Ranges)
    foreach ($range in $Ranges) {
        if ($Port -ge $range[0] -and $Port -le $range[1]) {
            throw ('netfwd: TCP port {0} is inside the port range {1}-{2} that Windows reserves; choose another listen port, or free the range (netsh interface ipv4 show excludedportrange protocol=tcp)' -f $Port, $range[0], $range[1])
        }
    }
}"""


FIREWALL_ON = r"""function Assert-NetfwdFirewallOn {
    # A Windows Firewall profile that is off admits every source: the inbound allow rule is then no
    # whitelist. ActiveStore holds what is enforced (group policy merged over the local settings).
    param([switch] $AllowOff)
    $off = @(Get-NetFirewallProfile -PolicyStore ActiveStore | Where-Object { [string] $_.Enabled -ne 'True' } | ForEach-Object { [string] $_.Name })
    if ($off.Count -eq 0) { return }
    $message = 'netfwd: Windows Firewall is off for the {0} profile(s): every source reaches the forwarded ports, the whitelist does not hold' -f ($off -join ', ')
    if (-not $AllowOff) { throw ($message + '; nothing was changed. Turn it on (Set-NetFirewallProfile -All -Enabled True), or run this script with -AllowFirewallOff to go on anyway') }
    Write-Warning ($message + ' (going on: -AllowFirewallOff)')
}"""

LISTENING = r"""function Assert-NetfwdListening {
    # A stored port proxy is not a served one (iphlpsvc stopped, the port taken): ask the TCP stack.
    # iphlpsvc binds a moment after netsh returns, so look for up to 5 seconds.
    param([string] $Forward, [string] $Address, [int] $Port)
    for ($try = 0; $try -lt 10; $try++) {
        $found = @(Get-NetTCPConnection -State Listen -LocalPort $Port -ErrorAction SilentlyContinue | Where-Object { $Address -eq '*' -or @($Address, '0.0.0.0', '::') -contains [string] $_.LocalAddress })
        if ($found.Count -gt 0) { return }
        Start-Sleep -Milliseconds 500
    }
    throw ('netfwd: forward {0}: nothing listens on {1} port {2} after apply: the port proxy is stored but not served (is iphlpsvc running? is the port taken? netstat -ano)' -f $Forward, $Address, $Port)
}"""

ALLOW_FIREWALL_OFF = "-AllowFirewallOff"


class PowerShellDialect(WindowsDialect):
    name = "powershell"
    extension = "ps1"
    comment_leader = "#"

    def _prologue(self, spec: Spec, what: str) -> list[str]:
        switch = ["# -AllowFirewallOff: go on (with a warning) when a Windows Firewall profile is off.",
                  "param([switch] $AllowFirewallOff)"] if what == "apply" else []
        return [*self.header(spec, what), "#Requires -RunAsAdministrator", *switch,
                "Set-StrictMode -Version 3.0",
                "$ErrorActionPreference = 'Stop'",
                "$PSNativeCommandUseErrorActionPreference = $false  # netsh failures are read from $LASTEXITCODE",
                "", GET_PORTPROXIES, ""]

    # -- apply -----------------------------------------------------------------------------
    def render(self, spec: Spec) -> str:
        self.check(spec)
        forwards = plan(spec)
        out = self._prologue(spec, "apply")
        out += [FIREWALL_ON, "", LISTENING, "", EXCLUDED_RANGES, "",
                "# Stop before changing anything if a Windows Firewall profile is off.",
                "Assert-NetfwdFirewallOn -AllowOff:$AllowFirewallOff", "",
                "# The IP Helper service runs portproxy: without it entries are stored but nothing listens.",
                "Set-Service -Name 'iphlpsvc' -StartupType Automatic",
                "Start-Service -Name 'iphlpsvc'",
                "if ((Get-Service -Name 'iphlpsvc').Status -ne 'Running') { throw 'netfwd: the IP Helper service "
                "(iphlpsvc) is not running: portproxy would silently do nothing' }", "",
                "# Stop before changing anything if a listen port is reserved."]
        for family in (4, 6):
            ports = sorted({f.listen_port for f in forwards if f.family == family})
            if ports:
                out.append(f"$netfwdRanges{family} = @(Get-NetfwdExcludedRanges -Family 'ipv{family}')")
                out += [f"Assert-NetfwdPortFree -Port {p} -Ranges $netfwdRanges{family}" for p in ports]
        out.append("")
        spelled = self.spelled(spec, _spell)
        out += [_apply_block(forward, words) for forward, words in spelled]
        out += ["# Check that Windows kept every port proxy: list them once, then look for each.",
                "$netfwdShown = Get-NetfwdPortProxies"]
        out += [_FINAL_CHECK.format_map(words) for _, words in spelled]
        out.append("# Check that each port proxy listens, not only that it is stored.")
        out += [f"Assert-NetfwdListening -Forward {words['qname']} -Address {words['qlisten']} -Port {forward.listen_port}"
                for forward, words in spelled]
        out.append("Write-Output " + q(f"netfwd: applied {len(forwards)} forward(s) for cluster {spec.cluster}"))
        return finish(out)

    # -- remove ----------------------------------------------------------------------------
    def render_remove(self, spec: Spec) -> str:
        self.check(spec)
        forwards = plan(spec)
        out = self._prologue(spec, "remove")
        out += self.removal(self.spelled(spec, _spell), _REMOVE, _REMOVE_CHECK,
                            ["$netfwdShown = Get-NetfwdPortProxies"])
        out.append("Write-Output " + q(f"netfwd: removed {len(forwards)} forward(s) of cluster {spec.cluster}"))
        return finish(out)

    # -- reading back ----------------------------------------------------------------------
    def parse(self, text: str) -> list[Essence]:
        return self.simulate(text).essences()

    def simulate(self, text: str, state: WindowsState | None = None, args: tuple[str, ...] = ()) -> WindowsState:
        """Run the script's script-level netsh calls, firewall cmdlets and netfwd's own checks
        (Assert-Netfwd*, as the functions the script defines do them) against a model of Windows;
        a check that throws raises ScriptExit. `args` are the script's parameters."""
        state = state if state is not None else WindowsState()
        allow_off = any(a.lower() == ALLOW_FIREWALL_OFF.lower() for a in args)
        listening: set[tuple[str, int]] | None = None  # the sockets, read once after the last change
        for command in ps.commands(text):
            if command.depth:
                continue  # inside a function, an `if` or a loop: checks and error paths
            name = command.name.lower()
            if name == "assert-netfwdfirewallon":
                off = [p for p in PROFILES if not state.firewall_on(p)]
                if off and not (allow_off and command.params().get("allowoff") == ps.Opaque("$AllowFirewallOff")):
                    raise ScriptExit(1, [f"netfwd: Windows Firewall is off for the {', '.join(off)} profile(s)"])
            elif name == "assert-netfwdlistening":
                params = command.params()
                port, address = int(_literal(params["port"]) or 0), _literal(params["address"])
                if listening is None:
                    listening = set(state.listeners())
                    listening |= {("*", p) for _, p in listening}
                if not {(address, port), ("0.0.0.0", port), ("::", port)} & listening:
                    raise ScriptExit(1, [f"netfwd: forward {_literal(params['forward'])}: nothing listens on "
                                         f"{address} port {port} after apply"])
            if name in ("netsh", "netsh.exe"):
                listening = None
                argv = command.args
                if not all(isinstance(a, str) for a in argv):
                    raise ScriptError(f"line {command.line}: netsh arguments must be literal strings")
                state.netsh(argv)  # type: ignore[arg-type]
            elif name == "new-netfirewallrule":
                state.new_rule(command.params())
            elif name == "remove-netfirewallrule":
                params = command.params()
                if "name" not in params and "displayname" not in params:
                    raise ScriptError(f"line {command.line}: Remove-NetFirewallRule without -Name or -DisplayName")
                state.remove_rules(display_name=_literal(params.get("displayname")),
                                   rule_id=_literal(params.get("name")), wildcards=True)
        return state


def _literal(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ScriptError(f"expected a literal string, got {value!r}")
    return value


def _lit(text: str) -> str:
    """A single-quoted literal of text already known to be ASCII without control characters
    (`_spell` checks each forward's names once; addresses and numbers are typed)."""
    return "'" + text.replace("'", "''") + "'"


def _spell(forward: WinForward) -> dict[str, str]:
    """A forward's values, each quoted once for where the script uses it."""
    q(forward.rule_name + forward.description)  # refuses control and non-ASCII characters once
    listen, target = forward.listen_text(), forward.target_text()
    return {
        "describe": describe(forward), "table": forward.table, "qlisten": f"'{forward.listen_address}'",
        # keys of Get-NetfwdPortProxies (addresses and ports are plain words)
        "qshort": f"'{forward.listen_address} {forward.listen_port}'".lower(),
        "qfull": f"'{forward.listen_address} {forward.listen_port} {forward.connect_address} "
                 f"{forward.connect_port}'".lower(),
        "key": f"'listenport={forward.listen_port}' 'listenaddress={forward.listen_address}'",
        "qname": _lit(forward.name), "qrule": _lit(forward.rule_name), "qpattern": _lit(ps.wildcard_escape(forward.rule_name)),
        "qdescription": _lit(forward.description),
        "missing": _lit(f"netfwd: forward {forward.name}: the port proxy {listen} -> {target} is missing after apply"),
        "failed": _lit(f"netfwd: forward {forward.name}: netsh could not add the port proxy {listen} -> {target}: "),
        "still_proxy": _lit(f"netfwd: forward {forward.name}: a port proxy on {listen} is still present"),
        "still_rule": _lit(f"netfwd: forward {forward.name}: the firewall rule {forward.rule_name} is still present"),
    }


# Remove-/Get-NetFirewallRule take wildcards in -Name and -DisplayName: {qpattern} is escaped for that.
# Removing by both names also replaces a rule the netsh dialect made (its -Name is a GUID).
_REMOVE_RULE = ("Remove-NetFirewallRule -Name {qpattern} -ErrorAction SilentlyContinue\r\n"
                "Remove-NetFirewallRule -DisplayName {qpattern} -ErrorAction SilentlyContinue\r\n")
_FINAL_CHECK = "if (-not $netfwdShown.ContainsKey({qfull})) {{ throw {missing} }}"
_REMOVE = ("# forward {describe}\r\n"
           "& netsh.exe interface portproxy delete {table} {key} 'protocol=tcp' | Out-Null\r\n"
           + _REMOVE_RULE + "\r\n")
_REMOVE_CHECK = ("if ($netfwdShown.ContainsKey({qshort})) {{ throw {still_proxy} }}\r\n"
                 "if (Get-NetFirewallRule -DisplayName {qpattern} -ErrorAction SilentlyContinue) "
                 "{{ throw {still_rule} }}\r\n")


def _apply_block(forward: WinForward, words: dict[str, str]) -> str:
    """One forward's block (a multi-line string: 10,000 forwards must render in well under a second)."""
    deletes = "".join(f"& netsh.exe interface portproxy delete {table} {words['key']} 'protocol=tcp' | Out-Null\r\n"
                      for table in forward.stale_tables)
    local = "" if forward.local_ip is None else f" -LocalAddress {words['qlisten']}"
    remote = "'Any'" if forward.sources is None else "@('" + "', '".join(forward.sources) + "')"  # plain CIDRs
    return (f"# forward {words['describe']}, to {forward.connect_address} port {forward.connect_port}\r\n"
            f"{deletes}"
            f"$netfwdOut = & netsh.exe interface portproxy add {forward.table} {words['key']} "
            f"'connectaddress={forward.connect_address}' 'connectport={forward.connect_port}' 'protocol=tcp'\r\n"
            f"if ($LASTEXITCODE -ne 0) {{ throw ({words['failed']} + ($netfwdOut -join ' ')) }}\r\n"
            + _REMOVE_RULE.format_map(words)
            + f"New-NetFirewallRule -Name {words['qrule']} -DisplayName {words['qrule']} "
              f"-Description {words['qdescription']} -Group 'netfwd' -Direction Inbound -Action Allow "
              f"-Service '{IPHLPSVC}' -Protocol TCP -LocalPort {forward.listen_port}{local} -RemoteAddress {remote} "
              f"-Profile Any "
              f"| Out-Null\r\n\r\n")


DIALECT = PowerShellDialect()
