"""Registry: presence, clear missing-weights errors, and the real loaders on tiny files in the official layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from engine import registry
from engine.components import (
    build_feature_extractor,
    build_tiny_text_encoder,
    build_tiny_vae,
    load_tiny_tokenizer,
)
from engine.errors import MissingWeightsError
from engine.models import HuMoTransformer3DModel

# Smallest config whose shapes the official-checkpoint loader can infer (head_dim 128, 8x5 audio window).
SMALL_OFFICIAL = dict(
    num_attention_heads=1,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=32,
    freq_dim=32,
    ffn_dim=64,
    num_layers=1,
    audio_dim=16,
    audio_tokens=4,
    audio_token_dim=24,
    audio_hidden_dim=32,
)


@pytest.fixture()
def empty_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HUMO_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HUMO_NANO_DIR", str(tmp_path / "no-nano"))  # as on a clone without assets/humo-nano
    return tmp_path


def test_missing_weights_message_names_component_size_and_command(empty_env):
    with pytest.raises(MissingWeightsError) as err:
        registry.resolve("humo-1.7b")
    message = str(err.value)
    assert "transformer" in message and "7.0 GB" in message
    assert "audio_encoder" in message and "openai/whisper-large-v3" in message
    assert "python -m engine download humo-1.7b" in message
    assert "offline" in message.lower()


def test_tiny_is_always_present_and_best_when_nothing_else(empty_env):
    rows = {row["id"]: row for row in registry.list_models()}
    assert rows["tiny"]["present"] and not rows["humo-17b"]["present"] and not rows["humo-1.7b"]["present"]
    assert not rows["humo-nano"]["present"]
    assert registry.best_available_model() == "tiny"
    with pytest.raises(MissingWeightsError, match="python -m training nano"):
        registry.load_pipeline("humo-nano", device="cpu")


def _write_official_layout(root):
    """models/HuMo/HuMo-1.7B/ema.pth + the Wan diffusers folders + an HF Whisper folder, all tiny."""
    torch.manual_seed(0)
    transformer = HuMoTransformer3DModel(**SMALL_OFFICIAL)
    (root / "HuMo" / "HuMo-1.7B").mkdir(parents=True)
    state = transformer.to_official_state_dict()
    torch.save(state, root / "HuMo" / "HuMo-1.7B" / "ema.pth")
    wan = root / "Wan2.1-T2V-1.3B-Diffusers"
    build_tiny_vae().save_pretrained(wan / "vae")
    tokenizer = load_tiny_tokenizer()
    tokenizer.save_pretrained(wan / "tokenizer")
    build_tiny_text_encoder(len(tokenizer)).save_pretrained(wan / "text_encoder")
    whisper_config = WhisperConfig(
        d_model=16,
        encoder_layers=4,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=128,
        max_source_positions=1500,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
        decoder_start_token_id=2,
        max_target_positions=32,
    )
    whisper = WhisperForConditionalGeneration(whisper_config)
    whisper.save_pretrained(root / "whisper-large-v3")
    build_feature_extractor().save_pretrained(root / "whisper-large-v3")
    return transformer, whisper


def test_real_loaders_on_official_layout_files(empty_env, tmp_path):
    """load_pipeline("humo-1.7b") takes the real path: from_official(.pth), Wan diffusers folders, Whisper encoder."""
    root = tmp_path / "models"
    transformer, whisper = _write_official_layout(root)
    assert registry.is_present("humo-1.7b") and registry.best_available_model() == "humo-1.7b"

    pipe = registry.load_pipeline("humo-1.7b", device="cpu")
    assert pipe.model_id == "humo-1.7b" and pipe.variant == "1.7b"
    assert set(pipe.model_hashes) == {"ema.pth"}
    # the transformer came from the .pth, unchanged
    for name, value in transformer.state_dict().items():
        torch.testing.assert_close(pipe.transformer.state_dict()[name].float(), value.float())
    # only Whisper's encoder was loaded, with the checkpoint's weights
    torch.testing.assert_close(pipe.audio_encoder.conv1.weight, whisper.model.encoder.conv1.weight)
    out = pipe(prompt="a person talking", num_frames=5, height=32, width=32, num_inference_steps=1, seed=0)
    assert out.frames[0].shape == (5, 32, 32, 3) and np.isfinite(out.frames[0]).all()


def test_unknown_model_id_is_an_input_error():
    from engine.errors import InputError

    with pytest.raises(InputError):
        registry.resolve("humo-99b")


def test_tokenizer_behaves_like_umt5():
    tokenizer = load_tiny_tokenizer()
    ids = tokenizer(["a man talks"], padding="max_length", max_length=512, truncation=True, return_tensors="pt")
    assert ids.input_ids.shape == (1, 512)
    length = int(ids.attention_mask.sum())
    assert ids.input_ids[0, length - 1] == tokenizer.eos_token_id == 1 and ids.input_ids[0, length:].eq(0).all()
    from engine.pipeline import WAN_NEGATIVE_PROMPT

    neg = tokenizer(WAN_NEGATIVE_PROMPT).input_ids
    assert sum(i == tokenizer.unk_token_id for i in neg) < len(neg) / 4


def test_convert_command_writes_diffusers_format(tmp_path):
    from engine.cli import main

    torch.manual_seed(1)
    model = HuMoTransformer3DModel(**SMALL_OFFICIAL)
    torch.save(model.to_official_state_dict(), tmp_path / "ema.pth")
    assert (
        main(
            [
                "convert",
                "--from-official",
                str(tmp_path / "ema.pth"),
                "--out",
                str(tmp_path / "conv"),
                "--dtype",
                "float32",
            ]
        )
        == 0
    )
    loaded = HuMoTransformer3DModel.from_pretrained(tmp_path / "conv")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)
