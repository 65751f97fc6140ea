"""engine/guidance.py: official formulas (§4.8) per preset, phase switch, passes, weights, JSON, validation, batching."""

from __future__ import annotations

import json
import math

import pytest
import torch

from engine import guidance as g
from engine.errors import InputError
from engine.guidance import Branch
from engine.schedulers import official_timesteps

TIMESTEPS_50 = [int(t) for t in official_timesteps(50)]
ALL = [Branch(t, i, a) for t in ("pos", "neg") for i in ("ref", "null") for a in ("on", "off")]


@pytest.fixture()
def outputs() -> dict[Branch, torch.Tensor]:
    """A distinct random prediction for each of the 8 possible branches."""
    gen = torch.Generator().manual_seed(0)
    return {b: torch.randn(1, 4, 3, 2, 2, generator=gen) for b in ALL}


def v(outputs, text, image, audio):
    return outputs[
        Branch({"T": "pos", "N": "neg"}[text], {"I": "ref", "0": "null"}[image], {"A": "on", "0": "off"}[audio])
    ]


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_branch_names_and_parsing():
    assert str(Branch("pos", "ref", "on")) == "T·I·A"
    assert str(Branch("neg", "null", "off")) == "N·∅·0"
    for b in ALL:
        assert Branch.parse(str(b)) == b
    assert Branch.parse("T.I.0") == Branch("pos", "ref", "off")
    assert Branch.parse(("neg", "ref", "on")) == Branch("neg", "ref", "on")
    with pytest.raises(InputError):
        Branch("yes", "ref", "on")
    with pytest.raises(InputError):
        Branch.parse("T·X·A")


def test_17b_tia_matches_official_before_and_after_switch(outputs):
    s = g.humo_17b_tia()
    s_a, s_t = 5.5, 5.0
    for t in (999, 982, 981):  # strictly above 980: text-dominant, image inside the negative
        expected = (
            s_a * (v(outputs, "T", "I", "A") - v(outputs, "T", "I", "0"))
            + s_t * (v(outputs, "T", "I", "0") - v(outputs, "N", "I", "0"))
            + v(outputs, "N", "I", "0")
        )
        close(s.combine(t, outputs), expected)
        assert set(s.branches_for(t)) == {
            Branch("pos", "ref", "on"),
            Branch("pos", "ref", "off"),
            Branch("neg", "ref", "off"),
        }
    for t in (980, 978, 92):  # at or below 980: text and image jointly with s_t - 2
        expected = (
            s_a * (v(outputs, "T", "I", "A") - v(outputs, "T", "I", "0"))
            + (s_t - 2) * (v(outputs, "T", "I", "0") - v(outputs, "N", "0", "0"))
            + v(outputs, "N", "0", "0")
        )
        close(s.combine(t, outputs), expected)
        assert set(s.branches_for(t)) == {
            Branch("pos", "ref", "on"),
            Branch("pos", "ref", "off"),
            Branch("neg", "null", "off"),
        }


def test_17b_tia_passes_and_switch_position():
    s = g.default_schedule("17b", "TIA")
    assert s.passes_per_step(TIMESTEPS_50) == [3] * 50
    assert sum(s.passes_per_step(TIMESTEPS_50)) == 150
    assert [s.phase_for(t).name for t in TIMESTEPS_50].count("text-dominant") == 5  # 999, 995, 991, 987, 982
    assert len(s.all_branches(TIMESTEPS_50)) == 4
    # 40 and 30 steps: 4 and 3 timesteps above 980 (§4.7)
    assert sum(s.phase_for(int(t)).name == "text-dominant" for t in official_timesteps(40)) == 4
    assert sum(s.phase_for(int(t)).name == "text-dominant" for t in official_timesteps(30)) == 3
    # a custom switch: 1000 never uses the first phase, 0 always does
    assert all(g.default_schedule("17b", "TIA", switch_timestep=1000).phase_for(t).name == "main" for t in TIMESTEPS_50)
    assert all(
        g.default_schedule("17b", "TIA", switch_timestep=0).phase_for(t).name == "text-dominant" for t in TIMESTEPS_50
    )


