"""The `netsh` dialect: a Windows batch (`.cmd`) script of netsh port proxies and firewall rules.

It does what the vendor guide's one-liner leaves out (facts.md §1, §4): refuses to run without
elevation; sets the IP Helper service (which runs portproxy) to automatic and starts it; stops when a
listen port lies in a range Windows reserves (portproxy would silently not listen); replaces each
port proxy (delete, for the listen socket in every table of its family, then add) and each inbound
firewall rule (delete by name, then add: netsh would otherwise add a duplicate); and checks at the
end that Windows kept every entry. Lines end in CRLF: cmd misreads labels in LF-only files.
"""

from __future__ import annotations

from netfwd.dialects import cmdsyntax as cmd
from netfwd.dialects.base import safe_comment
from netfwd.dialects.winbase import WindowsDialect, WindowsState, WinForward, plan
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
        for forward in forwards:
            out += self._apply_forward(forward)
        out += ["rem Check that Windows kept every port proxy."]
        for forward in forwards:
            out += [f"call :has_proxy {_call_args(forward, full=True)}",
                    *_fail_if_error(f"forward {forward.name}: the port proxy {forward.listen_text()} -> "
                                    f"{forward.target_text()} is missing after apply")]
        out += ["echo netfwd: " + cmd.echo_text(f"applied {len(forwards)} forward(s) for cluster {spec.cluster}"),
                "exit /b 0", ""]
        out += self._subroutines(forwards, apply=True)
        return _finish(out)

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

    def _apply_forward(self, forward: WinForward) -> list[str]:
        out = [f"rem forward {_describe(forward)}, to {safe_comment(forward.connect_address)} "
               f"port {forward.connect_port}"]
        for table in forward.stale_tables:
            out.append(f"{_portproxy('delete', table, forward)} >nul 2>&1")
        out.append(_portproxy("add", forward.table, forward, connect=True))
        out += _fail_if_error(f"forward {forward.name}: netsh could not add the port proxy "
                              f"{forward.listen_text()} -> {forward.target_text()}")
        out.append(f"netsh advfirewall firewall delete rule {cmd.kv('name', forward.rule_name)} >nul 2>&1")
        for line in _firewall_adds(forward):
            out.append(line)
            out += _fail_if_error(f"forward {forward.name}: netsh could not add the firewall rule "
                                  f"{forward.rule_name}")
        return out + [""]

    def _subroutines(self, forwards: list[WinForward], apply: bool) -> list[str]:
        out = [
            ":has_proxy",
            "rem Succeeds when `netsh interface portproxy show TABLE` lists LISTENADDRESS LISTENPORT "
            "[CONNECTADDRESS CONNECTPORT].",
            "if \"%~4\"==\"\" (",
            "  for /f \"tokens=1,2\" %%a in ('netsh interface portproxy show %1') do "
            "if /i \"%%a %%b\"==\"%~2 %~3\" exit /b 0",
            ") else (",
            "  for /f \"tokens=1-4\" %%a in ('netsh interface portproxy show %1') do "
            "if /i \"%%a %%b %%c %%d\"==\"%~2 %~3 %~4 %~5\" exit /b 0",
            ")",
            "exit /b 1",
        ]
        if apply:
            for family in (4, 6):
                ports = sorted({f.listen_port for f in forwards if f.family == family})
                if not ports:
                    continue
                out += ["", f":check_range{family}",
                        f"rem %1-%2 is a reserved range: note every IPv{family} listen port of this spec inside it."]
                out += [f'if {p} GEQ %1 if {p} LEQ %2 set "NETFWD_CLASH=%NETFWD_CLASH% {p} in %1-%2"'
                        for p in ports]
                out.append("exit /b 0")
        return out

    # -- remove ----------------------------------------------------------------------------
    def render_remove(self, spec: Spec) -> str:
        self.check(spec)
        forwards = plan(spec)
        out = self._prologue(spec, "remove")
        out += ["rem Removes only what the apply script made; the IP Helper service is left running",
                "rem (other port proxies may need it).", ""]
        for forward in forwards:
            out += [f"rem forward {_describe(forward)}",
                    f"{_portproxy('delete', forward.table, forward)} >nul 2>&1",
                    f"netsh advfirewall firewall delete rule {cmd.kv('name', forward.rule_name)} >nul 2>&1",
                    f"call :has_proxy {_call_args(forward, full=False)}",
                    *_fail_if_ok(f"forward {forward.name}: a port proxy on {forward.listen_text()} is still present"),
                    f"netsh advfirewall firewall show rule {cmd.kv('name', forward.rule_name)} >nul 2>&1",
                    *_fail_if_ok(f"forward {forward.name}: the firewall rule {forward.rule_name} is still present"),
                    ""]
        out += ["echo netfwd: " + cmd.echo_text(f"removed {len(forwards)} forward(s) of cluster {spec.cluster}"),
                "exit /b 0", ""]
        out += self._subroutines(forwards, apply=False)
        return _finish(out)

    # -- reading back ----------------------------------------------------------------------
    def parse(self, text: str) -> list[Essence]:
        return self.simulate(text).essences()

    def simulate(self, text: str, state: WindowsState | None = None) -> WindowsState:
        """Run the script's netsh commands against a model of Windows state (the success path).

        Commands that run unconditionally are applied in order until the first top-level
        ``exit``; conditional ones (in blocks, after ``||``) are error paths and are skipped.
        """
        state = state if state is not None else WindowsState()
        for command in cmd.tokenize(text):
            if not command.unconditional:
                continue
            if command.kind == "exit":
                break
            if command.name in ("netsh", "netsh.exe"):
                state.netsh(command.argv[1:])
        return state


