"""Single-file transformers as people download them: GGUF quantizations and safetensors / `.pth` repacks.

`inspect_file(path)` reads only a file's header (GGUF tensor table, safetensors JSON header, a `.pth`'s tensor
shapes through mmap) and says what it is: format, the architecture by its distinguishing keys, the HuMo config
inferred from shapes, the storage types, the key prefix. `load_transformer_file(path, torch_dtype, device)` loads a
HuMo file strictly and refuses anything else by name.

Architectures (official Wan key names, after a `model.diffusion_model.` / `diffusion_model.` / `model.` prefix is
stripped), checked in this order (ComfyUI's model detection uses the same keys):

| keys | what it is |
|---|---|
| `vace_patch_embedding`, `vace_blocks` | Wan VACE |
| `control_adapter` | Wan camera control |
| `casual_audio_encoder`, `audio_injector` | Wan2.2-S2V (speech to video) |
| `audio_proj.proj1`, `blocks.N.audio_cross_attn.q_linear` | MultiTalk / InfiniteTalk (Wan2.1 I2V + audio) |
| `face_adapter`, `pose_patch_embedding`, `motion_encoder` | Wan2.2-Animate |
| `audio_proj.audio_proj_glob_*`, `blocks.N.audio_cross_attn_wrapper` | HuMo (what this project runs) |
| `img_emb.emb_pos` | Wan2.1 FLF2V |
| `img_emb.proj`, `cross_attn.k_img` | Wan2.1 I2V (CLIP image cross-attention) |
| none of these | plain Wan: T2V (16 input channels), Wan2.2 I2V (36), Wan2.2 TI2V-5B (48) |

GGUF (diffusers' GGUF support + the `gguf` package): the layout of city96's ComfyUI-GGUF tools, which the HuMo GGUF
repositories are made with — official key names, `general.architecture` "wan" (calcuis' gguf-connector files say
"pig"/"cow", stable-diffusion.cpp writes none; all are recognised from their keys the same way), the 5-D
`patch_embedding` stored whole, `comfy.gguf.orig_shape.<name>` arrays where a tensor was stored reshaped. The
`nn.Linear` weights stay quantized in memory (diffusers' `GGUFParameter` in `GGUFLinear`, dequantized per layer at
each forward); every other quantized tensor (norms, modulation, convolutions) is dequantized once at load.

safetensors / `.pth` repacks (fp32, fp16, bf16, fp8 e4m3 / e5m2 with or without scales): `engine.models.official`
(strict, streamed; fp8 upcast with its scale tensors applied).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.errors import CheckpointError
from engine.models.official import (
    KNOWN_PREFIXES,
    _collect,
    _preview,
    infer_config,
    official_to_diffusers_key,
)

__all__ = ["FORMATS", "FileReport", "find_weight_files", "inspect_file", "is_weights_file", "load_transformer_file"]

FORMATS = {".gguf": "gguf", ".safetensors": "safetensors", ".sft": "safetensors", ".pth": "pth", ".pt": "pth",
           ".bin": "pth", ".ckpt": "pth"}  # fmt: skip
HUMO_KEYS = ("audio_proj.audio_proj_glob_1.layer.weight", "blocks.0.audio_cross_attn_wrapper.audio_cross_attn.q.weight")
# (root names or key fragments that identify it, what it is); first match wins (see the module docstring)
_OTHERS: list[tuple[tuple[str, ...], str]] = [
    (("vace_patch_embedding.", "vace_blocks."), "Wan VACE"),
    (("control_adapter.",), "Wan camera control"),
    (("casual_audio_encoder.", "audio_injector."), "Wan2.2-S2V (speech to video)"),
    (("audio_proj.proj1.", ".audio_cross_attn.q_linear."), "MultiTalk / InfiniteTalk (Wan2.1 I2V + audio)"),
    (("face_adapter.", "pose_patch_embedding.", "motion_encoder."), "Wan2.2-Animate"),
]
_WAN_SIZES = {1536: "1.3B", 2048: "5B", 3072: "5B", 5120: "14B"}
_DIFFUSERS_MARKERS = ("condition_embedder.", "blocks.0.attn1.to_q.weight", "scale_shift_table")
_FP8_EXTRAS = (".scale_input", ".input_scale", ".comfy_quant")  # activation scales / layer markers: not weights


@dataclass(frozen=True)
class FileReport:
    """What a weights file holds, from its header. `architecture` is "humo" or a name of what else it is."""

    path: str
    format: str  # gguf | safetensors | pth
    architecture: str
    description: str  # "HuMo-17B", "Wan2.1 I2V 14B (CLIP image cross-attention)", ...
    size_bytes: int
    tensor_types: dict[str, int] = field(default_factory=dict)  # {"Q4_K": 360, "F32": 700} / {"F8_E4M3": ...}
    key_prefix: str | None = None
    config: dict[str, Any] | None = None  # HuMo constructor kwargs (humo only)
    gguf_architecture: str | None = None  # GGUF `general.architecture` as written
    fp8_scales: int = 0  # scale tensors of a scaled fp8 file
    values_by_type: dict[str, int] = field(default_factory=dict)  # how many weight values each type holds

    @property
    def is_humo(self) -> bool:
        return self.architecture == "humo"

    @property
    def variant(self) -> str | None:
        if self.config is None:
            return None
        return "17b" if self.config["in_channels"] == 36 else "1.7b"

    @property
    def storage(self) -> str:
        """The type that holds most of the weights ("Q4_K", "F8_E4M3", "BF16", ...)."""
        counts = self.values_by_type or self.tensor_types
        return max(counts, key=counts.get) if counts else "?"

    def summary(self) -> str:
        types = ", ".join(f"{k} x{v}" for k, v in sorted(self.tensor_types.items(), key=lambda kv: -kv[1]))
        return f"{self.description}, {self.format} {self.storage} ({types}), {self.size_bytes / 1e9:.2f} GB"


def is_weights_file(path: str | os.PathLike) -> bool:
    """A single weights file this module reads (by its suffix); folders and index files are not."""
    path = Path(path)
    return path.suffix.lower() in FORMATS and not path.name.endswith(".index.json")


# -- headers -----------------------------------------------------------------------------------------------------


@dataclass
class _Tensor:
    key: str  # as stored
    shape: tuple[int, ...]  # logical shape (GGUF: the dequantized one)
    kind: str  # "Q4_K", "F16", "F8_E4M3", ...


def _gguf_reader(path: Path):
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError / struct errors / IndexError on a bad file
        raise CheckpointError(f"{path} is not a readable GGUF file ({exc})") from exc


def _gguf_field(reader, name: str):
    field_ = reader.get_field(name)
    if field_ is None:
        return None
    value = field_.parts[field_.data[-1]] if len(field_.data) == 1 else [field_.parts[i] for i in field_.data]
    if len(field_.types) == 1 and field_.types[0].name == "STRING":
        return bytes(value).decode("utf-8")
    return value


def _gguf_shape(reader, tensor) -> tuple[int, ...]:
    original = reader.get_field(f"comfy.gguf.orig_shape.{tensor.name}")
    if original is not None:
        return tuple(int(original.parts[i][0]) for i in original.data)
    return tuple(int(n) for n in reversed(tensor.shape))


def _gguf_tensors(path: Path) -> tuple[list[_Tensor], str | None]:
    reader = _gguf_reader(path)
    tensors = [_Tensor(t.name, _gguf_shape(reader, t), t.tensor_type.name) for t in reader.tensors]
    return tensors, _gguf_field(reader, "general.architecture")


def _header_tensors(path: Path) -> tuple[list[_Tensor], str | None]:
    if FORMATS.get(path.suffix.lower()) == "gguf":
        return _gguf_tensors(path)
    _, entries, _ = _collect(path)
    names = {v: k for k, v in _ST_NAMES.items()}
    return [_Tensor(e.key, tuple(e.shape), names.get(e.dtype, str(e.dtype))) for e in entries], None


_ST_NAMES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
             "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "U8": torch.uint8, "I8": torch.int8,
             "I32": torch.int32, "I64": torch.int64, "BOOL": torch.bool}  # fmt: skip


def _key_prefix(keys: list[str]) -> str | None:
    """The wrapper prefix most keys carry (`model.diffusion_model.` ...), or None."""
    for prefix in KNOWN_PREFIXES + ("net.",):
        if sum(k.startswith(prefix) for k in keys) * 2 > len(keys):
            return prefix
    return None


def _strip(key: str, prefix: str | None) -> str:
    return key[len(prefix) :] if prefix and key.startswith(prefix) else key


# -- what a file is ----------------------------------------------------------------------------------------------


def _describe_wan(shapes: dict[str, tuple[int, ...]]) -> str:
    """Name a Wan-family file that is not HuMo."""
    keys = list(shapes)
    for markers, name in _OTHERS:
        if any(k.startswith(m) or m in k for k in keys for m in markers):
            return name
    dim, in_channels = shapes["patch_embedding.weight"][:2]
    size = _WAN_SIZES.get(dim, f"{dim}-wide")
    if "img_emb.emb_pos" in shapes:
        return f"Wan2.1 FLF2V {size} (first-last-frame)"
    if any(k.startswith("img_emb.") or ".cross_attn.k_img." in k for k in keys):
        return f"Wan2.1 I2V {size} (CLIP image cross-attention)"
    kind = {16: "T2V", 36: "Wan2.2 I2V", 48: "Wan2.2 TI2V"}.get(in_channels, f"{in_channels}-channel")
    return f"Wan {kind} {size}" if kind == "T2V" else f"{kind} {size}"


def _humo_description(config: dict[str, Any]) -> str:
    from engine.models import PRESETS

    for name, label in (("humo-17b", "HuMo-17B"), ("humo-1.7b", "HuMo-1.7B")):
        if all(config.get(k) == v for k, v in PRESETS[name].items() if k != "patch_size"):
            return label
    width = config["num_attention_heads"] * config["attention_head_dim"]
    return f"HuMo ({width} wide, {config['num_layers']} blocks, {config['in_channels']} input channels)"


def _classify(shapes: dict[str, tuple[int, ...]]) -> tuple[str, str, dict[str, Any] | None]:
    """(architecture, description, HuMo config or None) from prefix-stripped keys and shapes."""
    keys = list(shapes)
    if any(".lora_" in k or k.endswith((".lora_down.weight", ".alpha")) for k in keys):
        return "lora", "a LoRA (pass it with --lora, not as the model)", None
    if "patch_embedding.weight" not in shapes or "blocks.0.self_attn.q.weight" not in shapes:
        if any(k.startswith(_DIFFUSERS_MARKERS) or k in _DIFFUSERS_MARKERS for k in keys):
            return ("diffusers-layout", "a transformer in the diffusers layout (pass its folder, with config.json, "
                    "instead of the file)", None)  # fmt: skip
        return "unknown", f"not a Wan / HuMo video transformer (keys such as {_preview(keys, 3)})", None
    if all(k in shapes for k in HUMO_KEYS) and not any(m in k for k in keys for m in ("q_linear", "casual_audio")):
        config = infer_config(shapes)
        return "humo", _humo_description(config), config
    name = _describe_wan(shapes)
    return name.split(" (")[0].lower().replace(" ", "-").replace("/", "-"), name, None


def inspect_file(path: str | os.PathLike) -> FileReport:
    """What a weights file holds, from its header only (see the module docstring). Raises `CheckpointError` on a file
    that cannot be read at all."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CheckpointError(f"{path}: unknown weights format (expected {', '.join(sorted(set(FORMATS)))})")
    tensors, gguf_arch = _header_tensors(path)
    prefix = _key_prefix([t.key for t in tensors])
    shapes = {_strip(t.key, prefix): t.shape for t in tensors}
    architecture, description, config = _classify(shapes)
    scales = sum(t.key.endswith((".scale_weight", ".weight_scale")) for t in tensors)
    weights = [t for t in tensors if not t.key.endswith((".scale_weight", ".weight_scale") + _FP8_EXTRAS)]
    return FileReport(
        path=str(path),
        format=fmt,
        architecture=architecture,
        description=description,
        size_bytes=path.stat().st_size,
        tensor_types=dict(Counter(t.kind for t in weights)),
        key_prefix=prefix,
        config=config,
        gguf_architecture=gguf_arch,
        fp8_scales=scales,
        values_by_type=dict(sum((Counter({t.kind: math.prod(t.shape)}) for t in weights), Counter())),
    )


