"""Media I/O through the ffmpeg binary shipped with imageio-ffmpeg: mp4 writing with the generation settings in the
file, probing, frame reading, thumbnails; reference-image loading and preprocessing (reference/humo-official.md
§4.2, §4.10).

- `write_video`: H.264 (libx264, yuv420p, +faststart) at 25 fps with AAC audio taken from the ORIGINAL audio file;
  the output lasts min(video, audio) like the official moviepy muxing; settings JSON in the mp4 `comment` tag and an
  AI-generated label in standard tags (`ai_label_tags`), all passed to ffmpeg in an ffmetadata file (never on its
  command line, which caps a prompt at ~128 KiB); written to a temporary file in the same folder and renamed, so a
  failure never leaves a partial file.
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
# IPTC digital source type of media made by a trained model (also what C2PA's `c2pa.created` action names).
AI_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped with imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", *args], capture_output=True)
    if check and proc.returncode != 0:
        raise RuntimeError(_last_error(proc.stderr) or f"ffmpeg exit code {proc.returncode}")
    return proc


def run_ffmpeg(args: list[str]) -> bytes:
    """Run the bundled ffmpeg (`-nostdin -hide_banner` + `args`) and return its stdout; RuntimeError with ffmpeg's last
    error line when it fails. For callers with their own filter graphs (e.g. training's clip cutting)."""
    return _run(args).stdout


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
def ai_label_tags(label: str) -> dict[str, str]:
    """Standard mp4 tags (iTunes-style `ilst` items ffmpeg's mp4 muxer writes and exiftool shows) saying the video is
    AI-generated: description (`desc`), synopsis (`ldes`, "Long Description"), keywords (`keyw`), artist (`©ART`)."""
    return {
        "description": label,
        "synopsis": f"{label}. IPTC digital source type: {AI_SOURCE_TYPE}",
        "keywords": "AI-generated, trainedAlgorithmicMedia",
        "artist": "HuMo Studio (AI video generator)",
    }


def ffmetadata_text(tags: dict[str, str]) -> str:
    """ffmpeg's ffmetadata file for global tags: ';FFMETADATA1' then key=value lines, with '=', ';', '#', '\\' and
    newlines backslash-escaped (the inverse of `_parse_ffmetadata`)."""

    def escape(text: str) -> str:
        return re.sub(r"([=;#\\\n])", r"\\\1", str(text))

    return ";FFMETADATA1\n" + "".join(f"{escape(k)}={escape(v)}\n" for k, v in tags.items())


def write_video(
    frames: np.ndarray | Iterable[np.ndarray],
    path: str | os.PathLike,
    fps: float = DEFAULT_FPS,
    audio: str | os.PathLike | None = None,
    metadata: dict | None = None,
    crf: int = 18,
    preset: str = "medium",
    ai_label: str | None = None,
) -> Path:
    """Write uint8 RGB frames ([F, H, W, 3] or an iterable of [H, W, 3]) to an H.264 mp4, atomically.

    audio: the original audio file (any container); it is encoded to AAC and the output lasts min(video, audio).
    metadata: JSON-able settings stored in the mp4 `comment` tag (read back with `read_settings`).
    ai_label: e.g. "AI-generated video (HuMo Studio, model humo-17b)", written in standard tags (`ai_label_tags`).
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
        header = probe_header(audio, field="audio")  # the header only: the voice is never decoded twice
        if header["audio"] is None:
            raise InputError(f"{audio.name} has no audio track to put in the video.", field="audio")
        if count is not None:  # the official output lasts min(video, audio); -shortest covers a header without one
            duration = min(count / float(fps), header["duration"] or math.inf)
    tags = ai_label_tags(ai_label) if ai_label else {}
    if metadata:
        tags[SETTINGS_TAG] = json.dumps(metadata, ensure_ascii=True, separators=(",", ":"), default=str)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.part.mp4")
    h, w = _even(first).shape[:2]
    inputs = [ffmpeg_exe(), "-hide_banner", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}"]
    inputs += ["-framerate", f"{fps}", "-i", "pipe:0"]
    outputs = ["-map", "0:v:0"]
    if audio is not None:
        inputs += ["-i", str(audio)]
        outputs += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "192k", "-shortest"]
    outputs += ["-c:v", "libx264", "-preset", preset, "-crf", str(int(crf)), "-pix_fmt", "yuv420p"]
    if duration is not None:
        outputs += ["-t", f"{duration:.6f}"]
    outputs += ["-map_metadata", "2" if audio is not None else "1"]  # the ffmetadata input, after video (and audio)
    outputs += ["-movflags", "+faststart", "-f", "mp4", str(tmp)]

    # The tags (the prompt among them) travel in a half-written file beside the output's own, removed on every exit
    # path; a killed process leaves it where the output's leftovers are (`*.part.*`: the studio removes them at
    # start), never in the system's shared temporary folder.
    tag_file, proc = tmp.with_name(tmp.name.replace(".part.mp4", ".part.ffmetadata")), None
    with tempfile.TemporaryFile() as log:
        try:
            fd = os.open(tag_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(ffmetadata_text(tags))
            args = [*inputs, "-f", "ffmetadata", "-i", str(tag_file), *outputs]
            proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
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
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            tmp.unlink(missing_ok=True)
            raise
        finally:
            tag_file.unlink(missing_ok=True)
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


def _parse_input_header(log: str) -> dict[str, Any] | None:
    """{"format", "duration", "video", "audio"} from the "Input #0" section of an ffmpeg log; None without one.

    Durations and stream fields are the header's (`duration` None when the header gives none, e.g. a piped webm).
    """
    if "Input #0" not in log:
        return None
    header = log.split("Input #0", 1)[1]
    header = re.split(r"\n(?:Stream mapping:|Output #0|\[out#0|At least one output)", header, maxsplit=1)[0]
    m = re.match(r", (.+?), from ", header)
    result: dict[str, Any] = {"format": m.group(1) if m else None, "duration": None, "video": None, "audio": None}
    m = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", header)
    if m:
        result["duration"] = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    for index, kind, desc in re.findall(r"Stream #0:(\d+)[^:]*: (Video|Audio): (.*)", header):
        key = kind.lower()
        if result[key] is None:
            result[key] = {"index": int(index), **_parse_stream(key, desc)}
    return result


def probe_header(path: str | os.PathLike, field: str = "video", display_name: str | None = None) -> dict[str, Any]:
    """What `probe` returns, read from the container header only (`ffmpeg -i FILE`, no output, nothing decoded):
    constant time and memory for any length. No "frames"/"samples" keys; "duration" is None when the header has none.
    """
    path = Path(path)
    name = display_name or path.name
    if not path.is_file():
        raise InputError(f"Media file not found: {display_name or path}. Choose an existing file.", field=field)
    try:
        cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path)]
        proc = subprocess.run(cmd, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise InputError(f"Reading the header of {name} took too long; the file looks damaged.", field=field) from None
    result = _parse_input_header(proc.stderr.decode("utf-8", "replace"))
    if result is None:
        detail = _last_error(proc.stderr).replace(str(path), name) or f"ffmpeg exit code {proc.returncode}"
        raise InputError(f"Could not read {name} as audio or video ({detail}).", field=field)
    return result


def probe(path: str | os.PathLike) -> dict[str, Any]:
    """Duration and first video / audio stream of a media file, by decoding it once with ffmpeg.

    Returns {"format", "duration", "video": {width, height, fps, frames, codec, pix_fmt, duration} | None,
    "audio": {codec, sample_rate, channel_layout, samples, duration} | None}. Frame and sample counts are the
    decoded ones (exact), not header estimates.
    """
    path = _require_file(path, "video", "Media file")
    proc = _run(["-v", "verbose", "-i", str(path), "-map", "0:v:0?", "-map", "0:a:0?", "-f", "null", "-"], check=False)
    log = proc.stderr.decode("utf-8", "replace")
    result = _parse_input_header(log) if proc.returncode == 0 else None
    if result is None:
        raise InputError(f"Could not read {path.name} as audio or video ({_last_error(proc.stderr)}).", field="video")
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


_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees|\brotate\s*:\s*(-?\d+)")


def video_rotation(path: str | os.PathLike) -> int:
    """Display rotation of a video in degrees (0, 90, 180 or 270; 0 when the file has none), from its header.

    ffmpeg applies it when decoding, so at 90 or 270 the decoded frames are the header's height wide.
    """
    proc = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path)], capture_output=True, timeout=60)
    m = _ROTATION.search(proc.stderr.decode("utf-8", "replace"))
    return round(float(m.group(1) or m.group(2))) % 360 if m else 0


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
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "AVIF")  # PIL formats accepted; JPEG covers MPO
_IMAGE_HINT = "Use a PNG, JPEG or WebP file."


def _too_big(width: int, height: int, max_pixels: int, name: str) -> InputError:
    return InputError(
        f"{name} is {width}x{height} = {width * height / 1e6:.0f} megapixels, over the limit; resize it below "
        f"{max_pixels / 1e6:.0f} megapixels (e.g. to 2048 pixels on the long side) and try again.",
        field="image",
    )


def _damaged(name: str, exc: BaseException, path: Path | None = None) -> InputError:
    detail = str(exc) or type(exc).__name__
    if path is not None:
        detail = detail.replace(str(path), name).replace(path.name, name)
    return InputError(f"{name} is damaged or incomplete ({detail}). Re-export or re-download it.", field="image")


def _open_image(path: Path, name: str, max_pixels: int) -> PIL.Image.Image:
    """`PIL.Image.open` (reads the header only) limited to IMAGE_FORMATS. PIL's decompression-bomb warning is
    silenced because callers check their own cap before decoding; PIL's hard limit (2x `PIL.Image.MAX_IMAGE_PIXELS`)
    still refuses here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            return PIL.Image.open(path, formats=IMAGE_FORMATS)
    except PIL.Image.DecompressionBombError as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" ({int(m.group(1)) / 1e6:.0f} megapixels)" if m else ""
        raise InputError(
            f"{name} is far too large to open safely{size}; resize it below {max_pixels / 1e6:.0f} megapixels.",
            field="image",
        ) from None
    except Exception:  # PIL.UnidentifiedImageError, or a header so broken that a plugin fails on it
        raise InputError(
            f"{name} is not an image PIL can read (or its header is damaged). {_IMAGE_HINT}", field="image"
        ) from None


def probe_image(
    path: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS, display_name: str | None = None
) -> tuple[int, int, str]:
    """(width, height, PIL format) of an image file, refusing bad files before any large decode.

    Refuses (InputError, field "image", naming `display_name`, default the file name): missing, empty, not one of
    IMAGE_FORMATS, 0 pixels, more than `max_pixels` (from the header), damaged data where it is cheap to see: PNG
    chunk CRCs up to IEND (`verify`, nothing decompressed) and JPEG decoded at 1/8 scale (reads all the coded data
    for ~1/64 of the memory). Other formats' data are checked by the full (bounded) decode in `load_image`.
    Animated / multi-frame files pass; `load_image` uses the first frame.
    """
    path = Path(path)
    name = display_name or path.name
    if not path.is_file():
        raise InputError(f"Image file not found: {display_name or path}. Choose an existing file.", field="image")
    if path.stat().st_size == 0:
        raise InputError(f"{name} is empty (0 bytes). {_IMAGE_HINT}", field="image")
    with _open_image(path, name, max_pixels) as image:
        width, height, fmt = image.width, image.height, str(image.format)
    if width < 1 or height < 1:
        raise InputError(f"{name} has no pixels ({width}x{height}). {_IMAGE_HINT}", field="image")
    if width * height > max_pixels:
        raise _too_big(width, height, max_pixels, name)
    try:
        with _open_image(path, name, max_pixels) as image:
            if fmt == "PNG":
                image.verify()
            elif fmt in ("JPEG", "MPO"):
                image.draft(None, (max(1, width // 8), max(1, height // 8)))
                image.load()
    except InputError:
        raise
    except Exception as exc:  # truncated or corrupt data: PIL raises OSError, SyntaxError, ValueError...
        raise _damaged(name, exc, path) from None
    return width, height, fmt


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
    *,
    display_name: str | None = None,
) -> PIL.Image.Image:
    """Open an image as RGB, refusing files that are not images, are corrupt, or exceed `max_pixels`.

    Files go through `probe_image` first (header checks, before decoding); then the first frame is decoded. Alpha is
    dropped like the official `convert("RGB")` unless `background` is given (then transparent parts are composited
    onto it). `exif_transpose` applies the camera orientation tag (the official code does not, which turns portrait
    phone photos sideways). Messages name `display_name` (default: the file name, or "The image" for arrays).
    """
    if isinstance(image, np.ndarray):
        arr = to_uint8(image) if image.dtype != np.uint8 else image
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        image = PIL.Image.fromarray(arr)
    if isinstance(image, PIL.Image.Image):
        if image.width * image.height > max_pixels:
            raise _too_big(image.width, image.height, max_pixels, display_name or "The image")
        image = PIL.ImageOps.exif_transpose(image) if exif_transpose else image
        return _to_rgb(image, background)

    path = Path(image)
    name = display_name or path.name
    probe_image(path, max_pixels=max_pixels, display_name=display_name)
    with _open_image(path, name, max_pixels) as opened:
        if opened.width * opened.height > max_pixels:  # the file changed since the probe
            raise _too_big(opened.width, opened.height, max_pixels, name)
        try:
            opened.load()
            loaded = PIL.ImageOps.exif_transpose(opened) if exif_transpose else opened
        except Exception as exc:  # truncated or corrupt data: PIL raises OSError, SyntaxError, ValueError...
            raise _damaged(name, exc, path) from None
        try:
            return _to_rgb(loaded, background)
        except (ValueError, OSError):
            raise InputError(
                f"{name} uses a colour mode ({opened.mode}) that cannot be converted to RGB. Save it as an 8-bit RGB "
                "PNG or JPEG.",
                field="image",
            ) from None


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


# ---------------------------------------------------------------------------------------------- grids
GRID_LABEL_PX = 22  # the height of the column labels' band (and the room a row label gets per line)
GRID_MAX_WIDTH = 1920  # a grid wider than this is scaled down (six 832-px cells would make a 2,500-px video)


def _fit_label(draw, text: str, font, width: int) -> str:
    """`text` shortened with an ellipsis until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def tile_frames(videos, columns: int, column_labels, row_labels, min_cell: int = 160,
                max_width: int = GRID_MAX_WIDTH) -> np.ndarray:  # fmt: skip
    """One video of several playing side by side (an X/Y sweep's grid): `videos` row-major, each uint8 RGB
    [F, H, W, 3]; every cell at the first one's size, scaled so a cell is at least `min_cell` px wide (labels need
    the room) and the grid at most `max_width`; `column_labels` above the columns, `row_labels` left of the rows
    (empty strings: no band). All cells play frame by frame together for the first cell's length; a shorter cell
    holds its last frame."""
    import PIL.ImageDraw
    import PIL.ImageFont

    videos = [to_uint8(np.asarray(v)) for v in videos]
    if not videos or columns < 1 or len(videos) % columns:
        raise InputError(f"A grid needs rows of {columns} cells (got {len(videos)} videos).", field="frames")
    rows = len(videos) // columns
    if len(column_labels) != columns or len(row_labels) != rows:
        raise InputError("A grid needs one label per column and per row.", field="frames")
    height, width = videos[0].shape[1:3]
    scale = max(1.0, min_cell / width)
    label_w = 0 if not any(row_labels) else max(min_cell, 120)
    scale = min(scale, (max_width - label_w) / (width * columns))
    cell_w, cell_h = (max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2))
    top = GRID_LABEL_PX if any(column_labels) else 0
    canvas = PIL.Image.new("RGB", (label_w + cell_w * columns, top + cell_h * rows), (24, 24, 28))
    draw = PIL.ImageDraw.Draw(canvas)
    font = PIL.ImageFont.load_default(size=14)
    for index, label in enumerate(column_labels):
        text = _fit_label(draw, str(label), font, cell_w - 8)
        draw.text((label_w + index * cell_w + 4, 3), text, fill=(240, 240, 240), font=font)
    for index, label in enumerate(row_labels):
        text = _fit_label(draw, str(label), font, label_w - 8)
        draw.text((4, top + index * cell_h + cell_h // 2 - 8), text, fill=(240, 240, 240), font=font)
    background = np.asarray(canvas)
    count = len(videos[0])
    out = np.repeat(background[None], count, axis=0)
    for index, video in enumerate(videos):
        y, x = top + (index // columns) * cell_h, label_w + (index % columns) * cell_w
        for frame in range(count):
            image = video[min(frame, len(video) - 1)]
            if image.shape[:2] != (cell_h, cell_w):
                image = np.asarray(PIL.Image.fromarray(image).resize((cell_w, cell_h), PIL.Image.Resampling.BILINEAR))
            out[frame, y : y + cell_h, x : x + cell_w] = image
    return out


__all__ = [
    "ffmpeg_exe",
    "to_uint8",
    "write_video",
    "ai_label_tags",
    "ffmetadata_text",
    "read_settings",
    "read_metadata",
    "probe",
    "read_video_frames",
    "make_thumbnail",
    "tile_frames",
    "probe_header",
    "run_ffmpeg",
    "video_rotation",
    "probe_image",
    "load_image",
    "preprocess_reference",
    "IMAGE_FORMATS",
    "MAX_IMAGE_PIXELS",
]


# ---------------------------------------------------------------------------------------------- streaming
class FragmentedMp4Writer:
    """An H.264 + AAC mp4 that plays while it grows (live generation, engine/live.py): fed chunk by chunk, written as
    a fragmented mp4 (`empty_moov`: the header with the tags and settings comes first, then one fragment per packet).

    x264 runs with `-tune zerolatency` (no lookahead, no B-frames), so a frame leaves the encoder as soon as it arrives,
    and every packet becomes its own fragment (`-frag_duration` of 1 µs). The mp4 muxer writes a fragment when the
    next packet arrives, so a reader sees every frame written so far but the last one (40 ms), which comes with the next
    chunk or at `close`. An edit list keeps the voice's AAC priming from shifting the frame timestamps. The file lasts
    `num_frames` frames (the voice cut to them). Frames equal the non-streamed writer's up to the encoders' rounding.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        num_frames: int,
        fps: float = DEFAULT_FPS,
        audio: str | os.PathLike | None = None,
        metadata: dict | None = None,
        ai_label: str | None = None,
        crf: int = 18,
    ) -> None:
        self.path = Path(path)
        self.num_frames = int(num_frames)
        self.fps = float(fps)
        self.audio = None if audio is None else _require_file(audio, "audio", "Audio file")
        self.tags = ai_label_tags(ai_label) if ai_label else {}
        if metadata:
            self.tags[SETTINGS_TAG] = json.dumps(metadata, ensure_ascii=True, separators=(",", ":"), default=str)
        self.crf = int(crf)
        self.frames_written = 0
        self._size: tuple[int, int] | None = None
        self._proc: subprocess.Popen | None = None
        self._tag_dir: tempfile.TemporaryDirectory | None = None
        self._log = None

    def _start(self, first: np.ndarray) -> None:
        self._size = first.shape[:2]
        h, w = _even(first).shape[:2]
        duration = self.num_frames / self.fps
        self._tag_dir = tempfile.TemporaryDirectory(prefix="humo-tags-")
        tag_file = Path(self._tag_dir.name) / "tags.ffmetadata"
        tag_file.write_text(ffmetadata_text(self.tags), encoding="utf-8")
        args = [ffmpeg_exe(), "-hide_banner", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}"]
        args += ["-framerate", f"{self.fps}", "-i", "pipe:0"]
        # The voice is cut on its input: an output -t would put both tracks through ffmpeg's sync queue, which holds
        # frames back until the other track has passed them.
        args += ["-t", f"{duration:.6f}"]
        if self.audio is not None:
            args += ["-i", str(self.audio)]
        else:  # a silent track, so players see one layout with or without a voice
            args += ["-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono"]
        args += ["-f", "ffmetadata", "-i", str(tag_file), "-map", "0:v:0", "-map", "1:a:0", "-map_metadata", "2"]
        args += ["-c:a", "aac", "-b:a", "192k", "-c:v", "libx264", "-preset", "medium", "-crf", str(self.crf)]
        args += ["-tune", "zerolatency", "-pix_fmt", "yuv420p", "-flush_packets", "1", "-use_editlist", "1"]
        args += ["-frag_duration", "1", "-movflags", "frag_keyframe+empty_moov+default_base_moof"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [*args, "-f", "mp4", str(self.path)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log
        )

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 RGB frames [n, H, W, 3] (a chunk); they become readable in the file within moments."""
        frames = np.asarray(frames)
        if len(frames) == 0:
            return
        if self.frames_written + len(frames) > self.num_frames:
            raise InputError(f"The stream holds {self.num_frames} frames; {len(frames)} more do not fit.", "frames")
        if self._proc is None:
            self._start(_check_frame(frames[0], None))
        try:
            for frame in frames:
                self._proc.stdin.write(_even(_check_frame(frame, self._size)).tobytes())
            self._proc.stdin.flush()
        except BrokenPipeError:
            self._fail()
        self.frames_written += len(frames)

    def _fail(self) -> None:
        code = self._proc.wait()
        self._log.seek(0)
        raise RuntimeError(f"ffmpeg could not write {self.path.name} (exit {code}): {_last_error(self._log.read())}")

    def close(self) -> Path:
        """Finish the file (the frames written so far; the voice is cut to them) and wait for ffmpeg."""
        if self._proc is None:
            raise InputError("There are no frames to write.", field="frames")
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        if self._proc.wait() != 0:
            self._fail()
        self._cleanup()
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg now; the fragments already written stay a playable file."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tag_dir is not None:
            self._tag_dir.cleanup()
            self._tag_dir = None
        if self._log is not None:
            self._log.close()
            self._log = None
