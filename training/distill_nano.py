"""HuMo-nano's bundled 4-step student: the `distill` stage (training/distill.py) run on the bundled teacher in one
or two legs, the held-out comparison of the model card, and the swap into assets/humo-nano-4step.

    python -m training distill-nano

The recipe sits apart from the objective so the trainer, which imports the objective, never imports back the recipe
that calls it (training/distill.py <- training/trainer.py <- this module).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from engine.errors import InputError
from training.distill import STUDENT_DIR_FILE, STUDENT_SCHEDULER, TargetRequest, build_targets

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
