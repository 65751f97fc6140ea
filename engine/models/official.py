"""Official HuMo checkpoints: key conversion (official <-> diffusers) and strict, streaming loading.

Layouts accepted by `load_official` (reference/humo-official.md §3):
- a `.pth` / `.pt` / `.bin` torch state dict (e.g. `HuMo-1.7B/ema.pth`), opened with `mmap=True, weights_only=True`;
- a folder with `humo.safetensors.index.json` (or one other `*.safetensors.index.json`) and its shards
  (e.g. `HuMo-17B/`), or a folder holding exactly one `.safetensors` / `.pth`;
- one `.safetensors` file (fp32/fp16/bf16/fp8 repacks such as Comfy-Org's `humo_17B_fp16.safetensors`).

Rules:
- Key prefixes `model.diffusion_model.`, `diffusion_model.`, `model.`, `module.` are stripped when what follows is
  an official top-level module name.
- Strict: every model parameter must be present with the right shape, and every tensor under an official
  top-level module name (`patch_embedding`, `text_embedding`, `time_embedding`, `time_projection`, `blocks`,
  `head`, `audio_proj`, `img_emb`) must map to a parameter; otherwise `CheckpointError` lists the missing,
  unexpected and mis-shaped keys. Tensors under any other top-level name (e.g. training-only extras a
  `.pth` may carry) and non-tensor entries are not loaded; they are listed in `model.load_report`
  (`ignored_tensors`, `metadata`) and logged.
- The config comes from the tensor shapes (head_dim 128 as in both official models; pass `config` to override).
- Each tensor is converted (key, then dtype) and assigned one at a time into a model built on the meta device,
  so peak host RAM stays near the model size in the target dtype. Parameters of `_keep_in_fp32_modules`
  stay fp32. fp8 tensors (e4m3 / e5m2) are upcast to the target dtype with their scale tensors applied
  (`.scale_weight` or `.weight_scale`, per tensor or per row); `.scale_input` / `.input_scale` / `.comfy_quant`
  entries are listed as ignored; fp8 storage is not kept. Integer or packed (int8, fp4) weights are refused.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import math
import mmap
import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights

from engine.errors import CheckpointError

logger = logging.getLogger(__name__)

__all__ = [
    "OFFICIAL_TOP_LEVEL",
    "KNOWN_PREFIXES",
    "diffusers_to_official",
    "diffusers_to_official_key",
    "infer_config",
    "load_official",
    "official_to_diffusers",
    "official_to_diffusers_key",
]

OFFICIAL_TOP_LEVEL = (
    "patch_embedding",
    "text_embedding",
    "time_embedding",
    "time_projection",
    "blocks",
    "head",
    "audio_proj",
    "img_emb",  # Wan I2V CLIP branch: never in HuMo; listed so such a file fails loudly instead of being ignored
)
KNOWN_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "module.")

# (official regex, diffusers template); block-level rules take the block index as group 1.
_RULES: list[tuple[str, str]] = [
    (r"patch_embedding\.(weight|bias)", "patch_embedding.{0}"),
    (r"text_embedding\.0\.(weight|bias)", "condition_embedder.text_embedder.linear_1.{0}"),
    (r"text_embedding\.2\.(weight|bias)", "condition_embedder.text_embedder.linear_2.{0}"),
    (r"time_embedding\.0\.(weight|bias)", "condition_embedder.time_embedder.linear_1.{0}"),
    (r"time_embedding\.2\.(weight|bias)", "condition_embedder.time_embedder.linear_2.{0}"),
    (r"time_projection\.1\.(weight|bias)", "condition_embedder.time_proj.{0}"),
    (r"head\.head\.(weight|bias)", "proj_out.{0}"),
    (r"head\.modulation", "scale_shift_table"),
    (r"audio_proj\.audio_proj_glob_([123])\.layer\.(weight|bias)", "audio_proj.linear_{0}.{1}"),
    (r"audio_proj\.audio_proj_glob_norm\.layer\.(weight|bias)", "audio_proj.norm.{0}"),
    (r"blocks\.(\d+)\.modulation", "blocks.{0}.scale_shift_table"),
    (r"blocks\.(\d+)\.self_attn\.([qkv])\.(weight|bias)", "blocks.{0}.attn1.to_{1}.{2}"),
    (r"blocks\.(\d+)\.self_attn\.o\.(weight|bias)", "blocks.{0}.attn1.to_out.0.{1}"),
    (r"blocks\.(\d+)\.self_attn\.norm_([qk])\.weight", "blocks.{0}.attn1.norm_{1}.weight"),
    (r"blocks\.(\d+)\.cross_attn\.([qkv])\.(weight|bias)", "blocks.{0}.attn2.to_{1}.{2}"),
    (r"blocks\.(\d+)\.cross_attn\.o\.(weight|bias)", "blocks.{0}.attn2.to_out.0.{1}"),
    (r"blocks\.(\d+)\.cross_attn\.norm_([qk])\.weight", "blocks.{0}.attn2.norm_{1}.weight"),
    (r"blocks\.(\d+)\.norm3\.(weight|bias)", "blocks.{0}.norm2.{1}"),
    (r"blocks\.(\d+)\.ffn\.0\.(weight|bias)", "blocks.{0}.ffn.net.0.proj.{1}"),
    (r"blocks\.(\d+)\.ffn\.2\.(weight|bias)", "blocks.{0}.ffn.net.2.{1}"),
    (r"blocks\.(\d+)\.audio_cross_attn_wrapper\.norm1_audio\.(weight|bias)", "blocks.{0}.norm_audio.{1}"),
    (
        r"blocks\.(\d+)\.audio_cross_attn_wrapper\.audio_cross_attn\.([qkv])\.(weight|bias)",
        "blocks.{0}.audio_attn.to_{1}.{2}",
    ),
    (
        r"blocks\.(\d+)\.audio_cross_attn_wrapper\.audio_cross_attn\.o\.(weight|bias)",
        "blocks.{0}.audio_attn.to_out.0.{1}",
    ),
    (
        r"blocks\.(\d+)\.audio_cross_attn_wrapper\.audio_cross_attn\.norm_([qk])\.weight",
        "blocks.{0}.audio_attn.norm_{1}.weight",
    ),
]


def _template_to_regex(template: str) -> str:
    """`blocks.{0}.attn1.to_{1}.{2}` -> a regex with one group per placeholder (used for the reverse map)."""
    parts = re.split(r"(\{\d\})", template)
    return "".join(r"(\w+?)" if re.fullmatch(r"\{\d\}", p) else re.escape(p) for p in parts)


def _official_template(pattern: str) -> str:
    """Official regex -> format template, groups in order (`blocks\\.(\\d+)\\.self_attn\\.([qkv])` -> ...)."""
    out, index, i = [], 0, 0
    while i < len(pattern):
        if pattern[i] == "(":
            depth, j = 1, i + 1
            while depth:
                depth += {"(": 1, ")": -1}.get(pattern[j], 0)
                j += 1
            out.append(f"{{{index}}}")
            index, i = index + 1, j
        elif pattern[i] == "\\":
            out.append(pattern[i + 1])
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


_FORWARD = [(re.compile(p), t) for p, t in _RULES]
_BACKWARD = [(re.compile(_template_to_regex(t)), _official_template(p), re.compile(p)) for p, t in _RULES]


def official_to_diffusers_key(key: str) -> str | None:
    """Official key -> diffusers key of `HuMoTransformer3DModel`, or None when the key is not a HuMo parameter."""
    for pattern, template in _FORWARD:
        match = pattern.fullmatch(key)
        if match:
            return template.format(*match.groups())
    return None


def diffusers_to_official_key(key: str) -> str | None:
    """Diffusers key -> official key, or None when the key has no official counterpart."""
    for pattern, template, check in _BACKWARD:
        match = pattern.fullmatch(key)
        if match:
            official = template.format(*match.groups())
            if check.fullmatch(official):
                return official
    return None


def official_to_diffusers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a whole official state dict; raises `CheckpointError` listing keys that do not map."""
    unknown = [k for k in state_dict if official_to_diffusers_key(k) is None]
    if unknown:
        raise CheckpointError(f"{len(unknown)} keys are not HuMo parameters: {_preview(unknown)}")
    return {official_to_diffusers_key(k): v for k, v in state_dict.items()}


