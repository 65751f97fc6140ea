"""Teacher vs distilled student on CPU (issue #16): steps, passes, seconds, held-out scores, in one run.

    python bench/distill_bench.py [--heldout 8] [--seeds 0 1 2] [--threads 2]

Loads HuMo-nano and HuMo-nano-4step through the registry (as the studio and CLI do) and scores each row on the
held-out world (training/nano.py `evaluate`: new people, scenes and voices): the teacher at 30 steps with its official
guidance (4 passes per step), the teacher at 4 steps (the baseline a student must beat) and the student at 4 steps with
one pass. Scores are means over the seeds, ± their std (the held-out noise); "PSNR to teacher-30" compares each row's
video with the 30-step teacher's for the same noise. Seconds are medians over the renders (denoise: the denoising
loop; render: encoders + denoise + decode). Writes bench/out/distill_bench.json.
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from engine.registry import load_pipeline
    from training.distill import compare, format_table, nano_rows
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
    out = ROOT / "bench" / "out" / "distill_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"heldout": args.heldout, "seeds": args.seeds, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
