"""Who may queue a job now (public mode): one queued or running job per visitor, a few per client address, and
a bounded queue, decided when the request arrives (a Gradio `validator`, before it waits in the queue).

Counting rows is not enough: a job waits in Gradio's queue before its row exists, so forty clicks would all
wait and then run one after another. A ticket is taken at arrival and given back when the job ends. A page that
goes away while its job waits never reaches the job function (Gradio's queue drops the event), so each ticket also
names the page's session: a ticket whose session has no event left in Gradio's queue is given back at the next
admission (`watch_queue`); `admission_ttl_s` remains the bound for anything else.

Tickets live in the gallery's database (`studio.store.AdmissionTicket`), so several front-ends sharing it admit
against one count: a visitor at their cap on one is refused on the other, and a dead front-end's tickets stop
counting with it (`studio.leases` says who is dead). What only this process knows stays here: which owners' worker
threads still run (`working`), and which page sessions Gradio's queue still holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

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


def _sweep(ctx) -> None:
    """Give back this front-end's tickets that expired or whose page's event left Gradio's queue (only this process
    can ask its queue; every front-end sweeps its own). A ticket whose job's work has not ended stays."""
    ttl, alive = ctx.options.admission_ttl_s, ctx.session_in_queue
    stale = []
    for owner, _, session, age in ctx.store.tickets():
        if ctx.working.get(owner):  # its job's work has not ended (a closed page's job stops at its next step)
            continue
        dropped = alive is not None and session and age > ARRIVAL_GRACE_S and not alive(session)
        if age > ttl or dropped:
            stale.append(owner)
    ctx.store.drop_tickets(stale)


def tickets(ctx) -> dict[str, str]:
    """This front-end's live tickets: owner -> client address."""
    return {owner: address for owner, address, _, _ in ctx.store.tickets()}


def admit(ctx, owner: str, address: str, session: str | None = None) -> str | None:
    """Take a ticket for `owner`; None when admitted, else the message that says why not. The visitor's and the
    address's tickets are counted in the database, across every front-end on the gallery; the queue is this
    front-end's own."""
    opts = ctx.options
    if not opts.public:
        return None
    with _LOCK:
        _sweep(ctx)
        refused = ctx.store.take_ticket(owner, address, session, MAX_JOBS_PER_ADDRESS, opts.max_queue_public)
    if refused is None:
        return None
    cap, count = refused
    if cap == "owner":
        return "You already have a job queued or running: wait for it to finish (or stop it) first."
    if cap == "address":
        return "Your network already has jobs queued or running here: try again when they finish."
    return f"The studio is busy ({count} jobs waiting or running): try again in a few minutes."


def release(ctx, owner: str) -> None:
    """Give the owner's ticket back (the job ended, or was refused); while a worker thread of the owner's still
    works (its page went away: it stops at its next step) the ticket comes back when that thread ends."""
    with _LOCK:
        if ctx.working.get(owner):
            ctx.release_pending.add(owner)
            return
        _drop(ctx, owner)


def _drop(ctx, owner: str) -> None:
    ctx.release_pending.discard(owner)
    if not ctx.options.public:  # only a public studio takes tickets: a local job's end writes nothing
        return
    try:
        ctx.store.drop_tickets([owner])
    except Exception:  # a database hiccup must not fail a job that has ended; `admission_ttl_s` bounds the ticket
        log.warning("could not give back the admission ticket of %s", owner, exc_info=True)


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


# ---------------------------------------------------------------------------------------------- the public frame cap
def public_voice_seconds(opts) -> float:
    """The longest voice a public job uses whole: the frame cap in seconds (the voice sets the frames). One number
    for the banner, the warning on upload and the refusal after Generate."""
    return opts.max_frames_public / 25


def frame_cap_message(opts, frames: int) -> str | None:
    """Why a public job of `frames` frames is refused (the same words on upload and after Generate); None if it
    fits or the studio is not public."""
    if not opts.public or frames <= opts.max_frames_public:
        return None
    limit, seconds = opts.max_frames_public, public_voice_seconds(opts)
    return (f"This job would make {frames} frames ({frames / 25:.1f} s); this public studio makes at most {limit} "
            f"({seconds:.1f} s). Trim the voice to {seconds:.1f} s, or set Frames to {limit} to use its "
            "beginning.")  # fmt: skip
