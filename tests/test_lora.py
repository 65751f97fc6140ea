"""LoRA files in the diffusers/PEFT layout and in the official Wan layout load, change the output, scale, unload."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from engine.errors import InputError
from engine.models.official import diffusers_to_official_key, official_to_diffusers_key
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
    """First-block cache, one cache per guidance branch: threshold 0 never reuses (the same video, every block run);
    a huge threshold reuses from the second step on, so the later blocks run once per branch, at the first step."""
    calls = {"n": 0}
    # the FFN inside the last block only runs when the block is computed, not when the cache returns its residual
    hook = pipe.transformer.blocks[1].ffn.register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    run = {**KW, "num_inference_steps": 6, "batch_branches": False}
    base = pipe(**run)
    full, calls["n"] = calls["n"], 0
    branches = base.timings["passes_per_step"][0]
    assert full == sum(base.timings["passes_per_step"]) == 6 * branches
    enable_step_cache(pipe, threshold=0.0)
    torch.testing.assert_close(pipe(**run).frames[0], base.frames[0], rtol=0, atol=0)
    assert calls["n"] == full
    pipe.transformer.disable_cache()
    calls["n"] = 0
    enable_step_cache(pipe, threshold=10.0)  # a huge threshold: reuse whenever a branch has a cached residual
    out = pipe(**run).frames[0]
    hook.remove()
    assert calls["n"] == branches  # each branch computed its blocks once, then reused its own residual
    assert (out - base.frames[0]).abs().max() > 0


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


# -- match reports: a LoRA that fully applies, one that half applies, one for another architecture ------------------


def official_lora(pipe, modules: list[str], rank: int = 4, seed: int = 0, width: int = 1) -> dict[str, torch.Tensor]:
    """A Wan-layout LoRA (lora_down / lora_up / alpha) on official module names; `width` scales the layer sizes (a
    LoRA made for a wider model). Names that are not HuMo layers (e.g. `cross_attn.k_img`) get the text layer's sizes."""
    g = torch.Generator().manual_seed(seed)
    layers = dict(pipe.transformer.named_modules())
    out = {}
    for module in modules:
        ours = official_to_diffusers_key(module.replace("k_img", "k").replace("v_img", "v") + ".weight")
        layer = layers[ours[: -len(".weight")]]
        out[f"diffusion_model.{module}.lora_down.weight"] = torch.randn(rank, layer.in_features * width, generator=g)
        out[f"diffusion_model.{module}.lora_up.weight"] = torch.randn(layer.out_features * width, rank, generator=g)
        out[f"diffusion_model.{module}.alpha"] = torch.tensor(float(rank))
    return out


SELF = [f"blocks.{i}.self_attn.{p}" for i in range(2) for p in "qkvo"]
TEXT = [f"blocks.{i}.cross_attn.{p}" for i in range(2) for p in "qkvo"]
FFN = [f"blocks.{i}.ffn.{p}" for i in range(2) for p in "02"]
AUDIO = [f"blocks.{i}.audio_cross_attn_wrapper.audio_cross_attn.{p}" for i in range(2) for p in "qkvo"]
IMAGE = [f"blocks.{i}.cross_attn.{p}_img" for i in range(2) for p in "kv"]


def test_a_lora_that_fully_applies_reports_every_module_by_kind(pipe, tmp_path):
    from engine.speed import lora_report

    tensors = official_lora(pipe, SELF + TEXT + FFN + AUDIO)
    tensors["diffusion_model.blocks.0.ffn.0.diff_b"] = torch.randn(64) * 0.1  # a bias delta: PEFT's lora_B.bias
    tensors["diffusion_model.blocks.0.norm3.diff"] = torch.zeros(32)  # lightx2v-style zero norm diff: nothing to apply
    save_file(tensors, str(tmp_path / "full.safetensors"))
    report, state = lora_report(tmp_path / "full.safetensors", pipe.transformer)
    assert report.matched == {"self-attn": 8, "text cross-attn": 8, "ffn": 4, "audio": 8} and not report.unmatched
    assert report.share == 1.0 and report.applies
    assert report.dropped == ["diffusion_model.blocks.0.norm3.diff"]
    assert "blocks.0.ffn.net.0.proj.lora_B.bias" in state
    base = pipe(**KW).frames[0]
    name = load_lora(pipe, tmp_path / "full.safetensors")
    assert pipe.lora_reports[name] == report
    assert (pipe(**KW).frames[0] - base).abs().max() > 1e-3


