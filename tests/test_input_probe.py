"""Bad or oversized inputs are refused from their headers, before any decode (engine.audio.probe_audio / load_audio
limits, engine.media.probe_image / load_image), with messages that name the user's file name."""

from __future__ import annotations

import struct
import subprocess
import time
import warnings
import zlib

import numpy as np
import PIL.Image
import pytest

from engine import audio, media
from engine.errors import InputError

STORED = "inputs/ab/ab12cd34"  # how the studio stores uploads: a hash name that must never reach a message


def rss_mb() -> float:
    """Resident memory of this process now (VmRSS), in MB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def wav_header(data_bytes: int, sr: int = 16000, channels: int = 1, bits: int = 16, fmt: int = 1) -> bytes:
    """A 44-byte RIFF/WAVE header (fmt 1 = integer PCM, 3 = IEEE float) for `data_bytes` of samples."""
    align = channels * bits // 8
    fmt_chunk = struct.pack("<IHHIIHH", 16, fmt, channels, sr, sr * align, align, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + fmt_chunk
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def write_float_wav(path, samples: np.ndarray, sr: int = 16000) -> str:
    data = np.asarray(samples, "<f4").tobytes()
    path.write_bytes(wav_header(len(data), sr, bits=32, fmt=3) + data)
    return str(path)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose IHDR declares width x height RGB (the pixel data is a tiny stub)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + png_chunk(b"IEND", b"")
    )


def stored(tmp_path, suffix: str):
    path = tmp_path / f"{STORED}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


# ---------------------------------------------------------------------------------------------- audio
@pytest.fixture()
def two_hour_wav(tmp_path) -> str:
    """2 h of 16 kHz mono int16 silence: a real header and 230 MB of (sparse) zeros, made instantly."""
    path = stored(tmp_path, ".wav")
    size = 2 * 3600 * 16000 * 2
    with open(path, "wb") as f:
        f.write(wav_header(size))
        f.truncate(44 + size)
    return str(path)


def test_two_hour_wav_probed_and_refused_without_decoding(two_hour_wav):
    rss0, t0 = rss_mb(), time.perf_counter()
    info = audio.probe_audio(two_hour_wav)
    assert info == audio.AudioInfo(duration_s=7200.0, sample_rate=16000, channels=1, codec="pcm_s16le")
    with pytest.raises(InputError) as err:
        audio.load_audio(two_hour_wav, max_seconds=97.0, display_name="interview.wav")
    elapsed, grown = time.perf_counter() - t0, rss_mb() - rss0
    message = str(err.value)
    assert err.value.field == "audio"
    assert "interview.wav is 2:00:00 long" in message and "the limit is 1:37 min" in message and "Trim it" in message
    assert "ab12cd34" not in message
    # a full decode of this file takes ~10 s and +440 MB here; the header read takes ~0.05 s and nothing
    assert grown < 50, f"RSS grew {grown:.0f} MB"
    assert elapsed < 2.0, f"took {elapsed:.2f} s"


def test_too_long_advice_replaces_the_default(two_hour_wav):
    with pytest.raises(InputError) as err:
        audio.load_audio(two_hour_wav, max_seconds=30, too_long_advice="Trim it, or turn on Long video.")
    assert str(err.value).endswith("the limit is 30.0 s. Trim it, or turn on Long video.")


def test_no_header_duration_is_refused_by_the_capped_decode(tmp_path):
    """A piped webm has no duration in its header: the decode is capped at max_seconds + 1 s and then refused."""
    path = stored(tmp_path, ".webm")
    with open(path, "wb") as out:
        cmd = [media.ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=4", "-c:a", "libopus"]
        subprocess.run([*cmd, "-f", "webm", "pipe:1"], stdout=out, check=True)
    assert audio.probe_audio(path).duration_s is None
    with pytest.raises(InputError) as err:
        audio.load_audio(path, max_seconds=1.0, display_name="take2.webm")
    assert "take2.webm is at least 2.0 s long" in str(err.value) and "the limit is 1.0 s" in str(err.value)
    assert len(audio.load_audio(path, max_seconds=10)) == pytest.approx(4 * 16000, abs=800)


def test_huge_float_samples_refused(tmp_path):
    path = write_float_wav(stored(tmp_path, ".wav"), np.full(16000, 1e30, np.float32))
    with pytest.raises(InputError) as err:
        audio.load_audio(path, display_name="voice.wav")
    message = str(err.value)
    assert err.value.field == "audio"
    assert "voice.wav has samples out of range (peak 1e+30; expected within ±1)" in message
    assert "export the file again as normal PCM" in message


def test_nan_samples_refused(tmp_path):
    samples = np.zeros(16000, np.float32)
    samples[100] = np.nan
    path = write_float_wav(stored(tmp_path, ".wav"), samples)
    with pytest.raises(InputError, match="voice.wav contains invalid samples") as err:
        audio.load_audio(path, display_name="voice.wav")
    assert err.value.field == "audio"


def test_loud_but_valid_float_wav_loads(tmp_path):
    t = np.arange(16000) / 16000
    path = write_float_wav(stored(tmp_path, ".wav"), 1.5 * np.sin(2 * np.pi * 440 * t))  # clipped-hot, not broken
    assert np.abs(audio.load_audio(path)).max() == pytest.approx(1.5, abs=0.01)


@pytest.mark.parametrize(
    "make,phrase",
    [
        (lambda p: p.write_text("these are my notes, not a recording"), "Could not read voice.wav as audio"),
        (lambda p: PIL.Image.new("RGB", (8, 8)).save(p, format="PNG"), "voice.wav is an image, not audio"),
        (lambda p: p.write_bytes(b""), "The audio file voice.wav is empty (0 bytes)"),
    ],
    ids=["text", "image", "empty"],
)
def test_not_audio_named_by_display_name(tmp_path, make, phrase):
    path = stored(tmp_path, ".wav")
    make(path)
    for call in (audio.probe_audio, audio.load_audio):
        with pytest.raises(InputError) as err:
            call(path, display_name="voice.wav")
        assert err.value.field == "audio" and phrase in str(err.value)
        assert "ab12cd34" not in str(err.value) and str(tmp_path) not in str(err.value)


def test_video_without_sound_and_missing_file(tmp_path):
    path = stored(tmp_path, ".mp4")
    ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=32x32:r=25:d=0.2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    with pytest.raises(InputError) as err:
        audio.probe_audio(path, display_name="clip.mp4")
    assert err.value.field == "audio" and "clip.mp4 has no audio track" in str(err.value)
    with pytest.raises(InputError) as err:
        audio.probe_audio(tmp_path / "gone.wav", display_name="gone.wav")
    assert err.value.field == "audio" and "not found: gone.wav" in str(err.value)


def test_valid_wav_probes_and_loads(tmp_path):
    t = np.arange(22050) / 22050
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1)
    path = stored(tmp_path, ".wav")
    path.write_bytes(wav_header(stereo.size * 2, sr=22050, channels=2) + (stereo * 32767).astype("<i2").tobytes())
    assert audio.probe_audio(path) == audio.AudioInfo(1.0, 22050, 2, "pcm_s16le")
    x = audio.load_audio(path, max_seconds=1.0, display_name="voice.wav")
    assert x.dtype == np.float32 and len(x) == 16000


# ---------------------------------------------------------------------------------------------- images
def test_144_megapixel_png_refused_from_header(tmp_path):
    path = stored(tmp_path, ".png")
    path.write_bytes(png_declaring(12000, 12000))
    assert path.stat().st_size < 200
    rss0 = rss_mb()
    for call in (media.probe_image, media.load_image):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not escape either
            with pytest.raises(InputError) as err:
                call(path, display_name="portrait.png")
        message = str(err.value)
        assert err.value.field == "image"
        assert "portrait.png is 12000x12000 = 144 megapixels" in message and "resize it below 50 megapixels" in message
    grown = rss_mb() - rss0
    assert grown < 50, f"RSS grew {grown:.0f} MB"  # decoding it would take 432 MB


def test_past_pil_hard_limit_refused(tmp_path):
    path = stored(tmp_path, ".png")
    path.write_bytes(png_declaring(20000, 20000))
    with pytest.raises(InputError) as err:
        media.probe_image(path, display_name="poster.png")
    assert "poster.png is far too large" in str(err.value) and "400 megapixels" in str(err.value)


@pytest.mark.parametrize(
    "suffix,make",
    [
        (".png", lambda p: p.write_text("just some text")),
        (".png", lambda p: p.write_bytes(wav_header(3200) + bytes(3200))),
        (".png", lambda p: p.write_bytes(png_declaring(0, 10))),
        (".jpg", lambda p: p.write_bytes(b"")),
    ],
    ids=["text", "audio", "zero-sized", "empty"],
)
def test_not_an_image_named_by_display_name(tmp_path, suffix, make):
    path = stored(tmp_path, suffix)
    make(path)
    for call in (media.probe_image, media.load_image):
        with pytest.raises(InputError) as err:
            call(path, display_name="me" + suffix)
        message = str(err.value)
        assert err.value.field == "image" and message.startswith("me" + suffix)
        assert "not an image" in message or "empty (0 bytes)" in message
        assert "ab12cd34" not in message and str(tmp_path) not in message


def test_video_renamed_png_is_not_an_image(tmp_path):
    video = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=32x32:r=25:d=0.2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video))
    path = stored(tmp_path, ".png")
    path.write_bytes(video.read_bytes())
    with pytest.raises(InputError, match="me.png is not an image"):
        media.load_image(path, display_name="me.png")


@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("PNG", ".png")])
def test_truncated_image_gives_a_clear_message(tmp_path, fmt, suffix):
    pixels = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    whole = tmp_path / f"whole{suffix}"
    PIL.Image.fromarray(pixels).save(whole, format=fmt)
    path = stored(tmp_path, suffix)
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    for call in (media.probe_image, media.load_image):
        with pytest.raises(InputError) as err:
            call(path, display_name="me" + suffix)
        message = str(err.value)
        assert err.value.field == "image" and f"me{suffix} is damaged or incomplete" in message
        assert "Re-export or re-download it" in message and "ab12cd34" not in message


def test_valid_images_load(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    png, jpg = stored(tmp_path, ".png"), tmp_path / "photo.jpg"
    PIL.Image.fromarray(pixels).save(png)
    PIL.Image.fromarray(pixels).convert("CMYK").save(jpg)
    assert media.probe_image(png) == (40, 30, "PNG")
    assert np.array_equal(np.asarray(media.load_image(png, display_name="me.png")), pixels)
    assert media.probe_image(jpg) == (40, 30, "JPEG")
    cmyk = media.load_image(jpg)
    assert cmyk.mode == "RGB" and cmyk.size == (40, 30)


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [PIL.Image.new("RGB", (6, 4), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "wave.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert media.probe_image(path) == (6, 4, "GIF")
    assert media.load_image(path).getpixel((0, 0)) == (255, 0, 0)
