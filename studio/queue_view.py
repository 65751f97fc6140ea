"""The jobs a page has asked for, from arrival to end: what the Generate tab's queue list shows and cancels.

A generate event waits in Gradio's queue before its callback runs, so it has no gallery row yet. The board notes
each event when it arrives (the event's validator) and the callback claims it when it starts; in between the owner
sees it with its position and may cancel it (the callback then ends at once, without running). A board entry is
one click: N variations are one entry with N jobs, and cancelling it skips the variations not yet started.
Entries of pages whose event Gradio's queue dropped (the page closed) are pruned with the same liveness test the
admission tickets use. Only the owner's own entries are listed or cancelled; of others' only the count ahead shows.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class BoardEntry:
    id: int
    owner: str
    session: str | None
    label: str
    count: int = 1  # variations (seeds s, s+1, ...)
    done: int = 0
    state: str = "queued"  # queued | running | cancelled
    arrived: float = field(default_factory=time.monotonic)
    seconds: float | None = None  # estimated seconds of one job, None when unknown
    started: float | None = None
    left: float | None = None  # the running job's own seconds left (its progress), and when that was said
    said: float = 0.0

    def left_s(self, now: float) -> float | None:
        """Estimated seconds until this entry ends (all its variations); None when unknown."""
        if self.left is not None:  # running: what its progress said, minus the time since
            per_job = self.seconds or 0.0
            return max(0.0, self.left - (now - self.said)) + per_job * (self.count - self.done - 1)
        if self.seconds is None:
            return None
        total = self.seconds * self.count
        return max(0.0, total - (now - self.started)) if self.started is not None else total


class JobBoard:
    """Thread-safe list of arrived, not yet finished generate events (validators and callbacks run in threads)."""

    def __init__(self):
        self._entries: dict[int, BoardEntry] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def arrive(self, owner: str, session: str | None, label: str, count: int = 1,
               seconds: float | None = None) -> BoardEntry:  # fmt: skip
        with self._lock:
            entry = BoardEntry(next(self._ids), owner, session, label[:80], max(1, count), seconds=seconds)
            self._entries[entry.id] = entry
            return entry

    def start(self, owner: str, session: str | None) -> BoardEntry | None:
        """The oldest waiting entry of this page (Gradio runs a page's events in arrival order), now running; a
        cancelled one is returned as is (the caller ends without running) and removed."""
        with self._lock:
            mine = [e for e in self._entries.values() if e.owner == owner and e.session == session and
                    e.state in ("queued", "cancelled")]  # fmt: skip
            if not mine:
                return None
            entry = min(mine, key=lambda e: e.id)
            if entry.state == "cancelled":
                del self._entries[entry.id]
            else:
                entry.state, entry.started = "running", time.monotonic()
            return entry

    def finish(self, entry: BoardEntry | None) -> None:
        if entry is not None:
            with self._lock:
                self._entries.pop(entry.id, None)

    def cancel(self, owner: str, entry_id) -> str:
        """Cancel one of `owner`'s entries: a waiting one never runs; a running one runs no further variation."""
        try:
            entry_id = int(entry_id)
        except (TypeError, ValueError):
            return "Choose a job of yours to cancel."
        with self._lock:
            entry = self._entries.get(entry_id)
            if entry is None or entry.owner != owner:  # another owner's id reads as unknown
                return f"No job {entry_id} of yours is waiting."
            if entry.state == "running":
                if entry.done + 1 >= entry.count:
                    return f"Job {entry_id} is running: use Stop to end it."
                entry.state = "cancelled"
                return f"Job {entry_id}: the variations not yet started are cancelled (Stop ends the running one)."
            entry.state = "cancelled"
            return f"Job {entry_id} is cancelled; it will not run."

    def progress(self, session: str | None, left_s: float | None) -> None:
        """The running job of this page reports its seconds left (the estimate a waiting job is told)."""
        with self._lock:
            for entry in self._entries.values():
                if entry.session == session and entry.state == "running" and left_s is not None:
                    entry.left, entry.said = float(left_s), time.monotonic()
                    elapsed = entry.said - (entry.started or entry.said)
                    entry.seconds = entry.seconds or (elapsed + entry.left)  # one job's length, for later ones

    def stop_running(self, session: str | None) -> None:
        """Stop pressed on a page: its running entry starts no further variation."""
        with self._lock:
            for entry in self._entries.values():
                if entry.session == session and entry.state == "running":
                    entry.state = "cancelled"

    def cancelled(self, entry: BoardEntry | None) -> bool:
        return entry is not None and entry.state == "cancelled"

    def prune(self, session_alive: Callable[[str], bool] | None, grace_s: float = 5.0) -> None:
        """Drop waiting entries whose page's event is no longer in Gradio's queue."""
        if session_alive is None:
            return
        now = time.monotonic()
        with self._lock:
            for entry in list(self._entries.values()):
                if entry.state != "running" and entry.session and now - entry.arrived > grace_s:
                    if not session_alive(entry.session):
                        del self._entries[entry.id]

    def rows(self, owner: str) -> list[list]:
        """[id, job, state, position, time] of `owner`'s entries; position counts every job ahead, anyone's, and
        the time is the estimate of those ahead plus its own (unknown while any of them has no estimate)."""
        now = time.monotonic()
        with self._lock:
            ordered = sorted(self._entries.values(), key=lambda e: (e.state != "running", e.id))
            rows, ahead, wait = [], 0, 0.0
            for entry in ordered:
                left = entry.left_s(now) if entry.state != "cancelled" else 0.0
                wait = None if wait is None or left is None else wait + left
                if entry.owner == owner:
                    if entry.state == "running":
                        state = f"running ({entry.done + 1} of {entry.count})" if entry.count > 1 else "running"
                    else:
                        state = entry.state
                    position = "now" if entry.state == "running" else f"{ahead} ahead"
                    rows.append([entry.id, entry.label, state, position, _eta(wait, entry.state)])
                if entry.state != "cancelled":
                    ahead += 1
            return rows


def _eta(until_end: float | None, state: str) -> str:
    if state == "cancelled":
        return ""
    if until_end is None:
        return "after the jobs ahead" if state == "queued" else "estimating…"
    from studio.eta import seconds_text

    return f"ends in about {seconds_text(until_end)}"
