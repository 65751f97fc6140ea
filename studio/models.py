"""The models a job may use: the registry's present models, HuMo files under the models folder, and an owner's
finished fine-tunes (a run's `final/` as the named model `run:<name>`). Read by the Generate, Train and Models tabs
and the API, so every door offers the same list.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from engine import registry
from engine.errors import HuMoError, InputError
from studio.context import StudioContext
from studio.store import LOCAL_OWNER


def runs_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "runs"


OWNER_FILE = "owner.txt"  # who started the run (runs made before owners existed: the local owner)


def run_owner(run_dir: Path) -> str:
    path = Path(run_dir) / OWNER_FILE
    return path.read_text().strip() if path.is_file() else LOCAL_OWNER


def list_checkpoints(data_dir: str | Path, owner: str = LOCAL_OWNER) -> list[tuple[str, str]]:
    """(label, path) of every finished run of `owner` (a `final/` diffusers folder)."""
    found = []
    for final in sorted(runs_dir(Path(data_dir)).glob("*/final")):
        if (final / "config.json").exists() and run_owner(final.parent) == owner:
            found.append((final.parent.name, str(final)))
    return found


def model_choices(ctx: StudioContext, owner: str = LOCAL_OWNER) -> list[str]:
    """Models a job may use: those present, the default, and (outside public mode) `owner`'s finished runs."""
    from engine.registry import list_models

    choices = [m["id"] for m in list_models() if m["present"]]
    if not ctx.options.public:  # GGUF / fp8 / fp16 HuMo files under the models folder (engine/models/single_file.py)
        choices += single_file_models()
        choices += [finetune_id(name, path) for name, path in list_checkpoints(ctx.store.data_dir, owner)]
        choices = [c for c in choices if c]
    if ctx.default_model not in choices:
        choices.insert(0, ctx.default_model)
    return choices


def finetune_id(run: str, final: str) -> str | None:
    """A finished run's `final/` as a named model, "run:<run>" (engine.registry.register_folder): every door takes
    the name, and the gallery and the mp4 record it rather than the server path. None where the folder is not a
    model (a broken or foreign final/)."""
    from engine.registry import register_folder

    try:
        return register_folder(f"run:{run}", final).id
    except InputError:
        return None


def single_file_models() -> list[str]:
    """HuMo transformer files under HUMO_MODELS_DIR whose base model's VAE and encoders are present."""
    from engine.models.single_file import find_weight_files
    from engine.registry import get_spec, models_dir

    found = []
    for report in find_weight_files(models_dir()):
        try:
            if report.is_humo and get_spec(report.path).is_present():
                found.append(report.path)
        except HuMoError:  # no registered model has its encoders: `python -m engine info` says so
            continue
    return found


def untrained(model_id: str | None) -> bool:
    """Whether a job's model is an untrained test model (`tiny`: its videos are noise)."""
    spec = registry.find_spec(model_id) if model_id else None
    return bool(spec is not None and spec.untrained)


def model_labels(choices: list[str]) -> list[tuple[str, str]]:
    """The model list as (label, id): an untrained test model says so where it is picked."""
    return [(f"{m} (untrained test model: noise)" if untrained(m) else m, m) for m in choices]


def picker_update(ctx: StudioContext, owner: str, known: list[str] | None) -> tuple[object, list[str]]:
    """The Generate tab's model choices when they changed since `known` (a run finished, a checkpoint appeared),
    else no change: the dropdown is only touched when there is something new in it."""

    choices = model_choices(ctx, owner)
    if choices == known:
        return gr.update(), known
    return gr.update(choices=model_labels(choices)), choices  # the same labels as the list first built


REFRESH_S = 3.0


def wire_model_refresh(ctx: StudioContext, model_picker, every_s: float = REFRESH_S):
    """Finished fine-tunes join `model_picker` (the Generate tab's model list) while the page is open. Call it
    outside any tab: Gradio mounts a tab's components, a timer too, only once the tab is opened, so a timer in the
    Train tab left new runs out of the list until someone opened that tab. Not in public mode (no runs there).
    Returns the timer (None in public mode)."""
    from studio.owners import request_owner

    if ctx.options.public:
        return None
    known = gr.State(None)
    timer = gr.Timer(every_s)

    def refresh(request: gr.Request, previous):
        return picker_update(ctx, request_owner(False, request), previous)

    private = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
    timer.tick(refresh, known, [model_picker, known], **private)
    return timer
