"""Only media is served: videos and thumbnails reach the page as copies in Gradio's cache.

The data folder (database, its WAL, uploaded faces and voices, logs, runs) is a blocked path and never an
allowed one: letting Gradio serve `humo.db` opens and closes it inside the studio process, which drops
SQLite's POSIX lock and lets the next process delete the live WAL. Callbacks hand Gradio `served_copy(path)`,
a copy under Gradio's cache folder whose directory name is a seeded hash of the content (unguessable without
the file), so one visitor cannot fetch another's video by URL. Deleting an entry evicts its copies, and the
cache (uploads, Gradio's temporary files and `SERVED`) is aged out by `cache_sweeper`. Several front-ends may
share one gallery, each with a cache of its own: an entry deleted through another front-end loses the copies this
one served within `ORPHAN_EVERY_S` (`evict_orphans`: a copy whose data-folder file is gone goes too).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from gradio import processing_utils, utils

log = logging.getLogger(__name__)

# Copies made for the page; registered with the app's `temp_file_sets` so the cache sweep ages them out.
SERVED: set[str] = set()
_SOURCES: dict[str, str] = {}  # served copy -> the data-folder file it was copied from
ORPHAN_EVERY_S = 10.0


def cache_folder() -> Path:
    """Gradio's upload/cache folder (GRADIO_TEMP_DIR, else <tmp>/gradio)."""
    return Path(utils.get_upload_folder())


def served_copy(path: str | Path | None) -> str | None:
    """The path to hand Gradio for a media file of the data folder: a copy in Gradio's cache."""
    if path is None or not Path(path).is_file():
        return None
    copy = processing_utils.save_file_to_cache(path, cache_dir=str(cache_folder()))
    SERVED.add(copy)
    _SOURCES[copy] = str(path)
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
        _SOURCES.pop(str(item), None)
    shutil.rmtree(folder, ignore_errors=True)
    return 1


def evict_orphans() -> int:
    """Remove served copies whose data-folder file is gone (deleted through another front-end sharing the
    gallery, which could evict only its own cache); returns how many copies went."""
    removed = 0
    for copy, source in list(_SOURCES.items()):
        if not os.path.exists(copy):  # aged out by the cache sweep meanwhile
            _SOURCES.pop(copy, None)
        elif not os.path.exists(source):
            _SOURCES.pop(copy, None)
            SERVED.discard(copy)
            Path(copy).unlink(missing_ok=True)
            try:
                Path(copy).parent.rmdir()  # the per-file hash folder, once empty
            except OSError:
                pass
            removed += 1
    return removed


def sweep_cache(blocks, age_s: float | None) -> int:
    """Remove the app's cached files (uploads, outputs, `SERVED`) older than `age_s` (all when None); returns how
    many went. Gradio's own `delete_cache` sweep iterates the live sets while upload threads add to them, and
    the first "Set changed size during iteration" ends its task for good (the cache then grows forever); this
    one walks snapshots and survives any one file's error."""
    keep = _kept_files(blocks)
    now, removed = time.time(), 0
    folder = cache_folder().resolve()
    for files in list(blocks.temp_file_sets):
        for file in list(files):  # a snapshot (one C-level copy under the GIL)
            if file in keep:
                continue
            try:
                if age_s is not None and now - os.lstat(file).st_ctime <= age_s:
                    continue
                os.remove(file)
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cache sweep: %s", exc)
                continue
            files.discard(file)
            parent = Path(file).parent
            if parent.resolve() != folder and parent.resolve().is_relative_to(folder):
                try:
                    parent.rmdir()  # the per-file hash folder, once empty
                except OSError:
                    pass
    return removed


def _kept_files(blocks) -> set[str]:
    """Files the components keep for the app's life (gr.Examples' inputs)."""
    keep: set[str] = set()
    for block in blocks.blocks.values():
        keep.update(getattr(block, "keep_in_cache", set()))
    return keep


def _cached_files(blocks) -> set[str]:
    """Every file this app's blocks hold in the cache, kept or temporary (as resolved paths)."""
    held = set(_kept_files(blocks))
    for files in list(blocks.temp_file_sets):
        held.update(list(files))
    return {str(Path(f).resolve()) for f in held}


def sweep_stale(age_s: float, blocks=None) -> int:
    """At start: remove files of the cache folder older than `age_s` (uploads and copies from before a restart are
    in no set of this process, so `sweep_cache` would never age them out); returns how many went. Files this
    process's `blocks` already hold are kept whatever their age: a cached example input is a copy that keeps its
    bundled source's old mtime."""
    mine = _cached_files(blocks) if blocks is not None else set()
    folder, now, removed = cache_folder(), time.time(), 0
    if not folder.is_dir():
        return 0
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):  # files, then their folders
        try:
            if path.is_symlink() or path.is_file():
                held = str(path) in mine or str(path.resolve()) in mine
                if not held and now - path.lstat().st_mtime > age_s:
                    path.unlink()
                    removed += 1
            elif path.is_dir():
                path.rmdir()  # only once empty
        except OSError:
            continue
    return removed


def cache_sweeper(every_s: float, age_s: float):
    """A lifespan (for `launch(app_kwargs={"lifespan": ...})`) that runs `sweep_cache` every `every_s` seconds
    and `evict_orphans` every `ORPHAN_EVERY_S`, ages out what an earlier run left at start (`sweep_stale`), and
    empties the cache at shutdown, as Gradio's `delete_cache` would."""

    @asynccontextmanager
    async def lifespan(app):
        async def loop():
            last_sweep = time.monotonic()
            while True:
                await asyncio.sleep(min(every_s, ORPHAN_EVERY_S))
                try:
                    await anyio.to_thread.run_sync(evict_orphans)
                    if time.monotonic() - last_sweep >= every_s:
                        last_sweep = time.monotonic()
                        await anyio.to_thread.run_sync(sweep_cache, app.get_blocks(), age_s)
                except Exception:  # never let one bad sweep end the schedule
                    log.exception("cache sweep failed")

        await anyio.to_thread.run_sync(sweep_stale, age_s, app.get_blocks())
        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            sweep_cache(app.get_blocks(), None)

    return lifespan
