"""The neutral firewall model and its readers, shared by whitelist, doctor and explain.

model.py     the rules as data (chains, rules, matches, verdicts) and the chain walk
iptables_save.py, nft_text.py, nft_json.py, rich.py
             one reader per format, each checked against the real tool's output in the lab
addresses.py fast address/CIDR/range tokens
"""
