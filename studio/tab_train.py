"""Train tab: build a dataset, launch stage 1 / stage 2 fine-tunes as separate processes, follow and stop them.

Runs live in `<data>/runs/<name>/` (config, train.log, metrics.jsonl, checkpoints/, validation/, final/). A finished
run's `final/` folder appears in the Generate tab's model picker as `run:<name>` (studio.models.finetune_id); its validation videos
(`validation/step_NNNNNN.mp4`, written by the trainer) show in the run status area.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import gradio as gr
import pandas as pd
import yaml

from engine.errors import InputError
from studio.context import StudioContext
from studio.models import OWNER_FILE, list_checkpoints, picker_update, run_owner, runs_dir  # noqa: F401
from studio.owners import request_owner
from studio.serving import served_copy
from studio.store import LOCAL_OWNER

PROCESSES: dict[str, subprocess.Popen] = {}  # run name -> the training process this studio started
ROOT = Path(__file__).resolve().parents[1]


def list_runs(data_dir: Path, owner: str = LOCAL_OWNER) -> list[str]:
    return sorted(p.name for p in runs_dir(data_dir).glob("*") if (p / "run.yaml").exists() and run_owner(p) == owner)


def _own_run(ctx: StudioContext, name: str, owner: str) -> Path:
    """The run folder `name` if it is `owner`'s (or does not exist yet); another owner's run reads as taken."""
    run_dir = runs_dir(ctx.store.data_dir) / _safe_name(name)
    if run_dir.exists() and run_owner(run_dir) != owner:
        raise InputError(f"The run name {name} is taken: choose another.", field="name")
    return run_dir


def resolve_cache(dataset: str) -> Path:
    """A cache folder (index.json), or a prepared clips folder whose `cache/` sibling exists."""
    path = Path(dataset or "").expanduser()
    if (path / "index.json").exists():
        return path
    if (path / "cache" / "index.json").exists():
        return path / "cache"
    raise InputError(
        f"{dataset!r} is not a training cache. Build one below from videos, or run `python -m training prepare` "
        "then `python -m training cache`.",
        field="dataset",
    )


def dataset_folder(ctx: StudioContext, name: str, out_dir: str | None = None) -> Path:
    """Where a dataset is built: the Output folder field when given, else `<data>/train/<run name>`."""
    return (
        Path(out_dir).expanduser() if (out_dir or "").strip() else Path(ctx.store.data_dir) / "train" / _safe_name(name)
    )


def build_dataset(ctx: StudioContext, name: str, videos: list, model: str, frames: int, size: int,
                  out_dir: str | None = None, owner: str = LOCAL_OWNER) -> str:  # fmt: skip
    """Uploaded videos -> clips (cut, faces, audio, references) -> an encoded cache. Returns the cache path.

    `python -m training prepare` then `python -m training cache` run as child processes, like `fit`: a crash or
    a big build never takes the studio down. Their output goes to runs/<name>/build.log, the run status shows
    the build, and Stop ends it. This call waits for them (in its own Gradio worker) to fill the Dataset box."""
    if not videos:
        raise InputError("Upload at least one video (with a face and speech).", field="videos")
    run_dir = _own_run(ctx, name, owner)
    if _running(run_dir.name):
        raise InputError(f"Run {run_dir.name} is training or building: wait for it or press Stop.", field="name")
    root = dataset_folder(ctx, name, out_dir)
    src = root / "source"
    src.mkdir(parents=True, exist_ok=True)
    for video in videos:
        path = Path(getattr(video, "name", video))
        target = src / path.name
        if not target.exists():
            target.write_bytes(path.read_bytes())
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / OWNER_FILE).write_text(owner)
    log = run_dir / "build.log"
    log.write_text("")
    clips = root / "clips"
    prepare = ["prepare", "--input", str(src), "--out", str(clips), "--frames", str(int(frames))]
    prepare += ["--size", f"{int(size)}x{int(size)}", "--quiet"]
    error = _build_step(run_dir.name, prepare, log)
    if error is not None:
        if "use another output folder" in error:  # raw.py's geometry check: the folder holds other clips
            raise InputError(
                f"{root} already holds a dataset built with other settings ({error}). Set another Output folder (or "
                "Run name), or build again with the settings it was made with.",
                field="out_dir",
            )
        raise InputError(f"Preparing the clips failed: {error}", field="videos")
    report = json.loads((clips / "report.json").read_text())
    if not report.get("clips"):
        _release_folder(clips)
        raise InputError(_no_clip_advice(report.get("skipped", {}), src, int(frames)), field="videos")
    error = _build_step(run_dir.name, ["cache", "--clips", str(clips), "--out", str(root / "cache"),
                                       "--model", model or "tiny"], log)  # fmt: skip
    if error is not None:
        raise InputError(f"Encoding the clips failed: {error}", field="videos")
    return str(root / "cache")


def _release_folder(clips: Path) -> None:
    """A prepare run that made no clip leaves nothing to protect: drop its geometry marker (training/raw.py's
    prepare.json), so the next Build with other settings (the Frames per clip the advice names) uses the folder
    instead of refusing it as "built with other settings"."""
    if not any((clips / "clips").glob("*/meta.json")):
        (clips / "prepare.json").unlink(missing_ok=True)


BUILDS: dict[str, subprocess.Popen] = {}  # run name -> the dataset build step (prepare or cache) now running


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen:
    """`python -m training <args>` as a child of the studio, its output appended to `log_path`."""
    log = open(log_path, "a")  # noqa: SIM115  (the child owns it for its lifetime)
    command = [sys.executable, "-m", "training", *args]
    return subprocess.Popen(
        command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )


def _running(name: str) -> bool:
    return any(name in table and table[name].poll() is None for table in (PROCESSES, BUILDS))


def _build_step(name: str, args: list[str], log: Path) -> str | None:
    """Run one build step to its end: None when it succeeded, else why not (its `error:` line, or that Stop
    ended it, or its exit status)."""
    BUILDS[name] = process = _spawn(args, log)
    code = process.wait()
    if code == 0:
        return None
    if code < 0:
        raise InputError(f"The dataset build of {name} was stopped; Build starts it again.", field="name")
    errors = [
        line[len("error: ") :] for line in log.read_text(errors="replace").splitlines() if line.startswith("error: ")
    ]
    return errors[-1] if errors else f"`python -m training {args[0]}` exited with {code} (see build.log)"


def _no_clip_advice(skipped: dict, src: Path, frames: int) -> str:
    """Why no clip came out, and what to change: a too-short video names the Frames per clip that fits it."""
    from engine import media
    from engine.audio import snap_frames

    if skipped.get("too_short"):
        lengths = []
        for video in sorted(src.iterdir()):
            try:
                lengths.append(round((media.probe(video).get("video") or {}).get("duration") * 25))
            except (InputError, TypeError):
                continue
        shortest = min(lengths, default=0)
        if shortest >= 5:
            return (
                f"The shortest video has {shortest} frames ({shortest / 25:.2f} s at 25 fps), fewer than Frames per "
                f"clip ({frames}): set Frames per clip to {snap_frames(shortest)} or lower, or upload longer videos."
            )
        return "The videos are shorter than 5 frames at 25 fps, too short to train on: upload longer videos."
    return f"No usable clip: {dict(skipped)}. Use videos with a visible face and speech."


def _safe_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", (name or "").strip()).strip("-.")
    if not name:
        raise InputError("Give the run a name (letters, digits, - and _).", field="name")
    return name[:80]


def launch(ctx: StudioContext, name: str, dataset: str, stage: int, base_model: str, steps: int, learning_rate: float,
           lora_rank: int, resume: bool = False, owner: str = LOCAL_OWNER) -> str:  # fmt: skip
    """Start `python -m training fit` for `owner`'s run in its own process; logs go to runs/<name>/train.log."""
    name = _safe_name(name)
    run_dir = _own_run(ctx, name, owner)
    if name in PROCESSES and PROCESSES[name].poll() is None:
        return f"Run {name} is already training."
    if name in BUILDS and BUILDS[name].poll() is None:
        return f"Run {name} is still building its dataset: launch when the build is done."
    config_path = run_dir / "run.yaml"
    if resume:
        if not config_path.exists():
            raise InputError(f"No run called {name} to resume.", field="name")
    else:
        cache = resolve_cache(dataset)
        if int(steps) < 1 or float(learning_rate) <= 0 or not float(learning_rate) < 1:
            raise InputError("Steps must be ≥ 1 and the learning rate between 0 and 1.", field="steps")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / OWNER_FILE).write_text(owner)
        config = {
            "cache_dir": str(cache),
            "run_dir": str(run_dir),
            "base_model": base_model,
            "stage": int(stage),
            "steps": int(steps),
            "learning_rate": float(learning_rate),
            "lora_rank": int(lora_rank),
            "batch_size": 1,
            "checkpoint_every": max(1, int(steps) // 10),
        }
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    train_log = run_dir / "train.log"
    PROCESSES[name] = _spawn(["fit", "--config", str(config_path)] + (["--resume"] if resume else []), train_log)
    return f"▶ Training {name} (stage {stage}) started: pid {PROCESSES[name].pid}"


def stop(ctx: StudioContext, name: str, owner: str = LOCAL_OWNER) -> str:
    name = _own_run(ctx, name, owner).name
    build = BUILDS.get(name)
    if build is not None and build.poll() is None:
        build.kill()  # nothing to save: Build again reuses the clips prepare finished
        build.wait()
        return f"■ The dataset build of {name} stopped."
    process = PROCESSES.get(name)
    if process is None or process.poll() is not None:
        return f"{name} is not running."
    process.send_signal(signal.SIGTERM)  # the trainer finishes its step and writes a checkpoint
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
    return f"■ {name} stopped; resume continues from its last checkpoint."


def run_status(ctx: StudioContext, name: str, owner: str = LOCAL_OWNER) -> tuple[str, str, pd.DataFrame | None]:
    """(status markdown, log tail, loss frame) of `owner`'s run; the frame is None until the run has a step.

    None, not an empty frame: Gradio's LinePlot fixes its colour scale (one colour per series) from the first
    frame it draws, so an empty first frame leaves every later line without a colour, i.e. invisible. After None
    the plot starts over and takes the series of the next frame."""
    try:
        run_dir = _own_run(ctx, name, owner) if name else None
    except InputError:
        run_dir = None
    if run_dir is None:
        return "No run selected.", "", None
    building = name in BUILDS and BUILDS[name].poll() is None
    log_path = run_dir / ("build.log" if building else "train.log")
    log = log_tail(log_path.read_text(errors="replace")[-20000:]) if log_path.exists() else ""
    if building:
        return f"**{name}**: building its dataset", log, None
    rows = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    config = yaml.safe_load((run_dir / "run.yaml").read_text()) if (run_dir / "run.yaml").exists() else {}
    total = int(config.get("steps", 0))
    process = PROCESSES.get(name)
    running = process is not None and process.poll() is None
    state = "running" if running else ("finished" if (run_dir / "final").exists() else "stopped")
    text = f"**{name}**: {state}"
    if rows:
        last = rows[-1]
        text += f" · step {last['step']}/{total} · loss {last['loss']:.4f}"
        per_step = seconds_per_step(rows)
        if running and per_step is not None:
            text += f" · about {per_step * max(0, total - last['step']):.0f} s left"
    if not rows:
        return text, log, None
    frame = pd.DataFrame(
        [{"step": r["step"], "loss": r["loss"], "series": "loss"} for r in rows]
        + [{"step": r["step"], "loss": r["mask_loss"], "series": "mask loss"} for r in rows if "mask_loss" in r],
        columns=["step", "loss", "series"],
    ).astype({"step": "int64", "loss": "float64", "series": "str"})
    return text, log, frame


def seconds_per_step(rows: list[dict]) -> float | None:
    """Seconds per step of the run's latest process, from metrics.jsonl rows. Each `fit` process counts `time_s`
    from its own start, so a Resume starts the clock again (and may log steps again from its checkpoint): the
    rows are split where time or step goes back, and the rate comes from the newest part (from two of its rows,
    or its one row and the steps since that part began), else from the part before it."""
    parts: list[list[dict]] = []
    for row in rows:
        if row.get("time_s") is None:
            continue
        if not parts or row["time_s"] < parts[-1][-1]["time_s"] or row["step"] <= parts[-1][-1]["step"]:
            parts.append([])
        parts[-1].append(row)
    for index in range(len(parts) - 1, -1, -1):
        part = parts[index]
        if len(part) >= 2 and part[-1]["step"] > part[0]["step"]:
            return (part[-1]["time_s"] - part[0]["time_s"]) / (part[-1]["step"] - part[0]["step"])
        if index == 0 and part[0]["step"] > 0:  # the first process started at step 0
            return part[0]["time_s"] / part[0]["step"]
    return None


LOG_LINES = 12  # the Log box's height: the newest lines fill it


def log_tail(text: str, lines: int = LOG_LINES) -> str:
    """The newest `lines` lines of a log, readable: a progress bar's carriage-return redraws keep their last state,
    and a multi-line JSON dump (the `fit` summary) becomes one `key: value` line instead of filling the box with
    its head."""
    out: list[str] = []
    block: list[str] = []
    for raw in text.split("\n"):  # not splitlines(): it splits at carriage returns too
        line = raw.rsplit("\r", 1)[-1].rstrip()
        if block or line == "{":
            block.append(line)
            if line == "}":
                out.append(_json_line("\n".join(block)))
                block = []
            continue
        if line:
            out.append(line)
    out += [b for b in block if b]  # an unfinished dump (still being written) stays as it is
    return "\n".join(out[-lines:])


def _json_line(dump: str) -> str:
    try:
        data = json.loads(dump)
    except ValueError:
        return " ".join(part.strip() for part in dump.splitlines())

    def flat(value, prefix=""):
        if isinstance(value, dict):
            return [item for k, v in value.items() for item in flat(v, f"{prefix}{k}.")]
        if isinstance(value, float):
            value = f"{value:.4g}"
        return [f"{prefix.rstrip('.')}: {value}"]

    return "summary · " + " · ".join(flat(data))


_STEP = re.compile(r"step_(\d+)\.mp4$")  # the trainer's validation/step_NNNNNN.mp4


def run_validations(ctx: StudioContext, name: str, owner: str = LOCAL_OWNER) -> list[tuple[str, str]]:
    """(served copy, caption) of each validation video of `owner`'s run, newest step first; [] for none."""
    try:
        run_dir = _own_run(ctx, name, owner) if name else None
    except InputError:
        return []
    if run_dir is None:
        return []
    videos = [(int(m.group(1)), p) for p in (run_dir / "validation").glob("step_*.mp4") if (m := _STEP.match(p.name))]
    return [(served_copy(path), f"step {step}") for step, path in sorted(videos, reverse=True)]


def build_dataset_message(ctx: StudioContext, owner: str, name, videos, frames, size, out_dir,
                          base: str | None = None) -> tuple[str, object]:  # fmt: skip
    """(message, Dataset box) of the Build button: the box gets the new cache so Launch can follow at once. The
    cache is encoded with the chosen base's VAE and encoders (a checkpoint's: its recorded base's), the ones the
    run will train and render with."""
    from engine.registry import read_base

    try:
        model = base or ctx.default_model
        if Path(model).is_dir():
            model = read_base(model)["base_model"]
        cache = build_dataset(ctx, name, videos, model, frames, size, out_dir, owner)
    except InputError as exc:
        return f"⚠ {exc}", gr.update()
    return f"✔ Dataset ready: `{cache}` (filled in as the Dataset above)", cache


def train_layout(ctx: StudioContext) -> dict:
    """The tab's components (run, dataset, stage and its settings on the left; status, loss, log, validations on
    the right), no callbacks."""
    c: dict = {}
    gr.Markdown("Fine-tune HuMo in two stages (text + image, then + audio). Each run trains in its own process.")
    with gr.Row():
        with gr.Column():
            c["name"] = gr.Textbox(label="Run name", value="my-run", elem_id="train-name")
            c["dataset"] = gr.Textbox(
                label="Dataset (a cache folder, or a prepared folder with cache/)", elem_id="train-dataset"
            )
            with gr.Accordion("…or build one from videos", open=False):
                c["videos"] = gr.File(label="Videos", file_count="multiple", file_types=["video"])
                with gr.Row():
                    c["frames"] = gr.Number(
                        label="Frames per clip (4n+1; 17 = 0.7 s fits short clips)", value=17, precision=0,
                        elem_id="train-frames",
                    )  # fmt: skip
                    c["size"] = gr.Number(label="Size (px, square)", value=64, precision=0)
                c["out_dir"] = gr.Textbox(
                    label="Output folder (empty: data/train/<run name>)", elem_id="train-out-dir", max_lines=1
                )
                c["build"] = gr.Button("Build dataset", elem_id="train-build")
            with gr.Row():
                c["stage"] = gr.Radio([1, 2], value=1, label="Stage")
                c["base"] = gr.Dropdown(
                    _bases(ctx),
                    value=ctx.default_model,
                    label="Base model or stage-1 checkpoint (its encoders build the dataset)",
                    allow_custom_value=True,
                )
            with gr.Row():
                c["steps"] = gr.Number(label="Steps", value=200, precision=0, elem_id="train-steps")
                c["lr"] = gr.Number(label="Learning rate", value=1e-4)
                c["lora"] = gr.Number(
                    label="LoRA rank (0 = full fine-tune of the stage's parameters)", value=0, precision=0
                )
            with gr.Row():
                c["launch"] = gr.Button("Launch", variant="primary", elem_id="train-launch")
                c["stop"] = gr.Button("Stop", variant="stop", elem_id="train-stop")
                c["resume"] = gr.Button("Resume", elem_id="train-resume")
            c["message"] = gr.Markdown(elem_id="train-message")
        with gr.Column():
            c["status"] = gr.Markdown(elem_id="train-status")
            c["plot"] = gr.LinePlot(x="step", y="loss", color="series", label="Loss", height=220, elem_id="train-plot")
            c["log"] = gr.Textbox(label="Log", lines=12, max_lines=12, elem_id="train-log", autoscroll=True)
            c["validations"] = gr.Gallery(
                label="Validation videos (every validate_every steps)",
                columns=3,
                height=260,
                elem_id="train-validations",
            )
            c["show_validations"] = gr.Button("Show validation videos", size="sm", elem_id="train-show-validations")
    c["timer"] = gr.Timer(1.0)
    return c


PRIVATE = {"api_visibility": "private"}  # the Train tab's callbacks are the page's, not the API's


def build_train_tab(ctx: StudioContext) -> dict:
    """The tab. Finished runs reach the Generate tab's model list through studio.models.wire_model_refresh, wired
    outside this tab: a tab's components (a timer too) exist on the page only once the tab has been opened."""
    c = train_layout(ctx)
    _wire_runs(ctx, c)
    _wire_follow(ctx, c)
    return c


def _wire_runs(ctx: StudioContext, c: dict) -> None:
    """Build a dataset, launch, resume and stop a run: each as the logged-in owner."""

    def safe(fn):
        """Runs fn(owner, *values): the owner comes from the login (the Train tab never exists in public mode)."""

        def wrapper(request: gr.Request, *args):
            try:
                return fn(request_owner(False, request), *args)
            except InputError as exc:
                return f"⚠ {exc}"

        return wrapper

    def build(request: gr.Request, *values):
        return build_dataset_message(ctx, request_owner(False, request), *values)

    c["build"].click(
        build,
        [c["name"], c["videos"], c["frames"], c["size"], c["out_dir"], c["base"]],
        [c["message"], c["dataset"]],
        **PRIVATE,
    )
    train_inputs = [c["name"], c["dataset"], c["stage"], c["base"], c["steps"], c["lr"], c["lora"]]
    c["launch"].click(safe(lambda o, *a: launch(ctx, *a, owner=o)), train_inputs, c["message"], queue=False, **PRIVATE)
    c["resume"].click(
        safe(lambda o, *a: launch(ctx, *a, resume=True, owner=o)), train_inputs, c["message"], queue=False, **PRIVATE
    )
    c["stop"].click(safe(lambda o, n: stop(ctx, n, o)), c["name"], c["message"], **PRIVATE)


def _wire_follow(ctx: StudioContext, c: dict) -> None:
    """The run's status, log and loss every second, and its validation videos."""

    def status(request: gr.Request, name):
        return run_status(ctx, name, request_owner(False, request))

    c["timer"].tick(
        status, c["name"], [c["status"], c["log"], c["plot"]], queue=False, show_progress="hidden", **PRIVATE
    )

    def validations(request: gr.Request, name):
        return run_validations(ctx, name, request_owner(False, request))

    c["show_validations"].click(validations, c["name"], c["validations"], queue=False, **PRIVATE)


def _bases(ctx: StudioContext) -> list[str]:
    from engine.registry import list_models

    return [m["id"] for m in list_models() if m["present"]] + [path for _, path in list_checkpoints(ctx.store.data_dir)]


__all__ = ["build_train_tab", "list_checkpoints", "launch", "stop", "run_status", "run_validations", "build_dataset"]