def diffusers_to_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers-format state dict to official keys; raises `CheckpointError` on keys that do not map."""
    unknown = [k for k in state_dict if diffusers_to_official_key(k) is None]
    if unknown:
        raise CheckpointError(f"{len(unknown)} keys have no official name: {_preview(unknown)}")
    return {diffusers_to_official_key(k): v for k, v in state_dict.items()}


def _preview(keys: list[str], limit: int = 20) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# -- reading files, one tensor at a time -------------------------------------------------------------------------


@dataclass
class _Entry:
    """One stored tensor: its (prefix-stripped) name, shape, dtype and a function that reads it."""

    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    read: Callable[[], torch.Tensor]
    release: Callable[[torch.Tensor], None] = lambda tensor: None


_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


def _safetensors_entries(path: Path) -> tuple[list[_Entry], dict[str, Any]]:
    """Entries of one safetensors file, read with plain file reads (no mmap, so no file pages in RSS)."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    base = 8 + header_len
    metadata = header.pop("__metadata__", None) or {}
    entries = []
    for key, info in header.items():
        if info["dtype"] not in _ST_DTYPES:
            raise CheckpointError(f"{path}: tensor {key} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        entries.append(
            _Entry(
                key=key,
                shape=tuple(info["shape"]),
                dtype=_ST_DTYPES[info["dtype"]],
                read=_safetensors_reader(path, base + start, end - start, _ST_DTYPES[info["dtype"]], info["shape"]),
            )
        )
    return entries, metadata


