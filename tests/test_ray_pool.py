"""Jobs on resident Ray workers (engine/workers.py, studio/pool.py) on a Ray cluster the tests start themselves:
`ray.cluster_utils.Cluster`, a head without workers and two CPU worker nodes (each with its own marker resource, so
where a job ran can be seen), the tiny model, real SQLite, real ffmpeg. The cluster is ended with
`Cluster.shutdown()` (never `ray stop`, which would end every Ray process on the machine)."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from engine.generate import GenerationRequest  # noqa: E402
from engine.workers import WORKER_RESOURCE, HuMoWorker, WorkerPool, job_dict  # noqa: E402
from studio.context import StudioContext, StudioOptions  # noqa: E402
from studio.jobs import run_job  # noqa: E402
from studio.pool import StudioPool  # noqa: E402
from studio.store import NotFoundError  # noqa: E402
from tests.dist_settings import KWARGS  # noqa: E402
from tests.test_pipeline import write_image, write_wav  # noqa: E402

VISITORS = [f"user:visitor{i}" for i in range(5)]


@pytest.fixture(scope="module")
def cluster():
    """Head (no worker slots) + node A + node B, one `humo_worker` slot and one CPU each."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = {name: cluster.add_node(num_cpus=1, resources={WORKER_RESOURCE: 1, f"node_{name}": 1}) for name in "ab"}
    cluster.wait_for_nodes()
    try:
        yield cluster, {node.node_id: name for name, node in nodes.items()}
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def studio(cluster, tmp_path_factory):
    """A studio whose jobs render on the cluster's pool (what `python app.py --ray ADDRESS` makes)."""
    ray_cluster, _ = cluster
    ctx = StudioContext.create(StudioOptions(data_dir=tmp_path_factory.mktemp("ray") / "data", model="tiny"))
    ctx.pool = StudioPool(None, pool=WorkerPool(ray_cluster.address))
    yield ctx
    ctx.pool.shutdown()
    ctx.store.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    return write_image(folder / "face.png"), write_wav(folder / "voice.wav", 0.4)


def _request(inputs, **kw) -> GenerationRequest:
    face, voice = inputs
    base = dict(prompt="a person talks", images=[face], audio=voice, height=32, width=32, num_inference_steps=2, seed=7)
    return GenerationRequest(**{**base, **kw})


def _wait_for_progress(ctx, gid_holder: dict, timeout_s: float = 120.0) -> int:
    """The row id of the job started in another thread, once a worker has finished a step of it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows, _ = ctx.store.list_generations(owner=gid_holder["owner"], status="running")
        if rows and (rows[0].step or 0) >= 1:
            return rows[0].id
        time.sleep(0.1)
    raise AssertionError("the job never got a step done on a worker")


def test_twenty_jobs_of_five_visitors_spread_over_both_nodes(studio, cluster, inputs):
    _, node_names = cluster
    pool = studio.pool.pool
    before = len(pool.history)

    def one(index: int):
        owner = VISITORS[index % 5]
        request = _request(inputs, prompt=f"{owner} clip {index}", seed=index, num_inference_steps=1 + index % 2)
        return owner, run_job(studio, request, "tiny", owner=owner)

    with ThreadPoolExecutor(max_workers=20) as threads:
        results = list(threads.map(one, range(20)))

    assert [r.status for _, r in results] == ["done"] * 20, [r.error for _, r in results]
    attempts = pool.history[before:]
    assert len(attempts) == 20 and {a["status"] for a in attempts} == {"done"}  # each job rendered once
    assert len({a["job_id"] for a in attempts}) == 20
    assert {node_names[a["node_id"]] for a in attempts} == {"a", "b"}  # both nodes' workers took jobs
    for owner in VISITORS:  # isolation: each visitor lists exactly their own four finished rows
        rows, total = studio.store.list_generations(owner=owner, page_size=50)
        assert total == 4 and {r.status for r in rows} == {"done"}
        assert all(r.prompt.startswith(owner) for r in rows)
        for row in rows:
            assert (
                studio.store.abs_path(row.video_path).is_file() and studio.store.abs_path(row.thumbnail_path).is_file()
            )
            assert row.step == row.total_steps == row.settings["num_inference_steps"]
    someone_else = results[0][1].generation_id
    with pytest.raises(NotFoundError):
        studio.store.get(someone_else, owner=VISITORS[1])  # visitor 1 cannot read visitor 0's row
    # the worker wrote the mp4 with the request's settings, like an in-process job
    row = studio.store.get(results[3][1].generation_id, owner=VISITORS[3])
    from engine.media import read_settings

    settings = read_settings(studio.store.abs_path(row.video_path))
    assert settings["seed"] == 3 and settings["model_id"] == "tiny" and settings["num_inference_steps"] == 2
    described = {r["worker"]: r for r in pool.describe()}
    assert len(described) == 2 and {r["model"] for r in described.values()} == {"tiny"}
    assert sum(r["jobs done"] for r in described.values()) >= 20


def test_progress_and_previews_reach_the_page(studio, inputs):
    events = []
    result = run_job(studio, _request(inputs, num_inference_steps=3), "tiny", on_progress=events.append)
    assert result.status == "done"
    assert [e.step for e in events] == [1, 2, 3] and events[-1].total == 3
    assert events[-1].preview is not None and events[-1].preview.size[0] > 0  # a PIL latent preview from the worker


def _kill_mid_job(studio, inputs, owner: str) -> tuple:
    """Start a long job of `owner`; once a worker has done a step of it, kill that worker's actor."""
    pool = studio.pool.pool
    holder: dict = {"owner": owner}
    thread = threading.Thread(
        target=lambda: holder.update(
            result=run_job(studio, _request(inputs, prompt="long", num_inference_steps=60), "tiny", owner=owner)
        )
    )
    thread.start()
    gid = _wait_for_progress(studio, holder)
    killed = next(w for w in pool.workers if w.job and w.job["request"]["prompt"] == "long")
    ray.kill(killed.lead, no_restart=True)
    thread.join(timeout=600)
    return gid, holder["result"], killed.worker_id


