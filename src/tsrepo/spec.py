"""The spec: frozen dataclasses, validated at the edge.

A spec is a TOML file (``tsrepo.toml``) with an optional ``[defaults]`` table and one or more
``[[model]]`` tables, or the same fields given as CLI flags for one model. Every error names the
file, the model and the field, and says how to fix it. Unknown keys are errors: a typo must not
be silently ignored.

Keys for models as libraries write them (forward arguments Triton cannot pass, outputs whose size follows
the data):

* ``arguments = { attn_mask = "none", scale = 0.5, causal = false }``: forward arguments that are not
  served, fixed to None (``"none"``) or to a constant (a bool, int or float). A forward argument that is
  neither an input nor listed here keeps its default; one without a default must be either.
* ``list_inputs = ["images"]``: inputs passed to forward as a ``List[Tensor]`` (torchvision's detection
  models): the served tensor is split along its first dim, one list item per image.
* ``outputs = [{ name = "boxes", dims = [-1, 4] }, { name = "scores" }]``: one table per output in
  forward's order; ``name`` as in ``output_names`` (which it replaces), ``dims`` (without the batch dim)
  declares the config dims where tsrepo cannot see them from sample runs (-1 for a size that follows the
  data). Observed shapes are still checked against them.

A generated adapter (adapters.py) gives forward the fixed values and the lists; it is exported and proven
like the model itself.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from tsrepo import dtypes
from tsrepo.errors import SpecError, where

# Patterns are matched with fullmatch: `$` would also accept a trailing newline ("lin\n").
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
TENSOR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DIM_RANGE_RE = re.compile(r"\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*")
SOURCE_FACTORY_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", re.ASCII)
MAX_NAME_LENGTH = 128

# Bounds. Triton's config holds counts and sizes as int32 (max_batch_size, instance counts, GPU ids,
# preferred sizes) or uint32 (warm-up), so nothing above INT32_MAX may reach config.pbtxt; the
# tighter bounds are what a real server can do, and every refusal names the field.
INT32_MAX = 2**31 - 1
MAX_DIM = INT32_MAX
MAX_INSTANCES = 1024
MAX_GPU_ID = 1023
MAX_WARMUP_COUNT = 10_000
MAX_QUEUE_DELAY_US = 3_600_000_000  # one hour
MAX_THREADS = 4096
MAX_SEED = 2**32 - 1  # numpy's default_rng and torch.manual_seed both take it
# Verification runs the model on sample inputs at the largest sizes the spec allows; they must fit
# in memory comfortably, so their size is estimated (and refused) before anything is allocated.
MAX_SAMPLE_BYTES = 1 << 30

# Backend parameters the libtorch backend reads (24.x). It silently ignores any other key, so we
# reject unknown ones ourselves. ENABLE_NVFUSER was removed from the backend and is refused.
BOOL_PARAMETERS = frozenset(
    {
        "DISABLE_OPTIMIZED_EXECUTION",
        "INFERENCE_MODE",
        "DISABLE_CUDNN",
        "ENABLE_TENSOR_FUSER",
        "ENABLE_WEIGHT_SHARING",
        "ENABLE_CACHE_CLEANING",
        "ENABLE_JIT_PROFILING",
        "ENABLE_JIT_EXECUTOR",
    }
)
INT_PARAMETERS = frozenset({"INTRA_OP_THREAD_COUNT", "INTER_OP_THREAD_COUNT"})
BOOL_WORDS = {"true", "on", "1", "false", "off", "0"}


class ExportMode(str, Enum):
    SCRIPT = "script"
    TRACE = "trace"
    AUTO = "auto"
    AOTI = "aoti"  # torch.export + AOTInductor: a model.pt2 package served with platform "torch_aoti"

    @property
    def is_torchscript(self) -> bool:
        return self is not ExportMode.AOTI


EXPORT_CHOICES = ", ".join(m.value for m in ExportMode)


class Kind(str, Enum):
    GPU = "gpu"
    CPU = "cpu"


class TensorNames(str, Enum):
    AUTO = "auto"  # forward's argument names where the backend binds by name, else INPUT__n
    INDEX = "index"  # INPUT__0.. always


@dataclass(frozen=True)
class Dim:
    min: int
    max: int

    @property
    def dynamic(self) -> bool:
        return self.min != self.max

    def sizes(self) -> list[int]:
        """The sizes verification runs at: min, a middle size and max."""
        if not self.dynamic:
            return [self.min]
        return sorted({self.min, (self.min + self.max) // 2, self.max})

    def to_json(self) -> int | list[int]:
        return self.min if not self.dynamic else [self.min, self.max]


@dataclass(frozen=True)
class TensorSpec:
    name: str | None
    dtype: dtypes.DType
    shape: tuple[Dim, ...]
    range: tuple[float, float] | None = None  # [low, high) for generated values


@dataclass(frozen=True)
class InstanceGroup:
    kind: Kind = Kind.CPU
    count: int = 1
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class DynamicBatching:
    max_queue_delay_microseconds: int = 0
    preferred_batch_size: tuple[int, ...] = ()


@dataclass(frozen=True)
class Warmup:
    batch_size: int = 1
    count: int = 1


@dataclass(frozen=True)
class VersionPolicy:
    kind: str  # latest | all | specific
    values: tuple[int, ...] = ()


@dataclass(frozen=True)
class OutputSpec:
    """`outputs = [{ name, dims }]`: a declared name and/or config dims (without batch; -1 = varies)."""

    name: str | None = None
    dims: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str
    inputs: tuple[TensorSpec, ...]
    origin: str  # the spec file (or "command line") for messages
    base_dir: Path  # the spec file's folder: put on sys.path, relative paths resolve here
    export: ExportMode = ExportMode.AUTO
    version: int | None = None
    max_batch_size: int = 0
    instance_groups: tuple[InstanceGroup, ...] = ()
    dynamic_batching: DynamicBatching | None = None
    parameters: tuple[tuple[str, str], ...] = ()
    warmup: Warmup | None = None
    version_policy: VersionPolicy | None = None
    batch_safe: bool = True
    tensor_names: TensorNames = TensorNames.AUTO
    output_names: tuple[str, ...] = ()
    wrap_outputs: bool = True
    rtol: float = 1e-4
    atol: float = 1e-5
    seed: int = 0
    arguments: tuple[tuple[str, bool | int | float | None], ...] = ()  # forward arguments fixed to constants
    list_inputs: tuple[str, ...] = ()  # inputs forward takes as List[Tensor] (split along dim 0)
    outputs: tuple[OutputSpec, ...] = ()  # declared output names / dims, in forward's output order

    def argument(self, name: str):
        return dict(self.arguments)[name]

    @property
    def is_torchscript_file(self) -> bool:
        return not SOURCE_FACTORY_RE.fullmatch(self.source)

    def where(self, field_name: str | None = None) -> str:
        return where(self.origin, self.name, field_name)


@dataclass(frozen=True)
class RepoSpec:
    models: tuple[ModelSpec, ...]
    origin: str = "command line"  # FLAGS_ORIGIN


# ---- parsing -------------------------------------------------------------------------------

MODEL_ONLY_KEYS = {"name", "source", "version", "inputs", "arguments", "list_inputs", "outputs"}
SHARED_KEYS = {
    "export",
    "max_batch_size",
    "instance_group",
    "dynamic_batching",
    "parameters",
    "warmup",
    "version_policy",
    "batch_safe",
    "tensor_names",
    "output_names",
    "wrap_outputs",
    "rtol",
    "atol",
    "seed",
}
MODEL_KEYS = MODEL_ONLY_KEYS | SHARED_KEYS
TOP_KEYS = {"defaults", "model"}


class _Ctx:
    """Carries where we are, so every message names file, model and field."""

    def __init__(self, origin: str, model: str | None = None):
        self.origin = origin
        self.model = model

    def fail(self, field_name: str | None, message: str) -> SpecError:
        if self.origin == FLAGS_ORIGIN and field_name:
            field_name = flag_for(field_name)
        return SpecError(f"{where(self.origin, self.model, field_name)}: {message}")


FLAGS_ORIGIN = "command line"
# Spec fields as the flags that stand in for them, so a message names what the user typed.
FLAG_FOR_FIELD = {
    "name": "--name",
    "source": "--source",
    "inputs": "--input",
    "export": "--export",
    "max_batch_size": "--max-batch-size",
    "instance_group": "--instance-group",
    "dynamic_batching": "--dynamic-batching",
    "dynamic_batching.max_queue_delay_microseconds": "--max-queue-delay",
    "version": "--version",
}


def flag_for(field_name: str) -> str:
    """`inputs[1].shape[0]` -> `--input #2 (shape[0])`; `max_batch_size` -> `--max-batch-size`."""
    if field_name in FLAG_FOR_FIELD:
        return FLAG_FOR_FIELD[field_name]
    m = re.fullmatch(r"(inputs|instance_group)\[(\d+)\]\.?(.*)", field_name)
    if m:
        flag = FLAG_FOR_FIELD[m.group(1)]
        rest = f" ({m.group(3)})" if m.group(3) else ""
        return f"{flag} #{int(m.group(2)) + 1}{rest}"
    return field_name


def _type_name(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _want(ctx: _Ctx, key: str, value: Any, kind: type | tuple[type, ...], hint: str) -> Any:
    # bool is an int in Python; a spec that says `count = true` is a mistake, not 1.
    ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _as_tuple(kind))
    if not ok:
        raise ctx.fail(key, f"expected {hint}, got {_type_name(value)} ({value!r})")
    return value


def _int(ctx: _Ctx, key: str, value: Any, low: int, high: int, what: str = "") -> int:
    """An integer in [low, high]; the message names the field and the allowed range."""
    _want(ctx, key, value, int, "an integer")
    if value < low:
        raise ctx.fail(key, f"must be at least {low}{what}, got {value}")
    if value > high:
        raise ctx.fail(key, f"must be at most {high}{what}, got {value}")
    return value


def _finite(ctx: _Ctx, key: str, value: Any, low: float = 0.0) -> float:
    """A finite number >= low (TOML has nan and inf; neither is a tolerance)."""
    _want(ctx, key, value, (int, float), "a number")
    if not math.isfinite(value):
        raise ctx.fail(key, f"must be a finite number, got {value!r}")
    if value < low:
        raise ctx.fail(key, f"must be >= {low:g}, got {value!r}")
    return float(value)


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _reject_unknown(ctx: _Ctx, table: dict, allowed: set[str], table_name: str) -> None:
    for key in table:
        if key not in allowed:
            close = _closest(key, allowed)
            hint = f" (did you mean `{close}`?)" if close else ""
            raise ctx.fail(
                key,
                f"unknown key in {table_name}{hint}; allowed keys: {', '.join(sorted(allowed))}",
            )


def _closest(word: str, options: set[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.7)
    return found[0] if found else None


def parse_dim(ctx: _Ctx, key: str, value: Any) -> Dim:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ctx.fail(key, f"a dim must be a positive integer or a string 'min..max', got {value!r}")
    if isinstance(value, int):
        if value > MAX_DIM:
            raise ctx.fail(key, f"dim {value} is larger than Triton allows (at most {MAX_DIM})")
        if value <= 0:
            raise ctx.fail(
                key,
                f"dim {value} is not positive; give the size, or 'min..max' for a dynamic dim"
                " (the batch dimension is not listed when max_batch_size > 0)",
            )
        return Dim(value, value)
    match = DIM_RANGE_RE.fullmatch(value)
    if not match:
        raise ctx.fail(key, f"dynamic dim {value!r} is not of the form 'min..max' (e.g. '1..128')")
    lo, hi = int(match.group(1)), int(match.group(2))
    if hi > MAX_DIM:
        raise ctx.fail(key, f"dynamic dim {value!r}: max {hi} is larger than Triton allows (at most {MAX_DIM})")
    if lo <= 0:
        raise ctx.fail(key, f"dynamic dim {value!r}: min must be at least 1")
    if lo > hi:
        raise ctx.fail(key, f"dynamic dim {value!r}: min {lo} is greater than max {hi}; swap them")
    return Dim(lo, hi)


def parse_tensor(ctx: _Ctx, key: str, value: Any) -> TensorSpec:
    _want(ctx, key, value, dict, 'a table like { name = "x", dtype = "float32", shape = [3] }')
    _reject_unknown(ctx, value, {"name", "dtype", "shape", "range"}, key)
    name = value.get("name")
    if name is not None:
        _want(ctx, f"{key}.name", name, str, "a string")
        if not TENSOR_NAME_RE.fullmatch(name):
            raise ctx.fail(
                f"{key}.name",
                f"tensor name {name!r} must be a Python identifier (letters, digits, _),"
                " since it must match a `forward` argument",
            )
    if "dtype" not in value:
        raise ctx.fail(f"{key}.dtype", 'missing; add e.g. dtype = "float32"')
    dtype_name = _want(ctx, f"{key}.dtype", value["dtype"], str, "a string")
    dtype = dtypes.lookup(dtype_name)
    if dtype is None:
        fix = dtypes.refusal_fix(dtype_name.lower())
        if fix:
            raise ctx.fail(
                f"{key}.dtype",
                f"{dtype_name} is not carried by Triton's libtorch backend; {fix}",
            )
        raise ctx.fail(
            f"{key}.dtype",
            f"unknown dtype {dtype_name!r}; use one of {', '.join(dtypes.SUPPORTED)}",
        )
    if "shape" not in value:
        raise ctx.fail(f"{key}.shape", "missing; add e.g. shape = [3, 224, 224] (without the batch dim)")
    shape = _want(ctx, f"{key}.shape", value["shape"], list, "a list of dims")
    # An empty shape is one value per batch row (forward gets [batch]); parse_model checks that the
    # model batches, and the config carries it as dims [1] with reshape [].
    dims = tuple(parse_dim(ctx, f"{key}.shape[{i}]", d) for i, d in enumerate(shape))
    rng = None
    if "range" in value:
        raw = _want(ctx, f"{key}.range", value["range"], list, "a list [low, high]")
        if len(raw) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in raw):
            raise ctx.fail(f"{key}.range", f"expected [low, high] numbers, got {raw!r}")
        lo, hi = raw
        if dtype.name == "bool":
            raise ctx.fail(f"{key}.range", "a bool input takes no range; remove it")
        if not all(math.isfinite(v) for v in raw):
            raise ctx.fail(f"{key}.range", f"bounds must be finite numbers, got {raw!r}")
        if dtype.is_integer and not (isinstance(lo, int) and isinstance(hi, int)):
            raise ctx.fail(f"{key}.range", f"an {dtype.name} input needs integer bounds, got {raw!r}")
        if lo >= hi:
            raise ctx.fail(f"{key}.range", f"low {lo} must be below high {hi} (high is exclusive)")
        low_limit, high_limit = dtypes.value_limits(dtype)
        if lo < low_limit or hi > high_limit or not math.isfinite(hi - lo):
            raise ctx.fail(
                f"{key}.range",
                f"{raw!r} does not fit {dtype.name} (values from {low_limit:g} to {high_limit:g}"
                f"{' exclusive' if dtype.is_integer else ''})",
            )
        rng = (lo, hi)
    return TensorSpec(name=name, dtype=dtype, shape=dims, range=rng)


def check_sample_size(ctx: _Ctx, inputs: tuple[TensorSpec, ...], max_batch_size: int) -> None:
    """Refuse shapes whose sample inputs would not fit in memory, before anything is allocated.

    Verification runs the model at the largest sizes with a batch of up to 4 (the batch-safety check);
    validate sends up to max_batch_size rows. Both are bounded here by the largest verification batch.
    """
    batch = min(max_batch_size, 4) if max_batch_size else 1
    total = 0
    biggest = ("", 0)
    for i, t in enumerate(inputs):
        elements = batch
        for d in t.shape:
            elements *= d.max
        size = elements * t.dtype.to_numpy().itemsize
        total += size
        if size > biggest[1]:
            biggest = (f"inputs[{i}]", size)
    if total > MAX_SAMPLE_BYTES:
        raise ctx.fail(
            f"{biggest[0]}.shape",
            f"a sample input at the largest sizes (batch {batch}) takes {total / 2**30:.3g} GiB; tsrepo runs the"
            f" model on such inputs to verify it and allows {MAX_SAMPLE_BYTES / 2**30:g} GiB. Lower the sizes"
            " or the max of the dynamic dims",
        )


def parse_instance_groups(ctx: _Ctx, value: Any) -> tuple[InstanceGroup, ...]:
    key = "instance_group"
    if isinstance(value, dict):
        value = [value]
    _want(ctx, key, value, list, 'a list of tables like [{ kind = "gpu", count = 1 }]')
    groups = []
    for i, item in enumerate(value):
        k = f"{key}[{i}]"
        _want(ctx, k, item, dict, 'a table like { kind = "gpu", count = 1 }')
        _reject_unknown(ctx, item, {"kind", "count", "gpus"}, k)
        kind_raw = _want(ctx, f"{k}.kind", item.get("kind", "cpu"), str, '"gpu" or "cpu"')
        try:
            kind = Kind(kind_raw.lower())
        except ValueError:
            raise ctx.fail(f"{k}.kind", f'unknown kind {kind_raw!r}; use "gpu" or "cpu"') from None
        count = _int(ctx, f"{k}.count", item.get("count", 1), 1, MAX_INSTANCES, " instances")
        gpus_raw = _want(ctx, f"{k}.gpus", item.get("gpus", []), list, "a list of GPU ids")
        for g in gpus_raw:
            if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g <= MAX_GPU_ID:
                raise ctx.fail(f"{k}.gpus", f"GPU ids are integers from 0 to {MAX_GPU_ID}, got {g!r}")
        if gpus_raw and kind is not Kind.GPU:
            raise ctx.fail(f"{k}.gpus", 'only a kind = "gpu" group takes gpus; remove it or set kind')
        if len(set(gpus_raw)) != len(gpus_raw):
            raise ctx.fail(f"{k}.gpus", f"lists a GPU twice: {gpus_raw}")
        groups.append(InstanceGroup(kind=kind, count=count, gpus=tuple(gpus_raw)))
    return tuple(groups)


def parse_dynamic_batching(ctx: _Ctx, value: Any) -> DynamicBatching | None:
    key = "dynamic_batching"
    if value is False:
        return None
    if value is True:
        return DynamicBatching()
    _want(ctx, key, value, dict, "a table like { max_queue_delay_microseconds = 100 }, or false")
    _reject_unknown(ctx, value, {"max_queue_delay_microseconds", "preferred_batch_size"}, key)
    delay = _int(
        ctx,
        f"{key}.max_queue_delay_microseconds",
        value.get("max_queue_delay_microseconds", 0),
        0,
        MAX_QUEUE_DELAY_US,
        " (one hour)",
    )
    preferred = _want(ctx, f"{key}.preferred_batch_size", value.get("preferred_batch_size", []), list, "a list")
    for p in preferred:
        if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= INT32_MAX:
            raise ctx.fail(f"{key}.preferred_batch_size", f"sizes are integers from 1 to {INT32_MAX}, got {p!r}")
    if len(set(preferred)) != len(preferred):
        raise ctx.fail(f"{key}.preferred_batch_size", f"lists a size twice: {preferred}")
    return DynamicBatching(delay, tuple(preferred))


def parse_parameters(ctx: _Ctx, value: Any) -> tuple[tuple[str, str], ...]:
    key = "parameters"
    _want(ctx, key, value, dict, 'a table like { INFERENCE_MODE = "true" }')
    out = []
    for name, raw in value.items():
        k = f"{key}.{name}"
        if name == "ENABLE_NVFUSER":
            raise ctx.fail(k, "was removed from the libtorch backend (24.x); remove it")
        if name not in BOOL_PARAMETERS | INT_PARAMETERS:
            close = _closest(name, set(BOOL_PARAMETERS | INT_PARAMETERS))
            hint = f" (did you mean `{close}`?)" if close else ""
            raise ctx.fail(
                k,
                "is not a libtorch backend parameter, and the backend would silently ignore it"
                f"{hint}; known: {', '.join(sorted(BOOL_PARAMETERS | INT_PARAMETERS))}",
            )
        if isinstance(raw, bool):
            raw = "true" if raw else "false"
        elif isinstance(raw, int):
            raw = str(raw)
        _want(ctx, k, raw, str, "a string, boolean or integer")
        text = raw.strip()
        if name in BOOL_PARAMETERS and text.lower() not in BOOL_WORDS:
            raise ctx.fail(k, f"{raw!r} is not a boolean; the backend accepts true/on/1/false/off/0")
        if name in INT_PARAMETERS and (
            not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_THREADS
        ):
            raise ctx.fail(k, f"{raw!r} must be a thread count from 1 to {MAX_THREADS}")
        out.append((name, text))
    return tuple(sorted(out))


def parse_version_policy(ctx: _Ctx, value: Any) -> VersionPolicy:
    key = "version_policy"
    _want(ctx, key, value, dict, "a table: { latest = 2 }, { all = true } or { specific = [1, 3] }")
    if len(value) != 1:
        raise ctx.fail(key, "give exactly one of latest, all, specific")
    ((kind, raw),) = value.items()
    if kind == "latest":
        n = _int(ctx, f"{key}.latest", raw, 1, INT32_MAX)
        return VersionPolicy("latest", (n,))
    if kind == "all":
        if raw is not True:
            raise ctx.fail(f"{key}.all", "write all = true")
        return VersionPolicy("all")
    if kind == "specific":
        _want(ctx, f"{key}.specific", raw, list, "a list of versions")
        if not raw or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= INT32_MAX for v in raw):
            raise ctx.fail(f"{key}.specific", f"versions are integers from 1 to {INT32_MAX}, got {raw!r}")
        return VersionPolicy("specific", tuple(sorted(set(raw))))
    raise ctx.fail(key, f"unknown policy {kind!r}; use latest, all or specific")


def parse_warmup(ctx: _Ctx, value: Any) -> Warmup | None:
    if value is False:
        return None
    if value is True:
        return Warmup()
    _want(ctx, "warmup", value, dict, "true, or a table like { batch_size = 1, count = 1 }")
    _reject_unknown(ctx, value, {"batch_size", "count"}, "warmup")
    bs = _int(ctx, "warmup.batch_size", value.get("batch_size", 1), 1, INT32_MAX)
    count = _int(ctx, "warmup.count", value.get("count", 1), 1, MAX_WARMUP_COUNT)
    return Warmup(bs, count)


def validate_model_name(ctx: _Ctx, name: Any) -> str:
    _want(ctx, "name", name, str, "a string")
    if not name:
        raise ctx.fail("name", "is empty; give the model a name of letters, digits, '_', '.', '-'")
    if name in {".", ".."} or ".." in name:
        raise ctx.fail("name", f"{name!r} contains '..'; a model name cannot leave the repository")
    if name.startswith("."):
        raise ctx.fail("name", f"{name!r} starts with '.'; Triton skips hidden folders, so it would never load")
    if len(name) > MAX_NAME_LENGTH:
        raise ctx.fail("name", f"is {len(name)} characters long; keep it to {MAX_NAME_LENGTH}")
    if not NAME_RE.fullmatch(name):
        raise ctx.fail(
            "name",
            f"{name!r} may only contain letters, digits, '_', '.' and '-' (no spaces, control characters or"
            " path separators), and must start with a letter, digit or '_'",
        )
    return name


def parse_model(
    table: dict, defaults: dict, origin: str, base_dir: Path, index: int, require_inputs: bool = True
) -> ModelSpec:
    ctx = _Ctx(origin, f"#{index + 1}")
    _want(ctx, None, table, dict, "a [[model]] table")
    if "name" not in table:
        raise ctx.fail("name", "missing; every [[model]] needs a name")
    name = validate_model_name(ctx, table["name"])
    ctx = _Ctx(origin, name)
    _reject_unknown(ctx, table, MODEL_KEYS, "[[model]]")
    merged = {**defaults, **table}

    if "source" not in merged:
        raise ctx.fail("source", "missing; give 'package.module:factory' or a path to a TorchScript .pt")
    source = _want(ctx, "source", merged["source"], str, "a string")
    if not source.strip():
        raise ctx.fail("source", "is empty")

    if "inputs" not in merged and require_inputs:
        raise ctx.fail(
            "inputs", 'missing; list each forward argument, e.g. [{ name = "x", dtype = "float32", shape = [3] }]'
        )
    raw_inputs = _want(ctx, "inputs", merged.get("inputs", []), list, "a list of tensor tables")
    if not raw_inputs and require_inputs:
        raise ctx.fail("inputs", "is empty; a served model needs at least one input")
    inputs = tuple(parse_tensor(ctx, f"inputs[{i}]", t) for i, t in enumerate(raw_inputs))
    scalar = [i for i, t in enumerate(inputs) if not t.shape]
    names = [t.name for t in inputs if t.name is not None]
    if len(set(names)) != len(names):
        raise ctx.fail("inputs", f"two inputs share a name: {names}")

    export_raw = _want(ctx, "export", merged.get("export", "auto"), str, EXPORT_CHOICES)
    try:
        export = ExportMode(export_raw)
    except ValueError:
        raise ctx.fail("export", f"unknown mode {export_raw!r}; use {EXPORT_CHOICES}") from None

    version = merged.get("version")
    if version is not None:
        _int(ctx, "version", version, 1, INT32_MAX)

    mbs = _int(ctx, "max_batch_size", merged.get("max_batch_size", 0), 0, INT32_MAX, " (0 = no batch dimension)")
    if scalar and mbs == 0:
        raise ctx.fail(
            f"inputs[{scalar[0]}].shape",
            "is empty, which means one value per batch row, but max_batch_size is 0; give the full shape"
            " (e.g. [1]) or set max_batch_size",
        )

    groups = parse_instance_groups(ctx, merged["instance_group"]) if "instance_group" in merged else ()
    batching = parse_dynamic_batching(ctx, merged["dynamic_batching"]) if "dynamic_batching" in merged else None
    if batching is not None and mbs == 0:
        raise ctx.fail(
            "dynamic_batching",
            "needs max_batch_size > 0 (the batcher stacks requests along the batch dimension);"
            " set max_batch_size, or dynamic_batching = false",
        )
    if batching is not None:
        too_big = [p for p in batching.preferred_batch_size if p > mbs]
        if too_big:
            raise ctx.fail(
                "dynamic_batching.preferred_batch_size",
                f"{too_big} exceed max_batch_size {mbs}",
            )

    params = parse_parameters(ctx, merged["parameters"]) if "parameters" in merged else ()
    warmup = parse_warmup(ctx, merged["warmup"]) if "warmup" in merged else None
    if warmup is not None and mbs and warmup.batch_size > mbs:
        raise ctx.fail("warmup.batch_size", f"{warmup.batch_size} exceeds max_batch_size {mbs}")
    if warmup is not None and mbs == 0 and warmup.batch_size != 1:
        raise ctx.fail("warmup.batch_size", "must be 1 when max_batch_size is 0")
    policy = parse_version_policy(ctx, merged["version_policy"]) if "version_policy" in merged else None

    batch_safe = _want(ctx, "batch_safe", merged.get("batch_safe", True), bool, "true or false")
    wrap = _want(ctx, "wrap_outputs", merged.get("wrap_outputs", True), bool, "true or false")
    tn_raw = _want(ctx, "tensor_names", merged.get("tensor_names", "auto"), str, "auto or index")
    try:
        tensor_names = TensorNames(tn_raw)
    except ValueError:
        raise ctx.fail("tensor_names", f"unknown value {tn_raw!r}; use auto or index") from None
    out_names = _want(ctx, "output_names", merged.get("output_names", []), list, "a list of names")
    for o in out_names:
        if not isinstance(o, str) or not TENSOR_NAME_RE.fullmatch(o) or "__" in o:
            raise ctx.fail(
                "output_names",
                f"{o!r} must be an identifier without '__' (tsrepo appends __<index>)",
            )
    if len(set(out_names)) != len(out_names):
        raise ctx.fail("output_names", f"two outputs share a name: {out_names}")
    arguments = parse_arguments(ctx, merged["arguments"], inputs) if "arguments" in merged else ()
    list_inputs = parse_list_inputs(ctx, merged["list_inputs"], inputs) if "list_inputs" in merged else ()
    outputs = parse_outputs(ctx, merged["outputs"]) if "outputs" in merged else ()
    if outputs and any(o.name for o in outputs):
        if out_names:
            raise ctx.fail("outputs", "names the outputs and so does output_names; keep one of them")
        if not all(o.name for o in outputs):
            raise ctx.fail("outputs", "names some outputs and not others; give every entry a name, or none")
        out_names = [o.name for o in outputs]
        if len(set(out_names)) != len(out_names):
            raise ctx.fail("outputs", f"two outputs share a name: {out_names}")
    rtol = _finite(ctx, "rtol", merged.get("rtol", 1e-4))
    atol = _finite(ctx, "atol", merged.get("atol", 1e-5))
    seed = _int(ctx, "seed", merged.get("seed", 0), 0, MAX_SEED)
    check_sample_size(ctx, inputs, mbs)
    if export is ExportMode.AOTI:
        check_aoti_rules(ctx, source.strip(), groups, params, out_names, tensor_names, merged)
        for key in ("arguments", "list_inputs", "outputs"):
            if key in merged:
                raise ctx.fail(key, 'applies to TorchScript exports; export = "aoti" does not take it yet. Remove it')

    return ModelSpec(
        name=name,
        source=source.strip(),
        inputs=inputs,
        origin=origin,
        base_dir=base_dir,
        export=export,
        version=version,
        max_batch_size=mbs,
        instance_groups=groups,
        dynamic_batching=batching,
        parameters=params,
        warmup=warmup,
        version_policy=policy,
        batch_safe=batch_safe,
        tensor_names=tensor_names,
        output_names=tuple(out_names),
        wrap_outputs=wrap,
        rtol=float(rtol),
        atol=float(atol),
        seed=seed,
        arguments=arguments,
        list_inputs=list_inputs,
        outputs=outputs,
    )


ARGUMENT_HINT = 'a constant: "none" (None), true/false, an integer or a number, e.g. { attn_mask = "none" }'


def parse_arguments(ctx: _Ctx, value: Any, inputs: tuple[TensorSpec, ...]) -> tuple:
    """`arguments = { name = "none" | bool | int | float }`: forward arguments fixed, not served."""
    _want(ctx, "arguments", value, dict, 'a table of forward arguments, e.g. { attn_mask = "none" }')
    served = {t.name for t in inputs if t.name}
    out = []
    for name, raw in value.items():
        key = f"arguments.{name}"
        if not TENSOR_NAME_RE.fullmatch(name):
            raise ctx.fail(key, f"{name!r} is not a forward argument name (a Python identifier)")
        if name in served:
            raise ctx.fail(key, f"{name!r} is also an input; an argument is either served (inputs) or fixed here")
        if isinstance(raw, str):
            if raw.lower() != "none":
                raise ctx.fail(key, f"{raw!r} is not a value tsrepo can fix; use {ARGUMENT_HINT}")
            out.append((name, None))
        elif isinstance(raw, (bool, int)):
            if not isinstance(raw, bool) and not -(2**63) <= raw < 2**63:
                raise ctx.fail(key, f"{raw} does not fit a 64-bit integer (TorchScript's int)")
            out.append((name, raw))
        elif isinstance(raw, float):
            if not math.isfinite(raw):
                raise ctx.fail(key, f"must be a finite number, got {raw!r}")
            out.append((name, raw))
        else:
            raise ctx.fail(key, f"expected {ARGUMENT_HINT}; got {_type_name(raw)} ({raw!r})")
    return tuple(out)


def parse_list_inputs(ctx: _Ctx, value: Any, inputs: tuple[TensorSpec, ...]) -> tuple[str, ...]:
    """`list_inputs = ["images"]`: named inputs that forward takes as List[Tensor]."""
    _want(ctx, "list_inputs", value, list, 'a list of input names, e.g. ["images"]')
    names = [t.name for t in inputs]
    for item in value:
        if not isinstance(item, str) or item not in names:
            raise ctx.fail(
                "list_inputs",
                f"{item!r} is not the name of one of the inputs ({', '.join(str(n) for n in names)}); name the input"
                ' (inputs = [{ name = "images", ... }]) and list that name here',
            )
    if len(set(value)) != len(value):
        raise ctx.fail("list_inputs", f"lists an input twice: {value}")
    for item in value:
        t = inputs[names.index(item)]
        if not t.shape:
            raise ctx.fail("list_inputs", f"{item!r} has no dims to split into a list; give its shape")
    return tuple(value)


def parse_outputs(ctx: _Ctx, value: Any) -> tuple[OutputSpec, ...]:
    """`outputs = [{ name = "boxes", dims = [-1, 4] }]`, in forward's output order."""
    _want(ctx, "outputs", value, list, 'a list of tables like { name = "boxes", dims = [-1, 4] }')
    out = []
    for i, item in enumerate(value):
        key = f"outputs[{i}]"
        _want(ctx, key, item, dict, 'a table like { name = "boxes", dims = [-1, 4] }')
        _reject_unknown(ctx, item, {"name", "dims"}, key)
        name = item.get("name")
        if name is not None and (not isinstance(name, str) or not TENSOR_NAME_RE.fullmatch(name) or "__" in name):
            raise ctx.fail(f"{key}.name", f"{name!r} must be an identifier without '__' (tsrepo appends __<index>)")
        dims = None
        if "dims" in item:
            raw = _want(ctx, f"{key}.dims", item["dims"], list, "a list of dims, e.g. [-1, 4]")
            for j, d in enumerate(raw):
                if isinstance(d, bool) or not isinstance(d, int) or not (d == -1 or 1 <= d <= MAX_DIM):
                    raise ctx.fail(
                        f"{key}.dims[{j}]",
                        f"must be a size of at least 1, or -1 where it follows the data; got {d!r}",
                    )
            dims = tuple(raw)
        out.append(OutputSpec(name, dims))
    return tuple(out)


