"""Verify source whitelists against the region catalog, and render minimal allow lists.

Layout, one job per module:
  addresses   one token (IP, CIDR, netmask form, a-b range) -> integers, fast
  model       Origin, Entry, Group, Parsed, Finding: what sources are read into
  detect      which format a source is, from its content
  load        read a SOURCE path (or `live`) and dispatch to a reader in `sources/`
  sources/    one reader per format; firewall dumps go through ruleset (IR) + evaluate
  ruleset     the firewall IR shared by the iptables and nft readers
  evaluate    symbolic evaluation: which sources a ruleset admits to a port
  screen      one bisect pass: which reference sets each entry touches
  coverage    per region: covered / partial (missing CIDRs) / missing
  findings    too-broad, unused, private-range, local-overlap, catalog-duplicate
  verify      the whole check and its exit code
  report      JSON and JUnit output (the table is drawn by netfwd.commands.whitelist)
  render      the aggregated allow list for ipset, nft, firewalld, netsh, PowerShell
  localnets   --local-networks, or the routing table through pyroute2
"""
