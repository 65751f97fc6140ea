"""Face boxes per video frame and face masks per latent frame (the focus-by-predicting targets).

Detector: OpenCV 4.x Haar cascades. Why this one:
- the cascade XML files ship inside the `opencv-python-headless` wheel (`cv2.data.haarcascades`), so nothing is
  downloaded at run time and tests work offline;
- it is fast on a CPU (a few ms per frame at the 256-px working size used here);
- OpenCV 5.x wheels dropped both the cascade files and `CascadeClassifier`, hence the pin
  `opencv-python-headless==4.14.0.94`; current mediapipe wheels ship no face model, and the better detectors
  (YuNet, RetinaFace, InsightFace) need weight files the user would have to fetch.
Haar is weak on profiles and small faces and makes false positives, so boxes are tracked (keep the candidate that
overlaps the previous box), median-smoothed and short gaps are interpolated. A user can pass any callable that
returns boxes (`FaceDetector`), or give per-frame ground-truth boxes in a sidecar JSON.

Mask layout (matches the engine's latent grid): F_lat = (frames - 1) / 4 + 1 latent frames; latent frame 0 covers
video frame 0, latent frame j >= 1 covers video frames 4j-3 .. 4j; each latent mask is the union (max) of that
group's face regions, area-averaged over 8x8 pixel cells -> float32 [F_lat, H/8, W/8] in [0, 1].
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from engine.errors import InputError

FaceDetector = Callable[[np.ndarray], np.ndarray]
"""frame RGB uint8 [H, W, 3] -> boxes float [N, 4] as (x0, y0, x1, y1) pixels."""

VAE_STRIDE = 8


class HaarFaceDetector:
    """Frontal-face Haar cascades from the OpenCV wheel; the first cascade that finds a face wins.

    `alt2` first (it finds drawn and real frontal faces more often than `default` at the same false-positive
    rate in our synthetic checks), `default` as the second try. Frames are downscaled so the short side is
    `work_size` pixels: faster, and Haar's 24-px window then covers faces from ~10 % of the frame height.
    """

    def __init__(
        self,
        cascades: Sequence[str] = ("haarcascade_frontalface_alt2.xml", "haarcascade_frontalface_default.xml"),
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 3,
        min_size_frac: float = 0.1,
        work_size: int = 256,
    ):
        self.classifiers = []
        for name in cascades:
            path = Path(cv2.data.haarcascades) / name
            classifier = cv2.CascadeClassifier(str(path))
            if classifier.empty():
                raise InputError(
                    f"Haar cascade {name} not found in {path.parent}; install opencv-python-headless 4.x (5.x has no cascades)",
                    field="faces",
                )
            self.classifiers.append(classifier)
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size_frac = min_size_frac
        self.work_size = work_size

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        scale = min(1.0, self.work_size / min(h, w))
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_side = max(20, int(self.min_size_frac * min(gray.shape)))
        for classifier in self.classifiers:
            found = classifier.detectMultiScale(
                gray, self.scale_factor, self.min_neighbors, minSize=(min_side, min_side)
            )
            if len(found):
                boxes = np.asarray(found, np.float32)
                boxes[:, 2:] += boxes[:, :2]  # (x, y, w, h) -> (x0, y0, x1, y1)
                return boxes / scale
        return np.zeros((0, 4), np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0 = np.maximum(a[0], b[:, 0])
    y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[2], b[:, 2])
    y1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-6)


def detect_boxes(frames: np.ndarray, detector: FaceDetector, *, every: int = 1) -> np.ndarray:
    """Raw per-frame boxes [T, 4] (NaN where no face): the candidate overlapping the previous box, else the largest."""
    boxes = np.full((len(frames), 4), np.nan, np.float32)
    previous = None
    for t in range(0, len(frames), max(1, every)):
        found = np.asarray(detector(frames[t]), np.float32).reshape(-1, 4)
        if not len(found):
            continue
        if previous is not None and _iou(previous, found).max() > 0:
            pick = found[int(np.argmax(_iou(previous, found)))]
        else:
            pick = found[int(np.argmax((found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])))]
        boxes[t] = previous = pick
    return boxes


def smooth_boxes(boxes: np.ndarray, *, radius: int = 2, max_gap: int = 5) -> np.ndarray:
    """Median over +-`radius` detected frames, then fill gaps of <= `max_gap` frames (linear inside, hold at ends)."""
    boxes = np.asarray(boxes, np.float32)
    valid = ~np.isnan(boxes).any(axis=1)
    out = np.full_like(boxes, np.nan)
    if not valid.any():
        return out
    for t in np.flatnonzero(valid):
        window = boxes[max(0, t - radius) : t + radius + 1]
        out[t] = np.nanmedian(window, axis=0)
    idx = np.flatnonzero(valid)
    for t in np.flatnonzero(~valid):
        before, after = idx[idx < t], idx[idx > t]
        if len(before) and len(after):
            a, b = before[-1], after[0]
            if b - a - 1 <= max_gap:
                w = (t - a) / (b - a)
                out[t] = (1 - w) * out[a] + w * out[b]
        elif len(before) and t - before[-1] <= max_gap:
            out[t] = out[before[-1]]
        elif len(after) and after[0] - t <= max_gap:
            out[t] = out[after[0]]
    return out


def track_faces(
    frames: np.ndarray, detector: FaceDetector | None = None, *, every: int = 1, radius: int = 2, max_gap: int = 5
) -> tuple[np.ndarray, float]:
    """Detect, track and smooth: (boxes [T, 4] with NaN where still unknown, fraction of frames with a detection)."""
    detector = detector or HaarFaceDetector()
    raw = detect_boxes(frames, detector, every=every)
    sampled = np.arange(len(frames)) % max(1, every) == 0
    fraction = float((~np.isnan(raw[sampled]).any(axis=1)).mean()) if len(frames) else 0.0
    return smooth_boxes(raw, radius=radius, max_gap=max(max_gap, every - 1)), fraction


def latent_frame_groups(frames: int) -> list[range]:
    """Video frames each latent frame covers: [0], [1..4], [5..8], ... (Wan VAE temporal stride 4)."""
    if frames < 1 or (frames - 1) % 4:
        raise InputError(f"frames must be 4n+1 (1, 5, 9, ..., 97), got {frames}", field="frames")
    return [range(0, 1)] + [range(4 * j - 3, 4 * j + 1) for j in range(1, (frames - 1) // 4 + 1)]


def expand_box(box: np.ndarray, factor: float) -> np.ndarray:
    """Grow a box by `factor` of its size (half on each side): Haar boxes stop at the brows and chin."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * factor / 2, (y1 - y0) * factor / 2
    return np.array([x0 - dx, y0 - dy, x1 + dx, y1 + dy], np.float32)


