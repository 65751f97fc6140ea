"""Clip filters for stage-2 data: is there speech, and do the lips follow it?

- `speech_ratio`: energy-based voice activity. The waveform is cut into 30 ms frames; a frame is voiced when its
  level is `margin_db` above the clip's own noise floor (a low percentile of frame levels, so the threshold adapts
  to the recording) and above an absolute floor, and (optionally) its spectrum is not flat (voiced speech is
  harmonic, hiss and hum-free noise are flat). No model: the paper's speech enhancement + VAD step is approximated.
- `sync_score`: mouth-region motion energy per video frame (lower third of the face box, frame differences)
  against the audio RMS envelope at the video frame rate (by default its frame-to-frame change, see
  `sync_score`); the best normalised cross-correlation over lags in [-max_lag, max_lag] frames, and that lag. A cheap stand-in for SyncNet's confidence/offset (Sync-C / Sync-D).
- `SyncScorer`: the hook for a learned scorer (e.g. LatentSync's SyncNet) when the user supplies weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from engine.errors import InputError, MissingWeightsError

SAMPLING_RATE = 16000


@dataclass(frozen=True)
class SpeechConfig:
    """Voice-activity settings (see module docstring). `min_ratio`: clips with a smaller voiced share are dropped."""

    frame_ms: float = 30.0
    margin_db: float = 10.0
    floor_percentile: float = 10.0
    min_level_db: float = -50.0
    max_flatness: float | None = 0.3
    min_ratio: float = 0.2


def _frames(waveform: np.ndarray, size: int) -> np.ndarray:
    n = len(waveform) // size
    return np.asarray(waveform[: n * size], np.float32).reshape(n, size)


def speech_ratio(waveform: np.ndarray, sampling_rate: int = SAMPLING_RATE, config: SpeechConfig | None = None) -> float:
    """Fraction of 30 ms frames that look voiced (0 for silence, white noise or a too-short waveform)."""
    config = config or SpeechConfig()
    frames = _frames(waveform, max(1, int(sampling_rate * config.frame_ms / 1000)))
    if len(frames) == 0:
        return 0.0
    level = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    threshold = max(float(np.percentile(level, config.floor_percentile)) + config.margin_db, config.min_level_db)
    voiced = level > threshold
    if config.max_flatness is not None:
        power = np.abs(np.fft.rfft(frames * np.hanning(frames.shape[1]), axis=1)) ** 2 + 1e-12
        flatness = np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)
        voiced &= flatness < config.max_flatness
    return float(voiced.mean())


def has_speech(waveform: np.ndarray, sampling_rate: int = SAMPLING_RATE, config: SpeechConfig | None = None) -> bool:
    config = config or SpeechConfig()
    return speech_ratio(waveform, sampling_rate, config) >= config.min_ratio


def audio_envelope(
    waveform: np.ndarray, frames: int, *, fps: int = 25, sampling_rate: int = SAMPLING_RATE
) -> np.ndarray:
    """RMS of the audio under each video frame -> [frames] (zero past the end of the waveform)."""
    hop = sampling_rate // fps
    padded = np.zeros(frames * hop, np.float32)
    n = min(len(waveform), frames * hop)
    padded[:n] = waveform[:n]
    return np.sqrt((padded.reshape(frames, hop) ** 2).mean(axis=1))


def _fill_boxes(face_boxes: np.ndarray) -> np.ndarray | None:
    """Replace NaN boxes by the nearest valid one (sync needs a crop on every frame)."""
    boxes = np.asarray(face_boxes, np.float32).reshape(-1, 4)
    valid = np.flatnonzero(~np.isnan(boxes).any(axis=1))
    if not len(valid):
        return None
    nearest = valid[np.abs(np.arange(len(boxes))[:, None] - valid[None]).argmin(axis=1)]
    return boxes[nearest]


def mouth_crops(frames: np.ndarray, face_boxes: np.ndarray, *, crop: tuple[int, int] = (16, 32)) -> np.ndarray | None:
    """Grayscale lower-third-of-face crops, resized to `crop` (H, W): float32 [T, H, W] in [0, 1]."""
    boxes = _fill_boxes(face_boxes)
    if boxes is None:
        return None
    h, w = frames.shape[1:3]
    out = np.empty((len(frames), *crop), np.float32)
    for t, (frame, (x0, y0, x1, y1)) in enumerate(zip(frames, boxes)):
        ya = int(np.clip(y0 + (y1 - y0) * 2 / 3, 0, h - 1))
        yb = int(np.clip(np.ceil(y1), ya + 1, h))
        xa = int(np.clip(x0, 0, w - 1))
        xb = int(np.clip(np.ceil(x1), xa + 1, w))
        gray = cv2.cvtColor(np.ascontiguousarray(frame[ya:yb, xa:xb]), cv2.COLOR_RGB2GRAY)
        out[t] = cv2.resize(gray, crop[::-1], interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return out


def mouth_motion(frames: np.ndarray, face_boxes: np.ndarray) -> np.ndarray:
    """Mouth motion energy per frame [T]: mean |crop_t - crop_(t-1)| (frame 0 copies frame 1; zeros without a face)."""
    crops = mouth_crops(frames, face_boxes)
    if crops is None or len(crops) < 2:
        return np.zeros(len(frames), np.float32)
    diff = np.abs(np.diff(crops, axis=0)).mean(axis=(1, 2))
    return np.concatenate([diff[:1], diff]).astype(np.float32)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 1e-12 else 0.0


def best_lag_correlation(video: np.ndarray, audio: np.ndarray, *, max_lag: int = 5, min_overlap: int = 8):
    """max over lags L in [-max_lag, max_lag] of corr(video[t], audio[t - L]); L > 0: the video lags the audio."""
    best, best_lag = -1.0, 0
    n = min(len(video), len(audio))
    for lag in range(-max_lag, max_lag + 1):
        v = video[max(0, lag) : n + min(0, lag)]
        a = audio[max(0, -lag) : n - max(0, lag)]
        if len(v) < min_overlap:
            continue
        r = _pearson(v, a)
        if r > best or (r == best and abs(lag) < abs(best_lag)):
            best, best_lag = r, lag
    return best, best_lag


def sync_score(
    frames: np.ndarray,
    face_boxes: np.ndarray,
    waveform: np.ndarray,
    *,
    sampling_rate: int = SAMPLING_RATE,
    fps: int = 25,
    max_lag: int = 5,
    audio_feature: str = "envelope_change",
) -> tuple[float, int]:
    """(corr, lag_frames): how well mouth motion follows the audio loudness. corr in [-1, 1]; -1 when no face.

    `audio_feature`: "envelope_change" (default) = |frame-to-frame change of the RMS envelope|, "envelope" = the
    RMS envelope itself. Motion energy is a frame difference, i.e. it measures how fast the mouth opens or closes,
    so it matches the envelope's change rather than its level; on the synthetic clips the matched/mismatched
    correlations are ~0.84 / ~0.25 with "envelope_change" and ~0.41 / ~0.23 with "envelope".
    """
    motion = mouth_motion(frames, face_boxes)
    if not motion.any():
        return -1.0, 0
    envelope = audio_envelope(waveform, len(frames), fps=fps, sampling_rate=sampling_rate)
    if audio_feature == "envelope_change":
        envelope = np.abs(np.diff(envelope, prepend=envelope[:1]))
    elif audio_feature != "envelope":
        raise InputError(
            f"audio_feature must be 'envelope_change' or 'envelope', got {audio_feature!r}", field="audio_feature"
        )
    corr, lag = best_lag_correlation(motion, envelope, max_lag=max_lag)
    return float(corr), int(lag)


@runtime_checkable
class SyncScorer(Protocol):
    """Scores lip sync of a clip: (confidence, offset in video frames). Higher confidence = better sync.

    frames: RGB uint8 [T, H, W, 3] at 25 fps; face_boxes: float [T, 4] (x0, y0, x1, y1), NaN rows allowed;
    waveform: float32 mono at `sampling_rate`.
    """

    def __call__(
        self, frames: np.ndarray, face_boxes: np.ndarray, waveform: np.ndarray, sampling_rate: int = SAMPLING_RATE
    ) -> tuple[float, int]: ...


class EnvelopeSyncScorer:
    """The default scorer: `sync_score` (motion/envelope correlation). Scores are correlations, not Sync-C."""

    name = "envelope"

    def __init__(self, max_lag: int = 5):
        self.max_lag = max_lag

    def __call__(self, frames, face_boxes, waveform, sampling_rate: int = SAMPLING_RATE) -> tuple[float, int]:
        return sync_score(frames, face_boxes, waveform, sampling_rate=sampling_rate, max_lag=self.max_lag)


class TorchScriptSyncScorer:
    """A learned scorer exported by the user as TorchScript (e.g. LatentSync's SyncNet wrapped with its preprocessing).

    Interface of the scripted module: `forward(mouth: float32 [T, 3, 48, 96] in [0, 1] (RGB lower-face crops, 25 fps),
    waveform: float32 [N] mono 16 kHz) -> float32 tensor [2] = (confidence, offset_frames)`. SyncNet itself is not
    re-implemented here: its weights are not redistributable inside this project.
    """

    name = "torchscript"

    def __init__(self, module, device: str = "cpu"):
        self.module = module
        self.device = device

    def __call__(self, frames, face_boxes, waveform, sampling_rate: int = SAMPLING_RATE) -> tuple[float, int]:
        import torch

        if sampling_rate != SAMPLING_RATE:
            raise InputError(f"the SyncNet scorer needs 16 kHz audio, got {sampling_rate} Hz", field="audio")
        boxes = _fill_boxes(face_boxes)
        if boxes is None:
            return -1.0, 0
        h, w = frames.shape[1:3]
        crops = []
        for frame, (x0, y0, x1, y1) in zip(frames, boxes):
            ya, yb = int(np.clip(y0 + (y1 - y0) / 2, 0, h - 1)), int(np.clip(np.ceil(y1), 1, h))
            xa, xb = int(np.clip(x0, 0, w - 1)), int(np.clip(np.ceil(x1), 1, w))
            crops.append(cv2.resize(np.ascontiguousarray(frame[ya : max(yb, ya + 1), xa : max(xb, xa + 1)]), (96, 48)))
        mouth = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0).to(self.device)
        with torch.no_grad():
            out = self.module(mouth, torch.from_numpy(np.asarray(waveform, np.float32)).to(self.device))
        values = out.flatten().tolist() if hasattr(out, "flatten") else [float(v) for v in out]
        return float(values[0]), int(round(values[1]))


def load_sync_scorer(weights: str | Path | None = None, *, device: str = "cpu") -> SyncScorer:
    """No weights: the envelope scorer. A path: a TorchScript SyncNet-style module (see `TorchScriptSyncScorer`)."""
    if weights is None:
        return EnvelopeSyncScorer()
    path = Path(weights)
    if not path.is_file():
        raise MissingWeightsError(
            f"SyncNet weights not found at {path}. Export a SyncNet (e.g. LatentSync's) to TorchScript with the "
            "interface described in training.filters.TorchScriptSyncScorer and pass its path, or leave the "
            "weights unset to use the built-in motion/envelope score."
        )
    import torch

    try:
        module = torch.jit.load(str(path), map_location=device)
    except RuntimeError as err:
        raise InputError(
            f"{path} is not a TorchScript module ({err.__class__.__name__}). A plain state_dict cannot be used: "
            "script the model with its preprocessing (torch.jit.script/trace) and save that.",
            field="sync_weights",
        ) from err
    module.eval()
    return TorchScriptSyncScorer(module, device)
