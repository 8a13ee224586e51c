"""Batch safety for max_batch_size values larger than the build proved.

`tsrepo build` proves, before it writes dynamic batching, that a batch's rows equal each row run
alone. A tuner that raises max_batch_size must not ship a batch size that was never checked: it
re-runs the same proof on the repository's model file at the candidate size, with inputs drawn from
the model's recorded signature and the same comparison (tsrepo.compare) and tolerances as build.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tsrepo import modelfile
from tsrepo.client import modelinfo
from tsrepo.compare import compare


@dataclass(frozen=True)
class Proof:
    batch: int
    safe: bool
    detail: str = ""


def prove(info: modelinfo.ModelInfo, version: int, batch: int, seed: int = 0) -> Proof:
    """Run a batch of `batch` rows and each row alone through the model file; compare."""
    import torch

    module = modelfile.load(info.model_path(version))
    ordered = sorted(info.inputs, key=lambda t: t.argument)
    arrays = info.sample(np.random.default_rng(seed), batch, "max")

    def run(rows: slice) -> list:
        args = [torch.from_numpy(np.ascontiguousarray(t.for_model(arrays[t.name][rows], True))) for t in ordered]
        return modelfile.run(module, args)

    together = run(slice(0, batch))
    names = [f"output {i}" for i in range(len(together))]
    for row in range(batch):
        alone = run(slice(row, row + 1))
        c = compare(alone, [t[row : row + 1] for t in together], names, info.rtol, info.atol)
        if not c.ok:
            return Proof(batch, False, f"row {row} of a batch of {batch} differs from the row alone: {c.where}")
    return Proof(batch, True)
