"""The `netsh` dialect: a Windows batch (`.cmd`) script of netsh port proxies and firewall rules.

It does what the vendor guide's one-liner leaves out (docs/facts.md#windows-portproxy): refuses to run without
elevation; sets the IP Helper service (which runs portproxy) to automatic and starts it; stops when a
listen port lies in a range Windows reserves (portproxy would silently not listen); replaces each
port proxy (delete, for the listen socket in every table of its family, then add) and each inbound
firewall rule (delete by name, then add: netsh would otherwise add a duplicate); and checks at the
end that Windows kept every entry. Lines end in CRLF: cmd misreads labels in LF-only files.
"""

from __future__ import annotations

import re

from netfwd.dialects import cmdsyntax as cmd
from netfwd.dialects.winbase import (IPHLPSVC, LOCAL_KEY, LOCAL_NAMES, POLICY_KEY, PROFILES, WindowsDialect,
                                      WindowsState, WinForward, describe, finish, plan)
from netfwd.model import Essence, Spec

MAX_LINE = 8000  # cmd's limit is 8191 characters per line after expansion
EXCLUDED_ROW = '"^ *[0123456789][0123456789]*  *[0123456789][0123456789]*"'


class NetshDialect(WindowsDialect):
    name = "netsh"
    extension = "cmd"
    comment_leader = "rem"

    # -- apply -----------------------------------------------------------------------------
    def render(self, spec: Spec) -> str:
        self.check(spec)
        forwards = plan(spec)
        out = self._prologue(spec, "apply")
        out += _firewall_on_check()
        out += [
            "rem The IP Helper service runs portproxy: without it entries are stored but nothing listens.",
            "sc config iphlpsvc start= auto >nul",
            *_fail_if_error("cannot set the IP Helper service (iphlpsvc) to start automatically"),
            "net start iphlpsvc >nul 2>&1",
            'sc query iphlpsvc | findstr /r /c:" 4  *RUNNING" >nul',
            *_fail_if_error("the IP Helper service (iphlpsvc) is not running: portproxy would silently do nothing"),
            "",
        ]
        out += self._excluded_port_check(forwards)
        spelled = self.spelled(spec, _spell)
        out += [self._apply_forward(forward, words) for forward, words in spelled]
        out += ["rem Check that Windows kept every port proxy: list them once, then look for each.", *_LISTING]
        out += [_FINAL_CHECK.format_map(words) for _, words in spelled]
        out.append('del "%NETFWD_SHOWN%"')
        out += ["", *_LISTENING]
        out += [_listening_check(forward, words) for forward, words in spelled]
        out.append('del "%NETFWD_LISTENING%"')
        out += ["echo netfwd: " + cmd.echo_text(f"applied {len(forwards)} forward(s) for cluster {spec.cluster}"),
                "exit /b 0", ""]
        out += self._subroutines(forwards, apply=True)
        return finish(out)

    def _prologue(self, spec: Spec, what: str) -> list[str]:
        return ["@echo off", *self.header(spec, what),
                "setlocal EnableExtensions DisableDelayedExpansion", "",
                "rem Port proxies and firewall rules can only be changed from an elevated prompt.",
                "net session >nul 2>&1",
                *_fail_if_error("run this script from an elevated prompt (Run as administrator)"), ""]

    def _excluded_port_check(self, forwards: list[WinForward]) -> list[str]:
        out = ["rem Windows reserves TCP port ranges (Hyper-V, WinNAT): portproxy cannot listen inside them",
               "rem and does not say so. Stop before changing anything if a listen port is reserved.",
               'set "NETFWD_CLASH="']
        for family in (4, 6):
            if any(f.family == family for f in forwards):
                out.append(f"for /f \"tokens=1,2\" %%s in ('netsh interface ipv{family} show excludedportrange "
                           f"protocol^=tcp ^| findstr /r /c:{EXCLUDED_ROW}') do call :check_range{family} %%s %%t")
        out += ["if defined NETFWD_CLASH (",
                "  >&2 echo netfwd: listen port^(s^) inside a TCP port range that Windows reserves:%NETFWD_CLASH%",
                "  >&2 echo netfwd: choose another listen port, or free the range ^(netsh interface ipv4 show "
                "excludedportrange protocol=tcp^)",
                "  exit /b 1", ")", ""]
        return out

    def _apply_forward(self, forward: WinForward, words: dict[str, str]) -> str:
        """One forward's block (a multi-line string: 10,000 forwards must render in well under a second)."""
        deletes = "".join(f"netsh interface portproxy delete {table} {words['key']} protocol=tcp >nul 2>&1\r\n"
                          for table in forward.stale_tables)
        adds = "".join(f"{line}\r\n" + _FAIL.format(f"forward {words['ename']}: netsh could not add the "
                                                     f"firewall rule {words['erule']}")
                       for line in _firewall_adds(forward, words["qname"]))
        return (f"rem forward {words['describe']}, to {forward.connect_address} port {forward.connect_port}\r\n"
                f"{deletes}"
                f"netsh interface portproxy add {forward.table} {words['key']} "
                f"connectaddress={forward.connect_address} connectport={forward.connect_port} protocol=tcp\r\n"
                + _FAIL.format(f"forward {words['ename']}: netsh could not add the port proxy "
                               f"{words['listen']} -^> {words['target']}")
                + f"netsh advfirewall firewall delete rule {words['qname']} >nul 2>&1\r\n{adds}\r\n")

    def _subroutines(self, forwards: list[WinForward], apply: bool) -> list[str]:
        out: list[str] = []
        if apply:
            for family in (4, 6):
                ports = sorted({f.listen_port for f in forwards if f.family == family})
                if not ports:
                    continue
                out += [f":check_range{family}",
                        f"rem %1-%2 is a reserved range: note every IPv{family} listen port of this spec inside it."]
                out += [f'if {p} GEQ %1 if {p} LEQ %2 set "NETFWD_CLASH=%NETFWD_CLASH% {p} in %1-%2"'
                        for p in ports]
                out += ["exit /b 0", ""]
        return out

    # -- remove ----------------------------------------------------------------------------
    def render_remove(self, spec: Spec) -> str:
        self.check(spec)
        forwards = plan(spec)
        out = self._prologue(spec, "remove")
        out += self.removal(self.spelled(spec, _spell), _REMOVE, _REMOVE_CHECK, list(_LISTING))
        out.append('del "%NETFWD_SHOWN%"')
        out += ["echo netfwd: " + cmd.echo_text(f"removed {len(forwards)} forward(s) of cluster {spec.cluster}"),
                "exit /b 0", ""]
        out += self._subroutines(forwards, apply=False)
        return finish(out)

    # -- reading back ----------------------------------------------------------------------
    def parse(self, text: str) -> list[Essence]:
        return self.simulate(text).essences()

    def simulate(self, text: str, state: WindowsState | None = None, args: tuple[str, ...] = ()) -> WindowsState:
        """Run the script (with command-line `args`) against a model of Windows state, to its first
        top-level ``exit``; a non-zero exit raises ScriptExit (see netfwd.dialects.cmdrun)."""
        from netfwd.dialects.cmdrun import Run

        state = state if state is not None else WindowsState()
        Run(state, args).run(text)
        return state


