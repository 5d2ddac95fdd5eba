"""`firewalld` dialect: a bash script that drives firewall-cmd, for relays where firewalld owns the firewall.

Why it looks the way it does (see docs/dialects.md and docs/facts.md#firewalld):

- Every forward is a rich rule *with the source in it*: `rule family=... source ipset="netfwd-…"
  forward-port ...`. A plain `--add-forward-port` DNATs before any filter runs, so a separate rule
  can never restrict it (firewalld/firewalld#1466, in docs/facts.md#firewalld).
- Every forward's source is a `hash:net` ipset, even for a forward open to any source (it then holds
  the two halves of the address space, since an ipset cannot hold a /0). The ipset is named after
  what it holds, `netfwd-<cluster tag>-<hash of family and entries>`, so the forwards of a cluster
  with the same sources share one (firewalld loads ipsets one at a time, each slower the more there
  are: one per forward made its reload quadratic in forwards). So every rich rule netfwd owns names
  a `netfwd-<cluster tag>-` ipset (netfwd.owned): that is how the script finds its own cluster's
  stale rules and ipsets, and only those — per-forward sets of the previous naming included. Earlier
  versions named them `netfwd-<hash>` for every cluster; the exact names this spec's forwards had
  then are owned too, so they are migrated.
- Masquerade is a rich rule too, narrowed to the forward's sources and target address.
- Runtime and permanent configuration get the same changes. firewalld creates ipsets in the
  permanent configuration only; a new (or deleted) netfwd ipset reaches the runtime only through
  `--reload`, which also drops runtime-only changes others made. The script reloads only then, and
  before changing anything it refuses (exit 3, naming them) when runtime and permanent configuration
  differ outside netfwd's objects, unless NETFWD_ALLOW_RUNTIME_LOSS=1.

The script is declarative: it lists the wanted ipsets and rich rules, then converges both
configurations to them (adds what is missing, removes netfwd's rules and ipsets that are not wanted
in any zone), so a changed target replaces a rule rather than duplicating it. The remove script is
the same engine with nothing wanted.
"""

from __future__ import annotations

import hashlib
import shlex
from functools import lru_cache

from netaddr import AddrFormatError, IPNetwork, cidr_merge

from netfwd import owned, xtables
from netfwd.dialects import shell
from netfwd.dialects.base import BaseDialect
from netfwd.firewall import rich
from netfwd.model import Essence, Forward, Spec

IPSET_PREFIX = owned.IPSET_PREFIX  # every cluster's (and earlier versions') ipsets start with it
# hash:net cannot hold /0: "any source" is the two halves of the address space
EVERYWHERE = {4: ("0.0.0.0/1", "128.0.0.0/1"), 6: ("::/1", "8000::/1")}
ANY = {4: "0.0.0.0/0", 6: "::/0"}


def ipset_entries(forward: Forward) -> tuple[str, ...]:
    sources = forward.sources
    if sources is None:
        return EVERYWHERE[forward.family]
    entries = tuple(str(net) for net in sources)
    return EVERYWHERE[forward.family] if entries == (ANY[forward.family],) else entries


def ipset_family(forward: Forward) -> str:
    """The ipset's `family` option."""
    return "inet" if forward.family == 4 else "inet6"


@lru_cache(maxsize=4096)
def set_name(cluster: str, family: str, made_of: tuple[str, ...]) -> str:
    """netfwd-<cluster tag>-<hash of family and what the set is made of> (at most 26 of ipset's 31
    characters), so every forward of the cluster with the same sources shares it."""
    content = family + " " + " ".join(made_of)
    return owned.ipset_prefix(cluster) + hashlib.sha256(content.encode()).hexdigest()[:10]


def made_of(forward: Forward) -> tuple[str, ...]:
    """What names the forward's ipset: its sorted entries, but for an allow list with regions the
    regions by name and its own CIDRs. A region's addresses come from the catalog, so when the
    catalog changes the set keeps its name and only its entries are edited - in place, no reload
    (a new ipset reaches firewalld's runtime only through one)."""
    allow = forward.allow
    if allow is None or not allow.regions:
        return tuple(sorted(ipset_entries(forward)))
    return ("regions", *sorted(allow.regions), "cidrs", *sorted(str(cidr) for cidr in allow.cidrs))


