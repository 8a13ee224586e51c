"""What the client knows about a model from the repository: config, tsrepo.json, model.pt."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo import dtypes, modelfile, sampling
from tsrepo.client import inputdata
from tsrepo.errors import TsrepoError, UsageError
from tsrepo.meta import ModelMeta
from tsrepo.meta import load_model as load_meta
from tsrepo.repository import CONFIG_FILE, META_FILE, existing_versions
from tsrepo.spec import NAME_RE


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: dtypes.DType
    dims: tuple  # per dim: int, or (min, max) for a dynamic dim
    range: tuple | None = None
    argument: int = 0
    reshape: tuple | None = None  # the shape forward sees (without batch), when the config reshapes

    def for_model(self, arr: np.ndarray, batched: bool) -> np.ndarray:
        """The array as forward receives it: Triton applies the config's reshape before the backend."""
        if self.reshape is None:
            return arr
        return arr.reshape((arr.shape[:1] if batched else ()) + tuple(self.reshape))


@dataclass
class ModelInfo:
    name: str
    folder: Path
    config: pb.ModelConfig
    meta: ModelMeta | None  # None when the repository has no tsrepo.json for it
    inputs: list[TensorInfo]  # config order
    outputs: list[str]

    @property
    def max_batch_size(self) -> int:
        return self.config.max_batch_size

    @property
    def rtol(self) -> float:
        return self.meta.rtol if self.meta else 1e-4

    @property
    def atol(self) -> float:
        return self.meta.atol if self.meta else 1e-5

    def recorded_sha256(self, version: int) -> str | None:
        entry = self.meta.versions.get(version) if self.meta else None
        return entry.sha256 if entry else None

    def versions(self) -> list[int]:
        return existing_versions(self.folder)

    def model_path(self, version: int) -> Path:
        return self.folder / str(version) / modelfile.file_name(self.config)

    def sample(self, rng: np.random.Generator, batch: int, size: str = "mid") -> dict[str, np.ndarray]:
        """Inputs drawn from the signature: dynamic dims at min, mid, max or random; ranges respected.

        Dynamic dims with the same range get the same size, so inputs that share a dim agree.
        """
        chosen: dict[tuple, int] = {}
        arrays = {}
        for t in self.inputs:
            shape = [batch] if self.max_batch_size > 0 else []
            for d in t.dims:
                if isinstance(d, int):
                    shape.append(d)
                    continue
                lo, hi = d
                if d not in chosen:
                    chosen[d] = {"min": lo, "max": hi, "mid": (lo + hi) // 2}.get(size) or int(rng.integers(lo, hi + 1))
                shape.append(chosen[d])
            arrays[t.name] = sampling.sample(t.dtype, shape, rng, t.range)
        return arrays


def check_repo(repo: Path) -> Path:
    """The repository folder, or UsageError naming `--repo`."""
    repo = Path(repo)
    if not repo.exists():
        raise UsageError(f"`--repo`: {repo}: no such folder; give the model repository `tsrepo build` wrote")
    if not repo.is_dir():
        raise UsageError(f"`--repo`: {repo} is a file; give the model repository folder")
    return repo


def check_model_name(name: str, option: str) -> str:
    """A model name that stays inside the repository (the same rule build applies)."""
    if not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise UsageError(
            f"`{option}`: {name!r} is not a model name: use letters, digits, '_', '.' and '-'"
            " (no path separators, no '..')"
        )
    return name


def read_config(cfg_path: Path) -> pb.ModelConfig:
    try:
        return text_format.Parse(cfg_path.read_text(encoding="utf-8"), pb.ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise TsrepoError(f"{cfg_path}: not a model config Triton can read ({e}); build the model again") from None
    except OSError as e:
        raise TsrepoError(f"{cfg_path}: cannot be read ({e.strerror or e})") from None


def load(repo: Path, name: str, option: str = "--model") -> ModelInfo:
    repo = check_repo(repo)
    check_model_name(name, option)
    folder = repo / name
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise UsageError(f"`{option}`: {cfg_path}: not found; is {name!r} in the repository {repo}? (--repo)")
    cfg = read_config(cfg_path)
    record = load_meta(folder)
    meta_path = folder / META_FILE
    inputs = []
    for i, inp in enumerate(cfg.input):
        m = record.input(inp.name) if record else None
        dtype = dtypes.BY_TRITON.get(pb.DataType.Name(inp.data_type))
        if dtype is None or dtype is dtypes.STRING:
            raise TsrepoError(f"{cfg_path}: input {inp.name!r} has a type tsrepo cannot generate")
        reshape = tuple(inp.reshape.shape) if inp.HasField("reshape") else None
        if m is not None and reshape is not None:
            dims = tuple(inp.dims)  # what clients send; tsrepo.json holds the reshaped (model) shape
            rng, arg = m.range, m.argument
        elif m is not None:
            dims, rng, arg = m.shape, m.range, m.argument
        else:
            if any(d == -1 for d in inp.dims):
                what = "has no entry for" if record is not None else "is missing, and"
                raise TsrepoError(
                    f"{meta_path}: {what} input {inp.name!r}, which has a dynamic dim; rebuild with `tsrepo build`"
                    " (which records dim ranges); bench can also take --input-data or --shape"
                )
            dims, rng, arg = tuple(inp.dims), None, i
        inputs.append(TensorInfo(inp.name, dtype, dims, rng, arg, reshape))
    return ModelInfo(name, folder, cfg, record, inputs, [o.name for o in cfg.output])


def list_models(repo: Path) -> list[str]:
    repo = check_repo(repo)
    names = sorted(p.name for p in repo.iterdir() if (p / CONFIG_FILE).is_file())
    if not names:
        raise UsageError(f"`--repo`: {repo} holds no models (no <model>/{CONFIG_FILE}); build one with `tsrepo build`")
    return names


# --input-data lives in inputdata.py; kept here under its old name for callers.
load_input_data = inputdata.load


# ---- from a running server (no repository) -----------------------------------------------------


def parse_shape(text: str, option: str = "--shape") -> tuple[str, tuple[int, ...]]:
    """NAME:D1,D2,... (the dims without the batch dim, as perf_analyzer's --shape)."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name:
        raise UsageError(f"`{option}`: expected NAME:D1,D2 (dims without the batch dim), got {text!r}")
    try:
        values = tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise UsageError(f"`{option}`: {text!r}: dims must be whole numbers separated by commas") from None
    if any(d < 0 for d in values):
        raise UsageError(f"`{option}`: {text!r}: dims must be >= 0")
    return name, values


def parse_range(text: str, option: str = "--range") -> tuple[str, tuple[int, int]]:
    """NAME:LOW:HIGH, the inclusive range integer input values are drawn from."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise UsageError(f"`{option}`: expected NAME:LOW:HIGH, got {text!r}")
    try:
        low, high = int(parts[1]), int(parts[2])
    except ValueError:
        raise UsageError(f"`{option}`: {text!r}: LOW and HIGH must be whole numbers") from None
    if low > high:
        raise UsageError(f"`{option}`: {text!r}: LOW must be <= HIGH")
    return parts[0], (low, high)


def with_overrides(
    info: ModelInfo, shapes: dict[str, tuple[int, ...]], ranges: dict[str, tuple[int, int]]
) -> ModelInfo:
    """`info` with --shape and --range applied; every name must be an input, every shape must fit."""
    names = [t.name for t in info.inputs]
    for option, given in (("--shape", shapes), ("--range", ranges)):
        unknown = [n for n in given if n not in names]
        if unknown:
            raise UsageError(f"`{option}`: model {info.name!r} has no input {unknown[0]!r}; its inputs are {names}")
    inputs = []
    for t in info.inputs:
        dims, rng = t.dims, t.range
        if t.name in shapes:
            shape = shapes[t.name]
            fits = len(shape) == len(t.dims) and all(
                d == -1 or (isinstance(d, tuple) and d[0] <= s <= d[1]) or d == s
                for d, s in zip(t.dims, shape, strict=True)
            )
            if not fits:
                raise UsageError(
                    f"`--shape`: {t.name}:{','.join(map(str, shape))} does not fit input {t.name!r}, whose dims are"
                    f" {_dims_text(t.dims)} (without the batch dim)"
                )
            dims = shape
        if t.name in ranges:
            if t.dtype.is_float or t.dtype.name == "bool":
                raise UsageError(f"`--range`: input {t.name!r} is {t.dtype.name}; ranges are for integer inputs")
            rng = ranges[t.name]
        inputs.append(TensorInfo(t.name, t.dtype, tuple(dims), rng, t.argument, t.reshape))
    return ModelInfo(info.name, info.folder, info.config, info.meta, inputs, info.outputs)


def require_shapes(info: ModelInfo) -> None:
    """Refuse to draw inputs for a dim nobody sized (a server's config says only -1)."""
    for t in info.inputs:
        if any(d == -1 for d in t.dims):
            raise UsageError(
                f"`--shape`: input {t.name!r} of model {info.name!r} has a dynamic dim {_dims_text(t.dims)};"
                f" give its size, e.g. --shape {t.name}:{','.join('8' if d == -1 else str(d) for d in t.dims)}"
            )


def _dims_text(dims: tuple) -> str:
    return "[" + ", ".join(f"{d[0]}..{d[1]}" if isinstance(d, tuple) else str(d) for d in dims) + "]"


def from_server(client, name: str) -> ModelInfo:
    """What bench needs from a server whose repository is not here: the model's config (inputs,
    dtypes, dims, max_batch_size), checked against its metadata. Dynamic dims stay -1 until --shape."""
    from google.protobuf import json_format

    cfg = json_format.ParseDict(client.config(name), pb.ModelConfig(), ignore_unknown_fields=True)
    metadata = client.metadata(name)
    wire = {t.get("name"): t.get("datatype") for t in metadata.get("inputs", [])}
    inputs = []
    for i, inp in enumerate(cfg.input):
        dtype = dtypes.BY_TRITON.get(pb.DataType.Name(inp.data_type))
        if dtype is None or dtype is dtypes.STRING:
            raise UsageError(
                f"`MODEL`: input {inp.name!r} of {name!r} is {pb.DataType.Name(inp.data_type)}, which bench cannot"
                " generate; give --input-data"
            )
        if wire.get(inp.name) not in (None, dtype.wire):
            raise TsrepoError(
                f"{name}: the server's config says input {inp.name!r} is {dtype.wire}, its metadata says"
                f" {wire[inp.name]}"
            )
        inputs.append(TensorInfo(inp.name, dtype, tuple(int(d) for d in inp.dims), None, i))
    return ModelInfo(name, None, cfg, None, inputs, [o.name for o in cfg.output])