def test_17b_ta(outputs):
    s = g.default_schedule("17b", "TA", scale_a=5.5, scale_t=5.0)
    expected = (
        5.5 * (v(outputs, "T", "0", "A") - v(outputs, "T", "0", "0"))
        + 5.0 * (v(outputs, "T", "0", "0") - v(outputs, "N", "0", "0"))
        + v(outputs, "N", "0", "0")
    )
    for t in (999, 92):
        close(s.combine(t, outputs), expected)
    assert s.passes_per_step(TIMESTEPS_50) == [3] * 50
    close(g.default_schedule("17b", "TA").combine(500, outputs), expected)


def test_1_7b_tia(outputs):
    s = g.default_schedule("1.7b", "TIA")
    s_i, s_a, s_t = 4.0, 7.5, 7.0
    expected = (
        s_i * (v(outputs, "T", "I", "A") - v(outputs, "T", "0", "A"))
        + s_a * (v(outputs, "T", "0", "A") - v(outputs, "T", "0", "0"))
        + s_t * (v(outputs, "T", "0", "0") - v(outputs, "N", "0", "0"))
        + v(outputs, "N", "0", "0")
    )
    for t in (999, 981, 980, 92):  # no time switch
        close(s.combine(t, outputs), expected)
    assert s.passes_per_step(TIMESTEPS_50) == [4] * 50


def test_1_7b_ta(outputs):
    s = g.default_schedule("1.7b", "TA", scale_a=6.0)
    expected = (
        6.0 * (v(outputs, "T", "0", "A") - v(outputs, "T", "0", "0"))
        + 7.0 * (v(outputs, "T", "0", "0") - v(outputs, "N", "0", "0"))
        + v(outputs, "N", "0", "0")
    )
    close(s.combine(999, outputs), expected)
    assert s.passes_per_step(TIMESTEPS_50) == [3] * 50
    close(g.default_schedule("1.7b", "TA", scale_a=6.0, scale_t=7.0).combine(999, outputs), expected)


@pytest.mark.parametrize("variant,s_t,s_i", [("1.7b", 7.0, 4.0), ("17b", 5.0, 3.0)])
def test_ti_and_t_modes(outputs, variant, s_t, s_i):
    s = g.default_schedule(variant, "TI")
    expected = (
        s_i * (v(outputs, "T", "I", "0") - v(outputs, "T", "0", "0"))
        + s_t * (v(outputs, "T", "0", "0") - v(outputs, "N", "0", "0"))
        + v(outputs, "N", "0", "0")
    )
    close(s.combine(999, outputs), expected)
    close(g.ti(s_t, s_i).combine(10, outputs), expected)
    t_only = g.default_schedule(variant, "T", scale_t=3.0)
    close(
        t_only.combine(500, outputs),
        3.0 * (v(outputs, "T", "0", "0") - v(outputs, "N", "0", "0")) + v(outputs, "N", "0", "0"),
    )
    assert t_only.passes_per_step([999, 10]) == [2, 2]


def test_faster_preset_is_two_pass_plain_cfg(outputs):
    s = g.preset_schedule("faster", "17b", "TIA")
    expected = 5.0 * (v(outputs, "T", "I", "A") - v(outputs, "N", "0", "0")) + v(outputs, "N", "0", "0")
    for t in (999, 92):
        close(s.combine(t, outputs), expected)
    assert s.passes_per_step(TIMESTEPS_50) == [2] * 50
    s = g.preset_schedule("faster", "1.7b", "TA", scale_t=4.0)
    close(
        s.combine(500, outputs),
        4.0 * (v(outputs, "T", "0", "A") - v(outputs, "N", "0", "0")) + v(outputs, "N", "0", "0"),
    )