def ipset_name(cluster: str, forward: Forward) -> str:
    """The (shared) ipset of the forward's sources: a forward whose allow list changes moves to another set."""
    return set_name(cluster, ipset_family(forward), made_of(forward))


def forward_ipsets(spec: Spec) -> tuple[list[str], dict[str, tuple[str, tuple[str, ...]]]]:
    """The ipset of each forward (in spec order), and {name: (family, entries)}: one per distinct
    source list of the spec, in spec order. Forwards that share an allow list (one object per
    distinct whitelist text in a loaded spec) are hashed once."""
    names: list[str] = []
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    seen: dict[tuple[int, int], str] = {}
    for forward in spec.forwards:
        key = (forward.family, id(forward.allow))  # the objects outlive this call: ids stay unique
        name = seen.get(key)
        if name is None:
            family = ipset_family(forward)
            name = seen[key] = set_name(spec.cluster, family, made_of(forward))
            found.setdefault(name, (family, ipset_entries(forward)))
        names.append(name)
    return names, found


def ipsets(spec: Spec) -> dict[str, tuple[str, tuple[str, ...]]]:
    """{name: (family, entries)}: one per distinct source list of the spec's forwards, in spec order."""
    return forward_ipsets(spec)[1]


def legacy_ipset_name(forward: Forward) -> str:
    """The name the versions before per-cluster names gave the forward's own ipset (no cluster in it).
    (Between them and content names, a forward's ipset was netfwd-<cluster tag>-<hash of its name and
    family>: under the cluster's prefix, so owned, and deleted once no rule names it.)"""
    return IPSET_PREFIX + hashlib.sha256(f"{forward.name}/{forward.family}".encode()).hexdigest()[:12]


def forward_rule(forward: Forward, ipset: str, to: str | None = None) -> str:
    """The DNAT rich rule, spelled exactly as `firewall-cmd --list-rich-rules` prints it."""
    destination = "" if forward.listen.address is None else f' destination address="{forward.listen.address}"'
    return (f'rule family="ipv{forward.family}" source ipset="{ipset}"'
            f'{destination} forward-port port="{forward.listen.port}" protocol="{forward.protocol}" '
            f'to-port="{forward.to.port}" to-addr="{to or forward.to.address}"')


def masquerade_rule(forward: Forward, ipset: str, to: str | None = None) -> str:
    """Masquerade only what comes from the forward's sources and goes to its target."""
    return (f'rule family="ipv{forward.family}" source ipset="{ipset}" '
            f'destination address="{to or forward.to.address}" masquerade')


def _single_quoted(text: str) -> str:
    """Shell single quotes. Rules and entries are built from validated values only; never a quote."""
    if "'" in text:
        raise ValueError(f"unexpected quote in {text!r}")
    return f"'{text}'"


