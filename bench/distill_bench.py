"""Teacher vs distilled student on CPU (issue #16): steps, passes, seconds, held-out scores, in one run.

    python bench/distill_bench.py [--heldout 8] [--seeds 0 1 2] [--threads 2]

Loads HuMo-nano and HuMo-nano-4step through the registry (as the studio and CLI do) and scores each row on the
held-out world (training/nano.py `evaluate`: new people, scenes and voices): the teacher at 30 steps with its official
guidance (4 passes per step), the teacher at 4 steps (the baseline a student must beat) and the student at 4 steps with
one pass. Scores are means over the seeds, ± their std (the held-out noise); "PSNR to teacher-30" compares each row's
video with the 30-step teacher's for the same noise. Seconds are medians over the renders (denoise: the denoising
loop; render: encoders + denoise + decode). Writes bench/out/distill_bench.json.

Then where the student's error comes from (`--trajectories N`, 0: skip): the 28-step teacher's trajectories of N
held-out clips (seed 0), the student's error after each segment started on the teacher's state, and its final error
started on the teacher's state k (k = 0: its own rollout, what a render does), against the teacher at 4 steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", type=int, default=8, help="held-out clips (at most 8)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trajectories", type=int, default=8, help="held-out trajectories for the error table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from engine.registry import load_pipeline
    from training.distill_nano import compare, format_table, nano_rows
    from training.nano import NanoBudget, heldout_world

    teacher, student = load_pipeline("humo-nano", device="cpu"), load_pipeline("humo-nano-4step", device="cpu")
    for pipe in (teacher, student):
        pipe.set_progress_bar_config(disable=True)
    rows = compare(nano_rows(teacher, student), heldout_world(NanoBudget())[: args.heldout], tuple(args.seeds))
    teacher30, student_row = rows[0], rows[-1]
    print(format_table(rows))
    print(
        f"\nstudent vs teacher-30: denoise {teacher30['denoise_s'] / student_row['denoise_s']:.1f}x faster, "
        f"render {teacher30['total_s'] / student_row['total_s']:.1f}x faster "
        f"({args.heldout} held-out clips x {len(args.seeds)} seeds, {args.threads} threads)"
    )
    result = {"heldout": args.heldout, "seeds": args.seeds, "rows": rows}
    if args.trajectories:
        result["errors"] = error_table(teacher, student, heldout_world(NanoBudget())[: args.trajectories])
    out = ROOT / "bench" / "out" / "distill_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


def error_table(teacher, student, examples) -> dict:
    """Final-latent and per-segment errors (mean square, video latents) to the 28-step teacher's trajectories."""
    import tempfile

    from training.cache import load_cached
    from training.distill import TargetRequest, build_targets, trajectory_errors
    from training.distill_nano import NANO_TEACHER_STEPS

    requests = [
        TargetRequest(ex.name, ex.caption, ex.reference, ex.waveform, *ex.video.shape[1:3], len(ex.video), seed=0)
        for ex in examples
    ]
    with tempfile.TemporaryDirectory() as tmp:
        build_targets(teacher, requests, tmp, teacher_steps=NANO_TEACHER_STEPS, student_steps=4, log=lambda *_: None)
        clips, negative = load_cached(tmp)
    errors = trajectory_errors(student.transformer, clips, negative, student.variant)
    teacher4 = []
    for request, clip in zip(requests, clips):
        states = clip["states"]
        latents = teacher(prompt=request.prompt, image=request.image, audio=request.audio, height=request.height,
                          width=request.width, num_frames=request.num_frames, num_inference_steps=4,
                          latents=states[0][None].clone(), output_type="latent").frames[0]  # fmt: skip
        teacher4.append(float(((latents[0].float() - states[-1][:, : latents.shape[2]]) ** 2).mean()))
    errors["teacher_4_steps"] = sum(teacher4) / len(teacher4)
    k = range(len(errors["segment"]))
    print(
        f"\nerrors to the 28-step teacher's trajectories ({len(examples)} held-out clips, mean square of the latents)"
    )
    print("| start | " + " | ".join(f"k={i}" for i in k) + " |\n|---|" + "---|" * len(k))
    print("| student, one segment from the teacher's x_k | " + " | ".join(f"{v:.4f}" for v in errors["segment"]) + " |")
    print("| student, x_k to the end | " + " | ".join(f"{v:.4f}" for v in errors["from_state"]) + " |")
    print(f"teacher at 4 steps, from the noise to the end: {errors['teacher_4_steps']:.4f}")
    return errors


if __name__ == "__main__":
    main()
