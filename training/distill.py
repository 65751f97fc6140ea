"""The `distill` stage: a few-step student with the teacher's guidance folded in (one transformer pass per step).

    python -m training distill-targets --teacher humo-nano --out data/distill/targets   # teacher trajectories, once
    python -m training fit --config training/configs/distill_nano.yaml                   # the stage (the trainer)
    python -m training distill-nano                                                      # both + eval -> assets/

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
import shutil
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
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


# ---------------------------------------------------------------------------------------------- HuMo-nano student
NANO_STUDENT_CONFIG = Path(__file__).parent / "configs" / "distill_nano.yaml"
NANO_ROLL_IN_CONFIG = Path(__file__).parent / "configs" / "distill_nano_roll_in.yaml"


FRESH_WORLD_SEED = 2000  # offset of the fresh-people worlds (the held-out world is the budget's seed + 1000)
FRESH_NOISE_SEED = 100_000  # their noises, never one of the training world's
# New people come in worlds of a fixed size, the k-th world seeded FRESH_WORLD_SEED + k, and a leg takes the first N
# people of their concatenation: `sample_world` draws every person before the scenes, so a world of another size would
# give other clips under the same names (and a reused cache would not match); more people only add worlds
FRESH_WORLD = 640
FRESH_WORLDS = 900  # seeds 2000..2899 stay clear of the held-out world's 1000 and the training world's 0
NANO_TEACHER_STEPS = 28  # leg 1's trajectories (7 teacher steps per student step)
# leg 2's: many more people at 12 steps cost 2.3x less, and their final latents are 0.011 (mean square) from the
# 28-step teacher's on 16 held-out clips, against the student's 0.20: the target's own error is negligible
FRESH_TEACHER_STEPS = 12


def nano_requests(count: int, seed: int = 0, fresh: bool = False, world: int = FRESH_WORLD) -> list[TargetRequest]:
    """Prompts, references and voices of HuMo-nano's training world (its 120 people), or with `fresh` the first
    `count` new people (worlds of `world`), none of whom the teacher saw: a student needs the teacher's outputs, not
    its data, so any inputs are targets, and the held-out world stays unseen either way."""
    from training.nano import NanoBudget, sample_world

    budget = NanoBudget()
    if fresh and count > world * FRESH_WORLDS:
        raise InputError(f"there are {world * FRESH_WORLDS} new people; ask for at most that many.", field="fresh")
    size = (budget.height, budget.width)
    if fresh:
        examples = []
        for k in range(-(-count // world)):  # the first clips of a world: all its people, only those clips rendered
            drawn = sample_world(min(world, count - k * world), frames=budget.frames, size=size, identities=world,
                                 seed=budget.seed + FRESH_WORLD_SEED + k, prefix="d")  # fmt: skip
            examples += [replace(ex, name=f"d{k * world + i:04d}") for i, ex in enumerate(drawn)]
    else:
        examples = sample_world(count, frames=budget.frames, size=size, seed=budget.seed,
                                identities=budget.identities, prefix="w")  # fmt: skip
    seed += FRESH_NOISE_SEED if fresh else 0
    return [
        TargetRequest(ex.name, ex.caption, ex.reference, ex.waveform, budget.height, budget.width, budget.frames,
                      seed=seed + i)
        for i, ex in enumerate(examples)
    ]  # fmt: skip


class TimedPipe:
    """A pipeline whose calls record their `timings` (so training.nano.evaluate can be reused as is)."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.timings: list[dict] = []
        self.videos: list[np.ndarray] = []

    def __call__(self, **kwargs):
        out = self.pipe(**kwargs)
        self.timings.append(out.timings)
        self.videos.append((np.clip(out.frames[0], 0, 1) * 255).round().astype(np.uint8))
        return out


