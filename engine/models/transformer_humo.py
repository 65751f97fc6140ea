"""The HuMo transformer: diffusers' Wan2.1 DiT plus HuMo's audio projection and per-frame audio cross-attention.

Layout and numerics follow reference/humo-official.md §2 and §10. Everything not HuMo-specific is built from
diffusers' Wan pieces (`WanAttention`, `WanTimeTextImageEmbedding`, `WanRotaryPosEmbed`, `FeedForward`,
`FP32LayerNorm`), so the key names below `blocks.i.{attn1,attn2,ffn,norm2}` are the diffusers Wan ones.
HuMo's additions are `audio_proj.{linear_1,linear_2,linear_3,norm}` and `blocks.i.{norm_audio,audio_attn}`;
`engine.models.official` maps the official key names onto these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.loaders import PeftAdapterMixin
from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput
from diffusers.models.attention import AttentionMixin, AttentionModuleMixin, FeedForward
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import (
    WanAttention,
    WanAttnProcessor,
    WanRotaryPosEmbed,
    WanTimeTextImageEmbedding,
)
from diffusers.utils import apply_lora_scale

from engine.errors import InputError
from engine.models.official import diffusers_to_official, load_official

__all__ = [
    "HuMoAudioAttention",
    "HuMoAudioAttnProcessor",
    "HuMoAudioProjection",
    "HuMoTimesteps",
    "HuMoTransformer3DModel",
    "HuMoTransformerBlock",
    "HuMoTransformerOutput",
    "sinusoidal_embedding_float64",
]


def sinusoidal_embedding_float64(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """Official Wan timestep embedding: [cos, sin] of t * 10000^(-k/half), computed in float64 (shape [B, dim])."""
    half = dim // 2
    position = timestep.to(torch.float64).reshape(-1)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timestep.device).div(half))
    args = torch.outer(position, freqs)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def compute_dtype(linear: nn.Module) -> torch.dtype:
    """The dtype a linear layer computes in: its weight's, or a GGUF layer's `compute_dtype` (its weight is uint8)."""
    return getattr(linear, "compute_dtype", None) or linear.weight.dtype


class HuMoTimesteps(nn.Module):
    """Drop-in for diffusers' `Timesteps` that computes in float64 like the official code, then returns float32.

    diffusers' `Timesteps` computes in float32, which differs from the official embedding by up to ~1e-4 at
    t = 999 (the argument t * freq is large); the official code builds it in float64 and casts to float32.
    """

    def __init__(self, num_channels: int):
        super().__init__()
        self.num_channels = num_channels

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return sinusoidal_embedding_float64(timesteps, self.num_channels).to(torch.float32)


class HuMoAudioProjection(nn.Module):
    """`audio_proj`: per latent frame, (window, bands, channels) -> `num_tokens` audio tokens of `token_dim`.

    Flatten order is window-major, then band, then channel (index = w * bands * channels + g * channels + c);
    this order is what the official weights expect. Linear -> ReLU -> Linear -> ReLU -> Linear, reshape to
    (num_tokens, token_dim), then an affine LayerNorm with eps 1e-5 per token.
    """

    def __init__(
        self,
        window: int = 8,
        bands: int = 5,
        audio_dim: int = 1280,
        hidden_dim: int = 512,
        num_tokens: int = 16,
        token_dim: int = 1536,
    ):
        super().__init__()
        self.window, self.bands, self.audio_dim = window, bands, audio_dim
        self.num_tokens, self.token_dim = num_tokens, token_dim
        self.linear_1 = nn.Linear(window * bands * audio_dim, hidden_dim)
        self.linear_2 = nn.Linear(hidden_dim, hidden_dim)
        self.linear_3 = nn.Linear(hidden_dim, num_tokens * token_dim)
        self.norm = nn.LayerNorm(token_dim, eps=1e-5, elementwise_affine=True)

    def forward(self, audio_embeds: torch.Tensor) -> torch.Tensor:
        """[B, F, window, bands, channels] -> [B, F * num_tokens, token_dim] (frame-major: token = f * num_tokens + k)."""
        batch_size, num_frames = audio_embeds.shape[:2]
        hidden_states = audio_embeds.flatten(2).to(compute_dtype(self.linear_1))
        hidden_states = F.relu(self.linear_1(hidden_states))
        hidden_states = F.relu(self.linear_2(hidden_states))
        hidden_states = self.linear_3(hidden_states)
        hidden_states = hidden_states.view(batch_size, num_frames, self.num_tokens, self.token_dim)
        hidden_states = self.norm(hidden_states)
        return hidden_states.flatten(1, 2)


def _context_parallel_offset(parallel_config: Any, local_len: int, total_len: int) -> int:
    """Global index of this rank's first token when the sequence was split contiguously across the CP mesh.

    diffusers splits with `chunk` (equal parts, length divisible) or, in "anything" mode, with `tensor_split`
    (the first `total % n` ranks get one more token); both give the sizes computed here.
    """
    cp_config = getattr(parallel_config, "context_parallel_config", None)
    if cp_config is None or cp_config._flattened_mesh is None:
        raise RuntimeError(
            f"audio attention got {local_len} video tokens but the latent grid has {total_len}; this only happens "
            "under context parallelism, and no context-parallel config is set on the processor"
        )
    mesh = cp_config._flattened_mesh
    world_size = mesh.size()
    rank = dist.get_rank(mesh.get_group())
    sizes = [total_len // world_size + (1 if r < total_len % world_size else 0) for r in range(world_size)]
    if sizes[rank] != local_len:
        raise RuntimeError(f"rank {rank} holds {local_len} tokens, expected {sizes[rank]} of {total_len}")
    return sum(sizes[:rank])


class HuMoAudioAttnProcessor:
    """Per-latent-frame audio cross-attention.

    The H*W video tokens of latent frame f attend only to the `num_tokens` audio tokens of frame f; no RoPE,
    no mask, softmax scale 1/sqrt(head_dim).

    Context parallelism: the video tokens arrive split contiguously across ranks (the split can fall inside
    a frame) while the audio tokens are replicated on every rank (they are small: 16 per frame). Each rank
    computes its global token offset, pads its queries at both ends to whole frames, attends frame by frame
    against the audio tokens of exactly those frames, and drops the padding. This needs no communication,
    works for any split point and any head count, and gives the same numbers as one process.
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn: HuMoAudioAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        num_frames: int,
        tokens_per_frame: int,
    ) -> torch.Tensor:
        batch_size, local_len, _ = hidden_states.shape
        query = attn.norm_q(attn.to_q(hidden_states))
        key = attn.norm_k(attn.to_k(encoder_hidden_states))
        value = attn.to_v(encoder_hidden_states)

        total_len = num_frames * tokens_per_frame
        offset = 0 if local_len == total_len else _context_parallel_offset(self._parallel_config, local_len, total_len)
        first_frame = offset // tokens_per_frame
        last_frame = (offset + local_len - 1) // tokens_per_frame
        pad_front = offset - first_frame * tokens_per_frame
        pad_back = (last_frame + 1) * tokens_per_frame - (offset + local_len)
        frames = last_frame - first_frame + 1

        if pad_front or pad_back:
            # Zero queries fill the partial frames at the shard edges; their outputs are dropped below.
            query = F.pad(query, (0, 0, pad_front, pad_back))
        query = query.view(batch_size * frames, tokens_per_frame, attn.heads, -1)
        audio_tokens = key.shape[1] // num_frames
        key = key.view(batch_size, num_frames, audio_tokens, -1)[:, first_frame : last_frame + 1]
        value = value.view(batch_size, num_frames, audio_tokens, -1)[:, first_frame : last_frame + 1]
        key = key.reshape(batch_size * frames, audio_tokens, attn.heads, -1)
        value = value.reshape(batch_size * frames, audio_tokens, attn.heads, -1)

        hidden_states = dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=None,
            dropout_p=0.0,
            is_causal=False,
            backend=self._attention_backend,
            parallel_config=None,  # per-rank local attention; see the class docstring
        )
        hidden_states = hidden_states.reshape(batch_size, frames * tokens_per_frame, -1)
        hidden_states = hidden_states[:, pad_front : pad_front + local_len].type_as(query)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        return hidden_states


