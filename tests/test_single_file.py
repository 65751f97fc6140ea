"""Single-file HuMo transformers as people download them (GGUF Q4_K / Q8_0 / F16 in the community layouts, fp8 with
scales, ComfyUI-prefixed fp16): each loads through `load_pipeline(FILE)` and `--model FILE`, its weights match the
source within the format's error, its video matches the fp32 model's, and other architectures are refused by name.

Stated tolerances (video frames in [0, 1], 5 frames of 32x32, 2 steps, the bundled HuMo-nano VAE and encoders under a
random 256-wide transformer, measured max |difference| in brackets): F16 1e-3 (7e-5), Q8_0 1e-2 (1e-3), Q4_K 5e-2
(1.4e-2), fp8 e4m3 with scales 5e-2, fp8 e5m2 with per-row scales 1e-1. Weight bounds: tests/weight_files.py
(`gguf_error_bound`) and `fp8_bound` below.
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter, dequantize_gguf_tensor
from safetensors.torch import save_file

from engine.cli import main
from engine.errors import CheckpointError, InputError
from engine.memory import apply_memory_mode, choose_memory_mode, transformer_bytes
from engine.models.official import official_to_diffusers_key
from engine.models.single_file import find_weight_files, inspect_file, load_transformer_file
from engine.registry import get_spec, load_pipeline
from tests.weight_files import QT, gguf_error_bound, official_state, tiny_gguf_transformer, write_gguf

KW = dict(prompt="a person talks", num_frames=5, height=32, width=32, num_inference_steps=2, seed=1, output_type="np")
VIDEO_TOLERANCE = {QT.F16: 1e-3, QT.Q8_0: 1e-2, QT.Q4_K: 5e-2}


@pytest.fixture(scope="module")
def source():
    return tiny_gguf_transformer()


@pytest.fixture(scope="module")
def state(source):
    return official_state(source)


@pytest.fixture(scope="module")
def reference_video(source):
    """The fp32 transformer on the VAE and encoders `load_pipeline(FILE)` picks for it (HuMo-nano's)."""
    pipe = load_pipeline("humo-nano")
    pipe.register_modules(transformer=source)
    return pipe(**KW).frames[0]


@pytest.fixture(scope="module")
def gguf_files(state, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return {kind: write_gguf(state, folder / f"humo-tiny-{kind.name}.gguf", kind) for kind in VIDEO_TOLERANCE}


def _linear_weights(model) -> dict[str, torch.Tensor]:
    return {name: module.weight for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


@pytest.mark.parametrize("kind", list(VIDEO_TOLERANCE), ids=lambda k: k.name)
def test_gguf_weights_stay_quantized_and_match_the_source_within_the_format_bound(kind, gguf_files, source):
    model = load_transformer_file(gguf_files[kind])
    report = model.load_report["file"]
    assert report["format"] == "gguf" and report["storage"] == kind.name
    source_weights = dict(source.named_parameters())
    quantized = 0
    for name, weight in _linear_weights(model).items():
        expected = source_weights[f"{name}.weight"].detach()
        if isinstance(weight, GGUFParameter):  # kept quantized in memory: uint8 blocks, dequantized per forward
            assert weight.dtype == torch.uint8 and weight.quant_type == kind
            block, type_size = gguf.GGML_QUANT_SIZES[kind]  # Q8_0: 34 bytes per 32 values, Q4_K: 144 per 256
            assert weight.numel() == expected.numel() // block * type_size
            quantized += 1
            stored = kind
            weight = dequantize_gguf_tensor(weight).float()
        else:
            stored = QT.F16 if weight.dtype != torch.float32 or (weight != expected).any() else QT.F32
        error = (weight.float() - expected).abs()
        assert (error <= gguf_error_bound(expected, stored)).all(), f"{name}: max error {error.max():.3g}"
    if kind == QT.F16:
        assert quantized == 0 and not any(isinstance(m, GGUFLinear) for m in model.modules())
    else:
        # attention and FFN (widths of 256) are quantized; the 24-wide audio k/v fall back to F16 as in the
        # community files (Q4_K: every linear whose rows are a multiple of 256)
        assert quantized >= 20
        assert transformer_bytes(model) < transformer_bytes(source) * 0.45


@pytest.mark.parametrize("kind", list(VIDEO_TOLERANCE), ids=lambda k: k.name)
def test_gguf_video_matches_the_fp32_model_within_tolerance(kind, gguf_files, reference_video):
    pipe = load_pipeline(str(gguf_files[kind]))
    assert get_spec(str(gguf_files[kind])).base == "humo-nano"
    video = pipe(**KW).frames[0]
    difference = np.abs(video - reference_video).max()
    assert difference <= VIDEO_TOLERANCE[kind]
    assert difference > 0 if kind != QT.F16 else True  # the quantized weights are really in use


def test_coarser_formats_drift_further_from_the_fp32_video(gguf_files, reference_video):
    drift = {k: np.abs(load_pipeline(str(p))(**KW).frames[0] - reference_video).mean() for k, p in gguf_files.items()}
    assert drift[QT.F16] < drift[QT.Q8_0] < drift[QT.Q4_K]


@pytest.mark.parametrize(
    "arch,prefix", [("wan", "model.diffusion_model."), ("pig", ""), (None, "")], ids=["comfy-prefix", "pig", "no-arch"]
)
def test_gguf_layout_variants_load_the_same_weights(arch, prefix, state, tmp_path, gguf_files):
    path = write_gguf(state, tmp_path / "variant.gguf", QT.Q8_0, arch=arch, prefix=prefix)
    report = inspect_file(path)
    assert (report.architecture, report.key_prefix, report.gguf_architecture) == ("humo", prefix or None, arch)
    plain, variant = load_transformer_file(gguf_files[QT.Q8_0]), load_transformer_file(path)
    for (name, a), (_, b) in zip(plain.state_dict().items(), variant.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_generate_cli_takes_a_gguf_file_as_the_model(gguf_files, tmp_path, good_media, capsys):
    from engine import media

    out = tmp_path / "gguf.mp4"
    code = main(["generate", "--model", str(gguf_files[QT.Q4_K]), "--image", str(good_media["image"]), "--audio",
                 str(good_media["audio"]), "--prompt", "a man talks", "--height", "32", "--width", "32", "--frames",
                 "5", "--steps", "2", "--seed", "3", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    settings = media.read_settings(out)
    assert settings["model_id"] == "humo-tiny-Q4_K.gguf"  # the file's name, never the server path
    assert list(settings["model_hashes"]) == ["humo-tiny-Q4_K.gguf"]


# -- safetensors repacks: fp8 with scales, ComfyUI prefix -----------------------------------------------------------


def fp8_repack(state: dict[str, torch.Tensor], dtype: torch.dtype, per_row: bool) -> dict[str, torch.Tensor]:
    """A scaled-fp8 file the way ComfyUI / kijai write them: 2-D linear weights in fp8 with a scale tensor (one per
    tensor as `.scale_weight`, or one per output row as `.weight_scale` beside a `.comfy_quant` marker and an
    `.input_scale`), everything else bf16, a `scaled_fp8` marker tensor and the `model.diffusion_model.` prefix."""
    out = {"scaled_fp8": torch.empty(0, dtype=dtype)}
    top = torch.finfo(dtype).max
    for key, tensor in state.items():
        name = f"model.diffusion_model.{key}"
        if tensor.ndim != 2 or key.startswith(("text_embedding", "time_")):
            out[name] = tensor.to(torch.bfloat16)
            continue
        base = name[: -len(".weight")]
        if per_row:
            scale = tensor.abs().amax(1, keepdim=True).clamp_min(1e-8) / top
            out[f"{base}.weight_scale"] = scale.reshape(-1)
            out[f"{base}.comfy_quant"] = torch.tensor(list(json.dumps({"format": "float8_e5m2"}).encode()),
                                                      dtype=torch.uint8)  # fmt: skip
            out[f"{base}.input_scale"] = torch.ones(())
        else:
            scale = tensor.abs().amax().clamp_min(1e-8) / top
            out[f"{base}.scale_weight"] = scale.reshape(1)
        out[name] = (tensor / scale).to(dtype)
    return out


def fp8_bound(source: torch.Tensor, dtype: torch.dtype, scale: torch.Tensor) -> torch.Tensor:
    """Half a unit in the last place of the fp8 mantissa (3 bits e4m3, 2 bits e5m2) of the scaled value, or half the
    smallest subnormal step (times the scale) near zero."""
    mantissa, tiny = (3, 2.0**-9) if dtype == torch.float8_e4m3fn else (2, 2.0**-16)
    return source.abs() * 2.0 ** -(mantissa + 1) + tiny * scale / 2 + 1e-7


@pytest.mark.parametrize("dtype,per_row,tolerance", [(torch.float8_e4m3fn, False, 5e-2), (torch.float8_e5m2, True, 1e-1)],
                         ids=["e4m3-scale_weight", "e5m2-weight_scale-rows"])  # fmt: skip
def test_fp8_file_with_scales_loads_strictly_and_matches(dtype, per_row, tolerance, state, source, tmp_path,
                                                         reference_video):  # fmt: skip
    path = tmp_path / "humo_tiny_fp8_scaled.safetensors"
    repack = fp8_repack(state, dtype, per_row)
    save_file(repack, str(path))
    report = inspect_file(path)
    assert report.architecture == "humo" and report.key_prefix == "model.diffusion_model."
    assert report.storage == {torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}[dtype]
    assert report.fp8_scales == sum(1 for k in repack if k.endswith(("scale_weight", "weight_scale")))
    model = load_transformer_file(path)
    assert model.load_report["fp8_upcast"] == report.fp8_scales
    params = dict(source.named_parameters())
    for key in state:
        scale_key = next((f"model.diffusion_model.{key[:-7]}.{s}" for s in ("scale_weight", "weight_scale")
                          if f"model.diffusion_model.{key[:-7]}.{s}" in repack), None)  # fmt: skip
        if scale_key is None:
            continue
        name = official_to_diffusers_key(key)
        loaded = dict(model.named_parameters())[name].detach()
        scale = repack[scale_key].reshape(-1, 1) if per_row else repack[scale_key]
        error = (loaded - params[name].detach()).abs()
        assert (error <= fp8_bound(params[name].detach(), dtype, scale)).all(), key
    pipe = load_pipeline(str(path))
    assert np.abs(pipe(**KW).frames[0] - reference_video).max() <= tolerance


def test_comfy_prefixed_fp16_file_loads_and_matches(state, tmp_path, reference_video):
    path = tmp_path / "humo_tiny_fp16.safetensors"
    save_file({f"model.diffusion_model.{k}": v.half() for k, v in state.items()}, str(path))
    assert inspect_file(path).storage == "F16"
    video = load_pipeline(str(path))(**KW).frames[0]
    assert np.abs(video - reference_video).max() <= VIDEO_TOLERANCE[QT.F16]


def test_int8_weights_are_refused_not_misread(state, tmp_path):
    path = tmp_path / "humo_int8.safetensors"
    save_file({k: (v * 50).to(torch.int8) if v.ndim == 2 else v for k, v in state.items()}, str(path))
    with pytest.raises(CheckpointError, match="int8"):
        load_transformer_file(path)


# -- other architectures, refused by name ---------------------------------------------------------------------------


def other_architecture(state: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """The tiny HuMo state turned into another Wan-family file by its distinguishing keys."""
    plain = {k: v for k, v in state.items() if not k.startswith("audio_proj.") and "audio_cross_attn_wrapper" not in k}
    dim = plain["patch_embedding.weight"].shape[0]
    image = {"patch_embedding.weight": torch.zeros(dim, 36, 1, 2, 2), "img_emb.proj.0.weight": torch.ones(1280),
             "img_emb.proj.1.weight": torch.zeros(dim, 1280), "blocks.0.cross_attn.k_img.weight": torch.zeros(dim, dim)}  # fmt: skip
    extra = {
        "wan-t2v": {},
        "wan-i2v": image,
        "wan-s2v": {
            "casual_audio_encoder.encoder.final_linear.weight": torch.zeros(dim, dim),
            "audio_injector.injector.0.q.weight": torch.zeros(dim, dim),
        },  # fmt: skip
        "multitalk": {
            **image,
            "audio_proj.proj1.weight": torch.zeros(512, 640),
            "blocks.0.audio_cross_attn.q_linear.weight": torch.zeros(dim, dim),
        },  # fmt: skip
    }[kind]
    return {**plain, **extra}


NAMES = {"wan-t2v": "Wan T2V", "wan-i2v": "Wan2.1 I2V", "wan-s2v": "Wan2.2-S2V", "multitalk": "MultiTalk"}


@pytest.mark.parametrize("kind", list(NAMES))
@pytest.mark.parametrize("fmt", ["gguf", "safetensors"])
def test_other_architectures_are_refused_by_name(kind, fmt, state, tmp_path, capsys):
    tensors = other_architecture(state, kind)
    path = tmp_path / f"{kind}.{fmt}"
    if fmt == "gguf":
        write_gguf(tensors, path, QT.Q8_0)
    else:
        save_file({f"model.diffusion_model.{k}": v.contiguous() for k, v in tensors.items()}, str(path))
    assert NAMES[kind] in inspect_file(path).description
    for load in (load_transformer_file, lambda p: load_pipeline(str(p))):
        with pytest.raises(CheckpointError, match=f"{NAMES[kind]}.*not HuMo"):
            load(path)
    code = main(["generate", "--model", str(path), "--prompt", "x", "--out", str(tmp_path / "x.mp4")])
    assert code == 2 and NAMES[kind] in capsys.readouterr().err


def test_a_gguf_missing_a_tensor_is_refused_listing_it(state, tmp_path):
    path = write_gguf({k: v for k, v in state.items() if k != "blocks.1.ffn.2.weight"}, tmp_path / "cut.gguf", QT.Q8_0)
    with pytest.raises(CheckpointError, match=r"1 missing: .*blocks\.1\.ffn\.net\.2\.weight"):
        load_transformer_file(path)


# -- memory modes and `info` know the file -------------------------------------------------------------------------


def test_auto_memory_mode_uses_the_files_size_and_never_fp8_for_a_gguf():
    gb = 1e9
    # HuMo-17B on a 16 GB card: bf16 weights (34 GB) need block streaming; a 10 GB Q4_K fits whole (text encoder on
    # the CPU); a 6 GB file with room for umT5 too runs everything on the GPU
    assert choose_memory_mode("humo-17b", 16 * gb).startswith("group_offload")
    assert (
        choose_memory_mode("humo-17b", 16 * gb, weights_gb=10.2, prequantized=True) == "gpu+text_encoder_cpu+vae_tiling"
    )
    assert choose_memory_mode("humo-17b", 24 * gb, weights_gb=6.0, prequantized=True) == "gpu"
    # 9 GB of weights on a 12 GB card: halving them in fp8 would fit, but a GGUF is already quantized: stream blocks
    assert choose_memory_mode("humo-17b", 12 * gb, weights_gb=9.0).startswith("fp8")
    assert choose_memory_mode("humo-17b", 12 * gb, weights_gb=9.0, prequantized=True).startswith("group_offload")


def test_fp8_mode_is_refused_for_a_gguf_pipeline(gguf_files):
    pipe = load_pipeline(str(gguf_files[QT.Q8_0]))
    with pytest.raises(InputError, match="already quantized"):
        apply_memory_mode(pipe, "fp8", "cpu")


def test_info_lists_gguf_and_repack_files_with_format_and_size(gguf_files, state, tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    (models / "diffusion_models").mkdir(parents=True)
    (models / "diffusion_models" / "humo-Q4_K.gguf").write_bytes(gguf_files[QT.Q4_K].read_bytes())
    save_file({f"model.diffusion_model.{k}": v.half() for k, v in state.items()}, str(models / "humo_fp16.safetensors"))
    save_file({"decoder.conv.weight": torch.zeros(4, 4)}, str(models / "vae.safetensors"))  # not a transformer
    monkeypatch.setenv("HUMO_MODELS_DIR", str(models))
    assert [r.storage for r in find_weight_files(models)] == ["F16", "Q4_K"]
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "humo-Q4_K.gguf" in out and "gguf Q4_K" in out and "humo_fp16.safetensors" in out
    assert "vae.safetensors" not in out


def test_a_lora_applies_on_a_quantized_gguf_transformer(gguf_files, tmp_path):
    """PEFT wraps diffusers' GGUFLinear like any linear layer: the base stays quantized, the LoRA adds its update."""
    from engine.speed import load_lora, unload_lora

    pipe = load_pipeline(str(gguf_files[QT.Q4_K]))
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name, module in pipe.transformer.named_modules():
        if isinstance(module, GGUFLinear) and ".attn1." in name:
            tensors[f"{name}.lora_A.weight"] = torch.randn(4, module.in_features, generator=g) * 0.2
            tensors[f"{name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=g) * 0.2
    save_file(tensors, str(tmp_path / "style.safetensors"))
    base = pipe(**KW).frames[0]
    name = load_lora(pipe, tmp_path / "style.safetensors")
    assert pipe.lora_reports[name].matched == {"self-attn": 8}
    assert isinstance(pipe.transformer.blocks[0].attn1.to_q.base_layer.weight, GGUFParameter)
    assert np.abs(pipe(**KW).frames[0] - base).max() > 1e-3
    unload_lora(pipe)
    np.testing.assert_allclose(pipe(**KW).frames[0], base, atol=1e-6)


def test_group_offload_hooks_keep_a_gguf_quantized_and_its_output(gguf_files):
    """diffusers' block-level group offload moves GGUFParameters as they are (exercised here with the CPU as both
    places: the hooks run, the output is unchanged; the CUDA-stream path needs a GPU)."""
    pipe = load_pipeline(str(gguf_files[QT.Q4_K]))
    before = pipe(**KW).frames[0]
    pipe.transformer.enable_group_offload(onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                                          offload_type="block_level", num_blocks_per_group=1, use_stream=False)  # fmt: skip
    assert isinstance(pipe.transformer.blocks[0].attn1.to_q.weight, GGUFParameter)
    np.testing.assert_array_equal(pipe(**KW).frames[0], before)


def test_a_real_size_file_runs_on_its_models_encoders_and_says_how_to_get_only_those(tmp_path, monkeypatch, capsys):
    """A file with HuMo-1.7B's interface (text 4096, audio 1280, 16 latent channels) takes humo-1.7b's VAE and
    encoders; missing, the message offers `download FILE`, which fetches those and not the official transformer."""
    from engine.models import HuMoTransformer3DModel
    from engine.registry import SHARED, resolve

    model = HuMoTransformer3DModel(num_attention_heads=2, attention_head_dim=128, ffn_dim=512, num_layers=1,
                                   in_channels=16, text_dim=4096, freq_dim=256, audio_hidden_dim=32,
                                   audio_token_dim=64, audio_tokens=2)  # fmt: skip
    path = write_gguf(official_state(model), tmp_path / "humo-1.7b-like-Q8_0.gguf", QT.Q8_0)
    spec = get_spec(str(path))
    assert (spec.base, spec.variant, spec.components, spec.transformer) == ("humo-1.7b", "1.7b", SHARED, None)
    assert spec.default_size == (480, 832) and spec.steps() == 50
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HUMO_MODELS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert main(["generate", "--model", str(path), "--prompt", "x", "--out", str(tmp_path / "z.mp4")]) == 2
    err = capsys.readouterr().err
    assert f"python -m engine download {path}" in err and "transformer (" not in err
    assert {c.name for c in SHARED} == {"vae", "text_encoder", "tokenizer", "audio_encoder"}
    with pytest.raises(Exception, match="is missing vae"):
        resolve(str(path))
