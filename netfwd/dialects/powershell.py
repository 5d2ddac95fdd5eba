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
from netfwd.dialects.base import safe_comment
from netfwd.dialects.winbase import ScriptError, WindowsDialect, WindowsState, WinForward, plan
from netfwd.model import Essence, Spec

q = ps.quote

# Helper functions written into every script; they take values only as parameters.
TEST_PORTPROXY = r"""function Test-NetfwdPortProxy {
    # True when `netsh interface portproxy show <table>` lists the entry (netsh has no query by key).
    param([string] $Table, [string] $ListenAddress, [int] $ListenPort,
          [string] $ConnectAddress = '', [int] $ConnectPort = 0)
    foreach ($line in @(& netsh.exe interface portproxy show $Table)) {
        $f = @(-split [string] $line)
        if ($f.Count -eq 4 -and $f[0] -eq $ListenAddress -and $f[1] -eq [string] $ListenPort -and
            ($ConnectAddress -eq '' -or ($f[2] -eq $ConnectAddress -and $f[3] -eq [string] $ConnectPort))) {
            return $true
        }
    }
    return $false
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


class PowerShellDialect(WindowsDialect):
    name = "powershell"
    extension = "ps1"
    comment_leader = "#"

    def _prologue(self, spec: Spec, what: str) -> list[str]:
        return [*self.header(spec, what), "#Requires -RunAsAdministrator",
                "Set-StrictMode -Version 3.0",
                "$ErrorActionPreference = 'Stop'",
                "$PSNativeCommandUseErrorActionPreference = $false  # netsh failures are read from $LASTEXITCODE",
                "", TEST_PORTPROXY, ""]

    # -- apply -----------------------------------------------------------------------------
    def render(self, spec: Spec) -> str:
        self.check(spec)
        forwards = plan(spec)
        out = self._prologue(spec, "apply")
        out += [EXCLUDED_RANGES, "",
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
        for forward in forwards:
            out += self._apply_forward(forward)
        out.append("# Check that Windows kept every port proxy.")
        for forward in forwards:
            message = (f"netfwd: forward {forward.name}: the port proxy {forward.listen_text()} -> "
                       f"{forward.target_text()} is missing after apply")
            out.append(f"if (-not (Test-NetfwdPortProxy {_proxy_args(forward, full=True)})) {{ throw {q(message)} }}")
        out.append("Write-Output " + q(f"netfwd: applied {len(forwards)} forward(s) for cluster {spec.cluster}"))
        return _finish(out)

    def _apply_forward(self, forward: WinForward) -> list[str]:
        out = [f"# forward {_describe(forward)}, to {safe_comment(forward.connect_address)} port "
               f"{forward.connect_port}"]
        for table in forward.stale_tables:
            out.append(f"{_portproxy('delete', table, forward)} | Out-Null")
        out.append(f"$netfwdOut = {_portproxy('add', forward.table, forward, connect=True)}")
        message = (f"netfwd: forward {forward.name}: netsh could not add the port proxy "
                   f"{forward.listen_text()} -> {forward.target_text()}: ")
        out.append(f"if ($LASTEXITCODE -ne 0) {{ throw ({q(message)} + ($netfwdOut -join ' ')) }}")
        out += _remove_rule(forward)
        rule = [f"New-NetFirewallRule -Name {q(forward.rule_name)} -DisplayName {q(forward.rule_name)}",
                f"-Description {q(forward.description)} -Group 'netfwd'",
                "-Direction Inbound -Action Allow -Protocol TCP", f"-LocalPort {forward.listen_port}"]
        if forward.local_ip is not None:
            rule.append(f"-LocalAddress {q(forward.local_ip)}")
        remote = "'Any'" if forward.sources is None else ps.array(forward.sources)
        rule += [f"-RemoteAddress {remote}", "-Profile Any | Out-Null"]
        out.append(" ".join(rule))
        return out + [""]

    # -- remove ----------------------------------------------------------------------------
    def render_remove(self, spec: Spec) -> str:
        self.check(spec)
        forwards = plan(spec)
        out = self._prologue(spec, "remove")
        out += ["# Removes only what the apply script made; the IP Helper service is left running",
                "# (other port proxies may need it).", ""]
        for forward in forwards:
            out += [f"# forward {_describe(forward)}",
                    f"{_portproxy('delete', forward.table, forward)} | Out-Null",
                    *_remove_rule(forward),
                    f"if (Test-NetfwdPortProxy {_proxy_args(forward, full=False)}) {{ throw "
                    f"{q(f'netfwd: forward {forward.name}: a port proxy on {forward.listen_text()} is still present')} }}",
                    f"if (Get-NetFirewallRule -DisplayName {q(ps.wildcard_escape(forward.rule_name))} "
                    "-ErrorAction SilentlyContinue) "
                    f"{{ throw {q(f'netfwd: forward {forward.name}: the firewall rule {forward.rule_name} is still present')} }}",
                    ""]
        out.append("Write-Output " + q(f"netfwd: removed {len(forwards)} forward(s) of cluster {spec.cluster}"))
        return _finish(out)

    # -- reading back ----------------------------------------------------------------------
    def parse(self, text: str) -> list[Essence]:
        return self.simulate(text).essences()

    def simulate(self, text: str, state: WindowsState | None = None) -> WindowsState:
        """Run the script's script-level netsh calls and firewall cmdlets against a model of Windows."""
        state = state if state is not None else WindowsState()
        for command in ps.commands(text):
            if command.depth:
                continue  # inside a function, an `if` or a loop: checks and error paths
            name = command.name.lower()
            if name in ("netsh", "netsh.exe"):
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


def _describe(forward: WinForward) -> str:
    where = f"all IPv{forward.family} addresses" if forward.listen_address == "*" \
        else safe_comment(forward.listen_address)
    return f"{safe_comment(forward.name)}: port {forward.listen_port} on {where}"


def _portproxy(verb: str, table: str, forward: WinForward, connect: bool = False) -> str:
    words = ["&", "netsh.exe", "interface", "portproxy", verb, table, q(f"listenport={forward.listen_port}"),
             q(f"listenaddress={forward.listen_address}")]
    if connect:
        words += [q(f"connectaddress={forward.connect_address}"), q(f"connectport={forward.connect_port}")]
    return " ".join(words + [q("protocol=tcp")])


def _remove_rule(forward: WinForward) -> list[str]:
    """Remove by -Name (rules this dialect made) and by -DisplayName (rules the netsh dialect made)."""
    pattern = q(ps.wildcard_escape(forward.rule_name))  # both parameters take wildcards
    return [f"Remove-NetFirewallRule -Name {pattern} -ErrorAction SilentlyContinue",
            f"Remove-NetFirewallRule -DisplayName {pattern} -ErrorAction SilentlyContinue"]


def _proxy_args(forward: WinForward, full: bool) -> str:
    words = [f"-Table {q(forward.table)}", f"-ListenAddress {q(forward.listen_address)}",
             f"-ListenPort {forward.listen_port}"]
    if full:
        words += [f"-ConnectAddress {q(forward.connect_address)}", f"-ConnectPort {forward.connect_port}"]
    return " ".join(words)


def _finish(lines: list[str]) -> str:
    text = "\r\n".join("\r\n".join(line.split("\n")) for line in lines).rstrip("\r\n") + "\r\n"
    if not text.isascii():  # see pssyntax.quote: Windows PowerShell 5.1 reads BOM-less scripts as ANSI
        raise ps.UnsafeValue("a PowerShell script must be ASCII")
    return text


DIALECT = PowerShellDialect()
