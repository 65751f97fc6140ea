"""Reference images for training clips: given, from a same-identity image pool, or an augmented distant frame.

HuMo trains on cross-paired references (same person, different pose/clothes/background) so the model cannot
paste the reference into the video. Without a given reference we approximate that: a frame from another part of
the source video (outside the training window, preferring at least a second away), flipped, cropped around the
face and colour-jittered. With an image pool (`pool/<identity>/*.jpg`) a photo of the same person is used instead.
All choices are deterministic given the seed and the clip id.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np

from engine.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from strings/ints that is the same on every run and platform (unlike `hash`)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def load_image(path: str | Path) -> np.ndarray:
    """Any image file -> RGB uint8 [H, W, 3]; raises InputError when unreadable."""
    data = np.fromfile(str(path), np.uint8) if Path(path).is_file() else np.zeros(0, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise InputError(f"cannot read image {path}: use a jpg/png/webp file", field="reference")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def save_image(path: str | Path, image: np.ndarray) -> None:
    """RGB uint8 -> image file (format from the suffix), written atomically."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"cannot encode an image as {path.suffix}", field="reference")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


def pick_reference_frame(
    num_frames: int, window_start: int, window_frames: int, rng: np.random.Generator, *, min_distance: int = 25
) -> tuple[int, bool]:
    """(frame index in the source, whether it lies outside the training window).

    Prefers frames at least `min_distance` frames (1 s at 25 fps) away from the window, then any frame outside it,
    then (source no longer than the window) a frame inside it.
    """
    if num_frames < 1:
        raise InputError("the source has no frames to take a reference from", field="reference")
    idx = np.arange(num_frames)
    end = window_start + window_frames
    far = idx[(idx < window_start - min_distance) | (idx >= end + min_distance)]
    outside = idx[(idx < window_start) | (idx >= end)]
    for pool, is_outside in ((far, True), (outside, True), (idx[window_start:end], False)):
        if len(pool):
            return int(rng.choice(pool)), is_outside
    return int(rng.integers(num_frames)), False


def augment_reference(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    face_box: np.ndarray | None = None,
    flip_p: float = 0.5,
    crop_scale: tuple[float, float] = (0.7, 0.92),
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.25,
    hue_degrees: float = 8.0,
) -> np.ndarray:
    """Flip, crop (keeping the face inside when `face_box` is given) and colour-jitter; same output size."""
    h, w = image.shape[:2]
    out = image
    box = None if face_box is None or np.isnan(face_box).any() else np.asarray(face_box, np.float32).copy()
    if rng.random() < flip_p:
        out = out[:, ::-1]
        if box is not None:
            box[[0, 2]] = w - box[[2, 0]]
    low, high = crop_scale
    if box is not None:  # never crop tighter than the face (+15 % margin)
        need = 1.15 * max((box[2] - box[0]) / w, (box[3] - box[1]) / h)
        low, high = min(max(low, need), 1.0), min(max(high, need), 1.0)
    scale = float(rng.uniform(low, high))
    cw, ch = max(8, int(round(w * scale))), max(8, int(round(h * scale)))
    lo_x, hi_x, lo_y, hi_y = 0, w - cw, 0, h - ch
    if box is not None:  # the crop must contain the face when it fits
        lo_x, hi_x = max(0, int(np.ceil(box[2])) - cw), min(w - cw, int(np.floor(box[0])))
        lo_y, hi_y = max(0, int(np.ceil(box[3])) - ch), min(h - ch, int(np.floor(box[1])))
        if hi_x < lo_x:
            lo_x = hi_x = int(np.clip((box[0] + box[2] - cw) / 2, 0, w - cw))
        if hi_y < lo_y:
            lo_y = hi_y = int(np.clip((box[1] + box[3] - ch) / 2, 0, h - ch))
    x0 = int(rng.integers(lo_x, hi_x + 1))
    y0 = int(rng.integers(lo_y, hi_y + 1))
    out = cv2.resize(np.ascontiguousarray(out[y0 : y0 + ch, x0 : x0 + cw]), (w, h), interpolation=cv2.INTER_LINEAR)
    hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue_degrees, hue_degrees) / 2) % 180  # OpenCV hue is degrees / 2
    hsv[..., 1] *= 1 + rng.uniform(-saturation, saturation)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    mean = out.mean()
    out = (out - mean) * (1 + rng.uniform(-contrast, contrast)) + mean * (1 + rng.uniform(-brightness, brightness))
    return np.clip(out, 0, 255).astype(np.uint8)


class ImagePool:
    """User photos per identity: `root/<identity>/*.jpg|png|…`. Choice is deterministic in (seed, clip key)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(
                f"image pool {self.root} is not a folder; expected <pool>/<identity>/*.jpg", field="image_pool"
            )
        self.images: dict[str, list[Path]] = {}
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if files:
                self.images[folder.name] = files
        self._folded = {name.casefold(): name for name in self.images}

    @property
    def identities(self) -> list[str]:
        return list(self.images)

    def candidates(self, identity: str | None) -> list[Path]:
        if not identity:
            return []
        name = identity if identity in self.images else self._folded.get(str(identity).casefold())
        return self.images.get(name, []) if name else []

    def choose(self, identity: str | None, key: str, seed: int = 0) -> Path | None:
        """One image of `identity` (None when the pool has no such person)."""
        files = self.candidates(identity)
        if not files:
            return None
        return files[stable_seed(seed, key, "pool") % len(files)]
