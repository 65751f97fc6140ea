"""Train tab callbacks without a browser: the loss plot's frames, the dataset builder's advice and output folder,
the Dataset box after a build, and finished runs reaching the Generate tab's model picker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import InputError
from studio import models, tab_train
from studio.store import LOCAL_OWNER
from tests.test_model_folders import make_final


def write_run(ctx, name: str, rows: list[dict]) -> None:
    run = models.runs_dir(ctx.store.data_dir) / name
    run.mkdir(parents=True)
    (run / "run.yaml").write_text("steps: 10\n")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_loss_frame_is_none_until_the_run_has_a_step(ctx):
    # LinePlot takes its colours from the first frame it draws: an empty one would leave the line invisible
    assert tab_train.run_status(ctx, "my-run")[2] is None
    write_run(ctx, "empty", [])
    assert tab_train.run_status(ctx, "empty")[2] is None
    write_run(ctx, "r", [{"step": 1, "loss": 0.5, "mask_loss": 0.2}, {"step": 2, "loss": 0.25, "mask_loss": 0.1}])
    text, _, frame = tab_train.run_status(ctx, "r")
    assert "step 2/10" in text
    assert frame[frame.series == "loss"].loss.tolist() == [0.5, 0.25]
    assert frame[frame.series == "mask loss"].step.tolist() == [1, 2]


@pytest.fixture(scope="module")
def short_videos(tmp_path_factory):
    """Two synthetic talking-head mp4s of 17 frames (0.68 s), as a user would upload them."""
    from training.synth import make_synth_dataset

    src = make_synth_dataset(tmp_path_factory.mktemp("synth"), num_clips=2, frames=17, size=(64, 64))
    return sorted(str(p) for p in src.glob("*.mp4"))


def test_too_short_videos_name_the_frames_that_fit(ctx, short_videos):
    with pytest.raises(InputError) as err:
        tab_train.build_dataset(ctx, "short", short_videos, "tiny", 33, 64)
    assert err.value.field == "videos"
    assert "17 frames" in str(err.value) and "set Frames per clip to 17 or lower" in str(err.value)


def test_build_fills_the_dataset_box_and_a_rebuild_points_to_the_output_folder(ctx, short_videos, tmp_path):
    message, dataset = tab_train.build_dataset_message(ctx, LOCAL_OWNER, "clips", short_videos, 17, 64, "")
    assert message.startswith("✔") and (tmp_path / "data/train/clips/cache/index.json").exists()
    assert tab_train.resolve_cache(dataset) == tmp_path / "data/train/clips/cache"
    # the same folder with another frame count: the message names the field that changes the folder
    message, box = tab_train.build_dataset_message(ctx, LOCAL_OWNER, "clips", short_videos, 9, 64, "")
    assert message.startswith("⚠") and "Output folder" in message and not isinstance(box, str)
    other = tmp_path / "elsewhere"
    message, dataset = tab_train.build_dataset_message(ctx, LOCAL_OWNER, "clips", short_videos, 9, 64, str(other))
    assert message.startswith("✔") and dataset == str(other / "cache")
    assert (
        json.loads((other / "clips/prepare.json").read_text())["geometry"]
        != json.loads((tmp_path / "data/train/clips/clips/prepare.json").read_text())["geometry"]
    )
    # the chosen base's encoders make the cache (they used to be tiny's whatever the base)
    nano_out = tmp_path / "for-nano"
    message, dataset = tab_train.build_dataset_message(ctx, LOCAL_OWNER, "clips", short_videos, 17, 64,
                                                       str(nano_out), "humo-nano")  # fmt: skip
    assert message.startswith("✔"), message
    assert json.loads((Path(dataset) / "index.json").read_text())["model_id"] == "humo-nano"


def test_a_build_runs_outside_the_studio_process_and_stop_ends_it(ctx, short_videos, tmp_path):
    import os
    import threading
    import time

    # the finished build ran as a child process whose output is in the run folder
    assert tab_train.build_dataset(ctx, "kid", short_videos, "tiny", 17, 64) == str(tmp_path / "data/train/kid/cache")
    assert tab_train.BUILDS["kid"].pid != os.getpid() and tab_train.BUILDS["kid"].returncode == 0
    log = (models.runs_dir(ctx.store.data_dir) / "kid" / "build.log").read_text()
    assert "cached 2 clips" in log
    # another owner cannot build into (or over) this run
    with pytest.raises(InputError, match="taken"):
        tab_train.build_dataset(ctx, "kid", short_videos, "tiny", 17, 64, owner="someone-else")
    # Stop during a build: the child ends, the build call says so, the status shows the build while it runs
    outcome = {}

    def build():
        outcome["message"] = tab_train.build_dataset_message(ctx, LOCAL_OWNER, "slow", short_videos, 17, 64, "")[0]

    worker = threading.Thread(target=build)
    worker.start()
    deadline = time.monotonic() + 60
    while "slow" not in tab_train.BUILDS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tab_train.run_status(ctx, "slow")[0] == "**slow**: building its dataset"
    assert tab_train.stop(ctx, "slow") == "■ The dataset build of slow stopped."
    worker.join(60)
    assert outcome["message"].startswith("⚠") and "stopped" in outcome["message"]
    assert tab_train.BUILDS["slow"].returncode < 0
    assert not (tmp_path / "data/train/slow/cache/index.json").exists()


def test_finished_runs_reach_the_model_picker_once(ctx):
    update, known = tab_train.picker_update(ctx, LOCAL_OWNER, None)
    assert [value for _, value in update["choices"]] == known  # (label, id): the list's labels (studio.models)
    assert not any(c.startswith("checkpoint:") for c in known)
    unchanged, same = tab_train.picker_update(ctx, LOCAL_OWNER, known)
    assert "choices" not in unchanged and same == known
    broken = models.runs_dir(ctx.store.data_dir) / "broken-run" / "final"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{}")  # not a model: never offered
    make_final(models.runs_dir(ctx.store.data_dir) / "done-run")
    update, known = tab_train.picker_update(ctx, LOCAL_OWNER, known)
    assert ("run:done-run", "run:done-run") in update["choices"] and not any("broken-run" in c for c in known)
    assert ctx.pipeline("run:done-run").sampling_defaults.num_inference_steps == 8  # its base's (tiny) defaults


def test_a_build_that_made_no_clip_releases_its_folder(ctx, short_videos, tmp_path):
    # 33 frames per clip: the 17-frame videos give no clip; the advice names 17, and 17 must then work in the same
    # folder (the failed build used to lock it to 33 frames: "already holds a dataset built with other settings")
    message, _ = tab_train.build_dataset_message(ctx, LOCAL_OWNER, "first", short_videos, 33, 64, "")
    assert message.startswith("⚠") and "set Frames per clip to 17" in message
    message, dataset = tab_train.build_dataset_message(ctx, LOCAL_OWNER, "first", short_videos, 17, 64, "")
    assert message.startswith("✔"), message
    assert dataset == str(tmp_path / "data/train/first/cache")


def test_finished_runs_reach_the_model_picker_without_opening_the_train_tab(ctx):
    # Gradio mounts a tab's components (a timer too) only once the tab is opened: the timer that brings finished
    # runs into the Generate tab's model list must live outside the Train tab
    from studio.app import build_app

    demo = build_app(ctx)
    config = demo.get_config_file()
    components = {c["id"]: c for c in config["components"]}
    picker = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "model")

    def subtree(node):
        return [node["id"]] + [i for child in node.get("children", []) for i in subtree(child)]

    def find(node, wanted):
        if wanted(node["id"]):
            return node
        return next((f for child in node.get("children", []) if (f := find(child, wanted))), None)

    train = find(config["layout"], lambda i: components.get(i, {}).get("type") == "tabitem"
                 and components[i]["props"].get("label") == "Train")  # fmt: skip
    assert components[train["id"]]["props"]["render_children"] is False  # mounted when opened
    inside_train = set(subtree(train))
    timers = [
        target[0]
        for dep in config["dependencies"]
        if picker in dep["outputs"]
        for target in dep["targets"]
        if components[target[0]]["type"] == "timer"
    ]
    assert timers, "no timer refreshes the model list"
    assert not inside_train & set(timers)
    make_final(models.runs_dir(ctx.store.data_dir) / "fresh-run")
    update, _ = models.picker_update(ctx, LOCAL_OWNER, None)
    assert ("run:fresh-run", "run:fresh-run") in update["choices"]


def test_time_left_after_resume_comes_from_the_resumed_process(ctx):
    import subprocess
    import sys

    # first process: steps 1..100 at 0.1 s/step; Resume from the step-90 checkpoint: steps 91..95 at 0.5 s/step,
    # its clock starting again at 0
    first = [{"step": s, "loss": 0.5, "time_s": 0.1 * s} for s in range(1, 101)]
    resumed = [{"step": 90 + s, "loss": 0.4, "time_s": 0.5 * s} for s in range(1, 6)]
    write_run(ctx, "again", first + resumed)
    (models.runs_dir(ctx.store.data_dir) / "again" / "run.yaml").write_text("steps: 200\n")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    tab_train.PROCESSES["again"] = process
    try:
        text = tab_train.run_status(ctx, "again")[0]
        assert "step 95/200" in text and "about 52 s left" in text, text  # 105 steps x 0.5 s
        # one row of the resumed process so far: the rate of the process before it
        write_run(ctx, "once", first + resumed[:1])
        (models.runs_dir(ctx.store.data_dir) / "once" / "run.yaml").write_text("steps: 200\n")
        tab_train.PROCESSES["once"] = process
        assert "about 11 s left" in tab_train.run_status(ctx, "once")[0]  # 109 steps x 0.1 s
    finally:
        process.kill()
        process.wait()
        tab_train.PROCESSES.pop("again", None)
        tab_train.PROCESSES.pop("once", None)


def test_the_log_shows_its_newest_lines_readably(ctx):
    write_run(ctx, "logged", [{"step": 1, "loss": 0.5}])
    steps = "".join(f"step {s}/200 loss 0.{s:04d} p_audio 0.50\n" for s in range(10, 210, 10))
    summary = json.dumps({"step": 200, "last": {"loss": 0.123456, "p_audio": 0.5}, "stopped": False}, indent=2)
    bar = "prepare:  10%|#  | 1/10\rprepare: 100%|####| 10/10\n"
    (models.runs_dir(ctx.store.data_dir) / "logged" / "train.log").write_text(bar + steps + summary + "\n")
    log = tab_train.run_status(ctx, "logged")[1]
    lines = log.splitlines()
    assert len(lines) == tab_train.LOG_LINES  # the box's height: the newest lines, not the head of a long text
    assert lines[-2] == "step 200/200 loss 0.0200 p_audio 0.50"
    assert lines[-1] == "summary · step: 200 · last.loss: 0.1235 · last.p_audio: 0.5 · stopped: False"
    assert tab_train.log_tail(bar) == "prepare: 100%|####| 10/10"  # a progress bar's last state
