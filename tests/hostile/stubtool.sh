#!/bin/bash
# A stand-in for iptables, nft, firewall-cmd, sysctl, ip, ... in tests/dialects/test_argv.py: it records its
# argv (plus what it was given on stdin, or the file of `nft -f`) as ONE JSON line in
# $NETFWD_ARGV_LOG, then answers the way the real tool answers on a relay that has nothing of
# netfwd yet. Nothing here touches a firewall. Symlinked under each tool's name.
LC_ALL=C
name=${0##*/}

json() {  # REPLY = $1 as a JSON string (control characters as \u00XX; bytes >= 0x80 pass: UTF-8 stays UTF-8)
  local s=$1 out="" c i
  if [[ $s == *[$'\001'-$'\037'\"\\]* ]]; then
    for ((i = 0; i < ${#s}; i++)); do
      c=${s:i:1}
      case $c in
        \\) out+='\\' ;;
        \") out+='\"' ;;
        [$'\001'-$'\037']) printf -v c '\\u%04x' "'$c"; out+=$c ;;
        *) out+=$c ;;
      esac
    done
  else
    out=$s
  fi
  REPLY="\"$out\""
}

json "$name"
line="{\"argv\": [$REPLY"
for arg in "$@"; do
  json "$arg"
  line+=", $REPLY"
done
line+="]"
input=""
case $name in
  iptables-restore | ip6tables-restore) input=$(cat; printf x); input=${input%x} ;;
  nft)
    if [ "${1:-}" = -f ] && [ "${2:-}" = - ]; then input=$(cat; printf x); input=${input%x}
    elif [ "${1:-}" = -f ] && [ -f "${2:-}" ]; then input=$(cat -- "$2"; printf x); input=${input%x}; fi ;;
esac
if [ -n "$input" ]; then
  json "$input"
  line+=", \"input\": $REPLY"
fi
printf '%s}\n' "$line" >>"$NETFWD_ARGV_LOG"

status=0
case "$name $*" in
  "id -u") echo 0 ;;
  "nft -v") echo "nftables v1.0.6 (Lester Gooch #5)" ;;
  "iptables "*" -C "* | "iptables "*" -n -L "*) status=1 ;;  # no jump, no chain yet
  "nft list chain inet netfwd-"*" prerouting") [ -n "${STUB_NFT_PREROUTING:-}" ] && echo "$STUB_NFT_PREROUTING" || status=1 ;;
  "nft list chain "*) status=1 ;;  # no netfwd table yet
  "nft list table "*) status=1 ;;  # nor one of an earlier version
  "firewall-cmd --state") [ "${STUB_FIREWALLD:-stopped}" = running ] && echo running || { echo "not running"; status=252; } ;;
  "firewall-cmd --get-default-zone") echo public ;;
  "firewall-cmd --get-active-zones") printf 'public\n  interfaces: eth0\n' ;;
  "ip route get "*) echo "$4 via 10.0.0.1 dev eth1 src 10.0.0.4 uid 0" ;;
  "ip route show default") echo "default via 10.0.0.1 dev eth0" ;;
esac
exit $status
