"""Dubbing (engine/dub.py, HuMoPipeline(video=, mask=)): masks from faces on synthetic clips, the latent blending in
the one denoising loop (plain and windowed, both variants), the pixel composite, the bad-input messages, the CLI and a
held-out sync check with HuMo-nano."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import pytest
import torch

from engine import dub, known_latents, media
from engine.audio import write_wav
from engine.cli import main
from engine.components import build_tiny_components
from engine.errors import InputError
from engine.pipeline import HuMoPipeline
from engine.registry import load_pipeline
from training import synth
from training.analysis import locate_faces, sync

SIZE = (64, 64)  # HuMo-nano's size; the detector sees it upscaled to 256


def person(seed: int = 0, framing: str = "close-up"):
    rng = np.random.default_rng([seed, 3])
    identity = synth.sample_identity(rng, f"p{seed}")
    # light skin on a contrasting wall: the detector's reliable case (dark skin is its weak one, see synth.py)
    identity = synth.Identity(**{**identity.__dict__, "skin": "light", "accessory": "none"})
    return identity, synth.Scene(background="blue", framing=framing, objects=("plant",))


def write_clip(folder: Path, name: str, frames: int = 17, seed: int = 0, size=SIZE, framing="close-up"):
    """A synthetic clip with voice A on disk, its voice-B twin (the ground-truth dub) in memory."""
    identity, scene = person(seed, framing)
    pair = synth.render_dub_pair(identity, scene, frames=frames, size=size, seed=seed, voice_seed=seed + 100)
    wav_a = write_wav(folder / f"{name}_a.wav", pair["wav_a"])
    write_wav(folder / f"{name}_b.wav", pair["wav_b"])
    media.write_video(pair["video_a"], folder / f"{name}.mp4", fps=25, audio=wav_a, preset="veryfast")
    return folder / f"{name}.mp4", folder / f"{name}_b.wav", pair


def face_pixels(boxes: np.ndarray, size) -> np.ndarray:
    """bool [T, H, W]: the drawn face ellipses (the world's ground truth)."""
    out = np.zeros((len(boxes), *size), np.uint8)
    for t, (x0, y0, x1, y1) in enumerate(boxes):
        centre = (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2)))
        cv2.ellipse(out[t], centre, (int((x1 - x0) / 2), int((y1 - y0) / 2)), 0, 0, 360, 1, -1)
    return out.astype(bool)


# ---------------------------------------------------------------------------------------------- the world's true dub
def test_dub_pair_differs_only_at_the_mouth():
    pair = synth.render_dub_pair(*person(9), frames=25, size=(128, 128), seed=9, voice_seed=10)
    assert not np.array_equal(pair["wav_a"], pair["wav_b"])
    changed = np.abs(pair["video_a"].astype(int) - pair["video_b"].astype(int)).sum(axis=-1) > 0
    assert changed.any()
    for t, (x0, y0, x1, y1) in enumerate(pair["boxes"]):
        ys, xs = np.nonzero(changed[t])
        cy, ry = (y0 + y1) / 2, (y1 - y0) / 2
        assert (ys >= cy + 0.15 * ry).all() and (ys <= cy + 0.8 * ry).all()  # the mouth band, nothing else
        assert (xs >= x0).all() and (xs <= x1).all()


