"""Speed-ups: attention backend, regional torch.compile, step caches, faster CPU kernels for the VAE, and LoRA loading.

LoRA files load in two layouts: diffusers/PEFT (`transformer.blocks.0.attn1.to_q.lora_A.weight`, prefix optional)
and the official Wan layout most Wan LoRAs ship in (`diffusion_model.blocks.0.self_attn.q.lora_down.weight`,
`lora_up`, optional `.alpha` and `.diff_b`), converted with the checkpoint key map of engine/models/official.py.
HuMo-17B's backbone is Wan2.1-14B and HuMo-1.7B's is Wan2.1-1.3B, so Wan LoRAs of the matching size apply to them;
each load reports how much of the file applied (`LoraReport`), and refuses under `LORA_MATCH_THRESHOLD` unless asked
to load the part that does (an I2V LoRA's image cross-attention, a 1.3B LoRA on 17B: see docs/weights.md).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.errors import InputError

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- fast recipes
# A recipe's expected time is priced with the engine's one H100 cost table (engine.plan.h100_pass_seconds, from
# bench/RESULTS.md): denoising only, at 97 frames; encoders and the VAE decode come on top.
RECIPE_SIZES = {480: (480, 832), 720: (720, 1280)}
LIGHTX2V_T2V_14B = "lightx2v/Wan2.1-Distill-Loras: wan2.1_t2v_14b_lora_rank64_lightx2v_4step.safetensors (631 MB)"


@dataclass(frozen=True)
class FastRecipe:
    """A step-distill LoRA and the sampling that suits it on a HuMo model (`--recipe NAME --lora FILE`).

    The guidance is what the recipe is about: "single pass" is the community default (CFG 1: the LoRA's folded text
    guidance, audio unguided); "distilled + audio" keeps HuMo's audio branch against the no-audio one (2 passes a
    step, or only while t > `switch_timestep`). docs/weights.md has what each costs and what it bought on HuMo-nano."""

    name: str
    model: str  # registry id (a GGUF / repack of that model counts too: its base)
    lora: str  # where the LoRA comes from
    steps: int
    guidance_preset: str
    scale_a: float | None = None
    switch_timestep: int | None = None
    lora_scale: float = 1.0
    scheduler: str = "euler"  # distilled few-step models are sampled with flow Euler on the shifted grid
    shift: float = 5.0

    def schedule(self, mode: str = "TIA"):
        from engine.guidance import preset_schedule

        variant = "17b" if self.model == "humo-17b" else "1.7b"
        return preset_schedule(self.guidance_preset, variant, mode, scale_a=self.scale_a,
                               switch_timestep=self.switch_timestep)  # fmt: skip

    def passes(self, mode: str = "TIA") -> list[int]:
        """Transformer passes at each of the recipe's steps (its scheduler's timesteps)."""
        from engine.schedulers import make_scheduler

        scheduler = make_scheduler(self.scheduler, shift=self.shift)
        scheduler.set_timesteps(self.steps)
        return self.schedule(mode).passes_per_step(scheduler.timesteps)

    def expected_seconds(self, height: int = 480, mode: str = "TIA") -> float:
        """Denoising time on one H100 at 97 frames of 480p or 720p (engine.plan's H100 pass costs)."""
        from engine.plan import DEFAULT_FRAMES, h100_pass_seconds, run_tokens

        tokens = run_tokens(DEFAULT_FRAMES, *RECIPE_SIZES[720 if height > 480 else 480])
        return sum(self.passes(mode)) * h100_pass_seconds("17b" if self.model == "humo-17b" else "1.7b", tokens)


FAST_RECIPES = {
    recipe.name: recipe
    for recipe in (
        FastRecipe("17b-lightx2v-audio", "humo-17b", LIGHTX2V_T2V_14B, 4, "distilled + audio", scale_a=2.0),
        FastRecipe(
            "17b-lightx2v-audio-early",
            "humo-17b",
            LIGHTX2V_T2V_14B,
            4,
            "distilled + early audio",
            scale_a=2.0,
            switch_timestep=900,
        ),  # fmt: skip
        FastRecipe("17b-lightx2v-cfg1", "humo-17b", LIGHTX2V_T2V_14B, 4, "single pass"),
        # no public Wan2.1-1.3B step-distill LoRA exists; the project's own distill stage makes one whose targets fold
        # HuMo's whole guidance in (audio too), so one pass is its schedule
        FastRecipe(
            "1.7b-distill-lora",
            "humo-1.7b",
            "python -m training fit --config training/configs/distill.yaml "
            "(data/runs/humo-1.7b-distill/lora.safetensors)",
            4,
            "single pass",
        ),  # fmt: skip
    )
}


def apply_recipe(args: argparse.Namespace, base_model: str) -> None:
    """Fill the CLI's sampling options from `--recipe` (steps, scheduler, guidance, LoRA scale) where not given.

    The recipe's LoRA must be passed with `--lora FILE` (it is a download of its own); a recipe for another model is
    refused by name. `base_model`: the registered model the chosen one is (itself, or the base of a fine-tune or file),
    which the caller reads from the registry (this module sits below it)."""
    name = getattr(args, "recipe", None)
    if not name:
        return
    if name not in FAST_RECIPES:
        raise InputError(f"Unknown recipe {name!r}: use one of {', '.join(FAST_RECIPES)}.", field="recipe")
    recipe = FAST_RECIPES[name]
    if base_model != recipe.model:
        raise InputError(f"Recipe {name} is for {recipe.model}, not {base_model}.", field="recipe")
    if not args.lora:
        raise InputError(f"Recipe {name} needs its LoRA: get {recipe.lora} and pass --lora FILE.", field="recipe")
    args.lora = [spec_ if ":" in spec_ and not Path(spec_).exists() else f"{spec_}:{recipe.lora_scale:g}"
                 for spec_ in args.lora]  # fmt: skip
    args.steps = args.steps or recipe.steps
    args.scheduler = recipe.scheduler
    args.guidance_preset = args.guidance_preset or recipe.guidance_preset
    args.scale_a = recipe.scale_a if args.scale_a is None else args.scale_a
    args.switch_timestep = recipe.switch_timestep if args.switch_timestep is None else args.switch_timestep


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
LORA_MATCH_THRESHOLD = 0.95  # share of a LoRA's modules that must apply, unless partial loading is asked for
_LORA_PAIRS = ((".lora_down.weight", ".lora_up.weight"), (".lora_A.weight", ".lora_B.weight"))
_LORA_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "base_model.model.")


