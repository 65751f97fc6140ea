"""HuMoTransformer3DModel: shapes, exact parameter counts, per-frame audio attention, audio_proj order, timesteps."""

import math

import pytest
import torch
from diffusers.models.embeddings import Timesteps

from engine.errors import InputError
from engine.models import PRESETS, HuMoTransformer3DModel
from engine.models.transformer_humo import HuMoTimesteps


def make_inputs(model, batch=2, frames=3, height=4, width=6, seed=1):
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(batch, cfg.in_channels, frames, height, width, generator=g),
        "timestep": torch.tensor([999, 431][:batch]),
        "encoder_hidden_states": torch.randn(batch, 512, cfg.text_dim, generator=g),
        "audio_embeds": torch.randn(batch, frames, cfg.audio_window, cfg.audio_bands, cfg.audio_dim, generator=g),
    }


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return HuMoTransformer3DModel(**PRESETS["tiny"]).eval()


@pytest.mark.parametrize("preset", ["tiny", "tiny-17b"])
def test_forward_shapes(preset):
    torch.manual_seed(0)
    model = HuMoTransformer3DModel(**PRESETS[preset]).eval()
    inputs = make_inputs(model)
    with torch.no_grad():
        out = model(**inputs)
        tup = model(**inputs, return_dict=False)
    assert out.sample.shape == (2, 16, 3, 4, 6)
    assert out.sample.dtype == torch.float32
    assert torch.isfinite(out.sample).all()
    assert torch.equal(tup[0], out.sample) and len(tup) == 1
    assert model.config.in_channels == (36 if preset == "tiny-17b" else 16)


def test_audio_none_means_zero_features(tiny):
    inputs = make_inputs(tiny)
    with torch.no_grad():
        none = tiny(**{**inputs, "audio_embeds": None}).sample
        zeros = tiny(**{**inputs, "audio_embeds": torch.zeros_like(inputs["audio_embeds"])}).sample
        real = tiny(**inputs).sample
    assert torch.equal(none, zeros)
    assert (none - real).abs().max() > 1e-3  # audio matters


@pytest.mark.parametrize(
    "preset, params, keys",
    [("humo-1.7b", 1_741_569_088, 1193), ("humo-17b", 17_055_925_312, 1583)],
)
def test_full_preset_parameter_counts(preset, params, keys):
    with torch.device("meta"):
        model = HuMoTransformer3DModel(**PRESETS[preset])
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == keys
    # per-block audio parameters as in the spec (§2.8): 9,449,472 (1.7B) / 68,198,400 (17B)
    audio = sum(p.numel() for n, p in model.blocks[0].named_parameters() if "audio" in n)
    assert audio == {"humo-1.7b": 9_449_472, "humo-17b": 68_198_400}[preset]
    assert sum(p.numel() for p in model.audio_proj.parameters()) == 39_088_128


def test_fp32_islands_stay_fp32_when_loaded_in_bf16(tiny, tmp_path):
    """Loaded in bf16 (as on a GPU), the official fp32 islands keep fp32 weights and everything else is bf16."""
    tiny.save_pretrained(tmp_path / "t")
    model = HuMoTransformer3DModel.from_pretrained(tmp_path / "t", torch_dtype=torch.bfloat16)
    keep = set(HuMoTransformer3DModel._keep_in_fp32_modules)
    islands = set()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        island = keep.intersection(name.split("."))
        islands |= island
        assert tensor.dtype == (torch.float32 if island else torch.bfloat16), name
    assert {"rope", "time_embedder", "scale_shift_table", "norm_audio", "norm2"} <= islands


