"""HuMo-nano's continuation fine-tune: the training world encoded with the bundled model's own encoders, then the
`continuation` objective (training/continuation.py) run by the trainer from the bundled transformer.

    python -m training.continuation_nano prepare      # world -> data/continuation-nano/cache (HuMo-nano's encoders)
    python -m training fit --config training/configs/continuation_nano.yaml

The recipe sits apart from the objective so the trainer, which imports the objective, never imports back the recipe
(as training/distill_nano.py does for the distill stage).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

NANO_CONTINUATION_CONFIG = Path(__file__).parent / "configs" / "continuation_nano.yaml"


def prepare(cache_dir: str | Path = "data/continuation-nano/cache", clips: int = 120) -> Path:
    """The first `clips` clips of HuMo-nano's training world (seed 0, its 120 people: one clip each at 120; 49 frames
    at 64x64; the held-out world, seed 1000, stays unseen) encoded with the bundled HuMo-nano's VAE and encoders."""
    from engine.registry import load_pipeline
    from training.nano import NanoBudget, encode_world, sample_world

    budget = NanoBudget()
    started = time.perf_counter()
    world = sample_world(clips, frames=budget.frames, size=(budget.height, budget.width), seed=budget.seed,
                         identities=budget.identities)  # fmt: skip
    print(f"world: {len(world)} clips in {time.perf_counter() - started:.0f} s", flush=True)
    pipe = load_pipeline("humo-nano", device="cpu", torch_dtype=torch.float32)
    return encode_world(pipe, world, Path(cache_dir), audio_tag="humo-nano")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="HuMo-nano's continuation fine-tune: data")
    parser.add_argument("command", choices=["prepare"])
    parser.add_argument("--cache-dir", default="data/continuation-nano/cache")
    parser.add_argument("--clips", type=int, default=120)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    prepare(args.cache_dir, args.clips)
    print(f"cache ready in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