def _spell(forward: WinForward) -> dict[str, str]:
    """A forward's values, each escaped once for where the script uses it."""
    if not _ADDRESSES.match(f"{forward.listen_address}{forward.connect_address}"):
        raise cmd.UnsafeValue(f"{forward.listen_address!r} / {forward.connect_address!r}: not plain addresses")
    return {
        "table": forward.table, "key": f"listenport={forward.listen_port} listenaddress={forward.listen_address}",
        "qname": cmd.kv("name", forward.rule_name), "ename": cmd.echo_text(forward.name),
        "erule": cmd.echo_text(forward.rule_name), "listen": forward.listen_text(), "target": forward.target_text(),
        "listen_address": forward.listen_address, "connect_address": forward.connect_address,  # plain (above)
        "lport": str(forward.listen_port), "cport": str(forward.connect_port),
        "describe": describe(forward),
    }


_ADDRESSES = re.compile(r"[0-9A-Fa-f.:*]+\Z")
_FAIL = "if errorlevel 1 (\r\n  >&2 echo netfwd: {}\r\n  exit /b 1\r\n)\r\n"
_FAIL_IF_OK = "if not errorlevel 1 (\r\n  >&2 echo netfwd: {}\r\n  exit /b 1\r\n)\r\n"
# `netsh interface portproxy show all` once, as "LISTENADDRESS LISTENPORT CONNECTADDRESS CONNECTPORT"
# lines (one search per forward: asking netsh per forward would read every entry N times).
_LISTING = ['set "NETFWD_SHOWN=%TEMP%\\netfwd-%RANDOM%%RANDOM%.txt"',
            "(for /f \"tokens=1-4\" %%a in ('netsh interface portproxy show all') do @echo %%a %%b %%c %%d)"
            '>"%NETFWD_SHOWN%"']