class HuMoAudioAttention(nn.Module, AttentionModuleMixin):
    """Audio cross-attention: q from the video tokens (dim), k/v from audio tokens (audio_token_dim), RMSNorm on q, k."""

    _default_processor_cls = HuMoAudioAttnProcessor
    _available_processors = [HuMoAudioAttnProcessor]
    _supports_qkv_fusion = False  # q and k/v take different input widths

    def __init__(self, dim: int, heads: int, dim_head: int, audio_token_dim: int, eps: float = 1e-6, processor=None):
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner_dim, bias=True)
        self.to_k = nn.Linear(audio_token_dim, inner_dim, bias=True)
        self.to_v = nn.Linear(audio_token_dim, inner_dim, bias=True)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, dim, bias=True), nn.Dropout(0.0)])
        self.norm_q = nn.RMSNorm(inner_dim, eps=eps, elementwise_affine=True)
        self.norm_k = nn.RMSNorm(inner_dim, eps=eps, elementwise_affine=True)
        self.set_processor(processor if processor is not None else HuMoAudioAttnProcessor())

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        num_frames: int,
        tokens_per_frame: int,
    ) -> torch.Tensor:
        return self.processor(self, hidden_states, encoder_hidden_states, num_frames, tokens_per_frame)


class HuMoTransformerBlock(nn.Module):
    """Wan block with HuMo's audio cross-attention between the text cross-attention and the FFN."""

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        audio_token_dim: int,
        cross_attn_norm: bool = True,
        eps: float = 1e-6,
    ):
        super().__init__()
        dim_head = dim // num_heads
        # 1. Self-attention
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.attn1 = WanAttention(dim=dim, heads=num_heads, dim_head=dim_head, eps=eps, processor=WanAttnProcessor())
        # 2. Text cross-attention (official `norm3` is this `norm2`)
        self.attn2 = WanAttention(
            dim=dim,
            heads=num_heads,
            dim_head=dim_head,
            eps=eps,
            cross_attention_dim_head=dim_head,
            processor=WanAttnProcessor(),
        )
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        # 3. Audio cross-attention (HuMo): affine LayerNorm in fp32, plain residual
        self.norm_audio = FP32LayerNorm(dim, eps, elementwise_affine=True)
        self.audio_attn = HuMoAudioAttention(dim, num_heads, dim_head, audio_token_dim, eps=eps)
        # 4. Feed-forward
        self.ffn = FeedForward(dim, inner_dim=ffn_dim, activation_fn="gelu-approximate")
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
        audio_hidden_states: torch.Tensor,
        num_frames: int,
        tokens_per_frame: int,
        return_audio_state: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # Modulation in fp32 (official runs it under an fp32 autocast region).
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = (
            self.scale_shift_table + temb.float()
        ).chunk(6, dim=1)

        # 1. Self-attention, gated residual in fp32
        norm_hidden_states = (self.norm1(hidden_states.float()) * (1 + scale_msa) + shift_msa).type_as(hidden_states)
        attn_output = self.attn1(norm_hidden_states, None, None, rotary_emb)
        hidden_states = (hidden_states.float() + attn_output * gate_msa).type_as(hidden_states)

        # 2. Text cross-attention (no mask over the 512 zero-padded text tokens)
        norm_hidden_states = self.norm2(hidden_states.float()).type_as(hidden_states)
        hidden_states = hidden_states + self.attn2(norm_hidden_states, encoder_hidden_states, None, None)

        # 3. Audio cross-attention, per latent frame, plain residual
        norm_hidden_states = self.norm_audio(hidden_states)
        hidden_states = hidden_states + self.audio_attn(
            norm_hidden_states, audio_hidden_states, num_frames, tokens_per_frame
        )
        audio_state = hidden_states

        # 4. Feed-forward, gated residual in fp32
        norm_hidden_states = (self.norm3(hidden_states.float()) * (1 + c_scale_msa) + c_shift_msa).type_as(
            hidden_states
        )
        ff_output = self.ffn(norm_hidden_states)
        hidden_states = (hidden_states.float() + ff_output.float() * c_gate_msa).type_as(hidden_states)
        if return_audio_state:
            return hidden_states, audio_state
        return hidden_states


