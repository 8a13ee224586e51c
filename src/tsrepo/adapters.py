"""What the libtorch backend can serve, and a scripted adapter for what it almost can.

The backend takes Tensor arguments and returns a Tensor, a List[str], or a tuple of those. A model
that returns a dict (Hugging Face style, a transformers ModelOutput once traced) or a list of tensors is
wrapped in a small scripted module that returns a tuple in a fixed order. The adapter's source is
generated into a real file because TorchScript compiles from source it can read back with `inspect`.

On the input side, an input adapter wraps the *eager* model before export, so script, trace and the
comparison with eager all see the same served signature: forward arguments that are not served keep
their default or get the spec's constant (`arguments = { attn_mask = "none" }`), an `Optional[Tensor]`
argument that is served becomes a plain Tensor argument, and a `List[Tensor]` argument (`list_inputs`)
takes one tensor split along its first dim.
"""

from __future__ import annotations

import atexit
import importlib.util
import inspect
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import torch

from tsrepo.errors import ServingError
from tsrepo.spec import ModelSpec

SERVABLE_LEAVES = {"Tensor", "List[str]"}

_ADAPTER_DIR: Path | None = None


def forward_arguments(module: torch.jit.ScriptModule) -> list[tuple[str, str]]:
    """(name, type) of forward's arguments, without self."""
    return [(a.name, str(a.type)) for a in module.forward.schema.arguments[1:]]


def return_type(module: torch.jit.ScriptModule) -> str:
    returns = module.forward.schema.returns
    return str(returns[0].type) if len(returns) == 1 else "Tuple[" + ", ".join(str(r.type) for r in returns) + "]"


def _split_tuple(type_str: str) -> list[str] | None:
    if not (type_str.startswith("Tuple[") and type_str.endswith("]")):
        return None
    inner, depth, parts, cur = type_str[6:-1], 0, [], ""
    for ch in inner:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


class ReturnKind(str, Enum):
    DIRECT = "direct"  # the backend serves it as it is
    DICT = "dict"  # Dict[str, Tensor]: an adapter returns the values as a tuple
    LIST = "list"  # List[Tensor]: an adapter returns the items as a tuple


def classify_return(spec: ModelSpec, module: torch.jit.ScriptModule) -> ReturnKind:
    """DIRECT when the backend can serve the return type, DICT or LIST when an adapter can."""
    rtype = return_type(module)
    if rtype in SERVABLE_LEAVES:
        return ReturnKind.DIRECT
    parts = _split_tuple(rtype)
    if parts is not None and parts and all(p in SERVABLE_LEAVES for p in parts):
        return ReturnKind.DIRECT
    if re.fullmatch(r"Dict\[str, Tensor\]", rtype):
        return ReturnKind.DICT
    if rtype == "List[Tensor]":
        return ReturnKind.LIST
    raise ServingError(
        f"{spec.where()}: forward returns {rtype}; Triton's libtorch backend serves a Tensor,"
        " a List[str], or a tuple of those. Return a tuple of tensors"
        " (e.g. `return (logits, hidden)`)"
    )


def argument_fix(name: str, type_str: str) -> str:
    """What the spec can say about a forward argument Triton cannot pass as it is."""
    if type_str.replace(" ", "") in ("List[Tensor]", "list[Tensor]"):
        return (
            f'name the input {name!r} and add `list_inputs = ["{name}"]` to the spec: tsrepo then serves one tensor'
            " and passes forward its rows as a list"
        )
    return (
        f"fix its value in the spec with `arguments = {{ {name} = ... }}` (\"none\", a bool, an int or a number),"
        " or make it a Tensor"
    )


def check_arguments(spec: ModelSpec, module: torch.jit.ScriptModule) -> list[str]:
    args = forward_arguments(module)
    for name, type_str in args:
        if type_str != "Tensor":
            raise ServingError(
                f"{spec.where('inputs')}: forward argument `{name}: {type_str}` cannot come from"
                f" Triton, which passes only tensors; {argument_fix(name, type_str)}"
            )
    if len(args) != len(spec.inputs):
        names = ", ".join(n for n, _ in args)
        raise ServingError(
            f"{spec.where('inputs')}: the spec lists {len(spec.inputs)} inputs but forward takes"
            f" {len(args)} ({names}); Triton's libtorch backend needs one config input per forward"
            " argument (it fails with 'configuration expects N inputs, model provides M')"
        )
    return [n for n, _ in args]


