"""Memory modes on the tiny pipeline (CPU): each runnable mode gives the default output within tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.memory import apply_memory_mode, choose_memory_mode, describe_memory_mode, parse_mode
from engine.registry import load_pipeline

KW = dict(prompt="a person talks", num_frames=9, height=64, width=64, num_inference_steps=2, seed=4)
GB = 10**9


@pytest.fixture(scope="module")
def reference():
    return load_pipeline("tiny")(**KW).frames[0]


def test_group_offload_matches_default(reference):
    """Blocks moved in and out by diffusers' hooks (CPU to CPU here): the same arithmetic."""
    pipe = apply_memory_mode(load_pipeline("tiny"), "group_offload", "cpu")
    assert np.abs(pipe(**KW).frames[0] - reference).max() <= 1e-6


def _devices(pipe) -> dict[str, set[str]]:
    return {name: {p.device.type for p in getattr(pipe, name).parameters()} for name in COMPONENTS}


COMPONENTS = ("transformer", "vae", "text_encoder", "audio_encoder")


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("gpu", dict.fromkeys(COMPONENTS, "meta")),
        ("cpu", dict.fromkeys(COMPONENTS, "cpu")),
        ("gpu+text_encoder_cpu", {**dict.fromkeys(COMPONENTS, "meta"), "text_encoder": "cpu"}),
        ("fp8", dict.fromkeys(COMPONENTS, "meta")),
    ],
)
def test_each_mode_places_each_component(mode, expected):
    """Where each component lives, with the "accelerator" stood in by the meta device (no GPU here): a mode that
    forgot to move, or moved too much, shows up as a wrong device (on CPU alone every mode would look the same)."""
    import torch

    pipe = apply_memory_mode(load_pipeline("tiny"), mode, torch.device("meta"))
    assert _devices(pipe) == {name: {device} for name, device in expected.items()}
    assert pipe.memory_mode == mode
    if mode == "fp8":  # stored in fp8, computed in the compute dtype
        assert {p.dtype for p in pipe.transformer.blocks.parameters()} & {torch.float8_e4m3fn}


def test_vae_tiling_close_to_untiled(reference):
    """Tiles of 32 px with 16 px overlap on 64 px frames: the random tiny VAE's receptive field crosses the tile
    edges, so pixels near the seams differ (measured: max 0.24, mean 0.025); bound the mean at 0.04."""
    pipe = apply_memory_mode(load_pipeline("tiny"), "gpu+vae_tiling", "cpu")
    pipe.vae.enable_tiling(32, 32, 16, 16)  # force real tiling
    diff = np.abs(pipe(**KW).frames[0] - reference)
    assert 0 < diff.mean() < 0.04


def test_fp8_storage_within_looser_tolerance(reference):
    """fp8 (e4m3) keeps ~2 significant digits per weight: the video drifts, but stays close on average.
    Tolerance: mean abs difference below 0.05 on [0, 1] frames (the output's own spread is ~0.2)."""
    pipe = apply_memory_mode(load_pipeline("tiny"), "fp8", "cpu")
    weight = pipe.transformer.blocks[0].attn1.to_q.weight
    assert weight.dtype.itemsize == 1  # really stored in 8 bits
    out = pipe(**KW).frames[0]
    diff = np.abs(out - reference)
    assert 0 < diff.mean() < 0.05
    assert np.isfinite(out).all()


def test_model_offload_needs_an_accelerator():
    with pytest.raises(InputError):
        apply_memory_mode(load_pipeline("tiny"), "model_offload", "cpu")


def test_bad_mode_message():
    with pytest.raises(InputError) as err:
        parse_mode("turbo+vae_tiling")
    assert "fp8" in str(err.value) and err.value.field == "memory_mode"
    assert parse_mode("fp8+vae_tiling+text_encoder_cpu") == ("fp8", {"vae_tiling", "text_encoder_cpu"})
    assert "fp8" in describe_memory_mode("fp8+vae_tiling")


def test_automatic_choice_meets_the_targets():
    assert choose_memory_mode("humo-17b", 24 * GB) == "fp8+text_encoder_cpu+vae_tiling"
    assert choose_memory_mode("humo-1.7b", 12 * GB) == "gpu+text_encoder_cpu+vae_tiling"
    assert choose_memory_mode("humo-1.7b", 80 * GB) == "gpu"
    assert choose_memory_mode("humo-17b", 80 * GB) == "gpu"
    assert choose_memory_mode("humo-17b", 48 * GB, height=720, width=1280) == "gpu+text_encoder_cpu+vae_tiling"
    assert choose_memory_mode("humo-17b", 16 * GB).startswith("group_offload")
    assert choose_memory_mode("humo-17b", 0) == "cpu"
    assert choose_memory_mode("tiny", 8 * GB) == "gpu"


def test_load_pipeline_applies_the_chosen_mode_and_accepts_an_override():
    assert load_pipeline("tiny").memory_mode == "cpu"  # no CUDA here: the automatic choice
    pipe = load_pipeline("tiny", memory_mode="fp8")
    assert pipe.memory_mode == "fp8" and pipe.transformer.blocks[0].ffn.net[2].weight.dtype.itemsize == 1
