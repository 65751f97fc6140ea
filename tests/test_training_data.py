"""Data side of training: synthetic world, source readers, clip cutting, filters, faces, references, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine import media
from engine.audio import load_audio, probe_audio, write_wav
from engine.errors import InputError, MissingWeightsError
from engine.faces import face_masks, latent_frame_groups, pool_to_tokens, sidecar_boxes_for_clip, track_faces
from training import clips
from training.filters import (
    SpeechConfig,
    TorchScriptSyncScorer,
    load_sync_scorer,
    speech_ratio,
    sync_score,
)
from training.raw import build_clips
from training.references import ImagePool, augment_reference, load_image, pick_reference_frame
from training.sources import detect_humoset_columns, read_source
from training.synth import (
    Identity,
    Scene,
    make_image_pool,
    make_synth_dataset,
    render_clip,
    sample_identity,
    sample_scene,
    write_synth_clip,
)

SRC_FRAMES = 41  # synthetic source length: long enough for a reference frame outside a 17-frame window
CLIP_FRAMES = 17
SIZE = (128, 128)


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


@pytest.fixture(scope="module")
def synth_sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    return {
        layout: make_synth_dataset(root / layout, num_clips=3, frames=SRC_FRAMES, size=SIZE, seed=1, layout=layout)
        for layout in ("folder", "humoset", "jsonl")
    }


# --- synthetic world --------------------------------------------------------------------------------------------


def test_synth_writes_clips_with_audio_captions_references_and_boxes(tmp_path):
    out = make_synth_dataset(tmp_path, num_clips=3, frames=21, size=(64, 96), seed=0, layout="folder")
    videos = sorted(out.glob("*.mp4"))
    assert [v.stem for v in videos] == ["clip000", "clip001", "clip002"]
    for video in videos:
        header = media.probe_header(video)
        assert header["video"] and header["audio"]
        assert (header["video"]["height"], header["video"]["width"]) == (64, 96)
        frames = media.read_video_frames(video)
        assert frames.shape == (21, 64, 96, 3)
        wav = load_audio(video)
        assert abs(len(wav) - 21 * 640) < 2048  # AAC priming/padding only
        assert np.abs(wav).max() > 0.1
        caption = video.with_suffix(".txt").read_text()
        assert caption.startswith("A ") and "person" in caption and "background" in caption
        assert load_image(video.with_suffix(".png")).shape == (64, 96, 3)
        faces = json.loads(video.with_name(video.stem + ".faces.json").read_text())
        assert len(faces["boxes"]) == 21 and all(len(b) == 4 for b in faces["boxes"])
    assert json.loads(video.with_suffix(".json").read_text())["identity"].startswith("id")


def test_synth_mouth_follows_audio_loudness():
    identity = Identity("a", accessory="none")
    frames, wav, boxes = render_clip(identity, Scene(), frames=33, size=SIZE, seed=3)
    loud = np.sqrt((wav[: 33 * 640].reshape(33, 640) ** 2).mean(axis=1))
    y0, y1 = boxes[:, 1], boxes[:, 3]
    # dark mouth pixels in the lower face grow with loudness
    dark = [
        (frames[t, int(y0[t] + 0.6 * (y1[t] - y0[t])) : int(y1[t]), :, :].mean(axis=2) < 70).sum() for t in range(33)
    ]
    assert np.corrcoef(loud, dark)[0, 1] > 0.8


def test_synth_caption_names_identity_and_scene():
    identity = Identity("x", skin="tan", hair_colour="red", hair_style="long", accessory="glasses")
    from training.synth import caption_for

    text = caption_for(identity, Scene(background="purple", objects=("plant",), framing="medium"))
    for word in ("tan skin", "long red hair", "glasses", "purple background", "a plant", "medium shot"):
        assert word in text


# --- face masks -------------------------------------------------------------------------------------------------


def test_latent_frame_groups_and_validation():
    assert [list(g) for g in latent_frame_groups(9)] == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    assert len(latent_frame_groups(97)) == 25
    with pytest.raises(InputError):
        latent_frame_groups(8)


def test_face_masks_union_over_four_frames_at_latent_resolution():
    boxes = np.full((9, 4), np.nan, np.float32)
    boxes[0] = [0, 0, 16, 16]  # latent 0: cells (0,0),(0,1),(1,0),(1,1)
    boxes[2] = [32, 0, 40, 8]  # latent 1: cell (0,4)
    boxes[4] = [48, 8, 52, 16]  # latent 1: half of cell (1,6)
    masks = face_masks(boxes, (32, 64), expand=0.0)
    assert masks.shape == (3, 4, 8)
    expect0 = np.zeros((4, 8))
    expect0[:2, :2] = 1
    np.testing.assert_array_equal(masks[0], expect0)
    expect1 = np.zeros((4, 8))
    expect1[0, 4] = 1
    expect1[1, 6] = 0.5
    np.testing.assert_array_equal(masks[1], expect1)
    assert masks[2].sum() == 0
    assert pool_to_tokens(masks).shape == (3, 2, 4)
    assert pool_to_tokens(masks)[0, 0, 0] == 1.0


def test_haar_tracks_synthetic_faces_near_ground_truth():
    centre = lambda b: np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)  # noqa: E731
    fractions = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        frames, _, gt = render_clip(sample_identity(rng, "a"), sample_scene(rng), frames=25, size=SIZE, seed=seed)
        boxes, fraction = track_faces(frames)
        fractions.append(fraction)
        assert np.nanmax(np.abs(centre(boxes) - centre(gt))) < 16  # pixels, on a 128-px frame
    assert np.mean(fractions) >= 0.85 and min(fractions) >= 0.5
    for seed in range(3):
        empty, _, _ = render_clip(None, sample_scene(np.random.default_rng(seed)), frames=9, size=SIZE, seed=seed)
        assert track_faces(empty)[1] == 0.0


def test_sidecar_boxes_follow_time_and_resize():
    sidecar = {"fps": 25, "size": [128, 128], "boxes": [[i, 10, i + 40, 50] for i in range(40)]}
    transform = clips.cover_crop_transform((128, 128), (64, 128))  # scale 1, crop 32 rows off the top
    out = sidecar_boxes_for_clip(sidecar, start=0.4, frames=5, fps=25, transform=transform)
    np.testing.assert_allclose(out[:, 0], [10, 11, 12, 13, 14])
    np.testing.assert_allclose(out[0], [10, 10 - 32, 50, 50 - 32])
    half = clips.cover_crop_transform((128, 256), (64, 128))  # scale 0.5, no crop
    np.testing.assert_allclose(
        sidecar_boxes_for_clip(sidecar, start=0, frames=1, fps=25, transform=half)[0], [0, 5, 20, 25]
    )


# --- filters ----------------------------------------------------------------------------------------------------


def test_speech_filter_keeps_speech_and_drops_silence_and_noise():
    rng = np.random.default_rng(0)
    _, speech, _ = render_clip(Identity("a"), Scene(), frames=50, seed=0)
    noise = rng.normal(0, 0.2, len(speech)).astype(np.float32)
    envelope = np.abs(speech) / np.abs(speech).max()
    modulated = (noise * np.convolve(envelope, np.ones(400) / 400, mode="same") * 5).astype(np.float32)
    config = SpeechConfig()
    assert speech_ratio(speech) >= 0.3
    assert speech_ratio(np.zeros_like(speech)) == 0.0
    assert speech_ratio(noise) < config.min_ratio
    assert speech_ratio(modulated) < config.min_ratio  # loud bursts of noise are not speech (spectral flatness)
    assert speech_ratio(modulated, config=SpeechConfig(max_flatness=None)) > config.min_ratio  # energy alone passes


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sync_score_matching_clip_beats_mismatched_audio(seed):
    rng = np.random.default_rng(seed)
    identity, scene = sample_identity(rng, "a"), sample_scene(rng)
    frames, wav, _ = render_clip(identity, scene, frames=49, seed=seed)
    _, other, _ = render_clip(identity, scene, frames=49, seed=seed + 100)
    boxes, _ = track_faces(frames)
    matched, lag = sync_score(frames, boxes, wav)
    assert matched > 0.8 and abs(lag) <= 1
    mismatched = {
        "other": sync_score(frames, boxes, other)[0],
        "shifted": sync_score(frames, boxes, np.roll(wav, 8 * 640))[0],  # 8 frames: beyond the +-5 lag search
    }
    for name, score in mismatched.items():
        assert matched - score > 0.3, (name, matched, score)


def test_sync_score_reversed_audio_is_lower_on_average():
    margins = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        frames, wav, boxes = render_clip(sample_identity(rng, "a"), sample_scene(rng), frames=49, seed=seed)
        margins.append(sync_score(frames, boxes, wav)[0] - sync_score(frames, boxes, wav[::-1].copy())[0])
    assert np.mean(margins) > 0.3 and min(margins) > 0.1


def test_sync_score_detects_a_known_lag():
    rng = np.random.default_rng(2)
    frames, wav, boxes = render_clip(sample_identity(rng, "a"), sample_scene(rng), frames=49, seed=2)
    delayed = np.concatenate([np.zeros(3 * 640, np.float32), wav[: -3 * 640]])  # audio 3 frames late
    corr, lag = sync_score(frames, boxes, delayed)
    assert lag == -3 and corr > 0.7


def test_sync_scorer_loader(tmp_path):
    import torch

    with pytest.raises(MissingWeightsError, match="SyncNet weights not found"):
        load_sync_scorer(tmp_path / "syncnet.pt")
    (tmp_path / "state.pt").write_bytes(b"not torchscript")
    with pytest.raises(InputError, match="TorchScript"):
        load_sync_scorer(tmp_path / "state.pt")

    class Fake(torch.nn.Module):
        def forward(self, mouth: torch.Tensor, waveform: torch.Tensor) -> torch.Tensor:
            return torch.stack([mouth.mean() * 10, torch.tensor(float(mouth.shape[0]))])

    torch.jit.script(Fake()).save(str(tmp_path / "fake.pt"))
    scorer = load_sync_scorer(tmp_path / "fake.pt")
    assert isinstance(scorer, TorchScriptSyncScorer)
    frames = np.full((7, 32, 32, 3), 51, np.uint8)
    boxes = np.tile(np.array([[4, 4, 28, 28]], np.float32), (7, 1))
    conf, offset = scorer(frames, boxes, np.zeros(7 * 640, np.float32))
    assert conf == pytest.approx(2.0, abs=1e-4) and offset == 7  # mouth crops reached the module: [7, 3, 48, 96]


# --- references -------------------------------------------------------------------------------------------------


def test_pick_reference_frame_prefers_outside_the_window():
    rng = np.random.default_rng(0)
    picks = [pick_reference_frame(100, 10, 17, rng) for _ in range(50)]
    assert all(outside and (i < 10 - 25 or i >= 27 + 25) for i, outside in picks)  # >= 1 s away
    picks = [pick_reference_frame(41, 0, 17, rng) for _ in range(50)]
    assert all(outside and 17 <= i < 41 for i, outside in picks)
    index, outside = pick_reference_frame(17, 0, 17, rng)
    assert not outside and 0 <= index < 17


def test_augment_reference_keeps_the_face_and_changes_pixels():
    rng = np.random.default_rng(0)
    frames, _, boxes = render_clip(Identity("a"), Scene(), frames=1, size=SIZE, seed=0)
    for _ in range(5):
        out = augment_reference(frames[0], rng, face_box=boxes[0])
        assert out.shape == frames[0].shape
        assert _mad(out, frames[0]) > 5
        assert track_faces(out[None])[1] == 1.0  # a face is still there


def test_image_pool_choice_is_same_identity_and_deterministic(tmp_path):
    people = [Identity("alice", skin="pale"), Identity("bob", skin="dark", hair_style="bald")]
    pool = ImagePool(make_image_pool(tmp_path / "pool", people, per_identity=4, size=(64, 64)))
    assert sorted(pool.identities) == ["alice", "bob"]
    picks = [pool.choose("alice", f"clip{i}", seed=0) for i in range(20)]
    assert all(p.parent.name == "alice" for p in picks)
    assert len(set(picks)) > 1  # spread over the person's photos
    assert picks == [pool.choose("alice", f"clip{i}", seed=0) for i in range(20)]
    assert [pool.choose("alice", f"clip{i}", seed=1) for i in range(20)] != picks
    assert pool.choose("ALICE", "clip0", seed=0) == picks[0]
    assert pool.choose("carol", "clip0") is None
    with pytest.raises(InputError):
        ImagePool(tmp_path / "missing")


# --- sources ----------------------------------------------------------------------------------------------------


def test_humoset_columns_are_detected_from_values():
    frame = pd.DataFrame(
        {
            "clip_name": ["video/abc.mp4", "video/def.mp4"],
            "dense_caption": ["a long caption here", "another long caption"],
            "person": ["p1", "p2"],
        }
    )
    assert detect_humoset_columns(frame, {"abc", "def"}) == {
        "video": "clip_name",
        "caption": "dense_caption",
        "identity": "person",
        "reference": None,
    }
    odd = pd.DataFrame({"key": ["abc"], "blurb": ["a person talking in a room"]})
    assert detect_humoset_columns(odd, {"abc"})["caption"] == "blurb"


def test_humoset_reader_tolerates_missing_values(tmp_path):
    (tmp_path / "video").mkdir()
    (tmp_path / "reference_image").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "video" / f"{name}.mp4").write_bytes(b"")  # the reader does not decode
    (tmp_path / "reference_image" / "b.jpg").write_bytes(b"")
    pd.DataFrame(
        {"video_id": ["a", "b"], "text": ["a person talks", None], "speaker": ["s1", float("nan")]}
    ).to_parquet(tmp_path / "video_caption.parquet")
    info = read_source(tmp_path)
    assert info.layout == "humoset" and info.columns["video"] == "video_id" and info.columns["identity"] == "speaker"
    got = {i.id: (i.caption, i.identity, i.reference.name if i.reference else None) for i in info.items}
    assert got == {"a": ("a person talks", "s1", None), "b": (None, None, "b.jpg"), "c": (None, None, None)}


def test_jsonl_reader_resolves_paths_and_reports_bad_lines(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"video": "v/a.mp4", "caption": "hi", "reference": ["r.png"], "identity": 7}) + "\n\n"
    )
    item = read_source(tmp_path / "m.jsonl").items[0]
    assert (item.id, item.video, item.reference, item.identity) == ("a", tmp_path / "v/a.mp4", tmp_path / "r.png", "7")
    (tmp_path / "bad.jsonl").write_text('{"video": "a.mp4"}\n{"caption": "no video"}\n')
    with pytest.raises(InputError, match="line 2"):
        read_source(tmp_path / "bad.jsonl")


# --- build_clips ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["folder", "humoset", "jsonl"])
def test_build_clips_on_each_layout(synth_sources, tmp_path, layout):
    face_source = "auto" if layout == "jsonl" else "detect"  # jsonl: the manifest's ground-truth boxes
    report = build_clips(
        synth_sources[layout], tmp_path / "out", frames=CLIP_FRAMES, size=SIZE, face_source=face_source, progress=False
    )
    assert report.layout == layout and report.sources == 3
    assert (report.written, report.reused, sum(report.skipped.values())) == (3, 0, 0)
    entries = _manifest(tmp_path / "out")
    assert [e["id"] for e in entries] == ["clip000_000", "clip001_000", "clip002_000"]
    for entry in entries:
        clip = tmp_path / "out" / entry["video"]
        header = media.probe_header(clip)
        assert header["video"]["fps"] == 25 and header["audio"]
        assert media.read_video_frames(clip).shape == (CLIP_FRAMES, *SIZE, 3)
        assert probe_audio(tmp_path / "out" / entry["audio"]).sample_rate == 16000
        assert len(load_audio(tmp_path / "out" / entry["audio"])) == CLIP_FRAMES * 640
        assert load_image(tmp_path / "out" / entry["reference"]).shape == (*SIZE, 3)
        assert entry["reference_source"] == "given"
        mask = np.load(tmp_path / "out" / entry["face_mask"])
        assert mask.shape == ((CLIP_FRAMES - 1) // 4 + 1, SIZE[0] // 8, SIZE[1] // 8) == (5, 16, 16)
        assert mask.dtype == np.uint8 and (mask.reshape(5, -1).max(axis=1) == 255).all()  # a face in every latent
        assert 0.05 < (mask > 127).mean() < 0.8
        assert entry["latent_frames"] == 5 and entry["frames"] == CLIP_FRAMES and entry["fps"] == 25
        assert entry["caption"].startswith("A ") and entry["caption_source"] == "given"
        assert entry["identity"].startswith("id")
        assert entry["sync_score"] > 0.5 and entry["speech_ratio"] > 0.2
        assert entry["face_source"] == ("sidecar" if layout == "jsonl" else "detector")
    if layout == "humoset":
        assert report.columns == {"video": "video", "caption": "caption", "identity": "identity", "reference": None}
        captions = pd.read_parquet(synth_sources[layout] / "video_caption.parquet")["caption"].tolist()
        assert [e["caption"] for e in entries] == captions
    if layout == "jsonl":  # sidecar boxes reach the clip unchanged (same size, window at 0)
        gt = json.loads((synth_sources[layout].parent / "clips" / "clip000.faces.json").read_text())["boxes"]
        got = json.loads((tmp_path / "out" / entries[0]["faces"]).read_text())["boxes"]
        np.testing.assert_allclose(np.array(got), np.array(gt[:CLIP_FRAMES]), atol=0.01)


def test_windows_cut_at_the_right_frame_and_resize(synth_sources, tmp_path):
    src = synth_sources["folder"] / "clip000.mp4"
    source_frames = media.read_video_frames(src)
    report = build_clips(
        synth_sources["folder"],
        tmp_path / "out",
        frames=CLIP_FRAMES,
        size=(64, 96),
        max_clips_per_video=None,
        face_source="auto",
        min_face_fraction=0.0,
        speech_filter=False,
        progress=False,
    )
    assert report.written == 6  # 41 frames -> windows at 0 and 17, three videos
    entry = next(e for e in _manifest(tmp_path / "out") if e["id"] == "clip000_001")
    assert entry["start"] == pytest.approx(17 / 25) and (entry["height"], entry["width"]) == (64, 96)
    clip = media.read_video_frames(tmp_path / "out" / entry["video"])
    assert clip.shape == (CLIP_FRAMES, 64, 96, 3)
    # the clip's first frame is source frame 17, resized to cover 64x96 (scale 0.75) and centre-cropped
    import cv2

    resized = [cv2.resize(f, (96, 96), interpolation=cv2.INTER_AREA)[16:80] for f in source_frames[10:26]]
    assert int(np.argmin([_mad(clip[0], f) for f in resized])) + 10 == 17
    assert np.load(tmp_path / "out" / entry["face_mask"]).shape == (5, 8, 12)


def test_other_frame_rates_and_sizes_are_resampled(tmp_path):
    frames, wav, _ = render_clip(Identity("a"), Scene(), frames=60, size=(120, 136), seed=0)
    write_wav(tmp_path / "a.wav", wav[: 2 * 16000])
    media.write_video(frames, tmp_path / "src" / "a.mp4", fps=30, audio=tmp_path / "a.wav")  # 2 s at 30 fps
    assert media.probe_header(tmp_path / "src" / "a.mp4")["video"]["fps"] == 30
    report = build_clips(tmp_path / "src", tmp_path / "out", frames=45, size=None, progress=False)
    assert report.written == 1
    entry = _manifest(tmp_path / "out")[0]
    assert (entry["height"], entry["width"], entry["fps"]) == (112, 128, 25)  # cropped to multiples of 16
    clip = tmp_path / "out" / entry["video"]
    assert media.probe_header(clip)["video"]["fps"] == 25 and media.read_video_frames(clip).shape == (45, 112, 128, 3)
    assert np.load(tmp_path / "out" / entry["face_mask"]).shape == (12, 14, 16)
    short = build_clips(tmp_path / "src", tmp_path / "out2", frames=53, size=None, progress=False)
    assert dict(short.skipped) == {"too_short": 1}  # 2 s = 50 frames at 25 fps


def test_bad_clips_are_skipped_with_counted_reasons(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    person, scene = sample_identity(rng, "p"), Scene(background="green")
    write_synth_clip(src / "good.mp4", person, scene, frames=SRC_FRAMES, seed=1, faces_sidecar=False)
    write_synth_clip(src / "mute.mp4", person, scene, frames=SRC_FRAMES, seed=2, audio="none", faces_sidecar=False)
    write_synth_clip(src / "short.mp4", person, scene, frames=9, seed=3, faces_sidecar=False)
    write_synth_clip(src / "empty.mp4", None, scene, frames=SRC_FRAMES, seed=4, faces_sidecar=False)
    write_synth_clip(src / "silent.mp4", person, scene, frames=SRC_FRAMES, seed=5, audio="silence", faces_sidecar=False)
    write_synth_clip(src / "hiss.mp4", person, scene, frames=SRC_FRAMES, seed=6, audio="noise", faces_sidecar=False)
    (src / "broken.mp4").write_bytes(os.urandom(3000))
    report = build_clips(src, tmp_path / "out", frames=CLIP_FRAMES, size=SIZE, progress=False)
    assert report.written == 1
    assert dict(report.skipped) == {"corrupt": 1, "no_audio": 1, "too_short": 1, "no_face": 1, "no_speech": 2}
    skipped = {
        row["id"]: row["reason"] for row in map(json.loads, (tmp_path / "out/skipped.jsonl").read_text().splitlines())
    }
    assert skipped == {
        "broken": "corrupt",
        "mute": "no_audio",
        "short": "too_short",
        "empty_000": "no_face",
        "silent_000": "no_speech",
        "hiss_000": "no_speech",
    }
    assert [e["id"] for e in _manifest(tmp_path / "out")] == ["good_000"]
    assert json.loads((tmp_path / "out/report.json").read_text())["skipped"]["no_speech"] == 2
    # the same skips are reported again on resume, without redoing them
    again = build_clips(src, tmp_path / "out", frames=CLIP_FRAMES, size=SIZE, progress=False)
    assert (again.written, again.reused) == (0, 1) and again.skipped == report.skipped
    # with the speech filter off the silent and hissing clips are kept (as stage-1-only clips)
    kept = build_clips(src, tmp_path / "out2", frames=CLIP_FRAMES, size=SIZE, speech_filter=False, progress=False)
    assert kept.written == 3 and dict(kept.skipped) == {"corrupt": 1, "no_audio": 1, "too_short": 1, "no_face": 1}
    tasks = {e["id"]: e["task_ok"] for e in _manifest(tmp_path / "out2")}
    assert tasks == {"good_000": ["sp", "av"], "silent_000": ["sp"], "hiss_000": ["sp"]}


def test_malformed_sidecar_skips_the_clip_and_missing_captioner_weights_stop_the_run(synth_sources, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(synth_sources["folder"], src)
    (src / "clip001.faces.json").write_text('{"fps": 25}')  # no "boxes"
    report = build_clips(src, tmp_path / "out", frames=CLIP_FRAMES, size=SIZE, progress=False)
    assert report.written == 2 and dict(report.skipped) == {"bad_input": 1}
    assert "boxes" in report.skipped_items[0]["detail"]

    def captioner(frames):
        raise MissingWeightsError("download the captioner")

    (src / "clip000.txt").unlink()
    with pytest.raises(MissingWeightsError):
        build_clips(src, tmp_path / "out2", frames=CLIP_FRAMES, size=SIZE, captioner=captioner, progress=False)


def test_sync_threshold_drops_clips_with_foreign_audio(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(3)
    person, scene = sample_identity(rng, "p"), sample_scene(rng)
    write_synth_clip(src / "synced.mp4", person, scene, frames=SRC_FRAMES, seed=11)
    write_synth_clip(src / "other.mp4", person, scene, frames=SRC_FRAMES, seed=12)
    dubbed = src / "dubbed.mp4"  # synced.mp4's pictures with other.mp4's sound
    frames = media.read_video_frames(src / "synced.mp4")
    write_wav(tmp_path / "other.wav", load_audio(src / "other.mp4"))
    media.write_video(frames, dubbed, audio=tmp_path / "other.wav")
    (src / "dubbed.faces.json").write_text((src / "synced.faces.json").read_text())
    report = build_clips(src, tmp_path / "out", frames=33, size=SIZE, sync_threshold=0.6, progress=False)
    assert dict(report.skipped) == {"out_of_sync": 1}
    assert sorted(e["id"] for e in _manifest(tmp_path / "out")) == ["other_000", "synced_000"]
    assert report.skipped_items[0]["id"] == "dubbed_000"


def test_resume_does_not_redo_finished_clips(synth_sources, tmp_path):
    out = tmp_path / "out"
    kwargs = dict(frames=CLIP_FRAMES, size=SIZE, progress=False)
    first = build_clips(synth_sources["folder"], out, **kwargs)
    assert first.written == 3
    manifest = _manifest(out)
    files = sorted(p for p in (out / "clips").rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    second = build_clips(synth_sources["folder"], out, **kwargs)
    assert (second.written, second.reused) == (0, 3)
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    assert _manifest(out) == manifest  # rebuilt from the finished clips, same content
    # a crash mid-run: the video's state file never got written, one clip is missing
    import shutil

    (out / "state" / "clip001.json").unlink()
    (out / "state" / "clip002.json").unlink()
    shutil.rmtree(out / "clips" / "clip002_000")
    third = build_clips(synth_sources["folder"], out, **kwargs)
    assert (third.written, third.reused) == (1, 2)
    assert all(stamps[p] == p.stat().st_mtime_ns for p in files if "clip002_000" not in str(p))
    assert [e["id"] for e in _manifest(out)] == ["clip000_000", "clip001_000", "clip002_000"]
    assert not list((out / "clips").glob(".tmp-*"))
    with pytest.raises(InputError, match="another output folder"):
        build_clips(synth_sources["folder"], out, frames=21, size=SIZE, progress=False)


def test_reference_from_pool_or_augmented_distant_frame(tmp_path):
    src = make_synth_dataset(
        tmp_path / "src", num_clips=2, frames=SRC_FRAMES, size=SIZE, seed=2, references=False, image_pool=True
    )
    pooled = build_clips(
        src, tmp_path / "pooled", frames=CLIP_FRAMES, size=SIZE, image_pool=src / "pool", progress=False
    )
    assert pooled.written == 2
    for entry in _manifest(tmp_path / "pooled"):
        origin = Path(entry["reference_origin"])
        assert entry["reference_source"] == "pool" and origin.parent.name == entry["identity"]
        assert _mad(load_image(tmp_path / "pooled" / entry["reference"]), load_image(origin)) == 0
    own = build_clips(src, tmp_path / "own", frames=CLIP_FRAMES, size=SIZE, progress=False)
    assert own.written == 2
    for entry in _manifest(tmp_path / "own"):
        assert entry["reference_source"] == "self_frame" and entry["reference_outside_window"]
        assert CLIP_FRAMES <= entry["reference_frame"] < SRC_FRAMES
        ref = load_image(tmp_path / "own" / entry["reference"])
        source = media.read_video_frames(src / (entry["id"].rsplit("_", 1)[0] + ".mp4"))
        nearest = min(_mad(ref, f) for f in source)
        assert nearest > 4  # augmented: not a pixel copy of any source frame
    build_clips(src, tmp_path / "own2", frames=CLIP_FRAMES, size=SIZE, progress=False)
    for a, b in zip(_manifest(tmp_path / "own"), _manifest(tmp_path / "own2")):  # deterministic in the seed
        assert a["reference_frame"] == b["reference_frame"]
        assert _mad(load_image(tmp_path / "own" / a["reference"]), load_image(tmp_path / "own2" / b["reference"])) == 0


def test_bad_arguments_raise_input_errors(synth_sources, tmp_path):
    with pytest.raises(InputError, match="4n\\+1"):
        build_clips(synth_sources["folder"], tmp_path / "o", frames=16, progress=False)
    with pytest.raises(InputError, match="multiples of 16"):
        build_clips(synth_sources["folder"], tmp_path / "o", frames=17, size=(100, 128), progress=False)
    with pytest.raises(InputError, match="does not exist"):
        build_clips(tmp_path / "nothing", tmp_path / "o", frames=17, progress=False)


def test_cli_synth_and_prepare(tmp_path, capsys):
    from training.__main__ import main

    assert main(["synth", "--out", str(tmp_path / "s"), "--num-clips", "2", "--frames", "21", "--layout", "jsonl"]) == 0
    assert (tmp_path / "s" / "manifest.jsonl").is_file()
    code = main(
        [
            "prepare",
            "--input",
            str(tmp_path / "s" / "manifest.jsonl"),
            "--out",
            str(tmp_path / "p"),
            "--frames",
            "17",
            "--size",
            "128x128",
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{") :])
    assert summary["clips"] == 2 and summary["layout"] == "jsonl"
    assert (
        main(["prepare", "--input", str(tmp_path / "s"), "--out", str(tmp_path / "q"), "--frames", "16", "--quiet"])
        == 2
    )