def compare(rows: dict, examples, seeds=(0, 1, 2)) -> list[dict]:
    """Held-out scores (training.nano.evaluate: identity, text, sync, |lag|, frame change) and timings of each
    `name -> (pipe, steps, guidance)`, averaged over seeds (std over seeds = the held-out noise), plus the PSNR of
    each video to the first row's (the reference: teacher at 30 steps, same noise)."""
    from training.nano import evaluate

    reference = None
    out = []
    for name, (pipe, steps, guidance) in rows.items():
        timed = TimedPipe(pipe)
        per_seed = [evaluate(timed, examples, steps=steps, guidance=guidance, seed=s) for s in seeds]
        videos = timed.videos[: len(examples)]  # the first seed's
        reference = reference if reference is not None else videos
        row = {"variant": name, "steps": steps, "passes_per_step": max(timed.timings[0]["passes_per_step"])}
        for key in per_seed[0]:
            values = [r[key] for r in per_seed]
            row[key], row[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
        row["psnr_to_teacher"] = float(np.mean([_psnr(v, r) for v, r in zip(videos, reference)]))
        row["denoise_s"] = float(np.median([t["denoise_s"] for t in timed.timings]))
        row["total_s"] = float(np.median([t["total_s"] for t in timed.timings]))
        out.append(row)
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def format_table(rows: list[dict]) -> str:
    lines = [
        "| model | steps | passes/step | denoise s | render s | identity ↑ | text ↑ | sync ↑ | \\|lag\\| ↓ "
        "| frame change | PSNR to teacher-30 (dB) ↑ |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{r[k]:.3f} ± {r[k + '_std']:.3f}" for k in ("identity", "text", "sync")]
        cells += [f"{r['abs_lag']:.2f} ± {r['abs_lag_std']:.2f}", f"{r['stability']:.2f} ± {r['stability_std']:.2f}"]
        psnr = "—" if not np.isfinite(r["psnr_to_teacher"]) else f"{r['psnr_to_teacher']:.1f}"
        lines.append(
            f"| {r['variant']} | {r['steps']} | {r['passes_per_step']} | {r['denoise_s']:.2f} | {r['total_s']:.2f} | "
            + " | ".join(cells)
            + f" | {psnr} |"
        )
    return "\n".join(lines)


def nano_rows(teacher, student, student_steps: int = 4) -> dict:
    """The comparison of the model card: teacher at 30 steps (official guidance), at `student_steps` (the baseline a
    student must beat), and the student (one pass per step)."""
    from engine.guidance import preset_schedule

    single = preset_schedule("single pass", student.variant, "TIA")
    return {
        "teacher (HuMo-nano)": (teacher, 30, None),
        f"teacher at {student_steps} steps": (teacher, student_steps, None),
        f"student (HuMo-nano-{student_steps}step)": (student, student_steps, single),
    }


def save_student(out_dir: Path, transformer_dir: Path, info: dict) -> Path:
    """assets/humo-nano-4step: transformer/ (fp16, as the teacher's) + student.json; the VAE and encoders are the
    teacher's (engine/nano.py loads them from assets/humo-nano). Written beside, then swapped in."""
    from engine.models import HuMoTransformer3DModel

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    HuMoTransformer3DModel.from_pretrained(transformer_dir).to(torch.float16).save_pretrained(tmp / "transformer")
    (tmp / STUDENT_DIR_FILE).write_text(json.dumps(info, indent=1))
    from training.nano import swap_in

    return swap_in(tmp, out_dir)


def build_nano_student(
    out_dir: str | Path = "assets/humo-nano-4step",
    work: str | Path = "data/distill-nano",
    clips: int = 480,
    steps: int | None = None,
    fresh: int = 0,
    fresh_steps: int | None = None,
    start_from: str | Path | None = None,
    heldout: int = 8,
    seeds=(0, 1, 2),
    log=print,
) -> dict:
    """Targets from the bundled HuMo-nano, the distill stage in one or two legs, the held-out comparison, and the
    bundled student.

    Leg 1 (distill_nano.yaml): `steps` on the teacher's states of `clips` training-world trajectories. Leg 2, with
    `fresh` (distill_nano_roll_in.yaml; `fresh_steps` overrides its steps): backward distillation (`roll_in`) on the
    trajectories of `fresh` new people, a fit of its own from leg 1's weights. `start_from`: a student folder whose
    transformer stands for leg 1 (leg 1 is then not run). Targets and runs in `work` are reused (resume)."""
    from engine.nano import load_nano_pipeline, load_nano_student_pipeline, nano_dir
    from training.nano import NanoBudget, heldout_world
    from training.trainer import TrainConfig, fit

    if start_from is not None and not fresh:
        raise InputError("--from replaces leg 1, so it needs leg 2: give --fresh N (new people).", field="fresh")
    work = Path(work)
    started = time.perf_counter()
    teacher = load_nano_pipeline()
    teacher.model_id = "humo-nano"
    teacher.set_progress_bar_config(disable=True)
    weights, legs, runs = None, [], []
    if start_from is None:
        config = TrainConfig.from_yaml(NANO_STUDENT_CONFIG, cache_dir=str(work / "targets"),
                                       run_dir=str(work / "run"), base_model=str(nano_dir() / "transformer"),
                                       steps=steps)  # fmt: skip
        runs.append((config, nano_requests(clips), {"trajectories": clips, "people": "training world",
                                                    "teacher_steps": NANO_TEACHER_STEPS}))  # fmt: skip
    else:  # leg 1 as it was trained: the legs of its student.json (a one-leg card has them at the top level)
        weights = Path(start_from) / "transformer"
        previous = json.loads((Path(start_from) / STUDENT_DIR_FILE).read_text())
        earlier = previous.get("legs") or [{**previous.get("train", {}), "trajectories": previous.get("trajectories"),
                                            "teacher_steps": previous.get("teacher_steps")}]  # fmt: skip
        legs += [{"from": str(start_from), **leg} for leg in earlier]
    if fresh:
        config = TrainConfig.from_yaml(NANO_ROLL_IN_CONFIG, cache_dir=str(work / "fresh-targets"),
                                       run_dir=str(work / "run-roll-in"), steps=fresh_steps)  # fmt: skip
        runs.append((config, nano_requests(fresh, fresh=True), {"trajectories": fresh, "people": "new",
                                                                "teacher_steps": FRESH_TEACHER_STEPS}))  # fmt: skip
    timings = {"targets_s": 0.0, "fit_s": 0.0}
    for config, requests, leg in runs:
        t0 = time.perf_counter()
        targets = build_targets(teacher, requests, config.cache_dir, teacher_steps=leg["teacher_steps"],
                                student_steps=4, log=log)  # fmt: skip
        leg["teacher_steps"] = targets["teacher_steps"]  # with the entries an earlier build made
        timings["targets_s"] += round(time.perf_counter() - t0, 1)
        if weights is not None:  # every leg after the first starts from the previous leg's weights
            config = replace(config, base_model=str(weights))
        t0 = time.perf_counter()
        summary = fit(config, resume=True)
        timings["fit_s"] += round(time.perf_counter() - t0, 1)
        weights = Path(summary["final"])
        train = ("steps", "batch_size", "learning_rate", "ema_decay", "roll_in")
        legs.append({**leg, **{k: v for k, v in vars(config).items() if k in train},
                     "final_loss": summary["last"].get("loss")})  # fmt: skip
    info = {
        "model": "humo-nano-4step",
        "teacher": "humo-nano",
        "method": "guided trajectory distillation" + (", then backward distillation" if fresh else ""),
        "sample_steps": 4,
        "scheduler": STUDENT_SCHEDULER,
        "guidance_preset": "single pass",
        "legs": legs,
        "timings_s": timings,
    }
    save_student(Path(out_dir), weights, info)
    t0 = time.perf_counter()
    student = load_nano_student_pipeline(root=out_dir)
    student.set_progress_bar_config(disable=True)
    rows = compare(nano_rows(teacher, student), heldout_world(NanoBudget())[:heldout], seeds)
    info["timings_s"]["eval_s"] = round(time.perf_counter() - t0, 1)
    info["total_s"] = round(time.perf_counter() - started, 1)
    info["heldout"] = {"clips": heldout, "seeds": list(seeds), "rows": rows}
    (Path(out_dir) / STUDENT_DIR_FILE).write_text(json.dumps(info, indent=1))
    log(format_table(rows))
    return info


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
    "compare",
    "format_table",
    "build_nano_student",
]
