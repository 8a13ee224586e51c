"""One comparison of outputs, for build, doctor and validate alike.

Rule (numpy.isclose's, with NaN and inf made explicit): an element matches when
`|actual - expected| <= atol + rtol * |expected|`; NaN matches NaN, +inf matches +inf and -inf
matches -inf; anything else against a non-finite value is a mismatch. Errors (max abs, max rel) are
measured over the elements where both sides are finite, so an all-NaN output that matches reports
error 0 *and* says how many values were not finite: a model whose outputs are NaN is flagged, not
silently passed with "error 0".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OutputDiff:
    """How one output compares."""

    name: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    ok: bool = True
    nonfinite: int = 0  # non-finite values in the expected output (NaN or inf)
    size: int = 0
    reason: str = ""  # why it failed, in words (shape, dtype, values)

    def describe(self) -> str:
        if self.ok:
            return f"{self.name}: max abs error {self.max_abs:.3g}, max rel error {self.max_rel:.3g}"
        return f"{self.name}: {self.reason}"


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)):
        return np.array([v.encode() if isinstance(v, str) else v for v in value], dtype=np.object_)
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        t = value.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            t = t.float()
        return t.numpy()
    return np.asarray(value)


def compare_output(name: str, expected, actual, rtol: float, atol: float) -> OutputDiff:
    e, a = _as_numpy(expected), _as_numpy(actual)
    if e.dtype == np.object_ or a.dtype == np.object_:
        same = e.shape == a.shape and list(e.ravel()) == list(a.ravel())
        return OutputDiff(name, ok=same, size=int(e.size), reason="" if same else "strings differ")
    if e.shape != a.shape:
        return OutputDiff(
            name,
            float("inf"),
            float("inf"),
            False,
            size=int(e.size),
            reason=f"shape {list(a.shape)} instead of {list(e.shape)}",
        )
    if e.size == 0:
        return OutputDiff(name, size=0)
    if e.dtype == bool or np.issubdtype(e.dtype, np.integer):
        diff = np.abs(e.astype(np.int64) - a.astype(np.int64))
        worst = float(diff.max())
        ok = worst == 0
        return OutputDiff(
            name,
            worst,
            float((diff / np.maximum(np.abs(e.astype(np.float64)), 1.0)).max()),
            ok,
            size=int(e.size),
            reason="" if ok else f"{int((diff != 0).sum())} of {e.size} values differ (max abs error {worst:.3g})",
        )
    e64, a64 = e.astype(np.float64), a.astype(np.float64)
    finite_e, finite_a = np.isfinite(e64), np.isfinite(a64)
    both = finite_e & finite_a
    # Non-finite positions match only when both sides hold the same non-finite value.
    special_ok = (np.isnan(e64) & np.isnan(a64)) | (np.isinf(e64) & (e64 == a64))
    mismatched_special = (~both) & ~special_ok
    diff = np.abs(e64[both] - a64[both])
    abs_err = float(diff.max()) if diff.size else 0.0
    rel_err = float((diff / np.maximum(np.abs(e64[both]), 1e-12)).max()) if diff.size else 0.0
    within = diff <= atol + rtol * np.abs(e64[both])
    ok = bool(within.all()) and not mismatched_special.any()
    reason = ""
    if mismatched_special.any():
        reason = (
            f"{int(mismatched_special.sum())} of {e.size} values are NaN or inf on one side only"
            f" (expected {int((~finite_e).sum())} non-finite, got {int((~finite_a).sum())})"
        )
    elif not ok:
        reason = (
            f"{int((~within).sum())} of {e.size} values differ: max abs error {abs_err:.3g},"
            f" max rel error {rel_err:.3g} (rtol={rtol:g}, atol={atol:g})"
        )
    return OutputDiff(name, abs_err, rel_err, ok, int((~finite_e).sum()), int(e.size), reason)


@dataclass(frozen=True)
class Comparison:
    """How a set of outputs compares: the worst errors, and each output."""

    outputs: tuple[OutputDiff, ...]
    count_mismatch: str = ""

    @property
    def ok(self) -> bool:
        return not self.count_mismatch and all(o.ok for o in self.outputs)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=float("inf") if self.count_mismatch else 0.0)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=float("inf") if self.count_mismatch else 0.0)

    @property
    def first_failure(self) -> OutputDiff | None:
        return next((o for o in self.outputs if not o.ok), None)

    @property
    def where(self) -> str:
        """The first output that failed, and why, in words."""
        if self.count_mismatch:
            return self.count_mismatch
        bad = self.first_failure
        return f"{bad.name} ({bad.reason})" if bad else ""

    def nonfinite(self) -> list[OutputDiff]:
        """Outputs whose expected values hold NaN or inf."""
        return [o for o in self.outputs if o.nonfinite]


def compare(expected: list, actual: list, names: list[str], rtol: float, atol: float) -> Comparison:
    """Compare outputs pairwise (same order as `names`)."""
    if len(expected) != len(actual):
        return Comparison((), f"{len(expected)} outputs expected, {len(actual)} given")
    return Comparison(
        tuple(compare_output(n, e, a, rtol, atol) for n, e, a in zip(names, expected, actual, strict=True))
    )


def nonfinite_warning(where: str, diffs: list[OutputDiff]) -> str:
    """The warning for outputs that hold NaN or inf: comparisons still pass, but say so."""
    parts = [f"{d.name} ({d.nonfinite} of {d.size} values)" for d in diffs]
    return (
        f"{where}: outputs hold NaN or inf: {', '.join(parts)}; the comparisons treat NaN as equal to NaN,"
        " so a broken model can pass them. Check the model's weights and the inputs' value ranges (`range`)"
    )
