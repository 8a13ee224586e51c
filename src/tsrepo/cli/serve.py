"""`tsrepo serve` and `tsrepo compose`: start Triton on a repository."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tsrepo.cli import _console, local_repo, main, repo_option

PORT = click.IntRange(1, 65535)


@main.command()
@repo_option("The model repository to serve (never written to).")
@click.option(
    "--engine",
    type=click.Choice(["local", "docker"]),
    default="local",
    show_default=True,
    help="local: the tritonserver from the nvidia-pytriton wheel (no Docker, no GPU needed); "
    "docker: the official container through docker compose.",
)
@click.option("--http-port", default=8000, show_default=True, type=PORT)
@click.option("--grpc-port", default=8001, show_default=True, type=PORT)
@click.option("--metrics-port", default=8002, show_default=True, type=PORT)
@click.option(
    "--exit-on-error/--no-exit-on-error",
    default=True,
    show_default=True,
    help="Stop when any model fails to load, or serve the others.",
)
@click.option(
    "--timeout",
    default=180.0,
    show_default=True,
    type=float,
    help="Seconds to wait for readiness (finite, > 0, up to a day).",
)
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
    repo = local_repo(repo, console)
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
@repo_option("The built repository whose torch version picks the container.")
@click.option(
    "--compose", "compose_file", default="docker/docker-compose.yml", show_default=True, type=click.Path(path_type=Path)
)
def compose_cmd(repo, compose_file):
    """Prepare docker compose for a built repository.

    Picks the Triton container whose PyTorch can load the exported models (from the torch version
    and file format recorded in tsrepo.json), writes it as the compose file's default image, and
    writes REPO.cpu, a KIND_CPU copy (hard links) for the `triton-cpu` service.
    """
    from rich.markup import escape

    from tsrepo.serve import compose

    prepared = compose.prepare(repo, compose_file)
    console = _console()
    for w in prepared.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    click.echo(f"image   {prepared.choice.image} (PyTorch {prepared.choice.container_torch})")
    click.echo(f"compose {prepared.compose_file}")
    click.echo(f"cpu     {prepared.cpu_repo}")
    ops = f" -f {prepared.ops_file}" if prepared.ops_file else ""
    if prepared.ops_file:
        click.echo(f"ops     {prepared.ops_file} (custom-op libraries, mounted and preloaded)")
    # The compose file mounts ${MODEL_REPOSITORY:-../model_repository}: say how to point it at this one.
    click.echo(
        f"run     MODEL_REPOSITORY={Path(repo).resolve()} CPU_MODEL_REPOSITORY={prepared.cpu_repo}"
        f" docker compose -f {prepared.compose_file}{ops} up"
    )
