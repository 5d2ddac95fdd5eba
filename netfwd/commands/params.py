"""Parameter types the commands share."""

from __future__ import annotations

import os

import click
from click.shell_completion import CompletionItem

SPEC_SUFFIXES = (".yaml", ".yml")


class SpecPath(click.Path):
    """A spec file argument: a path like any other, that shell completion narrows to YAML files
    (and the directories on the way to them)."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        folder, _, prefix = incomplete.rpartition("/")
        where = os.path.expanduser(folder) if folder else "."
        if incomplete.startswith("/") and not folder:
            where = "/"
        try:
            entries = sorted(os.scandir(where), key=lambda e: e.name)
        except OSError:
            return []
        lead = f"{folder}/" if folder or incomplete.startswith("/") else ""
        items = []
        for entry in entries:
            if not entry.name.startswith(prefix) or (entry.name.startswith(".") and not prefix.startswith(".")):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir:
                items.append(CompletionItem(f"{lead}{entry.name}/"))
            elif entry.name.endswith(SPEC_SUFFIXES):
                items.append(CompletionItem(f"{lead}{entry.name}"))
        return items
