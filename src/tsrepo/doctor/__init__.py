"""tsrepo doctor: make TorchScript failures explain themselves.

Two layers: a static pass over the source of every method TorchScript would compile (all findings
at once, exactly located), and translation of torch.jit.script's own exception onto the same
classes. With example inputs it also checks the scripted (or traced) model against eager.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tsrepo.doctor.catalogue import KINDS
from tsrepo.doctor.static import Finding, analyse
from tsrepo.doctor.translate import translate

SILENT_KINDS = {"TS13"}


@dataclass
class Report:
    model: str
    findings: list[Finding] = field(default_factory=list)
    scripted: bool = False
    traced: bool = False
    compared: bool = False
    max_abs_error: float | None = None
    notes: list[str] = field(default_factory=list)
    export: str = "torchscript"  # torchscript | aoti: what was diagnosed
    exported: bool = False  # aoti: torch.export succeeded

    @property
    def ok(self) -> bool:
        if self.export == "aoti":
            return not self.findings and self.exported
        return not self.findings and (self.scripted or self.traced)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "ok": self.ok,
            "scripted": self.scripted,
            "traced": self.traced,
            "export": self.export,
            "exported": self.exported,
            "compared_with_eager": self.compared,
            "max_abs_error": self.max_abs_error,
            "notes": self.notes,
            "findings": [f.to_json() for f in self.findings],
        }


def _library_file(path: str) -> bool:
    """Source of torch or the standard library: where TorchScript's error can point, but users don't edit."""
    import sysconfig

    roots = [str(Path(torch.__file__).resolve().parent), sysconfig.get_paths()["stdlib"]]
    try:
        resolved = str(Path(path).resolve())
    except OSError:
        return False
    return any(resolved.startswith(r) for r in roots)


def in_library(f: Finding) -> bool:
    """A finding in code the user installed rather than wrote (site-packages, torch, the standard library)."""
    return any(part in f.file for part in ("/site-packages/", "/dist-packages/")) or _library_file(f.file)


def user_first(findings: list[Finding]) -> list[Finding]:
    """The user's own code first: that is what they can edit; library findings follow, each group in order."""
    return [f for f in findings if not in_library(f)] + [f for f in findings if in_library(f)]


def summary(findings: list[Finding]) -> str:
    """`12 finding(s): 5 TS04, 4 TS05, 3 TS11`, by class."""
    import collections

    counts = collections.Counter(f.kind for f in findings)
    return f"{len(findings)} finding(s): " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def merge(static: list[Finding], translated: Finding | None) -> list[Finding]:
    """Static findings, plus TorchScript's own error where the static pass did not already explain it.

    TorchScript stops at its first error; when the static pass found something, an error without a
    location or located inside torch / the standard library is that same problem seen from inside.
    """
    out = list(static)
    if translated is not None:
        on_line = [f for f in static if f.file == translated.file and f.line == translated.line]
        elsewhere = translated.line == 0 or _library_file(translated.file)
        if not on_line and not (elsewhere and static):
            out.append(translated)
    return sorted(set(out), key=lambda f: (f.file, f.line, f.col, f.kind, f.detail))


