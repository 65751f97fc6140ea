"""`python -m training cache | fit | export` (argparse builders wired in training/__main__.py)."""

from __future__ import annotations

import json


def add_cache_parser(subparsers) -> None:
    p = subparsers.add_parser("cache", help="encode prepared clips with the model's VAE/umT5/Whisper into a cache")
    p.add_argument("--clips", required=True, help="folder made by `prepare` (manifest.jsonl)")
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--model", default="tiny", help="whose encoders: tiny | humo-1.7b | humo-17b")
    p.add_argument("--device", default=None)
    p.set_defaults(func=run_cache)


def run_cache(args) -> int:
    from engine.registry import load_pipeline
    from training.cache import build_cache

    pipe = load_pipeline(args.model, device=args.device)
    index = build_cache(pipe, args.clips, args.out)
    print(f"cached {len(index['clips'])} clips, {len(index['failed'])} refused -> {args.out}")
    return 0


def add_fit_parser(subparsers) -> None:
    p = subparsers.add_parser("fit", help="train stage 1 or 2 from a YAML config")
    p.add_argument("--config", required=True)
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.add_argument("--steps", type=int, default=None, help="override the config's total steps")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--base-model", default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--lora-rank", type=int, default=None)
    p.set_defaults(func=run_fit)


def run_fit(args) -> int:
    from training.trainer import TrainConfig, fit

    config = TrainConfig.from_yaml(
        args.config,
        steps=args.steps,
        run_dir=args.run_dir,
        cache_dir=args.cache_dir,
        base_model=args.base_model,
        learning_rate=args.learning_rate,
        lora_rank=args.lora_rank,
    )
    summary = fit(config, resume=args.resume)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def add_export_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="a trained diffusers folder -> official-key safetensors")
    p.add_argument("--checkpoint", required=True, help="e.g. data/runs/<run>/final")
    p.add_argument("--out", required=True)
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from training.trainer import export_official

    print(f"wrote {export_official(args.checkpoint, args.out)}")
    return 0
