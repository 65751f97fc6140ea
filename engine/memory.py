"""Memory modes: where the weights live during a generation, chosen from free memory and overridable.

A mode is a base plus optional modifiers joined by "+", e.g. "fp8+text_encoder_cpu+vae_tiling":

| base | what it does |
|---|---|
| gpu | every component on the GPU |
| cpu | every component on the CPU (no CUDA) |
| model_offload | diffusers model CPU offload: each component moves to the GPU only while it runs |
| group_offload | the transformer streams its blocks to the GPU one at a time (diffusers group offload, block level, CUDA streams) |
| fp8 | transformer weights stored in float8_e4m3fn, computed in bf16 (diffusers layerwise casting); rest on the GPU |

| modifier | what it does |
|---|---|
| text_encoder_cpu | umT5 (11.4 GB in bf16) stays on the CPU; only its 512×4096 output moves |
| vae_tiling | the VAE decodes in spatial tiles |

Targets: HuMo-17B at 480p on one 24 GB GPU ("fp8+text_encoder_cpu+vae_tiling": 17 GB of fp8 weights + ~2 GB of
activations), HuMo-1.7B on 12 GB ("gpu+text_encoder_cpu+vae_tiling": 3.5 GB of weights + ~1.7 GB). The
activation figures come from bench/RESULTS.md (H100, one forward at 480×832×97); the rule is an estimate, so
`apply_memory_mode` always accepts an explicit mode.
"""

from __future__ import annotations

import torch

from engine.errors import InputError

BASES = ("gpu", "cpu", "model_offload", "group_offload", "fp8")
MODIFIERS = ("text_encoder_cpu", "vae_tiling")
GB = 1e9

# bf16 transformer weights and measured activation peaks of one forward (bench/RESULTS.md), per model.
WEIGHTS_GB = {"humo-17b": 34.1, "humo-1.7b": 3.5}
ACTIVATIONS_GB = {("humo-17b", 480): 2.2, ("humo-17b", 720): 7.8, ("humo-1.7b", 480): 1.7, ("humo-1.7b", 720): 4.1}
TEXT_ENCODER_GB = 11.4
MARGIN_GB = 2.5  # VAE decode (tiled), Whisper, allocator slack


def parse_mode(mode: str) -> tuple[str, set[str]]:
    parts = [p.strip() for p in (mode or "").split("+") if p.strip()]
    if not parts or parts[0] not in BASES or any(p not in MODIFIERS for p in parts[1:]):
        raise InputError(
            f"Unknown memory mode {mode!r}: use one of {', '.join(BASES)}, optionally followed by "
            f"+{' +'.join(MODIFIERS)} (e.g. fp8+text_encoder_cpu+vae_tiling).",
            field="memory_mode",
        )
    return parts[0], set(parts[1:])


def choose_memory_mode(model_id: str, free_vram_bytes: int, free_ram_bytes: int = 0, height: int = 480, width: int = 832,
                       frames: int = 97, weights_gb: float | None = None, prequantized: bool = False) -> str:  # fmt: skip
    """The lightest mode that fits the free VRAM (see the module docstring for the estimates).

    `weights_gb`: the transformer's loaded size where it is not the model's bf16 size (a GGUF or fp8 file: what it
    takes in memory, engine/models/single_file.py); `prequantized`: its weights are already quantized (GGUF), so the
    fp8 mode, which re-stores bf16 weights in fp8, does not apply."""
    if not free_vram_bytes:
        return "cpu"
    if model_id not in WEIGHTS_GB:  # tiny / nano / unknown small models
        return "gpu"
    free = free_vram_bytes / GB
    tier = 720 if height * width > 480 * 832 else 480
    act = ACTIVATIONS_GB[(model_id, tier)] * max(1.0, frames / 97)
    weights = WEIGHTS_GB[model_id] if weights_gb is None else weights_gb
    if free >= weights + act + TEXT_ENCODER_GB + MARGIN_GB:
        return "gpu"
    if free >= weights + act + MARGIN_GB:
        return "gpu+text_encoder_cpu+vae_tiling"
    if not prequantized and free >= weights / 2 + act + MARGIN_GB:
        return "fp8+text_encoder_cpu+vae_tiling"
    per_block = weights / (40 if model_id == "humo-17b" else 30)
    if free >= act + MARGIN_GB + 2 * per_block:  # two blocks resident while streaming
        return "group_offload+text_encoder_cpu+vae_tiling"
    return "model_offload+vae_tiling"


def transformer_bytes(transformer: torch.nn.Module) -> int:
    """What a loaded transformer's parameters take (quantized GGUF weights at their stored size)."""
    return sum(p.numel() * p.element_size() for p in transformer.parameters())


def is_prequantized(transformer: torch.nn.Module) -> bool:
    """Weights loaded already quantized (a GGUF file through diffusers' GGUF quantizer)."""
    return getattr(transformer, "hf_quantizer", None) is not None


def apply_memory_mode(pipe, mode: str, device: str | torch.device | None = None):
    """Place `pipe`'s components for a mode (see the module docstring). Returns the pipeline."""
    base, modifiers = parse_mode(mode)
    if base == "fp8" and is_prequantized(pipe.transformer):
        raise InputError(
            "This transformer is already quantized (a GGUF file): the fp8 mode does not apply. Use gpu or "
            "group_offload (+text_encoder_cpu+vae_tiling).",
            field="memory_mode",
        )
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # umT5 kept on the CPU never visits the GPU (moving 11 GB there and back could not fit where the mode is needed)
    keep_on_cpu = {"text_encoder"} if "text_encoder_cpu" in modifiers and base != "model_offload" else set()
    if base == "cpu":
        pipe.to("cpu")
    elif base == "gpu":
        _move(pipe, device, keep_on_cpu)
    elif base == "model_offload":
        if device.type == "cpu":
            raise InputError("model_offload moves components to an accelerator; there is none here.", "memory_mode")
        pipe.enable_model_cpu_offload(device=device)
    elif base == "group_offload":
        for name in {"vae", "text_encoder", "audio_encoder"} - keep_on_cpu:
            getattr(pipe, name).to(device)
        pipe.transformer.enable_group_offload(
            onload_device=device,
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=1,
            use_stream=device.type == "cuda",
        )
    elif base == "fp8":
        compute = torch.bfloat16 if device.type == "cuda" else torch.float32
        pipe.transformer.to(compute)
        pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
        _move(pipe, device, keep_on_cpu)
    if keep_on_cpu:
        pipe.text_encoder.to("cpu")
    if "vae_tiling" in modifiers:
        pipe.vae.enable_tiling()
    pipe.memory_mode = mode
    return pipe


def _move(pipe, device: torch.device, keep_on_cpu: set[str]) -> None:
    """`pipe.to(device)` for every module component but those kept on the CPU."""
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module) and name not in keep_on_cpu:
            component.to(device)


def describe_memory_mode(mode: str) -> str:
    base, modifiers = parse_mode(mode)
    text = {
        "gpu": "everything on the GPU",
        "cpu": "everything on the CPU",
        "model_offload": "each component on the GPU only while it runs",
        "group_offload": "transformer blocks streamed to the GPU one at a time",
        "fp8": "transformer weights in fp8, computed in bf16",
    }[base]
    extras = {"text_encoder_cpu": "umT5 on the CPU", "vae_tiling": "tiled VAE decode"}
    return ", ".join([text] + [extras[m] for m in sorted(modifiers)])
