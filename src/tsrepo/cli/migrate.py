"""`tsrepo migrate`: is each TorchScript model ready for torch.export + AOTInductor?"""

from __future__ import annotations

from pathlib import Path

import click

from tsrepo.cli import PathParam, _console, main


def _size(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1024:.0f} KiB" if n < 1 << 20 else f"{n / 2**20:.1f} MiB"


def _err(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1e}"


@main.command()
@click.argument("spec", required=False, type=PathParam(dir_okay=False))
@click.option("--model", "models", multiple=True, help="Only this model (repeatable); default every model.")
@click.option("--write", is_flag=True, help='Switch the ready models to export = "aoti" in SPEC (comments kept).')
@click.option("--no-serve", is_flag=True, help="Skip the served throughput / p50 measurements.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def migrate(spec, models, write, no_serve, as_json):
    """Answer "is my TorchScript model ready for torch.export?" for every model of SPEC (default ./tsrepo.toml).

    Each model is built both ways with the full proof, the three answers (eager, TorchScript, AOTI package)
    are compared on the same input sizes, and a table shows parity, AOTInductor compile time, file sizes,
    and served throughput and p50 on the local engine at batch 1 and at max batch ("n/a" with the reason
    where a format cannot be served locally). Exit 0 when every model is ready, 1 when some are not.
    """
    import json
    import sys

    from rich.markup import escape
    from rich.table import Table

    from tsrepo import migrate as migrate_mod
    from tsrepo import spec as spec_mod

    path = Path(spec or "tsrepo.toml")
    repo_spec = spec_mod.load_spec(path)
    console = _console()
    with console.status("migrating") as status:
        rows = migrate_mod.migrate(repo_spec, tuple(models), serve=not no_serve, progress=status.update)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
    else:
        table = Table("model", "ready", "TS vs eager", "AOTI vs eager", "AOTI vs TS", "compile", "model.pt",
                      "model.pt2", "served TS b1 / bmax", "served AOTI b1 / bmax")  # fmt: skip
        for r in rows:
            compile_text = "n/a" if r.compile_seconds is None else (
                "cached" if r.cache_hit else f"{r.compile_seconds:.1f} s")  # fmt: skip
            served = []
            for fmt in ("torchscript", "aoti"):
                figures = r.served.get(fmt)
                served.append(" / ".join(s.text() for s in figures.values()) if figures else "n/a")
            table.add_row(escape(r.model), "yes" if r.ready else "[red]no[/]", _err(r.max_abs_ts),
                          _err(r.max_abs_aoti), _err(r.max_abs_ts_aoti), compile_text, _size(r.ts_bytes),
                          _size(r.pt2_bytes), *served)  # fmt: skip
        console.print(table)
        for r in rows:
            for n in r.notes:
                console.print(f"  {escape(r.model)}: note: {escape(n)}")
            if r.reason:
                console.print(f"  {escape(r.model)}: [red]not ready:[/] {escape(r.reason)}")
            reasons = {s.reason for d in r.served.values() for s in d.values() if s.reason}
            for reason in sorted(reasons):
                console.print(f"  {escape(r.model)}: served n/a: {escape(reason)}")
    if write:
        switched = migrate_mod.write_spec(path, rows)
        console.print(f'{path}: export = "aoti" for {", ".join(switched) or "no model"}')
    sys.exit(0 if all(r.ready for r in rows) else 1)
