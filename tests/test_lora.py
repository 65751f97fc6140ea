"""LoRA files in the diffusers/PEFT layout and in the official Wan layout load, change the output, scale, unload."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from engine.errors import InputError
from engine.models.official import diffusers_to_official_key
from engine.registry import load_pipeline
from engine.speed import enable_step_cache, load_lora, set_lora_scale, unload_lora

KW = dict(
    prompt="a person talks", num_frames=5, height=32, width=32, num_inference_steps=2, seed=1, output_type="latent"
)
TARGETS = ["blocks.0.attn1.to_q", "blocks.1.attn1.to_v", "blocks.0.audio_attn.to_k"]


def lora_tensors(pipe, rank: int = 4) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    modules = dict(pipe.transformer.named_modules())
    out = {}
    for name in TARGETS:
        layer = modules[name]
        out[name] = (
            torch.randn(rank, layer.in_features, generator=g) * 0.5,
            torch.randn(layer.out_features, rank, generator=g) * 0.5,
        )
    return out


@pytest.fixture()
def pipe():
    return load_pipeline("tiny")


def test_peft_layout_loads_changes_scales_and_unloads(pipe, tmp_path):
    base = pipe(**KW).frames[0]
    save_file(
        {
            f"transformer.{n}.lora_{x}.weight": t
            for n, (a, b) in lora_tensors(pipe).items()
            for x, t in (("A", a), ("B", b))
        },
        str(tmp_path / "style.safetensors"),
    )
    name = load_lora(pipe, tmp_path / "style.safetensors", scale=1.0)
    changed = pipe(**KW).frames[0]
    assert (changed - base).abs().max() > 1e-3
    set_lora_scale(pipe, name, 0.0)
    torch.testing.assert_close(pipe(**KW).frames[0], base)
    unload_lora(pipe)
    torch.testing.assert_close(pipe(**KW).frames[0], base)


def test_official_wan_layout_matches_peft_layout(pipe, tmp_path):
    tensors = lora_tensors(pipe)
    save_file(
        {f"{n}.lora_{x}.weight": t for n, (a, b) in tensors.items() for x, t in (("A", a), ("B", b))},
        str(tmp_path / "peft.safetensors"),
    )
    official = {}
    for name, (a, b) in tensors.items():
        module = diffusers_to_official_key(name + ".weight")[: -len(".weight")]
        official[f"diffusion_model.{module}.lora_down.weight"] = a
        official[f"diffusion_model.{module}.lora_up.weight"] = b / 2  # alpha = 2·rank doubles it back
        official[f"diffusion_model.{module}.alpha"] = torch.tensor(float(2 * a.shape[0]))
    save_file(official, str(tmp_path / "wan.safetensors"))
    load_lora(pipe, tmp_path / "peft.safetensors")
    expected = pipe(**KW).frames[0]
    unload_lora(pipe)
    load_lora(pipe, tmp_path / "wan.safetensors")
    torch.testing.assert_close(pipe(**KW).frames[0], expected)


def test_bad_lora_keys_are_listed(pipe, tmp_path):
    save_file(
        {
            "diffusion_model.blocks.0.not_a_layer.lora_down.weight": torch.zeros(2, 2),
            "diffusion_model.blocks.0.not_a_layer.lora_up.weight": torch.zeros(2, 2),
        },
        str(tmp_path / "bad.safetensors"),
    )
    with pytest.raises(InputError) as err:
        load_lora(pipe, tmp_path / "bad.safetensors")
    assert "not_a_layer" in str(err.value)
    save_file({"transformer.blocks.9.attn1.to_q.lora_A.weight": torch.zeros(2, 32)}, str(tmp_path / "big.safetensors"))
    with pytest.raises(InputError) as err:
        load_lora(pipe, tmp_path / "big.safetensors")
    assert "blocks.9" in str(err.value)


def test_step_cache_skips_blocks_per_branch(pipe):
    calls = {"n": 0}
    # the FFN inside the last block only runs when the block is computed, not when the cache returns its residual
    hook = pipe.transformer.blocks[1].ffn.register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    pipe(**{**KW, "num_inference_steps": 6, "batch_branches": False})
    full = calls["n"]
    calls["n"] = 0
    enable_step_cache(pipe, threshold=10.0)  # a huge threshold: reuse whenever a branch has a cached residual
    out = pipe(**{**KW, "num_inference_steps": 6, "batch_branches": False}).frames[0]
    hook.remove()
    assert calls["n"] < full and torch.isfinite(out).all()


def test_mag_cache_with_ratios_skips_blocks(pipe):
    calls = {"n": 0}
    hook = pipe.transformer.blocks[1].ffn.register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    run = {**KW, "num_inference_steps": 8, "batch_branches": False}
    base = pipe(**run).frames[0]
    full, calls["n"] = calls["n"], 0
    enable_step_cache(pipe, threshold=0.5, kind="mag", mag_ratios=[0.99] * 8, num_inference_steps=8)
    out = pipe(**run).frames[0]
    hook.remove()
    assert calls["n"] < full and torch.isfinite(out).all()
    assert (out - base).abs().max() > 0  # skipped steps really change the result a little