def _describe(forward: WinForward) -> str:
    """A comment-safe description (safe_comment() would turn '*' and '[' into '?')."""
    where = f"all IPv{forward.family} addresses" if forward.listen_address == "*" \
        else safe_comment(forward.listen_address)
    return f"{safe_comment(forward.name)}: port {forward.listen_port} on {where}"


def _portproxy(verb: str, table: str, forward: WinForward, connect: bool = False) -> str:
    words = ["netsh", "interface", "portproxy", verb, table, f"listenport={forward.listen_port}",
             cmd.kv("listenaddress", forward.listen_address)]
    if connect:
        words += [cmd.kv("connectaddress", forward.connect_address), f"connectport={forward.connect_port}"]
    return " ".join(words + ["protocol=tcp"])


def _firewall_adds(forward: WinForward) -> list[str]:
    """`add rule` lines; a long whitelist is split over several rules with the same name (cmd's
    line limit), which Windows ORs together and which one `delete rule name=` removes."""
    head = ["netsh", "advfirewall", "firewall", "add", "rule", cmd.kv("name", forward.rule_name),
            cmd.kv("description", forward.description), "dir=in", "action=allow", "protocol=TCP",
            f"localport={forward.listen_port}"]
    if forward.local_ip is not None:
        head.append(cmd.kv("localip", forward.local_ip))
    prefix = " ".join(head)
    chunks: list[list[str]] = [[]]
    budget = MAX_LINE - len(prefix) - len(" remoteip= profile=any")
    for cidr in forward.sources if forward.sources is not None else ("any",):
        if chunks[-1] and len(",".join(chunks[-1] + [cidr])) > budget:
            chunks.append([])
        chunks[-1].append(cidr)
    return [f"{prefix} {cmd.kv('remoteip', ','.join(chunk))} profile=any" for chunk in chunks]


def _call_args(forward: WinForward, full: bool) -> str:
    """Arguments of `call :has_proxy`. CALL parses its line twice, so only plain words may go there."""
    words = [forward.table, forward.listen_address, str(forward.listen_port)]
    if full:
        words += [forward.connect_address, str(forward.connect_port)]
    for word in words:
        if cmd.arg(word) != word:
            raise cmd.UnsafeValue(f"{word!r} is not a plain word")
    return " ".join(words)


def _fail_if_error(message: str) -> list[str]:
    return ["if errorlevel 1 (", f"  >&2 echo netfwd: {cmd.echo_text(message)}", "  exit /b 1", ")"]


def _fail_if_ok(message: str) -> list[str]:
    return ["if not errorlevel 1 (", f"  >&2 echo netfwd: {cmd.echo_text(message)}", "  exit /b 1", ")"]


def _finish(lines: list[str]) -> str:
    text = "\r\n".join(lines).rstrip("\r\n") + "\r\n"
    if any(len(line) > MAX_LINE for line in lines):
        raise cmd.UnsafeValue("a line exceeds cmd's 8191-character limit")
    if not text.isascii():  # see cmdsyntax: cmd reads scripts in the OEM code page
        raise cmd.UnsafeValue("a batch script must be ASCII")
    return text


DIALECT = NetshDialect()
