"""Dubbing: re-voice an existing video. The chosen face follows the new audio; everything else stays the source's.

Training-free (issue #15): the source clip is encoded with the VAE and denoised with HuMo's usual conditioning
(prompt, a frame of the source as the reference, the new audio), while after every scheduler step the latents
outside a face mask are replaced by the source latents noised to the next step's level (`HuMoPipeline(video=...,
mask=...)`, the blending of diffusers' inpainting pipelines and RePaint). The decoded frames are then composited
with the feathered pixel mask, so outside it the output *is* the source's pixels.

Steps of `dub_to_file` (every check before any model work):
1. `load_video`: header checks (exists, readable, has a video stream, not a still image), then decode only the
   frames needed, resampled to 25 fps (the model's rate; the source rate goes in the settings).
2. Audio: its length sets the clip. Longer than the video: the video is extended forward-backward ("pingpong")
   or the audio is cut to the video ("trim"); shorter: the video is cut to the audio. 4n+1 frames (causal VAE).
3. Mask: a face detector on the first frames picks the face (largest first; `face` index, or the face under a
   clicked `point`), which is tracked through the clip, smoothed, dilated, cut to the lower `strength` of the face
   (mouth and jaw ... whole face) and feathered; or a user mask image of the frame size.
4. The pipeline at the model size (the source scaled to the model's pixel count), then `composite` at the source
   size, watermark + AI label (engine/provenance.py), mp4 with the new audio and the settings.

The face detector is OpenCV's Haar cascade wrapper of engine/faces.py (the one the data pipeline uses; its
cascades ship with the opencv wheel, so nothing is downloaded). Frames are upscaled so their short side is at least
256 px first: Haar's 24-px window misses the 35-45 px faces of 64x64 clips at their own size.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine import media
from engine.audio import SAMPLING_RATE, check_voice, load_audio, num_video_frames, probe_audio, snap_frames
from engine.errors import InputError
from engine.guidance import GuidanceSchedule
from engine.known_latents import KEEP
from engine.plan import mode_of, run_schedule

FPS = 25  # the model's frame rate; sources at other rates are resampled and the settings say so
DETECT_SIZE = 256  # frames are upscaled to at least this short side before the Haar cascade
SEARCH_FRAMES = 25  # a face must appear within the first second; frames 0, 5, ... are checked
SEARCH_EVERY = 5
DEFAULT_STRENGTH = 0.5  # the lower half of the face: mouth and jaw
DEFAULT_DILATE = 0.05  # grow the detector's box by this share (Haar's square boxes already reach the cheeks)
DEFAULT_FEATHER = 0.05  # soft edge width as a share of the face height (every mask cell is regenerated:
# at 64x64 one latent cell is 8 px, so a wide edge regenerates much of the frame)
EXTEND_POLICIES = ("pingpong", "trim")
MODE = mode_of("a frame of the source video", "the new voice")  # TIA: a dub's reference is a frame of its source
# ffmpeg demuxers of single images: a still given as the video is refused from its header
STILL_FORMATS = {"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif_pipe", "avif"}
STILL_CODECS = {"png", "mjpeg", "bmp", "webp", "tiff", "jpeg2000", "av1_image"}
FACE_WIDTH = 0.85  # Haar's boxes are square and faces narrower (~0.75 wide/high): the ellipse is this share wide


# ---------------------------------------------------------------------------------------------- source video
@dataclass
class SourceVideo:
    """Decoded source frames at 25 fps: RGB uint8 [T, H, W, 3], the file's own frame rate and duration."""

    frames: np.ndarray
    source_fps: float | None
    duration_s: float | None
    name: str