# The converger: bring runtime and permanent configuration to WANT_SET / WANT_RULE. Values reach it
# only as quoted arguments of want_set / want_rule; it never evaluates them.
CONVERGE = r"""
declare -A WANT_SET=() WANT_RULE=() FRESH=()
SET_ORDER=() RULE_ORDER=()
TAB=$'\t'
CHANGES=0
# want_set NAME "FAMILY ENTRY..."; want_rule ZONE RICH-RULE (forwards may share a masquerade rule: once)
want_set() { [ -n "${WANT_SET[$1]:-}" ] || SET_ORDER+=("$1"); WANT_SET[$1]=$2; }
want_rule() { [ -n "${WANT_RULE[$1$TAB$2]:-}" ] || RULE_ORDER+=("$1$TAB$2"); WANT_RULE[$1$TAB$2]=1; }

fw() { firewall-cmd -q "$@"; }
conf_opt() { if [ "$1" = permanent ]; then echo --permanent; fi; }

# owned NAME: the ipset is this cluster's (OWNED_PREFIX*, or one of LEGACY_SETS from earlier versions)
owned() { [[ $1 == "$OWNED_PREFIX"* || " $LEGACY_SETS " == *" $1 "* ]]; }

# netfwd_rules [--permanent]: "<zone><TAB><rule>" for every rich rule whose source is an owned ipset
netfwd_rules() {
  firewall-cmd "$@" --list-all-zones | awk -v prefix="$OWNED_PREFIX" -v legacy=" $LEGACY_SETS " '
    /^[^ \t]/ { zone = $1 }
    /^[ \t]+rule / && match($0, /source ipset="[^"]*"/) {
      name = substr($0, RSTART + 14, RLENGTH - 15)
      if (index(name, prefix) == 1 || index(legacy, " " name " ")) { sub(/^[ \t]+/, ""); print zone "\t" $0 } }'
}

# sync_entries runtime|permanent NAME: the ipset holds exactly its wanted entries
sync_entries() {
  local opt entry listing
  opt=$(conf_opt "$1")
  local -A want=() have=()
  local add=() del=() entries=()
  read -r -a entries <<<"${WANT_SET[$2]#* }"
  for entry in "${entries[@]}"; do want[$entry]=1; done
  listing=""  # an ipset created by this run is known to be empty: spare the (slow) firewall-cmd call
  [ -n "$opt" ] && [ -n "${FRESH[$2]:-}" ] || listing=$(firewall-cmd ${opt:+"$opt"} --ipset="$2" --get-entries)
  while read -r entry; do [ -z "$entry" ] || have[$entry]=1; done <<<"$listing"
  for entry in ${have[@]+"${!have[@]}"}; do [ -n "${want[$entry]:-}" ] || del+=(--remove-entry="$entry"); done
  for entry in "${entries[@]}"; do [ -n "${have[$entry]:-}" ] || add+=(--add-entry="$entry"); done
  # removals first: firewalld refuses an entry that overlaps one still present
  if [ ${#del[@]} -gt 0 ]; then fw ${opt:+"$opt"} --ipset="$2" "${del[@]}"; CHANGES=$((CHANGES + ${#del[@]})); fi
  if [ ${#add[@]} -gt 0 ]; then fw ${opt:+"$opt"} --ipset="$2" "${add[@]}"; CHANGES=$((CHANGES + ${#add[@]})); fi
}

# zone_args ACTION ZONE ITEM...: --ACTION-rich-rule=RULE for each "<zone><TAB><rule>" ITEM in ZONE
zone_args() {
  local action=$1 zone=$2 item
  shift 2
  for item in "$@"; do
    [ "${item%%"$TAB"*}" != "$zone" ] || printf -- '--%s-rich-rule=%s\n' "$action" "${item#*"$TAB"}"
  done
}

# sync_rules runtime|permanent: netfwd's rich rules are exactly WANT_RULE, zone by zone, and none elsewhere
sync_rules() {
  local opt zone rule item listing
  opt=$(conf_opt "$1")
  local -A have=() zones=()
  local stale=() add=() args=()
  listing=$(netfwd_rules ${opt:+"$opt"})
  while IFS=$'\t' read -r zone rule; do
    [ -n "$rule" ] || continue
    if [ -n "${WANT_RULE[$zone$TAB$rule]:-}" ]; then
      have[$zone$TAB$rule]=1
    else
      stale+=("$zone$TAB$rule")
    fi
  done <<<"$listing"
  for item in ${RULE_ORDER[@]+"${RULE_ORDER[@]}"}; do [ -n "${have[$item]:-}" ] || add+=("$item"); done
  for item in ${stale[@]+"${stale[@]}"} ${add[@]+"${add[@]}"}; do zones[${item%%"$TAB"*}]=1; done
  for zone in ${zones[@]+"${!zones[@]}"}; do  # stale rules go before new ones are added
    mapfile -t args < <(zone_args remove "$zone" ${stale[@]+"${stale[@]}"})
    [ ${#args[@]} -gt 0 ] || continue
    if [ -z "$opt" ] && ! fw --zone="$zone" "${args[@]}"; then
      # firewalld 0.6 cannot remove at runtime a forward-port rule it loaded itself (it never kept
      # the rule's mark): the permanent configuration is already right, so a reload finishes the job
      say "this firewalld cannot remove loaded forward-port rules at runtime: reloading instead"
      fw --reload
      drop_orphan_ipsets
      CHANGES=$((CHANGES + 1))
      return
    fi
    [ -z "$opt" ] || fw "$opt" --zone="$zone" "${args[@]}"
    CHANGES=$((CHANGES + ${#args[@]}))
  done
  for zone in ${zones[@]+"${!zones[@]}"}; do
    mapfile -t args < <(zone_args add "$zone" ${add[@]+"${add[@]}"})
    if [ ${#args[@]} -gt 0 ]; then fw ${opt:+"$opt"} --zone="$zone" "${args[@]}"; CHANGES=$((CHANGES + ${#args[@]})); fi
  done
}

# drop_orphan_ipsets: firewalld before 0.7 (iptables backend, kernel ipsets) never destroys a kernel set
# whose configuration was deleted, not even on --reload: destroy netfwd's sets it no longer knows.
drop_orphan_ipsets() {
  local name known kernel
  command -v ipset >/dev/null 2>&1 || return 0  # no kernel ipsets in use (nftables backend): nothing can linger
  known=" $(firewall-cmd --get-ipsets) "
  kernel=$(ipset list -n) || die 1 "cannot list the kernel's ipsets (ipset list -n)"
  for name in $kernel; do
    if [[ $name == netfwd-* && $known != *" $name "* ]]; then
      ipset destroy "$name" || die 1 "cannot destroy the kernel ipset $name that firewalld left behind"
      say "destroyed the kernel ipset $name (firewalld left it behind after deleting it)"
      CHANGES=$((CHANGES + 1))
    fi
  done
}

# settings [--permanent]: "<zone>: <key> <item>" for every zone setting and other ipset, without netfwd's
# rules and ipsets (any cluster's) and without interface bindings (a reload keeps those)
settings() {
  firewall-cmd "$@" --list-all-zones | awk '
    /^[^ \t]/ { zone = $1; key = ""; next }
    /^[ \t]+[a-z][a-z -]*:/ && !/^[ \t]+rule / {
      line = $0; sub(/^[ \t]+/, "", line); key = substr(line, 1, index(line, ":") - 1)
      n = split(substr(line, index(line, ":") + 1), words, " ")
      if (key != "interfaces" && key != "rich rules" && key != "forward-ports")
        for (i = 1; i <= n; i++) print zone ": " key " " words[i]
      next }
    /^[ \t]+[^ \t]/ && key != "interfaces" {
      line = $0; sub(/^[ \t]+/, "", line)
      if (line !~ /ipset="netfwd-/) print zone ": " (key == "rich rules" ? "rich rule" : key) " " line }'
  local name
  for name in $(firewall-cmd "$@" --get-ipsets); do
    [[ $name == netfwd-* ]] && continue
    echo "ipset $name"
    firewall-cmd "$@" --ipset="$name" --get-entries | sed "s/^/ipset $name: entry /"
  done
}

# refuse_runtime_loss WHY: a reload rebuilds the runtime from the permanent configuration; if they
# differ outside netfwd's objects (another admin's runtime-only rule), change nothing and exit 3,
# unless NETFWD_ALLOW_RUNTIME_LOSS=1
refuse_runtime_loss() {
  local differ
  [ "${NETFWD_ALLOW_RUNTIME_LOSS:-}" != 1 ] || return 0
  differ=$(LC_ALL=C comm -3 <(settings | LC_ALL=C sort -u) <(settings --permanent | LC_ALL=C sort -u) |
    sed -e 's/^\t\(.*\)/\1 (permanent only)/' -e '/(permanent only)$/!s/$/ (runtime only)/' | tr '\n' ';')
  differ=${differ%;}
  [ -z "$differ" ] || die 3 "$1 needs a firewalld reload, which would drop (or load) configuration whose runtime and permanent versions differ: ${differ//;/; }. Nothing was changed: make those changes permanent (firewall-cmd --runtime-to-permanent) or drop them, or run again with NETFWD_ALLOW_RUNTIME_LOSS=1"
}

# will_reload: would converge reload? (asked before any change: an ipset must appear or disappear at
# runtime, or firewalld before 0.7 must drop a forward-port rule it cannot remove at runtime)
will_reload() {
  local name sets zone rule
  sets=" $(firewall-cmd --get-ipsets) "
  for name in ${SET_ORDER[@]+"${SET_ORDER[@]}"}; do [[ $sets == *" $name "* ]] || return 0; done
  for name in $sets; do if owned "$name" && [ -z "${WANT_SET[$name]:-}" ]; then return 0; fi; done
  [[ $(firewall-cmd --version) == 0.[0-6].* ]] || return 1
  while IFS=$'\t' read -r zone rule; do
    if [[ $rule == *forward-port* && -z ${WANT_RULE[$zone$TAB$rule]:-} ]]; then return 0; fi
  done <<<"$(netfwd_rules)"
  return 1
}

converge() {
  local name sets
  if will_reload; then refuse_runtime_loss "this change"; fi
  # 1. permanent: ipsets (created here only: firewalld has no runtime --new-ipset), rules, stale ipsets
  sets=" $(firewall-cmd --permanent --get-ipsets) "
  for name in ${SET_ORDER[@]+"${SET_ORDER[@]}"}; do
    if [[ $sets != *" $name "* ]]; then
      fw --permanent --new-ipset="$name" --type=hash:net --option=family="${WANT_SET[$name]%% *}"
      FRESH[$name]=1
      CHANGES=$((CHANGES + 1))
    fi
    sync_entries permanent "$name"
  done
  sync_rules permanent
  for name in $sets; do
    if owned "$name" && [ -z "${WANT_SET[$name]:-}" ]; then
      fw --permanent --delete-ipset="$name"
      CHANGES=$((CHANGES + 1))
    fi
  done
  # 2. runtime: a netfwd ipset to add or drop there needs --reload (which makes runtime = permanent)
  local reload=no
  sets=" $(firewall-cmd --get-ipsets) "
  for name in ${SET_ORDER[@]+"${SET_ORDER[@]}"}; do [[ $sets == *" $name "* ]] || reload=yes; done
  for name in $sets; do
    if owned "$name" && [ -z "${WANT_SET[$name]:-}" ]; then reload=yes; fi
  done
  if [ "$reload" = yes ]; then
    say "reloading firewalld: ipsets reach the runtime only that way"
    fw --reload
    drop_orphan_ipsets
    return  # the runtime is now the permanent configuration, which is already right
  fi
  for name in ${SET_ORDER[@]+"${SET_ORDER[@]}"}; do sync_entries runtime "$name"; done
  sync_rules runtime
}
""".strip("\n").splitlines()