# ---------------------------------------------------------------------------------------------- masks from faces
@pytest.mark.parametrize("size", [(64, 64), (128, 128)])
def test_mask_covers_the_detected_face_and_follows_it(size):
    identity, scene = person(1)
    pair = synth.render_dub_pair(identity, scene, frames=25, size=size, seed=1, voice_seed=2)
    frames, truth = pair["video_a"], pair["boxes"]
    start, box = dub.find_face(frames)
    boxes = dub.track_face(frames, start, box)
    assert np.isfinite(boxes).all()
    whole = dub.face_mask(boxes, size, strength=1.0) > 0.5
    face = face_pixels(truth, size)
    covered = (whole & face).sum(axis=(1, 2)) / face.sum(axis=(1, 2))
    assert covered.min() > 0.85, covered  # every frame: the head moves and the mask moves with it
    assert whole.sum() < 1.6 * face.sum()  # and it is the face, not the frame
    # the default strength keeps the eyes and regenerates the mouth (the world draws it at 0.47 of the half height)
    lower = dub.face_mask(boxes, size) > 0.5
    for t, (x0, y0, x1, y1) in enumerate(truth):
        cx, cy, ry = (x0 + x1) / 2, (y0 + y1) / 2, (y1 - y0) / 2
        assert lower[t, int(cy + 0.47 * ry), int(cx)], t
        assert not lower[t, int(cy - 0.24 * ry), int(cx)], t  # the eyes' row
    assert lower.sum() < 0.75 * whole.sum()


def test_two_faces_pick_by_index_or_point_and_only_that_face_changes():
    left = synth.render_dub_pair(*person(2), frames=9, size=(64, 64), seed=2, voice_seed=3)
    right = synth.render_dub_pair(*person(4, "medium"), frames=9, size=(64, 64), seed=4, voice_seed=5)
    frames = np.concatenate([left["video_a"], right["video_a"]], axis=2)  # two people side by side, 64x128
    boxes = dub.detect_faces(frames[0])
    assert len(boxes) == 2 and boxes[0][0] < 64 <= boxes[1][0]  # the close-up on the left is the larger
    _, second = dub.find_face(frames, face=1)
    assert second[0] >= 64
    _, clicked = dub.find_face(frames, point=(96, 30))
    np.testing.assert_array_equal(clicked, second)
    mask = dub.face_mask(dub.track_face(frames, 0, second), frames.shape[1:3])
    assert mask[:, :, :64].max() == 0 and mask[:, :, 64:].max() == 1
    with pytest.raises(InputError, match=r"Face 2 does not exist: frame 0 of the video shows 2 face\(s\)"):
        dub.find_face(frames, face=2)
    with pytest.raises(InputError, match=r"No face at \(5, 5\)"):
        dub.find_face(frames, point=(5, 5))


def test_latent_mask_covers_every_pixel_the_composite_takes_from_the_generation():
    pixels = np.zeros((9, 32, 32), np.float32)
    pixels[3, 10:12, 20:30] = 0.3  # video frame 3 belongs to latent frame 1 (frames 1..4)
    latent = known_latents.latent_mask(pixels)
    assert latent.shape == (3, 4, 4)
    assert latent[1].sum() == 2 and latent[1, 1, 2] == latent[1, 1, 3] == 1
    assert latent[0].sum() == 0 and latent[2].sum() == 0
    with pytest.raises(InputError, match="4n\\+1 frames"):
        known_latents.latent_mask(np.zeros((8, 32, 32), np.float32))


def test_pingpong_never_jumps_back_to_the_start():
    np.testing.assert_array_equal(dub.pingpong_indices(4, 10), [0, 1, 2, 3, 2, 1, 0, 1, 2, 3])
    assert dub.clip_length(video_frames=20, audio_frames=50, extend="pingpong") == 49
    assert dub.clip_length(video_frames=20, audio_frames=50, extend="trim") == 17
    assert dub.clip_length(video_frames=60, audio_frames=30, extend="pingpong") == 29


def test_composite_keeps_source_pixels_outside_the_mask():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    generated = rng.random((5, 16, 16, 3), dtype=np.float32)
    mask = np.zeros((5, 16, 16), np.float32)
    mask[:, 4:12, 4:12] = 1.0
    mask[:, 3, 4:12] = 0.5
    out = dub.composite(generated, source, mask)
    np.testing.assert_array_equal(out[mask == 0], source[mask == 0])
    np.testing.assert_array_equal(out[mask == 1], media.to_uint8(generated)[mask == 1])
    half = 0.5 * media.to_uint8(generated[:, 3, 4:12]).astype(float) + 0.5 * source[:, 3, 4:12]
    np.testing.assert_allclose(out[:, 3, 4:12], half, atol=1)


