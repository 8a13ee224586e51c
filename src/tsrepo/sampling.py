"""Random inputs drawn from a signature: the same rules for build-time checks and validate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tsrepo.dtypes import DType

# Default value range for integer inputs without a `range`: small, so that an index input
# (token ids, category ids) stays inside any embedding table.
DEFAULT_INT_RANGE = (0, 2)


def sample(dtype: DType, shape: Sequence[int], rng: np.random.Generator, value_range=None) -> np.ndarray:
    shape = tuple(int(s) for s in shape)
    if dtype.name == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.is_integer:
        lo, hi = value_range if value_range else DEFAULT_INT_RANGE
        return rng.integers(int(lo), int(hi), size=shape, dtype=np.int64).astype(dtype.numpy)
    if value_range:
        lo, hi = value_range
        return rng.uniform(lo, hi, size=shape).astype(dtype.numpy)
    return rng.standard_normal(size=shape).astype(dtype.numpy)
