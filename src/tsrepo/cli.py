"""The command line: parse arguments, call one library function, turn errors into exit codes.

Heavy modules (torch, tritonclient) are imported inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tsrepo.errors import TsrepoError


class _Group(click.Group):
    """Prints a TsrepoError as one message and exits with its code; TSREPO_DEBUG=1 for tracebacks."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TsrepoError as e:
            if os.environ.get("TSREPO_DEBUG"):
                raise
            click.secho(f"error: {e}", fg="red", err=True)
            ctx.exit(e.exit_code)


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tsrepo")
def main() -> None:
    """tsrepo: take PyTorch models to Triton Inference Server.

    \b
    build     script/trace models, verify them, write a Triton model repository
    doctor    explain why a model does not script, finding by finding, with the fix
    serve     start a real Triton server on a repository (locally or with docker compose)
    compose   pick the container tag for docker/ and write the KIND_CPU copy
    validate  prove the served answers equal the local TorchScript answers
    bench     load-test a served model (concurrency and request-rate sweeps)
    """


@main.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    default="model_repository",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The model repository to write into.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing version of a model.")
@click.option(
    "--dry-run", is_flag=True, help="Export and verify, print the files that would be written, write nothing."
)
@click.option(
    "--templates",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A folder with your own config.pbtxt.j2 (house style).",
)
@click.option("--source", help="One model without a spec file: 'module:factory' or a TorchScript .pt path.")
@click.option("--name", help="With --source: the model's name in the repository.")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="NAME:DTYPE:SHAPE",
    help="With --source: one per forward argument, e.g. image:float32:3,64,64 or ids:int64:1..128 "
    "(shape without the batch dim when --max-batch-size > 0).",
)
@click.option(
    "--export", "export_mode", type=click.Choice(["script", "trace", "auto"]), help="With --source (default auto)."
)
@click.option("--max-batch-size", type=int, help="With --source: 0 = no batch dimension.")
@click.option("--instance-group", metavar="KIND:COUNT", help="With --source: e.g. gpu:1 or cpu:2.")
@click.option("--dynamic-batching/--no-dynamic-batching", default=None, help="With --source.")
@click.option("--max-queue-delay", type=int, metavar="MICROSECONDS", help="With --source and dynamic batching.")
@click.option("--version", "model_version", type=int, help="With --source: the version folder (default: next free).")
def build(
    spec,
    out,
    force,
    dry_run,
    templates,
    source,
    name,
    inputs,
    export_mode,
    max_batch_size,
    instance_group,
    dynamic_batching,
    max_queue_delay,
    model_version,
):
    """Build a Triton model repository from SPEC (default ./tsrepo.toml) or from flags.

    Every model is imported, scripted (or traced), checked against the eager model at several
    input sizes, checked for batch safety before dynamic batching, and its config.pbtxt rendered
    and proven against Triton's schema. Nothing is written unless every model passes; each model
    folder is then replaced atomically.
    """
    from tsrepo import build as build_mod
    from tsrepo import spec as spec_mod

    if source:
        if spec is not None:
            raise TsrepoError("command line: give either SPEC or --source, not both")
        fields: dict = {
            "name": name,
            "source": source,
            "inputs": [spec_mod.parse_input_flag(i) for i in inputs],
            "export": export_mode,
            "max_batch_size": max_batch_size,
            "version": model_version,
        }
        if not name:
            raise TsrepoError("command line: `--name` is missing; --source needs a model name")
        if instance_group:
            kind, _, count = instance_group.partition(":")
            fields["instance_group"] = [{"kind": kind, "count": int(count) if count.isdigit() else count or 1}]
        if dynamic_batching or max_queue_delay is not None:
            fields["dynamic_batching"] = {"max_queue_delay_microseconds": max_queue_delay or 0}
        repo_spec = spec_mod.spec_from_flags(fields)
    else:
        repo_spec = spec_mod.load_spec(spec or Path("tsrepo.toml"))

    console = _console()
    with console.status("building") as status:
        result = build_mod.build(
            repo_spec, out, force=force, dry_run=dry_run, templates=templates, progress=lambda msg: status.update(msg)
        )
    from rich.markup import escape

    for pm in result.models:
        for w in pm.warnings:
            console.print(f"[yellow]warning:[/] {escape(w)}")
        c = pm.checks
        outputs = ", ".join(f"{o.name} {o.dtype.triton} {list(o.dims)}" for o in pm.signature.outputs)
        console.print(
            f"[green]ok[/] {escape(pm.spec.name)} v{pm.version}: {pm.export_mode}, {c['runs']} runs checked"
            f" against eager (max abs error {c['max_abs_error']:.2g}), outputs {escape(outputs)}"
        )
    click.echo(result.plan.tree())
    if dry_run:
        click.echo("dry run: nothing written")


