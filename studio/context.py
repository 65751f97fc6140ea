"""Shared state of one running studio: options, the gallery store, and loaded pipelines (one per model id)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from studio.store import Store


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class StudioOptions:
    data_dir: Path | None = None
    model: str | None = None  # None: the best model present
    public: bool = False  # HUMO_PUBLIC=1: capped sizes/steps, no training tab
    device: str | None = None
    gpus: int = 1  # >1: every job runs as a torchrun worker group over this many GPUs (processes on CPU)

    # Caps applied in public mode (a shared Space): keep one job well inside a ZeroGPU slot.
    max_steps_public: int = 30
    max_frames_public: int = 97
    max_pixels_public: int = 480 * 832


@dataclass
class StudioContext:
    options: StudioOptions
    store: Store
    default_model: str
    _pipelines: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    seconds_per_pass: dict = field(default_factory=dict)  # measured, per model id, for time estimates

    @classmethod
    def create(cls, options: StudioOptions) -> StudioContext:
        from engine.registry import best_available_model

        store = Store.open(options.data_dir)
        store.recover_crashed()  # rows left running by a crash are marked failed before any job starts
        return cls(options=options, store=store, default_model=options.model or best_available_model())

    def pipeline(self, model_id: str | None = None):
        """The loaded pipeline for a model id (loaded once, kept; the lock keeps two jobs from loading twice)."""
        from engine.registry import load_pipeline

        model_id = model_id or self.default_model
        with self._lock:
            if model_id not in self._pipelines:
                if model_id.startswith("checkpoint:"):
                    self._pipelines[model_id] = _load_checkpoint(model_id.split(":", 1)[1], self.options.device)
                else:
                    self._pipelines[model_id] = load_pipeline(model_id, device=self.options.device)
            return self._pipelines[model_id]

    @property
    def is_demo_model(self) -> bool:
        """The untrained built-in model (its videos are noise)."""
        return self.default_model == "tiny"

    @property
    def is_nano_model(self) -> bool:
        """The bundled HuMo-nano (trained on the synthetic world, 64x64)."""
        return self.default_model == "humo-nano"


def _load_checkpoint(path: str, device):
    """A fine-tuned transformer (diffusers folder written by the trainer) on the tiny/official encoders."""
    from engine.models import HuMoTransformer3DModel
    from engine.registry import load_pipeline

    transformer = HuMoTransformer3DModel.from_pretrained(path)
    base = "tiny" if transformer.config.num_attention_heads * transformer.config.attention_head_dim < 1536 else None
    pipe = load_pipeline(base or ("humo-17b" if transformer.config.in_channels == 36 else "humo-1.7b"), device=device)
    pipe.register_modules(transformer=transformer.to(pipe.device))
    pipe.model_id = f"checkpoint:{path}"
    return pipe
