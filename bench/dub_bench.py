"""Dubbing on the synthetic world, where the true dub is known (issue #15).

    python bench/dub_bench.py [--clips 8] [--steps 10] [--frames 25] [--threads 2]

Held-out clips (people, scenes and voices the HuMo-nano build never saw): the world renders each clip twice with
the same person, scene and head motion, once speaking with voice A (the source) and once with voice B (the
ground-truth dub, training/synth.py render_dub_pair). Every row dubs the voice-A clip to voice B with HuMo-nano and is
scored against the truth:

- sync B / sync A: correlation of the mouth opening with voice B / voice A (training/analysis.py sync; best lag within
  ±5 frames). A dub must follow B by a margin; the source follows A.
- PSNR in / out: PSNR (dB) to the ground-truth dub inside / outside the face mask (the default-strength mask, the same
  region for every row).
- out / VAE: mean absolute change to the source outside the mask, divided by the change a plain VAE round trip of the
  source makes there (the floor of any latent method; goal <= 1.2x).
- identity: training/analysis.py identity score of the video against the source's first frame (1 = same colours).

Rows: the source with the new audio only (baseline), full regeneration from a still (today's pipeline, the source's
first frame as the reference), training-free dubbing at two strengths, and the strength-0.5 dub without the pixel
composite (the latent blending alone). No trained variant is reported: none was built. Clips whose face the Haar
detector does not find on the first second are replaced by the next draw (the count is printed).
Prints a markdown table and writes bench/out/dub_bench.json.
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


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 10 * np.log10(255**2 / mse) if mse > 0 else float("inf")  # inf: the very same pixels


def held_out_clips(count: int, frames: int, size: tuple[int, int], seed: int = 2000):
    """(name, identity, scene, pair, mask, face_frame) for `count` clips whose face the detector finds."""
    from engine import dub
    from engine.errors import InputError
    from training import synth

    rng = np.random.default_rng([seed, 11])
    clips, skipped = [], 0
    while len(clips) < count:
        identity, scene = synth.sample_identity(rng, f"d{len(clips) + skipped:03d}"), synth.sample_scene(rng)
        voice = int(rng.integers(1 << 30))
        pair = synth.render_dub_pair(identity, scene, frames=frames, size=size, seed=voice, voice_seed=voice + 1)
        try:
            start, box = dub.find_face(pair["video_a"])
        except InputError:
            skipped += 1
            continue
        mask = dub.face_mask(dub.track_face(pair["video_a"], start, box), size)
        clips.append((identity.name, identity, scene, pair, mask, start))
    return clips, skipped


def score(video: np.ndarray, pair: dict, mask: np.ndarray, floor: float) -> dict:
    from training.analysis import identity_score, locate_faces, sync

    source, truth = pair["video_a"], pair["video_b"]
    boxes = locate_faces(video)
    inside, outside = mask > 0.5, mask == 0
    change = float(np.abs(video.astype(np.float32) - source.astype(np.float32))[outside].mean())
    return {
        "sync_b": sync(video, boxes, pair["wav_b"])[0],
        "sync_a": sync(video, boxes, pair["wav_a"])[0],
        "psnr_in": psnr(video[inside], truth[inside]),
        "psnr_out": psnr(video[outside], truth[outside]),
        "out_vs_vae": change / max(floor, 1e-6),
        "identity": identity_score(source[0], video),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from engine import dub, known_latents, media
    from engine.nano import load_nano_pipeline
    from training import synth

    started = time.perf_counter()
    pipe = load_nano_pipeline()
    size = tuple(pipe.default_size)
    clips, skipped = held_out_clips(args.clips, args.frames, size)
    rows: dict[str, list[dict]] = {}

    def add(name: str, video: np.ndarray, pair, mask, floor) -> None:
        rows.setdefault(name, []).append(score(video, pair, mask, floor))

    for name, identity, scene, pair, mask, start in clips:
        source = pair["video_a"]
        roundtrip = pipe.decode_latents(pipe._vae_encode(known_latents.video_tensor(source, len(source), *size)))[0]
        roundtrip = media.to_uint8(((roundtrip.permute(1, 2, 3, 0) + 1) / 2).numpy())
        floor = float(np.abs(roundtrip.astype(np.float32) - source.astype(np.float32))[mask == 0].mean())
        caption = synth.caption_for(identity, scene)
        add("source + new audio (baseline)", source, pair, mask, floor)
        full = pipe(prompt=caption, image=source[start], audio=pair["wav_b"], height=size[0], width=size[1],
                    num_frames=len(source), num_inference_steps=args.steps, seed=args.seed).frames[0]  # fmt: skip
        add("full regeneration from a still", media.to_uint8(full), pair, mask, floor)
        for strength in (0.5, 1.0):
            region = mask if strength == 0.5 else None
            if region is None:
                region = dub.face_mask(dub.track_face(source, start, dub.find_face(source)[1]), size, strength=strength)
            plan = dub.DubPlan(source, pair["wav_b"], region, len(source), None, start, None)
            request = dub.DubRequest(video="", audio="", prompt=caption, strength=strength,
                                     num_inference_steps=args.steps, seed=args.seed)  # fmt: skip
            video, output = dub.run_dub(pipe, request, plan)
            add(f"dub, strength {strength}", video, pair, mask, floor)
            if strength == 0.5:
                add("dub, strength 0.5, no pixel composite", media.to_uint8(output.frames[0]), pair, mask, floor)
        print(f"{name} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    keys = ("sync_b", "sync_a", "psnr_in", "psnr_out", "out_vs_vae", "identity")
    table = {name: {k: float(np.mean([r[k] for r in scores])) for k in keys} for name, scores in rows.items()}
    print(f"HuMo-nano, {len(clips)} held-out clips ({skipped} draws skipped: no face found), {args.frames} frames "
          f"{size[0]}x{size[1]}, {args.steps} steps, seed {args.seed}, {time.perf_counter() - started:.0f} s")  # fmt: skip
    print("| row | sync B ↑ | sync A | B − A ↑ | PSNR in (dB) ↑ | PSNR out (dB) ↑ | out / VAE ↓ | identity ↑ |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m in table.items():
        print(f"| {name} | {m['sync_b']:.3f} | {m['sync_a']:.3f} | {m['sync_b'] - m['sync_a']:+.3f} | "
              f"{m['psnr_in']:.2f} | {m['psnr_out']:.2f} | {m['out_vs_vae']:.2f}x | {m['identity']:.3f} |")  # fmt: skip
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"args": vars(args), "clips": [c[0] for c in clips], "skipped": skipped, "table": table, "rows": rows}
    (out_dir / "dub_bench.json").write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
