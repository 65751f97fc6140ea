"""HuMo's two-stage progressive fine-tune, one readable loop on accelerate (reference/humo-official.md §7, §2.7).

    python -m training fit --config training/configs/stage1.yaml [--resume]

Stage 1 (subject preservation): text + reference image, audio off; only self-attention trains ("minimal-invasive").
Stage 2 (+ audio): self-attention + audio projection + audio cross-attention + the face-mask head train; each sample
is an audio-visual task with probability p(step) rising 0.2 -> 0.5, otherwise its audio is nulled; the mask head adds
a size-weighted BCE on the last four blocks.

Flow matching in the Wan convention: x_t = (1 - s) x0 + s eps, target v = eps - x0, s from a logit-normal with shift.
Every random draw (sample, task, timestep, noise, dropout) comes from ONE seeded generator saved in checkpoints, so a
resumed run reproduces the next loss exactly.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from engine.guidance import Branch
from engine.pipeline import build_condition
from training.cache import load_cached
from training.mask_head import FaceMaskHead, head_blocks, size_weighted_bce, token_grid_mask
from training.schedule import audio_task_probability

SELF_ATTENTION = r"blocks\.\d+\.attn1\."
AUDIO_MODULES = r"(audio_proj\.|blocks\.\d+\.audio_attn\.|blocks\.\d+\.norm_audio\.)"
LORA_SELF_ATTENTION = r".*blocks\.\d+\.attn1\.(to_q|to_k|to_v|to_out\.0)"
LORA_AUDIO = r".*(blocks\.\d+\.audio_attn\.(to_q|to_k|to_v|to_out\.0)|audio_proj\.linear_[123])"


@dataclass
class TrainConfig:
    # data and model
    cache_dir: str = "data/train/cache"
    run_dir: str = "data/runs/humo-stage1"
    base_model: str = "tiny"  # model id, or a diffusers folder (e.g. a stage-1 run's final/)
    stage: int = 1  # 1 or 2; 0 pretrains a base text-to-video model from scratch (all parameters, no reference)
    # optimisation
    steps: int = 1000
    batch_size: int = 1
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # "no" | "bf16" (GPU)
    gradient_checkpointing: bool = False
    ema_decay: float = 0.0  # 0: off
    # parameter sets
    lora_rank: int = 0  # 0: full fine-tune of the stage's parameter set; >0: PEFT LoRA on the same set
    lora_alpha: float | None = None
    train_all: bool = False  # ablation: every transformer parameter instead of the minimal-invasive set
    # flow matching
    timestep_shift: float = 5.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    # stage 2 task mix and focus-by-predicting
    task_start: float = 0.2
    task_end: float = 0.5
    task_shape: str = "linear"
    mask_loss_weight: float = 0.1
    focus_by_predicting: bool = True
    # condition dropout for classifier-free guidance
    drop_text: float = 0.1
    drop_image: float = 0.1
    drop_audio: float = 0.1
    # bookkeeping
    seed: int = 0
    log_every: int = 1
    checkpoint_every: int = 100
    validate_every: int = 0  # 0: off; else write a validation video into the studio gallery every N steps
    validation_steps: int = 8
    data_dir: str | None = None  # studio data folder for validation videos (default: HUMO_DATA_DIR / ./data)
    export_official: bool = False

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> TrainConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys in {path}: {sorted(unknown)}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------- model set-up
def load_base_transformer(base_model: str):
    from engine.models import HuMoTransformer3DModel

    if Path(base_model).is_dir():
        return HuMoTransformer3DModel.from_pretrained(base_model)
    from engine.registry import load_pipeline

    return load_pipeline(base_model, device="cpu", torch_dtype=torch.float32).transformer


def trainable_pattern(config: TrainConfig) -> str:
    if config.train_all or config.stage == 0:
        return r".*"
    return SELF_ATTENTION if config.stage == 1 else f"({SELF_ATTENTION}|{AUDIO_MODULES})"


def setup_trainable(transformer, config: TrainConfig) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze the stage's parameter set (or add LoRA adapters on it)."""
    transformer.requires_grad_(False)
    if config.lora_rank > 0:
        from peft import LoraConfig

        targets = LORA_SELF_ATTENTION if config.stage == 1 else f"({LORA_SELF_ATTENTION}|{LORA_AUDIO})"
        if config.train_all:
            targets = r".*(to_q|to_k|to_v|to_out\.0|linear_[123]|proj|net\.[02]).*"
        transformer.add_adapter(
            LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha or config.lora_rank, target_modules=targets)
        )
        return [p for n, p in transformer.named_parameters() if "lora_" in n]
    pattern = re.compile(trainable_pattern(config))
    params = []
    for name, param in transformer.named_parameters():
        if pattern.match(name):
            param.requires_grad_(True)
            params.append(param)
    return params


