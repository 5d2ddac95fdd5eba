"""Which endpoints to probe, from a spec, `--via`, `--target` and a list file — and nothing else.

Every address probed is one the user named (the relay via --via or the spec, or a --target);
duplicates are dropped. Bad input is one line naming the option or file, line and field.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable, Sequence

from netfwd.errors import InputError
from netfwd.probe.model import Endpoint

MAX_ENDPOINTS = 20_000
# RFC 1123 labels (and '_', which some internal zones use): '$(reboot)' is not sent to the resolver
_HOST_NAME = re.compile(r"^(?=.{1,253}$)(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                        r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_hostport(text: str, field: str, need_port: bool = True, file: str | None = None,
                   line: int | None = None) -> tuple[str, int | None]:
    """"host:port", "[v6]:port", "v4", "name" (the last two only without need_port)."""
    text = text.strip()

    def bad(message: str) -> InputError:
        return InputError(message, file=file, line=line, field=field)

    if not text:
        raise bad("is empty")
    host, port_text = text, None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise bad(f"{text!r}: missing ']' after an IPv6 address")
        host, rest = text[1:close], text[close + 1:]
        if rest:
            if not rest.startswith(":"):
                raise bad(f"{text!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise bad(f"{text!r} is not HOST:PORT (write IPv6 addresses as [ADDR]:PORT)") from None
    if not host or any(c.isspace() or c in "/?#@" for c in host) or not (_HOST_NAME.match(host) or _is_ip(host)):
        raise bad(f"{text!r}: {host!r} is not a host name or address")
    port = None
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
            raise bad(f"{text!r}: {port_text!r} is not a port (1-65535)")
        port = int(port_text)
    if need_port and port is None:
        raise bad(f"{text!r} has no port: write HOST:PORT")
    return host, port


MAX_LIST_BYTES = 16 << 20  # 100,000 HOST:PORT lines are ~2.5 MB


def from_list_file(path: str) -> list[Endpoint]:
    """One `HOST:PORT [NAME]` per line; blank lines and `#` comments ignored."""
    from netfwd.inputfile import read_utf8

    text = read_utf8(path, MAX_LIST_BYTES, "target list")
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise InputError(f"{raw.strip()!r}: expected HOST:PORT and an optional name", file=path, line=number,
                             field="target")
        host, port = parse_hostport(words[0], "target", file=path, line=number)
        found.append(Endpoint(host, port or 0, name=words[1] if len(words) > 1 else None))
    return found


def from_spec(spec, via: str | None, names: Sequence[str], log: Callable[[str], None],
              on_relay: bool = False, doc=None) -> list[Endpoint]:
    """One endpoint per TCP forward: dial (--via host, or the spec's address) : listen port.
    On the relay itself (`on_relay`) nothing is dialled at port A, so no address is needed.
    `doc` (the spec's source document) lets errors name the line."""
    via_host, via_port = parse_hostport(via, "--via", need_port=False) if via else (None, None)
    forwards = list(spec.forwards)
    for name in names:
        if not any(f.name == name for f in forwards):
            raise InputError(f"no forward named {name!r} (forwards: {', '.join(f.name for f in forwards)})",
                             file=spec.origin, field="--forward")
    if names:
        forwards = [f for f in forwards if f.name in names]
    udp = [f.name for f in forwards if f.protocol != "tcp"]
    if udp:
        log(f"not probing udp forward(s): {', '.join(udp)} (probe checks TCP)")
    forwards = [f for f in forwards if f.protocol == "tcp"]
    if via_port is not None:
        forwards = [f for f in forwards if f.listen.port == via_port]
        if not forwards:
            raise InputError(f"no tcp forward in the spec listens on port {via_port}", file=spec.origin, field="--via")
    relay_private = str(spec.relay.address) if spec.relay.address is not None else None
    endpoints = []
    for index, forward in enumerate(spec.forwards):
        if forward not in forwards:
            continue
        listen = str(forward.listen.address) if forward.listen.address is not None else None
        host = via_host or listen or relay_private or ("*" if on_relay else None)
        if host is None:
            field, message = (f"forwards[{index}].listen", "no address to dial: give --via RELAY (the relay's "
                              "reachable address), or set relay.address / listen.address in the spec")
            raise doc.error(field, message) if doc else InputError(message, file=spec.origin, field=field)
        others = tuple(a for a in (relay_private, listen) if a and a != host)
        client = None if not forward.sources else str(forward.sources[0][min(1, forward.sources[0].size - 1)])
        endpoints.append(Endpoint(host, forward.listen.port, name=forward.name,
                                  target=(str(forward.to.address), forward.to.port),
                                  relay_addresses=others, relay_os=spec.relay.os, client=client))
    return endpoints


def collect(loaded, via: str | None, targets: Sequence[str], list_file: str | None, names: Sequence[str],
            from_relay: bool, log: Callable[[str], None]) -> list[Endpoint]:
    """The endpoints the options ask for (see docs/probe.md for the combinations)."""
    if names and loaded is None:
        raise InputError("--forward selects forwards of a SPEC: give the spec file", field="--forward")
    if loaded is not None:
        if targets or list_file:
            raise InputError("the spec already names the targets: drop --target/--targets-file, or the SPEC",
                             field="--target")
        endpoints = from_spec(loaded.spec, via, names, log, on_relay=from_relay, doc=loaded.doc)
    elif via:
        host, port = parse_hostport(via, "--via")
        if len(targets) > 1 or list_file:
            raise InputError("with --via, give at most one --target (the API server behind the relay)",
                             field="--target")
        target = parse_hostport(targets[0], "--target") if targets else None
        endpoints = [Endpoint(host, port or 0, target=(target[0], target[1] or 0) if target else None)]
    else:
        endpoints = []
        for text in targets:
            host, port = parse_hostport(text, "--target")
            endpoints.append(Endpoint(host, port or 0))
        if list_file:
            endpoints += from_list_file(list_file)
        if from_relay:
            raise InputError("--from-relay needs the forward: a SPEC, or --via RELAY:A --target B:PORT",
                             field="--from-relay")
    if from_relay and any(ep.target is None for ep in endpoints):
        raise InputError("--from-relay needs the target behind the relay: give --target B:PORT", field="--target")
    if from_relay and any(ep.relay_os == "windows" for ep in endpoints):
        raise InputError("--from-relay reads Linux conntrack; a Windows relay (netsh portproxy) has none",
                         field="--from-relay")
    seen: set[tuple[str, int]] = set()
    unique = []
    for ep in endpoints:  # the first mention of an address wins; a repeat is not probed twice
        if (ep.host, ep.port) not in seen:
            seen.add((ep.host, ep.port))
            unique.append(ep)
    if not unique:
        raise InputError("nothing to probe: give SPEC with --via RELAY, --via RELAY:PORT, or --target HOST:PORT",
                         field="--target")
    if len(unique) > MAX_ENDPOINTS:
        raise InputError(f"{len(unique)} endpoints; at most {MAX_ENDPOINTS} per run", field="--target")
    return unique
