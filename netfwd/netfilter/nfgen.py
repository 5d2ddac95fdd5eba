"""The nf_tables ruleset generation ID, read with one netlink request (no subprocess).

The kernel bumps it on every committed nf_tables transaction in the network namespace - by anyone:
iptables-nft, nft, firewalld. So "the generation has not moved since netfwd wrote" proves that
nothing changed, and a no-change re-apply need not read (or even parse) 30,000 rules.
"""

from __future__ import annotations

import os
import socket
import struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETGEN = 16
NFT_MSG_NEWGEN = 15
NFTA_GEN_ID = 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2


def generation() -> int | None:
    """The current nf_tables generation of this process's network namespace (None if unavailable)."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except OSError:
        return None
    try:
        sock.settimeout(2.0)
        sock.bind((0, 0))
        seq = os.getpid() & 0xFFFF
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)  # nfgenmsg: family, version, res_id
        header = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
                             NLM_F_REQUEST, seq, 0)
        sock.send(header + body)
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
