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
                    return f"new {entry_id} is running: use Stop to end it."
                entry.state = "cancelled"
                return f"new {entry_id}: the variations not yet started are cancelled (Stop ends the running one)."
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

    def pending_variations(self, owner: str) -> list[tuple[int, str, int]]:
        """(entry id, label, variations not yet started) of `owner`'s running clicks that have more to come: they
        get their gallery numbers when they start, and until then the list shows them as one cancellable row."""
        with self._lock:
            return [(e.id, e.label, e.count - e.done - 1) for e in self._entries.values()
                    if e.owner == owner and e.state == "running" and e.count - e.done - 1 > 0]  # fmt: skip

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


# ---------------------------------------------------------------------------------------------- the job turn (issue 29)
@dataclass
class Waiter:
    """A job in the studio's turn line: its gallery row (None for a caller outside the job layer), its owner, the
    event that stops it, and its own estimated seconds (None when unknown)."""

    gid: int | None
    owner: str | None
    stop_event: threading.Event | None
    seconds: float | None = None
    cancelled: bool = False
    left: float | None = None  # running: the seconds left its progress said, and when
    said: float = 0.0


class JobTurn:
    """The studio's one job turn, handed out in the order of its line rather than to whichever thread grabs a lock:
    the queue list shows that line with each job's gallery number, and an owner may reorder their own waiting jobs
    in it (a move swaps places with that owner's nearest waiting job, so nobody overtakes another owner's job)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._line: list[Waiter] = []  # waiting, in the order they get the turn
        self.running: Waiter | None = None
        self._busy = False

    def acquire(self, waiter: Waiter) -> bool:
        """Wait for `waiter`'s turn; False when its stop event was set meanwhile (it has left the line)."""
        with self._cond:
            self._line.append(waiter)
            try:
                while self._busy or self._line[0] is not waiter:
                    if waiter.stop_event is not None and waiter.stop_event.is_set():
                        self._line.remove(waiter)
                        self._cond.notify_all()
                        return False
                    self._cond.wait(0.1)
            except BaseException:
                self._line.remove(waiter)
                self._cond.notify_all()
                raise
            self._line.pop(0)
            self._busy, self.running = True, waiter
            return True

    def release(self) -> None:
        with self._cond:
            self._busy, self.running = False, None
            self._cond.notify_all()

    def snapshot(self) -> tuple[Waiter | None, list[Waiter]]:
        """(the running job, the waiting ones in turn order)."""
        with self._cond:
            return self.running, list(self._line)

    def find(self, owner: str, gid) -> Waiter | None:
        """`owner`'s job with this gallery number, running or waiting (another owner's reads as unknown)."""
        gid = _job_number(gid)
        with self._cond:
            for waiter in ([self.running] if self.running else []) + self._line:
                if waiter.gid is not None and waiter.gid == gid and waiter.owner == owner:
                    return waiter
        return None

    def cancel(self, owner: str, gid) -> str:
        """Cancel `owner`'s waiting job #gid: it leaves the line at once and its row ends 'stopped'."""
        waiter = self.find(owner, gid)
        if waiter is None:
            return f"No job #{_job_number(gid) or gid} of yours is waiting."
        if waiter is self.running:
            return f"Job #{waiter.gid} is running: use Stop to end it."
        waiter.cancelled = True
        waiter.stop_event.set()
        with self._cond:
            self._cond.notify_all()
        return f"Job #{waiter.gid} is cancelled; it will not run."

    def stop(self, owner: str, gid) -> str:
        """Stop `owner`'s running job #gid at its next step."""
        waiter = self.find(owner, gid)
        if waiter is None or waiter is not self.running:
            return f"Job #{_job_number(gid) or gid} of yours is not running (Cancel ends a waiting one)."
        waiter.stop_event.set()
        return f"■ Stopping job #{waiter.gid} at the next step…"

    def move(self, owner: str, gid, step: int) -> str:
        """Move `owner`'s waiting job #gid one place up (step -1) or down (+1) among that owner's waiting jobs."""
        gid_number = _job_number(gid)
        with self._cond:
            mine = [i for i, w in enumerate(self._line) if w.owner == owner and w.gid is not None]
            here = next((i for i in mine if self._line[i].gid == gid_number), None)
            if here is None:
                return f"No job #{gid_number or gid} of yours is waiting."
            others = [i for i in mine if (i < here if step < 0 else i > here)]
            if not others:
                return f"Job #{gid_number} is already {'first' if step < 0 else 'last'} of your waiting jobs."
            there = others[-1] if step < 0 else others[0]
            self._line[here], self._line[there] = self._line[there], self._line[here]
            self._cond.notify_all()
        return f"Job #{gid_number} moved {'up' if step < 0 else 'down'}."

    def progress(self, gid: int | None, left_s: float | None) -> None:
        """The running job reports its seconds left (the time the jobs after it are told)."""
        running = self.running
        if running is not None and running.gid == gid and left_s is not None:
            running.left, running.said = float(left_s), time.monotonic()