# Lets diffusers' block-level caches (FirstBlockCache, MagCache, TaylorSeer...) find the block's hidden-state output.
TransformerBlockRegistry.register(
    model_class=HuMoTransformerBlock,
    metadata=TransformerBlockMetadata(return_hidden_states_index=0, return_encoder_hidden_states_index=None),
)


@dataclass
class HuMoTransformerOutput(Transformer2DModelOutput):
    """`sample` [B, out_channels, F, H, W]; `block_states` {block index: [B, L, dim]} when requested."""

    block_states: dict[int, torch.Tensor] | None = None


class HuMoTransformer3DModel(ModelMixin, ConfigMixin, PeftAdapterMixin, CacheMixin, AttentionMixin):
    r"""HuMo transformer (Wan2.1 DiT + audio projection + per-frame audio cross-attention in every block).

    Args:
        patch_size, num_attention_heads, attention_head_dim, in_channels, out_channels, text_dim, freq_dim,
        ffn_dim, num_layers, cross_attn_norm, qk_norm, eps, rope_max_seq_len: as diffusers'
            `WanTransformer3DModel`. Defaults are HuMo-17B (40 heads x 128, 40 layers, in_channels 36).
        audio_window (`int`, defaults to 8): audio frames (25 fps) per latent frame.
        audio_bands (`int`, defaults to 5): Whisper layer groups.
        audio_dim (`int`, defaults to 1280): Whisper feature width.
        audio_tokens (`int`, defaults to 16): audio tokens per latent frame out of `audio_proj`.
        audio_token_dim (`int`, defaults to 1536): width of those tokens (k/v input of the audio attention).
        audio_hidden_dim (`int`, defaults to 512): hidden width of the `audio_proj` MLP.
    """

    _supports_gradient_checkpointing = True
    # audio_proj reads its first weight's dtype to cast its input, so it stays in the compute dtype under fp8 storage
    _skip_layerwise_casting_patterns = ["patch_embedding", "condition_embedder", "norm", "audio_proj"]
    _no_split_modules = ["HuMoTransformerBlock"]
    _keep_in_fp32_modules = ["rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3", "norm_audio"]
    _repeated_blocks = ["HuMoTransformerBlock"]
    # Video tokens are split contiguously across ranks at the first block (the split may fall inside a latent
    # frame; the audio attention handles that, see HuMoAudioAttnProcessor); the RoPE tables are split the same
    # way; text and audio tokens stay whole on every rank; the output is gathered after `proj_out`.
    _cp_plan = {
        "rope": {
            0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
            1: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
        },
        "blocks.0": {
            "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
        },
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 36,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        rope_max_seq_len: int = 1024,
        audio_window: int = 8,
        audio_bands: int = 5,
        audio_dim: int = 1280,
        audio_tokens: int = 16,
        audio_token_dim: int = 1536,
        audio_hidden_dim: int = 512,
    ) -> None:
        super().__init__()
        if qk_norm != "rms_norm_across_heads":
            raise ValueError(f"qk_norm must be 'rms_norm_across_heads' (HuMo/Wan2.1), got {qk_norm!r}")
        inner_dim = num_attention_heads * attention_head_dim
        out_channels = out_channels or in_channels

        # 1. Patch & position embedding
        self.rope = WanRotaryPosEmbed(attention_head_dim, patch_size, rope_max_seq_len)
        self.patch_embedding = nn.Conv3d(in_channels, inner_dim, kernel_size=patch_size, stride=patch_size)

        # 2. Condition embeddings (timestep sinusoid in float64 like the official code)
        self.condition_embedder = WanTimeTextImageEmbedding(
            dim=inner_dim, time_freq_dim=freq_dim, time_proj_dim=inner_dim * 6, text_embed_dim=text_dim
        )
        self.condition_embedder.timesteps_proj = HuMoTimesteps(freq_dim)
        self.audio_proj = HuMoAudioProjection(
            window=audio_window,
            bands=audio_bands,
            audio_dim=audio_dim,
            hidden_dim=audio_hidden_dim,
            num_tokens=audio_tokens,
            token_dim=audio_token_dim,
        )

        # 3. Transformer blocks
        self.blocks = nn.ModuleList(
            [
                HuMoTransformerBlock(inner_dim, ffn_dim, num_attention_heads, audio_token_dim, cross_attn_norm, eps)
                for _ in range(num_layers)
            ]
        )

        # 4. Output norm & projection
        self.norm_out = FP32LayerNorm(inner_dim, eps, elementwise_affine=False)
        self.proj_out = nn.Linear(inner_dim, out_channels * math.prod(patch_size))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, inner_dim) / inner_dim**0.5)

        self.gradient_checkpointing = False
        self.load_report: dict[str, Any] | None = None

    @property
    def variant(self) -> str:
        """The conditioning this model was trained for: "17b" (36 input channels: the reference and its mask
        concatenated on channels) or "1.7b" (16: the reference overwrites an extra latent frame)."""
        return "17b" if self.config.in_channels == 36 else "1.7b"

    # -- official checkpoints --------------------------------------------------------------------------
    @classmethod
    def from_official(
        cls,
        path: str,
        torch_dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
        config: dict[str, Any] | None = None,
    ) -> HuMoTransformer3DModel:
        """Load an official HuMo checkpoint (`.pth`, index + shards folder, or one `.safetensors`) strictly.

        The config is inferred from tensor shapes unless `config` (constructor kwargs) is given. See
        `engine.models.official.load_official` for the rules (prefixes, ignored entries, fp32 islands, fp8).
        Raises `engine.errors.CheckpointError` listing missing / unexpected / mis-shaped keys.
        """
        return load_official(path, cls, torch_dtype=torch_dtype, device=device, config=config)

    def to_official_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's weights under the official key names (`blocks.{i}.audio_cross_attn_wrapper...`)."""
        return diffusers_to_official(self.state_dict())

    # -- forward ---------------------------------------------------------------------------------------
    def _check_inputs(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        audio_embeds: torch.Tensor | None,
    ) -> None:
        cfg = self.config
        if hidden_states.ndim != 5 or hidden_states.shape[1] != cfg.in_channels:
            raise InputError(
                f"hidden_states must be [B, {cfg.in_channels}, F, H, W], got {tuple(hidden_states.shape)}",
                field="hidden_states",
            )
        batch_size, _, frames, height, width = hidden_states.shape
        p_t, p_h, p_w = cfg.patch_size
        if frames % p_t or height % p_h or width % p_w:
            raise InputError(
                f"latent size (F={frames}, H={height}, W={width}) must be divisible by the patch size {cfg.patch_size}",
                field="hidden_states",
            )
        if timestep.ndim > 1 or (timestep.ndim == 1 and timestep.shape[0] not in (1, batch_size)):
            raise InputError(f"timestep must be a scalar or [B={batch_size}], got {tuple(timestep.shape)}", "timestep")
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[::2] != (batch_size, cfg.text_dim):
            raise InputError(
                f"encoder_hidden_states must be [B={batch_size}, 512, {cfg.text_dim}], "
                f"got {tuple(encoder_hidden_states.shape)}",
                field="encoder_hidden_states",
            )
        expected = (batch_size, frames // p_t, cfg.audio_window, cfg.audio_bands, cfg.audio_dim)
        if audio_embeds is not None and tuple(audio_embeds.shape) != expected:
            raise InputError(
                f"audio_embeds must be [B, F_total, window, bands, channels] = {expected}, "
                f"got {tuple(audio_embeds.shape)}",
                field="audio_embeds",
            )

    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        audio_embeds: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        return_block_states: tuple[int, ...] | None = None,
    ) -> HuMoTransformerOutput | tuple[torch.Tensor, ...]:
        """Predict the flow velocity.

        Args:
            hidden_states: [B, in_channels, F_total, H, W]. For in_channels 36 (HuMo-17B) the caller has already
                concatenated [latents (16); mask (4); condition (16)] on channels. The reference frame(s) are the
                last latent frames; RoPE comes from this full shape, so they get temporal index F_vid.
            timestep: [B] (or a scalar) integer-valued timesteps 0..999.
            encoder_hidden_states: [B, 512, text_dim], text embeddings zero-padded to 512 (no mask is applied).
            audio_embeds: [B, F_total, audio_window, audio_bands, audio_dim] Whisper windows. `None` means all
                zeros, which is HuMo's "null audio": zeros still go through `audio_proj` and every audio attention.
            return_dict: return a `HuMoTransformerOutput` instead of a tuple.
            attention_kwargs: passed for LoRA scaling (`scale`).
            return_block_states: block indices (negative counts from the end, e.g. (-4, -3, -2, -1)) whose hidden
                states right after the audio cross-attention (before the FFN) are returned as
                `block_states[i]` with shape [B, L, dim], tokens in (F_total, H/2, W/2) raster order. Works with
                gradient checkpointing (non-reentrant). Under context parallelism these are this rank's local
                token shards.

        Returns:
            `HuMoTransformerOutput(sample=[B, out_channels, F_total, H, W], block_states=...)`, or the tuple
            `(sample,)` / `(sample, block_states)` when `return_dict=False`.
        """
        if timestep.ndim == 0:
            timestep = timestep.reshape(1)
        self._check_inputs(hidden_states, timestep, encoder_hidden_states, audio_embeds)
        batch_size, _, num_frames, height, width = hidden_states.shape
        if timestep.shape[0] != batch_size:
            timestep = timestep.expand(batch_size)
        p_t, p_h, p_w = self.config.patch_size
        post_f, post_h, post_w = num_frames // p_t, height // p_h, width // p_w
        num_layers = len(self.blocks)
        if return_block_states and any(not -num_layers <= i < num_layers for i in return_block_states):
            raise InputError(
                f"return_block_states indices must be in [-{num_layers}, {num_layers})", "return_block_states"
            )
        wanted = {i % num_layers for i in return_block_states} if return_block_states else set()

        rotary_emb = self.rope(hidden_states)
        # Inputs follow the weights' dtype, so fp32 latents can be fed to a bf16 model.
        hidden_states = hidden_states.to(self.patch_embedding.weight.dtype)
        encoder_hidden_states = encoder_hidden_states.to(compute_dtype(self.condition_embedder.text_embedder.linear_1))
        hidden_states = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()

        temb, timestep_proj, encoder_hidden_states, _ = self.condition_embedder(timestep, encoder_hidden_states)
        timestep_proj = timestep_proj.unflatten(1, (6, -1))

        if audio_embeds is None:
            cfg = self.config
            audio_embeds = hidden_states.new_zeros(batch_size, post_f, cfg.audio_window, cfg.audio_bands, cfg.audio_dim)
        audio_hidden_states = self.audio_proj(audio_embeds).to(encoder_hidden_states.dtype)

        block_states: dict[int, torch.Tensor] = {}
        for index, block in enumerate(self.blocks):
            want = index in wanted
            args = (hidden_states, encoder_hidden_states, timestep_proj, rotary_emb, audio_hidden_states)
            args = args + (post_f, post_h * post_w, want)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                out = self._gradient_checkpointing_func(block, *args)
            else:
                out = block(*args)
            if want:
                hidden_states, block_states[index] = out
            else:
                hidden_states = out

        # Output norm (fp32 modulation), projection & unpatchify
        shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        shift, scale = shift.to(hidden_states.device), scale.to(hidden_states.device)
        hidden_states = (self.norm_out(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch_size, post_f, post_h, post_w, p_t, p_h, p_w, -1)
        hidden_states = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6)
        output = hidden_states.flatten(6, 7).flatten(4, 5).flatten(2, 3)

        states = {i: block_states[i % num_layers] for i in return_block_states} if return_block_states else None
        if not return_dict:
            return (output,) if states is None else (output, states)
        return HuMoTransformerOutput(sample=output, block_states=states)