def trainable_state(transformer, mask_head) -> dict[str, torch.Tensor]:
    state = {f"transformer.{n}": p.detach().clone() for n, p in transformer.named_parameters() if p.requires_grad}
    if mask_head is not None:
        state.update({f"mask_head.{n}": p.detach().clone() for n, p in mask_head.named_parameters()})
    return state


# ---------------------------------------------------------------------------------------------- one step
def sample_sigmas(batch: int, config: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Logit-normal sigmas with the Wan shift s' = k s / (1 + (k - 1) s)."""
    u = torch.randn(batch, generator=gen) * config.logit_std + config.logit_mean
    sigma = torch.sigmoid(u)
    k = config.timestep_shift
    return k * sigma / (1 + (k - 1) * sigma)


def make_batch(clips, negative, indices, step, config: TrainConfig, gen: torch.Generator, variant: str) -> dict:
    """Draw tasks, dropouts, timesteps and noise for the chosen clips; build the transformer inputs."""
    batch = len(indices)
    x0 = torch.stack([clips[i]["latents"] for i in indices])  # [B, 16, F, h, w]
    refs = torch.stack([clips[i]["ref_latents"] for i in indices])
    text = torch.stack([clips[i]["prompt_embeds"] for i in indices])
    audio = torch.stack([clips[i]["audio_embeds"] for i in indices])
    has_audio = torch.stack([clips[i]["has_audio"] for i in indices]).bool()
    masks = torch.stack([clips[i]["face_mask"] for i in indices])
    p_audio = audio_task_probability(step, config.steps, config.task_start, config.task_end, config.task_shape)
    audio_task = (
        (torch.rand(batch, generator=gen) < p_audio) & has_audio
        if config.stage == 2
        else torch.zeros(batch, dtype=torch.bool)
    )
    drop_text = torch.rand(batch, generator=gen) < config.drop_text
    # stage 0 pretrains the base text-to-video model (Wan's role): the reference slot is always the null input
    drop_image = torch.rand(batch, generator=gen) < (1.0 if config.stage == 0 else config.drop_image)
    drop_audio = torch.rand(batch, generator=gen) < config.drop_audio
    sigmas = sample_sigmas(batch, config, gen)
    noise = torch.randn(x0.shape[0], x0.shape[1], x0.shape[2] + 1, *x0.shape[3:], generator=gen)

    # x_t over the video frames plus one reference slot (free-running noise for the 17b, overwritten for the 1.7b)
    s = sigmas.view(-1, 1, 1, 1, 1)
    video_noise = noise[:, :, : x0.shape[2]]
    x_t = torch.cat([(1 - s) * x0 + s * video_noise, noise[:, :, x0.shape[2] :]], dim=2)
    inputs = []
    for b in range(batch):
        branch = Branch(
            "neg" if drop_text[b] else "pos",
            "null" if drop_image[b] else "ref",
            "on" if audio_task[b] and not drop_audio[b] else "off",
        )
        zero = clips[indices[b]].get("zero_latents")
        inputs.append(
            build_condition(
                variant,
                x_t[b : b + 1],
                branch,
                prompt_embeds=text[b : b + 1],
                negative_prompt_embeds=negative[None],
                ref_latents=refs[b : b + 1],
                zero_latents=zero[None] if zero is not None else None,
                audio_embeds=_pad_ref_window(audio[b : b + 1]),
                num_ref=1,
            )
        )
    merged = {k: torch.cat([i[k] for i in inputs]) for k in inputs[0]}
    return {
        **merged,
        "timestep": sigmas * 1000.0,
        "target": video_noise - x0,
        "face_mask": masks,
        "audio_task": audio_task,
        "p_audio": p_audio,
    }


def _pad_ref_window(audio: torch.Tensor) -> torch.Tensor:
    """[B, F_vid, 8, 5, C] -> [B, F_vid + 1, ...]: the reference slot always gets a zero window (§2.5)."""
    return torch.cat([audio, torch.zeros_like(audio[:, :1])], dim=1)


def compute_loss(transformer, mask_head, batch: dict, config: TrainConfig) -> tuple[torch.Tensor, dict]:
    use_mask = config.stage == 2 and config.focus_by_predicting and mask_head is not None
    blocks = head_blocks(len(_unwrap(transformer).blocks))
    out = transformer(
        hidden_states=batch["hidden_states"],
        timestep=batch["timestep"],
        encoder_hidden_states=batch["encoder_hidden_states"],
        audio_embeds=batch["audio_embeds"],
        return_block_states=blocks if use_mask else None,
    )
    f_vid = batch["target"].shape[2]
    fm_loss = F.mse_loss(out.sample[:, :, :f_vid].float(), batch["target"].float())
    logs = {"fm_loss": fm_loss.item()}
    loss = fm_loss
    if use_mask:
        _, _, f_total, h, w = batch["hidden_states"].shape
        grid = (f_total, h // 2, w // 2)
        pred = mask_head([out.block_states[i] for i in blocks], grid)[:, :f_vid]
        target = token_grid_mask(batch["face_mask"], (f_vid, h // 2, w // 2))
        mask_loss = size_weighted_bce(pred, target)
        loss = loss + config.mask_loss_weight * mask_loss
        logs["mask_loss"] = mask_loss.item()
    logs["loss"] = loss.item()
    return loss, logs


# ---------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, transformer, mask_head, optimizer, ema, gen, step, config) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(
        {
            "trainable": trainable_state(transformer, mask_head),
            "optimizer": optimizer.state_dict(),
            "ema": ema,
            "generator": gen.get_state(),
            "step": step,
            "config": asdict(config),
        },
        tmp / "state.pt",
    )
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def load_checkpoint(path: Path, transformer, mask_head, optimizer, gen) -> tuple[int, dict | None]:
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    params = dict(transformer.named_parameters())
    head_params = dict(mask_head.named_parameters()) if mask_head is not None else {}
    with torch.no_grad():
        for key, value in state["trainable"].items():
            owner, name = key.split(".", 1)
            (params if owner == "transformer" else head_params)[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    return state["step"], state["ema"]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob("checkpoints/step-*"), key=lambda p: int(p.name.split("-")[1]))
    found = [p for p in found if (p / "state.pt").exists()]
    return found[-1] if found else None


# ---------------------------------------------------------------------------------------------- the loop
def fit(config: TrainConfig, resume: bool = False, max_steps: int | None = None) -> dict:
    """Train; returns a summary (final step, last losses, paths). `max_steps` stops early (tests, the studio)."""
    from accelerate import Accelerator

    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(asdict(config), sort_keys=False))
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available())
    torch.manual_seed(config.seed)

    clips, negative = load_cached(config.cache_dir)
    transformer = load_base_transformer(config.base_model)
    variant = "17b" if transformer.config.in_channels == 36 else "1.7b"
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    params = setup_trainable(transformer, config)
    mask_head = None
    if config.stage == 2 and config.focus_by_predicting:
        dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
        mask_head = FaceMaskHead(dim, num_blocks=len(head_blocks(len(transformer.blocks))))
        params += list(mask_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed + accelerator.process_index)
    step, ema = 0, None
    if resume and (ckpt := latest_checkpoint(run_dir)) is not None:
        step, ema = load_checkpoint(ckpt, transformer, mask_head, optimizer, gen)
        accelerator.print(f"resumed from {ckpt} at step {step}")
    if config.ema_decay > 0 and ema is None:
        ema = {k: v.float() for k, v in trainable_state(transformer, mask_head).items()}
    transformer, optimizer = accelerator.prepare(transformer, optimizer)
    if mask_head is not None:
        mask_head = accelerator.prepare(mask_head)
    writer = _tensorboard(run_dir) if accelerator.is_main_process else None
    metrics_path = run_dir / "metrics.jsonl"
    last_logs: dict = {}
    end = config.steps if max_steps is None else min(config.steps, step + max_steps)
    started = time.perf_counter()
    transformer.train()
    stop = _stop_on_sigterm()

    def checkpoint() -> None:
        path = run_dir / "checkpoints" / f"step-{step}"
        save_checkpoint(path, accelerator.unwrap_model(transformer), mask_head, optimizer, ema, gen, step, config)

    while step < end and not stop.is_set():
        indices = torch.randint(len(clips), (config.batch_size,), generator=gen).tolist()
        batch = make_batch(clips, negative, indices, step, config, gen, variant)
        batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with accelerator.autocast():
            loss, logs = compute_loss(transformer, mask_head, batch, config)
        accelerator.backward(loss)
        if config.max_grad_norm:
            accelerator.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if ema is not None:
            _update_ema(ema, accelerator.unwrap_model(transformer), mask_head, config.ema_decay)
        logs.update(
            step=step,
            p_audio=batch["p_audio"],
            audio_tasks=int(batch["audio_task"].sum()),
            time_s=time.perf_counter() - started,
        )
        last_logs = logs
        if accelerator.is_main_process and step % config.log_every == 0:
            _log(writer, metrics_path, logs)
        if accelerator.is_main_process and (step % 10 == 0 or step == end):
            extra = f" mask {logs['mask_loss']:.4f}" if "mask_loss" in logs else ""
            print(
                f"step {step}/{config.steps} loss {logs['loss']:.4f}{extra} p_audio {logs['p_audio']:.2f}", flush=True
            )
        if accelerator.is_main_process and config.checkpoint_every and step % config.checkpoint_every == 0:
            checkpoint()
        if accelerator.is_main_process and config.validate_every and step % config.validate_every == 0:
            validate(config, accelerator.unwrap_model(transformer), step)
    summary = {"step": step, "last": last_logs, "run_dir": str(run_dir), "stopped": stop.is_set()}
    if accelerator.is_main_process:
        if config.checkpoint_every:
            checkpoint()
        if step >= config.steps:
            summary["final"] = str(save_final(run_dir, accelerator.unwrap_model(transformer), ema, config))
        if writer is not None:
            writer.close()
    return summary


def _stop_on_sigterm():
    """SIGTERM (the studio's Stop) ends the loop after the current step; the final checkpoint is still written."""
    import signal
    import threading

    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def _unwrap(model):
    """The model under accelerate/DDP wrappers (their `.module`)."""
    return getattr(model, "module", model)


def _update_ema(ema: dict, transformer, mask_head, decay: float) -> None:
    current = trainable_state(transformer, mask_head)
    with torch.no_grad():
        for key, value in current.items():
            ema[key].mul_(decay).add_(value.float(), alpha=1 - decay)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is in requirements.txt; keep training if someone removed it
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _log(writer, path: Path, logs: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(logs) + "\n")
    if writer is not None:
        for key, value in logs.items():
            if isinstance(value, (int, float)) and key != "step" and math.isfinite(value):
                writer.add_scalar(f"train/{key}", value, logs["step"])


def save_final(run_dir: Path, transformer, ema: dict | None, config: TrainConfig) -> Path:
    """The trained transformer in diffusers format (LoRA merged; EMA weights when enabled) -> run_dir/final."""
    if ema is not None:
        params = dict(transformer.named_parameters())
        with torch.no_grad():
            for key, value in ema.items():
                owner, name = key.split(".", 1)
                if owner == "transformer":
                    params[name].copy_(value)
    if config.lora_rank > 0:
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in transformer.modules():
            if isinstance(module, BaseTunerLayer):
                module.merge()
        transformer = _strip_lora(transformer)
    final = run_dir / "final"
    tmp = run_dir / "final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    transformer.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    if config.export_official:
        export_official(final, run_dir / "humo_official.safetensors")
    return final


def _strip_lora(transformer):
    """A plain model with the merged weights (no PEFT wrappers), so the saved folder loads without PEFT."""
    from engine.models import HuMoTransformer3DModel

    clean = HuMoTransformer3DModel(**{k: v for k, v in transformer.config.items() if not k.startswith("_")})
    state = {}
    for name, value in transformer.state_dict().items():
        if "lora_" in name:
            continue
        state[name.replace(".base_layer", "")] = value
    clean.load_state_dict(state, strict=True)
    return clean


def export_official(final_dir: str | Path, out: str | Path) -> Path:
    """A trained diffusers folder -> one safetensors file with the official key names (official code, ComfyUI)."""
    from safetensors.torch import save_file

    from engine.models import HuMoTransformer3DModel

    model = HuMoTransformer3DModel.from_pretrained(final_dir)
    out = Path(out)
    tmp = out.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.to_official_state_dict().items()}, str(tmp))
    os.replace(tmp, out)
    return out


