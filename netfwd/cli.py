"""The `netfwd` command: a thin shell that parses, calls the library, and renders the report.

Subcommands live in `netfwd/commands/*.py` and are imported only when invoked, so that
`netfwd --help` never pays for scapy, pyroute2 or the dialects.
"""

from __future__ import annotations

import gc
import importlib
import sys

import click

from netfwd import __version__
from netfwd.errors import EXIT_ENVIRONMENT, NetfwdError, visible

# name -> ("module:attribute", one-line help shown by `netfwd --help` without importing the module)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("netfwd.commands.render:validate", "Check a spec and print its forwards."),
    "render": ("netfwd.commands.render:render", "Write apply/remove scripts for a dialect."),
    "lab": ("netfwd.commands.lab:lab", "Rehearse the relay path in network namespaces (root)."),
    "regions": ("netfwd.commands.render:regions", "Show the region catalog and its anomalies."),
    "schema": ("netfwd.commands.render:schema", "Print the spec's JSON Schema (for editors)."),
    "whitelist": ("netfwd.commands.whitelist:whitelist", "Verify source whitelists against the regions; render them."),
    "doctor": ("netfwd.commands.doctor:doctor", "Pre-flight checks of the relay and cluster, each problem with its fix."),
    "audit": ("netfwd.commands.audit:audit", "Audit policy and kube-apiserver manifest for log-based threat detection."),
    "plan": ("netfwd.commands.apply:plan", "Show what apply would change on this relay (exit 4: changes pending)."),
    "apply": ("netfwd.commands.apply:apply", "Apply a spec to this relay in one transaction, optionally commit-confirm."),
    "confirm": ("netfwd.commands.apply:confirm", "Keep a change made with apply --confirm-timeout."),
    "rollback": ("netfwd.commands.apply:rollback", "Put back the owned firewall state from before the last change."),
    "remove": ("netfwd.commands.apply:remove", "Remove everything netfwd owns on this relay, nothing else."),
    "status": ("netfwd.commands.apply:status", "What netfwd owns live: counters, pending confirm, drift."),
    "probe": ("netfwd.commands.probe:probe", "Probe the API server through the relay: where and why it fails."),
    "completion": ("netfwd.commands.completion:completion", "Print the shell completion script (bash, zsh, fish)."),
    "explain": ("netfwd.commands.explain:explain", "Trace a packet through the relay's firewall, NAT and routing."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target[0].partition(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netfwd")
def cli() -> None:
    """Forward a relay VM's port into an on-prem Kubernetes API server, completely and verifiably.

    \b
    Example:
      netfwd validate rules/example.yaml
      netfwd render rules/example.yaml --dialect all --out out/
    """


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; report netfwd errors as one line on stderr with their exit code, never a traceback."""
    # One short-lived process that builds a spec model, rules and texts (~10 objects per rule) and
    # makes few cycles: collecting the youngest generation every 700 allocations rescans that
    # growing heap for nothing (~10% of a 10,000-forward load or render). Cycles are still collected.
    # The process's own command line collects only after a million: one collection of the ~150,000
    # objects a 10,000-forward spec makes took 20-40 ms of a render or an apply, and found nothing.
    gc.set_threshold(1_000_000 if argv is None else 100_000, 20, 100)
    try:
        _run(argv)
    finally:
        if argv is None:  # the process's own command line: it exits next
            # The interpreter's final collection would walk the whole heap (a 10,000-forward
            # apply: ~0.1 s) to find nothing it must free before exit; frozen objects are skipped.
            gc.freeze()


def _run(argv: list[str] | None) -> None:
    try:
        code = cli.main(args=argv, prog_name="netfwd", standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code:  # ctx.exit(N) returns N here
            sys.exit(code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.Abort:
        click.echo("netfwd: aborted", err=True)
        sys.exit(130)
    except click.ClickException as problem:
        problem.show()
        sys.exit(problem.exit_code)
    except NetfwdError as problem:
        click.echo(f"netfwd: error: {visible(str(problem))}", err=True)
        sys.exit(problem.exit_code)
    except OSError as problem:  # the host failed us (a full disk, EIO, ...): exit 3, one line, no traceback
        where = f"{problem.filename}: " if problem.filename else ""
        click.echo(f"netfwd: error: {visible(where + (problem.strerror or str(problem)))}", err=True)
        sys.exit(EXIT_ENVIRONMENT)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
