"""Builders for the pipeline's components: the embedded `tiny` set (random weights, built in code) and loaders for
the real encoders in their published layouts.

The tiny set keeps every interface of the real one (16 latent channels, 4x temporal / 8x spatial VAE compression,
128 mel bins, umT5 and Whisper classes) so the whole pipeline runs in seconds on a CPU; its output is noise.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerBase,
    UMT5Config,
    UMT5EncoderModel,
    WhisperConfig,
    WhisperFeatureExtractor,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

ASSETS = Path(__file__).resolve().parents[1] / "assets"
TOKENIZER_DIR = ASSETS / "tokenizer"

# Whisper-large-v3 front end: 128 mel bins at 16 kHz.
NUM_MEL_BINS = 128
SAMPLING_RATE = 16000


def build_tiny_vae(seed: int = 0) -> AutoencoderKLWan:
    """A small Wan VAE with the real compression (4x time, 8x space, 16 latent channels) and latent statistics."""
    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()


def load_tiny_tokenizer() -> PreTrainedTokenizerBase:
    """The small umT5-style tokenizer shipped in assets/tokenizer (made by scripts/make_tokenizer.py)."""
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def build_tiny_text_encoder(vocab_size: int, seed: int = 0, d_model: int = 32) -> UMT5EncoderModel:
    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=vocab_size, d_model=d_model, num_layers=2, num_heads=2, d_kv=16, d_ff=64)
    return UMT5EncoderModel(config).eval()


def build_tiny_audio_encoder(seed: int = 0, d_model: int = 16) -> WhisperEncoder:
    """A 4-layer Whisper encoder: 5 hidden states, grouped by engine.audio into 4 single-layer bands + the last."""
    torch.manual_seed(seed)
    config = WhisperConfig(
        d_model=d_model,
        encoder_layers=4,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        num_mel_bins=NUM_MEL_BINS,
        max_source_positions=1500,
    )
    return WhisperEncoder(config).eval()


def build_feature_extractor() -> WhisperFeatureExtractor:
    return WhisperFeatureExtractor(feature_size=NUM_MEL_BINS, sampling_rate=SAMPLING_RATE)


def build_tiny_components(seed: int = 0, variant: str = "1.7b", scheduler: str = "unipc") -> dict:
    """Every HuMoPipeline component at CPU size. variant "1.7b" (16 input channels) or "17b" (36)."""
    from engine.models import PRESETS, HuMoTransformer3DModel
    from engine.schedulers import make_scheduler

    tokenizer = load_tiny_tokenizer()
    text_encoder = build_tiny_text_encoder(len(tokenizer), seed)
    audio_encoder = build_tiny_audio_encoder(seed)
    preset = dict(PRESETS["tiny-17b" if variant == "17b" else "tiny"])
    preset.update(text_dim=text_encoder.config.d_model, audio_dim=audio_encoder.config.d_model)
    torch.manual_seed(seed)
    transformer = HuMoTransformer3DModel(**preset).eval()
    return {
        "vae": build_tiny_vae(seed),
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "transformer": transformer,
        "scheduler": make_scheduler(scheduler),
        "audio_encoder": audio_encoder,
        "feature_extractor": feature_extractor_or_default(None),
    }


def feature_extractor_or_default(path: str | Path | None) -> WhisperFeatureExtractor:
    if path is not None and (Path(path) / "preprocessor_config.json").exists():
        return WhisperFeatureExtractor.from_pretrained(path)
    return build_feature_extractor()


def load_whisper_encoder(path: str | Path, torch_dtype: torch.dtype = torch.float32) -> WhisperEncoder:
    """Only the encoder of a transformers Whisper checkpoint (the decoder is never materialised).

    Reads `config.json` and the safetensors file(s) of an HF Whisper folder, keeps the `model.encoder.` tensors and
    loads them strictly into a `WhisperEncoder` built on the meta device.
    """
    from safetensors import safe_open

    path = Path(path)
    config = WhisperConfig.from_pretrained(path)
    with torch.device("meta"):
        encoder = WhisperEncoder(config)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {path}")
    state = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                for prefix in ("model.encoder.", "encoder."):
                    if key.startswith(prefix):
                        state[key[len(prefix) :]] = handle.get_tensor(key).to(torch_dtype)
    # embed_positions is a fixed sinusoid stored in the checkpoint; everything else must match exactly
    encoder.load_state_dict(state, strict=True, assign=True)
    return encoder.eval()
