"""`tsrepo doctor`: why a model does not script, finding by finding."""

from __future__ import annotations

import sys

import click

from tsrepo.cli import _console, main


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

    repo_spec = spec_mod.doctor_spec(source, inputs, max_batch_size, allow_trace)
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