# Where rules go: a zone's forward-ports act on traffic entering it, its masquerade on traffic leaving
# into it; zones are found at run time (interfaces and routes are the relay's, not the spec's).
ZONES = r"""
declare -A ZONE_OF=()
ZONE_IS=""
# zone_of [IFACE]: sets ZONE_IS to the zone firewalld applies to traffic on IFACE: the zone it is bound
# to, else the default zone. One lookup of all zones (every firewall-cmd call is slow).
zone_of() {
  local zone="" key value
  if [ -z "${ZONE_OF[*]:-}" ]; then
    ZONE_OF[:default]=$(firewall-cmd --get-default-zone)
    while read -r key value; do
      case $key in
        interfaces:) for key in $value; do ZONE_OF[$key]=$zone; done ;;
        *:) ;;
        ?*) zone=$key ;;
      esac
    done <<<"$(firewall-cmd --get-active-zones)"
  fi
  ZONE_IS=${ZONE_OF[${1:-:default}]:-${ZONE_OF[:default]}}
}
# route_dev [ADDRESS]: the interface of the route to ADDRESS (the default route without one), or nothing
route_dev() {
  if [ -n "${1:-}" ]; then ip route get "$1" 2>/dev/null; else ip route show default 2>/dev/null; fi |
    awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }'
}
""".strip("\n").splitlines()


