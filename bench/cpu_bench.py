"""CPU benchmark (issue #6 item 5a): transformer forward time of a small configuration, batched vs sequential
guidance branches, and the overhead of 2-process sequence parallelism (gloo), as ratios within one run.

    python bench/cpu_bench.py [--layers 4] [--frames 9] [--size 64]

Prints a table and writes bench/out/cpu_bench.json. Timings on a shared 2-core machine are noisy: compare the
ratios of one run, not absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.models import PRESETS, HuMoTransformer3DModel  # noqa: E402


def small_config(layers: int) -> dict:
    return {**PRESETS["tiny"], "num_attention_heads": 4, "attention_head_dim": 32, "ffn_dim": 256, "num_layers": layers}


def inputs(model, batch: int, frames: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    f_total = (frames - 1) // 4 + 2
    hidden = torch.randn(batch, cfg.in_channels, f_total, size // 8, size // 8, generator=g)
    text = torch.randn(batch, 512, cfg.text_dim, generator=g)
    audio = torch.randn(batch, f_total, cfg.audio_window, cfg.audio_bands, cfg.audio_dim, generator=g)
    return hidden, torch.full((batch,), 500), text, audio


def timed(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def worker(args) -> None:
    """Run under torchrun: time one forward with Ulysses over 2 processes."""
    from engine.parallel import enable_context_parallel, init_distributed

    rank, _ = init_distributed(backend="gloo")
    torch.manual_seed(0)
    model = HuMoTransformer3DModel(**small_config(args.layers)).eval()
    hidden, t, text, audio = inputs(model, 1, args.frames, args.size)
    enable_context_parallel(model, ulysses_degree=2)
    with torch.no_grad():
        seconds = timed(lambda: model(hidden, t, text, audio), args.repeat)
    if rank == 0:
        Path(args.worker_out).write_text(json.dumps({"s": seconds}))
    torch.distributed.barrier()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--worker-out", default=None)
    args = parser.parse_args()
    if args.worker_out:
        return worker(args)

    torch.manual_seed(0)
    model = HuMoTransformer3DModel(**small_config(args.layers)).eval()
    rows = []
    with torch.no_grad():
        hidden, t, text, audio = inputs(model, 1, args.frames, args.size)
        single = timed(lambda: model(hidden, t, text, audio), args.repeat)
        rows.append(("one forward (batch 1)", single, 1.0))
        for passes in (3, 4):
            hb, tb, xb, ab = inputs(model, passes, args.frames, args.size)
            batched = timed(lambda hb=hb, tb=tb, xb=xb, ab=ab: model(hb, tb, xb, ab), args.repeat)
            sequential = timed(lambda n=passes: [model(hidden, t, text, audio) for _ in range(n)], args.repeat)
            rows.append((f"{passes} branches sequential", sequential, sequential / single))
            rows.append((f"{passes} branches batched", batched, batched / single))

    out = ROOT / "bench/out/cpu_sp_worker.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
               "--layers", str(args.layers), "--frames", str(args.frames), "--size", str(args.size),
               "--repeat", str(args.repeat), "--worker-out", str(out)]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode == 0:
        parallel = json.loads(out.read_text())["s"]
        torch.set_num_threads(1)  # the workers run with one thread each: compare against one thread
        with torch.no_grad():
            one_thread = timed(lambda: model(hidden, t, text, audio), args.repeat)
        rows.append(("one forward, 1 thread", one_thread, one_thread / single))
        rows.append(("Ulysses 2 processes x 1 thread (gloo)", parallel, parallel / single))
    else:
        rows.append(("Ulysses 2 processes (failed)", float("nan"), float("nan")))

    tokens = ((args.frames - 1) // 4 + 2) * (args.size // 16) ** 2
    print(
        f"\nCPU bench: {args.layers} layers, dim 128, {tokens} tokens ({args.frames} frames at {args.size}px), {torch.get_num_threads()} threads\n"
    )
    print(f"{'what':<42} {'seconds':>9} {'x one forward':>14}")
    for name, seconds, ratio in rows:
        print(f"{name:<42} {seconds:>9.4f} {ratio:>14.2f}")
    result = {"tokens": tokens, "layers": args.layers, "rows": [{"what": n, "s": s, "ratio": r} for n, s, r in rows]}
    (ROOT / "bench/out/cpu_bench.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
