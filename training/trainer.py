"""HuMo's two-stage progressive fine-tune, one readable loop on accelerate (reference/humo-official.md §7, §2.7).

    python -m training fit --config training/configs/stage1.yaml [--resume]

Stage 1 (subject preservation): text + reference image, audio off; only self-attention trains ("minimal-invasive").
Stage 2 (+ audio): self-attention + audio projection + audio cross-attention + the face-mask head train; each sample
is an audio-visual task with probability p(step) rising 0.2 -> 0.5, otherwise its audio is nulled; the mask head adds
a size-weighted BCE on the last four blocks.

Flow matching in the Wan convention: x_t = (1 - s) x0 + s eps, target v = eps - x0, s from a logit-normal with shift.
Every random draw (sample, task, timestep, noise, dropout) comes from ONE seeded generator saved in checkpoints, so a
resumed run reproduces the next loss exactly.

Library parts: accelerate runs the loop, writes and restores checkpoints (`save_state` / `load_state`, with the
generator and the EMA registered for checkpointing) and logs to TensorBoard; diffusers gives the EMA (`EMAModel`) and
the logit-normal timestep density; PEFT adds the LoRA adapters and merges them (`merge_and_unload`).

A run folder holds config.yaml, metrics.jsonl (one JSON line per logged step), tensorboard/, checkpoints/step-N/
(accelerate's files + state.pt, the trainable weights only), validation/step_NNNNNN.mp4 (settings in the mp4) and
final/ (diffusers format). Checkpoints written before accelerate's format (a lone state.pt) cannot be resumed.
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

from engine.errors import InputError
from engine.guidance import Branch
from engine.pipeline import build_condition
from engine.registry import BASE_FILE
from training import continuation
from training.cache import cache_index, load_cached
from training.mask_head import FaceMaskHead, head_blocks, size_weighted_bce, token_grid_mask
from training.schedule import audio_task_probability

SELF_ATTENTION = r"blocks\.\d+\.attn1\."
AUDIO_MODULES = r"(audio_proj\.|blocks\.\d+\.audio_attn\.|blocks\.\d+\.norm_audio\.)"
LORA_SELF_ATTENTION = r".*blocks\.\d+\.attn1\.(to_q|to_k|to_v|to_out\.0)"
LORA_AUDIO = r".*(blocks\.\d+\.audio_attn\.(to_q|to_k|to_v|to_out\.0)|audio_proj\.linear_[123])"
# a few-step student: every attention and FFN linear of the blocks and the timestep embedding (which sees 4 values)
LORA_DISTILL = (
    r".*(blocks\.\d+\.(attn1|attn2|audio_attn)\.(to_q|to_k|to_v|to_out\.0)|blocks\.\d+\.ffn\.net\.(0\.proj|2)"
    r"|condition_embedder\.time_(embedder\.linear_[12]|proj))"
)
WEIGHTS_FILE = "state.pt"  # in each checkpoint: {"trainable": {"transformer.<name>" | "mask_head.<name>": tensor}}
RETIRED_KEYS = {"data_dir"}  # config keys of older versions, ignored when a run.yaml still has them


@dataclass
class TrainConfig:
    # data and model
    cache_dir: str = "data/train/cache"
    run_dir: str = "data/runs/humo-stage1"
    base_model: str = "tiny"  # model id, or a diffusers folder (e.g. a stage-1 run's final/)
    stage: int | str = 1  # 1 or 2; 0 pretrains a base text-to-video model from scratch (all parameters, no reference)
    # "distill": a few-step student of base_model (training/distill.py); cache_dir holds its teacher trajectories
    # what the stage learns: "flow" (plain flow matching) or "continuation" (continue a clip from its first latent
    # frames, held as inference holds them; training/continuation.py)
    objective: str = "flow"
    motion_latent_frames: int = 2  # continuation: 4m+1 = 5 pixel frames, engine/live.py's motion frames
    motion_prob: float = 0.5  # continuation: share of samples with motion frames (the rest: the plain task)
    motion_hold: str = "clean"  # continuation: "clean" or "noised" (how pipe(motion_frames=...) holds them)
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
    # distill stage: the share of samples whose input is the student's own state after k of its steps from the
    # trajectory's noise instead of the teacher's state x_k (training/distill.py `roll_in`)
    roll_in: float = 0.0
    # bookkeeping
    seed: int = 0
    log_every: int = 1
    checkpoint_every: int = 100
    validate_every: int = 0  # 0: off; else render <run_dir>/validation/step_NNNNNN.mp4 every N steps
    validation_steps: int = 8
    export_official: bool = False

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> TrainConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known - RETIRED_KEYS
        if unknown:
            raise ValueError(f"unknown config keys in {path}: {sorted(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in known})


# ---------------------------------------------------------------------------------------------- model set-up
def load_base_transformer(base_model: str):
    from engine.models import HuMoTransformer3DModel

    if Path(base_model).is_dir():
        return HuMoTransformer3DModel.from_pretrained(base_model)
    from engine.registry import load_pipeline

    return load_pipeline(base_model, device="cpu", torch_dtype=torch.float32).transformer


def base_record(config: TrainConfig) -> dict:
    """{"base_model": registry id, "encoders": fingerprints} of a run: the id under `base_model` (a fine-tune's
    folder names its own base; a bare transformer folder, as HuMo-nano's build uses, takes the cache's model),
    checked against the model whose encoders made the cache."""
    from engine.registry import read_base

    index = cache_index(config.cache_dir)
    cached = index.get("model_id")
    folder = Path(config.base_model)
    if folder.is_dir():
        base = read_base(folder)["base_model"] if (folder / BASE_FILE).exists() else cached
    else:
        base = config.base_model
    if cached and base and cached != base:
        raise InputError(
            f"The training cache {config.cache_dir} was encoded with {cached}'s VAE and encoders, but the run "
            f"starts from {base}: rebuild the cache with `python -m training cache --model {base}`, or train "
            f"from {cached}.",
            field="dataset",
        )
    return {"base_model": base, "encoders": index.get("encoders", {})}


def trainable_pattern(config: TrainConfig) -> str:
    if config.train_all or config.stage in (0, "distill"):  # a student may change any weight
        return r".*"
    return SELF_ATTENTION if config.stage == 1 else f"({SELF_ATTENTION}|{AUDIO_MODULES})"


def add_lora(transformer, config: TrainConfig):
    """PEFT LoRA adapters on the stage's parameter set (or on every linear layer with `train_all`): a PeftModel."""
    from peft import LoraConfig, get_peft_model

    targets = LORA_SELF_ATTENTION if config.stage == 1 else f"({LORA_SELF_ATTENTION}|{LORA_AUDIO})"
    if config.stage == "distill":
        targets = LORA_DISTILL
    elif config.train_all:
        targets = r".*(to_q|to_k|to_v|to_out\.0|linear_[123]|proj|net\.[02]).*"
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha or config.lora_rank, target_modules=targets)
    return get_peft_model(transformer, lora)