def _adapter_dir() -> Path:
    global _ADAPTER_DIR
    if _ADAPTER_DIR is None:
        _ADAPTER_DIR = Path(tempfile.mkdtemp(prefix="tsrepo-adapters-"))
        atexit.register(shutil.rmtree, _ADAPTER_DIR, True)
    return _ADAPTER_DIR


def wrap(module: torch.jit.ScriptModule, kind: ReturnKind, keys: list[str] | int) -> torch.jit.ScriptModule:
    """Script a module that calls `module` and returns its dict values / list items as a tuple."""
    args = [n for n, _ in forward_arguments(module)]
    params = ", ".join(f"{a}: torch.Tensor" for a in args)
    call = ", ".join(args)
    if kind is ReturnKind.DICT:
        items = ", ".join(f"out[{k!r}]" for k in keys)  # repr() is a valid TorchScript literal
        count = len(keys)
    else:
        count = int(keys)
        items = ", ".join(f"out[{i}]" for i in range(count))
    ret = "Tuple[" + ", ".join(["torch.Tensor"] * count) + "]"
    source = (
        "import torch\nfrom typing import Tuple\n\n\n"
        "class OutputAdapter(torch.nn.Module):\n"
        '    """Returns the wrapped model\'s outputs as a tuple, the form the libtorch backend serves."""\n\n'
        "    def __init__(self, inner):\n"
        "        super().__init__()\n"
        "        self.inner = inner\n\n"
        f"    def forward(self, {params}) -> {ret}:\n"
        f"        out = self.inner({call})\n"
        f"        return ({items}{',' if count == 1 else ''})\n"
    )
    folder = _adapter_dir()
    index = len(list(folder.iterdir()))
    path = folder / f"tsrepo_output_adapter_{index}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return torch.jit.script(mod.OutputAdapter(module)).eval()


def readable_output_names(keys: list[str]) -> list[str]:
    """Dict keys -> backend output names that keep the key readable: logits__0, hidden__1."""
    names = []
    for i, key in enumerate(keys):
        base = re.sub(r"\W+", "_", key).strip("_")
        base = re.sub(r"_{2,}", "_", base)  # '__' is the backend's index separator
        if not base or base[0].isdigit():
            base = f"OUTPUT_{base}" if base else "OUTPUT"
        names.append(f"{base}__{i}")
    return names


# ---- input adapters ----------------------------------------------------------------------------


@dataclass
class InputPlan:
    """How forward's arguments are fed: served (in forward's order), fixed to constants, or left at default."""

    served: list[str]
    fixed: list[tuple[str, object]] = field(default_factory=list)
    defaulted: list[str] = field(default_factory=list)
    lists: list[str] = field(default_factory=list)
    retyped: list[str] = field(default_factory=list)  # Optional[Tensor] arguments served as Tensor

    @property
    def needed(self) -> bool:
        return bool(self.fixed or self.defaulted or self.lists or self.retyped)

    def describe(self) -> str:
        parts = []
        if self.fixed:
            parts.append("fixed " + ", ".join(f"{n}={v!r}" for n, v in self.fixed))
        if self.defaulted:
            parts.append("left at their defaults: " + ", ".join(self.defaulted))
        if self.lists:
            parts.append("served as one tensor split into a list: " + ", ".join(self.lists))
        if self.retyped:
            parts.append("Optional[Tensor] served as Tensor: " + ", ".join(self.retyped))
        return "; ".join(parts)


def _annotation_text(annotation) -> str:
    """forward's annotation as compact text without module prefixes: `Optional[Tensor]`, `Tensor|None`."""
    if annotation is inspect.Parameter.empty:
        return ""
    if annotation is torch.Tensor:
        return "Tensor"
    text = annotation if isinstance(annotation, str) else str(annotation)
    for prefix in ("typing.", "torch."):
        text = text.replace(prefix, "")
    return text.replace(" ", "")


