"""Focus-by-predicting (reference/humo-official.md §2.7): a face-mask predictor on the hidden states right after the
audio cross-attention of the last four blocks, averaged, trained with a size-weighted BCE. Training-only: it is not
part of the inference model's weights (the official 17B checkpoint has none).

The paper gives no architecture ("Face Loc Predictor"); here each block gets LayerNorm + Linear(dim -> 1) per token,
and the four probability maps are averaged: M_pred = mean_k sigmoid(head_k(h_k)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BLOCKS = (-4, -3, -2, -1)


def head_blocks(num_layers: int) -> tuple[int, ...]:
    """The last four blocks (fewer in a model with fewer layers, e.g. the tiny test model)."""
    return BLOCKS[-min(len(BLOCKS), num_layers) :]


class FaceMaskHead(nn.Module):
    def __init__(self, dim: int, num_blocks: int = len(BLOCKS)):
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 1)) for _ in range(num_blocks)
        )

    def forward(self, block_states: list[torch.Tensor], grid: tuple[int, int, int]) -> torch.Tensor:
        """block_states: num_blocks tensors [B, L, dim] (L = F*H*W tokens) -> M_pred [B, F, H, W] in (0, 1)."""
        probs = [torch.sigmoid(head(state.float())).squeeze(-1) for head, state in zip(self.heads, block_states)]
        return torch.stack(probs).mean(0).unflatten(1, grid)


def token_grid_mask(mask: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """A [B, F, h, w] latent-resolution mask -> the [B, F, H, W] token grid (patch 1x2x2), binarised at 0.5."""
    pooled = F.adaptive_avg_pool3d(mask[:, None].float(), grid)[:, 0]
    return (pooled >= 0.5).float()


def size_weighted_bce(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L_mask = (h*w / sum_ij M_gt) * BCE(M_pred, M_gt), per frame, averaged over frames with a face.

    BCE is the mean over the h*w positions, so the weight makes small faces count as much as large ones. Frames
    whose mask is empty carry no face to focus on and are left out (their weight would be infinite)."""
    bce = F.binary_cross_entropy(pred.clamp(eps, 1 - eps), target, reduction="none").flatten(-2).mean(-1)
    area = target.flatten(-2).sum(-1)
    hw = target.shape[-1] * target.shape[-2]
    valid = area > 0
    if not valid.any():
        return pred.sum() * 0.0
    return (bce[valid] * hw / area[valid]).mean()
