"""Scores for videos of the synthetic world (issue #7): identity, text, sync and temporal stability.

Every score works on generated 64x64 videos, where no face detector does: faces are found by colour.

- identity: the skin-to-shirt colour ratios of the reference and of the video (ratios of two colours of one frame
  do not change with the world's lights, which scale and tint whole frames), as exp(-distance / 0.25) in [0, 1].
- text: how surely the video's background shows the colour the caption names, in [0, 1] (a softmax over the
  world's background colours under each of its lights, of the distance to the measured border colour).
- sync: correlation of the mouth opening with the audio envelope in [-1, 1] at the best lag within +-5 frames, and
  that lag, on face boxes from `locate_faces` (the video's own skin blob), a small analogue of Sync-C / Sync-D.
  (The opening, a level, rather than mouth motion, a frame difference, as training.filters.sync_score uses for real
  clips: a video VAE's decoder flickers where one latent frame hands over to the next, every 4 frames, and that
  flicker reads as mouth motion but not as an opening.)
- stability: mean absolute frame-to-frame change (lower is steadier), in pixel units."""

from __future__ import annotations

import cv2
import numpy as np

from training.filters import audio_envelope, best_lag_correlation
from training.synth import BACKGROUNDS, LIGHTING

WALL_RAMP = 0.94  # mean brightness of the border pixels under the world's top-lit wall ramp (0.85 .. 1.1)


def shirt_colour(image: np.ndarray) -> np.ndarray:
    """Median colour of the bottom-centre patch: the torso, which every framing of the world puts there."""
    h, w = image.shape[:2]
    patch = image[int(0.92 * h) :, int(0.42 * w) : int(0.58 * w)].reshape(-1, 3).astype(np.float64)
    return np.median(patch, axis=0)


def appearance(image: np.ndarray) -> np.ndarray:
    """Identity features of one image: log(skin) - log(shirt) per channel. The world's lights scale every colour of
    a frame by one gain and one per-channel tint, so a ratio of two colours of the same frame does not change with
    the light (a reference is lit differently from its clip by design)."""
    return np.log(skin_colour(image).astype(np.float64) + 8.0) - np.log(shirt_colour(image) + 8.0)


