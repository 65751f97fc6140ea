"""Long videos with temporal context windows (tiny model, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.long_video import blend_weights, generate_long, match_colors, plan_windows, seam_report
from engine.registry import load_pipeline
from tests.test_pipeline import write_image, write_wav


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


def test_long_clip_has_the_audio_length_and_no_seams(pipe, tmp_path):
    audio = write_wav(tmp_path / "long.wav", 3.2)  # 80 frames -> 77 -> 20 latent frames
    image = write_image(tmp_path / "face.png")
    seen = []
    out = generate_long(pipe, "a person talks", image, audio, window_frames=33, overlap_frames=3, height=32, width=32,
                        num_inference_steps=3, seed=0, callback=lambda *a: seen.append(a))  # fmt: skip
    video = out.frames[0]
    assert video.shape == (77, 32, 32, 3) and out.num_frames == 77
    # per-window progress: every window of every step is reported, with that step's window count
    expected = [
        (i, len(plan_windows(20, 9, 3, k)), k, 3) for k in range(3) for i in range(len(plan_windows(20, 9, 3, k)))
    ]
    assert seen == expected
    # Seam metric: the frame-to-frame change across each window boundary of the last step's grid must not exceed
    # the largest frame-to-frame change inside the windows.
    windows = plan_windows(20, 9, 3, step_index=2)
    boundaries = [4 * start for start, _ in windows[1:]] + [4 * (end - 1) + 1 for end in [e for _, e in windows[:-1]]]
    report = seam_report(video, boundaries)
    print(report)
    assert max(report["seams"]) <= report["within_max"]


def test_short_clip_is_the_plain_pipeline(pipe, tmp_path):
    audio = write_wav(tmp_path / "short.wav", 0.5)
    a = generate_long(pipe, "x", None, audio, window_frames=97, height=32, width=32, num_inference_steps=2, seed=3)
    b = pipe(prompt="x", audio=audio, height=32, width=32, num_inference_steps=2, seed=3)
    np.testing.assert_array_equal(a.frames[0], b.frames[0])


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
