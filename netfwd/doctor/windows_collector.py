"""The PowerShell collector for an offline check of a Windows relay.

No Windows runs where netfwd does, so the Windows relay is checked from a report: this script,
run there (as Administrator; it changes nothing), gathers into one UTF-8 JSON file everything
`netfwd doctor --windows-report FILE SPEC` checks:

* ``netsh interface portproxy show all`` (the live port proxies; parsed by netfwd.windows),
* the registry PortProxy keys (what survives a reboot),
* the IP Helper service (iphlpsvc: state, start mode, PID - it runs portproxy),
* ``netsh int ipv4|ipv6 show excludedportrange protocol=tcp`` (ports Windows reserves),
* the enforced on/off state of each Windows Firewall profile (Domain, Private, Public),
* the enabled inbound allow/block rules of Windows Firewall with their ports, remote addresses and service,
* the host's IP addresses (the cloud public-IP trap) and its listening TCP sockets (port conflicts).

Service, firewall and address facts come from CIM cmdlets, whose values do not depend on the display
language; only the two netsh outputs are localised text, and their parsers key on structure.
`netfwd render SPEC --dialect powershell --collector` prints the same script.
"""

from __future__ import annotations

from netfwd import __version__

REPORT_MARKER = "netfwd_windows_report"
REPORT_VERSION = 1

COLLECTOR = r"""# netfwd {version}: Windows relay collector for `netfwd doctor --windows-report FILE SPEC`.
# Read-only: it lists port proxies, the IP Helper service, reserved ports, firewall rules,
# addresses and listening sockets, and writes them to one JSON file. Run it as Administrator:
#   powershell -ExecutionPolicy Bypass -File netfwd-collect.ps1 -Out C:\temp\relay.json
param([string] $Out = 'netfwd-windows-report.json')
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

$report = [ordered]@{{ {marker} = {report_version}; netfwd = '{version}'; errors = @() }}
$report.collected = (Get-Date).ToUniversalTime().ToString('o')
$report.computer = [string] $env:COMPUTERNAME

function Add-NetfwdSection {{
    # One section per fact; a failure is recorded and the others are still collected.
    param([string] $Name, [scriptblock] $Body)
    try {{ $report[$Name] = & $Body }}
    catch {{ $report.errors += ('{{0}}: {{1}}' -f $Name, $_.Exception.Message) }}
}}

function Get-NetfwdLines {{
    param([string[]] $Arguments)
    $lines = @(& netsh.exe @Arguments | ForEach-Object {{ [string] $_ }})
    if ($LASTEXITCODE -ne 0) {{ throw ('netsh {{0}} failed: {{1}}' -f ($Arguments -join ' '), ($lines -join ' ')) }}
    , $lines
}}

Add-NetfwdSection 'os' {{ [string] (Get-CimInstance -ClassName Win32_OperatingSystem).Caption }}
Add-NetfwdSection 'portproxy' {{ Get-NetfwdLines @('interface', 'portproxy', 'show', 'all') }}
Add-NetfwdSection 'registry' {{
    $tables = [ordered]@{{}}
    foreach ($table in @('v4tov4', 'v4tov6', 'v6tov4', 'v6tov6')) {{
        $entries = [ordered]@{{}}
        $key = 'HKLM:\SYSTEM\CurrentControlSet\Services\PortProxy\' + $table + '\tcp'
        if (Test-Path -LiteralPath $key) {{
            $item = Get-Item -LiteralPath $key
            foreach ($name in $item.GetValueNames()) {{ $entries[[string] $name] = [string] $item.GetValue($name) }}
        }}
        $tables[$table] = $entries
    }}
    $tables
}}
Add-NetfwdSection 'iphlpsvc' {{
    $svc = Get-CimInstance -ClassName Win32_Service -Filter "Name='iphlpsvc'"
    if ($null -eq $svc) {{ $null }}
    else {{ [ordered]@{{ state = [string] $svc.State; start_mode = [string] $svc.StartMode; pid = [int] $svc.ProcessId }} }}
}}
Add-NetfwdSection 'excluded_ipv4' {{ Get-NetfwdLines @('interface', 'ipv4', 'show', 'excludedportrange', 'protocol=tcp') }}
Add-NetfwdSection 'excluded_ipv6' {{ Get-NetfwdLines @('interface', 'ipv6', 'show', 'excludedportrange', 'protocol=tcp') }}
Add-NetfwdSection 'firewall' {{
    # Filters are joined to rules by InstanceID (one query each instead of two per rule).
    $ports = @{{}}
    foreach ($f in @(Get-NetFirewallPortFilter -All)) {{ $ports[[string] $f.InstanceID] = $f }}
    $addresses = @{{}}
    foreach ($f in @(Get-NetFirewallAddressFilter -All)) {{ $addresses[[string] $f.InstanceID] = $f }}
    $services = @{{}}
    foreach ($f in @(Get-NetFirewallServiceFilter -All)) {{ $services[[string] $f.InstanceID] = [string] $f.Service }}
    $rules = @()
    foreach ($rule in @(Get-NetFirewallRule -Direction Inbound -Enabled True)) {{
        $port = $ports[[string] $rule.InstanceID]
        if ($null -eq $port) {{ $port = $rule | Get-NetFirewallPortFilter }}
        $address = $addresses[[string] $rule.InstanceID]
        if ($null -eq $address) {{ $address = $rule | Get-NetFirewallAddressFilter }}
        $rules += , ([ordered]@{{
            name = [string] $rule.Name; display_name = [string] $rule.DisplayName; group = [string] $rule.Group
            service = [string] $services[[string] $rule.InstanceID]
            action = [string] $rule.Action; profile = [string] $rule.Profile
            protocol = [string] $port.Protocol; local_port = @($port.LocalPort | ForEach-Object {{ [string] $_ }})
            remote_address = @($address.RemoteAddress | ForEach-Object {{ [string] $_ }})
            local_address = @($address.LocalAddress | ForEach-Object {{ [string] $_ }})
        }})
    }}
    , $rules
}}
Add-NetfwdSection 'profiles' {{
    # ActiveStore: what is enforced, group policy merged over the local settings.
    @(Get-NetFirewallProfile -PolicyStore ActiveStore | ForEach-Object {{ [ordered]@{{ name = [string] $_.Name; enabled = [string] $_.Enabled }} }})
}}
Add-NetfwdSection 'addresses' {{
    @(Get-NetIPAddress | ForEach-Object {{
        [ordered]@{{ interface = [string] $_.InterfaceAlias; address = [string] $_.IPAddress; prefix = [int] $_.PrefixLength }} }})
}}
Add-NetfwdSection 'listeners' {{
    @(Get-NetTCPConnection -State Listen -ErrorAction SilentlyContinue | ForEach-Object {{
        [ordered]@{{ address = [string] $_.LocalAddress; port = [int] $_.LocalPort; pid = [int] $_.OwningProcess }} }})
}}

$json = $report | ConvertTo-Json -Depth 8
# .NET resolves relative paths against the process directory, not PowerShell's current location.
$path = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($Out)
[System.IO.File]::WriteAllText($path, $json, (New-Object System.Text.UTF8Encoding $false))
Write-Output ('netfwd: wrote {{0}}; check it with: netfwd doctor --windows-report FILE SPEC' -f $path)
"""


def collector_script() -> str:
    """The collector as a .ps1 file: ASCII, CRLF line ends (what Windows PowerShell 5.1 reads best)."""
    text = COLLECTOR.format(version=__version__, marker=REPORT_MARKER, report_version=REPORT_VERSION)
    assert text.isascii()
    return "\r\n".join(text.splitlines()) + "\r\n"
