"""Below the live backends: what they need from the Linux firewall stack that is not a backend.

    xstate.py   netfwd's owned iptables state as data (the `iptables` and `libiptc` backends)
    nfgen.py    the nf_tables ruleset generation ID, one netlink request (`iptables`, `nft`)
    fwdbus.py   firewalld's D-Bus API in one process, run by firewalld's own Python (`firewalld`)

The backends registry (netfwd/backends/) holds only backends; these helpers import nothing of it.
"""
