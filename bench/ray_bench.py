"""Resident Ray workers vs a fresh process per job: what a job's start-up costs, throughput with 1 and 2 workers, and
the pool's own added latency (issue 31; engine/workers.py).

    python bench/ray_bench.py [--models tiny,humo-nano] [--jobs 8] [--repeat 3]

On a local `ray.cluster_utils.Cluster` of the bench's own (CPU nodes, ended with Cluster.shutdown()):
1. per-job start-up: the wall time of one job as a fresh `python -m engine generate` (1 process) and a fresh
   `--gpus 2` torchrun group (2 processes, gloo), against the same job on a resident worker / resident 2-rank group
   that already holds the model (median of --repeat warm jobs). The difference is what keeping the model saves each
   job; the first job on a new worker (actor start + load) is shown too;
2. throughput: --jobs jobs submitted at once to a pool of 1 worker, then of 2 (a second node joins), jobs/s;
3. the pool's added latency per job: the pool's wall time for a job on an idle warm worker minus the worker's own
   load + render time (scheduling, progress polling, result transfer).

Prints a table and writes bench/out/ray_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {"tiny": (32, 48), "humo-nano": (64, 64)}  # (height, width): each model's small test size
FRAMES, STEPS = 17, 3


def request(model: str, seed: int = 1):
    from engine.generate import GenerationRequest

    height, width = SIZES.get(model, (64, 64))
    return GenerationRequest(prompt="a person talking", images=[str(ROOT / "assets/examples/face.png")],
                             audio=str(ROOT / "assets/examples/speech.wav"), height=height, width=width,
                             num_frames=FRAMES, num_inference_steps=STEPS, seed=seed)  # fmt: skip


def fresh_process(model: str, gpus: int, out: Path) -> float:
    """Wall seconds of one job as a new `python -m engine generate` (under torchrun when gpus > 1)."""
    req = request(model)
    command = [sys.executable, "-m", "engine", "generate", "--model", model, "--prompt", req.prompt,
               "--image", req.images[0], "--audio", req.audio, "--height", str(req.height), "--width", str(req.width),
               "--frames", str(FRAMES), "--steps", str(STEPS), "--seed", "1", "--out", str(out),
               "--gpus", str(gpus)] + (["--parallel", "ulysses"] if gpus > 1 else [])  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def resident(pool, model: str, out_dir: Path, repeat: int) -> dict:
    """The first job on a new worker (start + load + render), then the median of `repeat` warm jobs."""
    from engine.workers import job_dict

    walls, overheads, first = [], [], None
    for index in range(repeat + 1):
        job = job_dict(model, request(model, seed=index), out_dir / f"{model}-{index}.mp4")
        started = time.perf_counter()
        result = pool.run(job)
        wall = time.perf_counter() - started
        assert result["status"] == "done", result.get("error")
        if first is None:
            first = wall
            continue
        walls.append(wall)
        overheads.append(wall - result["load_s"] - result["render_s"])
    return {"first_job_s": first, "warm_job_s": median(walls), "pool_overhead_s": median(overheads)}


def throughput(pool, model: str, jobs: int, out_dir: Path) -> float:
    from engine.workers import job_dict

    results = []

    def one(index: int) -> None:
        results.append(pool.run(job_dict(model, request(model, seed=index), out_dir / f"tp-{index}.mp4")))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(jobs)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    assert all(r["status"] == "done" for r in results)
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny,humo-nano")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    from engine.workers import WORKER_RESOURCE, WorkerPool

    os.environ["PYTHONPATH"] = str(ROOT)  # the workers import engine/ from this checkout
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=1, resources={WORKER_RESOURCE: 1})
    cluster.add_node(num_cpus=2, resources={"bench_group": 2})
    cluster.wait_for_nodes()
    rows, report = [], {"models": {}, "cpu_count": os.cpu_count(), "frames": FRAMES, "steps": STEPS}
    try:
        single = WorkerPool(cluster.address)
        group = WorkerPool(cluster.address, group_size=2, parallel="ulysses", resource="bench_group")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            for model in args.models.split(","):
                fresh1 = median(fresh_process(model, 1, out / "f1.mp4") for _ in range(2))
                fresh2 = median(fresh_process(model, 2, out / "f2.mp4") for _ in range(2))
                one = resident(single, model, out, args.repeat)
                two = resident(group, model, out, args.repeat)
                report["models"][model] = {"fresh_1_process_s": fresh1, "fresh_torchrun_2_s": fresh2,
                                           "resident_1": one, "resident_group_2": two}  # fmt: skip
                rows.append((model, "1 process", fresh1, one["warm_job_s"], fresh1 - one["warm_job_s"],
                             one["first_job_s"], one["pool_overhead_s"]))  # fmt: skip
                rows.append((model, "2 ranks", fresh2, two["warm_job_s"], fresh2 - two["warm_job_s"],
                             two["first_job_s"], two["pool_overhead_s"]))  # fmt: skip
            group.shutdown()
            model = args.models.split(",")[0]
            tp1 = throughput(single, model, args.jobs, out)
            cluster.add_node(num_cpus=1, resources={WORKER_RESOURCE: 1})  # a second worker node joins
            cluster.wait_for_nodes()
            while True:  # let the new node's worker come up before timing
                single.refresh()
                if sum(w.is_ready() for w in single.workers) >= 2:
                    break
                time.sleep(0.2)
            throughput(single, model, 2, out)  # warm the new worker with the model
            tp2 = throughput(single, model, args.jobs, out)
            report["throughput"] = {"model": model, "jobs": args.jobs, "workers_1_jobs_per_s": tp1,
                                    "workers_2_jobs_per_s": tp2}  # fmt: skip
            single.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()

    print(f"\n{FRAMES} frames, {STEPS} steps, CPU ({os.cpu_count()} cores); seconds per job")
    print(
        "| model | job as | fresh process(es) | resident worker (warm) | saved per job | first job on a new worker "
        "| pool overhead |"
    )
    print("|---|---|---|---|---|---|---|")
    for model, kind, fresh, warm, saved, first, overhead in rows:
        print(f"| {model} | {kind} | {fresh:.2f} | {warm:.2f} | {saved:.2f} | {first:.2f} | {overhead:.3f} |")
    tp = report["throughput"]
    print(
        f"\nThroughput ({tp['model']}, {tp['jobs']} jobs at once): 1 worker {tp['workers_1_jobs_per_s']:.2f} jobs/s, "
        f"2 workers {tp['workers_2_jobs_per_s']:.2f} jobs/s"
    )
    out_file = ROOT / "bench/out/ray_bench.json"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(report, indent=2))
    print(f"wrote {out_file.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
