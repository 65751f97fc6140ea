"""Media I/O through the ffmpeg binary shipped with imageio-ffmpeg: mp4 writing with the generation settings in the
file, probing, frame reading, thumbnails; reference-image loading and preprocessing (reference/humo-official.md
§4.2, §4.10).

- `write_video`: H.264 (libx264, yuv420p, +faststart) at 25 fps with AAC audio taken from the ORIGINAL audio file;
  the output lasts min(video, audio) like the official moviepy muxing; settings JSON in the mp4 `comment` tag;
  written to a temporary file in the same folder and renamed, so a failure never leaves a partial file.
- `preprocess_reference`: the official fit-inside + white padding ("pad") or a cover + centre crop ("crop").
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch

from engine.errors import InputError

DEFAULT_FPS = 25
MAX_IMAGE_PIXELS = 50_000_000  # refuse larger images before decoding them (a 50 MP RGB image is 150 MB)
SETTINGS_TAG = "comment"


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped with imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", *args], capture_output=True)
    if check and proc.returncode != 0:
        raise RuntimeError(_last_error(proc.stderr) or f"ffmpeg exit code {proc.returncode}")
    return proc


def _last_error(stderr: bytes) -> str:
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _require_file(path: str | os.PathLike, field: str, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}. Choose an existing file.", field=field)
    return path


# ---------------------------------------------------------------------------------------------- frames
def to_uint8(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Float frames in [0, 1] -> uint8, truncating like the official saver (`mul(255).to(uint8)`)."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().float().numpy()
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 4:2:0 needs even width and height: repeat the last row / column when odd."""
    h, w = frame.shape[:2]
    if h % 2:
        frame = np.concatenate([frame, frame[-1:]], axis=0)
    if w % 2:
        frame = np.concatenate([frame, frame[:, -1:]], axis=1)
    return frame


def _check_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise InputError(f"Video frames must be uint8 (got {frame.dtype}); convert with media.to_uint8.", "frames")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise InputError(f"Each video frame must be [H, W, 3] RGB (got shape {frame.shape}).", "frames")
    if size is not None and frame.shape[:2] != size:
        raise InputError(f"All frames must have the same size {size} (got {frame.shape[:2]}).", "frames")
    return frame


