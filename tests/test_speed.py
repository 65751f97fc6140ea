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


def _kernels(fn) -> set[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {event.key for event in prof.key_averages()}


def test_cpu_vae_kernels_decode_the_same_on_onednn():
    """The VAE's convolutions leave PyTorch's slow batch-1 conv3d for oneDNN and its RMS norms for the sum of
    squares, with the stock module's outputs; training (grad enabled) and deep copies keep working."""
    import copy

    from engine.components import build_tiny_vae
    from engine.speed import use_cpu_vae_kernels

    stock, fast = build_tiny_vae(seed=3).eval(), build_tiny_vae(seed=3).eval()
    assert use_cpu_vae_kernels(fast) > 0
    copied = copy.deepcopy(fast)
    conv = next(m for m in copied.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv._conv_forward.__self__ is conv  # rebound to the copy, not the original's module
    latents = torch.randn(1, fast.config.z_dim, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = stock.decode(latents).sample
        kernels = _kernels(lambda: fast.decode(latents))
        torch.testing.assert_close(fast.decode(latents).sample, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(copied.decode(latents).sample, expected, atol=1e-5, rtol=1e-5)
    assert "aten::mkldnn_convolution" in kernels and "aten::slow_conv3d_forward" not in kernels
    assert "aten::linalg_vector_norm" not in kernels

    out = fast.decode(latents).sample  # grad enabled: the modules' own code, so backward works as in training
    out.mean().backward()
    assert all(p.grad is not None for p in fast.decoder.parameters() if p.requires_grad)
    torch.testing.assert_close(out.detach(), expected, atol=1e-5, rtol=1e-5)
