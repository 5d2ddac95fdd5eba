"""Is a kube-apiserver static pod manifest ready for the vendor's audit log collection?

The manifest is read with PyYAML's composer, which keeps every node's position, so the same
reading serves the check (what is missing) and the patch (where to insert it, with which
indentation). Nothing here writes.

What "complete" means (the vendor guide, step 2):
  * the five flags --audit-log-path, --audit-log-maxage, --audit-log-maxbackup, --audit-log-maxsize,
    --audit-policy-file on the kube-apiserver container;
  * the policy file and the log directory mounted into the container from hostPath volumes;
  * for the log agent, env entries aliyun_logs_audit-<cluster id> (= the log path), ..._tags
    (audit=apiserver), ..._product (k8s-audit) and ..._jsonfile ("true", a string).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from netfwd.errors import InputError, visible

MAX_MANIFEST_BYTES = 8 << 20  # kubeadm's is 4 KB
CLUSTER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")  # must fit an env var name
ENV_PREFIX = "aliyun_logs_audit-"


@dataclass(frozen=True)
class Settings:
    """What to require (and what the patch adds). Existing flag values always win over these."""

    log_path: str = "/var/log/kubernetes/kubernetes.audit"
    policy_file: str = "/etc/kubernetes/audit-policy.yaml"
    maxage: str = "30"
    maxbackup: str = "10"
    maxsize: str = "100"
    cluster_id: str | None = None
    log_volume: str = "k8s-audit"
    policy_volume: str = "audit-policy"

    def flag_defaults(self) -> dict[str, str]:
        return {"--audit-log-maxbackup": self.maxbackup, "--audit-log-maxsize": self.maxsize,
                "--audit-log-path": self.log_path, "--audit-log-maxage": self.maxage,
                "--audit-policy-file": self.policy_file}  # the guide's order


FLAGS = ("--audit-log-path", "--audit-log-maxage", "--audit-log-maxbackup", "--audit-log-maxsize",
         "--audit-policy-file")
NUMERIC = ("--audit-log-maxage", "--audit-log-maxbackup", "--audit-log-maxsize")


def check_cluster_id(cluster_id: str) -> str:
    if not CLUSTER_ID_RE.match(cluster_id):
        raise InputError(f"{cluster_id!r} is not a cluster id (letters, digits, '.', '_', '-'; it becomes part of "
                         "an environment variable name)", field="--cluster-id")
    return cluster_id


@dataclass(frozen=True)
class Item:
    """One piece of the audit set-up: present (ok) or a finding."""

    name: str  # stable: "flag --audit-log-path", "mount audit policy", "env aliyun_logs_audit-ID_tags", ...
    ok: bool
    message: str
    fix: str = ""
    severity: str = "error"


# -- reading ------------------------------------------------------------------------------------

@dataclass
class Manifest:
    """The composed manifest and the nodes that matter, located."""

    file: str
    text: str
    root: yaml.MappingNode
    pod_spec: yaml.MappingNode
    container: yaml.MappingNode
    flags: dict[str, tuple[str | None, yaml.Node]] = field(default_factory=dict)  # flag -> (value, node)
    env: dict[str, yaml.Node] = field(default_factory=dict)  # name -> value node (None: valueFrom)
    mounts: list[dict[str, str]] = field(default_factory=list)
    volumes: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {"kind", "path", "type"}

    def get(self, mapping: yaml.MappingNode, key: str) -> yaml.Node | None:
        return get(mapping, key)

    def flag_list(self) -> tuple[str, yaml.SequenceNode] | None:
        """Where flags go: `args` when it already holds flags, else `command`."""
        args, command = get(self.container, "args"), get(self.container, "command")
        if isinstance(args, yaml.SequenceNode) and any(
                isinstance(n, yaml.ScalarNode) and n.value.startswith("--") for n in args.value):
            return "args", args
        if isinstance(command, yaml.SequenceNode):
            return "command", command
        if isinstance(args, yaml.SequenceNode):
            return "args", args
        return None


def get(mapping: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(mapping, yaml.MappingNode):
        return None
    for k, v in mapping.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


def scalar(node: yaml.Node | None) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def load_manifest(path: str | Path) -> Manifest:
    from netfwd.inputfile import read_capped

    file = str(path)
    raw = read_capped(path, MAX_MANIFEST_BYTES, "static pod manifest")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("the manifest is not UTF-8 text", file=file) from None
    return read_manifest(text, file)


def read_manifest(text: str, file: str = "<manifest>") -> Manifest:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        docs = [d for d in yaml.compose_all(text, Loader=loader) if d is not None]
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        position = getattr(problem, "position", None)  # a ReaderError (bad character) has no mark
        line = mark.line + 1 if mark else None if position is None else text.count("\n", 0, position) + 1
        what = getattr(problem, "problem", None) or str(problem).splitlines()[0]
        raise InputError(f"not valid YAML: {what}", file=file, line=line) from None
    if len(docs) != 1:
        raise InputError(f"expected one YAML document (a static pod), found {len(docs)}", file=file)
    root = docs[0]
    if not isinstance(root, yaml.MappingNode):
        raise InputError("not a Kubernetes object (the document is not a mapping)", file=file, line=1)
    _refuse_duplicate_keys(root, file)
    kind = scalar(get(root, "kind"))
    if kind != "Pod":
        raise InputError(f"kind is {kind!r}, not Pod: give the kube-apiserver static pod manifest "
                         "(/etc/kubernetes/manifests/kube-apiserver.yaml)", file=file, field="kind",
                         line=_line(get(root, "kind") or root))
    spec = get(root, "spec")
    containers = get(spec, "containers")
    if not isinstance(containers, yaml.SequenceNode) or not containers.value:
        raise InputError("the pod has no containers", file=file, field="spec.containers", line=_line(spec or root))
    container = _apiserver(containers)
    if container is None:
        raise InputError("no kube-apiserver container (by name, or a command running kube-apiserver)", file=file,
                         field="spec.containers", line=_line(containers))
    manifest = Manifest(file, text, root, spec, container)  # type: ignore[arg-type]
    _read_flags(manifest)
    _read_env(manifest)
    _read_mounts(manifest)
    _read_volumes(manifest)
    return manifest


def _refuse_duplicate_keys(root: yaml.Node, file: str) -> None:
    """The kubelet's YAML-to-JSON reading keeps the LAST of two equal keys; this module reads the
    first. Either copy may be the one that runs, so a manifest with both is refused."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # an alias: already looked at
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                name = scalar(key) or "?"
                child = f"{path}.{name}" if path else name
                if name in keys:
                    raise InputError(f"duplicate key {name!r} (the kubelet would use the last one)", file=file,
                                     line=_line(key), field=child)
                keys.add(name)
                stack.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{index}]") for index, item in enumerate(node.value))


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _apiserver(containers: yaml.SequenceNode) -> yaml.MappingNode | None:
    for item in containers.value:
        if scalar(get(item, "name")) == "kube-apiserver":
            return item  # type: ignore[return-value]
    for item in containers.value:
        command = get(item, "command")
        if isinstance(command, yaml.SequenceNode) and any(
                posixpath.basename(scalar(n) or "") == "kube-apiserver" for n in command.value[:3]):
            return item  # type: ignore[return-value]
    return None