def naive_audio_attention(attn, x, audio, frames, per_frame):
    """Frame-by-frame reference: tokens of frame f attend to audio tokens of frame f only, per head."""
    heads = attn.heads
    out = torch.empty(x.shape[0], x.shape[1], attn.to_out[0].out_features)
    tokens = audio.shape[1] // frames
    for b in range(x.shape[0]):
        for f in range(frames):
            q = attn.norm_q(attn.to_q(x[b, f * per_frame : (f + 1) * per_frame]))
            k = attn.norm_k(attn.to_k(audio[b, f * tokens : (f + 1) * tokens]))
            v = attn.to_v(audio[b, f * tokens : (f + 1) * tokens])
            d = q.shape[-1] // heads
            o = []
            for h in range(heads):
                qh, kh, vh = (t[:, h * d : (h + 1) * d] for t in (q, k, v))
                weights = torch.softmax(qh @ kh.T / math.sqrt(d), dim=-1)
                o.append(weights @ vh)
            out[b, f * per_frame : (f + 1) * per_frame] = attn.to_out[0](torch.cat(o, dim=-1))
    return out


def test_per_frame_audio_attention_matches_naive_loop(tiny):
    attn = tiny.blocks[0].audio_attn
    frames, per_frame = 4, 6
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, frames * per_frame, 32, generator=g)
    audio = torch.randn(2, frames * 4, 24, generator=g)
    with torch.no_grad():
        got = attn(x, audio, frames, per_frame)
        want = naive_audio_attention(attn, x, audio, frames, per_frame)
        # changing only frame 2's audio tokens changes only frame 2's video tokens
        audio2 = audio.clone()
        audio2[:, 8:12] += 1.0
        changed = (attn(x, audio2, frames, per_frame) - got).abs().amax(dim=(0, 2))
    assert (got - want).abs().max() < 1e-5
    assert (changed[12:18] > 1e-4).all()
    assert changed[:12].max() == 0 and changed[18:].max() == 0


def test_audio_projection_flatten_order_and_norm(tiny):
    proj = tiny.audio_proj
    window, bands, channels = proj.window, proj.bands, proj.audio_dim
    x = torch.zeros(1, 2, window, bands, channels)
    w, gband, c = 5, 3, 7
    x[0, 1, w, gband, c] = 1.0
    captured = {}
    handle = proj.linear_1.register_forward_hook(lambda m, i, o: captured.setdefault("pre", o))
    with torch.no_grad():
        proj(x)
    handle.remove()
    # index = w * bands * channels + g * channels + c (window-major, band, channel)
    column = proj.linear_1.weight[:, w * bands * channels + gband * channels + c] + proj.linear_1.bias
    assert torch.allclose(captured["pre"][0, 1], column, atol=1e-6)
    assert torch.allclose(captured["pre"][0, 0], proj.linear_1.bias, atol=1e-6)

    # Whole projection by hand with an einsum over (window, band, channel)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, window, bands, channels, generator=g)
    w1 = proj.linear_1.weight.view(-1, window, bands, channels)
    with torch.no_grad():
        h = torch.relu(torch.einsum("bfwgc,hwgc->bfh", x, w1) + proj.linear_1.bias)
        h = torch.relu(h @ proj.linear_2.weight.T + proj.linear_2.bias)
        tokens = (h @ proj.linear_3.weight.T + proj.linear_3.bias).view(2, 3, proj.num_tokens, proj.token_dim)
        mean = tokens.mean(-1, keepdim=True)
        var = tokens.var(-1, unbiased=False, keepdim=True)
        tokens = (tokens - mean) / torch.sqrt(var + 1e-5) * proj.norm.weight + proj.norm.bias
        got = proj(x)
        # band-major flattening (the wrong order) gives a different result
        wrong = proj(x.transpose(2, 3).reshape(2, 3, bands, window, channels).reshape(x.shape))
    assert got.shape == (2, 3 * proj.num_tokens, proj.token_dim)
    assert torch.allclose(got, tokens.flatten(1, 2), atol=1e-5)
    assert (wrong - got).abs().max() > 1e-3
    assert proj.norm.eps == 1e-5 and proj.norm.elementwise_affine


