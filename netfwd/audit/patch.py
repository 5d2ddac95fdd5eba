"""Add the missing audit pieces to a kube-apiserver manifest by inserting lines, and nothing else.

A YAML library round trip re-indents, re-quotes or re-wraps somebody's file; a static pod manifest
is edited by hand and by kubeadm, and a reviewer should see only what was added. So the manifest is
composed once (PyYAML nodes carry their positions), every missing piece becomes a block of new lines
at the end of the list it belongs to (or a new key after a sibling), indented like its neighbours,
and the blocks are inserted bottom-up. Every existing line stays byte-for-byte; a second run finds
nothing missing and changes nothing.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field

import yaml

from netfwd.audit.manifest import (PATH_FLAGS, Item, Manifest, Settings, check, covering_mount, effective,
                                   env_entries, get, path_problem,
                                   read_manifest)
from netfwd.errors import InputError

_PLAIN = re.compile(r"^[A-Za-z0-9_/.=-][A-Za-z0-9_/.=:@,+-]*$")


@dataclass
class PatchResult:
    text: str
    added: list[str] = field(default_factory=list)  # what was added, one line each
    remaining: list[Item] = field(default_factory=list)  # problems a patch cannot fix (edit by hand)

    @property
    def changed(self) -> bool:
        return bool(self.added)


def patch_text(text: str, settings: Settings, file: str = "<manifest>") -> PatchResult:
    if not settings.cluster_id:
        raise InputError("the log agent's env entries need the cluster id", field="--cluster-id")
    m = read_manifest(text, file)
    editor = _Editor(m, file)
    values = effective(m, settings)
    for flag in PATH_FLAGS:  # each becomes a hostPath mount: never '/' because of '-' or a relative path
        problem = path_problem(flag, values[flag])
        if problem:
            node = m.flags.get(flag, (None, None))[1]
            raise InputError(f"{values[flag]!r} {problem}; fix it by hand first", file=file, field=flag,
                             line=node.start_mark.line + 1 if node is not None else None)
    editor.flags(values)
    editor.env(settings, values["--audit-log-path"])  # the guide's order: flags, env, mounts
    editor.mounts(settings, values)
    new_text = editor.apply()
    after = read_manifest(new_text, file)  # the result must parse, and is checked like any manifest
    remaining = [item for item in check(after, settings) if not item.ok]
    return PatchResult(new_text, editor.added, remaining)


class _Editor:
    def __init__(self, m: Manifest, file: str) -> None:
        self.m, self.file = m, file
        self.lines = m.text.splitlines(keepends=True)
        self.newline = "\r\n" if self.lines and self.lines[0].endswith("\r\n") else "\n"
        self.inserts: list[tuple[int, int, list[str]]] = []  # (line index, order, lines)
        self.added: list[str] = []
        self.new_keys: dict[str, list[str]] = {}  # key added to the container -> its item lines

    # -- the pieces ---------------------------------------------------------------------------
    def flags(self, values: dict[str, str]) -> None:
        missing = [f"{flag}={values[flag]}" for flag in values if flag not in self.m.flags]
        if not missing:
            return
        where = self.m.flag_list()
        if where is None:
            raise InputError("the kube-apiserver container has no command or args list to add flags to",
                             file=self.file, field="command")
        key, seq = where
        self._append(seq, [[_scalar(word)] for word in missing], f"containers[kube-apiserver].{key}")
        self.added += [f"{key}: {word}" for word in missing]

    def mounts(self, settings: Settings, values: dict[str, str]) -> None:
        log_dir = posixpath.dirname(values["--audit-log-path"]) or "/"
        policy = values["--audit-policy-file"]
        wanted = [(log_dir, settings.log_volume, "DirectoryOrCreate", False),
                  (policy, settings.policy_volume, "FileOrCreate", True)]
        mounts, volumes = [], []
        for path, name, kind, read_only in wanted:
            if covering_mount(self.m, path) is not None:
                continue  # present (right or wrong: a wrong one is reported, not overwritten)
            volume = self._volume_name(name, path)
            item = [f"mountPath: {_scalar(path)}", f"name: {volume}"] + (["readOnly: true"] if read_only else [])
            mounts.append(item)
            if volume not in self.m.volumes:
                volumes.append([["hostPath:", [f"path: {_scalar(path)}", f"type: {kind}"]], f"name: {volume}"])
                self.m.volumes[volume] = {"kind": "hostPath", "path": path, "type": kind}
            self.added.append(f"volumeMount {path} (hostPath volume {volume})")
        if mounts:
            self._append_or_add(self.m.container, "volumeMounts", mounts, "containers[kube-apiserver]")
        if volumes:
            self._append_or_add(self.m.pod_spec, "volumes", volumes, "spec")

    def _volume_name(self, name: str, path: str) -> str:
        """`name`, unless a different volume already has it (then name-2, name-3, ...)."""
        candidate, n = name, 1
        while candidate in self.m.volumes:
            existing = self.m.volumes[candidate]
            if existing["kind"] == "hostPath" and existing["path"] == path:
                return candidate  # the volume is there, only its mount is missing
            n += 1
            candidate = f"{name}-{n}"
        return candidate

    def env(self, settings: Settings, log_path: str) -> None:
        entries = [(n, v) for n, v in env_entries(settings.cluster_id or "", log_path) if n not in self.m.env]
        if not entries:
            return
        items = [[f"name: {n}", f"value: {_scalar(v)}"] for n, v in entries]
        anchor = self.m.flag_list()
        self._append_or_add(self.m.container, "env", items, "containers[kube-apiserver]",
                            after=anchor[1] if anchor else None)
        self.added += [f"env {n}={v}" for n, v in entries]

    # -- layout -------------------------------------------------------------------------------
    def _append_or_add(self, mapping: yaml.MappingNode, key: str, items: list, where: str,
                       after: yaml.Node | None = None) -> None:
        seq = get(mapping, key)
        if isinstance(seq, yaml.SequenceNode) and seq.value:
            self._append(seq, items, f"{where}.{key}")
            return
        if seq is not None and not (isinstance(seq, yaml.ScalarNode) and seq.value in ("", "~", "null")):
            raise InputError(f"{key} is written in flow style or is empty ({seq.start_mark.line + 1}); add the audit "
                             f"entries by hand: {items}", file=self.file, field=f"{where}.{key}",
                             line=seq.start_mark.line + 1)
        if seq is not None:  # `key:` with no value: replacing that line would change it; refuse plainly
            raise InputError(f"{key} has no value; give it a list first", file=self.file, field=f"{where}.{key}",
                             line=seq.start_mark.line + 1)
        key_col = mapping.value[0][0].start_mark.column
        dash_col = key_col + self._sequence_offset()
        anchor = after if after is not None else mapping.value[-1][1]
        lines = [" " * key_col + f"{key}:"]
        for item in items:
            lines += self._render_item(item, dash_col, dash_col + 2)
        self._insert(_after(anchor), lines)

    def _append(self, seq: yaml.SequenceNode, items: list, where: str) -> None:
        if seq.flow_style or not seq.value:
            raise InputError("a flow-style list ([a, b]) cannot be extended without rewriting it; add by hand: "
                             + "; ".join(str(i) for i in items), file=self.file, field=where,
                             line=seq.start_mark.line + 1)
        first = seq.value[0]
        text = self.lines[first.start_mark.line]
        content_col = first.start_mark.column
        dash_col = text.rfind("-", 0, content_col)
        if dash_col < 0:
            raise InputError("cannot find the list's '-' markers", file=self.file, field=where,
                             line=first.start_mark.line + 1)
        lines = []
        for item in items:
            lines += self._render_item(item, dash_col, content_col)
        self._insert(_after(seq.value[-1]), lines)

    def _render_item(self, item: list, dash_col: int, content_col: int) -> list[str]:
        """A list item: its first line after '- ', the rest at the content column; nested [key, [lines]]."""
        flat = self._flatten(item, content_col)
        first = " " * dash_col + "-" + " " * (content_col - dash_col - 1) + flat[0].lstrip(" ")
        return [first] + flat[1:]

    def _flatten(self, item: list, col: int) -> list[str]:
        out = []
        for part in item:
            if isinstance(part, list):  # [ "hostPath:", [children] ]
                out.append(" " * col + part[0])
                out += [" " * (col + self._map_indent()) + child for child in part[1]]
            else:
                out.append(" " * col + part)
        return out

    def _sequence_offset(self) -> int:
        """How far this file indents a list's '-' from its key (kubeadm: 0), from an existing list."""
        for _, value in self.m.container.value:
            if isinstance(value, yaml.SequenceNode) and value.value and not value.flow_style:
                text = self.lines[value.value[0].start_mark.line]
                dash = text.rfind("-", 0, value.value[0].start_mark.column)
                key_col = self.m.container.value[0][0].start_mark.column
                if dash >= key_col:
                    return dash - key_col
        return 0

    def _map_indent(self) -> int:
        """The file's mapping indentation (from a volume's hostPath block; 2 otherwise)."""
        volumes = get(self.m.pod_spec, "volumes")
        if isinstance(volumes, yaml.SequenceNode):
            for item in volumes.value:
                for key, value in getattr(item, "value", []):
                    if isinstance(value, yaml.MappingNode) and value.value and not value.flow_style:
                        return max(1, value.value[0][0].start_mark.column - key.start_mark.column)
        return 2

    # -- writing ------------------------------------------------------------------------------
    def _insert(self, index: int, lines: list[str]) -> None:
        self.inserts.append((index, len(self.inserts), lines))

    def apply(self) -> str:
        lines = list(self.lines)
        if lines and not lines[-1].endswith(("\n", "\r")) and any(i >= len(lines) for i, _, _ in self.inserts):
            lines[-1] += self.newline
        for index, _order, block in sorted(self.inserts, key=lambda t: (t[0], t[1]), reverse=True):
            lines[index:index] = [line + self.newline for line in block]
        return "".join(lines)


def _end(node: yaml.Node) -> yaml.Mark:
    """Where a node's own content ends (a block collection's end mark lies after trailing comments)."""
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return _end(node.value[-1])
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return _end(node.value[-1][1])
    return node.end_mark


def _after(node: yaml.Node) -> int:
    """The line index just after the node's content."""
    mark = _end(node)
    return mark.line + 1 if mark.column > 0 else mark.line


def _scalar(value: str) -> str:
    """A plain scalar when YAML reads it back as the same string; a double-quoted one otherwise."""
    if _PLAIN.match(value):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)