@xtables.per_spec
def _legacy_sets(spec: Spec) -> str:
    """The earlier names of the spec's ipsets, one hash per forward (both scripts name them)."""
    return " ".join(dict.fromkeys(legacy_ipset_name(f) for f in spec.forwards))


def _preflight(spec: Spec) -> list[str]:
    """Refuse (exit 3) unless root, with firewall-cmd, and firewalld running; then the engine."""
    legacy = _legacy_sets(spec)
    return [
        f"OWNED_PREFIX={owned.ipset_prefix(spec.cluster)}  # this cluster's ipsets (netfwd.owned)",
        f"LEGACY_SETS={shlex.quote(legacy)}  # what earlier versions named them",
        "say() { printf 'netfwd: %s\\n' \"$*\" >&2; }",
        'die() { local status=$1; shift; say "$*"; exit "$status"; }',
        '[ "$(id -u)" -eq 0 ] || die 3 "must run as root (it changes the firewall and sysctls)"',
        "command -v firewall-cmd >/dev/null 2>&1 || die 3 'firewall-cmd not found: install firewalld, "
        "or use the nft or iptables dialect'",
        'if ! state=$(firewall-cmd --state 2>&1); then',
        '  die 3 "firewalld is not running (${state:-no answer}): start it (systemctl start firewalld),'
        ' or use the nft or iptables dialect"',
        "fi",
        *CONVERGE,
        *OLD_DNAT,
        *shell.FORGET_MAPPING,
        "",
    ]


