"""The gallery store on SQLite and on PostgreSQL: what one job's bookkeeping costs, how listing and search scale, and
what several front-ends writing at once sustain.

    python bench/store_bench.py [--rows 2000] [--jobs 100] [--front-ends 2] [--threads 4]

PostgreSQL is a server of the bench's own (tests/postgres.py: Debian's binaries, a temporary folder, a Unix socket,
fsync off as in the tests; a production server with fsync on pays a WAL flush per commit). Each front-end is a
separate process with its own `Store` (one studio each), all on one database and one data folder.

Per backend:
1. open: `Store.open` of a new database (migrations from empty, instance registration);
2. job: one job's store calls in-process (save an input, create the row, mark running, 20 progress updates, mark
   done), milliseconds;
3. list / search: a 24-row page and a case-insensitive search over `--rows` rows of several owners;
4. sweep: a heartbeat (proof of life plus the dead-front-end sweep) with nobody dead;
5. front-ends: `--front-ends` processes x `--threads` threads each running `--jobs` jobs' bookkeeping at once; jobs/s.

Prints a table and writes bench/out/store_bench.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS = 20


def one_job(store, src: Path, owner: str) -> None:
    """The store calls one studio job makes (studio.jobs.run_job), without rendering."""
    from studio.paths import DataPaths

    rel, _ = store.save_input(src, "image")
    row = store.create_generation(prompt=f"{owner} talks about CAFÉ", mode="TI", model_id="tiny",
                                  input_paths=[rel], total_steps=STEPS, owner=owner)  # fmt: skip
    store.mark_running(row.id)
    for step in range(1, STEPS + 1):
        store.update_progress(row.id, step, STEPS)
    video, thumb = DataPaths.video_rel(row.id), DataPaths.thumb_rel(row.id)
    store.abs_path(video).write_bytes(b"mp4")
    store.abs_path(thumb).write_bytes(b"jpg")
    store.mark_done(row.id, video, thumb, timings={"total_s": 1.0})


def front_end(data: str, url: str | None, threads: int, jobs: int, index: int, barrier, out) -> None:
    """One front-end process: `threads` threads sharing one store, `jobs` jobs in all."""
    from studio.store import Store

    store = Store.open(data, url=url)
    src = Path(data).parent / f"face-{index}.png"
    src.write_bytes(b"face of front-end %d" % index)
    barrier.wait()
    started = time.perf_counter()

    def worker(t: int) -> None:
        for j in range(jobs // threads):
            one_job(store, src, f"user:fe{index}-t{t}-{j % 5}")

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    out.put(time.perf_counter() - started)
    store.close()


def timed(fn, repeat: int) -> float:
    """Median milliseconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return median(times)


def bench_backend(name: str, url_factory, tmp: Path, args) -> dict:
    from studio.store import Store

    data = tmp / name / "data"
    url = url_factory()
    t0 = time.perf_counter()
    store = Store.open(data, url=url)
    result = {"backend": name, "open_ms": (time.perf_counter() - t0) * 1000}
    src = tmp / name / "face.png"
    src.write_bytes(b"a face")
    result["job_ms"] = timed(lambda: one_job(store, src, "user:bench"), 20)
    for i in range(args.rows):
        store.create_generation(prompt=f"row {i} {'Straße' if i % 7 == 0 else 'road'}", mode="T", model_id="tiny",
                                owner=f"user:o{i % 10}")  # fmt: skip
    result["list_ms"] = timed(lambda: store.list_generations(page=3, page_size=24, owner="user:o3"), 20)
    result["search_ms"] = timed(lambda: store.list_generations(query="STRASSE", owner="user:o0"), 20)
    result["heartbeat_ms"] = timed(store.heartbeat, 10)
    store.close()

    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(args.front_ends), ctx.Queue()
    shared = tmp / name / "shared"
    shared_url = url_factory()
    Store.open(shared / "data", url=shared_url).close()  # migrate once, as the first front-end would
    procs = [ctx.Process(target=front_end, args=(str(shared / "data"), shared_url, args.threads, args.jobs, i,
                                                 barrier, out)) for i in range(args.front_ends)]  # fmt: skip
    for p in procs:
        p.start()
    seconds = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    total = args.front_ends * (args.jobs // args.threads) * args.threads
    result["front_ends"] = {"processes": args.front_ends, "threads": args.threads, "jobs": total,
                            "seconds": max(seconds), "jobs_per_s": total / max(seconds)}  # fmt: skip
    with Store.open(shared / "data", url=shared_url) as check:
        rows = sum(check.list_generations(owner=f"user:fe{i}-t{t}-{j}", page_size=200)[1]
                   for i in range(args.front_ends) for t in range(args.threads) for j in range(5))  # fmt: skip
        result["front_ends"]["rows_done"] = rows
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=100, help="jobs per front-end")
    parser.add_argument("--front-ends", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="job threads per front-end")
    args = parser.parse_args()

    from tests.postgres import PostgresServer, find_bindir

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(bench_backend("sqlite", lambda: None, Path(tmp), args))
        bindir = find_bindir()
        if bindir is None:
            print("PostgreSQL missing (apt-get install postgresql): SQLite only")
        else:
            server = PostgresServer(bindir).start()
            try:
                results.append(bench_backend("postgresql", server.create_database, Path(tmp), args))
            finally:
                server.stop()

    print(f"\n{args.rows} rows listed/searched; {args.front_ends} front-end processes x {args.threads} threads\n")
    print("| backend | open (ms) | one job's store calls (ms) | list page (ms) | search (ms) | heartbeat (ms) "
          "| front-ends: jobs/s (jobs, rows done) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in results:
        fe = r["front_ends"]
        print(f"| {r['backend']} | {r['open_ms']:.0f} | {r['job_ms']:.1f} | {r['list_ms']:.2f} | {r['search_ms']:.2f} "
              f"| {r['heartbeat_ms']:.1f} | {fe['jobs_per_s']:.1f} ({fe['jobs']}, {fe['rows_done']}) |")  # fmt: skip
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "store_bench.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
