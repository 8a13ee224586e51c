"""tsrepo.json: what validate, bench and compose need and Triton's config cannot hold.

One typed record with one loader and one writer. The policy for a file that is not what tsrepo
wrote (bad JSON, wrong types, an unreadable torch version): `MetaError`, naming the file and the
field, with the fix. It is never silently reset or half-read.

Layout (version 1):
    {"tsrepo": 1, "model": NAME, "max_batch_size": N,
     "inputs": [{"name", "argument", "dtype", "shape": [int | [min, max]], "range"?: [low, high]}],
     "outputs": [{"name", "dtype", "dims"}],
     "tolerance": {"rtol", "atol"},
     "versions": {"1": {"sha256", "torch", "export", "file_format_version", "format"?, "file"?, "device"?,
                        "compile_options"?, ...}}}

`format` ("torchscript" | "aoti_package"), `file`, `device` and `compile_options` came with AOTInductor
packages; a record without them is a TorchScript `model.pt` (what every older tsrepo wrote).

`op_libraries` (optional, written only when the model calls operators outside aten/prim):
    [{"namespace": "my_ops", "ops": ["my_ops::muladd"], "library": "/abs/libmy_ops.so" | null,
      "sha256": "..." | null, "provided_by": "pytorch_backend" | null}]
`library` is the shared library that registers the namespace (loaded with `torch.ops.load_library` by the
local runner; preloaded with LD_PRELOAD by the official server); `provided_by` names a namespace the official
PyTorch backend already links (torchvision's ops since 20.07), which then needs no library.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsrepo.errors import MetaError

META_FILE = "tsrepo.json"
FORMAT_VERSION = 1
MAX_DIM = 2**31 - 1
MAX_SAMPLE_ELEMENTS = 1 << 28  # per row; spec.MAX_SAMPLE_BYTES bounds what build itself writes
TORCH_VERSION_RE = re.compile(r"^(\d+)\.(\d+)")


def torch_minor(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version string such as 2.13.0+cpu or 2.5.0a0+e000cf0ad9."""
    m = TORCH_VERSION_RE.match(version)
    if m is None:  # from_json refuses such a record; a version built in code could still hold it
        raise MetaError(f"`torch` is not a torch version like 2.13.0 (got {version!r})")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class InputMeta:
    name: str
    argument: int
    dtype: str
    shape: tuple  # per dim: int, or (min, max) for a dynamic dim (the model's shape, without batch)
    range: tuple[float, float] | None = None

    def to_json(self) -> dict:
        doc: dict = {
            "name": self.name,
            "argument": self.argument,
            "dtype": self.dtype,
            "shape": [list(d) if isinstance(d, tuple) else d for d in self.shape],
        }
        if self.range is not None:
            doc["range"] = list(self.range)
        return doc


@dataclass(frozen=True)
class OutputMeta:
    name: str
    dtype: str
    dims: tuple[int, ...]

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}


@dataclass(frozen=True)
class OpLibraryMeta:
    """Custom operators a model calls: their namespace, the ops, and the library that registers them."""

    namespace: str
    ops: tuple[str, ...]
    library: str | None = None  # absolute path of the shared library, None when the backend provides it
    sha256: str | None = None
    provided_by: str | None = None  # "pytorch_backend" for namespaces the official backend links

    def to_json(self) -> dict:
        return {
            "namespace": self.namespace,
            "ops": list(self.ops),
            "library": self.library,
            "sha256": self.sha256,
            "provided_by": self.provided_by,
        }


@dataclass(frozen=True)
class VersionMeta:
    sha256: str
    torch: str
    export: str
    file_format_version: int | None = None
    extra: dict = field(default_factory=dict)  # keys a newer tsrepo wrote: kept as they are
    format: str = "torchscript"  # torchscript | aoti_package
    file: str = "model.pt"  # the model file inside the version folder
    device: str | None = None  # aoti_package: what it was compiled for (cpu | cuda)
    compile_options: dict | None = None  # aoti_package: the inductor configs passed to the compiler

    def to_json(self) -> dict:
        doc = {
            "sha256": self.sha256,
            "torch": self.torch,
            "export": self.export,
            "file_format_version": self.file_format_version,
        }
        if self.format != "torchscript":
            # TorchScript records stay as older tsrepo wrote them, so golden files do not churn.
            doc["format"], doc["file"] = self.format, self.file
            doc["device"], doc["compile_options"] = self.device, self.compile_options
        return {**doc, **self.extra}

    def torch_minor(self) -> tuple[int, int]:
        """(major, minor) of the exporting torch; checked when the record is loaded."""
        return torch_minor(self.torch)