# ---------------------------------------------------------------------------------------------- the pipeline
@pytest.fixture(scope="module")
def tiny():
    return load_pipeline("tiny")


@pytest.fixture(scope="module")
def tiny_17b():
    return HuMoPipeline(**build_tiny_components(variant="17b"))


def tiny_inputs(frames=17, size=(32, 32), seed=0):
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, *size, 3), dtype=np.uint8)
    mask = np.zeros((frames, *size), np.float32)
    mask[:, 8:24, 8:16] = 1.0
    t = np.arange(int(frames / 25 * 16000)) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return video, mask, audio


@pytest.mark.parametrize("variant", ["1.7b", "17b"])
@pytest.mark.parametrize("window_frames", [None, 9])  # 9 frames = 3 latent frames: a 17-frame clip needs windows
def test_latents_outside_the_mask_end_as_the_source_latents(request, variant, window_frames):
    pipe = request.getfixturevalue("tiny" if variant == "1.7b" else "tiny_17b")
    video, mask, audio = tiny_inputs()
    kwargs = dict(prompt="a person talks", image=video[0], audio=audio, height=32, width=32, num_inference_steps=3,
                  seed=1, output_type="latent", window_frames=window_frames, window_overlap=1)  # fmt: skip
    out = pipe(video=video, mask=mask, **kwargs).frames[0]
    source = pipe._vae_encode(known_latents.video_tensor(video, 17, 32, 32))
    keep = torch.from_numpy(1 - known_latents.latent_mask(mask))[None, None].bool().expand_as(source)
    assert keep.float().mean() > 0.3 and (~keep).any()
    torch.testing.assert_close(out[keep], source[keep], rtol=0, atol=1e-6)
    # inside the mask the model generated: not the source, and not the undubbed video either
    plain = pipe(**kwargs).frames[0]
    assert (out[~keep] - source[~keep]).abs().mean() > 0.05
    assert (out[~keep] - plain[~keep]).abs().mean() > 1e-3


def test_euler_scheduler_blends_with_scale_noise():
    pipe = load_pipeline("tiny", scheduler="euler")
    video, mask, audio = tiny_inputs()
    seen = []

    def record(pipe, step, t, kwargs):
        seen.append(kwargs["latents"][:, :, :5].clone())
        return {}

    out = pipe(prompt="x", image=video[0], audio=audio, video=video, mask=mask, height=32, width=32, seed=0,
               num_inference_steps=3, output_type="latent", callback_on_step_end=record).frames[0]  # fmt: skip
    source = pipe._vae_encode(known_latents.video_tensor(video, 17, 32, 32))
    keep = torch.from_numpy(1 - known_latents.latent_mask(mask))[None, None].bool().expand_as(source)
    noise = torch.randn(source.shape[0], 16, 6, 4, 4, generator=torch.Generator().manual_seed(0))[:, :, :5]
    sigma = float(pipe.scheduler.sigmas[1])  # after step 0 the latents sit at the next step's noise level
    expected = (1 - sigma) * source + sigma * noise
    torch.testing.assert_close(seen[0][keep], expected[keep], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[keep], source[keep], rtol=0, atol=1e-6)