def setup_trainable(transformer, config: TrainConfig) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze the stage's parameter set (with LoRA: the adapters `add_lora` put on it)."""
    transformer.requires_grad_(False)
    if config.lora_rank > 0:
        pattern = re.compile(r".*\.lora_")
    else:
        pattern = re.compile(trainable_pattern(config))
    params = []
    for name, param in transformer.named_parameters():
        if pattern.match(name):
            param.requires_grad_(True)
            params.append(param)
    return params


def build_models(config: TrainConfig):
    """(transformer, mask head or None, trainable parameters, conditioning variant) for the config's stage."""
    transformer = load_base_transformer(config.base_model)
    variant = transformer.variant
    num_blocks = len(head_blocks(len(transformer.blocks)))
    dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    if config.lora_rank > 0:
        transformer = add_lora(transformer, config)
    params = setup_trainable(transformer, config)
    mask_head = None
    if config.stage == 2 and config.focus_by_predicting:
        mask_head = FaceMaskHead(dim, num_blocks=num_blocks)
        params += list(mask_head.parameters())
    return transformer, mask_head, params, variant


def trainable_state(transformer, mask_head) -> dict[str, torch.Tensor]:
    state = {f"transformer.{n}": p.detach().clone() for n, p in transformer.named_parameters() if p.requires_grad}
    if mask_head is not None:
        state.update({f"mask_head.{n}": p.detach().clone() for n, p in mask_head.named_parameters()})
    return state


