"""One module per torch.export failure class (EX01-EX06), each with a fixed twin that exports.

The offending line of each failing module carries a `# <- EXnn` marker (for a class torch.export locates at
no line, the marker is on forward's `def`); tests read the expected line from it. Every module takes
x: float32 [batch, 8] with the batch dynamic (1..4); SPECS gives a case's own inputs where it differs.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor, nn


# EX01: data-dependent control flow
class Branch(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        if x.sum() > 0:  # <- EX01
            return x * 2
        return x - 1


class BranchFixed(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.cond(x.sum() > 0, lambda t: t * 2, lambda t: t - 1, (x,))


# EX02: data-dependent output shape
class KeepPositive(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        n = int((x[0] > 0).sum().item())  # <- EX02
        return x[:, :n]


class KeepPositiveFixed(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        # The same answer with a static shape: zero out instead of cutting.
        return torch.where(x > 0, x, torch.zeros_like(x))


# EX03: a dynamic dim the code specialises (x: [batch, "1..16"])
class SliceSix(nn.Module):
    def forward(self, x: Tensor) -> Tensor:  # <- EX03
        return x[:, :6] + x[:, 2:8]


# The fix is the spec's range: the same module with shape ["8..16"], as torch.export suggests.
SliceSixFixed = SliceSix


# EX04: non-tensor input
class IntArgument(nn.Module):
    def forward(self, x: Tensor, k: int = 2) -> Tensor:  # <- EX04
        return x * k


class IntArgumentFixed(nn.Module):
    def __init__(self, k: int = 2):
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        return x * self.k


# EX05: an unsupported builtin under strict export (non-strict freezes its value)
class RandomScale(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * random.random()  # <- EX05


class RandomScaleFixed(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * 0.5


# EX06: a custom op with a CPU kernel but no fake (meta) kernel: eager runs, torch.export cannot
_lib = torch.library.Library("tsrepo_cases", "DEF")
_lib.define("no_fake(Tensor x) -> Tensor")
_lib.impl("no_fake", lambda x: x * 2, "CPU")


class NoFakeKernelOp(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.tsrepo_cases.no_fake(x)  # <- EX06


class NoFakeKernelOpFixed(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * 2


FAILING = {
    "EX01": Branch,
    "EX02": KeepPositive,
    "EX03": SliceSix,
    "EX04": IntArgument,
    "EX05": RandomScale,
    "EX06": NoFakeKernelOp,
}
FIXED = {
    "EX01": BranchFixed,
    "EX02": KeepPositiveFixed,
    "EX03": SliceSixFixed,
    "EX04": IntArgumentFixed,
    "EX05": RandomScaleFixed,
    "EX06": NoFakeKernelOpFixed,
}
SHAPES = {"EX03": "x:float32:1..16"}
FIXED_SHAPES = {"EX03": "x:float32:8..16"}
