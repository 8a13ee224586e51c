"""`tsrepo validate` and `tsrepo bench`: the client suite.

Every option is checked here, at parse time, before the repository is read or a request is sent:
a bad option is exit 2 with a message naming it. Exit 1 is kept for the server's side of things.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tsrepo.cli import RepoParam, _console, as_given, local_repo, main, repo_option
from tsrepo.cli.options import MAX_SECONDS, Finite, output_path, usage
from tsrepo.errors import TsrepoError, UsageError

PROTOCOLS = click.Choice(["http", "grpc"])


def _address(value, option):
    from tsrepo.client.address import parse_address

    return parse_address(value, option)


def _model_names(values, option):
    from tsrepo.client.modelinfo import check_model_name

    return tuple(check_model_name(v, option) for v in values)


def _model_name(value, option):
    from tsrepo.client.modelinfo import check_model_name

    return check_model_name(value, option)


def _levels(mode_name):
    def parse(value, option):
        from tsrepo.client.bench import Mode, parse_levels

        return parse_levels(value, Mode(mode_name))

    return parse


def _shapes(values, option):
    from tsrepo.client.modelinfo import parse_shape

    return dict(parse_shape(v, option) for v in values)


def _ranges(values, option):
    from tsrepo.client.modelinfo import parse_range

    return dict(parse_range(v, option) for v in values)


def _bench_repo(repo, from_server: bool, model: str, console):
    """The repository bench reads, or None to read the model from the server: --from-server, or no
    --repo and no ./model_repository holding the model."""
    if from_server:
        if repo is not None:
            raise UsageError("give `--repo` or `--from-server`, not both")
        return None
    if repo is None:
        default = Path("model_repository")
        return default if (default / model / "config.pbtxt").is_file() else None
    return local_repo(repo, console)


def _seconds(low: float, low_open: bool = False) -> Finite:
    return Finite(low, MAX_SECONDS, low_open)


@main.command()
@repo_option("The repository the server was started on (its model.pt files are run locally).")
@click.option(
    "--url",
    default="127.0.0.1:8000",
    show_default=True,
    callback=usage(_address),
    help="HOST:PORT of the server (its HTTP or gRPC port); [::1]:8000 for IPv6. No TLS.",
)
@click.option("--protocol", type=PROTOCOLS, default="http", show_default=True)
@click.option(
    "--model", "models", multiple=True, callback=usage(_model_names), help="Validate only these models (repeatable)."
)
@click.option(
    "--samples",
    default=4,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Random inputs per model: dynamic dims at min, max, middle, random; batch 1 and max.",
)
@click.option("--rtol", type=Finite(0.0), help="Relative tolerance (default: the one recorded at build time).")
@click.option("--atol", type=Finite(0.0), help="Absolute tolerance (default: the one recorded at build time).")
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=_seconds(0.0, low_open=True),
    help="Seconds to wait for readiness and per request.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def validate(repo, url, protocol, models, samples, rtol, atol, timeout, as_json):
    """Prove the served answers equal the local TorchScript answers.

    For each model: the server's metadata and config match the repository's (names, dtypes, dims,
    max_batch_size, instance groups, dynamic batching), and outputs for random inputs drawn from the
    signature equal torch.jit.load(model.pt) run here. Exit 0 when all pass; 1 when any model
    differs or is not ready, or the server is unreachable, timed out or refused; 2 for usage errors
    (an option, the repository or a model's files).
    """
    import json as json_mod

    from rich.markup import escape
    from rich.table import Table

    from tsrepo.client import validate as validate_mod

    console = _console()
    repo = local_repo(repo, console)
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
        click.echo(as_given(json_mod.dumps([r.to_json() for r in results], indent=2)))
    table = Table(title=f"validate {url} ({protocol})")
    for col in ("model", "version", "status", "output", "max abs err", "max rel err"):
        table.add_column(col)
    passed = validate_mod.Status.PASS
    for r in results:
        colour = "green" if r.status == passed else "red"
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
            console.print(f"[red]{escape(r.name)}:[/] {escape(as_given(p))}")
        for n in r.notes:
            console.print(f"[yellow]{escape(r.name)}:[/] {escape(as_given(n))}")
    sys.exit(0 if all(r.status == passed for r in results) else 1)


@main.command()
@click.argument("model", callback=usage(_model_name))
@click.option(
    "--url",
    default="127.0.0.1:8000",
    show_default=True,
    callback=usage(_address),
    help="HOST:PORT (the HTTP or the gRPC port); [::1]:8000 for IPv6. No TLS.",
)
@click.option(
    "--protocol",
    type=PROTOCOLS,
    default="http",
    show_default=True,
    help="Both are on par with perf_analyzer: HTTP/1.1 keep-alive, or gRPC's ModelInfer over one HTTP/2"
    " connection (cleartext).",
)
@click.option(
    "--repo",
    type=RepoParam(),
    help="Where the model's config and tsrepo.json (input shapes and value ranges) are read. Default:"
    " ./model_repository when it holds MODEL, else the server's config and metadata.",
)
@click.option(
    "--from-server",
    is_flag=True,
    help="Read inputs, dtypes, dims and max_batch_size from the server (no repository needed).",
)
@click.option(
    "--shape",
    "shapes",
    multiple=True,
    callback=usage(_shapes),
    help="NAME:D1,D2: the dims (without the batch dim) of an input with dynamic dims (repeatable).",
)
@click.option(
    "--range",
    "ranges",
    multiple=True,
    callback=usage(_ranges),
    help="NAME:LOW:HIGH: draw an integer input's values from LOW..HIGH (repeatable).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Send the load from this many processes (one merged result); for gRPC, or when bench warns that the"
    " client is the bottleneck.",
)
@click.option(
    "--collect-metrics",
    is_flag=True,
    help="Scrape the server's metrics each window: GPU utilisation, memory and power (CPU and memory without GPUs).",
)
@click.option(
    "--metrics-url",
    callback=usage(_address),
    help="HOST:PORT of the metrics endpoint (default: the --url host, port 8002). Implies --collect-metrics.",
)
@click.option(
    "--concurrency",
    callback=usage(_levels("concurrency")),
    help="Closed loop: comma-separated numbers of concurrent requests (1-4096), e.g. 1,4,16.",
)
@click.option(
    "--request-rate",
    callback=usage(_levels("request_rate")),
    help="Open loop: comma-separated request rates (requests/s, up to 1e6), e.g. 100,500.",
)
@click.option("--poisson", is_flag=True, help="With --request-rate: Poisson arrivals instead of constant gaps.")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1, 65536), help="Rows per request.")
@click.option("--duration", type=_seconds(0.1), help="Seconds to measure per level (else: until stable).")
@click.option(
    "--requests",
    "request_count",
    type=click.IntRange(1, 10**9),
    help="Measure this many requests per level instead.",
)
@click.option("--warmup", default=1.0, show_default=True, type=_seconds(0.0), help="Seconds of load before measuring.")
@click.option("--window", default=2.0, show_default=True, type=_seconds(0.1), help="Measurement window, seconds.")
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
    type=Finite(0.0, 100.0),
    help="Stable when throughput and p95 of the last 3 windows are within this percent of their mean.",
)
@click.option(
    "--input-data",
    type=click.Path(path_type=Path),
    help="Inputs from a .npz or JSON file instead of random data drawn from the signature.",
)
@click.option("--json", "json_path", callback=usage(output_path), help="Write the results as JSON.")
@click.option(
    "--csv", "csv_path", callback=usage(output_path), help="Write a CSV with perf_analyzer's column names (µs)."
)
@click.option(
    "--plot",
    "plot_path",
    callback=usage(output_path),
    help="Write a PNG of throughput and p95 latency against the levels.",
)
def bench(
    model,
    url,
    protocol,
    repo,
    from_server,
    shapes,
    ranges,
    workers,
    collect_metrics,
    metrics_url,
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
    times, execution count and average batch size; the client's own CPU (a warning when the client,
    not the server, is the bottleneck); with --collect-metrics the server's GPU (or CPU) utilisation,
    memory and power. Without a repository the model's inputs come from the server: give each
    dynamic dim with --shape. Exit 1 when any request failed, the model is not ready or the server
    went away (partial results are still written); 2 for usage errors, found before any load is sent.
    """
    from rich.markup import escape
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from tsrepo.client import bench as bench_mod
    from tsrepo.client import report

    if (concurrency is None) == (request_rate is None):
        raise UsageError("give exactly one of `--concurrency` or `--request-rate`")
    if poisson and request_rate is None:
        raise UsageError("`--poisson` shapes the arrivals of `--request-rate`; it does nothing with `--concurrency`")
    if duration is not None and request_count is not None:
        raise UsageError("give `--duration` or `--requests`, not both")
    outputs = [p.resolve() for p in (json_path, csv_path, plot_path) if p]
    if len(set(outputs)) != len(outputs):
        raise UsageError("`--json`, `--csv` and `--plot` must name different files")
    mode = bench_mod.Mode.CONCURRENCY if concurrency else bench_mod.Mode.REQUEST_RATE
    levels = concurrency or request_rate
    if collect_metrics or metrics_url:
        from tsrepo.client.metrics import default_url

        metrics_url = str(metrics_url) if metrics_url else default_url(str(url))
    settings = bench_mod.Settings(
        url=str(url),
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
        workers=workers,
        shapes=shapes or {},
        ranges=ranges or {},
        metrics_url=metrics_url,
    )
    console = _console()
    repo = _bench_repo(repo, from_server, model, console)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
    ) as progress:
        task = progress.add_task(f"bench {model}", total=None)
        results = bench_mod.run(
            settings, mode, levels, repo, input_data, progress=lambda m: progress.update(task, description=escape(m))
        )
    console.print(report.table(results, f"{model} @ {url} ({protocol}, batch {batch_size})"))
    title = f"{model} ({protocol}, batch {batch_size})"
    _write_reports(report, results, settings, json_path, csv_path, plot_path, title)
    failed = False
    for r in results:
        if not r.stable and not r.aborted:
            console.print(f"[yellow]warning:[/] {mode} {r.level:g} did not stabilise within {len(r.windows)} windows")
        if r.client_saturated:
            console.print(
                f"[yellow]warning:[/] at {mode} {r.level:g} a load process of the client was busy {r.client_busy:.0f} %"
                f" of a core ({r.client_cpu:.0f} % CPU): the client, not the server, may be the bottleneck. Spread"
                f" the load with `--workers {min(64, max(2, 2 * r.workers))}`, measure fewer or lower levels, or run"
                " the client on another machine"
            )
        if r.errors:
            failed = True
            console.print(
                f"[red]errors at {mode} {r.level:g}:[/] " + ", ".join(f"{k}: {v}" for k, v in r.errors.items())
            )
        if r.aborted:
            failed = True
            console.print(f"[red]stopped at {mode} {r.level:g}:[/] {escape(r.aborted)}")
    sys.exit(1 if failed else 0)


def _write_reports(report, results, settings, json_path, csv_path, plot_path, title) -> None:
    for option, path, write in (
        ("--json", json_path, lambda p: report.write_json(results, settings, p)),
        ("--csv", csv_path, lambda p: _write_csv(report, results, p)),
        ("--plot", plot_path, lambda p: report.plot(results, p, title)),
    ):
        if not path:
            continue
        try:
            write(path)
        except OSError as e:
            raise TsrepoError(f"`{option}`: could not write {path}: {e.strerror or e}") from None
        click.echo(f"wrote {path}", err=True)


def _write_csv(report, results, path: Path) -> None:
    with open(path, "w", newline="") as fh:
        report.write_csv(results, fh)
