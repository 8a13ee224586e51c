"""The build pipeline for one spec: export, verify, infer the signature, render, prove, write."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tsrepo import adapters, compare, config, custom_ops, export, export_aoti, meta, repository, signature, verify
from tsrepo.errors import ExportError, SpecError
from tsrepo.export import ExportedAs
from tsrepo.spec import ExportMode, Kind, ModelSpec, RepoSpec

Progress = Callable[[str], None]

KIND_NAMES = {Kind.GPU: "KIND_GPU", Kind.CPU: "KIND_CPU"}


@dataclass
class PreparedModel:
    spec: ModelSpec
    module: torch.jit.ScriptModule
    signature: signature.Signature
    config: config.ModelConfig
    config_text: str
    model_bytes: bytes
    export_mode: ExportedAs
    version: int | None  # None until the repository lock resolves the next free version
    warnings: list[str] = field(default_factory=list)
    checks: dict = field(default_factory=dict)  # what was verified, with errors measured
    package: export_aoti.Package | None = None  # export = "aoti": the compiled package and how it was made
    notes: list[str] = field(default_factory=list)  # how it was exported: adapters, custom ops (not problems)
    findings: list = field(default_factory=list)  # scripting's findings when it fell back to tracing (all of them)
    tracer_notes: list = field(default_factory=list)  # every TracerWarning, library code included
    op_libraries: tuple[meta.OpLibraryMeta, ...] = ()

    @property
    def model_file(self) -> str:
        return export_aoti.PACKAGE_FILE if self.package is not None else repository.MODEL_FILE

    def files(self) -> repository.ModelFiles:
        if self.package is not None:
            entry = meta.VersionMeta(
                sha256=hashlib.sha256(self.model_bytes).hexdigest(),
                torch=torch.__version__,
                export=self.export_mode.value,
                file_format_version=None,
                format=export_aoti.FORMAT,
                file=export_aoti.PACKAGE_FILE,
                device=self.package.device,
                compile_options=self.package.options,
            )
        else:
            entry = meta.VersionMeta(
                sha256=hashlib.sha256(self.model_bytes).hexdigest(),
                torch=torch.__version__,
                export=self.export_mode.value,
                file_format_version=_file_format_version(self.model_bytes),
            )
        return repository.ModelFiles(
            name=self.spec.name,
            version=self.version,
            config_text=self.config_text,
            model_bytes=self.model_bytes,
            record=record(self),
            version_entry=entry,
            model_file=self.model_file,
        )


@dataclass
class BuildResult:
    plan: repository.Plan
    models: list[PreparedModel]
    written: bool


def _file_format_version(data: bytes) -> int | None:
    """The TorchScript archive's file-format version (archive/version): what a loader must read."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in z.namelist():
            if name.endswith("/version") and name.count("/") == 1:
                return int(z.read(name).decode().strip())
    return None


def record(p: PreparedModel) -> meta.ModelMeta:
    """tsrepo.json (without its versions): what validate and bench need and Triton's config cannot hold."""
    return meta.ModelMeta(
        model=p.spec.name,
        max_batch_size=p.spec.max_batch_size,
        inputs=tuple(
            meta.InputMeta(
                s.name,
                s.arg_index,
                s.dtype.name,
                tuple((d.min, d.max) if d.dynamic else d.min for d in s.spec.shape),
                s.spec.range,
            )
            for s in p.signature.inputs
        ),
        outputs=tuple(meta.OutputMeta(o.name, o.dtype.name, tuple(o.dims)) for o in p.signature.outputs),
        rtol=p.spec.rtol,
        atol=p.spec.atol,
        op_libraries=p.op_libraries,
    )


