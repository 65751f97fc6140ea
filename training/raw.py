"""`build_clips`: raw videos -> a folder of training clips + `manifest.jsonl` (the data half of `prepare`).

Per source video: probe -> cut windows of `frames` (4n+1) frames at `fps` (default 25), resized/cropped to `size`
-> 16 kHz mono wav (engine.audio's decode, the sampler's) -> speech check -> face boxes (detector or sidecar)
-> sync score -> face masks per latent frame -> reference image (given / image pool / augmented distant frame)
-> caption (given / captioner).

Output (`out_dir`):
    clips/<clip_id>/video.mp4      H.264 + AAC, exactly `frames` frames at `fps`
    clips/<clip_id>/audio.wav      16 kHz mono float32, exactly frames / fps seconds: the source's soundtrack as
                                   `engine.audio.load_audio` decodes it, cut to the window (lossless, so the cache
                                   encodes the samples the sampler would)
    clips/<clip_id>/reference.png
    clips/<clip_id>/face_mask.npy  uint8 [F_lat, H/8, W/8], 255 = face (see engine.faces)
    clips/<clip_id>/faces.json     per-frame boxes (x0, y0, x1, y1), null where unknown
    clips/<clip_id>/meta.json      the manifest entry; written last: its presence marks the clip done
    manifest.jsonl                 one entry per finished clip (rebuilt atomically from meta.json files)
    skipped.jsonl                  {"id", "source", "reason", "detail"} per skipped video/window
    state/<source_id>.json         per-video outcome, so a resumed run does not even re-probe finished videos
    prepare.json, report.json      settings of the folder, summary of the last run

Resumable: a clip whose meta.json exists is never redone; a finished video (state file with the same filter
settings) is not re-probed. Each clip is assembled in a temporary folder and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine import media
from engine.audio import SAMPLING_RATE, load_audio, write_wav
from engine.errors import InputError, MissingWeightsError
from engine.faces import (
    FaceDetector,
    HaarFaceDetector,
    face_masks,
    latent_frame_groups,
    load_face_sidecar,
    sidecar_boxes_for_clip,
    track_faces,
)
from training import clips
from training.filters import EnvelopeSyncScorer, SpeechConfig, SyncScorer, speech_ratio
from training.references import (
    ImagePool,
    augment_reference,
    load_image,
    pick_reference_frame,
    save_image,
    stable_seed,
)
from training.sources import SourceItem, read_source

log = logging.getLogger(__name__)

SKIP_REASONS = (
    "missing_file",
    "corrupt",
    "no_audio",
    "too_short",
    "no_speech",
    "no_face",
    "out_of_sync",
    "caption_failed",
    "bad_input",
    "error",
)


@dataclass
class Report:
    """What a `build_clips` run did. `skipped` counts reasons over all sources (this run and earlier ones)."""

    out_dir: Path
    manifest: Path
    layout: str
    sources: int = 0
    written: int = 0
    reused: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_items: list[dict] = field(default_factory=list)
    columns: dict = field(default_factory=dict)
    captioned: int = 0
    elapsed_s: float = 0.0

    @property
    def clips(self) -> int:
        """Clips in the manifest (written now + reused)."""
        return self.written + self.reused

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(
            out_dir=str(self.out_dir), manifest=str(self.manifest), skipped=dict(self.skipped), clips=self.clips
        )
        return data


class _Skip(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _write_lines(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    os.replace(tmp, path)


def _boxes_json(boxes: np.ndarray) -> list:
    return [None if np.isnan(b).any() else [round(float(v), 2) for v in b] for b in boxes]


@dataclass
class _Settings:
    frames: int
    fps: int
    size: tuple[int, int] | None
    speech: dict | None
    sync_threshold: float | None
    min_face_fraction: float
    face_source: str
    max_clips_per_video: int | None
    clip_stride: int
    seed: int

    def geometry(self) -> dict:
        return {"frames": self.frames, "fps": self.fps, "size": list(self.size) if self.size else None}

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Builder:
    def __init__(
        self, out_dir: Path, settings: _Settings, *, speech_config, captioner, sync_scorer, image_pool, detector
    ):
        self.out = out_dir
        self.s = settings
        self.speech_config = speech_config
        self.captioner = captioner
        self.sync_scorer = sync_scorer
        self.pool = image_pool
        self.detector = detector
        self.clips_dir = out_dir / "clips"
        self.state_dir = out_dir / "state"

    # --- one video -------------------------------------------------------------------------------------------
    def process_video(self, item: SourceItem, report: Report) -> dict:
        """Cut and check every window of one source; returns its state {clip_id: "done" | reason}."""
        if not item.video.is_file():
            raise _Skip("missing_file", str(item.video))
        try:
            info = clips.probe_source(item.video)
        except InputError as err:
            raise _Skip("corrupt", str(err)) from err
        if not info.has_video or info.width == 0:
            raise _Skip("corrupt", "no video stream")
        audio_src = item.audio
        if audio_src is not None and not audio_src.is_file():
            raise _Skip("missing_file", f"audio {audio_src}")
        if audio_src is None and not info.has_audio:
            raise _Skip("no_audio", "the video has no audio stream")
        total = info.frames_at(self.s.fps)
        if total < self.s.frames:
            raise _Skip("too_short", f"{total} frames at {self.s.fps} fps, need {self.s.frames}")
        size = self.s.size or (info.height // 16 * 16, info.width // 16 * 16)
        starts = list(range(0, total - self.s.frames + 1, self.s.clip_stride))[: self.s.max_clips_per_video]
        state: dict[str, dict] = {}
        waveform = None  # the whole soundtrack, decoded once per video when a window needs it
        for k, start in enumerate(starts):
            clip_id = f"{item.id}_{k:03d}"
            if (self.clips_dir / clip_id / "meta.json").is_file():
                report.reused += 1
                state[clip_id] = {"status": "done"}
                continue
            if waveform is None:
                waveform = _decode_audio(audio_src or item.video)
            try:
                self.process_window(item, info, clip_id, start, total, size, audio_src, waveform)
            except MissingWeightsError:
                raise  # the user must act (e.g. download the captioner): stop the run
            except Exception as err:  # noqa: BLE001 - one bad window must not stop a long run
                skip = err if isinstance(err, _Skip) else _Skip(*_classify(err))
                if not isinstance(err, (_Skip, InputError)):
                    log.exception("error on %s", clip_id)
                state[clip_id] = {"status": skip.reason, "detail": skip.detail}
                self._count_skip(report, clip_id, item, skip.reason, skip.detail)
                continue
            report.written += 1
            state[clip_id] = {"status": "done"}
        return state

    def _count_skip(self, report: Report, clip_id: str, item: SourceItem, reason: str, detail: str) -> None:
        log.info("skip %s: %s (%s)", clip_id, reason, detail)
        report.skipped[reason] += 1
        report.skipped_items.append({"id": clip_id, "source": str(item.video), "reason": reason, "detail": detail})

    # --- one window ------------------------------------------------------------------------------------------
    def process_window(self, item, info, clip_id, start, total, size, audio_src, waveform) -> None:
        s = self.s
        rng = np.random.default_rng(stable_seed(s.seed, clip_id))
        tmp = self.clips_dir / f".tmp-{clip_id}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            entry = self._build(item, info, clip_id, start, total, size, audio_src, waveform, rng, tmp)
            _write_json(tmp / "meta.json", entry)
            final = self.clips_dir / clip_id
            shutil.rmtree(final, ignore_errors=True)  # a leftover without meta.json is incomplete
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _build(self, item, info, clip_id, start, total, size, audio_src, source_audio, rng, tmp: Path) -> dict:
        s = self.s
        t0 = start / s.fps
        try:
            clips.cut_clip(
                item.video, tmp / "video.mp4", start=t0, frames=s.frames, fps=s.fps, size=size, audio_src=audio_src
            )
            frames = media.read_video_frames(tmp / "video.mp4")
        except (InputError, RuntimeError) as err:  # ffmpeg could not cut or decode it
            raise _Skip("corrupt", str(err)) from err
        if len(frames) < s.frames:
            raise _Skip("too_short", f"decoded {len(frames)} of {s.frames} frames")
        waveform = clips.audio_window(source_audio, start_frame=start, frames=s.frames, fps=s.fps)
        heard = min(len(waveform), max(0, len(source_audio) - start * SAMPLING_RATE // s.fps))
        if heard < len(waveform) // 2:
            raise _Skip("no_audio", f"audio has {heard} samples, need {len(waveform)}")
        write_wav(tmp / "audio.wav", waveform, dtype="float32")  # exactly frames / fps seconds, lossless

        ratio = speech_ratio(waveform, SAMPLING_RATE, self.speech_config or SpeechConfig())
        if self.speech_config is not None and ratio < self.speech_config.min_ratio:
            raise _Skip("no_speech", f"voiced ratio {ratio:.2f} < {self.speech_config.min_ratio}")

        boxes, face_fraction, face_source = self._faces(item, info, frames, t0, size)
        if face_fraction < s.min_face_fraction:
            raise _Skip("no_face", f"face in {face_fraction:.0%} of frames ({face_source})")

        corr, lag = self.sync_scorer(frames, boxes, waveform, SAMPLING_RATE)
        if s.sync_threshold is not None and corr < s.sync_threshold:
            raise _Skip("out_of_sync", f"sync score {corr:.3f} < {s.sync_threshold}")

        masks = face_masks(boxes, size)
        mask_u8 = np.round(masks * 255).astype(np.uint8)
        with open(tmp / "face_mask.npy", "wb") as f:
            np.save(f, mask_u8)
        _write_json(
            tmp / "faces.json", {"fps": s.fps, "size": list(size), "boxes": _boxes_json(boxes), "source": face_source}
        )

        ref_info = self._reference(item, clip_id, frames, boxes, start, total, size, rng, tmp / "reference.png")
        caption, caption_source = self._caption(item, frames)
        clip = f"clips/{clip_id}"
        speech_ok = ratio >= (self.speech_config or SpeechConfig()).min_ratio
        sync_ok = s.sync_threshold is None or corr >= s.sync_threshold
        return {
            "id": clip_id,
            "video": f"{clip}/video.mp4",
            "audio": f"{clip}/audio.wav",
            "reference": f"{clip}/reference.png",
            "face_mask": f"{clip}/face_mask.npy",
            "faces": f"{clip}/faces.json",
            "caption": caption,
            "caption_source": caption_source,
            **ref_info,
            "identity": item.identity,
            "source": str(item.video),
            "start": round(t0, 6),
            "end": round(t0 + s.frames / s.fps, 6),
            "frames": s.frames,
            "fps": s.fps,
            "height": size[0],
            "width": size[1],
            "latent_frames": len(latent_frame_groups(s.frames)),
            "speech_ratio": round(ratio, 4),
            "sync_score": round(float(corr), 4),
            "sync_lag": int(lag),
            "sync_scorer": getattr(self.sync_scorer, "name", type(self.sync_scorer).__name__),
            "face_fraction": round(face_fraction, 4),
            "face_source": face_source,
            "face_area": round(float(masks.mean()), 4),
            "task_ok": ["sp", "av"] if speech_ok and sync_ok else ["sp"],
        }

    def _faces(self, item, info, frames, t0, size) -> tuple[np.ndarray, float, str]:
        use_sidecar = self.s.face_source in ("auto", "sidecar") and item.faces is not None and item.faces.is_file()
        if use_sidecar:
            sidecar = load_face_sidecar(item.faces)
            src_size = tuple(sidecar.get("size") or (info.height, info.width))
            boxes = sidecar_boxes_for_clip(
                sidecar,
                start=t0,
                frames=len(frames),
                fps=self.s.fps,
                transform=clips.cover_crop_transform(src_size, size),
                source_fps=info.fps,
            )
            return boxes, float((~np.isnan(boxes).any(axis=1)).mean()), "sidecar"
        if self.s.face_source == "sidecar":
            return np.full((len(frames), 4), np.nan, np.float32), 0.0, "sidecar"
        boxes, fraction = track_faces(frames, self.detector)
        return boxes, fraction, "detector"

    def _reference(self, item, clip_id, frames, boxes, start, total, size, rng, dst: Path) -> dict:
        if item.reference is not None:
            try:
                save_image(dst, load_image(item.reference))
                return {"reference_source": "given", "reference_origin": str(item.reference)}
            except InputError as err:
                log.warning("%s: given reference unusable (%s); picking another", clip_id, err)
        if self.pool is not None:
            chosen = self.pool.choose(item.identity, clip_id, self.s.seed)
            if chosen is not None:
                save_image(dst, load_image(chosen))
                return {"reference_source": "pool", "reference_origin": str(chosen)}
        index, outside = pick_reference_frame(total, start, self.s.frames, rng)
        image = None
        if outside:
            try:
                image = clips.read_frame_at(item.video, index / self.s.fps, fps=self.s.fps, size=size)
            except RuntimeError as err:
                log.warning("%s: reference frame %d unreadable (%s); using a clip frame", clip_id, index, err)
        if image is None:  # inside the window (or the seek failed): take it from the decoded clip
            index, outside = (index if not outside else start + self.s.frames // 2), False
            image = frames[min(max(index - start, 0), len(frames) - 1)]
        found = self.detector(image) if self.detector is not None else np.zeros((0, 4))
        box = found[np.argmax((found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1]))] if len(found) else None
        if box is None:
            box = boxes[min(max(index - start, 0), len(boxes) - 1)]
        save_image(dst, augment_reference(image, rng, face_box=box))
        return {
            "reference_source": "self_frame",
            "reference_frame": int(index),
            "reference_outside_window": bool(outside),
        }

    def _caption(self, item, frames) -> tuple[str, str]:
        if item.caption:
            return item.caption, "given"
        if self.captioner is None:
            return "", "none"
        try:
            return str(self.captioner(frames)), "captioner"
        except MissingWeightsError:
            raise  # stop the run: the user must download the model
        except Exception as err:  # noqa: BLE001 - a bad clip must not stop a long run
            raise _Skip("caption_failed", f"{type(err).__name__}: {err}") from err


def _decode_audio(path: Path) -> np.ndarray:
    """A source's whole soundtrack as the sampler would decode it (16 kHz mono); a file whose track ffmpeg cannot
    decode is skipped as corrupt."""
    try:
        return load_audio(path)
    except InputError as err:
        raise _Skip("corrupt", str(err)) from err


def _classify(err: Exception) -> tuple[str, str]:
    """Skip reason for an unexpected per-window error: bad user input (e.g. a malformed sidecar) or an error."""
    reason = "bad_input" if isinstance(err, InputError) else "error"
    return reason, f"{type(err).__name__}: {err}"


def build_clips(
    source: str | Path,
    out_dir: str | Path,
    *,
    frames: int = 97,
    fps: int = 25,
    size: tuple[int, int] | None = (480, 832),
    captioner: Callable[[np.ndarray], str] | None = None,
    speech_filter: bool | SpeechConfig = True,
    sync_threshold: float | None = None,
    sync_scorer: SyncScorer | None = None,
    image_pool: str | Path | ImagePool | None = None,
    seed: int = 0,
    layout: str | None = None,
    max_clips_per_video: int | None = 1,
    clip_stride: int | None = None,
    face_source: str = "auto",
    face_detector: FaceDetector | None = None,
    min_face_fraction: float = 0.5,
    progress: bool = True,
) -> Report:
    """Turn a HuMoSet folder, a folder of videos with sidecars, or a JSONL manifest into training clips.

    frames: 4n+1 frames per clip at `fps`; size: (H, W) multiples of 16, or None to keep the source size (cropped
    to multiples of 16). speech_filter: True / a `SpeechConfig` drops clips without speech (False only records
    the ratio). sync_threshold: drop clips whose sync score is lower (None records the score only).
    image_pool: folder `pool/<identity>/*` used for the reference when the clip has none. face_source: "auto"
    (sidecar boxes when given, else the detector), "detect" or "sidecar". max_clips_per_video: windows per video
    (None = all), `clip_stride` frames apart (default `frames`, i.e. non-overlapping).
    """
    latent_frame_groups(frames)  # validates 4n+1
    if frames < 5:
        raise InputError(f"frames must be at least 5, got {frames}", field="frames")
    if fps <= 0:
        raise InputError(f"fps must be positive, got {fps}", field="fps")
    clips.check_even_size(tuple(size) if size else None)
    if face_source not in ("auto", "detect", "sidecar"):
        raise InputError(f"face_source must be auto|detect|sidecar, got {face_source!r}", field="face_source")
    if max_clips_per_video is not None and max_clips_per_video < 1:
        raise InputError("max_clips_per_video must be >= 1 or None", field="max_clips_per_video")
    speech_config = (
        speech_filter if isinstance(speech_filter, SpeechConfig) else (SpeechConfig() if speech_filter else None)
    )
    settings = _Settings(
        frames=frames,
        fps=fps,
        size=tuple(size) if size else None,
        speech=asdict(speech_config) if speech_config else None,
        sync_threshold=sync_threshold,
        min_face_fraction=min_face_fraction,
        face_source=face_source,
        max_clips_per_video=max_clips_per_video,
        clip_stride=clip_stride or frames,
        seed=seed,
    )
    out = Path(out_dir)
    _check_folder(out, settings)
    info = read_source(source, layout)
    pool = image_pool if isinstance(image_pool, ImagePool) or image_pool is None else ImagePool(image_pool)
    builder = _Builder(
        out,
        settings,
        speech_config=speech_config,
        captioner=captioner,
        sync_scorer=sync_scorer or EnvelopeSyncScorer(),
        image_pool=pool,
        detector=face_detector or HaarFaceDetector(),
    )
    report = Report(out, out / "manifest.jsonl", info.layout, sources=len(info.items), columns=dict(info.columns))
    started = time.monotonic()
    states: dict[str, dict] = {}
    from tqdm.auto import tqdm

    bar = tqdm(info.items, desc="prepare", unit="video", disable=not progress)
    for n, item in enumerate(bar):
        states[item.id] = _process_item(builder, item, report, settings.key())
        bar.set_postfix(clips=report.clips, skipped=sum(report.skipped.values()))
        if (n + 1) % 50 == 0:
            _write_outputs(out, info.items, states)
    bar.close()
    _write_outputs(out, info.items, states)
    report.captioned = sum(1 for e in _entries(out, info.items, states) if e.get("caption_source") == "captioner")
    report.elapsed_s = round(time.monotonic() - started, 3)
    _write_json(out / "report.json", report.to_dict())
    return report


def _check_folder(out: Path, settings: _Settings) -> None:
    """Create the output folder or check it was built with the same clip geometry."""
    (out / "clips").mkdir(parents=True, exist_ok=True)
    (out / "state").mkdir(exist_ok=True)
    marker = out / "prepare.json"
    if marker.is_file():
        previous = json.loads(marker.read_text()).get("geometry")
        if previous != settings.geometry():
            raise InputError(
                f"{out} holds clips with {previous}, not {settings.geometry()}: use another output folder",
                field="out_dir",
            )
    _write_json(marker, {"geometry": settings.geometry(), "settings": asdict(settings)})


def _process_item(builder: _Builder, item: SourceItem, report: Report, key: str) -> dict:
    """Run one source video (or reuse its finished state) and persist the outcome."""
    state_file = builder.state_dir / f"{item.id}.json"
    if state_file.is_file():
        saved = json.loads(state_file.read_text())
        windows = saved.get("windows", {})
        done_ok = all(
            (builder.clips_dir / c / "meta.json").is_file() for c, w in windows.items() if w["status"] == "done"
        )
        if saved.get("key") == key and done_ok:
            for clip_id, w in windows.items():
                if w["status"] == "done":
                    report.reused += 1
                else:
                    builder._count_skip(report, clip_id, item, w["status"], w.get("detail", ""))
            return windows
    try:
        windows = builder.process_video(item, report)
    except MissingWeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - one broken file must not stop a long run
        skip = err if isinstance(err, _Skip) else _Skip(*_classify(err))
        if not isinstance(err, (_Skip, InputError)):
            log.exception("error on %s", item.video)
        windows = {item.id: {"status": skip.reason, "detail": skip.detail}}
        builder._count_skip(report, item.id, item, skip.reason, skip.detail)
    _write_json(state_file, {"key": key, "source": str(item.video), "windows": windows})
    return windows


def _entries(out: Path, items: list[SourceItem], states: dict[str, dict]) -> list[dict]:
    rows = []
    for item in items:
        for clip_id, w in states.get(item.id, {}).items():
            meta = out / "clips" / clip_id / "meta.json"
            if w["status"] == "done" and meta.is_file():
                rows.append(json.loads(meta.read_text()))
    return rows


def _write_outputs(out: Path, items: list[SourceItem], states: dict[str, dict]) -> None:
    _write_lines(out / "manifest.jsonl", _entries(out, items, states))
    skipped = []
    for item in items:
        for clip_id, w in states.get(item.id, {}).items():
            if w["status"] != "done":
                skipped.append(
                    {"id": clip_id, "source": str(item.video), "reason": w["status"], "detail": w.get("detail", "")}
                )
    _write_lines(out / "skipped.jsonl", skipped)
