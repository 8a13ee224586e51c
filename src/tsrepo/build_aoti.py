"""`export = "aoti"`: the same proof as for TorchScript, for a torch.export + AOTInductor package.

eager == exported program == the reloaded package, at the min, middle and max of every dynamic dim and at
two batch sizes; batch safety (on the package, the thing served) before dynamic batching; output dtypes and
batch-first dims; the config proven against Triton's schema and the torch_aoti rules. Naming and release
rules are in export_aoti.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from tsrepo import compare, config, export, export_aoti, signature, verify
from tsrepo.build import PreparedModel, Progress, model_config
from tsrepo.errors import ExportError, ServingError
from tsrepo.export import ExportedAs
from tsrepo.spec import ModelSpec


def explain_export_failure(failure: export_aoti.AotiExportFailure) -> ExportError:
    """torch.export's failure as the doctor's findings (file:line, reason, fix)."""
    from tsrepo.doctor.export_classes import explain

    return ExportError(
        f"{failure.spec.where('export')}: torch.export failed (`tsrepo doctor --export aoti` explains it):\n"
        f"{explain(failure.model, failure.cause, failure.spec)}"
    )


def export_and_compile(spec: ModelSpec, progress: Progress, eager=None):
    """Import, bind, export, compile (or take the cached package). Shared by build and migrate."""
    device = export_aoti.target_device(spec)  # before the import: a refused device costs nothing
    if eager is None:
        progress(f"{spec.name}: importing {spec.source}")
        eager = export.import_factory(spec)
    arg_names = export_aoti.check_forward(spec, eager)
    inputs = list(signature.bind_inputs(spec, arg_names))
    fwd_inputs = sorted(inputs, key=lambda s: s.arg_index)
    rng = np.random.default_rng(spec.seed)
    example = export_aoti.example_args(spec, fwd_inputs, rng)
    # The eager model must run on the example first: its own failure is the spec's or the model's (exit 2),
    # never an export finding.
    verify.run_checked(spec, eager, example, "the eager model")
    progress(f"{spec.name}: exporting (torch.export)")
    try:
        program = export_aoti.export_program(spec, eager.to(device), example, fwd_inputs, arg_names)
    except export_aoti.AotiExportFailure as failure:
        raise explain_export_failure(failure) from failure.cause
    package = export_aoti.compile_package(spec, program, device, progress)
    return eager, program, package, inputs, fwd_inputs


def prepare_aoti(spec: ModelSpec, templates: Path | None, progress: Progress) -> PreparedModel:
    eager, program, package, inputs, fwd_inputs = export_and_compile(spec, progress)
    warnings: list[str] = []
    rng = np.random.default_rng(spec.seed)
    exported_module = program.module()
    loaded = export_aoti.load_package(package.data, package.device)
    device = package.device

    def on_device(args):
        return tuple(a.to(device) for a in args)

    # Verify: eager == exported program == reloaded package at every size of the grid.
    progress(f"{spec.name}: verifying")
    runs: list[tuple[int, list]] = []
    checks: dict = {"runs": 0, "max_abs_error": 0.0, "max_rel_error": 0.0}
    names: list[str] | None = None
    nonfinite: dict[str, compare.OutputDiff] = {}
    for batch, args in verify.size_grid(spec, fwd_inputs, rng):
        args = on_device(args)
        shapes = f"input shapes {[list(a.shape) for a in args]}"
        eager_out = verify.leaves(verify.run_checked(spec, eager, args, "the eager model"))
        program_out = verify.leaves(verify.run_checked(spec, exported_module, args, "the exported program"))
        package_out = verify.leaves(verify.run_checked(spec, loaded, args, "the reloaded AOTInductor package"))
        for i, leaf in enumerate(package_out):
            if not isinstance(leaf, torch.Tensor):
                raise ServingError(
                    f"{spec.where()}: output {i} is {type(leaf).__name__}, not a tensor; the torch_aoti backend"
                    " serves only tensor leaves (in a tuple, list or dict). Return tensors"
                )
        if names is None:
            names = signature.output_names(spec, len(package_out), None)
        verify.check_equal(spec, "the exported program and the eager model", eager_out, program_out, names, shapes)
        c = verify.check_equal(spec, "the reloaded package and the eager model", eager_out, package_out, names, shapes)
        checks["max_abs_error"] = max(checks["max_abs_error"], c.max_abs)
        checks["max_rel_error"] = max(checks["max_rel_error"], c.max_rel)
        nonfinite.update({d.name: d for d in c.nonfinite()})
        checks["runs"] += 1
        runs.append((batch, [t.cpu() for t in package_out]))
    assert names is not None
    if nonfinite:
        warnings.append(compare.nonfinite_warning(spec.where(), list(nonfinite.values())))
    checks["nonfinite_outputs"] = sorted(nonfinite)
    checks["compile_seconds"] = round(package.compile_seconds, 2)
    checks["cache_hit"] = package.cache_hit
    outputs = signature.infer_outputs(spec, runs, names)

    # Batch safety on the package itself: it is what the dynamic batcher's merged batches run through.
    batching = spec.dynamic_batching
    if batching is not None and not spec.batch_safe:
        warnings.append(f"{spec.where('dynamic_batching')}: batch_safe = false, so dynamic batching is left out")
        batching = None
    if batching is not None and spec.max_batch_size >= 2:
        shapes_mid = signature.variants(tuple(s.spec for s in fwd_inputs))[0]
        checks["batch_safe_max_abs_diff"] = verify.check_batch_safe(
            spec, _OnDevice(loaded, device), fwd_inputs, shapes_mid, names, rng
        )
        warnings.append(
            f"{spec.where('dynamic_batching')}: a batched torch_aoti model with dynamic batching needs Triton 26.06"
            " or newer (26.05 answered merged requests wrongly; the server's batched torch_aoti tests start in"
            " 26.06)"
        )

    # Names: positional, INPUT__<forward index> / OUTPUT__<leaf index> (export_aoti.py says why).
    named = tuple(signature.InputSig(f"INPUT__{s.arg_index}", s.arg_index, s.spec) for s in inputs)
    sig = signature.Signature(named, outputs, spec.max_batch_size)
    cfg = model_config(spec, sig, batching, platform="torch_aoti", backend="pytorch")
    if not cfg.instance_groups:
        # With no instance_group Triton makes GPU instances where GPUs exist, and a CPU package cannot run there.
        cfg = dataclasses.replace(cfg, instance_groups=(config.InstanceGroupConfig("KIND_CPU", 1),))
        warnings.append(
            f"{spec.where('instance_group')}: none given; the package is compiled for CPU, so the config says"
            " KIND_CPU (a GPU instance could not run it)"
        )
    origin = f"{spec.where()}: the rendered config.pbtxt"
    text = config.render(cfg, templates)
    parsed = config.prove(text, cfg, origin)
    config.check_aoti_rules(parsed, [s.name for s in fwd_inputs], origin)
    if package.cache_hit:
        progress(f"{spec.name}: package from the compile cache ({export_aoti.cache_dir()})")
    return PreparedModel(
        spec=spec,
        module=loaded,
        signature=sig,
        config=cfg,
        config_text=text,
        model_bytes=package.data,
        export_mode=ExportedAs.AOTI,
        version=spec.version,
        warnings=warnings,
        checks=checks,
        package=package,
    )


class _OnDevice:
    """Calls the package with its arguments moved to the package's device (verify makes CPU tensors)."""

    def __init__(self, fn, device: str):
        self.fn, self.device = fn, device

    def __call__(self, *args):
        return self.fn(*(a.to(self.device) for a in args))
