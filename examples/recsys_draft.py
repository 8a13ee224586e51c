"""The DIN-style recommender as it is often first written: fine in eager PyTorch, unscriptable.

`tsrepo doctor examples.recsys_draft:build_din_draft` explains each problem; examples/recsys.py is
the fixed version that `tsrepo build` serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class DINConfig:
    dim: int = 16
    features: list = field(default_factory=lambda: ["user", "item", "category"])
    vocab: dict = field(default_factory=lambda: {"user": 1000, "item": 5000, "category": 100})


class AttentionPooling(nn.Module):
    def __init__(self, dim: int, hidden: int = 32):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(4 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, history, target, mask):
        t = target.unsqueeze(1).expand_as(history)
        scores = self.mlp(torch.cat([history, t, history - t, history * t], dim=-1))
        # keep only the real (non-padding) steps
        steps = [s for s in range(history.shape[1]) if bool(mask[:, s].any())]
        weights = torch.softmax(scores[:, steps], dim=1)
        return (weights * history[:, steps]).sum(dim=1)


class DINDraft(nn.Module):
    def __init__(self, cfg: DINConfig = DINConfig()):
        super().__init__()
        self.cfg = cfg
        self.embeddings = nn.ModuleDict({name: nn.Embedding(size, cfg.dim) for name, size in cfg.vocab.items()})
        self.attention = AttentionPooling(2 * cfg.dim)
        self.mlp = nn.Sequential(nn.Linear(5 * cfg.dim, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, user_id, item_id, category_id, hist_item_ids, hist_category_ids):
        ids = {"user": user_id, "item": item_id, "category": category_id}
        emb = {}
        for name in self.cfg.features:
            emb[name] = self.embeddings[name](ids[name]).squeeze(1)
        target = torch.cat([emb["item"], emb["category"]], dim=-1)
        history = torch.cat(
            [self.embeddings["item"](hist_item_ids), self.embeddings["category"](hist_category_ids)], dim=-1
        )
        padding = {0}
        mask = hist_item_ids != min(padding)
        interest = self.attention(history, target, mask)
        logit = self.mlp(torch.cat([emb["user"], target, interest], dim=-1))
        return torch.sigmoid(logit), logit


def build_din_draft() -> nn.Module:
    return DINDraft()
