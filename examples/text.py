"""A small text encoder: token ids (dynamic length) -> per-token logits and a pooled vector.

It returns a dict, Hugging Face style; tsrepo wraps it so Triton gets a tuple.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import nn


class TextEncoder(nn.Module):
    def __init__(self, vocab_size: int = 1000, dim: int = 64, heads: int = 4, max_len: int = 128, classes: int = 5):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.position = nn.Embedding(max_len, dim)
        self.encoder = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids: torch.Tensor) -> Dict[str, torch.Tensor]:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        hidden = self.encoder(self.embed(input_ids) + self.position(positions))
        pooled = hidden.mean(dim=1)
        return {"logits": self.head(hidden), "pooled": pooled}


def build_text_encoder() -> nn.Module:
    return TextEncoder()