@main.command()
@click.argument("source")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="NAME:DTYPE:SHAPE",
    help="With module:callable: example inputs (full shapes, or without the batch dim when "
    "--max-batch-size > 0); the model is then run and compared with eager.",
)
@click.option(
    "--max-batch-size",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="With module:callable and --input: the batch dimension is added in front.",
)
@click.option("--allow-trace", is_flag=True, help="When scripting fails, trace and say what tracing cannot see.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(source, inputs, max_batch_size, allow_trace, as_json):
    """Explain why a model does not script, finding by finding.

    SOURCE is `module:callable` (as in a spec) or a spec file (then every model in it). A static
    pass reads every method TorchScript would compile and reports all known unscriptable constructs
    at once, each with its file:line, the code, why TorchScript refuses it and the rewrite that fixes
    it; TorchScript's own error is translated onto the same classes. Exit 0 when the model scripts
    (and, given inputs, matches eager), 1 when there are findings, 2 for usage errors.
    """
    import json as json_mod

    from rich.markup import escape

    from tsrepo import doctor as doctor_mod
    from tsrepo import spec as spec_mod

    path = Path(source)
    if source.endswith(".toml") or path.is_file():
        repo_spec = spec_mod.load_spec(path)
    else:
        fields = {
            "name": source.rpartition(":")[2].replace(".", "_") or "model",
            "source": source,
            "inputs": [spec_mod.parse_input_flag(i) for i in inputs] or [{"dtype": "float32", "shape": [1]}],
            "max_batch_size": max_batch_size,
            "export": "trace" if allow_trace else "script",
        }
        repo_spec = spec_mod.spec_from_flags(fields)
        if not inputs:
            repo_spec = spec_mod.RepoSpec(
                tuple(dataclasses_replace(m, inputs=()) for m in repo_spec.models), repo_spec.origin
            )
    reports = [doctor_mod.check(m, allow_trace=allow_trace) for m in repo_spec.models]
    if as_json:
        click.echo(json_mod.dumps([r.to_json() for r in reports], indent=2))
    else:
        console = _console()
        for r in reports:
            state = "scripts" if r.scripted else ("traced" if r.traced else "does not script")
            colour = "green" if r.ok else "red"
            console.print(f"[bold]{escape(r.model)}[/]: [{colour}]{state}[/], {len(r.findings)} finding(s)")
            for f in r.findings:
                console.print(escape(doctor_mod.format_finding(f, verbose=True)), highlight=False)
            if r.compared:
                console.print(
                    f"  {'traced' if r.traced else 'scripted'} model matches eager"
                    f" (max abs error {r.max_abs_error:.2g})"
                )
            for n in r.notes:
                console.print(f"  note: {escape(n)}")
    sys.exit(0 if all(r.ok for r in reports) else 1)


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


@main.command()
@click.option(
    "--repo",
    default="model_repository",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The model repository to serve (never written to).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "docker"]),
    default="local",
    show_default=True,
    help="local: the tritonserver from the nvidia-pytriton wheel (no Docker, no GPU needed); "
    "docker: the official container through docker compose.",
)
@click.option("--http-port", default=8000, show_default=True, type=int)
@click.option("--grpc-port", default=8001, show_default=True, type=int)
@click.option("--metrics-port", default=8002, show_default=True, type=int)
@click.option(
    "--exit-on-error/--no-exit-on-error",
    default=True,
    show_default=True,
    help="Stop when any model fails to load, or serve the others.",
)
@click.option("--timeout", default=180.0, show_default=True, type=float, help="Seconds to wait for readiness.")
@click.option(
    "--compose",
    "compose_file",
    default="docker/docker-compose.yml",
    show_default=True,
    type=click.Path(path_type=Path),
    help="With --engine docker.",
)
@click.option(
    "--templates",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A folder with your own model.py.j2 for the local engine.",
)
def serve(repo, engine, http_port, grpc_port, metrics_port, exit_on_error, timeout, compose_file, templates):
    """Start Triton on a repository and stay in the foreground until Ctrl-C or SIGTERM.

    The local engine runs the real tritonserver (2.51.0) on CPU: each libtorch model runs its
    model.pt through Triton's Python backend with the same config (a shadow repository; KIND_GPU
    becomes KIND_CPU when no GPU is visible). It waits until every model is loaded, prints the URLs
    and each model's state, and on exit stops the server and its backend processes.
    """
    from rich.markup import escape

    from tsrepo.serve import runner

    runner.sigterm_as_interrupt()
    console = _console()
    try:
        with console.status("starting tritonserver") as status:
            handle = runner.start(
                engine,
                repo,
                runner.Ports(http_port, grpc_port, metrics_port),
                exit_on_error=exit_on_error,
                timeout=timeout,
                compose_file=compose_file,
                templates=templates,
                progress=lambda msg: status.update(escape(msg)),
            )
    except KeyboardInterrupt:
        click.echo("interrupted while starting; stopped", err=True)
        sys.exit(130)
    with handle:
        for w in handle.warnings:
            console.print(f"[yellow]warning:[/] {escape(w)}")
        for m in handle.models():
            colour = "green" if m.state == "READY" else "red"
            reason = f" {escape(m.reason)}" if m.reason else ""
            console.print(f"[{colour}]{m.state}[/] {escape(m.name)} v{m.version}{reason}")
        click.echo(f"HTTP    http://127.0.0.1:{http_port}")
        click.echo(f"gRPC    127.0.0.1:{grpc_port}")
        click.echo(f"metrics http://127.0.0.1:{metrics_port}/metrics")
        click.echo("serving; Ctrl-C to stop", err=True)
        code = runner.wait_for_signal(handle)
    click.echo("stopped", err=True)
    sys.exit(code)