def _read_flags(m: Manifest) -> None:
    for key in ("command", "args"):
        seq = get(m.container, key)
        if not isinstance(seq, yaml.SequenceNode):
            continue
        items = seq.value
        for index, node in enumerate(items):
            word = scalar(node) or ""
            if not word.startswith("--"):
                continue
            name, eq, given = word.partition("=")
            value: str | None = given
            if not eq:  # `--flag value` as two items
                following = scalar(items[index + 1]) if index + 1 < len(items) else None
                value = following if following is not None and not following.startswith("-") else None
            m.flags[name] = (value, node)


def _read_env(m: Manifest) -> None:
    env = get(m.container, "env")
    if isinstance(env, yaml.SequenceNode):
        for item in env.value:
            name = scalar(get(item, "name"))
            if name is not None:
                m.env[name] = get(item, "value")  # type: ignore[assignment]


def _read_mounts(m: Manifest) -> None:
    mounts = get(m.container, "volumeMounts")
    if isinstance(mounts, yaml.SequenceNode):
        for item in mounts.value:
            m.mounts.append({"name": scalar(get(item, "name")) or "",
                             "mountPath": scalar(get(item, "mountPath")) or "",
                             "readOnly": (scalar(get(item, "readOnly")) or "false").lower()})


def _read_volumes(m: Manifest) -> None:
    volumes = get(m.pod_spec, "volumes")
    if isinstance(volumes, yaml.SequenceNode):
        for item in volumes.value:
            name = scalar(get(item, "name"))
            if name is None:
                continue
            host = get(item, "hostPath")
            if host is not None:
                m.volumes[name] = {"kind": "hostPath", "path": scalar(get(host, "path")) or "",
                                   "type": scalar(get(host, "type")) or ""}
            else:
                kinds = [scalar(k) for k, _ in item.value if scalar(k) != "name"]
                m.volumes[name] = {"kind": (kinds[0] if kinds else None) or "?", "path": "", "type": ""}


