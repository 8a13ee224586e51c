"""torch.export + AOTInductor: a Python model to a `model.pt2` package, with a compile cache.

The TorchScript path is `export.py`; both produce something `build.prepare` runs on the same size grid
and compares with eager, so one verification path proves either format.

Rules taken from Triton's PyTorch backend (see DESIGN.md, "Facts about AOTInductor"):
- 26.03: `platform: "torch_aoti"`, `backend: "pytorch"`, file `<version>/model.pt2`; the package is
  loaded with AOTIModelPackageLoader for the instance's device (CPU or one GPU), so it must have been
  compiled for that device.
- 26.05 (observed on the backend's source built against torch 2.13): tensors bind by position through the
  package's call spec; `INPUT__i` / `OUTPUT__i` bind, free names (forward's argument names) fail when the
  instance is created, keyword-only inputs cannot be loaded under any name, only dict/tuple/list containers
  with tensor leaves. tsrepo therefore always names `.pt2` tensors `INPUT__i` / `OUTPUT__i`.
- 26.06: the server's tests serve batch sizes above 1 (`Dim("batch", 1..max_batch_size)`, dynamic
  batching); in 26.05 merged requests got wrong answers. A batched package with dynamic batching rests on
  26.06 or newer.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import logging
import os
import re
import secrets
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tsrepo.errors import ExportError
from tsrepo.signature import InputSig
from tsrepo.spec import Kind, ModelSpec

PACKAGE_FILE = "model.pt2"
FORMAT = "aoti_package"
# Bump when anything tsrepo passes to the compiler changes in a way the key does not capture.
CACHE_SCHEMA = 1
CACHE_MAX_BYTES = 2 << 30  # 2 GiB of packages, least recently used evicted first
CACHE_MAX_ENTRIES = 64
# What tsrepo asks of the compiler; recorded in tsrepo.json and part of the cache key.
COMPILE_OPTIONS: dict = {}

Progress = Callable[[str], None]


class AotiExportFailure(ExportError):
    """torch.export refused the model. The caller explains it (build and doctor ask doctor.export_classes)."""

    def __init__(self, spec: ModelSpec, model: nn.Module, cause: BaseException, dynamic_shapes: dict | None = None):
        first = next((ln.strip() for ln in str(cause).splitlines() if ln.strip()), type(cause).__name__)
        super().__init__(f"{spec.where('export')}: torch.export failed: {type(cause).__name__}: {first}")
        self.spec, self.model, self.cause, self.dynamic_shapes = spec, model, cause, dynamic_shapes


@dataclass
class Package:
    data: bytes
    device: str
    options: dict
    key: str
    compile_seconds: float  # 0.0 on a cache hit
    cache_hit: bool
    extra: dict = field(default_factory=dict)


# ---- device ---------------------------------------------------------------------------------------


def target_device(spec: ModelSpec) -> str:
    """The device the package is compiled for: the instance groups' kind. A KIND_GPU model needs a CUDA
    compile, which needs a GPU here; without one it is refused with the two ways out."""
    if not any(g.kind is Kind.GPU for g in spec.instance_groups):
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    raise ExportError(
        f'{spec.where("instance_group")}: KIND_GPU with export = "aoti" needs a package compiled for CUDA, and'
        " AOTInductor compiles for the GPU it runs on; no GPU is visible here"
        f" (torch {torch.__version__}, cuda available: no). Either build on the machine with the GPU (same torch"
        ' and CUDA as the server), or serve on CPU: instance_group = [{ kind = "cpu" }] (a CPU package)'
    )


# ---- export ---------------------------------------------------------------------------------------


def check_forward(spec: ModelSpec, model: nn.Module) -> list[str]:
    """forward's positional tensor arguments; what the backend cannot bind is refused here, by name."""
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError) as e:
        raise ExportError(f"{spec.where('source')}: forward of {type(model).__name__} has no readable signature") from e
    names = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ExportError(
                f"{spec.where('inputs')}: forward takes {'*' if p.kind is p.VAR_POSITIONAL else '**'}{p.name};"
                " Triton's torch_aoti backend binds inputs by position (INPUT__i), so list one tensor argument"
                " per input"
            )
        if p.kind is p.KEYWORD_ONLY:
            if p.default is p.empty:
                raise ExportError(
                    f"{spec.where('inputs')}: forward's `{p.name}` is keyword-only; a package exported with"
                    " keyword-only inputs cannot be loaded by the torch_aoti backend (26.05). Make it positional"
                )
            continue
        names.append(p.name)
        ann = p.annotation
        if isinstance(ann, str):
            ann_text = ann
        else:
            ann_text = getattr(ann, "__name__", str(ann))
        if p.annotation is not p.empty and ann_text in {"int", "float", "bool", "str"}:
            raise ExportError(
                f"{spec.where('inputs')}: forward argument `{p.name}: {ann_text}` is not a tensor; torch.export"
                " would freeze its example value into the package and Triton passes only tensors. Make it a"
                " Tensor, or set it in __init__ (tsrepo doctor --export aoti: EX04)"
            )
    required = [p.name for p in sig.parameters.values() if p.kind is not p.KEYWORD_ONLY and p.default is p.empty]
    if len(required) > len(spec.inputs) or len(spec.inputs) > len(names):
        raise ExportError(
            f"{spec.where('inputs')}: the spec lists {len(spec.inputs)} inputs but forward takes"
            f" {len(names)} ({', '.join(names)}); list one input per forward argument"
        )
    return names


