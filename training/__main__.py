"""`python -m training <verb>`: synth (synthetic dataset), prepare (raw videos -> training clips)."""

from __future__ import annotations

import argparse
import sys

from engine.errors import HuMoError
from training.cli_data import add_prepare_raw_args, add_synth_parser, run_prepare_raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description="HuMo training tools")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_synth_parser(subparsers)
    prepare = subparsers.add_parser("prepare", help="cut, filter and annotate raw videos into training clips")
    add_prepare_raw_args(prepare)
    prepare.set_defaults(func=run_prepare_raw)
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