@dataclass(frozen=True)
class ModelMeta:
    model: str
    max_batch_size: int
    inputs: tuple[InputMeta, ...]
    outputs: tuple[OutputMeta, ...]
    rtol: float
    atol: float
    versions: dict[int, VersionMeta] = field(default_factory=dict)
    op_libraries: tuple[OpLibraryMeta, ...] = ()

    def libraries(self) -> list[str]:
        """The shared libraries a server must load before this model (none for backend-provided ops)."""
        return [o.library for o in self.op_libraries if o.library]

    def input(self, name: str) -> InputMeta | None:
        return next((i for i in self.inputs if i.name == name), None)

    def with_version(self, version: int, entry: VersionMeta, keep: set[int] | None = None) -> ModelMeta:
        """This record with `entry` for `version`; other versions kept where `keep` lists them."""
        versions = {v: e for v, e in self.versions.items() if keep is None or v in keep}
        versions[version] = entry
        return ModelMeta(
            self.model,
            self.max_batch_size,
            self.inputs,
            self.outputs,
            self.rtol,
            self.atol,
            dict(sorted(versions.items())),
            self.op_libraries,
        )

    def to_json(self) -> dict:
        doc = {
            "tsrepo": FORMAT_VERSION,
            "model": self.model,
            "max_batch_size": self.max_batch_size,
            "inputs": [i.to_json() for i in self.inputs],
            "outputs": [o.to_json() for o in self.outputs],
            "tolerance": {"rtol": self.rtol, "atol": self.atol},
            "versions": {str(v): e.to_json() for v, e in sorted(self.versions.items())},
        }
        if self.op_libraries:  # only where there are any: older records and golden files stay as they were
            doc["op_libraries"] = [o.to_json() for o in self.op_libraries]
        return doc

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"


# ---- loading -----------------------------------------------------------------------------------


class _Reader:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, message: str) -> MetaError:
        return MetaError(
            f"{self.path}: `{where}` {message}; this file is written by `tsrepo build`: remove it and build"
            " the model again"
        )

    def get(self, doc: dict, key: str, kinds: type | tuple, where: str, required: bool = True, default=None):
        if key not in doc:
            if required:
                raise self.fail(where, "is missing")
            return default
        value = doc[key]
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise self.fail(where, f"has the wrong type ({type(value).__name__}: {value!r:.60})")
        return value

    def number(self, doc: dict, key: str, where: str, default: float) -> float:
        value = self.get(doc, key, (int, float), where, required=False, default=default)
        if not math.isfinite(value) or value < 0:
            raise self.fail(where, f"must be a finite number >= 0, got {value!r}")
        return float(value)


