"""Single-file HuMo transformers the way the community ships them, written by the tests (one definition each).

- `write_gguf`: a GGUF in the layout of city96's ComfyUI-GGUF tools (tools/convert.py + its llama.cpp patch), which
  the HuMo GGUF repositories are made with: official Wan/HuMo key names (optionally `model.diffusion_model.`),
  `general.architecture` "wan" ("pig" for calcuis' gguf-connector files; ComfyUI-GGUF reads both the same way),
  1-D and small (<= 1024 values) tensors and `.modulation` in F32, the embeddings / `patch_embedding` / `head` kept
  F16 (never quantized), the 5-D `patch_embedding` stored whole in F32 (what `fix_5d_tensors.py` adds back), and a
  K-quant tensor whose rows are not a multiple of 256 falls back to F16 (what llama-quantize does).
- `quantize_q4_k`: ggml's Q4_K block (d, dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles) in numpy; the
  `gguf` package can only write Q8_0 / Q4_0 / Q5_x / F16 / BF16 itself. Plain min/max scales, no search: a valid
  Q4_K file a little less accurate than llama-quantize's; both diffusers' and gguf-py's decoders read it.
- `tiny_gguf_transformer`: a tiny HuMo whose attention and FFN widths are multiples of 256, so those layers really
  are Q4_K; its text / audio / latent widths are the `tiny` model's, so it runs on that model's VAE and encoders.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch

from engine.models.official import diffusers_to_official

QT = gguf.GGMLQuantizationType
KEEP_F16 = ("patch_embedding.", "text_embedding.", "time_embedding.", "time_projection.", "head.", "img_emb.")


def tiny_gguf_transformer(seed: int = 0):
    """Two heads of 128 (width 256), FFN 512, on the `tiny` model's text/audio/latent widths."""
    from engine.components import build_tiny_components

    components = build_tiny_components(seed)
    config = dict(components["transformer"].config)
    config.update(num_attention_heads=2, attention_head_dim=128, ffn_dim=512)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    torch.manual_seed(seed)
    from engine.models import HuMoTransformer3DModel

    return HuMoTransformer3DModel(**config).eval()


def official_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().contiguous() for k, v in diffusers_to_official(model.state_dict()).items()}


def tensor_type(key: str, shape: tuple[int, ...], qtype: QT) -> QT:
    """The type the community tools give a tensor when the file's type is `qtype` (see the module docstring)."""
    if len(shape) <= 1 or np.prod(shape) <= 1024 or ".modulation" in key or len(shape) > 4:
        return QT.F32
    if any(key.startswith(p) for p in KEEP_F16):
        return QT.F16
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if shape[-1] % block:
        return QT.F16
    return qtype


def write_gguf(state: dict[str, torch.Tensor], path, qtype: QT, arch: str | None = "wan", prefix: str = "",
               types: dict[str, QT] | None = None) -> Path:  # fmt: skip
    """Write official-key tensors as a GGUF; `types` overrides the type of single keys. Returns the path."""
    writer = gguf.GGUFWriter(path=None, arch=arch or "wan")
    if arch is None:  # stable-diffusion.cpp style: no architecture key at all
        writer.kv_data[0].pop("general.architecture", None)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, tensor in state.items():
        array = tensor.float().numpy()
        kind = (types or {}).get(key, tensor_type(key, array.shape, qtype))
        writer.add_tensor(prefix + key, quantize(array, kind), raw_dtype=kind)
    writer.write_header_to_file(path=str(path))
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def quantize(array: np.ndarray, kind: QT) -> np.ndarray:
    if kind == QT.Q4_K:
        return quantize_q4_k(array)
    if kind == QT.F32:
        return array.astype(np.float32)
    return gguf.quants.quantize(array.astype(np.float32), kind)


def quantize_q4_k(array: np.ndarray) -> np.ndarray:
    """[..., n*256] float -> [..., n*144] uint8 Q4_K blocks (x ~ d*sc*q - dmin*m per 32-value sub-block)."""
    rows = array.reshape(-1, 256).astype(np.float32)
    sub = rows.reshape(-1, 8, 32)
    low = np.minimum(sub.min(-1), 0.0)  # ggml keeps the offset <= 0
    step = (sub.max(-1) - low) / 15.0
    d = (step.max(-1) / 63.0).astype(np.float16)
    dmin = (-low.min(-1) / 63.0).astype(np.float16)
    d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    # round the scales up so the 16-level grid still reaches the top of each sub-block
    sc = np.clip(np.ceil(np.divide(step, d32, out=np.zeros_like(step), where=d32 > 0)), 0, 63).astype(np.uint8)
    m = np.clip(np.rint(np.divide(-low, dmin32, out=np.zeros_like(low), where=dmin32 > 0)), 0, 63).astype(np.uint8)
    scale = (d32 * sc)[..., None]
    q = np.divide(sub + (dmin32 * m)[..., None], scale, out=np.zeros_like(sub), where=scale > 0)
    q = np.clip(np.rint(q), 0, 15).astype(np.uint8)
    packed = np.empty((rows.shape[0], 12), np.uint8)
    packed[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    nibbles = q.reshape(-1, 4, 2, 32)
    qs = (nibbles[:, :, 0] | (nibbles[:, :, 1] << 4)).reshape(-1, 128)
    blocks = np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), packed, qs], axis=1)
    return blocks.reshape(*array.shape[:-1], array.shape[-1] // 256 * 144)


def gguf_error_bound(source: torch.Tensor, kind: QT) -> torch.Tensor:
    """Per-value bound on |dequantized - source| for a format, from its block structure:

    - F16: half a unit in the last place: |x| * 2^-11 (plus the smallest subnormal);
    - Q8_0: blocks of 32 share d = max|x| / 127 (fp16): half a step, d / 2, plus d's own fp16 rounding (x 127 q);
    - Q4_K: 32-value sub-blocks on a 16-level grid over [min(x, 0), max(x)]; the 6-bit scales are rounded up, so
      one step is at most (range / 15) + d and the error half of that, plus the 6-bit offset's rounding dmin / 2.
    Q8_0 and Q4_K also get |x| * 2^-10: diffusers dequantizes them in fp16.
    """
    x = source.float()
    if kind == QT.F32:
        return torch.zeros_like(x)
    if kind == QT.F16:
        return x.abs() * 2.0**-11 + 2.0**-24
    if kind == QT.Q8_0:
        blocks = x.reshape(-1, 32)
        d = blocks.abs().amax(-1, keepdim=True) / 127
        return (d / 2 + d * 127 * 2.0**-11).expand_as(blocks).reshape(x.shape) + x.abs() * 2.0**-10
    if kind == QT.Q4_K:
        sub = x.reshape(-1, 8, 32)
        low = sub.amin(-1).clamp(max=0)
        step = (sub.amax(-1) - low) / 15
        d = step.amax(-1, keepdim=True) / 63
        dmin = -low.amin(-1, keepdim=True) / 63
        bound = (step + d) / 2 + dmin / 2
        return bound[..., None].expand_as(sub).reshape(x.shape) + x.abs() * 2.0**-10
    raise ValueError(kind)
