"""Data types: spec names, torch dtypes, numpy dtypes and Triton's TYPE_* names.

The libtorch backend carries only the types in ``SUPPORTED``; the types in ``REFUSED`` exist in
torch but not in the backend, and each comes with the cast that fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DType:
    name: str  # spec name, e.g. "float32"
    triton: str  # config name, e.g. "TYPE_FP32"
    wire: str  # KServe v2 datatype, e.g. "FP32"
    numpy: str  # numpy dtype string

    @property
    def is_integer(self) -> bool:
        return self.name.startswith(("int", "uint"))

    @property
    def is_float(self) -> bool:
        return self.name.startswith("float")

    def to_numpy(self) -> np.dtype:
        return np.dtype(self.numpy)

    def to_torch(self):
        import torch

        return getattr(torch, self.name)


SUPPORTED: dict[str, DType] = {
    d.name: d
    for d in (
        DType("bool", "TYPE_BOOL", "BOOL", "bool"),
        DType("uint8", "TYPE_UINT8", "UINT8", "uint8"),
        DType("int8", "TYPE_INT8", "INT8", "int8"),
        DType("int16", "TYPE_INT16", "INT16", "int16"),
        DType("int32", "TYPE_INT32", "INT32", "int32"),
        DType("int64", "TYPE_INT64", "INT64", "int64"),
        DType("float16", "TYPE_FP16", "FP16", "float16"),
        DType("float32", "TYPE_FP32", "FP32", "float32"),
        DType("float64", "TYPE_FP64", "FP64", "float64"),
    )
}

# String tensors: only as a List[str] output (TYPE_STRING); never an input we generate.
STRING = DType("string", "TYPE_STRING", "BYTES", "object")

ALIASES = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "long": "int64",
    "int": "int32",
    "fp32": "float32",
    "fp16": "float16",
    "fp64": "float64",
}

REFUSED: dict[str, str] = {
    "bfloat16": "cast it with `.float()` (or `.half()`) before returning, and feed float32 inputs",
    "uint16": "cast it with `.to(torch.int32)`",
    "uint32": "cast it with `.to(torch.int64)`",
    "uint64": "cast it with `.to(torch.int64)` (values above 2**63-1 do not fit; split them)",
    "complex64": "return `torch.view_as_real(x)` (a float32 tensor with a trailing dim of 2)",
    "complex128": "return `torch.view_as_real(x)` (a float64 tensor with a trailing dim of 2)",
}

BY_TRITON = {d.triton: d for d in SUPPORTED.values()} | {STRING.triton: STRING}
BY_WIRE = {d.wire: d for d in SUPPORTED.values()} | {STRING.wire: STRING}


def lookup(name: str) -> DType | None:
    """The supported dtype for a spec name, or None."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return SUPPORTED.get(key)


def from_torch(dtype) -> DType:
    """The supported dtype for a torch dtype; raises KeyError with the fix for refused ones."""
    name = str(dtype).removeprefix("torch.")
    if name in SUPPORTED:
        return SUPPORTED[name]
    raise KeyError(name)


def value_limits(dtype: DType) -> tuple[float, float]:
    """The range of values a `range = [low, high)` may span for this dtype (high exclusive for integers)."""
    np_dtype = dtype.to_numpy()
    if dtype.is_integer:
        info = np.iinfo(np_dtype)
        return int(info.min), int(info.max) + 1
    info = np.finfo(np_dtype)
    return -float(info.max), float(info.max)


def refusal_fix(name: str) -> str | None:
    return REFUSED.get(name)