def validate(config: TrainConfig, transformer, step: int) -> int | None:
    """Render a short video with the current weights into the studio gallery; returns its gallery id."""
    from engine.generate import GenerationRequest, generate_to_file
    from engine.media import make_thumbnail
    from engine.registry import load_pipeline
    from studio.paths import DataPaths
    from studio.store import Store

    index = json.loads((Path(config.cache_dir) / "index.json").read_text())
    source = Path(index["source"])
    entry = json.loads((source / "manifest.jsonl").read_text().splitlines()[0])
    pipe = load_pipeline(
        index.get("model_id", "tiny") if not Path(config.base_model).is_dir() else "tiny", device="cpu"
    )
    was_training = transformer.training
    pipe.register_modules(transformer=transformer.eval())
    request = GenerationRequest(
        prompt=entry.get("caption") or "a person talking",
        images=[str(source / entry["reference"])],
        audio=str(source / entry["audio"]) if config.stage == 2 else None,
        height=int(entry["height"]),
        width=int(entry["width"]),
        num_frames=int(entry["frames"]),
        num_inference_steps=config.validation_steps,
        seed=config.seed,
    )
    with Store.open(config.data_dir) as store:
        mode = "TIA" if request.audio else "TI"
        row = store.create_generation(
            prompt=f"[validation {Path(config.run_dir).name} step {step}] {request.prompt}",
            mode=mode,
            model_id=f"checkpoint:{config.run_dir}",
            seed=config.seed,
        )
        store.mark_running(row.id)
        try:
            path, settings = generate_to_file(pipe, request, store.abs_path(DataPaths.video_rel(row.id)))
            make_thumbnail(path, store.abs_path(DataPaths.thumb_rel(row.id)), size=256)
            store.mark_done(
                row.id,
                DataPaths.video_rel(row.id),
                DataPaths.thumb_rel(row.id),
                timings=settings["timings"],
                seed=config.seed,
            )
        except Exception as exc:  # validation must never stop training
            store.mark_failed(row.id, f"{type(exc).__name__}: {exc}")
            return None
        finally:
            transformer.train(was_training)
    return row.id


__all__ = ["TrainConfig", "fit", "setup_trainable", "make_batch", "compute_loss", "export_official", "save_final"]
