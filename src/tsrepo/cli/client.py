"""`tsrepo validate` and `tsrepo bench`: the client suite."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tsrepo.cli import _console, main, repo_option
from tsrepo.errors import TsrepoError


@main.command()
@repo_option("The repository the server was started on (its model.pt files are run locally).")
@click.option("--url", default="127.0.0.1:8000", show_default=True, help="HOST:PORT of the server (HTTP or gRPC port).")
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True)
@click.option("--model", "models", multiple=True, help="Validate only these models (repeatable).")
@click.option(
    "--samples",
    default=4,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Random inputs per model: dynamic dims at min, max, middle, random; batch 1 and max.",
)
@click.option("--rtol", type=float, help="Relative tolerance (default: the one recorded at build time).")
@click.option("--atol", type=float, help="Absolute tolerance (default: the one recorded at build time).")
@click.option(
    "--timeout", default=60.0, show_default=True, type=float, help="Seconds to wait for readiness and per request."
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def validate(repo, url, protocol, models, samples, rtol, atol, timeout, as_json):
    """Prove the served answers equal the local TorchScript answers.

    For each model: the server's metadata and config match the repository's (names, dtypes, dims,
    max_batch_size, instance groups, dynamic batching), and outputs for random inputs drawn from the
    signature equal torch.jit.load(model.pt) run here. Exit 0 when all pass, 1 when any model
    differs or is not ready, 2 for usage errors and an unreachable server.
    """
    import json as json_mod

    from rich.markup import escape
    from rich.table import Table

    from tsrepo.client import validate as validate_mod

    console = _console()
    with console.status("validating") as status:
        results = validate_mod.validate(
            url,
            repo,
            list(models) or None,
            protocol=protocol,
            samples=samples,
            rtol=rtol,
            atol=atol,
            timeout=timeout,
            progress=lambda m: status.update(escape(m)),
        )
    if as_json:
        click.echo(json_mod.dumps([r.to_json() for r in results], indent=2))
    table = Table(title=f"validate {url} ({protocol})")
    for col in ("model", "version", "status", "output", "max abs err", "max rel err"):
        table.add_column(col)
    for r in results:
        colour = "green" if r.status == "pass" else "red"
        rows = list(r.outputs.values()) or [None]
        for i, o in enumerate(rows):
            table.add_row(
                escape(r.name) if i == 0 else "",
                str(r.version or "") if i == 0 else "",
                f"[{colour}]{r.status}[/]" if i == 0 else "",
                escape(o.name) if o else "",
                f"{o.max_abs:.3g}" if o else "",
                f"{o.max_rel:.3g}" if o else "",
            )
    console.print(table)
    for r in results:
        for p in r.problems:
            console.print(f"[red]{escape(r.name)}:[/] {escape(p)}")
        for n in r.notes:
            console.print(f"[yellow]{escape(r.name)}:[/] {escape(n)}")
    sys.exit(0 if all(r.status == "pass" for r in results) else 1)


def _levels(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise TsrepoError(f"command line: `{what}`: expected numbers separated by commas, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise TsrepoError(f"command line: `{what}`: levels must be positive, got {text!r}")
    return values


@main.command()
@click.argument("model")
@click.option("--url", default="127.0.0.1:8000", show_default=True, help="HOST:PORT (the HTTP or the gRPC port).")
@click.option(
    "--protocol",
    type=click.Choice(["http", "grpc"]),
    default="http",
    show_default=True,
    help="http is the low-overhead path (on par with perf_analyzer); grpc costs about 2-3x perf_analyzer's CPU "
    "per request (Python grpcio), which a small machine takes from the server.",
)
@repo_option("Where the model's config and tsrepo.json (input shapes and value ranges) are read.")
@click.option("--concurrency", help="Closed loop: comma-separated numbers of concurrent requests, e.g. 1,4,16.")
@click.option("--request-rate", help="Open loop: comma-separated request rates (requests/s), e.g. 100,500.")
@click.option("--poisson", is_flag=True, help="With --request-rate: Poisson arrivals instead of constant gaps.")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1), help="Rows per request.")
@click.option("--duration", type=click.FloatRange(min=0.1), help="Seconds to measure per level (else: until stable).")
@click.option(
    "--requests", "request_count", type=click.IntRange(1), help="Measure this many requests per level instead."
)
@click.option(
    "--warmup", default=1.0, show_default=True, type=click.FloatRange(min=0), help="Seconds of load before measuring."
)
@click.option(
    "--window", default=2.0, show_default=True, type=click.FloatRange(min=0.1), help="Measurement window, seconds."
)
@click.option(
    "--max-windows",
    default=10,
    show_default=True,
    type=click.IntRange(3, 1000),
    help="Without --duration: give up on stability after this many windows.",
)
@click.option(
    "--stability",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Stable when throughput and p95 of the last 3 windows are within this percent of their mean.",
)
@click.option(
    "--input-data",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Inputs from a .npz or JSON file instead of random data drawn from the signature.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the results as JSON.")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a CSV with perf_analyzer's column names (latencies in µs).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a PNG of throughput and p95 latency against the levels.",
)
def bench(
    model,
    url,
    protocol,
    repo,
    concurrency,
    request_rate,
    poisson,
    batch_size,
    duration,
    request_count,
    warmup,
    window,
    max_windows,
    stability,
    input_data,
    json_path,
    csv_path,
    plot_path,
):
    """Load-test MODEL on a running server.

    \b
    Closed loop (--concurrency): N requests in flight, each sent when the previous one returns.
    Open loop (--request-rate): requests sent on a schedule whatever the server does; latency is
    measured from each request's scheduled send time, so a server that falls behind shows its
    queueing in the latency instead of slowing the client down (no coordinated omission).

    Each level runs a warm-up, then measurement windows until throughput and p95 of the last three
    agree (or --duration / --requests). Reported per level: throughput, latency p50/p90/p95/p99/max/
    mean, errors by kind, and from Triton's statistics (deltas over the windows) queue and compute
    times, execution count and average batch size. Exit 1 when any request failed or the server
    went away (partial results are still written).
    """
    from rich.markup import escape
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from tsrepo.client import bench as bench_mod
    from tsrepo.client import report

    if bool(concurrency) == bool(request_rate):
        raise TsrepoError("command line: give exactly one of --concurrency or --request-rate")
    if duration and request_count:
        raise TsrepoError("command line: give --duration or --requests, not both")
    mode = "concurrency" if concurrency else "request_rate"
    levels = _levels(concurrency or request_rate, "--concurrency" if concurrency else "--request-rate")
    if mode == "concurrency" and any(v != int(v) for v in levels):
        raise TsrepoError("command line: `--concurrency`: levels must be whole numbers")
    settings = bench_mod.Settings(
        url=url,
        model=model,
        protocol=protocol,
        batch_size=batch_size,
        window=window,
        warmup=warmup,
        duration=duration,
        requests=request_count,
        max_windows=max_windows,
        stability=stability / 100.0,
        poisson=poisson,
    )
    console = _console()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
    ) as progress:
        task = progress.add_task(f"bench {model}", total=None)
        results = bench_mod.run(
            settings, mode, levels, repo, input_data, progress=lambda m: progress.update(task, description=escape(m))
        )
    console.print(report.table(results, f"{model} @ {url} ({protocol}, batch {batch_size})"))
    if json_path:
        report.write_json(results, settings, json_path)
    if csv_path:
        with open(csv_path, "w", newline="") as fh:
            report.write_csv(results, fh)
    if plot_path:
        report.plot(results, plot_path, f"{model} ({protocol}, batch {batch_size})")
    for path in (json_path, csv_path, plot_path):
        if path:
            click.echo(f"wrote {path}", err=True)
    failed = False
    for r in results:
        if not r.stable and not r.aborted:
            console.print(f"[yellow]warning:[/] {mode} {r.level:g} did not stabilise within {len(r.windows)} windows")
        if r.errors:
            failed = True
            console.print(
                f"[red]errors at {mode} {r.level:g}:[/] " + ", ".join(f"{k}: {v}" for k, v in r.errors.items())
            )
        if r.aborted:
            failed = True
            console.print(f"[red]stopped at {mode} {r.level:g}:[/] {escape(r.aborted)}")
    sys.exit(1 if failed else 0)