_FAIL_SHOWN = ("if {0}errorlevel 1 (\r\n  del \"%NETFWD_SHOWN%\" 2>nul\r\n  >&2 echo netfwd: {1}\r\n"
               "  exit /b 1\r\n)\r\n")
_FINAL_CHECK = ('findstr /x /i /l /c:"{listen_address} {lport} {connect_address} {cport}" "%NETFWD_SHOWN%" >nul\r\n'
                + _FAIL_SHOWN.format("", "forward {ename}: the port proxy {listen} -^> {target} is missing "
                                         "after apply"))
_REMOVE = ("rem forward {describe}\r\n"
           "netsh interface portproxy delete {table} {key} protocol=tcp >nul 2>&1\r\n"
           "netsh advfirewall firewall delete rule {qname} >nul 2>&1\r\n\r\n")
_REMOVE_CHECK = ('findstr /b /i /l /c:"{listen_address} {lport} " "%NETFWD_SHOWN%" >nul\r\n'
                 + _FAIL_SHOWN.format("not ", "forward {ename}: a port proxy on {listen} is still present")
                 + "netsh advfirewall firewall show rule {qname} >nul 2>&1\r\n"
                 + _FAIL_SHOWN.format("not ", "forward {ename}: the firewall rule {erule} is still present"))


ALLOW_FIREWALL_OFF = "/AllowFirewallOff"


def _firewall_on_check() -> list[str]:
    """Stop before any change when a Windows Firewall profile is off (or warn, with /AllowFirewallOff).

    The profile's switch is the EnableFirewall value of group policy where set, else of the local store
    (docs/facts.md#windows-firewall); `reg query` prints it the same in every display language."""
    out = ["rem Windows Firewall must be on in every profile: the inbound allow rule is the whitelist, and a",
           "rem profile that is off admits every source. Group policy's EnableFirewall wins where it is set.",
           'set "NETFWD_OFF="']
    for profile in PROFILES:
        flag = f"NETFWD_OFF_{profile.upper()}"
        out.append(f'set "{flag}="')
        for key in (LOCAL_KEY.format(LOCAL_NAMES[profile]), POLICY_KEY.format(profile)):
            out.append(f"for /f \"tokens=3\" %%v in ('reg query \"{key}\" /v EnableFirewall 2^>nul ^| findstr /i /l "
                       f'/c:"REG_DWORD"\') do set "{flag}=" & if "%%v"=="0x0" set "{flag}=1"')
        out += [f"if defined {flag} (", f"  >&2 echo netfwd: Windows Firewall is off for the {profile} profile",
                '  set "NETFWD_OFF=1"', ")"]
    out += [f'if defined NETFWD_OFF if /i not "%~1"=="{ALLOW_FIREWALL_OFF}" (',
            "  >&2 echo netfwd: a profile that is off admits every source to the forwarded ports: the whitelist "
            "would not hold; nothing was changed",
            "  >&2 echo netfwd: turn it on ^(netsh advfirewall set allprofiles state on^), or run this script "
            f"with {ALLOW_FIREWALL_OFF} to go on anyway",
            "  exit /b 1", ")",
            "if defined NETFWD_OFF >&2 echo netfwd: warning: going on with Windows Firewall off "
            f"^({ALLOW_FIREWALL_OFF}^): every source reaches the forwarded ports", ""]
    return out