def _export(spec: ModelSpec, example: tuple, eager_model) -> tuple[export.Exported, list]:
    """Export; when scripting fails, the doctor explains it (export itself does not know the doctor). Returns the
    export and, when auto mode fell back to tracing, scripting's findings."""
    from tsrepo.doctor import explain_failure, explain_fallback, failure_findings

    try:
        exported = export.export(spec, example, eager_model)
    except export.ScriptFailure as failure:
        tracing = f"\nTracing failed as well: {failure.tracing_failed}" if failure.tracing_failed else ""
        raise ExportError(
            f"{spec.where('export')}: torch.jit.script failed (`tsrepo doctor` explains each finding with a"
            f" before/after):\n{explain_failure(failure.model, failure.cause)}{tracing}"
        ) from failure.cause
    findings: list = []
    if exported.script_failure is not None:
        findings = failure_findings(exported.script_failure.model, exported.script_failure.cause)
        exported.warnings.insert(
            0,
            f"{spec.where('export')}: scripting failed, so the model was traced; control flow that depends on the"
            " data is frozen at the example inputs. Scripting said:\n" + explain_fallback(findings),
        )
    return exported, findings


def _tracer_warnings(spec: ModelSpec, notes: list) -> list[str]:
    """TracerWarnings in the user's code one by one; those in library code counted in one line."""
    from tsrepo.doctor import _library_file

    def library(n) -> bool:
        return any(part in n.file for part in ("/site-packages/", "/dist-packages/")) or _library_file(n.file)

    out = [export.tracer_warning(n) for n in notes if not library(n)]
    theirs = [n for n in notes if library(n)]
    if theirs:
        out.append(
            f"{spec.where('export')}: tracing froze {len(theirs)} thing(s) in library code you did not write"
            " (checked against eager below; `tsrepo build --show-findings` lists them)"
        )
    return out


def _adapt_inputs(spec: ModelSpec, eager_model, inputs: list) -> tuple[object, list[str]]:
    """Wrap the eager model in an input adapter when forward takes more, or other, than the served tensors."""
    if isinstance(eager_model, torch.jit.ScriptModule):
        if spec.arguments or spec.list_inputs:
            key = "arguments" if spec.arguments else "list_inputs"
            raise SpecError(
                f"{spec.where(key)}: applies to a Python model; a TorchScript model's forward is served as it is"
            )
        return eager_model, []
    plan = adapters.plan_inputs(spec, eager_model, [s.arg_index for s in inputs])
    if not plan.needed:
        return eager_model, []
    note = f"{spec.where()}: forward is fed by an input adapter ({plan.describe()})"
    return adapters.adapt_inputs(eager_model, plan), [note]


