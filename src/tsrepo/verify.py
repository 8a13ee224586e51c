"""Prove the exported model behaves: scripted == eager, reloaded == scripted, batch-safe."""

from __future__ import annotations

import numpy as np
import torch

from tsrepo import sampling
from tsrepo.compare import Comparison, compare
from tsrepo.errors import ExportError, VerifyError
from tsrepo.signature import InputSig
from tsrepo.spec import ModelSpec


def make_args(
    inputs: list[InputSig], shapes: list[list[int]], batch: int, rng: np.random.Generator
) -> tuple[torch.Tensor, ...]:
    """Tensors in forward's order. `shapes` are per input in the same order, without batch."""
    args = []
    for sig, shape in zip(inputs, shapes, strict=True):
        full = ([batch] if batch else []) + list(shape)
        arr = sampling.sample(sig.dtype, full, rng, sig.spec.range)
        args.append(torch.from_numpy(arr))
    return tuple(args)


def example_args(spec: ModelSpec, inputs: list[InputSig], rng: np.random.Generator) -> tuple:
    """A mid-sized example (batch 2 where allowed: tracing at batch 1 can freeze broadcasts)."""
    from tsrepo.signature import variants

    shapes_all = variants(tuple(s.spec for s in inputs))
    batch = min(spec.max_batch_size, 2) if spec.max_batch_size else 0
    return make_args(inputs, shapes_all[len(shapes_all) // 2], batch, rng)


def size_grid(spec: ModelSpec, inputs: list[InputSig], rng: np.random.Generator):
    """Arguments at every checked size: each dynamic dim at min, middle and max, times batch 1 and 3
    (or no batch dim). Traced models are thereby run at sizes other than the one they were traced at."""
    from tsrepo.signature import variants

    batches = [0] if spec.max_batch_size == 0 else sorted({1, min(spec.max_batch_size, 3)})
    for shapes in variants(tuple(s.spec for s in inputs)):
        for batch in batches:
            yield batch, make_args(inputs, shapes, batch, rng)


DATA_RUNS = 3  # extra random inputs at one size: enough to see a detection count move, cheap for small models


def data_grid(spec: ModelSpec, inputs: list[InputSig], rng: np.random.Generator, count: int = DATA_RUNS):
    """Several random inputs at the same shape (the middle sizes, the largest checked batch): an output dim that
    changes between them follows the data, not the input sizes."""
    from tsrepo.signature import variants

    shapes_all = variants(tuple(s.spec for s in inputs))
    batch = 0 if spec.max_batch_size == 0 else min(spec.max_batch_size, 3)
    for _ in range(count):
        yield batch, make_args(inputs, shapes_all[len(shapes_all) // 2], batch, rng)


def leaves(result) -> list:
    """Flatten a forward result (Tensor | tuple | List[str]) into a list of outputs."""
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, list) and all(isinstance(x, str) for x in result):
        return [result]
    if isinstance(result, tuple):
        out = []
        for item in result:
            out.extend(leaves(item))
        return out
    if isinstance(result, dict):
        return list(result.values())
    if isinstance(result, list):
        return list(result)
    raise VerifyError(f"unexpected output type {type(result).__name__}")


def run(module, args) -> list:
    with torch.no_grad():
        return leaves(module(*args))


def run_checked(spec: ModelSpec, module, args, what: str):
    """Call the model on valid inputs; whatever it raises (sys.exit too) is the model's failure, named
    with the input shapes. Returns forward's result as it is."""
    from tsrepo.export import user_code

    shapes = [list(a.shape) for a in args]
    try:
        with torch.no_grad(), user_code(f"{spec.where('inputs')}: {what} on inputs of shapes {shapes}"):
            return module(*args)
    except ExportError as e:
        raise ExportError(
            f"{e} (the spec's inputs must be valid for the model at every size it checks)"
        ) from e.__cause__


def check_equal(spec: ModelSpec, what: str, expected: list, actual: list, names: list[str], context: str) -> Comparison:
    c = compare(expected, actual, names, spec.rtol, spec.atol)
    if not c.ok:
        raise VerifyError(
            f"{spec.where()}: {what} differ at {context}: output {c.where}"
            " (raise `rtol`/`atol` in the spec if this is float noise)"
        )
    return c


def check_batch_safe(
    spec: ModelSpec, module, inputs: list[InputSig], shapes: list[list[int]], names: list[str], rng
) -> float:
    """Outputs for a batch must equal each row run alone, or the dynamic batcher changes answers."""
    batch = min(spec.max_batch_size, 4)
    args = make_args(inputs, shapes, batch, rng)
    together = leaves(run_checked(spec, module, args, "the exported model"))
    worst_abs = 0.0
    for row in range(batch):
        alone = leaves(run_checked(spec, module, tuple(a[row : row + 1] for a in args), "the exported model"))
        sliced = [t[row : row + 1] for t in together]
        c = compare(alone, sliced, names, spec.rtol, spec.atol)
        worst_abs = max(worst_abs, c.max_abs)
        if not c.ok:
            raise VerifyError(
                f"{spec.where('dynamic_batching')}: the model is not batch-safe: output {c.where}"
                f" for row {row} of a batch of {batch} differs from the same row run alone."
                " Rows influence each other (e.g. normalising over"
                " the batch, or BatchNorm in train mode), so the dynamic batcher would change"
                " answers. Fix the model, or set batch_safe = false to serve it without dynamic"
                " batching"
            )
    return worst_abs
