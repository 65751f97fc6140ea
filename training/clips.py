"""ffmpeg helpers for the data pipeline: probe, cut to 4n+1-frame clips at 25 fps, extract 16 kHz mono audio.

Everything goes through the ffmpeg binary shipped in `imageio-ffmpeg` (no system ffmpeg, no torchaudio).
These are private to `training/` on purpose: the engine's media module may replace the generic readers
later, but the clip cutting (seek + resample + crop + exact frame count) is a training concern.
"""

from __future__ import annotations

import os
import re
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import InputError

SAMPLING_RATE = 16000
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


class MediaError(RuntimeError):
    """ffmpeg could not read or write a file (corrupt input, unsupported codec)."""


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _run(args: list[str], *, input: bytes | None = None) -> bytes:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", *args], input=input, capture_output=True)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise MediaError("ffmpeg failed: " + " | ".join(tail))
    return proc.stdout


def check_even_size(size: tuple[int, int] | None) -> None:
    """Clip sizes must be multiples of 16 (VAE stride 8 x patch 2); raises InputError otherwise."""
    if size is None:
        return
    height, width = size
    if height <= 0 or width <= 0 or height % 16 or width % 16:
        raise InputError(f"size must be (height, width) with both multiples of 16, got {size}", field="size")


@dataclass(frozen=True)
class MediaInfo:
    """What `ffmpeg -i` says about a file (header only, nothing decoded)."""

    duration: float
    width: int
    height: int
    fps: float
    has_video: bool
    has_audio: bool

    def frames_at(self, fps: float) -> int:
        """Number of whole frames the file gives after resampling to `fps`."""
        return int(np.floor(self.duration * fps + 1e-6))


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\S+.*?: Video: .*?[ ,](\d{2,5})x(\d{2,5})[ ,\[]")
_FPS = re.compile(r"(\d+(?:\.\d+)?) fps")
_ROTATE = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees|rotate\s*:\s*(-?\d+)")


def probe(path: str | Path) -> MediaInfo:
    """Read the container header with `ffmpeg -i`; raises MediaError for unreadable files."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True)
    text = proc.stderr.decode(errors="replace")
    if "Invalid data found" in text or "No such file" in text or "Input #0" not in text:
        raise MediaError(f"cannot read {Path(path).name}: " + (text.strip().splitlines() or ["?"])[-1])
    match = _DURATION.search(text)
    duration = 0.0
    if match:
        h, m, s = match.groups()
        duration = int(h) * 3600 + int(m) * 60 + float(s)
    width = height = 0
    fps = 0.0
    video = _VIDEO.search(text)
    if video:
        width, height = int(video.group(1)), int(video.group(2))
        line = text[video.start() : text.find("\n", video.start())]
        fps_match = _FPS.search(line)
        fps = float(fps_match.group(1)) if fps_match else 0.0
        rotation = _ROTATE.search(text)
        if rotation and abs(round(float(rotation.group(1) or rotation.group(2)))) % 180 == 90:
            width, height = height, width  # ffmpeg auto-rotates on decode
    has_audio = re.search(r"Stream #\S+.*?: Audio: ", text) is not None
    return MediaInfo(duration, width, height, fps, video is not None, has_audio)


def _resize_filter(size: tuple[int, int] | None) -> str:
    """Scale to cover `size` then centre-crop; with no size, crop to multiples of 16."""
    if size is None:
        return "crop=trunc(iw/16)*16:trunc(ih/16)*16,setsar=1"
    height, width = size
    return f"scale={width}:{height}:force_original_aspect_ratio=increase,crop={width}:{height},setsar=1"


def cover_crop_transform(src_size: tuple[int, int], size: tuple[int, int] | None) -> tuple[float, float, float]:
    """(scale, offset_x, offset_y) mapping source pixel coords to clip coords for `_resize_filter`.

    Used to carry ground-truth face boxes (in source pixels) into the cut clip.
    """
    src_h, src_w = src_size
    if size is None:
        return 1.0, -((src_w - (src_w // 16) * 16) // 2), -((src_h - (src_h // 16) * 16) // 2)
    height, width = size
    scale = max(width / src_w, height / src_h)
    return scale, -(src_w * scale - width) / 2, -(src_h * scale - height) / 2


def cut_clip(
    src: str | Path,
    video_out: str | Path,
    audio_out: str | Path | None,
    *,
    start: float,
    frames: int,
    fps: int = 25,
    size: tuple[int, int] | None = None,
    sampling_rate: int = SAMPLING_RATE,
    audio_src: str | Path | None = None,
) -> None:
    """Cut `frames` frames from `start` seconds, resampled to `fps`, resized; H.264 + AAC mp4 and a mono wav.

    One ffmpeg call writes both outputs so the audio and video windows are cut from the same seek point.
    `audio_src`: take the audio from this file (same time window) instead of the video's own track.
    """
    duration = frames / fps
    args = ["-v", "error", "-y", "-ss", f"{start:.6f}", "-i", str(src)]
    audio_map = "0:a:0"
    if audio_src is not None:
        args += ["-ss", f"{start:.6f}", "-i", str(audio_src)]
        audio_map = "1:a:0"
    args += [
        "-map",
        "0:v:0",
        "-map",
        audio_map + "?",
        "-vf",
        f"fps={fps},{_resize_filter(size)}",
        "-frames:v",
        str(frames),
    ]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"]
    args += ["-c:a", "aac", "-b:a", "128k", "-t", f"{duration:.6f}", "-movflags", "+faststart", str(video_out)]
    if audio_out is not None:
        args += ["-map", audio_map, "-vn", "-ac", "1", "-ar", str(sampling_rate), "-c:a", "pcm_s16le"]
        args += ["-t", f"{duration:.6f}", str(audio_out)]
    _run(args)


def read_frames(path: str | Path, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode every frame as RGB uint8 [T, H, W, 3]; `size` (H, W) skips the probe when known."""
    if size is None:
        info = probe(path)
        if not info.has_video:
            raise MediaError(f"{Path(path).name} has no video stream")
        size = (info.height, info.width)
    height, width = size
    raw = _run(["-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
    count = len(raw) // (height * width * 3)
    return np.frombuffer(raw[: count * height * width * 3], np.uint8).reshape(count, height, width, 3)


def read_frame_at(src: str | Path, time: float, *, fps: int = 25, size: tuple[int, int]) -> np.ndarray | None:
    """One frame at `time` seconds of the source, resized like `cut_clip` (size = the clip's (H, W))."""
    height, width = size
    args = ["-v", "error", "-ss", f"{max(time, 0.0):.6f}", "-i", str(src), "-vf", f"fps={fps},{_resize_filter(size)}"]
    raw = _run([*args, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
    if len(raw) < height * width * 3:
        return None
    return np.frombuffer(raw[: height * width * 3], np.uint8).reshape(height, width, 3).copy()


def load_audio(path: str | Path, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Any audio/video file → float32 mono waveform at `sampling_rate` (ffmpeg resamples)."""
    raw = _run(["-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(sampling_rate), "-f", "f32le", "-"])
    return np.frombuffer(raw, np.float32).copy()


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """16-bit PCM wav → (float32 mono waveform in [-1, 1], sampling rate), no ffmpeg needed."""
    with wave.open(str(path), "rb") as f:
        rate, channels, width = f.getframerate(), f.getnchannels(), f.getsampwidth()
        data = f.readframes(f.getnframes())
    if width != 2:
        return load_audio(path), SAMPLING_RATE
    wav = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    if channels > 1:
        wav = wav.reshape(-1, channels).mean(axis=1)
    return wav, rate


def write_wav(path: str | Path, waveform: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> None:
    """float waveform in [-1, 1] → 16-bit mono wav, written atomically."""
    pcm = (np.clip(waveform, -1.0, 1.0) * 32767.0).astype("<i2")
    tmp = Path(str(path) + ".tmp")
    with wave.open(str(tmp), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sampling_rate)
        f.writeframes(pcm.tobytes())
    os.replace(tmp, path)


def write_video(
    frames: np.ndarray, path: str | Path, *, fps: int = 25, audio: str | Path | None = None, crf: int = 18
) -> None:
    """RGB uint8 [T, H, W, 3] (+ optional audio file) → H.264/AAC mp4, written atomically."""
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    _, height, width, _ = frames.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    args = ["-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps)]
    args += ["-i", "-"]
    if audio is not None:
        args += ["-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p"]
    args += ["-movflags", "+faststart", str(tmp)]
    _run(args, input=frames.tobytes())
    os.replace(tmp, path)