def identity_score(reference: np.ndarray, frames: np.ndarray, scale: float = 0.25) -> float:
    """exp(-distance/scale) between the reference's and the video's identity features, averaged over frames."""
    ref = appearance(reference)
    step = max(1, len(frames) // 12)  # a dozen frames are enough; the person does not change within a clip
    return float(np.mean([np.exp(-np.linalg.norm(ref - appearance(f)) / scale) for f in frames[::step]]))


def text_score(frames: np.ndarray, caption: str, temperature: float = 20.0) -> float:
    """Probability-like score that the background has the caption's colour; NaN if the caption names none.

    The measured border colour is compared with every background colour under every light of the world (gain and
    tint), and the probability mass of the named colour is summed over the lights."""
    text = caption.lower()
    words = text.replace(",", " ").replace(".", " ").split()
    # "<colour> background" first: captions also name hair colours ("red hair") that are background colours too
    named = next((c for c in BACKGROUNDS if f"{c} background" in text), None)
    named = named or next((c for c in BACKGROUNDS if c in words), None)
    if named is None:
        return float("nan")
    border = np.concatenate(
        [frames[:, :4].reshape(-1, 3), frames[:, :, :4].reshape(-1, 3), frames[:, :, -4:].reshape(-1, 3)]
    )
    colour = np.median(border.astype(np.float64), axis=0)  # objects and the torso also touch the border
    names = list(BACKGROUNDS)
    expected = {
        (name, light): np.clip(np.array(BACKGROUNDS[name]) * WALL_RAMP * gain * np.array(tint), 0, 255)
        for name in names
        for light, (gain, tint) in LIGHTING.items()
    }
    distances = {key: np.linalg.norm(colour - value) for key, value in expected.items()}
    low = min(distances.values())
    weights = {key: np.exp(-(d - low) / temperature) for key, d in distances.items()}
    return float(sum(v for (name, _), v in weights.items() if name == named) / sum(weights.values()))


def skin_colour(image: np.ndarray) -> np.ndarray:
    """The face's skin colour (RGB float) without a face box: the most common colour of the central window once
    pixels near the background colour (the image border) and dark pixels (hair, eyes, shadows) are left out.
    Works on frames too small for a face detector (the nano model's 64x64)."""
    h, w = image.shape[:2]
    pixels = image.astype(np.float32)
    border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)])
    background = np.median(border, axis=0)
    centre = pixels[int(0.25 * h) : int(0.75 * h), int(0.3 * w) : int(0.7 * w)].reshape(-1, 3)
    keep = (np.linalg.norm(centre - background, axis=1) > 40) & (centre.sum(axis=1) > 150)
    if keep.sum() < 4:
        return np.median(centre, axis=0)
    candidates = centre[keep]
    bins = (candidates // 24).astype(np.int64)
    keys = bins[:, 0] * 10000 + bins[:, 1] * 100 + bins[:, 2]
    values, counts = np.unique(keys, return_counts=True)
    return candidates[keys == values[np.argmax(counts)]].mean(axis=0)


def locate_faces(
    frames: np.ndarray, *, skin_distance: float = 45.0, background_distance: float = 60.0, smooth: int = 5
) -> np.ndarray:
    """Face boxes [T, 4] (NaN where none) in a generated video, found by the video's own skin colour.

    Generated frames are too small and soft for a face detector, and their head motion is the model's own (not a
    clip's ground truth), so the scores need boxes found in the video itself. Skin: pixels within `skin_distance`
    (RGB) of the clip's skin colour and more than `background_distance` from the frame's border colour (a clip
    keeps one light, so full colour separates skin from a wall of similar hue, which chromaticity alone did not
    once the VAE blurs the edge between them); the largest such blob is the face. Its widest row gives the face
    width and centre column; the height follows from the world's mean face aspect. The centre row comes from the
    chin, the lowest row still half as wide as the face (an ellipse is half as wide at 0.87 of its half height):
    the neck below is narrower, while the widest row wanders between brows and cheeks once the face is blurred.
    Boxes are median-smoothed over `smooth` frames so box jitter does not read as mouth motion.
    """
    skin = np.median([skin_colour(f) for f in frames[:: max(1, len(frames) // 8)]], axis=0)
    boxes = np.full((len(frames), 4), np.nan, np.float32)
    for t, frame in enumerate(frames):
        blob = _skin_blob(frame.astype(np.float32), skin, skin_distance, background_distance)
        if blob is not None:
            boxes[t] = _box_of_blob(blob)
    return _median_smooth(boxes, smooth)


FACE_ASPECT = 0.74  # the world's mean face width / height
_CHIN_WIDTH = 0.5  # the chin row: the lowest row at least this share of the face width


def _skin_blob(pixels: np.ndarray, skin: np.ndarray, skin_distance: float, background_distance: float):
    """The largest connected skin-coloured region (bool [H, W]), or None when it is under 1% of the frame."""
    h, w = pixels.shape[:2]
    border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)])
    wall = np.median(border, axis=0)
    # a wall close to the skin colour leaves skin pixels nearer than `background_distance`: take half the gap then
    background_distance = min(background_distance, 0.5 * float(np.linalg.norm(skin - wall)))
    near_skin = np.linalg.norm(pixels - skin, axis=-1) < skin_distance
    off_wall = np.linalg.norm(pixels - wall, axis=-1) > background_distance
    mask = cv2.morphologyEx((near_skin & off_wall).astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    if count < 2:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best if stats[best, cv2.CC_STAT_AREA] >= 0.01 * h * w else None


def _box_of_blob(blob: np.ndarray) -> tuple[float, float, float, float]:
    counts = np.convolve(blob.sum(axis=1).astype(np.float32), np.ones(3) / 3, mode="same")
    widest = int(round(np.mean(np.flatnonzero(counts >= 0.9 * counts.max()))))
    cols = np.flatnonzero(blob[widest]) if blob[widest].any() else np.flatnonzero(blob.any(0))
    cx, rx = (cols[0] + cols[-1] + 1) / 2, (cols[-1] + 1 - cols[0]) / 2
    extents = np.zeros(len(blob), np.float32)
    for y, row in enumerate(blob):
        if row.any():
            xs = np.flatnonzero(row)
            extents[y] = xs[-1] + 1 - xs[0]
    extents = np.convolve(extents, np.ones(3) / 3, mode="same")
    chin = np.flatnonzero(extents >= _CHIN_WIDTH * extents.max())[-1] + 0.5
    ry = rx / FACE_ASPECT
    cy = chin - np.sqrt(1 - _CHIN_WIDTH**2) * (extents.max() / 2) / FACE_ASPECT
    return (cx - rx, cy - ry, cx + rx, cy + ry)


def _median_smooth(boxes: np.ndarray, window: int) -> np.ndarray:
    out = boxes.copy()
    half = window // 2
    for t in range(len(boxes)):
        near = boxes[max(0, t - half) : t + half + 1]
        near = near[np.isfinite(near).all(axis=1)]
        if len(near) and np.isfinite(boxes[t]).all():
            out[t] = np.median(near, axis=0)
    return out


def mouth_opening(frames: np.ndarray, face_boxes: np.ndarray, *, distance: float = 60.0) -> np.ndarray:
    """[T] in [0, 1]: the share of the mouth window (below the nostrils, 0.27..0.8 of the face's half height under its
    centre, the middle 0.64 of its width) whose colour is far from the frame's skin colour. Lips and the dark inside
    of the mouth are; the world draws both taller as the mouth opens. 0 where there is no box."""
    out = np.zeros(len(frames), np.float32)
    for t, (frame, box) in enumerate(zip(frames, face_boxes)):
        if not np.isfinite(box).all():
            continue
        x0, y0, x1, y1 = box
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        top, bottom = max(0, int(round(cy + 0.27 * ry))), int(round(cy + 0.8 * ry)) + 1
        left, right = max(0, int(round(cx - 0.32 * rx))), int(round(cx + 0.32 * rx)) + 1
        window = frame[top:bottom, left:right].reshape(-1, 3).astype(np.float32)
        if len(window):
            out[t] = float((np.linalg.norm(window - skin_colour(frame), axis=1) > distance).mean())
    return out


def sync(frames: np.ndarray, face_boxes: np.ndarray, waveform: np.ndarray, max_lag: int = 5) -> tuple[float, int]:
    """(corr, lag): the mouth opening against the audio's loudness (RMS per frame); lag > 0: the video is late."""
    opening = mouth_opening(frames, face_boxes)
    if not opening.any():
        return -1.0, 0
    return best_lag_correlation(opening, audio_envelope(waveform, len(frames)), max_lag=max_lag)


def stability(frames: np.ndarray) -> float:
    return float(np.abs(np.diff(frames.astype(np.float32), axis=0)).mean())


def score_video(frames, reference, caption, waveform, face_boxes=None) -> dict:
    """Every score of one video; face boxes default to `locate_faces` (generated videos have no ground truth)."""
    face_boxes = locate_faces(frames) if face_boxes is None else face_boxes
    corr, lag = sync(frames, face_boxes, waveform)
    return {
        "identity": identity_score(reference, frames),
        "text": text_score(frames, caption),
        "sync": corr,
        "sync_lag": lag,
        "stability": stability(frames),
    }
