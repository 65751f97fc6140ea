"""`python -m training <verb>`: synth (synthetic dataset), prepare (raw videos -> training clips),
cache (encode clips), fit (stage 1 / 2 / distill training), export (official key names), nano (build the bundled
HuMo-nano), ablations (Table 3 in miniature), distill-targets (a teacher's trajectories), distill-nano (the bundled
4-step student)."""

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
    add_nano_parsers(subparsers)
    add_distill_parsers(subparsers)
    return parser


def add_distill_parsers(subparsers) -> None:
    targets = subparsers.add_parser("distill-targets", help="record a teacher's guided trajectories (distill stage)")
    targets.add_argument("--teacher", default="humo-nano", help="model id of the teacher (default: %(default)s)")
    targets.add_argument("--clips", default=None, help="a `prepare` folder (manifest.jsonl); default: the nano world")
    targets.add_argument("--count", type=int, default=None, help="at most this many trajectories")
    targets.add_argument("--out", required=True, help="targets folder (the distill config's cache_dir)")
    targets.add_argument("--teacher-steps", type=int, default=28, help="a multiple of --student-steps")
    targets.add_argument("--student-steps", type=int, default=4)
    targets.add_argument("--device", default=None)
    targets.set_defaults(func=run_distill_targets)
    student = subparsers.add_parser("distill-nano", help="distil the bundled HuMo-nano into assets/humo-nano-4step")
    student.add_argument("--out", default="assets/humo-nano-4step")
    student.add_argument("--work", default="data/distill-nano", help="targets and run, reused when present")
    student.add_argument("--trajectories", type=int, default=480)
    student.add_argument("--steps", type=int, default=None, help="training steps (default: distill_nano.yaml's)")
    student.add_argument(
        "--fresh", type=int, default=0, help="trajectories of new people for leg 2, backward distillation (0: none)"
    )
    student.add_argument(
        "--fresh-steps", type=int, default=None, help="steps of leg 2 (default: distill_nano_roll_in.yaml's)"
    )
    student.add_argument(
        "--from",
        dest="start_from",
        default=None,
        help="a student folder whose transformer stands for leg 1 (which is then not run)",
    )
    student.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    student.set_defaults(func=run_distill_nano)


def run_distill_targets(args) -> int:
    from engine.registry import load_pipeline
    from training import distill, distill_nano

    pipe = load_pipeline(args.teacher, device=args.device)
    pipe.set_progress_bar_config(disable=True)
    if args.clips:
        requests = distill.manifest_requests(args.clips, args.count)
    else:
        requests = distill_nano.nano_requests(args.count or 240)
    index = distill.build_targets(
        pipe, requests, args.out, teacher_steps=args.teacher_steps, student_steps=args.student_steps
    )
    print(f"{len(index['clips'])} trajectories of {args.teacher} -> {args.out}")
    return 0


def run_distill_nano(args) -> int:
    import torch

    from training.distill_nano import build_nano_student

    if args.threads:
        torch.set_num_threads(args.threads)
    info = build_nano_student(
        args.out,
        args.work,
        clips=args.trajectories,
        steps=args.steps,
        fresh=args.fresh,
        fresh_steps=args.fresh_steps,
        start_from=args.start_from,
    )
    print(f"HuMo-nano-4step -> {args.out} (total {info['total_s'] / 60:.1f} min)")
    return 0


def add_nano_parsers(subparsers) -> None:
    nano = subparsers.add_parser("nano", help="train HuMo-nano on the synthetic world (about 3 h on 2 CPU cores)")
    nano.add_argument("--out", default="assets/humo-nano", help="where the model goes (default: %(default)s)")
    ablations = subparsers.add_parser("ablations", help="train the Table 3 variants and print their scores")
    ablations.add_argument(
        "--factor", type=float, default=0.1, help="stage 1 + 2 steps per variant, relative to nano (default 0.1)"
    )
    ablations.add_argument("--heldout", type=int, default=4, help="held-out clips scored per row (default 4)")
    for sub in (nano, ablations):
        sub.add_argument("--work", default="data/nano", help="intermediate files, reused when present")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--quick", action="store_true", help="a seconds-long build at 32x32 (a smoke test)")
        sub.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    nano.set_defaults(func=run_nano)
    ablations.set_defaults(func=run_ablations_cli)


def _nano_budget(args):
    import torch

    from training.nano import NanoBudget

    if args.threads:
        torch.set_num_threads(args.threads)
    budget = NanoBudget.quick() if args.quick else NanoBudget()
    budget.seed = args.seed
    return budget


def run_nano(args) -> int:
    from training.nano import build_nano

    info = build_nano(args.out, args.work, _nano_budget(args))
    print(f"held-out scores: {info['heldout_scores']}  (total {info['total_s'] / 60:.1f} min)")
    return 0


def run_ablations_cli(args) -> int:
    from training.nano import format_table, run_ablations

    rows = run_ablations(args.work, _nano_budget(args), factor=args.factor, heldout_clips=args.heldout)
    print(format_table(rows))
    return 0


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