def _safetensors_reader(path: Path, offset: int, nbytes: int, dtype: torch.dtype, shape: list[int]):
    def read() -> torch.Tensor:
        buffer = torch.empty(nbytes, dtype=torch.uint8)
        with open(path, "rb") as f:
            f.seek(offset)
            view = memoryview(buffer.numpy())
            got = 0
            while got < nbytes:
                n = f.readinto(view[got:])
                if not n:
                    raise CheckpointError(f"{path} is truncated (tensor at byte {offset} needs {nbytes} bytes)")
                got += n
        return buffer.view(dtype).reshape(shape)

    return read


_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _drop_pages(tensor: torch.Tensor) -> None:
    """Tell the kernel we are done with a memory-mapped tensor's pages, so they leave this process's RSS.

    The `.pth` is mapped privately and never written, so dropped pages would simply be re-read from the file.
    Best effort: Linux only; silently does nothing elsewhere.
    """
    try:
        libc = _libc()
        start = tensor.untyped_storage().data_ptr()
        end = start + tensor.untyped_storage().nbytes()
        start -= start % _PAGE
        end += (-end) % _PAGE
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)
    except (OSError, AttributeError):
        pass


def _flatten_torch_dict(obj: Any, prefix: str, tensors: dict, metadata: list) -> None:
    """Collect tensors from a (possibly nested) checkpoint dict; everything else is metadata."""
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            tensors[name] = value
        elif isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            _flatten_torch_dict(value, f"{name}.", tensors, metadata)
        else:
            metadata.append(f"{name} ({type(value).__name__})")


def _torch_entries(path: Path) -> tuple[list[_Entry], list[str]]:
    try:
        obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a loadable state dict"
        raise CheckpointError(f"{path} is not a loadable torch state dict ({exc})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a state dict")
    tensors: dict[str, torch.Tensor] = {}
    metadata: list[str] = []
    _flatten_torch_dict(obj, "", tensors, metadata)
    entries = [
        _Entry(key=k, shape=tuple(t.shape), dtype=t.dtype, read=(lambda t=t: t), release=_drop_pages)
        for k, t in tensors.items()
    ]
    return entries, metadata


