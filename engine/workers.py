"""Resident workers on Ray: a pool of actors that keep a pipeline loaded and render whole requests to mp4 files.

    pool = WorkerPool("head:6379")   # a Ray cluster this machine is a node of (None: a local Ray instance)
    result = pool.run(job_dict("humo-1.7b", request, "/shared/data/videos/7.mp4"), on_event=print)

- A worker is one actor holding one pipeline (`HuMoWorker`), or a multi-GPU worker group: one actor per rank in a
  placement group, each running the engine's context-parallel code (engine/distributed.py: Ulysses or CFG-parallel,
  NCCL on GPUs, gloo on CPU), rank 0 writing the file. Both answer the same calls (`WorkerHandle`).
- Ray nodes offer workers through a custom resource: `ray start --address HEAD --num-gpus 1 --resources
  '{"humo_worker": 1}'` gives one slot. The pool keeps one worker per slot (a group takes `group_size` slots on one
  node), so nodes join and leave while it runs: a new node's slots get workers at the next job, a dead node's
  workers are dropped.
- A job is plain data (`job_dict`): the model id (a named folder as its path, engine.registry.model_source), the
  GenerationRequest as a dict (guidance included), the job's advanced options (LoRA, step cache, memory mode:
  engine.speed.job_options) and the output path in the media folder every machine mounts at the same path. The
  worker renders it with engine.generate.generate_to_file, so the mp4 and its settings are those of an in-process job.
- Scheduling: an idle worker that already holds the job's model, else an idle empty one, else any idle one (it
  loads the model). Progress and latent previews are polled from the worker while it renders (a threaded actor);
  Stop sets the worker's flag and the render ends at the next step. A worker that dies mid-job is dropped and the
  job is retried once on another; the caller (the studio) writes the gallery row, once, from the returned result.

Nothing here imports studio/; `ray` is imported only when a pool or worker is made.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import InputError

WORKER_RESOURCE = "humo_worker"  # a node's worker slots (custom Ray resource); one per GPU on a GPU node
NAMESPACE = "humo"
PREVIEW_EVERY_S = 1.0  # latent previews cost a small matmul: at most one a second crosses to the studio
POLL_S = 0.2  # how often the pool asks a busy worker for progress
REFRESH_S = 1.0  # how often waiting jobs look at the cluster's nodes again (a GCS round trip)
NO_WORKERS_S = 60.0  # a job fails with a message when no node has offered a worker slot for this long


def job_dict(model_id: str, request, out_path: str | Path, options: dict | None = None, record: dict | None = None,
             job_id: str | None = None) -> dict:  # fmt: skip
    """One job as plain data: `request` an engine.generate.GenerationRequest (its seed fixed by the caller, so a
    retry renders the same video), `options` the advanced options (engine.speed.job_options), `record` what the
    mp4 keeps of them (engine.speed.options_record)."""
    if request.seed is None:
        raise InputError("a pool job needs its seed fixed before it is sent (a retry must render the same video)",
                         field="seed")  # fmt: skip
    return {"job_id": job_id or uuid.uuid4().hex, "model_id": model_id, "request": request.to_dict(),
            "out_path": str(out_path), "options": options, "record": record}  # fmt: skip


# ---------------------------------------------------------------------------------------------- the worker
@dataclass
class _JobState:
    stop: threading.Event = field(default_factory=threading.Event)
    events: list = field(default_factory=list)


class HuMoWorker:
    """One resident pipeline (one rank of a group when `world` > 1). Made a Ray actor by `WorkerPool`; a plain
    object too (the tests and the bench run it in-process to compare)."""

    def __init__(self, worker_id: str, device: str | None = None, rank: int = 0, world: int = 1):
        self.worker_id, self.device, self.rank, self.world = worker_id, device, rank, world
        self.pipe, self.model_id, self.parallel = None, None, "none"
        self.busy: str | None = None
        self.jobs_done, self.load_s = 0, 0.0
        self._jobs: dict[str, _JobState] = {}
        self._lock = threading.Lock()

    # -- what the pool asks
    def info(self) -> dict:
        return {"worker_id": self.worker_id, "node_id": _node_id(), "host": socket.gethostname(), "pid": os.getpid(),
                "model_id": self.model_id, "busy": self.busy, "jobs_done": self.jobs_done, "rank": self.rank,
                "world": self.world, "parallel": self.parallel, "load_s": round(self.load_s, 3)}  # fmt: skip

    def poll(self, job_id: str) -> list[dict]:
        """Progress events of a job since the last poll (oldest first)."""
        with self._lock:
            state = self._jobs.get(job_id)
            if state is None:
                return []
            events, state.events = state.events, []
            return events

    def stop(self, job_id: str) -> None:
        """Stop a job at its next step (or before it starts, if it is still waiting here)."""
        with self._lock:
            self._jobs.setdefault(job_id, _JobState()).stop.set()

    # -- a multi-GPU group's ranks
    def address(self) -> tuple[str, int]:
        """Rank 0's address and a free port for the group's process group."""
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        return _node_ip(), port

    def join_group(self, master: tuple[str, int], parallel: str = "auto") -> str:
        """Join the group's process group (NCCL on GPUs, gloo on CPU) as this rank; the model is loaded by `load`."""
        from engine.parallel import init_distributed

        os.environ.update(MASTER_ADDR=master[0], MASTER_PORT=str(master[1]), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world), LOCAL_RANK="0")  # fmt: skip  # Ray gives each actor its GPU
        self.parallel_mode = parallel
        init_distributed()
        return "ok"

    def load(self, model_id: str) -> float:
        """Hold `model_id` (loading it when another or none is held); returns the seconds spent loading."""
        if self.model_id == model_id and self.pipe is not None:
            return 0.0
        started = time.perf_counter()
        self.pipe, self.model_id = None, None  # the old model's memory goes before the new one comes
        from engine.registry import load_pipeline

        pipe = load_pipeline(model_id, device=self._device())
        if self.world > 1:
            from engine.distributed import setup_parallel

            self.parallel = setup_parallel(pipe, getattr(self, "parallel_mode", "auto"))
        self.pipe, self.model_id = pipe, model_id
        self.load_s = time.perf_counter() - started
        return self.load_s

    def run(self, job: dict) -> dict:
        """Render one job to its mp4 (rank 0 writes it). Returns {"status": done | stopped | failed, "path",
        "settings", "error", "field", "load_s", "render_s", "worker_id", "node_id"}; never raises for a job's own
        failure, so only a dead worker reaches the pool as an exception."""
        from engine.generate import GenerationRequest, generate_to_file
        from engine.pipeline import GenerationInterrupted
        from engine.speed import job_options

        with self._lock:
            state = self._jobs.setdefault(job["job_id"], _JobState())
            self.busy = job["job_id"]
        result: dict[str, Any] = {"worker_id": self.worker_id, "node_id": _node_id(), "load_s": 0.0}
        started = time.perf_counter()
        try:
            if state.stop.is_set():
                raise GenerationInterrupted("stopped before it started")
            result["load_s"] = self.load(job["model_id"])
            request = GenerationRequest.from_dict(job["request"])
            callback = self._callback(state)
            with job_options(self.pipe, job.get("options"), self._device()):
                if self.rank == 0:
                    path, settings = generate_to_file(self.pipe, request, job["out_path"], callback_on_step_end=callback,
                                                      advanced=job.get("record"))  # fmt: skip
                    result.update(status="done", path=str(path), settings=settings)
                else:  # the other ranks take part in every step; only rank 0 writes
                    self.pipe(**request.pipeline_kwargs(), output_type="latent", callback_on_step_end=callback)
                    result.update(status="done", path=None, settings={})
            self.jobs_done += 1
        except GenerationInterrupted as exc:
            result.update(status="stopped", error=str(exc))
        except InputError as exc:
            result.update(status="failed", error=str(exc), field=exc.field)
        except Exception as exc:
            result.update(status="failed", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        finally:
            with self._lock:  # events not polled yet travel with the result
                result["events"] = self._jobs.pop(job["job_id"], state).events
                self.busy = None
        result["render_s"] = time.perf_counter() - started - result["load_s"]
        return result

    def frames(self, job: dict):
        """The float frames of a job's request (no file): how the tests compare a group with one process."""
        from engine.generate import GenerationRequest

        self.load(job["model_id"])
        request = GenerationRequest.from_dict(job["request"])
        return self.pipe(**request.pipeline_kwargs(), output_type="np").frames[0]

    # -- inside
    def _device(self):
        if self.device:
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU

    def _callback(self, state: _JobState):
        started, last_preview = time.perf_counter(), [0.0]

        def callback(pipe, step, timestep, kwargs):
            total, now = len(pipe.scheduler.timesteps), time.perf_counter()
            event = {"step": step + 1, "total": total, "elapsed_s": now - started, "window": kwargs.get("window"),
                     "preview": None}  # fmt: skip
            if self.rank == 0 and (now - last_preview[0] >= PREVIEW_EVERY_S or step + 1 == total):
                last_preview[0] = now
                try:
                    latents = kwargs.get("latents")
                    event["preview"] = pipe.latent_preview(latents) if latents is not None else None
                except Exception:  # a preview must never break a job
                    pass
            with self._lock:
                state.events.append(event)
            if _agreed_stop(state.stop.is_set(), self.world):
                pipe._interrupt = True
            return {}

        return callback


def _agreed_stop(local: bool, world: int) -> bool:
    """A group stops at the same step on every rank (one rank stopping alone would leave the others waiting in a
    collective): the ranks' stop flags are max-reduced after each step."""
    if world <= 1:
        return local
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1 if local else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:
        return None


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


# ---------------------------------------------------------------------------------------------- the pool
class WorkerDied(RuntimeError):
    """A worker (or a rank of a group) died while it held a job."""


class NoWorkers(RuntimeError):
    """No node of the cluster offers a worker slot (for `NO_WORKERS_S`)."""


class WorkerHandle:
    """A worker of the pool: one actor, or the ranks of a group (calls go to every rank, answers come from rank 0)."""

    def __init__(self, worker_id: str, actors: list, placement_group=None):
        self.worker_id, self.actors, self.placement_group = worker_id, actors, placement_group
        self.ready_ref = None  # the first info() call: done once every rank is up (and, for a group, joined)
        self.info: dict = {"worker_id": worker_id, "model_id": None, "jobs_done": 0, "node_id": None}
        self.busy = False
        self.job: dict | None = None  # the job it renders now
        self.ready = False
        self.dead = False

    @property
    def lead(self):
        return self.actors[0]

    def is_ready(self) -> bool:
        import ray

        if self.dead or self.ready:
            return self.ready and not self.dead
        done, _ = ray.wait([self.ready_ref], timeout=0)
        if not done:
            return False
        try:
            self.info = ray.get(self.ready_ref)
        except Exception:  # it died starting (its node went away, its model code failed to import)
            self.dead = True
            return False
        self.ready = True
        return True

    def kill(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        if self.placement_group is not None:
            try:
                remove_placement_group(self.placement_group)
            except Exception:
                pass
        self.dead = True


class WorkerPool:
    """Jobs onto resident Ray workers (see the module). Thread-safe: the studio runs one thread per job."""

    def __init__(self, address: str | None = None, group_size: int = 1, parallel: str = "auto",
                 max_retries: int = 1, device: str | None = None, resource: str = WORKER_RESOURCE,
                 no_workers_s: float = NO_WORKERS_S, connect: bool = True):  # fmt: skip
        if group_size < 1:
            raise InputError(f"a worker group needs at least 1 rank (got {group_size})", field="ray_group_size")
        self.address, self.group_size, self.parallel = address, group_size, parallel
        self.max_retries, self.device, self.resource = max_retries, device, resource
        self.no_workers_s = no_workers_s
        self._refreshed = 0.0
        self.workers: list[WorkerHandle] = []
        self.history: list[dict] = []  # one entry per attempt: job, worker, node, status, queue_s, load_s, render_s
        self._cond = threading.Condition()
        self._count = 0
        if connect:
            self.connect()

    def connect(self) -> None:
        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=self.address, namespace=NAMESPACE, logging_level="ERROR", log_to_driver=False)
            except ConnectionError as exc:
                raise InputError(f"No Ray cluster at {self.address!r} ({exc}): start one with `ray start --head` "
                                 "(see docs/deploy.md) or leave out --ray.", field="ray") from exc  # fmt: skip

    # -- membership
    def slots(self) -> int:
        """Worker slots the live nodes offer now (`humo_worker` resources)."""
        import ray

        return int(ray.cluster_resources().get(self.resource, 0))

    def refresh(self) -> None:
        """Drop dead workers, and start one for every slot (group) that has none: nodes that joined get workers."""
        with self._cond:
            self._refresh()

    def _refresh(self, force: bool = True) -> None:
        import ray

        if not force and time.monotonic() - self._refreshed < REFRESH_S:
            return
        self._refreshed = time.monotonic()
        alive_nodes = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        for worker in list(self.workers):
            node = worker.info.get("node_id")
            if worker.dead or (node is not None and node not in alive_nodes):
                self._drop(worker)
        wanted = self.slots() // self.group_size
        while len(self.workers) < wanted:
            self.workers.append(self._start_worker())
        for worker in [w for w in self.workers if not w.busy and not w.is_ready()]:
            if len(self.workers) <= wanted:
                break
            self._drop(worker)  # still waiting for a slot that went away with its node

    def _start_worker(self) -> WorkerHandle:
        import ray

        self._count += 1
        worker_id = f"w{self._count}"
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        actor_class = ray.remote(HuMoWorker)
        options = {"max_concurrency": 4, "max_restarts": 0, "num_cpus": 0 if gpus else 1, "num_gpus": gpus}
        if self.group_size == 1:
            actor = actor_class.options(**options, resources={self.resource: 1}).remote(worker_id, self.device)
            handle = WorkerHandle(worker_id, [actor])
            handle.ready_ref = actor.info.remote()
            return handle
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle = {self.resource: 1, **({"GPU": 1} if gpus else {"CPU": 1})}
        group = placement_group([dict(bundle) for _ in range(self.group_size)], strategy="STRICT_PACK")
        actors = [
            actor_class.options(**options, scheduling_strategy=PlacementGroupSchedulingStrategy(group, i)).remote(
                f"{worker_id}.{i}", self.device, i, self.group_size
            )
            for i in range(self.group_size)
        ]
        handle = WorkerHandle(worker_id, actors, group)
        handle.ready_ref = _group_ready.options(num_cpus=0).remote(actors, self.parallel)
        return handle

    def _drop(self, worker: WorkerHandle) -> None:
        worker.kill()
        if worker in self.workers:
            self.workers.remove(worker)
        self._cond.notify_all()

    # -- jobs
    def acquire(self, model_id: str, stop: threading.Event | None = None, timeout_s: float | None = None):
        """An idle worker for `model_id` (holding it, else empty, else any), marked busy; None if `stop` was set
        or `timeout_s` passed first. Waits while every worker is busy or still starting."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        no_slots_since = None
        with self._cond:
            self._refresh()
            while True:
                self._refresh(force=False)
                if self.workers:
                    no_slots_since = None
                elif no_slots_since is None:
                    no_slots_since = time.monotonic()
                elif time.monotonic() - no_slots_since > self.no_workers_s:
                    raise NoWorkers(f"No node of the Ray cluster offers a `{self.resource}` slot: start a worker node "
                                    f"with `ray start --address HEAD:6379 --num-gpus 1 --resources "
                                    f"'{{\"{self.resource}\": 1}}'` (docs/deploy.md).")  # fmt: skip
                idle = [w for w in self.workers if not w.busy and w.is_ready()]
                if idle:
                    worker = min(idle, key=lambda w: (w.info.get("model_id") != model_id,
                                                      w.info.get("model_id") is not None, w.info.get("jobs_done", 0)))  # fmt: skip
                    worker.busy = True
                    return worker
                if (stop is not None and stop.is_set()) or (deadline is not None and time.monotonic() > deadline):
                    return None
                self._cond.wait(POLL_S)

    def release(self, worker: WorkerHandle) -> None:
        with self._cond:
            worker.busy = False
            self._cond.notify_all()

    def run(self, job: dict, on_event=None, stop: threading.Event | None = None, on_start=None) -> dict:
        """Run a job on the pool to its end; returns the worker's result dict (see HuMoWorker.run; "pool_error": the
        pool's own failure, a sentence for the user). `on_event(e)`
        gets each progress event, `on_start(worker_info)` is called when the first worker takes the job. A worker
        that dies mid-job is dropped and the job retried on another, up to `max_retries` times; then the result
        is "failed" with a message saying so."""
        submitted, attempts, started = time.perf_counter(), 0, False
        while True:
            try:
                worker = self.acquire(job["model_id"], stop)
            except NoWorkers as exc:
                return {"status": "failed", "error": str(exc), "worker_id": None, "pool_error": True}
            if worker is None:
                return {"status": "stopped", "error": "stopped while waiting for a worker", "worker_id": None}
            queue_s = time.perf_counter() - submitted
            if not started and on_start is not None:
                on_start(worker.info)
            started = True
            entry = {"job_id": job["job_id"], "worker_id": worker.worker_id, "node_id": worker.info.get("node_id"),
                     "queue_s": queue_s, "attempt": attempts + 1}  # fmt: skip
            try:
                result = self._run_on(worker, job, on_event, stop)
            except WorkerDied as exc:
                attempts += 1
                self.history.append({**entry, "status": "worker died"})
                with self._cond:
                    self._drop(worker)
                if attempts > self.max_retries:
                    return {"status": "failed", "worker_id": worker.worker_id, "pool_error": True,
                            "error": f"The worker rendering this job died ({exc}); it was tried {attempts} time(s). "
                                     "Run it again."}  # fmt: skip
                submitted = time.perf_counter()
                continue
            finally:
                self.release(worker)
            worker.info = {**worker.info, "model_id": job["model_id"],
                           "jobs_done": worker.info.get("jobs_done", 0) + (result["status"] == "done")}  # fmt: skip
            self.history.append({**entry, "status": result["status"], "load_s": result.get("load_s"),
                                 "render_s": result.get("render_s")})  # fmt: skip
            result["attempts"] = attempts + 1
            result["queue_s"] = queue_s
            return result

    def _run_on(self, worker: WorkerHandle, job: dict, on_event, stop) -> dict:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        refs = [actor.run.remote(job) for actor in worker.actors]
        stop_sent, worker.job = False, job
        try:
            while True:
                done, _ = ray.wait(refs[:1], timeout=POLL_S)
                if stop is not None and stop.is_set() and not stop_sent:
                    for actor in worker.actors:
                        actor.stop.remote(job["job_id"])
                    stop_sent = True
                for event in ray.get(worker.lead.poll.remote(job["job_id"])):
                    if on_event is not None:
                        on_event(event)
                if done:
                    result = ray.get(refs)[0]
                    for event in result.pop("events", []):  # the steps after the last poll
                        if on_event is not None:
                            on_event(event)
                    return result
        except (RayActorError, RayTaskError) as exc:
            raise WorkerDied(f"{worker.worker_id}: {type(exc).__name__}") from exc
        finally:
            worker.job = None

    # -- what the Models tab shows
    def describe(self) -> list[dict]:
        """One row per worker: id, node, ranks, model held, state, jobs done."""
        with self._cond:
            self._refresh()
            rows = []
            for worker in self.workers:
                ready = worker.is_ready()
                state = "busy" if worker.busy else ("idle" if ready else "starting")
                rows.append({"worker": worker.worker_id, "node": (worker.info.get("node_id") or "")[:12],
                             "host": worker.info.get("host", ""), "ranks": len(worker.actors),
                             "model": worker.info.get("model_id") or "—", "state": state,
                             "jobs done": worker.info.get("jobs_done", 0)})  # fmt: skip
            return rows

    def shutdown(self) -> None:
        """End this pool's workers (the cluster itself is left to whoever started it)."""
        with self._cond:
            for worker in list(self.workers):
                self._drop(worker)


def _group_ready_impl(actors: list, parallel: str) -> dict:
    """Rank 0's address, then every rank joins the process group at once (init blocks until all have joined)."""
    import ray

    master = ray.get(actors[0].address.remote())
    ray.get([actor.join_group.remote(master, parallel) for actor in actors])
    return ray.get(actors[0].info.remote())


def _make_group_ready():
    import ray

    return ray.remote(_group_ready_impl)


class _LazyRemote:
    """`_group_ready.options(...).remote(...)` without importing ray at import time."""

    def options(self, **kwargs):
        return _make_group_ready().options(**kwargs)


_group_ready = _LazyRemote()
