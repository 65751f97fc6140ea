"""Hugging Face Spaces glue (studio/spaces.py) against the real `spaces` package, the README front matter and the
registry: GPU wrapping on and off ZeroGPU, slot sizes, the files a Space preloads."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import spaces
import yaml

from engine import registry
from engine.errors import InputError, MissingWeightsError
from studio import spaces as sp

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def default_cap(monkeypatch):
    """The shipped cap, whatever HUMO_GPU_MAX_SECONDS says on this machine (the README quotes its numbers)."""
    monkeypatch.setattr(sp, "MAX_GPU_SECONDS", 200)


def job(**kw) -> sp.JobCost:
    base = dict(model_id="humo-1.7b", steps=30, frames=97, height=480, width=832)
    base.update(kw)
    base.setdefault("passes_total", 4 * base["steps"])  # 1.7B TIA: 4 passes every step
    return sp.JobCost(**base)


# ---------------------------------------------------------------- where we run


@pytest.mark.parametrize("value", ["", "1", "t", "true", "True", "TRUE", "0", "false", "yes", "on"])
def test_on_zero_gpu_reads_the_variable_as_spaces_does(monkeypatch, value):
    monkeypatch.setenv("SPACES_ZERO_GPU", value)
    assert sp.on_zero_gpu() == spaces.config.boolean(value)


def test_on_space(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not sp.on_space()
    monkeypatch.setenv("SPACE_ID", "someone/humo")
    assert sp.on_space()


def test_space_default_model(monkeypatch):
    present = {"humo-17b", "humo-1.7b", "humo-nano"}
    monkeypatch.setattr(registry, "is_present", lambda m: m in present)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert sp.space_default_model() == "humo-17b"  # off a Space: the best present
    monkeypatch.setenv("SPACE_ID", "someone/humo")
    assert sp.space_default_model() == "humo-1.7b"  # a Space prefers the model that fits its slot
    present.discard("humo-1.7b")
    assert sp.space_default_model() == "humo-17b"  # a dedicated GPU Space may still run the 17B
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert sp.space_default_model() == "humo-nano"  # never the 17B on ZeroGPU


def test_prepare_models(monkeypatch):
    calls = []

    def load(model_id):
        calls.append(model_id)
        if model_id == "humo-17b":
            raise MissingWeightsError("humo-17b is missing transformer")
        return f"pipe:{model_id}"

    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert sp.prepare_models(load, ["humo-1.7b"]) == {} and calls == []  # off a Space: nothing loads
    monkeypatch.setenv("SPACE_ID", "someone/humo")
    assert sp.prepare_models(load, ["humo-1.7b", "humo-1.7b", "humo-17b"]) == {"humo-1.7b": "pipe:humo-1.7b"}
    assert calls == ["humo-1.7b", "humo-17b"]  # once per model; missing files are skipped, not fatal


# ---------------------------------------------------------------- gpu_wrap


def test_gpu_wrap_off_zero_gpu_is_the_function_itself():
    assert not spaces.config.Config.zero_gpu, "run the tests without SPACES_ZERO_GPU"
    durations = []

    def duration(*args, **kwargs):
        durations.append(args)
        return 60

    def render(prompt, steps=2):
        return f"{prompt}:{steps}"

    def stream(prompt, steps=3):
        for i in range(steps):
            yield prompt, i

    assert sp.gpu_wrap(render, duration) is render
    assert sp.gpu_wrap(render, duration)("a", steps=5) == render("a", steps=5) == "a:5"
    wrapped = sp.gpu_wrap(stream, duration)
    assert inspect.isgeneratorfunction(wrapped)
    assert list(wrapped("b", steps=4)) == list(stream("b", steps=4)) == [("b", 0), ("b", 1), ("b", 2), ("b", 3)]
    assert inspect.signature(wrapped) == inspect.signature(stream)
    assert durations == []  # off ZeroGPU nothing asks for a slot


ZERO_GPU_SCRIPT = textwrap.dedent(
    """
    import inspect, json, sys, types

    # The real spaces package in ZeroGPU mode, with only its CUDA layer (which needs a CUDA torch) stubbed and the
    # scheduler's network call replaced: the decorator, its generator wrapper and the duration call are the package's.
    stub = types.ModuleType("spaces.zero.torch")
    for name in ("patch", "unpatch", "enter_mode", "init", "move"):
        setattr(stub, name, lambda *a, **k: None)
    stub.pack = stub.size = lambda *a, **k: 0
    stub.is_in_bad_fork = lambda: False
    sys.modules["spaces.zero.torch"] = stub

    import gradio as gr
    import spaces
    from spaces.zero import client

    from engine.errors import InputError
    from studio.spaces import gpu_wrap

    scheduled, durations = [], []

    class Scheduled(Exception):
        pass

    def schedule(task_id, request=None, duration=None, gpu_size=None, **kw):
        scheduled.append(duration.total_seconds())
        raise Scheduled

    client.schedule = schedule

    def duration(prompt, image=None, steps=30, **kw):
        durations.append([prompt, image, steps, sorted(kw)])
        if steps > 100:
            raise InputError("Lower Steps to 12 or fewer.", field="steps")
        return 7 * steps

    def on_generate(prompt, image=None, steps=30, session=None):
        for i in range(steps):
            yield prompt, i

    wrapped = gpu_wrap(on_generate, duration)
    out = {
        "zero_gpu": spaces.config.Config.zero_gpu,
        "same_object": wrapped is on_generate,
        "generator": inspect.isgeneratorfunction(wrapped),
        "signature": str(inspect.signature(wrapped)),
        "name": wrapped.__name__,
    }
    try:
        next(wrapped("hi", None, steps=4, session="s1"))
    except Scheduled:
        pass
    try:
        next(wrapped("hi", steps=500))
    except gr.Error as exc:
        out["refusal"] = exc.message
    out["durations"], out["scheduled"] = durations, scheduled
    print(json.dumps(out))
    """
)


def test_gpu_wrap_on_zero_gpu_keeps_a_generator_and_sizes_the_slot_from_the_call():
    env = {**os.environ, "SPACES_ZERO_GPU": "true", "SPACES_ZERO_DEVICE_API_URL": "http://127.0.0.1:9"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", ZERO_GPU_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["zero_gpu"] and not out["same_object"]  # really wrapped
    assert out["generator"], "Gradio streams only generator functions"
    assert out["signature"] == "(prompt, image=None, steps=30, session=None)" and out["name"] == "on_generate"
    # the duration callable saw the call's own arguments; the slot asked for is its answer
    assert out["durations"] == [["hi", None, 4, ["session"]], ["hi", None, 500, []]]
    assert out["scheduled"] == [28.0]
    # a refused job never reaches the scheduler, and the visitor reads why
    assert out["refusal"] == "Lower Steps to 12 or fewer."


# ---------------------------------------------------------------- gpu_seconds


def bench_rows() -> list[tuple[str, int, int, int, float]]:
    """(model, height, width, frames, s/forward) of the GPU table in bench/RESULTS.md."""
    rows = []
    pattern = r"^\| (HuMo-1\.7B|HuMo-17B) \| (\d+)×(\d+)×(\d+) \| [\d,]+ \| ([\d.]+) \| \d+ \| [\d.]+ \|"
    for line in (ROOT / "bench" / "RESULTS.md").read_text().splitlines():
        if m := re.match(pattern, line):
            rows.append((m[1], int(m[2]), int(m[3]), int(m[4]), float(m[5])))
    return rows


def test_pass_seconds_are_the_benchmarked_ones():
    rows = bench_rows()
    assert len(rows) == 4
    for model, height, width, frames, seconds in rows:
        variant = "17b" if model == "HuMo-17B" else "1.7b"
        assert sp.h100_pass_seconds(variant, sp.tokens(frames, height, width)) == pytest.approx(seconds, rel=1e-9)
    assert sp.tokens(97, 480, 832) == 40_560 and sp.tokens(97, 720, 1280) == 93_600  # the table's token counts


def test_gpu_seconds_grow_with_the_job_and_stay_inside_a_slot():
    short = job(steps=8)
    fits = [short, job(steps=12), job(frames=49)]
    for cost in fits:
        assert sp.MIN_GPU_SECONDS <= sp.gpu_seconds(cost) <= sp.MAX_GPU_SECONDS
    ladder = [short, job(), job(height=720, width=1280), job(frames=301)]  # 40,560 -> 93,600 -> 120,120 tokens
    estimates = [sp.estimate_seconds(c) for c in ladder]
    assert estimates == sorted(estimates) and len(set(estimates)) == 4
    assert sp.gpu_seconds(short) == pytest.approx(estimates[0], abs=1)
    assert sp.gpu_seconds(job(steps=12)) > sp.gpu_seconds(short)
    # a long video in 97-frame windows costs less than one 301-frame window (attention grows faster than tokens)
    assert sp.estimate_seconds(job(frames=301, windows=4)) < estimates[3]
    # a tiny model needs only the floor
    assert sp.gpu_seconds(job(model_id="humo-nano", frames=49, height=64, width=64)) == sp.MIN_GPU_SECONDS
    # a longer cap (a Space for PRO visitors) admits the official 30 steps, still clamped to that cap
    assert sp.gpu_seconds(job(), max_seconds=600) == pytest.approx(estimates[1], abs=1)


@pytest.mark.parametrize(
    ("cost", "field", "advice"),
    [
        (job(), "steps", "Lower Steps to 12 or fewer, or Frames to"),
        (job(frames=301), "num_frames", "Lower Frames to"),
        (job(height=720, width=1280), "num_frames", "Lower the size"),
        (job(model_id="humo-17b", steps=8, passes_total=24), "num_frames", "humo-17b needs a dedicated GPU"),
    ],
)
def test_over_cap_jobs_are_refused_with_what_to_lower(cost, field, advice):
    with pytest.raises(InputError) as info:
        sp.gpu_seconds(cost)
    assert info.value.field == field
    message = str(info.value)
    assert f"at most {sp.MAX_GPU_SECONDS} s" in message and advice in message
    need = int(re.search(r"about (\d+) s", message)[1])
    assert need == pytest.approx(sp.estimate_seconds(cost), abs=1) and need > sp.MAX_GPU_SECONDS
    suggested = re.search(r"Lower (Steps|Frames) to (\d+)", message)
    if suggested:  # the suggestion itself fits, one more does not
        key, value = ("steps", int(suggested[2])) if suggested[1] == "Steps" else ("frames", int(suggested[2]))
        change = {key: value, "passes_total": 4 * value} if key == "steps" else {key: value}
        assert sp.estimate_seconds(job(**{**cost.__dict__, **change})) <= sp.MAX_GPU_SECONDS
        bigger = {key: value + (1 if key == "steps" else 4)}
        bigger.update({"passes_total": 4 * bigger["steps"]} if key == "steps" else {})
        assert sp.estimate_seconds(job(**{**cost.__dict__, **bigger})) > sp.MAX_GPU_SECONDS


# ---------------------------------------------------------------- README front matter and requirements


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_readme_front_matter_is_a_zero_gpu_gradio_space():
    meta = front_matter()
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["sdk_version"] == importlib.metadata.version("gradio")
    assert meta["suggested_hardware"] == "zero-a10g" and meta["hf_oauth"] is True
    assert str(meta["python_version"]) in ("3.12", "3.12.12")  # the versions ZeroGPU runs besides 3.10 (< ours)


def test_readme_preloads_exactly_what_the_registry_reads_for_humo_1_7b():
    meta = front_matter()
    preload: dict[str, list[str]] = {}
    for entry in meta["preload_from_hub"]:
        repo, files = entry.split()  # "repo file1,file2" (no pinned commit)
        preload[repo] = files.split(",")
    assert sp.SPACE_MODEL == "humo-1.7b"
    components = registry.MODELS[sp.SPACE_MODEL].all_components
    assert set(preload) == {c.repo for c in components}
    assert sorted(meta["models"]) == sorted(preload)
    for repo, files in preload.items():
        patterns = [p for c in components if c.repo == repo for p in c.allow_patterns]
        markers = [c.marker for c in components if c.repo == repo]
        assert len(files) == len(set(files)), f"{repo}: a file listed twice"
        for name in files:  # nothing the loader does not read (no 17B, no whisper flax/bin/fp16 copies)
            assert any(fnmatch.fnmatch(name, p) for p in patterns), f"{repo}: {name} is not read by the registry"
        for pattern in patterns:  # every piece the loader reads
            assert any(fnmatch.fnmatch(name, pattern) for name in files), f"{repo}: nothing preloaded for {pattern}"
        for marker in markers:
            assert marker in files, f"{repo}: {marker} (the file that proves the component) is not preloaded"
        shards = [re.fullmatch(r"(.*)-(\d{5})-of-(\d{5})\.safetensors", n) for n in files]
        for m in filter(None, shards):  # every shard of a sharded checkpoint, and its index
            count = int(m[3])
            for k in range(1, count + 1):
                assert f"{m[1]}-{k:05d}-of-{count:05d}.safetensors" in files
            assert f"{m[1]}.safetensors.index.json" in files
    big = registry.MODELS["humo-17b"].transformer.allow_patterns
    assert not any(fnmatch.fnmatch(n, p) for files in preload.values() for n in files for p in big)


def test_requirements_pin_the_spaces_package_installed_here():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    pins = [line for line in lines if line.startswith("spaces==")]
    assert pins == [f"spaces=={importlib.metadata.version('spaces')}"]
