"""Import a model and turn it into TorchScript: script, trace, or script-then-trace (auto)."""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tsrepo.errors import ExportError
from tsrepo.spec import ExportMode, ModelSpec


@dataclass
class Exported:
    module: torch.jit.ScriptModule
    eager: nn.Module | None  # None when the source was already a TorchScript file
    mode: str  # script | trace | file
    warnings: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _on_sys_path(*folders: Path):
    """Put folders first on sys.path for the import (the spec's folder, then the working directory)."""
    added = []
    for folder in reversed(folders):
        entry = str(folder)
        if entry not in sys.path:
            sys.path.insert(0, entry)
            added.append(entry)
    try:
        yield
    finally:
        for entry in added:
            if entry in sys.path:
                sys.path.remove(entry)


def _user_frame(exc: BaseException) -> str:
    """The innermost traceback frame outside tsrepo and the stdlib: where the user's code failed."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if "/tsrepo/" not in f.filename and "importlib" not in f.filename
    ]
    if not frames:
        return ""
    f = frames[-1]
    line = f" ({f.line.strip()})" if f.line else ""
    return f" at {f.filename}:{f.lineno}{line}"


def import_factory(spec: ModelSpec) -> nn.Module:
    """Import `package.module:factory` (the spec's folder on sys.path), call it, eval mode."""
    module_name, _, attr = spec.source.partition(":")
    with _on_sys_path(spec.base_dir, Path.cwd()):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            raise ExportError(
                f"{spec.where('source')}: cannot import module {module_name!r} ({e});"
                f" it must be importable from the spec's folder ({spec.base_dir}), the working directory"
                " or the installed packages"
            ) from None
        except Exception as e:  # the user's module raised while importing
            raise ExportError(
                f"{spec.where('source')}: importing {module_name!r} raised {type(e).__name__}: {e}{_user_frame(e)}"
            ) from None
        target = module
        for part in attr.split("."):
            if not hasattr(target, part):
                raise ExportError(
                    f"{spec.where('source')}: module {module_name!r} has no attribute {part!r};"
                    " name a callable that returns an nn.Module"
                )
            target = getattr(target, part)
        if not callable(target):
            raise ExportError(f"{spec.where('source')}: {spec.source!r} is not callable")
        torch.manual_seed(spec.seed)
        try:
            model = target() if not isinstance(target, nn.Module) else target
        except Exception as e:
            raise ExportError(
                f"{spec.where('source')}: the factory {spec.source!r} raised {type(e).__name__}: {e}{_user_frame(e)}"
            ) from None
    if not isinstance(model, nn.Module):
        raise ExportError(
            f"{spec.where('source')}: the factory {spec.source!r} returned"
            f" {type(model).__name__}, not a torch.nn.Module"
        )
    return model.eval()


def load_torchscript(spec: ModelSpec) -> torch.jit.ScriptModule:
    path = Path(spec.source)
    if not path.is_absolute():
        path = spec.base_dir / path
    if not path.is_file():
        raise ExportError(
            f"{spec.where('source')}: {spec.source!r} is neither 'module:factory' nor an existing"
            f" file (looked for {path})"
        )
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(
            f"{spec.where('source')}: {path} is not a TorchScript archive ({first}). Save one with"
            " torch.jit.save(torch.jit.script(model), path), or give 'module:factory' instead; a"
            " torch.save() state dict needs a factory that builds the model and loads it with"
            " torch.load(..., weights_only=True)"
        ) from None
    return module.eval()


def script(spec: ModelSpec, model: nn.Module) -> torch.jit.ScriptModule:
    if isinstance(model, torch.jit.ScriptModule):
        return model
    try:
        return torch.jit.script(model)
    except Exception as e:
        from tsrepo.doctor import explain_failure

        raise ExportError(
            f"{spec.where('export')}: torch.jit.script failed (`tsrepo doctor` explains each finding"
            f" with a before/after):\n{explain_failure(model, e)}"
        ) from None


@dataclass(frozen=True)
class TracerNote:
    """A TracerWarning: something tracing froze, and where."""

    file: str
    line: int
    message: str


def trace_recording(model: nn.Module, example: tuple) -> tuple[torch.jit.ScriptModule, list[TracerNote]]:
    """torch.jit.trace, keeping its TracerWarnings (sorted, deduplicated). Raises what trace raises."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False, strict=False)
    notes = {
        TracerNote(r.filename, r.lineno, str(r.message).splitlines()[0])
        for r in records
        if issubclass(r.category, torch.jit.TracerWarning)
    }
    return traced, sorted(notes, key=lambda n: (n.file, n.line, n.message))


def trace(spec: ModelSpec, model: nn.Module, example: tuple) -> tuple[torch.jit.ScriptModule, list[str]]:
    try:
        traced, notes = trace_recording(model, example)
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise ExportError(
            f"{spec.where('export')}: torch.jit.trace failed: {type(e).__name__}:"
            f" {msg[0] if msg else ''}{_user_frame(e)}"
        ) from None
    return traced, [f"{Path(n.file).name}:{n.line}: {n.message}" for n in notes]


def forward_argument_names(model: nn.Module) -> list[str]:
    """forward's positional argument names (without self), for eager and scripted modules alike."""
    if isinstance(model, torch.jit.ScriptModule):
        return [a.name for a in model.forward.schema.arguments[1:]]
    import inspect

    params = inspect.signature(model.forward).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def export(spec: ModelSpec, example: tuple, model: nn.Module | None = None) -> Exported:
    """Produce TorchScript according to `spec.export` (importing the model unless given)."""
    if spec.is_torchscript_file:
        return Exported(load_torchscript(spec), None, "file")
    model = model if model is not None else import_factory(spec)
    if spec.export is ExportMode.SCRIPT:
        return Exported(script(spec, model), model, "script")
    if spec.export is ExportMode.TRACE:
        traced, tracer_warnings = trace(spec, model, example)
        return Exported(traced, model, "trace", tracer_warnings)
    try:
        return Exported(script(spec, model), model, "script")
    except ExportError as scripting_failed:
        traced, tracer_warnings = trace(spec, model, example)
        reason = str(scripting_failed).split("\n", 1)[-1]
        note = (
            f"{spec.where('export')}: scripting failed, so the model was traced; control flow that"
            f" depends on the data is frozen at the example inputs. Scripting said:\n{reason}"
        )
        return Exported(traced, model, "trace", [note, *tracer_warnings])


def save_bytes(module: torch.jit.ScriptModule) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    return buf.getvalue()


def load_bytes(data: bytes) -> torch.jit.ScriptModule:
    return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