def check_aoti_rules(
    ctx: _Ctx, source: str, groups: tuple[InstanceGroup, ...], params: tuple, out_names: list, tensor_names, merged
) -> None:
    """What `export = "aoti"` cannot take, refused when the spec is read (before any model is imported)."""
    if not SOURCE_FACTORY_RE.fullmatch(source):
        raise ctx.fail(
            "export",
            f'"aoti" exports a Python model with torch.export, and {source!r} is a TorchScript file (torch.export'
            " cannot read one); give the module:factory that builds the model, or keep export = \"script\"",
        )
    # A package is compiled for one device, so one model cannot have CPU and GPU instances.
    if len({g.kind for g in groups}) > 1:
        raise ctx.fail(
            "instance_group",
            "mixes gpu and cpu groups; an AOTInductor package is compiled for one device, so give one kind",
        )
    if params:
        raise ctx.fail(
            "parameters",
            "are libtorch (TorchScript) backend parameters; they do not apply to platform torch_aoti."
            " Remove them (in [defaults] too) for this model",
        )
    # The backend binds .pt2 tensors by position (INPUT__i / OUTPUT__i); free names fail to load.
    if out_names:
        raise ctx.fail(
            "output_names",
            "cannot name a torch_aoti model's outputs: the backend binds them by position as OUTPUT__<i>"
            " (a free name fails when the instance is created). Remove output_names for this model",
        )
    if "tensor_names" in merged and tensor_names is not TensorNames.INDEX:
        raise ctx.fail(
            "tensor_names",
            'a torch_aoti model\'s inputs are always INPUT__<i> (the backend cannot bind forward\'s argument'
            ' names); write tensor_names = "index" or remove it',
        )