def _job_number(value) -> int | None:
    """A job's gallery number from what a page sends ("#12", 12, "12")."""
    try:
        return int(str(value).strip().lstrip("#"))
    except (TypeError, ValueError):
        return None


QUEUE_HEADERS = ["job", "prompt", "settings", "seed", "state", "position", "time"]


def queue_rows(line: JobTurn, board: JobBoard, store, owner: str) -> list[list]:
    """The Generate tab's queue list for `owner`: the running job and the waiting ones in the order they will get
    the turn, each by its gallery number ("#12", the number the gallery shows), with its seed and short settings;
    then the variations of a running click not started yet and the owner's clicks that have not reached the line
    yet (no number yet: "new N", cancelled as one). Position and time count
    every job ahead, anyone's; only the owner's own jobs are listed."""
    now = time.monotonic()
    running, waiting = line.snapshot()
    rows, wait = [], 0.0
    for ahead, waiter in enumerate(([running] if running else []) + waiting):
        is_running = waiter is running
        left = _left_s(waiter, now, is_running)
        wait = None if wait is None or left is None else wait + left
        if waiter.owner != owner or waiter.gid is None:
            continue
        try:
            row = store.get(waiter.gid, owner=owner)
        except KeyError:  # deleted meanwhile (it cannot be: an active row is never deleted) — skip it
            continue
        state = "running" if is_running else ("cancelled" if waiter.cancelled else "waiting")
        position = "now" if is_running else f"{ahead} ahead"
        time_text = _eta(wait, "queued" if not is_running else "running")
        rows.append([f"#{waiter.gid}", (row.prompt or "")[:60], short_settings(row.model_id, row.settings or {}),
                     row.seed if row.seed is not None else "", state, position, time_text])  # fmt: skip
    for entry_id, label, left in board.pending_variations(owner):  # cancellable as one: they have no number yet
        rows.append([f"new {entry_id}", label[:60], f"{left} more variation{'s' if left > 1 else ''} of this click",
                     "next seeds", "waiting", "after its running one", ""])  # fmt: skip
    for entry_id, label, state, _position, time_text in board.rows(owner):
        if state in ("queued", "cancelled"):
            rows.append([f"new {entry_id}", label[:60], "", "", "arriving" if state == "queued" else state,
                         "next to be checked", time_text])  # fmt: skip
    return rows


def _left_s(waiter: Waiter, now: float, running: bool) -> float | None:
    if running and waiter.left is not None:
        return max(0.0, waiter.left - (now - waiter.said))
    return waiter.seconds


def short_settings(model_id: str, settings: dict) -> str:
    """'tiny · 8 steps · 64×64 · 97 frames · official': what tells two jobs of one prompt apart."""
    parts = [str(model_id)]
    if settings.get("num_inference_steps"):
        parts.append(f"{settings['num_inference_steps']} steps")
    if settings.get("height") and settings.get("width"):
        parts.append(f"{settings['height']}×{settings['width']}")
    frames = settings.get("num_frames")
    parts.append(
        "long video" if settings.get("window_frames") else (f"{frames} frames" if frames else "voice's length")
    )
    guidance = settings.get("guidance") or {}
    preset = (guidance.get("source") or {}).get("preset") or guidance.get("preset")
    if guidance.get("phases") and not (guidance.get("source") or {}).get("preset") and not preset:
        preset = "custom phases"
    if (guidance.get("source") or {}).get("keyframes"):
        preset = f"{preset or 'custom'} + keyframes"
    if preset:
        parts.append(str(preset))
    return " · ".join(parts)


def job_key(value) -> tuple[str, int] | None:
    """("row", gallery number) for "#12", ("new", board entry) for "new 3"; None for anything else."""
    text = str(value or "").strip()
    if text.startswith("new "):
        number = _job_number(text[4:])
        return ("new", number) if number is not None else None
    number = _job_number(text)
    return ("row", number) if number is not None else None