def example_args(spec: ModelSpec, inputs: list[InputSig], rng) -> tuple[torch.Tensor, ...]:
    """The example torch.export traces with: batch 2 and every dynamic dim at a size of at least 2, because
    torch.export specialises a dim whose example size is 0 or 1 (it could not tell it from a broadcast)."""
    from tsrepo.verify import make_args

    shapes = []
    for s in inputs:
        dims = []
        for d in s.spec.shape:
            size = d.sizes()[len(d.sizes()) // 2]
            if d.dynamic and size < 2:
                size = min(2, d.max)
            dims.append(size)
        shapes.append(dims)
    batch = min(spec.max_batch_size, 2) if spec.max_batch_size else 0
    return make_args(inputs, shapes, batch, rng)


def dim_name(arg: str, axis: int) -> str:
    return f"{arg}_dim{axis}"


def dynamic_shapes(spec: ModelSpec, inputs: list[InputSig], arg_names: list[str], shared: dict | None = None) -> dict:
    """{argument: {axis: Dim}}: the batch dim (1..max_batch_size) and every dynamic dim of the spec (min..max).
    `shared` maps a dim name to the name of another dim that must be the same Dim (torch.export's suggestion)."""
    from torch.export import Dim

    shared = shared or {}
    dims: dict[str, object] = {}
    out: dict = {}
    batched = spec.max_batch_size >= 2
    batch = Dim("batch", min=1, max=spec.max_batch_size) if batched else None
    for s in inputs:
        arg = arg_names[s.arg_index]
        axes: dict = {}
        offset = 1 if spec.max_batch_size else 0
        if batched:
            axes[0] = batch
        for i, d in enumerate(s.spec.shape):
            if not d.dynamic:
                continue
            name = dim_name(arg, i + offset)
            dims[name] = Dim(name, min=d.min, max=d.max)
            axes[i + offset] = name
        out[arg] = axes
    # Resolve names to Dim objects, following `shared` (a = b) so equal dims are one object.
    for axes in out.values():
        for axis, value in list(axes.items()):
            if isinstance(value, str):
                target = value
                seen = set()
                while target in shared and target not in seen:
                    seen.add(target)
                    target = shared[target]
                axes[axis] = dims.get(target, dims[value])
    return {arg: (axes or None) for arg, axes in out.items()}


_EQUAL_RE = re.compile(r"^\s*(\w+)\s*=\s*(\w+)\s*$", re.MULTILINE)


def _suggested_equalities(message: str, known: set[str]) -> dict[str, str]:
    """torch.export's "Suggested fixes" of the form `a = b` where both are dims tsrepo made: two inputs
    whose dynamic dims must be equal (a mask and its sequence, say)."""
    fixes = message.partition("Suggested fixes:")[2]
    return {a: b for a, b in _EQUAL_RE.findall(fixes) if a in known and b in known}


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """torch.export logs the whole failure (guards, stacks) at ERROR before raising it; tsrepo explains the
    exception itself, so the log would only bury the explanation."""
    names = ["torch", *(n for n in logging.Logger.manager.loggerDict if n.startswith("torch."))]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    # It also prints the partial graph of a data-dependent failure on stdout.
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_program(
    spec: ModelSpec,
    model: nn.Module,
    example: tuple,
    inputs: list[InputSig],
    arg_names: list[str],
    strict: bool = False,
):
    """torch.export.export with the spec's dims. Non-strict by default, as the backend's README example does."""
    shared: dict[str, str] = {}
    for _attempt in range(8):
        shapes = dynamic_shapes(spec, inputs, arg_names, shared)
        positional = tuple(shapes.get(arg_names[i]) for i in range(len(example)))
        try:
            with quiet_torch(), torch.no_grad():
                return torch.export.export(model, example, dynamic_shapes=positional, strict=strict)
        except SystemExit as e:
            raise ExportError(f"{spec.where('export')}: forward called sys.exit({e.code!r}) while exporting") from e
        except Exception as e:
            known = {
                dim_name(arg_names[s.arg_index], i + (1 if spec.max_batch_size else 0))
                for s in inputs
                for i, d in enumerate(s.spec.shape)
                if d.dynamic
            }
            more = {a: b for a, b in _suggested_equalities(str(e), known).items() if shared.get(a) != b}
            if not more:
                raise AotiExportFailure(spec, model, e, positional) from e
            shared.update(more)
    raise AssertionError("unreachable: dims unified more than 8 times")


def program_bytes(program) -> bytes:
    buf = io.BytesIO()
    with quiet_torch():
        torch.export.save(program, buf)
    return buf.getvalue()


# ---- compile cache --------------------------------------------------------------------------------


def cache_dir() -> Path:
    """TSREPO_CACHE_DIR, else $XDG_CACHE_HOME/tsrepo/aoti, else ~/.cache/tsrepo/aoti."""
    env = os.environ.get("TSREPO_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "tsrepo" / "aoti"


def cache_key(program_data: bytes, device: str, options: dict) -> str:
    """Everything that changes the package: the exported program (graph, weights, dims, as torch.export.save
    writes it; byte-stable across processes on torch 2.13), torch, the device and the compile options."""
    h = hashlib.sha256()
    h.update(program_data)
    h.update(
        json.dumps(
            {"torch": torch.__version__, "device": device, "options": options, "schema": CACHE_SCHEMA},
            sort_keys=True,
        ).encode()
    )
    return h.hexdigest()


def _cache_get(key: str) -> bytes | None:
    path = cache_dir() / f"{key}.pt2"
    try:
        data = path.read_bytes()
        os.utime(path)  # least recently used is evicted first
    except OSError:
        return None
    return data


def _cache_put(key: str, data: bytes) -> None:
    """Atomic: written under a unique name and renamed into place, so two builds compiling the same model
    at once both leave a whole file (the last rename wins; both are the same package)."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / f"{key}.pt2")
    except OSError:
        return  # a cache that cannot be written only costs the next build a compile
    evict(folder)


def evict(folder: Path, max_bytes: int | None = None, max_entries: int | None = None) -> list[Path]:
    """Keep the cache bounded: drop least recently used packages beyond CACHE_MAX_ENTRIES or CACHE_MAX_BYTES
    (TSREPO_CACHE_MAX_BYTES overrides), and temp files of builds killed more than an hour ago."""
    max_bytes = max_bytes if max_bytes is not None else int(os.environ.get("TSREPO_CACHE_MAX_BYTES", CACHE_MAX_BYTES))
    max_entries = max_entries if max_entries is not None else CACHE_MAX_ENTRIES
    removed = []
    entries = []
    now = time.time()
    for p in folder.iterdir():
        try:
            st = p.stat()
        except OSError:
            continue
        if p.name.endswith(".tmp") and now - st.st_mtime > 3600:
            p.unlink(missing_ok=True)
            removed.append(p)
        elif p.suffix == ".pt2":
            entries.append((st.st_mtime, st.st_size, p))
    entries.sort(reverse=True)  # newest first
    total = 0
    for i, (_mtime, size, p) in enumerate(entries):
        total += size
        if i >= max_entries or (total > max_bytes and i > 0):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def compile_package(
    spec: ModelSpec, program, device: str, progress: Progress = lambda _m: None, use_cache: bool = True
) -> Package:
    """aoti_compile_and_package, or the cached package for the same program, torch, device and options."""
    options = dict(COMPILE_OPTIONS)
    key = cache_key(program_bytes(program), device, options)
    if use_cache:
        cached = _cache_get(key)
        if cached is not None:
            return Package(cached, device, options, key, 0.0, True)
    progress(f"{spec.name}: compiling with AOTInductor for {device} (tens of seconds; cached afterwards)")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tsrepo-aoti-") as tmp:
        target = Path(tmp) / PACKAGE_FILE
        try:
            with quiet_torch():
                torch._inductor.aoti_compile_and_package(
                    program, package_path=str(target), inductor_configs=options or None
                )
        except Exception as e:
            raise ExportError(
                f"{spec.where('export')}: AOTInductor could not compile the exported program:"
                f" {type(e).__name__}: {_first_line(e)}. It needs a C++ compiler (g++) on PATH; `tsrepo doctor"
                " --export aoti` explains export failures"
            ) from e
        data = target.read_bytes()
    seconds = time.perf_counter() - start
    if use_cache:
        _cache_put(key, data)
    return Package(data, device, options, key, seconds, False)


def _first_line(e: BaseException) -> str:
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")


def load_package(data: bytes, device: str = "cpu"):
    """The package as Triton loads it (AOTIModelPackageLoader through aoti_load_package), from a temp file
    because the loader extracts the shared library next to it."""
    with tempfile.TemporaryDirectory(prefix="tsrepo-aoti-load-") as tmp:
        path = Path(tmp) / PACKAGE_FILE
        path.write_bytes(data)
        with quiet_torch():
            return torch._inductor.aoti_load_package(str(path))
