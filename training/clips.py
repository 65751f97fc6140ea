"""What is training-specific about media: probe a source for cutting, cut 4n+1-frame clips at 25 fps with a cover
crop, take the clip's audio window from the engine's decode.

Everything else (probing, decoding frames and audio, writing mp4 and wav) is `engine.media` / `engine.audio`, so a
file gives the trainer exactly the frames and the 16 kHz waveform it gives the sampler (tests/test_media_parity.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import media
from engine.audio import SAMPLING_RATE
from engine.errors import InputError

__all__ = [
    "VideoInfo",
    "audio_window",
    "check_even_size",
    "cover_crop_transform",
    "cut_clip",
    "probe_source",
    "read_frame_at",
]


def check_even_size(size: tuple[int, int] | None) -> None:
    """Clip sizes must be multiples of 16 (VAE stride 8 x patch 2); raises InputError otherwise."""
    if size is None:
        return
    height, width = size
    if height <= 0 or width <= 0 or height % 16 or width % 16:
        raise InputError(f"size must be (height, width) with both multiples of 16, got {size}", field="size")


@dataclass(frozen=True)
class VideoInfo:
    """A source video as decoding shows it: the header's duration and streams, width/height after rotation."""

    duration: float
    width: int
    height: int
    fps: float
    has_video: bool
    has_audio: bool

    def frames_at(self, fps: float) -> int:
        """Number of whole frames the file gives after resampling to `fps`."""
        return int(np.floor(self.duration * fps + 1e-6))


def probe_source(path: str | Path) -> VideoInfo:
    """`engine.media.probe_header` (header only); InputError for files ffmpeg cannot read."""
    header = media.probe_header(path, field="video")
    video = header["video"] or {}
    width, height = video.get("width", 0), video.get("height", 0)
    if video and media.video_rotation(path) in (90, 270):
        width, height = height, width  # ffmpeg auto-rotates on decode
    return VideoInfo(
        duration=header["duration"] or 0.0,
        width=width,
        height=height,
        fps=video.get("fps") or 0.0,
        has_video=bool(video),
        has_audio=header["audio"] is not None,
    )


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
    *,
    start: float,
    frames: int,
    fps: int = 25,
    size: tuple[int, int] | None = None,
    audio_src: str | Path | None = None,
) -> None:
    """Cut `frames` frames from `start` seconds, resampled to `fps`, resized: an H.264 mp4 with the window's sound
    (AAC, for watching; the trainer's audio is `audio_window`'s). `audio_src`: the sound of this file instead of the
    video's own track. RuntimeError when ffmpeg fails."""
    args = ["-v", "error", "-y", "-ss", f"{start:.6f}", "-i", str(src)]
    audio_map = "0:a:0?"
    if audio_src is not None:
        args += ["-ss", f"{start:.6f}", "-i", str(audio_src)]
        audio_map = "1:a:0?"
    args += ["-map", "0:v:0", "-map", audio_map, "-vf", f"fps={fps},{_resize_filter(size)}", "-frames:v", str(frames)]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"]
    args += ["-c:a", "aac", "-b:a", "128k", "-t", f"{frames / fps:.6f}", "-movflags", "+faststart", str(video_out)]
    media.run_ffmpeg(args)


def audio_window(waveform: np.ndarray, *, start_frame: int, frames: int, fps: int = 25) -> np.ndarray:
    """The clip's samples of a source waveform decoded by `engine.audio.load_audio` (16 kHz mono): `frames / fps`
    seconds from frame `start_frame`, zero-padded at the end when the source is shorter."""
    first = start_frame * SAMPLING_RATE // fps
    count = frames * SAMPLING_RATE // fps
    window = waveform[first : first + count]
    return np.pad(window, (0, count - len(window))).astype(np.float32)


def read_frame_at(src: str | Path, time: float, *, fps: int = 25, size: tuple[int, int]) -> np.ndarray | None:
    """One frame at `time` seconds of the source, resized like `cut_clip` (size = the clip's (H, W))."""
    height, width = size
    args = ["-v", "error", "-ss", f"{max(time, 0.0):.6f}", "-i", str(src), "-vf", f"fps={fps},{_resize_filter(size)}"]
    raw = media.run_ffmpeg([*args, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
    if len(raw) < height * width * 3:
        return None
    return np.frombuffer(raw[: height * width * 3], np.uint8).reshape(height, width, 3).copy()
