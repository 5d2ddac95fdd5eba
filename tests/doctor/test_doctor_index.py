"""doctor walks each forward through a view of the rules its packet can meet (netfwd/doctor/firewall.py):
netfwd's own FORWARD accepts, pinned by conntrack's reply source, must be sliced like `-d`/`--dport`."""

from __future__ import annotations

from netaddr import IPAddress

from netfwd.doctor.firewall import Firewall
from netfwd.firewall.iptables_save import read_ruleset

DUMP = """*filter
:FORWARD ACCEPT [0:0]
:NETFWD-FWD - [0:0]
-A NETFWD-FWD -m conntrack --ctstate DNAT --ctproto 6 --ctreplsrc 10.0.0.5 --ctorigdstport 10000 --ctreplsrcport 6443 -j ACCEPT
-A NETFWD-FWD -m conntrack --ctstate DNAT --ctproto 6 --ctreplsrc 10.0.0.6 --ctorigdstport 10001 --ctreplsrcport 6444 -j ACCEPT
-A NETFWD-FWD -m conntrack --ctstate DNAT --ctproto 6 --ctreplsrc 10.0.0.5 --ctorigdstport 10002 --ctreplsrcport 6444 -j ACCEPT
-A NETFWD-FWD -m conntrack ! --ctreplsrc 10.0.0.9 -j DROP
-A NETFWD-FWD -m conntrack ! --ctreplsrcport 22 -j DROP
COMMIT
"""


def test_conntrack_reply_source_slices_the_view():
    fw = Firewall(read_ruleset(DUMP, "dump"))
    key = ("ipv4:filter", "NETFWD-FWD")
    rules = fw.ruleset.chains[key].rules

    def met(port, host):
        return [rules.index(r) for r in fw.view(port, host, None).chain(*key).rules]

    assert met(6444, IPAddress("10.0.0.6")) == [1, 3, 4]  # its own accept and the unpinned (negated) rules
    assert met(6443, IPAddress("10.0.0.5")) == [0, 3, 4]
    assert met(6444, None) == [1, 2, 3, 4]  # the relay's own address: any pinned host may be it
