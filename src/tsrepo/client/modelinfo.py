"""What the client knows about a model from the repository: config, tsrepo.json, model.pt."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo import dtypes, sampling
from tsrepo.errors import TsrepoError
from tsrepo.repository import CONFIG_FILE, META_FILE, MODEL_FILE, existing_versions


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
    meta: dict
    inputs: list[TensorInfo]  # config order
    outputs: list[str]

    @property
    def max_batch_size(self) -> int:
        return self.config.max_batch_size

    def versions(self) -> list[int]:
        return existing_versions(self.folder)

    def model_path(self, version: int) -> Path:
        return self.folder / str(version) / MODEL_FILE

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


def load(repo: Path, name: str) -> ModelInfo:
    folder = Path(repo) / name
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise TsrepoError(f"{cfg_path}: not found; is {name!r} in the repository {repo}? (--repo)")
    try:
        cfg = text_format.Parse(cfg_path.read_text(), pb.ModelConfig())
    except text_format.ParseError as e:
        raise TsrepoError(f"{cfg_path}: Triton's schema rejects it: {e}") from None
    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    by_name = {t["name"]: t for t in meta.get("inputs", [])}
    inputs = []
    for i, inp in enumerate(cfg.input):
        m = by_name.get(inp.name)
        dtype = dtypes.BY_TRITON.get(pb.DataType.Name(inp.data_type))
        if dtype is None or dtype is dtypes.STRING:
            raise TsrepoError(f"{cfg_path}: input {inp.name!r} has a type tsrepo cannot generate")
        reshape = tuple(inp.reshape.shape) if inp.HasField("reshape") else None
        if m is not None and reshape is not None:
            dims = tuple(inp.dims)  # what clients send; tsrepo.json holds the reshaped (model) shape
            rng = tuple(m["range"]) if m.get("range") else None
            arg = m.get("argument", i)
        elif m is not None:
            dims = tuple(d if isinstance(d, int) else (d[0], d[1]) for d in m["shape"])
            rng = tuple(m["range"]) if m.get("range") else None
            arg = m.get("argument", i)
        else:
            if any(d == -1 for d in inp.dims):
                raise TsrepoError(
                    f"{meta_path}: missing, and input {inp.name!r} has a dynamic dim; rebuild with"
                    " `tsrepo build` (which records dim ranges), or pass --input-data"
                )
            dims, rng, arg = tuple(inp.dims), None, i
        inputs.append(TensorInfo(inp.name, dtype, dims, rng, arg, reshape))
    return ModelInfo(name, folder, cfg, meta, inputs, [o.name for o in cfg.output])


def config_dict(cfg: pb.ModelConfig) -> dict:
    return json_format.MessageToDict(cfg, preserving_proto_field_name=True)


def list_models(repo: Path) -> list[str]:
    repo = Path(repo)
    if not repo.is_dir():
        raise TsrepoError(f"{repo}: no such model repository (--repo)")
    return sorted(p.name for p in repo.iterdir() if (p / CONFIG_FILE).is_file())


def load_input_data(path: Path) -> dict[str, np.ndarray]:
    """--input-data: a .npz of arrays, or JSON {name: nested list} / {name: {"data", "dtype"}}."""
    path = Path(path)
    if not path.is_file():
        raise TsrepoError(f"{path}: --input-data file not found")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        raise TsrepoError(f"{path}: not valid JSON ({e})") from None
    out = {}
    for name, value in doc.items():
        if isinstance(value, dict):
            out[name] = np.array(value["data"], dtype=value.get("dtype"))
        else:
            out[name] = np.array(value)
    return out
