"""A small synthetic talking-head world: clips, speech-like audio, captions, references and exact face boxes.

Each clip shows a drawn character (an `Identity`) in a drawn place (a `Scene`). The mouth opening follows the
loudness envelope of the clip's synthetic speech (voiced syllables: harmonic tones with a pitch contour, a
syllable rhythm and pauses, 16 kHz), so audio and lips are in sync by construction. The caption is generated
from the identity and scene vocabularies, so text is computable from the pixels too. Reference images show the
same character with another pose, lighting and background (cross-paired, so pixels cannot be copied).

The world is meant to grow (issue #7): identities and scenes are dataclasses sampled from the vocabularies below;
adding a field or a vocabulary entry changes drawing and captions in one place each.

Faces are drawn with enough eye/brow/nose/mouth contrast for OpenCV's Haar frontal cascade at >= ~48 px face
height (hence the default 128x128 frames): measured over 60 random characters, the detector finds the face in
~97 % of frames at 128x128 and ~92 % at 480x832 (dark skin is the weak case, ~70 % at 480x832, as with real
photos). The exact boxes are also written to a `<name>.faces.json` sidecar, which
`build_clips(face_source="auto")` uses instead of the detector when present.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from engine.audio import SAMPLING_RATE, write_wav
from engine.errors import InputError
from engine.media import write_video

FPS = 25

# --- vocabularies (name -> RGB) ---------------------------------------------------------------------------------
SKIN_TONES = {
    "pale": (240, 210, 188),
    "light": (226, 186, 156),
    "tan": (204, 152, 112),
    "brown": (166, 114, 80),
    "dark": (120, 80, 56),
}
HAIR_COLOURS = {
    "black": (28, 24, 22),
    "brown": (92, 60, 36),
    "blond": (214, 184, 118),
    "red": (164, 66, 34),
    "grey": (150, 150, 150),
}
HAIR_STYLES = ("short", "long", "bald")
FACE_SHAPES = {"oval": 0.74, "round": 0.86, "long": 0.66}  # width / height of the face ellipse
ACCESSORIES = ("none", "glasses", "hat", "earrings")
SHIRT_COLOURS = {
    "white": (235, 235, 235),
    "black": (30, 30, 30),
    "red": (190, 40, 40),
    "blue": (40, 70, 180),
    "green": (40, 140, 70),
}
BACKGROUNDS = {
    "blue": (70, 110, 200),
    "green": (80, 160, 90),
    "red": (190, 70, 70),
    "yellow": (220, 200, 80),
    "purple": (130, 80, 170),
    "grey": (128, 128, 128),
    "orange": (230, 140, 60),
    "teal": (60, 160, 160),
}
OBJECTS = ("lamp", "plant", "window", "picture", "ball")
LIGHTING = {"bright": (1.12, (1.0, 1.0, 1.0)), "dim": (0.78, (1.0, 1.0, 1.0)), "warm": (1.0, (1.08, 1.0, 0.86))}
LIGHTING["cool"] = (1.0, (0.88, 0.98, 1.1))
FRAMINGS = {"close-up": 0.36, "medium": 0.27}  # face half-height as a fraction of the frame height


@dataclass(frozen=True)
class Identity:
    """Who is talking: everything that stays the same across that person's clips and references."""

    name: str
    face_shape: str = "oval"
    skin: str = "light"
    hair_colour: str = "brown"
    hair_style: str = "short"
    accessory: str = "none"
    shirt: str = "blue"
    pitch_hz: float = 140.0  # voice: base pitch of the synthetic speech

    def describe(self) -> str:
        hair = "no hair" if self.hair_style == "bald" else f"{self.hair_style} {self.hair_colour} hair"
        extra = {"glasses": ", wearing glasses", "hat": ", wearing a hat", "earrings": ", wearing earrings"}
        return f"a person with a {self.face_shape} face, {self.skin} skin and {hair}{extra.get(self.accessory, '')}"


