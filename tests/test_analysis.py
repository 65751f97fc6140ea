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
        own = analysis.identity_score(clip["reference"], clip["video"])
        others = [analysis.identity_score(o["reference"], clip["video"]) for j, o in enumerate(world) if j != i]
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
        assert own > 0.9 and abs(lag) <= 1 and own > other + 0.3


def test_stability_separates_steady_from_flicker(world):
    video = world[0]["video"]
    flicker = video.copy()
    flicker[::2] = 255 - flicker[::2]
    assert analysis.stability(video) < 0.2 * analysis.stability(flicker)


# ---- the nano model's size (64x64): no face detector works there, boxes come from the video's own colours -------
@pytest.fixture(scope="module")
def small_world():
    from training.nano import sample_world

    return sample_world(8, frames=49, size=(64, 64), seed=5)


def test_locate_faces_finds_the_ground_truth_face(small_world):
    for clip in small_world:
        boxes = analysis.locate_faces(clip.video)
        found = np.isfinite(boxes).all(axis=1)
        assert found.mean() > 0.9, clip.name
        centre = lambda b: np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)  # noqa: E731
        error = np.linalg.norm(centre(boxes[found]) - centre(clip.boxes[found]), axis=1)
        face_height = clip.boxes[:, 3] - clip.boxes[:, 1]
        assert np.median(error / face_height[found]) < 0.15, clip.name


def test_small_world_scores_separate_truth_from_mismatch(small_world):
    """Every score, on located boxes: ground truth high, another clip's reference / caption / audio low."""
    own_id, other_id, own_sync, other_sync = [], [], [], []
    for i, clip in enumerate(small_world):
        other = small_world[(i + 1) % len(small_world)]
        boxes = analysis.locate_faces(clip.video)
        own_id.append(analysis.identity_score(clip.reference, clip.video))
        other_id.append(analysis.identity_score(other.reference, clip.video))
        own_sync.append(analysis.sync(clip.video, boxes, clip.waveform)[0])
        other_sync.append(analysis.sync(clip.video, boxes, other.waveform)[0])
        assert analysis.text_score(clip.video, clip.caption) > 0.5, clip.caption
        if other.scene.background != clip.scene.background:
            assert analysis.text_score(clip.video, other.caption) < 0.2
    print(f"identity {np.mean(own_id):.2f} vs {np.mean(other_id):.2f}, sync {np.mean(own_sync):.2f} vs "
          f"{np.mean(other_sync):.2f}")  # fmt: skip
    assert np.mean(own_id) > 0.6 and np.mean(other_id) < 0.2
    assert np.mean(own_sync) > 0.8 and np.mean(own_sync) > np.mean(other_sync) + 0.35


def test_text_reads_the_background_not_the_hair_colour():
    caption = "A close-up shot of a person with a round face, tan skin and short red hair, talking in front of a grey "
    caption += "background with a lamp, dim lighting."
    grey = np.full((5, 32, 32, 3), 94, np.uint8)  # the world's grey wall under dim light
    assert analysis.text_score(grey, caption) > 0.6


def test_identity_ignores_the_light_but_not_the_person():
    person = Identity("p", skin="tan", shirt="blue")
    warm, cool = Scene(background="blue", lighting="warm"), Scene(background="green", lighting="cool")
    video, _, _ = render_clip(person, warm, frames=9, size=(64, 64), seed=1)
    from training.synth import render_reference

    same = render_reference(person, cool, (64, 64), np.random.default_rng(0))
    other = render_reference(Identity("q", skin="pale", shirt="blue"), cool, (64, 64), np.random.default_rng(0))
    assert analysis.identity_score(same, video) > 0.6 > 0.3 > analysis.identity_score(other, video)