def test_a_worker_killed_mid_job_is_retried_once_and_others_are_unaffected(studio, inputs):
    pool = studio.pool.pool
    before = len(pool.history)
    other = {}
    owner = "user:killed-once"
    side = threading.Thread(target=lambda: other.update(r=run_job(studio, _request(inputs, prompt="side job"), "tiny")))
    side.start()
    gid, result, killed = _kill_mid_job(studio, inputs, owner)
    side.join(timeout=600)

    assert result.status == "done" and result.generation_id == gid  # retried on another worker, one row
    rows, total = studio.store.list_generations(owner=owner)
    assert total == 1 and rows[0].status == "done"
    mine = [a for a in pool.history[before:] if a["worker_id"] == killed or a.get("attempt") == 2]
    assert [a["status"] for a in mine if a["attempt"] == 1 and a["worker_id"] == killed] == ["worker died"]
    assert any(a["attempt"] == 2 and a["status"] == "done" and a["worker_id"] != killed for a in mine)
    assert other["r"].status == "done"  # the other job was not touched
    assert killed not in {w.worker_id for w in pool.workers}  # dropped; a new worker takes its slot


def test_a_worker_killed_with_no_retries_left_fails_the_row_with_its_message(studio, inputs):
    pool = studio.pool.pool
    pool.max_retries = 0
    try:
        gid, result, _ = _kill_mid_job(studio, inputs, "user:killed-for-good")
    finally:
        pool.max_retries = 1
    assert result.status == "failed" and "worker rendering this job died" in result.error
    row = studio.store.get(gid, owner="user:killed-for-good")
    assert row.status == "failed" and "died" in row.error and row.video_path is None
    assert not studio.store.abs_path(f"videos/{gid}.mp4").exists()


def test_stop_ends_a_job_on_a_remote_worker(studio, inputs):
    owner = "user:stopper"
    stop = threading.Event()
    holder: dict = {"owner": owner}
    thread = threading.Thread(
        target=lambda: holder.update(
            result=run_job(studio, _request(inputs, num_inference_steps=400), "tiny", stop_event=stop, owner=owner)
        )
    )
    thread.start()
    gid = _wait_for_progress(studio, holder)
    stop.set()
    thread.join(timeout=120)
    assert not thread.is_alive()
    result = holder["result"]
    assert result.status == "stopped" and "stopped after step" in result.error
    row = studio.store.get(gid, owner=owner)
    assert row.status == "stopped" and row.step < 400 and row.video_path is None
    assert all(not w.busy for w in studio.pool.pool.workers)  # the worker is free for the next job


