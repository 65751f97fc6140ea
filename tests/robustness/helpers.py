"""Shared pieces of the robustness tests: bad media files, answer classes, and a data-folder audit."""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

from tests.media_files import wav_bytes, write_image, write_wav  # noqa: F401 (the tests use them as h.*)
from tests.robustness.rawapi import Answer

# ---------------------------------------------------------------------------------------------- media files


def wav_header(n_data_bytes: int, sr: int = 16000, channels: int = 1, bits: int = 16, fmt: int = 1) -> bytes:
    """A 44-byte RIFF/WAVE header declaring `n_data_bytes` of samples (sizes may lie)."""
    block = channels * bits // 8
    riff = min(36 + n_data_bytes, 0xFFFFFFFF)
    return (
        b"RIFF" + struct.pack("<I", riff) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, fmt, channels, sr, sr * block, block, bits)
        + b"data" + struct.pack("<I", min(n_data_bytes, 0xFFFFFFFF))
    )  # fmt: skip


def sparse_wav(path, seconds: float, sr: int = 16000) -> Path:
    """A valid WAV header declaring `seconds` of 16-bit mono, the file truncated (sparse) to that size."""
    n = int(seconds * sr) * 2
    with open(path, "wb") as f:
        f.write(wav_header(n, sr))
        f.truncate(44 + n)
    return Path(path)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(path, width: int, height: int) -> Path:
    """PNG signature + IHDR declaring width x height (correct CRC) + a tiny IDAT + IEND: a decompression bomb's
    header without its data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return Path(path)


def png_bytes(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    write_image(buf, size=size, fmt="PNG")
    return buf.getvalue()


def jpeg_bytes(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    write_image(buf, size=size, fmt="JPEG")
    return buf.getvalue()


def mp4_without_audio(path, seconds: float = 0.4) -> Path:
    from imageio_ffmpeg import get_ffmpeg_exe

    cmd = [get_ffmpeg_exe(), "-y", "-hide_banner", "-v", "error", "-f", "lavfi", "-i",
           f"color=c=red:s=32x32:d={seconds}", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return Path(path)


HTML = b"<!doctype html><html><head><title>x</title></head><body><script>alert(1)</script></body></html>\n"

# ---------------------------------------------------------------------------------------------- answer classes
# LEAK: the answer shows a server path (of the data folder, the cache or the temporary folder); the studio's own
# messages name the user's files by the names they uploaded.
DONE, OWN, OPAQUE, UNTYPED, LEAK, OTHER = "done", "own_message", "OPAQUE", "UNTYPED", "LEAK", "OTHER"
CLASSES = (DONE, OWN, OPAQUE, UNTYPED, LEAK, OTHER)

_UNTYPED = [
    re.compile(r"\b[A-Z]\w*?(?:Error|Exception)\b"),  # ValueError, KeyError, OSError, UnidentifiedImageError, ...
    re.compile(r"Traceback|File \"[^\"]+\.py\", line"),
    re.compile(r"\bvalidation errors? for \w+|errors\.pydantic\.dev"),  # pydantic's own exception text
    re.compile(r"\b[0-9a-f]{64}\b"),  # a stored (content-addressed) input file name
]
_OPAQUE = [re.compile(r"Could not preprocess"), re.compile(r"^\W*error\W*$", re.I)]
BUSY_WORDS = ("already have a job", "already has jobs", "studio is busy")


def answer_text(answer: Answer) -> str:
    """The human-facing text of an answer: the refusal, the error, or the status line."""
    if answer.kind == "output":
        return answer.status
    return answer.message


def classify(answer: Answer, private_paths: list[str] = ()) -> str:
    """done / own_message / OPAQUE / UNTYPED / LEAK (a server path of the data folder or cache) / OTHER."""
    text = answer_text(answer)
    every = " ".join([text, *answer.error_boxes])
    if any(p.search(every) for p in _UNTYPED):
        return UNTYPED
    if any(p and p in every for p in private_paths):
        return LEAK
    if answer.kind == "output" and "done" in text and answer.video:
        return DONE
    body = text[2:] if text.startswith("✖ ") else text
    if not body.strip() or any(p.search(body) for p in _OPAQUE) or len(re.findall(r"[A-Za-z]{2,}", body)) < 3:
        return OPAQUE
    if answer.kind == "validation":
        return OWN
    if answer.kind == "output" and text.startswith("✖ "):
        return OWN
    if answer.kind in ("error", "http", "queue_full", "timeout"):
        return OPAQUE  # not the studio's own answer: Gradio's error text or no answer at all
    return OTHER


# ---------------------------------------------------------------------------------------------- data folder audit
ALLOWED_TOP = {"humo.db", "humo.db-wal", "humo.db-shm", "visitor-signing.key"}


def all_rows(store) -> list:
    """Every row of every owner (through the store's own owner-filtered listing)."""
    with store.engine.connect() as conn:
        owners = [r[0] for r in conn.exec_driver_sql("SELECT DISTINCT owner FROM generations")]
    rows = []
    for owner in owners:
        page = 1
        while True:
            batch, total = store.list_generations(page=page, page_size=200, owner=owner)
            rows += batch
            if page * 200 >= total:
                break
            page += 1
    return rows


def audit(store, private_paths: list[str] = (), videos_checked: int = 3) -> dict:
    """What is wrong with a data folder after a run: active rows, half-written files, files no row accounts for,
    rows pointing at missing files, absolute server paths in rows or in the settings inside the first few videos
    (decision 8), and SQLite's integrity check (PostgreSQL: every row of the table is listed by its owner)."""
    import json

    from engine.media import read_settings

    rows = all_rows(store)
    private = [str(store.data_dir), "/tmp/", *private_paths]
    stored_paths = []
    for row in rows:
        text = json.dumps(row.to_dict(), default=str)
        stored_paths += [f"row {row.id}: {p}" for p in private if p and p in text]
    for row in [r for r in rows if r.video_path][:videos_checked]:
        text = json.dumps(read_settings(store.abs_path(row.video_path)), default=str)
        stored_paths += [f"video {row.video_path}: {p}" for p in private if p and p in text]
    referenced = {rel for row in rows for rel in row.files()}
    root = store.data_dir
    partial, unaccounted, other = [], [], []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if ".part." in path.name or path.name.startswith(".upload-"):
            partial.append(rel)
        elif rel in ALLOWED_TOP or rel == "thumbs/_placeholder.png" or rel in referenced:
            continue
        elif rel.split("/")[0] in ("videos", "thumbs", "inputs", "previews"):
            unaccounted.append(rel)
        else:
            other.append(rel)
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            integrity = [r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check")]
        else:  # PostgreSQL: the listing above went through the indexes; count the heap the other way round
            heap = conn.exec_driver_sql("SELECT count(*) FROM generations").scalar()
            integrity = ["ok"] if heap == len(rows) else [f"{heap} rows in the table, {len(rows)} listed"]
    return {
        "rows": len(rows),
        "statuses": dict(Counter(r.status for r in rows)),
        "active": [r.id for r in rows if r.status in ("queued", "running")],
        "partial": partial,
        "unaccounted": unaccounted,
        "other_files": other,
        "missing": sorted(rel for rel in referenced if not (root / rel).is_file()),
        "absolute_paths": stored_paths,
        "integrity": integrity,
    }


def assert_clean(report: dict) -> None:
    assert report["active"] == [], f"rows left queued/running: {report['active']}"
    assert report["partial"] == [], f"half-written files left: {report['partial']}"
    assert report["unaccounted"] == [], f"files no row references: {report['unaccounted']}"
    assert report["missing"] == [], f"rows pointing at missing files: {report['missing']}"
    assert report["absolute_paths"] == [], f"absolute server paths stored: {report['absolute_paths'][:10]}"
    assert report["integrity"] == ["ok"], report["integrity"]


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (files and folders deleted meanwhile, e.g. by a cache sweep, count 0:
    os.walk skips a vanished folder where Path.rglob raises)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                path = Path(root) / name
                if not path.is_symlink():
                    total += path.stat().st_size
            except FileNotFoundError:
                continue
    return total


def rss_bytes() -> int:
    """This process's resident memory (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")
