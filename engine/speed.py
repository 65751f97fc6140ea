"""Speed-ups: attention backend, regional torch.compile, step caches, faster CPU kernels for the VAE, and LoRA loading.

LoRA files load in two layouts: diffusers/PEFT (`transformer.blocks.0.attn1.to_q.lora_A.weight`, prefix optional)
and the official Wan layout most Wan LoRAs ship in (`diffusion_model.blocks.0.self_attn.q.lora_down.weight`,
`lora_up`, optional `.alpha`), converted with the checkpoint key map of engine/models/official.py. HuMo-17B's
backbone is Wan2.1-14B and HuMo-1.7B's is Wan2.1-1.3B, so Wan LoRAs of the matching size apply to them.
"""

from __future__ import annotations

import argparse
import types
from pathlib import Path

import torch

from engine.errors import InputError

# Third-party recommendations for step-distillation LoRAs (their model cards), not checked on HuMo here.
DISTILL_LORA_RECOMMENDATIONS = {
    "lightx2v Wan2.1-T2V-14B StepDistill-CfgDistill (for HuMo-17B)": {
        "steps": 4,
        "scale": 1.0,
        "guidance": "faster preset with text scale 1 (the LoRA distils CFG away)",
        "shift": 5.0,
    },
    "lightx2v Wan2.1-T2V-1.3B StepDistill (for HuMo-1.7B)": {
        "steps": 4,
        "scale": 1.0,
        "guidance": "faster, scale 1",
        "shift": 5.0,
    },
}


def set_attention_backend(pipe, name: str) -> None:
    """ "native" (PyTorch SDPA), "flash", "_flash_3", "sage", ... where the package is installed."""
    try:
        pipe.transformer.set_attention_backend(name)
        pipe.attention_backend = name
    except Exception as exc:  # diffusers raises ValueError / ImportError / RuntimeError depending on the backend
        raise InputError(
            f"Attention backend {name!r} is not available here ({exc}). Use 'native'.", field="attention"
        ) from exc


def compile_transformer(pipe, **kwargs) -> None:
    """Regional compilation: torch.compile of the repeated transformer block (fast to compile, same speed-up)."""
    pipe.transformer.compile_repeated_blocks(**kwargs)


def enable_step_cache(
    pipe, threshold: float = 0.05, kind: str = "first_block", mag_ratios=None, num_inference_steps: int = 50
) -> None:
    """diffusers step caches; each guidance branch runs in its own cache context, so a branch never reuses another
    branch's residual (see HuMoPipeline._predict).

    - "first_block": when the first block's output barely changes between steps, reuse the remaining blocks'
      residual from the previous call (`threshold` on the relative change).
    - "mag": MagCache, skipping steps while the accumulated magnitude-ratio error stays under `threshold`. It needs
      the model's per-step magnitude ratios (`mag_ratios`, e.g. from a calibration run); without them it runs in
      calibration mode, which computes every step and logs the ratios to use next time.
    """
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig

    if kind == "first_block":
        config = FirstBlockCacheConfig(threshold=threshold)
    elif kind == "mag":
        ratios = None if mag_ratios is None else torch.as_tensor(mag_ratios, dtype=torch.float32)
        config = MagCacheConfig(
            threshold=threshold, num_inference_steps=num_inference_steps, mag_ratios=ratios, calibrate=ratios is None
        )
    else:
        raise InputError(f"Unknown step cache {kind!r}: use first_block or mag.", field="step_cache")
    pipe.transformer.enable_cache(config)
    pipe.step_cache = kind


# ---------------------------------------------------------------------------------------------- CPU kernels
def use_cpu_vae_kernels(vae: torch.nn.Module) -> int:
    """Faster float32 CPU inference for the Wan VAE's two hot spots; returns how many modules were switched.

    - Conv3d -> oneDNN. PyTorch picks its convolution kernel with a heuristic made for 2-D images: a batch-1 input
      with 3x3 kernels and under 20480 values in its first four dimensions goes to the unvectorised `slow_conv3d`,
      and the VAE's causal convolutions (batch 1, a 3-frame cache, 3x3x3 kernels) always land there. oneDNN gives
      the same sums 3-7x faster on those shapes.
    - WanRMS_norm: F.normalize over the channel dimension of a [B, C, T, H, W] tensor runs a strided vector-norm
      reduction about 10x slower than summing the squares; same formula (x / max(||x||, 1e-12)).
    Together they cut HuMo-nano's decode on two cores 2.5-3.5x (bench/RESULTS.md), most of a few-step render there. On
    GPU, with grad enabled (training) and for other dtypes the modules' own code runs unchanged."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    switched = 0
    for module in vae.modules():
        # Bound methods on the instance: deepcopy rebinds them to the copy. What a module can take is fixed when
        # it is built, so it is checked here; per call only the input decides.
        if isinstance(module, torch.nn.Conv3d) and _onednn_can_run(module):
            module._conv_forward = types.MethodType(_onednn_conv_forward, module)
        elif isinstance(module, WanRMS_norm):
            module.forward = types.MethodType(_rms_norm_forward, module)
        else:
            continue
        switched += 1
    return switched


def _onednn_can_run(conv: torch.nn.Conv3d) -> bool:
    return torch.backends.mkldnn.is_available() and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def _cpu_float32_inference(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()


def _onednn_conv_forward(self: torch.nn.Conv3d, input: torch.Tensor, weight: torch.Tensor, bias):
    if _cpu_float32_inference(input) and weight.dtype == torch.float32:
        return torch.mkldnn_convolution(input, weight, bias, self.padding, self.stride, self.dilation, self.groups)
    return type(self)._conv_forward(self, input, weight, bias)


def _rms_norm_forward(self, x: torch.Tensor) -> torch.Tensor:
    if not _cpu_float32_inference(x):
        return type(self).forward(self, x)
    dim = 1 if self.channel_first else -1
    norm = x.square().sum(dim, keepdim=True).sqrt().clamp_min(1e-12)
    return x / norm * self.scale * self.gamma + self.bias


# ---------------------------------------------------------------------------------------------- LoRA
def _convert_official_lora(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan-layout LoRA (lora_down / lora_up / alpha on official module names) -> PEFT keys on our names."""
    from engine.models.official import official_to_diffusers_key

    out, unmatched = {}, []
    alphas = {k[: -len(".alpha")]: v for k, v in state.items() if k.endswith(".alpha")}
    for key, value in state.items():
        if key.endswith(".alpha"):
            continue
        bare = key.split("diffusion_model.", 1)[-1]
        for down, up in ((".lora_down.weight", ".lora_up.weight"), (".lora_A.weight", ".lora_B.weight")):
            if bare.endswith(down) or bare.endswith(up):
                suffix = down if bare.endswith(down) else up
                module = bare[: -len(suffix)]
                target = official_to_diffusers_key(module + ".weight")
                if target is None:
                    unmatched.append(key)
                    break
                name = target[: -len(".weight")]
                if suffix == up:
                    # fold alpha/rank into B so PEFT's default scale (alpha = rank) reproduces the file's scaling
                    alpha = alphas.get(key[: -len(suffix)])
                    rank = value.shape[1]
                    value = value * (float(alpha) / rank) if alpha is not None else value
                    out[f"{name}.lora_B.weight"] = value
                else:
                    out[f"{name}.lora_A.weight"] = value
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise InputError(
            f"LoRA keys that match no HuMo module: {unmatched[:8]}{' …' if len(unmatched) > 8 else ''}", field="lora"
        )
    return out


