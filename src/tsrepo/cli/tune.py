"""`tsrepo tune`: measure the config instead of guessing it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tsrepo.cli import PathParam, _console, main, repo_option
from tsrepo.cli.options import Finite, output_path, usage


def _int_list(value, option):
    from tsrepo.errors import UsageError

    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items or not all(v.isascii() and v.isdigit() for v in items):
        raise UsageError(f"`{option}`: expected whole numbers separated by commas, got {value!r}")
    return tuple(int(v) for v in items)


def _address(value, option):
    from tsrepo.client.address import parse_address

    return str(parse_address(value, option))


def _model(value, option):
    from tsrepo.client.modelinfo import check_model_name

    return check_model_name(value, option)


@main.command()
@click.argument("model", callback=usage(_model))
@repo_option("The built repository holding MODEL (its config is the starting point; nothing in it is changed).")
@click.option(
    "--spec", type=PathParam(dir_okay=False), help="The spec MODEL was built from (for --write; default tsrepo.toml)."
)
@click.option(
    "--engine",
    type=click.Choice(["local"]),
    default=None,
    help="local (default without --url): start the local Triton engine for the search and stop it after.",
)
@click.option(
    "--url",
    callback=usage(_address),
    help="A running Triton in explicit model-control mode (--model-control-mode=explicit) instead of the local engine.",
)
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True)
@click.option("--objective", type=click.Choice(["throughput", "latency"]), default="throughput", show_default=True)
@click.option(
    "--p99-budget", type=Finite(0.0, 3_600_000.0, low_open=True), metavar="MS", help="Highest p99 latency allowed."
)
@click.option(
    "--min-throughput",
    type=Finite(0.0, 1e9, low_open=True),
    metavar="INFER/S",
    help="With --objective latency: the throughput the lowest p99 must reach.",
)
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1, 1024), help="Rows per request.")
@click.option("--max-instances", default=3, show_default=True, type=click.IntRange(1, 16), help="Instance counts 1..N.")
@click.option(
    "--max-batch-size",
    type=click.IntRange(1, 1024),
    help="Largest max_batch_size tried (powers of 2 up to it; default: the repository's). Sizes above the built one"
    " are tried only where batch safety is proven again at that size.",
)
@click.option(
    "--delays", callback=usage(_int_list), help="Queue delays (µs) tried with dynamic batching, e.g. 0,100,500,2000."
)
@click.option("--threads", callback=usage(_int_list), help="INTRA_OP_THREAD_COUNT values to try, e.g. 1,2.")
@click.option(
    "--concurrency", callback=usage(_int_list), help="Client concurrency levels swept per config (default 1,4,16,32)."
)
@click.option("--search", type=click.Choice(["quick", "brute"]), default="quick", show_default=True)
@click.option(
    "--time-budget", type=Finite(0.0, 24 * 60.0, low_open=True), metavar="MIN", help="Stop with the best so far."
)
@click.option(
    "--resume", type=PathParam(dir_okay=False, exists=True), help="Continue an interrupted run from its JSON file."
)
@click.option("--write", is_flag=True, help="Write the winning values into the spec and rebuild the model's config.")
@click.option(
    "--json", "json_path", callback=usage(output_path), help="Every config tried and its measurements (resumable)."
)
@click.option("--csv", "csv_path", callback=usage(output_path), help="Every level measured, one row each.")
@click.option("--plot", "plot_path", callback=usage(output_path), help="PNG: throughput against p99, the Pareto front.")
@click.option("--window", default=1.0, show_default=True, type=Finite(0.1, 60.0), help="Measurement window, seconds.")
def tune(
    model,
    repo,
    spec,
    engine,
    url,
    protocol,
    objective,
    p99_budget,
    min_throughput,
    batch_size,
    max_instances,
    max_batch_size,
    delays,
    threads,
    concurrency,
    search,
    time_budget,
    resume,
    write,
    json_path,
    csv_path,
    plot_path,
    window,
):
    """Find the config that serves MODEL best, by measuring it.

    \b
    The space: instance count, max_batch_size, dynamic batching off/on with its queue delay, and
    (with --threads) the intra-op thread count. Each config is swapped into a running server through
    Triton's repository API (no restarts) and swept with `tsrepo bench`'s closed-loop engine; only
    stable, error-free windows count. --search quick climbs from the current config on one-level
    probes and sweeps only the best few; brute sweeps every config. The finalists are measured twice
    and the winner must beat the repository's own config, measured the same way, by more than the
    noise. Exit 0 with a winner, 1 when no config meets the goal, 2 for bad input.
    """
    from rich.markup import escape

    from tsrepo import tune as tune_mod
    from tsrepo.errors import UsageError
    from tsrepo.tune import results as results_mod
    from tsrepo.tune.search import Objective

    if engine is not None and url is not None:
        raise UsageError("command line: give --engine local or --url, not both")
    options = tune_mod.Options(
        model=model,
        repo=repo,
        url=url,
        protocol=protocol,
        objective=Objective(objective),
        p99_budget_ms=p99_budget,
        min_throughput=min_throughput,
        batch_size=batch_size,
        max_instances=max_instances,
        max_batch_size=max_batch_size,
        delays_us=delays or tune_mod.DEFAULT_DELAYS_US,
        threads=threads or (),
        levels=concurrency or tune_mod.DEFAULT_LEVELS,
        search=tune_mod.Search(search),
        time_budget_min=time_budget,
        resume=resume,
        json_path=json_path,
        csv_path=csv_path,
        plot_path=plot_path,
        spec=spec,
        write=write,
        window_s=window,
    )
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from tsrepo.serve.runner import sigterm_as_interrupt

    sigterm_as_interrupt()  # SIGTERM stops the search like Ctrl-C: the local engine is stopped, the JSON kept
    console = _console()
    # Off a terminal the bar is not drawn: each trial is a line instead, so logs show progress.
    log_lines = not console.is_terminal
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    try:
        with Progress(*columns, TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True) as bar:
            task = bar.add_task(f"tune {model}", total=None)
            outcome = tune_mod.tune(
                options,
                progress=lambda m: bar.update(task, description=escape(m)),
                on_trial=lambda done, total, m: (
                    bar.update(task, completed=done, total=total, description=escape(m)),
                    log_lines and click.echo(f"[{done}/~{total}] {m}", err=True),
                ),
            )
    except KeyboardInterrupt:
        click.echo("interrupted; the JSON file (--json) can be resumed with --resume", err=True)
        sys.exit(130)
    for note in outcome.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    console.print(results_mod.table(outcome.goal, outcome.run.trials, outcome.run.winner))
    if outcome.swap_seconds:
        s = sorted(outcome.swap_seconds)
        console.print(f"config swaps: {len(s)}, median {s[len(s) // 2]:.2f} s, max {s[-1]:.2f} s")
    console.print(f"{escape(outcome.verdict)} ({outcome.elapsed_s:.0f} s)")
    if csv_path:
        with open(csv_path, "w", newline="") as fh:
            results_mod.write_csv(outcome.run.trials, fh)
    if plot_path:
        results_mod.plot(outcome.goal, outcome.run.trials, outcome.run.winner, Path(plot_path), f"tune {model}")
    for path in (json_path, csv_path, plot_path):
        if path:
            click.echo(f"wrote {path}", err=True)
    if outcome.winner is not None and outcome.better:
        text = tune_mod.apply_winner(options, outcome)
        click.echo(text)
    sys.exit(outcome.exit_code)