@dataclass
class LoraReport:
    """How much of a LoRA file applies to a transformer, grouped by kind of module (`lora_kind`).

    A module applies when the model has a linear layer of that name (after the official-Wan -> diffusers key map)
    with the LoRA's input and output widths. `unmatched` gives each module that does not, with why; `dropped` lists
    entries no loader applies (norm `.diff` tensors that are all zeros, as in lightx2v's extractions)."""

    file: str
    matched: dict[str, int] = field(default_factory=dict)
    unmatched: dict[str, list[str]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    threshold: float = LORA_MATCH_THRESHOLD

    @property
    def total(self) -> int:
        return sum(self.matched.values()) + sum(len(v) for v in self.unmatched.values())

    @property
    def share(self) -> float:
        return sum(self.matched.values()) / self.total if self.total else 0.0

    @property
    def applies(self) -> bool:
        return self.total > 0 and self.share >= self.threshold

    def summary(self) -> str:
        kinds = sorted(set(self.matched) | set(self.unmatched))
        parts = [
            f"{k} {self.matched.get(k, 0)}/{self.matched.get(k, 0) + len(self.unmatched.get(k, []))}" for k in kinds
        ]
        text = f"{self.file}: {sum(self.matched.values())} of {self.total} modules apply ({self.share:.0%}): "
        text += ", ".join(parts)
        missing = [f"{k}: {_reason_preview(v)}" for k, v in sorted(self.unmatched.items())]
        return text + (f". Not applied: {'; '.join(missing)}" if missing else "")

    def to_dict(self) -> dict:
        return {"file": self.file, "matched": dict(self.matched), "unmatched": {k: list(v) for k, v in self.unmatched.items()},
                "dropped": list(self.dropped), "share": self.share, "applies": self.applies}  # fmt: skip


def _reason_preview(items: list[str], limit: int = 3) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def lora_kind(name: str) -> str:
    """The group a module belongs to in a report (names in either the official Wan or the diffusers layout)."""
    if any(m in name for m in ("k_img", "v_img", "add_k_proj", "add_v_proj", "img_emb", "image_embedder")):
        return "image cross-attn (I2V)"
    if "audio" in name:
        return "audio"
    if ".attn1." in name or ".self_attn." in name:
        return "self-attn"
    if ".attn2." in name or ".cross_attn." in name:
        return "text cross-attn"
    if ".ffn." in name:
        return "ffn"
    if any(m in name for m in ("embedding", "embedder", "time_proj", "condition_embedder")):
        return "embeddings"
    if name.startswith(("head.", "proj_out")):
        return "head"
    return "other"


def _lora_modules(state: dict[str, torch.Tensor]) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """{module name as in the file: {"A", "B", "alpha", "bias"}} and the keys no loader applies (zero norm diffs)."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    dropped: list[str] = []
    for key, value in state.items():
        bare = key
        for prefix in _LORA_PREFIXES:
            bare = bare.removeprefix(prefix)
        for down, up in _LORA_PAIRS:
            if bare.endswith((down, up)):
                part = "A" if bare.endswith(down) else "B"
                modules.setdefault(bare[: -len(down if part == "A" else up)], {})[part] = value
                break
        else:
            module, _, suffix = bare.rpartition(".")
            if suffix == "alpha":
                modules.setdefault(module, {})["alpha"] = value
            elif suffix == "diff_b" and "norm" not in module:
                modules.setdefault(module, {})["bias"] = value
            elif suffix in ("diff", "diff_b") and "norm" in module and not value.any():
                dropped.append(key)
            else:  # a full-weight or non-zero norm diff: not a low-rank update, nothing here applies it
                modules.setdefault(bare, {})["unsupported"] = value
    return modules, dropped


def _target_name(module: str, names: set[str]) -> str | None:
    from engine.models.official import official_to_diffusers_key

    target = official_to_diffusers_key(module + ".weight")
    if target is not None:
        return target[: -len(".weight")]
    return module if module in names else None


def _match(module: str, parts: dict[str, torch.Tensor], layers: dict[str, torch.nn.Module]) -> tuple[str | None, str]:
    """(our module name, "") when the LoRA module applies, else (None, why not)."""
    if "unsupported" in parts:
        return None, f"{module} (a full-weight or norm diff, not a LoRA pair)"
    if "A" not in parts or "B" not in parts:
        return None, f"{module} (has {'down' if 'A' in parts else 'up'} but no {'up' if 'A' in parts else 'down'})"
    target = _target_name(module, set(layers))
    layer = layers.get(target) if target else None
    if not isinstance(layer, torch.nn.Linear):
        return None, f"{module} (no such layer in HuMo)"
    want, have = (layer.out_features, layer.in_features), (parts["B"].shape[0], parts["A"].shape[1])
    if want != have:
        return None, f"{module} ({have[0]}x{have[1]}; HuMo's is {want[0]}x{want[1]})"
    return target, ""


def lora_report(path: str | Path, transformer: torch.nn.Module, threshold: float = LORA_MATCH_THRESHOLD):
    """(LoraReport, PEFT state dict of the modules that apply) for a LoRA file (either layout) on `transformer`.

    The state's keys are PEFT names on this project's transformer (`blocks.0.attn1.to_q.lora_A.weight`); a file's
    alpha is folded into B (PEFT's default scale alpha = rank then reproduces the file's alpha / rank), `diff_b`
    becomes `lora_B.bias` (as diffusers' own Wan LoRA conversion does)."""
    modules, dropped = _lora_modules(lora_file_tensors(path))
    layers = {n: m for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    report = LoraReport(Path(path).name, dropped=dropped, threshold=threshold)
    peft_state: dict[str, torch.Tensor] = {}
    for module, parts in modules.items():
        target, why = _match(module, parts, layers)
        kind = lora_kind(target or module)
        if target is None:
            report.unmatched.setdefault(kind, []).append(why)
            continue
        report.matched[kind] = report.matched.get(kind, 0) + 1
        up = parts["B"]
        if "alpha" in parts:
            up = up * (float(parts["alpha"]) / parts["A"].shape[0])
        peft_state[f"{target}.lora_A.weight"] = parts["A"]
        peft_state[f"{target}.lora_B.weight"] = up
        if "bias" in parts:
            peft_state[f"{target}.lora_B.bias"] = parts["bias"]
    return report, peft_state


def lora_file_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A LoRA file's tensors as stored (safetensors, or a torch file opened with weights_only)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise InputError(f"LoRA file {path} not found.", field="lora")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_lora(
    pipe, path: str | Path, scale: float = 1.0, adapter_name: str | None = None, partial: bool = False
) -> str:
    """Load a LoRA into the transformer (both layouts) and activate it at `scale`. Returns the adapter name.

    The file's `LoraReport` (kept in `pipe.lora_reports[adapter_name]`) decides: under `LORA_MATCH_THRESHOLD` of its
    modules applying, it is refused with the report unless `partial`, which loads the modules that apply and logs a
    warning. PEFT's injection is then checked against the report (every matched layer, and only those, got it)."""
    report, state = lora_report(path, pipe.transformer)
    if not report.total:
        raise InputError(f"{Path(path).name} holds no LoRA modules (no lora_A/lora_B or lora_down/lora_up pairs).",
                         field="lora")  # fmt: skip
    if not report.applies and (not partial or not state):
        hint = " Load it anyway with --lora-partial (the studio: 'load LoRAs that only partly apply')." if state else ""
        raise InputError(f"LoRA does not fit this model: {report.summary()}.{hint}", field="lora")
    if not report.applies:
        logger.warning("loading only part of a LoRA: %s", report.summary())
    adapter_name = adapter_name or Path(path).stem.replace(".", "_")
    pipe.transformer.load_lora_adapter(state, prefix=None, adapter_name=adapter_name)
    _check_injected(pipe.transformer, adapter_name, {k.rsplit(".lora_", 1)[0] for k in state})
    set_lora_scale(pipe, adapter_name, scale)
    pipe.lora_reports = {**getattr(pipe, "lora_reports", {}), adapter_name: report}
    return adapter_name


def _check_injected(transformer: torch.nn.Module, adapter_name: str, expected: set[str]) -> None:
    """PEFT's own account of where the adapter went must be the report's matched set."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    injected = {n for n, m in transformer.named_modules()
                if isinstance(m, BaseTunerLayer) and adapter_name in getattr(m, "lora_A", {})}  # fmt: skip
    if injected != expected:
        raise InputError(f"PEFT put the LoRA on other layers than matched: {sorted(injected ^ expected)[:6]}", "lora")


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
    parser.add_argument(
        "--recipe",
        default=None,
        choices=sorted(FAST_RECIPES),
        help="a step-distill LoRA's sampling (steps, sampler, guidance; docs/weights.md); pass the LoRA with --lora",
    )
    parser.add_argument(
        "--lora-partial",
        action="store_true",
        help=f"load a LoRA even when under {LORA_MATCH_THRESHOLD:.0%} of its modules fit this model (the part that fits)",
    )


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
        load_lora(pipe, path, scale, partial=getattr(args, "lora_partial", False))
    if args.step_cache is not None:
        enable_step_cache(pipe, args.step_cache)
    if args.compile:
        compile_transformer(pipe)


@contextlib.contextmanager
def job_options(pipe, options: dict | None, device=None):
    """One job's advanced options on a shared pipeline for the duration of the job (`with job_options(...)`).

    `options`: the fields of studio.advanced.AdvancedOptions as a plain dict (loras: [(path, scale)], step_cache,
    compile, attention_backend, memory_mode, lora_partial), so a request crosses to a Ray worker as data. LoRA, step
    cache and attention backend come off again afterwards; compiling and a memory mode stay (they cost minutes to
    undo and change no result)."""
    from engine.memory import apply_memory_mode

    options = {**_DEFAULT_JOB_OPTIONS, **(options or {})}
    if options == _DEFAULT_JOB_OPTIONS:
        yield
        return
    memory_mode, loras = options["memory_mode"], [(str(p), float(s)) for p, s in options["loras"]]
    if memory_mode != "auto" and memory_mode != getattr(pipe, "memory_mode", None):
        apply_memory_mode(pipe, memory_mode, device)
    if options["compile"] and not getattr(pipe, "compiled", False):
        compile_transformer(pipe)
        pipe.compiled = True
    try:
        if options["attention_backend"] != "native":
            set_attention_backend(pipe, options["attention_backend"])
        for path, scale in loras:
            load_lora(pipe, path, scale, partial=options["lora_partial"])
        if options["step_cache"]:
            enable_step_cache(pipe, options["step_cache"])
        yield
    finally:
        if options["step_cache"]:
            pipe.transformer.disable_cache()
            pipe.step_cache = None
        if loras:
            unload_lora(pipe)
        if options["attention_backend"] != "native":
            set_attention_backend(pipe, "native")


_DEFAULT_JOB_OPTIONS = {"loras": [], "step_cache": 0.0, "compile": False, "attention_backend": "native",
                        "memory_mode": "auto", "lora_partial": False}  # fmt: skip