@dataclass(frozen=True)
class Scene:
    """Where: background, lighting, objects and framing. Changes between a clip and its reference."""

    background: str = "blue"
    lighting: str = "bright"
    objects: tuple[str, ...] = ("lamp",)
    framing: str = "close-up"

    def describe(self) -> str:
        things = " and ".join(f"a {o}" for o in self.objects) if self.objects else "nothing"
        return f"in front of a {self.background} background with {things}, {self.lighting} lighting"


def caption_for(identity: Identity, scene: Scene) -> str:
    """The dense caption of a clip: computable from the pixels (the synthetic world's text ground truth)."""
    return f"A {scene.framing} shot of {identity.describe()}, talking {scene.describe()}."


def sample_identity(rng: np.random.Generator, name: str) -> Identity:
    pick = lambda seq: str(seq[int(rng.integers(len(seq)))])  # noqa: E731
    return Identity(
        name=name,
        face_shape=pick(list(FACE_SHAPES)),
        skin=pick(list(SKIN_TONES)),
        hair_colour=pick(list(HAIR_COLOURS)),
        hair_style=pick(HAIR_STYLES),
        accessory=pick(ACCESSORIES),
        shirt=pick(list(SHIRT_COLOURS)),
        pitch_hz=float(rng.uniform(100, 220)),
    )


def sample_scene(rng: np.random.Generator) -> Scene:
    n_obj = int(rng.integers(1, 3))
    objects = tuple(str(o) for o in rng.choice(OBJECTS, size=n_obj, replace=False))
    return Scene(
        background=str(rng.choice(list(BACKGROUNDS))),
        lighting=str(rng.choice(list(LIGHTING))),
        objects=objects,
        framing=str(rng.choice(list(FRAMINGS))),
    )


# --- audio ------------------------------------------------------------------------------------------------------


def synth_speech(
    num_samples: int, rng: np.random.Generator, *, pitch_hz: float = 140.0, sampling_rate: int = SAMPLING_RATE
) -> np.ndarray:
    """Speech-like audio: voiced syllables (harmonics of a gliding pitch) in a syllable rhythm with pauses."""
    t_total = num_samples / sampling_rate
    out = np.zeros(num_samples, np.float32)
    t = float(rng.uniform(0.04, 0.16))
    while t < t_total - 0.08:
        dur = float(rng.uniform(0.12, 0.28))
        n = int(dur * sampling_rate)
        i0 = int(t * sampling_rate)
        n = min(n, num_samples - i0)
        tt = np.arange(n) / sampling_rate
        glide = pitch_hz * (1.0 + rng.uniform(-0.15, 0.15) * tt / dur + 0.05 * np.sin(2 * np.pi * 4 * tt))
        phase = 2 * np.pi * np.cumsum(glide) / sampling_rate
        tone = sum(np.sin(k * phase) / k for k in range(1, 9))
        envelope = np.sin(np.pi * np.arange(n) / max(n, 1)) ** 2  # syllable: open then close
        out[i0 : i0 + n] += (rng.uniform(0.5, 1.0) * envelope * tone).astype(np.float32)
        gap = rng.uniform(0.25, 0.5) if rng.random() < 0.25 else rng.uniform(0.03, 0.1)  # phrase pause or not
        t += dur + float(gap)
    out += rng.normal(0, 0.002, num_samples).astype(np.float32)  # faint room noise
    return (0.6 * out / max(float(np.abs(out).max()), 1e-6)).astype(np.float32)


def loudness_per_frame(
    waveform: np.ndarray, frames: int, *, fps: int = FPS, sampling_rate: int = SAMPLING_RATE
) -> np.ndarray:
    """RMS of each video frame's audio window, scaled to [0, 1] (the mouth opening)."""
    hop = sampling_rate // fps
    padded = np.pad(waveform, (0, max(0, frames * hop - len(waveform))))[: frames * hop]
    rms = np.sqrt((padded.reshape(frames, hop) ** 2).mean(axis=1))
    return (rms / max(float(rms.max()), 1e-6)).astype(np.float32)


# --- drawing ----------------------------------------------------------------------------------------------------


