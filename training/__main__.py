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
    prepare.set_defaults(func=run_prepare_raw)
    add_cache_parser(subparsers)
    add_fit_parser(subparsers)
    add_export_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HuMoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
