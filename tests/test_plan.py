"""One request -> one plan (engine/plan.py): the studio's estimate plans the frames, windows and transformer passes
the run then executes, counted with a hook on the transformer: the bundled example (Frames 0: the voice's 49 frames),
an 8-s voice with Long video (windows), and a dub (which has an estimate too)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from studio import tab_generate
from studio.jobs import _dub_estimate, _estimate, run_dub_job, run_job, validate_request
from tests.media_files import write_wav

ROOT = Path(__file__).resolve().parents[1]
FACE = str(ROOT / "assets/examples/nano_face.png")
EXAMPLE_VOICE = str(ROOT / "assets/examples/nano_speech.wav")  # 1.96 s: 49 frames


class ForwardCounter:
    """Transformer calls and the guidance branches they carry (a batched forward holds several)."""

    def __init__(self, transformer):
        self.calls = self.passes = 0
        self.handle = transformer.register_forward_pre_hook(self.count, with_kwargs=True)

    def count(self, module, args, kwargs):
        self.calls += 1
        self.passes += (kwargs.get("hidden_states") if "hidden_states" in kwargs else args[0]).shape[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def page_plan(ctx, audio: str, long_video: bool) -> tuple[int, int]:
    """(passes, windows) the Generate tab's estimate line shows for the tiny model's default controls."""
    steps, preset, st, si, sa, resolution, height, width = tab_generate.model_defaults(ctx, "tiny", FACE, None, audio)
    _, text, _ = tab_generate.guidance_view(ctx, "tiny", FACE, None, audio, preset, st, si, sa, 980, None, steps, 0,
                                            height, width, None, long_video)  # fmt: skip
    passes = int(re.search(r"\*\*(\d+) transformer passes\*\*", text).group(1))
    windows = re.search(r"(\d+) windows a step", text)
    return passes, int(windows.group(1)) if windows else 1


@pytest.mark.parametrize("case", ["example", "8-s voice, long video"])
def test_the_pages_estimate_plans_what_the_run_executes(case, ctx, tmp_path):
    long_video = case != "example"
    audio = EXAMPLE_VOICE if not long_video else str(write_wav(tmp_path / "voice8.wav", 8.0))
    passes, windows = page_plan(ctx, audio, long_video)
    steps, preset, st, si, sa, resolution, height, width = tab_generate.model_defaults(ctx, "tiny", FACE, None, audio)
    request, names = tab_generate.make_request(ctx, "a person talks", FACE, audio, "", "tiny", resolution, height,
                                               width, 0, steps, 1, preset, st, si, sa, 980,
                                               long_video=long_video)  # fmt: skip
    pipe = ctx.pipeline("tiny")
    _estimate(ctx, request, validate_request(ctx, request, names), "tiny")  # the job's probes, done before counting
    with ForwardCounter(pipe.transformer) as counted:
        result = run_job(ctx, request, "tiny", names=names)
    assert result.status == "done"
    settings = result.settings
    frames = tab_generate.planned_frames_of(audio, 0, long_video)[0]  # what the page planned
    assert settings["num_frames"] == frames  # Frames 0: the voice's length, not 97
    assert frames == 49 if case == "example" else frames > 190
    plan = settings["timings"]["plan"]  # what the loop ran, as engine.plan counts it
    assert (plan["frames"], plan["passes"], plan["windows"]) == (frames, passes, windows)
    assert counted.passes == passes and counted.calls == plan["forwards"]
    assert windows == (1 if case == "example" else 3)  # 51 latent frames in windows of 25 sharing 4


def test_a_dub_has_an_estimate_that_plans_its_run(ctx, tmp_path):
    from engine.dub import DubRequest
    from tests.test_dub import write_clip

    clip, voice_b, _ = write_clip(tmp_path, "src", frames=17, seed=7)
    request = DubRequest(video=str(clip), audio=str(voice_b), num_inference_steps=3, seed=0)
    from studio.jobs import validate_dub

    plan = validate_dub(ctx, request, {})
    pipe = ctx.pipeline("tiny")
    estimate = _dub_estimate(ctx, pipe, request, plan, "tiny")
    assert estimate is not None and estimate.plan.frames == plan.num_frames == 17
    with ForwardCounter(pipe.transformer) as counted:
        result = run_dub_job(ctx, request, "tiny")
    assert result.status == "done"
    assert counted.passes == estimate.plan.passes and counted.calls == estimate.plan.forwards
    assert result.settings["timings"]["plan"]["passes"] == estimate.plan.passes
