"""Focus-by-predicting: the size-weighted BCE against a hand computation, the head's shapes, the token grid."""

from __future__ import annotations

import math

import pytest
import torch

from training.mask_head import FaceMaskHead, head_blocks, size_weighted_bce, token_grid_mask


def test_size_weighted_bce_matches_hand_computation():
    pred = torch.tensor([[[[0.9, 0.2], [0.3, 0.6]]]])  # [B=1, F=1, 2, 2]
    gt = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    bce = -(math.log(0.9) + math.log(0.8) + math.log(0.7) + math.log(0.4)) / 4
    expected = (2 * 2 / 1.0) * bce  # h*w / sum(M_gt) = 4
    assert size_weighted_bce(pred, gt).item() == pytest.approx(expected, rel=1e-6)


def test_small_faces_weigh_as_much_as_large_ones_and_empty_frames_are_skipped():
    gt_small = torch.zeros(1, 1, 4, 4)
    gt_small[..., 0, 0] = 1
    gt_large = torch.zeros(1, 1, 4, 4)
    gt_large[..., :2, :2] = 1
    # a predictor that misses the face entirely: the loss per face pixel is the same, so the small face is not ignored
    miss_small = size_weighted_bce(torch.full_like(gt_small, 0.01), gt_small)
    miss_large = size_weighted_bce(torch.full_like(gt_large, 0.01), gt_large)
    assert miss_small > 0.9 * miss_large
    both = torch.cat([gt_small, torch.zeros_like(gt_small)], dim=1)  # second frame has no face
    pred = torch.full_like(both, 0.3)
    assert size_weighted_bce(pred, both).item() == pytest.approx(size_weighted_bce(pred[:, :1], both[:, :1]).item())
    assert size_weighted_bce(pred, torch.zeros_like(pred)).item() == 0.0


def test_head_averages_four_blocks():
    head = FaceMaskHead(dim=8, num_blocks=4)
    states = [torch.randn(2, 3 * 2 * 2, 8) for _ in range(4)]
    out = head(states, (3, 2, 2))
    assert out.shape == (2, 3, 2, 2) and (out > 0).all() and (out < 1).all()
    manual = torch.stack([torch.sigmoid(h(s)).squeeze(-1) for h, s in zip(head.heads, states)]).mean(0)
    torch.testing.assert_close(out, manual.unflatten(1, (3, 2, 2)))
    assert head_blocks(40) == (-4, -3, -2, -1) and head_blocks(2) == (-2, -1)


def test_token_grid_mask_pools_latent_mask():
    mask = torch.zeros(1, 2, 4, 4)
    mask[0, 0, :2, :2] = 1
    grid = token_grid_mask(mask, (2, 2, 2))
    assert grid.shape == (1, 2, 2, 2) and grid[0, 0, 0, 0] == 1 and grid.sum() == 1
