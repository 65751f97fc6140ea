"""Who may queue a job now (public mode): one queued or running job per visitor, a few per client address, and
a bounded queue, decided when the request arrives (a Gradio `validator`, before it waits in the queue).

Counting rows is not enough: a job waits in Gradio's queue before its row exists, so forty clicks would all
wait and then run one after another. A ticket is taken at arrival and given back when the job ends. A page that
goes away while its job waits never reaches the job function (Gradio's queue drops the event), so each ticket also
names the page's session: a ticket whose session has no event left in Gradio's queue is given back at the next
admission (`watch_queue`); `admission_ttl_s` remains the bound for anything else.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MAX_JOBS_PER_ADDRESS = 2  # several visitors may share an address (a campus, a proxy); API clients rotate ids
_LOCK = threading.Lock()


def client_address(request: Any, trusted_proxies: int = 0) -> str:
    """The client's address. Behind `trusted_proxies` reverse proxies (a Space: 1) it is the X-Forwarded-For hop
    the outermost trusted proxy appended; hops to its left are whatever the client typed, so they are never
    believed (a client rotating a forged header would otherwise escape the per-address cap). Without trusted
    proxies the header is ignored: the socket's peer."""
    headers = getattr(request, "headers", None) or {}
    forwarded = headers.get("x-forwarded-for", "") if trusted_proxies and hasattr(headers, "get") else ""
    hops = [hop.strip() for hop in str(forwarded).split(",") if hop.strip()]
    if hops:
        return hops[-min(trusted_proxies, len(hops))][:100]
    client = getattr(request, "client", None)
    return str(getattr(client, "host", "") or "unknown")[:100]


ARRIVAL_GRACE_S = 5.0  # the validator runs just before Gradio queues the event: a fresh ticket has no event yet


def watch_queue(ctx, blocks) -> None:
    """Let admission ask Gradio's queue whether a page's event is still waiting or running."""
    ctx.session_in_queue = lambda session: session_in_queue(blocks._queue, session)


def session_in_queue(queue, session: str) -> bool:
    """Whether Gradio's queue holds an event of `session`, waiting or running. The queue is the event loop's;
    this reads copies of its containers, so a change while we look is read again rather than raised."""
    for _ in range(3):
        try:
            waiting = [e.session_hash for e in list(queue.event_ids_to_events.values())]
            running = [e.session_hash for jobs in list(queue.active_jobs) if jobs for e in list(jobs)]
            return session in waiting or session in running
        except RuntimeError:  # changed size during the copy
            continue
    return True  # cannot tell: keep the ticket (the TTL still bounds it)


def page_alive(ctx, session: str | None):
    """For `stream_job(alive=...)`: whether the page's event is still in Gradio's queue (None: cannot tell). An
    event seen there once and gone since was cancelled; one never seen there (a direct call) is not judged."""
    if ctx.session_in_queue is None or not session or session in ("local", "direct"):
        return None
    seen = [False]

    def alive() -> bool:
        if ctx.session_in_queue(session):
            seen[0] = True
            return True
        return not seen[0]

    return alive


def _live(ctx) -> dict:
    """The tickets not yet expired and whose page's event is still queued or running (dropping the rest)."""
    now, ttl = time.monotonic(), ctx.options.admission_ttl_s
    alive = ctx.session_in_queue
    for key, (_, taken) in list(ctx.admissions.items()):
        if ctx.working.get(key):  # its job's work has not ended (a closed page's job stops at its next step)
            continue
        session = ctx.admission_sessions.get(key)
        dropped = alive is not None and session and now - taken > ARRIVAL_GRACE_S and not alive(session)
        if now - taken > ttl or dropped:
            del ctx.admissions[key]
            ctx.admission_sessions.pop(key, None)
    return ctx.admissions


def admit(ctx, owner: str, address: str, session: str | None = None) -> str | None:
    """Take a ticket for `owner`; None when admitted, else the message that says why not."""
    opts = ctx.options
    if not opts.public:
        return None
    with _LOCK:
        tickets = _live(ctx)
        if owner in tickets:
            return "You already have a job queued or running: wait for it to finish (or stop it) first."
        if sum(1 for a, _ in tickets.values() if a == address) >= MAX_JOBS_PER_ADDRESS:
            return "Your network already has jobs queued or running here: try again when they finish."
        if len(tickets) >= opts.max_queue_public:
            return f"The studio is busy ({len(tickets)} jobs waiting or running): try again in a few minutes."
        tickets[owner] = (address, time.monotonic())
        if session:
            ctx.admission_sessions[owner] = session
    return None


def release(ctx, owner: str) -> None:
    """Give the owner's ticket back (the job ended, or was refused); while a worker thread of the owner's still
    works (its page went away: it stops at its next step) the ticket comes back when that thread ends."""
    with _LOCK:
        if ctx.working.get(owner):
            ctx.release_pending.add(owner)
            return
        _drop(ctx, owner)


def _drop(ctx, owner: str) -> None:
    ctx.admissions.pop(owner, None)
    ctx.admission_sessions.pop(owner, None)
    ctx.release_pending.discard(owner)


@contextmanager
def working(ctx, owner: str) -> Iterator[None]:
    """Around a job's worker thread: the owner's ticket is not given back before the work has really ended."""
    with _LOCK:
        ctx.working[owner] = ctx.working.get(owner, 0) + 1
    try:
        yield
    finally:
        with _LOCK:
            left = ctx.working.pop(owner) - 1
            if left:
                ctx.working[owner] = left
            elif owner in ctx.release_pending:
                _drop(ctx, owner)