def prepare(spec: ModelSpec, templates: Path | None, progress: Progress) -> PreparedModel:
    if spec.export is ExportMode.AOTI:
        from tsrepo.build_aoti import prepare_aoti

        return prepare_aoti(spec, templates, progress)
    rng = np.random.default_rng(spec.seed)
    warnings: list[str] = []

    # 1. Import (or load) the model and bind the spec's inputs to forward's arguments.
    if spec.is_torchscript_file:
        eager_model = export.load_torchscript(spec)
    else:
        progress(f"{spec.name}: importing {spec.source}")
        eager_model = export.import_factory(spec)
    inputs = list(signature.bind_inputs(spec, export.forward_argument_names(eager_model)))
    notes: list[str] = []
    findings: list = []
    # Arguments forward takes but Triton cannot pass: an input adapter feeds them, proven with the model.
    eager_model, notes = _adapt_inputs(spec, eager_model, inputs)
    if notes:
        inputs = list(signature.bind_inputs(spec, export.forward_argument_names(eager_model)))
    fwd_inputs = sorted(inputs, key=lambda s: s.arg_index)

    # 2. Export.
    if spec.is_torchscript_file:
        exported = export.Exported(eager_model, None, ExportedAs.FILE)
    else:
        progress(f"{spec.name}: exporting ({spec.export.value})")
        exported, findings = _export(spec, verify.example_args(spec, fwd_inputs, rng), eager_model)
    warnings += exported.warnings
    warnings += _tracer_warnings(spec, exported.tracer_notes)
    module = exported.module
    forward_args = adapters.check_arguments(spec, module)
    inputs = list(signature.bind_inputs(spec, forward_args))
    fwd_inputs = sorted(inputs, key=lambda s: s.arg_index)

    # 3. Outputs the backend can serve: wrap dicts and lists of tensors into a tuple.
    kind = adapters.classify_return(spec, module)
    readable = None
    if kind is not adapters.ReturnKind.DIRECT:
        if not spec.wrap_outputs:
            raise adapters.ServingError(
                f"{spec.where('wrap_outputs')}: forward returns {adapters.return_type(module)},"
                " which the libtorch backend cannot serve; allow wrap_outputs or return a tuple"
            )
        example = verify.example_args(spec, fwd_inputs, rng)
        probe = verify.run_checked(spec, module, example, f"the {exported.mode.past} model")
        keys = list(probe.keys()) if kind is adapters.ReturnKind.DICT else len(probe)
        module = adapters.wrap(module, kind, keys)
        readable = adapters.readable_output_names(keys) if kind is adapters.ReturnKind.DICT else None
        warnings.append(
            f"{spec.where()}: forward returns {adapters.return_type(exported.module)}; wrapped in an"
            " adapter that returns a tuple" + (f" ({', '.join(readable)})" if readable else "")
        )

    # 4. Verify against eager at every size, collect outputs for the signature.
    progress(f"{spec.name}: verifying")
    runs: list[tuple[int, list]] = []
    checks: dict = {"runs": 0, "max_abs_error": 0.0, "max_rel_error": 0.0}
    names: list[str] | None = None
    nonfinite: dict[str, compare.OutputDiff] = {}
    grid = list(verify.size_grid(spec, fwd_inputs, rng))
    reload_args = grid[-1][1]  # the largest sizes at the largest checked batch
    # The size grid, then more random inputs at one size: an output whose size changes between them follows the
    # data (detections), and its dim becomes -1 rather than what one run happened to give.
    checks["data_runs"] = 0
    for point, (batch, args) in enumerate(itertools.chain(grid, verify.data_grid(spec, fwd_inputs, rng))):
        scripted_out = verify.leaves(verify.run_checked(spec, module, args, f"the {exported.mode.past} model"))
        if names is None:
            names = signature.output_names(spec, len(scripted_out), readable)
        if exported.eager is not None:
            eager_out = verify.leaves(verify.run_checked(spec, exported.eager, args, "the eager model"))
            c = verify.check_equal(
                spec,
                f"the {exported.mode.past} and eager models",
                eager_out,
                scripted_out,
                names,
                f"input shapes {[list(a.shape) for a in args]}",
            )
            checks["max_abs_error"] = max(checks["max_abs_error"], c.max_abs)
            checks["max_rel_error"] = max(checks["max_rel_error"], c.max_rel)
        else:
            c = compare.compare(scripted_out, scripted_out, names, spec.rtol, spec.atol)
        nonfinite.update({d.name: d for d in c.nonfinite()})
        checks["runs" if point < len(grid) else "data_runs"] += 1
        runs.append((batch, scripted_out))
    assert names is not None
    if nonfinite:
        warnings.append(compare.nonfinite_warning(spec.where(), list(nonfinite.values())))
    checks["nonfinite_outputs"] = sorted(nonfinite)
    if exported.mode is ExportedAs.TRACE and len(grid) < 2:
        warnings.append(
            f"{spec.where()}: traced, and checked at one input size only (no dynamic dims and"
            " max_batch_size < 2): control flow frozen by tracing could not be tested"
        )
    outputs = signature.infer_outputs(spec, runs, names)

    # 5. Operators outside libtorch: recorded with their library, or refused when none can be found.
    op_libraries = custom_ops.libraries(spec.where(), module)
    notes += custom_ops.describe(spec.where(), op_libraries)

    # 6. Save, reload, compare.
    model_bytes = export.save_bytes(module)
    reloaded = export.load_bytes(model_bytes)
    verify.check_equal(
        spec,
        "the saved-and-reloaded and in-memory models",
        verify.leaves(verify.run_checked(spec, module, reload_args, "the exported model")),
        verify.leaves(verify.run_checked(spec, reloaded, reload_args, "the reloaded model")),
        names,
        "reload",
    )

    # 7. Batch safety before dynamic batching.
    batching = spec.dynamic_batching
    if batching is not None and not spec.batch_safe:
        warnings.append(f"{spec.where('dynamic_batching')}: batch_safe = false, so dynamic batching is left out")
        batching = None
    if batching is not None and spec.max_batch_size >= 2:
        shapes = signature.variants(tuple(s.spec for s in fwd_inputs))[0]
        checks["batch_safe_max_abs_diff"] = verify.check_batch_safe(spec, module, fwd_inputs, shapes, names, rng)

    sig = signature.Signature(tuple(inputs), outputs, spec.max_batch_size)
    cfg = model_config(spec, sig, batching)
    # Named after the spec: the file is not written yet, and a failure here is the spec's or the template's.
    origin = f"{spec.where()}: the rendered config.pbtxt"
    text = config.render(cfg, templates)
    parsed = config.prove(text, cfg, origin)
    config.check_libtorch_rules(parsed, forward_args, origin)
    return PreparedModel(
        spec=spec,
        module=module,
        signature=sig,
        config=cfg,
        config_text=text,
        model_bytes=model_bytes,
        export_mode=exported.mode,
        version=spec.version,
        warnings=warnings,
        checks=checks,
        notes=notes,
        findings=findings,
        tracer_notes=list(exported.tracer_notes),
        op_libraries=op_libraries,
    )


