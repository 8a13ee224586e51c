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
@click.option(
    "--export",
    "export_mode",
    type=click.Choice(["script", "aoti"]),
    default="script",
    show_default=True,
    help="script: diagnose TorchScript; aoti: diagnose torch.export for an AOTInductor package (needs inputs).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(source, inputs, max_batch_size, allow_trace, export_mode, as_json):
    """Explain why a model does not script (or, with --export aoti, does not export), finding by finding.

    SOURCE is `module:callable` (as in a spec) or a spec file (then every model in it). A static
    pass reads every method TorchScript would compile and reports all known unscriptable constructs
    at once, each with its file:line, the code, why TorchScript refuses it and the rewrite that fixes
    it; TorchScript's own error is translated onto the same classes. With --export aoti, torch.export runs
    with the spec's Dims (non-strict, as build does, then strict) and its failure is reported as one of the
    EX classes with the fix; the exported program is compared with eager. Exit 0 when the model scripts
    (exports) and, given inputs, matches eager, 1 when there are findings, 2 for usage errors.
    """
    import json as json_mod

    from rich.markup import escape

    from tsrepo import doctor as doctor_mod
    from tsrepo import spec as spec_mod
    from tsrepo.errors import UsageError

    if export_mode == "aoti" and allow_trace:
        raise UsageError("command line: --allow-trace is for TorchScript; drop it with --export aoti")
    aoti = export_mode == "aoti"
    repo_spec = spec_mod.doctor_spec(source, inputs, max_batch_size, allow_trace, export="aoti" if aoti else None)
    if aoti:
        reports = [doctor_mod.check_aoti(m) for m in repo_spec.models]
    else:
        reports = [doctor_mod.check(m, allow_trace=allow_trace) for m in repo_spec.models]
    if as_json:
        click.echo(json_mod.dumps([r.to_json() for r in reports], indent=2))
    else:
        console = _console()
        for r in reports:
            if r.export == "aoti":
                state = "exports" if r.ok else "does not export"
            else:
                state = "scripts" if r.scripted else ("traced" if r.traced else "does not script")
            colour = "green" if r.ok else "red"
            console.print(f"[bold]{escape(r.model)}[/]: [{colour}]{state}[/], {len(r.findings)} finding(s)")
            for f in r.findings:
                console.print(escape(doctor_mod.format_finding(f, verbose=True)), highlight=False)
            if r.compared:
                what = "exported program" if r.export == "aoti" else ("traced" if r.traced else "scripted") + " model"
                console.print(f"  {what} matches eager (max abs error {r.max_abs_error:.2g})")
            for n in r.notes:
                console.print(f"  note: {escape(n)}")
    sys.exit(0 if all(r.ok for r in reports) else 1)
