"""engine/media.py: mp4 writing (H.264 + AAC trimmed to the video, settings in the file, atomic), probing, frames,
thumbnails, image loading errors and the reference preprocessing of §4.2."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from engine import media
from engine.errors import InputError
from tests.media_files import write_wav


def colour_frames(num: int, h: int = 32, w: int = 48) -> np.ndarray:
    """Each frame a flat colour that changes with the frame index."""
    frames = np.zeros((num, h, w, 3), np.uint8)
    for i in range(num):
        frames[i] = (int(200 * i / max(num - 1, 1)) + 20, 100, 180)
    return frames


# ---------------------------------------------------------------------------------------------- writing
def test_mp4_with_audio_trimmed_to_video_and_settings(tmp_path):
    audio = write_wav(tmp_path / "voice.wav", 2.0)
    settings = {"prompt": "a = b; c # d \\ e\nnew line", "seed": 5, "neg": "色调艳丽，过曝", "nested": {"x": [1, 2.5]}}
    out = media.write_video(colour_frames(17), tmp_path / "out.mp4", fps=25, audio=audio, metadata=settings)
    assert out == tmp_path / "out.mp4" and out.is_file()
    info = media.probe(out)
    v, a = info["video"], info["audio"]
    assert (v["width"], v["height"], v["frames"], v["codec"], v["pix_fmt"], v["fps"]) == (
        48,
        32,
        17,
        "h264",
        "yuv420p",
        25.0,
    )
    assert a["codec"] == "aac" and a["sample_rate"] == 16000
    assert abs(a["duration"] - 17 / 25) < 0.05  # the 2 s voice is cut to the 0.68 s video
    assert abs(info["duration"] - 0.68) < 0.05
    assert media.read_settings(out) == settings


def test_audio_shorter_than_video_cuts_the_video(tmp_path):
    audio = write_wav(tmp_path / "short.wav", 0.4)
    out = media.write_video(colour_frames(25), tmp_path / "cut.mp4", audio=audio)
    info = media.probe(out)
    assert abs(info["audio"]["duration"] - 0.4) < 0.05
    assert info["video"]["frames"] == 10  # min(1.0 s, 0.4 s) at 25 fps, like the official moviepy muxing


def test_video_without_audio_and_faststart(tmp_path):
    out = media.write_video(colour_frames(9), tmp_path / "silent.mp4", fps=25)
    info = media.probe(out)
    assert info["audio"] is None and info["video"]["frames"] == 9
    data = out.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")  # +faststart: index first, plays while downloading
    assert media.read_settings(out) == {}


def test_frames_round_trip_and_odd_sizes_are_padded(tmp_path):
    frames = colour_frames(5, h=21, w=33)
    out = media.write_video(frames, tmp_path / "odd.mp4")
    back = media.read_video_frames(out)
    assert back.shape == (5, 22, 34, 3)  # padded to even sizes for yuv420p
    # flat colours survive H.264 closely
    assert np.abs(back[:, :21, :33].astype(int) - frames.astype(int)).max() <= 6
    assert media.read_video_frames(out, max_frames=2).shape[0] == 2


def test_frames_as_iterable(tmp_path):
    out = media.write_video((f for f in colour_frames(6)), tmp_path / "gen.mp4")
    assert media.probe(out)["video"]["frames"] == 6


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "result.mp4"
    target.write_bytes(b"previous video")

    def frames():
        yield from colour_frames(3)
        raise RuntimeError("generation crashed")

    with pytest.raises(RuntimeError, match="generation crashed"):
        media.write_video(frames(), target)
    assert target.read_bytes() == b"previous video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.mp4"]


def test_audio_errors_leave_nothing(tmp_path):
    video_only = media.write_video(colour_frames(3), tmp_path / "v.mp4")
    with pytest.raises(InputError) as err:
        media.write_video(colour_frames(3), tmp_path / "x.mp4", audio=video_only)
    assert err.value.field == "audio"
    with pytest.raises(InputError):
        media.write_video(colour_frames(3), tmp_path / "y.mp4", audio=tmp_path / "missing.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_bad_frames(tmp_path):
    with pytest.raises(InputError):
        media.write_video(np.zeros((0, 8, 8, 3), np.uint8), tmp_path / "a.mp4")
    with pytest.raises(InputError, match="uint8"):
        media.write_video(np.zeros((2, 8, 8, 3), np.float32), tmp_path / "b.mp4")
    with pytest.raises(InputError):
        media.write_video(np.zeros((2, 8, 8), np.uint8), tmp_path / "c.mp4")
    assert list(tmp_path.iterdir()) == []


def test_to_uint8_truncates_like_official():
    x = np.array([-0.2, 0.0, 0.5, 0.999, 1.0, 1.7], np.float32)
    assert media.to_uint8(x).tolist() == [0, 0, 127, 254, 255, 255]
    assert media.to_uint8(torch.tensor([0.5])).tolist() == [127]


def test_probe_audio_file_and_errors(tmp_path):
    info = media.probe(write_wav(tmp_path / "a.wav", 1.25, sr=22050))
    assert info["video"] is None
    assert info["audio"]["sample_rate"] == 22050 and info["audio"]["samples"] == 27562  # round(27562.5)
    assert info["audio"]["duration"] == pytest.approx(27562 / 22050)
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(InputError):
        media.probe(bad)
    with pytest.raises(InputError):
        media.read_settings(tmp_path / "none.mp4")


def test_thumbnails(tmp_path):
    frames = colour_frames(9)
    thumb = media.make_thumbnail(frames, tmp_path / "t.png", size=24)
    image = Image.open(thumb)
    assert image.size == (24, 16)
    np.testing.assert_allclose(np.asarray(image)[8, 12], frames[4, 0, 0], atol=1)  # middle frame
    video = media.write_video(frames, tmp_path / "v.mp4")
    thumb = media.make_thumbnail(video, tmp_path / "t.jpg", size=(30, 20))
    image = Image.open(thumb)
    assert image.size == (30, 20) and image.format == "JPEG"
    assert abs(int(np.asarray(image)[10, 15, 0]) - int(frames[4, 0, 0, 0])) <= 8
    assert not list(tmp_path.glob(".*part*"))


# ---------------------------------------------------------------------------------------------- images
def test_load_image_errors(tmp_path):
    with pytest.raises(InputError) as err:
        media.load_image(tmp_path / "missing.png")
    assert err.value.field == "image"
    text = tmp_path / "face.png"
    text.write_text("hello")
    with pytest.raises(InputError) as err:
        media.load_image(text)
    assert err.value.field == "image" and "not an image" in str(err.value)
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(InputError) as err:
        media.load_image(truncated)
    assert err.value.field == "image"


def test_huge_image_refused_before_decoding(tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("L", (10_000, 10_000), 128).save(huge)  # 100 megapixels, a small file
    with pytest.raises(InputError) as err:
        media.load_image(huge)
    assert err.value.field == "image"
    assert "100 megapixels" in str(err.value) and "below 50 megapixels" in str(err.value)
    with pytest.raises(InputError):
        media.load_image(Image.new("L", (8000, 8000)))


def test_load_image_modes(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert media.load_image(rgba).mode == "RGB"
    assert media.load_image(rgba).getpixel((0, 0)) == (10, 20, 30)  # official: alpha dropped
    assert media.load_image(rgba, background=(255, 255, 255)).getpixel((0, 0)) == (255, 255, 255)
    grey = tmp_path / "grey.png"
    Image.new("L", (4, 4), 77).save(grey)
    assert media.load_image(grey).getpixel((1, 1)) == (77, 77, 77)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(deep)
    assert media.load_image(deep).getpixel((0, 0)) == (255, 255, 255)
    assert media.load_image(np.zeros((3, 5, 3), np.uint8)).size == (5, 3)


def test_exif_orientation_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif)
    assert media.load_image(path).size == (20, 40)
    assert media.load_image(path, exif_transpose=False).size == (40, 20)


# ---------------------------------------------------------------------------------------------- reference preprocessing
def is_white(column_or_row: torch.Tensor) -> bool:
    return bool((column_or_row == 1.0).all())


def test_pad_wide_image_letterboxed_with_white():
    image = Image.new("RGB", (40, 24), (255, 0, 0))  # ratio 1.667 > 1: match width
    out = media.preprocess_reference(image, width=32, height=32, mode="pad")
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    # new size 32 x int(32 / 1.667) = 32 x 19; 13 rows of padding: 6 on top, 7 at the bottom
    for row in list(range(0, 6)) + list(range(25, 32)):
        assert is_white(out[:, row]), row
    for row in range(6, 25):
        assert not is_white(out[:, row]), row
    torch.testing.assert_close(out[:, 15, 16], torch.tensor([1.0, -1.0, -1.0]))


def test_pad_tall_image_pillarboxed_with_white():
    image = Image.new("RGB", (10, 30), (0, 0, 255))  # ratio 0.333 < 2: match height
    out = media.preprocess_reference(image, width=32, height=16, mode="pad")
    # new size int(16 * 0.333) = 5 x 16; 27 columns of padding: 13 left, 14 right
    for col in list(range(0, 13)) + list(range(18, 32)):
        assert is_white(out[:, :, col]), col
    for col in range(13, 18):
        assert not is_white(out[:, :, col]), col
    torch.testing.assert_close(out[:, 8, 15], torch.tensor([-1.0, -1.0, 1.0]))


def test_pad_exact_aspect_has_no_padding_and_maps_to_minus_one_one():
    array = np.zeros((16, 32, 3), np.uint8)
    array[:, 16:] = 255
    out = media.preprocess_reference(Image.fromarray(array), width=32, height=16)
    assert out.min() == -1.0 and out.max() == 1.0
    torch.testing.assert_close(out, torch.from_numpy(array).permute(2, 0, 1).float() / 127.5 - 1)


def test_crop_covers_and_centres():
    array = np.zeros((24, 40, 3), np.uint8)
    array[:, :, 1] = 200
    array[10:14, 18:22] = (255, 0, 0)  # a red marker in the centre
    out = media.preprocess_reference(Image.fromarray(array), width=32, height=32, mode="crop")
    assert out.shape == (3, 32, 32)
    assert not is_white(out[:, 0]) and not is_white(out[:, :, 0])  # no padding
    red = (out[0] > 0.5) & (out[1] < -0.5)
    rows, cols = torch.nonzero(red, as_tuple=True)
    assert abs(rows.float().mean().item() - 15.5) < 1.0 and abs(cols.float().mean().item() - 15.5) < 1.0
    with pytest.raises(InputError):
        media.preprocess_reference(Image.fromarray(array), 32, 32, mode="stretch")


def test_ffmetadata_parser_escapes():
    text = ";FFMETADATA1\ncomment=a\\=b\\;c\\#d\\\\e\\\nf\ntitle=x\n[STREAM]\ncomment=stream\n"
    assert media._parse_ffmetadata(text) == {"comment": "a=b;c#d\\e\nf", "title": "x"}


def test_shipped_ffmpeg_has_the_codecs_we_use():
    proc = subprocess.run([media.ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True)
    assert "libx264" in proc.stdout and " aac " in proc.stdout
