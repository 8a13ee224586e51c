"""A recommender in the style of DIN (Deep Interest Network).

Per-feature embedding tables in a ModuleDict, attention pooling of the user's behaviour sequence
against the candidate item, an MLP, and a tuple of outputs (click probability, raw logit).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

VOCAB = {"user": 1000, "item": 5000, "category": 100}


class AttentionPooling(nn.Module):
    """DIN's local activation unit: weights each behaviour by its relevance to the candidate."""

    def __init__(self, dim: int, hidden: int = 32):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(4 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # history: [B, T, D], target: [B, D]
        t = target.unsqueeze(1).expand_as(history)
        scores = self.mlp(torch.cat([history, t, history - t, history * t], dim=-1))  # [B, T, 1]
        weights = torch.softmax(scores, dim=1)
        return (weights * history).sum(dim=1)


class DIN(nn.Module):
    def __init__(self, dim: int = 16):
        super().__init__()
        self.embeddings = nn.ModuleDict({name: nn.Embedding(size, dim) for name, size in VOCAB.items()})
        self.attention = AttentionPooling(2 * dim)
        self.mlp = nn.Sequential(nn.Linear(5 * dim, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(
        self,
        user_id: torch.Tensor,
        item_id: torch.Tensor,
        category_id: torch.Tensor,
        hist_item_ids: torch.Tensor,
        hist_category_ids: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        user = self.embeddings["user"](user_id).squeeze(1)  # [B, D]
        target = torch.cat(
            [self.embeddings["item"](item_id).squeeze(1), self.embeddings["category"](category_id).squeeze(1)], dim=-1
        )  # [B, 2D]
        history = torch.cat(
            [self.embeddings["item"](hist_item_ids), self.embeddings["category"](hist_category_ids)], dim=-1
        )  # [B, T, 2D]
        interest = self.attention(history, target)
        logit = self.mlp(torch.cat([user, target, interest], dim=-1))
        return torch.sigmoid(logit), logit


def build_din() -> nn.Module:
    return DIN()
