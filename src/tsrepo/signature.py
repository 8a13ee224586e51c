"""Tensor names, dtypes and dims as the libtorch backend will see them.

Inputs bind by forward-argument name when every config input name equals an argument name,
else by `INPUT__<index>`; outputs bind by `<name>__<index>` (rules observed on a real 24.10
server, enforced by `config.check_libtorch_rules`, mirrored by the local engine's runner template).
Output dims come from running the model at several sizes and on several random inputs at one size: a dim
that changes with the dynamic input dims, or with the data (a detection count), is -1. The spec's
`outputs = [{ dims }]` declares them where runs cannot show it; observed shapes are checked against them.
"""

from __future__ import annotations

from dataclasses import dataclass

from tsrepo import dtypes
from tsrepo.errors import ServingError, SpecError
from tsrepo.spec import Dim, ModelSpec, TensorNames, TensorSpec


@dataclass(frozen=True)
class InputSig:
    name: str  # config name
    arg_index: int  # position among forward's arguments
    spec: TensorSpec

    @property
    def dtype(self) -> dtypes.DType:
        return self.spec.dtype

    @property
    def dims(self) -> tuple[int, ...]:
        """Config dims: a scalar per row travels as [1] and is reshaped to nothing for the model."""
        if not self.spec.shape:
            return (1,)
        return tuple(-1 if d.dynamic else d.min for d in self.spec.shape)

    @property
    def reshape(self) -> tuple[int, ...] | None:
        return () if not self.spec.shape else None


@dataclass(frozen=True)
class OutputSig:
    name: str
    dtype: dtypes.DType
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None  # a batched List[str] output: dims [1], reshape []


@dataclass(frozen=True)
class Signature:
    inputs: tuple[InputSig, ...]  # config order (the spec's order)
    outputs: tuple[OutputSig, ...]
    max_batch_size: int

    def forward_order(self) -> list[InputSig]:
        return sorted(self.inputs, key=lambda s: s.arg_index)


def bind_inputs(spec: ModelSpec, forward_args: list[str]) -> tuple[InputSig, ...]:
    """Config input names, preferring forward's argument names (readable by clients)."""
    if spec.tensor_names is TensorNames.INDEX:
        return tuple(InputSig(f"INPUT__{i}", i, t) for i, t in enumerate(spec.inputs))
    named = [t.name for t in spec.inputs if t.name is not None]
    unknown = [n for n in named if n not in forward_args]
    if unknown:
        raise SpecError(
            f"{spec.where('inputs')}: input {unknown[0]!r} is not an argument of forward"
            f" ({', '.join(forward_args)}); Triton binds inputs to forward's arguments by name, so"
            ' rename it, or set tensor_names = "index" to bind by position as INPUT__<n>'
        )
    if not named:
        return tuple(InputSig(forward_args[i], i, t) for i, t in enumerate(spec.inputs))
    if len(named) != len(spec.inputs):
        raise SpecError(
            f"{spec.where('inputs')}: some inputs have a name and some do not; name all of them"
            " (after forward's arguments) or none (then forward's order is used)"
        )
    return tuple(InputSig(t.name, forward_args.index(t.name), t) for t in spec.inputs)


def output_names(spec: ModelSpec, count: int, readable: list[str] | None) -> list[str]:
    if spec.outputs and len(spec.outputs) != count:
        raise SpecError(
            f"{spec.where('outputs')}: lists {len(spec.outputs)} outputs but the model returns {count}; give one"
            " table per output, in forward's order"
        )
    if spec.output_names:
        if len(spec.output_names) != count:
            raise SpecError(
                f"{spec.where('output_names')}: lists {len(spec.output_names)} names but the model"
                f" returns {count} outputs"
            )
        return [f"{n}__{i}" for i, n in enumerate(spec.output_names)]
    if readable:
        return readable
    return [f"OUTPUT__{i}" for i in range(count)]