def parse_spec(data: Any, origin: str, base_dir: Path, require_inputs: bool = True) -> RepoSpec:
    """Validate a parsed TOML document. Raises SpecError naming file, model and field."""
    ctx = _Ctx(origin)
    if not isinstance(data, dict):
        raise ctx.fail(None, "the spec must be a TOML table")
    _reject_unknown(ctx, data, TOP_KEYS, "the top level (use [defaults] and [[model]])")
    defaults = data.get("defaults", {})
    _want(ctx, "defaults", defaults, dict, "a [defaults] table")
    _reject_unknown(ctx, defaults, SHARED_KEYS, "[defaults]")
    models_raw = data.get("model")
    if models_raw is None:
        raise ctx.fail("model", "no [[model]] tables; add at least one")
    _want(ctx, "model", models_raw, list, "an array of [[model]] tables")
    if not models_raw:
        raise ctx.fail("model", "no [[model]] tables; add at least one")
    models = [parse_model(t, defaults, origin, base_dir, i, require_inputs) for i, t in enumerate(models_raw)]
    check_repository_rules(models, origin)
    return RepoSpec(models=tuple(models), origin=origin)


def check_repository_rules(models: list[ModelSpec], origin: str) -> None:
    seen: dict[str, int] = {}
    for m in models:
        if m.name in seen:
            raise SpecError(f"{where(origin, m.name, 'name')}: two models are named {m.name!r}; rename one")
        seen[m.name] = 1
    inter = [m.name for m in models if any(k == "INTER_OP_THREAD_COUNT" for k, _ in m.parameters)]
    if len(inter) > 1:
        raise SpecError(
            f"{where(origin, inter[1], 'parameters.INTER_OP_THREAD_COUNT')}: also set on"
            f" {inter[0]!r}; the setting is process-wide and two models with it crash the server"
            " ('cannot set number of interop threads after parallel work has started');"
            " keep it on one model"
        )


