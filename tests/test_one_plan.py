"""One request -> one plan (issue 28 item 3): the guidance travels as the GuidanceSchedule object and is read back
from its dict only at the edges; the mode is derived in one function; one cost table; one copy of the checks.

The source checks read the code (AST), so a new copy of any of these fails here instead of drifting."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from engine.errors import InputError
from engine.generate import GenerationRequest
from engine.guidance import GuidanceSchedule, preset_schedule
from engine.plan import check_run_inputs, mode_of, plan_request, run_schedule

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "studio", "training")

# Where a stored or typed schedule may be read back into the object, and why each is an edge.
FROM_DICT_EDGES = {
    "engine/guidance.py",  # the class itself
    "engine/generate.py",  # GenerationRequest.from_dict: a worker group's / a Ray worker's job, a JSON case
    "engine/cli.py",  # --guidance-json FILE
    "studio/guidance_editor.py",  # typed custom phases (JSON) and a gallery row's / an mp4's settings
}
# Where a mode is written out as text, and why each is not a derivation of it from inputs.
MODE_LITERALS = {
    "engine/guidance.py",  # the presets' tables, keyed by mode
    "engine/plan.py",  # mode_of itself and the modes' names
    "engine/speed.py",  # a fast recipe's default mode argument (the time it states is for TIA)
    "engine/pipeline.py",  # the output's field default
    "training/nano.py",  # training's validation renders: fixed modes of its own schedules
    "training/distill_nano.py",
}


def _sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text(), str(path))


def _calls_named(tree: ast.AST, owner: str, method: str) -> int:
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method:
            value = node.func.value
            name = value.id if isinstance(value, ast.Name) else getattr(value, "attr", None)
            count += name == owner
    return count


def test_guidance_is_read_from_a_dict_only_at_the_edges():
    found = {path: n for path, tree in _sources() if (n := _calls_named(tree, "GuidanceSchedule", "from_dict"))}
    assert set(found) <= FROM_DICT_EDGES, f"GuidanceSchedule.from_dict outside the edges: {found}"
    assert sum(found.values()) <= 4, found  # 12 call sites in 9 modules before issue 28


def test_mode_is_derived_in_one_function():
    builders, literals = [], {}
    for path, tree in _sources():
        for node in ast.walk(tree):
            # "T" + ("I" if ...) + ...: building a mode from which inputs are there
            if isinstance(node, ast.BinOp) and isinstance(node.left, ast.Constant) and node.left.value == "T":
                builders.append(path)
            if isinstance(node, ast.Name | ast.Attribute) and getattr(node, "id", getattr(node, "attr", "")) == (
                "mode_from_inputs"
            ):
                builders.append(path)
            if isinstance(node, ast.Constant) and node.value in ("TIA", "TA", "TI"):
                literals[path] = literals.get(path, 0) + 1
    assert builders == ["engine/plan.py"], builders
    assert set(literals) <= MODE_LITERALS, f"a mode written out where it should be mode_of(...): {literals}"


@pytest.mark.parametrize(
    "images,audio,mode",
    [
        (["face.png"], "voice.wav", "TIA"),
        (None, "voice.wav", "TA"),
        (["face.png"], None, "TI"),
        ([], "", "T"),
        ([None, None], {"path": "v.wav"}, "TA"),  # the page's (image, extra images) with no image, a Gradio file
        ([None, [{"path": "b.png"}]], None, "TI"),  # only an extra reference
        (np.zeros((8, 8, 3)), np.zeros(16000, np.float32), "TIA"),  # arrays: no ambiguous truth value
    ],
)
def test_mode_of_reads_every_kind_of_input(images, audio, mode):
    assert mode_of(images, audio) == mode


def test_a_request_carries_the_schedule_object_and_its_dict_only_at_the_worker_edge():
    schedule = preset_schedule("faster", "1.7b", "TIA", scale_a=6.0)
    request = GenerationRequest("a person talks", ["face.png"], "voice.wav", guidance=schedule, seed=3)
    assert request.mode == "TIA" and request.pipeline_kwargs()["guidance"] is schedule
    data = json.loads(json.dumps(request.to_dict()))  # what a worker group or a Ray worker receives
    assert data["guidance"] == schedule.to_dict()
    again = GenerationRequest.from_dict(data)
    assert isinstance(again.guidance, GuidanceSchedule) and again == request
    with pytest.raises(InputError) as err:
        GenerationRequest.from_dict({**data, "guidance": {"phases": "nope"}})
    assert err.value.field == "guidance"


def test_the_pipeline_refuses_a_dict_for_guidance():
    from engine.registry import load_pipeline

    pipe = load_pipeline("tiny")
    with pytest.raises(InputError) as err:
        pipe(prompt="a person talks", num_frames=1, num_inference_steps=1, height=16, width=16,
             guidance=preset_schedule("official", "1.7b", "T").to_dict())  # fmt: skip
    assert err.value.field == "guidance" and "GuidanceSchedule.from_dict" in str(err.value)


def test_the_plan_of_a_request_is_its_schedule_on_the_models_grid():
    from engine.defaults import SamplingDefaults
    from engine.plan import plan_run
    from engine.schedulers import official_timesteps

    defaults = SamplingDefaults(4, "single pass", 64, 64, "euler", 2.0)
    request = GenerationRequest("a person talks", ["face.png"], "voice.wav")
    plan = plan_request(request, defaults, "1.7b", 49)
    assert plan.mode == "TIA" and plan.passes_per_step == (1, 1, 1, 1) and plan.tokens == (13 + 1) * 4 * 4
    own = preset_schedule("official", "1.7b", "TIA")
    assert run_schedule(own, defaults, "1.7b", "TIA") is own
    planned = plan_request(GenerationRequest("x", [], "v.wav", guidance=own, num_inference_steps=6), defaults, "1.7b",
                           49)  # fmt: skip
    assert planned == plan_run(own, official_timesteps(6, 2.0), 49, 64, 64, 1, mode="TA")


def test_one_h100_cost_table():
    from engine import plan, speed
    from studio import spaces

    assert not hasattr(speed, "H100_PASS_SECONDS") and not hasattr(spaces, "H100_PASS_SECONDS")
    assert spaces.h100_pass_seconds("17b", 40_560) == plan.h100_pass_seconds("17b", 40_560)
    assert spaces.tokens(97, 480, 832) == plan.run_tokens(97, 480, 832) == 40_560


@pytest.mark.parametrize(
    "change,field",
    [
        ({"height": 20}, "height"),
        ({"width": 8192}, "width"),
        ({"num_frames": 0}, "num_frames"),
        ({"num_inference_steps": 0}, "steps"),
        ({"window_frames": 97, "window_overlap": 25}, "window_overlap"),
    ],
)
def test_the_studio_and_the_pipeline_refuse_the_same_request(tmp_path, change, field):
    """One copy of the checks: the studio's validate_request refuses what the pipeline refuses, with its message."""
    from studio.context import StudioContext, StudioOptions
    from studio.jobs import validate_request

    base = {"height": 32, "width": 32, "num_frames": 9, "num_inference_steps": 2, "window_frames": None,
            "window_overlap": 4}  # fmt: skip
    values = {**base, **change}
    with pytest.raises(InputError) as engine_err:
        check_run_inputs("a person talks", values["height"], values["width"], values["num_frames"],
                         values["num_inference_steps"], values["window_frames"], values["window_overlap"])  # fmt: skip
    ctx = StudioContext.create(StudioOptions(data_dir=tmp_path / "data", model="tiny"))
    try:
        with pytest.raises(InputError) as studio_err:
            validate_request(ctx, GenerationRequest("a person talks", **values))
    finally:
        ctx.store.close()
    assert engine_err.value.field == studio_err.value.field == field
    assert str(engine_err.value) == str(studio_err.value)