# old_dnat: '<listen|*> <proto> <port> <target>' per netfwd forward-port rule in the runtime configuration
OLD_DNAT = r"""
old_dnat() {
  { netfwd_rules 2>/dev/null || true; } | awk -F '\t' '
    function attr(text, key) {
      if (!match(text, key "=\"[^\"]*\"")) return ""
      return substr(text, RSTART + length(key) + 2, RLENGTH - length(key) - 3)
    }
    / forward-port / {
      a = attr($2, "destination address"); if (a == "") a = "*"
      t = attr($2, "to-addr"); if (index(t, ":")) t = "[" t "]"
      print a, attr($2, "protocol"), attr($2, " port"), t ":" attr($2, "to-port") }' | sort -u
}
""".strip("\n").splitlines()


def _say_partial() -> list[str]:
    """firewalld has no multi-object transaction: if converging fails midway, say how far it got."""
    return ["partial() {",
            '  local rc=$?',
            '  [ "$rc" -eq 0 ] || say "failed (exit $rc) after $CHANGES firewalld change(s), sysctls untouched: '
            'run this script again to finish, or the remove script to take netfwd\'s part away"',
            "}",
            "trap partial EXIT"]


def _ingress(spec: Spec) -> list[str]:
    """The zone the forwarded traffic arrives in: DNAT (forward-port) rules act there."""
    if spec.relay.interface is not None:
        lookup = f"zone_of {shlex.quote(spec.relay.interface)}  # relay.interface (in no zone: the default zone)"
    else:
        lookup = 'zone_of "$(route_dev "")"  # the default route\'s interface (in no zone, or none: the default zone)'
    return [*ZONES, "", lookup, "ZONE=$ZONE_IS", ""]


def _wanted(spec: Spec) -> list[str]:
    names, sets = forward_ipsets(spec)
    lines = ["# Wanted state: one ipset per distinct source list (named after it, shared by the forwards",
             "# that have it), per forward the DNAT rich rule and the masquerade rule."]
    lines += [f"want_set {name} {_single_quoted(' '.join((family, *entries)))}"
              for name, (family, entries) in sets.items()]
    for forward, name in zip(spec.forwards, names):
        to = str(forward.to.address)
        lines += [f"# {forward.name}: port {forward.listen.port}/{forward.protocol} -> {to} port {forward.to.port}",
                  f'want_rule "$ZONE" {_single_quoted(forward_rule(forward, name, to))}']
        if forward.masquerade:  # masquerade acts on traffic leaving into a zone: the zone toward the target
            lines.append(f'zone_of "$(route_dev {to})"; '
                         f'want_rule "$ZONE_IS" {_single_quoted(masquerade_rule(forward, name, to))}')
    return [*lines, ""]


