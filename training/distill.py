"""The `distill` stage: a few-step student with the teacher's guidance folded in (one transformer pass per step).

    python -m training distill-targets --teacher humo-nano --out data/distill/targets   # teacher trajectories, once
    python -m training fit --config training/configs/distill_nano.yaml                   # the stage (the trainer)
    python -m training distill-nano                                                      # both + eval (distill_nano.py)

Method: guided trajectory distillation. The target is the teacher's *guided* sampler: its full time-adaptive
multi-modal CFG (3-4 passes per step, HuMo's official schedule) over `teacher_steps` steps. Its ODE trajectories are
recorded once at the student's `student_steps` grid points; the student, run with the fully conditioned branch only,
learns for each segment the one velocity whose Euler step from the teacher's state lands on the teacher's next
state, v* = (x_{k+1} - x_k) / (sigma_{k+1} - sigma_k). Guidance is folded in exactly as in stage 1 of Meng et al.,
"On Distillation of Guided Diffusion Models" (CVPR 2023); the step reduction regresses straight to the K-segment
trajectory in one round instead of halving the steps log2(N/K) times (their stage 2, progressive distillation), as
piecewise rectified flow (PeRFlow, Yan et al. 2024) and Hyper-SD's segmented trajectory targets do. Why this and not
DMD2: DMD2 needs a second, trained "fake score" network and the teacher's guided score on the student's samples at
every step (3-4 teacher passes + 2 fake-score passes per student step): on two CPU cores that is several times the
whole budget; trajectory targets are computed once, cached, and then training is plain regression at the cost of a
stage-2 step. The trade-off: the student only sees states on the teacher's trajectories (exposure bias after its
first step) and is bounded by the teacher at `teacher_steps`.

The teacher's grid must contain the student's: with the official sigma grid (engine/schedulers.py, linear in the
unshifted sigma) that holds when teacher_steps is a multiple of student_steps. The recorded state after a UniPC step
is the predictor's (the corrector of the next step is applied inside the scheduler and not exposed).

The targets are a training cache (index.json + one safetensors per trajectory), so `load_cached` reads them and the
trainer's loop, accelerate, LoRA, EMA, checkpoints and resume are the ones stages 0-2 use; only `make_batch` differs.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import InputError
from engine.guidance import Branch
from engine.pipeline import build_condition

DISTILL_STAGE = "distill"
STUDENT_SCHEDULER = "euler"  # the targets are Euler segments, so the student samples with Euler on the same grid
STUDENT_DIR_FILE = "student.json"


@dataclass
class TargetRequest:
    """One teacher trajectory to record: the inputs of a generation and its noise seed."""

    name: str
    prompt: str
    image: object  # path or RGB array
    audio: object | None  # path, 16 kHz waveform, or None
    height: int
    width: int
    num_frames: int
    seed: int = 0


def student_grid(student_steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps [K], sigmas [K + 1] ending at 0) of the student's sampler: what the pipeline feeds it."""
    from engine.schedulers import make_scheduler

    scheduler = make_scheduler(STUDENT_SCHEDULER, shift=shift)
    scheduler.set_timesteps(student_steps)
    return scheduler.timesteps.float().clone(), scheduler.sigmas.float().clone()


def check_steps(teacher_steps: int, student_steps: int) -> int:
    """The teacher steps per student step; refuses grids that do not nest."""
    if student_steps < 1 or teacher_steps < student_steps or teacher_steps % student_steps:
        raise InputError(
            f"teacher_steps ({teacher_steps}) must be a multiple of student_steps ({student_steps}) so that the "
            "student's grid points lie on the teacher's (e.g. 28 or 32 teacher steps for a 4-step student).",
            field="steps",
        )
    return teacher_steps // student_steps