def probe_video(path: str | os.PathLike, display_name: str | None = None) -> dict[str, Any]:
    """The header of a source video (nothing decoded): {"format", "duration", "video": {width, height, fps, ...}}.

    Refuses a missing or unreadable file, an audio-only file and a still image, each with what to give instead."""
    path = Path(path)
    name = display_name or path.name
    header = media.probe_header(path, field="video", display_name=name)
    stream = header["video"]
    if stream is None:
        raise InputError(
            f"{name} has no video track (it is audio only): give the video to dub as Video and the new voice as Audio.",
            field="video",
        )
    if header["format"] in STILL_FORMATS or (stream.get("codec") in STILL_CODECS and not header.get("duration")):
        raise InputError(
            f"{name} is a still image, not a video: dubbing needs footage of the speaker (an mp4, mov, webm ...). "
            "To animate a photo, use Generate.",
            field="video",
        )
    if not stream.get("width") or not stream.get("height"):
        raise InputError(f"Could not read the frame size of {name}; re-export it as an H.264 mp4.", field="video")
    frames = header_frames(header)
    if frames < 2:  # a one-frame GIF has no duration; a dub's cost is read from the header, so it needs one
        what = "has no duration in its header" if frames < 0 else f"is {frames} frame(s) long"
        raise InputError(f"{name} {what}: it is a still image, a one-frame animation or a stream without a length. "
                         "Give footage of the speaker as an mp4, mov or webm.", field="video")  # fmt: skip
    return header


def header_frames(header: dict[str, Any]) -> int:
    """The source's frames at the model's 25 fps, from its header's duration (-1 when the header has none)."""
    seconds = header.get("duration")
    return -1 if not seconds else int(seconds * FPS)


def planned_frames(request: DubRequest, names: dict[str, str] | None = None, max_audio_s: float | None = None) -> int:
    """The frames a dub will make (after ping-pong or trim), from the headers of its video and voice and
    arithmetic: nothing decoded but, when the voice's header has no length, the voice itself (cheap, bounded by
    `max_audio_s`). What every cap of a dub is checked against before `plan_dub` decodes the video."""
    names = names or {}
    header = probe_video(request.video, names.get(request.video))
    audio_name = names.get(request.audio) or Path(request.audio).name
    info = probe_audio(request.audio, display_name=audio_name)
    seconds = info.duration_s
    if seconds is None or (max_audio_s is not None and seconds > max_audio_s):
        seconds = len(load_audio(request.audio, max_seconds=max_audio_s, display_name=audio_name)) / SAMPLING_RATE
    return clip_length(header_frames(header), max(1, int(seconds * FPS)), request.extend)