def load_spec(path: str | Path) -> RepoSpec:
    path = Path(path)
    origin = str(path)
    if not path.is_file():
        raise SpecError(f"{origin}: spec file not found; create it or pass --source for one model")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise SpecError(f"{origin}: not UTF-8 text ({e.reason})") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{origin}: not valid TOML: {e}") from None
    return parse_spec(data, origin, path.resolve().parent)


def parse_input_flag(text: str) -> dict:
    """`NAME:DTYPE:SHAPE` (SHAPE comma-separated, dynamic dims as min..max) -> a tensor table."""
    parts = text.split(":")
    if len(parts) != 3:
        raise SpecError(
            f"{FLAGS_ORIGIN}: `--input {text}`: expected NAME:DTYPE:SHAPE, e.g. image:float32:3,64,64"
            " or tokens:int64:1..128"
        )
    name, dtype, shape = parts
    dims: list[int | str] = []
    for d in shape.split(","):
        d = d.strip()
        # isascii: str.isdigit() also accepts digits such as '²' that int() refuses.
        dims.append(int(d) if d.lstrip("-").isascii() and d.lstrip("-").isdigit() else d)
    table: dict = {"dtype": dtype, "shape": dims}
    if name:
        table["name"] = name
    return table


def parse_instance_group_flag(text: str) -> dict:
    """`KIND[:COUNT]` (e.g. gpu:1, cpu:2) -> an instance_group table; the spec rules check the values."""
    kind, sep, count = text.partition(":")
    table: dict = {"kind": kind.strip()}
    if sep:
        count = count.strip()
        digits = count.lstrip("-")
        if not (digits.isascii() and digits.isdigit()):
            raise SpecError(
                f"{FLAGS_ORIGIN}: `--instance-group {text}`: the count must be a whole number of instances"
                f" (at least 1), e.g. cpu:2; got {count!r}"
            )
        table["count"] = int(count)
    return table


