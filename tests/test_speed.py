"""Regional torch.compile and the attention backend switch on the tiny pipeline."""

from __future__ import annotations

import pytest
import torch

from engine.errors import InputError
from engine.registry import load_pipeline
from engine.speed import compile_transformer, set_attention_backend

KW = dict(prompt="x", num_frames=5, height=32, width=32, num_inference_steps=2, seed=1, output_type="latent")


@pytest.mark.slow
def test_compiled_blocks_match_eager():
    pipe = load_pipeline("tiny")
    eager = pipe(**KW).frames[0]
    compile_transformer(pipe)  # inductor on CPU: ~20 s to compile on 2 cores
    torch.testing.assert_close(pipe(**KW).frames[0], eager, atol=1e-4, rtol=1e-4)


def test_attention_backend_switch():
    """Every attention of the model (self, text cross, per-frame audio) runs on the chosen backend: the math SDPA
    kernel gives the native result within float error, and a backend this machine lacks is refused by name."""
    from diffusers.models.attention import AttentionModuleMixin

    pipe = load_pipeline("tiny")
    base = pipe(**KW).frames[0]
    set_attention_backend(pipe, "_native_math")
    attentions = [m for m in pipe.transformer.modules() if isinstance(m, AttentionModuleMixin)]
    assert len(attentions) == 3 * len(pipe.transformer.blocks)  # attn1, attn2 and the audio attention per block
    assert {str(getattr(m.processor, "_attention_backend", None)) for m in attentions} == {
        "AttentionBackendName._NATIVE_MATH"
    }
    assert pipe.attention_backend == "_native_math"
    torch.testing.assert_close(pipe(**KW).frames[0], base, atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match="'flash' is not available here"):
        set_attention_backend(pipe, "flash")  # flash-attn is not installed (and there is no GPU)
    with pytest.raises(InputError) as err:
        set_attention_backend(pipe, "warp-drive")
    assert "native" in str(err.value)
