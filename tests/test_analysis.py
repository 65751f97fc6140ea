"""The synthetic world's analysers score ground truth high and mismatches low."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from training import analysis
from training.synth import Identity, Scene, caption_for, render_clip, write_reference

SIZE = (128, 128)
PEOPLE = [
    Identity("a", face_shape="oval", skin="pale", hair_colour="black", shirt="red", pitch_hz=120),
    Identity("b", face_shape="round", skin="dark", hair_colour="blond", shirt="green", pitch_hz=200),
    Identity("c", face_shape="long", skin="tan", hair_colour="red", hair_style="long", shirt="white", pitch_hz=160),
]
SCENES = [
    Scene(background="blue"),
    Scene(background="yellow", lighting="warm"),
    Scene(background="green", lighting="dim"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    clips = []
    for i, (person, scene) in enumerate(zip(PEOPLE, SCENES)):
        video, wav, boxes = render_clip(person, scene, frames=49, size=SIZE, seed=i)
        ref_path = write_reference(
            root / f"ref{i}.png", person, SCENES[(i + 1) % 3], SIZE, np.random.default_rng(10 + i)
        )
        reference = cv2.cvtColor(cv2.imread(str(ref_path)), cv2.COLOR_BGR2RGB)
        clips.append(
            {"video": video, "wav": wav, "boxes": boxes, "reference": reference, "caption": caption_for(person, scene)}
        )
    return clips


def test_identity_prefers_the_right_reference(world):
    for i, clip in enumerate(world):
        own = analysis.identity_score(clip["reference"], clip["video"], clip["boxes"])
        others = [
            analysis.identity_score(o["reference"], clip["video"], clip["boxes"]) for j, o in enumerate(world) if j != i
        ]
        print(f"identity clip {i}: own {own:.3f}, others {[round(o, 3) for o in others]}")
        assert own > max(others) + 0.05


def test_text_follows_the_caption(world):
    for i, clip in enumerate(world):
        own = analysis.text_score(clip["video"], clip["caption"])
        other = analysis.text_score(clip["video"], world[(i + 1) % 3]["caption"])
        print(f"text clip {i}: own {own:.3f}, other {other:.3f}")
        assert own > 0.6 and other < 0.3


def test_sync_drops_with_another_clips_audio(world):
    for i, clip in enumerate(world):
        own, lag = analysis.sync(clip["video"], clip["boxes"], clip["wav"])
        other, _ = analysis.sync(clip["video"], clip["boxes"], world[(i + 1) % 3]["wav"])
        print(f"sync clip {i}: own {own:.3f} (lag {lag}), other {other:.3f}")
        assert own > 0.6 and abs(lag) <= 1 and own > other + 0.3


def test_stability_separates_steady_from_flicker(world):
    video = world[0]["video"]
    flicker = video.copy()
    flicker[::2] = 255 - flicker[::2]
    assert analysis.stability(video) < 0.2 * analysis.stability(flicker)