def model_config(spec: ModelSpec, sig: signature.Signature, batching, **extra) -> config.ModelConfig:
    inputs = tuple(config.TensorConfig(s.name, s.dtype.triton, s.dims, s.reshape) for s in sig.inputs)
    outputs = tuple(config.TensorConfig(o.name, o.dtype.triton, o.dims, o.reshape) for o in sig.outputs)
    groups = tuple(config.InstanceGroupConfig(KIND_NAMES[g.kind], g.count, g.gpus) for g in spec.instance_groups)
    warmup: tuple[config.WarmupConfig, ...] = ()
    if spec.warmup is not None:
        warm_inputs = tuple(
            config.TensorConfig(s.name, s.dtype.triton, tuple(d.min for d in s.spec.shape) or (1,)) for s in sig.inputs
        )
        bs = spec.warmup.batch_size if spec.max_batch_size else 0
        warmup = (config.WarmupConfig(f"warmup_batch_{bs or 1}", bs, spec.warmup.count, warm_inputs),)
    return config.ModelConfig(
        name=spec.name,
        max_batch_size=spec.max_batch_size,
        inputs=inputs,
        outputs=outputs,
        instance_groups=groups,
        dynamic_batching=batching,
        parameters=spec.parameters,
        warmup=warmup,
        version_policy=spec.version_policy,
        **extra,
    )


def check_output(out: Path, templates: Path | None = None, writable: bool = True) -> None:
    """What can be checked before any model is imported: the repository can be written, the templates load."""
    if writable:
        repository.check_writable(Path(out))
    elif Path(out).exists() and not Path(out).is_dir():
        raise repository.RepositoryError(f"{out}: exists and is not a folder; choose another --out")
    if templates is not None:
        config.load_template(templates)


def build(
    repo_spec: RepoSpec,
    out: Path,
    *,
    force: bool = False,
    dry_run: bool = False,
    templates: Path | None = None,
    progress: Progress = lambda _msg: None,
) -> BuildResult:
    """Prepare every model first; write only when all of them passed, all of them or none."""
    out = Path(out)
    check_output(out, templates, writable=not dry_run)
    prepared = [prepare(m, templates, progress) for m in repo_spec.models]
    if dry_run:
        p = repository.plan(out, [pm.files() for pm in prepared], force)
        _resolve_versions(prepared, p)
        return BuildResult(p, prepared, written=False)
    with repository.locked(out, on_wait=progress):
        # Planned under the lock: a build that raced this one has either written its versions
        # (and they are seen here) or has not started writing.
        p = repository.plan(out, [pm.files() for pm in prepared], force)
        _resolve_versions(prepared, p)
        progress(f"writing {out}")
        repository.write(p, on_model=lambda name: progress(f"{name}: staged"))
    return BuildResult(p, prepared, written=True)


def _resolve_versions(prepared: list[PreparedModel], p: repository.Plan) -> None:
    for pm, planned in zip(prepared, p.models, strict=True):
        pm.version = planned.version
