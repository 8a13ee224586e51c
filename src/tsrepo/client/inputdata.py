"""--input-data: arrays from a .npz or JSON file, checked against the model before anything is sent.

A file that does not fit the model would otherwise run a whole level of HTTP 400s; here it is a
usage error (exit 2) naming the file, the input, the shape given and the shape expected.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tsrepo.errors import UsageError

if TYPE_CHECKING:
    from tsrepo.client.modelinfo import ModelInfo, TensorInfo

OPTION = "--input-data"


def _bad(path: Path, why: str) -> UsageError:
    return UsageError(f"`{OPTION}`: {path}: {why}")


def load(path: Path) -> dict[str, np.ndarray]:
    """A .npz of arrays, or JSON {name: nested list} / {name: {"data": ..., "dtype": "float32"}}."""
    path = Path(path)
    if not path.is_file():
        raise _bad(path, "no such file" if not path.exists() else "not a file")
    if path.suffix.lower() == ".npz":
        data = _load_npz(path)
    else:
        data = _load_json(path)
    if not data:
        raise _bad(path, "holds no arrays")
    for name, arr in data.items():
        if arr.dtype.kind not in "biuf":
            raise _bad(path, f"input {name!r}: {arr.dtype} data is not numbers or booleans")
    return data


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    # numpy takes anything that is not a zip or .npy for a pickle: say what the file really is instead.
    if not zipfile.is_zipfile(path):
        raise _bad(path, "not a .npz archive (write one with numpy.savez(path, name=array, ...))")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        for k, v in out.items():
            if not isinstance(v, np.ndarray):  # a member that is not a .npy file comes back as raw bytes
                raise _bad(path, f"member {k!r} is not a numpy array (.npy); write the file with numpy.savez")
        return out
    except ValueError as e:
        if "allow_pickle" in str(e):
            why = "holds pickled (object) arrays, which are never loaded; save plain numeric arrays"
            raise _bad(path, why) from None
        raise _bad(path, f"not a readable .npz file ({e})") from None
    except UsageError:
        raise
    except Exception as e:  # numpy's format reader raises many kinds for a corrupt member
        raise _bad(path, f"not a readable .npz file ({type(e).__name__}: {e})") from None


def _load_json(path: Path) -> dict[str, np.ndarray]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(path, f"not valid JSON ({e}); give a .npz, or JSON like {{\"x\": [[1, 2]]}}") from None
    except RecursionError:
        raise _bad(path, "nested too deeply to be an array of inputs") from None
    except OSError as e:
        raise _bad(path, f"cannot be read ({e.strerror or e})") from None
    if not isinstance(doc, dict):
        raise _bad(path, f"must hold a JSON object of input name -> array, not a {type(doc).__name__}")
    out = {}
    for name, value in doc.items():
        dtype = None
        if isinstance(value, dict):
            if "data" not in value:
                raise _bad(path, f"input {name!r}: an object needs a `data` field (and optionally `dtype`)")
            value, dtype = value["data"], value.get("dtype")
        try:
            out[name] = np.array(value, dtype=dtype)
        except (ValueError, TypeError, OverflowError, RecursionError) as e:
            raise _bad(path, f"input {name!r}: not a rectangular array of numbers ({type(e).__name__})") from None
    return out


def _expected(t: TensorInfo, batch: int | None) -> str:
    dims = [str(batch)] if batch is not None else []
    for d in t.dims:
        dims.append(f"{d[0]}..{d[1]}" if isinstance(d, tuple) else ("any" if d == -1 else str(d)))
    return "[" + ", ".join(dims) + "]"


def _dim_fits(size: int, d) -> bool:
    if isinstance(d, tuple):
        return d[0] <= size <= d[1]
    return d == -1 or size == d


def fit(data: dict[str, np.ndarray], info: ModelInfo, batch_size: int, path: Path) -> dict[str, np.ndarray]:
    """The arrays as requests carry them: cast to the model's dtypes, a batch dim of `batch_size`."""
    wanted = [t.name for t in info.inputs]
    missing = [n for n in wanted if n not in data]
    extra = [n for n in data if n not in wanted]
    if missing or extra:
        parts = ([f"no data for input(s) {missing}"] if missing else []) + (
            [f"unknown input(s) {extra}"] if extra else []
        )
        raise _bad(path, f"{'; '.join(parts)}; model {info.name!r} takes {wanted}")
    batched = info.max_batch_size > 0
    out = {}
    for t in info.inputs:
        arr = np.asarray(data[t.name])
        given = list(arr.shape)
        target = t.dtype.to_numpy()
        if not np.can_cast(arr.dtype, target, casting="same_kind"):
            raise _bad(path, f"input {t.name!r}: {arr.dtype} data cannot be cast to the model's {target}")
        if batched and arr.ndim == len(t.dims):
            arr = np.repeat(arr[None], batch_size, axis=0)  # one row, repeated to --batch-size
        expected = _expected(t, batch_size if batched else None)
        if arr.ndim != len(t.dims) + batched:
            raise _bad(path, f"input {t.name!r}: shape {given} given, {expected} expected (rank differs)")
        if batched and arr.shape[0] != batch_size:
            raise _bad(
                path,
                f"input {t.name!r}: shape {list(arr.shape)} holds {arr.shape[0]} rows, --batch-size is {batch_size}"
                f" ({expected} expected; or give one row without the batch dim)",
            )
        if not all(_dim_fits(n, d) for n, d in zip(arr.shape[batched:], t.dims, strict=True)):
            raise _bad(path, f"input {t.name!r}: shape {given} given, {expected} expected")
        out[t.name] = np.ascontiguousarray(arr.astype(target))
    return out