def require_humo(report: FileReport) -> FileReport:
    """The report of a HuMo file; anything else is refused naming what it is."""
    if not report.is_humo:
        raise CheckpointError(
            f"{Path(report.path).name} is {report.description}, not HuMo. HuMo Studio runs HuMo-1.7B / HuMo-17B "
            "transformers (files with audio_proj.audio_proj_glob_* and blocks.N.audio_cross_attn_wrapper keys)."
        )
    return report


def find_weight_files(folder: str | os.PathLike, depth: int = 2) -> list[FileReport]:
    """Single-file video transformers (HuMo or other Wan-family files) under `folder`, `depth` levels deep; shards of
    a sharded checkpoint (a folder with an index) and non-transformer files (VAEs, encoders) are left out."""
    folder = Path(folder)
    found = []
    for level in range(depth + 1):
        for path in sorted(folder.glob("/".join(["*"] * (level + 1)))):
            if not path.is_file() or not is_weights_file(path) or any(path.parent.glob("*.index.json")):
                continue
            try:
                report = inspect_file(path)
            except CheckpointError:
                continue
            if report.architecture not in ("unknown", "lora", "diffusers-layout"):
                found.append(report)
    return found


# -- loading -----------------------------------------------------------------------------------------------------


def load_transformer_file(
    path: str | os.PathLike, torch_dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
):
    """A `HuMoTransformer3DModel` from one HuMo file (GGUF or a safetensors / `.pth` repack), strictly.

    `torch_dtype` is the compute dtype (default: bf16 on CUDA, fp32 elsewhere); a GGUF's quantized linear weights
    stay quantized and `model.quantized_storage` names their types. Another architecture is refused by name
    (`CheckpointError`). `model.load_report` tells what was read (format, storage types, prefix, config).
    """
    from engine.models import HuMoTransformer3DModel

    path = Path(path)
    report = require_humo(inspect_file(path))
    device = torch.device(device)
    dtype = torch_dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    if report.format == "gguf":
        model = _load_gguf(path, report, HuMoTransformer3DModel, dtype, device)
    else:
        model = HuMoTransformer3DModel.from_official(path, torch_dtype=dtype, device=device, config=report.config)
    model.load_report = {**(model.load_report or {}), "file": _report_dict(report)}
    return model