def rasterise(box: np.ndarray, size: tuple[int, int], *, shape: str = "box") -> np.ndarray:
    """Binary uint8 [H, W] of one face region (`shape` "box" or "ellipse" inscribed in the box)."""
    mask = np.zeros(size, np.uint8)
    if np.isnan(box).any():
        return mask
    x0, y0, x1, y1 = box
    if shape == "ellipse":
        centre = (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2)))
        axes = (max(1, int(round((x1 - x0) / 2))), max(1, int(round((y1 - y0) / 2))))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    elif shape == "box":
        h, w = size
        xa, xb = int(np.clip(np.floor(x0), 0, w)), int(np.clip(np.ceil(x1), 0, w))
        ya, yb = int(np.clip(np.floor(y0), 0, h)), int(np.clip(np.ceil(y1), 0, h))
        mask[ya:yb, xa:xb] = 1
    else:
        raise InputError(f"mask shape must be 'box' or 'ellipse', got {shape!r}", field="mask_shape")
    return mask


def face_masks(
    boxes: np.ndarray,
    size: tuple[int, int],
    *,
    expand: float = 0.15,
    shape: str = "box",
    stride: int = VAE_STRIDE,
) -> np.ndarray:
    """Per-latent-frame face masks float32 [F_lat, H/stride, W/stride] from per-frame boxes [T, 4] (T = 4n+1)."""
    height, width = size
    if height % stride or width % stride:
        raise InputError(f"size {size} must be divisible by {stride}", field="size")
    groups = latent_frame_groups(len(boxes))
    out = np.zeros((len(groups), height // stride, width // stride), np.float32)
    for j, group in enumerate(groups):
        union = np.zeros(size, np.uint8)
        for t in group:
            if not np.isnan(boxes[t]).any():
                union |= rasterise(expand_box(boxes[t], expand), size, shape=shape)
        out[j] = union.reshape(height // stride, stride, width // stride, stride).mean(axis=(1, 3))
    return out


def pool_to_tokens(mask: np.ndarray, patch: int = 2) -> np.ndarray:
    """[F, h, w] latent-grid mask -> [F, h/patch, w/patch] token-grid mask (area average; DiT patch 1x2x2)."""
    f, h, w = mask.shape
    return mask.reshape(f, h // patch, patch, w // patch, patch).mean(axis=(2, 4))


def load_face_sidecar(path: str | Path) -> dict:
    """Read a faces JSON: {"fps": 25, "size": [H, W], "boxes": [[x0, y0, x1, y1] | null, ...]} (a bare list = boxes)."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, list):
        data = {"boxes": data}
    if not isinstance(data, dict) or not isinstance(data.get("boxes"), list):
        raise InputError(
            f"{path}: faces JSON needs a 'boxes' list of [x0, y0, x1, y1] or null per frame", field="faces"
        )
    return data


def sidecar_boxes_for_clip(
    sidecar: dict,
    *,
    start: float,
    frames: int,
    fps: float,
    transform: tuple[float, float, float] = (1.0, 0.0, 0.0),
    source_fps: float | None = None,
) -> np.ndarray:
    """Boxes [frames, 4] of a cut clip from source-frame boxes: time-resampled, then scaled/cropped like the video."""
    src_fps = float(sidecar.get("fps") or source_fps or fps)
    raw = [b if b is not None else [np.nan] * 4 for b in sidecar["boxes"]]
    src = np.asarray(raw, np.float32).reshape(-1, 4)
    scale, ox, oy = transform
    out = np.full((frames, 4), np.nan, np.float32)
    for k in range(frames):
        i = int(round((start + k / fps) * src_fps))
        if 0 <= i < len(src):
            out[k] = src[i] * scale + np.array([ox, oy, ox, oy], np.float32)
    return out
