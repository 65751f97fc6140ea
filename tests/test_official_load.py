"""Official checkpoints: key map, strict loading of the three layouts, fp32 islands, fp8 upcast, diffusers round trip."""

import json

import pytest
import torch
from safetensors.torch import save_file

from engine.convert import convert_official
from engine.errors import CheckpointError, InputError
from engine.models import PRESETS, HuMoTransformer3DModel
from engine.models.official import (
    diffusers_to_official_key,
    infer_config,
    iter_official_keys,
    official_to_diffusers_key,
)

TINY = PRESETS["tiny-17b"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = HuMoTransformer3DModel(**TINY).eval()
    with torch.no_grad():  # non-trivial norms so a wrongly mapped norm would show
        for name, p in m.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return m


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(2)
    return (
        torch.randn(1, 36, 3, 4, 4, generator=g),
        torch.tensor([750]),
        torch.randn(1, 512, 32, generator=g),
        torch.randn(1, 3, 8, 5, 16, generator=g),
    )


def run(m, inputs):
    with torch.no_grad():
        return m(*inputs).sample.float()


def test_official_key_names_and_counts_on_meta():
    with torch.device("meta"):
        small = HuMoTransformer3DModel(**PRESETS["humo-1.7b"])
        big = HuMoTransformer3DModel(**PRESETS["humo-17b"])
    keys_small, keys_big = list(iter_official_keys(small)), list(iter_official_keys(big))
    assert len(keys_small) == len(set(keys_small)) == 1193
    assert len(keys_big) == len(set(keys_big)) == 1583
    shapes = {diffusers_to_official_key(n): tuple(p.shape) for n, p in big.named_parameters()}
    a = "blocks.{}.audio_cross_attn_wrapper."
    expected = {
        a.format(39) + "audio_cross_attn.q.weight": (5120, 5120),
        a.format(0) + "audio_cross_attn.k.weight": (5120, 1536),
        a.format(0) + "audio_cross_attn.v.bias": (5120,),
        a.format(0) + "audio_cross_attn.o.weight": (5120, 5120),
        a.format(0) + "audio_cross_attn.norm_q.weight": (5120,),
        a.format(0) + "norm1_audio.bias": (5120,),
        "audio_proj.audio_proj_glob_1.layer.weight": (512, 51200),
        "audio_proj.audio_proj_glob_3.layer.weight": (24576, 512),
        "audio_proj.audio_proj_glob_norm.layer.weight": (1536,),
        "patch_embedding.weight": (5120, 36, 1, 2, 2),
        "head.head.weight": (64, 5120),
        "head.modulation": (1, 2, 5120),
        "blocks.3.modulation": (1, 6, 5120),
        "blocks.3.norm3.weight": (5120,),
        "blocks.3.ffn.0.weight": (13824, 5120),
        "text_embedding.2.bias": (5120,),
        "time_projection.1.weight": (30720, 5120),
    }
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    # config inferred from the official shapes is the preset
    inferred = infer_config(shapes)
    for k, v in PRESETS["humo-17b"].items():
        assert inferred[k] == v, k


def test_key_map_examples_and_inverse():
    pairs = {
        "blocks.7.norm3.weight": "blocks.7.norm2.weight",
        "blocks.7.self_attn.o.bias": "blocks.7.attn1.to_out.0.bias",
        "blocks.7.cross_attn.norm_k.weight": "blocks.7.attn2.norm_k.weight",
        "blocks.7.ffn.0.weight": "blocks.7.ffn.net.0.proj.weight",
        "blocks.7.modulation": "blocks.7.scale_shift_table",
        "blocks.7.audio_cross_attn_wrapper.audio_cross_attn.q.weight": "blocks.7.audio_attn.to_q.weight",
        "blocks.7.audio_cross_attn_wrapper.norm1_audio.weight": "blocks.7.norm_audio.weight",
        "audio_proj.audio_proj_glob_2.layer.bias": "audio_proj.linear_2.bias",
        "head.head.weight": "proj_out.weight",
        "head.modulation": "scale_shift_table",
        "time_projection.1.bias": "condition_embedder.time_proj.bias",
        "text_embedding.0.weight": "condition_embedder.text_embedder.linear_1.weight",
    }
    for official, diffusers in pairs.items():
        assert official_to_diffusers_key(official) == diffusers
        assert diffusers_to_official_key(diffusers) == official
    assert official_to_diffusers_key("blocks.0.self_attn.x.weight") is None
    assert official_to_diffusers_key("img_emb.proj.0.weight") is None


def test_round_trip_pth_identical_outputs(model, inputs, tmp_path):
    sd = model.to_official_state_dict()
    assert "blocks.1.audio_cross_attn_wrapper.audio_cross_attn.k.weight" in sd
    torch.save({**sd, "step": 1234, "note": "ema"}, tmp_path / "ema.pth")
    loaded = HuMoTransformer3DModel.from_official(tmp_path / "ema.pth", torch_dtype=torch.float32, config=TINY)
    assert torch.equal(run(loaded, inputs), run(model, inputs))
    report = loaded.load_report
    assert report["layout"] == "pth" and report["tensors_loaded"] == len(sd)
    assert sorted(report["metadata"]) == ["note (str)", "step (int)"]
    assert not loaded.training


def test_strict_errors_list_renamed_missing_extra(model, tmp_path):
    sd = model.to_official_state_dict()
    sd["blocks.0.self_attn.qq.weight"] = sd.pop("blocks.0.self_attn.q.weight")  # renamed
    del sd["audio_proj.audio_proj_glob_2.layer.bias"]  # missing
    sd["blocks.1.audio_cross_attn_wrapper.extra.weight"] = torch.zeros(3)  # extra
    sd["head.head.bias"] = torch.zeros(5)  # wrong shape
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        HuMoTransformer3DModel.from_official(tmp_path / "bad.pth", config=TINY)
    msg = str(err.value)
    for key in [
        "blocks.0.self_attn.qq.weight",
        "blocks.0.self_attn.q.weight",
        "audio_proj.audio_proj_glob_2.layer.bias",
        "blocks.1.audio_cross_attn_wrapper.extra.weight",
        "head.head.bias (5,)",
    ]:
        assert key in msg, key
    assert "2 missing" in msg and "2 unexpected" in msg and "1 with wrong shape" in msg


def test_unrelated_tensors_are_reported_not_loaded(model, inputs, tmp_path):
    sd = model.to_official_state_dict()
    sd["face_mask_head.conv.weight"] = torch.ones(4, 4)
    torch.save(sd, tmp_path / "ema.pth")
    loaded = HuMoTransformer3DModel.from_official(tmp_path / "ema.pth", torch_dtype=torch.float32, config=TINY)
    assert loaded.load_report["ignored_tensors"] == ["face_mask_head.conv.weight"]
    assert torch.equal(run(loaded, inputs), run(model, inputs))


def test_sharded_safetensors_folder(model, inputs, tmp_path):
    sd = {k: v.contiguous() for k, v in model.to_official_state_dict().items()}
    keys = sorted(sd)
    shards = {"humo-00001-of-00002.safetensors": keys[::2], "humo-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for name, shard_keys in shards.items():
        save_file({k: sd[k] for k in shard_keys}, tmp_path / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard_keys, name))
    (tmp_path / "humo.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    loaded = HuMoTransformer3DModel.from_official(tmp_path, torch_dtype=torch.float32, config=TINY)
    assert torch.equal(run(loaded, inputs), run(model, inputs))
    assert loaded.load_report["layout"] == "sharded-safetensors"

    (tmp_path / "humo-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="humo-00002-of-00002.safetensors"):
        HuMoTransformer3DModel.from_official(tmp_path, config=TINY)


def test_single_safetensors_comfy_prefix_fp16(model, inputs, tmp_path):
    sd = {f"model.diffusion_model.{k}": v.half().contiguous() for k, v in model.to_official_state_dict().items()}
    save_file(sd, tmp_path / "humo_fp16.safetensors")
    loaded = HuMoTransformer3DModel.from_official(
        tmp_path / "humo_fp16.safetensors", torch_dtype=torch.float32, config=TINY
    )
    assert loaded.load_report["key_prefix_stripped"] == "model.diffusion_model."
    assert loaded.blocks[0].attn1.to_q.weight.dtype == torch.float32
    ref = run(model, inputs)
    diff = (run(loaded, inputs) - ref).abs().max()
    assert 0 < diff < 2e-2 * ref.abs().max()  # fp16-rounded weights: close, not identical


def test_fp8_tensors_are_upcast(model, tmp_path):
    sd = {k: v.contiguous() for k, v in model.to_official_state_dict().items()}
    q = "blocks.0.self_attn.q.weight"
    k = "blocks.0.self_attn.k.weight"
    sd[q] = sd[q].to(torch.float8_e4m3fn)
    sd[k] = (sd[k] / 0.5).to(torch.float8_e4m3fn)
    sd["blocks.0.self_attn.k.scale_weight"] = torch.tensor([0.5])
    save_file(sd, tmp_path / "humo_fp8.safetensors")
    loaded = HuMoTransformer3DModel.from_official(
        tmp_path / "humo_fp8.safetensors", torch_dtype=torch.float32, config=TINY
    )
    assert torch.equal(loaded.blocks[0].attn1.to_q.weight, sd[q].float())
    assert torch.equal(loaded.blocks[0].attn1.to_k.weight, sd[k].float() * 0.5)
    assert loaded.load_report["fp8_upcast"] == 2


def test_bf16_load_keeps_fp32_islands(model, inputs, tmp_path):
    torch.save(model.to_official_state_dict(), tmp_path / "ema.pth")
    loaded = HuMoTransformer3DModel.from_official(tmp_path / "ema.pth", torch_dtype=torch.bfloat16, config=TINY)
    dtypes = {n: p.dtype for n, p in loaded.named_parameters()}
    fp32 = {n for n, d in dtypes.items() if d == torch.float32}
    assert fp32 == {
        n
        for n in dtypes
        if any(m in n.split(".") for m in ["scale_shift_table", "time_embedder", "norm2", "norm_audio"])
    }
    assert "blocks.0.norm_audio.weight" in fp32 and "blocks.1.scale_shift_table" in fp32
    assert "condition_embedder.time_embedder.linear_1.weight" in fp32
    assert dtypes["blocks.0.audio_attn.to_k.weight"] == torch.bfloat16
    assert dtypes["audio_proj.linear_1.weight"] == torch.bfloat16
    out = run(loaded, inputs)
    ref = run(model, inputs)
    assert torch.isfinite(out).all() and (out - ref).abs().max() < 0.1 * ref.abs().max()


def test_diffusers_round_trip_and_convert(model, inputs, tmp_path):
    torch.save(model.to_official_state_dict(), tmp_path / "ema.pth")
    out_dir = convert_official(tmp_path / "ema.pth", tmp_path / "humo-diffusers", torch.float32, config=TINY)
    assert (out_dir / "config.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left behind
    again = HuMoTransformer3DModel.from_pretrained(out_dir)
    assert torch.equal(run(again, inputs), run(model, inputs))
    assert again.to_official_state_dict().keys() == model.to_official_state_dict().keys()
    with pytest.raises(InputError):
        convert_official(tmp_path / "ema.pth", out_dir, config=TINY)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pth").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError):
        HuMoTransformer3DModel.from_official(tmp_path / "x.pth")
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "y.pth")
    with pytest.raises(CheckpointError, match="no HuMo tensors"):
        HuMoTransformer3DModel.from_official(tmp_path / "y.pth")


def test_the_loader_never_imports_the_model():
    """transformer_humo imports official (from_official, to_official_state_dict); the reverse would be a cycle."""
    import ast
    import inspect

    import engine.models.official as official

    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(official))):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not {m for m in imported if m.startswith("engine.models")}, imported
