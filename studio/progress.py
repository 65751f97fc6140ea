"""What a job reports while it runs (JobProgress) and how it ends (JobResult): the words the in-process job runner
(studio/jobs.py), the Ray pool (studio/pool.py) and the pages share, kept apart so none imports another for them.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class JobProgress:
    generation_id: int | None
    step: int = 0
    total: int = 0
    elapsed_s: float = 0.0
    remaining_s: float | None = None
    preview: object | None = None  # PIL image (the latent thumbnail, where no clip preview is made)
    message: str = ""
    preview_video: str | None = None  # a short mp4 of the model's predicted clean video (ClipPreviews)
    preview_note: str = ""  # what previews cost, beside the preview


@dataclass
class JobResult:
    generation_id: int
    status: str  # done | failed | stopped
    video_path: Path | None = None
    settings: dict = field(default_factory=dict)
    error: str | None = None
    field: str | None = None


PREVIEW_DIR = Path(tempfile.gettempdir()) / "humo-previews"


class ClipPreviews:
    """The predicted clean video at a step's end, as a short mp4, at intervals the budget allows
    (engine.preview.PreviewBudget: previews cost at most `share` of the job's steps).

    Decoders are tried in `DECODERS` order (the fitted projection by default; the real VAE at low resolution can be
    put first). A decoder whose one preview costs more than the share of this job is not used again for that
    pipeline and latent shape (its cost is kept in `pipe.preview_costs`), and the next is measured; when none fits,
    previews are off and the note says why. Needs the step's `noise_pred` among the callback's tensors."""

    # Cheapest first. bench/preview_bench.py (bench/RESULTS.md): the projection costs 3-7 % of a step on tiny 480p
    # and HuMo-nano, the low-resolution VAE 2-4 steps' worth, over any 10 % budget; set ("vae", "projection") where
    # the VAE is cheap (a GPU) to try it first: a decoder that costs too much gives way to the next.
    DECODERS = ("projection",)

    def __init__(self, pipe, generation_id: int | None, total_steps: int, share: float | None = None):
        from engine import preview

        self.pipe = pipe
        self.gid = generation_id
        self.total_steps = total_steps
        self.share = preview.PREVIEW_SHARE if share is None else share
        self.budget: preview.PreviewBudget | None = None
        self.decoder: str | None = None
        self.files: list[Path] = []
        self.note = ""
        self.shown = ""  # what the newest preview shows

    def _costs(self) -> dict:
        costs = getattr(self.pipe, "preview_costs", None)
        if costs is None:
            costs = self.pipe.preview_costs = {}
        return costs

    def _choose(self, shape: tuple) -> None:
        """The first decoder not known to be too costly for this shape, with its known cost."""
        from engine import preview

        steps_s = self.budget.steps_s if self.budget else 0.0
        steps = self.budget.steps if self.budget else 0
        spent = self.budget.spent_s if self.budget else 0.0
        for decoder in self.DECODERS:
            known = self._costs().get((decoder, shape))
            trial = preview.PreviewBudget(self.total_steps, self.share, known)
            trial.steps_s, trial.steps, trial.spent_s = steps_s, steps, spent
            if not trial.off:
                self.decoder, self.budget = decoder, trial
                return
        self.decoder = None  # every decoder costs more than the share: off
        self.budget = trial

    def step_done(self, step: int, step_s: float, kwargs: dict) -> tuple[str | None, str]:
        """Count a finished step; make a preview when one is due. Returns (mp4 path or None, note)."""
        latents, noise_pred = kwargs.get("latents"), kwargs.get("noise_pred")
        if latents is None or noise_pred is None:
            return None, ""
        shape = tuple(latents.shape)
        first = self.budget is None
        if first:  # a tally until the step time is known, then the decoder that fits
            from engine import preview

            self.budget = preview.PreviewBudget(self.total_steps, self.share)
        self.budget.count(step_s)
        if first:
            self._choose(shape)
        due = self.decoder is not None and self.budget.due()
        if not due:  # the page keeps playing the last preview: its label keeps saying which step it shows
            cost = self.budget.note() if self.decoder else self._off_note()
            self.note = f"{self.shown} · {cost}" if self.shown and cost else cost
            return None, self.note
        decoder = self.decoder
        if decoder == "projection" and getattr(self.pipe, "_preview_projection", 1) is None:
            from engine import preview  # the one-time fit (cached on disk) is set-up, not the preview's cost

            self.pipe._preview_projection = preview.fit_latent_rgb_projection(self.pipe.vae)
        started = time.perf_counter()
        frames = self.pipe.clean_preview_frames(latents, noise_pred, step, decoder)
        path = self._write(frames, step)
        cost = time.perf_counter() - started
        self.budget.record(cost)
        self._costs()[(decoder, shape)] = cost
        used = self.budget.note()  # this preview's cost, before any switch
        if self.budget.off:  # too costly for this job: the next decoder (or none) from the next step on
            self._choose(shape)
            if self.decoder is not None:
                used += f"; next previews through the {self.decoder} decoder"
        self.shown = f"predicted clean video after step {step + 1}/{self.total_steps} ({decoder} decoder)"
        self.note = f"{self.shown} · {used}"
        return str(path), self.note

    def _off_note(self) -> str:
        costs = {d: c for (d, shape), c in self._costs().items()}
        cheapest = min(costs.values(), default=None)
        step_s = self.budget.step_s if self.budget else None
        if cheapest is None or not step_s:
            return "previews off"
        return (
            f"previews off: one costs {cheapest:.2f} s, more than {self.share:.0%} of this job "
            f"({self.total_steps} steps × {step_s:.2f} s)"
        )

    def _write(self, frames, step: int) -> Path:
        from engine import preview

        PREVIEW_DIR.mkdir(parents=True, exist_ok=True)
        path = PREVIEW_DIR / f"{self.gid or 0}-{os.getpid()}-{step:04d}.mp4"
        preview.write_preview_video(frames, path)
        self.files.append(path)
        while len(self.files) > 2:  # the page copies the newest into Gradio's cache; older ones are done with
            self.files.pop(0).unlink(missing_ok=True)
        return path


def preview_update(event: JobProgress):
    """The page's preview video update for a progress event: the newest clip preview with its cost note in the
    label; a latent thumbnail (jobs without clip previews: the Ray pool's workers) as a one-frame clip; else no
    change."""
    import gradio as gr
    import numpy as np

    from studio.serving import served_copy

    path = event.preview_video
    if path is None and event.preview is not None:
        from engine import preview

        PREVIEW_DIR.mkdir(parents=True, exist_ok=True)
        path = str(PREVIEW_DIR / f"{event.generation_id or 0}-{os.getpid()}-thumb.mp4")
        preview.write_preview_video([np.asarray(event.preview.convert("RGB"))], path, fps=1)
    if path is None:
        return gr.update(label=f"Denoising preview · {event.preview_note}") if event.preview_note else gr.update()
    label = f"Denoising preview · {event.preview_note}" if event.preview_note else "Denoising preview"
    try:
        served = served_copy(path)
    except OSError:  # removed while it was copied
        served = None
    if served is None:  # a newer preview replaced it before the page got here: keep playing the last one
        return gr.update(label=label)
    Path(path).unlink(missing_ok=True)  # the page has its copy: no preview file outlives its job
    return gr.update(value=served, label=label)