def _tensor_kind(annotation) -> str:
    """plain | optional | list | other, from forward's annotation (empty means Tensor to TorchScript)."""
    text = _annotation_text(annotation)
    if text in ("", "Tensor"):
        return "plain"
    if text in ("Optional[Tensor]", "Tensor|None", "None|Tensor", "Union[Tensor,None]", "Union[None,Tensor]"):
        return "optional"
    if text in ("List[Tensor]", "list[Tensor]", "Sequence[Tensor]", "Tuple[Tensor,...]", "tuple[Tensor,...]"):
        return "list"
    return "other"


def plan_inputs(spec: ModelSpec, model: torch.nn.Module, served_indices: list[int]) -> InputPlan:
    """Decide what the input adapter does, from the eager forward's signature and the spec.

    `served_indices`: forward positions of the spec's inputs (signature.bind_inputs). Raises SpecError for
    an argument the spec fixes that forward does not have, ServingError for one that nobody feeds."""
    from tsrepo.errors import SpecError

    try:
        params = [
            p
            for p in inspect.signature(model.forward).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return InputPlan(served=[])
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    served = [positional[i].name for i in sorted(served_indices) if i < len(positional)]
    by_name = {p.name: p for p in params}
    fixed = dict(spec.arguments)
    for name in fixed:
        if name not in by_name:
            import difflib

            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise SpecError(
                f"{spec.where(f'arguments.{name}')}: forward has no argument {name!r}{hint}; its arguments are"
                f" {', '.join(by_name)}"
            )
        if name in served:
            raise SpecError(
                f"{spec.where(f'arguments.{name}')}: {name!r} is also served as an input; fix it here or serve it"
            )
    plan = InputPlan(served=served, fixed=[(n, v) for n, v in spec.arguments])
    # served_indices follow the spec's input order: the spec's name of each input -> forward's argument name.
    names_by_input = {
        t.name: positional[i].name for t, i in zip(spec.inputs, served_indices, strict=False) if i < len(positional)
    }
    plan.lists = [names_by_input.get(n, n) for n in spec.list_inputs]
    for p in params:
        if p.name in served:
            kind = _tensor_kind(p.annotation)
            if kind == "optional":
                plan.retyped.append(p.name)
            elif kind == "list" and p.name not in plan.lists:
                raise ServingError(
                    f"{spec.where('inputs')}: forward argument `{p.name}` takes a list of tensors, which Triton"
                    f" cannot pass; {argument_fix(p.name, 'List[Tensor]')}"
                )
            continue
        if p.name in fixed:
            continue
        if p.default is inspect.Parameter.empty:
            args = ", ".join(q.name for q in positional)
            raise ServingError(
                f"{spec.where('inputs')}: the spec lists {len(spec.inputs)} inputs but forward takes"
                f" {len(positional)} ({args}), and `{p.name}` has no default; Triton's libtorch backend needs one"
                f" config input per forward argument. Add {p.name!r} to inputs, or {argument_fix(p.name, '')}"
            )
        plan.defaulted.append(p.name)
    return plan


def adapt_inputs(model: torch.nn.Module, plan: InputPlan) -> torch.nn.Module:
    """An eager module whose forward takes the served tensors only and calls `model` as the plan says. It is
    scripted or traced like any model, so the proof (against this eager adapter) covers it."""
    params = ", ".join(f"{n}: torch.Tensor" for n in plan.served)
    call = []
    for n in plan.served:
        call.append(f"{n}=list({n}.unbind(0))" if n in plan.lists else f"{n}={n}")
    for n, v in plan.fixed:
        call.append(f"{n}={'None' if v is None else repr(v)}")  # repr() of bool/int/float is a TorchScript literal
    source = (
        "import torch\nfrom typing import List, Optional\n\n\n"
        "class InputAdapter(torch.nn.Module):\n"
        '    """Feeds the wrapped model\'s forward the served tensors and the spec\'s fixed arguments."""\n\n'
        "    def __init__(self, inner):\n"
        "        super().__init__()\n"
        "        self.inner = inner\n\n"
        f"    def forward(self, {params}):\n"
        f"        return self.inner({', '.join(call)})\n"
    )
    folder = _adapter_dir()
    path = folder / f"tsrepo_input_adapter_{len(list(folder.iterdir()))}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.InputAdapter(model).eval()