def test_pipeline_refuses_bad_video_and_mask_before_encoding(tiny, monkeypatch):
    monkeypatch.setattr(tiny, "encode_prompt", lambda *a, **k: pytest.fail("encoded before checking"))
    video, mask, audio = tiny_inputs()
    base = dict(prompt="x", audio=audio, height=32, width=32, num_inference_steps=2)
    with pytest.raises(InputError, match=r"mask must be \[F, 32, 32\] \(pixels\) or \[F_lat, 4, 4\]"):
        tiny(video=video, mask=mask[:, :16], **base)
    with pytest.raises(InputError, match=r"video must be frames \[F, 32, 32, 3\]"):
        tiny(video=video[:, :16], mask=mask, **base)
    with pytest.raises(InputError, match="needs both video= .* and mask="):
        tiny(mask=mask, **base)


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_are_refused_before_any_model_work(tmp_path):
    clip, voice_b, _ = write_clip(tmp_path, "ok")
    still = tmp_path / "still.png"
    PIL.Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(still)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 50)
    empty = synth.write_synth_clip(tmp_path / "room.mp4", None, synth.Scene(), frames=17, size=SIZE, audio="speech")
    cases = [
        (dict(video=str(empty.video)), r"No face found in room\.mp4 \(checked frames 0, 5, 10, 15, at 25 fps\)"),
        (dict(video=str(still)), r"still\.png is a still image, not a video"),
        (dict(video=str(voice_b)), r"ok_b\.wav has no video track \(it is audio only\)"),
        (dict(video=str(junk)), r"Could not read junk\.mp4 as audio or video"),
        (dict(face=3), r"Face 3 does not exist: frame 0 of ok\.mp4 shows 1 face\(s\)"),
        (dict(strength=0), r"Strength must be from 0\.05"),
        (dict(extend="loop"), r"extend must be one of pingpong, trim"),
    ]
    for change, message in cases:
        request = dub.DubRequest(**{"video": str(clip), "audio": str(voice_b), **change})
        with pytest.raises(InputError, match=message):
            dub.plan_dub(request)
    small = tmp_path / "mask.png"
    PIL.Image.fromarray(np.full((32, 48), 255, np.uint8)).save(small)
    with pytest.raises(InputError, match=r"mask\.png is 48x32 pixels but the video frames are 64x64"):
        dub.plan_dub(dub.DubRequest(video=str(clip), audio=str(voice_b), mask=str(small)))


def test_source_is_resampled_to_25_fps_and_fitted_to_the_audio(tmp_path):
    identity, scene = person(5)
    video, _, _ = synth.render_clip(identity, scene, frames=40, size=SIZE, seed=5)
    fast = media.write_video(video, tmp_path / "fast.mp4", fps=50)  # 0.8 s at 50 fps
    source = dub.load_video(fast)
    assert len(source.frames) == 20 and source.source_fps == 50
    nearest = [int(np.argmin([np.abs(f.astype(float) - v).mean() for v in video])) for f in source.frames]
    assert nearest == list(range(0, 40, 2))  # every other frame: 25 fps of the same 0.8 s
    voice = write_wav(tmp_path / "long.wav", synth.synth_speech(16000 * 2, np.random.default_rng(1)))  # 2 s
    plan = dub.plan_dub(dub.DubRequest(video=str(fast), audio=voice))
    assert plan.num_frames == 49 and plan.notes["extended"] == "pingpong"
    assert plan.notes["fps_policy"] == "resampled to 25 fps for the model"
    np.testing.assert_array_equal(plan.frames[20], source.frames[18])  # forward-backward past the end
    trimmed = dub.plan_dub(dub.DubRequest(video=str(fast), audio=voice, extend="trim"))
    assert trimmed.num_frames == 17 and len(trimmed.waveform) == 17 * 640


# ---------------------------------------------------------------------------------------------- end to end (nano)
@pytest.fixture(scope="module")
def nano():
    from engine.nano import is_present, load_nano_pipeline

    if not is_present():
        pytest.skip("HuMo-nano is not in assets/humo-nano")
    return load_nano_pipeline()


