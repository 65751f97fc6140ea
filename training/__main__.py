"""`python -m training <verb>`: synth (synthetic dataset), prepare (raw videos -> training clips),
cache (encode clips), fit (stage 1 / 2 training), export (official key names)."""

from __future__ import annotations

import argparse
import sys

from engine.errors import HuMoError
from training.cli_data import add_prepare_raw_args, add_synth_parser, run_prepare_raw
from training.cli_fit import add_cache_parser, add_export_parser, add_fit_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description="HuMo training tools")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_synth_parser(subparsers)
    prepare = subparsers.add_parser("prepare", help="cut, filter and annotate raw videos into training clips")
    add_prepare_raw_args(prepare)
    prepare.add_argument(
        "--encode-with",
        default=None,
        metavar="MODEL",
        help="also encode the clips into OUT/cache with this model's encoders (tiny, humo-1.7b, ...)",
    )
    prepare.set_defaults(func=run_prepare)
    add_cache_parser(subparsers)
    add_fit_parser(subparsers)
    add_export_parser(subparsers)
    return parser


def run_prepare(args) -> int:
    """Clips, then (with --encode-with) the encoded cache next to them: the whole dataset build in one command."""
    code = run_prepare_raw(args)
    if code or not args.encode_with:
        return code
    from engine.registry import load_pipeline
    from training.cache import build_cache

    index = build_cache(load_pipeline(args.encode_with), args.out, f"{args.out}/cache")
    print(f"cached {len(index['clips'])} clips, {len(index['failed'])} refused -> {args.out}/cache")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HuMoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