def test_timestep_embedding_float64_matches_formula():
    t = torch.tensor([999, 500, 3, 0])
    hand = torch.tensor(
        [
            [math.cos(v * 10000 ** (-k / 128)) for k in range(128)]
            + [math.sin(v * 10000 ** (-k / 128)) for k in range(128)]
            for v in t.tolist()
        ],
        dtype=torch.float64,
    )
    ours = HuMoTimesteps(256)(t)
    assert ours.dtype == torch.float32
    assert (ours.double() - hand).abs().max() < 1e-7
    # diffusers' float32 Timesteps is off by ~3e-5 at t=999: why the model uses the float64 version
    diffusers_fp32 = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)(t)
    assert (diffusers_fp32.double() - hand).abs().max() > 1e-6
    model = HuMoTransformer3DModel(**PRESETS["tiny"])
    assert isinstance(model.condition_embedder.timesteps_proj, HuMoTimesteps)


def test_block_order_audio_after_text_before_ffn_plain_residual(tiny):
    inputs = make_inputs(tiny)
    block = tiny.blocks[1]
    seen = {}
    hooks = [
        block.norm_audio.register_forward_pre_hook(lambda m, a: seen.setdefault("pre_audio", a[0])),
        block.audio_attn.register_forward_hook(lambda m, a, o: seen.setdefault("audio_out", o)),
        block.norm2.register_forward_pre_hook(lambda m, a: seen.setdefault("pre_text", a[0])),
        block.norm3.register_forward_pre_hook(lambda m, a: seen.setdefault("pre_ffn", a[0])),
    ]
    with torch.no_grad():
        out = tiny(**inputs, return_block_states=(-1, 0))
    for h in hooks:
        h.remove()
    assert set(out.block_states) == {-1, 0}
    state = out.block_states[-1]
    assert state.shape == (2, 18, 32)
    assert torch.allclose(seen["pre_audio"] + seen["audio_out"], state)  # plain residual, no gate
    assert torch.equal(seen["pre_ffn"], state.float())  # FFN reads the post-audio state
    assert not torch.equal(seen["pre_text"], seen["pre_audio"])  # text cross-attn sits before audio


def test_gradient_checkpointing_same_outputs_and_grads():
    torch.manual_seed(0)
    model = HuMoTransformer3DModel(**PRESETS["tiny"])
    inputs = make_inputs(model, batch=1)

    def run():
        model.zero_grad()
        out = model(**inputs, return_block_states=(-2, -1))
        loss = out.sample.square().mean() + out.block_states[-2].square().mean()
        loss.backward()
        return out.sample.detach(), model.blocks[0].audio_attn.to_q.weight.grad.clone()

    plain, grad_plain = run()
    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing
    ckpt, grad_ckpt = run()
    assert torch.allclose(plain, ckpt, atol=1e-6)
    assert grad_plain.abs().max() > 0
    assert torch.allclose(grad_plain, grad_ckpt, atol=1e-6)


def test_reference_frame_rope_temporal_index(tiny):
    hidden = torch.zeros(1, 16, 3, 4, 6)  # F_total = 3: the last frame (reference) gets temporal index 2
    cos, _ = tiny.rope(hidden)
    t_dim = tiny.rope.t_dim
    per_frame = 2 * 3
    last = cos[0, 2 * per_frame, 0, :t_dim]
    assert torch.equal(last, tiny.rope.freqs_cos[2, :t_dim].to(last.dtype))


def test_bad_inputs_raise_input_error(tiny):
    inputs = make_inputs(tiny)
    bad_audio = {**inputs, "audio_embeds": inputs["audio_embeds"][:, :2]}
    with pytest.raises(InputError) as err:
        tiny(**bad_audio)
    assert err.value.field == "audio_embeds" and "F_total" in str(err.value)
    with pytest.raises(InputError) as err:
        tiny(**{**inputs, "hidden_states": inputs["hidden_states"][..., :5]})
    assert err.value.field == "hidden_states"
    with pytest.raises(InputError):
        tiny(**inputs, return_block_states=(7,))