class FirewalldDialect(BaseDialect):
    name = "firewalld"
    extension = "sh"
    families = frozenset({4, 6})
    protocols = frozenset({"tcp", "udp"})
    supports_local = False  # rich rules hook prerouting only: the relay's own connections are not DNATed

    def expected(self, spec: Spec) -> list[Essence]:
        """An allow list of the whole address space is the same as no allow list (the ipset cannot tell).
        A masquerade rule names sources and target address, not a forward: a forward with the same
        sources and target as a masqueraded one is masqueraded too (the two share the rule)."""
        names = forward_ipsets(spec)[0]
        masqueraded = {(name, str(f.to.address)) for f, name in zip(spec.forwards, names) if f.masquerade}
        result = []
        for forward, name in zip(spec.forwards, names):
            essence = forward.essence()
            if essence.sources == (ANY[forward.family],):
                essence = essence._replace(sources=None)
            if not essence.masquerade and (name, essence.to_address) in masqueraded:
                essence = essence._replace(masquerade=True)
            result.append(essence)
        return result

    def render(self, spec: Spec) -> str:
        self.check(spec)
        lines = shell.prologue(self.header(spec, "apply"), cluster=spec.cluster) + _preflight(spec) + _ingress(spec)
        lines += _wanted(spec)
        lines += [*_say_partial(), "before=$(old_dnat)", "converge", "trap - EXIT",
                  "# Forwarding only once firewalld took the rules: a refused change leaves the sysctls as they were.",
                  *shell.enable_forwarding(spec),
                  *shell.forget_stale_of(spec),
                  f'say "applied {len(spec.forwards)} forward(s) in zone $ZONE ($CHANGES change(s))"', ""]
        return "\n".join(lines)

    def render_remove(self, spec: Spec) -> str:
        self.check(spec)
        lines = shell.prologue(self.header(spec, "remove"), cluster=spec.cluster) + _preflight(spec)
        lines += ["# Nothing wanted: every rich rule (in any zone) and ipset of this cluster goes.",
                  "before=$(old_dnat)", "converge", *shell.forget_all()]
        lines += shell.forget_forwarding(spec)
        lines += ['say "removed netfwd\'s rich rules and ipsets ($CHANGES change(s))"', ""]
        return "\n".join(lines)

    def parse(self, text: str) -> list[Essence]:
        """Accepts the rendered script, or firewall-cmd output: `--list-rich-rules` / `--list-all-zones`
        lines, plus `--info-ipset=NAME` blocks for the sources (without them a forward's sources read
        as ``("@<ipset>",)``)."""
        return parse_rich_rules(text)


DIALECT = FirewalldDialect()


# -- reading rich rules back ------------------------------------------------------------------------

def parse_rich_rules(text: str) -> list[Essence]:
    ipsets: dict[str, list[str]] = {}
    rules: list[str] = []
    block: str | None = None  # the ipset an `--info-ipset` block is about
    for raw in text.splitlines():
        line = raw.strip()
        line = line.rpartition("; ")[2] if line.startswith("zone_of ") else line
        if line.startswith("want_set "):  # want_set NAME 'FAMILY ENTRY...'
            ipsets[line.split()[1]] = line.split("'")[1].split()[1:]
        elif line.startswith("want_rule "):  # want_rule "$ZONE" 'RULE' (a rule holds no single quote)
            rules.append(line.split("'")[1])
        elif line.startswith("rule "):
            rules.append(line)
        elif raw.startswith(IPSET_PREFIX) and " " not in line:
            block = line
        elif block is not None and line.startswith("entries:"):
            ipsets[block] = line.split()[1:]
            block = None
    forwards: list[dict] = []
    masquerades: set[tuple[str, str]] = set()
    for rule in rules:
        parts = rich.elements(rule)
        source = parts.get("source", {}).get("ipset", "")
        if not source.startswith(IPSET_PREFIX) or rich.inverted(parts.get("source", {})):
            continue
        port = parts.get("forward-port", {})
        if port.get("port", "").isdigit() and port.get("to-port", "0").isdigit() and "to-addr" in port:
            forwards.append(dict(ipset=source, listen=parts.get("destination", {}).get("address"),
                                 port=int(port["port"]), protocol=port.get("protocol", ""),
                                 to_port=int(port.get("to-port", port["port"])), to=port["to-addr"]))
        elif "masquerade" in parts and "address" in parts.get("destination", {}):
            masquerades.add((source, parts["destination"]["address"]))
    return [Essence(f["listen"], f["port"], f["protocol"], f["to"], f["to_port"],
                    (f["ipset"], f["to"]) in masquerades, False, _sources(f["ipset"], ipsets))
            for f in forwards]


def _sources(name: str, ipsets: dict[str, list[str]]) -> tuple[str, ...] | None:
    if name not in ipsets:
        return (f"@{name}",)
    nets, odd = [], []  # an entry that is no CIDR is kept verbatim, so a comparison shows it
    for entry in ipsets[name]:
        try:
            nets.append(IPNetwork(entry))
        except (AddrFormatError, ValueError, TypeError):
            odd.append(entry)
    merged = [str(net) for net in cidr_merge(nets)] + odd
    if merged in (["0.0.0.0/0"], ["::/0"]):
        return None
    return tuple(merged)
