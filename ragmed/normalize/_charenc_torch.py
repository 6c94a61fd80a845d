"""The torch twin of :class:`ragmed.normalize.charenc.CharEncoder`'s numpy forward pass, for training
only (imported at fit time: torch is slow to import and a saved normalizer never needs it)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

cross_entropy = F.cross_entropy


def encode_by_length(
    model: nn.Module,
    char_ids: Callable[[dict[str, int], list[str]], np.ndarray],
    chars: dict[str, int],
    texts: list[str],
    chunk: int,
) -> torch.Tensor:
    """``model`` over ``texts`` in chunks of similar length, rows back in the texts' order: each chunk is
    padded only to its own longest text, and padding never changes a text's encoding (it is masked)."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    parts = [
        model(torch.from_numpy(char_ids(chars, [texts[i] for i in order[start : start + chunk]])))
        for start in range(0, len(order), chunk)
    ]
    inverse = torch.from_numpy(np.argsort(order, kind="stable"))
    return torch.cat(parts)[inverse]


class Encoder(nn.Module):
    """Embedding → residual masked convolutions → [max, mean] pooling → linear → unit length."""

    def __init__(self, vocab: int, dim: int, out: int, kernel: int, layers: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, kernel, padding=kernel // 2) for _ in range(layers))
        self.out = nn.Linear(2 * dim, out)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids > 0).float().unsqueeze(1)
        h = self.emb(ids).transpose(1, 2)
        for conv in self.convs:
            h = h + torch.relu(conv(h)) * mask
        pooled = torch.cat(
            [(h - 1e4 * (1 - mask)).max(2).values, (h * mask).sum(2) / mask.sum(2).clamp(min=1)], 1
        )
        return F.normalize(self.out(pooled), dim=-1)

    def arrays(self) -> dict[str, np.ndarray]:
        """The weights in the numpy forward pass's layout (a convolution as one matrix over a window:
        row ``j * dim + i`` is input channel i at window offset j)."""
        with torch.no_grad():
            conv_w = [c.weight.permute(2, 1, 0).reshape(-1, c.weight.shape[0]) for c in self.convs]
            emb = self.emb.weight.numpy().astype(np.float32)
            emb[-1] = 0.0  # the unseen-character row was never trained: it adds nothing
            return {
                "emb": emb,
                "conv_w": torch.stack(conv_w).numpy().astype(np.float32),
                "conv_b": torch.stack([c.bias for c in self.convs]).numpy().astype(np.float32),
                "out_w": self.out.weight.T.contiguous().numpy().astype(np.float32),
                "out_b": self.out.bias.numpy().astype(np.float32),
            }
