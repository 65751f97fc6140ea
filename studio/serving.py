"""Only media is served: videos and thumbnails reach the page as copies in Gradio's cache.

The data folder (database, its WAL, uploaded faces and voices, logs, runs) is a blocked path and never an
allowed one: letting Gradio serve `humo.db` opens and closes it inside the studio process, which drops
SQLite's POSIX lock and lets the next process delete the live WAL. Callbacks hand Gradio `served_copy(path)`,
a copy under Gradio's cache folder whose directory name is a seeded hash of the content (unguessable without
the file), so one visitor cannot fetch another's video by URL. Deleting an entry evicts its copies, and the
cache is aged out by the Blocks' `delete_cache`, which sweeps `SERVED` like Gradio's own temporary files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gradio import processing_utils, utils

# Copies made for the page; registered with the app's `temp_file_sets` so `delete_cache` ages them out.
SERVED: set[str] = set()


def cache_folder() -> Path:
    """Gradio's upload/cache folder (GRADIO_TEMP_DIR, else <tmp>/gradio)."""
    return Path(utils.get_upload_folder())


def served_copy(path: str | Path | None) -> str | None:
    """The path to hand Gradio for a media file of the data folder: a copy in Gradio's cache."""
    if path is None or not Path(path).is_file():
        return None
    copy = processing_utils.save_file_to_cache(path, cache_dir=str(cache_folder()))
    SERVED.add(copy)
    return copy


def evict(path: str | Path | None) -> int:
    """Remove the cached copies of a data-folder file (call before the file itself is deleted); returns how many
    folders went. A deleted gallery entry's video is then gone from its old URL too."""
    if path is None or not Path(path).is_file():
        return 0
    folder = cache_folder() / processing_utils.hash_file(path)
    if not folder.is_dir():
        return 0
    for item in folder.iterdir():
        SERVED.discard(str(item))
    shutil.rmtree(folder, ignore_errors=True)
    return 1