def test_tighter_lip_sync_raises_audio_scale(outputs):
    s = g.preset_schedule("tighter lip-sync", "17b", "TIA")
    assert s.scales["scale_a"] == 7.5
    expected = (
        7.5 * (v(outputs, "T", "I", "A") - v(outputs, "T", "I", "0"))
        + 3.0 * (v(outputs, "T", "I", "0") - v(outputs, "N", "0", "0"))
        + v(outputs, "N", "0", "0")
    )
    close(s.combine(500, outputs), expected)
    assert g.preset_schedule("tighter lip-sync", "1.7b", "TIA").scales["scale_a"] == 9.5
    assert g.preset_schedule("tighter lip-sync", "1.7b", "TIA", scale_a=8.0).scales["scale_a"] == 8.0  # explicit wins
    assert set(g.GUIDANCE_PRESETS) == {
        "official",
        "tighter lip-sync",
        "faster",
        "single pass",
        "distilled + audio",
        "distilled + early audio",
    }
    with pytest.raises(InputError) as err:
        g.preset_schedule("turbo", "17b", "TIA")
    assert err.value.field == "guidance"


def test_zero_weight_branches_are_skipped(outputs):
    s = g.default_schedule("17b", "TA", scale_t=1.0)  # the N·∅·0 weight 1 - s_t becomes 0
    assert s.branches_for(500) == [Branch("pos", "null", "on"), Branch("pos", "null", "off")]
    assert s.passes_per_step([999, 500]) == [2, 2]
    limited = {b: outputs[b] for b in s.branches_for(500)}  # no output for the skipped branch is needed
    expected = (
        5.5 * (v(outputs, "T", "0", "A") - v(outputs, "T", "0", "0"))
        + 1.0 * (v(outputs, "T", "0", "0") - v(outputs, "N", "0", "0"))
        + v(outputs, "N", "0", "0")
    )
    close(s.combine(500, limited), expected)
    with pytest.raises(KeyError):
        g.default_schedule("17b", "TA").combine(500, limited)


def test_effective_weights():
    w = g.default_schedule("17b", "TIA").effective_weights(TIMESTEPS_50)
    assert w["text"] == [5.0] * 5 + [3.0] * 45
    assert w["image"] == [1.0] * 5 + [3.0] * 45
    assert w["audio"] == [5.5] * 50
    w = g.default_schedule("1.7b", "TIA").effective_weights([999, 500])
    assert w == {"text": [7.0, 7.0], "image": [4.0, 4.0], "audio": [7.5, 7.5]}
    w = g.default_schedule("17b", "TA").effective_weights([999])
    assert w == {"text": [5.0], "image": [0.0], "audio": [5.5]}


def test_json_round_trip(outputs):
    for s in (
        g.default_schedule("17b", "TIA", scale_a=6.25),
        g.default_schedule("1.7b", "TIA"),
        g.preset_schedule("faster", "17b", "TI"),
    ):
        data = json.loads(json.dumps(s.to_dict()))
        back = g.GuidanceSchedule.from_dict(data).validate()
        assert back.to_dict() == s.to_dict()
        for t in (999, 980, 92):
            close(back.combine(t, outputs), s.combine(t, outputs))
            assert back.branches_for(t) == s.branches_for(t)


def test_overrides_replace_phase_weights(outputs):
    s = g.default_schedule("17b", "TIA", overrides={"main": {"T·I·A": 2.0, "N·∅·0": -1.0}}).validate()
    close(s.combine(500, outputs), 2.0 * v(outputs, "T", "I", "A") - v(outputs, "N", "0", "0"))
    close(s.combine(999, outputs), g.humo_17b_tia().combine(999, outputs))  # the other phase is untouched
    assert s.preset == "custom"
    with pytest.raises(InputError):
        g.default_schedule("17b", "TIA", overrides={"late": {"T·I·A": 1.0}})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, 1e6])
def test_validate_rejects_bad_user_scales(bad):
    for kwargs in ({"scale_a": bad}, {"scale_t": bad}, {"scale_i": bad}):
        s = g.default_schedule("1.7b", "TIA", **kwargs)
        with pytest.raises(InputError) as err:
            s.validate()
        assert err.value.field == "guidance"