def script_findings(model: nn.Module) -> tuple[torch.jit.ScriptModule | None, list[Finding]]:
    """Script the model; return it (or None) and every finding, static and translated."""
    static = analyse(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(model)
    except Exception as e:  # any scripting failure is a finding, never a crash
        return None, merge(static, translate(e))
    # It scripted: compile-time classes were false alarms (TorchScript can, say, compile a user class
    # held in a list). Only an unannotated argument scripts and still goes wrong (typed as Tensor).
    return scripted, [f for f in static if f.kind in SILENT_KINDS]


def format_finding(f: Finding, verbose: bool = False) -> str:
    k = KINDS[f.kind]
    where = f"{f.file}:{f.line}:{f.col}" if f.line else f.file
    lines = [f"{where}: {f.kind} {k.name}: {f.code}" if f.code else f"{where}: {f.kind} {k.name}"]
    lines.append(f"    {f.detail}. {k.cause} Fix: {k.fix}")
    if verbose:
        if k.before:
            lines.append("    before:")
            lines += [f"      {line}" for line in k.before.splitlines()]
            lines.append("    after:")
            lines += [f"      {line}" for line in k.after.splitlines()]
        source = "" if k.id.startswith(("EX", "SV")) else "TorchScript language reference, "
        lines.append(f"    see: {source}{k.reference}")
    return "\n".join(lines)


def failure_findings(model: nn.Module, exc: BaseException) -> list[Finding]:
    """Every finding behind a scripting failure, the user's own code first."""
    return user_first(merge(analyse(model), translate(exc)))


def explain_failure(model: nn.Module, exc: BaseException) -> str:
    """What `tsrepo build` prints when scripting fails: the findings, short, the user's own code first."""
    return "\n".join(format_finding(f) for f in failure_findings(model, exc))


def explain_fallback(findings: list[Finding]) -> str:
    """What build says about a scripting failure it got past by tracing: the user's findings in full, library
    findings as counts (the user cannot edit them; `--show-findings` lists them)."""
    mine = [f for f in findings if not in_library(f)]
    theirs = [f for f in findings if in_library(f)]
    lines = [format_finding(f) for f in mine]
    if theirs:
        lines.append(
            f"library code you did not write: {summary(theirs)} (`tsrepo build --show-findings` lists them)"
        )
    return "\n".join(lines)


def check(spec, allow_trace: bool = False) -> Report:
    """Diagnose one model of a spec: static pass, scripting, and with inputs a comparison with eager."""
    from tsrepo import compare, export, signature, verify
    from tsrepo.errors import ExportError, TsrepoError, VerifyError
    from tsrepo.spec import ExportMode

    report = Report(spec.name)
    if spec.is_torchscript_file:
        export.load_torchscript(spec)
        report.scripted = True
        report.notes.append("the source is already TorchScript; nothing to script")
        return report
    from tsrepo import adapters
    from tsrepo.errors import ServingError

    model = original = export.import_factory(spec)
    if spec.inputs:
        # The same input adapter build makes (fixed arguments, list inputs), so doctor scripts what build scripts.
        bound = signature.bind_inputs(spec, export.forward_argument_names(model))
        try:
            plan = adapters.plan_inputs(spec, model, [s.arg_index for s in bound])
        except ServingError as e:
            report.findings.append(_serving(original, e))
            return report
        if plan.needed:
            model = adapters.adapt_inputs(model, plan)
            report.notes.append(f"forward is fed by an input adapter ({plan.describe()})")
    scripted, report.findings = script_findings(model)
    report.scripted = scripted is not None
    if scripted is not None:
        # What build refuses after scripting, refused here too: doctor never calls a model clean that build refuses.
        try:
            if spec.inputs:
                adapters.check_arguments(spec, scripted)
            else:
                _check_unserved_arguments(spec, scripted)
            adapters.classify_return(spec, scripted)
        except ServingError as e:
            report.findings.append(_serving(original, e))
            return report
    if not spec.inputs:
        return report
    forward_args = export.forward_argument_names(model)
    inputs = sorted(signature.bind_inputs(spec, forward_args), key=lambda s: s.arg_index)
    rng = np.random.default_rng(spec.seed)
    candidate = scripted
    allow_trace = allow_trace or spec.export in (ExportMode.AUTO, ExportMode.TRACE)
    if candidate is None and allow_trace:
        example = verify.example_args(spec, inputs, rng)
        try:
            candidate, tracer_warnings = _trace(model, example)
        except TsrepoError as e:
            report.notes.append(str(e))
            return report
        report.traced = True
        report.findings += tracer_warnings
    if candidate is None:
        return report
    worst = 0.0
    names = None
    nonfinite: dict[str, compare.OutputDiff] = {}
    runs: list[tuple[int, list]] = []
    for batch, args in [*verify.size_grid(spec, inputs, rng), *verify.data_grid(spec, inputs, rng)]:
        # The eager model failing on the spec's inputs is the spec's or the model's error (exit 2);
        # the exported model failing where eager works is a finding.
        eager = verify.leaves(verify.run_checked(spec, model, args, "the eager model"))
        try:
            got = verify.leaves(verify.run_checked(spec, candidate, args, "the exported model"))
        except ExportError as e:
            report.findings.append(_divergence(report, str(e).split(": ", 2)[-1]))
            return report
        names = names or [f"#{i}" for i in range(len(eager))]
        try:
            c = verify.check_equal(
                spec, "exported and eager", eager, got, names, f"shapes {[list(a.shape) for a in args]}"
            )
        except VerifyError as e:
            report.findings.append(_divergence(report, str(e).split(": ", 2)[-1]))
            return report
        worst = max(worst, c.max_abs)
        nonfinite.update({d.name: d for d in c.nonfinite()})
        runs.append((batch, got))
    report.compared = True
    report.max_abs_error = worst
    if nonfinite:
        report.notes.append(compare.nonfinite_warning("outputs", list(nonfinite.values())))
    # Output dtypes and dims as build infers them (batch first, no 0 dims, declared dims honoured).
    try:
        signature.infer_outputs(spec, runs, signature.output_names(spec, len(runs[0][1]), None))
    except TsrepoError as e:
        report.findings.append(_serving(original, e))
    return report


def _check_unserved_arguments(spec, scripted) -> None:
    """Without example inputs: every argument without a default is served, so it must be a Tensor (an
    Optional[Tensor] is served as one by build's adapter); arguments with defaults keep them."""
    from tsrepo import adapters
    from tsrepo.errors import ServingError

    for a in scripted.forward.schema.arguments[1:]:
        kind = str(a.type)
        if kind in ("Tensor", "Optional[Tensor]") or a.default_value is not None or kind.startswith("Optional["):
            continue
        raise ServingError(
            f"{spec.where('inputs')}: forward argument `{a.name}: {kind}` cannot come from Triton, which passes only"
            f" tensors; {adapters.argument_fix(a.name, kind)}"
        )


def _serving(model: nn.Module, error: BaseException) -> Finding:
    """A serving refusal as a finding at forward's definition; the detail is build's own message."""
    file, line, code = _forward_location(model)
    return Finding(file, line, 1, "SV01", code, str(error).split(": ", 2)[-1])


def _divergence(report: Report, detail: str) -> Finding:
    kind = "TR02" if report.traced else "TS00"
    return Finding("<model>", 0, 0, kind, "", detail)


def _trace(model: nn.Module, example: tuple):
    """Trace and turn TracerWarnings into located findings."""
    from tsrepo.errors import ExportError
    from tsrepo.export import trace_recording

    try:
        traced, notes = trace_recording(model, example)
    except Exception as e:
        lines = str(e).strip().splitlines()
        raise ExportError(f"tracing failed too: {type(e).__name__}: {lines[0] if lines else ''}") from e
    found = []
    for n in notes:
        try:
            code = Path(n.file).read_text().splitlines()[n.line - 1].strip()
        except (OSError, IndexError):
            code = ""
        found.append(Finding(n.file, n.line, 1, "TR01", code, n.message))
    return traced, found


def check_aoti(spec) -> Report:
    """Diagnose torch.export (export = "aoti") for one model: the spec's Dims, non-strict export as build does
    it, then strict export for what non-strict silently freezes, then the exported program against eager.
    No AOTInductor compile: doctor answers in seconds."""
    from tsrepo import compare, export, export_aoti, signature, verify
    from tsrepo.doctor.export_classes import finding
    from tsrepo.errors import ExportError, SpecError, VerifyError

    report = Report(spec.name, export="aoti")
    if spec.is_torchscript_file:
        raise SpecError(f"{spec.where('source')}: a TorchScript file cannot be exported with torch.export")
    if not spec.inputs:
        raise SpecError(
            f"{spec.where('inputs')}: --export aoti needs the example inputs (torch.export traces with them);"
            " pass --input NAME:DTYPE:SHAPE for each forward argument"
        )
    model = export.import_factory(spec)
    scripted, _ = script_findings(model)
    report.scripted = scripted is not None
    try:
        arg_names = export_aoti.check_forward(spec, model)
    except ExportError as e:
        from tsrepo.doctor.export_classes import locate

        file, line, code = locate(model, e)
        report.findings.append(Finding(file, line, 1, "EX04", code, str(e).split(": ", 2)[-1]))
        return _script_note(report)
    inputs = sorted(signature.bind_inputs(spec, arg_names), key=lambda s: s.arg_index)
    rng = np.random.default_rng(spec.seed)
    example = export_aoti.example_args(spec, inputs, rng)
    try:
        verify.run_checked(spec, model, example, "the eager model")  # the model's own failure: exit 2
    except ExportError as e:
        from tsrepo.doctor.export_classes import classify

        # An op with no kernel for this device fails in eager first: that is the EX06 finding, not a usage error.
        if e.__cause__ is None or classify(str(e.__cause__)) != "EX06":
            raise
        report.findings.append(finding(model, e.__cause__, spec))
        return _script_note(report)
    try:
        program = export_aoti.export_program(spec, model, example, inputs, arg_names)
    except export_aoti.AotiExportFailure as failure:
        report.findings.append(finding(model, failure.cause, spec))
        return _script_note(report)
    report.exported = True
    try:
        export_aoti.export_program(spec, model, example, inputs, arg_names, strict=True)
    except export_aoti.AotiExportFailure as failure:
        f = finding(model, failure.cause, spec)
        if f.kind == "EX05":
            report.findings.append(f)
        else:
            report.notes.append(f"strict export (not what build uses) fails: {f.detail}")
    module = program.module()
    worst = 0.0
    nonfinite: dict[str, compare.OutputDiff] = {}
    for _batch, args in verify.size_grid(spec, inputs, rng):
        eager = verify.leaves(verify.run_checked(spec, model, args, "the eager model"))
        try:
            got = verify.leaves(verify.run_checked(spec, module, args, "the exported program"))
        except ExportError as e:
            report.findings.append(finding(model, e.__cause__ or e, spec))
            return _script_note(report)
        bad = [i for i, leaf in enumerate(got) if not isinstance(leaf, torch.Tensor)]
        if bad:
            file, line, code = _forward_location(model)
            report.findings.append(
                Finding(file, line, 1, "EX04", code, f"output {bad[0]} is {type(got[bad[0]]).__name__}, not a tensor")
            )
            return _script_note(report)
        names = [f"OUTPUT__{i}" for i in range(len(eager))]
        try:
            c = verify.check_equal(
                spec, "exported and eager", eager, got, names, f"shapes {[list(a.shape) for a in args]}"
            )
        except VerifyError as e:
            file, line, code = _forward_location(model)
            report.findings.append(Finding(file, line, 1, "EX00", code, str(e).split(": ", 2)[-1]))
            return _script_note(report)
        worst = max(worst, c.max_abs)
        nonfinite.update({d.name: d for d in c.nonfinite()})
    report.compared = True
    report.max_abs_error = worst
    if nonfinite:
        report.notes.append(compare.nonfinite_warning("outputs", list(nonfinite.values())))
    return _script_note(report)


def _forward_location(model: nn.Module) -> tuple[str, int, str]:
    import inspect

    try:
        forward = type(model).forward
        path = inspect.getsourcefile(forward) or "<unknown>"
        lines, start = inspect.getsourcelines(forward)
        return path, start, lines[0].strip()
    except (OSError, TypeError):
        return "<unknown>", 0, ""


def _script_note(report: Report) -> Report:
    """Say plainly how the two formats compare for this model."""
    exports = report.exported and not report.findings
    if report.scripted and not exports:
        report.notes.append("it scripts with TorchScript but does not export with torch.export (findings above)")
    elif exports and not report.scripted:
        report.notes.append("it exports with torch.export but does not script (`tsrepo doctor SOURCE` explains why)")
    elif exports:
        report.notes.append("it both scripts and exports")
    else:
        report.notes.append("it neither scripts nor exports")
    return report