@dataclass
class Pose:
    """Per-frame placement of the head (pixels) and the mouth opening in [0, 1]."""

    cx: float
    cy: float
    half_height: float
    yaw: float = 0.0  # -1..1, shifts features sideways like a small head turn
    mouth_open: float = 0.0


def _c(rgb: Sequence[float]) -> tuple[int, int, int]:
    return tuple(int(np.clip(v, 0, 255)) for v in rgb)  # type: ignore[return-value]


def _draw_background(img: np.ndarray, scene: Scene) -> None:
    h, w = img.shape[:2]
    base = np.array(BACKGROUNDS[scene.background], np.float32)
    ramp = np.linspace(0.85, 1.1, h, dtype=np.float32)[:, None, None]  # a wall lit from above
    img[:] = np.clip(base[None, None] * ramp, 0, 255).astype(np.uint8)
    for i, obj in enumerate(scene.objects):
        x = int(w * (0.12 if i % 2 == 0 else 0.86))
        y = int(h * 0.55)
        s = max(3, w // 14)
        if obj == "lamp":
            cv2.rectangle(img, (x - 1, y - s), (x + 1, y + 3 * s), _c((60, 60, 60)), -1)
            cv2.fillConvexPoly(img, np.array([[x - s, y - s], [x + s, y - s], [x, y - 3 * s]]), _c((250, 240, 170)))
        elif obj == "plant":
            cv2.rectangle(img, (x - s, y + s), (x + s, y + 3 * s), _c((150, 90, 50)), -1)
            for dx, dy in ((-s, 0), (s, 0), (0, -s)):
                cv2.circle(img, (x + dx // 2, y + dy), s, _c((40, 150, 50)), -1)
        elif obj == "window":
            cv2.rectangle(img, (x - s, int(h * 0.1)), (x + s, int(h * 0.1) + 3 * s), _c((200, 230, 255)), -1)
            cv2.line(img, (x, int(h * 0.1)), (x, int(h * 0.1) + 3 * s), _c((90, 90, 90)), 1)
        elif obj == "picture":
            cv2.rectangle(img, (x - s, int(h * 0.15)), (x + s, int(h * 0.15) + 2 * s), _c((120, 80, 40)), -1)
            cv2.rectangle(
                img, (x - s + 2, int(h * 0.15) + 2), (x + s - 2, int(h * 0.15) + 2 * s - 2), _c((240, 200, 90)), -1
            )
        elif obj == "ball":
            cv2.circle(img, (x, int(h * 0.85)), s, _c((230, 60, 160)), -1)


def face_box(pose: Pose, identity: Identity) -> tuple[float, float, float, float]:
    """The face ellipse's bounding box (x0, y0, x1, y1) in pixels: the ground-truth box of a frame."""
    rx = pose.half_height * FACE_SHAPES[identity.face_shape]
    return (pose.cx - rx, pose.cy - pose.half_height, pose.cx + rx, pose.cy + pose.half_height)


def draw_person(img: np.ndarray, identity: Identity, pose: Pose) -> None:
    """Draw head, hair, facial features and torso into `img` (RGB uint8, in place)."""
    h, w = img.shape[:2]
    ry = pose.half_height
    rx = ry * FACE_SHAPES[identity.face_shape]
    cx, cy = pose.cx, pose.cy
    skin = np.array(SKIN_TONES[identity.skin], np.float32)
    hair = HAIR_COLOURS[identity.hair_colour]
    aa = cv2.LINE_AA
    p = lambda x, y: (int(round(x)), int(round(y)))  # noqa: E731
    # torso and neck
    shirt = SHIRT_COLOURS[identity.shirt]
    top = cy + 0.9 * ry
    cv2.fillConvexPoly(
        img,
        np.array(
            [
                p(cx - 1.6 * rx, h),
                p(cx - 1.1 * rx, top + 0.3 * ry),
                p(cx + 1.1 * rx, top + 0.3 * ry),
                p(cx + 1.6 * rx, h),
            ]
        ),
        _c(shirt),
        aa,
    )
    cv2.rectangle(img, p(cx - 0.35 * rx, cy + 0.6 * ry), p(cx + 0.35 * rx, top + 0.35 * ry), _c(skin * 0.85), -1)
    # hair behind the head
    if identity.hair_style == "long":
        cv2.ellipse(img, p(cx, cy + 0.15 * ry), p(1.2 * rx, 1.15 * ry), 0, 0, 360, _c(hair), -1, aa)
    elif identity.hair_style == "short":
        cv2.ellipse(img, p(cx, cy - 0.12 * ry), p(1.08 * rx, 0.98 * ry), 0, 0, 360, _c(hair), -1, aa)
    # face
    cv2.ellipse(img, p(cx, cy), p(rx, ry), 0, 0, 360, _c(skin), -1, aa)
    if identity.hair_style != "bald":  # fringe cap over the forehead
        cv2.ellipse(img, p(cx, cy - 0.55 * ry), p(0.95 * rx, 0.42 * ry), 0, 180, 360, _c(hair), -1, aa)
    fx = cx + pose.yaw * 0.18 * rx  # features shift with the head turn
    dark = _c(skin * 0.35)
    # brows and eyes: the dark band Haar's frontal cascade keys on, above lighter cheeks and nose bridge
    t = max(1, int(round(ry * 0.09)))
    for side in (-1, 1):
        cv2.ellipse(
            img,
            p(fx + side * 0.42 * rx, cy + 0.12 * ry),
            p(0.3 * rx, 0.18 * ry),
            0,
            0,
            360,
            _c(skin * 1.05 + 10),
            -1,
            aa,
        )
    cv2.line(img, p(fx, cy - 0.3 * ry), p(fx, cy + 0.05 * ry), _c(skin * 1.1 + 30), max(1, t), aa)
    for side in (-1, 1):
        ex = fx + side * 0.4 * rx
        cv2.ellipse(img, p(ex, cy - 0.24 * ry), p(0.27 * rx, 0.17 * ry), 0, 0, 360, _c(skin * 0.6 - 12), -1, aa)
        cv2.line(
            img, p(ex - 0.24 * rx, cy - 0.4 * ry), p(ex + 0.24 * rx, cy - 0.42 * ry), _c(np.array(hair) * 0.7), t, aa
        )
        cv2.ellipse(img, p(ex, cy - 0.2 * ry), p(0.16 * rx, 0.075 * ry), 0, 0, 360, _c((225, 222, 218)), -1, aa)
        cv2.circle(img, p(ex, cy - 0.2 * ry), max(1, int(round(0.07 * ry))), _c((40, 30, 25)), -1, aa)
        cv2.ellipse(img, p(ex, cy - 0.2 * ry), p(0.16 * rx, 0.075 * ry), 0, 0, 360, dark, 1, aa)
    # nose: shading line and nostrils
    cv2.line(img, p(fx, cy - 0.12 * ry), p(fx - 0.06 * rx, cy + 0.16 * ry), _c(skin * 0.7), max(1, t // 2), aa)
    cv2.ellipse(img, p(fx, cy + 0.18 * ry), p(0.16 * rx, 0.05 * ry), 0, 0, 180, _c(skin * 0.6), -1, aa)
    # mouth: opening follows the audio loudness
    mh = 0.03 * ry + pose.mouth_open * 0.24 * ry
    mouth_c = p(fx, cy + 0.47 * ry)
    cv2.ellipse(img, mouth_c, p(0.3 * rx, mh), 0, 0, 360, _c((150, 45, 55)), -1, aa)
    if pose.mouth_open > 0.15:
        cv2.ellipse(img, mouth_c, p(0.24 * rx, max(1.0, mh - 0.05 * ry)), 0, 0, 360, _c((50, 10, 20)), -1, aa)
    # accessories
    if identity.accessory == "glasses":
        for side in (-1, 1):
            cv2.circle(img, p(fx + side * 0.4 * rx, cy - 0.2 * ry), int(round(0.24 * rx)), _c((20, 20, 20)), 1, aa)
        cv2.line(img, p(fx - 0.16 * rx, cy - 0.22 * ry), p(fx + 0.16 * rx, cy - 0.22 * ry), _c((20, 20, 20)), 1, aa)
    elif identity.accessory == "hat":
        cv2.rectangle(img, p(cx - 0.75 * rx, cy - 1.45 * ry), p(cx + 0.75 * rx, cy - 0.8 * ry), _c((60, 40, 90)), -1)
        cv2.rectangle(img, p(cx - 1.2 * rx, cy - 0.86 * ry), p(cx + 1.2 * rx, cy - 0.74 * ry), _c((60, 40, 90)), -1)
    elif identity.accessory == "earrings":
        for side in (-1, 1):
            cv2.circle(
                img, p(cx + side * 1.0 * rx, cy + 0.2 * ry), max(1, int(round(0.07 * ry))), _c((235, 200, 40)), -1, aa
            )


def _apply_lighting(img: np.ndarray, scene: Scene, direction: float = 0.0) -> np.ndarray:
    gain, tint = LIGHTING[scene.lighting]
    w = img.shape[1]
    side = 1.0 + direction * np.linspace(-0.15, 0.15, w, dtype=np.float32)[None, :, None]
    out = img.astype(np.float32) * gain * np.array(tint, np.float32)[None, None] * side
    return np.clip(out, 0, 255).astype(np.uint8)


def render_frame(
    identity: Identity | None, scene: Scene, pose: Pose, size: tuple[int, int], *, light_direction: float = 0.0
) -> np.ndarray:
    """One RGB frame. `identity=None` draws the scene without a person (a face-less clip)."""
    img = np.zeros((*size, 3), np.uint8)
    _draw_background(img, scene)
    if identity is not None:
        draw_person(img, identity, pose)
    return _apply_lighting(img, scene, light_direction)


def clip_poses(
    frames: int, size: tuple[int, int], scene: Scene, mouth: np.ndarray, rng: np.random.Generator
) -> list[Pose]:
    """Smooth head motion (drift, bob, slight scale and yaw changes) with the given mouth openings."""
    h, w = size
    base = FRAMINGS[scene.framing] * h
    t = np.arange(frames) / FPS
    phase = rng.uniform(0, 2 * np.pi, 4)
    cx = w / 2 + 0.08 * w * np.sin(2 * np.pi * 0.35 * t + phase[0])
    cy = h * 0.46 + 0.04 * h * np.sin(2 * np.pi * 0.5 * t + phase[1])
    scale = 1.0 + 0.05 * np.sin(2 * np.pi * 0.3 * t + phase[2])
    yaw = 0.4 * np.sin(2 * np.pi * 0.25 * t + phase[3])
    return [
        Pose(float(cx[i]), float(cy[i]), float(base * scale[i]), float(yaw[i]), float(mouth[i])) for i in range(frames)
    ]


# --- clips and datasets -----------------------------------------------------------------------------------------


@dataclass
class SynthClip:
    """What `write_synth_clip` wrote."""

    name: str
    video: Path
    caption: str
    identity: Identity | None
    scene: Scene
    faces: Path | None
    boxes: list[list[float] | None] = field(default_factory=list)


def render_clip(
    identity: Identity | None,
    scene: Scene,
    *,
    frames: int = 33,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    audio: str = "speech",
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """In-memory clip: (RGB uint8 [T, H, W, 3], 16 kHz waveform or None, face boxes [T, 4] (NaN without a face)).

    `audio`: "speech" (synced syllables), "silence" (all zeros), "noise" (white noise) or "none" (no audio).
    """
    rng = np.random.default_rng(seed)
    num_samples = frames * SAMPLING_RATE // FPS
    pitch = identity.pitch_hz if identity else 140.0
    if audio == "speech":
        wav = synth_speech(num_samples, rng, pitch_hz=pitch)
    elif audio == "silence":
        wav = np.zeros(num_samples, np.float32)
    elif audio == "noise":
        wav = rng.normal(0, 0.2, num_samples).astype(np.float32)
    elif audio == "none":
        wav = None
    else:
        raise InputError(f"audio must be speech|silence|noise|none, got {audio!r}", field="audio")
    mouth = loudness_per_frame(wav, frames) if audio == "speech" else np.zeros(frames, np.float32)
    poses = clip_poses(frames, size, scene, mouth, rng)
    video = np.stack([render_frame(identity, scene, pose, size) for pose in poses])
    boxes = np.array([face_box(pose, identity) if identity else [np.nan] * 4 for pose in poses], np.float32)
    return video, wav, boxes


def render_dub_pair(
    identity: Identity,
    scene: Scene,
    *,
    frames: int = 33,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    voice_seed: int = 1,
) -> dict[str, np.ndarray]:
    """The same person, scene and head motion speaking two different lines: voice A (`seed`) and voice B
    (`voice_seed`). The clip with voice B is the ground-truth dub of the clip with voice A (issue #15).

    Returns {"video_a", "wav_a", "video_b", "wav_b", "boxes"}; the motion draws come from their own generator, so
    only the mouth differs between the two videos."""
    num_samples = frames * SAMPLING_RATE // FPS
    motion = clip_poses(frames, size, scene, np.zeros(frames, np.float32), np.random.default_rng([seed, 1]))
    out: dict[str, np.ndarray] = {}
    for key, voice in (("a", seed), ("b", voice_seed)):
        wav = synth_speech(num_samples, np.random.default_rng([voice, 2]), pitch_hz=identity.pitch_hz)
        mouth = loudness_per_frame(wav, frames)
        poses = [replace(pose, mouth_open=float(m)) for pose, m in zip(motion, mouth)]
        out[f"video_{key}"] = np.stack([render_frame(identity, scene, pose, size) for pose in poses])
        out[f"wav_{key}"] = wav
    out["boxes"] = np.array([face_box(pose, identity) for pose in motion], np.float32)
    return out


def write_synth_clip(
    path: str | Path,
    identity: Identity | None,
    scene: Scene,
    *,
    frames: int = 33,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    audio: str = "speech",
    faces_sidecar: bool = True,
) -> SynthClip:
    """Write one talking-head mp4 (H.264 + AAC 16 kHz) and its `<stem>.faces.json` ground truth.

    `audio` as in `render_clip` ("none" writes no audio stream); `identity=None` draws no person (no face).
    """
    path = Path(path)
    video, wav, boxes = render_clip(identity, scene, frames=frames, size=size, seed=seed, audio=audio)
    path.parent.mkdir(parents=True, exist_ok=True)
    wav_path = path.with_suffix(".synth.wav")
    try:
        if wav is not None:
            write_wav(wav_path, wav)
        write_video(video, path, fps=FPS, audio=wav_path if wav is not None else None, preset="veryfast")
    finally:
        wav_path.unlink(missing_ok=True)
    box_list = [None if np.isnan(b).any() else [round(float(v), 3) for v in b] for b in boxes]
    faces_path = None
    if faces_sidecar:
        faces_path = path.with_name(path.stem + ".faces.json")
        _write_json(faces_path, {"fps": FPS, "size": list(size), "boxes": box_list})
    caption = caption_for(identity, scene) if identity else f"An empty room {scene.describe()}."
    return SynthClip(path.stem, path, caption, identity, scene, faces_path, box_list)


def render_reference(identity: Identity, scene: Scene, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The same character in another pose, light and place (a cross-paired reference image), RGB uint8."""
    h, w = size
    pose = Pose(
        cx=float(w * rng.uniform(0.4, 0.6)),
        cy=float(h * rng.uniform(0.42, 0.5)),
        half_height=float(FRAMINGS[scene.framing] * h * rng.uniform(0.9, 1.1)),
        yaw=float(rng.uniform(-0.6, 0.6)),
        mouth_open=float(rng.uniform(0.0, 0.3)),
    )
    return render_frame(identity, scene, pose, size, light_direction=float(rng.uniform(-1, 1)))  # side light


def write_reference(
    path: str | Path, identity: Identity, scene: Scene, size: tuple[int, int], rng: np.random.Generator
) -> Path:
    """`render_reference` written as an image file (atomically)."""
    img = render_reference(identity, scene, size, rng)
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    os.replace(tmp, path)
    return path


def make_image_pool(
    out_dir: str | Path,
    identities: Sequence[Identity],
    *,
    per_identity: int = 3,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
) -> Path:
    """Reference pool in the layout `pool/<identity>/*.png` (several looks per person)."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng([seed, 7])
    for identity in identities:
        folder = out_dir / identity.name
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_identity):
            write_reference(folder / f"{k:02d}.png", identity, sample_scene(rng), size, rng)
    return out_dir


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def make_synth_dataset(
    out_dir: str | Path,
    num_clips: int = 8,
    frames: int = 33,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    layout: str = "folder",
    *,
    num_identities: int | None = None,
    references: bool = True,
    image_pool: bool = False,
) -> Path:
    """Write `num_clips` synthetic talking-head clips in one of the source layouts `build_clips` reads.

    layout "folder": `<name>.mp4`, `<name>.txt` caption, `<name>.png` reference, `<name>.json` (identity),
    `<name>.faces.json`. "humoset": `video/`, `reference_image/`, `video_caption.parquet` (columns
    `video`, `caption`, `identity`) plus `video/<name>.faces.json`. "jsonl": `clips/…` + `manifest.jsonl`
    with `video`, `caption`, `reference`, `identity`, `faces`. `image_pool=True` also writes `pool/<identity>/`.
    Returns the path to hand to `build_clips` (the folder, or the manifest for "jsonl").
    """
    if layout not in ("folder", "humoset", "jsonl"):
        raise InputError(f"layout must be folder|humoset|jsonl, got {layout!r}", field="layout")
    if frames < 1 or num_clips < 1:
        raise InputError("frames and num_clips must be positive", field="num_clips")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_id = num_identities or num_clips
    identities = [sample_identity(rng, f"id{i:03d}") for i in range(n_id)]
    video_dir = {"folder": out_dir, "humoset": out_dir / "video", "jsonl": out_dir / "clips"}[layout]
    ref_dir = {"folder": out_dir, "humoset": out_dir / "reference_image", "jsonl": out_dir / "clips"}[layout]
    video_dir.mkdir(parents=True, exist_ok=True)
    ref_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_clips):
        identity = identities[i % n_id]
        name = f"clip{i:03d}"
        clip = write_synth_clip(
            video_dir / f"{name}.mp4", identity, sample_scene(rng), frames=frames, size=size, seed=seed * 1000 + i
        )
        ref = write_reference(ref_dir / f"{name}.png", identity, sample_scene(rng), size, rng) if references else None
        row = {"video": name + ".mp4", "caption": clip.caption, "identity": identity.name}
        if layout == "folder":
            (out_dir / f"{name}.txt").write_text(clip.caption)
            _write_json(out_dir / f"{name}.json", {"identity": identity.name, "identity_spec": asdict(identity)})
        elif layout == "jsonl":
            row = {
                "video": f"clips/{name}.mp4",
                "caption": clip.caption,
                "identity": identity.name,
                "faces": f"clips/{name}.faces.json",
            }
            if ref is not None:
                row["reference"] = f"clips/{ref.name}"
        rows.append(row)
    if layout == "humoset":
        import pandas as pd

        tmp = out_dir / "video_caption.parquet.tmp"
        pd.DataFrame(rows).to_parquet(tmp, index=False)
        os.replace(tmp, out_dir / "video_caption.parquet")
    if layout == "jsonl":
        tmp = out_dir / "manifest.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, out_dir / "manifest.jsonl")
    if image_pool:
        make_image_pool(out_dir / "pool", identities, size=size, seed=seed)
    _write_json(out_dir / "world.json", {"identities": [asdict(x) for x in identities], "fps": FPS, "size": list(size)})
    return out_dir / "manifest.jsonl" if layout == "jsonl" else out_dir
