"""Time estimates (studio/eta.py): the work they count is the work the pipeline does, the costs they use are the
ones measured, and the seconds-left line keeps the decode in. Speeds are never asserted (bench/eta_bench.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine import guidance
from engine.generate import GenerationRequest
from studio import eta, tab_generate
from studio.context import StudioContext
from studio.jobs import run_job
from studio.store import Store
from tests.test_pipeline import write_image, write_wav


def job(tmp_path, **kw) -> GenerationRequest:
    base = dict(prompt="a person talks", images=[write_image(tmp_path / "face.png")],
                audio=write_wav(tmp_path / "voice.wav", 1.0), height=32, width=32, num_inference_steps=3, seed=1)  # fmt: skip
    return GenerationRequest(**{**base, **kw})


def test_plan_counts_the_forwards_and_passes_the_pipeline_makes(ctx, tmp_path):
    """A long video (several windows a step) with the official schedule: every transformer call is counted."""
    pipe = ctx.pipeline("tiny")
    calls = []
    forward = pipe.transformer.forward

    def counting(*args, **kwargs):
        calls.append(kwargs["hidden_states"].shape)
        return forward(*args, **kwargs)

    pipe.transformer.forward = counting
    try:
        out = pipe(prompt="p", image=write_image(tmp_path / "f.png"), audio=write_wav(tmp_path / "v.wav", 1.0),
                   height=32, width=32, num_inference_steps=4, seed=0, window_frames=9, window_overlap=1,
                   output_type="latent")  # fmt: skip
    finally:
        pipe.transformer.forward = forward
    schedule = pipe.default_guidance("TIA")
    plan = eta.plan_job(schedule, 4, out.num_frames, 32, 32, eta.sampling_shift("tiny"), 1, True, 9, 1,
                        batched=out.timings["batched_branches"])  # fmt: skip
    assert plan.windows > 1 and plan.forwards == len(calls)
    assert plan.passes == sum(shape[0] for shape in calls)
    latent_tokens = {shape[2] * (shape[3] // 2) * (shape[4] // 2) for shape in calls}
    assert latent_tokens == {plan.tokens}


def test_curve_interpolates_its_probes_and_extrapolates_their_power_law():
    curve = eta.Curve({10: 1.0, 100: 4.0, 1000: 40.0})
    assert curve(100) == 4.0 and curve(5) == 1.0  # nothing is cheaper than the smallest probe
    assert curve(10**0.5 * 10) == pytest.approx(2.0)  # log-log between 10 and 100
    assert curve(10_000) == pytest.approx(400.0)  # slope 1 of the last two probes
    steep = eta.Curve({10: 1.0, 100: 1000.0})
    assert steep(1000) == pytest.approx(1000.0 * 10**2)  # exponent capped at 2
    seen = []
    ladder = eta.Curve()
    ladder.measure(lambda n: seen.append(n) or n / 100, [1, 10, 100, 1000], target=50, stop_s=100)
    assert seen == [1, 10, 100]  # stops at the first size that covers the target


def test_part_fits_fixed_and_per_unit_costs():
    part = eta.Part("scale")
    for size in (1, 2, 4, 8):
        part.add(1, size, 0.5 + 0.25 * size)
    assert part.coefficients() == pytest.approx((0.5, 0.25))
    one_size = eta.Part("scale")
    one_size.add(1, 4, 2.0)
    assert one_size.predict(1, 8) == pytest.approx(4.0)  # one size seen: in proportion
    fixed = eta.Part("fixed")
    fixed.add(1, 0, 0.3)
    fixed.add(1, 0, 0.5)
    assert 0.3 < fixed.predict(1, 0) < 0.4  # a mean on relative errors: nearer the smaller


def test_estimates_come_from_this_machines_runs(ctx, tmp_path):
    request = job(tmp_path)
    schedule = guidance.default_schedule("1.7b", "TIA")
    before = eta.estimate(ctx, "tiny", schedule, 3, 25, 32, 32)
    assert before.parts is None and "once this model is loaded" in eta.describe(before)

    result = run_job(ctx, request, "tiny")
    assert result.status == "done" and result.settings["timings"]["job_s"] > 0
    timings = result.settings["timings"]
    frames = result.settings["num_frames"]
    again = eta.estimate_request(ctx, request, frames, "tiny")
    # the same job again: its own measured denoise and decode, exactly (the runs' correction is real / probed)
    assert again.parts["denoise"] == pytest.approx(timings["denoise_s"])
    assert again.parts["decode"] == pytest.approx(timings["decode_s"])
    assert again.total_s == pytest.approx(sum(again.parts.values()))
    assert "measured on this machine, 1 run" in eta.describe(again)

    # twice the steps: twice the forwards at the same size, so twice the denoise
    longer = eta.estimate_request(ctx, replace(request, num_inference_steps=6), frames, "tiny")
    assert longer.plan.forwards == 2 * again.plan.forwards
    assert longer.parts["denoise"] == pytest.approx(2 * again.parts["denoise"])
    # a long video: windows multiply the forwards of one window-sized pass
    long = eta.estimate_request(ctx, replace(request, window_frames=9, window_overlap=1), 33, "tiny")
    assert long.plan.windows > 1 and long.parts["decode"] > again.parts["decode"]

    # the Generate tab's line reads the same estimate
    text = tab_generate.estimate_text(ctx, "tiny", schedule, 3, frames, 32, 32)
    assert "transformer passes per step" in text and "measured on this machine" in text


def test_measured_costs_survive_a_restart_on_this_machine_only(ctx, tmp_path, monkeypatch):
    request = job(tmp_path)
    result = run_job(ctx, request, "tiny")
    frames = result.settings["num_frames"]
    measured = eta.estimate_request(ctx, request, frames, "tiny")
    ctx.store.close()
    restarted = StudioContext.create(ctx.options)  # the same data folder: the studio after a restart
    try:
        again = eta.estimate_request(restarted, request, frames, "tiny")
        assert again.parts == pytest.approx(measured.parts) and again.runs == 1  # before any run of this process
        stored = restarted.store.get_setting(eta.COSTS_KEY)
        monkeypatch.setattr(eta, "machine_name", lambda: "another machine")
        assert eta.load_costs(restarted.store) == {}  # measured elsewhere: not this machine's costs
        monkeypatch.undo()
        stored["models"]["tiny"]["decode"] = [[16, "fast"]]  # a stored value that does not read is ignored
        stored["models"]["tiny"]["denoise_ratio"] = [float("nan")]
        restarted.store.set_setting(eta.COSTS_KEY, stored)
        assert eta.load_costs(restarted.store) == {}
    finally:
        restarted.store.close()
    ctx.store = Store.open(ctx.options.data_dir)  # for the fixture's close


def test_seconds_left_keep_the_decode_after_the_last_step(ctx):
    plan = eta.plan_job(guidance.default_schedule("1.7b", "TIA"), 10, 25, 32, 32, 5.0)
    est = eta.Estimate(plan, {"text": 1.0, "audio": 1.0, "image": 0.0, "denoise": 20.0, "decode": 6.0, "write": 2.0})
    assert eta.remaining_s(est, 0.0, 0.0) == est.total_s == 30.0
    assert eta.remaining_s(est, 12.0, 0.5) == pytest.approx(10.0 + 8.0)  # the loop's pace after the encoders
    assert eta.remaining_s(est, 22.0, 1.0) == 8.0  # not "0 s left" while decoding and writing


@pytest.mark.parametrize("model", ["tiny", "humo-nano", "humo-nano-4step", "nano fine-tune"])
def test_the_studio_plans_on_the_grid_the_model_samples(model, ctx):
    """The plot, keyframes and estimate use the timestep grid the loaded pipeline's scheduler really runs (HuMo-nano
    and its fine-tunes: shift 2, not Wan's 5; the student: its Euler grid)."""
    from engine import nano
    from studio.models import model_choices, runs_dir
    from tests.test_model_folders import make_final

    if model != "tiny" and not nano.is_student_present():
        pytest.skip("assets/humo-nano(-4step) missing")
    if model == "nano fine-tune":
        make_final(runs_dir(ctx.store.data_dir) / "nano-ft", base="humo-nano")
        model_choices(ctx)
        model = "run:nano-ft"
    scheduler = ctx.pipeline(model).scheduler
    scheduler.set_timesteps(30)
    assert tab_generate._grid(ctx, model, 30) == [int(t) for t in scheduler.timesteps]


def test_the_pages_estimate_runs_no_model_work(ctx, tmp_path, monkeypatch):
    """Only a job probes (in its own slot); the page's estimate, called on every control change by any visitor,
    reads what is measured, also at a size no job has had (nearest measured ladder)."""
    request = job(tmp_path)
    assert run_job(ctx, request, "tiny").status == "done"

    def no_probe(*args, **kwargs):
        raise AssertionError("the page's estimate ran the model")

    monkeypatch.setattr(eta, "probe_forward", no_probe)
    monkeypatch.setattr(eta, "probe_decode", no_probe)
    schedule = guidance.default_schedule("1.7b", "TIA")
    other_size = eta.estimate(ctx, "tiny", schedule, 3, 45, 32, 32)  # more frames than the job: another ladder
    assert other_size.parts is not None and other_size.parts["denoise"] > 0