def record_trajectory(pipe, request: TargetRequest, *, teacher_steps: int, student_steps: int, guidance=None):
    """Run the teacher through the pipeline's own loop and keep its latents at the student's grid points.

    Returns the tensors of one cache entry: states [K + 1, C, F_total, h, w] (state 0 the noise, state K the
    teacher's final latents), the conditioning the trainer rebuilds the student's inputs from, and the grid."""
    stride = check_steps(teacher_steps, student_steps)
    prompt_embeds, negative = pipe.encode_prompt(request.prompt, None)
    audio_embeds, num_frames = (None, request.num_frames)
    if request.audio is not None:
        audio_embeds, num_frames = pipe.encode_audio(request.audio, request.num_frames)
    ref_latents = pipe.encode_image([request.image], request.height, request.width)
    f_vid = (num_frames - 1) // pipe.vae_scale_factor_temporal + 1
    sf = pipe.vae_scale_factor_spatial
    shape = (1, pipe.transformer.config.out_channels, f_vid + 1, request.height // sf, request.width // sf)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(request.seed))
    states = [noise[0].clone()]

    def keep(_pipe, step, _t, kwargs):
        if (step + 1) % stride == 0:
            states.append(kwargs["latents"][0].float().cpu().clone())
        return {}

    pipe(
        prompt_embeds=prompt_embeds,
        negative_prompt_embeds=negative,
        audio_embeds=audio_embeds,
        image=request.image,
        height=request.height,
        width=request.width,
        num_frames=num_frames,
        num_inference_steps=teacher_steps,
        guidance=guidance,
        latents=noise,
        output_type="latent",
        callback_on_step_end=keep,
    )
    cfg = pipe.transformer.config
    audio = torch.zeros(f_vid, cfg.audio_window, cfg.audio_bands, cfg.audio_dim)
    if audio_embeds is not None:
        audio[: min(f_vid, len(audio_embeds))] = audio_embeds[:f_vid].float().cpu()
    audio = torch.cat([audio, torch.zeros_like(audio[:1])])  # the reference slot's window is always zero (§2.5)
    entry = {
        "states": torch.stack(states),
        "prompt_embeds": prompt_embeds[0].float().cpu(),
        "ref_latents": ref_latents[0].float().cpu(),
        "audio_embeds": audio,
        "has_audio": torch.tensor(audio_embeds is not None),
    }
    if pipe.variant == "17b":
        entry["zero_latents"] = pipe.zero_vae_latents(f_vid + 1, request.height, request.width)[0].float()
    return entry


def build_targets(
    pipe,
    requests: list[TargetRequest],
    out_dir: str | Path,
    *,
    teacher_steps: int = 28,
    student_steps: int = 4,
    guidance=None,
    log=print,
) -> dict:
    """Record every request's teacher trajectory into `out_dir` (a training cache; entries already there are kept,
    so an interrupted build continues). `guidance` None: the teacher's official schedule of each request's mode."""
    from training.cache import _atomic_save, write_index

    check_steps(teacher_steps, student_steps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shift = float(pipe.scheduler.config.get("flow_shift", pipe.scheduler.config.get("shift", 5.0)))
    timesteps, sigmas = student_grid(student_steps, shift)
    _, negative = pipe.encode_prompt("", None)
    _atomic_save({"negative_prompt_embeds": negative[0].float().cpu()}, out_dir / "negative.safetensors")
    started = time.perf_counter()
    made = Counter()  # teacher steps -> clips; entries kept from an earlier build say their own
    for index, request in enumerate(requests):
        path = out_dir / f"{request.name}.safetensors"
        if path.exists():
            made[_recorded_steps(path)] += 1
        else:
            entry = record_trajectory(
                pipe, request, teacher_steps=teacher_steps, student_steps=student_steps, guidance=guidance
            )
            _atomic_save(
                {**entry, "timesteps": timesteps, "sigmas": sigmas, "teacher_steps": torch.tensor(teacher_steps)},
                path,
            )
            made[teacher_steps] += 1
        if (index + 1) % 20 == 0 or index + 1 == len(requests):
            log(f"teacher targets {index + 1}/{len(requests)} ({time.perf_counter() - started:.0f} s)")
    index = {
        "clips": [r.name for r in requests],
        "failed": {},
        "model_id": pipe.model_id,
        "source": str(out_dir),
        "kind": "distill-targets",
        # one number, or how many clips had each when an earlier build's entries were kept
        "teacher_steps": next(iter(made)) if len(made) == 1 else {str(k): v for k, v in sorted(made.items(), key=str)},
        "student_steps": student_steps,
        "shift": shift,
        "guidance": guidance.to_dict() if guidance is not None else "official (per mode)",
    }
    return write_index(out_dir, index)


def _recorded_steps(path: Path) -> int | str:
    """The teacher steps an existing entry was made with (one scalar read; "unrecorded" for entries older than it)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return int(f.get_tensor("teacher_steps")) if "teacher_steps" in f.keys() else "unrecorded"


def check_targets(cache_dir: str | Path) -> dict:
    """The targets' index; a stage-1/2 cache given to the distill stage gets a message saying what to run."""
    path = Path(cache_dir) / "index.json"
    index = json.loads(path.read_text()) if path.exists() else {}
    if index.get("kind") != "distill-targets":
        raise InputError(
            f"{cache_dir} holds no teacher trajectories: the distill stage trains on them. Make them with "
            "`python -m training distill-targets --teacher MODEL --out DIR` and set cache_dir to DIR.",
            field="dataset",
        )
    return index


def make_batch(clips, negative, indices, step, config, gen: torch.Generator, variant: str, segments=None) -> dict:
    """The trainer's batch for the distill stage: a random segment k of each chosen trajectory (or the given
    `segments`); the student's input is the teacher's state x_k with the fully conditioned branch, its target the
    segment velocity."""
    from engine.pipeline import TEXT_LEN

    del step, config
    if segments is None:
        segments = torch.randint(clips[indices[0]]["timesteps"].numel(), (len(indices),), generator=gen).tolist()
    inputs, targets, timesteps = [], [], []
    for i, k in zip(indices, segments):
        clip = clips[i]
        x_k, x_next = clip["states"][k][None], clip["states"][k + 1][None]
        s_k, s_next = clip["sigmas"][k], clip["sigmas"][k + 1]
        f_vid = x_k.shape[2] - clip["ref_latents"].shape[1]
        targets.append((x_next - x_k)[:, :, :f_vid] / (s_next - s_k))
        timesteps.append(clip["timesteps"][k])
        branch = Branch("pos", "ref", "on" if bool(clip["has_audio"]) else "off")
        text = torch.nn.functional.pad(clip["prompt_embeds"], (0, 0, 0, TEXT_LEN - clip["prompt_embeds"].shape[0]))
        zero = clip.get("zero_latents")
        inputs.append(
            build_condition(
                variant,
                x_k,
                branch,
                prompt_embeds=text[None],
                negative_prompt_embeds=negative[None],
                ref_latents=clip["ref_latents"][None],
                zero_latents=zero[None] if zero is not None else None,
                audio_embeds=clip["audio_embeds"][None],
                num_ref=clip["ref_latents"].shape[1],
            )
        )
    merged = {k: torch.cat([i[k] for i in inputs]) for k in inputs[0]}
    f_vid = targets[0].shape[2]
    return {
        **merged,
        "timestep": torch.stack(timesteps),
        "target": torch.cat(targets),
        "segment": torch.tensor(segments),
        # what `roll_in` needs to put the student on its own path: the noise, the teacher's next state, the grid
        "noise": torch.stack([clips[i]["states"][0][:, :f_vid] for i in indices]),
        "x_next": torch.stack([clips[i]["states"][k + 1][:, :f_vid] for i, k in zip(indices, segments)]),
        "grid_timesteps": torch.stack([clips[i]["timesteps"] for i in indices]),
        "grid_sigmas": torch.stack([clips[i]["sigmas"] for i in indices]),
        "audio_task": torch.zeros(len(indices), dtype=torch.bool),
        "p_audio": 0.0,
    }


@torch.no_grad()
def roll_in(transformer, batch: dict, share: float, gen: torch.Generator) -> dict:
    """Backward distillation (Imagine Flash, Kohler et al. 2024): a `share` of the samples start their segment k from
    the student's own state after k Euler steps from the trajectory's noise, and their target is the velocity from
    there to the teacher's next state, (x_{k+1} - x̂_k) / (sigma_{k+1} - sigma_k).

    Why: on the teacher's states the student's one-segment error is small on new people too (HuMo-nano: 0.007-0.016
    per segment, `trajectory_errors`), but in its own rollout each step's error moves the next input off the
    teacher's path, where the student was never trained, and the final error (0.23) is 6x the segments' sum.
    Aiming each step from where the student really is at the teacher's next state teaches it to steer back; for the
    last segment that target is exactly the one that minimises the final error. The roll-in runs the student being
    trained, without gradients (its cost: on average 1.5 extra forward passes per sample). On HuMo-nano, 400 steps
    on 75 trajectories cut the rollout error on them from 0.235 to 0.082 but not on held-out ones; 300 steps on 400
    new people gained 0.3 dB on held-out clips (README, Few steps): it needs many people."""
    segment = batch["segment"]
    chosen = (torch.rand(len(segment), generator=gen) < share).to(segment.device) & (segment > 0)
    if not chosen.any():
        return batch
    x = student_steps(transformer, batch, batch["noise"], torch.zeros_like(segment), torch.where(chosen, segment, 0))
    channels, f_vid = x.shape[1], x.shape[2]
    hidden = batch["hidden_states"].clone()
    hidden[chosen, :channels, :f_vid] = x[chosen].to(hidden.dtype)
    rows = torch.arange(len(segment), device=segment.device)
    sigmas = batch["grid_sigmas"]
    step = (sigmas[rows, segment + 1] - sigmas[rows, segment]).view(-1, 1, 1, 1, 1)
    target = torch.where(chosen.view(-1, 1, 1, 1, 1), (batch["x_next"] - x) / step, batch["target"])
    return {**batch, "hidden_states": hidden, "target": target, "rolled_in": chosen}


@torch.no_grad()
def student_steps(transformer, batch: dict, x: torch.Tensor, start: torch.Tensor, stop: torch.Tensor) -> torch.Tensor:
    """The video latents x [B, C, F_vid, h, w] after the student's own Euler steps start..stop-1 of each row, with
    the row's conditioning (`make_batch`) and grid: the sampler the student is run with, on the trainer's tensors."""
    x = x.clone()
    channels, f_vid = x.shape[1], x.shape[2]
    sigmas = batch["grid_sigmas"]
    for j in range(int(start.min()), int(stop.max())):
        rows = (start <= j) & (j < stop)
        inputs = batch["hidden_states"][rows].clone()
        inputs[:, :channels, :f_vid] = x[rows].to(inputs.dtype)
        velocity = transformer(
            hidden_states=inputs,
            timestep=batch["grid_timesteps"][rows, j],
            encoder_hidden_states=batch["encoder_hidden_states"][rows],
            audio_embeds=batch["audio_embeds"][rows],
        ).sample[:, :, :f_vid]
        x[rows] = x[rows] + (sigmas[rows, j + 1] - sigmas[rows, j]).view(-1, 1, 1, 1, 1) * velocity.float()
    return x


def trajectory_errors(transformer, clips, negative, variant: str) -> dict:
    """Where a student's error comes from, on teacher trajectories (held-out ones to measure generalisation).

    "segment": the mean squared error of the state each segment k ends in when it starts on the teacher's state
    x_k; "from_state": the error of the final latents when the student runs from the teacher's x_k to the end
    ("from_state"[0] is its own rollout from the noise, what a render does). A rollout error far above the sum of
    the segments' means that each step's error moves the next input where the student errs more: exposure bias."""
    count = clips[0]["timesteps"].numel()
    segment, final = torch.zeros(count, dtype=torch.float64), torch.zeros(count, dtype=torch.float64)
    ks = torch.arange(count)
    for clip in clips:
        batch = make_batch([clip], negative, [0] * count, 0, None, None, variant, segments=ks.tolist())
        f_vid = batch["target"].shape[2]
        states = batch["hidden_states"][:, : batch["noise"].shape[1], :f_vid]
        one = student_steps(transformer, batch, states, ks, ks + 1)
        segment += ((one - batch["x_next"]) ** 2).flatten(1).mean(1).double()
        rest = student_steps(transformer, batch, one, ks + 1, torch.full_like(ks, count))  # from where `one` ends
        final += ((rest - clip["states"][-1][:, :f_vid]) ** 2).flatten(1).mean(1).double()
    return {"segment": (segment / len(clips)).tolist(), "from_state": (final / len(clips)).tolist()}


def manifest_requests(clips_dir: str | Path, limit: int | None = None, seed: int = 0) -> list[TargetRequest]:
    """The prompts, references and voices of a `prepare` folder (manifest.jsonl): what a real teacher is run on."""
    clips_dir = Path(clips_dir)
    manifest = clips_dir / "manifest.jsonl"
    if not manifest.exists():
        raise InputError(f"{manifest} not found: run `python -m training prepare` first.", field="dataset")
    entries = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()][:limit]
    return [
        TargetRequest(
            str(e["id"]), e.get("caption") or "", str(clips_dir / e["reference"]),
            str(clips_dir / e["audio"]) if e.get("audio") and (clips_dir / e["audio"]).exists() else None,
            int(e["height"]), int(e["width"]), int(e["frames"]), seed=seed + i,
        )
        for i, e in enumerate(entries)
    ]  # fmt: skip


__all__ = [
    "DISTILL_STAGE",
    "TargetRequest",
    "build_targets",
    "record_trajectory",
    "check_targets",
    "make_batch",
    "roll_in",
    "student_steps",
    "trajectory_errors",
    "student_grid",
    "manifest_requests",
]