def test_cli_dub_writes_a_labelled_mp4_that_keeps_the_source_outside_the_mask(tmp_path, capsys, nano):
    clip, voice_b, _ = write_clip(tmp_path, "cli", frames=25, seed=7)
    out = tmp_path / "dubbed.mp4"
    code = main(["dub", "--model", "humo-nano", "--video", str(clip), "--audio", str(voice_b), "--steps", "3",
                 "--seed", "2", "--prompt", "a person talking", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    info = media.probe(out)
    assert info["video"]["frames"] == 25 and (info["video"]["width"], info["video"]["height"]) == (64, 64)
    assert info["audio"] is not None
    settings = media.read_settings(out)
    assert settings["kind"] == "dub" and settings["dub"]["video"] == "cli.mp4" and settings["seed"] == 2
    assert settings["dub"]["fps_policy"] == "25 fps" and settings["provenance"]["ai_generated"] is True
    assert media.read_metadata(out)["comment"] and "AI-generated" in str(media.read_metadata(out))
    # outside the mask the file is the source up to H.264 rounding: no worse than re-encoding the source
    plan = dub.plan_dub(dub.DubRequest(video=str(clip), audio=str(voice_b)))
    source = plan.frames.astype(np.float32)
    far = np.stack([cv2.dilate((m > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) == 0 for m in plan.mask])
    reencoded = media.read_video_frames(media.write_video(plan.frames, tmp_path / "re.mp4", fps=25))
    dubbed = media.read_video_frames(out).astype(np.float32)
    floor = np.abs(reencoded.astype(np.float32) - source)[far].mean()
    assert np.abs(dubbed - source)[far].mean() <= 1.5 * floor + 0.5
    assert np.abs(dubbed - source)[plan.mask > 0.5].mean() > 3 * floor  # the face did change


def test_cli_bad_input_exits_2_before_loading_a_model(tmp_path, capsys, monkeypatch):
    import engine.registry

    monkeypatch.setattr(engine.registry, "load_pipeline", lambda *a, **k: pytest.fail("model loaded"))
    clip, voice_b, _ = write_clip(tmp_path, "bad", frames=9)
    code = main(["dub", "--video", str(clip), "--audio", str(voice_b), "--face", "4", "--out", str(tmp_path / "x.mp4")])
    assert code == 2
    assert "Face 4 does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def dub_clip(pipe, frames, waveform, mask, prompt, steps=20, seed=0):
    """The dub of in-memory frames at the nano size (what run_dub does after plan_dub)."""
    plan = dub.DubPlan(frames, waveform, mask, len(frames), None, 0, None)
    request = dub.DubRequest(video="", audio="", prompt=prompt, num_inference_steps=steps, seed=seed)
    return dub.run_dub(pipe, request, plan)[0]


@pytest.mark.slow  # nano renders of 49 frames: ~10 s each on an idle 2-core machine
def test_held_out_dub_follows_the_new_voice(nano):
    """Two held-out clips (the README table uses 8, bench/dub_bench.py): the dubbed mouth correlates with voice B
    better than with voice A by MARGIN on average; the undubbed source does the opposite."""
    margin = 0.2
    gaps, source_gaps = [], []
    for seed in (11, 12):
        identity, scene = person(seed)
        pair = synth.render_dub_pair(identity, scene, frames=49, size=SIZE, seed=seed, voice_seed=seed + 50)
        start, box = dub.find_face(pair["video_a"])
        mask = dub.face_mask(dub.track_face(pair["video_a"], start, box), SIZE)
        video = dub_clip(nano, pair["video_a"], pair["wav_b"], mask, synth.caption_for(identity, scene))
        boxes = locate_faces(video)
        gaps.append(sync(video, boxes, pair["wav_b"])[0] - sync(video, boxes, pair["wav_a"])[0])
        src_boxes = locate_faces(pair["video_a"])
        source_gaps.append(
            sync(pair["video_a"], src_boxes, pair["wav_b"])[0] - sync(pair["video_a"], src_boxes, pair["wav_a"])[0]
        )
    assert np.mean(gaps) > margin, gaps
    assert np.mean(source_gaps) < -margin, source_gaps


@pytest.mark.slow  # nano renders of 49 frames: ~10 s each on an idle 2-core machine
def test_dub_with_its_own_voice_stays_close_to_the_source(nano):
    identity, scene = person(13)
    pair = synth.render_dub_pair(identity, scene, frames=49, size=SIZE, seed=13, voice_seed=14)
    frames = pair["video_a"]
    start, box = dub.find_face(frames)
    mask = dub.face_mask(dub.track_face(frames, start, box), SIZE)
    video = dub_clip(nano, frames, pair["wav_a"], mask, synth.caption_for(identity, scene))
    full = media.to_uint8(nano(prompt=synth.caption_for(identity, scene), image=frames[0], audio=pair["wav_a"],
                               height=64, width=64, num_frames=49, num_inference_steps=20, seed=0).frames[0])  # fmt: skip

    def psnr(a, b):
        return 10 * np.log10(255**2 / np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))

    inside = mask > 0.5
    # far closer to the source than regenerating the clip from a still, in the frame and inside the mask too
    assert psnr(video, frames) > psnr(full, frames) + 6
    assert psnr(video[inside], frames[inside]) > psnr(full[inside], frames[inside])
    boxes = locate_faces(video)
    assert sync(video, boxes, pair["wav_a"])[0] > 0.3  # and the mouth still follows the voice


# ---------------------------------------------------------------------------------------------- studio
def test_public_caps_on_the_source_video_come_from_its_header(tmp_path, monkeypatch):
    from studio.context import StudioOptions
    from studio.jobs import check_dub_video

    monkeypatch.setattr(dub, "load_video", lambda *a, **k: pytest.fail("decoded before the caps"))
    clip, _, _ = write_clip(tmp_path, "cap", frames=25)
    # the refusal names the cap in force (a common frame size by its name, else a pixel count)
    with pytest.raises(InputError, match=r"cap\.mp4 is 64×64; this public studio takes videos up to 1,024 pixels"):
        check_dub_video(StudioOptions(public=True, max_pixels_public=32 * 32), str(clip))
    with pytest.raises(InputError, match=r"cap\.mp4 is 1\.0 s long; this public studio dubs videos up to 0 s"):
        check_dub_video(StudioOptions(public=True, max_audio_seconds_public=0.4), str(clip))
    with pytest.raises(InputError, match=r"cap\.mp4 is larger than 1kb"):
        check_dub_video(StudioOptions(public=True, max_upload_public="1kb"), str(clip))
    assert check_dub_video(StudioOptions(public=False, max_pixels_public=1), str(clip))["video"]["width"] == 64


def test_a_dubs_frames_and_caps_come_from_headers_before_any_decode(tmp_path, monkeypatch):
    """Issue 27: frames after ping-pong / trim from the two headers and arithmetic; a one-frame GIF and a mask with
    a face index are refused; the local studio caps the source's frame size too."""
    from studio.context import StudioOptions
    from studio.jobs import check_dub_video

    clip, voice_b, _ = write_clip(tmp_path, "hdr", frames=17)  # 0.68 s of video
    long_voice = write_wav(tmp_path / "long.wav", np.zeros(16000 * 3, np.float32))  # 3 s: 75 frames
    monkeypatch.setattr(dub, "load_video", lambda *a, **k: pytest.fail("decoded before the header checks"))
    assert dub.planned_frames(dub.DubRequest(video=str(clip), audio=str(long_voice))) == 73  # ping-pong: the voice's
    assert dub.planned_frames(dub.DubRequest(video=str(clip), audio=str(long_voice), extend="trim")) == 17
    gif = tmp_path / "one.gif"
    PIL.Image.new("RGB", (64, 64), (200, 10, 10)).save(gif)
    with pytest.raises(InputError, match=r"one\.gif has no duration in its header: it is a still image"):
        dub.planned_frames(dub.DubRequest(video=str(gif), audio=str(voice_b)))
    mask = tmp_path / "mask.png"
    PIL.Image.fromarray(np.full((64, 64), 255, np.uint8)).save(mask)
    with pytest.raises(InputError, match=r"A mask chooses the region itself") as err:
        dub.plan_dub(dub.DubRequest(video=str(clip), audio=str(voice_b), mask=str(mask), face=4))
    assert err.value.field == "face"
    with pytest.raises(InputError, match=r"hdr\.mp4 is 64×64; the studio takes videos up to 1,024 pixels per frame"):
        check_dub_video(StudioOptions(public=False, max_video_pixels=32 * 32), str(clip))


def test_dub_api_returns_the_video_and_its_gallery_row(tmp_path):
    from gradio_client import Client, handle_file

    from tests.studio_server import running_studio

    clip, voice_b, _ = write_clip(tmp_path, "api", frames=17, seed=8)
    with running_studio(tmp_path / "data") as (url, ctx):
        client = Client(url, verbose=False)
        video, gallery_id, status = client.predict(handle_file(str(clip)), handle_file(str(voice_b)),
                                                   "a person talking", -1, 0.5, 2, 9, api_name="/dub")[:3]  # fmt: skip
        assert "done" in status, status
        path = video["video"] if isinstance(video, dict) else video
        info = media.probe(path)
        assert info["video"]["frames"] == 17 and info["audio"] is not None
        row = ctx.store.get(int(gallery_id))
        assert row.status == "done" and row.seed == 9 and row.settings["kind"] == "dub"
        assert media.read_settings(path)["dub"]["video"] == "api.mp4"  # the uploaded name, not a stored hash
        # bad input is refused before a row exists
        before = ctx.store.list_generations(page=1, page_size=50)[1]
        status = client.predict(handle_file(str(clip)), handle_file(str(voice_b)), "x", 5, 0.5, 2, 1,
                                api_name="/dub")[2]  # fmt: skip
        assert "Face 5 does not exist" in status
        # a drawn mask replaces the detector's; one of the wrong size is refused by name, before any row
        from tests.media_files import write_image

        wrong = write_image(tmp_path / "my-mask.png", color=(255, 255, 255), size=(32, 48))
        status = client.predict(handle_file(str(clip)), handle_file(str(voice_b)), "x", -1, 0.5, 2, 1, False,
                                handle_file(wrong), api_name="/dub")[2]  # fmt: skip
        assert "my-mask.png is 32x48 pixels but the video frames are 64x64" in status, status
        assert ctx.store.list_generations(page=1, page_size=50)[1] == before


def test_a_public_dub_needs_consent_before_anything_else(tmp_path):
    from studio.context import StudioContext, StudioOptions
    from studio.tab_dub import make_dub_request

    ctx = StudioContext.create(StudioOptions(data_dir=tmp_path / "data", model="tiny", public=True))
    try:
        with pytest.raises(InputError, match="right to use this face and this voice") as err:
            make_dub_request(ctx, None, None, consent=False)
        assert err.value.field == "consent"
        with pytest.raises(InputError, match="Upload the video"):  # ticked: the next check speaks
            make_dub_request(ctx, None, None, consent=True)
    finally:
        ctx.store.close()


def test_a_dub_asks_zerogpu_for_a_slot_sized_from_its_voice(tmp_path):
    from studio.context import StudioContext, StudioOptions
    from studio.tab_dub import dub_gpu_seconds
    from tests.media_files import write_wav

    ctx = StudioContext.create(StudioOptions(data_dir=tmp_path / "data", model="humo-1.7b"))
    try:
        short, long = write_wav(tmp_path / "short.wav", 1.0), write_wav(tmp_path / "long.wav", 3.0)
        clip = write_clip(tmp_path, "gpu", frames=17, seed=3)[0]
        seconds = [dub_gpu_seconds(ctx, "tab", str(clip), v, "x", -1, 0.5, 10, 1) for v in (short, long)]
        assert seconds[0] < seconds[1], seconds  # three times the frames: a longer slot
        more_steps = dub_gpu_seconds(ctx, "tab", str(clip), short, "x", -1, 0.5, 20, 1)
        assert more_steps > seconds[0]
    finally:
        ctx.store.close()
