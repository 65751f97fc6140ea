"""Long videos: temporal context windows inside the pipeline's own loop (tiny models, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.long_video import blend_weights, match_colors, plan_windows, seam_report, window_slice
from engine.pipeline import GenerationInterrupted, HuMoPipeline
from engine.registry import load_pipeline
from tests.test_pipeline import write_image, write_wav

H = W = 32


@pytest.mark.parametrize("n,window,overlap", [(20, 9, 3), (25, 25, 4), (26, 25, 4), (100, 25, 4), (7, 9, 3)])
def test_windows_cover_every_frame_with_overlap(n, window, overlap):
    for step in range(4):
        windows = plan_windows(n, window, overlap, step)
        covered = np.zeros(n, dtype=int)
        for start, end in windows:
            assert end - start == min(window, n) and 0 <= start and end <= n
            covered[start:end] += 1
        assert covered.min() >= 1
        for (_, e0), (s1, _) in zip(windows, windows[1:]):
            assert e0 - s1 >= overlap  # neighbours overlap by at least O frames
        weights = blend_weights(windows, n, overlap)
        total = torch.zeros(n)
        for (start, end), w in zip(windows, weights):
            total[start:end] += w
        torch.testing.assert_close(total, torch.ones(n))


def test_grid_shifts_between_steps():
    grids = {tuple(plan_windows(40, 9, 3, step)) for step in range(4)}
    assert len(grids) > 1
    assert len({tuple(plan_windows(40, 9, 3, step, shift=False)) for step in range(4)}) == 1


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny")


@pytest.fixture(scope="module")
def pipe_17b():
    from engine.components import build_tiny_components

    return HuMoPipeline(**build_tiny_components(variant="17b"))


@pytest.fixture(scope="module")
def face(tmp_path_factory):
    return write_image(tmp_path_factory.mktemp("long") / "face.png")


TENSORS = ["latents", "noise_pred"]


def run(pipe, **kwargs):
    base = dict(prompt="a person talks", height=H, width=W, num_inference_steps=2, seed=3,
                callback_on_step_end_tensor_inputs=TENSORS)  # fmt: skip
    return pipe(**{**base, **kwargs})


@pytest.mark.parametrize("variant", ["1.7b", "17b"])
@pytest.mark.parametrize("window_frames", [97, 17])  # 17: the window is exactly the clip
def test_clip_in_one_window_is_bit_identical_to_plain(request, tmp_path, face, variant, window_frames):
    pipe = request.getfixturevalue("pipe" if variant == "1.7b" else "pipe_17b")
    audio = write_wav(tmp_path / "short.wav", 0.7)  # 17 frames
    a = run(pipe, image=face, audio=audio, window_frames=window_frames)
    b = run(pipe, image=face, audio=audio)
    assert a.num_frames == b.num_frames == 17
    assert torch.equal(torch.from_numpy(a.frames[0]), torch.from_numpy(b.frames[0]))


def _step_recorder(calls, tensors=TENSORS):
    def record(pipe, step, t, kwargs):
        calls.append((step, kwargs.get("window"), kwargs.get("window_span"), {k: kwargs[k].clone() for k in tensors}))
        return {}

    return record


def _long_inputs(pipe, f_vid=9):
    gen = torch.Generator().manual_seed(5)
    cfg = pipe.transformer.config
    audio = torch.randn(f_vid, cfg.audio_window, cfg.audio_bands, cfg.audio_dim, generator=gen)
    latents = torch.randn(1, cfg.out_channels, f_vid + 1, H // 8, W // 8, generator=gen)
    return audio, latents


@pytest.mark.parametrize("variant", ["1.7b", "17b"])
def test_windowed_velocity_is_the_blend_of_plain_windows(request, face, variant):
    """Step 0 of a 9-latent-frame clip in windows of 5: its velocity is, frame by frame, the weighted sum of what
    the plain pipeline predicts on each window alone; the reference slot gets the windows' mean."""
    pipe = request.getfixturevalue("pipe" if variant == "1.7b" else "pipe_17b")
    audio, latents = _long_inputs(pipe)
    calls = []
    run(pipe, image=face, audio_embeds=audio, latents=latents, num_frames=33, window_frames=17, window_overlap=2,
        output_type="latent", callback_on_step_end=_step_recorder(calls))  # fmt: skip
    windows = plan_windows(9, 5, 2, step_index=0)
    step0 = [c for c in calls if c[0] == 0]
    assert [c[1] for c in step0] == [(j, len(windows)) for j in range(len(windows))]
    assert [c[2] for c in step0] == windows
    blended = step0[-1][3]["noise_pred"]
    expected = torch.zeros_like(blended)
    for (start, end), weight in zip(windows, blend_weights(windows, 9, 2)):
        plain = []
        run(pipe, image=face, audio_embeds=audio[start:end], latents=window_slice(latents, (start, end), 9, dim=2),
            num_frames=17, output_type="latent", callback_on_step_end=_step_recorder(plain))  # fmt: skip
        velocity = plain[0][3]["noise_pred"]
        expected[:, :, start:end] += velocity[:, :, :5] * weight.view(1, 1, -1, 1, 1)
        expected[:, :, 9:] += velocity[:, :, 5:] / len(windows)
    torch.testing.assert_close(blended, expected, atol=1e-6, rtol=1e-5)