def test_a_two_rank_group_gives_the_single_process_video_and_nodes_join_and_leave(cluster, tmp_path):
    """A node joins with two group slots: a 2-rank worker group (placement group, gloo, Ulysses) starts there and
    renders exactly what one process renders; the node leaves and its group is dropped."""
    ray_cluster, _ = cluster
    pool = WorkerPool(ray_cluster.address, group_size=2, parallel="ulysses", resource="humo_group_test")
    assert pool.describe() == []  # no node offers group slots yet
    node = ray_cluster.add_node(num_cpus=2, resources={"humo_group_test": 2})
    ray_cluster.wait_for_nodes()
    kwargs = {k: v for k, v in KWARGS.items() if k != "image"}
    request = GenerationRequest(images=[KWARGS["image"]], **kwargs)
    job = job_dict("tiny", request, tmp_path / "group.mp4")
    try:
        worker = pool.acquire("tiny", timeout_s=300)
        assert worker is not None and len(worker.actors) == 2 and worker.info["world"] == 2
        group = ray.get([actor.frames.remote(job) for actor in worker.actors])[0]
        pool.release(worker)
        single = HuMoWorker("in-process", device="cpu").frames(job)
        assert group.shape == single.shape == (17, 32, 48, 3)
        assert float(np.abs(group - single).max()) <= 1e-5

        result = pool.run(job)  # the same group through the pool writes the mp4 (rank 0)
        assert result["status"] == "done" and Path(result["path"]).is_file()
        assert [r["ranks"] for r in pool.describe()] == [2]
        assert ray.get(worker.actors[1].info.remote())["parallel"] == "ulysses"
    finally:
        ray_cluster.remove_node(node)
    deadline = time.monotonic() + 60
    while pool.describe() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert pool.describe() == []  # the node left: its group is gone and no new one waits for it


def test_the_whole_request_travels_guidance_lora_and_options(studio, inputs, tmp_path):
    """A pool job with a custom guidance schedule, a LoRA and a step-cache option renders what the same job renders
    in-process: the same settings in the mp4 and the same frames (32x32 is too small for the watermark, so no
    payload differs; one a second worker thread count could move a little); without the LoRA the frames differ."""
    from safetensors.torch import save_file

    from engine.guidance import preset_schedule
    from engine.media import read_settings, read_video_frames
    from engine.registry import load_pipeline
    from studio.advanced import read_options
    from tests.test_lora import FFN, SELF, official_lora

    lora = tmp_path / "style.safetensors"
    save_file(official_lora(load_pipeline("tiny"), SELF + FFN), str(lora))
    options, names = read_options(False, lora_files=[str(lora)], lora_scales="0.5", step_cache=0.05)
    guidance = preset_schedule("faster", "1.7b", "TIA")
    request = _request(inputs, guidance=guidance, num_inference_steps=3, seed=11)
    local = StudioContext.create(StudioOptions(data_dir=tmp_path / "local", model="tiny"))
    try:
        here = run_job(local, request, "tiny", advanced=options, names=names)
        there = run_job(studio, request, "tiny", advanced=options, names=names)
        plain = run_job(studio, _request(inputs, guidance=guidance, num_inference_steps=3, seed=11), "tiny")
    finally:
        local.store.close()
    assert here.status == there.status == plain.status == "done", there.error
    ours, theirs = read_settings(here.video_path), read_settings(there.video_path)
    for key in ("guidance", "advanced", "seed", "num_frames", "num_inference_steps", "mode", "model_id"):
        assert ours[key] == theirs[key], key
    assert theirs["advanced"]["loras"] == [{"file": "style.safetensors", "scale": 0.5}]
    assert theirs["advanced"]["step_cache"] == 0.05
    a, b, c = (read_video_frames(r.video_path).astype(np.float32) for r in (here, there, plain))
    same, lora_effect = float(np.abs(a - b).mean()), float(np.abs(b - c).mean())
    print(f"pool vs in-process: {same:.3f}; with vs without the LoRA: {lora_effect:.3f} (mean abs, 0-255)")
    assert same < 0.5 and lora_effect > 4.0


def test_a_job_with_no_worker_slot_anywhere_fails_with_what_to_start(cluster, inputs, tmp_path):
    ray_cluster, _ = cluster
    pool = WorkerPool(ray_cluster.address, resource="humo_absent", no_workers_s=0.5)
    result = pool.run(job_dict("tiny", _request(inputs), tmp_path / "never.mp4"))
    assert result["status"] == "failed" and "offers a `humo_absent` slot" in result["error"]
    assert "ray start --address" in result["error"] and not (tmp_path / "never.mp4").exists()