def test_validate_allows_derived_negative_weights_but_checks_structure():
    g.default_schedule("17b", "TIA", scale_t=1.0).validate()  # late text weight 1 - 2 = -1 is derived: allowed
    s = g.default_schedule("1.7b", "TA")
    s.phases[0].weights[Branch("neg", "null", "off")] += 0.5  # weights no longer sum to 1
    with pytest.raises(InputError, match="sum to 1"):
        s.validate()
    s = g.humo_17b_tia()
    s.phases.reverse()  # the unconditional phase first hides the switch phase
    with pytest.raises(InputError):
        s.validate()
    with pytest.raises(InputError):
        g.GuidanceSchedule([]).validate()
    with pytest.raises(InputError):
        g.GuidanceSchedule.from_dict({"phases": "nope"})
    with pytest.raises(InputError):
        g.GuidanceSchedule.from_dict({"phases": [{"weights": {"T·I·A": "x"}}]})
    with pytest.raises(InputError):
        g.default_schedule("17b", "TIA", switch_timestep=math.nan)
    with pytest.raises(InputError):
        g.default_schedule("17b", "TIA", switch_timestep=2000).validate()
    with pytest.raises(InputError):
        g.default_schedule("14b", "TIA")
    with pytest.raises(InputError):
        g.default_schedule("17b", "IA")


# ---------------------------------------------------------------------------------------------- evaluation
class TinyModel(torch.nn.Module):
    """Deterministic per-sample function of several inputs, plus a non-tensor argument."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(4, 4, 1)
        self.text = torch.nn.Linear(6, 4)
        self.calls = 0

    def forward(self, hidden_states, encoder_hidden_states, audio_embeds, scale=1.0):
        self.calls += 1
        text = self.text(encoder_hidden_states).mean(1)[:, :, None, None, None]
        audio = audio_embeds.flatten(1).sum(1)[:, None, None, None, None]
        return scale * torch.tanh(self.conv(hidden_states) + text) * (1 + 0.1 * audio)


def test_batched_equals_sequential():
    model = TinyModel()
    gen = torch.Generator().manual_seed(1)
    inputs = [
        {
            "hidden_states": torch.randn(1, 4, 3, 2, 2, generator=gen),
            "encoder_hidden_states": torch.randn(1, 5, 6, generator=gen),
            "audio_embeds": torch.randn(1, 3, 8, generator=gen),
            "scale": 0.5,
        }
        for _ in range(4)
    ]
    sequential = g.evaluate_branches(model, inputs, batched=False)
    assert model.calls == 4
    batched = g.evaluate_branches(model, inputs, batched=True)
    assert model.calls == 5  # one forward for all four
    assert len(batched) == 4 and all(b.shape == (1, 4, 3, 2, 2) for b in batched)
    for a, b in zip(sequential, batched):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(sequential[0], sequential[1])
    inputs[1]["scale"] = 2.0
    with pytest.raises(ValueError):
        g.evaluate_branches(model, inputs, batched=True)


def test_schedule_with_evaluate_branches_end_to_end():
    model = TinyModel()
    s = g.default_schedule("1.7b", "TIA")
    gen = torch.Generator().manual_seed(2)
    conds = {
        b: {
            "hidden_states": torch.randn(1, 4, 3, 2, 2, generator=gen),
            "encoder_hidden_states": torch.randn(1, 5, 6, generator=gen),
            "audio_embeds": torch.randn(1, 3, 8, generator=gen),
        }
        for b in ALL
    }
    branches = s.branches_for(999)
    outs = g.evaluate_branches(model, [conds[b] for b in branches], batched=True)
    combined = s.combine(999, dict(zip(branches, outs)))
    direct = {b: model(**conds[b]) for b in branches}
    expected = (
        4.0 * (direct[Branch("pos", "ref", "on")] - direct[Branch("pos", "null", "on")])
        + 7.5 * (direct[Branch("pos", "null", "on")] - direct[Branch("pos", "null", "off")])
        + 7.0 * (direct[Branch("pos", "null", "off")] - direct[Branch("neg", "null", "off")])
        + direct[Branch("neg", "null", "off")]
    )
    torch.testing.assert_close(combined, expected, rtol=1e-5, atol=1e-5)


def test_distilled_audio_keeps_the_audio_branch_against_no_audio(outputs):
    """A step-distill LoRA's recipe: v(T,I,0) + s_a[v(T,I,A) - v(T,I,0)], 2 passes; with a switch, 2 then 1."""
    s = g.preset_schedule("distilled + audio", "17b", "TIA", scale_a=2.5).validate()
    expected = 2.5 * (v(outputs, "T", "I", "A") - v(outputs, "T", "I", "0")) + v(outputs, "T", "I", "0")
    for t in (999, 92):
        close(s.combine(t, outputs), expected)
    assert s.passes_per_step(TIMESTEPS_50) == [2] * 50 and s.preset == "distilled + audio"
    early = g.preset_schedule("distilled + early audio", "1.7b", "TA").validate()  # default switch 900
    close(early.combine(950, outputs), g.DISTILLED_AUDIO_SCALE * (v(outputs, "T", "0", "A") - v(outputs, "T", "0", "0"))
          + v(outputs, "T", "0", "0"))  # fmt: skip
    close(early.combine(900, outputs), v(outputs, "T", "0", "A"))  # t <= switch: the distilled branch alone
    assert early.passes_per_step([999, 937, 833, 625]) == [2, 2, 1, 1]
    # the studio sends its switch slider to every preset: "distilled + audio" keeps the audio term at every step
    assert g.preset_schedule("distilled audio", "17b", "TIA", switch_timestep=980).passes_per_step([999, 625]) == [2, 2]
    # no audio to keep apart: the distilled branch alone
    assert g.preset_schedule("distilled + audio", "17b", "TI").passes_per_step([999, 500]) == [1, 1]


