"""Import a model and turn it into TorchScript: script, trace, or script-then-trace (auto)."""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import torch
from torch import nn

from tsrepo.errors import ExportError
from tsrepo.spec import ExportMode, ModelSpec


class ExportedAs(str, Enum):
    """How the served module came to be."""

    SCRIPT = "script"
    TRACE = "trace"
    FILE = "file"  # the source already was a TorchScript file
    AOTI = "aoti"  # torch.export + AOTInductor package (export_aoti.py)

    @property
    def past(self) -> str:
        return {"script": "scripted", "trace": "traced", "file": "loaded", "aoti": "exported"}[self.value]


class ScriptFailure(ExportError):
    """torch.jit.script refused the model. The caller explains it (build asks the doctor): export does
    not import the doctor, which imports export."""

    def __init__(self, spec: ModelSpec, model: nn.Module, cause: BaseException):
        super().__init__(f"{spec.where('export')}: torch.jit.script failed: {_first_line(cause)}")
        self.spec, self.model, self.cause = spec, model, cause
        self.tracing_failed: ExportError | None = None  # auto mode: tracing failed as well


@dataclass(frozen=True)
class TracerNote:
    """A TracerWarning: something tracing froze, and where."""

    file: str
    line: int
    message: str


@dataclass
class Exported:
    module: torch.jit.ScriptModule
    eager: nn.Module | None  # None when the source was already a TorchScript file
    mode: ExportedAs
    warnings: list[str] = field(default_factory=list)
    script_failure: ScriptFailure | None = None  # auto mode: why it fell back to tracing
    tracer_notes: list[TracerNote] = field(default_factory=list)  # traced: what tracing froze, located


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


@contextlib.contextmanager
def user_code(what: str) -> Iterator[None]:
    """Run the user's code (import, factory, forward): whatever it raises, SystemExit and
    KeyboardInterrupt raised by the code included, becomes an ExportError that says what was running
    and where the user's code failed. The cause stays chained for TSREPO_DEBUG=1."""
    try:
        yield
    except ExportError:
        raise
    except SystemExit as e:
        raise ExportError(f"{what} called sys.exit({e.code!r}){_user_frame(e)}; a model must not exit") from e
    except KeyboardInterrupt as e:
        from tsrepo import interrupts

        if interrupts.received():  # the user pressed Ctrl-C (or sent SIGTERM): not the model's failure
            raise
        raise ExportError(f"{what} raised KeyboardInterrupt{_user_frame(e)}") from e
    except BaseException as e:
        raise ExportError(f"{what} raised {_first_line(e)}{_user_frame(e)}") from e


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
            with user_code(f"{spec.where('source')}: importing {module_name!r}"):
                module = importlib.import_module(module_name)
        except ExportError as e:
            if isinstance(e.__cause__, ModuleNotFoundError) and e.__cause__.name and module_name.startswith(
                e.__cause__.name
            ):
                raise ExportError(
                    f"{spec.where('source')}: cannot import module {module_name!r} ({e.__cause__});"
                    f" it must be importable from the spec's folder ({spec.base_dir}), the working directory"
                    " or the installed packages"
                ) from e.__cause__
            raise
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
        with user_code(f"{spec.where('source')}: the factory {spec.source!r}"):
            model = target() if not isinstance(target, nn.Module) else target
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
        ) from e
    return module.eval()


def script(spec: ModelSpec, model: nn.Module) -> torch.jit.ScriptModule:
    """torch.jit.script; raises ScriptFailure (the model and TorchScript's exception) when it refuses."""
    if isinstance(model, torch.jit.ScriptModule):
        return model
    try:
        return torch.jit.script(model)
    except SystemExit as e:  # the model's code ran at compile time (a class body, a property) and exited
        raise ExportError(f"{spec.where('export')}: scripting ran code that called sys.exit({e.code!r})") from e
    except Exception as e:
        raise ScriptFailure(spec, model, e) from e


def trace_recording(model: nn.Module, example: tuple) -> tuple[torch.jit.ScriptModule, list[TracerNote]]:
    """torch.jit.trace, keeping its TracerWarnings (sorted, deduplicated). Raises what trace raises."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        with torch.no_grad():
            try:
                traced = torch.jit.trace(model, example, check_trace=False, strict=False)
            except SystemExit as e:  # forward exited: a failure of the model, never obeyed
                raise RuntimeError(f"forward called sys.exit({e.code!r})") from e
    notes = {
        TracerNote(r.filename, r.lineno, str(r.message).splitlines()[0])
        for r in records
        if issubclass(r.category, torch.jit.TracerWarning)
    }
    return traced, sorted(notes, key=lambda n: (n.file, n.line, n.message))


def trace(spec: ModelSpec, model: nn.Module, example: tuple) -> tuple[torch.jit.ScriptModule, list[TracerNote]]:
    try:
        traced, notes = trace_recording(model, example)
    except Exception as e:
        shapes = [list(a.shape) for a in example]
        raise ExportError(
            f"{spec.where('export')}: torch.jit.trace failed on example inputs of shapes {shapes}:"
            f" {_first_line(e)}{_user_frame(e)}"
        ) from e
    return traced, notes


def tracer_warning(note: TracerNote) -> str:
    return f"{Path(note.file).name}:{note.line}: {note.message}"


def forward_argument_names(model: nn.Module) -> list[str]:
    """forward's positional argument names (without self), for eager and scripted modules alike."""
    if isinstance(model, torch.jit.ScriptModule):
        return [a.name for a in model.forward.schema.arguments[1:]]
    import inspect

    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError) as e:  # a forward that is not a plain Python function
        raise ExportError(f"forward of {type(model).__name__} has no readable signature ({e})") from e
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def export(spec: ModelSpec, example: tuple, model: nn.Module | None = None) -> Exported:
    """Produce TorchScript according to `spec.export` (importing the model unless given)."""
    if spec.is_torchscript_file:
        return Exported(load_torchscript(spec), None, ExportedAs.FILE)
    model = model if model is not None else import_factory(spec)
    if spec.export is ExportMode.SCRIPT:
        return Exported(script(spec, model), model, ExportedAs.SCRIPT)
    if spec.export is ExportMode.TRACE:
        traced, notes = trace(spec, model, example)
        return Exported(traced, model, ExportedAs.TRACE, tracer_notes=notes)
    try:
        return Exported(script(spec, model), model, ExportedAs.SCRIPT)
    except ScriptFailure as scripting_failed:
        try:
            traced, notes = trace(spec, model, example)
        except ExportError as tracing_failed:
            # Neither worked: scripting's failure is the one to explain; tracing's goes with it.
            scripting_failed.tracing_failed = tracing_failed
            raise scripting_failed from scripting_failed.cause
        return Exported(traced, model, ExportedAs.TRACE, [], scripting_failed, notes)


def save_bytes(module: torch.jit.ScriptModule) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    return buf.getvalue()


def load_bytes(data: bytes) -> torch.jit.ScriptModule:
    return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