def test_a_half_applying_lora_is_refused_then_loaded_in_part_with_lora_partial(pipe, tmp_path):
    """An I2V LoRA on HuMo: its image cross-attention (k_img / v_img) has no layer here: 8 of 12 modules apply."""
    i2v = official_lora(pipe, SELF + IMAGE)
    save_file(i2v, str(tmp_path / "i2v.safetensors"))
    with pytest.raises(InputError) as err:
        load_lora(pipe, tmp_path / "i2v.safetensors")
    message = str(err.value)
    assert "8 of 12 modules apply (67%)" in message and "image cross-attn (I2V) 0/4" in message
    assert "blocks.0.cross_attn.k_img (no such layer in HuMo)" in message and "--lora-partial" in message
    # with partial: exactly the self-attention part is applied, the same as a file holding only that part
    save_file({k: v for k, v in i2v.items() if "_img" not in k}, str(tmp_path / "self.safetensors"))
    load_lora(pipe, tmp_path / "self.safetensors")
    expected = pipe(**KW).frames[0]
    unload_lora(pipe)
    name = load_lora(pipe, tmp_path / "i2v.safetensors", partial=True)
    torch.testing.assert_close(pipe(**KW).frames[0], expected)
    assert pipe.lora_reports[name].matched == {"self-attn": 8} and not pipe.lora_reports[name].applies


def test_the_cli_refuses_a_partial_lora_unless_asked(tmp_path, capsys):
    from engine.cli import main

    pipe = load_pipeline("tiny")
    save_file(official_lora(pipe, SELF + IMAGE), str(tmp_path / "i2v.safetensors"))
    args = ["generate", "--model", "tiny", "--prompt", "a man talks", "--height", "32", "--width", "32", "--frames",
            "5", "--steps", "1", "--lora", str(tmp_path / "i2v.safetensors"), "--out", str(tmp_path / "x.mp4")]  # fmt: skip
    assert main(args) == 2 and "image cross-attn (I2V)" in capsys.readouterr().err
    assert main([*args, "--lora-partial"]) == 0 and (tmp_path / "x.mp4").exists()


def test_a_lora_for_another_architecture_is_refused_even_with_partial(pipe, tmp_path):
    """A LoRA of a wider model (as a 1.3B LoRA is on 17B): every name exists, no shape fits: nothing applies."""
    save_file(official_lora(pipe, SELF + FFN, width=2), str(tmp_path / "wide.safetensors"))
    for partial in (False, True):
        with pytest.raises(InputError) as err:
            load_lora(pipe, tmp_path / "wide.safetensors", partial=partial)
        assert "0 of 12 modules apply (0%)" in str(err.value)
        assert "blocks.0.self_attn.q (64x64; HuMo's is 32x32)" in str(err.value)
    assert not any("lora" in n for n, _ in pipe.transformer.named_modules())


def test_the_studio_shows_the_report_beside_the_lora_and_loads_part_only_when_ticked(pipe, tmp_path):
    from studio import advanced

    save_file(official_lora(pipe, SELF + IMAGE), str(tmp_path / "i2v.safetensors"))
    save_file(official_lora(pipe, SELF + FFN), str(tmp_path / "t2v.safetensors"))
    text = advanced.lora_report_text(pipe, [str(tmp_path / "i2v.safetensors"), str(tmp_path / "t2v.safetensors")])
    first, second = text.splitlines()
    assert first.startswith("- needs 'load LoRAs that only partly apply': i2v.safetensors: 8 of 12 modules apply")
    assert second.startswith("- applies: t2v.safetensors: 12 of 12 modules apply (100%)")
    base = pipe(**KW).frames[0]
    refused, _ = advanced.read_options(False, lora_files=[str(tmp_path / "i2v.safetensors")])
    with pytest.raises(InputError, match="--lora-partial"), advanced.applied(pipe, refused):
        pass
    partly, _ = advanced.read_options(False, lora_files=[str(tmp_path / "i2v.safetensors")], lora_partial=True)
    assert partly.lora_partial
    with advanced.applied(pipe, partly):
        assert (pipe(**KW).frames[0] - base).abs().max() > 1e-3
    torch.testing.assert_close(pipe(**KW).frames[0], base)  # taken off after the job
