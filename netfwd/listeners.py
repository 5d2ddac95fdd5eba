"""Local services that already serve a forward's port: `plan` and `apply` refuse such a forward.

A DNAT on a port that sshd (or any service) listens on takes that service's remote clients: the
relay's operators are locked out. The sockets are read from /proc/net/{tcp,udp}{,6}, which follow
the network namespace this process acts in (`--netns` has entered it). `doctor`'s `listen-port`
check uses the same rule (:func:`serves`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netaddr import IPAddress

from netfwd.host import Socket, listening_sockets

if TYPE_CHECKING:
    from netfwd.model import Spec

# one row per forward, in spec order (cached with the desired state, so no spec parse is needed)
Row = tuple[int, str, str, int, bool, bool]  # port, protocol, listen address or "", family, local, takeover


def rows(spec: "Spec") -> list[Row]:
    return [(f.listen.port, f.protocol, "" if f.listen.address is None else str(f.listen.address), f.family,
             f.local, f.listen.takeover) for f in spec.forwards]


def sockets() -> list[Socket]:
    """Listening TCP and bound UDP sockets of the current network namespace."""
    return listening_sockets()


def serves(sock: Socket, address: IPAddress | None, family: int, local: bool) -> bool:
    """Would a forward listening on `address` (None: every local address) take `sock`'s clients?"""
    if sock.address.is_loopback():
        return local  # only the relay's own connections (local: true) reach a loopback listener
    if sock.wildcard:
        return sock.address.version in (family, 6)  # :: may be dual-stack
    return address is None or sock.address == address


def clashes(table: list[Row], found: list[Socket]) -> list[tuple[int, Socket]]:
    """(forward index, socket) for each forward (without takeover) whose port a local service serves."""
    by_port: dict[tuple[int, str], list[Socket]] = {}
    for sock in found:
        by_port.setdefault((sock.port, sock.protocol), []).append(sock)
    out = []
    for index, (port, protocol, address, family, local, takeover) in enumerate(table):
        if takeover:
            continue
        for sock in by_port.get((port, protocol), ()):
            if serves(sock, IPAddress(address) if address else None, family, local):
                out.append((index, sock))
                break
    return out


def message(sock: Socket, owner: str | None) -> str:
    shown = f"[{sock.address}]" if sock.address.version == 6 else str(sock.address)
    return (f"{sock.port}/{sock.protocol} is already served on this relay by {owner or 'a local process'} "
            f"({shown}:{sock.port}): the forward would take its clients; choose another port, or set "
            "listen.takeover: true to forward it anyway")
