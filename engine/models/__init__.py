"""HuMo transformer model, presets and official-checkpoint loading."""

from __future__ import annotations

from typing import Any

from engine.models.transformer_humo import HuMoTransformer3DModel, HuMoTransformerOutput

__all__ = ["PRESETS", "HuMoTransformer3DModel", "HuMoTransformerOutput"]

_TINY: dict[str, Any] = {
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 32,
    "freq_dim": 32,
    "ffn_dim": 64,
    "num_layers": 2,
    "audio_window": 8,
    "audio_bands": 5,
    "audio_dim": 16,
    "audio_tokens": 4,
    "audio_token_dim": 24,
    "audio_hidden_dim": 32,
}

# Constructor kwargs. Full presets reproduce the official models exactly (reference/humo-official.md §2.1, §10.1):
# HuMo-1.7B has 1,741,569,088 parameters, HuMo-17B 17,055,925,312.
PRESETS: dict[str, dict[str, Any]] = {
    "humo-1.7b": {
        "num_attention_heads": 12,
        "attention_head_dim": 128,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": 8960,
        "num_layers": 30,
    },
    "humo-17b": {
        "num_attention_heads": 40,
        "attention_head_dim": 128,
        "in_channels": 36,
        "out_channels": 16,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": 13824,
        "num_layers": 40,
    },
    "tiny": dict(_TINY),
    "tiny-17b": {**_TINY, "in_channels": 36},
    # HuMo-nano (issue #7): the 1.7B layout at CPU size, trained on the synthetic world by `python -m training nano`
    "humo-nano": {
        **_TINY,
        "num_attention_heads": 4,
        "attention_head_dim": 32,
        "freq_dim": 64,
        "ffn_dim": 512,
        "num_layers": 8,
        "audio_tokens": 4,
        "audio_token_dim": 64,
        "audio_hidden_dim": 64,
    },
}
