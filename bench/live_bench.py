"""Live generation (issue #30): time to first frame, real-time factor, and quality across chunks.

    python bench/live_bench.py [--threads 2] [--voices 8 30] [--clips 4] [--quality-models humo-nano-4step humo-nano]

Speed, on this machine: HuMo-nano (its 30 steps) and HuMo-nano-4step make the bundled example (nano_face.png, its
prompt) chunk by chunk (engine/live.py, 49-frame chunks, 5 motion frames) for an 8-s voice (the bundled 1.96-s
voice four times) and a 30-s synthesized voice (training.synth.synth_speech). Per row: time to first frame (the
first chunk final, encoders included), real-time factor (seconds of video per second of wall time; above 1 the
clip is made faster than it plays), the start delay a player needs to never stall (max over chunks of the chunk's
final time minus its play time), and the windowed long video's time to its (only, whole) result for the 8-s voice.
Projected for HuMo-1.7B / 17B from the H100 pass times in bench/RESULTS.md (denoising only).

Quality, on held-out clips of the synthetic world (new people, 8 s each; training/analysis.py scores): live chunks,
the same without colour matching,
chunks made independently (no motion frames: what the motion frames buy) and the windowed long video
(window_frames=49). Identity per 2-s block (first, last, min), colour drift (largest distance of a block's mean RGB
from the first block's, 0-255), the largest frame-to-frame change at a chunk seam vs the 95th percentile and
maximum inside chunks, sync (correlation of mouth opening and voice loudness) and |lag|.

Writes bench/out/live_bench.json (`--json`). Continuation (training/continuation.py): `--modes "live, clean hold" ...`
and `--tuned NAME=FOLDER` add rows for the clean motion hold and for a fine-tuned transformer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNK = 49
MOTION = 5
FPS = 25
# H100 seconds per transformer pass at 480x832x97 (bench/RESULTS.md, gpu_bench.py) and the official passes per step.
H100_PASS_S = {"HuMo-1.7B": (0.940, 4), "HuMo-17B": (5.109, 3)}


def example():
    case = json.loads((ROOT / "assets/examples/cases.json").read_text())["nano"]
    return case["prompt"], str(ROOT / case["img_paths"][0]), str(ROOT / case["audio_path"])


def voices(seconds: list[float]) -> dict[float, np.ndarray]:
    """8 s: the bundled voice repeated; longer: a synthesized voice (training.synth)."""
    from engine.audio import load_audio
    from training.synth import synth_speech

    _, _, audio = example()
    bundled = load_audio(audio)
    out = {}
    for s in seconds:
        n = int(s * 16000)
        if s <= 8:
            out[s] = np.resize(bundled, n).astype(np.float32)
        else:
            out[s] = synth_speech(n, np.random.default_rng(30))
    return out


def speed_row(pipe, name: str, steps: int, seconds: float, waveform: np.ndarray) -> dict:
    from engine import live

    prompt, image, _ = example()
    started = time.perf_counter()
    chunks = []
    for chunk in live.generate_chunks(pipe, prompt, image=image, audio=waveform, chunk_frames=CHUNK,
                                      motion_frames=MOTION, seed=0, height=64, width=64, num_inference_steps=steps):  # fmt: skip
        chunks.append((chunk.start_frame, chunk.end_frame, chunk.elapsed_s))
    total = time.perf_counter() - started
    frames = chunks[-1][1]
    return {
        "model": name,
        "steps": steps,
        "voice_s": seconds,
        "frames": frames,
        "chunks": len(chunks),
        "first_frame_s": chunks[0][2],
        "total_s": total,
        "rtf": frames / FPS / total,
        "start_delay_s": max(0.0, max(t - start / FPS for start, _, t in chunks)),
        "chunk_s": [round(b[2] - a[2], 3) for a, b in zip([(0, 0, 0.0)] + chunks, chunks)],
    }


def windowed_row(pipe, name: str, steps: int, waveform: np.ndarray) -> float:
    prompt, image, _ = example()
    started = time.perf_counter()
    pipe(prompt, image=image, audio=waveform, height=64, width=64, num_inference_steps=steps, seed=0,
         window_frames=CHUNK)  # fmt: skip
    return time.perf_counter() - started


def projections() -> list[dict]:
    """HuMo-1.7B / 17B chunks of 97 frames (92 new) at 480x832: denoising time per chunk from the H100 pass time."""
    rows = []
    new_s = (97 - MOTION) / FPS
    for model, (pass_s, passes) in H100_PASS_S.items():
        for label, steps, n in (("official 50 steps", 50, passes), ("4-step LoRA, 1 pass", 4, 1)):
            chunk_s = pass_s * steps * n
            rows.append({"model": model, "recipe": label, "chunk_s": chunk_s, "first_frame_s": chunk_s,
                         "rtf": new_s / chunk_s})  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------- quality
def independent_chunks(pipe, ex, steps: int) -> tuple[np.ndarray, list[int]]:
    """Each chunk's span made by the plain call with no motion frames (same seeds, same audio windows)."""
    from engine import audio as audio_lib
    from engine import live

    features = audio_lib.audio_features(ex.waveform, pipe.audio_encoder, pipe.feature_extractor)
    spans = live.plan_chunks(len(ex.video), CHUNK, MOTION)
    parts, seams = [], []
    for index, (start, end) in enumerate(spans):
        out = pipe(ex.caption, image=ex.reference, audio_embeds=audio_lib.window_audio_features(features[start:],
                   end - start), num_frames=end - start, height=64, width=64, num_inference_steps=steps,
                   seed=live.chunk_seed(0, index)).frames[0]  # fmt: skip
        first = 0 if index == 0 else MOTION
        parts.append(out[first:])
        if index:
            seams.append(start + first)
    return np.concatenate(parts), seams