def infer_outputs(spec: ModelSpec, runs: list[tuple[int, list]], names: list[str]) -> tuple[OutputSig, ...]:
    """Output signature from runs: [(batch size or 0, [output leaves])]."""
    mbs = spec.max_batch_size
    result = []
    for i, name in enumerate(names):
        leaves = [(batch, outs[i]) for batch, outs in runs]
        first = leaves[0][1]
        if isinstance(first, list):  # List[str]
            if mbs > 0:
                for batch, value in leaves:
                    if len(value) != batch:
                        raise ServingError(
                            f"{spec.where()}: output {name} is a List[str] of length {len(value)}"
                            f" for a batch of {batch}; with max_batch_size > 0 it needs one string"
                            " per row"
                        )
                result.append(OutputSig(name, dtypes.STRING, (1,), reshape=()))
            else:
                result.append(OutputSig(name, dtypes.STRING, (-1,)))
            continue
        try:
            dtype = dtypes.from_torch(first.dtype)
        except KeyError as e:
            fix = dtypes.refusal_fix(e.args[0]) or "cast it to a supported dtype"
            raise ServingError(
                f"{spec.where()}: output {name} is {e.args[0]}, which Triton's libtorch backend cannot carry; {fix}"
            ) from None
        shapes = []
        for batch, value in leaves:
            shape = list(value.shape)
            if mbs > 0:
                if not shape or shape[0] != batch:
                    raise ServingError(
                        f"{spec.where('max_batch_size')}: output {name} has shape {shape} for a"
                        f" batch of {batch}; with max_batch_size > 0 every output needs the batch"
                        " dimension first. Return batch-first outputs, or set max_batch_size = 0"
                    )
                shape = shape[1:]
            shapes.append(shape)
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise ServingError(
                f"{spec.where()}: output {name} changes rank with the input sizes ({shapes}); Triton needs a fixed rank"
            )
        declared = spec.outputs[i].dims if i < len(spec.outputs) else None
        if declared is not None:
            result.append(_declared(spec, i, name, dtype, declared, shapes))
            continue
        dims = tuple(shapes[0][d] if all(s[d] == shapes[0][d] for s in shapes) else -1 for d in range(len(shapes[0])))
        if 0 in dims:
            example = [-1 if d == 0 else d for d in dims]
            raise ServingError(
                f"{spec.where()}: output {name} has size 0 in dim {dims.index(0)} in every run (shape {shapes[0]},"
                f" {len(shapes)} runs on random inputs); Triton dims must be at least 1, or -1 where they vary."
                f" If the size follows the data (no detections on random inputs), declare the dims in the spec:"
                f" outputs = [{{ dims = {example} }}, ...] (one table per output, in order); else return a"
                " non-empty output, or drop it"
            )
        if not dims:
            # A scalar per row (or a 0-d tensor): Triton needs at least one dim.
            result.append(OutputSig(name, dtype, (1,), reshape=()))
        else:
            result.append(OutputSig(name, dtype, dims))
    return tuple(result)


def _declared(spec: ModelSpec, i: int, name: str, dtype, declared: tuple[int, ...], shapes: list) -> OutputSig:
    """The spec's dims for output i, checked against every observed shape (-1 matches any size)."""
    for shape in shapes:
        fits = len(shape) == len(declared) and all(d == -1 or d == s for d, s in zip(declared, shape, strict=False))
        if not fits and not (not shape and declared == (1,)):
            raise ServingError(
                f"{spec.where(f'outputs[{i}].dims')}: declares {list(declared)} for output {name}, but a run gave"
                f" shape {shape}{' (without the batch dim)' if spec.max_batch_size else ''}; write -1 where the"
                " size varies, and one dim per dim of the output"
            )
    if not declared:
        return OutputSig(name, dtype, (1,), reshape=())
    return OutputSig(name, dtype, tuple(declared))


def variants(inputs: tuple[TensorSpec, ...]) -> list[list[list[int]]]:
    """Concrete shapes (without batch) per variant: every dynamic dim at its min, middle, max."""
    count = max((len(d.sizes()) for t in inputs for d in t.shape), default=1)
    out = []
    for k in range(count):
        out.append([[d.sizes()[min(k, len(d.sizes()) - 1)] for d in t.shape] for t in inputs])
    return out


def dim_json(dims: tuple[Dim, ...]) -> list:
    return [d.to_json() for d in dims]
