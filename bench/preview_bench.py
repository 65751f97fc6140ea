"""What a predicted-clean-video preview costs (issue 29 item 3), per decoder, as a share of a denoising step.

    python bench/preview_bench.py [--steps 6] [--threads 2]

For each model (the tiny model at 480x832 x 9 frames -- the tokens of a real 480p pass on tiny weights -- and
HuMo-nano at its 64x64 with the bundled example's face and voice), one generation runs with a callback that, after
every step, times both preview decoders on that step's predicted clean latents (engine/preview.py: the fitted
projection upsampled; the real VAE on 2x-pooled latents, every 4th frame), each including its mp4 write. Step
times leave the previews out. Prints a table (seconds per preview, share of a step, previews' interval at the
studio's 10 % budget, and whether previews are on for a job of that many steps) and writes bench/out/preview_bench.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cases() -> list[dict]:
    nano = json.loads((ROOT / "assets/examples/cases.json").read_text())["nano"]
    return [
        {"model": "tiny", "kwargs": {"prompt": "a person talks", "height": 480, "width": 832, "num_frames": 9}},
        {
            "model": "humo-nano",
            "kwargs": {
                "prompt": nano["prompt"],
                "image": str(ROOT / nano["img_paths"][0]),
                "audio": str(ROOT / nano["audio_path"]),
            },
        },
    ]


def measure(model: str, kwargs: dict, steps: int) -> list[dict]:
    from engine import preview
    from engine.registry import load_pipeline

    pipe = load_pipeline(model, device="cpu")
    pipe._preview_projection = preview.fit_latent_rgb_projection(pipe.vae)  # one-time set-up, not a preview
    costs = {d: [] for d in preview.DECODERS}
    step_times, last = [], [time.perf_counter()]
    out_dir = Path(tempfile.mkdtemp())
    shape = {}

    def callback(p, step, t, tensors):
        step_times.append(time.perf_counter() - last[0])
        for decoder in preview.DECODERS:
            started = time.perf_counter()
            frames = p.clean_preview_frames(tensors["latents"], tensors["noise_pred"], step, decoder)
            preview.write_preview_video(frames, out_dir / f"{decoder}-{step}.mp4")
            costs[decoder].append(time.perf_counter() - started)
            shape[decoder] = tuple(frames.shape)
        last[0] = time.perf_counter()
        return {}

    pipe(**kwargs, num_inference_steps=steps, seed=0, output_type="np", callback_on_step_end=callback,
         callback_on_step_end_tensor_inputs=("latents", "noise_pred"))  # fmt: skip
    step_s = statistics.median(step_times[1:] or step_times)
    rows = []
    for decoder, values in costs.items():
        cost = statistics.median(values[1:] or values)
        budget = preview.PreviewBudget(steps, known_cost_s=cost)
        budget.steps_s, budget.steps = step_s * steps, steps
        rows.append(
            {
                "model": model,
                "size": f"{kwargs.get('height') or pipe.default_size[0]}x{kwargs.get('width') or pipe.default_size[1]}",
                "decoder": decoder,
                "frames": shape[decoder],
                "step_s": round(step_s, 4),
                "preview_s": round(cost, 4),
                "share_of_step": round(cost / step_s, 3),
                "every_steps_at_10pct": math.ceil(cost / (preview.PREVIEW_SHARE * step_s)),
                "on_for_job": not budget.off,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [row for case in cases() for row in measure(case["model"], case["kwargs"], args.steps)]
    header = (
        "| model | size | decoder | preview frames | step s | preview s | share of a step | every N steps (10 %) | on |"
    )
    print(header + "\n|" + "---|" * 9)
    for r in rows:
        print(f"| {r['model']} | {r['size']} | {r['decoder']} | {'x'.join(map(str, r['frames']))} | {r['step_s']:.3f} | "
              f"{r['preview_s']:.3f} | {r['share_of_step']:.0%} | {r['every_steps_at_10pct']} | {r['on_for_job']} |")  # fmt: skip
    out = ROOT / "bench/out/preview_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"steps": args.steps, "threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
