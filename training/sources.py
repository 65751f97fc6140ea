"""Readers for the raw data layouts `build_clips` accepts, normalised to a list of `SourceItem`.

1. HuMoSet (ModelScope `leoniuschen/HuMoSet`): `video/`, `reference_image/`, `video_caption.parquet`. The parquet
   column names are undocumented, so the video-id / caption / identity / reference columns are detected (by name,
   then by how many values match a file in `video/`) and reported in `SourceInfo.columns`.
2. A folder of videos with optional sidecars: `name.txt` (caption), `name.jpg|jpeg|png|webp` (reference),
   `name.json` ({"caption", "identity", "reference", "faces"}), `name.faces.json` (per-frame face boxes).
3. A JSONL manifest: one object per line with `video` (required), `caption`, `reference`, `identity`, `faces`,
   `audio`, `id`; relative paths are relative to the manifest's folder.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import InputError
from training.references import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


@dataclass
class SourceItem:
    """One source video and what is known about it."""

    id: str
    video: Path
    caption: str | None = None
    reference: Path | None = None
    identity: str | None = None
    faces: Path | None = None
    audio: Path | None = None


@dataclass
class SourceInfo:
    layout: str
    items: list[SourceItem]
    columns: dict[str, str | None] = field(default_factory=dict)  # HuMoSet: role -> detected column


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_id(name: str) -> str:
    """File-system-safe clip id from a file name or manifest id."""
    return _SAFE.sub("_", name).strip("._") or "clip"


def _unique(items: list[SourceItem]) -> list[SourceItem]:
    seen: dict[str, int] = {}
    for item in items:
        base = item.id
        if base in seen:
            seen[base] += 1
            item.id = f"{base}_{seen[base]}"
        else:
            seen[base] = 0
    return items


def detect_layout(source: str | Path) -> str:
    """ "jsonl" for a .jsonl file, "humoset" for a folder with video/ and a parquet, else "folder"."""
    source = Path(source)
    if source.is_file():
        if source.suffix.lower() in (".jsonl", ".json"):
            return "jsonl"
        raise InputError(f"{source} is a file but not a .jsonl manifest", field="source")
    if not source.is_dir():
        raise InputError(
            f"{source} does not exist: give a HuMoSet folder, a folder of videos or a manifest.jsonl", field="source"
        )
    if (source / "video").is_dir() and any(source.glob("*.parquet")):
        return "humoset"
    return "folder"


def read_source(source: str | Path, layout: str | None = None) -> SourceInfo:
    """Read any supported layout (detected when `layout` is None)."""
    layout = layout or detect_layout(source)
    readers = {"humoset": read_humoset, "folder": read_folder, "jsonl": read_jsonl}
    if layout not in readers:
        raise InputError(f"layout must be one of {sorted(readers)}, got {layout!r}", field="layout")
    return readers[layout](Path(source))


def _first_file(stem_path: Path, extensions: tuple[str, ...]) -> Path | None:
    for ext in extensions:
        for candidate in (stem_path.with_name(stem_path.name + ext), stem_path.with_name(stem_path.name + ext.upper())):
            if candidate.is_file():
                return candidate
    return None


def _resolve(base: Path, value) -> Path | None:
    if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def read_folder(root: Path) -> SourceInfo:
    """Videos in `root` (not recursive) with `name.txt` / `name.<image>` / `name.json` / `name.faces.json` sidecars."""
    items = []
    for video in sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS):
        stem = video.with_suffix("")
        meta = {}
        if (sidecar := video.with_suffix(".json")).is_file():
            try:
                meta = json.loads(sidecar.read_text())
            except json.JSONDecodeError as err:
                raise InputError(f"{sidecar} is not valid JSON: {err}", field="source") from err
        caption = meta.get("caption")
        if (txt := video.with_suffix(".txt")).is_file():
            caption = txt.read_text().strip() or caption
        reference = _resolve(root, meta.get("reference")) or _first_file(stem, IMAGE_EXTENSIONS)
        faces = _resolve(root, meta.get("faces")) or _first_file(stem, (".faces.json",))
        identity = meta.get("identity")
        items.append(
            SourceItem(safe_id(video.stem), video, caption, reference, str(identity) if identity else None, faces)
        )
    return SourceInfo("folder", _unique(items))


def read_jsonl(path: Path) -> SourceInfo:
    """A JSONL manifest (see module docstring); a malformed line raises InputError naming the line."""
    base = path.parent
    items = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path.name} line {n} is not valid JSON: {err}", field="source") from err
        if not isinstance(row, dict) or not row.get("video"):
            raise InputError(f'{path.name} line {n}: each line needs a "video" path', field="source")
        video = _resolve(base, row["video"])
        reference = row.get("reference")
        if isinstance(reference, list):  # several references: the first one is used for the clip
            reference = reference[0] if reference else None
        items.append(
            SourceItem(
                id=safe_id(str(row.get("id") or Path(str(row["video"])).stem)),
                video=video,
                caption=row.get("caption") or None,
                reference=_resolve(base, reference),
                identity=str(row["identity"]) if row.get("identity") else None,
                faces=_resolve(base, row.get("faces")),
                audio=_resolve(base, row.get("audio")),
            )
        )
    return SourceInfo("jsonl", _unique(items))


_ROLE_NAMES = {
    "video": (
        "video",
        "video_name",
        "video_id",
        "video_path",
        "name",
        "clip",
        "clip_id",
        "file",
        "filename",
        "path",
        "id",
        "vid",
    ),
    "caption": ("caption", "video_caption", "dense_caption", "text", "prompt", "description", "captions"),
    "identity": ("identity", "person", "person_id", "identity_id", "subject", "subject_id", "speaker", "speaker_id"),
    "reference": ("reference", "reference_image", "ref", "ref_image", "reference_path", "image", "image_path"),
}


def _key(value) -> str:
    """Video key of a cell: the file stem without folders/extension ('video/abc.mp4' -> 'abc')."""
    name = str(value).replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def detect_humoset_columns(frame, video_stems: set[str]) -> dict[str, str | None]:
    """Choose the id / caption / identity / reference columns of a HuMoSet parquet (None when absent)."""
    columns = {str(c): c for c in frame.columns}
    lower = {name.lower(): name for name in columns}
    from pandas.api.types import is_object_dtype, is_string_dtype

    text_cols = [
        name for name in columns if is_object_dtype(frame[columns[name]]) or is_string_dtype(frame[columns[name]])
    ]
    matches = {name: sum(_key(v) in video_stems for v in frame[columns[name]].head(200)) for name in text_cols}
    chosen: dict[str, str | None] = {}
    best_match = max(matches, key=matches.get) if matches else None
    if best_match is not None and matches[best_match] > 0:
        chosen["video"] = best_match
    else:
        chosen["video"] = next((lower[n] for n in _ROLE_NAMES["video"] if n in lower), None)
    for role in ("caption", "identity", "reference"):
        pick = next((lower[n] for n in _ROLE_NAMES[role] if n in lower and lower[n] != chosen["video"]), None)
        chosen[role] = pick
    if chosen["caption"] is None:  # the longest text column that is not the id
        lengths = {n: frame[columns[n]].astype(str).str.len().mean() for n in text_cols if n != chosen["video"]}
        chosen["caption"] = max(lengths, key=lengths.get) if lengths else None
    if chosen["video"] is None:
        raise InputError(
            f"cannot find the video-name column in the HuMoSet parquet (columns: {list(columns)})", field="source"
        )
    return chosen


def read_humoset(root: Path) -> SourceInfo:
    """HuMoSet layout; videos without a parquet row are still used (no caption), rows without a video are dropped."""
    import pandas as pd

    parquets = sorted(root.glob("*.parquet"))
    preferred = [p for p in parquets if "caption" in p.name] or parquets
    if not preferred:
        raise InputError(f"{root} has no video_caption.parquet", field="source")
    frame = pd.concat([pd.read_parquet(p) for p in preferred], ignore_index=True)
    videos: dict[str, Path] = {}
    for p in sorted((root / "video").rglob("*")):
        if p.suffix.lower() in VIDEO_EXTENSIONS:
            if p.stem in videos:
                log.warning("HuMoSet: %s and %s share a name; using the first", videos[p.stem], p)
                continue
            videos[p.stem] = p
    columns = detect_humoset_columns(frame, set(videos))
    log.info("HuMoSet columns: %s", columns)
    ref_dir = root / "reference_image"
    refs = (
        {p.stem: p for p in sorted(ref_dir.rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS}
        if ref_dir.is_dir()
        else {}
    )
    rows = {}
    for record in frame.to_dict("records"):
        rows.setdefault(_key(record[columns["video"]]), record)
    items = []
    for stem, video in videos.items():
        row = rows.get(stem, {})
        values = {role: _text(row.get(col)) if col else None for role, col in columns.items()}
        reference = None
        if values["reference"]:
            reference = refs.get(_key(values["reference"])) or _resolve(root, values["reference"])
        if reference is None or not reference.is_file():
            reference = refs.get(stem)
        faces = _first_file(video.with_suffix(""), (".faces.json",))
        items.append(SourceItem(safe_id(stem), video, values["caption"], reference, values["identity"], faces))
    return SourceInfo("humoset", _unique(items), columns)


def _text(value) -> str | None:
    """A parquet cell as stripped text; None for missing values (None, NaN, pd.NA, empty)."""
    if value is None:
        return None
    try:
        if value != value:  # NaN
            return None
    except (TypeError, ValueError):  # pd.NA and arrays do not compare
        return None
    text = str(value).strip()
    return text or None