# ---------------------------------------------------------------------------------------------- writing
def write_video(
    frames: np.ndarray | Iterable[np.ndarray],
    path: str | os.PathLike,
    fps: float = DEFAULT_FPS,
    audio: str | os.PathLike | None = None,
    metadata: dict | None = None,
    crf: int = 18,
    preset: str = "medium",
) -> Path:
    """Write uint8 RGB frames ([F, H, W, 3] or an iterable of [H, W, 3]) to an H.264 mp4, atomically.

    audio: the original audio file (any container); it is encoded to AAC and the output lasts min(video, audio).
    metadata: JSON-able settings stored in the mp4 `comment` tag (read back with `read_settings`).
    Odd widths/heights are padded by one repeated row/column (H.264 yuv420p needs even sizes).
    """
    path = Path(path)
    if not fps or not math.isfinite(float(fps)) or float(fps) <= 0:
        raise InputError(f"fps must be a positive number (got {fps!r}).", field="fps")
    iterator = iter(frames)
    try:
        first = _check_frame(next(iterator), None)
    except StopIteration:
        raise InputError("There are no frames to write.", field="frames") from None
    size = first.shape[:2]
    count = len(frames) if isinstance(frames, (np.ndarray, list, tuple)) else None

    duration = None
    if audio is not None:
        audio = _require_file(audio, "audio", "Audio file")
        audio_info = probe(audio)["audio"]
        if audio_info is None:
            raise InputError(f"{audio.name} has no audio track to put in the video.", field="audio")
        if count is not None:  # the official output lasts min(video, audio)
            duration = min(count / float(fps), audio_info["duration"] or math.inf)
    comment = json.dumps(metadata, ensure_ascii=True, separators=(",", ":"), default=str) if metadata else None

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.part.mp4")
    h, w = _even(first).shape[:2]
    args = [ffmpeg_exe(), "-hide_banner", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}"]
    args += ["-framerate", f"{fps}", "-i", "pipe:0"]
    if audio is not None:
        args += ["-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "192k", "-shortest"]
    args += ["-c:v", "libx264", "-preset", preset, "-crf", str(int(crf)), "-pix_fmt", "yuv420p"]
    if duration is not None:
        args += ["-t", f"{duration:.6f}"]
    if comment:
        args += ["-metadata", f"{SETTINGS_TAG}={comment}"]
    args += ["-movflags", "+faststart", "-f", "mp4", str(tmp)]

    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        try:
            try:
                proc.stdin.write(_even(first).tobytes())
                for frame in iterator:
                    proc.stdin.write(_even(_check_frame(frame, size)).tobytes())
            except BrokenPipeError:
                pass  # ffmpeg stopped early; its exit code and log say why
            finally:
                proc.stdin.close()
            code = proc.wait()
            if code != 0:
                log.seek(0)
                detail = _last_error(log.read())
                if audio is not None and "1:a:0" in detail:
                    raise InputError(f"{audio.name} has no audio track to put in the video.", field="audio")
                raise RuntimeError(f"ffmpeg could not write {path.name}: {detail}")
            os.replace(tmp, path)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            tmp.unlink(missing_ok=True)
            raise
    return path


# ---------------------------------------------------------------------------------------------- reading
def _parse_ffmetadata(text: str) -> dict[str, str]:
    """Global key=value pairs of ffmpeg's ffmetadata text. A backslash escapes the next character ('=', ';', '#',
    '\\' or a newline); comment lines start with ';' or '#'; stream/chapter sections ('[...]') are skipped."""
    lines, line, escaped = [], [], False
    for ch in text:
        if escaped:
            line.append((ch, True))
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "\n":
            lines.append(line)
            line = []
        else:
            line.append((ch, False))
    lines.append(line)
    values: dict[str, str] = {}
    for line in lines:
        if not line or (not line[0][1] and line[0][0] in ";#"):
            continue
        if not line[0][1] and line[0][0] == "[":
            break
        split = next((i for i, (c, e) in enumerate(line) if c == "=" and not e), None)
        if split is not None:
            values["".join(c for c, _ in line[:split])] = "".join(c for c, _ in line[split + 1 :])
    return values


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Container-level metadata tags of a media file."""
    path = _require_file(path, "video", "Video file")
    proc = _run(["-v", "error", "-i", str(path), "-f", "ffmetadata", "pipe:1"], check=False)
    if proc.returncode != 0:
        raise InputError(f"Could not read {path.name} ({_last_error(proc.stderr)}).", field="video")
    return _parse_ffmetadata(proc.stdout.decode("utf-8", "replace"))


def read_settings(path: str | os.PathLike) -> dict:
    """The generation settings stored by `write_video(metadata=...)`; {} when the file has none."""
    comment = read_metadata(path).get(SETTINGS_TAG)
    if not comment:
        return {}
    try:
        settings = json.loads(comment)
    except json.JSONDecodeError:
        return {}
    return settings if isinstance(settings, dict) else {}


def _split_fields(text: str) -> list[str]:
    """Split a stream description at top-level commas (commas inside parentheses belong to the field)."""
    fields, depth, current = [], 0, []
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            fields.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    fields.append("".join(current).strip())
    return fields


def _parse_stream(kind: str, desc: str) -> dict[str, Any]:
    fields = _split_fields(desc)
    info: dict[str, Any] = {"codec": fields[0].split()[0] if fields and fields[0] else None}
    if kind == "video":
        for i, f in enumerate(fields):
            m = re.match(r"^(\d+)x(\d+)\b", f)
            if m:
                info["width"], info["height"] = int(m.group(1)), int(m.group(2))
                info["pix_fmt"] = re.split(r"[\s(]", fields[i - 1])[0] if i > 0 else None
                break
        m = re.search(r"([\d.]+)(k?) fps", desc)
        info["fps"] = float(m.group(1)) * (1000 if m.group(2) else 1) if m else None
    else:
        m = re.search(r"(\d+) Hz", desc)
        info["sample_rate"] = int(m.group(1)) if m else None
        for i, f in enumerate(fields):
            if f.endswith(" Hz") and i + 1 < len(fields):
                info["channel_layout"] = fields[i + 1]
    return info


def probe(path: str | os.PathLike) -> dict[str, Any]:
    """Duration and first video / audio stream of a media file, by decoding it once with ffmpeg.

    Returns {"duration", "video": {width, height, fps, frames, codec, pix_fmt, duration} | None,
    "audio": {codec, sample_rate, channel_layout, samples, duration} | None}. Frame and sample counts are the
    decoded ones (exact), not header estimates.
    """
    path = _require_file(path, "video", "Media file")
    proc = _run(["-v", "verbose", "-i", str(path), "-map", "0:v:0?", "-map", "0:a:0?", "-f", "null", "-"], check=False)
    log = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0 or "Input #0" not in log:
        raise InputError(f"Could not read {path.name} as audio or video ({_last_error(proc.stderr)}).", field="video")
    header = log.split("Input #0", 1)[1]
    header = re.split(r"\n(?:Stream mapping:|Output #0|\[out#0)", header, maxsplit=1)[0]
    result: dict[str, Any] = {"duration": None, "video": None, "audio": None}
    m = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", header)
    if m:
        result["duration"] = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    for index, kind, desc in re.findall(r"Stream #0:(\d+)[^:]*: (Video|Audio): (.*)", header):
        key = kind.lower()
        if result[key] is None:
            result[key] = {"index": int(index), **_parse_stream(key, desc)}
    stats = dict(re.findall(r"Input stream #0:(\d+) \((?:video|audio)\): (.*)", log))
    video, audio = result["video"], result["audio"]
    if video is not None:
        m = re.search(r"(\d+) frames decoded", stats.get(str(video["index"]), ""))
        video["frames"] = int(m.group(1)) if m else None
        fps = video.get("fps")
        video["duration"] = video["frames"] / fps if video["frames"] is not None and fps else None
    if audio is not None:
        m = re.search(r"\((\d+) samples\)", stats.get(str(audio["index"]), ""))
        audio["samples"] = int(m.group(1)) if m else None
        rate = audio.get("sample_rate")
        audio["duration"] = audio["samples"] / rate if audio["samples"] is not None and rate else None
    if result["duration"] is None:
        result["duration"] = max([s["duration"] for s in (video, audio) if s and s.get("duration")] or [0.0])
    return result


def read_video_frames(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """All (or the first `max_frames`) frames of a video as uint8 RGB [F, H, W, 3]."""
    info = probe(path)
    if info["video"] is None:
        raise InputError(f"{Path(path).name} has no video track.", field="video")
    w, h = info["video"]["width"], info["video"]["height"]
    args = ["-v", "error", "-i", str(path), "-map", "0:v:0"]
    if max_frames is not None:
        args += ["-frames:v", str(int(max_frames))]
    proc = _run([*args, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
    data = np.frombuffer(proc.stdout, dtype=np.uint8)
    return data[: data.size - data.size % (h * w * 3)].reshape(-1, h, w, 3).copy()


def _save_image_atomic(image: PIL.Image.Image, out_path: Path) -> Path:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}.get(out_path.suffix.lower())
    if fmt is None:
        raise InputError(f"Thumbnail must be .png, .jpg or .webp (got {out_path.name}).", field="thumbnail")
    tmp = out_path.with_name(f".{out_path.stem}.{uuid.uuid4().hex[:8]}.part{out_path.suffix}")
    try:
        image.save(tmp, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out_path


def _middle_frame(path: str | os.PathLike) -> np.ndarray:
    """The frame at index F // 2 of a video file, decoded without holding the others in memory."""
    info = probe(path)
    video = info["video"]
    if video is None or not video.get("frames"):
        raise InputError(f"{Path(path).name} has no video frames.", field="video")
    w, h, index = video["width"], video["height"], video["frames"] // 2
    args = ["-v", "error", "-i", str(path), "-map", "0:v:0", "-vf", f"select=eq(n\\,{index})", "-frames:v", "1"]
    proc = _run([*args, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
    data = np.frombuffer(proc.stdout, dtype=np.uint8)
    if data.size < h * w * 3:
        raise InputError(f"Could not decode a frame of {Path(path).name}.", field="video")
    return data[: h * w * 3].reshape(h, w, 3).copy()


def make_thumbnail(
    source: np.ndarray | str | os.PathLike, out_path: str | os.PathLike, size: int | tuple[int, int] = 256
) -> Path:
    """PNG/JPEG/WebP of the middle frame of frames [F, H, W, 3] (or one [H, W, 3] frame) or of a video file.

    `size`: the longest side in pixels (aspect kept), or an exact (width, height).
    """
    if isinstance(source, (str, os.PathLike)):
        frame = _middle_frame(source)
    else:
        frames = to_uint8(np.asarray(source))
        frame = frames if frames.ndim == 3 else frames[len(frames) // 2]
    image = PIL.Image.fromarray(frame)
    if isinstance(size, int):
        scale = size / max(image.size)
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    else:
        target = (int(size[0]), int(size[1]))
    image = image.resize(target, PIL.Image.Resampling.LANCZOS)
    return _save_image_atomic(image, Path(out_path))


# ---------------------------------------------------------------------------------------------- images
def _too_big(width: int, height: int, max_pixels: int, name: str) -> InputError:
    return InputError(
        f"{name} is {width}x{height} = {width * height / 1e6:.0f} megapixels; downscale it below "
        f"{max_pixels / 1e6:.0f} megapixels (e.g. to 2048 pixels on the long side) and try again.",
        field="image",
    )


def _to_rgb(image: PIL.Image.Image, background: tuple[int, int, int] | None) -> PIL.Image.Image:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16/32-bit grey: scale to 8 bits
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        image = PIL.Image.fromarray(np.clip(arr / peak * 255, 0, 255).astype(np.uint8), "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if background is not None and has_alpha:
        rgba = image.convert("RGBA")
        canvas = PIL.Image.new("RGBA", rgba.size, (*background, 255))
        return PIL.Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(
    image: str | os.PathLike | PIL.Image.Image | np.ndarray,
    max_pixels: int = MAX_IMAGE_PIXELS,
    background: tuple[int, int, int] | None = None,
    exif_transpose: bool = True,
) -> PIL.Image.Image:
    """Open an image as RGB, refusing files that are not images, are corrupt, or exceed `max_pixels`.

    The size is checked from the header, before decoding. Alpha is dropped like the official `convert("RGB")`
    unless `background` is given (then transparent parts are composited onto it). `exif_transpose` applies the
    camera orientation tag (the official code does not, which turns portrait phone photos sideways).
    """
    if isinstance(image, np.ndarray):
        arr = to_uint8(image) if image.dtype != np.uint8 else image
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        image = PIL.Image.fromarray(arr)
    if isinstance(image, PIL.Image.Image):
        if image.width * image.height > max_pixels:
            raise _too_big(image.width, image.height, max_pixels, "The image")
        image = PIL.ImageOps.exif_transpose(image) if exif_transpose else image
        return _to_rgb(image, background)

    path = _require_file(image, "image", "Image file")
    name = path.name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            opened = PIL.Image.open(path)
    except PIL.Image.DecompressionBombError:
        raise InputError(
            f"{name} is far too large to open safely; downscale it below {max_pixels / 1e6:.0f} megapixels.",
            field="image",
        ) from None
    except (PIL.UnidentifiedImageError, OSError, ValueError):
        raise InputError(f"{name} is not an image PIL can read. Use a PNG, JPEG or WebP file.", field="image") from None
    with opened:
        if opened.width * opened.height > max_pixels:
            raise _too_big(opened.width, opened.height, max_pixels, name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
                opened.load()
        except Exception as exc:  # truncated or corrupt data: PIL raises OSError, SyntaxError, ValueError...
            raise InputError(
                f"{name} is damaged or incomplete ({exc}). Re-export or re-download it.", "image"
            ) from None
        loaded = PIL.ImageOps.exif_transpose(opened) if exif_transpose else opened
        return _to_rgb(loaded, background)


def _fit_inside(w: int, h: int, width: int, height: int) -> tuple[int, int]:
    """The official fit: relatively wider than the target -> match the width, else match the height (truncating)."""
    ratio = w / h
    if ratio > width / height:
        return width, max(1, int(width / ratio))
    return max(1, int(height * ratio)), height


def preprocess_reference(
    image: str | os.PathLike | PIL.Image.Image | np.ndarray, width: int, height: int, mode: str = "pad"
) -> torch.Tensor:
    """Reference image -> float32 [3, height, width] in [-1, 1] (§4.2).

    "pad" (official): Lanczos resize to fit inside keeping the aspect ratio, then symmetric white padding with the
    odd pixel on the right / bottom. "crop": Lanczos resize to cover the target, then a centre crop.
    """
    image = load_image(image)
    if mode == "pad":
        new_w, new_h = _fit_inside(image.width, image.height, width, height)
        resized = image.resize((new_w, new_h), PIL.Image.Resampling.LANCZOS)
        dw, dh = width - new_w, height - new_h
        border = (dw // 2, dh // 2, dw - dw // 2, dh - dh // 2)
        out = PIL.ImageOps.expand(resized, border, fill=(255, 255, 255))
    elif mode == "crop":
        scale = max(width / image.width, height / image.height)
        new_w = max(width, round(image.width * scale))
        new_h = max(height, round(image.height * scale))
        resized = image.resize((new_w, new_h), PIL.Image.Resampling.LANCZOS)
        left, top = (new_w - width) // 2, (new_h - height) // 2
        out = resized.crop((left, top, left + width, top + height))
    else:
        raise InputError(f"Resize mode must be 'pad' or 'crop' (got {mode!r}).", field="resize_mode")
    pixels = torch.from_numpy(np.array(out, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
    return (pixels - 0.5) / 0.5


__all__ = [
    "ffmpeg_exe",
    "to_uint8",
    "write_video",
    "read_settings",
    "read_metadata",
    "probe",
    "read_video_frames",
    "make_thumbnail",
    "load_image",
    "preprocess_reference",
    "MAX_IMAGE_PIXELS",
]