def live_video(pipe, ex, steps: int, color_match: bool = True, hold: str = "noised") -> tuple[np.ndarray, list[int]]:
    from engine import live

    chunks = list(live.generate_chunks(pipe, ex.caption, image=ex.reference, audio=ex.waveform,
                                       num_frames=len(ex.video), chunk_frames=CHUNK, motion_frames=MOTION, seed=0,
                                       color_match=color_match, height=64, width=64, num_inference_steps=steps,
                                       motion_hold=hold))  # fmt: skip
    return np.concatenate([c.frames for c in chunks]), [c.start_frame for c in chunks[1:]]


def windowed_video(pipe, ex, steps: int) -> np.ndarray:
    return pipe(ex.caption, image=ex.reference, audio=ex.waveform, num_frames=len(ex.video), height=64, width=64,
                num_inference_steps=steps, seed=0, window_frames=CHUNK).frames[0]  # fmt: skip


def quality(video: np.ndarray, ex, seams: list[int]) -> dict:
    from engine.long_video import seam_report
    from training.analysis import identity_score, locate_faces, sync

    video = (np.clip(video, 0, 1) * 255).round().astype(np.uint8)
    blocks = [video[i : i + CHUNK] for i in range(0, len(video) - CHUNK // 2, CHUNK)]
    identity = [identity_score(ex.reference, b) for b in blocks]
    means = np.array([b.reshape(-1, 3).mean(0) for b in blocks])
    report = seam_report(video, seams)
    corr, lag = sync(video, locate_faces(video), ex.waveform)
    return {
        "identity_first": identity[0],
        "identity_last": identity[-1],
        "identity_min": min(identity),
        "colour_drift": float(np.linalg.norm(means - means[0], axis=1).max()),
        "seam_max": max(report["seams"]),
        "within_p95": report["within_p95"],
        "within_max": report["within_max"],
        "sync": corr,
        "abs_lag": abs(lag),
    }


MODES = ("live chunks", "live, no colour match", "independent chunks", "windowed long video", "live, clean hold")


def mode_video(pipe, ex, steps: int, mode: str) -> np.ndarray:
    if mode == "independent chunks":
        return independent_chunks(pipe, ex, steps)[0]
    if mode == "windowed long video":
        return windowed_video(pipe, ex, steps)
    hold = "clean" if mode == "live, clean hold" else "noised"
    return live_video(pipe, ex, steps, color_match=mode != "live, no colour match", hold=hold)[0]


def quality_rows(pipe, name: str, steps: int, clips: int, seconds: float, modes=MODES[:4]) -> list[dict]:
    """`modes`: any of MODES; "live, clean hold" holds the motion frames clean (pipe(motion_hold="clean"), what a
    continuation-tuned model is trained for, training/continuation.py) instead of noised to each step's level."""
    from engine import live
    from training.nano import NanoBudget, sample_world

    budget = NanoBudget()
    frames = int(seconds * FPS) // 4 * 4 + 1
    world = sample_world(clips, frames=frames, size=(64, 64), seed=budget.seed + 1000, prefix="h")
    rows = {mode: [] for mode in modes}
    for ex in world:
        seams = [start + MOTION for start, _ in live.plan_chunks(len(ex.video), CHUNK, MOTION)[1:]]  # 1st new frame
        for mode in modes:
            started = time.perf_counter()
            rows[mode].append(quality(mode_video(pipe, ex, steps, mode), ex, seams))
            wall = round(time.perf_counter() - started, 1)
            print(
                json.dumps({"model": name, "clip": ex.name, "mode": mode, "wall_s": wall, **rows[mode][-1]}), flush=True
            )
    out = []
    for mode, scores in rows.items():
        mean = {k: float(np.nanmean([s[k] for s in scores])) for k in scores[0]}
        out.append({"model": name, "steps": steps, "mode": mode, "clips": clips, **mean})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--voices", type=float, nargs="+", default=[8, 30])
    parser.add_argument("--speed-models", nargs="*", default=["humo-nano-4step", "humo-nano"])
    parser.add_argument("--quality-models", nargs="*", default=["humo-nano-4step", "humo-nano"])
    parser.add_argument("--clips", type=int, default=4, help="held-out clips for the quality table")
    parser.add_argument("--clip-seconds", type=float, default=8.0)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES[:4]), help="quality table modes")
    parser.add_argument("--tuned", nargs="*", default=[], metavar="NAME=FOLDER",
                        help="quality rows for fine-tuned transformers: NAME=a diffusers transformer folder (e.g. a "
                             "continuation run's final/) on --tuned-base's VAE and encoders")  # fmt: skip
    parser.add_argument("--tuned-base", default="humo-nano")
    parser.add_argument("--steps", type=int, default=None, help="quality rows: sampling steps (default: the model's)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "out" / "live_bench.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from engine.registry import get_spec, load_pipeline

    pipes = {}

    def pipe_of(name):
        if name not in pipes:
            pipes[name] = load_pipeline(name, device="cpu")
        return pipes[name]

    speed, windowed = [], {}
    for name in args.speed_models:
        steps = get_spec(name).steps()
        for seconds, waveform in voices(args.voices).items():
            speed.append(speed_row(pipe_of(name), name, steps, seconds, waveform))
            print(json.dumps(speed[-1]), flush=True)
        short = min(args.voices)
        windowed[name] = windowed_row(pipe_of(name), name, steps, voices([short])[short])
    print(f"\nLive (chunks of {CHUNK} frames, {MOTION} motion frames), {args.threads} CPU threads, 64x64")
    print(f"{'model':<16} {'steps':>5} {'voice s':>7} {'chunks':>6} {'first frame s':>13} {'total s':>8} "
          f"{'RTF':>5} {'start delay s':>13}")  # fmt: skip
    for r in speed:
        print(f"{r['model']:<16} {r['steps']:>5} {r['voice_s']:>7g} {r['chunks']:>6} {r['first_frame_s']:>13.2f} "
              f"{r['total_s']:>8.2f} {r['rtf']:>5.2f} {r['start_delay_s']:>13.2f}")  # fmt: skip
    for name, seconds in windowed.items():
        print(f"windowed long video, {name}, {min(args.voices):g}-s voice: first (= whole) result at {seconds:.2f} s")
    projected = projections()
    print("\nProjected, H100, 480x832, chunks of 97 frames (92 new = 3.68 s), denoising only")
    for r in projected:
        print(f"{r['model']:<10} {r['recipe']:<22} chunk {r['chunk_s']:>7.1f} s  RTF {r['rtf']:.3f}")

    quality_table = []
    for name in args.quality_models:
        if args.clips:
            steps = args.steps or get_spec(name).steps()
            quality_table += quality_rows(pipe_of(name), name, steps, args.clips, args.clip_seconds, args.modes)
    for item in args.tuned:
        from engine.models import HuMoTransformer3DModel

        name, folder = item.split("=", 1)
        pipe = load_pipeline(args.tuned_base, device="cpu")  # its own copy: the base's rows keep the base's weights
        pipe.register_modules(transformer=HuMoTransformer3DModel.from_pretrained(folder).eval())
        steps = args.steps or get_spec(args.tuned_base).steps()
        quality_table += quality_rows(pipe, name, steps, args.clips, args.clip_seconds, args.modes)
    if quality_table:
        print(f"\nQuality, {args.clips} held-out synthetic clips of {args.clip_seconds:g} s")
        print(f"{'model':<16} {'mode':<22} {'id first':>8} {'id last':>8} {'id min':>7} {'drift':>6} {'seam max':>8} "
              f"{'in p95':>7} {'in max':>7} {'sync':>6} {'|lag|':>6}")  # fmt: skip
        for r in quality_table:
            print(f"{r['model']:<16} {r['mode']:<22} {r['identity_first']:>8.3f} {r['identity_last']:>8.3f} "
                  f"{r['identity_min']:>7.3f} {r['colour_drift']:>6.1f} {r['seam_max']:>8.2f} {r['within_p95']:>7.2f} "
                  f"{r['within_max']:>7.2f} {r['sync']:>6.3f} {r['abs_lag']:>6.2f}")  # fmt: skip
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"speed": speed, "windowed_s": windowed, "projected": projected, "quality": quality_table}
    out.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