@dataclass(frozen=True)
class ModelFlags:
    """The flags of `tsrepo build --source ...`: one model without a spec file."""

    source: str
    name: str | None = None
    inputs: tuple[str, ...] = ()
    export: str | None = None
    max_batch_size: int | None = None
    instance_group: str | None = None
    dynamic_batching: bool | None = None
    max_queue_delay: int | None = None
    version: int | None = None


def spec_from_model_flags(flags: ModelFlags, base_dir: Path | None = None) -> RepoSpec:
    """One model from `build --source` flags, checked by the same rules as a spec file."""
    if not flags.name:
        raise SpecError(f"{FLAGS_ORIGIN}: `--name` is missing; --source needs a model name")
    fields: dict = {
        "name": flags.name,
        "source": flags.source,
        "inputs": [parse_input_flag(i) for i in flags.inputs],
        "export": flags.export,
        "max_batch_size": flags.max_batch_size,
        "version": flags.version,
    }
    if flags.instance_group is not None:
        fields["instance_group"] = [parse_instance_group_flag(flags.instance_group)]
    if flags.dynamic_batching is False and flags.max_queue_delay is not None:
        raise SpecError(f"{FLAGS_ORIGIN}: `--max-queue-delay` needs dynamic batching; drop --no-dynamic-batching")
    if flags.dynamic_batching is False:
        fields["dynamic_batching"] = False
    elif flags.dynamic_batching or flags.max_queue_delay is not None:
        fields["dynamic_batching"] = {"max_queue_delay_microseconds": flags.max_queue_delay or 0}
    return spec_from_flags(fields, base_dir)