# -- checking -----------------------------------------------------------------------------------

def effective(m: Manifest, settings: Settings) -> dict[str, str]:
    """Flag values the manifest has, the settings' for the rest (what the patch would make)."""
    out = dict(settings.flag_defaults())
    for flag in FLAGS:
        value = m.flags.get(flag, (None, None))[0]
        if value:
            out[flag] = value
    return out


PATH_FLAGS = ("--audit-log-path", "--audit-policy-file")


def path_problem(flag: str, value: str) -> str | None:
    """Why `value` cannot serve `flag`, or None. These paths become hostPath mounts of the
    kube-apiserver pod: '-' (stdout), a relative path or '/x/../..' would make the patch mount the
    host's root directory into it."""
    if flag == "--audit-log-path" and value == "-":
        return "sends the audit log to stdout, out of the log agent's reach"
    if not value.startswith("/") or visible(value) != value or posixpath.normpath(value) != value:
        return "is not a plain absolute path"
    if flag == "--audit-log-path" and posixpath.dirname(value) == "/":
        return "is directly in /: its directory, mounted into the container, would be the host's root"
    return None


def covering_mount(m: Manifest, path: str) -> dict[str, str] | None:
    """The volume mount whose mountPath is `path` or a directory above it (the deepest one)."""
    best = None
    for mount in m.mounts:
        mount_path = mount["mountPath"].rstrip("/") or "/"
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            if best is None or len(mount_path) > len(best["mountPath"]):
                best = mount
    return best


def cluster_ids(m: Manifest) -> list[str]:
    ids = []
    for name in m.env:
        if name.startswith(ENV_PREFIX):
            base = re.sub(r"_(tags|product|jsonfile)$", "", name[len(ENV_PREFIX):])
            if base and base not in ids:
                ids.append(base)
    return ids


def env_entries(cluster_id: str, log_path: str) -> list[tuple[str, str]]:
    """The log agent's env entries, in the guide's order: (name, value)."""
    base = ENV_PREFIX + cluster_id
    return [(base, log_path), (base + "_tags", "audit=apiserver"), (base + "_product", "k8s-audit"),
            (base + "_jsonfile", "true")]


