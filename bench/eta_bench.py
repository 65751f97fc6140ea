"""Time estimates against real runs (issue 14 item 4: within ±25 %).

    python bench/eta_bench.py [--threads 2] [--long-seconds 8] [--clock wall|cpu]

Runs jobs through the studio's own job runner (studio.jobs.run_job: validation, the pipeline, the mp4, the row) in a
temporary data folder. Each model first makes one short calibration job (few steps, few frames: what a user's first
run teaches the studio); then every case is estimated by studio/eta.py from what has been measured so far, run,
and timed from call to return. Cases, in order (each later estimate may learn from the earlier runs, as in the
studio):

1. the README example: HuMo-nano, the bundled face and voice, 64x64, frames from the audio, its default steps;
2. a 480p-shaped job on the tiny model: 480x832, 9 frames, 3 steps (tokens of a real 480p pass, tiny weights);
3. a long video on HuMo-nano: an `--long-seconds` voice (the bundled voice repeated) with Long video on
   (97-frame windows), 64x64.

Prints a table (estimate, real, error per case, and the denoise / decode parts) and writes bench/out/eta_bench.json.

`--clock cpu` makes every clock of the process (the pipeline's timings, the probes, the job's wall time) read the
process's CPU time instead: on a machine shared with other work, wall times swing with their load between the
calibration and the runs, while CPU seconds do not, so the estimate's own error shows (ffmpeg, a child process, is
then not counted on either side).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def long_voice(seconds: float, out: Path) -> str:
    """The bundled voice repeated to `seconds` (a real voice, so the audio checks pass)."""
    from engine.audio import SAMPLING_RATE, load_audio, write_wav

    voice = load_audio(str(ROOT / "assets/examples/nano_speech.wav"))
    reps = int(np.ceil(seconds * SAMPLING_RATE / len(voice)))
    return str(write_wav(out, np.tile(voice, reps)[: int(seconds * SAMPLING_RATE)]))


def cases(tmp: Path, long_seconds: float) -> tuple[list, list]:
    from engine.generate import GenerationRequest
    from studio.tab_generate import default_steps

    example = json.loads((ROOT / "assets/examples/cases.json").read_text())["nano"]
    face, voice = str(ROOT / example["img_paths"][0]), str(ROOT / example["audio_path"])
    nano = GenerationRequest(example["prompt"], [face], voice, height=64, width=64, seed=0,
                             num_inference_steps=default_steps("humo-nano"))  # fmt: skip
    tiny = GenerationRequest("a person talks", [face], voice, height=64, width=64, num_frames=9, seed=0,
                             num_inference_steps=3)  # fmt: skip
    calibration = [
        ("calibration", "humo-nano", replace(nano, num_frames=17, num_inference_steps=6)),
        ("calibration", "tiny", replace(tiny, num_inference_steps=2)),
    ]
    runs = [
        ("README example", "humo-nano", nano),
        ("480p-shaped (tiny)", "tiny", replace(tiny, height=480, width=832)),
        (f"long video {long_seconds:g} s", "humo-nano",
         replace(nano, audio=long_voice(long_seconds, tmp / "long.wav"), window_frames=97)),
    ]  # fmt: skip
    return calibration, runs


def run_case(ctx, name: str, model_id: str, request) -> dict:
    from studio import eta
    from studio.jobs import run_job, validate_request

    frames = validate_request(ctx, request)
    est = eta.estimate_request(ctx, request, frames, model_id, probe=True)  # what the job measures at its start
    started = time.perf_counter()
    result = run_job(ctx, request, model_id)
    real = time.perf_counter() - started
    if result.status != "done":
        raise RuntimeError(f"{name}: {result.status}: {result.error}")
    timings = result.settings["timings"]
    parts = est.parts or {}
    return {
        "case": name,
        "model": model_id,
        "size": f"{request.height}x{request.width}",
        "frames": frames,
        "steps": request.num_inference_steps,
        "passes": est.plan.passes,
        "windows": est.plan.windows,
        "estimate_s": est.total_s,
        "real_s": real,
        "error_pct": None if est.total_s is None else 100 * (est.total_s - real) / real,
        "denoise_est_s": parts.get("denoise"),
        "denoise_real_s": timings["denoise_s"],
        "decode_est_s": parts.get("decode"),
        "decode_real_s": timings["decode_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--long-seconds", type=float, default=8.0)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        time.perf_counter = time.process_time  # every module reads time.perf_counter() at call time

    from studio.context import StudioContext, StudioOptions

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        ctx = StudioContext.create(StudioOptions(data_dir=tmp / "data", model="humo-nano", device="cpu"))
        calibration, runs = cases(tmp, args.long_seconds)
        for model_id in dict.fromkeys(m for _, m, _ in calibration):
            ctx.pipeline(model_id)  # loading is not part of a job's time (the studio loads a model once)
        rows = [run_case(ctx, *case) for case in calibration + runs]
        ctx.store.close()

    def num(v, fmt):
        return "—" if v is None else format(v, fmt)

    header = (f"{'case':<22} {'model':<10} {'size':>8} {'frames':>6} {'steps':>5} {'passes':>6} {'win':>3} "
              f"{'est s':>7} {'real s':>7} {'error':>7} {'denoise est/real':>17} {'decode est/real':>16}")  # fmt: skip
    print(f"ETA estimate vs real, {args.threads} CPU threads, {args.clock} clock (studio/eta.py; calibration rows: "
          "probes only, no run yet)")  # fmt: skip
    print(header)
    for r in rows:
        print(
            f"{r['case']:<22} {r['model']:<10} {r['size']:>8} {r['frames']:>6} {r['steps']:>5} {r['passes']:>6} "
            f"{r['windows']:>3} {num(r['estimate_s'], '7.1f')} {r['real_s']:7.1f} {num(r['error_pct'], '+6.0f')}% "
            f"{num(r['denoise_est_s'], '8.1f')}/{r['denoise_real_s']:<8.1f} "
            f"{num(r['decode_est_s'], '7.2f')}/{r['decode_real_s']:<8.2f}"
        )
    out = ROOT / "bench/out/eta_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "clock": args.clock, "rows": rows}, indent=1))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
