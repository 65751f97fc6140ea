"""Scores for videos of the synthetic world (issue #7): identity, text, sync and temporal stability.

- identity: closeness of skin and hair colours (chromaticity + log brightness, robust to the world's lighting)
  between the face in the reference image and the faces in the video, in [0, 1].
- text: how surely the video's background shows the colour the caption names, in [0, 1] (a softmax over the
  world's background colours of the distance to the measured border colour).
- sync: correlation of mouth motion with the audio envelope (training.filters.sync_score), in [-1, 1], and its lag.
- stability: mean absolute frame-to-frame change (lower is steadier), in pixel units.
"""

from __future__ import annotations

import numpy as np

from training.filters import sync_score
from training.synth import BACKGROUNDS


def reference_face_box(reference: np.ndarray):
    """The largest Haar detection in the reference image, or None (then the centre is used)."""
    from training.faces import HaarFaceDetector

    boxes = HaarFaceDetector()(reference)
    if len(boxes) == 0:
        return None
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[int(np.argmax(areas))]


def _region_colour(image: np.ndarray, box, top: float, bottom: float, left: float = 0.3, right: float = 0.7):
    """Median colour of a band of the face box (fractions of its height and width)."""
    h, w = image.shape[:2]
    if box is None or not np.all(np.isfinite(box)):
        box = (w * 0.25, h * 0.15, w * 0.75, h * 0.85)
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    ys = slice(max(0, int(y0 + top * bh)), min(h, max(int(y0 + top * bh) + 1, int(y0 + bottom * bh))))
    xs = slice(max(0, int(x0 + left * bw)), min(w, max(int(x0 + left * bw) + 1, int(x0 + right * bw))))
    return np.median(image[ys, xs].reshape(-1, 3).astype(np.float64), axis=0)


def appearance(image: np.ndarray, box) -> np.ndarray:
    """Skin (cheeks) and hair (top of the head) colours as chromaticity + log brightness: lighting in the world
    scales and tints colours, which mostly moves the brightness and leaves the chromaticity."""
    features = []
    for top, bottom, left, right in ((0.62, 0.75, 0.15, 0.35), (0.0, 0.1, 0.35, 0.65)):
        rgb = _region_colour(image, box, top, bottom, left, right) + 1.0
        features += [*(rgb[:2] / rgb.sum()), 0.1 * np.log(rgb.sum())]
    return np.array(features)


def identity_score(reference: np.ndarray, frames: np.ndarray, face_boxes: np.ndarray | None = None) -> float:
    """exp(-distance/0.05) between the reference's and the video's skin and hair colours, averaged over frames."""
    ref = appearance(reference, reference_face_box(reference))
    scores = []
    for index, frame in enumerate(frames):
        box = None if face_boxes is None else face_boxes[index]
        scores.append(np.exp(-np.linalg.norm(ref - appearance(frame, box)) / 0.05))
    return float(np.mean(scores))


def text_score(frames: np.ndarray, caption: str, temperature: float = 20.0) -> float:
    """Probability-like score that the background has the caption's colour; NaN if the caption names none."""
    words = caption.lower().replace(",", " ").split()
    named = next((c for c in BACKGROUNDS if f"{c} background" in caption.lower() or c in words), None)
    if named is None:
        return float("nan")
    border = np.concatenate(
        [frames[:, :4].reshape(-1, 3), frames[:, :, :4].reshape(-1, 3), frames[:, :, -4:].reshape(-1, 3)]
    )
    colour = border.astype(np.float64).mean(0)
    names = list(BACKGROUNDS)
    distances = np.array([np.linalg.norm(colour - np.array(BACKGROUNDS[n], np.float64)) for n in names])
    weights = np.exp(-(distances - distances.min()) / temperature)
    return float(weights[names.index(named)] / weights.sum())


def sync(frames: np.ndarray, face_boxes: np.ndarray, waveform: np.ndarray) -> tuple[float, int]:
    return sync_score(frames, face_boxes, waveform)


def stability(frames: np.ndarray) -> float:
    return float(np.abs(np.diff(frames.astype(np.float32), axis=0)).mean())


def score_video(frames, reference, caption, waveform, face_boxes) -> dict:
    corr, lag = sync(frames, face_boxes, waveform)
    return {
        "identity": identity_score(reference, frames, face_boxes),
        "text": text_score(frames, caption),
        "sync": corr,
        "sync_lag": lag,
        "stability": stability(frames),
    }
