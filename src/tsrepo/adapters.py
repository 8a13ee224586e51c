"""What the libtorch backend can serve, and a scripted adapter for what it almost can.

The backend takes Tensor arguments and returns a Tensor, a List[str], or a tuple of those. A model
that returns a dict (Hugging Face style) or a list of tensors is wrapped in a small scripted module
that returns a tuple in a fixed order. The adapter's source is generated into a real file because
TorchScript compiles from source it can read back with `inspect`.
"""

from __future__ import annotations

import atexit
import importlib.util
import re
import shutil
import tempfile
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


def check_arguments(spec: ModelSpec, module: torch.jit.ScriptModule) -> list[str]:
    args = forward_arguments(module)
    for name, type_str in args:
        if type_str != "Tensor":
            raise ServingError(
                f"{spec.where('inputs')}: forward argument `{name}: {type_str}` cannot come from"
                " Triton, which passes only tensors; make it a Tensor, or fix its value inside the"
                " model (an attribute set in __init__)"
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