# `netstat -an` once, as "PROTO LOCAL FOREIGN" lines; a listening TCP socket has the foreign address
# 0.0.0.0:0 or [::]:0 (netstat's state column is localised, the addresses are not).
_LISTENING = ["rem Check that each port proxy listens: a stored entry is not a served one (iphlpsvc stopped, the",
              "rem port taken by another program). iphlpsvc binds a moment after netsh returns: wait 2 seconds.",
              "ping -n 3 127.0.0.1 >nul",
              'set "NETFWD_LISTENING=%TEMP%\\netfwd-%RANDOM%%RANDOM%.txt"',
              "(for /f \"tokens=1-3\" %%a in ('netstat -an') do @echo %%a %%b %%c)>\"%NETFWD_LISTENING%\""]


def listening_lines(forward: WinForward) -> list[str]:
    """The normalised netstat lines that show the forward's port proxy listening: on its own address,
    or on the wildcard address of either family (what `*` binds)."""
    lines = [f"TCP 0.0.0.0:{forward.listen_port} 0.0.0.0:0", f"TCP [::]:{forward.listen_port} [::]:0"]
    if forward.listen_address != "*":
        own = forward.listen_address
        lines.insert(0, f"TCP [{own}]:{forward.listen_port} [::]:0" if ":" in own
                     else f"TCP {own}:{forward.listen_port} 0.0.0.0:0")
    return lines


def _listening_check(forward: WinForward, words: dict[str, str]) -> str:
    searches = " ".join(f'/c:"{line}"' for line in listening_lines(forward))  # addresses and ports: plain
    return (f'findstr /x /i /l {searches} "%NETFWD_LISTENING%" >nul\r\n'
            + _FAIL_LISTENING.format(f"forward {words['ename']}: nothing listens on {words['listen']} after apply: "
                                     "the port proxy is stored but not served ^(is iphlpsvc running? is the port "
                                     "taken? netstat -ano^)"))


_FAIL_LISTENING = ("if errorlevel 1 (\r\n  del \"%NETFWD_LISTENING%\" 2>nul\r\n  >&2 echo netfwd: {}\r\n"
                   "  exit /b 1\r\n)\r\n")


def _firewall_adds(forward: WinForward, qname: str) -> list[str]:
    """`add rule` lines; a long whitelist is split over several rules with the same name (cmd's
    line limit), which Windows ORs together and which one `delete rule name=` removes."""
    local = "" if forward.local_ip is None else f" localip={forward.local_ip}"  # a plain address
    prefix = (f"netsh advfirewall firewall add rule {qname} {cmd.kv('description', forward.description)} "
              f"dir=in action=allow service={IPHLPSVC} protocol=TCP localport={forward.listen_port}{local} remoteip=")
    sources = forward.sources if forward.sources is not None else ("any",)
    line = f"{prefix}{','.join(sources)} profile=any"  # CIDRs are plain words
    if len(line) <= MAX_LINE:
        return [line]
    chunks: list[list[str]] = [[]]
    budget, used = MAX_LINE - len(prefix) - len(" profile=any"), 0
    for cidr in sources:
        if chunks[-1] and used + 1 + len(cidr) > budget:
            chunks.append([])
            used = 0
        used += len(cidr) + (1 if chunks[-1] else 0)
        chunks[-1].append(cidr)
    if budget < 64:
        raise cmd.UnsafeValue(f"forward {forward.name}: the firewall rule line leaves no room for addresses")
    return [f"{prefix}{','.join(chunk)} profile=any" for chunk in chunks]


def _fail_if_error(message: str) -> list[str]:
    return ["if errorlevel 1 (", f"  >&2 echo netfwd: {cmd.echo_text(message)}", "  exit /b 1", ")"]


DIALECT = NetshDialect()