def test_fast_recipes_count_their_passes_and_expected_time():
    from engine.speed import FAST_RECIPES

    audio, early, cfg1 = (FAST_RECIPES[n] for n in ("17b-lightx2v-audio", "17b-lightx2v-audio-early",
                                                     "17b-lightx2v-cfg1"))  # fmt: skip
    assert (audio.passes(), early.passes(), cfg1.passes()) == ([2, 2, 2, 2], [2, 2, 1, 1], [1, 1, 1, 1])
    # the measured H100 pass of HuMo-17B at 480x832x97 (5.109 s) and 720x1280x97 (19.056 s), bench/RESULTS.md
    assert math.isclose(audio.expected_seconds(480), 8 * 5.109)
    assert math.isclose(early.expected_seconds(720), 6 * 19.056)
    assert FAST_RECIPES["1.7b-distill-lora"].passes("TA") == [1, 1, 1, 1]


def test_a_recipe_fills_the_cli_options_and_refuses_another_model():
    from engine.cli import build_parser
    from engine.speed import apply_recipe

    args = build_parser().parse_args(["generate", "--recipe", "17b-lightx2v-audio-early", "--lora", "x.safetensors"])
    apply_recipe(args, "humo-17b")
    assert (args.steps, args.scheduler, args.guidance_preset) == (4, "euler", "distilled + early audio")
    assert (args.scale_a, args.switch_timestep, args.lora) == (2.0, 900, ["x.safetensors:1"])
    mine = build_parser().parse_args(["generate", "--recipe", "17b-lightx2v-audio", "--lora", "x.safetensors:0.8",
                                      "--steps", "6", "--scale-a", "3"])  # fmt: skip
    apply_recipe(mine, "humo-17b")
    assert (mine.steps, mine.scale_a, mine.lora) == (6, 3.0, ["x.safetensors:0.8"])  # what the user gave stays
    with pytest.raises(InputError, match="is for humo-17b, not tiny"):
        apply_recipe(build_parser().parse_args(["generate", "--recipe", "17b-lightx2v-cfg1", "--lora", "x"]), "tiny")
    with pytest.raises(InputError, match="needs its LoRA: get lightx2v"):
        apply_recipe(build_parser().parse_args(["generate", "--recipe", "17b-lightx2v-cfg1"]), "humo-17b")
