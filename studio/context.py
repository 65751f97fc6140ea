"""Shared state of one running studio: options, the gallery store, and loaded pipelines (one per model id)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from studio.queue_view import JobBoard, JobTurn, Waiter
from studio.store import Store


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class StudioOptions:
    data_dir: Path | None = None
    # The gallery database (None: $HUMO_DB_URL, else SQLite in the data folder). Front-ends sharing one PostgreSQL
    # database share its data folder too (studio/store.py).
    db_url: str | None = None
    model: str | None = None  # None: the best model present
    public: bool = False  # HUMO_PUBLIC=1: capped jobs, per-visitor galleries, consent box, no training/downloads
    device: str | None = None
    gpus: int = 1  # >1: every job runs as a torchrun worker group over this many GPUs (processes on CPU)
    auth: list[tuple[str, str]] | None = None  # --auth / HUMO_AUTH: each user sees only their own work
    # issue 31: --ray ADDRESS / HUMO_RAY_ADDRESS renders every job on resident Ray workers (studio/pool.py); None: in
    # this process, as always. ray_group_size > 1: each worker is a multi-GPU group of that many ranks.
    ray_address: str | None = None
    ray_group_size: int = 1

    # Limits in every mode: checked from headers before any decode.
    max_audio_seconds: float = 600.0  # a 10-minute voice; longer uploads are refused in well under a second
    max_frames_plain: int = 401  # frames one window may have without *Long video* (16 s)
    max_extra_images: int = 3
    # A dub's source video: frames larger than full HD are refused (the model works at 480p/720p; decoding a
    # 4096×4096 clip costs gigabytes before any check could run otherwise). HUMO_MAX_VIDEO_PIXELS / app.py
    # --max-video-pixels set it; a public studio keeps max_pixels_public.
    max_video_pixels: int = 1920 * 1080
    max_upload: str = "1gb"
    cache_ttl_s: int = 3600  # Gradio's cache of uploads and served media is aged out after this

    # Caps in public mode (a shared Space): keep one job well inside a ZeroGPU slot.
    max_steps_public: int = 30
    max_passes_public: int = 4  # transformer passes per step: the most an official schedule runs (1.7B TIA)
    max_frames_public: int = 97
    max_pixels_public: int = 480 * 832
    max_audio_seconds_public: float = 60.0
    max_upload_public: str = "50mb"
    max_queue_public: int = 16  # jobs waiting in all; more get a "busy" message
    max_sweep_cells_public: int = 4  # a sweep's cells are a visitor's jobs: a bigger grid is refused whole
    admission_ttl_s: float = 900.0  # a queued job whose page went away frees its visitor's slot after this
    # Reverse proxies in front of the studio whose X-Forwarded-For hop is believed for the per-address cap
    # (HUMO_TRUSTED_PROXIES; 1 on a Space). 0: the socket's peer, the header is ignored.
    trusted_proxies: int = 0
    # Or the addresses of those proxies (HUMO_TRUSTED_PROXIES="10.0.0.5,10.1.0.0/16"): the server itself then takes
    # the client's address from X-Forwarded-For only when the connection comes from one of them (uvicorn's
    # forwarded_allow_ips). Empty: no address is trusted.
    proxy_addresses: str = ""

    @property
    def frame_cap(self) -> int:
        return self.max_frames_public if self.public else self.max_frames_plain

    @property
    def video_pixel_cap(self) -> int:
        return self.max_pixels_public if self.public else self.max_video_pixels

    @property
    def audio_cap_s(self) -> float:
        return self.max_audio_seconds_public if self.public else self.max_audio_seconds


@dataclass
class StudioContext:
    options: StudioOptions
    store: Store
    default_model: str
    _pipelines: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    seconds_per_pass: dict = field(default_factory=dict)  # measured, per model id, for time estimates
    # owner -> how many of its jobs' worker threads are alive; a ticket given back meanwhile waits for them to end
    working: dict = field(default_factory=dict)
    release_pending: set = field(default_factory=set)
    # One job at a time on this studio's pipelines (and GPU), whatever Gradio's queue does: a job whose page went away
    # keeps its turn until its worker thread has really ended (DESIGN.md decision 11). The turn is handed out in the
    # order of its line, which the queue list shows by gallery number and an owner may reorder (studio/queue_view.py).
    line: JobTurn = field(default_factory=JobTurn)
    # session hash -> whether Gradio's queue still holds (or runs) an event of that page; set by the app once the
    # queue exists (studio.admission.watch_queue). A ticket of a page whose event the queue dropped is given back.
    session_in_queue: Callable[[str], bool] | None = None
    board: JobBoard = field(default_factory=JobBoard)  # the Generate tab's queue list (studio/queue_view.py)
    startup_report: str = ""
    visitor_key: bytes = b""  # signs the visitor ids this studio issues (studio/owners.py); never leaves the server
    pool: object | None = None  # studio.pool.StudioPool with --ray (issue 31), else None: jobs run in-process

    @classmethod
    def create(cls, options: StudioOptions) -> StudioContext:
        from engine.registry import best_available_model

        store = Store.open(options.data_dir, options.db_url)
        # Rows a dead front-end (a crash of this one, or another sharing the gallery) left running are failed before
        # any job starts; a live front-end's rows and files are left alone (studio/leases.py says who is alive).
        failed = store.recover_crashed()
        removed = store.clean_leftovers()  # half-written files and inputs no row references and nobody wants
        store.start_heartbeat()  # and from now on, whatever a front-end that dies leaves behind
        report = (
            f"{failed} interrupted job(s) marked failed, {removed['partial']} half-written file(s) and "
            f"{removed['unreferenced']} unreferenced file(s) removed"
        )
        from studio.eta import load_costs
        from studio.owners import visitor_key
        from studio.pool import open_pool

        return cls(
            options=options,
            store=store,
            default_model=options.model or best_available_model(),
            seconds_per_pass=load_costs(store),  # what this machine measured before the restart
            startup_report=report,
            visitor_key=visitor_key(store.data_dir),
            pool=open_pool(options.ray_address, options.ray_group_size),
        )

    def pipeline(self, model_id: str | None = None):
        """The loaded pipeline for a model id (loaded once, kept; the lock keeps two jobs from loading twice)."""
        from engine.registry import load_pipeline

        model_id = model_id or self.default_model  # a fine-tune is a named folder ("run:<name>", studio.app)
        with self._lock:
            if model_id not in self._pipelines:
                self._pipelines[model_id] = load_pipeline(model_id, device=self.options.device)
            return self._pipelines[model_id]

    @contextmanager
    def turn(self, stop_event: threading.Event | None = None, gid: int | None = None, owner: str | None = None,
             seconds: float | None = None) -> Iterator[None]:  # fmt: skip
        """Hold the studio's one job turn while a job loads and runs its pipeline: a pipeline (its scheduler keeps
        per-run state) never runs two jobs at once. Jobs get the turn in the order of the line (gallery row `gid`
        of `owner`, `seconds` its estimate); one stopped or cancelled while it waits leaves without its turn."""
        from engine.pipeline import GenerationInterrupted

        waiter = Waiter(gid, owner, stop_event if stop_event is not None else threading.Event(), seconds)
        if not self.line.acquire(waiter):
            raise GenerationInterrupted("cancelled before it started" if waiter.cancelled else
                                        "stopped before it started")  # fmt: skip
        try:
            yield
        finally:
            self.line.release()

    @property
    def is_demo_model(self) -> bool:
        """The untrained built-in model (its videos are noise)."""
        from engine.registry import MODELS

        return self.default_model in MODELS and MODELS[self.default_model].untrained

    @property
    def is_nano_model(self) -> bool:
        """The bundled HuMo-nano (trained on the synthetic world, 64x64)."""
        return self.default_model == "humo-nano"
