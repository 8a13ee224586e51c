"""Prove the exported model behaves: scripted == eager, reloaded == scripted, batch-safe."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tsrepo import sampling
from tsrepo.errors import VerifyError
from tsrepo.signature import InputSig
from tsrepo.spec import ModelSpec


@dataclass(frozen=True)
class Comparison:
    max_abs: float
    max_rel: float
    ok: bool
    where: str = ""  # the first output that failed


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


def compare(expected: list, actual: list, names: list[str], rtol: float, atol: float) -> Comparison:
    worst_abs, worst_rel, bad = 0.0, 0.0, ""
    if len(expected) != len(actual):
        return Comparison(float("inf"), float("inf"), False, f"{len(expected)} vs {len(actual)} outputs")
    for name, e, a in zip(names, expected, actual, strict=True):
        if isinstance(e, list) or isinstance(a, list):
            if e != a and not bad:
                bad = name
            continue
        e_np, a_np = _numpy(e), _numpy(a)
        if e_np.shape != a_np.shape:
            bad = bad or f"{name} (shape {list(e_np.shape)} vs {list(a_np.shape)})"
            worst_abs = float("inf")
            continue
        if e_np.dtype == bool or np.issubdtype(e_np.dtype, np.integer):
            diff = np.abs(e_np.astype(np.int64) - a_np.astype(np.int64)) if e_np.size else np.zeros(1)
            ok = bool((diff == 0).all())
            abs_err = float(diff.max()) if diff.size else 0.0
            rel_err = abs_err
        else:
            e64, a64 = e_np.astype(np.float64), a_np.astype(np.float64)
            nan_mismatch = np.isnan(e64) != np.isnan(a64)
            diff = np.abs(np.nan_to_num(e64) - np.nan_to_num(a64))
            abs_err = float(diff.max()) if diff.size else 0.0
            denom = np.maximum(np.abs(e64), 1e-12)
            rel_err = float((diff / denom).max()) if diff.size else 0.0
            both_nan = np.isnan(e64) & np.isnan(a64)
            within = (diff <= atol + rtol * np.abs(np.nan_to_num(e64))) | both_nan
            ok = bool(within.all()) and not nan_mismatch.any()
        worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
        if not ok and not bad:
            bad = name
    return Comparison(worst_abs, worst_rel, not bad, bad)


def _numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16; the signature check refuses it later
        t = t.float()
    return t.numpy()


def run(module, args) -> list:
    with torch.no_grad():
        return leaves(module(*args))


def check_equal(spec: ModelSpec, what: str, expected: list, actual: list, names: list[str], context: str) -> Comparison:
    c = compare(expected, actual, names, spec.rtol, spec.atol)
    if not c.ok:
        raise VerifyError(
            f"{spec.where()}: {what} differ at {context}: output {c.where},"
            f" max abs error {c.max_abs:.3g}, max rel error {c.max_rel:.3g}"
            f" (tolerance rtol={spec.rtol:g}, atol={spec.atol:g}; raise `rtol`/`atol` in the spec"
            " if this is float noise)"
        )
    return c


def check_batch_safe(
    spec: ModelSpec, module, inputs: list[InputSig], shapes: list[list[int]], names: list[str], rng
) -> Comparison:
    """Outputs for a batch must equal each row run alone, or the dynamic batcher changes answers."""
    batch = min(spec.max_batch_size, 4)
    args = make_args(inputs, shapes, batch, rng)
    together = run(module, args)
    worst_abs, worst_rel = 0.0, 0.0
    for row in range(batch):
        alone = run(module, tuple(a[row : row + 1] for a in args))
        sliced = [t[row : row + 1] for t in together]
        c = compare(alone, sliced, names, spec.rtol, spec.atol)
        worst_abs, worst_rel = max(worst_abs, c.max_abs), max(worst_rel, c.max_rel)
        if not c.ok:
            raise VerifyError(
                f"{spec.where('dynamic_batching')}: the model is not batch-safe: output {c.where}"
                f" for row {row} of a batch of {batch} differs from the same row run alone (max abs"
                f" difference {c.max_abs:.3g}). Rows influence each other (e.g. normalising over"
                " the batch, or BatchNorm in train mode), so the dynamic batcher would change"
                " answers. Fix the model, or set batch_safe = false to serve it without dynamic"
                " batching"
            )
    return Comparison(worst_abs, worst_rel, True)