def doctor_spec(
    source: str,
    inputs: tuple[str, ...] = (),
    max_batch_size: int = 0,
    allow_trace: bool = False,
    export: str | None = None,
):
    """What `tsrepo doctor SOURCE` checks: every model of a spec file, or one `module:callable` with optional
    example inputs (without them the model is only scripted). `export="aoti"` diagnoses torch.export instead."""
    path = Path(source)
    if source.endswith(".toml") or path.is_file():
        if inputs:
            raise SpecError(f"{FLAGS_ORIGIN}: `--input` is for a module:callable SOURCE; {source} lists its inputs")
        return load_spec(path)
    if ":" not in source:
        raise SpecError(
            f"{FLAGS_ORIGIN}: SOURCE {source!r} is neither an existing spec file nor module:callable"
            " (e.g. examples.vision:build_resnet_small)"
        )
    # The model's name only labels the report: derive a valid one from the callable's name.
    name = re.sub(r"[^A-Za-z0-9_]", "_", source.rpartition(":")[2])[:MAX_NAME_LENGTH]
    fields = {
        "name": name if NAME_RE.fullmatch(name) else "model",
        "source": source,
        "inputs": [parse_input_flag(i) for i in inputs],
        "max_batch_size": max_batch_size,
        "export": export or ("trace" if allow_trace else "script"),
    }
    return spec_from_flags(fields, require_inputs=False)


def spec_from_flags(fields: dict, base_dir: Path | None = None, require_inputs: bool = True) -> RepoSpec:
    """One model from CLI flags, validated by the same rules as a spec file.

    `require_inputs=False` is for `tsrepo doctor`, which can script a model without example inputs.
    """
    fields = {k: v for k, v in fields.items() if v is not None}
    if not require_inputs and not fields.get("inputs"):
        fields.pop("inputs", None)
    return parse_spec({"model": [fields]}, FLAGS_ORIGIN, base_dir or Path.cwd(), require_inputs)


__all__ = [
    "Dim",
    "DynamicBatching",
    "ExportMode",
    "InstanceGroup",
    "Kind",
    "ModelFlags",
    "ModelSpec",
    "OutputSpec",
    "RepoSpec",
    "TensorNames",
    "TensorSpec",
    "VersionPolicy",
    "Warmup",
    "load_spec",
    "parse_input_flag",
    "parse_spec",
    "spec_from_flags",
    "spec_from_model_flags",
]