def _report_dict(report: FileReport) -> dict[str, Any]:
    return {"format": report.format, "description": report.description, "storage": report.storage,
            "tensor_types": report.tensor_types, "size_bytes": report.size_bytes, "key_prefix": report.key_prefix,
            "gguf_architecture": report.gguf_architecture, "fp8_scales": report.fp8_scales}  # fmt: skip


def _gguf_state(path: Path, report: FileReport, model) -> dict[str, torch.Tensor]:
    """Diffusers-named tensors of a GGUF: `GGUFParameter` for quantized `nn.Linear` weights, plain tensors otherwise.

    Everything is read (copied out of the memory map) one tensor at a time; the state holds the file's size."""
    import gguf
    import numpy as np
    from diffusers.quantizers.gguf.utils import SUPPORTED_GGUF_QUANT_TYPES, GGUFParameter, dequantize_gguf_tensor

    reader = _gguf_reader(path)
    modules = dict(model.named_modules())
    plain = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16}
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        key = _strip(tensor.name, report.key_prefix)
        name = official_to_diffusers_key(key)
        if name is None:
            continue  # listed as unexpected by the strict check
        shape = _gguf_shape(reader, tensor)
        data = torch.from_numpy(np.array(tensor.data))
        if tensor.tensor_type in plain:
            state[name] = data.reshape(shape)
            continue
        if tensor.tensor_type not in SUPPORTED_GGUF_QUANT_TYPES:
            raise CheckpointError(f"{path.name}: tensor {tensor.name} is {tensor.tensor_type.name}, a GGUF type "
                                  "diffusers cannot dequantize")  # fmt: skip
        param = GGUFParameter(data, quant_type=tensor.tensor_type)
        owner = modules.get(name.rpartition(".")[0])
        if isinstance(owner, torch.nn.Linear) and name.endswith(".weight") and tuple(param.quant_shape) == shape:
            state[name] = param
        else:  # norms, modulation, biases, reshaped tensors: dequantized once here
            state[name] = dequantize_gguf_tensor(param).float().reshape(shape)
    return state


