"""HuMo-nano render time (issue #7: a 2-second clip in under a minute on 2 CPU cores).

    python bench/nano_bench.py [--steps 30 50] [--threads 2] [--runs 2]

Loads the bundled model the way the studio does (engine.registry.load_pipeline("humo-nano")), renders the bundled
example (assets/examples/cases.json "nano": 64x64, 49 frames = 2 s at 25 fps) and prints a table of wall times per
stage: load, text/audio/image encoding, denoising, VAE decode, total. Writes bench/out/nano_bench.json.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[30, 50])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2, help="renders per setting; the table shows the fastest")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from engine.registry import load_pipeline

    case = json.loads((ROOT / "assets/examples/cases.json").read_text())["nano"]
    started = time.perf_counter()
    pipe = load_pipeline("humo-nano", device="cpu")
    load_s = time.perf_counter() - started
    rows = []
    for steps in args.steps:
        best = None
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = pipe(
                prompt=case["prompt"],
                image=str(ROOT / case["img_paths"][0]),
                audio=str(ROOT / case["audio_path"]),
                height=64,
                width=64,
                num_inference_steps=steps,
                seed=0,
            )
            total = time.perf_counter() - t0
            if best is None or total < best["total_s"]:
                best = {"steps": steps, "frames": len(out.frames[0]), "total_s": total, **out.timings}
        rows.append(best)
    print(f"HuMo-nano, {args.threads} CPU threads, model load {load_s:.1f} s")
    print(f"{'steps':>5} {'frames':>6} {'encode s':>9} {'denoise s':>10} {'decode s':>9} {'total s':>8}")
    for r in rows:
        encode = r.get("text_s", 0) + r.get("audio_s", 0) + r.get("image_s", 0)
        print(
            f"{r['steps']:>5} {r['frames']:>6} {encode:>9.2f} {r.get('denoise_s', 0):>10.2f} "
            f"{r.get('decode_s', 0):>9.2f} {r['total_s']:>8.2f}"
        )
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "nano_bench.json").write_text(json.dumps({"load_s": load_s, "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
