"""The spec: frozen dataclasses, validated at the edge.

A spec is a TOML file (``tsrepo.toml``) with an optional ``[defaults]`` table and one or more
``[[model]]`` tables, or the same fields given as CLI flags for one model. Every error names the
file, the model and the field, and says how to fix it. Unknown keys are errors: a typo must not
be silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import tomllib

from tsrepo import dtypes
from tsrepo.errors import SpecError, where

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
TENSOR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DIM_RANGE_RE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")
SOURCE_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

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

    @property
    def is_torchscript_file(self) -> bool:
        return not SOURCE_FACTORY_RE.match(self.source)

    def where(self, field_name: str | None = None) -> str:
        return where(self.origin, self.name, field_name)


@dataclass(frozen=True)
class RepoSpec:
    models: tuple[ModelSpec, ...]
    origin: str = "command line"


# ---- parsing -------------------------------------------------------------------------------

MODEL_ONLY_KEYS = {"name", "source", "version", "inputs"}
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
        return SpecError(f"{where(self.origin, self.model, field_name)}: {message}")


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
        if value <= 0:
            raise ctx.fail(
                key,
                f"dim {value} is not positive; give the size, or 'min..max' for a dynamic dim"
                " (the batch dimension is not listed when max_batch_size > 0)",
            )
        return Dim(value, value)
    match = DIM_RANGE_RE.match(value)
    if not match:
        raise ctx.fail(key, f"dynamic dim {value!r} is not of the form 'min..max' (e.g. '1..128')")
    lo, hi = int(match.group(1)), int(match.group(2))
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
        if not TENSOR_NAME_RE.match(name):
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
        if dtype.is_integer and not (isinstance(lo, int) and isinstance(hi, int)):
            raise ctx.fail(f"{key}.range", f"an {dtype.name} input needs integer bounds, got {raw!r}")
        if lo >= hi:
            raise ctx.fail(f"{key}.range", f"low {lo} must be below high {hi} (high is exclusive)")
        if dtype.name == "bool":
            raise ctx.fail(f"{key}.range", "a bool input takes no range; remove it")
        rng = (lo, hi)
    return TensorSpec(name=name, dtype=dtype, shape=dims, range=rng)


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
        count = _want(ctx, f"{k}.count", item.get("count", 1), int, "an integer")
        if count < 1:
            raise ctx.fail(f"{k}.count", f"must be at least 1, got {count}")
        gpus_raw = _want(ctx, f"{k}.gpus", item.get("gpus", []), list, "a list of GPU ids")
        for g in gpus_raw:
            if isinstance(g, bool) or not isinstance(g, int) or g < 0:
                raise ctx.fail(f"{k}.gpus", f"GPU ids are integers >= 0, got {g!r}")
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
    delay = _want(
        ctx,
        f"{key}.max_queue_delay_microseconds",
        value.get("max_queue_delay_microseconds", 0),
        int,
        "an integer",
    )
    if delay < 0:
        raise ctx.fail(f"{key}.max_queue_delay_microseconds", f"must be >= 0, got {delay}")
    preferred = _want(ctx, f"{key}.preferred_batch_size", value.get("preferred_batch_size", []), list, "a list")
    for p in preferred:
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise ctx.fail(f"{key}.preferred_batch_size", f"sizes are integers >= 1, got {p!r}")
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
        if name in INT_PARAMETERS and (not text.isdigit() or int(text) < 1):
            raise ctx.fail(k, f"{raw!r} must be a positive integer thread count")
        out.append((name, text))
    return tuple(sorted(out))


def parse_version_policy(ctx: _Ctx, value: Any) -> VersionPolicy:
    key = "version_policy"
    _want(ctx, key, value, dict, "a table: { latest = 2 }, { all = true } or { specific = [1, 3] }")
    if len(value) != 1:
        raise ctx.fail(key, "give exactly one of latest, all, specific")
    ((kind, raw),) = value.items()
    if kind == "latest":
        n = _want(ctx, f"{key}.latest", raw, int, "an integer")
        if n < 1:
            raise ctx.fail(f"{key}.latest", f"must be at least 1, got {n}")
        return VersionPolicy("latest", (n,))
    if kind == "all":
        if raw is not True:
            raise ctx.fail(f"{key}.all", "write all = true")
        return VersionPolicy("all")
    if kind == "specific":
        _want(ctx, f"{key}.specific", raw, list, "a list of versions")
        if not raw or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in raw):
            raise ctx.fail(f"{key}.specific", f"versions are integers >= 1, got {raw!r}")
        return VersionPolicy("specific", tuple(sorted(set(raw))))
    raise ctx.fail(key, f"unknown policy {kind!r}; use latest, all or specific")


def parse_warmup(ctx: _Ctx, value: Any) -> Warmup | None:
    if value is False:
        return None
    if value is True:
        return Warmup()
    _want(ctx, "warmup", value, dict, "true, or a table like { batch_size = 1, count = 1 }")
    _reject_unknown(ctx, value, {"batch_size", "count"}, "warmup")
    bs = _want(ctx, "warmup.batch_size", value.get("batch_size", 1), int, "an integer")
    count = _want(ctx, "warmup.count", value.get("count", 1), int, "an integer")
    if bs < 1 or count < 1:
        raise ctx.fail("warmup", "batch_size and count must be at least 1")
    return Warmup(bs, count)


def validate_model_name(ctx: _Ctx, name: Any) -> str:
    _want(ctx, "name", name, str, "a string")
    if not name:
        raise ctx.fail("name", "is empty; give the model a name of letters, digits, '_', '.', '-'")
    if name in {".", ".."} or ".." in name:
        raise ctx.fail("name", f"{name!r} contains '..'; a model name cannot leave the repository")
    if not NAME_RE.match(name):
        raise ctx.fail(
            "name",
            f"{name!r} may only contain letters, digits, '_', '.' and '-' (no spaces or path separators)",
        )
    return name


def parse_model(table: dict, defaults: dict, origin: str, base_dir: Path, index: int) -> ModelSpec:
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

    if "inputs" not in merged:
        raise ctx.fail(
            "inputs", 'missing; list each forward argument, e.g. [{ name = "x", dtype = "float32", shape = [3] }]'
        )
    raw_inputs = _want(ctx, "inputs", merged["inputs"], list, "a list of tensor tables")
    if not raw_inputs:
        raise ctx.fail("inputs", "is empty; a served model needs at least one input")
    inputs = tuple(parse_tensor(ctx, f"inputs[{i}]", t) for i, t in enumerate(raw_inputs))
    scalar = [i for i, t in enumerate(inputs) if not t.shape]
    names = [t.name for t in inputs if t.name is not None]
    if len(set(names)) != len(names):
        raise ctx.fail("inputs", f"two inputs share a name: {names}")

    export_raw = _want(ctx, "export", merged.get("export", "auto"), str, "script, trace or auto")
    try:
        export = ExportMode(export_raw)
    except ValueError:
        raise ctx.fail("export", f"unknown mode {export_raw!r}; use script, trace or auto") from None

    version = merged.get("version")
    if version is not None:
        _want(ctx, "version", version, int, "an integer")
        if version < 1:
            raise ctx.fail("version", f"must be at least 1, got {version}")

    mbs = _want(ctx, "max_batch_size", merged.get("max_batch_size", 0), int, "an integer")
    if mbs < 0:
        raise ctx.fail("max_batch_size", f"must be >= 0 (0 = no batch dimension), got {mbs}")
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
        if not isinstance(o, str) or not TENSOR_NAME_RE.match(o) or "__" in o:
            raise ctx.fail(
                "output_names",
                f"{o!r} must be an identifier without '__' (tsrepo appends __<index>)",
            )
    if len(set(out_names)) != len(out_names):
        raise ctx.fail("output_names", f"two outputs share a name: {out_names}")
    rtol = _want(ctx, "rtol", merged.get("rtol", 1e-4), (int, float), "a number")
    atol = _want(ctx, "atol", merged.get("atol", 1e-5), (int, float), "a number")
    if rtol < 0 or atol < 0:
        raise ctx.fail("rtol" if rtol < 0 else "atol", "must be >= 0")
    seed = _want(ctx, "seed", merged.get("seed", 0), int, "an integer")

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
    )


def parse_spec(data: Any, origin: str, base_dir: Path) -> RepoSpec:
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
    models = [parse_model(t, defaults, origin, base_dir, i) for i, t in enumerate(models_raw)]
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
            f"command line: `--input {text}`: expected NAME:DTYPE:SHAPE, e.g. image:float32:3,64,64"
            " or tokens:int64:1..128"
        )
    name, dtype, shape = parts
    dims: list[int | str] = []
    for d in shape.split(","):
        d = d.strip()
        dims.append(int(d) if d.lstrip("-").isdigit() else d)
    table: dict = {"dtype": dtype, "shape": dims}
    if name:
        table["name"] = name
    return table


def spec_from_flags(fields: dict, base_dir: Path | None = None) -> RepoSpec:
    """One model from CLI flags, validated by the same rules as a spec file."""
    fields = {k: v for k, v in fields.items() if v is not None}
    return parse_spec({"model": [fields]}, "command line", base_dir or Path.cwd())


def to_dict(m: ModelSpec) -> dict:
    """A plain-data view for tsrepo.json and messages."""
    return {
        "inputs": [
            {
                "name": t.name,
                "dtype": t.dtype.name,
                "shape": [d.to_json() for d in t.shape],
                **({"range": list(t.range)} if t.range else {}),
            }
            for t in m.inputs
        ],
    }


__all__ = [
    "Dim",
    "DynamicBatching",
    "ExportMode",
    "InstanceGroup",
    "Kind",
    "ModelSpec",
    "RepoSpec",
    "TensorNames",
    "TensorSpec",
    "VersionPolicy",
    "Warmup",
    "load_spec",
    "parse_input_flag",
    "parse_spec",
    "spec_from_flags",
]
