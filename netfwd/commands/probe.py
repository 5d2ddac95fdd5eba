"""`netfwd probe`: is the API server reachable through the relay, and if not, where and why."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from netfwd.commands.params import SpecPath
from netfwd.errors import EXIT_FINDINGS, EnvironmentProblem, InputError

PRETTY_JSON_MAX = 50  # endpoints up to which the JSON document is indented


@click.command()
@click.argument("spec_file", metavar="[SPEC]", required=False, type=SpecPath())
@click.option("--via", metavar="RELAY[:PORT]",
              help="The relay address to dial. With SPEC: each forward's listen port there (a :PORT picks one "
                   "forward); without: RELAY:PORT is the one endpoint.")
@click.option("--target", "targets", multiple=True, metavar="HOST:PORT",
              help="The API server behind the relay (with --via), or, without --via, an endpoint to dial "
                   "directly (repeatable).")
@click.option("--targets-file", "list_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Endpoints to dial directly, one HOST:PORT [NAME] per line.")
@click.option("--forward", "forward_names", multiple=True, metavar="NAME", help="Only this forward of SPEC (repeatable).")
@click.option("--count", "-c", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="TCP handshakes per endpoint (RTT min/avg/max/stddev and loss).")
@click.option("--interval", type=click.FloatRange(0, 60), default=0.2, show_default=True,
              help="Seconds between handshakes.")
@click.option("--timeout", type=click.FloatRange(0.05, 300), default=3.0, show_default=True,
              help="Seconds to wait for any one answer before calling it no-response.")
@click.option("--until", type=click.Choice(["tcp", "tls", "http"]), default="http", show_default=True,
              help="The last stage to run.")
@click.option("--trace", is_flag=True, help="TTL-limited raw SYNs and the route (root or CAP_NET_RAW).")
@click.option("--locate/--no-locate", default=True, show_default=True,
              help="When TCP fails, locate the failure with TTL-limited connects (no privileges needed).")
@click.option("--max-hops", type=click.IntRange(1, 64), default=16, show_default=True,
              help="Highest TTL for the trace.")
@click.option("--ca", type=click.Path(dir_okay=False), help="CA bundle (PEM) to verify the server's chain with.")
@click.option("--server-name", "--tls-server-name", "server_name", metavar="NAME",
              help="TLS server name to send and check, like tls-server-name in a kubeconfig.")
@click.option("--from-relay", is_flag=True,
              help="Run on the relay: direct connect to the target, conntrack and ip_forward.")
@click.option("--concurrency", "-j", type=click.IntRange(1, 4096), default=512, show_default=True,
              help="Handshakes in flight at once (and up to 128 threads for the TLS/HTTP stages).")
@click.option("--netns", metavar="NAME", help="Probe from inside this network namespace (root).")
@click.option("--strict", is_flag=True, help="Warnings fail too (exit 1).")
@click.option("--catalog", "catalog_file", type=click.Path(dir_okay=False), help="Region catalog for the SPEC.")
@click.option("--output", "-o", type=click.Choice(["table", "json", "junit"]), default="table", show_default=True,
              help="Report format: json is one document on stdout (logs go to stderr).")
@click.pass_context
def probe(ctx: click.Context, spec_file: str | None, via: str | None, targets: tuple[str, ...],
          list_file: str | None, forward_names: tuple[str, ...], count: int, interval: float, timeout: float,
          until: str, trace: bool, locate: bool, max_hops: int, ca: str | None, server_name: str | None, from_relay: bool,
          concurrency: int, netns: str | None, strict: bool, catalog_file: str | None, output: str) -> None:
    """Probe the API server through the relay: resolve -> tcp -> tls -> http, then a diagnosis.

    Exit 0 when every endpoint is reachable (warnings allowed unless --strict), 1 when not,
    2 on bad input, 3 when the host cannot (e.g. --trace without root).

    \b
    Examples:
      netfwd probe --via 203.0.113.7:16443
      netfwd probe rules/example.yaml --via 203.0.113.7 --ca ca.crt -o json
      sudo netfwd probe --via 203.0.113.7:16443 --trace
      sudo netfwd probe rules/example.yaml --from-relay      # on the relay itself
    """
    if netns:
        ctx.exit(_in_netns(ctx, netns))
    from netfwd.probe import Options, probe_all
    from netfwd.probe.report import all_ok, document, render_junit, render_table
    from netfwd.probe.targets import collect

    def log(message: str) -> None:
        click.echo(f"netfwd probe: {message}", err=True)

    _check_ca(ca)
    if trace:
        from netfwd.probe.rawtrace import require_raw

        require_raw()
    loaded = None
    if spec_file:
        from netfwd.catalog import load_catalog
        from netfwd.spec import open_spec

        loaded = open_spec(spec_file, load_catalog(catalog_file) if catalog_file else None)
    endpoints = collect(loaded, via, targets, list_file, forward_names, from_relay, log)
    options = Options(count=count, interval=interval, timeout=timeout, until=until, trace=trace,
                      locate=locate, max_hops=max_hops, ca=ca, server_name=server_name, from_relay=from_relay,
                      concurrency=concurrency, strict=strict)
    started = time.perf_counter()
    with _progress(len(endpoints)) as progress:
        results = probe_all(endpoints, options, progress)
    elapsed = time.perf_counter() - started
    if output == "json":
        # pretty for people; compact (C encoder, ~10x faster) for bulk runs that machines read
        pretty = len(results) <= PRETTY_JSON_MAX
        click.echo(json.dumps(document(results, options, elapsed), indent=2 if pretty else None,
                              separators=None if pretty else (",", ":")))
    elif output == "junit":
        click.echo(render_junit(results, options, elapsed), nl=False)
    else:
        from rich.console import Console

        render_table(results, options, Console(width=None if sys.stdout.isatty() else 140))
    if not all_ok(results, options):
        ctx.exit(EXIT_FINDINGS)


def _check_ca(ca: str | None) -> None:
    if ca is None:
        return
    import ssl

    if not Path(ca).is_file():
        raise InputError("no such file", file=ca, field="--ca")
    try:
        ssl.create_default_context(cafile=ca)
    except (ssl.SSLError, ValueError, OSError) as problem:
        raise InputError(f"not a PEM certificate bundle ({problem})", file=ca, field="--ca") from None


class _progress:
    """A transient progress bar on stderr, only on a terminal and only for several endpoints."""

    def __init__(self, total: int) -> None:
        self.total, self.bar, self.task = total, None, None

    def __enter__(self):
        if self.total < 2 or not sys.stderr.isatty():
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("probing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=True)
        self.bar.start()
        self.task = self.bar.add_task("probe", total=self.total)
        return lambda _result: self.bar.advance(self.task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _in_netns(ctx: click.Context, name: str) -> int:
    """Re-run this very command inside network namespace `name` (``ip netns exec``); its exit code."""
    from netfwd import host

    if not (host.NETNS_RUN / host.check_netns(name)).exists():
        raise InputError(f"no network namespace {name!r} (see `ip netns list`)", field="--netns")
    if os.geteuid() != 0:
        raise EnvironmentProblem("--netns needs root (ip netns exec)")
    import subprocess

    argv = [sys.executable, "-m", "netfwd", "probe", *_argv_without(ctx, "netns")]
    try:
        return subprocess.run(host.exec_prefix(name) + argv, env=host.child_env()).returncode
    except FileNotFoundError as missing:
        raise EnvironmentProblem(f"cannot run ip netns exec: {missing}") from None


def _argv_without(ctx: click.Context, skip: str) -> list[str]:
    """The command line that produced ctx.params, minus one option (so a re-exec does not recurse)."""
    argv: list[str] = []
    positional: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if isinstance(param, click.Option) and param.is_flag and param.secondary_opts and param.name != skip:
            argv.append(param.opts[0] if value else param.secondary_opts[0])  # --x/--no-x: always explicit
            continue
        if param.name == skip or value is None or value == () or value is False:
            continue
        if isinstance(param, click.Argument):
            positional += [str(v) for v in (value if isinstance(value, tuple) else (value,))]
            continue
        flag = param.opts[0]
        if getattr(param, "is_flag", False):
            argv.append(flag)
        else:
            for item in value if isinstance(value, tuple) else (value,):
                argv += [flag, str(item)]
    return argv + (["--", *positional] if positional else [])