def load_trainable_state(transformer, mask_head, state: dict[str, torch.Tensor]) -> None:
    """Copy `trainable_state`'s tensors back; the checkpoint must hold exactly this run's trainable set."""
    params = {f"transformer.{n}": p for n, p in transformer.named_parameters() if p.requires_grad}
    if mask_head is not None:
        params.update({f"mask_head.{n}": p for n, p in mask_head.named_parameters()})
    if set(params) != set(state):
        raise InputError(
            "The checkpoint holds another set of trainable parameters (stage, LoRA rank or train_all changed): "
            "resume with the run's own config.yaml, or start a new run.",
            field="resume",
        )
    with torch.no_grad():
        for key, param in params.items():
            param.copy_(state[key])


# ---------------------------------------------------------------------------------------------- one step
def sample_sigmas(batch: int, config: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Logit-normal sigmas (diffusers' SD3 timestep density) with the Wan shift s' = k s / (1 + (k - 1) s)."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    sigma = compute_density_for_timestep_sampling(
        "logit_normal", batch, logit_mean=config.logit_mean, logit_std=config.logit_std, generator=gen
    )
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
    x_video = (1 - s) * x0 + s * video_noise
    weights = None
    if config.objective == "continuation":  # drawn after every plain draw, so the flow objective's stream is unchanged
        has_motion = continuation.draw_motion(batch, config.motion_prob, gen)
        x_video = continuation.hold_motion(x_video, x0, has_motion, config.motion_latent_frames, config.motion_hold)
        weights = continuation.loss_weights(has_motion, x0.shape[2], config.motion_latent_frames)
    x_t = torch.cat([x_video, noise[:, :, x0.shape[2] :]], dim=2)
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
    if weights is not None:
        merged["loss_weight"] = weights
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
    if "loss_weight" in batch:  # continuation: no loss on the frames the model is given
        fm_loss = continuation.masked_mse(out.sample[:, :, :f_vid], batch["target"], batch["loss_weight"])
    else:
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
class RunState:
    """The step counter and the ONE generator every random draw comes from, checkpointed by accelerate
    (`register_for_checkpointing` wants state_dict / load_state_dict). Each process draws from its own stream
    (seed + process index); a checkpoint keeps every process's."""

    def __init__(self, seed: int, accelerator):
        self.rank = accelerator.process_index
        self.generator = torch.Generator().manual_seed(seed + self.rank)
        self.step = 0

    def state_dict(self) -> dict:
        from accelerate.utils import gather_object

        return {"step": self.step, "generators": gather_object([self.generator.get_state()])}

    def load_state_dict(self, state: dict) -> None:
        if self.rank >= len(state["generators"]):
            raise InputError(
                f"The checkpoint was written by {len(state['generators'])} processes: resume with as many.",
                field="resume",
            )
        self.step = int(state["step"])
        self.generator.set_state(state["generators"][self.rank])


def register_checkpointing(accelerator, run_state: RunState, ema) -> None:
    """What `save_state` / `load_state` carry: the optimizer and RNGs (accelerate's own), the run state and the EMA
    (registered), and only the trainable weights (these hooks: accelerate would save every frozen parameter too)."""

    def save_trainable(models, weights, output_dir) -> None:
        if accelerator.is_main_process:
            state = trainable_state(*_model_pair(accelerator, models))
            torch.save({"trainable": state}, Path(output_dir) / WEIGHTS_FILE)
        weights.clear()

    def load_trainable(models, input_dir) -> None:
        state = torch.load(Path(input_dir) / WEIGHTS_FILE, map_location="cpu", weights_only=True)["trainable"]
        load_trainable_state(*_model_pair(accelerator, models), state)
        models.clear()  # loaded here: accelerate has no model files to read

    accelerator.register_save_state_pre_hook(save_trainable)
    accelerator.register_load_state_pre_hook(load_trainable)
    accelerator.register_for_checkpointing(run_state, *([ema] if ema is not None else []))


def _model_pair(accelerator, models) -> tuple:
    """(transformer, mask head or None) from accelerate's list of prepared models, unwrapped."""
    unwrapped = [accelerator.unwrap_model(m) for m in models]
    return unwrapped[0], unwrapped[1] if len(unwrapped) > 1 else None


def save_checkpoint(accelerator, run_dir: Path, step: int) -> Path:
    """`accelerator.save_state` into checkpoints/step-N, written beside it and renamed (never half a checkpoint)."""
    path = run_dir / "checkpoints" / f"step-{step}"
    tmp = path.with_name(path.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = [p for p in run_dir.glob("checkpoints/step-*") if re.fullmatch(r"step-\d+", p.name)]
    found = sorted((p for p in found if (p / WEIGHTS_FILE).exists()), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def load_checkpoint(accelerator, path: Path) -> None:
    if not (path / "optimizer.bin").exists():
        raise InputError(
            f"{path} was written by an older trainer (one state.pt) and cannot be resumed: start a new run.",
            field="resume",
        )
    accelerator.load_state(str(path))


# ---------------------------------------------------------------------------------------------- logging
def log_metrics(accelerator, path: Path, logs: dict) -> None:
    """One JSON line in metrics.jsonl (front ends plot the loss from it) and the scalars to the trackers."""
    if not accelerator.is_main_process:
        return
    with open(path, "a") as handle:
        handle.write(json.dumps(logs) + "\n")
    scalars = {
        f"train/{k}": v for k, v in logs.items() if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)
    }
    accelerator.log(scalars, step=logs["step"])


def _tracker() -> str | None:
    from accelerate.utils import is_tensorboard_available

    return "tensorboard" if is_tensorboard_available() else None  # requirements.txt has it; train without if removed


def _hparams(config: TrainConfig) -> dict:
    """The config as TensorBoard hparams (which take no None)."""
    return {k: v for k, v in asdict(config).items() if v is not None}


# ---------------------------------------------------------------------------------------------- the loop
def fit(config: TrainConfig, resume: bool = False, max_steps: int | None = None) -> dict:
    """Train; returns a summary (final step, last losses, paths). `max_steps` stops early (tests, front ends)."""
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(asdict(config), sort_keys=False))
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        cpu=not torch.cuda.is_available(),
        log_with=_tracker(),
        project_dir=str(run_dir),  # TensorBoard logs in run_dir/tensorboard
    )
    torch.manual_seed(config.seed)
    continuation.check_config(config)

    if config.stage == "distill":
        from training import distill

        distill.check_targets(config.cache_dir)
    clips, negative = load_cached(config.cache_dir)
    base = base_record(config)  # whose VAE and encoders the cache and so the weights belong to (final/humo_base.json)
    batch_fn = distill.make_batch if config.stage == "distill" else make_batch  # only the batch differs
    transformer, mask_head, params, variant = build_models(config)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    if mask_head is not None:
        transformer, mask_head, optimizer = accelerator.prepare(transformer, mask_head, optimizer)
    else:
        transformer, optimizer = accelerator.prepare(transformer, optimizer)
    # constant decay (min_decay = decay turns diffusers' warm-up off); its first update copies the weights
    ema = EMAModel(params, decay=config.ema_decay, min_decay=config.ema_decay) if config.ema_decay > 0 else None
    state = RunState(config.seed, accelerator)
    register_checkpointing(accelerator, state, ema)
    if resume and (ckpt := latest_checkpoint(run_dir)) is not None:
        load_checkpoint(accelerator, ckpt)
        if ema is not None:
            ema.to(accelerator.device)  # its loaded averages arrive on the CPU
        accelerator.print(f"resumed from {ckpt} at step {state.step}")
    accelerator.init_trackers("tensorboard", config=_hparams(config))

    metrics_path = run_dir / "metrics.jsonl"
    last_logs: dict = {}
    end = config.steps if max_steps is None else min(config.steps, state.step + max_steps)
    started = time.perf_counter()
    transformer.train()
    stop = _stop_on_sigterm()
    while state.step < end and not stop.is_set():
        indices = torch.randint(len(clips), (config.batch_size,), generator=state.generator).tolist()
        batch = batch_fn(clips, negative, indices, state.step, config, state.generator, variant)
        batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with accelerator.autocast():
            if config.stage == "distill" and config.roll_in > 0:
                batch = distill.roll_in(transformer, batch, config.roll_in, state.generator)
            loss, logs = compute_loss(transformer, mask_head, batch, config)
        accelerator.backward(loss)
        if config.max_grad_norm:
            accelerator.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        step = state.step
        if ema is not None:
            ema.step(params)
        logs.update(
            step=step,
            p_audio=batch["p_audio"],
            audio_tasks=int(batch["audio_task"].sum()),
            time_s=time.perf_counter() - started,
        )
        last_logs = logs
        if step % config.log_every == 0:
            log_metrics(accelerator, metrics_path, logs)
        if accelerator.is_main_process and (step % 10 == 0 or step == end):
            extra = f" mask {logs['mask_loss']:.4f}" if "mask_loss" in logs else ""
            print(
                f"step {step}/{config.steps} loss {logs['loss']:.4f}{extra} p_audio {logs['p_audio']:.2f}", flush=True
            )
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            save_checkpoint(accelerator, run_dir, step)
        if accelerator.is_main_process and config.validate_every and step % config.validate_every == 0:
            validate(config, accelerator.unwrap_model(transformer), step)

    summary = {"step": state.step, "last": last_logs, "run_dir": str(run_dir), "stopped": stop.is_set()}
    if config.checkpoint_every:
        save_checkpoint(accelerator, run_dir, state.step)
    if accelerator.is_main_process and state.step >= config.steps:
        final = save_final(run_dir, accelerator.unwrap_model(transformer), ema, params, config, base)
        summary["final"] = str(final)
    accelerator.end_training()
    return summary