@main.command("compose")
@click.option("--repo", default="model_repository", show_default=True, type=click.Path(path_type=Path))
@click.option(
    "--compose", "compose_file", default="docker/docker-compose.yml", show_default=True, type=click.Path(path_type=Path)
)
def compose_cmd(repo, compose_file):
    """Prepare docker compose for a built repository.

    Picks the Triton container whose PyTorch can load the exported models (from the torch version
    and file format recorded in tsrepo.json), writes it as the compose file's default image, and
    writes REPO.cpu, a KIND_CPU copy (hard links) for the `triton-cpu` service.
    """
    from tsrepo.serve import compose

    prepared = compose.prepare(repo, compose_file)
    console = _console()
    if prepared.choice.warning:
        console.print(f"[yellow]warning:[/] {prepared.choice.warning}")
    click.echo(f"image   {prepared.choice.image} (PyTorch {prepared.choice.container_torch})")
    click.echo(f"compose {prepared.compose_file}")
    click.echo(f"cpu     {prepared.cpu_repo}")


@main.command()
@click.option(
    "--repo",
    default="model_repository",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The repository the server was started on (its model.pt files are run locally).",
)
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
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True)
@click.option(
    "--repo",
    default="model_repository",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where the model's config and tsrepo.json (input shapes and value ranges) are read.",
)
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


def run() -> None:
    main(prog_name="tsrepo")


if __name__ == "__main__":
    sys.exit(run())
