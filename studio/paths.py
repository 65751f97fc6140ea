"""Data-folder layout: where the studio keeps its database and media.

Everything the studio stores lives under one data folder (default `./data`, or `HUMO_DATA_DIR`).
The database stores paths *relative* to that folder, so the folder can be moved or mounted elsewhere.

    data/
      humo.db                    SQLite database (WAL: humo.db-wal, humo.db-shm beside it)
      videos/<id:06d>.mp4        finished generations
      thumbs/<id:06d>.jpg        their thumbnails
      inputs/<sha[:2]>/<sha><ext>  uploaded images/audio, content-addressed and deduplicated
      previews/                  transient step previews (safe to delete)
      logs/                      studio logs
      runs/<name>/               training runs
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from engine.errors import InputError

DEFAULT_DATA_DIR = "data"
ENV_DATA_DIR = "HUMO_DATA_DIR"
ENV_DB_URL = "HUMO_DB_URL"
DB_FILENAME = "humo.db"

VIDEOS = "videos"
THUMBS = "thumbs"
INPUTS = "inputs"
PREVIEWS = "previews"
LOGS = "logs"
RUNS = "runs"
SUBDIRS = (VIDEOS, THUMBS, INPUTS, PREVIEWS, LOGS, RUNS)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: the argument, else `$HUMO_DATA_DIR`, else `./data`; absolute, symlinks resolved."""
    chosen = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


def clean_ext(name: str | os.PathLike[str]) -> str:
    """The lower-case extension of `name` (".png"), or "" when it has none or an unusual one.

    Only [a-z0-9] survive, so a stored path never needs quoting or escaping anywhere (SQL, JSON, shell).
    """
    suffix = Path(name).suffix.lower()
    if not suffix or len(suffix) > 11 or not suffix[1:].isascii() or not suffix[1:].isalnum():
        return ""
    return suffix


@dataclass(frozen=True)
class DataPaths:
    """The layout of one data folder. `root` is absolute."""

    root: Path

    @classmethod
    def at(cls, data_dir: str | os.PathLike[str] | None = None) -> DataPaths:
        """Layout for `data_dir` (see `resolve_data_dir`)."""
        return cls(resolve_data_dir(data_dir))

    @property
    def db(self) -> Path:
        return self.root / DB_FILENAME

    @property
    def sqlite_url(self) -> str:
        """SQLAlchemy URL of the default database file."""
        return f"sqlite:///{self.db.as_posix()}"

    @property
    def videos(self) -> Path:
        return self.root / VIDEOS

    @property
    def thumbs(self) -> Path:
        return self.root / THUMBS

    @property
    def inputs(self) -> Path:
        return self.root / INPUTS

    @property
    def previews(self) -> Path:
        return self.root / PREVIEWS

    @property
    def logs(self) -> Path:
        return self.root / LOGS

    @property
    def runs(self) -> Path:
        return self.root / RUNS

    def ensure(self) -> DataPaths:
        """Create the folder and its sub-folders (idempotent)."""
        for sub in SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        return self

    def abs_path(self, rel: str | os.PathLike[str]) -> Path:
        """Absolute path of a stored relative path. Rejects absolute paths and paths that leave the folder."""
        text = os.fspath(rel)
        if not text:
            raise InputError("empty path: expected a path relative to the data folder", field="path")
        pure = PurePosixPath(text.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", text):
            raise InputError(f"{text!r} is not a path inside the data folder {self.root}", field="path")
        return self.root.joinpath(*pure.parts)

    def rel_path(self, path: str | os.PathLike[str]) -> str:
        """Posix path relative to the data folder of `path` (absolute, or relative to the data folder)."""
        p = Path(path)
        if not p.is_absolute():
            return self.abs_path(p).relative_to(self.root).as_posix()
        # Lexical first (a symlinked file inside the folder stays inside), then with symlinks resolved
        # (the folder reached through a symlink).
        for candidate in (Path(os.path.normpath(p)), p.resolve()):
            try:
                rel = candidate.relative_to(self.root)
                break
            except ValueError:
                continue
        else:
            raise InputError(f"{p} is outside the data folder {self.root}: save it there first", field="path")
        if not rel.parts:
            raise InputError("the data folder itself is not a file path", field="path")
        return rel.as_posix()

    # Relative names of the files one generation owns: the job layer writes there, the store records them.

    @staticmethod
    def video_rel(generation_id: int) -> str:
        return f"{VIDEOS}/{generation_id:06d}.mp4"

    @staticmethod
    def thumb_rel(generation_id: int) -> str:
        return f"{THUMBS}/{generation_id:06d}.jpg"

    @staticmethod
    def input_rel(sha256: str, ext: str = "") -> str:
        """Content-addressed name of an input: `inputs/<sha[:2]>/<sha><ext>`."""
        if not _SHA256.match(sha256):
            raise InputError(f"{sha256!r} is not a lower-case hex sha256", field="sha256")
        if ext and ext != clean_ext("x" + ext):
            raise InputError(f"{ext!r} is not a plain file extension like '.png'", field="ext")
        return f"{INPUTS}/{sha256[:2]}/{sha256}{ext}"

    def run_dir(self, name: str) -> Path:
        """Folder of the training run `name` (letters, digits, '.', '_', '-')."""
        if not _RUN_NAME.match(name) or name in (".", ".."):
            raise InputError(f"run name {name!r}: use letters, digits, '.', '_' or '-' (max 100)", field="run_name")
        return self.runs / name