def _stop_on_sigterm():
    """SIGTERM (a front end's Stop) ends the loop after the current step; the final checkpoint is still written."""
    import signal
    import threading

    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def _unwrap(model):
    """The model under accelerate/DDP wrappers (their `.module`)."""
    return getattr(model, "module", model)


def _base_model(transformer):
    """The HuMo transformer under a PEFT wrapper (its LoRA layers stay in place and active)."""
    return transformer.get_base_model() if hasattr(transformer, "get_base_model") else transformer


# ---------------------------------------------------------------------------------------------- outputs
def save_final(run_dir: Path, transformer, ema, params: list, config: TrainConfig, base: dict | None = None) -> Path:
    """The trained transformer in diffusers format (LoRA merged; EMA weights when enabled) -> run_dir/final, with
    its base record (engine.registry.BASE_FILE) so it loads on the VAE and encoders it was trained for."""
    if ema is not None:
        ema.copy_to(params)
    if config.lora_rank > 0:
        save_lora(transformer, run_dir / "lora.safetensors")  # the adapter alone loads with `--lora`
        transformer = transformer.merge_and_unload()  # PEFT: the plain model with the adapters merged in
    final = run_dir / "final"
    tmp = run_dir / "final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    transformer.save_pretrained(tmp)
    base = base or base_record(config)
    if base.get("base_model"):  # unknown only for a bare folder trained on an anonymous cache
        (tmp / BASE_FILE).write_text(json.dumps(base, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    if config.export_official:
        export_official(final, run_dir / "humo_official.safetensors")
    return final


def save_lora(peft_model, path: Path) -> Path:
    """The PEFT adapters as a LoRA file in diffusers/PEFT keys (engine.speed.load_lora), alpha / rank folded into
    lora_B: that loader assumes scale 1."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    lora = peft_model.peft_config["default"]
    scale = lora.lora_alpha / lora.r
    state = {
        k.removeprefix("base_model.model."): (v * scale if ".lora_B." in k else v).detach().contiguous()
        for k, v in get_peft_model_state_dict(peft_model).items()
    }
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)
    return path


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


def validation_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "validation" / f"step_{step:06d}.mp4"


def validate(config: TrainConfig, transformer, step: int) -> Path | None:
    """Render the first training clip's prompt, reference (and voice in stage 2) with the current weights into
    <run_dir>/validation/step_NNNNNN.mp4, the settings inside (engine.media.read_settings). Returns the path, or
    None when rendering failed: validation never stops training."""
    from engine.generate import GenerationRequest, generate_to_file
    from engine.registry import load_pipeline

    index = json.loads((Path(config.cache_dir) / "index.json").read_text())
    source = Path(index["source"])
    was_training = transformer.training
    try:
        entry = json.loads((source / "manifest.jsonl").read_text().splitlines()[0])
        model = _base_model(transformer)
        # the encoders the cache was made with (what the transformer learnt to read)
        pipe = load_pipeline(index.get("model_id") or "tiny", device=str(model.device))
        pipe.register_modules(transformer=model.eval())
        pipe.model_id = f"{pipe.model_id}+{Path(config.run_dir).name}@step{step}"  # the settings name the weights
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
        path, _ = generate_to_file(pipe, request, validation_path(config.run_dir, step))
        return path
    except Exception as exc:  # noqa: BLE001 - validation must never stop training
        print(f"validation at step {step} failed: {type(exc).__name__}: {exc}", flush=True)
        return None
    finally:
        transformer.train(was_training)


__all__ = [
    "TrainConfig",
    "fit",
    "setup_trainable",
    "add_lora",
    "make_batch",
    "compute_loss",
    "sample_sigmas",
    "export_official",
    "save_final",
    "validate",
    "validation_path",
]
