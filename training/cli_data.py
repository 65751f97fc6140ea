"""argparse pieces for the data verbs: `python -m training synth …` and the raw-clip half of `prepare`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from engine.errors import InputError


def parse_size(text: str) -> tuple[int, int] | None:
    """'480x832' -> (480, 832) as (height, width); 'none'/'source' -> None (keep the source size)."""
    if text.lower() in ("none", "source", "keep"):
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"size must look like 480x832 (height x width) or 'none', got {text!r}"
        ) from err
    return height, width


def add_synth_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `synth` verb to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser("synth", help="write a small synthetic talking-head dataset")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--num-clips", type=int, default=8)
    p.add_argument("--frames", type=int, default=33, help="frames per synthetic video (25 fps)")
    p.add_argument("--size", type=parse_size, default=(128, 128), help="HxW, default 128x128")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=("folder", "humoset", "jsonl"), default="folder")
    p.add_argument("--num-identities", type=int, default=None, help="distinct people (default: one per clip)")
    p.add_argument("--no-references", action="store_true", help="do not write reference images")
    p.add_argument("--image-pool", action="store_true", help="also write pool/<identity>/*.png")
    p.set_defaults(func=run_synth)
    return p


def run_synth(args: argparse.Namespace) -> int:
    from training.synth import make_synth_dataset

    if args.size is None:
        raise InputError("synth needs an explicit --size such as 128x128", field="size")
    path = make_synth_dataset(
        args.out,
        num_clips=args.num_clips,
        frames=args.frames,
        size=args.size,
        seed=args.seed,
        layout=args.layout,
        num_identities=args.num_identities,
        references=not args.no_references,
        image_pool=args.image_pool,
    )
    print(path)
    return 0


def add_prepare_raw_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the raw-clip options of `prepare` (input, output, cutting, filters, references, captions)."""
    g = parser.add_argument_group("raw clips")
    g.add_argument("--input", required=True, type=Path, help="HuMoSet folder, folder of videos, or manifest.jsonl")
    g.add_argument("--out", required=True, type=Path, help="output folder (resumable)")
    g.add_argument("--layout", choices=("humoset", "folder", "jsonl"), default=None, help="default: detected")
    g.add_argument("--frames", type=int, default=97, help="frames per clip, 4n+1 (default 97)")
    g.add_argument("--fps", type=int, default=25)
    g.add_argument("--size", type=parse_size, default=(480, 832), help="HxW (multiples of 16) or 'none'")
    g.add_argument("--max-clips-per-video", type=int, default=1, help="0 = every window")
    g.add_argument("--clip-stride", type=int, default=None, help="frames between window starts (default: --frames)")
    g.add_argument(
        "--captioner",
        nargs="?",
        const="Qwen/Qwen2.5-VL-3B-Instruct",
        default=None,
        help="caption clips without one with this VLM id or folder (flag alone: Qwen2.5-VL-3B-Instruct)",
    )
    g.add_argument("--no-speech-filter", action="store_true", help="keep clips without speech")
    g.add_argument("--min-speech-ratio", type=float, default=0.2)
    g.add_argument("--sync-threshold", type=float, default=None, help="drop clips with a lower sync score")
    g.add_argument("--sync-weights", type=Path, default=None, help="TorchScript SyncNet-style scorer (optional)")
    g.add_argument("--image-pool", type=Path, default=None, help="pool/<identity>/*.jpg references")
    g.add_argument("--faces", dest="face_source", choices=("auto", "detect", "sidecar"), default="auto")
    g.add_argument("--min-face-fraction", type=float, default=0.5)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run_prepare_raw(args: argparse.Namespace) -> int:
    from training.filters import SpeechConfig, load_sync_scorer
    from training.raw import build_clips

    captioner = None
    if args.captioner:
        from training.captions import Captioner

        captioner = Captioner(args.captioner)
    speech = False if args.no_speech_filter else SpeechConfig(min_ratio=args.min_speech_ratio)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    report = build_clips(
        args.input,
        args.out,
        frames=args.frames,
        fps=args.fps,
        size=args.size,
        captioner=captioner,
        speech_filter=speech,
        sync_threshold=args.sync_threshold,
        sync_scorer=load_sync_scorer(args.sync_weights),
        image_pool=args.image_pool,
        seed=args.seed,
        layout=args.layout,
        max_clips_per_video=args.max_clips_per_video or None,
        clip_stride=args.clip_stride,
        face_source=args.face_source,
        min_face_fraction=args.min_face_fraction,
        progress=not args.quiet,
    )
    summary = {k: v for k, v in report.to_dict().items() if k != "skipped_items"}
    print(json.dumps(summary, indent=1))
    return 0
