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
    if not NAME_RE.match(name) or name in (".", ".."):
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
                raise TsrepoError(
                    f"{meta_path}: missing, and input {inp.name!r} has a dynamic dim; rebuild with"
                    " `tsrepo build` (which records dim ranges), or pass --input-data"
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
