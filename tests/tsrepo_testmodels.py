"""Small models for tests, each a factory the spec can name as `tsrepo_testmodels:<factory>`."""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn


class Linear(nn.Module):
    def __init__(self, n_in: int = 4, n_out: int = 3):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def linear() -> nn.Module:
    return Linear()


class TwoInputs(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * 2 + b


def two_inputs() -> nn.Module:
    return TwoInputs()


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"last_hidden_state": x * 1.5, "logits": self.fc(x)}


def dict_out() -> nn.Module:
    return DictOut()


class ListOut(nn.Module):
    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [x + 1, x.sum(dim=1, keepdim=True)]


def list_out() -> nn.Module:
    return ListOut()


class BatchNormalising(nn.Module):
    """Mixes rows: normalises over the batch, so batching changes answers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(dim=0, keepdim=True)) / (x.std(dim=0, keepdim=True) + 1e-3)


def batch_normalising() -> nn.Module:
    return BatchNormalising()


class BFloat16Out(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.bfloat16)


def bfloat16_out() -> nn.Module:
    return BFloat16Out()


class NotBatchFirst(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.t()


def not_batch_first() -> nn.Module:
    return NotBatchFirst()


class DataDependent(nn.Module):
    """Scripts fine; tracing would freeze the branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > 4:
            return x[:, :4] * 2
        return x * 3


def data_dependent() -> nn.Module:
    return DataDependent()


class Unscriptable(nn.Module):
    """Scripting fails (a set); tracing works and gives the same answers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = {0, 1}
        return x * float(len(keep))


def unscriptable() -> nn.Module:
    return Unscriptable()


class IntArg(nn.Module):
    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return x * k


def int_arg() -> nn.Module:
    return IntArg()


def raises() -> nn.Module:
    raise RuntimeError("weights file missing")


def not_a_module():
    return 42


class Big(nn.Module):
    """About 64 MB of weights: slow enough to kill a build while it writes."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4096, 4096)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def big() -> nn.Module:
    return Big()


class DataDependentUnscriptable(nn.Module):
    """Does not script (a lambda); traced, its branch on the width freezes."""

    def forward(self, x):
        double = lambda t: t * 2
        if x.shape[1] > 4:
            return double(x[:, :4])
        return x * 3


def data_dependent_unscriptable() -> nn.Module:
    return DataDependentUnscriptable()


class ScalarPerRow(nn.Module):
    """Takes ids of shape [batch] (one value per row) and returns [batch] scores."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(10, 4)

    def forward(self, ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.table(ids).sum(dim=1) * weight


def scalar_per_row() -> nn.Module:
    return ScalarPerRow()


class InferenceProbe(nn.Module):
    """Returns 1 where it runs under torch.inference_mode (to check INFERENCE_MODE is honoured), else 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fresh = torch.zeros_like(x)  # a tensor made inside forward is an inference tensor under inference_mode
        return x * 0 + float(fresh.is_inference())


def inference_probe() -> nn.Module:
    return InferenceProbe()


class Labeller(nn.Module):
    """Mixed outputs: class ids (int64), a bool mask, and one label string per row (List[str])."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.names: List[str] = ["cat", "dog", "bird"]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
        scores = self.fc(x)
        ids = scores.argmax(dim=1)
        labels: List[str] = []
        for i in range(ids.shape[0]):
            labels.append(self.names[int(ids[i])])
        return ids, scores > 0, labels


def labeller() -> nn.Module:
    return Labeller()


class TwoDynamic(nn.Module):
    """Two dynamic dims (height, width) and an output that keeps one of them."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.mean(dim=1)  # [B, H, W] -> [B, W]


def two_dynamic() -> nn.Module:
    return TwoDynamic()


# ---- hardening (issue 8) -------------------------------------------------------------------------


class AllNaN(nn.Module):
    """Outputs NaN everywhere: a broken model that still scripts and compares equal to itself."""

    def forward(self, x):
        return x * float("nan")


def all_nan() -> nn.Module:
    return AllNaN()


class FailsAboveBatchTwo(nn.Module):
    """Eager forward raises at batch sizes above 2: tracing at batch 2 works, the check at 3 does not."""

    def forward(self, x):
        if x.shape[0] > 2:
            raise ValueError("batch too large for this model")
        return x + 1