def _check_gguf(state: dict[str, torch.Tensor], model, report: FileReport) -> None:
    """Every parameter present with its shape (quantized ones by their dequantized shape); nothing left over."""
    expected = {n: tuple(p.shape) for n, p in model.named_parameters()}
    missing = sorted(set(expected) - set(state))
    wrong = [f"{n} {tuple(getattr(t, 'quant_shape', t.shape))} (model wants {expected[n]})"
             for n, t in state.items() if n in expected and tuple(getattr(t, "quant_shape", t.shape)) != expected[n]]  # fmt: skip
    if missing or wrong or len(state) != len(expected):
        problems = [f"{len(missing)} missing: {_preview(missing)}"] if missing else []
        problems += [f"{len(wrong)} with wrong shape: {_preview(wrong)}"] if wrong else []
        raise CheckpointError(f"{Path(report.path).name} does not match the HuMo model: " + "; ".join(problems))


def _load_gguf(path: Path, report: FileReport, model_cls, dtype: torch.dtype, device: torch.device):
    """diffusers' GGUF quantizer on a model built on the meta device (what `from_single_file` does for the model
    classes diffusers knows): `nn.Linear` layers with a quantized weight become `GGUFLinear`."""
    from accelerate import init_empty_weights
    from diffusers import GGUFQuantizationConfig
    from diffusers.models.model_loading_utils import load_model_dict_into_meta
    from diffusers.quantizers import DiffusersAutoQuantizer

    with init_empty_weights(include_buffers=False):
        model = model_cls(**report.config)
    keys = [_strip(t.name, report.key_prefix) for t in _gguf_reader(path).tensors]
    unknown = [k for k in keys if official_to_diffusers_key(k) is None]
    if unknown:
        raise CheckpointError(
            f"{path.name} does not match the HuMo model: {len(unknown)} unexpected: {_preview(unknown)}"
        )
    state = _gguf_state(path, report, model)
    _check_gguf(state, model, report)
    quantizer = DiffusersAutoQuantizer.from_config(GGUFQuantizationConfig(compute_dtype=dtype))
    quantizer.validate_environment()
    keep = list(model_cls._keep_in_fp32_modules or [])
    quantizer.preprocess_model(model=model, device_map=None, state_dict=state, keep_in_fp32_modules=keep)
    load_model_dict_into_meta(model, state, dtype=dtype, device_map={"": device}, hf_quantizer=quantizer,
                              keep_in_fp32_modules=keep)  # fmt: skip
    quantizer.postprocess_model(model)
    model.hf_quantizer = quantizer
    model.to(device)  # the non-persistent RoPE tables were built on the CPU
    model.eval()
    model.load_report = {"source": str(path), "layout": "gguf", "tensors_loaded": len(state),
                         "dtype": str(dtype).replace("torch.", ""), "config": report.config}  # fmt: skip
    return model
