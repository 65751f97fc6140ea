"""Does keeping HuMo's audio guidance pay with a step-distill LoRA? Measured for real on HuMo-nano (issue 32).

    python bench/fast_recipe_bench.py [--clips 160] [--lora-rank 32] [--steps 1500] [--heldout 8] [--seeds 0 1 2]

The real recipe people run: a Wan step/CFG-distill LoRA (lightx2v, FusionX) on HuMo at 4 steps and CFG 1. Such a
LoRA folded *text* guidance into one pass but never saw HuMo's audio condition, so at CFG 1 the audio is present and
unguided. The same situation on HuMo-nano, with the project's own `distill` stage:

1. teacher targets from HuMo-nano with text and image guidance and the audio on in every branch (audio unguided:
   s_i[v(T,I,A) - v(T,0,A)] + s_t[v(T,0,A) - v(N,0,A)] + v(N,0,A), 3 passes, the official s_i, s_t), `--clips`
   training-world trajectories at 28 teacher steps, cached in `--work` (reused when present);
2. a LoRA student (`--lora-rank`) fit by the distill stage (training/configs/distill_nano.yaml with the rank, the
   steps and the learning rate given here), saved as `lora.safetensors` and loaded with `--lora` like any LoRA;
3. held-out scores (training.nano.evaluate on the held-out world, training.distill_nano.compare: identity, text, sync,
   |lag|, PSNR to the 30-step teacher) of: the teacher at 30 and 4 steps (official guidance), the teacher with the
   audio unguided (what the LoRA learnt), and the LoRA student at 4 steps with 1 pass ("single pass") and 2 passes
   ("distilled + audio": the audio branch against the no-audio one, at several scales, and only in the first steps).

Prints the table and writes bench/out/fast_recipe_bench.json. CPU time: the targets ~2.4 s each (3 passes x 28
steps), the fit ~0.4 s a step, the evaluation ~5 min, on 2 cores with no other job.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def audio_unguided(variant: str = "1.7b"):
    """The official text and image guidance with the audio on in every branch (a CFG-distill LoRA's view)."""
    from engine.guidance import DEFAULT_SCALES, Branch, GuidancePhase, GuidanceSchedule, _nested

    s = DEFAULT_SCALES[variant]
    t_i_a, t_0_a, n_0_a = Branch("pos", "ref", "on"), Branch("pos", "null", "on"), Branch("neg", "null", "on")
    weights = _nested([(s["scale_i"], t_i_a, t_0_a), (s["scale_t"], t_0_a, n_0_a)], base=n_0_a)
    return GuidanceSchedule([GuidancePhase(weights, name="main")], {"scale_i": s["scale_i"], "scale_t": s["scale_t"]},
                            variant, "TIA", "custom")  # fmt: skip


def build_student(args) -> tuple[Path, dict]:
    from engine.nano import load_nano_pipeline, nano_dir
    from training.distill import build_targets
    from training.distill_nano import NANO_STUDENT_CONFIG, nano_requests
    from training.trainer import TrainConfig, fit

    work = Path(args.work)
    teacher = load_nano_pipeline()
    teacher.model_id = "humo-nano"
    teacher.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    build_targets(teacher, nano_requests(args.clips), work / "targets", teacher_steps=args.teacher_steps,
                  student_steps=4, guidance=audio_unguided(), log=lambda *a: None)  # fmt: skip
    targets_s = time.perf_counter() - t0
    config = TrainConfig.from_yaml(NANO_STUDENT_CONFIG, cache_dir=str(work / "targets"), run_dir=str(work / "run"),
                                   base_model=str(nano_dir() / "transformer"), steps=args.steps,
                                   lora_rank=args.lora_rank, learning_rate=args.learning_rate)  # fmt: skip
    t0 = time.perf_counter()
    summary = fit(config, resume=True)
    fit_s = time.perf_counter() - t0
    return work / "run" / "lora.safetensors", {
        "clips": args.clips, "teacher_steps": args.teacher_steps, "lora_rank": args.lora_rank, "steps": args.steps,
        "learning_rate": args.learning_rate, "final_loss": summary["last"].get("loss"),
        "targets_s": round(targets_s, 1), "fit_s": round(fit_s, 1),
    }  # fmt: skip


def rows(teacher, student, name: str = "LoRA student", unguided: bool = True) -> dict:
    from engine.guidance import distilled_audio, preset_schedule

    single = preset_schedule("single pass", "1.7b", "TIA")
    out = {"teacher (official guidance)": (teacher, 30, None), "teacher at 4 steps": (teacher, 4, None)}
    if unguided:
        out["teacher, audio unguided (the LoRA's target)"] = (teacher, 30, audio_unguided())
    out[f"{name}, 1 pass"] = (student, 4, single)
    for scale in (1.5, 2.0, 3.0):
        out[f"{name}, 2 passes (s_a {scale:g})"] = (student, 4, distilled_audio("1.7b", "TIA", scale))
    early = preset_schedule("distilled + early audio", "1.7b", "TIA", scale_a=2.0)
    out[f"{name}, 2 passes while t > 900, then 1 (s_a 2)"] = (student, 4, early)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=160, help="teacher trajectories (training-world clips)")
    parser.add_argument("--teacher-steps", type=int, default=28)
    parser.add_argument("--lora-rank", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1500, help="distill-stage steps")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--heldout", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="data/fast-recipe")
    parser.add_argument("--bundled-student", action="store_true",
                        help="no build: the same question on the bundled HuMo-nano-4step (a full-weight student whose "
                             "targets had the audio guidance)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from engine.registry import load_pipeline
    from engine.speed import load_lora
    from training.distill import STUDENT_SCHEDULER
    from training.distill_nano import compare, format_table
    from training.nano import NanoBudget, heldout_world

    teacher = load_pipeline("humo-nano", device="cpu")
    if args.bundled_student:
        build, report = {"student": "humo-nano-4step (bundled)"}, "no LoRA"
        student, label = load_pipeline("humo-nano-4step", device="cpu"), "HuMo-nano-4step"
    else:
        lora, build = build_student(args)
        print(f"LoRA student: {build}", flush=True)
        student, label = load_pipeline("humo-nano", device="cpu", scheduler=STUDENT_SCHEDULER), "LoRA student"
        adapter = load_lora(student, lora)  # first: it is what fills pipe.lora_reports
        report = student.lora_reports[adapter].summary()
    for pipe in (teacher, student):
        pipe.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    table = compare(rows(teacher, student, label, unguided=not args.bundled_student),
                    heldout_world(NanoBudget())[: args.heldout], tuple(args.seeds))  # fmt: skip
    print(format_table(table))
    print(f"\n{report}\n({args.heldout} held-out clips x {len(args.seeds)} seeds, {args.threads} threads, "
          f"evaluation {time.perf_counter() - t0:.0f} s)")  # fmt: skip
    out = ROOT / "bench" / "out" / "fast_recipe_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"build": build, "lora_report": report, "heldout": args.heldout, "seeds": args.seeds,
                               "rows": table}, indent=1))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