def load_video(
    path: str | os.PathLike, *, max_frames: int | None = None, display_name: str | None = None
) -> SourceVideo:
    """The first `max_frames` (all when None) frames of a video, resampled to 25 fps, as RGB uint8 [T, H, W, 3]."""
    path = Path(path)
    name = display_name or path.name
    header = probe_video(path, name)
    stream = header["video"]
    width, height = stream["width"], stream["height"]
    if media.video_rotation(path) in (90, 270):  # ffmpeg rotates while decoding
        width, height = height, width
    args = ["-v", "error", "-i", str(path), "-map", "0:v:0", "-vf", f"fps={FPS}"]
    if max_frames is not None:
        args += ["-frames:v", str(int(max_frames))]
    try:
        raw = media.run_ffmpeg([*args, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
    except RuntimeError as exc:
        raise InputError(f"Could not decode {name} ({exc}); re-export it as an H.264 mp4.", field="video") from None
    data = np.frombuffer(raw, np.uint8)
    frames = data[: data.size - data.size % (height * width * 3)].reshape(-1, height, width, 3)
    if len(frames) < 2:
        raise InputError(
            f"{name} has {len(frames)} frame(s): it is a still image or an empty video. Give footage of the speaker.",
            field="video",
        )
    return SourceVideo(frames.copy(), stream.get("fps"), header.get("duration"), name)


def pingpong_indices(length: int, count: int) -> np.ndarray:
    """Frame indices 0, 1, ..., L-1, L-2, ..., 1, 0, 1, ... of `count` frames: a clip extended forward-backward, so
    it never jumps back to its start."""
    if length < 2:
        return np.zeros(count, np.int64)
    period = np.concatenate([np.arange(length), np.arange(length - 2, 0, -1)])
    return np.resize(period, count)


def fit_frames(frames: np.ndarray, num_frames: int) -> np.ndarray:
    """The clip cut to `num_frames`, or extended forward-backward to it."""
    return frames[pingpong_indices(len(frames), num_frames)]


def clip_length(video_frames: int, audio_frames: int, extend: str) -> int:
    """Frames (4n+1) of the dub: the audio's, unless the audio is longer and `extend` is "trim" (then the video's)."""
    if extend not in EXTEND_POLICIES:
        raise InputError(f"extend must be one of {', '.join(EXTEND_POLICIES)} (got {extend!r}).", field="extend")
    frames = audio_frames if extend == "pingpong" else min(audio_frames, video_frames)
    return snap_frames(max(1, frames))


# ---------------------------------------------------------------------------------------------- faces
@lru_cache(maxsize=1)
def face_detector():
    """The data pipeline's Haar cascade detector (engine/faces.py), loaded once."""
    from engine.faces import HaarFaceDetector

    return HaarFaceDetector()


def detect_faces(frame: np.ndarray, detector=None) -> np.ndarray:
    """Face boxes float32 [N, 4] (x0, y0, x1, y1) in `frame` pixels, largest first."""
    detector = detector or face_detector()
    h, w = frame.shape[:2]
    scale = max(1.0, DETECT_SIZE / min(h, w))
    if scale > 1:
        frame = cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
    boxes = np.asarray(detector(frame), np.float32).reshape(-1, 4) / scale
    return boxes[np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")]


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with each of `boxes` [N, 4]."""
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1, y1 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-6)


def choose_face(boxes: np.ndarray, face: int | None, point: tuple[float, float] | None, where: str) -> np.ndarray:
    """The box of the chosen face: the one under `point` (the smallest holding it), else index `face` (0 = largest)."""
    if point is not None:
        x, y = point
        inside = [b for b in boxes if b[0] <= x <= b[2] and b[1] <= y <= b[3]]
        if not inside:
            found = ", ".join(f"({b[0]:.0f}, {b[1]:.0f})-({b[2]:.0f}, {b[3]:.0f})" for b in boxes)
            raise InputError(f"No face at ({x:.0f}, {y:.0f}) in {where}; faces found there: {found}. Click on a face.",
                             field="face")  # fmt: skip
        return min(inside, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    index = 0 if face is None else face
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or not 0 <= index < len(boxes):
        raise InputError(
            f"Face {face!r} does not exist: {where} shows {len(boxes)} face(s), numbered 0 (largest) to "
            f"{len(boxes) - 1}.",
            field="face",
        )
    return boxes[index]


def find_face(
    frames: np.ndarray, face: int | None = None, point: tuple[float, float] | None = None, *, name: str = "the video"
) -> tuple[int, np.ndarray]:
    """(frame index, box) of the chosen face on the first checked frame that shows one (frame 0 for a `point`)."""
    checked = [0] if point is not None else list(range(0, min(len(frames), SEARCH_FRAMES), SEARCH_EVERY))
    for index in checked:
        boxes = detect_faces(frames[index])
        if len(boxes):
            return index, choose_face(boxes, face, point, f"frame {index} of {name}")
    listed = ", ".join(str(i) for i in checked)
    raise InputError(
        f"No face found in {name} (checked frame{'s' if len(checked) > 1 else ''} {listed}, at 25 fps). Dubbing needs "
        "the speaker's face visible and roughly frontal at the start of the clip; or upload a mask of the region to "
        "re-animate.",
        field="video",
    )


def track_face(frames: np.ndarray, start: int, box: np.ndarray, *, min_iou: float = 0.1) -> np.ndarray:
    """Boxes [T, 4] of one face through the clip: per frame the detection overlapping the previous box most (other
    faces never take over), from `start` forwards and backwards; missed frames are interpolated or held."""
    from engine.faces import smooth_boxes

    raw = np.full((len(frames), 4), np.nan, np.float32)
    raw[start] = box
    for order in (range(start + 1, len(frames)), range(start - 1, -1, -1)):
        previous = box
        for t in order:
            found = detect_faces(frames[t])
            if len(found):
                overlap = box_iou(previous, found)
                if overlap.max() >= min_iou:
                    raw[t] = previous = found[int(np.argmax(overlap))]
    return smooth_boxes(raw, max_gap=len(frames))


# ---------------------------------------------------------------------------------------------- masks
def _check_mask_settings(strength: float, dilate: float, feather: float) -> None:
    if not isinstance(strength, (int, float)) or not 0.05 <= strength <= 1:
        raise InputError(
            f"Strength must be from 0.05 (lips only) to 1 (whole face); 0.5 is mouth and jaw (got {strength!r}).",
            field="strength",
        )
    for label, value in (("Dilate", dilate), ("Feather", feather)):
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise InputError(f"{label} must be from 0 to 1, a share of the face size (got {value!r}).", field=label)


def face_region(box: np.ndarray, size: tuple[int, int], strength: float, dilate: float) -> np.ndarray:
    """Binary uint8 [H, W]: the face ellipse in the dilated box (FACE_WIDTH of its width), cut to its lower `strength`
    (1 = whole face)."""
    from engine.faces import expand_box

    region = np.zeros(size, np.uint8)
    x0, y0, x1, y1 = expand_box(np.asarray(box, np.float32), dilate)
    centre = (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2)))
    axes = (max(1, int(round(FACE_WIDTH * (x1 - x0) / 2))), max(1, int(round((y1 - y0) / 2))))
    cv2.ellipse(region, centre, axes, 0, 0, 360, 1, -1)
    top = int(np.floor(y1 - strength * (y1 - y0)))
    region[: max(0, top)] = 0
    return region


def feather_mask(region: np.ndarray, radius: float) -> np.ndarray:
    """float32 [H, W]: 1 on the region, falling smoothly to 0 over about 2·`radius` pixels outside it."""
    region = region.astype(np.float32)
    if radius < 0.5:
        return region
    r = int(np.ceil(radius))
    grown = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    soft = cv2.GaussianBlur(grown, (0, 0), sigmaX=radius / 2)
    soft[soft < KEEP] = 0  # Gaussian tails too faint to change a uint8 pixel would still mark latent cells
    return np.maximum(soft, region)


def face_mask(
    boxes: np.ndarray,
    size: tuple[int, int],
    *,
    strength: float = DEFAULT_STRENGTH,
    dilate: float = DEFAULT_DILATE,
    feather: float = DEFAULT_FEATHER,
) -> np.ndarray:
    """Per-frame masks float32 [T, H, W] in [0, 1] (1 = generate) from the tracked face boxes [T, 4]."""
    _check_mask_settings(strength, dilate, feather)
    heights = boxes[:, 3] - boxes[:, 1]
    radius = feather * float(np.nanmedian(heights)) if np.isfinite(heights).any() else 0.0
    masks = np.zeros((len(boxes), *size), np.float32)
    for t, box in enumerate(boxes):
        if np.isfinite(box).all():
            masks[t] = feather_mask(face_region(box, size, strength, dilate), radius)
    return masks


def load_mask(mask, size: tuple[int, int], frames: int, name: str = "The mask") -> np.ndarray:
    """A user mask -> float32 [frames, H, W] in [0, 1]: an image file or array [H, W] (one mask for every frame) or
    an array [T >= frames, H, W]. White (1) = re-animate. It must have the video's frame size."""
    if isinstance(mask, (str, os.PathLike)):
        name = Path(mask).name
        mask = np.asarray(media.load_image(mask).convert("L"), np.float32) / 255.0
    mask = np.asarray(mask, np.float32)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4) and mask.shape[:2] == tuple(size):
        mask = mask[..., :3].mean(axis=-1)  # an RGB(A) array of one frame
    if mask.max(initial=0) > 1:
        mask = mask / 255.0
    if mask.shape[-2:] != tuple(size) or mask.ndim not in (2, 3):
        got = "x".join(str(s) for s in mask.shape[-2:][::-1]) if mask.ndim >= 2 else str(mask.shape)
        raise InputError(
            f"{name} is {got} pixels but the video frames are {size[1]}x{size[0]}: draw or export the mask at the "
            "video's size (white = re-animate, black = keep).",
            field="mask",
        )
    if mask.ndim == 3 and len(mask) < frames:
        raise InputError(f"{name} has {len(mask)} frames; the dub needs {frames}.", field="mask")
    mask = np.broadcast_to(mask, (frames, *size)) if mask.ndim == 2 else mask[:frames]
    if float(mask.max(initial=0)) < 0.5:
        raise InputError(f"{name} is empty (all black): paint the region to re-animate white.", field="mask")
    return np.clip(mask, 0, 1).astype(np.float32)


def composite(generated: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 frames: `generated` inside the mask, `source` outside, blended on the feathered edge. Where the mask is
    0 the result is the source's own pixels."""
    gen = (generated if generated.dtype == np.uint8 else media.to_uint8(generated)).astype(np.float32)
    m = mask[..., None].astype(np.float32)
    out = m * gen + (1 - m) * source.astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def mask_preview(frame: np.ndarray, mask: np.ndarray, colour=(255, 60, 60)) -> np.ndarray:
    """The frame with the mask tinted over it (what the studio shows before a dub)."""
    m = mask[..., None].astype(np.float32) * 0.55
    return np.clip(frame * (1 - m) + np.array(colour, np.float32) * m, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- the dub
@dataclass
class DubRequest:
    """Everything a user chooses for one dub (the conditioning fields mirror `GenerationRequest`)."""

    video: str
    audio: str
    prompt: str = "A person talking."
    negative_prompt: str | None = None
    face: int | None = None  # 0 = largest on the first frame with a face
    point: tuple[float, float] | None = None  # or the face under this (x, y) of the first frame (source pixels)
    strength: float = DEFAULT_STRENGTH
    dilate: float = DEFAULT_DILATE
    feather: float = DEFAULT_FEATHER
    mask: str | None = None  # a user mask image instead of the face detector
    extend: str = "pingpong"  # audio longer than the video: "pingpong" the video or "trim" the audio
    height: int | None = None  # model size; None: the source scaled to the model's default pixel count
    width: int | None = None
    num_inference_steps: int | None = None  # None: the model's (pipe.sampling_defaults)
    seed: int | None = None
    guidance: GuidanceSchedule | None = None  # None: the model's preset for MODE
    window_frames: int | None = None
    window_overlap: int = 4

    @property
    def mode(self) -> str:
        return MODE

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (the gallery row, the mp4): every field, the guidance as its `to_dict()`."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["guidance"] = self.guidance.to_dict() if self.guidance is not None else None
        return data


@dataclass
class DubPlan:
    """The checked, decoded inputs of a dub (everything before model work)."""

    frames: np.ndarray  # source frames fitted to the clip, RGB uint8 [T, H, W, 3] (source size)
    waveform: np.ndarray  # the new voice, 16 kHz, cut to the clip
    mask: np.ndarray  # float32 [T, H, W] (source size)
    num_frames: int
    face_box: list[float] | None
    face_frame: int | None
    video: SourceVideo
    notes: dict = field(default_factory=dict)


def model_size(source_hw: tuple[int, int], default_hw: tuple[int, int]) -> tuple[int, int]:
    """The source's aspect at the model's default pixel count, in multiples of 16."""
    h, w = source_hw
    scale = np.sqrt(default_hw[0] * default_hw[1] / (h * w))
    snap = lambda v: max(16, int(round(v * scale / 16)) * 16)  # noqa: E731
    return snap(h), snap(w)


def plan_dub(request: DubRequest, names: dict[str, str] | None = None, max_audio_s: float | None = None) -> DubPlan:
    """Every check and the cheap work of a dub: header checks, the voice, the frames it needs, the face and mask.
    Raises `InputError` naming the user's files (`names`: path -> uploaded name) before any model runs."""
    names = names or {}
    video_name = names.get(request.video) or Path(request.video).name
    audio_name = names.get(request.audio) or Path(request.audio).name
    _check_mask_settings(request.strength, request.dilate, request.feather)
    if request.extend not in EXTEND_POLICIES:
        raise InputError(f"extend must be one of {', '.join(EXTEND_POLICIES)} (got {request.extend!r}).", "extend")
    if request.mask and (request.face is not None or request.point is not None):
        raise InputError("A mask chooses the region itself: a face index or a clicked face is not used with it. "
                         "Set Face to -1 and clear the clicked point, or remove the mask.", field="face")  # fmt: skip
    probe_video(request.video, video_name)
    waveform = load_audio(request.audio, max_seconds=max_audio_s, display_name=audio_name)
    check_voice(waveform, audio_name)
    audio_frames = num_video_frames(len(waveform))
    # decode only what the dub can use: the audio's length (a ping-pong needs the whole of a shorter clip)
    video = load_video(request.video, max_frames=audio_frames, display_name=video_name)
    num_frames = clip_length(len(video.frames), audio_frames, request.extend)
    frames = fit_frames(video.frames, num_frames)
    waveform = waveform[: num_frames * SAMPLING_RATE // FPS]
    size = frames.shape[1:3]
    box, start = None, None
    if request.mask:
        mask = load_mask(request.mask, size, num_frames, names.get(request.mask) or "The mask")
    else:
        start, first = find_face(frames, request.face, request.point, name=video_name)
        boxes = track_face(frames, start, first)
        mask = face_mask(boxes, size, strength=request.strength, dilate=request.dilate, feather=request.feather)
        box = [round(float(v), 2) for v in first]
    notes = {
        "source_fps": video.source_fps,
        "fps_policy": f"resampled to {FPS} fps for the model" if video.source_fps != FPS else f"{FPS} fps",
        "extended": "pingpong" if num_frames > len(video.frames) else None,
        "audio_trimmed_to_video": request.extend == "trim" and audio_frames > len(video.frames),
    }
    return DubPlan(frames, waveform, mask, num_frames, box, start, video, notes)


def _resize(frames: np.ndarray, hw: tuple[int, int], interpolation: int) -> np.ndarray:
    if frames.shape[1:3] == tuple(hw):
        return frames
    return np.stack([cv2.resize(f, (hw[1], hw[0]), interpolation=interpolation) for f in frames])


def run_dub(pipe, request: DubRequest, plan: DubPlan, callback_on_step_end=None, schedule=None):
    """The pipeline on a plan at the model size -> (composited uint8 frames at the source size, pipeline output)."""
    default_hw = getattr(pipe, "default_size", (480, 832))
    height, width = request.height, request.width
    if height is None or width is None:
        height, width = model_size(plan.frames.shape[1:3], default_hw)
    frames = _resize(plan.frames, (height, width), cv2.INTER_AREA)
    mask = _resize(plan.mask, (height, width), cv2.INTER_LINEAR)
    schedule = schedule or request.guidance
    reference = frames[plan.face_frame or 0]  # the source's own face is the identity to keep
    output = pipe(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        image=reference,
        audio=plan.waveform,
        video=frames,
        mask=mask,
        height=height,
        width=width,
        num_frames=plan.num_frames,
        num_inference_steps=request.num_inference_steps,
        guidance=schedule,
        seed=request.seed,
        window_frames=request.window_frames,
        window_overlap=request.window_overlap,
        output_type="np",
        callback_on_step_end=callback_on_step_end,
    )
    generated = _resize(media.to_uint8(output.frames[0]), plan.frames.shape[1:3], cv2.INTER_CUBIC)
    return composite(generated, plan.frames, plan.mask), output


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def dub_to_file(
    pipe,
    request: DubRequest,
    out_path: str | os.PathLike,
    callback_on_step_end=None,
    *,
    plan: DubPlan | None = None,
    names: dict[str, str] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Dub a video into an mp4: the composited frames, watermarked and labelled AI-generated like every generation
    (engine/provenance.py), with the new voice and the settings (the dub's under "dub"). Nothing is written when it
    fails or is stopped. Returns the path and the settings record."""
    from engine.generate import GenerationRequest, c2pa_signer, settings_record, write_generated

    signer = c2pa_signer()  # before the render: a bad certificate fails first
    plan = plan or plan_dub(request, names)
    steps = request.num_inference_steps or pipe.sampling_defaults.num_inference_steps
    request = replace(request, num_inference_steps=steps)  # recorded as run
    schedule = dub_schedule(pipe, request)
    frames, output = run_dub(pipe, request, plan, callback_on_step_end, schedule)
    conditioning = GenerationRequest(
        prompt=request.prompt,
        audio=request.audio,
        negative_prompt=request.negative_prompt,
        height=output.frames[0].shape[1],
        width=output.frames[0].shape[2],
        num_frames=plan.num_frames,
        num_inference_steps=request.num_inference_steps,
        seed=request.seed,
        window_frames=request.window_frames,
        window_overlap=request.window_overlap,
    )
    record = settings_record(pipe, conditioning, output, schedule)
    names = names or {}
    dub = {k: v for k, v in request.to_dict().items() if k not in ("video", "audio", "prompt", "negative_prompt")}
    dub.update(
        video=Path(names.get(request.video) or request.video).name,
        video_sha256=_sha256(request.video),
        mask=Path(names.get(request.mask) or request.mask).name if request.mask else None,
        face_box=plan.face_box,
        face_frame=plan.face_frame,
        output_size=list(frames.shape[1:3]),
        fps=FPS,
        **plan.notes,
    )
    record.update(kind="dub", dub=dub, reference="a frame of the source video")
    return write_generated(frames, record, out_path, request.audio, FPS, signer), record


def dub_schedule(pipe, request: DubRequest):
    """The request's guidance schedule, else the model's preset for a dub's MODE (the reference is a source frame)."""
    return run_schedule(request.guidance, pipe.sampling_defaults, pipe.variant, MODE)
