"""`tsrepo migrate`: is each TorchScript model ready for torch.export + AOTInductor?

For every model: build it both ways (the same proof build gives each: eager == exported == reloaded, batch
safety), compare the three answers (eager, TorchScript, AOTI package) on the same size grid, and measure
compile time, file sizes, and served throughput and p50 at batch 1 and at max batch on the local engine.
Served figures degrade to "n/a" with the reason where a format cannot be served locally (the local engine
serves torch_aoti only once its shadow repository and runner know `.pt2`). `write_spec` switches the passing
models' `export` in the spec file, comments preserved (tomlkit), re-validated before an atomic replace.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsrepo import build, export_aoti, signature, verify
from tsrepo.errors import SpecError, TsrepoError
from tsrepo.spec import ExportMode, InstanceGroup, Kind, ModelSpec, RepoSpec, TensorNames

BENCH_SECONDS = 2.0


@dataclass
class Served:
    throughput: float | None = None  # inferences/s
    p50_ms: float | None = None
    reason: str | None = None  # why there is no figure

    def text(self) -> str:
        if self.throughput is None:
            return "n/a"
        return f"{self.throughput:.0f}/s p50 {self.p50_ms:.2f} ms"


@dataclass
class Row:
    model: str
    ready: bool = False
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    max_abs_ts: float | None = None  # TorchScript vs eager
    max_abs_aoti: float | None = None  # AOTI package vs eager
    max_abs_ts_aoti: float | None = None  # AOTI package vs TorchScript
    compile_seconds: float | None = None
    cache_hit: bool = False
    ts_bytes: int | None = None
    pt2_bytes: int | None = None
    served: dict[str, dict[int, Served]] = field(default_factory=dict)  # format -> batch -> figures

    def to_json(self) -> dict:
        doc = dataclasses.asdict(self)
        doc["served"] = {f: {str(b): dataclasses.asdict(s) for b, s in d.items()} for f, d in self.served.items()}
        return doc


def aoti_variant(spec: ModelSpec, gpu: bool) -> tuple[ModelSpec, list[str]]:
    """The spec as `export = "aoti"` would need it, and what changes for clients and config."""
    notes = []
    changes: dict = {"export": ExportMode.AOTI}
    if spec.output_names or spec.tensor_names is not TensorNames.INDEX:
        notes.append("tensor names become INPUT__i / OUTPUT__i (the torch_aoti backend binds by position)")
        changes.update(output_names=(), tensor_names=TensorNames.INDEX)
    if spec.parameters:
        notes.append("libtorch parameters are dropped (they do not apply to torch_aoti)")
        changes["parameters"] = ()
    if any(g.kind is Kind.GPU for g in spec.instance_groups) and not gpu:
        notes.append("compiled for CPU here: KIND_GPU needs the build on the GPU machine")
        changes["instance_groups"] = tuple(InstanceGroup(Kind.CPU, g.count) for g in spec.instance_groups)
    return dataclasses.replace(spec, **changes), notes


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def compare_three(ts: build.PreparedModel, ao: build.PreparedModel, spec: ModelSpec) -> tuple[float, float, float]:
    """Max abs differences on the size grid: TorchScript vs eager, AOTI vs eager, AOTI vs TorchScript."""
    from tsrepo import export

    eager = export.import_factory(spec)
    inputs = sorted(signature.bind_inputs(spec, export.forward_argument_names(eager)), key=lambda s: s.arg_index)
    rng = np.random.default_rng(spec.seed)
    worst = [0.0, 0.0, 0.0]
    for _batch, args in verify.size_grid(spec, inputs, rng):
        e = verify.leaves(verify.run_checked(spec, eager, args, "the eager model"))
        t = verify.leaves(verify.run_checked(spec, ts.module, args, "the TorchScript model"))
        a = verify.leaves(verify.run_checked(spec, ao.module, args, "the AOTInductor package"))
        for i, (x, y) in enumerate(((t, e), (a, e), (a, t))):
            worst[i] = max(
                [worst[i]] + [float((p - q).abs().max()) if p.numel() else 0.0 for p, q in zip(x, y, strict=True)]
            )
    return worst[0], worst[1], worst[2]


def serve_and_bench(pm: build.PreparedModel, fmt: str, batches: list[int], progress) -> dict[int, Served]:
    """Write the one model to a temp repository, serve it on the local engine, bench each batch size."""
    from tsrepo import repository

    work = Path(tempfile.mkdtemp(prefix="tsrepo-migrate-"))
    try:
        repo = work / "repo"
        files = dataclasses.replace(pm.files(), version=1)
        with repository.locked(repo):
            repository.write(repository.plan(repo, [files], force=True))
        try:
            from tsrepo.client import bench
            from tsrepo.serve import local
            from tsrepo.serve.ports import free_ports

            progress(f"{pm.spec.name}: serving the {fmt} model on the local engine")
            server = local.start(repo, free_ports(), timeout=120)
        except (TsrepoError, OSError, ImportError, RuntimeError) as e:
            return {b: Served(reason=f"not served locally: {_first_line(e)}") for b in batches}
        out = {}
        with server:
            for b in batches:
                progress(f"{pm.spec.name}: bench {fmt} at batch {b}")
                s = bench.Settings(url=server.http_url, model=pm.spec.name, batch_size=b, duration=BENCH_SECONDS,
                                   warmup=0.5)  # fmt: skip
                try:
                    level = bench.run(s, "concurrency", [1], repo)[0]
                    out[b] = Served(level.throughput, level.latency_ms.get("p50"))
                except TsrepoError as e:
                    out[b] = Served(reason=_first_line(e))
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def migrate(
    repo_spec: RepoSpec, names: tuple[str, ...] = (), serve: bool = True, progress=lambda _m: None
) -> list[Row]:
    import torch

    known = {m.name for m in repo_spec.models}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SpecError(f"{repo_spec.origin}: no model named {unknown[0]!r}; models: {', '.join(sorted(known))}")
    rows = []
    for spec in repo_spec.models:
        if names and spec.name not in names:
            continue
        row = Row(spec.name)
        rows.append(row)
        if spec.is_torchscript_file:
            row.reason = "the source is a TorchScript file; torch.export needs the Python model (module:factory)"
            continue
        ts_spec = spec if spec.export.is_torchscript else dataclasses.replace(spec, export=ExportMode.AUTO)
        try:
            ts = build.prepare(ts_spec, None, progress)
        except TsrepoError as e:
            ts = None
            row.notes.append(f"TorchScript build failed: {_first_line(e)}")
        ao_spec, variant_notes = aoti_variant(spec, torch.cuda.is_available())
        row.notes += variant_notes
        try:
            ao = build.prepare(ao_spec, None, progress)
        except TsrepoError as e:
            row.reason = str(e).strip()
            continue
        row.ready = True
        row.compile_seconds = ao.package.compile_seconds
        row.cache_hit = ao.package.cache_hit
        row.pt2_bytes = len(ao.model_bytes)
        row.max_abs_aoti = ao.checks["max_abs_error"]
        if ts is not None:
            row.ts_bytes = len(ts.model_bytes)
            row.max_abs_ts, row.max_abs_aoti, row.max_abs_ts_aoti = compare_three(ts, ao, spec)
        batches = sorted({1, max(spec.max_batch_size, 1)})
        if serve:
            if ts is not None:
                row.served["torchscript"] = serve_and_bench(ts, "torchscript", batches, progress)
            row.served["aoti"] = serve_and_bench(ao, "aoti", batches, progress)
    return rows


def write_spec(path: Path, rows: list[Row]) -> list[str]:
    """Switch `export` to "aoti" for the ready models, keeping comments; returns the models switched."""
    import tomlkit

    from tsrepo.spec import parse_spec

    path = Path(path)
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    defaults = doc.get("defaults", {})
    ready = {r.model for r in rows if r.ready}
    switched = []
    for table in doc.get("model", []):
        if table.get("name") not in ready:
            continue
        table["export"] = "aoti"
        # What torch_aoti refuses: set on the model, remove it; inherited from [defaults], override it.
        for key, empty in (("output_names", []), ("parameters", {}), ("tensor_names", "index")):
            if key in table:
                del table[key]
            if key in defaults and key != "tensor_names":
                table[key] = empty
            elif key in defaults:
                table[key] = "index"
        switched.append(str(table["name"]))
    text = tomlkit.dumps(doc)
    import tomllib

    # The new spec must load exactly as build will read it before it replaces the old one.
    parse_spec(tomllib.loads(text), str(path), path.resolve().parent)
    tmp = path.with_name(f".{path.name}.tsrepo-migrate-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return switched


__all__ = ["Row", "Served", "aoti_variant", "export_aoti", "migrate", "write_spec"]