def from_json(doc: Any, path: Path) -> ModelMeta:
    r = _Reader(path)
    if not isinstance(doc, dict):
        raise r.fail("(top level)", f"must be a JSON object, got {type(doc).__name__}")
    inputs = []
    for i, item in enumerate(r.get(doc, "inputs", list, "inputs", required=False, default=[])):
        where = f"inputs[{i}]"
        if not isinstance(item, dict):
            raise r.fail(where, "must be an object")
        shape = []
        for j, d in enumerate(r.get(item, "shape", list, f"{where}.shape")):
            if isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_DIM:
                shape.append(d)
            elif (
                isinstance(d, list)
                and len(d) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= MAX_DIM for x in d)
                and d[0] <= d[1]
            ):
                shape.append((d[0], d[1]))
            else:
                raise r.fail(f"{where}.shape[{j}]", f"must be a size or [min, max] from 1 to {MAX_DIM}, got {d!r}")
        rng = r.get(item, "range", list, f"{where}.range", required=False)
        if rng is not None and (
            len(rng) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in rng)
            or rng[0] >= rng[1]
        ):
            raise r.fail(f"{where}.range", f"must be [low, high] finite numbers with low < high, got {rng!r}")
        if rng is not None and not all(-(2**63) <= x <= 2**63 for x in rng):
            raise r.fail(f"{where}.range", f"must lie within int64, got {rng!r}")
        elements = 1
        for d in shape:
            elements *= d[1] if isinstance(d, tuple) else d
        if elements > MAX_SAMPLE_ELEMENTS:
            raise r.fail(f"{where}.shape", f"holds {elements} values per row at its largest, too many to sample")
        argument = r.get(item, "argument", int, f"{where}.argument", required=False, default=i)
        if argument < 0:
            raise r.fail(f"{where}.argument", f"must be a forward argument index >= 0, got {argument}")
        inputs.append(
            InputMeta(
                r.get(item, "name", str, f"{where}.name"),
                argument,
                r.get(item, "dtype", str, f"{where}.dtype"),
                tuple(shape),
                tuple(rng) if rng is not None else None,
            )
        )
    arguments = sorted(i.argument for i in inputs)
    if arguments != list(range(len(inputs))):
        raise r.fail("inputs", f"`argument` values must be 0..{len(inputs) - 1}, each once, got {arguments}")
    outputs = []
    for i, item in enumerate(r.get(doc, "outputs", list, "outputs", required=False, default=[])):
        where = f"outputs[{i}]"
        if not isinstance(item, dict):
            raise r.fail(where, "must be an object")
        dims = r.get(item, "dims", list, f"{where}.dims")
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
            raise r.fail(f"{where}.dims", f"must be integers, got {dims!r}")
        outputs.append(
            OutputMeta(
                r.get(item, "name", str, f"{where}.name"), r.get(item, "dtype", str, f"{where}.dtype"), tuple(dims)
            )
        )
    tolerance = r.get(doc, "tolerance", dict, "tolerance", required=False, default={})
    versions: dict[int, VersionMeta] = {}
    for key, entry in r.get(doc, "versions", dict, "versions", required=False, default={}).items():
        where = f"versions.{key}"
        if not (key.isascii() and key.isdigit()) or int(key) < 1:
            raise r.fail(where, "must be keyed by a version number >= 1")
        if not isinstance(entry, dict):
            raise r.fail(where, "must be an object")
        torch_version = r.get(entry, "torch", str, f"{where}.torch")
        if not TORCH_VERSION_RE.match(torch_version):
            raise r.fail(f"{where}.torch", f"is not a torch version like 2.13.0 (got {torch_version!r})")
        fmt = r.get(entry, "file_format_version", (int, type(None)), f"{where}.file_format_version", required=False)
        known = {"sha256", "torch", "export", "file_format_version", "format", "file", "device", "compile_options"}
        file_format = r.get(entry, "format", str, f"{where}.format", required=False, default="torchscript")
        if file_format not in ("torchscript", "aoti_package"):
            raise r.fail(f"{where}.format", f"must be torchscript or aoti_package, got {file_format!r}")
        default_file = "model.pt2" if file_format == "aoti_package" else "model.pt"
        model_file = r.get(entry, "file", str, f"{where}.file", required=False, default=default_file)
        if model_file not in ("model.pt", "model.pt2"):
            raise r.fail(f"{where}.file", f"must be model.pt or model.pt2, got {model_file!r}")
        versions[int(key)] = VersionMeta(
            r.get(entry, "sha256", str, f"{where}.sha256"),
            torch_version,
            r.get(entry, "export", str, f"{where}.export"),
            fmt,
            {k: v for k, v in entry.items() if k not in known},
            format=file_format,
            file=model_file,
            device=r.get(entry, "device", (str, type(None)), f"{where}.device", required=False),
            compile_options=r.get(
                entry, "compile_options", (dict, type(None)), f"{where}.compile_options", required=False
            ),
        )
    op_libraries = []
    for i, item in enumerate(r.get(doc, "op_libraries", list, "op_libraries", required=False, default=[])):
        where = f"op_libraries[{i}]"
        if not isinstance(item, dict):
            raise r.fail(where, "must be an object")
        ops = r.get(item, "ops", list, f"{where}.ops", required=False, default=[])
        if not all(isinstance(o, str) for o in ops):
            raise r.fail(f"{where}.ops", f"must be operator names, got {ops!r}")
        op_libraries.append(
            OpLibraryMeta(
                r.get(item, "namespace", str, f"{where}.namespace"),
                tuple(ops),
                r.get(item, "library", (str, type(None)), f"{where}.library", required=False),
                r.get(item, "sha256", (str, type(None)), f"{where}.sha256", required=False),
                r.get(item, "provided_by", (str, type(None)), f"{where}.provided_by", required=False),
            )
        )
    mbs = r.get(doc, "max_batch_size", int, "max_batch_size", required=False, default=0)
    if mbs < 0:
        raise r.fail("max_batch_size", f"must be >= 0, got {mbs}")
    return ModelMeta(
        model=r.get(doc, "model", str, "model", required=False, default=path.parent.name),
        max_batch_size=mbs,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        rtol=r.number(tolerance, "rtol", "tolerance.rtol", 1e-4),
        atol=r.number(tolerance, "atol", "tolerance.atol", 1e-5),
        versions=dict(sorted(versions.items())),
        op_libraries=tuple(op_libraries),
    )


def load(path: Path) -> ModelMeta | None:
    """The record at `path`, or None when there is none. Raises MetaError for a file tsrepo cannot read."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MetaError(f"{path}: cannot be read ({e}); remove it and build the model again") from e
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise MetaError(
            f"{path}: not valid JSON (line {getattr(e, 'lineno', '?')}: {getattr(e, 'msg', e)}); this file is"
            " written by `tsrepo build`: remove it and build the model again"
        ) from e
    return from_json(doc, path)


def load_model(model_dir: Path) -> ModelMeta | None:
    return load(Path(model_dir) / META_FILE)
