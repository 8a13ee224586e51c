"""`tsrepo build`: a spec (or flags) to a verified Triton model repository."""

from __future__ import annotations

from pathlib import Path

import click

from tsrepo.cli import PathParam, _console, main
from tsrepo.errors import UsageError


@main.command()
@click.argument("spec", required=False, type=PathParam(dir_okay=False))
@click.option(
    "--out",
    "out",
    default="model_repository",
    show_default=True,
    type=PathParam(),
    help="The model repository to write into.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing version of a model.")
@click.option(
    "--dry-run", is_flag=True, help="Export and verify, print the files that would be written, write nothing."
)
@click.option(
    "--templates",
    type=PathParam(file_okay=False, exists=True),
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
    "--export",
    "export_mode",
    type=click.Choice(["script", "trace", "auto", "aoti"]),
    help="With --source (default auto); aoti: torch.export + AOTInductor, a model.pt2 package.",
)
@click.option("--max-batch-size", type=int, help="With --source: 0 = no batch dimension.")
@click.option("--instance-group", metavar="KIND:COUNT", help="With --source: e.g. gpu:1 or cpu:2.")
@click.option("--dynamic-batching/--no-dynamic-batching", default=None, help="With --source.")
@click.option("--max-queue-delay", type=int, metavar="MICROSECONDS", help="With --source and dynamic batching.")
@click.option("--version", "model_version", type=int, help="With --source: the version folder (default: next free).")
@click.option(
    "--show-findings",
    is_flag=True,
    help="When a model built by tracing after scripting failed: list every finding and TracerWarning, library"
    " code included (by default those in installed libraries are counted).",
)
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
    show_findings,
):
    """Build a Triton model repository from SPEC (default ./tsrepo.toml) or from flags.

    Every model is imported, scripted (or traced, or with export = "aoti" exported with torch.export and
    compiled by AOTInductor into model.pt2, compile cache in $TSREPO_CACHE_DIR or ~/.cache/tsrepo/aoti),
    checked against the eager model at several
    input sizes, checked for batch safety before dynamic batching, and its config.pbtxt rendered
    and proven against Triton's schema. Nothing is written unless every model passes; each model
    folder is then replaced atomically.
    """
    from tsrepo import build as build_mod
    from tsrepo import spec as spec_mod

    flags = spec_mod.ModelFlags(
        source=source,
        name=name,
        inputs=tuple(inputs),
        export=export_mode,
        max_batch_size=max_batch_size,
        instance_group=instance_group,
        dynamic_batching=dynamic_batching,
        max_queue_delay=max_queue_delay,
        version=model_version,
    )
    if source:
        if spec is not None:
            raise UsageError("command line: give either SPEC or --source, not both")
        repo_spec = spec_mod.spec_from_model_flags(flags)
    else:
        used = [f"--{k.replace('_', '-').removesuffix('s')}" for k, v in vars(flags).items() if v not in (None, ())]
        if used:
            raise UsageError(
                f"command line: {', '.join(used)} only apply with --source (one model from flags); without"
                f" --source the models come from {spec or 'tsrepo.toml'}"
            )
        repo_spec = spec_mod.load_spec(spec or Path("tsrepo.toml"))
    build_mod.check_output(out, templates, writable=not dry_run)

    console = _console()
    with console.status("building") as status:
        result = build_mod.build(
            repo_spec, out, force=force, dry_run=dry_run, templates=templates, progress=lambda msg: status.update(msg)
        )
    from rich.markup import escape

    from tsrepo.doctor import format_finding

    for pm in result.models:
        for w in pm.warnings:
            console.print(f"[yellow]warning:[/] {escape(w)}")
        for n in pm.notes:
            console.print(f"note: {escape(n)}", highlight=False)
        if show_findings:
            for f in pm.findings:
                console.print(escape(format_finding(f)), highlight=False)
            for t in pm.tracer_notes:
                console.print(escape(f"{t.file}:{t.line}: {t.message}"), highlight=False)
        c = pm.checks
        outputs = ", ".join(f"{o.name} {o.dtype.triton} {list(o.dims)}" for o in pm.signature.outputs)
        how = pm.export_mode.value
        if pm.package is not None:
            how += (
                " (compile cache hit)" if pm.package.cache_hit else f" (compiled in {pm.package.compile_seconds:.1f} s)"
            )
        console.print(
            f"[green]ok[/] {escape(pm.spec.name)} v{pm.version}: {how}, {c['runs']} runs checked"
            f" against eager (max abs error {c['max_abs_error']:.2g}), outputs {escape(outputs)}"
        )
    click.echo(result.plan.tree())
    if dry_run:
        click.echo("dry run: nothing written")