def check(m: Manifest, settings: Settings) -> list[Item]:
    """Every piece, present or not, in a stable order."""
    items: list[Item] = []
    values = effective(m, settings)
    where = m.flag_list()
    add_to = where[0] if where else "command"
    for flag in FLAGS:
        value, node = m.flags.get(flag, (None, None))
        if node is None:
            items.append(Item(f"flag {flag}", False, f"{flag} is missing from the kube-apiserver {add_to}",
                              f"add `- {flag}={values[flag]}` to its {add_to} (netfwd audit patch)"))
        elif not value:
            items.append(Item(f"flag {flag}", False, f"{flag} has no value (line {_line(node)})",
                              f"write it as `{flag}={settings.flag_defaults()[flag]}`"))
        elif flag in NUMERIC and not (value.isascii() and value.isdigit()):  # '²' is no number to Go
            items.append(Item(f"flag {flag}", False, f"{flag}={value} is not a whole number (line {_line(node)})",
                              f"write it as `{flag}={settings.flag_defaults()[flag]}`"))
        else:
            items.append(Item(f"flag {flag}", True, f"{flag}={value}"))
    unusable = {flag: path_problem(flag, values[flag]) for flag in PATH_FLAGS}
    for flag, problem in unusable.items():
        if problem:
            items.append(Item(f"path {flag}", False, f"{flag}={values[flag]!r} {problem}",
                              f"write it as `{flag}={settings.flag_defaults()[flag]}`"))
    if not unusable["--audit-log-path"]:
        log_dir = posixpath.dirname(values["--audit-log-path"])
        items.append(_mount_item(m, "mount log directory", log_dir, directory=True))
    if not unusable["--audit-policy-file"]:
        items.append(_mount_item(m, "mount audit policy", values["--audit-policy-file"], directory=False))
    items += _env_items(m, settings, values["--audit-log-path"])
    return items


def _mount_item(m: Manifest, name: str, path: str, directory: bool) -> Item:
    mount = covering_mount(m, path)
    volume_kind = "DirectoryOrCreate" if directory else "FileOrCreate"
    fix = (f"mount it: a hostPath volume (path: {path}, type: {volume_kind}) and a volumeMount at {path}"
           f"{', readOnly: true' if not directory else ''} (netfwd audit patch)")
    if mount is None:
        return Item(name, False, f"{path} is not mounted into the kube-apiserver container: "
                                 + ("the audit log stays inside the container, out of the log agent's reach"
                                    if directory else "kube-apiserver cannot read the policy and does not start"), fix)
    volume = m.volumes.get(mount["name"])
    if volume is None:
        return Item(name, False, f"{path} is mounted from volume {mount['name']!r}, which spec.volumes does not "
                                 "define", fix)
    if volume["kind"] != "hostPath":
        return Item(name, False, f"{path} is mounted from a {volume['kind']} volume ({mount['name']}), not a "
                                 "hostPath: the file does not come from / reach the master node", fix)
    ok = Item(name, True, f"{path} from hostPath {volume['path']} (volume {mount['name']})")
    if not directory and mount["readOnly"] != "true":
        return Item(name, False, f"{path} is mounted read-write (volume {mount['name']})",
                    "add `readOnly: true` to that volumeMount", severity="warning")
    return ok


def _env_items(m: Manifest, settings: Settings, log_path: str) -> list[Item]:
    ids = [settings.cluster_id] if settings.cluster_id else cluster_ids(m)
    if not ids:
        return [Item("env log agent", False, f"no {ENV_PREFIX}<cluster id> env entries: the log agent does not "
                                             "collect the audit log", "netfwd audit patch MANIFEST --cluster-id ID "
                                                                      "(the ID is on the Security Center Cluster tab)")]
    items = []
    for cluster_id in ids:
        for name, wanted in env_entries(cluster_id, log_path):
            node = m.env.get(name, ...)
            if node is ...:
                items.append(Item(f"env {name}", False, f"env {name} is missing",
                                  f"add `- name: {name}` / `value: {_quoted(wanted)}` to the container env "
                                  "(netfwd audit patch)"))
                continue
            if not isinstance(node, yaml.ScalarNode):
                items.append(Item(f"env {name}", False, f"env {name} has no literal value", f"set value: {_quoted(wanted)}"))
            elif node.tag != "tag:yaml.org,2002:str" and not (node.style in ("'", '"')):
                items.append(Item(f"env {name}", False, f"env {name} value {node.value} is not a string (line "
                                                        f"{_line(node)}): the kubelet refuses the pod",
                                  f"quote it: value: {_quoted(node.value)}"))
            elif node.value != wanted:
                items.append(Item(f"env {name}", False, f"env {name} is {node.value!r}, expected {wanted!r} "
                                                        f"(line {_line(node)})", f"set value: {_quoted(wanted)}"))
            else:
                items.append(Item(f"env {name}", True, f"{name}={node.value}"))
    return items


def _quoted(value: str) -> str:
    return f'"{value}"' if value in ("true", "false") or value.isdigit() else value