def _strip_prefix(key: str) -> tuple[str, str]:
    """Strip one wrapper prefix (`model.diffusion_model.`, `module.`, ...) when an official name follows."""
    for prefix in ("",) + KNOWN_PREFIXES:
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            if rest.split(".", 1)[0] in OFFICIAL_TOP_LEVEL:
                return prefix, rest
    # Nested dict wrappers of a .pth (e.g. {"state_dict": {...}} or {"ema": {...}})
    for wrapper in ("state_dict.", "model.", "module.", "ema.", "model_ema.", "ema_model."):
        if key.startswith(wrapper):
            prefix, rest = _strip_prefix(key[len(wrapper) :])
            if rest.split(".", 1)[0] in OFFICIAL_TOP_LEVEL:
                return wrapper + prefix, rest
    return "", key


def _collect(path: Path) -> tuple[str, list[_Entry], list[str]]:
    """(layout, entries, metadata notes) for any accepted layout."""
    if path.is_dir():
        indexes = sorted(path.glob("*.safetensors.index.json"))
        preferred = path / "humo.safetensors.index.json"
        if preferred.exists():
            indexes = [preferred]
        if len(indexes) > 1:
            raise CheckpointError(f"{path} holds several index files ({[i.name for i in indexes]}); pass one file")
        if indexes:
            return "sharded-safetensors", *_sharded_entries(indexes[0])
        singles = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.pth"))
        if len(singles) != 1:
            raise CheckpointError(
                f"{path} has no humo.safetensors.index.json and {len(singles)} weight files; "
                "pass the .pth / .safetensors file itself or a folder with an index"
            )
        path = singles[0]
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    if path.name.endswith(".index.json"):
        return "sharded-safetensors", *_sharded_entries(path)
    if path.suffix == ".safetensors":
        entries, meta = _safetensors_entries(path)
        return "safetensors", entries, [f"__metadata__.{k}" for k in meta]
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        entries, meta = _torch_entries(path)
        return "pth", entries, meta
    raise CheckpointError(f"{path}: unknown checkpoint format (expected .pth, .safetensors or an index folder)")