def fails_above_batch_two() -> nn.Module:
    return FailsAboveBatchTwo()


def exits() -> nn.Module:
    import sys

    sys.exit(3)


class ExitsInForward(nn.Module):
    def forward(self, x):
        import sys

        sys.exit(4)


def exits_in_forward() -> nn.Module:
    return ExitsInForward()


class ZeroWidth(nn.Module):
    def forward(self, x):
        return x[:, :0]


def zero_width() -> nn.Module:
    return ZeroWidth()


# ---- AOTInductor (issue 10) ----------------------------------------------------------------------


class AotiTiny(nn.Module):
    """Two inputs whose dynamic dims must be equal (x [B, L, 4], mask [B, L]) and a dict output: one small
    model exercises Dim unification, dict leaves as OUTPUT__i and a -1 output dim in one compile."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        tokens = self.fc(x) * mask.unsqueeze(-1)
        return {"pooled": tokens.sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0), "tokens": tokens}


def aoti_tiny() -> nn.Module:
    return AotiTiny()


class NotExportable(nn.Module):
    """Scripts (TorchScript runs the `if`) but does not export: data-dependent control flow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            return x * 2
        return x - 1


def not_exportable() -> nn.Module:
    return NotExportable()


class SlicesSix(nn.Module):
    """Works only for widths of at least 8: a spec range below that is violated."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :6] + x[:, 2:8]


def slices_six() -> nn.Module:
    return SlicesSix()


# ---- models as libraries write them (issue 13) ----------------------------------------------------
from typing import Optional  # noqa: E402  (appended section: the header stays as it was)


def passthrough(func):
    """A decorator in another file, as transformers' deprecate_kwarg: doctor must report the decorated method's
    own file and lines, not this one."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


class OptionalMask(nn.Module):
    """timm's style: forward(x, attn_mask: Optional[Tensor] = None)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, scale: float = 1.0) -> torch.Tensor:
        if attn_mask is not None:
            x = x * attn_mask
        return self.fc(x) * scale


def optional_mask() -> nn.Module:
    return OptionalMask()


class ListImages(nn.Module):
    """torchvision detection's style: forward takes a list of images."""

    def forward(self, images: List[torch.Tensor]) -> torch.Tensor:
        return torch.stack([img.mean(0) for img in images])


def list_images() -> nn.Module:
    return ListImages()


class TypeComments(nn.Module):
    """torchvision's style: arguments typed by a `# type:` comment, which TorchScript reads."""

    def forward(self, images, scale=None):
        # type: (List[Tensor], Optional[float]) -> Tensor
        out = []
        for img in images:
            out.append(img.sum(0))
        result = torch.stack(out)
        if scale is not None:
            result = result * scale
        return result


def type_comments() -> nn.Module:
    return TypeComments()


class Detector(nn.Module):
    """Returns as many rows as the data has detections (rows whose first value is positive)."""

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        keep = x[:, 0] > 0
        return x[keep], x[keep].sum(1)


def detector() -> nn.Module:
    return Detector()


class RareDetector(nn.Module):
    """Detections that random inputs never produce: every run gives zero rows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[x[:, 0] > 1000.0]


def rare_detector() -> nn.Module:
    return RareDetector()


class CustomOp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.tsrepo_test.muladd(x, x, 1.0)


def custom_op() -> nn.Module:
    """Needs the library the tests build from tests/custom_op/muladd.cpp (TSREPO_TEST_OP_LIBRARY)."""
    import os

    torch.ops.load_library(os.environ["TSREPO_TEST_OP_LIBRARY"])
    return CustomOp()


def tiny_bert() -> nn.Module:
    """A transformers BertModel from code, random weights: 2 layers, hidden 32 (no download)."""
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return BertModel(config)


def slow_factory() -> nn.Module:
    """Takes a minute to build: a Ctrl-C lands inside the user's own code. Touches $TSREPO_TEST_STARTED
    first, so a test knows the factory is running."""
    import os
    import time
    from pathlib import Path

    if os.environ.get("TSREPO_TEST_STARTED"):
        Path(os.environ["TSREPO_TEST_STARTED"]).touch()
    time.sleep(60)
    return Linear()