def test_long_clip_reports_every_window_of_every_step_with_the_whole_latents(pipe, face):
    audio, latents = _long_inputs(pipe)
    calls = []
    run(pipe, image=face, audio_embeds=audio, latents=latents, num_frames=33, window_frames=17, window_overlap=2,
        num_inference_steps=3, output_type="latent", callback_on_step_end=_step_recorder(calls))  # fmt: skip
    expected = [(k, (j, len(plan_windows(9, 5, 2, k)))) for k in range(3) for j in range(len(plan_windows(9, 5, 2, k)))]
    assert [(c[0], c[1]) for c in calls] == expected
    for k in range(3):  # every step's windows cover every latent frame
        covered = torch.zeros(9, dtype=torch.int64)
        for start, end in (c[2] for c in calls if c[0] == k):
            covered[start:end] += 1
        assert covered.min() >= 1
    assert all(c[3]["latents"].shape == latents.shape for c in calls)  # previews see the whole clip
    assert pipe.latent_preview(calls[-1][3]["latents"]).size[0] >= W // 8


def test_stop_mid_long_video(pipe):
    audio, latents = _long_inputs(pipe)
    calls = []

    def stop_at_second_window(p, step, t, kwargs):
        calls.append(kwargs["window"])
        if kwargs["window"][0] == 1:
            p._interrupt = True
        return {}

    with pytest.raises(GenerationInterrupted, match="window 2"):
        run(pipe, audio_embeds=audio, latents=latents, num_frames=33, window_frames=17, window_overlap=2,
            callback_on_step_end=stop_at_second_window)  # fmt: skip
    assert [w[0] for w in calls] == [0, 1]


@pytest.mark.parametrize("kwargs,field", [({"window_frames": 0}, "window_frames"),
                                          ({"window_frames": 9, "window_overlap": 3}, "window_overlap"),
                                          ({"window_frames": 17, "window_overlap": -1}, "window_overlap")])  # fmt: skip
def test_bad_window_settings_give_clear_errors(pipe, kwargs, field):
    with pytest.raises(InputError) as err:
        run(pipe, num_frames=33, **kwargs)
    assert err.value.field == field


def test_long_clip_has_the_audio_length_and_no_seams(pipe, tmp_path, face):
    audio = write_wav(tmp_path / "long.wav", 3.2)  # 80 frames -> 77 -> 20 latent frames
    out = run(pipe, image=face, audio=audio, window_frames=33, window_overlap=3, num_inference_steps=3, seed=0)
    video = out.frames[0]
    assert video.shape == (77, H, W, 3) and out.num_frames == 77
    # Seam metric: the frame-to-frame change across each window boundary of the last step's grid must not exceed
    # the largest frame-to-frame change inside the windows.
    windows = plan_windows(20, 9, 3, step_index=2)
    boundaries = [4 * start for start, _ in windows[1:]] + [4 * (end - 1) + 1 for end in [e for _, e in windows[:-1]]]
    report = seam_report(video, boundaries)
    print(report)
    assert max(report["seams"]) <= report["within_max"]


def test_color_matching_removes_drift():
    rng = np.random.default_rng(0)
    video = rng.uniform(0.2, 0.4, size=(40, 8, 8, 3)).astype(np.float32)
    video[20:] += 0.3  # the second half drifted brighter
    matched = match_colors(video, 10)
    means = [matched[i : i + 10].mean() for i in range(0, 40, 10)]
    assert max(means) - min(means) < 0.01 < video[30:].mean() - video[:10].mean()


def test_cli_long_video_writes_the_audio_length(tmp_path):
    from engine import media
    from engine.cli import main

    audio = write_wav(tmp_path / "a.wav", 2.0)  # 50 frames -> 49
    out = tmp_path / "long.mp4"
    args = ["generate", "--model", "tiny", "--audio", audio, "--prompt", "x", "--height", "32", "--width", "32",
            "--steps", "1", "--window-frames", "17", "--window-overlap", "2", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert media.probe(out)["video"]["frames"] == 49
    assert media.read_settings(out)["window_frames"] == 17