def _sharded_entries(index_path: Path) -> tuple[list[_Entry], list[str]]:
    try:
        index = json.loads(index_path.read_text())
        weight_map: dict[str, str] = index["weight_map"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{index_path} is not a safetensors index with a weight_map ({exc})") from exc
    entries: list[_Entry] = []
    notes: list[str] = []
    for shard in dict.fromkeys(weight_map.values()):
        shard_path = index_path.parent / shard
        if not shard_path.exists():
            raise CheckpointError(f"shard {shard} listed in {index_path.name} is missing from {index_path.parent}")
        shard_entries, meta = _safetensors_entries(shard_path)
        entries += shard_entries
        notes += [f"{shard}:__metadata__.{k}" for k in meta]
    listed, stored = set(weight_map), {e.key for e in entries}
    if listed != stored:
        raise CheckpointError(
            f"{index_path.name} and its shards disagree: in index only {_preview(sorted(listed - stored))}; "
            f"in shards only {_preview(sorted(stored - listed))}"
        )
    return entries, notes


# -- config from shapes ------------------------------------------------------------------------------------------


def infer_config(shapes: dict[str, tuple[int, ...]], attention_head_dim: int = 128) -> dict[str, Any]:
    """Constructor kwargs of `HuMoTransformer3DModel` from official key shapes (reference §2.1, §2.8)."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise CheckpointError(f"cannot infer the model size: key {key} is missing")
        return shapes[key]

    dim, in_channels, *patch = shape("patch_embedding.weight")
    if dim % attention_head_dim:
        raise CheckpointError(f"width {dim} is not a multiple of head_dim {attention_head_dim}; pass config=...")
    block_ids = {int(k.split(".")[1]) for k in shapes if re.match(r"blocks\.\d+\.", k)}
    if block_ids != set(range(len(block_ids))) or not block_ids:
        raise CheckpointError(f"block indices are not 0..N-1: {sorted(block_ids)[:10]}...")
    audio_k = "blocks.0.audio_cross_attn_wrapper.audio_cross_attn.k.weight"
    audio_token_dim = shape(audio_k)[1]
    audio_hidden_dim, audio_in = shape("audio_proj.audio_proj_glob_1.layer.weight")
    window, bands = 8, 5  # official values; the flattened width cannot tell them apart
    if audio_in % (window * bands):
        raise CheckpointError(f"audio_proj input width {audio_in} is not 8 x 5 x channels; pass config=...")
    return {
        "patch_size": tuple(patch),
        "num_attention_heads": dim // attention_head_dim,
        "attention_head_dim": attention_head_dim,
        "in_channels": in_channels,
        "out_channels": shape("head.head.weight")[0] // math.prod(patch),
        "text_dim": shape("text_embedding.0.weight")[1],
        "freq_dim": shape("time_embedding.0.weight")[1],
        "ffn_dim": shape("blocks.0.ffn.0.weight")[0],
        "num_layers": len(block_ids),
        "cross_attn_norm": "blocks.0.norm3.weight" in shapes,
        "audio_window": window,
        "audio_bands": bands,
        "audio_dim": audio_in // (window * bands),
        "audio_tokens": shape("audio_proj.audio_proj_glob_3.layer.weight")[0] // audio_token_dim,
        "audio_token_dim": audio_token_dim,
        "audio_hidden_dim": audio_hidden_dim,
    }


# -- loading -----------------------------------------------------------------------------------------------------


def _target_dtype(name: str, torch_dtype: torch.dtype, keep_fp32: list[str]) -> torch.dtype:
    return torch.float32 if any(m in name.split(".") for m in keep_fp32) else torch_dtype


def _convert(tensor: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype, device) -> torch.Tensor:
    if not tensor.is_floating_point():  # int8 / packed fp4 layers need their own kernels: refused, not misread
        raise CheckpointError(f"a weight is stored as {tensor.dtype}; only float (fp32/fp16/bf16/fp8) files load")
    if scale is not None:
        scale = scale.to(torch.float32)
        if scale.numel() > 1 and scale.numel() == tensor.shape[0]:  # one scale per output row
            scale = scale.reshape(-1, *([1] * (tensor.ndim - 1)))
        tensor = tensor.to(torch.float32) * scale
    elif tensor.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        tensor = tensor.to(torch.float32)
    return tensor.to(device=device, dtype=dtype, copy=True).contiguous()


# Scale tensors of scaled-fp8 repacks: `.scale_weight` (kijai's and ComfyUI's older "scaled_fp8" files) and
# `.weight_scale` (ComfyUI's newer per-layer quantization format); per tensor or per output row.
_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
_FP8_MARKERS = (".scale_input", ".input_scale", ".comfy_quant")


def _split_entries(entries: list[_Entry]) -> tuple[dict[str, _Entry], dict[str, _Entry], list[str], str | None]:
    """-> (model-like entries by official key, fp8 scales by official weight key, ignored keys, prefix)."""
    model_like: dict[str, _Entry] = {}
    scales: dict[str, _Entry] = {}
    ignored: list[str] = []
    prefixes = set()
    for entry in entries:
        prefix, key = _strip_prefix(entry.key)
        if key.split(".", 1)[0] not in OFFICIAL_TOP_LEVEL:
            ignored.append(entry.key)
            continue
        prefixes.add(prefix)
        if key.endswith(_SCALE_SUFFIXES):  # scaled fp8: weight = fp8 * scale
            scales[key.rsplit(".", 1)[0] + ".weight"] = entry
            continue
        if key.endswith(_FP8_MARKERS):  # activation scales and per-layer format markers: not part of the weights
            ignored.append(entry.key)
            continue
        if key in model_like:
            raise CheckpointError(f"key {key} appears twice (as {model_like[key].key} and {entry.key})")
        model_like[key] = entry
    if len(prefixes) > 1:
        raise CheckpointError(f"mixed key prefixes in one checkpoint: {sorted(prefixes)}")
    return model_like, scales, ignored, (prefixes.pop() if prefixes else None)


def _check_strict(model_like: dict[str, _Entry], scales: dict[str, _Entry], expected: dict[str, tuple]) -> dict:
    """Map official keys to model keys; raise CheckpointError with every problem found at once."""
    mapping: dict[str, str] = {}
    unexpected, wrong_shape = [], []
    for key, entry in model_like.items():
        name = official_to_diffusers_key(key)
        if name is None or name not in expected:
            unexpected.append(key)
        elif tuple(entry.shape) != tuple(expected[name]):
            wrong_shape.append(f"{key} {tuple(entry.shape)} (model wants {tuple(expected[name])})")
        else:
            mapping[key] = name
    unexpected += [k[: -len("weight")] + "scale_weight" for k in scales if k not in model_like]
    loaded = {official_to_diffusers_key(k) for k in model_like}
    missing = [diffusers_to_official_key(n) or n for n in expected if n not in loaded]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_preview(unexpected)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} with wrong shape: {_preview(wrong_shape)}")
    if problems:
        raise CheckpointError("checkpoint does not match the HuMo model: " + "; ".join(problems))
    return mapping


def _assign(model: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, param_name = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    old = module._parameters[param_name]
    module._parameters[param_name] = torch.nn.Parameter(tensor, requires_grad=old.requires_grad)


def load_official(
    path: str | os.PathLike,
    model_cls: type,
    torch_dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    config: dict[str, Any] | None = None,
):
    """Build a `HuMoTransformer3DModel` from an official checkpoint, strictly and tensor by tensor.

    Args:
        path: `.pth`, `.safetensors`, an index json, or a folder (see the module docstring).
        torch_dtype: parameter dtype; `_keep_in_fp32_modules` stay float32.
        device: where the parameters end up.
        model_cls: the model class (`HuMoTransformer3DModel.from_official` passes itself: this module never imports
            the model, so the two do not import each other).
        config: constructor kwargs that replace the ones inferred from shapes (needed for non-official sizes,
            e.g. head_dim != 128 or an audio window other than 8 x 5).

    Returns the model in eval mode, with `model.load_report` describing what was read and what was ignored.
    """
    path = Path(path)
    layout, entries, metadata = _collect(path)
    model_like, scales, ignored, prefix = _split_entries(entries)
    if not model_like:
        raise CheckpointError(f"{path} holds no HuMo tensors (no keys under {', '.join(OFFICIAL_TOP_LEVEL[:-1])})")

    shapes = {k: e.shape for k, e in model_like.items()}
    kwargs = infer_config(shapes) if config is None else dict(config)
    with init_empty_weights(include_buffers=False):
        model = model_cls(**kwargs)
    expected = {n: tuple(p.shape) for n, p in model.named_parameters()}
    mapping = _check_strict(model_like, scales, expected)

    keep_fp32 = list(model_cls._keep_in_fp32_modules or [])
    upcast_fp8 = 0
    for key, name in mapping.items():
        entry = model_like[key]
        tensor = entry.read()
        scale_entry = scales.get(key)
        scale = scale_entry.read() if scale_entry is not None else None
        upcast_fp8 += tensor.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)
        _assign(model, name, _convert(tensor, scale, _target_dtype(name, torch_dtype, keep_fp32), device))
        entry.release(tensor)
        del tensor, scale

    model.to(device)  # the non-persistent RoPE tables were built on CPU
    model.eval()
    report = {
        "source": str(path),
        "layout": layout,
        "tensors_loaded": len(mapping),
        "key_prefix_stripped": prefix or None,
        "fp8_upcast": upcast_fp8,
        "ignored_tensors": sorted(ignored),
        "metadata": metadata,
        "dtype": str(torch_dtype).replace("torch.", ""),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()},
    }
    if ignored or metadata:
        logger.warning(
            "loaded %s: ignored %d tensors not part of HuMo (%s) and %d metadata entries (%s)",
            path,
            len(ignored),
            _preview(ignored, 5),
            len(metadata),
            _preview(metadata, 5),
        )
    model.load_report = report
    return model


def iter_official_keys(model: torch.nn.Module) -> Iterator[str]:
    """Official key names of a model's parameters (works on the meta device)."""
    for name, _ in model.named_parameters():
        official = diffusers_to_official_key(name)
        if official is None:
            raise CheckpointError(f"parameter {name} has no official name")
        yield official