def lora_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A LoRA file's tensors with PEFT key names on this project's transformer (either layout)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise InputError(f"LoRA file {path} not found.", field="lora")
    state = (
        load_file(str(path))
        if path.suffix == ".safetensors"
        else torch.load(path, map_location="cpu", weights_only=True)
    )
    if any(".lora_down." in k or k.startswith("diffusion_model.") or ".self_attn." in k for k in state):
        return _convert_official_lora(state)
    return {k.removeprefix("transformer."): v for k, v in state.items()}


def load_lora(pipe, path: str | Path, scale: float = 1.0, adapter_name: str | None = None) -> str:
    """Load a LoRA into the transformer (both layouts) and activate it at `scale`. Returns the adapter name."""
    state = lora_state_dict(path)
    adapter_name = adapter_name or Path(path).stem.replace(".", "_")
    model_keys = {n for n, _ in pipe.transformer.named_modules()}
    missing = sorted({k.rsplit(".lora_", 1)[0] for k in state} - model_keys)
    if missing:
        raise InputError(f"LoRA modules not in this model: {missing[:8]} (is it for another model size?)", field="lora")
    pipe.transformer.load_lora_adapter(state, prefix=None, adapter_name=adapter_name)
    set_lora_scale(pipe, adapter_name, scale)
    return adapter_name


def set_lora_scale(pipe, adapter_name: str, scale: float) -> None:
    pipe.transformer.set_adapters([adapter_name], weights=[scale])


def unload_lora(pipe) -> None:
    pipe.transformer.unload_lora()


# ---------------------------------------------------------------------------------------------- CLI
def add_scale_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--memory-mode",
        default=None,
        help="gpu | cpu | model_offload | group_offload | fp8 [+text_encoder_cpu][+vae_tiling]; default: chosen from free memory",
    )
    parser.add_argument("--attention-backend", default=None, help="native | flash | _flash_3 | sage (where installed)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the repeated transformer blocks")
    parser.add_argument(
        "--step-cache", type=float, default=None, metavar="THRESHOLD", help="first-block cache (e.g. 0.05)"
    )
    parser.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]", help="LoRA file (repeatable)")


def options_record(loras=(), step_cache=0.0, compile=False, attention_backend="native", memory_mode="auto") -> dict:
    """A run's speed and LoRA options as the gallery row and the mp4 keep them (`advanced` in its settings, so a
    dropped mp4 fills them in again): LoRA file names (never a server path) with scales, and the rest."""
    return {"loras": [{"file": Path(str(name)).name, "scale": float(scale)} for name, scale in loras],
            "step_cache": float(step_cache or 0.0), "compile": bool(compile),
            "attention_backend": attention_backend or "native", "memory_mode": memory_mode or "auto"}  # fmt: skip


def lora_specs(specs) -> list[tuple[str, float]]:
    """--lora PATH[:SCALE] values as (path, scale)."""
    result = []
    for spec in specs:
        path, _, scale = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
        result.append((path, float(scale) if scale else 1.0))
    return result


def cli_options_record(args: argparse.Namespace) -> dict | None:
    """`options_record` of the CLI's flags; None when every option is the default (nothing to keep)."""
    record = options_record(lora_specs(args.lora), args.step_cache, args.compile, args.attention_backend,
                            args.memory_mode)  # fmt: skip
    return None if record == options_record() else record


def apply_scale_options(pipe, args: argparse.Namespace, device=None) -> None:
    from engine.memory import apply_memory_mode

    if args.memory_mode and args.memory_mode != pipe.memory_mode:
        apply_memory_mode(pipe, args.memory_mode, device)
    if args.attention_backend:
        set_attention_backend(pipe, args.attention_backend)
    for path, scale in lora_specs(args.lora):
        load_lora(pipe, path, scale)
    if args.step_cache is not None:
        enable_step_cache(pipe, args.step_cache)
    if args.compile:
        compile_transformer(pipe)
