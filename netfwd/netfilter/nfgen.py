"""The nf_tables ruleset generation ID and table names, each read with one netlink request.

The kernel bumps the generation on every committed nf_tables transaction in the network namespace -
by anyone: iptables-nft, nft, firewalld. So "the generation has not moved since netfwd wrote" proves
that nothing changed, and a no-change re-apply need not read (or even parse) 30,000 rules.

The table names come from a GETTABLE dump: `nft list tables` fetches every table's chains and
rules into its cache first (2.2 s beside a 10,000-forward table, nft 1.0.6), the dump none of them.
"""

from __future__ import annotations

import os
import socket
import struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWTABLE = 0
NFT_MSG_GETTABLE = 1
NFT_MSG_GETGEN = 16
NFT_MSG_NEWGEN = 15
NFTA_GEN_ID = 1
NFTA_TABLE_NAME = 1
NLM_F_REQUEST = 1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
# nfgenmsg.nfgen_family (NFPROTO_*) as nft spells it
FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}


def _open(kind: int, flags: int) -> socket.socket | None:
    """A netfilter netlink socket that has sent one nf_tables request `kind` (None if unavailable)."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except OSError:
        return None
    try:
        sock.settimeout(2.0)
        sock.bind((0, 0))
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)  # nfgenmsg: family, version, res_id
        header = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_NFTABLES << 8) | kind,
                             flags, os.getpid() & 0xFFFF, 0)
        sock.send(header + body)
    except OSError:
        sock.close()
        return None
    return sock


def generation() -> int | None:
    """The current nf_tables generation of this process's network namespace (None if unavailable)."""
    sock = _open(NFT_MSG_GETGEN, NLM_F_REQUEST)
    if sock is None:
        return None
    try:
        data = sock.recv(65536)
    except OSError:
        return None
    finally:
        sock.close()
    return _parse(data)


def _parse(data: bytes) -> int | None:
    if len(data) < 20:
        return None
    length, kind = struct.unpack_from("=IH", data, 0)
    if kind == NLMSG_ERROR or kind & 0xFF != NFT_MSG_NEWGEN:
        return None
    offset = 16 + 4  # nlmsghdr + nfgenmsg
    while offset + 4 <= min(length, len(data)):
        attr_len, attr_type = struct.unpack_from("=HH", data, offset)
        if attr_len < 4:
            break
        if attr_type & 0x3FFF == NFTA_GEN_ID and attr_len >= 8:
            return struct.unpack_from(">I", data, offset + 4)[0]
        offset += (attr_len + 3) & ~3
    return None


def tables() -> list[str] | None:
    """`FAMILY NAME` of every nf_tables table in this network namespace, as `nft list tables`
    prints them after "table "; None if netlink cannot tell (the caller then asks nft)."""
    sock = _open(NFT_MSG_GETTABLE, NLM_F_REQUEST | NLM_F_DUMP)
    if sock is None:
        return None
    try:
        found: list[str] = []
        while True:
            data = sock.recv(1 << 20)
            done, names = _parse_tables(data)
            if names is None:
                return None
            found += names
            if done:
                return found
    except OSError:
        return None
    finally:
        sock.close()


def _parse_tables(data: bytes) -> tuple[bool, list[str] | None]:
    """(the dump ended, the tables in this datagram); None for an error or a message it cannot read."""
    names: list[str] = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16 or offset + length > len(data):
            return True, None
        if kind == NLMSG_DONE:
            return True, names
        if kind == NLMSG_ERROR or kind & 0xFF != NFT_MSG_NEWTABLE or length < 20:
            return True, None
        family = FAMILIES.get(data[offset + 16])
        name = None
        at = offset + 20
        while at + 4 <= offset + length:
            attr_len, attr_type = struct.unpack_from("=HH", data, at)
            if attr_len < 4:
                break
            if attr_type & 0x3FFF == NFTA_TABLE_NAME:
                name = data[at + 4:at + attr_len].split(b"\0", 1)[0].decode("utf-8", "replace")
            at += (attr_len + 3) & ~3
        if family is None or not name:
            return True, None
        names.append(f"{family} {name}")
        offset += (length + 3) & ~3
    return False, names
