"""One unscriptable module per TorchScript failure class, each with a fixed twin that scripts.

The offending line of each failing module carries a `# <- TSxx` marker; tests read the expected line
number from it. Every module takes x: float32 [2, 3] (and the twins give the eager answers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Final, List

import torch
from torch import Tensor, nn


# TS01: list comprehension with an if filter
class CompIf(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        parts = [x * 2, x - 1, -x]
        kept = [p for p in parts if bool(p.sum() > 0)]  # <- TS01
        return torch.stack(kept).sum(0) if len(kept) > 0 else x


class CompIfFixed(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        parts = [x * 2, x - 1, -x]
        kept: List[Tensor] = []
        for p in parts:
            if bool(p.sum() > 0):
                kept.append(p)
        return torch.stack(kept).sum(0) if len(kept) > 0 else x


# TS02: sets
class SetLiteral(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        seen = {1, 2, 2}  # <- TS02
        return x * len(seen)


class SetLiteralFixed(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        seen: Dict[int, bool] = {1: True, 2: True}
        return x * len(seen)


# TS03: dict comprehension (torch 2.13 compiles it: no finding)
class DictComp(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        scaled = {str(i): x * i for i in range(3)}
        return scaled["2"]


# TS04: forward taking non-tensor types
@dataclass
class Config:
    scale: float = 2.0


class ForwardConfig(nn.Module):
    def forward(self, x: Tensor, cfg: Config) -> Tensor:  # <- TS04
        return x * cfg.scale


class ForwardKwargs(nn.Module):
    def forward(self, x, **kwargs):  # <- TS04
        return x * 2


class ForwardConfigFixed(nn.Module):
    def __init__(self, cfg: Config = Config()):
        super().__init__()
        self.scale: float = cfg.scale

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


# TS05: attributes TorchScript cannot convert
class Thing:
    def __init__(self, weight):
        self.weight = weight  # unannotated: TorchScript would take it for a Tensor


class AttrObjects(nn.Module):
    def __init__(self):
        super().__init__()
        self.things = [Thing(1), Thing(2)]

    def forward(self, x: Tensor) -> Tensor:
        return x * len(self.things)  # <- TS05


class AttrConfig(nn.Module):
    def __init__(self):
        super().__init__()
        self.cfg = Config()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.cfg.scale  # <- TS05


class AttrMixedDict(nn.Module):
    def __init__(self):
        super().__init__()
        self.options = {"scale": 2, "name": "two", "extra": [1.0]}

    def forward(self, x: Tensor) -> Tensor:
        return x * self.options["scale"]  # <- TS05


class AttrFixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.weights: List[float] = [t.weight for t in [Thing(1.0), Thing(2.0)]]
        self.scale: Final[float] = Config().scale

    def forward(self, x: Tensor) -> Tensor:
        return x * len(self.weights) * self.scale / 2.0


# TS06: no source code (defined by exec)
_namespace: dict = {}
exec(
    "import torch\nfrom torch import nn\n\n\nclass FromExec(nn.Module):\n"
    "    def forward(self, x):  # <- TS06 (line 6 of the exec'd text)\n        return x + 1\n",
    _namespace,
)
FromExec = _namespace["FromExec"]


class FromExecFixed(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x + 1


# TS07: ModuleList indexed by a variable
class ListIndex(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(3, 3) for _ in range(2)])

    def forward(self, x: Tensor) -> Tensor:
        for i in range(2):
            x = self.layers[i](x)  # <- TS07
        return x


class ListIndexFixed(ListIndex):
    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


# TS08: ModuleDict indexed by a non-literal key
class DictKey(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads = nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3)})
        self.names = ["a", "b"]

    def forward(self, x: Tensor) -> Tensor:
        out = x
        for name in self.names:
            out = out + self.heads[name](x)  # <- TS08
        return out


class DictKeyFixed(DictKey):
    def forward(self, x: Tensor) -> Tensor:
        out = x
        for _name, head in self.heads.items():
            out = out + head(x)
        return out


# TS09: modules called through a plain container
class CallFromList(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)

    def forward(self, x: Tensor) -> Tensor:
        for m in [self.a, self.b]:
            x = m(x)  # <- TS09
        return x


class CallFromListFixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(3, 3), nn.Linear(3, 3)])

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


# TS10: global and closure state
SCALES = {"a": 2.0}


class GlobalState(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * SCALES["a"]  # <- TS10


def make_closure() -> nn.Module:
    factor = {"k": 3.0}

    class ClosureState(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x * factor["k"]  # <- TS10

    return ClosureState()


class GlobalStateFixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale_a: Final[float] = SCALES["a"]

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale_a


# TS11: dynamic Python
class DynamicGetattr(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer0 = nn.Linear(3, 3)

    def forward(self, x: Tensor) -> Tensor:
        name = "layer" + str(0)
        return getattr(self, name)(x)  # <- TS11


class DynamicTry(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        try:  # <- TS11
            return x + 1
        except RuntimeError:
            return x


class DynamicLambda(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        add_one = lambda t: t + 1  # <- TS11  # noqa: E731
        return add_one(x)


class DynamicStar(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        parts = [x, x * 2]
        return torch.add(*parts)  # <- TS11


class DynamicGenerator(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return sum(t for t in [x, x])  # <- TS11


class DynamicFixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer0 = nn.Linear(3, 3)

    def forward(self, x: Tensor) -> Tensor:
        parts = [x, x * 2]
        return self.layer0(x) * 0 + torch.add(parts[0], parts[1])


# TS12: a tensor where a Python int is needed
class TensorBound(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        n = (x.abs() > -1).sum()
        out = x
        for _ in range(n):  # <- TS12
            out = out + 1
        return out


class TensorBoundFixed(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        n = int((x.abs() > -1).sum())
        out = x
        for _ in range(n):
            out = out + 1
        return out


# TS13: unannotated non-tensor arguments
class NoAnnotation(nn.Module):
    def forward(self, x, twice=False):  # <- TS13
        return x * 2 if twice else x


class NoAnnotationFixed(nn.Module):
    def forward(self, x: Tensor, twice: bool = False) -> Tensor:
        return x * 2 if twice else x


FAILING = {
    "TS01": [CompIf],
    "TS02": [SetLiteral],
    "TS04": [ForwardConfig, ForwardKwargs],
    "TS05": [AttrObjects, AttrConfig, AttrMixedDict],
    "TS06": [FromExec],
    "TS07": [ListIndex],
    "TS08": [DictKey],
    "TS09": [CallFromList],
    "TS10": [GlobalState, make_closure],
    "TS11": [DynamicGetattr, DynamicTry, DynamicLambda, DynamicStar, DynamicGenerator],
    "TS12": [TensorBound],
    "TS13": [NoAnnotation],
}

FIXED = {
    "TS01": (CompIf, CompIfFixed),
    "TS02": (SetLiteral, SetLiteralFixed),
    "TS03": (DictComp, DictComp),
    "TS04": (ForwardConfigFixed, ForwardConfigFixed),
    "TS05": (AttrFixed, AttrFixed),
    "TS06": (FromExecFixed, FromExecFixed),
    "TS07": (ListIndexFixed, ListIndexFixed),
    "TS08": (DictKeyFixed, DictKeyFixed),
    "TS09": (CallFromListFixed, CallFromListFixed),
    "TS10": (GlobalStateFixed, GlobalStateFixed),
    "TS11": (DynamicFixed, DynamicFixed),
    "TS12": (TensorBound, TensorBoundFixed),
    "TS13": (NoAnnotation, NoAnnotationFixed),
}


# ---- issue 13: a decorated method (the decorator lives in tsrepo_testmodels.py) ---------------------
from tsrepo_testmodels import passthrough  # noqa: E402


class DecoratedLibraryMethod(nn.Module):
    @passthrough
    def forward(self, x: Tensor) -> Tensor:
        seen = {1, 2}  # TS02, on this line of this file
        return x * float(len(seen))