def test_the_studio_with_a_pool_lists_its_workers_and_without_one_renders_in_process(studio, tmp_path, monkeypatch):
    """--ray / HUMO_RAY_ADDRESS reach the options; the app builds with a pool and its Models tab lists the workers;
    with neither, a studio has no pool (jobs render in this process, as always)."""
    import app
    from studio.app import build_app
    from studio.tab_models import pool_table

    monkeypatch.setenv("HUMO_RAY_ADDRESS", "head:6379")
    assert app.parse_args([]).ray == "head:6379" and app.parse_args(["--ray", "other:1"]).ray == "other:1"
    monkeypatch.delenv("HUMO_RAY_ADDRESS")
    assert app.parse_args([]).ray is None and app.parse_args([]).ray_group_size == 1
    build_app(studio)  # the Generate tab's jobs go to the pool's queue slot, the Models tab gets the workers' table
    table = pool_table(studio)
    assert list(table.columns) == ["worker", "node", "host", "ranks", "model", "state", "jobs done"]
    assert len(table) == 2 and set(table["state"]) == {"idle"} and "tiny" in set(table["model"])  # (a worker that
    # replaced a killed one may hold none yet: "—")
    local = StudioContext.create(StudioOptions(data_dir=tmp_path / "local", model="tiny"))
    try:
        assert local.pool is None
        result = run_job(local, _request(tmp_path_inputs(tmp_path)), "tiny")
        assert result.status == "done" and "tiny" in local._pipelines  # rendered by this process's own pipeline
    finally:
        local.store.close()


def tmp_path_inputs(folder: Path) -> tuple[str, str]:
    return write_image(folder / "face.png"), write_wav(folder / "voice.wav", 0.4)


def test_the_cli_batch_runs_on_the_pool(studio, cluster, tmp_path, capsys):
    """`python -m engine generate --cases FILE --ray ADDRESS`: every case rendered on the cluster's workers (the model is
    not loaded in the CLI's process), files named as a local batch names them. Runs last: the studio's pool gives its
    slots back first (one pool per cluster, docs/deploy.md)."""
    from engine.cli import main
    from engine.media import read_settings

    studio.pool.shutdown()
    ray_cluster, _ = cluster
    face = os.path.relpath(KWARGS["image"])  # a relative path, as a case file has them: the workers get it resolved
    cases = {f"case{i}": {"prompt": f'"a_person_talks_{i}"', "img_paths": [face], "audio_path": KWARGS["audio"]}
             for i in range(3)}  # fmt: skip
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    code = main(["generate", "--model", "tiny", "--cases", str(tmp_path / "cases.json"), "--ray", ray_cluster.address,
                 "--out-dir", str(tmp_path / "out"), "--steps", "1", "--frames", "5", "--height", "32", "--width", "32",
                 "--seed", "4"])  # fmt: skip
    assert code == 0
    files = sorted((tmp_path / "out").glob("*.mp4"))
    assert [f.name for f in files] == [f"case{i}_seed4.mp4" for i in range(3)]
    assert [read_settings(f)["prompt"] for f in files] == [f"a person talks {i}" for i in range(3)]
    assert capsys.readouterr().out.count("(worker w") == 3


def test_a_real_studio_server_with_ray_renders_an_api_job_on_the_pool(cluster, inputs, tmp_path):
    """`python app.py --ray ADDRESS` as a served studio: a /generate call through gradio_client renders on a worker
    (the studio's process loads no pipeline) and comes back as the page's video and gallery row. Runs after the CLI
    test, whose batch gave the slots back."""
    from gradio_client import Client, handle_file

    from tests.studio_server import running_studio

    ray_cluster, node_names = cluster
    face, voice = inputs
    with running_studio(tmp_path / "data", ray_address=ray_cluster.address) as (url, ctx):
        try:
            assert ctx.pool is not None
            result = Client(url, verbose=False).predict(
                "a woman speaks", handle_file(face), handle_file(voice), "", "tiny", "custom", 32, 32, 0, 2, 42,
                api_name="/generate",
            )  # fmt: skip
            video, gallery_id, status = result[:3]
            assert "done" in status, status
            row = ctx.store.get(int(gallery_id))
            assert row.status == "done" and row.seed == 42 and ctx.store.abs_path(row.video_path).is_file()
            assert ctx._pipelines == {}  # rendered by a worker, not in the studio's process
            assert [node_names[a["node_id"]] for a in ctx.pool.pool.history] in (["a"], ["b"])
        finally:
            ctx.pool.shutdown()
